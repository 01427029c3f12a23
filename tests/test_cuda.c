/* CUDA backend tests: every op and the whole model against the CPU backend.
 *
 * Compiled in every build. Where the build has no CUDA (UPCYCLE_CUDA undefined) or no device
 * is visible, each GPU test reports "skipped: no CUDA device" (neither passed nor failed);
 * `make test-cuda` runs the tests named cuda_* on a GPU machine and fails when they skip.
 *   cuda_op_*            each op on odd shapes (partial tiles, GQA, repeated tokens, an expert
 *                        without tokens), fp32: relative error <= 1e-4 (max|a-b| / max|ref|),
 *                        integer outputs (top-K, loads, permutation) identical
 *   cuda_parity_*        dense (tied), interleaved (aux + z losses), full MoE (no renorm),
 *                        Qwen2-MoE-shaped (q/k/v biases, shared expert), OLMoE-shaped (q/k norm
 *                        over the whole projection, clip_qkv):
 *                        logits, loss, every gradient (per-tensor L2, as tests/torch_ref.py),
 *                        routing and loads of the first batch identical, 20 AdamW steps' losses;
 *                        tolerance 1e-4
 *   cuda_deterministic   two GPU runs give bit-identical losses
 *   cuda_bf16_vs_fp32    200 training steps: bf16 losses within 3% (mean of the last 20
 *                        steps) and 10% (every step) of fp32, and learning */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu/gemm_bf16.h"
#include "data/shard.h"
#include "fixtures.h"
#include "model.h"
#include "optim.h"
#include "test.h"
#include "util.h"

#define OP_TOL 1e-4

static const Backend *gpu_or_skip(void) {
#ifdef UPCYCLE_CUDA
    const Backend *be = backend_cuda();
    if (be) {
        be->set_precision(PRECISION_FP32);
        return be;
    }
#endif
    test_skip("no CUDA device");
    return NULL;
}

/* ---- helpers: host <-> device copies and error measures ---- */

static void fill(Rng *r, float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = scale * rng_normal(r);
}

static float *randv(Rng *r, size_t n, float scale) {
    float *x = xmalloc(sizeof(float) * (n ? n : 1));
    fill(r, x, n, scale);
    return x;
}

static void *to_dev(const Backend *be, const void *host, size_t bytes) {
    void *d = be->alloc(bytes);
    be->upload(d, host, bytes);
    return d;
}

static float *from_dev(const Backend *be, const void *d, size_t n) {
    float *h = xmalloc(sizeof(float) * (n ? n : 1));
    be->download(h, d, sizeof(float) * n);
    return h;
}

static int32_t *from_dev_i(const Backend *be, const void *d, size_t n) {
    int32_t *h = xmalloc(sizeof(int32_t) * (n ? n : 1));
    be->download(h, d, sizeof(int32_t) * n);
    return h;
}

static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

/* max|got - ref| / max|ref| (NaN anywhere: infinity) */
static double rel_err(const float *got, const float *ref, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        if (isnan(e)) return INFINITY;
        d = fmax(d, e);
    }
    return d / fmax(max_abs(ref, n), 1e-30);
}

/* compares device buffer d (n floats) with host reference ref */
#define CHECK_DEV(be, d, ref, n, what)                                                                 \
    do {                                                                                               \
        float *h_ = from_dev((be), (d), (n));                                                          \
        double e_ = rel_err(h_, (ref), (n));                                                           \
        CHECK_MSG(e_ <= OP_TOL, "%s: relative error %.3g > %g", (what), e_, OP_TOL);                    \
        free(h_);                                                                                      \
    } while (0)

#define CHECK_DEV_INT(be, d, ref, n, what)                                                             \
    do {                                                                                               \
        int32_t *h_ = from_dev_i((be), (d), (n));                                                      \
        size_t bad_ = 0;                                                                               \
        for (size_t i_ = 0; i_ < (size_t)(n); i_++) bad_ += h_[i_] != (ref)[i_];                       \
        CHECK_MSG(bad_ == 0, "%s: %zu of %zu entries differ", (what), bad_, (size_t)(n));              \
        free(h_);                                                                                      \
    } while (0)

/* ---- device-independent: backend selection and precision ---- */

TEST(backend_select_devices) {
    char notice[128];
    CHECK(backend_select("cpu", notice, sizeof notice) == backend_cpu() && notice[0] == 0);
    up_clear_error();
    CHECK(backend_select("tpu", notice, sizeof notice) == NULL);
    CHECK(strstr(up_last_error(), "--device tpu") && strstr(up_last_error(), "expected"));
    const Backend *cuda = NULL;
#ifdef UPCYCLE_CUDA
    cuda = backend_cuda();
#endif
    const Backend *be = backend_select("cuda", notice, sizeof notice);
    CHECK(be == cuda);
    if (!cuda) CHECK(strstr(up_last_error(), "no CUDA device is visible") != NULL);
    be = backend_select("auto", notice, sizeof notice);
    CHECK(be == (cuda ? cuda : backend_cpu()));
#ifdef UPCYCLE_CUDA
    if (!cuda) CHECK(!strcmp(notice, "upcycle: no CUDA device visible; running on the CPU"));
    else CHECK(notice[0] == 0);
#else
    CHECK(notice[0] == 0);
#endif
}

/* bf16 on the CPU: the AVX-512 BF16 GEMM where the CPU has it (tests/test_gemm_bf16.c), else
 * a one-line error; precision 7 is no precision */
