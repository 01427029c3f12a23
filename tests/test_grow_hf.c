/* test_grow_hf.c - Expert Upcycling of Hugging Face checkpoints (src/grow/hf*.c).
 *
 * Fixtures of every supported family (and broken ones) come from tests/make_hf_fixtures.py,
 * which needs /usr/bin/python3 with torch. Each grown checkpoint is checked tensor by tensor
 * against its input: untouched tensors byte-identical, routers row-copied, replicas byte copies
 * of their sources, bias replicas = source + small noise, config/index/other files right. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "fixtures.h"
#include "grow/hf.h"
#include "io/hf_ckpt.h"
#include "io/hf_family.h"
#include "grow/plan.h"
#include "io/safetensors.h"
#include "test.h"
#include "util.h"

/* ------------------------------------------------------------------ fixtures */



/* ------------------------------------------------------------------ checkpoint loading */

#define MAX_FILES 8
typedef struct {
    int n;
    char names[MAX_FILES][128];
    StFile st[MAX_FILES];
    cJSON *index; /* NULL for a single file */
} Ck;

static int ck_open(Ck *ck, const char *dir) {
    memset(ck, 0, sizeof *ck);
    char *index_path = path_join(dir, "model.safetensors.index.json");
    int rc = 0;
    if (path_exists(index_path)) {
        char *text;
        if (read_file(index_path, &text, NULL) != 0) {
            free(index_path);
            return -1;
        }
        ck->index = cJSON_Parse(text);
        free(text);
        const cJSON *wm = cJSON_GetObjectItem(ck->index, "weight_map");
        for (const cJSON *e = wm ? wm->child : NULL; e; e = e->next) {
            int k = 0;
            while (k < ck->n && strcmp(ck->names[k], e->valuestring) != 0) k++;
            if (k == ck->n && ck->n < MAX_FILES) snprintf(ck->names[ck->n++], 128, "%s", e->valuestring);
        }
        /* sorted, like the grower */
        for (int a = 0; a < ck->n; a++)
            for (int b = a + 1; b < ck->n; b++)
                if (strcmp(ck->names[a], ck->names[b]) > 0) {
                    char t[128];
                    memcpy(t, ck->names[a], 128);
                    memcpy(ck->names[a], ck->names[b], 128);
                    memcpy(ck->names[b], t, 128);
                }
    } else {
        ck->n = 1;
        snprintf(ck->names[0], 128, "model.safetensors");
    }
    free(index_path);
    for (int f = 0; f < ck->n && rc == 0; f++) {
        char *p = path_join(dir, ck->names[f]);
        rc = st_open(&ck->st[f], p);
        free(p);
        if (rc) ck->n = f;
    }
    return rc;
}

static void ck_close(Ck *ck) {
    for (int f = 0; f < ck->n; f++) st_close(&ck->st[f]);
    cJSON_Delete(ck->index);
    memset(ck, 0, sizeof *ck);
}

static const StTensor *ck_find(const Ck *ck, const char *name, int *file) {
    for (int f = 0; f < ck->n; f++) {
        const StTensor *t = st_find(&ck->st[f], name);
        if (t) {
            if (file) *file = f;
            return t;
        }
    }
    return NULL;
}

static int ck_count(const Ck *ck) {
    int n = 0;
    for (int f = 0; f < ck->n; f++) n += ck->st[f].n_tensors;
    return n;
}

static const unsigned char *ck_data(const Ck *ck, int f, const StTensor *t) { return st_data(&ck->st[f], t); }
static size_t tbytes(const StTensor *t) { return (size_t)(t->end - t->begin); }

