/* attention.c - causal attention with GQA: our own register-tiled products, K and V packed once.
 *
 * Attention keeps no T x T matrix between forward and backward: the forward saves each row's
 * logsumexp (B*H*T floats) and the backward recomputes P = exp(s Q K^T - lse) in a per-thread
 * scratch. Activation memory is B*H*T floats per layer instead of B*H*T^2, for one extra product.
 *
 * The work is one (batch, kv head) at a time, on one thread (so dK and dV, summed over the
 * group's query heads, need no atomics). Its K and V are packed once into column panels and
 * reused by every query row of every head in the group. Query rows go in causal blocks of
 * BLOCK positions, read in place: a block's scores, probabilities and their gradients are a
 * (group * rows, T) scratch, the group's heads one after the other, that stays in L2.
 *
 * Every product is one micro-kernel, C (MR x NR) = A B over a packed panel of B, with the
 * A elements broadcast: the 12 accumulators of a 6 x 16 (AVX2) or 6 x 32 (AVX-512) tile stay
 * in registers. With head_dim 32 the products are too small for OpenBLAS, which packed both
 * operands on every call and ran them at 25-35% of its large-GEMM speed (docs/perf.md). The
 * causal mask is exact to a tile: a row tile reads the keys up to its last position only, and a
 * key tile the rows at or after its first key. */
#include "cpu/attention.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/simd.h"
#include "util.h"

/* The kernels of this object are named for its width: `base` in the default compile, or the
 * ATTENTION_VARIANT suffix when the build compiles this file again at another width (Makefile,
 * ATTENTION_WIDTHS: the portable build adds AVX2 and AVX-512, a native one the narrower widths,
 * for the tests). The entry points at the end pick one. */
#ifdef ATTENTION_VARIANT
#define KERNEL(name) KERNEL_(name, ATTENTION_VARIANT)
#else
#define KERNEL(name) KERNEL_(name, base)
#endif
#define KERNEL_(name, suffix) KERNEL__(name, suffix)
#define KERNEL__(name, suffix) name##_##suffix

#define MR 6        /* rows of a register tile */
#define NR (2 * VW) /* columns of a register tile: two vectors */
#define BLOCK 64    /* query positions per causal block */

static int min_int(int a, int b) { return a < b ? a : b; }
static size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

/* P (or S), dP: (group * BLOCK, Tp); ROWS: the panels of Q in the backward, the row sums' inverses
 * in the forward; DO: the panels of dO; KT, VT: K^T, V^T panels; KV: the panels of V (forward)
 * or K (backward) */
enum { SCRATCH_P, SCRATCH_DP, SCRATCH_ROWS, SCRATCH_DO, SCRATCH_KT, SCRATCH_VT, SCRATCH_KV, N_SCRATCH };
static float *scratch(int slot, size_t floats) {
    /* per thread and slot, grown on demand and kept: no allocation in the step loop */
    static __thread float *buf[N_SCRATCH];
    static __thread size_t cap[N_SCRATCH];
    if (cap[slot] < floats) {
        free(buf[slot]);
        buf[slot] = xmalloc(sizeof(float) * floats);
        cap[slot] = floats;
    }
    return buf[slot];
}

/* Column panels of a (depth x N) matrix whose (k, n) element is src[k * s_k + n * s_n]:
 * ceil(N / NR) panels of (depth x NR), panel p at dst + p * panel_stride, zero beyond column N. */
static void pack_panels(float *dst, size_t panel_stride, const float *src, int depth, int N, ptrdiff_t s_k,
                        ptrdiff_t s_n) {
    for (int n0 = 0; n0 < N; n0 += NR) {
        int width = min_int(NR, N - n0);
        float *p = dst + (size_t)(n0 / NR) * panel_stride;
        for (int kk = 0; kk < depth; kk++, p += NR) {
            const float *s = src + kk * s_k + n0 * s_n;
            int n = 0;
            for (; n < width; n++) p[n] = s[n * s_n];
            for (; n < NR; n++) p[n] = 0;
        }
    }
}

/* C (mr x nc) = alpha A B, or C += alpha A B when accumulate: A's (r, k) is a[r * a_m + k * a_k],
 * B one packed panel (depth x NR), nc <= NR. mr is a constant at each call (tile dispatches),
 * so the loops unroll and the accumulators stay in registers. */