TEST(backend_cpu_precisions) {
    const Backend *cpu = backend_cpu();
    CHECK(cpu->set_precision(PRECISION_FP32) == 0);
    if (gemm_bf16_supported()) {
        CHECK(cpu->set_precision(PRECISION_BF16) == 0);
    } else {
        CHECK(cpu->set_precision(PRECISION_BF16) == -1);
        CHECK(strstr(up_last_error(), "bf16 on the CPU needs AVX-512 BF16") != NULL);
    }
    CHECK(cpu->set_precision(7) == -1);
    CHECK(strstr(up_last_error(), "precision 7; expected fp32 or bf16") != NULL);
    CHECK(cpu->set_precision(PRECISION_FP32) == 0);
    CHECK(cpu->runs_on_host && !cpu->experimental); /* capabilities, asked instead of the backend's name */
}

/* ---- ops ---- */

TEST(cuda_op_elementwise) {
    const Backend *g = gpu_or_skip(), *c = backend_cpu();
    if (!g) return;
    Rng r;
    rng_seed(&r, 1);
    size_t n = 100003;
    float *a = randv(&r, n, 1), *b = randv(&r, n, 1), *ref = xmalloc(sizeof(float) * n);
    float *da = to_dev(g, a, n * 4), *db = to_dev(g, b, n * 4), *dout = g->alloc(n * 4);
    c->add(ref, a, b, n);
    g->add(dout, da, db, n);
    CHECK_DEV(g, dout, ref, n, "add");
    c->accumulate(ref, a, n);
    g->accumulate(dout, da, n);
    CHECK_DEV(g, dout, ref, n, "accumulate");
    CHECK_CLOSE(g->sum_squares(da, n), c->sum_squares(a, n), 1e-10);
    CHECK(g->sum_squares(da, 0) == 0);
    /* swiglu */
    float *dg = xmalloc(n * 4), *du = xmalloc(n * 4);
    float *ddg = g->alloc(n * 4), *ddu = g->alloc(n * 4);
    c->swiglu_forward(ref, a, b, n);
    g->swiglu_forward(dout, da, db, n);
    CHECK_DEV(g, dout, ref, n, "swiglu_forward");
    float *dy = randv(&r, n, 1), *ddy = to_dev(g, dy, n * 4);
    c->swiglu_backward(dg, du, dy, a, b, n);
    g->swiglu_backward(ddg, ddu, ddy, da, db, n);
    CHECK_DEV(g, ddg, dg, n, "swiglu_backward dgate");
    CHECK_DEV(g, ddu, du, n, "swiglu_backward dup");
    /* AdamW: two steps with clipping scale and decay */
    float *p = randv(&r, n, 1), *m = xcalloc(n, 4), *v = xcalloc(n, 4);
    float *dp = to_dev(g, p, n * 4), *dm = g->alloc(n * 4), *dv = g->alloc(n * 4);
    for (int t = 1; t <= 2; t++) {
        c->adamw_update(p, a, m, v, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.7f, t);
        g->adamw_update(dp, da, dm, dv, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.7f, t);
    }
    CHECK_DEV(g, dp, p, n, "adamw param");
    CHECK_DEV(g, dm, m, n, "adamw m");
    CHECK_DEV(g, dv, v, n, "adamw v");
    /* balancing bias */
    int32_t loads[7] = {5, 0, 9, 3, 3, 12, 3};
    float bias[7] = {0, 0.1f, -0.2f, 0, 0, 0, 0.3f};
    float *dbias = to_dev(g, bias, sizeof bias);
    int32_t *dloads = to_dev(g, loads, sizeof loads);
    c->balance_bias_update(bias, loads, 7, 1e-2f);
    g->balance_bias_update(dbias, dloads, 7, 1e-2f);
    CHECK_DEV(g, dbias, bias, 7, "balance_bias_update");
    /* bias over rows, clamp, per-row sigmoid gate (the families' ops) on (N, C) = (n / 97, 97) */
    {
        int N = (int)(n / 97), C = 97;
        size_t nc = (size_t)N * C;
        float *bias_h = randv(&r, C, 1), *dbias_h = xcalloc(C, 4), *dbias_d = g->alloc(C * 4);
        float *bias_dd = to_dev(g, bias_h, C * 4);
        memcpy(ref, a, nc * 4);
        g->copy(dout, da, nc * 4);
        c->bias_add_forward(ref, bias_h, N, C);
        g->bias_add_forward(dout, bias_dd, N, C);
        CHECK_DEV(g, dout, ref, nc, "bias_add_forward");
        c->bias_add_backward(dbias_h, b, N, C);
        g->bias_add_backward(dbias_d, db, N, C);
        CHECK_DEV(g, dbias_d, dbias_h, C, "bias_add_backward");
        c->clamp_forward(ref, a, n, 0.6f);
        g->clamp_forward(dout, da, n, 0.6f);
        CHECK_DEV(g, dout, ref, n, "clamp_forward");
        c->clamp_backward(ref, b, a, n, 0.6f);
        g->clamp_backward(dout, db, da, n, 0.6f);
        CHECK_DEV(g, dout, ref, n, "clamp_backward");
        float *logit_h = randv(&r, N, 2), *logit_d = to_dev(g, logit_h, N * 4), *dlogit_h = xmalloc(N * 4);
        float *dlogit_d = g->alloc(N * 4);
        memcpy(ref, b, nc * 4);
        g->copy(dout, db, nc * 4);
        c->sigmoid_gate_forward(ref, a, logit_h, N, C);
        g->sigmoid_gate_forward(dout, da, logit_d, N, C);
        CHECK_DEV(g, dout, ref, nc, "sigmoid_gate_forward");
        c->sigmoid_gate_backward(ref, dlogit_h, b, a, logit_h, N, C);
        g->sigmoid_gate_backward(dout, dlogit_d, db, da, logit_d, N, C);
        CHECK_DEV(g, dout, ref, nc, "sigmoid_gate_backward dy");
        CHECK_DEV(g, dlogit_d, dlogit_h, N, "sigmoid_gate_backward dlogit");
        free(bias_h), free(dbias_h), free(logit_h), free(dlogit_h);
        g->free(dbias_d), g->free(bias_dd), g->free(logit_d), g->free(dlogit_d);
    }
    /* copy, zero, round trip */
    g->copy(dout, da, n * 4);
    CHECK_DEV(g, dout, a, n, "copy");
    g->zero(dout, n * 4);
    memset(ref, 0, n * 4);
    CHECK_DEV(g, dout, ref, n, "zero");
    free(a), free(b), free(ref), free(dg), free(du), free(dy), free(p), free(m), free(v);
    g->free(da), g->free(db), g->free(dout), g->free(ddg), g->free(ddu), g->free(ddy), g->free(dp), g->free(dm);
    g->free(dv), g->free(dbias), g->free(dloads);
}

