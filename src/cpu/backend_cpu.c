/* backend_cpu.c - the CPU backend: OpenBLAS for every GEMM, OpenMP for everything else.
 *
 * Determinism: every parallel loop writes disjoint outputs and every reduction runs in a
 * fixed order, so a run is bit-reproducible for a given seed and thread count. GEMMs inside
 * OpenMP regions run single-threaded (the OpenMP build of OpenBLAS detects the region). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "router_math.h"
#include "cpu/attention.h"
#include "cpu/gemm_bf16.h"
#include "cpu/simd.h"
#include "util.h"

/* ---- memory ---- */

static void *cpu_alloc(size_t bytes) { return aligned_alloc64(bytes); }
static void cpu_free(void *p) { free(p); }
static void cpu_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memmove(dst, src, bytes);
}
static void cpu_zero(void *p, size_t bytes) {
    if (bytes) memset(p, 0, bytes);
}
static void cpu_set_threads(int n) {
    if (n > 0) {
        omp_set_num_threads(n);
        openblas_set_num_threads(n);
    }
}

/* ---- elementwise ---- */

static void cpu_add(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

static void cpu_accumulate(float *acc, const float *x, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) acc[i] += x[i];
}

/* Fixed-size chunks summed in double, then chunk sums added in order: the result does not
 * depend on the thread count. */
static double cpu_sum_squares(const float *x, size_t n) {
    const size_t chunk = 1 << 16;
    size_t n_chunks = (n + chunk - 1) / chunk;
    double *partial = xcalloc(n_chunks ? n_chunks : 1, sizeof(double));
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < n_chunks; c++) {
        size_t end = (c + 1) * chunk < n ? (c + 1) * chunk : n;
        double s = 0;
        /* in vector lanes (a fixed order for a given ISA): a serial double sum waits on each add */
#pragma omp simd reduction(+ : s)
        for (size_t i = c * chunk; i < end; i++) s += (double)x[i] * x[i];
        partial[c] = s;
    }
    double total = 0;
    for (size_t c = 0; c < n_chunks; c++) total += partial[c];
    free(partial);
    return total;
}

/* ---- embedding ---- */

static void cpu_embedding_forward(float *out, const int32_t *tokens, const float *table, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++) memcpy(out + (size_t)t * C, table + (size_t)tokens[t] * C, sizeof(float) * C);
}

/* Threads own disjoint column ranges, so rows repeated in `tokens` never race. */
static void cpu_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int N, int C, int V) {
#pragma omp parallel
    {
        int n_threads = omp_get_num_threads(), id = omp_get_thread_num();
        int c0 = (int)((long)C * id / n_threads), c1 = (int)((long)C * (id + 1) / n_threads);
        for (int t = 0; t < N; t++) {
            float *row = dtable + (size_t)tokens[t] * C;
            const float *d = dout + (size_t)t * C;
            for (int c = c0; c < c1; c++) row[c] += d[c];
        }
    }
}

/* ---- linear ---- */

/* --precision bf16: the weight GEMMs (projections, experts) take bf16 operands with fp32
 * accumulation (gemm_bf16.c); attention's GEMMs, every other op, the weights, gradients and
 * Adam's moments stay fp32 */
static int g_bf16 = 0;