static inline __attribute__((always_inline)) void tile_mr(const int mr, int depth, const float *a, ptrdiff_t a_m,
                                                          ptrdiff_t a_k, const float *b, float *c, ptrdiff_t ldc,
                                                          int nc, float alpha, int accumulate) {
    vfloat acc0[MR], acc1[MR];
    for (int r = 0; r < mr; r++) acc0[r] = acc1[r] = v_zero();
    for (int kk = 0; kk < depth; kk++, a += a_k, b += NR) {
        vfloat b0 = v_load(b), b1 = v_load(b + VW);
        for (int r = 0; r < mr; r++) {
            vfloat x = v_set1(a[r * a_m]);
            acc0[r] = v_fma(x, b0, acc0[r]);
            acc1[r] = v_fma(x, b1, acc1[r]);
        }
    }
    /* three plain loops (not one with branches inside), so that each unrolls over the registers */
    vfloat va = v_set1(alpha);
    if (nc == NR && accumulate) {
        for (int r = 0; r < mr; r++) {
            v_store(c + r * ldc, v_fma(va, acc0[r], v_load(c + r * ldc)));
            v_store(c + r * ldc + VW, v_fma(va, acc1[r], v_load(c + r * ldc + VW)));
        }
    } else if (nc == NR) {
        for (int r = 0; r < mr; r++) {
            v_store(c + r * ldc, v_mul(va, acc0[r]));
            v_store(c + r * ldc + VW, v_mul(va, acc1[r]));
        }
    } else {
        for (int r = 0; r < mr; r++) {
            float t[NR], *cr = c + r * ldc;
            v_store(t, acc0[r]);
            v_store(t + VW, acc1[r]);
            for (int n = 0; n < nc; n++) cr[n] = accumulate ? cr[n] + alpha * t[n] : alpha * t[n];
        }
    }
}

static void tile(int mr, int depth, const float *a, ptrdiff_t a_m, ptrdiff_t a_k, const float *b, float *c,
                 ptrdiff_t ldc, int nc, float alpha, int accumulate) {
    switch (mr) {
    case 6: tile_mr(6, depth, a, a_m, a_k, b, c, ldc, nc, alpha, accumulate); break;
    case 5: tile_mr(5, depth, a, a_m, a_k, b, c, ldc, nc, alpha, accumulate); break;
    case 4: tile_mr(4, depth, a, a_m, a_k, b, c, ldc, nc, alpha, accumulate); break;
    case 3: tile_mr(3, depth, a, a_m, a_k, b, c, ldc, nc, alpha, accumulate); break;
    case 2: tile_mr(2, depth, a, a_m, a_k, b, c, ldc, nc, alpha, accumulate); break;
    default: tile_mr(1, depth, a, a_m, a_k, b, c, ldc, nc, alpha, accumulate); break;
    }
}

/* A causal block is the positions [i0, i0 + rows) of the `group` query heads that share a kv
 * head. Its scores, probabilities and their gradients are a scratch of (group * rows) rows, head
 * hh's position i0 + r at row hh * rows + r; within a head, row tiles never cross heads. */

/* S[r][j] = alpha X[r] . Y[j] for one head's rows r < rows (position i0 + r) and the keys j its
 * row tile reaches (to a multiple of NR): X's row r at x + r * ldx, Yt the panels of Y^T (depth
 * hd, T columns); S is (rows, lds). Entries past a row's own position are for the caller to mask. */
static void head_scores(float *S, size_t lds, const float *x, ptrdiff_t ldx, int hd, const float *Yt, int rows,
                        int i0, float alpha) {
    for (int r0 = 0; r0 < rows; r0 += MR) {
        int mr = min_int(MR, rows - r0), keys = i0 + r0 + mr;
        for (int n0 = 0; n0 < keys; n0 += NR)
            tile(mr, hd, x + r0 * ldx, ldx, 1, Yt + (size_t)n0 * hd, S + r0 * lds + n0, lds, NR, alpha, 0);
    }
}

/* C[r] = alpha sum_j P[r][j] Y[j] for one head's rows, over the keys of r's row tile (P must be
 * zero past r's position there): P (rows, ldp), Yp the panels of Y (depth T, hd columns); C's
 * row r at c + r * ldc. */
static void head_rows_times(float *c, ptrdiff_t ldc, const float *P, size_t ldp, const float *Yp, int T, int hd,
                            int rows, int i0, float alpha) {
    for (int r0 = 0; r0 < rows; r0 += MR) {
        int mr = min_int(MR, rows - r0), keys = i0 + r0 + mr;
        for (int n0 = 0; n0 < hd; n0 += NR)
            tile(mr, keys, P + r0 * ldp, ldp, 1, Yp + (size_t)n0 * T, c + r0 * ldc + n0, ldc, min_int(NR, hd - n0),
                 alpha, 0);
    }
}

