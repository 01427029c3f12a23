/* Finite-difference gradient checks for every backend op (CPU backend).
 * Each check defines a scalar loss L = sum(out * R) for a fixed random R, computes the
 * analytic gradient with the op's backward, and compares it with central differences on a
 * sample of entries: ||analytic - numeric|| / ||numeric|| must be below 1e-2 (float32). */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu/attention.h"
#include "test.h"
#include "util.h"

static Rng g_rng;

static float *rand_vec(size_t n, float scale) {
    float *x = xmalloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(&g_rng);
    return x;
}

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

typedef double (*LossFn)(void *ctx);

/* A loss returns NAN when the perturbation moved it to another smooth piece (a top-K
 * selection changed); such samples are skipped.
 * Compares analytic[i] with (L(x_i + eps) - L(x_i - eps)) / 2eps for up to n_samples entries. */
static double fd_rel_error(float *x, size_t n, const float *analytic, LossFn loss, void *ctx, int n_samples, float eps) {
    double num2 = 0, diff2 = 0;
    for (int s = 0; s < n_samples; s++) {
        size_t i = n_samples >= (int)n ? (size_t)s % n : rng_below(&g_rng, n);
        if (s >= (int)n && n_samples >= (int)n) break;
        float saved = x[i];
        x[i] = saved + eps;
        double lp = loss(ctx);
        x[i] = saved - eps;
        double lm = loss(ctx);
        x[i] = saved;
        if (isnan(lp) || isnan(lm)) continue; /* the loss left its smooth piece (top-K changed) */
        double numeric = (lp - lm) / (2.0 * eps);
        num2 += numeric * numeric;
        diff2 += (numeric - analytic[i]) * (numeric - analytic[i]);
    }
    return sqrt(diff2) / fmax(sqrt(num2), 1e-12);
}