TEST(cuda_op_matmul) {
    const Backend *g = gpu_or_skip(), *c = backend_cpu();
    if (!g) return;
    Rng r;
    rng_seed(&r, 2);
    int N = 37, n_in = 29, n_out = 53;
    float *x = randv(&r, (size_t)N * n_in, 1), *w = randv(&r, (size_t)n_out * n_in, 0.3f);
    float *out = xmalloc(sizeof(float) * N * n_out), *dout = randv(&r, (size_t)N * n_out, 1);
    float *dx = randv(&r, (size_t)N * n_in, 1), *dw = randv(&r, (size_t)n_out * n_in, 1); /* accumulated into */
    float *gx = to_dev(g, x, 4 * N * n_in), *gw = to_dev(g, w, 4 * n_out * n_in), *gout = g->alloc(4 * N * n_out);
    float *gdout = to_dev(g, dout, 4 * N * n_out), *gdx = to_dev(g, dx, 4 * N * n_in), *gdw = to_dev(g, dw, 4 * n_out * n_in);
    c->matmul_forward(out, x, w, N, n_in, n_out);
    g->matmul_forward(gout, gx, gw, N, n_in, n_out);
    CHECK_DEV(g, gout, out, (size_t)N * n_out, "matmul_forward");
    c->matmul_backward(dx, dw, dout, x, w, N, n_in, n_out);
    g->matmul_backward(gdx, gdw, gdout, gx, gw, N, n_in, n_out);
    CHECK_DEV(g, gdx, dx, (size_t)N * n_in, "matmul_backward dinp");
    CHECK_DEV(g, gdw, dw, (size_t)n_out * n_in, "matmul_backward dweight");
    c->matmul_backward(NULL, dw, dout, x, w, N, n_in, n_out);
    g->matmul_backward(NULL, gdw, gdout, gx, gw, N, n_in, n_out);
    CHECK_DEV(g, gdw, dw, (size_t)n_out * n_in, "matmul_backward dweight only");
    free(x), free(w), free(out), free(dout), free(dx), free(dw);
    g->free(gx), g->free(gw), g->free(gout), g->free(gdout), g->free(gdx), g->free(gdw);
}

TEST(cuda_op_rmsnorm_rope) {
    const Backend *g = gpu_or_skip(), *c = backend_cpu();
    if (!g) return;
    Rng r;
    rng_seed(&r, 3);
    int N = 300, C = 70;
    size_t n = (size_t)N * C;
    float *x = randv(&r, n, 2), *w = randv(&r, C, 1), *out = xmalloc(4 * n), *rstd = xmalloc(4 * N);
    float *dy = randv(&r, n, 1), *dx = randv(&r, n, 1), *dw = randv(&r, C, 1);
    float *gx = to_dev(g, x, 4 * n), *gw = to_dev(g, w, 4 * C), *gout = g->alloc(4 * n), *grstd = g->alloc(4 * N);
    float *gdy = to_dev(g, dy, 4 * n), *gdx = to_dev(g, dx, 4 * n), *gdw = to_dev(g, dw, 4 * C);
    c->rmsnorm_forward(out, rstd, x, w, N, C, 1e-6f);
    g->rmsnorm_forward(gout, grstd, gx, gw, N, C, 1e-6f);
    CHECK_DEV(g, gout, out, n, "rmsnorm_forward out");
    CHECK_DEV(g, grstd, rstd, N, "rmsnorm_forward rstd");
    c->rmsnorm_backward(dx, dw, dy, x, w, rstd, N, C);
    g->rmsnorm_backward(gdx, gdw, gdy, gx, gw, grstd, N, C);
    CHECK_DEV(g, gdx, dx, n, "rmsnorm_backward dinp");
    CHECK_DEV(g, gdw, dw, C, "rmsnorm_backward dweight");
    /* RoPE on (B, T, H, hd) = (2, 150, 7, 10) laid over the same buffers */
    int B = 2, T = 150, H = 7, hd = 10;
    CHECK((size_t)B * T * H * hd <= n);
    size_t m = (size_t)B * T * H * hd;
    c->rope_forward(x, B, T, H, hd, 10000.0f);
    g->rope_forward(gx, B, T, H, hd, 10000.0f);
    CHECK_DEV(g, gx, x, m, "rope_forward");
    c->rope_backward(dy, B, T, H, hd, 10000.0f);
    g->rope_backward(gdy, B, T, H, hd, 10000.0f);
    CHECK_DEV(g, gdy, dy, m, "rope_backward");
    free(x), free(w), free(out), free(rstd), free(dy), free(dx), free(dw);
    g->free(gx), g->free(gw), g->free(gout), g->free(grstd), g->free(gdy), g->free(gdx), g->free(gdw);
}