/* row-major C = op(A) op(B) + beta C: OpenBLAS sgemm, or the bf16 GEMM when enabled */
static void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, const float *A, int lda, const float *B,
                 int ldb, float beta, float *C, int ldc) {
    if (g_bf16) gemm_bf16(ta == CblasTrans, tb == CblasTrans, M, N, K, A, lda, B, ldb, beta, C, ldc);
    else cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

/* C = op(A) op(B) + beta C with the M rows of C split over the threads, one single-threaded
 * product each: every element is the same sum as in one product, and at the sizes of the
 * presets this beats one product on all OpenBLAS threads (tiny's projections: 45-54% -> 75-90%
 * of sgemm, docs/perf.md) */
static void gemm_rows(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, const float *A, int lda, const float *B,
                      int ldb, float beta, float *C, int ldc) {
    int parts = omp_get_max_threads();
    if (parts < 2 || M < 64 * parts) {
        gemm(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(parts)
    for (int p = 0; p < parts; p++) {
        int r0 = (int)((long)M * p / parts), r1 = (int)((long)M * (p + 1) / parts);
        const float *a = ta == CblasTrans ? A + r0 : A + (size_t)r0 * lda;
        gemm(ta, tb, r1 - r0, N, K, a, lda, B, ldb, beta, C + (size_t)r0 * ldc, ldc);
    }
}

static void cpu_matmul_forward(float *out, const float *inp, const float *weight, int N, int n_in, int n_out) {
    if (N == 0) return;
    gemm_rows(CblasNoTrans, CblasTrans, N, n_out, n_in, inp, n_in, weight, n_in, 0.0f, out, n_out);
}

static void cpu_matmul_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                                int N, int n_in, int n_out) {
    if (N == 0) return;
    /* on 2 threads the two products (the same FLOPs) run side by side, one thread each */
    if (dinp && dweight && omp_get_max_threads() == 2) {
#pragma omp parallel sections num_threads(2)
        {
#pragma omp section
            gemm(CblasNoTrans, CblasNoTrans, N, n_in, n_out, dout, n_out, weight, n_in, 1.0f, dinp, n_in);
#pragma omp section
            gemm(CblasTrans, CblasNoTrans, n_out, n_in, N, dout, n_out, inp, n_in, 1.0f, dweight, n_in);
        }
        return;
    }
    if (dinp) gemm_rows(CblasNoTrans, CblasNoTrans, N, n_in, n_out, dout, n_out, weight, n_in, 1.0f, dinp, n_in);
    if (dweight) gemm_rows(CblasTrans, CblasNoTrans, n_out, n_in, N, dout, n_out, inp, n_in, 1.0f, dweight, n_in);
}

/* ---- RMSNorm ---- */

static void cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N, int C, float eps) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++) {
        const float *x = inp + (size_t)t * C;
        float *o = out + (size_t)t * C;
        float ss = 0;
#pragma omp simd reduction(+ : ss) /* lanes: a serial sum waits on each add */
        for (int c = 0; c < C; c++) ss += x[c] * x[c];
        float r = 1.0f / sqrtf(ss / C + eps);
        for (int c = 0; c < C; c++) o[c] = x[c] * r * weight[c];
        rstd[t] = r;
    }
}

/* y = x r w, r = (mean(x^2)+eps)^-1/2:  dx = r (dy w) - x r^3 mean(dy w x),  dw = sum_t dy x r.
 * dweight is reduced in fixed-size token blocks so the sum order does not depend on threads. */
static void cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                                 const float *rstd, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++) {
        const float *x = inp + (size_t)t * C, *dy = dout + (size_t)t * C;
        float *dx = dinp + (size_t)t * C;
        float r = rstd[t], dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int c = 0; c < C; c++) dot += dy[c] * weight[c] * x[c];
        float k = dot * r * r * r / C;
        for (int c = 0; c < C; c++) dx[c] += dy[c] * weight[c] * r - x[c] * k;
    }
    if (!dweight) return;
    const int block = 256;
    int n_blocks = (N + block - 1) / block;
    float *partial = xcalloc((size_t)n_blocks * C, sizeof(float));
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n_blocks; b++) {
        float *p = partial + (size_t)b * C;
        int end = (b + 1) * block < N ? (b + 1) * block : N;
        for (int t = b * block; t < end; t++) {
            const float *x = inp + (size_t)t * C, *dy = dout + (size_t)t * C;
            float r = rstd[t];
            for (int c = 0; c < C; c++) p[c] += dy[c] * x[c] * r;
        }
    }
    for (int b = 0; b < n_blocks; b++)
        for (int c = 0; c < C; c++) dweight[c] += partial[(size_t)b * C + c];
    free(partial);
}