#define CHECK_GRAD(x, n, analytic, loss, ctx) \
    do { \
        double err_ = fd_rel_error((x), (n), (analytic), (loss), (ctx), 40, 1e-2f); \
        CHECK_MSG(err_ < 1e-2, "gradient of %s: relative error %.3g vs finite differences", #x, err_); \
    } while (0)

/* ---------------- RMSNorm ---------------- */
typedef struct { int N, C; float *x, *w, *out, *rstd, *R; } NormCtx;
static double norm_loss(void *p) {
    NormCtx *c = p;
    backend_cpu()->rmsnorm_forward(c->out, c->rstd, c->x, c->w, c->N, c->C, 1e-5f);
    return dot(c->out, c->R, (size_t)c->N * c->C);
}
TEST(ops_rmsnorm_gradients) {
    rng_seed(&g_rng, 1);
    NormCtx c = {5, 24};
    size_t n = (size_t)c.N * c.C;
    c.x = rand_vec(n, 1), c.w = rand_vec(c.C, 1), c.R = rand_vec(n, 1);
    c.out = rand_vec(n, 0), c.rstd = rand_vec(c.N, 0);
    float *dx = calloc(n, 4), *dw = calloc(c.C, 4);
    norm_loss(&c);
    backend_cpu()->rmsnorm_backward(dx, dw, c.R, c.x, c.w, c.rstd, c.N, c.C);
    CHECK_GRAD(c.x, n, dx, norm_loss, &c);
    CHECK_GRAD(c.w, (size_t)c.C, dw, norm_loss, &c);
    /* forward value: x * rsqrt(mean(x^2) + eps) * w */
    double ss = 0;
    for (int i = 0; i < c.C; i++) ss += c.x[i] * c.x[i];
    CHECK_CLOSE(c.out[3], c.x[3] / sqrt(ss / c.C + 1e-5) * c.w[3], 1e-5);
    free(c.x), free(c.w), free(c.R), free(c.out), free(c.rstd), free(dx), free(dw);
}

/* ---------------- matmul ---------------- */
typedef struct { int N, I, O; float *x, *w, *out, *R; } MatCtx;
static double mat_loss(void *p) {
    MatCtx *c = p;
    backend_cpu()->matmul_forward(c->out, c->x, c->w, c->N, c->I, c->O);
    return dot(c->out, c->R, (size_t)c->N * c->O);
}
TEST(ops_matmul_gradients) {
    rng_seed(&g_rng, 2);
    MatCtx c = {7, 12, 9};
    c.x = rand_vec(c.N * c.I, 1), c.w = rand_vec(c.O * c.I, 1), c.R = rand_vec(c.N * c.O, 1);
    c.out = rand_vec(c.N * c.O, 0);
    float *dx = calloc(c.N * c.I, 4), *dw = calloc(c.O * c.I, 4);
    mat_loss(&c);
    /* out[1][2] = sum_i x[1][i] w[2][i] */
    double ref = 0;
    for (int i = 0; i < c.I; i++) ref += c.x[c.I + i] * c.w[2 * c.I + i];
    CHECK_CLOSE(c.out[c.O + 2], ref, 1e-5);
    backend_cpu()->matmul_backward(dx, dw, c.R, c.x, c.w, c.N, c.I, c.O);
    CHECK_GRAD(c.x, (size_t)c.N * c.I, dx, mat_loss, &c);
    CHECK_GRAD(c.w, (size_t)c.O * c.I, dw, mat_loss, &c);
    free(c.x), free(c.w), free(c.R), free(c.out), free(dx), free(dw);
}

/* matmul at sizes where the CPU backend splits rows over threads (N >= 64 per thread) or runs
 * the two backward products side by side: 1, 2 and 3 threads, with and without dinp, against
 * a double-precision product */
TEST(ops_matmul_split_over_threads_matches_a_double_reference) {
    rng_seed(&g_rng, 12);
    const int N = 300, I = 40, O = 200; /* n_out >= 64 x 3: the weight-gradient product splits too */
    float *x = rand_vec((size_t)N * I, 1), *w = rand_vec((size_t)O * I, 1), *g = rand_vec((size_t)N * O, 1);
    float *out = xmalloc((size_t)N * O * 4), *dx = xmalloc((size_t)N * I * 4), *dw = xmalloc((size_t)O * I * 4);
    int saved = omp_get_max_threads();
    for (int threads = 1; threads <= 3; threads++)
        for (int with_dx = 0; with_dx < 2; with_dx++) {
            omp_set_num_threads(threads);
            memset(dx, 0, (size_t)N * I * 4), memset(dw, 0, (size_t)O * I * 4);
            backend_cpu()->matmul_forward(out, x, w, N, I, O);
            backend_cpu()->matmul_backward(with_dx ? dx : NULL, dw, g, x, w, N, I, O);
            double worst = 0;
            for (int n = 0; n < N; n++)
                for (int o = 0; o < O; o++) {
                    double s = 0;
                    for (int i = 0; i < I; i++) s += (double)x[(size_t)n * I + i] * w[(size_t)o * I + i];
                    worst = fmax(worst, fabs(s - out[(size_t)n * O + o]));
                }
            for (int o = 0; o < O; o++)
                for (int i = 0; i < I; i++) {
                    double s = 0;
                    for (int n = 0; n < N; n++) s += (double)g[(size_t)n * O + o] * x[(size_t)n * I + i];
                    worst = fmax(worst, fabs(s - dw[(size_t)o * I + i]) / 10); /* a sum of 300 products */
                }
            for (int n = 0; with_dx && n < N; n++)
                for (int i = 0; i < I; i++) {
                    double s = 0;
                    for (int o = 0; o < O; o++) s += (double)g[(size_t)n * O + o] * w[(size_t)o * I + i];
                    worst = fmax(worst, fabs(s - dx[(size_t)n * I + i]));
                }
            CHECK_MSG(worst < 1e-4, "%d threads, dinp %s: max |diff| %.2e", threads, with_dx ? "on" : "off", worst);
        }
    omp_set_num_threads(saved);
    free(x), free(w), free(g), free(out), free(dx), free(dw);
}

/* ---------------- RoPE ---------------- */
typedef struct { int B, T, H, hd; float *x, *tmp, *R; } RopeCtx;
static double rope_loss(void *p) {
    RopeCtx *c = p;
    size_t n = (size_t)c->B * c->T * c->H * c->hd;
    memcpy(c->tmp, c->x, n * 4);
    backend_cpu()->rope_forward(c->tmp, c->B, c->T, c->H, c->hd, 10000.0f);
    return dot(c->tmp, c->R, n);
}
TEST(ops_rope_gradients_and_rotation) {
    rng_seed(&g_rng, 3);
    RopeCtx c = {2, 6, 3, 8};
    size_t n = (size_t)c.B * c.T * c.H * c.hd;
    c.x = rand_vec(n, 1), c.tmp = rand_vec(n, 0), c.R = rand_vec(n, 1);
    float *dx = xmalloc(n * 4);
    memcpy(dx, c.R, n * 4);
    backend_cpu()->rope_backward(dx, c.B, c.T, c.H, c.hd, 10000.0f);
    CHECK_GRAD(c.x, n, dx, rope_loss, &c);
    /* position t=1, pair 0 rotates by angle 1 rad: (x0 cos1 - x4 sin1) */
    rope_loss(&c);
    size_t base = (size_t)1 * c.H * c.hd; /* b=0, t=1, h=0 */
    CHECK_CLOSE(c.tmp[base], c.x[base] * cos(1.0) - c.x[base + 4] * sin(1.0), 1e-5);
    /* position 0 is the identity */
    CHECK_CLOSE(c.tmp[5], c.x[5], 1e-7);
    free(c.x), free(c.tmp), free(c.R), free(dx);
}

/* ---------------- attention ---------------- */
typedef struct { int B, T, H, KV, hd; float *q, *k, *v, *out, *probs, *R; } AttCtx;
static double att_loss(void *p) {
    AttCtx *c = p;
    backend_cpu()->attention_forward(c->out, c->probs, c->q, c->k, c->v, c->B, c->T, c->H, c->KV, c->hd);
    return dot(c->out, c->R, (size_t)c->B * c->T * c->H * c->hd);
}
TEST(ops_attention_gqa_gradients_and_causality) {
    rng_seed(&g_rng, 4);
    AttCtx c = {2, 7, 4, 2, 8};
    size_t nq = (size_t)c.B * c.T * c.H * c.hd, nk = (size_t)c.B * c.T * c.KV * c.hd;
    c.q = rand_vec(nq, 1), c.k = rand_vec(nk, 1), c.v = rand_vec(nk, 1), c.R = rand_vec(nq, 1);
    c.out = rand_vec(nq, 0), c.probs = rand_vec((size_t)c.B * c.H * c.T * c.T, 0);
    float *dq = xmalloc(nq * 4), *dk = xmalloc(nk * 4), *dv = xmalloc(nk * 4);
    att_loss(&c);
    backend_cpu()->attention_backward(dq, dk, dv, c.R, c.probs, c.q, c.k, c.v, c.B, c.T, c.H, c.KV, c.hd);
    CHECK_GRAD(c.q, nq, dq, att_loss, &c);
    CHECK_GRAD(c.k, nk, dk, att_loss, &c);
    CHECK_GRAD(c.v, nk, dv, att_loss, &c);
    /* the first position attends only to itself: out = v[0] of its kv head (head 3 -> kv 1) */
    for (int d = 0; d < c.hd; d++) CHECK_CLOSE(c.out[3 * c.hd + d], c.v[1 * c.hd + d], 1e-6);
    /* changing a future key leaves earlier outputs unchanged */
    float before = c.out[(size_t)2 * c.H * c.hd];
    c.k[(size_t)5 * c.KV * c.hd] += 3.0f;
    att_loss(&c);
    CHECK(c.out[(size_t)2 * c.H * c.hd] == before);
    /* nor does a future key whose scores overflow to inf (the kernels mask the entries past a
     * row's position bitwise), forward and backward, or a NaN one, forward */
    for (int bad = 0; bad < 2; bad++) {
        c.k[(size_t)5 * c.KV * c.hd] = bad ? NAN : 1e30f;
        att_loss(&c);
        CHECK_MSG(c.out[(size_t)2 * c.H * c.hd] == before, "bad key %d", bad);
        if (bad) continue;
        backend_cpu()->attention_backward(dq, dk, dv, c.R, c.probs, c.q, c.k, c.v, c.B, c.T, c.H, c.KV, c.hd);
        for (size_t i = 0; i < (size_t)5 * c.H * c.hd; i++) CHECK_MSG(isfinite(dq[i]), "dq[%zu] = %g", i, dq[i]);
    }
    free(c.q), free(c.k), free(c.v), free(c.R), free(c.out), free(c.probs), free(dq), free(dk), free(dv);
}

/* Forward (out, lse) and backward (dq, dk, dv) against a direct double-precision evaluation of
 * causal softmax attention with GQA; returns 0 when every difference is within tolerance. */
static int attention_matches_double(int B, int T, int H, int KV, int hd, uint64_t seed) {
    rng_seed(&g_rng, seed);
    const int group = H / KV;
    int failures = 0;
    size_t nq = (size_t)B * T * H * hd, nk = (size_t)B * T * KV * hd;
    float *q = rand_vec(nq, 1), *k = rand_vec(nk, 1), *v = rand_vec(nk, 1), *dout = rand_vec(nq, 1);
    float *out = xmalloc(nq * 4), *lse = xmalloc((size_t)B * H * T * 4), *dq = xmalloc(nq * 4), *dk = xmalloc(nk * 4),
          *dv = xmalloc(nk * 4);
    const Backend *be = backend_cpu();
    be->attention_forward(out, lse, q, k, v, B, T, H, KV, hd);
    be->attention_backward(dq, dk, dv, dout, lse, q, k, v, B, T, H, KV, hd);
    double *rdq = xcalloc(nq, sizeof(double)), *rdk = xcalloc(nk, sizeof(double)), *rdv = xcalloc(nk, sizeof(double));
    double *p = xmalloc(T * sizeof(double)), *dp = xmalloc(T * sizeof(double)), scale = 1.0 / sqrt(hd);
    double worst_out = 0, worst_lse = 0;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                const float *qi = q + (((size_t)b * T + i) * H + h) * hd, *gi = dout + (((size_t)b * T + i) * H + h) * hd;
                double mx = -INFINITY, sum = 0, dot_p_dp = 0;
                for (int j = 0; j <= i; j++) {
                    const float *kj = k + (((size_t)b * T + j) * KV + h / group) * hd;
                    double s = 0;
                    for (int d = 0; d < hd; d++) s += (double)qi[d] * kj[d];
                    p[j] = s * scale;
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j <= i; j++) sum += (p[j] = exp(p[j] - mx));
                for (int j = 0; j <= i; j++) {
                    const float *vj = v + (((size_t)b * T + j) * KV + h / group) * hd;
                    p[j] /= sum;
                    dp[j] = 0;
                    for (int d = 0; d < hd; d++) dp[j] += (double)gi[d] * vj[d];
                    dot_p_dp += p[j] * dp[j];
                }
                double l = fabs(lse[((size_t)b * H + h) * T + i] - (mx + log(sum)));
                worst_lse = l > worst_lse ? l : worst_lse;
                for (int d = 0; d < hd; d++) {
                    double o = 0;
                    for (int j = 0; j <= i; j++) o += p[j] * v[(((size_t)b * T + j) * KV + h / group) * hd + d];
                    double e = fabs(o - out[(((size_t)b * T + i) * H + h) * hd + d]);
                    worst_out = e > worst_out ? e : worst_out;
                }
                for (int j = 0; j <= i; j++) {
                    double ds = p[j] * (dp[j] - dot_p_dp) * scale;
                    size_t kj = (((size_t)b * T + j) * KV + h / group) * hd, qo = (((size_t)b * T + i) * H + h) * hd;
                    for (int d = 0; d < hd; d++) {
                        rdq[qo + d] += ds * k[kj + d];
                        rdk[kj + d] += ds * q[qo + d];
                        rdv[kj + d] += p[j] * dout[qo + d];
                    }
                }
            }
    double worst_dq = 0, worst_dk = 0, worst_dv = 0;
    for (size_t i = 0; i < nq; i++) worst_dq = fmax(worst_dq, fabs(rdq[i] - dq[i]));
    for (size_t i = 0; i < nk; i++) worst_dk = fmax(worst_dk, fabs(rdk[i] - dk[i])), worst_dv = fmax(worst_dv, fabs(rdv[i] - dv[i]));
    if (!(worst_out < 1e-5 && worst_lse < 1e-5 && worst_dq < 1e-4 && worst_dk < 1e-4 && worst_dv < 1e-4)) {
        fprintf(stderr, "    B%d T%d H%d KV%d hd%d: out %.2e, lse %.2e, dq %.2e, dk %.2e, dv %.2e\n", B, T, H, KV, hd,
                worst_out, worst_lse, worst_dq, worst_dk, worst_dv);
        failures = 1;
    }
    free(q), free(k), free(v), free(dout), free(out), free(lse), free(dq), free(dk), free(dv);
    free(rdq), free(rdk), free(rdv), free(p), free(dp);
    return failures;
}