static void attention_case(const Backend *g, int B, int T, int H, int KV, int hd, uint64_t seed) {
    const Backend *c = backend_cpu();
    Rng r;
    rng_seed(&r, seed);
    size_t nq = (size_t)B * T * H * hd, nk = (size_t)B * T * KV * hd;
    float *q = randv(&r, nq, 1), *k = randv(&r, nk, 1), *v = randv(&r, nk, 1), *dout = randv(&r, nq, 1);
    float *out = xmalloc(4 * nq), *probs = xmalloc(4 * (size_t)B * H * T * T);
    float *dq = xmalloc(4 * nq), *dk = xmalloc(4 * nk), *dv = xmalloc(4 * nk);
    float *gq = to_dev(g, q, 4 * nq), *gk = to_dev(g, k, 4 * nk), *gv = to_dev(g, v, 4 * nk), *gdo = to_dev(g, dout, 4 * nq);
    size_t saved = (size_t)B * H * T; /* row logsumexps (backend.h) */
    CHECK(!g->runs_on_host && g->experimental);
    float *gout = g->alloc(4 * nq), *gprobs = g->alloc(4 * saved);
    /* backward overwrites: start from garbage */
    float *junk = xmalloc(4 * nq);
    for (size_t i = 0; i < nq; i++) junk[i] = 1e3f;
    float *gdq = to_dev(g, junk, 4 * nq), *gdk = to_dev(g, junk, 4 * nk), *gdv = to_dev(g, junk, 4 * nk);
    c->attention_forward(out, probs, q, k, v, B, T, H, KV, hd);
    g->attention_forward(gout, gprobs, gq, gk, gv, B, T, H, KV, hd);
    char what[96];
    snprintf(what, sizeof what, "attention_forward B%d T%d H%d KV%d hd%d", B, T, H, KV, hd);
    CHECK_DEV(g, gout, out, nq, what);
    c->attention_backward(dq, dk, dv, dout, probs, q, k, v, B, T, H, KV, hd);
    g->attention_backward(gdq, gdk, gdv, gdo, gprobs, gq, gk, gv, B, T, H, KV, hd);
    snprintf(what, sizeof what, "attention_backward dq B%d T%d H%d KV%d hd%d", B, T, H, KV, hd);
    CHECK_DEV(g, gdq, dq, nq, what);
    snprintf(what, sizeof what, "attention_backward dk B%d T%d H%d KV%d hd%d", B, T, H, KV, hd);
    CHECK_DEV(g, gdk, dk, nk, what);
    snprintf(what, sizeof what, "attention_backward dv B%d T%d H%d KV%d hd%d", B, T, H, KV, hd);
    CHECK_DEV(g, gdv, dv, nk, what);
    free(q), free(k), free(v), free(dout), free(out), free(probs), free(dq), free(dk), free(dv), free(junk);
    g->free(gq), g->free(gk), g->free(gv), g->free(gdo), g->free(gout), g->free(gprobs), g->free(gdq), g->free(gdk);
    g->free(gdv);
}

TEST(cuda_op_attention) {
    const Backend *g = gpu_or_skip();
    if (!g) return;
    attention_case(g, 2, 37, 4, 2, 16, 4);  /* GQA, T not a multiple of the tiles */
    attention_case(g, 1, 70, 2, 1, 48, 5);  /* hd not a multiple of 32 */
    attention_case(g, 3, 1, 2, 2, 8, 6);    /* T = 1 */
    attention_case(g, 1, 33, 6, 3, 96, 7);  /* 3 dims per lane of 4 */
    attention_case(g, 1, 20, 2, 1, 130, 8); /* the widest kernel (hd <= 256) */
}