/* ---- RoPE (rotate-half): pairs (i, i + hd/2) rotate by t * theta^(-2i/hd) ---- */

/* cos/sin tables for (T, head_dim, theta), computed once and kept (4 calls per layer and step used
 * to recompute T * head_dim/2 cosines and sines each); called outside parallel regions */
static const float *rope_tables(int T, int half, float theta, const float **sin_out) {
    static float *cos_t, *sin_t;
    static int cached_T = -1, cached_half = -1;
    static float cached_theta = -1;
    if (T != cached_T || half != cached_half || theta != cached_theta) {
        free(cos_t), free(sin_t);
        cos_t = xmalloc(sizeof(float) * T * half), sin_t = xmalloc(sizeof(float) * T * half);
        for (int i = 0; i < half; i++) {
            /* computed as Hugging Face does: inv_freq in float32, then angle in float32 */
            float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)(2 * half));
            for (int t = 0; t < T; t++) {
                float angle = (float)t * inv_freq;
                cos_t[t * half + i] = cosf(angle);
                sin_t[t * half + i] = sinf(angle);
            }
        }
        cached_T = T, cached_half = half, cached_theta = theta;
    }
    *sin_out = sin_t;
    return cos_t;
}

static void rope_apply(float *x, int B, int T, int n_heads, int head_dim, float theta, float direction) {
    int half = head_dim / 2;
    const float *sin_table, *cos_table = rope_tables(T, half, theta, &sin_table);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *cs = cos_table + t * half, *sn = sin_table + t * half;
            for (int h = 0; h < n_heads; h++) {
                float *v = x + (((size_t)b * T + t) * n_heads + h) * head_dim;
#pragma omp simd
                for (int i = 0; i < half; i++) {
                    float x1 = v[i], x2 = v[i + half], s = direction * sn[i];
                    v[i] = x1 * cs[i] - x2 * s;
                    v[i + half] = x2 * cs[i] + x1 * s;
                }
            }
        }
}

static void cpu_rope_forward(float *x, int B, int T, int n_heads, int head_dim, float theta) {
    rope_apply(x, B, T, n_heads, head_dim, theta, 1.0f);
}

/* The rotation is orthogonal: its gradient is the inverse rotation. */
static void cpu_rope_backward(float *dx, int B, int T, int n_heads, int head_dim, float theta) {
    rope_apply(dx, B, T, n_heads, head_dim, theta, -1.0f);
}

/* ---- bias over rows, clamp ---- */

static void cpu_bias_add_forward(float *x, const float *bias, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++) {
        float *row = x + (size_t)t * C;
        for (int c = 0; c < C; c++) row[c] += bias[c];
    }
}

/* Threads own disjoint column ranges and sum their columns in row order: the result does not
 * depend on the thread count. */
static void cpu_bias_add_backward(float *dbias, const float *dout, int N, int C) {
#pragma omp parallel
    {
        int n_threads = omp_get_num_threads(), id = omp_get_thread_num();
        int c0 = (int)((long)C * id / n_threads), c1 = (int)((long)C * (id + 1) / n_threads);
        for (int t = 0; t < N; t++) {
            const float *d = dout + (size_t)t * C;
            for (int c = c0; c < c1; c++) dbias[c] += d[c];
        }
    }
}

static void cpu_clamp_forward(float *out, const float *inp, size_t n, float limit) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] < -limit ? -limit : inp[i] > limit ? limit : inp[i];
}

static void cpu_clamp_backward(float *dinp, const float *dout, const float *inp, size_t n, float limit) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) dinp[i] = inp[i] >= -limit && inp[i] <= limit ? dout[i] : 0.0f;
}

/* ---- SwiGLU ---- */

static inline float sigmoidf(float x) { return 1.0f / (1.0f + vexpf(-x)); }

