/* bench.h - throughput measurements: sgemm peak and training steps on synthetic tokens, and the
 * synthetic checkpoint that `bench grow` grows. */
#ifndef UPCYCLE_BENCH_H
#define UPCYCLE_BENCH_H

#include "backend.h"
#include "config.h"

/* this process's peak resident set so far (getrusage), in bytes */
double peak_rss_bytes(void);

/* Best GFLOP/s of an n x n x n sgemm over repeated calls lasting at least `seconds`. */
double bench_sgemm_gflops(int n, double seconds);
/* the same product with the CPU backend's bf16 GEMM (0 where the CPU has no AVX-512 BF16) */
double bench_bf16_gemm_gflops(int n, double seconds);

typedef struct {
    double seconds_per_step, tokens_per_second, model_gflops; /* achieved model FLOP/s (6N-style, see model.h) */
    double flops_per_step;
    /* memory: analytic bytes = parameters + gradients + AdamW m and v (4 x 4 bytes per
     * parameter) + the activation block; resident set before the model existed and at the
     * peak of the timed steps (getrusage; meaningful for the CPU backend) */
    double param_state_bytes, activation_bytes, rss_before_bytes, rss_peak_bytes;
} TrainBench;

/* Times `steps` full training steps (forward, backward, AdamW) after `warmup` untimed ones,
 * on backend be (NULL: the CPU) at tc->precision. profile: through backend_profiled, its
 * accounts holding the timed steps (backend_profile_print). */
int bench_train(const Backend *be, const ModelConfig *mc, const TrainConfig *tc, int warmup, int steps, int profile, TrainBench *out);

/* Writes a synthetic BF16 qwen3_moe checkpoint of about `gigabytes` (4 layers, 32 experts,
 * hidden 1024, expert width chosen to reach the size, F32 balancing biases), sharded into
 * max(2, ceil(gigabytes)) files with an index, for `bench grow`. dir is created (mkdir -p).
 * The bytes depend only on `gigabytes` (fixed seed). (src/bench_hf_fixture.c) */
int hf_bench_make_checkpoint(const char *dir, double gigabytes);

#endif