TEST(cuda_op_embedding_crossentropy) {
    const Backend *g = gpu_or_skip(), *c = backend_cpu();
    if (!g) return;
    Rng r;
    rng_seed(&r, 9);
    int N = 301, C = 33, V = 11;
    int32_t *tok = xmalloc(4 * N);
    for (int t = 0; t < N; t++) tok[t] = t % 5 == 0 ? 3 : (int32_t)rng_below(&r, V); /* many repeats */
    float *table = randv(&r, (size_t)V * C, 1), *out = xmalloc(4 * (size_t)N * C), *dout = randv(&r, (size_t)N * C, 1);
    float *dtable = randv(&r, (size_t)V * C, 1);
    int32_t *gtok = to_dev(g, tok, 4 * N);
    float *gtable = to_dev(g, table, 4 * V * C), *gout = g->alloc(4 * (size_t)N * C), *gdout = to_dev(g, dout, 4 * N * C);
    float *gdtable = to_dev(g, dtable, 4 * V * C);
    c->embedding_forward(out, tok, table, N, C);
    g->embedding_forward(gout, gtok, gtable, N, C);
    CHECK_DEV(g, gout, out, (size_t)N * C, "embedding_forward");
    c->embedding_backward(dtable, dout, tok, N, C, V);
    g->embedding_backward(gdtable, gdout, gtok, N, C, V);
    CHECK_DEV(g, gdtable, dtable, (size_t)V * C, "embedding_backward");

    /* cross-entropy over V = 1000 (not a multiple of the block), backward in place and not */
    int N2 = 7, V2 = 1000;
    size_t nl = (size_t)N2 * V2;
    float *logits = randv(&r, nl, 3), *losses = xmalloc(4 * N2), *dl = xmalloc(4 * nl);
    int32_t *tg = xmalloc(4 * N2);
    for (int t = 0; t < N2; t++) tg[t] = (int32_t)rng_below(&r, V2);
    tg[0] = V2 - 1;
    float *glog = to_dev(g, logits, 4 * nl), *glosses = g->alloc(4 * N2), *gdl = g->alloc(4 * nl);
    int32_t *gtg = to_dev(g, tg, 4 * N2);
    c->crossentropy_forward(losses, logits, tg, N2, V2);
    g->crossentropy_forward(glosses, glog, gtg, N2, V2);
    CHECK_DEV(g, glosses, losses, N2, "crossentropy_forward");
    c->crossentropy_backward(dl, logits, tg, N2, V2, 0.25f);
    g->crossentropy_backward(gdl, glog, gtg, N2, V2, 0.25f);
    CHECK_DEV(g, gdl, dl, nl, "crossentropy_backward");
    g->crossentropy_backward(glog, glog, gtg, N2, V2, 0.25f);
    CHECK_DEV(g, glog, dl, nl, "crossentropy_backward in place");
    free(tok), free(table), free(out), free(dout), free(dtable), free(logits), free(losses), free(dl), free(tg);
    g->free(gtok), g->free(gtable), g->free(gout), g->free(gdout), g->free(gdtable), g->free(glog), g->free(glosses);
    g->free(gdl), g->free(gtg);
}