/* C[j] += alpha sum_r P[r][j] X[r] for the block's keys j < i0 + rows, r over the rows of all R
 * = group * rows: P (R, ldp) zero past each row's position, Xp the panels of X (depth R, hd
 * columns); C rows at stride ldc. The rows of each head before a key tile's first key are
 * skipped (their P is zero there). */
static void block_keys_accumulate(float *C, ptrdiff_t ldc, const float *P, size_t ldp, const float *Xp, int hd, int R,
                                  int rows, int i0, float alpha) {
    for (int j0 = 0; j0 < i0 + rows; j0 += MR) {
        int mr = min_int(MR, i0 + rows - j0), skip = j0 > i0 ? j0 - i0 : 0;
        for (int k0 = skip; k0 < R; k0 += rows)
            for (int n0 = 0; n0 < hd; n0 += NR)
                tile(mr, rows - skip, P + k0 * ldp + j0, 1, ldp, Xp + (size_t)n0 * R + (size_t)k0 * NR,
                     C + j0 * ldc + n0, ldc, min_int(NR, hd - n0), alpha, 1);
    }
}

/* The products read a row of P up to MR - 1 keys past its position (to the end of its tile).
 * The softmax writes whole vectors, zero past the position, up to `last`; the entries after it
 * that a product reads, within the block's `cols`, are set to zero here. */
static void zero_past(float *row, int last, int cols) {
    for (int j = last + 1; j < cols && j < last + MR; j++) row[j] = 0;
}

/* Row loops in whole vectors, the last one masked, so a row of any length has no scalar tail.
 * The entries past a row's position hold scores of later keys, which may be inf or NaN where
 * the weights overflow: they are masked bitwise, never by arithmetic. From lane VW - rem of
 * these tables, rem lanes of all-ones then zeros (keep) and rem zeros then -inf (drop). */
static const union {
    uint32_t bits[2 * VW];
    float f[2 * VW];
} tail_keep = {.bits = {[0 ... VW - 1] = 0xffffffffu}}, tail_drop = {.bits = {[VW ... 2 * VW - 1] = 0xff800000u}};

/* the largest of row[0 .. n), n >= 1 */
static float row_max(const float *row, int n) {
    int last = (int)round_up(n, VW) - VW, lane = last + VW - n;
    vfloat m = v_or(v_and(v_load(row + last), v_load(tail_keep.f + lane)), v_load(tail_drop.f + lane));
    for (int j = 0; j < last; j += VW) m = v_max(v_load(row + j), m);
    return v_hmax(m);
}

/* row[j] = exp(row[j] - shift) for j < n and 0 from n to the end of its vector; returns the sum
 * of the new row, or with weights, its dot product with weights[0 .. n) */
static inline __attribute__((always_inline)) float exp_row(float *row, int n, float shift, const float *weights) {
    int last = (int)round_up(n, VW) - VW;
    vfloat vs = v_set1(shift), acc = v_zero(), keep = v_load(tail_keep.f + last + VW - n);
    for (int j = 0; j <= last; j += VW) {
        vfloat x = v_load(row + j), w = weights ? v_load(weights + j) : v_zero();
        if (j == last) x = v_and(x, keep), w = v_and(w, keep);
        vfloat e = v_exp(v_sub(x, vs));
        if (j == last) e = v_and(e, keep);
        v_store(row + j, e);
        acc = weights ? v_fma(e, w, acc) : v_add(acc, e);
    }
    return v_hsum(acc);
}

void KERNEL(attention_forward)(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                               int H, int KV, int hd);
void KERNEL(attention_forward)(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T,
                               int H, int KV, int hd) {
    float scale = 1.0f / sqrtf((float)hd);
    int group = H / KV, kv_stride = KV * hd, q_stride = H * hd;
    size_t Tp = round_up(T, NR), hdp = round_up(hd, NR);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int g = 0; g < KV; g++) {
            const float *K = k + (size_t)b * T * kv_stride + g * hd;
            const float *V = v + (size_t)b * T * kv_stride + g * hd;
            float *S = scratch(SCRATCH_P, BLOCK * Tp), *inv = scratch(SCRATCH_ROWS, BLOCK);
            float *Kt = scratch(SCRATCH_KT, Tp * hd), *Vp = scratch(SCRATCH_KV, hdp * T);
            pack_panels(Kt, (size_t)hd * NR, K, hd, T, 1, kv_stride); /* K^T: (hd, T) */
            pack_panels(Vp, (size_t)T * NR, V, T, hd, kv_stride, 1);  /* V: (T, hd) */
            for (int hh = 0; hh < group; hh++) {
                int h = g * group + hh;
                float *L = lse + ((size_t)b * H + h) * T;
                for (int i0 = 0; i0 < T; i0 += BLOCK) {
                    int rows = min_int(BLOCK, T - i0);
                    float *o = out + ((size_t)b * T + i0) * q_stride + h * hd;
                    head_scores(S, Tp, q + ((size_t)b * T + i0) * q_stride + h * hd, q_stride, hd, Kt, rows, i0, scale);
                    for (int r = 0; r < rows; r++) {
                        int i = i0 + r;
                        float *row = S + (size_t)r * Tp;
                        float mx = row_max(row, i + 1), sum = exp_row(row, i + 1, mx, NULL);
                        zero_past(row, (int)round_up(i + 1, VW) - 1, i0 + rows);
                        inv[r] = 1.0f / sum;
                        L[i] = mx + logf(sum);
                    }
                    /* O = exp(S - max) V, then each row divided by its sum */
                    head_rows_times(o, q_stride, S, Tp, Vp, T, hd, rows, i0, 1.0f);
                    for (int r = 0; r < rows; r++)
                        for (int d = 0; d < hd; d++) o[(size_t)r * q_stride + d] *= inv[r];
                }
            }
        }
}