/* The shapes cover the CPU kernel's edges: sequences longer than its causal blocks (64
 * positions) with a ragged last block, head_dim below, at and between its register tiles'
 * widths (16 columns with AVX2, 32 with AVX-512), 1 to 3 query heads per kv head, T = 1. Every
 * vector width the build holds and the CPU runs (the portable build: SSE2, AVX2, AVX-512). */
TEST(ops_attention_matches_a_double_reference) {
    static const int shapes[][5] = {{2, 150, 4, 2, 8}, {1, 130, 6, 2, 32}, {2, 70, 3, 3, 48}, {1, 67, 2, 1, 64},
                                    {3, 1, 2, 2, 8},   {1, 33, 6, 3, 96},  {1, 20, 2, 1, 130}};
    static const char *widths[] = {"avx512", "avx2", "sse2", "scalar"};
    int ran = 0;
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
        if (cpu_attention_use_width(widths[w])) continue;
        CHECK(!strcmp(cpu_attention_width(), widths[w]));
        ran++;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            CHECK_MSG(!attention_matches_double(shapes[s][0], shapes[s][1], shapes[s][2], shapes[s][3], shapes[s][4], 11 + s),
                      "width %s, shape %zu", widths[w], s);
    }
    CHECK(cpu_attention_use_width(NULL) == 0 && cpu_attention_use_width("no-such-width") == -1);
    CHECK_MSG(ran >= 1, "no attention width ran");
}