/* router, permutation, gather, experts, combine on one batch, with expert E-1 never selected */
static void moe_case(const Backend *g, int norm_topk, float aux_coef, float z_coef, uint64_t seed) {
    const Backend *c = backend_cpu();
    Rng r;
    rng_seed(&r, seed);
    int N = 200, E = 6, K = 2, C = 40, F = 70, NK = N * K;
    float *logits = randv(&r, (size_t)N * E, 1), *bias = randv(&r, E, 0.05f);
    bias[E - 1] = -10.0f;
    float *probs = xmalloc(4 * N * E), *gates = xmalloc(4 * NK), *dgates = randv(&r, NK, 1), *dlog = xmalloc(4 * N * E);
    int32_t *topk = xmalloc(4 * NK), *loads = xmalloc(4 * E);
    float *glogits = to_dev(g, logits, 4 * N * E), *gbias = to_dev(g, bias, 4 * E), *gprobs = g->alloc(4 * N * E);
    float *ggates = g->alloc(4 * NK), *gdgates = to_dev(g, dgates, 4 * NK), *gdlog = g->alloc(4 * N * E);
    int32_t *gtopk = g->alloc(4 * NK), *gloads = g->alloc(4 * E);
    double aux_c = c->router_forward(probs, topk, gates, loads, logits, bias, N, E, K, norm_topk, aux_coef, z_coef);
    double aux_g = g->router_forward(gprobs, gtopk, ggates, gloads, glogits, gbias, N, E, K, norm_topk, aux_coef, z_coef);
    CHECK_CLOSE(aux_g, aux_c, OP_TOL);
    CHECK_DEV(g, gprobs, probs, (size_t)N * E, "router_forward probs");
    CHECK_DEV_INT(g, gtopk, topk, NK, "router_forward topk");
    CHECK_DEV(g, ggates, gates, NK, "router_forward gates");
    CHECK_DEV_INT(g, gloads, loads, E, "router_forward loads");
    CHECK(loads[E - 1] == 0);
    c->router_backward(dlog, dgates, probs, topk, logits, loads, N, E, K, norm_topk, aux_coef, z_coef);
    g->router_backward(gdlog, gdgates, gprobs, gtopk, glogits, gloads, N, E, K, norm_topk, aux_coef, z_coef);
    CHECK_DEV(g, gdlog, dlog, (size_t)N * E, "router_backward");

    /* the GPU continues from the CPU's routing, so a near-tie cannot cascade */
    g->upload(gtopk, topk, 4 * NK);
    g->upload(gloads, loads, 4 * E);
    g->upload(ggates, gates, 4 * NK);
    int32_t *offsets = xmalloc(4 * (E + 1)), *token_of = xmalloc(4 * NK), *position_of = xmalloc(4 * NK);
    int32_t *goff = g->alloc(4 * (E + 1)), *gtok = g->alloc(4 * NK), *gpos = g->alloc(4 * NK);
    c->moe_permute(offsets, token_of, position_of, topk, loads, N, E, K);
    g->moe_permute(goff, gtok, gpos, gtopk, gloads, N, E, K);
    CHECK_DEV_INT(g, goff, offsets, E + 1, "moe_permute offsets");
    CHECK_DEV_INT(g, gtok, token_of, NK, "moe_permute token_of");
    CHECK_DEV_INT(g, gpos, position_of, NK, "moe_permute position_of");

    size_t nxc = (size_t)N * C, ngc = (size_t)NK * C, ngf = (size_t)NK * F, nw = (size_t)E * F * C;
    float *x = randv(&r, nxc, 1), *xg = xmalloc(4 * ngc);
    float *wg = randv(&r, nw, 0.2f), *wu = randv(&r, nw, 0.2f), *wd = randv(&r, nw, 0.2f);
    float *yg = xmalloc(4 * ngc), *eg = xmalloc(4 * ngf), *eu = xmalloc(4 * ngf), *eh = xmalloc(4 * ngf);
    float *gx = to_dev(g, x, 4 * nxc), *gxg = g->alloc(4 * ngc), *gwg = to_dev(g, wg, 4 * nw), *gwu = to_dev(g, wu, 4 * nw);
    float *gwd = to_dev(g, wd, 4 * nw), *gyg = g->alloc(4 * ngc), *geg = g->alloc(4 * ngf), *geu = g->alloc(4 * ngf);
    float *geh = g->alloc(4 * ngf);
    c->moe_gather_forward(xg, x, token_of, NK, C);
    g->moe_gather_forward(gxg, gx, gtok, NK, C);
    CHECK_DEV(g, gxg, xg, ngc, "moe_gather_forward");
    c->experts_forward(yg, eg, eu, eh, xg, offsets, wg, wu, wd, E, C, F);
    g->experts_forward(gyg, geg, geu, geh, gxg, goff, gwg, gwu, gwd, E, C, F);
    CHECK_DEV(g, geg, eg, ngf, "experts_forward g");
    CHECK_DEV(g, geu, eu, ngf, "experts_forward u");
    CHECK_DEV(g, geh, eh, ngf, "experts_forward h");
    CHECK_DEV(g, gyg, yg, ngc, "experts_forward yg");
    float *out = xmalloc(4 * nxc), *gout = g->alloc(4 * nxc);
    c->moe_combine_forward(out, yg, gates, position_of, N, K, C);
    g->moe_combine_forward(gout, gyg, ggates, gpos, N, K, C);
    CHECK_DEV(g, gout, out, nxc, "moe_combine_forward");

    /* backward: combine, experts (weight grads accumulate onto non-zero values), gather */
    float *dout = randv(&r, nxc, 1), *dyg = xmalloc(4 * ngc), *dg2 = xmalloc(4 * NK);
    float *gdout = to_dev(g, dout, 4 * nxc), *gdyg = g->alloc(4 * ngc), *gdg2 = g->alloc(4 * NK);
    c->moe_combine_backward(dyg, dg2, dout, yg, gates, position_of, N, K, C);
    g->moe_combine_backward(gdyg, gdg2, gdout, gyg, ggates, gpos, N, K, C);
    CHECK_DEV(g, gdyg, dyg, ngc, "moe_combine_backward dyg");
    CHECK_DEV(g, gdg2, dg2, NK, "moe_combine_backward dgates");
    g->upload(gdyg, dyg, 4 * ngc);
    float *dxg = xmalloc(4 * ngc), *dwg = randv(&r, nw, 1), *dwu = randv(&r, nw, 1), *dwd = randv(&r, nw, 1);
    float *sdg = xmalloc(4 * ngf), *sdu = xmalloc(4 * ngf), *sdh = xmalloc(4 * ngf);
    float *gdxg = g->alloc(4 * ngc), *gdwg = to_dev(g, dwg, 4 * nw), *gdwu = to_dev(g, dwu, 4 * nw);
    float *gdwd = to_dev(g, dwd, 4 * nw), *gsdg = g->alloc(4 * ngf), *gsdu = g->alloc(4 * ngf), *gsdh = g->alloc(4 * ngf);
    c->experts_backward(dxg, dwg, dwu, dwd, sdg, sdu, sdh, dyg, eg, eu, eh, xg, offsets, wg, wu, wd, E, C, F);
    g->experts_backward(gdxg, gdwg, gdwu, gdwd, gsdg, gsdu, gsdh, gdyg, geg, geu, geh, gxg, goff, gwg, gwu, gwd, E, C, F);
    CHECK_DEV(g, gdxg, dxg, ngc, "experts_backward dxg");
    CHECK_DEV(g, gdwg, dwg, nw, "experts_backward dw_gate");
    CHECK_DEV(g, gdwu, dwu, nw, "experts_backward dw_up");
    CHECK_DEV(g, gdwd, dwd, nw, "experts_backward dw_down");
    float *dx = randv(&r, nxc, 1), *gdx = to_dev(g, dx, 4 * nxc);
    g->upload(gdxg, dxg, 4 * ngc);
    c->moe_gather_backward(dx, dxg, position_of, N, K, C);
    g->moe_gather_backward(gdx, gdxg, gpos, N, K, C);
    CHECK_DEV(g, gdx, dx, nxc, "moe_gather_backward");

    free(logits), free(bias), free(probs), free(gates), free(dgates), free(dlog), free(topk), free(loads);
    free(offsets), free(token_of), free(position_of), free(x), free(xg), free(wg), free(wu), free(wd), free(yg);
    free(eg), free(eu), free(eh), free(out), free(dout), free(dyg), free(dg2), free(dxg), free(dwg), free(dwu), free(dwd);
    free(sdg), free(sdu), free(sdh), free(dx);
    void *dev[] = {glogits, gbias, gprobs, ggates, gdgates, gdlog, gtopk, gloads, goff, gtok, gpos, gx, gxg, gwg, gwu,
                   gwd, gyg, geg, geu, geh, gout, gdout, gdyg, gdg2, gdxg, gdwg, gdwu, gdwd, gsdg, gsdu, gsdh, gdx};
    for (size_t i = 0; i < sizeof dev / sizeof *dev; i++) g->free(dev[i]);
}

