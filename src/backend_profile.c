/* backend_profile.c - per-op wall time, FLOPs and bytes of a wrapped backend. */
#include "backend_profile.h"

#include <string.h>

#include "util.h"

#define PROFILED_OPS(X)                                                                                                           \
    X(zero) X(copy) X(add) X(accumulate) X(sum_squares) X(embedding_forward) X(embedding_backward) X(matmul_forward)              \
    X(matmul_backward) X(rmsnorm_forward) X(rmsnorm_backward) X(rope_forward) X(rope_backward) X(attention_forward)               \
    X(attention_backward) X(bias_add_forward) X(bias_add_backward) X(clamp_forward) X(clamp_backward) X(sigmoid_gate_forward)    \
    X(sigmoid_gate_backward) X(swiglu_forward) X(swiglu_backward) X(router_forward) X(router_backward) X(moe_permute)            \
    X(moe_gather_forward) X(moe_gather_backward) X(experts_forward) X(experts_backward) X(moe_combine_forward)                   \
    X(moe_combine_backward) X(crossentropy_forward) X(crossentropy_backward) X(adamw_update) X(balance_bias_update)

#define AS_ENUM(op) OP_##op,
#define AS_NAME(op) #op,
enum { PROFILED_OPS(AS_ENUM) N_OPS };
static const char *OP_NAMES[N_OPS] = {PROFILED_OPS(AS_NAME)};

typedef struct {
    double seconds, flops, bytes;
    long calls;
} Account;

static const Backend *g_inner;
static Backend g_profiled;
static Account g_accounts[N_OPS];

static void record(int op, double t0, double flops, double bytes) {
    Account *a = &g_accounts[op];
    a->seconds += now_seconds() - t0;
    a->flops += flops;
    a->bytes += bytes;
    a->calls++;
}