/* ---------------- SwiGLU ---------------- */
typedef struct { size_t n; float *g, *u, *out, *R; } SwiCtx;
static double swi_loss(void *p) {
    SwiCtx *c = p;
    backend_cpu()->swiglu_forward(c->out, c->g, c->u, c->n);
    return dot(c->out, c->R, c->n);
}
TEST(ops_swiglu_gradients) {
    rng_seed(&g_rng, 5);
    SwiCtx c = {50};
    c.g = rand_vec(c.n, 2), c.u = rand_vec(c.n, 1), c.R = rand_vec(c.n, 1), c.out = rand_vec(c.n, 0);
    float *dg = xmalloc(c.n * 4), *du = xmalloc(c.n * 4);
    swi_loss(&c);
    CHECK_CLOSE(c.out[0], c.g[0] / (1 + exp(-c.g[0])) * c.u[0], 1e-6);
    backend_cpu()->swiglu_backward(dg, du, c.R, c.g, c.u, c.n);
    CHECK_GRAD(c.g, c.n, dg, swi_loss, &c);
    CHECK_GRAD(c.u, c.n, du, swi_loss, &c);
    free(c.g), free(c.u), free(c.R), free(c.out), free(dg), free(du);
}

/* ---------------- bias over rows ---------------- */
typedef struct { int N, C; float *x, *b, *out, *R; } BiasCtx;
static double bias_loss(void *p) {
    BiasCtx *c = p;
    memcpy(c->out, c->x, sizeof(float) * c->N * c->C);
    backend_cpu()->bias_add_forward(c->out, c->b, c->N, c->C);
    return dot(c->out, c->R, (size_t)c->N * c->C);
}
TEST(ops_bias_add_gradients) {
    rng_seed(&g_rng, 9);
    BiasCtx c = {37, 13};
    size_t n = (size_t)c.N * c.C;
    c.x = rand_vec(n, 1), c.b = rand_vec(c.C, 1), c.R = rand_vec(n, 1), c.out = rand_vec(n, 0);
    bias_loss(&c);
    CHECK(c.out[5 * c.C + 7] == c.x[5 * c.C + 7] + c.b[7]);
    float *db = xmalloc(sizeof(float) * c.C);
    for (int i = 0; i < c.C; i++) db[i] = 0.5f; /* accumulates */
    backend_cpu()->bias_add_backward(db, c.R, c.N, c.C);
    double col = 0.5;
    for (int t = 0; t < c.N; t++) col += c.R[(size_t)t * c.C + 4];
    CHECK_CLOSE(db[4], col, 1e-5);
    for (int i = 0; i < c.C; i++) db[i] -= 0.5f;
    CHECK_GRAD(c.b, (size_t)c.C, db, bias_loss, &c);
    /* the column sums do not depend on the thread count */
    float *db1 = xcalloc(c.C, sizeof(float)), *db2 = xcalloc(c.C, sizeof(float));
    int threads = omp_get_max_threads();
    backend_cpu()->set_threads(1);
    backend_cpu()->bias_add_backward(db1, c.R, c.N, c.C);
    backend_cpu()->set_threads(3);
    backend_cpu()->bias_add_backward(db2, c.R, c.N, c.C);
    backend_cpu()->set_threads(threads);
    CHECK(memcmp(db1, db2, sizeof(float) * c.C) == 0);
    free(c.x), free(c.b), free(c.R), free(c.out), free(db), free(db1), free(db2);
}