TEST(cuda_op_router_moe) {
    const Backend *g = gpu_or_skip();
    if (!g) return;
    moe_case(g, 1, 0.0f, 0.0f, 10);
    moe_case(g, 0, 0.01f, 0.001f, 11);
}

/* ---- the whole model ---- */


static double grad_rel_l2(const float *got, const float *ref, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) d += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]), s += (double)ref[i] * ref[i];
    return isnan(d) ? INFINITY : sqrt(d) / fmax(sqrt(s), 1e-8);
}

static void run_model_parity(const char *label, ModelConfig mc, TrainConfig tc) {
    const Backend *g = gpu_or_skip();
    if (!g) return;
    mc.head_dim = mc.d_model / mc.n_heads;
    const int B = tc.batch_size, T = tc.seq_len, S = 20, V = mc.vocab_size;
    Model mc_, mg_, *cm = &mc_, *gm = &mg_;
    CHECK(model_create(cm, &mc, backend_cpu()) == 0);
    CHECK(model_create(gm, &mc, g) == 0);
    model_init_weights(cm, 42);
    model_init_weights(gm, 42); /* host RNG, then upload: identical weights */
    model_set_batch(cm, B, T);
    model_set_batch(gm, B, T);
    Rng rng;
    rng_seed(&rng, 99);
    size_t per_batch = (size_t)B * (T + 1), N = (size_t)B * T;
    int32_t *tokens = xmalloc(sizeof(int32_t) * per_batch * S);
    for (size_t i = 0; i < per_batch * S; i++) tokens[i] = (int32_t)rng_below(&rng, V);

    /* logits, loss, routing and every gradient on the first batch */
    model_zero_grad(cm), model_zero_grad(gm);
    double lc = model_forward(cm, tokens, tc.aux_loss_coef, tc.z_loss_coef);
    double lg = model_forward(gm, tokens, tc.aux_loss_coef, tc.z_loss_coef);
    CHECK_MSG(fabs(lg - lc) <= 1e-4 * fabs(lc), "%s: loss gpu %.9g vs cpu %.9g", label, lg, lc);
    float *logits_c = from_dev(backend_cpu(), cm->logits, N * V), *logits_g = from_dev(g, gm->logits, N * V);
    double le = rel_err(logits_g, logits_c, N * V);
    CHECK_MSG(le <= 1e-4, "%s: logits relative error %.3g", label, le);
    for (int l = 0; l < mc.n_layers; l++) {
        if (!cm->layers[l].is_moe) continue;
        size_t nk = N * mc.top_k;
        int32_t *tc_ = from_dev_i(backend_cpu(), cm->acts[l].topk, nk), *tg_ = from_dev_i(g, gm->acts[l].topk, nk);
        int32_t *lc_ = xmalloc(4 * mc.n_experts), *lg_ = xmalloc(4 * mc.n_experts);
        model_layer_loads(cm, l, lc_), model_layer_loads(gm, l, lg_);
        CHECK_MSG(!memcmp(tc_, tg_, 4 * nk), "%s: layer %d routing (top-K) differs from the CPU", label, l);
        CHECK_MSG(!memcmp(lc_, lg_, 4 * mc.n_experts), "%s: layer %d loads differ from the CPU", label, l);
        free(tc_), free(tg_), free(lc_), free(lg_);
    }
    model_backward(cm, tc.aux_loss_coef, tc.z_loss_coef);
    model_backward(gm, tc.aux_loss_coef, tc.z_loss_coef);
    float *gc = from_dev(backend_cpu(), cm->grad_mem, cm->n_floats), *gg = from_dev(g, gm->grad_mem, gm->n_floats);
    int bad = 0;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < cm->n_params; i++) {
        if (!cm->params[i].trainable) continue;
        double e = grad_rel_l2(gg + cm->params[i].offset, gc + cm->params[i].offset, cm->params[i].numel);
        if (!(e <= 1e-4)) bad++;
        if (!(e <= worst)) worst = e, worst_name = cm->params[i].name;
    }
    CHECK_MSG(bad == 0, "%s: %d gradients over 1e-4 (worst %s: %.3g)", label, bad, worst_name, worst);
    free(logits_c), free(logits_g), free(gc), free(gg);

    /* 20 AdamW steps from the same weights (clipping, WSD, balancing bias) */
    model_init_weights(cm, 42);
    model_init_weights(gm, 42);
    double worst_step = 0;
    int worst_at = 0;
    for (int s = 0; s < S; s++) {
        float lr = lr_at(&tc, s, S);
        double l2[2];
        Model *ms[2] = {cm, gm};
        for (int i = 0; i < 2; i++) {
            model_zero_grad(ms[i]);
            l2[i] = model_forward(ms[i], tokens + per_batch * s, tc.aux_loss_coef, tc.z_loss_coef);
            model_backward(ms[i], tc.aux_loss_coef, tc.z_loss_coef);
            model_optimizer_step(ms[i], &tc, lr);
        }
        double e = fabs(l2[1] - l2[0]) / fabs(l2[0]);
        if (!(e <= worst_step)) worst_step = e, worst_at = s;
    }
    CHECK_MSG(worst_step <= 1e-4, "%s: 20-step losses: worst relative error %.3g at step %d", label, worst_step, worst_at);
    free(tokens);
    model_free(cm);
    model_free(gm);
}