#define F 4.0 /* bytes per float */
#define TIMED(op, flops, bytes, call)                                                                                              \
    do {                                                                                                                           \
        double t0_ = now_seconds();                                                                                                \
        call;                                                                                                                      \
        record(OP_##op, t0_, (flops), (bytes));                                                                                     \
    } while (0)

static void p_zero(void *p, size_t bytes) { TIMED(zero, 0, (double)bytes, g_inner->zero(p, bytes)); }
static void p_copy(void *d, const void *s, size_t bytes) { TIMED(copy, 0, 2.0 * bytes, g_inner->copy(d, s, bytes)); }
static void p_add(float *out, const float *a, const float *b, size_t n) { TIMED(add, n, 3 * F * n, g_inner->add(out, a, b, n)); }
static void p_accumulate(float *acc, const float *x, size_t n) { TIMED(accumulate, n, 3 * F * n, g_inner->accumulate(acc, x, n)); }
static double p_sum_squares(const float *x, size_t n) {
    double r;
    TIMED(sum_squares, 2.0 * n, F * n, r = g_inner->sum_squares(x, n));
    return r;
}
static void p_embedding_forward(float *out, const int32_t *tokens, const float *table, int N, int C) {
    TIMED(embedding_forward, 0, 2 * F * N * C, g_inner->embedding_forward(out, tokens, table, N, C));
}
static void p_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int N, int C, int V) {
    TIMED(embedding_backward, (double)N * C, 3 * F * N * C, g_inner->embedding_backward(dtable, dout, tokens, N, C, V));
}
static void p_matmul_forward(float *out, const float *inp, const float *w, int N, int n_in, int n_out) {
    TIMED(matmul_forward, 2.0 * N * n_in * n_out, F * ((double)N * n_in + (double)n_in * n_out + (double)N * n_out),
          g_inner->matmul_forward(out, inp, w, N, n_in, n_out));
}
static void p_matmul_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w, int N, int n_in, int n_out) {
    double gemms = dinp ? 2 : 1;
    TIMED(matmul_backward, gemms * 2.0 * N * n_in * n_out,
          F * (gemms * ((double)N * n_out + (double)n_in * n_out) + 2.0 * N * n_in + (double)n_in * n_out),
          g_inner->matmul_backward(dinp, dw, dout, inp, w, N, n_in, n_out));
}
static void p_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *w, int N, int C, float eps) {
    TIMED(rmsnorm_forward, 4.0 * N * C, 2 * F * N * C, g_inner->rmsnorm_forward(out, rstd, inp, w, N, C, eps));
}
static void p_rmsnorm_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w, const float *rstd, int N,
                               int C) {
    TIMED(rmsnorm_backward, 8.0 * N * C, 4 * F * N * C, g_inner->rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, C));
}
static void p_rope_forward(float *x, int B, int T, int H, int hd, float theta) {
    TIMED(rope_forward, 3.0 * B * T * H * hd, 2 * F * B * T * H * hd, g_inner->rope_forward(x, B, T, H, hd, theta));
}
static void p_rope_backward(float *dx, int B, int T, int H, int hd, float theta) {
    TIMED(rope_backward, 3.0 * B * T * H * hd, 2 * F * B * T * H * hd, g_inner->rope_backward(dx, B, T, H, hd, theta));
}
/* causal: half of the T x T scores, each a hd-long dot product, then the same for P V */
static double attention_flops(int B, int T, int H, int hd) { return 2.0 * B * H * (double)T * T * hd; }
static void p_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int H, int KV,
                                int hd) {
    TIMED(attention_forward, attention_flops(B, T, H, hd), F * B * T * ((double)H * hd * 2 + 2.0 * KV * hd),
          g_inner->attention_forward(out, lse, q, k, v, B, T, H, KV, hd));
}
static void p_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *lse, const float *q, const float *k,
                                 const float *v, int B, int T, int H, int KV, int hd) {
    TIMED(attention_backward, 2.5 * attention_flops(B, T, H, hd), F * B * T * ((double)H * hd * 3 + 4.0 * KV * hd),
          g_inner->attention_backward(dq, dk, dv, dout, lse, q, k, v, B, T, H, KV, hd));
}
static void p_bias_add_forward(float *x, const float *bias, int N, int C) {
    TIMED(bias_add_forward, (double)N * C, 2 * F * N * C, g_inner->bias_add_forward(x, bias, N, C));
}
static void p_bias_add_backward(float *dbias, const float *dout, int N, int C) {
    TIMED(bias_add_backward, (double)N * C, F * N * C, g_inner->bias_add_backward(dbias, dout, N, C));
}
static void p_clamp_forward(float *out, const float *inp, size_t n, float limit) {
    TIMED(clamp_forward, 2.0 * n, 2 * F * n, g_inner->clamp_forward(out, inp, n, limit));
}
static void p_clamp_backward(float *dinp, const float *dout, const float *inp, size_t n, float limit) {
    TIMED(clamp_backward, 2.0 * n, 3 * F * n, g_inner->clamp_backward(dinp, dout, inp, n, limit));
}
static void p_sigmoid_gate_forward(float *out, const float *y, const float *logit, int N, int C) {
    TIMED(sigmoid_gate_forward, 2.0 * N * C, 3 * F * N * C, g_inner->sigmoid_gate_forward(out, y, logit, N, C));
}
static void p_sigmoid_gate_backward(float *dy, float *dlogit, const float *dout, const float *y, const float *logit, int N, int C) {
    TIMED(sigmoid_gate_backward, 3.0 * N * C, 3 * F * N * C, g_inner->sigmoid_gate_backward(dy, dlogit, dout, y, logit, N, C));
}
static void p_swiglu_forward(float *out, const float *gate, const float *up, size_t n) {
    TIMED(swiglu_forward, 0, 3 * F * n, g_inner->swiglu_forward(out, gate, up, n));
}
static void p_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate, const float *up, size_t n) {
    TIMED(swiglu_backward, 0, 5 * F * n, g_inner->swiglu_backward(dgate, dup, dout, gate, up, n));
}
static double p_router_forward(float *probs, int32_t *topk, float *gates, int32_t *loads, const float *logits, const float *bias, int N,
                               int E, int K, int norm_topk, float aux, float z) {
    double r;
    TIMED(router_forward, 0, F * 2.0 * N * E, r = g_inner->router_forward(probs, topk, gates, loads, logits, bias, N, E, K, norm_topk, aux, z));
    return r;
}
static void p_router_backward(float *dlogits, const float *dgates, const float *probs, const int32_t *topk, const float *logits,
                              const int32_t *loads, int N, int E, int K, int norm_topk, float aux, float z) {
    TIMED(router_backward, 0, F * 3.0 * N * E,
          g_inner->router_backward(dlogits, dgates, probs, topk, logits, loads, N, E, K, norm_topk, aux, z));
}
static void p_moe_permute(int32_t *offsets, int32_t *token_of, int32_t *position_of, const int32_t *topk, const int32_t *loads, int N,
                          int E, int K) {
    TIMED(moe_permute, 0, F * 3.0 * N * K, g_inner->moe_permute(offsets, token_of, position_of, topk, loads, N, E, K));
}
static void p_moe_gather_forward(float *xg, const float *x, const int32_t *token_of, int NK, int C) {
    TIMED(moe_gather_forward, 0, 2 * F * NK * C, g_inner->moe_gather_forward(xg, x, token_of, NK, C));
}
static void p_moe_gather_backward(float *dx, const float *dxg, const int32_t *position_of, int N, int K, int C) {
    TIMED(moe_gather_backward, (double)N * K * C, F * ((double)N * K * C + 2.0 * N * C), g_inner->moe_gather_backward(dx, dxg, position_of, N, K, C));
}
/* rows routed to experts: offsets[E] (host memory: profiling is for host backends) */
static double expert_flops(const int32_t *offsets, int E, int C, int Fd) { return 3 * 2.0 * offsets[E] * C * Fd; }
static double expert_bytes(const int32_t *offsets, int E, int C, int Fd) {
    return F * (3.0 * E * C * Fd + 2.0 * offsets[E] * C + 3.0 * offsets[E] * Fd);
}
static void p_experts_forward(float *yg, float *g, float *u, float *h, const float *xg, const int32_t *offsets, const float *wg,
                              const float *wu, const float *wd, int E, int C, int Fd) {
    TIMED(experts_forward, expert_flops(offsets, E, C, Fd), expert_bytes(offsets, E, C, Fd),
          g_inner->experts_forward(yg, g, u, h, xg, offsets, wg, wu, wd, E, C, Fd));
}
static void p_experts_backward(float *dxg, float *dwg, float *dwu, float *dwd, float *dg, float *du, float *dh, const float *dyg,
                               const float *g, const float *u, const float *h, const float *xg, const int32_t *offsets, const float *wg,
                               const float *wu, const float *wd, int E, int C, int Fd) {
    TIMED(experts_backward, 2 * expert_flops(offsets, E, C, Fd), 2 * expert_bytes(offsets, E, C, Fd),
          g_inner->experts_backward(dxg, dwg, dwu, dwd, dg, du, dh, dyg, g, u, h, xg, offsets, wg, wu, wd, E, C, Fd));
}
static void p_moe_combine_forward(float *out, const float *yg, const float *gates, const int32_t *position_of, int N, int K, int C) {
    TIMED(moe_combine_forward, 2.0 * N * K * C, F * ((double)N * K * C + N * C), g_inner->moe_combine_forward(out, yg, gates, position_of, N, K, C));
}
static void p_moe_combine_backward(float *dyg, float *dgates, const float *dout, const float *yg, const float *gates,
                                   const int32_t *position_of, int N, int K, int C) {
    TIMED(moe_combine_backward, 4.0 * N * K * C, F * (3.0 * N * K * C + N * C),
          g_inner->moe_combine_backward(dyg, dgates, dout, yg, gates, position_of, N, K, C));
}
static void p_crossentropy_forward(float *losses, const float *logits, const int32_t *targets, int N, int V) {
    TIMED(crossentropy_forward, 0, F * N * (double)V, g_inner->crossentropy_forward(losses, logits, targets, N, V));
}
static void p_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets, int N, int V, float scale) {
    TIMED(crossentropy_backward, 0, 2 * F * N * (double)V, g_inner->crossentropy_backward(dlogits, logits, targets, N, V, scale));
}
static void p_adamw_update(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2, float eps, float wd,
                           float gs, int t) {
    TIMED(adamw_update, 12.0 * n, 7 * F * n, g_inner->adamw_update(p, g, m, v, n, lr, b1, b2, eps, wd, gs, t));
}
static void p_balance_bias_update(float *bias, const int32_t *loads, int E, float rate) {
    TIMED(balance_bias_update, 0, 2 * F * E, g_inner->balance_bias_update(bias, loads, E, rate));
}