/* ---- per-row sigmoid gate (the shared expert's) ---- */

static void cpu_sigmoid_gate_forward(float *out, const float *y, const float *logit, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++) {
        float s = sigmoidf(logit[t]);
        float *o = out + (size_t)t * C;
        const float *yt = y + (size_t)t * C;
        for (int c = 0; c < C; c++) o[c] += s * yt[c];
    }
}

static void cpu_sigmoid_gate_backward(float *dy, float *dlogit, const float *dout, const float *y, const float *logit,
                                      int N, int C) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++) {
        float s = sigmoidf(logit[t]), dot = 0;
        const float *d = dout + (size_t)t * C, *yt = y + (size_t)t * C;
        float *dyt = dy + (size_t)t * C;
        for (int c = 0; c < C; c++) {
            dot += d[c] * yt[c];
            dyt[c] = s * d[c];
        }
        dlogit[t] = s * (1.0f - s) * dot;
    }
}

static void cpu_swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = gate[i] * sigmoidf(gate[i]) * up[i];
}

static void swiglu_backward_serial(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                                   size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float s = sigmoidf(gate[i]), silu = gate[i] * s;
        dup[i] = dout[i] * silu;
        dgate[i] = dout[i] * up[i] * s * (1.0f + gate[i] * (1.0f - s));
    }
}

static void cpu_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                                size_t n) {
    const size_t chunk = 4096;
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < (n + chunk - 1) / chunk; c++) {
        size_t lo = c * chunk, len = lo + chunk < n ? chunk : n - lo;
        swiglu_backward_serial(dgate + lo, dup + lo, dout + lo, gate + lo, up + lo, len);
    }
}

/* out[i] = exp(in[i] - max(in)); returns the sum, *max_out the max (a stable softmax's parts) */
static inline float exp_shifted(float *out, const float *in, int n, float *max_out) {
    float mx = -INFINITY, sum = 0;
#pragma omp simd reduction(max : mx)
    for (int i = 0; i < n; i++) mx = in[i] > mx ? in[i] : mx;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < n; i++) sum += (out[i] = vexpf(in[i] - mx));
    *max_out = mx;
    return sum;
}

/* ---- router ---- */

static double cpu_router_forward(float *probs, int32_t *topk, float *gates, int32_t *loads, const float *logits,
                                 const float *bias, int N, int E, int K, int norm_topk, float aux_coef, float z_coef) {
    double z_sum = 0;
#pragma omp parallel for schedule(static) reduction(+ : z_sum)
    for (int t = 0; t < N; t++) {
        const float *l = logits + (size_t)t * E;
        float *p = probs + (size_t)t * E, mx;
        float sum = exp_shifted(p, l, E, &mx);
        for (int e = 0; e < E; e++) p[e] /= sum;
        double lse = mx + log((double)sum);
        z_sum += lse * lse;
        router_select_topk(topk + (size_t)t * K, gates + (size_t)t * K, p, bias, E, K, norm_topk);
    }
    memset(loads, 0, sizeof(int32_t) * E);
    for (size_t i = 0; i < (size_t)N * K; i++) loads[topk[i]]++;
    double aux = 0;
    if (aux_coef > 0) {
        for (int e = 0; e < E; e++) {
            double mean_prob = 0;
            for (int t = 0; t < N; t++) mean_prob += probs[(size_t)t * E + e];
            aux += (double)loads[e] / ((double)N * K) * (mean_prob / N);
        }
        aux *= (double)aux_coef * E;
    }
    if (z_coef > 0) aux += z_coef * z_sum / N;
    return aux;
}

static void cpu_router_backward(float *dlogits, const float *dgates, const float *probs, const int32_t *topk,
                                const float *logits, const int32_t *loads, int N, int E, int K, int norm_topk,
                                float aux_coef, float z_coef) {
    /* dlogits must not alias logits (router_math.h writes dlogits before reading logits) */
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++)
        router_token_backward(dlogits + (size_t)t * E, probs + (size_t)t * E, topk + (size_t)t * K, dgates + (size_t)t * K,
                              logits + (size_t)t * E, loads, N, E, K, norm_topk, aux_coef, z_coef);
}