/* Per (batch, kv head) and causal block, the group's heads one after the other in the scratch:
 * P = exp(s Q K^T - lse) (recomputed); dP = dO V^T; dV += P^T dO; dS = P * (dP - rowsum(P*dP));
 * dQ = s dS K; dK += s dS^T Q. */
void KERNEL(attention_backward)(float *dq, float *dk, float *dv, const float *dout, const float *lse, const float *q,
                                const float *k, const float *v, int B, int T, int H, int KV, int hd);
void KERNEL(attention_backward)(float *dq, float *dk, float *dv, const float *dout, const float *lse, const float *q,
                                const float *k, const float *v, int B, int T, int H, int KV, int hd) {
    float scale = 1.0f / sqrtf((float)hd);
    int group = H / KV, kv_stride = KV * hd, q_stride = H * hd;
    size_t Tp = round_up(T, NR), tall = (size_t)group * BLOCK, hdp = round_up(hd, NR);
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int g = 0; g < KV; g++) {
            float *P = scratch(SCRATCH_P, tall * Tp), *dP = scratch(SCRATCH_DP, tall * Tp);
            float *dOp = scratch(SCRATCH_DO, tall * hdp), *Qp = scratch(SCRATCH_ROWS, tall * hdp);
            float *Kt = scratch(SCRATCH_KT, Tp * hd), *Vt = scratch(SCRATCH_VT, Tp * hd), *Kp = scratch(SCRATCH_KV, hdp * T);
            const float *K = k + (size_t)b * T * kv_stride + g * hd;
            const float *V = v + (size_t)b * T * kv_stride + g * hd;
            float *dK = dk + (size_t)b * T * kv_stride + g * hd;
            float *dV = dv + (size_t)b * T * kv_stride + g * hd;
            pack_panels(Kt, (size_t)hd * NR, K, hd, T, 1, kv_stride); /* K^T: (hd, T) */
            pack_panels(Vt, (size_t)hd * NR, V, hd, T, 1, kv_stride); /* V^T: (hd, T) */
            pack_panels(Kp, (size_t)T * NR, K, T, hd, kv_stride, 1);  /* K: (T, hd) */
            for (int t = 0; t < T; t++)
                for (int d = 0; d < hd; d++) dK[(size_t)t * kv_stride + d] = dV[(size_t)t * kv_stride + d] = 0;
            for (int i0 = 0; i0 < T; i0 += BLOCK) {
                int rows = min_int(BLOCK, T - i0), cols = i0 + rows, m = group * rows;
                for (int hh = 0; hh < group; hh++) {
                    int h = g * group + hh;
                    size_t at = ((size_t)b * T + i0) * q_stride + h * hd;
                    const float *L = lse + ((size_t)b * H + h) * T + i0;
                    float *Ph = P + (size_t)hh * rows * Tp, *dPh = dP + (size_t)hh * rows * Tp;
                    head_scores(Ph, Tp, q + at, q_stride, hd, Kt, rows, i0, scale);
                    head_scores(dPh, Tp, dout + at, q_stride, hd, Vt, rows, i0, 1.0f);
                    for (int r = 0; r < rows; r++) {
                        int i = i0 + r;
                        float *p = Ph + (size_t)r * Tp, *d = dPh + (size_t)r * Tp;
                        int nv = (int)round_up(i + 1, VW);
                        vfloat dot = v_set1(exp_row(p, i + 1, L[r], d)); /* P, and rowsum(P * dP) */
                        for (int j = 0; j < nv; j += VW) { /* dS, zero past i (where P is zero) */
                            vfloat ds = v_mul(v_load(p + j), v_sub(v_load(d + j), dot));
                            v_store(d + j, j + VW < nv ? ds : v_and(ds, v_load(tail_keep.f + nv - i - 1)));
                        }
                        zero_past(p, nv - 1, cols);
                        zero_past(d, nv - 1, cols);
                    }
                    head_rows_times(dq + at, q_stride, dPh, Tp, Kp, T, hd, rows, i0, scale);
                    /* this head's rows of the block, as rows hh * rows.. of the (m, hd) panels */
                    pack_panels(dOp + (size_t)hh * rows * NR, (size_t)m * NR, dout + at, rows, hd, q_stride, 1);
                    pack_panels(Qp + (size_t)hh * rows * NR, (size_t)m * NR, q + at, rows, hd, q_stride, 1);
                }
                block_keys_accumulate(dV, kv_stride, P, Tp, dOp, hd, m, rows, i0, 1.0f);
                block_keys_accumulate(dK, kv_stride, dP, Tp, Qp, hd, m, rows, i0, scale);
            }
        }
}

