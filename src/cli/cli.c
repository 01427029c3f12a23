#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "io/checkpoint.h"
#include "dist/dist.h"
#include "util.h"

static void print_help(const char *command, const char *synopsis, const CliOption *opts, int n) {
    if (dist_rank() != 0) return; /* under mpirun: once */
    printf("usage: upcycle %s %s\n\n%s", command, synopsis, n ? "options:\n" : "");
    for (int i = 0; i < n; i++) {
        const char *arg = opts[i].type == OPT_FLAG ? "" : opts[i].type == OPT_STR || opts[i].type == OPT_STRS ? " VALUE" : " N";
        char left[64];
        snprintf(left, sizeof left, "--%s%s", opts[i].name, arg);
        printf("  %-24s %s\n", left, opts[i].help);
    }
    printf("  %-24s %s\n", "--help", "show this help");
}

int cli_usage_error(const char *command, const char *fmt, ...) {
    if (dist_rank() != 0) return 2; /* under mpirun every rank parses the same arguments: say it once */
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "upcycle %s: ", command);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see: upcycle %s --help)\n", command);
    va_end(ap);
    return 2;
}

static int set_value(const char *command, const CliOption *o, const char *value) {
    char *end = NULL;
    errno = 0;
    switch (o->type) {
    case OPT_STR:
        *(const char **)o->dst = value;
        return 0;
    case OPT_INT:
    case OPT_COUNT: {
        long v = strtol(value, &end, 10);
        if (!*value || *end || errno || v < -2147483647L || v > 2147483647L)
            return cli_usage_error(command, "--%s %s: not an integer; expected an integer", o->name, value);
        if (o->type == OPT_COUNT && v < 0) return cli_usage_error(command, "--%s %s: negative; expected a count >= 0", o->name, value);
        *(int *)o->dst = (int)v;
        return 0;
    }
    case OPT_U64: {
        unsigned long long v = strtoull(value, &end, 10);
        if (!*value || *end || errno || value[0] == '-')
            return cli_usage_error(command, "--%s %s: not a non-negative integer; expected e.g. 1234", o->name, value);
        *(unsigned long long *)o->dst = v;
        return 0;
    }
    case OPT_FLOAT: {
        double v = strtod(value, &end);
        if (!*value || *end || errno || !isfinite(v))
            return cli_usage_error(command, "--%s %s: not a finite number; expected a finite number", o->name, value);
        *(float *)o->dst = (float)v;
        return 0;
    }
    case OPT_FLAG:
        *(int *)o->dst = 1;
        return 0;
    case OPT_STRS: {
        CliStrList *list = o->dst;
        if (list->n == CLI_MAX_VALUES) return cli_usage_error(command, "--%s given more than %d times; expected fewer", o->name, CLI_MAX_VALUES);
        list->items[list->n++] = value;
        return 0;
    }
    }
    return 2;
}

int cli_parse(const char *command, const char *synopsis, int argc, char **argv, const CliOption *opts, int n_opts) {
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            print_help(command, synopsis, opts, n_opts);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) return cli_usage_error(command, "unexpected argument '%s'; expected --option value", arg);
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const CliOption *o = NULL;
        for (int j = 0; j < n_opts; j++)
            if (strlen(opts[j].name) == len && !strncmp(opts[j].name, name, len)) o = &opts[j];
        if (!o) return cli_usage_error(command, "unknown option '%.*s'; expected one of the options in --help", (int)len + 2, arg);
        const char *value;
        if (o->type == OPT_FLAG) {
            if (eq) return cli_usage_error(command, "--%s takes no value; expected just --%s", o->name, o->name);
            value = "";
        } else if (eq) {
            value = eq + 1;
        } else {
            if (i + 1 >= argc) return cli_usage_error(command, "--%s needs a value; expected --%s VALUE", o->name, o->name);
            value = argv[++i];
        }
        int rc = set_value(command, o, value);
        if (rc) return rc;
    }
    return 0;
}

int cli_fail(void) {
    fprintf(stderr, "upcycle: %s\n", up_last_error());
    return 1;
}

void cli_set_threads(int threads) {
    if (threads > 0) backend_cpu()->set_threads(threads);
}