/* ---- dispatch / combine ---- */

static void cpu_moe_permute(int32_t *offsets, int32_t *token_of, int32_t *position_of, const int32_t *topk,
                            const int32_t *loads, int N, int E, int K) {
    offsets[0] = 0;
    for (int e = 0; e < E; e++) offsets[e + 1] = offsets[e] + loads[e];
    int32_t *cursor = xmalloc(sizeof(int32_t) * E);
    memcpy(cursor, offsets, sizeof(int32_t) * E);
    for (int t = 0; t < N; t++)
        for (int k = 0; k < K; k++) {
            int pos = cursor[topk[(size_t)t * K + k]]++;
            token_of[pos] = t;
            position_of[(size_t)t * K + k] = pos;
        }
    free(cursor);
}

static void cpu_moe_gather_forward(float *xg, const float *x, const int32_t *token_of, int NK, int C) {
#pragma omp parallel for schedule(static)
    for (int p = 0; p < NK; p++) memcpy(xg + (size_t)p * C, x + (size_t)token_of[p] * C, sizeof(float) * C);
}

static void cpu_moe_gather_backward(float *dx, const float *dxg, const int32_t *position_of, int N, int K, int C) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++) {
        float *d = dx + (size_t)t * C;
        for (int k = 0; k < K; k++) {
            const float *s = dxg + (size_t)position_of[(size_t)t * K + k] * C;
            for (int c = 0; c < C; c++) d[c] += s[c];
        }
    }
}

static void cpu_moe_combine_forward(float *out, const float *yg, const float *gates, const int32_t *position_of, int N,
                                    int K, int C) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++) {
        float *o = out + (size_t)t * C;
        memset(o, 0, sizeof(float) * C);
        for (int k = 0; k < K; k++) {
            float g = gates[(size_t)t * K + k];
            const float *y = yg + (size_t)position_of[(size_t)t * K + k] * C;
            for (int c = 0; c < C; c++) o[c] += g * y[c];
        }
    }
}

static void cpu_moe_combine_backward(float *dyg, float *dgates, const float *dout, const float *yg, const float *gates,
                                     const int32_t *position_of, int N, int K, int C) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++) {
        const float *d = dout + (size_t)t * C;
        for (int k = 0; k < K; k++) {
            int pos = position_of[(size_t)t * K + k];
            const float *y = yg + (size_t)pos * C;
            float *dy = dyg + (size_t)pos * C;
            float g = gates[(size_t)t * K + k], dot = 0;
            for (int c = 0; c < C; c++) {
                dot += d[c] * y[c];
                dy[c] = g * d[c];
            }
            dgates[(size_t)t * K + k] = dot;
        }
    }
}

/* ---- grouped expert SwiGLU: one task per expert, each a single-threaded GEMM chain ---- */

/* The experts' token counts differ, and each expert is one thread's work: taking the largest
 * first (longest-processing-time order) leaves the least idle time at the end. Each expert's
 * products are independent, so the order changes no value. order has E entries. */
static void experts_largest_first(int *order, const int32_t *offsets, int E) {
    for (int e = 0; e < E; e++) {
        int n = offsets[e + 1] - offsets[e], at = e;
        while (at > 0 && offsets[order[at - 1] + 1] - offsets[order[at - 1]] < n) {
            order[at] = order[at - 1];
            at--;
        }
        order[at] = e;
    }
}