/* ---------------- clamp ---------------- */
typedef struct { size_t n; float limit; float *x, *out, *R; } ClampCtx;
static double clamp_loss(void *p) {
    ClampCtx *c = p;
    backend_cpu()->clamp_forward(c->out, c->x, c->n, c->limit);
    return dot(c->out, c->R, c->n);
}
TEST(ops_clamp_gradients) {
    rng_seed(&g_rng, 10);
    ClampCtx c = {200, 0.7f};
    c.x = rand_vec(c.n, 1), c.out = rand_vec(c.n, 0), c.R = rand_vec(c.n, 1);
    /* keep every entry 2e-2 away from the bounds, where the loss is not smooth (FD eps 1e-2) */
    for (size_t i = 0; i < c.n; i++)
        if (fabsf(fabsf(c.x[i]) - c.limit) < 2e-2f) c.x[i] *= 1.1f;
    clamp_loss(&c);
    size_t inside = 0;
    for (size_t i = 0; i < c.n; i++) {
        float want = c.x[i] > c.limit ? c.limit : c.x[i] < -c.limit ? -c.limit : c.x[i];
        CHECK(c.out[i] == want);
        inside += fabsf(c.x[i]) <= c.limit;
    }
    CHECK(inside > 20 && inside < c.n - 20); /* both pieces are exercised */
    float *dx = xmalloc(sizeof(float) * c.n);
    backend_cpu()->clamp_backward(dx, c.R, c.x, c.n, c.limit);
    CHECK_GRAD(c.x, c.n, dx, clamp_loss, &c);
    for (size_t i = 0; i < c.n; i++) CHECK(dx[i] == (fabsf(c.x[i]) <= c.limit ? c.R[i] : 0.0f));
    /* in place (dinp == dout), and at the bound the gradient passes, as torch.clamp's */
    float x[3] = {0.7f, -0.7f, 0.71f}, d[3] = {1, 2, 3};
    backend_cpu()->clamp_backward(d, d, x, 3, 0.7f);
    CHECK(d[0] == 1 && d[1] == 2 && d[2] == 0);
    free(c.x), free(c.out), free(c.R), free(dx);
}

/* ---------------- per-row sigmoid gate ---------------- */
typedef struct { int N, C; float *y, *logit, *base, *out, *R; } GateCtx;
static double gate_loss(void *p) {
    GateCtx *c = p;
    memcpy(c->out, c->base, sizeof(float) * c->N * c->C);
    backend_cpu()->sigmoid_gate_forward(c->out, c->y, c->logit, c->N, c->C);
    return dot(c->out, c->R, (size_t)c->N * c->C);
}
TEST(ops_sigmoid_gate_gradients) {
    rng_seed(&g_rng, 11);
    GateCtx c = {9, 21};
    size_t n = (size_t)c.N * c.C;
    c.y = rand_vec(n, 1), c.logit = rand_vec(c.N, 2), c.base = rand_vec(n, 1), c.out = rand_vec(n, 0);
    c.R = rand_vec(n, 1);
    gate_loss(&c);
    /* accumulates onto out: base + sigmoid(logit) * y */
    CHECK_CLOSE(c.out[2 * c.C + 3], c.base[2 * c.C + 3] + c.y[2 * c.C + 3] / (1 + exp(-c.logit[2])), 1e-6);
    float *dy = xmalloc(sizeof(float) * n), *dlogit = xmalloc(sizeof(float) * c.N);
    backend_cpu()->sigmoid_gate_backward(dy, dlogit, c.R, c.y, c.logit, c.N, c.C);
    CHECK_GRAD(c.y, n, dy, gate_loss, &c);
    CHECK_GRAD(c.logit, (size_t)c.N, dlogit, gate_loss, &c);
    free(c.y), free(c.logit), free(c.base), free(c.out), free(c.R), free(dy), free(dlogit);
}