/* ---- the entry points: the widest kernels this CPU runs ---- */
#ifndef ATTENTION_VARIANT

typedef void (*AttentionForward)(float *, float *, const float *, const float *, const float *, int, int, int, int, int);
typedef void (*AttentionBackward)(float *, float *, float *, const float *, const float *, const float *, const float *,
                                  const float *, int, int, int, int, int);
typedef struct {
    const char *name;
    AttentionForward forward;
    AttentionBackward backward;
} AttentionWidth;

/* the other compiles of this file (Makefile, ATTENTION_WIDTHS) */
#define DECLARE_WIDTH(suffix)                                                                                          \
    void attention_forward_##suffix(float *, float *, const float *, const float *, const float *, int, int, int, int,  \
                                    int);                                                                              \
    void attention_backward_##suffix(float *, float *, float *, const float *, const float *, const float *,            \
                                     const float *, const float *, int, int, int, int, int);
#define WIDTH(suffix) {#suffix, attention_forward_##suffix, attention_backward_##suffix},
#define BASE_WIDTH {SIMD_NAME, attention_forward_base, attention_backward_base},
#ifdef ATTENTION_HAS_avx512
DECLARE_WIDTH(avx512)
#endif
#ifdef ATTENTION_HAS_avx2
DECLARE_WIDTH(avx2)
#endif
#ifdef ATTENTION_HAS_sse2
DECLARE_WIDTH(sse2)
#endif

static const AttentionWidth g_widths[] = { /* widest first; the build's own width among them */
#ifdef ATTENTION_HAS_avx512
    WIDTH(avx512)
#endif
#if SIMD_LEVEL == 3
    BASE_WIDTH
#endif
#ifdef ATTENTION_HAS_avx2
    WIDTH(avx2)
#endif
#if SIMD_LEVEL == 2
    BASE_WIDTH
#endif
#ifdef ATTENTION_HAS_sse2
    WIDTH(sse2)
#endif
#if SIMD_LEVEL <= 1
    BASE_WIDTH
#endif
};
static const int g_n_widths = sizeof g_widths / sizeof g_widths[0];
static int g_width = -1; /* index into g_widths; chosen at the first call */

/* the build's own width and the narrower ones run wherever the build does */
static int cpu_runs(const char *name) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (!strcmp(name, "avx512")) return __builtin_cpu_supports("avx512f");
    if (!strcmp(name, "avx2")) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return 1;
}

/* name NULL: the widest this CPU runs */
int cpu_attention_use_width(const char *name) {
    for (int i = 0; i < g_n_widths; i++)
        if ((!name || !strcmp(name, g_widths[i].name)) && cpu_runs(g_widths[i].name)) {
            g_width = i;
            return 0;
        }
    return -1;
}

const char *cpu_attention_width(void) {
    if (g_width < 0) cpu_attention_use_width(NULL);
    return g_widths[g_width].name;
}

void cpu_attention_forward(float *out, float *lse, const float *q, const float *k, const float *v, int B, int T, int H,
                           int KV, int hd) {
    if (g_width < 0) cpu_attention_use_width(NULL);
    g_widths[g_width].forward(out, lse, q, k, v, B, T, H, KV, hd);
}

void cpu_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *lse, const float *q,
                            const float *k, const float *v, int B, int T, int H, int KV, int hd) {
    if (g_width < 0) cpu_attention_use_width(NULL);
    g_widths[g_width].backward(dq, dk, dv, dout, lse, q, k, v, B, T, H, KV, hd);
}

#endif