static void cpu_experts_forward(float *yg, float *g, float *u, float *h, const float *xg, const int32_t *offsets,
                                const float *w_gate, const float *w_up, const float *w_down, int E, int C, int F) {
    int order_here[256], *order = E <= 256 ? order_here : xmalloc(sizeof(int) * (size_t)E); /* no allocation per step */
    experts_largest_first(order, offsets, E);
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < E; i++) {
        int e = order[i];
        int row = offsets[e], n = offsets[e + 1] - offsets[e];
        if (n == 0) continue;
        const float *x = xg + (size_t)row * C;
        float *ge = g + (size_t)row * F, *ue = u + (size_t)row * F, *he = h + (size_t)row * F;
        const size_t w_size = (size_t)F * C;
        gemm(CblasNoTrans, CblasTrans, n, F, C, x, C, w_gate + e * w_size, C, 0.0f, ge, F);
        gemm(CblasNoTrans, CblasTrans, n, F, C, x, C, w_up + e * w_size, C, 0.0f, ue, F);
        for (size_t i = 0; i < (size_t)n * F; i++) he[i] = ge[i] * sigmoidf(ge[i]) * ue[i];
        gemm(CblasNoTrans, CblasTrans, n, C, F, he, F, w_down + e * w_size, F, 0.0f,
                    yg + (size_t)row * C, C);
    }
    if (order != order_here) free(order);
}

static void cpu_experts_backward(float *dxg, float *dw_gate, float *dw_up, float *dw_down, float *dg, float *du,
                                 float *dh, const float *dyg, const float *g, const float *u, const float *h,
                                 const float *xg, const int32_t *offsets, const float *w_gate, const float *w_up,
                                 const float *w_down, int E, int C, int F) {
    int order_here[256], *order = E <= 256 ? order_here : xmalloc(sizeof(int) * (size_t)E); /* no allocation per step */
    experts_largest_first(order, offsets, E);
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < E; i++) {
        int e = order[i];
        int row = offsets[e], n = offsets[e + 1] - offsets[e];
        if (n == 0) continue;
        const size_t w_size = (size_t)F * C, r = (size_t)row;
        const float *x = xg + r * C, *dy = dyg + r * C;
        float *dx = dxg + r * C, *dge = dg + r * F, *due = du + r * F, *dhe = dh + r * F;
        /* y = h Wd^T: dh = dy Wd, dWd += dy^T h */
        gemm(CblasNoTrans, CblasNoTrans, n, F, C, dy, C, w_down + e * w_size, F, 0.0f, dhe, F);
        gemm(CblasTrans, CblasNoTrans, C, F, n, dy, C, h + r * F, F, 1.0f,
                    dw_down + e * w_size, F);
        swiglu_backward_serial(dge, due, dhe, g + r * F, u + r * F, (size_t)n * F);
        /* g = x Wg^T, u = x Wu^T: dx = dg Wg + du Wu; dWg += dg^T x; dWu += du^T x */
        gemm(CblasNoTrans, CblasNoTrans, n, C, F, dge, F, w_gate + e * w_size, C, 0.0f, dx, C);
        gemm(CblasNoTrans, CblasNoTrans, n, C, F, due, F, w_up + e * w_size, C, 1.0f, dx, C);
        gemm(CblasTrans, CblasNoTrans, F, C, n, dge, F, x, C, 1.0f, dw_gate + e * w_size, C);
        gemm(CblasTrans, CblasNoTrans, F, C, n, due, F, x, C, 1.0f, dw_up + e * w_size, C);
    }
    if (order != order_here) free(order);
}

/* ---- cross-entropy ---- */

static void cpu_crossentropy_forward(float *losses, const float *logits, const int32_t *targets, int N, int V) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++) {
        const float *l = logits + (size_t)t * V;
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int i = 0; i < V; i++) mx = l[i] > mx ? l[i] : mx;
        float sum = 0; /* 16 float lanes: a double accumulator kept this loop from vectorizing */
#pragma omp simd reduction(+ : sum)
        for (int i = 0; i < V; i++) sum += vexpf(l[i] - mx);
        losses[t] = (float)(mx + log((double)sum) - l[targets[t]]);
    }
}