/* ---------------- cross-entropy ---------------- */
typedef struct { int N, V; float *logits, *losses; int32_t *targets; } XentCtx;
static double xent_loss(void *p) {
    XentCtx *c = p;
    backend_cpu()->crossentropy_forward(c->losses, c->logits, c->targets, c->N, c->V);
    double s = 0;
    for (int i = 0; i < c->N; i++) s += c->losses[i];
    return s / c->N;
}
TEST(ops_crossentropy_gradients) {
    rng_seed(&g_rng, 6);
    XentCtx c = {6, 11};
    size_t n = (size_t)c.N * c.V;
    c.logits = rand_vec(n, 2), c.losses = rand_vec(c.N, 0);
    c.targets = xmalloc(sizeof(int32_t) * c.N);
    for (int i = 0; i < c.N; i++) c.targets[i] = (int32_t)rng_below(&g_rng, c.V);
    float *d = xmalloc(n * 4);
    xent_loss(&c);
    double lse = 0;
    for (int i = 0; i < c.V; i++) lse += exp(c.logits[i]);
    CHECK_CLOSE(c.losses[0], log(lse) - c.logits[c.targets[0]], 1e-5);
    backend_cpu()->crossentropy_backward(d, c.logits, c.targets, c.N, c.V, 1.0f / c.N);
    CHECK_GRAD(c.logits, n, d, xent_loss, &c);
    free(c.logits), free(c.losses), free(c.targets), free(d);
}

/* ---------------- router + top-K gates (+ aux and z losses) ---------------- */
typedef struct { int N, E, K, norm; float aux, z; float *logits, *bias, *probs, *gates, *Rg; int32_t *topk, *loads, *topk_ref; } RouterCtx;
static double router_loss(void *p) {
    RouterCtx *c = p;
    double aux = backend_cpu()->router_forward(c->probs, c->topk, c->gates, c->loads, c->logits, c->bias, c->N, c->E,
                                               c->K, c->norm, c->aux, c->z);
    if (c->topk_ref && memcmp(c->topk, c->topk_ref, sizeof(int32_t) * c->N * c->K)) return NAN;
    return dot(c->gates, c->Rg, (size_t)c->N * c->K) + aux;
}
static void router_case(int norm, float aux, float z) {
    RouterCtx c = {9, 6, 2, norm, aux, z};
    size_t n = (size_t)c.N * c.E;
    c.logits = rand_vec(n, 1.5), c.bias = rand_vec(c.E, 0.05), c.probs = rand_vec(n, 0);
    c.gates = rand_vec((size_t)c.N * c.K, 0), c.Rg = rand_vec((size_t)c.N * c.K, 1);
    c.topk = xmalloc(sizeof(int32_t) * c.N * c.K), c.loads = xmalloc(sizeof(int32_t) * c.E);
    float *dl = xmalloc(n * 4);
    router_loss(&c);
    c.topk_ref = xmalloc(sizeof(int32_t) * c.N * c.K);
    memcpy(c.topk_ref, c.topk, sizeof(int32_t) * c.N * c.K);
    backend_cpu()->router_backward(dl, c.Rg, c.probs, c.topk, c.logits, c.loads, c.N, c.E, c.K, c.norm, c.aux, c.z);
    /* a small eps keeps top-K selection fixed (the loss is piecewise smooth) */
    double err = fd_rel_error(c.logits, n, dl, router_loss, &c, 54, 1e-3f);
    CHECK_MSG(err < 1e-2, "router gradient (norm %d, aux %g, z %g): relative error %.3g", norm, aux, z, err);
    int total = 0;
    for (int e = 0; e < c.E; e++) total += c.loads[e];
    CHECK(total == c.N * c.K);
    free(c.logits), free(c.bias), free(c.probs), free(c.gates), free(c.Rg), free(c.topk), free(c.loads), free(c.topk_ref), free(dl);
}
TEST(ops_router_topk_gradients) {
    rng_seed(&g_rng, 7);
    router_case(0, 0, 0);
    router_case(1, 0, 0);
    router_case(1, 0.01f, 0.001f);
    router_case(0, 0.1f, 0.01f);
}

