#include "bench.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include "backend_profile.h"
#include "cpu/gemm_bf16.h"
#include "model.h"
#include "util.h"

/* best GFLOP/s of an n x n x n product C = A B^T over `seconds`: OpenBLAS sgemm, or the bf16 GEMM */
static double bench_gemm_gflops(int n, double seconds, int bf16) {
    size_t nn = (size_t)n * n;
    float *a = aligned_alloc64(nn * 4), *b = aligned_alloc64(nn * 4), *c = aligned_alloc64(nn * 4);
    Rng rng;
    rng_seed(&rng, 1);
    for (size_t i = 0; i < nn; i++) a[i] = rng_normal(&rng), b[i] = rng_normal(&rng);
    double best = 0, start = now_seconds();
    for (int it = 0; it == 0 || now_seconds() - start < seconds; it++) { /* the first is the warm-up */
        double t0 = now_seconds();
        if (bf16) gemm_bf16(0, 1, n, n, n, a, n, b, n, 0.0f, c, n);
        else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double gflops = 2.0 * n * (double)nn / (now_seconds() - t0) / 1e9;
        if (it > 0) best = gflops > best ? gflops : best;
    }
    free(a), free(b), free(c);
    return best;
}

double bench_sgemm_gflops(int n, double seconds) { return bench_gemm_gflops(n, seconds, 0); }

double bench_bf16_gemm_gflops(int n, double seconds) { return gemm_bf16_supported() ? bench_gemm_gflops(n, seconds, 1) : 0; }

double peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss * 1024.0; /* KiB on Linux */
}

static double rss_now_bytes(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return (double)resident * sysconf(_SC_PAGESIZE);
}

int bench_train(const Backend *be, const ModelConfig *mc, const TrainConfig *tc, int warmup, int steps, int profile, TrainBench *out) {
    Model m;
    if (!be) be = backend_cpu();
    if (profile) be = backend_profiled(be);
    out->rss_before_bytes = rss_now_bytes();
    if ((be->set_precision && be->set_precision(tc->precision)) || model_create(&m, mc, be)) return -1;
    model_init_weights(&m, tc->seed);
    model_set_batch(&m, tc->batch_size, tc->seq_len);
    size_t n = (size_t)tc->batch_size * (tc->seq_len + 1);
    int32_t *tokens = xmalloc(sizeof(int32_t) * n);
    Rng rng;
    rng_seed(&rng, 7);
    double t0 = 0;
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) {
            backend_profile_reset();
            t0 = now_seconds();
        }
        for (size_t i = 0; i < n; i++) tokens[i] = (int32_t)rng_below(&rng, mc->vocab_size);
        model_zero_grad(&m);
        model_forward(&m, tokens, tc->aux_loss_coef, tc->z_loss_coef);
        model_backward(&m, tc->aux_loss_coef, tc->z_loss_coef);
        model_optimizer_step(&m, tc, tc->lr);
    }
    double elapsed = now_seconds() - t0;
    double tokens_per_step = (double)tc->batch_size * tc->seq_len;
    out->seconds_per_step = elapsed / steps;
    out->tokens_per_second = tokens_per_step / out->seconds_per_step;
    out->flops_per_step = 3.0 * model_flops_per_token(mc, tc->seq_len) * tokens_per_step;
    out->model_gflops = out->flops_per_step / out->seconds_per_step / 1e9;
    out->param_state_bytes = 4.0 * sizeof(float) * m.n_floats;
    out->activation_bytes = (double)m.act_bytes;
    out->rss_peak_bytes = peak_rss_bytes();
    free(tokens);
    model_free(&m);
    return 0;
}
