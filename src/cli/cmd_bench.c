/* upcycle bench gemm | train: figures, not pass/fail. */
#include <stdio.h>
#include <string.h>

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
    const char *preset = "small";
    int steps = 5, threads = 0, batch = 0, seq = 0;
    CliOption opts[] = {
        {"preset", OPT_STR, &preset, "preset to time (default small)"},
        {"steps", OPT_INT, &steps, "timed steps (default 5, after 1 warm-up step)"},
        {"batch-size", OPT_INT, &batch, "override the preset's batch size"},
        {"seq-len", OPT_INT, &seq, "override the preset's sequence length"},
        {"threads", OPT_INT, &threads, "threads (default: all cores)"},
    };
    int prc = cli_parse("bench train", "[--preset P] [--steps N]", argc, argv, opts, sizeof opts / sizeof *opts);
    if (prc) return prc == 1 ? 0 : prc;
    const Preset *p = preset_find(preset);
    if (!p) return cli_usage_error("bench train", "unknown preset '%s'; expected one of tiny, small, dense, interleaved, fullmoe, large", preset);
    if (steps < 1) return cli_usage_error("bench train", "--steps %d; expected >= 1", steps);
    cli_set_threads(threads);
    TrainConfig tc = p->train;
    if (batch > 0) tc.batch_size = batch;
    if (seq > 0) tc.seq_len = seq;
    double peak = bench_sgemm_gflops(1024, 1.0);
    TrainBench r;
    if (bench_train(&p->model, &tc, 1, steps, &r)) return cli_fail();
    printf("preset %s: batch %d x %d tokens, %.3f s/step, %.0f tokens/s\n", preset, tc.batch_size, tc.seq_len,
           r.seconds_per_step, r.tokens_per_second);
    printf("model FLOPs %.2f GFLOP/step -> %.1f GFLOP/s = %.1f%% of measured sgemm peak %.1f GFLOP/s\n",
           r.flops_per_step / 1e9, r.model_gflops, 100.0 * r.model_gflops / peak, peak);
    return 0;
}

int cmd_bench(int argc, char **argv) {
    if (argc >= 1 && !strcmp(argv[0], "gemm")) return bench_gemm(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "train")) return bench_train_cmd(argc - 1, argv + 1);
    if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        printf("usage: upcycle bench gemm [--size N] | upcycle bench train [--preset P] [--steps N]\n");
        return 0;
    }
    return cli_usage_error("bench", "expected 'gemm' or 'train'");
}