int cli_precision(const char *command, const char *name, int *precision) {
    if (strcmp(name, "fp32") && strcmp(name, "bf16")) return cli_usage_error(command, "--precision %s; expected fp32 or bf16", name);
    *precision = strcmp(name, "bf16") ? PRECISION_FP32 : PRECISION_BF16;
    return 0;
}

int cli_backend(const char *command, const char *device, const Backend **be) {
    *be = NULL;
    if (strcmp(device, "auto") && strcmp(device, "cpu") && strcmp(device, "cuda"))
        return cli_usage_error(command, "--device %s; expected auto, cpu or cuda", device);
    char notice[128];
    *be = backend_select(device, notice, sizeof notice);
    if (!*be) return cli_fail();
    if (notice[0] && dist_rank() == 0) fprintf(stderr, "%s\n", notice);
    /* until make test-cuda has passed on a GPU, say so wherever the GPU is used */
    if ((*be)->experimental && dist_rank() == 0) fprintf(stderr, "%s\n", CLI_CUDA_NOTICE);
    return 0;
}

int cli_save_format(const char *command, const char *save_dtype, const char *shard_size, int *dtype) {
    *dtype = -1;
    if (save_dtype) {
        if (!strcmp(save_dtype, "fp32")) *dtype = WEIGHT_F32;
        else if (!strcmp(save_dtype, "bf16")) *dtype = WEIGHT_BF16;
        else if (!strcmp(save_dtype, "fp16")) *dtype = WEIGHT_F16;
        else return cli_usage_error(command, "--save-dtype %s; expected fp32, bf16 or fp16", save_dtype);
    }
    if (shard_size) {
        char *end = NULL;
        errno = 0;
        double v = strtod(shard_size, &end);
        double unit = !strcmp(end, "") || !strcmp(end, "B") ? 1 : !strcmp(end, "KB") ? 1e3 : !strcmp(end, "MB") ? 1e6 : !strcmp(end, "GB") ? 1e9 : 0;
        if (end == shard_size || errno || unit == 0 || !(v * unit >= 1024) || v * unit > 1e15)
            return cli_usage_error(command, "--shard-size %s; expected bytes >= 1024, e.g. 5GB, 500MB or 1048576", shard_size);
        checkpoint_set_shard_bytes((uint64_t)(v * unit));
    }
    return 0;
}

int cli_repo_file(const char *rel, const char *env, char *out, unsigned long cap) {
    const char *value = getenv(env);
    if (value && *value) {
        snprintf(out, cap, "%s", value);
    } else {
        char *dir = exe_dirname();
        if (!dir) return up_error("cannot find the running binary; expected %s=PATH/%s", env, rel);
        snprintf(out, cap, "%s/%s", dir, rel);
        if (!path_exists(out)) snprintf(out, cap, "%s/../%s", dir, rel);
        free(dir);
    }
    if (!path_exists(out)) return up_error("%s: not found; expected the repository's %s (or %s=PATH)", out, rel, env);
    return 0;
}

int cli_pyenv_python(const char *name, const char *env, char *out, unsigned long cap, char *why, unsigned long why_cap) {
    const char *value = getenv(env);
    if (value && *value) {
        snprintf(out, cap, "%s", value);
        return 0;
    }
    char script[4096], cmd[4300];
    if (cli_repo_file("scripts/pyenv.sh", "UPCYCLE_PYENV_SCRIPT", script, sizeof script)) {
        snprintf(why, why_cap, "%s", up_last_error());
        return 1;
    }
    snprintf(cmd, sizeof cmd, "'%s' python %s 2>&1", script, name);
    FILE *p = popen(cmd, "r");
    char line[4096] = "";
    if (!p || !fgets(line, sizeof line, p)) line[0] = 0;
    int st = p ? pclose(p) : -1;
    line[strcspn(line, "\n")] = 0;
    if (st != 0 || !line[0]) {
        snprintf(why, why_cap, "%s", line[0] ? line : "scripts/pyenv.sh python failed");
        return 1;
    }
    snprintf(out, cap, "%s", line);
    return 0;
}

void cli_default_shape(const char *ckpt, int *batch, int *seq) {
    TrainerState st;
    int have = trainer_state_load(ckpt, &st) == 0;
    if (*batch <= 0) *batch = have ? st.train.batch_size : 8;
    if (*seq <= 0) *seq = have ? st.train.seq_len : 128;
}