static void cpu_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets, int N, int V,
                                      float scale) {
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++) {
        const float *l = logits + (size_t)t * V;
        float *d = dlogits + (size_t)t * V, mx;
        float inv = scale / exp_shifted(d, l, V, &mx);
#pragma omp simd
        for (int i = 0; i < V; i++) d[i] *= inv;
        d[targets[t]] -= scale;
    }
}

/* ---- optimizer ---- */

static void cpu_adamw_update(float *param, const float *grad, float *m, float *v, size_t n, float lr, float beta1,
                             float beta2, float eps, float weight_decay, float grad_scale, int t) {
    /* the same arithmetic as torch.optim.AdamW (decoupled decay first, then the Adam step) */
    float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
    float step_size = lr / bc1, bc2_sqrt = sqrtf(bc2), decay = 1.0f - lr * weight_decay;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * grad_scale;
        m[i] = beta1 * m[i] + (1.0f - beta1) * g;
        v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
        param[i] = param[i] * decay - step_size * m[i] / (sqrtf(v[i]) / bc2_sqrt + eps);
    }
}

static void cpu_balance_bias_update(float *bias, const int32_t *loads, int E, float rate) {
    double total = 0;
    for (int e = 0; e < E; e++) total += loads[e];
    double mean = total / E;
    for (int e = 0; e < E; e++) {
        double diff = mean - loads[e];
        bias[e] += rate * (float)((diff > 0) - (diff < 0));
    }
}

static int cpu_set_precision(int precision) {
    if (precision == PRECISION_BF16 && !gemm_bf16_supported())
        return up_error("bf16 on the CPU needs AVX-512 BF16, which this CPU lacks; expected --precision fp32 (or --device cuda)");
    if (precision != PRECISION_FP32 && precision != PRECISION_BF16) return up_error("precision %d; expected fp32 or bf16", precision);
    g_bf16 = precision == PRECISION_BF16;
    return 0;
}

static const Backend g_cpu_backend = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .zero = cpu_zero,
    .copy = cpu_copy,
    .set_threads = cpu_set_threads,
    .add = cpu_add,
    .accumulate = cpu_accumulate,
    .sum_squares = cpu_sum_squares,
    .embedding_forward = cpu_embedding_forward,
    .embedding_backward = cpu_embedding_backward,
    .matmul_forward = cpu_matmul_forward,
    .matmul_backward = cpu_matmul_backward,
    .rmsnorm_forward = cpu_rmsnorm_forward,
    .rmsnorm_backward = cpu_rmsnorm_backward,
    .rope_forward = cpu_rope_forward,
    .rope_backward = cpu_rope_backward,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .bias_add_forward = cpu_bias_add_forward,
    .bias_add_backward = cpu_bias_add_backward,
    .clamp_forward = cpu_clamp_forward,
    .clamp_backward = cpu_clamp_backward,
    .sigmoid_gate_forward = cpu_sigmoid_gate_forward,
    .sigmoid_gate_backward = cpu_sigmoid_gate_backward,
    .swiglu_forward = cpu_swiglu_forward,
    .swiglu_backward = cpu_swiglu_backward,
    .router_forward = cpu_router_forward,
    .router_backward = cpu_router_backward,
    .moe_permute = cpu_moe_permute,
    .moe_gather_forward = cpu_moe_gather_forward,
    .moe_gather_backward = cpu_moe_gather_backward,
    .experts_forward = cpu_experts_forward,
    .experts_backward = cpu_experts_backward,
    .moe_combine_forward = cpu_moe_combine_forward,
    .moe_combine_backward = cpu_moe_combine_backward,
    .crossentropy_forward = cpu_crossentropy_forward,
    .crossentropy_backward = cpu_crossentropy_backward,
    .adamw_update = cpu_adamw_update,
    .balance_bias_update = cpu_balance_bias_update,
    .set_precision = cpu_set_precision,
    .runs_on_host = 1,
};

const Backend *backend_cpu(void) { return &g_cpu_backend; }
