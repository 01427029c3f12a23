/* upcycle bench gemm | train: figures, not pass/fail. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "grow/hf.h"
#include "util.h"

#include "bench.h"
#include "cli.h"
#include "config.h"
#include "model.h"

static int bench_gemm(int argc, char **argv) {
    int size = 1024, threads = 0;
    float seconds = 2.0f;
    CliOption opts[] = {
        {"size", OPT_INT, &size, "matrix size n of the n x n x n sgemm (default 1024)"},
        {"seconds", OPT_FLOAT, &seconds, "measurement time (default 2)"},
        {"threads", OPT_INT, &threads, "threads (default: all cores)"},
    };
    int prc = cli_parse("bench gemm", "[--size N] [--seconds S]", argc, argv, opts, 3);
    if (prc) return prc == 1 ? 0 : prc;
    if (size < 16 || size > 16384) return cli_usage_error("bench gemm", "--size %d; expected 16..16384", size);
    cli_set_threads(threads);
    printf("sgemm %dx%dx%d: %.1f GFLOP/s\n", size, size, size, bench_sgemm_gflops(size, seconds));
    return 0;
}

static int bench_train_cmd(int argc, char **argv) {
    const char *preset = "small", *device = "auto", *precision = "fp32";
    int steps = 5, threads = 0, batch = 0, seq = 0;
    CliOption opts[] = {
        {"preset", OPT_STR, &preset, "preset to time (default small)"},
        {"steps", OPT_INT, &steps, "timed steps (default 5, after 1 warm-up step)"},
        {"batch-size", OPT_INT, &batch, "override the preset's batch size"},
        {"seq-len", OPT_INT, &seq, "override the preset's sequence length"},
        {"threads", OPT_INT, &threads, "threads (default: all cores)"},
        {"device", OPT_STR, &device, "auto (default: the GPU when one is visible), cpu or cuda"},
        {"precision", OPT_STR, &precision, "fp32 (default) or bf16 (CUDA only)"},
    };
    int prc = cli_parse("bench train", "[--preset P] [--steps N]", argc, argv, opts, sizeof opts / sizeof *opts);
    if (prc) return prc == 1 ? 0 : prc;
    const Preset *p = preset_find(preset);
    if (!p) return cli_usage_error("bench train", "unknown preset '%s'; expected one of tiny, small, dense, interleaved, fullmoe, large", preset);
    if (steps < 1) return cli_usage_error("bench train", "--steps %d; expected >= 1", steps);
    if (strcmp(precision, "fp32") && strcmp(precision, "bf16"))
        return cli_usage_error("bench train", "--precision %s; expected fp32 or bf16", precision);
    const Backend *be;
    int brc = cli_backend("bench train", device, &be);
    if (brc) return brc;
    cli_set_threads(threads);
    TrainConfig tc = p->train;
    if (batch > 0) tc.batch_size = batch;
    if (seq > 0) tc.seq_len = seq;
    tc.precision = strcmp(precision, "bf16") ? PRECISION_FP32 : PRECISION_BF16;
    int on_cpu = be == backend_cpu();
    double peak = on_cpu ? bench_sgemm_gflops(1024, 1.0) : 0;
    TrainBench r;
    if (bench_train(be, &p->model, &tc, 1, steps, &r)) return cli_fail();
    printf("preset %s: batch %d x %d tokens, %.3f s/step, %.0f tokens/s (%s, %s)\n", preset, tc.batch_size, tc.seq_len,
           r.seconds_per_step, r.tokens_per_second, be->name, precision);
    if (on_cpu)
        printf("model FLOPs %.2f GFLOP/step -> %.1f GFLOP/s = %.1f%% of measured sgemm peak %.1f GFLOP/s\n",
               r.flops_per_step / 1e9, r.model_gflops, 100.0 * r.model_gflops / peak, peak);
    else
        printf("model FLOPs %.2f GFLOP/step -> %.1f GFLOP/s\n", r.flops_per_step / 1e9, r.model_gflops);
    return 0;
}

/* grow throughput next to `cp` of the same bytes, in the same run */
static int bench_grow_cmd(int argc, char **argv) {
    const char *dir = NULL;
    float gigabytes = 2.0f;
    int keep = 0;
    CliOption opts[] = {
        {"dir", OPT_STR, &dir, "scratch directory (default: a new directory under $TMPDIR or /tmp)"},
        {"gb", OPT_FLOAT, &gigabytes, "size of the generated bf16 checkpoint in GB (default 2)"},
        {"keep", OPT_FLAG, &keep, "keep the generated files"},
    };
    int prc = cli_parse("bench grow", "[--gb G] [--dir DIR]", argc, argv, opts, 3);
    if (prc) return prc == 1 ? 0 : prc;
    if (gigabytes <= 0 || gigabytes > 1000) return cli_usage_error("bench grow", "--gb %g; expected 0 < G <= 1000", gigabytes);
    char scratch[1024];
    if (dir) snprintf(scratch, sizeof scratch, "%s", dir);
    else snprintf(scratch, sizeof scratch, "%s/upcycle-bench-grow-%ld", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (long)getpid());
    if (mkdir_p(scratch)) return cli_fail();
    char *in = path_join(scratch, "in"), *copy = path_join(scratch, "copy"), *out = path_join(scratch, "grown");
    remove_tree(in), remove_tree(copy), remove_tree(out);
    int rc = hf_bench_make_checkpoint(in, gigabytes);
    HfMoeInfo info;
    if (!rc) rc = hf_inspect(in, &info);
    if (rc) {
        free(in), free(copy), free(out);
        return cli_fail();
    }
    double in_gb = info.total_bytes / 1e9;
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "sync; cp -r '%s' '%s' && sync", in, copy);
    double t0 = now_seconds();
    int cp_rc = system(cmd);
    double t_cp = now_seconds() - t0;
    GrowPlan plan;
    HfGrowOptions hopt = {.bias_noise = 1.0f, .seed = 1, .force = 0};
    rc = hf_plan_uniform(&info, 2 * info.n_experts, &plan);
    t0 = now_seconds();
    if (!rc) rc = hf_grow(in, out, &plan, &hopt);
    double t_grow = now_seconds() - t0;
    if (!rc) grow_plan_free(&plan);
    if (!rc) {
        HfMoeInfo grown;
        double out_gb = 0;
        if (hf_inspect(out, &grown) == 0) out_gb = grown.total_bytes / 1e9, hf_info_free(&grown);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf("checkpoint: %.2f GB bf16, %d MoE layers x %d experts -> %d experts (%.2f GB written)\n", in_gb,
               info.n_moe_layers, info.n_experts, 2 * info.n_experts, out_gb);
        printf("cp -r (read %.2f GB, write %.2f GB): %.2f s = %.2f GB/s written%s\n", in_gb, in_gb, t_cp, in_gb / t_cp,
               cp_rc ? " (cp failed)" : "");
        printf("grow 2x (read %.2f GB, write %.2f GB): %.2f s = %.2f GB/s written\n", in_gb, out_gb, t_grow, out_gb / t_grow);
        printf("grow / cp throughput (bytes written per second): %.2fx; peak RSS %.0f MB (checkpoint %.0f MB)\n",
               (out_gb / t_grow) / (in_gb / t_cp), ru.ru_maxrss / 1024.0, in_gb * 1e3);
    }
    hf_info_free(&info);
    if (!keep) remove_tree(in), remove_tree(copy), remove_tree(out), (dir ? 0 : rmdir(scratch));
    free(in), free(copy), free(out);
    return rc ? cli_fail() : 0;
}

int cmd_bench(int argc, char **argv) {
    if (argc >= 1 && !strcmp(argv[0], "grow")) return bench_grow_cmd(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "gemm")) return bench_gemm(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "train")) return bench_train_cmd(argc - 1, argv + 1);
    if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        printf("usage: upcycle bench gemm [--size N] | bench train [--preset P] [--steps N] | bench grow [--gb G]\n");
        return 0;
    }
    return cli_usage_error("bench", "missing or unknown benchmark; expected gemm, train or grow");
}