TEST(ops_router_bias_changes_selection_not_gates) {
    /* one token, scores favour expert 0; a large bias on expert 2 must select it, with the
     * unbiased probability as its gate */
    float logits[4] = {2.0f, 1.0f, 0.0f, -1.0f}, bias[4] = {0, 0, 5.0f, 0};
    float probs[4], gates[1];
    int32_t topk[1], loads[4];
    backend_cpu()->router_forward(probs, topk, gates, loads, logits, bias, 1, 4, 1, 0, 0, 0);
    CHECK(topk[0] == 2);
    CHECK_CLOSE(gates[0], probs[2], 1e-7);
    double s = exp(2) + exp(1) + exp(0) + exp(-1);
    CHECK_CLOSE(probs[2], 1.0 / s, 1e-6);
    CHECK(loads[2] == 1 && loads[0] == 0);
}

/* ---------------- whole MoE layer: router -> permute -> gather -> experts -> combine ---------------- */
typedef struct {
    int N, C, E, K, F;
    float *x, *wr, *bias, *wg, *wu, *wd, *R;
    float *logits, *probs, *gates, *xg, *g, *u, *h, *yg, *out;
    int32_t *topk, *loads, *offsets, *token_of, *position_of, *topk_ref;
} MoeCtx;
static double moe_loss(void *p) {
    MoeCtx *c = p;
    const Backend *be = backend_cpu();
    be->matmul_forward(c->logits, c->x, c->wr, c->N, c->C, c->E);
    be->router_forward(c->probs, c->topk, c->gates, c->loads, c->logits, c->bias, c->N, c->E, c->K, 1, 0, 0);
    be->moe_permute(c->offsets, c->token_of, c->position_of, c->topk, c->loads, c->N, c->E, c->K);
    be->moe_gather_forward(c->xg, c->x, c->token_of, c->N * c->K, c->C);
    be->experts_forward(c->yg, c->g, c->u, c->h, c->xg, c->offsets, c->wg, c->wu, c->wd, c->E, c->C, c->F);
    be->moe_combine_forward(c->out, c->yg, c->gates, c->position_of, c->N, c->K, c->C);
    if (c->topk_ref && memcmp(c->topk, c->topk_ref, sizeof(int32_t) * c->N * c->K)) return NAN;
    return dot(c->out, c->R, (size_t)c->N * c->C);
}
TEST(ops_moe_layer_gradients_and_dispatch) {
    rng_seed(&g_rng, 8);
    MoeCtx c = {10, 8, 4, 2, 6};
    size_t NC = (size_t)c.N * c.C, NK = (size_t)c.N * c.K, W = (size_t)c.E * c.F * c.C;
    c.x = rand_vec(NC, 1), c.wr = rand_vec((size_t)c.E * c.C, 1), c.bias = rand_vec(c.E, 0);
    c.wg = rand_vec(W, 0.5), c.wu = rand_vec(W, 0.5), c.wd = rand_vec(W, 0.5), c.R = rand_vec(NC, 1);
    c.logits = rand_vec((size_t)c.N * c.E, 0), c.probs = rand_vec((size_t)c.N * c.E, 0), c.gates = rand_vec(NK, 0);
    c.xg = rand_vec(NK * c.C, 0), c.yg = rand_vec(NK * c.C, 0), c.out = rand_vec(NC, 0);
    c.g = rand_vec(NK * c.F, 0), c.u = rand_vec(NK * c.F, 0), c.h = rand_vec(NK * c.F, 0);
    c.topk = xmalloc(4 * NK), c.loads = xmalloc(4 * c.E), c.offsets = xmalloc(4 * (c.E + 1));
    c.token_of = xmalloc(4 * NK), c.position_of = xmalloc(4 * NK);
    moe_loss(&c);
    c.topk_ref = xmalloc(4 * NK);
    memcpy(c.topk_ref, c.topk, 4 * NK);
    /* dispatch invariants: positions form a permutation grouped by expert, sorted by token */
    int *seen = calloc(NK, sizeof(int));
    for (size_t i = 0; i < NK; i++) seen[c.position_of[i]]++;
    for (size_t i = 0; i < NK; i++) CHECK(seen[i] == 1);
    for (int t = 0; t < c.N; t++)
        for (int k = 0; k < c.K; k++) {
            int e = c.topk[t * c.K + k], pos = c.position_of[t * c.K + k];
            CHECK(pos >= c.offsets[e] && pos < c.offsets[e + 1] && c.token_of[pos] == t);
        }
    /* token 0's output = sum_k gate_k * expert_k(x0), computed directly */
    for (int ch = 0; ch < 2; ch++) {
        double ref = 0;
        for (int k = 0; k < c.K; k++) {
            int e = c.topk[k];
            for (int f = 0; f < c.F; f++) {
                double gg = 0, uu = 0;
                for (int j = 0; j < c.C; j++) {
                    gg += c.wg[((size_t)e * c.F + f) * c.C + j] * c.x[j];
                    uu += c.wu[((size_t)e * c.F + f) * c.C + j] * c.x[j];
                }
                ref += c.gates[k] * c.wd[((size_t)e * c.C + ch) * c.F + f] * gg / (1 + exp(-gg)) * uu;
            }
        }
        CHECK_CLOSE(c.out[ch], ref, 1e-4);
    }
    /* backward through the whole chain */
    const Backend *be = backend_cpu();
    float *dyg = xmalloc(4 * NK * c.C), *dgates = xmalloc(4 * NK), *dxg = xmalloc(4 * NK * c.C);
    float *dg = xmalloc(4 * NK * c.F), *du = xmalloc(4 * NK * c.F), *dh = xmalloc(4 * NK * c.F);
    float *dwg = calloc(W, 4), *dwu = calloc(W, 4), *dwd = calloc(W, 4), *dx = calloc(NC, 4);
    float *dlogits = xmalloc(4 * (size_t)c.N * c.E), *dwr = calloc((size_t)c.E * c.C, 4);
    be->moe_combine_backward(dyg, dgates, c.R, c.yg, c.gates, c.position_of, c.N, c.K, c.C);
    be->experts_backward(dxg, dwg, dwu, dwd, dg, du, dh, dyg, c.g, c.u, c.h, c.xg, c.offsets, c.wg, c.wu, c.wd, c.E,
                         c.C, c.F);
    be->moe_gather_backward(dx, dxg, c.position_of, c.N, c.K, c.C);
    be->router_backward(dlogits, dgates, c.probs, c.topk, c.logits, c.loads, c.N, c.E, c.K, 1, 0, 0);
    be->matmul_backward(dx, dwr, dlogits, c.x, c.wr, c.N, c.C, c.E);
    double e1 = fd_rel_error(c.x, NC, dx, moe_loss, &c, 40, 1e-3f);
    CHECK_MSG(e1 < 1e-2, "MoE dx relative error %.3g", e1);
    double e2 = fd_rel_error(c.wr, (size_t)c.E * c.C, dwr, moe_loss, &c, 32, 1e-3f);
    CHECK_MSG(e2 < 1e-2, "MoE router weight relative error %.3g", e2);
    CHECK_GRAD(c.wg, W, dwg, moe_loss, &c);
    CHECK_GRAD(c.wu, W, dwu, moe_loss, &c);
    CHECK_GRAD(c.wd, W, dwd, moe_loss, &c);
    free(seen);
    void *bufs[] = {c.x, c.wr, c.bias, c.wg, c.wu, c.wd, c.R, c.logits, c.probs, c.gates, c.xg, c.yg, c.out, c.g, c.u,
                    c.h, c.topk, c.loads, c.offsets, c.token_of, c.position_of, dyg, dgates, dxg, dg, du, dh, dwg, dwu,
                    dwd, dx, dlogits, dwr, c.topk_ref};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
}