TEST(cuda_parity_dense_tied) {
    ModelConfig mc;
    TrainConfig tc;
    const char *label = fixture_parity_case(0, &mc, &tc);
    run_model_parity(label, mc, tc);
}

TEST(cuda_parity_interleaved_aux_losses) {
    ModelConfig mc;
    TrainConfig tc;
    const char *label = fixture_parity_case(1, &mc, &tc);
    run_model_parity(label, mc, tc);
}

TEST(cuda_parity_full_moe) {
    ModelConfig mc;
    TrainConfig tc;
    const char *label = fixture_parity_case(2, &mc, &tc);
    run_model_parity(label, mc, tc);
}

TEST(cuda_parity_qwen2_moe) {
    ModelConfig mc;
    TrainConfig tc;
    const char *label = fixture_parity_case(3, &mc, &tc);
    run_model_parity(label, mc, tc);
}

TEST(cuda_parity_olmoe) {
    ModelConfig mc;
    TrainConfig tc;
    const char *label = fixture_parity_case(4, &mc, &tc);
    run_model_parity(label, mc, tc);
}

/* losses of `steps` training steps on the fixture data, on backend be at precision */
static float *train_losses(const Backend *be, int precision, const ModelConfig *mc, const TrainConfig *tc, int steps,
                           const char *data) {
    CHECK(be->set_precision(precision) == 0);
    Model m;
    CHECK(model_create(&m, mc, be) == 0);
    model_init_weights(&m, tc->seed);
    model_set_batch(&m, tc->batch_size, tc->seq_len);
    Loader ld;
    CHECK(loader_open(&ld, data, "pretrain", tc->batch_size, tc->seq_len, tc->seed, 1) == 0);
    int32_t *tokens = xmalloc(sizeof(int32_t) * tc->batch_size * (tc->seq_len + 1));
    float *losses = xmalloc(sizeof(float) * steps);
    for (int s = 0; s < steps; s++) {
        loader_next(&ld, tokens);
        model_zero_grad(&m);
        losses[s] = (float)model_forward(&m, tokens, tc->aux_loss_coef, tc->z_loss_coef);
        model_backward(&m, tc->aux_loss_coef, tc->z_loss_coef);
        model_optimizer_step(&m, tc, lr_at(tc, s, steps));
    }
    free(tokens);
    loader_close(&ld);
    model_free(&m);
    be->set_precision(PRECISION_FP32);
    return losses;
}

TEST(cuda_deterministic) {
    const Backend *g = gpu_or_skip();
    if (!g) return;
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    char *data = fixture_data_dir();
    float *a = train_losses(g, PRECISION_FP32, &mc, &tc, 6, data), *b = train_losses(g, PRECISION_FP32, &mc, &tc, 6, data);
    CHECK_MSG(!memcmp(a, b, sizeof(float) * 6), "two GPU runs differ: %.9g vs %.9g at step 5", a[5], b[5]);
    free(a), free(b), free(data);
}

TEST(cuda_bf16_vs_fp32) {
    const Backend *g = gpu_or_skip();
    if (!g) return;
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    mc.d_model = 64, mc.head_dim = 16, mc.moe_intermediate_size = 64, mc.intermediate_size = 128;
    tc.steps = 200, tc.warmup_steps = 10, tc.lr = 3e-3f, tc.min_lr = 3e-4f;
    const int S = 200, tail = 20;
    char *data = fixture_data_dir();
    float *f32 = train_losses(g, PRECISION_FP32, &mc, &tc, S, data), *b16 = train_losses(g, PRECISION_BF16, &mc, &tc, S, data);
    double worst = 0, mean32 = 0, mean16 = 0;
    int worst_at = 0;
    for (int s = 0; s < S; s++) {
        double e = fabs((double)b16[s] - f32[s]) / f32[s];
        if (!(e <= worst)) worst = e, worst_at = s;
        if (s >= S - tail) mean32 += f32[s] / tail, mean16 += b16[s] / tail;
    }
    double tail_err = fabs(mean16 - mean32) / mean32;
    printf("    bf16 vs fp32: last-%d mean %.4f vs %.4f (%.2f%%), worst step %d: %.2f%%\n", tail, mean16, mean32,
           100 * tail_err, worst_at, 100 * worst);
    CHECK_MSG(tail_err <= 0.03, "bf16 mean loss of the last %d steps %.4f vs fp32 %.4f: %.2f%% > 3%%", tail, mean16, mean32,
              100 * tail_err);
    CHECK_MSG(worst <= 0.10, "bf16 loss at step %d: %.4f vs fp32 %.4f (%.2f%% > 10%%)", worst_at, b16[worst_at],
              f32[worst_at], 100 * worst);
    CHECK_MSG(mean16 < 0.8 * b16[0], "bf16 did not learn: loss %.4f at step 0, %.4f over the last %d", b16[0], mean16, tail);
    free(f32), free(b16), free(data);
}