#define SET(op) g_profiled.op = g_inner->op ? p_##op : NULL;
const Backend *backend_profiled(const Backend *inner) {
    g_inner = inner;
    g_profiled = *inner;
    PROFILED_OPS(SET)
    backend_profile_reset();
    return &g_profiled;
}

static int is_gemm_like(const char *op) { return strstr(op, "matmul") || strstr(op, "experts") || strstr(op, "attention"); }

void backend_profile_reset(void) { memset(g_accounts, 0, sizeof g_accounts); }

void backend_profile_print(FILE *f, int steps, double step_seconds, double sgemm_gflops) {
    int order[N_OPS], n = 0;
    for (int i = 0; i < N_OPS; i++)
        if (g_accounts[i].calls) order[n++] = i;
    for (int i = 1; i < n; i++) /* by time, largest first */
        for (int j = i; j > 0 && g_accounts[order[j]].seconds > g_accounts[order[j - 1]].seconds; j--) {
            int t = order[j];
            order[j] = order[j - 1], order[j - 1] = t;
        }
    fprintf(f, "  %-22s %7s %9s %6s %9s %7s %7s\n", "op", "calls", "ms/step", "%", "GFLOP/s", "%sgemm", "GB/s");
    double total = 0;
    for (int k = 0; k < n; k++) {
        const Account *a = &g_accounts[order[k]];
        double ms = 1e3 * a->seconds / steps, gflops = a->flops / a->seconds / 1e9;
        total += a->seconds / steps;
        char gf[16] = "", pct[16] = "";
        if (a->flops > 0) snprintf(gf, sizeof gf, "%.1f", gflops);
        if (a->flops > 0 && sgemm_gflops > 0 && is_gemm_like(OP_NAMES[order[k]]))
            snprintf(pct, sizeof pct, "%.0f%%", 100.0 * gflops / sgemm_gflops);
        fprintf(f, "  %-22s %7.1f %9.2f %5.1f%% %9s %7s %7.1f\n", OP_NAMES[order[k]], (double)a->calls / steps, ms,
                100.0 * a->seconds / steps / step_seconds, gf, pct, a->bytes / a->seconds / 1e9);
    }
    fprintf(f, "  %-22s %7s %9.2f %5.1f%%   (the model's own code between ops)\n", "outside the ops", "", 1e3 * (step_seconds - total),
            100.0 * (step_seconds - total) / step_seconds);
}