/* ---------------- embedding ---------------- */
TEST(ops_embedding_backward_scatter) {
    float table[3 * 2] = {0}, dout[4 * 2] = {1, 2, 3, 4, 5, 6, 7, 8};
    int32_t tokens[4] = {2, 0, 2, 1};
    backend_cpu()->embedding_backward(table, dout, tokens, 4, 2, 3);
    CHECK(table[0] == 3 && table[1] == 4 && table[2] == 7 && table[3] == 8);
    CHECK(table[4] == 1 + 5 && table[5] == 2 + 6);
}

/* ---------------- AdamW and balancing bias ---------------- */
TEST(ops_adamw_matches_closed_form) {
    float p[2] = {1.0f, -2.0f}, g[2] = {0.5f, 0.25f}, m[2] = {0}, v[2] = {0};
    float lr = 0.1f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
    backend_cpu()->adamw_update(p, g, m, v, 2, lr, b1, b2, eps, wd, 1.0f, 1);
    /* step 1: m_hat = g, v_hat = g^2, update = sign(g) */
    CHECK_CLOSE(p[0], 1.0 * (1 - lr * wd) - lr * 0.5 / (0.5 + eps), 1e-6);
    CHECK_CLOSE(p[1], -2.0 * (1 - lr * wd) - lr * 1.0, 1e-6);
    CHECK_CLOSE(m[0], 0.05, 1e-7);
    CHECK_CLOSE(v[0], 0.05 * 0.25, 1e-7);
    /* grad_scale halves the gradient before the moments see it */
    float p2 = 1.0f, g2 = 1.0f, m2 = 0, v2 = 0;
    backend_cpu()->adamw_update(&p2, &g2, &m2, &v2, 1, lr, b1, b2, eps, 0, 0.5f, 1);
    CHECK_CLOSE(m2, 0.05, 1e-7);
}

TEST(ops_balance_bias_update_rule) {
    float bias[4] = {0, 0.5f, 0, 0};
    int32_t loads[4] = {10, 2, 4, 4}; /* mean 5 */
    backend_cpu()->balance_bias_update(bias, loads, 4, 1e-3f);
    CHECK(bias[0] == -1e-3f);          /* overloaded: pushed down */
    CHECK(bias[1] == 0.5f + 1e-3f);    /* underloaded: pushed up */
    CHECK(bias[2] == 1e-3f && bias[3] == 1e-3f);
    int32_t even[2] = {3, 3};
    float b2[2] = {0.25f, 0};
    backend_cpu()->balance_bias_update(b2, even, 2, 1e-3f);
    CHECK(b2[0] == 0.25f && b2[1] == 0); /* sign(0) = 0 */
}