static int same_layout(const StTensor *a, const StTensor *b) {
    if (a->dtype != b->dtype || a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

static float value_at(const StTensor *t, const unsigned char *p, int i) {
    if (t->dtype == ST_F32) {
        float v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return t->dtype == ST_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

static int files_equal(const char *a, const char *b) {
    char *x, *y;
    size_t nx, ny;
    if (read_file(a, &x, &nx) != 0) return 0;
    if (read_file(b, &y, &ny) != 0) {
        free(x);
        return 0;
    }
    int eq = nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return eq;
}

static cJSON *load_json(const char *path) {
    char *text;
    if (read_file(path, &text, NULL) != 0) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    return j;
}

/* ------------------------------------------------------------------ plans */

static void make_plan(const HfMoeInfo *info, const int *copies, GrowPlan *plan) {
    plan->n_layers = info->n_moe_layers;
    plan->layers = xcalloc((size_t)plan->n_layers, sizeof *plan->layers);
    int n_new = 0;
    for (int e = 0; e < info->n_experts; e++) n_new += copies[e];
    for (int i = 0; i < plan->n_layers; i++) {
        LayerPlan *lp = &plan->layers[i];
        lp->layer = info->moe_layers[i];
        lp->n_old = info->n_experts;
        lp->n_new = n_new;
        lp->source = xcalloc((size_t)n_new, sizeof *lp->source);
        lp->copies = xcalloc((size_t)info->n_experts, sizeof *lp->copies);
        memcpy(lp->copies, copies, (size_t)info->n_experts * sizeof *copies);
        layer_plan_fill_sources(lp);
    }
}

/* ------------------------------------------------------------------ verification */

static int is_weight_file(const char *name) {
    size_t n = strlen(name);
    return (n > 12 && strcmp(name + n - 12, ".safetensors") == 0) || strcmp(name, "model.safetensors.index.json") == 0 ||
           strcmp(name, "config.json") == 0;
}

/* Checks out_dir against in_dir for plan; returns the number of failed checks it recorded. */
static void verify_grow(const char *in_dir, const char *out_dir, const HfMoeInfo *info, const GrowPlan *plan,
                        float noise, const char *label) {
    Ck in, out;
    CHECK_MSG(ck_open(&in, in_dir) == 0, "%s: input: %s", label, up_last_error());
    if (ck_open(&out, out_dir) != 0) {
        test_fail(__FILE__, __LINE__, "%s: output does not open: %s", label, up_last_error());
        ck_close(&in);
        return;
    }
    const char *prefix = info->moe_prefix;
    const HfFamily *fam = hf_family_find(info->model_type);
    const char *router_name = fam ? fam->router : "gate";
    int E = info->n_experts, n_new = plan->layers[0].n_new;
    int bad = 0;
    /* same files */
    CHECK_MSG(in.n == out.n, "%s: %d output files for %d input files", label, out.n, in.n);
    for (int f = 0; f < in.n && f < out.n; f++)
        CHECK_MSG(strcmp(in.names[f], out.names[f]) == 0, "%s: file %s vs %s", label, out.names[f], in.names[f]);
    CHECK_MSG((in.index != NULL) == (out.index != NULL), "%s: index presence differs", label);

    /* every input tensor, in the output file of the same name */
    for (int f = 0; f < in.n && f < out.n; f++) {
        for (int i = 0; i < in.st[f].n_tensors; i++) {
            const StTensor *t = &in.st[f].tensors[i];
            const StTensor *o = st_find(&out.st[f], t->name);
            if (!o) {
                CHECK_MSG(0, "%s: %s missing from output %s", label, t->name, out.names[f]);
                bad++;
                continue;
            }
            const unsigned char *a = ck_data(&in, f, t), *b = ck_data(&out, f, o);
            const LayerPlan *lp = NULL;
            int is_router = 0, is_bias = 0, is_rows = 0;
            for (int l = 0; l < plan->n_layers; l++) {
                char name[256];
                snprintf(name, sizeof name, "model.layers.%d.%s.%s.weight", plan->layers[l].layer, prefix, router_name);
                if (strcmp(name, t->name) == 0) is_router = 1, lp = &plan->layers[l];
                snprintf(name, sizeof name, "model.layers.%d.%s.gate.e_score_correction_bias", plan->layers[l].layer,
                         prefix);
                if (strcmp(name, t->name) == 0) is_bias = 1, lp = &plan->layers[l];
                /* sliced along the expert axis: GPT-OSS's router bias, packed expert tensors */
                snprintf(name, sizeof name, "model.layers.%d.%s.router.bias", plan->layers[l].layer, prefix);
                if (strcmp(name, t->name) == 0) is_rows = 1, lp = &plan->layers[l];
                snprintf(name, sizeof name, "model.layers.%d.%s.experts.", plan->layers[l].layer, prefix);
                size_t hn = strlen(name);
                if (strncmp(name, t->name, hn) == 0 && !(t->name[hn] >= '0' && t->name[hn] <= '9'))
                    is_rows = 1, lp = &plan->layers[l];
            }
            CHECK_MSG(o->dtype == t->dtype, "%s: %s dtype changed", label, t->name);
            if (is_router) {
                CHECK_MSG(o->ndim == 2 && o->shape[0] == n_new && o->shape[1] == t->shape[1], "%s: router %s shape",
                          label, t->name);
                size_t row = tbytes(t) / (size_t)E;
                for (int j = 0; j < n_new && tbytes(o) == row * (size_t)n_new; j++)
                    if (memcmp(b + row * j, a + row * lp->source[j], row) != 0) {
                        CHECK_MSG(0, "%s: router %s row %d is not row %d", label, t->name, j, lp->source[j]);
                        bad++;
                    }
            } else if (is_rows) {
                int shape_ok = o->ndim == t->ndim && o->shape[0] == n_new;
                for (int d = 1; d < t->ndim; d++) shape_ok &= o->shape[d] == t->shape[d];
                CHECK_MSG(shape_ok, "%s: %s shape; expected [%d, ...] of its input's", label, t->name, n_new);
                size_t slice = tbytes(t) / (size_t)E;
                for (int j = 0; j < n_new && shape_ok; j++)
                    if (memcmp(b + slice * j, a + slice * lp->source[j], slice) != 0) {
                        CHECK_MSG(0, "%s: %s slice %d is not slice %d", label, t->name, j, lp->source[j]);
                        bad++;
                    }
            } else if (is_bias) {
                size_t ds = st_dtype_size(t->dtype);
                CHECK_MSG(o->ndim == 1 && o->shape[0] == n_new, "%s: bias %s shape", label, t->name);
                if (o->shape[0] != n_new) continue;
                CHECK_MSG(memcmp(a, b, (size_t)E * ds) == 0, "%s: bias %s originals changed", label, t->name);
                float *bias = xmalloc((size_t)E * sizeof *bias);
                for (int e = 0; e < E; e++) bias[e] = value_at(t, a, e);
                float s = grow_bias_noise_std(bias, E, noise);
                int n_diff = 0;
                for (int j = E; j < n_new; j++) {
                    float src = bias[lp->source[j]], v = value_at(o, b, j);
                    if (noise == 0) {
                        CHECK_MSG(memcmp(b + ds * j, a + ds * lp->source[j], ds) == 0,
                                  "%s: bias %s replica %d is not an exact copy with noise 0", label, t->name, j);
                    } else {
                        CHECK_MSG(fabsf(v - src) <= 6 * s, "%s: bias %s replica %d = %g, source %g, noise std %g",
                                  label, t->name, j, v, src, s);
                        n_diff += v != src;
                    }
                }
                if (noise != 0)
                    CHECK_MSG(n_diff == n_new - E, "%s: bias %s: only %d of %d replicas got noise", label, t->name,
                              n_diff, n_new - E);
                free(bias);
            } else {
                CHECK_MSG(same_layout(o, t), "%s: %s shape changed", label, t->name);
                if (same_layout(o, t) && memcmp(a, b, tbytes(t)) != 0) {
                    CHECK_MSG(0, "%s: %s bytes changed", label, t->name);
                    bad++;
                }
            }
        }
    }

    /* replicas: byte copies of their sources, in the router's output file */
    int expected_extra = 0;
    for (int l = 0; l < plan->n_layers; l++) {
        const LayerPlan *lp = &plan->layers[l];
        char name[256], head[128];
        snprintf(name, sizeof name, "model.layers.%d.%s.%s.weight", lp->layer, prefix, router_name);
        int router_file = -1;
        CHECK_MSG(ck_find(&out, name, &router_file) != NULL, "%s: no router %s", label, name);
        snprintf(head, sizeof head, "model.layers.%d.%s.experts.0.", lp->layer, prefix);
        size_t hn = strlen(head);
        for (int f = 0; f < in.n; f++) {
            for (int i = 0; i < in.st[f].n_tensors; i++) {
                const char *n0 = in.st[f].tensors[i].name;
                if (strncmp(n0, head, hn) != 0) continue;
                const char *suffix = n0 + hn;
                for (int j = E; j < lp->n_new; j++) {
                    expected_extra++;
                    char src_name[256], rep_name[256];
                    snprintf(src_name, sizeof src_name, "model.layers.%d.%s.experts.%d.%s", lp->layer, prefix,
                             lp->source[j], suffix);
                    snprintf(rep_name, sizeof rep_name, "model.layers.%d.%s.experts.%d.%s", lp->layer, prefix, j,
                             suffix);
                    int sf = -1, rf = -1;
                    const StTensor *src = ck_find(&in, src_name, &sf), *rep = ck_find(&out, rep_name, &rf);
                    if (!src || !rep) {
                        CHECK_MSG(0, "%s: replica %s (of %s) missing", label, rep_name, src_name);
                        continue;
                    }
                    CHECK_MSG(rf == router_file, "%s: replica %s in %s, router in %s", label, rep_name, out.names[rf],
                              out.names[router_file]);
                    CHECK_MSG(same_layout(src, rep), "%s: replica %s dtype/shape differs from %s", label, rep_name,
                              src_name);
                    if (same_layout(src, rep))
                        CHECK_MSG(memcmp(ck_data(&in, sf, src), ck_data(&out, rf, rep), tbytes(src)) == 0,
                                  "%s: replica %s bytes differ from %s", label, rep_name, src_name);
                }
            }
        }
    }
    CHECK_MSG(ck_count(&out) == ck_count(&in) + expected_extra, "%s: %d output tensors; expected %d + %d", label,
              ck_count(&out), ck_count(&in), expected_extra);

    /* index */
    if (out.index) {
        const cJSON *wm = cJSON_GetObjectItem(out.index, "weight_map");
        CHECK_MSG(cJSON_GetArraySize(wm) == ck_count(&out), "%s: weight_map has %d entries for %d tensors", label,
                  cJSON_GetArraySize(wm), ck_count(&out));
        for (const cJSON *e = wm ? wm->child : NULL; e; e = e->next) {
            int f = -1;
            if (!ck_find(&out, e->string, &f)) CHECK_MSG(0, "%s: weight_map names missing tensor %s", label, e->string);
            else CHECK_MSG(strcmp(out.names[f], e->valuestring) == 0, "%s: weight_map %s -> %s, but it is in %s", label,
                           e->string, e->valuestring, out.names[f]);
        }
        double total = 0;
        for (int f = 0; f < out.n; f++)
            for (int i = 0; i < out.st[f].n_tensors; i++) total += (double)tbytes(&out.st[f].tensors[i]);
        const cJSON *meta = cJSON_GetObjectItem(out.index, "metadata"), *in_meta = cJSON_GetObjectItem(in.index, "metadata");
        const cJSON *ts = cJSON_GetObjectItem(meta, "total_size");
        CHECK_MSG(cJSON_IsNumber(ts) && ts->valuedouble == total, "%s: total_size %g; expected %g", label,
                  cJSON_IsNumber(ts) ? ts->valuedouble : -1.0, total);
        for (const cJSON *k = in_meta ? in_meta->child : NULL; k; k = k->next)
            if (strcmp(k->string, "total_size") != 0)
                CHECK_MSG(cJSON_Compare(k, cJSON_GetObjectItem(meta, k->string), 1), "%s: index metadata %s changed",
                          label, k->string);
    }
    /* shard metadata kept */
    for (int f = 0; f < in.n && f < out.n; f++)
        for (int k = 0; k < in.st[f].n_meta; k++) {
            const char *v = st_meta(&out.st[f], in.st[f].meta_keys[k]);
            CHECK_MSG(v && strcmp(v, in.st[f].meta_values[k]) == 0, "%s: %s metadata %s lost", label, out.names[f],
                      in.st[f].meta_keys[k]);
        }

    /* config */
    char *ic = path_join(in_dir, "config.json"), *oc = path_join(out_dir, "config.json");
    cJSON *a = load_json(ic), *b = load_json(oc);
    CHECK_MSG(a && b, "%s: config.json unreadable", label);
    if (a && b) {
        CHECK(cJSON_GetArraySize(a) == cJSON_GetArraySize(b));
        for (const cJSON *k = a->child; k; k = k->next) {
            const cJSON *v = cJSON_GetObjectItem(b, k->string);
            if (strcmp(k->string, info->experts_key) == 0)
                CHECK_MSG(cJSON_IsNumber(v) && v->valueint == n_new, "%s: %s not updated to %d", label, k->string,
                          n_new);
            else
                CHECK_MSG(v && cJSON_Compare(k, v, 1), "%s: config key %s changed", label, k->string);
        }
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    free(ic);
    free(oc);

    /* other files copied; nothing else in the output */
    DIR *d = opendir(in_dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.' || is_weight_file(de->d_name)) continue;
        char *x = path_join(in_dir, de->d_name), *y = path_join(out_dir, de->d_name);
        CHECK_MSG(files_equal(x, y), "%s: %s not copied unchanged", label, de->d_name);
        free(x);
        free(y);
    }
    if (d) closedir(d);
    d = opendir(out_dir);
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char *x = path_join(in_dir, de->d_name);
        CHECK_MSG(path_exists(x), "%s: unexpected output file %s", label, de->d_name);
        free(x);
    }
    if (d) closedir(d);
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out_dir, (long)getpid());
    CHECK_MSG(!path_exists(tmp), "%s: temporary %s left behind", label, tmp);

    /* the output is itself a valid checkpoint with E' experts */
    HfMoeInfo grown;
    CHECK_MSG(hf_inspect(out_dir, &grown) == 0, "%s: grown checkpoint does not inspect: %s", label, up_last_error());
    CHECK(grown.n_experts == n_new);
    CHECK(grown.n_moe_layers == info->n_moe_layers);
    CHECK_MSG(grown.layout == info->layout, "%s: grown layout %d; expected the input's %d", label, grown.layout,
              info->layout);
    hf_info_free(&grown);
    (void)bad;
    ck_close(&in);
    ck_close(&out);
}

static long long sum_tensor_bytes(const char *dir) {
    Ck ck;
    if (ck_open(&ck, dir) != 0) return -1;
    long long total = 0;
    for (int f = 0; f < ck.n; f++)
        for (int i = 0; i < ck.st[f].n_tensors; i++) total += (long long)tbytes(&ck.st[f].tensors[i]);
    ck_close(&ck);
    return total;
}

/* Bytes of one tensor of a checkpoint, malloc'd (NULL if absent). */
static unsigned char *tensor_copy(const char *dir, const char *name, size_t *n) {
    Ck ck;
    if (ck_open(&ck, dir) != 0) return NULL;
    int f;
    const StTensor *t = ck_find(&ck, name, &f);
    unsigned char *p = NULL;
    if (t) {
        *n = tbytes(t);
        p = xmalloc(*n);
        memcpy(p, ck_data(&ck, f, t), *n);
    }
    ck_close(&ck);
    return p;
}

/* ------------------------------------------------------------------ tests */

typedef struct {
    const char *name, *model_type, *key, *dtype;
    int family, n_layers, n_moe, first_moe, has_bias, sharded, n_files;
} FamilyCase;

static const FamilyCase CASES[] = {
    {"qwen2_moe", "qwen2_moe", "num_experts", "F32", HF_FAMILY_QWEN2_MOE, 2, 2, 0, 0, 0, 1},
    {"qwen3_moe", "qwen3_moe", "num_experts", "BF16", HF_FAMILY_QWEN3_MOE, 2, 2, 0, 1, 1, 2},
    {"olmoe", "olmoe", "num_experts", "F16", HF_FAMILY_OLMOE, 2, 2, 0, 0, 0, 1},
    {"mixtral", "mixtral", "num_local_experts", "BF16", HF_FAMILY_MIXTRAL, 2, 2, 0, 0, 1, 3},
    {"deepseek_v3", "deepseek_v3", "n_routed_experts", "F32", HF_FAMILY_DEEPSEEK_V3, 3, 2, 1, 1, 0, 1},
};

static void check_info(const FamilyCase *fc, const char *in, const HfMoeInfo *info) {
    CHECK_MSG(strcmp(info->model_type, fc->model_type) == 0, "%s: model_type %s", fc->name, info->model_type);
    CHECK(info->family == fc->family);
    CHECK(strcmp(hf_family_name(info->family), fc->model_type) == 0);
    CHECK_MSG(info->n_layers == fc->n_layers, "%s: n_layers %d", fc->name, info->n_layers);
    CHECK_MSG(info->n_moe_layers == fc->n_moe && info->moe_layers[0] == fc->first_moe, "%s: %d MoE layers from %d",
              fc->name, info->n_moe_layers, info->n_moe_layers ? info->moe_layers[0] : -1);
    CHECK(info->n_experts == 4);
    CHECK(info->n_experts_per_tok == 2);
    CHECK_MSG(strcmp(info->experts_key, fc->key) == 0, "%s: experts_key %s", fc->name, info->experts_key);
    CHECK_MSG(strcmp(info->dtype, fc->dtype) == 0, "%s: dtype %s", fc->name, info->dtype);
    CHECK_MSG(info->has_bias == fc->has_bias, "%s: has_bias %d", fc->name, info->has_bias);
    CHECK_MSG(info->sharded == fc->sharded && info->n_files == fc->n_files, "%s: sharded %d, %d files", fc->name,
              info->sharded, info->n_files);
    CHECK(info->n_expert_tensors == 3);
    CHECK(info->hidden == 16);
    CHECK(info->expert_bytes == 3LL * 16 * 8 * (long long)(strcmp(fc->dtype, "F32") == 0 ? 4 : 2));
    CHECK_MSG(info->total_bytes == sum_tensor_bytes(in), "%s: total_bytes %lld", fc->name, info->total_bytes);
}

TEST(test_hf_grow_families) {
    const char *root = test_tmpdir();
    if (fixture_hf(root, "qwen2_moe qwen3_moe olmoe mixtral deepseek_v3") != 0) return;
    for (size_t c = 0; c < sizeof CASES / sizeof *CASES; c++) {
        const FamilyCase *fc = &CASES[c];
        char *in = path_join(root, fc->name);
        HfMoeInfo info;
        if (hf_inspect(in, &info) != 0) {
            CHECK_MSG(0, "%s: hf_inspect: %s", fc->name, up_last_error());
            free(in);
            continue;
        }
        check_info(fc, in, &info);
        char out[1024], label[128];

        /* uniform 2x with bias noise */
        GrowPlan plan;
        CHECK(hf_plan_uniform(&info, 2 * info.n_experts, &plan) == 0);
        HfGrowOptions opt = {0.5f, 42, 0};
        snprintf(out, sizeof out, "%s/%s-x2", root, fc->name);
        snprintf(label, sizeof label, "%s uniform 4->8", fc->name);
        if (hf_grow(in, out, &plan, &opt) != 0) CHECK_MSG(0, "%s: %s", label, up_last_error());
        else verify_grow(in, out, &info, &plan, opt.bias_noise, label);
        grow_plan_free(&plan);

        /* non-uniform {1,3,1,1}: 4 -> 6 */
        const int copies[4] = {1, 3, 1, 1};
        make_plan(&info, copies, &plan);
        CHECK(plan.layers[0].source[4] == 1 && plan.layers[0].source[5] == 1);
        snprintf(out, sizeof out, "%s/%s-6", root, fc->name);
        snprintf(label, sizeof label, "%s non-uniform 4->6", fc->name);
        if (hf_grow(in, out, &plan, &opt) != 0) CHECK_MSG(0, "%s: %s", label, up_last_error());
        else verify_grow(in, out, &info, &plan, opt.bias_noise, label);

        /* no noise: bias replicas are exact copies */
        HfGrowOptions exact = {0.0f, 42, 0};
        snprintf(out, sizeof out, "%s/%s-6-exact", root, fc->name);
        snprintf(label, sizeof label, "%s non-uniform 4->6 noise 0", fc->name);
        if (hf_grow(in, out, &plan, &exact) != 0) CHECK_MSG(0, "%s: %s", label, up_last_error());
        else verify_grow(in, out, &info, &plan, 0.0f, label);
        grow_plan_free(&plan);
        hf_info_free(&info);
        free(in);
    }
}

TEST(test_hf_grow_bias_seed) {
    const char *root = test_tmpdir();
    if (fixture_hf(root, "deepseek_v3 qwen3_moe") != 0) return;
    char in[1024], a[1024], b[1024], c[1024];
    snprintf(in, sizeof in, "%s/deepseek_v3", root);
    snprintf(a, sizeof a, "%s/a", root);
    snprintf(b, sizeof b, "%s/b", root);
    snprintf(c, sizeof c, "%s/c", root);
    HfMoeInfo info;
    CHECK(hf_inspect(in, &info) == 0);
    GrowPlan plan;
    CHECK(hf_plan_uniform(&info, 8, &plan) == 0);
    HfGrowOptions s1 = {0.1f, 7, 0}, s2 = {0.1f, 8, 0};
    CHECK(hf_grow(in, a, &plan, &s1) == 0);
    CHECK(hf_grow(in, b, &plan, &s1) == 0);
    CHECK(hf_grow(in, c, &plan, &s2) == 0);
    char *fa = path_join(a, "model.safetensors"), *fb = path_join(b, "model.safetensors");
    CHECK_MSG(files_equal(fa, fb), "same seed gave different files");
    free(fa);
    free(fb);
    size_t na = 0, nc = 0;
    unsigned char *ba = tensor_copy(a, "model.layers.1.mlp.gate.e_score_correction_bias", &na);
    unsigned char *bc = tensor_copy(c, "model.layers.1.mlp.gate.e_score_correction_bias", &nc);
    CHECK(ba && bc && na == 8 * 4 && nc == na);
    if (ba && bc && na == nc) {
        CHECK_MSG(memcmp(ba, bc, 16) == 0, "originals depend on the seed");
        CHECK_MSG(memcmp(ba + 16, bc + 16, 16) != 0, "another seed gave the same bias noise");
    }
    /* layer 1 and layer 2 draw different noise */
    size_t n2 = 0;
    unsigned char *b2 = tensor_copy(a, "model.layers.2.mlp.gate.e_score_correction_bias", &n2);
    unsigned char *i1 = tensor_copy(in, "model.layers.1.mlp.gate.e_score_correction_bias", &n2);
    unsigned char *i2 = tensor_copy(in, "model.layers.2.mlp.gate.e_score_correction_bias", &n2);
    if (ba && b2 && i1 && i2) {
        float d1, d2, s1v, s2v;
        memcpy(&d1, ba + 16, 4);
        memcpy(&s1v, i1, 4);
        memcpy(&d2, b2 + 16, 4);
        memcpy(&s2v, i2, 4);
        CHECK_MSG(d1 - s1v != d2 - s2v, "layers 1 and 2 got the same noise");
    }
    free(ba);
    free(bc);
    free(b2);
    free(i1);
    free(i2);
    grow_plan_free(&plan);
    hf_info_free(&info);

    /* BF16 model with an F32 bias whose layer 0 is all zero: noise floor std 1e-3 applies */
    snprintf(in, sizeof in, "%s/qwen3_moe", root);
    snprintf(a, sizeof a, "%s/q", root);
    CHECK(hf_inspect(in, &info) == 0);
    CHECK(hf_plan_uniform(&info, 8, &plan) == 0);
    HfGrowOptions q = {1.0f, 3, 0};
    CHECK(hf_grow(in, a, &plan, &q) == 0);
    size_t nq = 0;
    unsigned char *bq = tensor_copy(a, "model.layers.0.mlp.gate.e_score_correction_bias", &nq);
    CHECK(bq && nq == 32);
    if (bq && nq == 32) {
        for (int j = 0; j < 8; j++) {
            float v;
            memcpy(&v, bq + 4 * j, 4);
            if (j < 4) CHECK(v == 0.0f);
            else CHECK_MSG(v != 0.0f && fabsf(v) < 6e-3f, "zero-bias replica %d = %g; expected N(0, 1e-3^2)", j, v);
        }
    }
    free(bq);
    grow_plan_free(&plan);
    hf_info_free(&info);
}

static void expect_error(int rc, const char *what, const char *needle1, const char *needle2) {
    CHECK_MSG(rc != 0, "%s: succeeded; expected an error", what);
    if (rc == 0) return;
    const char *msg = up_last_error();
    CHECK_MSG(strstr(msg, needle1) != NULL, "%s: error \"%s\" lacks \"%s\"", what, msg, needle1);
    if (needle2) CHECK_MSG(strstr(msg, needle2) != NULL, "%s: error \"%s\" lacks \"%s\"", what, msg, needle2);
}

TEST(test_hf_inspect_errors) {
    const char *root = test_tmpdir();
    if (fixture_hf(root, "bad_dense bad_qwen3_dense bad_unknown bad_unequal_shape bad_unequal_dtype bad_no_config") !=
        0)
        return;
    HfMoeInfo info;
    char in[1024];
    snprintf(in, sizeof in, "%s/bad_dense", root);
    expect_error(hf_inspect(in, &info), "dense llama", "--from-dense", "llama");
    snprintf(in, sizeof in, "%s/bad_qwen3_dense", root);
    expect_error(hf_inspect(in, &info), "qwen3_moe without MoE layers", "--from-dense", "qwen3_moe");
    snprintf(in, sizeof in, "%s/bad_unknown", root);
    expect_error(hf_inspect(in, &info), "unknown architecture", "fancy_moe", "expert_width");
    expect_error(hf_inspect(in, &info), "unknown architecture", "num_hidden_layers", "mixtral");
    expect_error(hf_inspect(in, &info), "unknown architecture", "qwen3_moe", "deepseek_v3");
    snprintf(in, sizeof in, "%s/bad_unequal_shape", root);
    expect_error(hf_inspect(in, &info), "unequal shapes", "model.layers.1.mlp.experts.2.up_proj.weight",
                 "model.layers.1.mlp.experts.0.up_proj.weight");
    snprintf(in, sizeof in, "%s/bad_unequal_dtype", root);
    expect_error(hf_inspect(in, &info), "unequal dtypes", "model.layers.1.mlp.experts.3.down_proj.weight", "F32");
    snprintf(in, sizeof in, "%s/bad_no_config", root);
    expect_error(hf_inspect(in, &info), "no config", "config.json", "missing");
    snprintf(in, sizeof in, "%s/does_not_exist", root);
    expect_error(hf_inspect(in, &info), "no directory", "does_not_exist", NULL);

    /* hf_grow reports the same errors and writes nothing */
    GrowPlan plan = {0};
    HfGrowOptions opt = {0.01f, 1, 0};
    char out[1024];
    snprintf(in, sizeof in, "%s/bad_dense", root);
    snprintf(out, sizeof out, "%s/out", root);
    expect_error(hf_grow(in, out, &plan, &opt), "grow dense", "--from-dense", NULL);
    CHECK(!path_exists(out));
}

static int count_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

TEST(test_hf_grow_errors_and_atomicity) {
    const char *root = test_tmpdir();
    if (fixture_hf(root, "qwen3_moe deepseek_v3") != 0) return;
    char in[1024], out[1024], work[512];
    snprintf(in, sizeof in, "%s/qwen3_moe", root);
    snprintf(work, sizeof work, "%s/work", root);
    CHECK(mkdir_p(work) == 0);
    HfMoeInfo info;
    CHECK(hf_inspect(in, &info) == 0);
    GrowPlan plan;
    HfGrowOptions opt = {0.01f, 1, 0};

    /* plans that do not fit the checkpoint */
    expect_error(hf_plan_uniform(&info, 6, &plan), "uniform 4->6", "not a multiple", NULL);
    CHECK(hf_plan_uniform(&info, 8, &plan) == 0);
    snprintf(out, sizeof out, "%s/grown", work);
    plan.n_layers = 1;
    expect_error(hf_grow(in, out, &plan, &opt), "plan missing a layer", "no entry for MoE layer 1", NULL);
    plan.n_layers = 2;
    plan.layers[1].layer = 5;
    expect_error(hf_grow(in, out, &plan, &opt), "plan names a dense layer", "layer 5", NULL);
    plan.layers[1].layer = 1;
    plan.layers[1].n_new = 4;
    expect_error(hf_grow(in, out, &plan, &opt), "unequal targets", "one expert count", NULL);
    plan.layers[1].n_new = 8;
    plan.layers[0].source[6] = 9;
    expect_error(hf_grow(in, out, &plan, &opt), "bad source", "source 9", NULL);
    plan.layers[0].source[6] = 3;
    CHECK(count_entries(work) == 0);

    /* an existing output is refused without force, replaced with it */
    CHECK(mkdir_p(out) == 0);
    char *marker = path_join(out, "marker");
    CHECK(atomic_write_file(marker, "x", 1) == 0);
    expect_error(hf_grow(in, out, &plan, &opt), "existing out", "already exists", "--force");
    CHECK(path_exists(marker));
    opt.force = 1;
    CHECK_MSG(hf_grow(in, out, &plan, &opt) == 0, "force: %s", up_last_error());
    CHECK(!path_exists(marker));
    verify_grow(in, out, &info, &plan, opt.bias_noise, "qwen3_moe forced");
    CHECK_MSG(count_entries(work) == 1, "work has %d entries; expected only the output", count_entries(work));
    /* force never replaces the input or a directory holding it */
    expect_error(hf_grow(in, in, &plan, &opt), "out == in", "is the input", NULL);
    expect_error(hf_grow(in, root, &plan, &opt), "out holds in", "contains the input", NULL);
    opt.force = 0;
    free(marker);

    /* output parent is a regular file */
    char *file_parent = path_join(work, "afile");
    CHECK(atomic_write_file(file_parent, "x", 1) == 0);
    snprintf(out, sizeof out, "%s/grown", file_parent);
    CHECK(hf_grow(in, out, &plan, &opt) != 0);
    CHECK(strstr(up_last_error(), "afile") != NULL);
    free(file_parent);

    /* read-only output parent (skipped where permissions do not bind, e.g. as root) */
    char ro[512];
    snprintf(ro, sizeof ro, "%s/ro", root);
    CHECK(mkdir_p(ro) == 0);
    chmod(ro, 0555);
    char *probe = path_join(ro, "probe");
    FILE *pf = fopen(probe, "w");
    if (pf) {
        fclose(pf);
        unlink(probe);
        printf("    (read-only directory check skipped: permissions do not bind for this user)\n");
    } else {
        snprintf(out, sizeof out, "%s/grown", ro);
        expect_error(hf_grow(in, out, &plan, &opt), "read-only parent", "ro/grown.tmp.", "Permission denied");
        CHECK(count_entries(ro) == 0);
    }
    free(probe);
    chmod(ro, 0755);

    /* a write error (file size limit, like a full disk) names the file and leaves nothing */
    snprintf(out, sizeof out, "%s/grown-limited", work);
    struct rlimit old_limit, limit;
    getrlimit(RLIMIT_FSIZE, &old_limit);
    limit = old_limit;
    limit.rlim_cur = 4096;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    CHECK(setrlimit(RLIMIT_FSIZE, &limit) == 0);
    int rc = hf_grow(in, out, &plan, &opt);
    setrlimit(RLIMIT_FSIZE, &old_limit);
    signal(SIGXFSZ, old_handler);
    expect_error(rc, "file size limit", "model-00001-of-00002.safetensors", "File too large");
    CHECK(!path_exists(out));
    CHECK_MSG(count_entries(work) == 2, "work has %d entries after a failed grow; expected 2", count_entries(work));
    grow_plan_free(&plan);
    hf_info_free(&info);

    /* DeepSeek group-limited routing: the new count must split into n_group groups */
    snprintf(in, sizeof in, "%s/deepseek_v3", root);
    snprintf(out, sizeof out, "%s/ds5", work);
    CHECK(hf_inspect(in, &info) == 0);
    CHECK(info.n_group == 2);
    const int copies[4] = {2, 1, 1, 1};
    make_plan(&info, copies, &plan);
    expect_error(hf_grow(in, out, &plan, &opt), "n_group", "n_group = 2", NULL);
    CHECK(!path_exists(out));
    grow_plan_free(&plan);
    hf_info_free(&info);
}

/* ------------------------------------------------------------------ the layers below hf_grow */

TEST(test_hf_family_names) {
    const HfFamily *mixtral = hf_family_find("mixtral"), *qwen3 = hf_family_find("qwen3_moe");
    CHECK(mixtral && strcmp(mixtral->experts_key, "num_local_experts") == 0 && strcmp(mixtral->prefix, "block_sparse_moe") == 0);
    CHECK(qwen3 && qwen3->family == HF_FAMILY_QWEN3_MOE && strcmp(qwen3->prefix, "mlp") == 0);
    CHECK(hf_family_find("deepseek_v2") && strcmp(hf_family_find("deepseek_v2")->experts_key, "n_routed_experts") == 0);
    CHECK(hf_family_find("llama") == NULL && hf_family_find("") == NULL && hf_family_find("Mixtral") == NULL);
    CHECK(strcmp(hf_family_name(HF_FAMILY_DEEPSEEK_V3), "deepseek_v3") == 0);
    CHECK(strcmp(hf_family_name(0), "?") == 0 && strcmp(hf_family_name(99), "?") == 0);

    struct {
        const char *name, *prefix;
        int kind;
        long layer, expert;
        const char *suffix;
    } cases[] = {
        {"model.layers.3.mlp.experts.12.gate_proj.weight", "mlp", HF_TENSOR_EXPERT, 3, 12, "gate_proj.weight"},
        {"model.layers.0.mlp.experts.0.up_proj.weight_scale", "mlp", HF_TENSOR_EXPERT, 0, 0, "up_proj.weight_scale"},
        {"model.layers.17.block_sparse_moe.experts.7.w2.weight", "block_sparse_moe", HF_TENSOR_EXPERT, 17, 7, "w2.weight"},
        {"model.layers.3.mlp.gate.weight", "mlp", HF_TENSOR_ROUTER, 3, -1, NULL},
        {"model.layers.61.mlp.gate.e_score_correction_bias", "mlp", HF_TENSOR_BIAS, 61, -1, NULL},
        {"model.layers.3.mlp.gate.bias", "mlp", -1, 3, -1, NULL},
        {"model.layers.3.mlp.gate.weight_scale", "mlp", -1, 3, -1, NULL},
        /* ordinary tensors */
        {"model.layers.3.block_sparse_moe.gate.weight", "mlp", HF_TENSOR_OTHER, -1, -1, NULL},
        {"model.layers.3.mlp.shared_expert.gate_proj.weight", "mlp", HF_TENSOR_OTHER, -1, -1, NULL},
        {"model.layers.3.mlp.shared_experts.up_proj.weight", "mlp", HF_TENSOR_OTHER, -1, -1, NULL},
        {"model.layers.3.mlp.shared_expert_gate.weight", "mlp", HF_TENSOR_OTHER, -1, -1, NULL},
        {"model.layers.3.mlp.gate_proj.weight", "mlp", HF_TENSOR_OTHER, -1, -1, NULL},
        {"model.layers.3.mlp.experts.1.", "mlp", HF_TENSOR_OTHER, -1, -1, NULL},
        {"model.layers.3.mlp.experts.x.w1", "mlp", HF_TENSOR_OTHER, -1, -1, NULL},
        {"model.layers.3.mlp.experts.-1.w1", "mlp", HF_TENSOR_OTHER, -1, -1, NULL},
        {"model.layers.+3.mlp.gate.weight", "mlp", HF_TENSOR_OTHER, -1, -1, NULL},
        {"model.layers..mlp.gate.weight", "mlp", HF_TENSOR_OTHER, -1, -1, NULL},
        {"model.layers.3.mlpx.gate.weight", "mlp", HF_TENSOR_OTHER, -1, -1, NULL},
        {"layers.3.mlp.gate.weight", "mlp", HF_TENSOR_OTHER, -1, -1, NULL},
        {"model.embed_tokens.weight", "mlp", HF_TENSOR_OTHER, -1, -1, NULL},
        {"model.layers.123456789012.mlp.gate.weight", "mlp", HF_TENSOR_OTHER, -1, -1, NULL}, /* no overflow */
        /* packed experts (transformers 5): no expert index, no further dot */
        {"model.layers.3.mlp.experts.gate_up_proj", "mlp", HF_TENSOR_PACKED, 3, -1, "gate_up_proj"},
        {"model.layers.0.mlp.experts.down_proj_scale_inv", "mlp", HF_TENSOR_PACKED, 0, -1, "down_proj_scale_inv"},
        {"model.layers.3.mlp.experts.gate_up_proj.weight", "mlp", HF_TENSOR_OTHER, -1, -1, NULL},
        {"model.layers.3.mlp.router.weight", "mlp", HF_TENSOR_OTHER, -1, -1, NULL}, /* a router only for GPT-OSS */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        long layer = -1, expert = -1;
        const char *suffix = NULL;
        int kind = hf_classify_tensor(cases[c].name, cases[c].prefix, &layer, &expert, &suffix);
        CHECK_MSG(kind == cases[c].kind, "%s: kind %d; expected %d", cases[c].name, kind, cases[c].kind);
        if (kind == HF_TENSOR_OTHER) continue;
        CHECK_MSG(layer == cases[c].layer, "%s: layer %ld", cases[c].name, layer);
        if (kind != HF_TENSOR_EXPERT) continue;
        CHECK_MSG(expert == cases[c].expert, "%s: expert %ld", cases[c].name, expert);
        CHECK_MSG(suffix && strcmp(suffix, cases[c].suffix) == 0, "%s: suffix %s", cases[c].name, suffix ? suffix : "NULL");
    }
    /* GPT-OSS's router module: weight and bias; gate.* is nothing special there */
    const HfFamily *oss = hf_family_find("gpt_oss");
    CHECK(oss && strcmp(oss->router, "router") == 0 && !oss->proj[0] && oss->transposed &&
          strcmp(oss->experts_key, "num_local_experts") == 0);
    CHECK(strcmp(mixtral->packed_prefix, "mlp") == 0 && strcmp(mixtral->proj[HF_PROJ_UP], "w3") == 0 &&
          strcmp(mixtral->proj[HF_PROJ_DOWN], "w2") == 0);
    long rl = -1, re = -1;
    const char *rs = NULL;
    CHECK(hf_classify_name("model.layers.2.mlp.router.weight", "mlp", "router", &rl, &re, &rs) == HF_TENSOR_ROUTER && rl == 2);
    CHECK(hf_classify_name("model.layers.2.mlp.router.bias", "mlp", "router", &rl, &re, &rs) == HF_TENSOR_ROUTER_BIAS);
    CHECK(hf_classify_name("model.layers.2.mlp.router.scale", "mlp", "router", &rl, &re, &rs) == -1);
    CHECK(hf_classify_name("model.layers.2.mlp.gate.e_score_correction_bias", "mlp", "router", &rl, &re, &rs) ==
          HF_TENSOR_OTHER);
    CHECK(hf_classify_name("model.layers.2.mlp.experts.gate_up_proj_bias", "mlp", "router", &rl, &re, &rs) ==
              HF_TENSOR_PACKED && strcmp(rs, "gate_up_proj_bias") == 0);
    char *packed_name = hf_moe_expert_name("mlp", 4, -1, "down_proj");
    CHECK(strcmp(packed_name, "model.layers.4.mlp.experts.down_proj") == 0);
    free(packed_name);
    CHECK(strcmp(hf_layout_name(HF_LAYOUT_PACKED), "packed") == 0 && strcmp(hf_layout_name(HF_LAYOUT_PER_EXPERT), "per-expert") == 0);

    /* the replica names the grower writes classify back to what they name */
    char *name = hf_expert_name(mixtral, 5, 9, "w3.weight");
    CHECK(strcmp(name, "model.layers.5.block_sparse_moe.experts.9.w3.weight") == 0);
    long layer = 0, expert = 0;
    const char *suffix = NULL;
    CHECK(hf_classify_tensor(name, mixtral->prefix, &layer, &expert, &suffix) == HF_TENSOR_EXPERT);
    CHECK(layer == 5 && expert == 9 && suffix && strcmp(suffix, "w3.weight") == 0);
    free(name);
}

/* The reader against the test's own (ck_open): files, every tensor found in its file, the
 * walk order, sizes; then the two opening steps and index errors. */
TEST(test_hf_ckpt_reader) {
    const char *root = test_tmpdir();
    if (fixture_hf(root, "qwen3_moe qwen2_moe bad_dense bad_no_config") != 0) return;
    const char *names[] = {"qwen3_moe", "qwen2_moe", "bad_dense"};
    for (int c = 0; c < 3; c++) {
        char *dir = path_join(root, names[c]);
        HfCkpt ck;
        Ck ref;
        if (hf_ckpt_open(dir, &ck) != 0 || ck_open(&ref, dir) != 0) {
            CHECK_MSG(0, "%s: %s", names[c], up_last_error());
            free(dir);
            continue;
        }
        CHECK(cJSON_IsObject(ck.config) && strstr(ck.config_path, "config.json"));
        CHECK(ck.n_files == ref.n && ck.sharded == (ref.index != NULL));
        for (int f = 0; f < ck.n_files && f < ref.n; f++) CHECK(strcmp(ck.files[f], ref.names[f]) == 0);
        for (int f = 1; f < ck.n_files; f++) CHECK(strcmp(ck.files[f - 1], ck.files[f]) < 0);
        int n = 0, in_order = 1;
        HfTensorRef prev = HF_TENSOR_NONE;
        uint64_t bytes = 0;
        for (HfTensorRef r = HF_TENSOR_BEGIN; hf_ckpt_next(&ck, &r);) {
            in_order &= prev.file < 0 || (r.file == prev.file && r.index == prev.index + 1) ||
                        (r.file > prev.file && r.index == 0);
            prev = r;
            const StTensor *t = hf_ckpt_tensor(&ck, r);
            int ref_file = -1;
            const StTensor *rt = ck_find(&ref, t->name, &ref_file);
            const StFile *file = NULL;
            const StTensor *found = hf_ckpt_find(&ck, t->name, &file);
            CHECK_MSG(rt && ref_file == r.file && same_layout(rt, t), "%s: %s", names[c], t->name);
            CHECK_MSG(found == t && file == hf_ckpt_file(&ck, r), "%s: find %s", names[c], t->name);
            bytes += tbytes(t);
            n++;
        }
        CHECK(in_order && n == ck_count(&ref) && (size_t)n == strmap_count(&ck.names));
        CHECK(bytes == hf_ckpt_tensor_bytes(&ck));
        const StFile *file = ck.st;
        CHECK(hf_ckpt_find(&ck, "model.layers.0.mlp.experts.99.up_proj.weight", &file) == NULL && file == NULL);
        CHECK(hf_ckpt_find(&ck, "", NULL) == NULL);
        HfTensorRef end = HF_TENSOR_NONE;
        CHECK(hf_ckpt_next(&ck, &end) == 0);
        hf_ckpt_close(&ck);
        CHECK(ck.config == NULL && ck.st == NULL && ck.n_files == 0);
        hf_ckpt_close(&ck); /* closing twice is harmless */
        ck_close(&ref);
        free(dir);
    }

    HfCkpt ck;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/bad_no_config", root);
    expect_error(hf_ckpt_open(dir, &ck), "no config", "config.json: missing", NULL);
    CHECK(ck.dir == NULL && ck.config == NULL);
    snprintf(dir, sizeof dir, "%s/none", root);
    expect_error(hf_ckpt_open_config(dir, &ck), "no directory", "none: no such directory", NULL);

    /* the config opens alone; weights that fail to open leave it open */
    snprintf(dir, sizeof dir, "%s/bad_dense", root);
    char *weights = path_join(dir, "model.safetensors");
    CHECK(atomic_write_file(weights, "garbage!garbage!", 16) == 0);
    CHECK(hf_ckpt_open_config(dir, &ck) == 0);
    CHECK(cJSON_IsObject(ck.config) && ck.n_files == 0 && ck.st == NULL);
    expect_error(hf_ckpt_open_weights(&ck), "broken weights", "model.safetensors", NULL);
    CHECK(cJSON_IsObject(ck.config) && ck.n_files == 0 && ck.st == NULL && strmap_count(&ck.names) == 0);
    hf_ckpt_close(&ck);
    remove(weights);
    expect_error(hf_ckpt_open(dir, &ck), "no weights", "model.safetensors: missing, and no model.safetensors.index.json", NULL);
    free(weights);

    /* an index that does not match its shards */
    snprintf(dir, sizeof dir, "%s/qwen3_moe", root);
    char *index_path = path_join(dir, HF_INDEX_NAME);
    cJSON *index = load_json(index_path);
    cJSON *wm = cJSON_GetObjectItem(index, "weight_map");
    cJSON_AddStringToObject(wm, "model.ghost.weight", "model-00001-of-00002.safetensors");
    CHECK(hf_ckpt_write_json(dir, HF_INDEX_NAME, index) == 0);
    expect_error(hf_ckpt_open(dir, &ck), "ghost tensor", "weight_map lists tensor model.ghost.weight", NULL);
    cJSON_DeleteItemFromObject(wm, "model.ghost.weight");
    cJSON_DeleteItemFromObject(wm, "model.norm.weight");
    CHECK(hf_ckpt_write_json(dir, HF_INDEX_NAME, index) == 0);
    expect_error(hf_ckpt_open(dir, &ck), "unlisted tensor", "tensor model.norm.weight is not in the weight_map", NULL);
    cJSON_Delete(index);
    free(index_path);
}

TEST(test_hf_bench_checkpoint) {
    const char *root = test_tmpdir();
    char in[1024], out[1024];
    snprintf(in, sizeof in, "%s/bench", root);
    snprintf(out, sizeof out, "%s/bench-x2", root);
    CHECK_MSG(hf_bench_make_checkpoint(in, 0.05) == 0, "%s", up_last_error());
    HfMoeInfo info;
    if (hf_inspect(in, &info) != 0) {
        CHECK_MSG(0, "bench checkpoint: %s", up_last_error());
        return;
    }
    CHECK(strcmp(info.model_type, "qwen3_moe") == 0);
    CHECK(info.n_moe_layers == 4 && info.n_experts == 32 && info.has_bias && info.sharded && info.n_files == 2);
    CHECK(strcmp(info.dtype, "BF16") == 0);
    CHECK_MSG(info.total_bytes > 0.8 * 0.05e9 && info.total_bytes < 4 * 0.05e9, "total %lld", info.total_bytes);
    GrowPlan plan;
    CHECK(hf_plan_uniform(&info, 64, &plan) == 0);
    HfGrowOptions opt = {0.01f, 1, 0};
    CHECK_MSG(hf_grow(in, out, &plan, &opt) == 0, "%s", up_last_error());
    verify_grow(in, out, &info, &plan, opt.bias_noise, "bench x2");
    grow_plan_free(&plan);
    hf_info_free(&info);
}

/* ------------------------------------------------------------------ layouts, FP8, GPT-OSS */

static void grow_and_verify(const char *in, const char *out, const HfMoeInfo *info, const GrowPlan *plan,
                            const HfGrowOptions *opt, const char *label) {
    if (hf_grow(in, out, plan, opt) != 0) CHECK_MSG(0, "%s: %s", label, up_last_error());
    else verify_grow(in, out, info, plan, opt->bias_noise, label);
}

typedef struct {
    const char *name, *twin; /* twin: the same values in the other layout, or NULL */
    int layout, n_expert_tensors, has_bias, n_files;
    const char *dtype;
} LayoutCase;

static const LayoutCase LAYOUT_CASES[] = {
    {"qwen2_moe_packed", "qwen2_moe", HF_LAYOUT_PACKED, 2, 0, 1, "F32"},
    {"qwen3_moe_packed", "qwen3_moe", HF_LAYOUT_PACKED, 2, 1, 2, "BF16"},
    {"olmoe_packed", "olmoe", HF_LAYOUT_PACKED, 2, 0, 1, "F16"},
    {"mixtral_packed", "mixtral", HF_LAYOUT_PACKED, 2, 0, 3, "BF16"},
    {"deepseek_v3_packed", "deepseek_v3", HF_LAYOUT_PACKED, 2, 1, 1, "F32"},
    {"deepseek_v3_fp8", NULL, HF_LAYOUT_PER_EXPERT, 6, 1, 1, "F8_E4M3"},
    {"gpt_oss", NULL, HF_LAYOUT_PACKED, 4, 0, 2, "BF16"},
    {"gpt_oss_mxfp4", NULL, HF_LAYOUT_PACKED, 6, 0, 2, "MXFP4"},
};
#define LAYOUT_FIXTURES                                                                                        \
    "qwen2_moe qwen3_moe olmoe mixtral deepseek_v3 qwen2_moe_packed qwen3_moe_packed olmoe_packed mixtral_packed " \
    "deepseek_v3_packed deepseek_v3_fp8 gpt_oss gpt_oss_mxfp4"

/* Every packed tensor, FP8 weight and scale, GPT-OSS router bias and MXFP4 block grows by
 * slices along the expert axis (verify_grow); the packed twins report what their per-expert
 * fixtures do. */
TEST(test_hf_grow_layouts) {
    const char *root = test_tmpdir();
    if (fixture_hf(root, LAYOUT_FIXTURES) != 0) return;
    for (size_t c = 0; c < sizeof LAYOUT_CASES / sizeof *LAYOUT_CASES; c++) {
        const LayoutCase *lc = &LAYOUT_CASES[c];
        char *in = path_join(root, lc->name);
        HfMoeInfo info;
        if (hf_inspect(in, &info) != 0) {
            CHECK_MSG(0, "%s: hf_inspect: %s", lc->name, up_last_error());
            free(in);
            continue;
        }
        CHECK_MSG(info.layout == lc->layout && info.n_expert_tensors == lc->n_expert_tensors,
                  "%s: layout %d, %d expert tensors", lc->name, info.layout, info.n_expert_tensors);
        CHECK_MSG(strcmp(info.dtype, lc->dtype) == 0 && info.has_bias == lc->has_bias && info.n_files == lc->n_files,
                  "%s: dtype %s, bias %d, %d files", lc->name, info.dtype, info.has_bias, info.n_files);
        CHECK(info.n_experts == 4 && info.n_experts_per_tok == 2 && info.n_moe_layers == 2);
        CHECK_MSG(info.total_bytes == sum_tensor_bytes(in), "%s: total_bytes %lld", lc->name, info.total_bytes);
        if (lc->twin) {
            char *twin = path_join(root, lc->twin);
            HfMoeInfo t;
            CHECK(hf_inspect(twin, &t) == 0);
            CHECK_MSG(t.expert_bytes == info.expert_bytes && t.total_bytes == info.total_bytes && t.hidden == info.hidden &&
                          strcmp(t.experts_key, info.experts_key) == 0 && t.family == info.family,
                      "%s: expert bytes %lld vs %lld of %s", lc->name, info.expert_bytes, t.expert_bytes, lc->twin);
            CHECK_MSG(strcmp(info.moe_prefix, "mlp") == 0, "%s: packed experts under %s; expected mlp", lc->name,
                      info.moe_prefix);
            hf_info_free(&t);
            free(twin);
        }
        char out[1024], label[160];
        GrowPlan plan;
        CHECK(hf_plan_uniform(&info, 8, &plan) == 0);
        HfGrowOptions opt = {0.5f, 42, 0};
        snprintf(out, sizeof out, "%s/%s-x2", root, lc->name);
        snprintf(label, sizeof label, "%s uniform 4->8", lc->name);
        grow_and_verify(in, out, &info, &plan, &opt, label);
        grow_plan_free(&plan);
        const int copies[4] = {1, 3, 1, 1};
        make_plan(&info, copies, &plan);
        snprintf(out, sizeof out, "%s/%s-6", root, lc->name);
        snprintf(label, sizeof label, "%s non-uniform 4->6", lc->name);
        grow_and_verify(in, out, &info, &plan, &opt, label);
        grow_plan_free(&plan);
        hf_info_free(&info);
        free(in);
    }
}

/* Every tensor of a equals the tensor of that name in b (dtype, shape, bytes), and b has no
 * others; which shard holds it may differ. */
static void check_same_tensors(const char *a_dir, const char *b_dir, const char *label) {
    Ck a, b;
    if (ck_open(&a, a_dir) != 0 || ck_open(&b, b_dir) != 0) {
        CHECK_MSG(0, "%s: %s", label, up_last_error());
        return;
    }
    CHECK_MSG(ck_count(&a) == ck_count(&b), "%s: %d tensors vs %d", label, ck_count(&a), ck_count(&b));
    int n_diff = 0;
    for (int f = 0; f < a.n; f++)
        for (int i = 0; i < a.st[f].n_tensors; i++) {
            const StTensor *t = &a.st[f].tensors[i];
            int g = -1;
            const StTensor *u = ck_find(&b, t->name, &g);
            if (!u || !same_layout(t, u) || memcmp(ck_data(&a, f, t), ck_data(&b, g, u), tbytes(t)) != 0) {
                if (n_diff++ < 3) CHECK_MSG(0, "%s: tensor %s differs or is missing", label, t->name);
            }
        }
    CHECK_MSG(n_diff == 0, "%s: %d tensors differ", label, n_diff);
    char *ca = path_join(a_dir, "config.json"), *cb = path_join(b_dir, "config.json");
    CHECK_MSG(files_equal(ca, cb), "%s: config.json differs", label);
    free(ca);
    free(cb);
    ck_close(&a);
    ck_close(&b);
}

/* --layout: growing a per-expert checkpoint into the packed layout gives what growing its
 * packed twin gives, tensor for tensor, and the other way round (Mixtral's block renamed both
 * ways); converted packed tensors sit in the router's shard. */
TEST(test_hf_grow_convert_layout) {
    const char *root = test_tmpdir();
    if (fixture_hf(root, LAYOUT_FIXTURES) != 0) return;
    for (size_t c = 0; c < sizeof LAYOUT_CASES / sizeof *LAYOUT_CASES; c++) {
        const LayoutCase *lc = &LAYOUT_CASES[c];
        if (!lc->twin) continue;
        char *packed = path_join(root, lc->name), *per_expert = path_join(root, lc->twin);
        HfMoeInfo info;
        CHECK(hf_inspect(per_expert, &info) == 0);
        const int copies[4] = {1, 3, 1, 1};
        GrowPlan plan;
        make_plan(&info, copies, &plan);
        char a[1024], b[1024], label[160];
        HfGrowOptions keep = {0.5f, 9, 0}, to_packed = {0.5f, 9, 0, HF_GROW_LAYOUT_PACKED},
                      to_per_expert = {0.5f, 9, 0, HF_GROW_LAYOUT_PER_EXPERT};
        snprintf(a, sizeof a, "%s/%s-to-packed", root, lc->twin);
        snprintf(b, sizeof b, "%s/%s-kept", root, lc->name);
        snprintf(label, sizeof label, "%s -> packed vs %s", lc->twin, lc->name);
        CHECK_MSG(hf_grow(per_expert, a, &plan, &to_packed) == 0, "%s: %s", label, up_last_error());
        CHECK_MSG(hf_grow(packed, b, &plan, &keep) == 0, "%s: %s", label, up_last_error());
        check_same_tensors(a, b, label);
        HfMoeInfo grown;
        if (hf_inspect(a, &grown) == 0) { /* the index matches the shards: hf_ckpt_open checks it */
            CHECK(grown.layout == HF_LAYOUT_PACKED && grown.n_experts == 6 && strcmp(grown.moe_prefix, "mlp") == 0);
            hf_info_free(&grown);
        } else CHECK_MSG(0, "%s: %s", label, up_last_error());
        /* the packed tensors follow the router */
        Ck ck;
        if (ck_open(&ck, a) == 0) {
            for (int l = 0; l < info.n_moe_layers; l++) {
                char router[160], gate_up[160];
                snprintf(router, sizeof router, "model.layers.%d.mlp.gate.weight", info.moe_layers[l]);
                snprintf(gate_up, sizeof gate_up, "model.layers.%d.mlp.experts.gate_up_proj", info.moe_layers[l]);
                int fr = -1, fg = -2;
                CHECK(ck_find(&ck, router, &fr) && ck_find(&ck, gate_up, &fg) && fr == fg);
            }
            ck_close(&ck);
        }
        snprintf(a, sizeof a, "%s/%s-to-per-expert", root, lc->name);
        snprintf(b, sizeof b, "%s/%s-kept", root, lc->twin);
        snprintf(label, sizeof label, "%s -> per-expert vs %s", lc->name, lc->twin);
        CHECK_MSG(hf_grow(packed, a, &plan, &to_per_expert) == 0, "%s: %s", label, up_last_error());
        CHECK_MSG(hf_grow(per_expert, b, &plan, &keep) == 0, "%s: %s", label, up_last_error());
        check_same_tensors(a, b, label);
        /* asking for the layout a checkpoint has changes nothing */
        snprintf(a, sizeof a, "%s/%s-same", root, lc->twin);
        CHECK(hf_grow(per_expert, a, &plan, &to_per_expert) == 0);
        check_same_tensors(a, b, "per-expert -> per-expert");
        grow_plan_free(&plan);
        hf_info_free(&info);
        free(packed);
        free(per_expert);
    }

    /* what cannot convert says why, and writes nothing */
    char in[1024], out[1024];
    HfMoeInfo info;
    GrowPlan plan;
    snprintf(out, sizeof out, "%s/no-conversion", root);
    HfGrowOptions to_packed = {0, 1, 0, HF_GROW_LAYOUT_PACKED}, to_per_expert = {0, 1, 0, HF_GROW_LAYOUT_PER_EXPERT};
    snprintf(in, sizeof in, "%s/deepseek_v3_fp8", root);
    CHECK(hf_inspect(in, &info) == 0 && hf_plan_uniform(&info, 8, &plan) == 0);
    expect_error(hf_grow(in, out, &plan, &to_packed), "FP8 to packed", "weight_scale_inv", "no packed counterpart");
    grow_plan_free(&plan);
    hf_info_free(&info);
    snprintf(in, sizeof in, "%s/gpt_oss", root);
    CHECK(hf_inspect(in, &info) == 0 && hf_plan_uniform(&info, 8, &plan) == 0);
    expect_error(hf_grow(in, out, &plan, &to_per_expert), "GPT-OSS to per-expert", "gpt_oss", "only packed");
    grow_plan_free(&plan);
    hf_info_free(&info);
    snprintf(in, sizeof in, "%s/gpt_oss_mxfp4", root);
    CHECK(hf_inspect(in, &info) == 0 && hf_plan_uniform(&info, 8, &plan) == 0);
    expect_error(hf_grow(in, out, &plan, &to_per_expert), "MXFP4 to per-expert", "only packed", NULL);
    grow_plan_free(&plan);
    hf_info_free(&info);
    CHECK(!path_exists(out));
}

static float raw_value(const StTensor *t, const unsigned char *data, int64_t k) {
    return st_element_f32(t->dtype, data + (size_t)k * st_dtype_size(t->dtype));
}

/* hf_expert_proj, the API the engine loads experts through: in both layouts expert e's gate,
 * up and down are the same matrices (the packed twins hold the per-expert values); GPT-OSS's
 * are read transposed and interleaved; FP8 values are code * block scale. */
TEST(test_hf_expert_proj) {
    const char *root = test_tmpdir();
    if (fixture_hf(root, "qwen3_moe qwen3_moe_packed mixtral mixtral_packed gpt_oss gpt_oss_mxfp4 deepseek_v3_fp8") !=
        0)
        return;
    const char *pairs[][2] = {{"qwen3_moe", "qwen3_moe_packed"}, {"mixtral", "mixtral_packed"}};
    for (int c = 0; c < 2; c++) {
        char *da = path_join(root, pairs[c][0]), *db = path_join(root, pairs[c][1]);
        HfMoeCkpt a, b;
        CHECK(hf_moe_open(da, &a) == 0 && hf_moe_open(db, &b) == 0);
        CHECK(a.layout == HF_LAYOUT_PER_EXPERT && b.layout == HF_LAYOUT_PACKED && a.n_moe == b.n_moe);
        int n_diff = 0;
        for (int m = 0; m < a.n_moe && m < b.n_moe; m++)
            for (int e = 0; e < 4; e++)
                for (int k = 0; k < 3; k++) {
                    HfProj pa, pb;
                    if (hf_expert_proj(&a, m, e, k, &pa) != 0 || hf_expert_proj(&b, m, e, k, &pb) != 0) {
                        CHECK_MSG(0, "%s: %s", pairs[c][0], up_last_error());
                        continue;
                    }
                    int64_t out = k == HF_PROJ_DOWN ? 16 : 8, in = k == HF_PROJ_DOWN ? 8 : 16;
                    CHECK(pa.out == out && pa.in == in && pb.out == out && pb.in == in);
                    CHECK(hf_proj_contiguous(&pa) && pa.offset == 0 && hf_proj_contiguous(&pb));
                    int64_t want = k == HF_PROJ_DOWN ? e * 16 * 8 : e * 16 * 16 + (k == HF_PROJ_UP) * 8 * 16;
                    CHECK_MSG(pb.offset == want, "packed offset %lld; expected %lld", (long long)pb.offset, (long long)want);
                    CHECK(pa.scale.file < 0 && pb.scale.file < 0);
                    for (int64_t o = 0; o < out; o++)
                        for (int64_t i = 0; i < in; i++)
                            n_diff += hf_proj_value(&a, &pa, o, i) != hf_proj_value(&b, &pb, o, i);
                }
        CHECK_MSG(n_diff == 0, "%s: %d values differ between the layouts", pairs[c][0], n_diff);
        hf_moe_close(&a);
        hf_moe_close(&b);
        free(da);
        free(db);
    }

    /* GPT-OSS: gate[o][i] = gate_up_proj[e][i][2o], up = [..][2o + 1], down[o][i] = down_proj[e][i][o] */
    char *dir = path_join(root, "gpt_oss");
    HfMoeCkpt mc;
    if (hf_moe_open(dir, &mc) == 0) {
        CHECK(mc.layout == HF_LAYOUT_PACKED && mc.moe[0].router_bias.file >= 0 && mc.moe[0].bias.file < 0);
        int n_diff = 0;
        for (int m = 0; m < mc.n_moe; m++) {
            HfTensorRef gu = hf_moe_expert_tensor(&mc, m, 0, "gate_up_proj"), dn = hf_moe_expert_tensor(&mc, m, 0, "down_proj");
            const StTensor *tg = hf_ckpt_tensor(&mc.ck, gu), *td = hf_ckpt_tensor(&mc.ck, dn);
            const unsigned char *g = st_data(hf_ckpt_file(&mc.ck, gu), tg), *d = st_data(hf_ckpt_file(&mc.ck, dn), td);
            int64_t H = 32, I = 64;
            CHECK(tg->shape[1] == H && tg->shape[2] == 2 * I && td->shape[1] == I && td->shape[2] == H);
            for (int e = 0; e < 4; e++) {
                HfProj p[3];
                for (int k = 0; k < 3; k++) CHECK(hf_expert_proj(&mc, m, e, k, &p[k]) == 0);
                CHECK(p[0].out == I && p[0].in == H && p[2].out == H && p[2].in == I && !hf_proj_contiguous(&p[0]));
                for (int64_t o = 0; o < I; o++)
                    for (int64_t i = 0; i < H; i++) {
                        n_diff += hf_proj_value(&mc, &p[0], o, i) != raw_value(tg, g, (e * H + i) * 2 * I + 2 * o);
                        n_diff += hf_proj_value(&mc, &p[1], o, i) != raw_value(tg, g, (e * H + i) * 2 * I + 2 * o + 1);
                        n_diff += hf_proj_value(&mc, &p[2], i, o) != raw_value(td, d, (e * I + o) * H + i);
                    }
            }
        }
        CHECK_MSG(n_diff == 0, "gpt_oss: %d projection values are not where transformers reads them", n_diff);
        hf_moe_close(&mc);
    } else CHECK_MSG(0, "gpt_oss: %s", up_last_error());
    free(dir);

    /* FP8: W[o][i] = code * scale_inv[o / 4][i / 6] (weight_block_size [4, 6]) */
    dir = path_join(root, "deepseek_v3_fp8");
    if (hf_moe_open(dir, &mc) == 0) {
        CHECK(mc.fp8_block[0] == 4 && mc.fp8_block[1] == 6);
        int n_diff = 0;
        for (int m = 0; m < mc.n_moe; m++)
            for (int e = 0; e < 4; e++)
                for (int k = 0; k < 3; k++) {
                    HfProj p;
                    CHECK(hf_expert_proj(&mc, m, e, k, &p) == 0 && p.scale.file >= 0);
                    const StTensor *w = hf_ckpt_tensor(&mc.ck, p.weight), *sc = hf_ckpt_tensor(&mc.ck, p.scale);
                    CHECK(w->dtype == (m == 0 ? ST_F8_E4M3 : ST_F8_E5M2) && sc->dtype == ST_F32);
                    CHECK(sc->shape[0] == (p.out + 3) / 4 && sc->shape[1] == (p.in + 5) / 6);
                    const unsigned char *wd = st_data(hf_ckpt_file(&mc.ck, p.weight), w);
                    const unsigned char *sd = st_data(hf_ckpt_file(&mc.ck, p.scale), sc);
                    for (int64_t o = 0; o < p.out; o++)
                        for (int64_t i = 0; i < p.in; i++) {
                            float want = raw_value(w, wd, o * p.in + i) * raw_value(sc, sd, (o / 4) * sc->shape[1] + i / 6);
                            n_diff += hf_proj_value(&mc, &p, o, i) != want;
                        }
                }
        CHECK_MSG(n_diff == 0, "deepseek_v3_fp8: %d dequantized values differ", n_diff);
        hf_moe_close(&mc);
    } else CHECK_MSG(0, "deepseek_v3_fp8: %s", up_last_error());
    free(dir);

    /* MXFP4 is refused in one line */
    dir = path_join(root, "gpt_oss_mxfp4");
    if (hf_moe_open(dir, &mc) == 0) {
        HfProj p;
        expect_error(hf_expert_proj(&mc, 0, 0, HF_PROJ_GATE, &p), "MXFP4 projection", "MXFP4", "gate_up_proj_blocks");
        hf_moe_close(&mc);
    }
    free(dir);
}

/* ||W_e|| from hf_weight_norms against make_hf_fixtures.py's float64 sums (FP8 dequantized there
 * by its own decoder); the plan is allocate_greedy's on those utilities, layer by layer. */
TEST(test_hf_weight_norm_utility) {
    const char *root = test_tmpdir();
    const char *names[] = {"qwen2_moe", "qwen3_moe", "olmoe", "mixtral", "deepseek_v3", "qwen3_moe_packed",
                           "mixtral_packed", "deepseek_v3_fp8", "gpt_oss"};
    if (fixture_hf(root, "qwen2_moe qwen3_moe olmoe mixtral deepseek_v3 qwen3_moe_packed mixtral_packed "
                            "deepseek_v3_fp8 gpt_oss gpt_oss_mxfp4") != 0)
        return;
    int layers_differ = 0;
    for (size_t c = 0; c < sizeof names / sizeof *names; c++) {
        char *in = path_join(root, names[c]);
        char *json_path = xasprintf("%s.norms.json", in);
        cJSON *want = load_json(json_path);
        HfMoeInfo info;
        if (!want || hf_inspect(in, &info) != 0) {
            CHECK_MSG(0, "%s: %s", names[c], want ? up_last_error() : "no norms.json");
            cJSON_Delete(want);
            free(json_path);
            free(in);
            continue;
        }
        int E = info.n_experts, n = info.n_moe_layers;
        double *u = xcalloc((size_t)n * E, sizeof *u);
        CHECK_MSG(hf_weight_norms(in, u) == 0, "%s: %s", names[c], up_last_error());
        const cJSON *layers = cJSON_GetObjectItem(want, "layers"), *norms = cJSON_GetObjectItem(want, "norms");
        CHECK(cJSON_GetArraySize(layers) == n && cJSON_GetArraySize(norms) == n);
        for (int m = 0; m < n && m < cJSON_GetArraySize(norms); m++) {
            CHECK(cJSON_GetArrayItem(layers, m)->valueint == info.moe_layers[m]);
            const cJSON *row = cJSON_GetArrayItem(norms, m);
            for (int e = 0; e < E; e++) {
                double w = cJSON_GetArrayItem(row, e)->valuedouble, got = u[m * E + e];
                CHECK_MSG(fabs(got - w) <= 1e-9 * fabs(w), "%s layer %d expert %d: ||W|| %.17g; expected %.17g",
                          names[c], info.moe_layers[m], e, got, w);
            }
        }
        /* the plan: plan.c's greedy allocation of these utilities, per layer */
        GrowPlan plan;
        CHECK(hf_plan_utility(&info, 6, u, 0, &plan) == 0);
        CHECK(plan.n_layers == n);
        for (int m = 0; m < n && m < plan.n_layers; m++) {
            LayerPlan ref = {info.moe_layers[m], E, 6, xcalloc(6, sizeof(int)), xcalloc((size_t)E, sizeof(int)), NULL};
            CHECK(allocate_greedy(&ref, u + m * E, 0) == 0);
            const LayerPlan *lp = &plan.layers[m];
            CHECK(lp->layer == ref.layer && lp->n_old == E && lp->n_new == 6 && lp->utility);
            CHECK(memcmp(lp->copies, ref.copies, (size_t)E * sizeof(int)) == 0 && memcmp(lp->source, ref.source, 6 * sizeof(int)) == 0);
            CHECK(lp->utility && memcmp(lp->utility, u + m * E, (size_t)E * sizeof(double)) == 0);
            if (m > 0) layers_differ |= memcmp(lp->copies, plan.layers[0].copies, (size_t)E * sizeof(int)) != 0;
            free(ref.source);
            free(ref.copies);
        }
        /* grown with it through the same writer */
        char out[1024], label[160];
        snprintf(out, sizeof out, "%s/%s-utility", root, names[c]);
        snprintf(label, sizeof label, "%s weight-norm 4->6", names[c]);
        HfGrowOptions opt = {0.5f, 3, 0};
        grow_and_verify(in, out, &info, &plan, &opt, label);
        grow_plan_free(&plan);
        /* a cap that makes the target unreachable */
        expect_error(hf_plan_utility(&info, 12, u, 2, &plan), "max copies", "--max-copies 2", NULL);
        CHECK(plan.layers == NULL);
        free(u);
        hf_info_free(&info);
        cJSON_Delete(want);
        free(json_path);
        free(in);
    }
    CHECK_MSG(layers_differ, "every layer got the same copies; expected the fixtures to differ by layer");

    char *mx = path_join(root, "gpt_oss_mxfp4");
    double u[8];
    expect_error(hf_weight_norms(mx, u), "MXFP4 weight norms", "MXFP4", "not dequantized");
    free(mx);
}

/* grow.json records a utility growth like the engine's: per layer source, copies, utilities;
 * an input's grow.json is not copied over it. */
TEST(test_hf_grow_record) {
    const char *root = test_tmpdir();
    if (fixture_hf(root, "mixtral") != 0) return;
    char *in = path_join(root, "mixtral");
    HfMoeInfo info;
    CHECK(hf_inspect(in, &info) == 0);
    double u[8];
    CHECK(hf_weight_norms(in, u) == 0);
    GrowPlan plan;
    CHECK(hf_plan_utility(&info, 6, u, 0, &plan) == 0);
    char *stale = path_join(in, "grow.json");
    CHECK(atomic_write_file(stale, "{\"stale\": true}\n", 16) == 0);
    char out[1024];
    snprintf(out, sizeof out, "%s/recorded", root);
    HfGrowOptions opt = {0.25f, 5, 0, HF_GROW_LAYOUT_PACKED, 1, "weight-norm"};
    CHECK_MSG(hf_grow(in, out, &plan, &opt) == 0, "%s", up_last_error());
    char *path = path_join(out, "grow.json");
    cJSON *j = load_json(path);
    CHECK(j != NULL);
    if (j) {
        CHECK(!cJSON_GetObjectItem(j, "stale"));
        CHECK(strcmp(cJSON_GetObjectItem(j, "alloc")->valuestring, "utility") == 0);
        CHECK(strcmp(cJSON_GetObjectItem(j, "utility")->valuestring, "weight-norm") == 0);
        CHECK(strcmp(cJSON_GetObjectItem(j, "layout")->valuestring, "packed") == 0);
        CHECK(strcmp(cJSON_GetObjectItem(j, "model_type")->valuestring, "mixtral") == 0);
        CHECK(cJSON_GetObjectItem(j, "experts_before")->valueint == 4 && cJSON_GetObjectItem(j, "experts_after")->valueint == 6);
        const cJSON *layers = cJSON_GetObjectItem(j, "layers");
        CHECK(cJSON_GetArraySize(layers) == plan.n_layers);
        for (int m = 0; m < plan.n_layers && m < cJSON_GetArraySize(layers); m++) {
            const cJSON *l = cJSON_GetArrayItem(layers, m);
            CHECK(cJSON_GetObjectItem(l, "layer")->valueint == plan.layers[m].layer);
            for (int k = 0; k < 6; k++)
                CHECK(cJSON_GetArrayItem(cJSON_GetObjectItem(l, "source"), k)->valueint == plan.layers[m].source[k]);
            for (int e = 0; e < 4; e++)
                CHECK(cJSON_GetArrayItem(cJSON_GetObjectItem(l, "utility"), e)->valuedouble == u[m * 4 + e]);
        }
        cJSON_Delete(j);
    }
    remove(stale);
    free(stale);
    free(path);
    grow_plan_free(&plan);
    hf_info_free(&info);
    free(in);
}

TEST(test_hf_layout_errors) {
    const char *root = test_tmpdir();
    if (fixture_hf(root, "bad_fp8_no_scale bad_packed_dim") != 0) return;
    HfMoeInfo info;
    char in[1024];
    snprintf(in, sizeof in, "%s/bad_fp8_no_scale", root);
    expect_error(hf_inspect(in, &info), "FP8 without scales", "model.layers.1.mlp.experts.0.gate_proj.weight_scale_inv",
                 "F8_E4M3");
    snprintf(in, sizeof in, "%s/bad_packed_dim", root);
    expect_error(hf_inspect(in, &info), "packed first dim", "model.layers.0.mlp.experts.gate_up_proj", "[16, 4, 16]");
    GrowPlan plan = {0};
    char out[1024];
    snprintf(out, sizeof out, "%s/out", root);
    expect_error(hf_grow(in, out, &plan, NULL), "grow packed first dim", "expected [4, ...]", NULL);
    CHECK(!path_exists(out));
}
