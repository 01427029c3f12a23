/* gemm_bf16.c - C = beta C + op(A) op(B) with bf16 operands and fp32 accumulation (AVX-512 BF16).
 *
 * The CPU backend's mixed-precision path: Debian's OpenBLAS has no sbgemm, so this is our own.
 * Operands stay fp32 in memory (master weights, activations); they are rounded to bf16 (nearest
 * even) while being packed, as cuBLAS's fast-bf16 compute mode does on the GPU.
 *
 * Blocking (Goto): for each NC x KC block of op(B), pack it into panels of 32 columns whose
 * k-pairs are interleaved, so that one 512-bit load holds (b[2p][j], b[2p+1][j]) for 16 j; for
 * each MC x KC block of op(A), pack panels of 6 rows as 32-bit (a[i][2p], a[i][2p+1]) pairs; a
 * 6 x 32 micro-kernel keeps 12 accumulators in registers and issues VDPBF16PS (two
 * multiply-adds per lane). Odd K and ragged edges are zero-padded in the packs. */
#include "cpu/gemm_bf16.h"

#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"


#define MR 6
#define NR 32
#define KC 256 /* multiple of 2 */
#define MC 72  /* multiple of MR */
#define NC 512 /* multiple of NR */

int gemm_bf16_supported(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

/* fp32 -> bf16, round to nearest even; NaN stays NaN; denormals become (signed) zero, as
 * VCVTNE2PS2BF16 makes them in the vector packing */
static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float gemm_bf16_round(float f) {
    uint32_t u = (uint32_t)to_bf16(f) << 16;
    float r;
    memcpy(&r, &u, sizeof r);
    return r;
}

/* per-thread pack buffers (grown, kept for the next call) */
static _Thread_local uint16_t *tl_bpack, *tl_apack;
static _Thread_local size_t tl_bcap, tl_acap;

static uint16_t *buffer(uint16_t **buf, size_t *cap, size_t n) {
    if (n > *cap) {
        free(*buf);
        *buf = aligned_alloc64(n * sizeof(uint16_t));
        *cap = n;
    }
    return *buf;
}

static inline __mmask16 first_lanes(int count) { return count >= 16 ? 0xffff : count > 0 ? (__mmask16)((1u << count) - 1) : 0; }

/* Packs rows [i0, i0+n) x columns [k0, k0+kc) of op(X) (op(X)[i][k] = X[i*ld+k], or X[k*ld+i]
 * with trans) into panels of `width` rows: panel q, k-pair p holds `width` pairs
 * (x[i][k0+2p], x[i][k0+2p+1]), zero beyond the edges. op(A) packs as itself with width MR
 * (one 32-bit broadcast per row); op(B) packs as op(B)^T (row j = column j of op(B), so trans
 * is !transB) with width NR (one 512-bit load per 16 columns).
 * 16 lanes at a time (VCVTNE2PS2BF16 rounds 32 floats at once): without trans
 * a row's k run is contiguous: 32 k (16 pairs) are loaded, rounded and scattered to their pair
 * slots. With trans, 16 consecutive rows of one k-pair are loaded from the two k rows, rounded
 * and interleaved into pairs; stored whole when the panel width is a multiple of 16, else
 * scattered. Padding (rows past n, the odd k past kc) is written as zeros. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void pack(uint16_t *dst, const float *X, int ld, int trans, int i0,
                                                                           int n, int k0, int kc, int width) {
    int pairs = (kc + 1) / 2, panels = (n + width - 1) / width;
    uint32_t *out = (uint32_t *)dst;
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    if (!trans) {
        const __m512i stride = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(width)); /* pair p -> p * width */
        for (int i = 0; i < panels * width; i++) {
            uint32_t *slot = out + (size_t)(i / width) * pairs * width + i % width;
            const float *row = X + (size_t)(i0 + (i < n ? i : 0)) * ld + k0;
            for (int p = 0; p < pairs; p += 16) {
                int left = i < n ? kc - 2 * p : 0;
                __m512 lo = _mm512_maskz_loadu_ps(first_lanes(left), row + 2 * p);
                __m512 hi = _mm512_maskz_loadu_ps(first_lanes(left - 16), row + 2 * p + 16);
                __m512i v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
                _mm512_mask_i32scatter_epi32(slot + (size_t)p * width, first_lanes(pairs - p), stride, v, 4);
            }
        }
        return;
    }
    /* 16-bit lanes: x0 bf16 in 0..15, x1 bf16 in 16..31 -> (x0[t], x1[t]) pairs */
    static const uint16_t order[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                       8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i interleave = _mm512_loadu_si512(order);
    for (int ib = 0; ib < panels * width; ib += 16) {
        __mmask16 valid = first_lanes(n - ib), inside = first_lanes(panels * width - ib);
        /* where lane t (row ib + t) of pair 0 goes: panel (row / width), slot (row % width) */
        int32_t slots[16];
        for (int t = 0; t < 16; t++) slots[t] = (ib + t) / width * pairs * width + (ib + t) % width;
        __m512i base = _mm512_loadu_si512(slots);
        int contiguous = width % 16 == 0; /* 16 rows in one panel, consecutive slots */
        for (int p = 0; p < pairs; p++) {
            const float *r0 = X + (size_t)(k0 + 2 * p) * ld + i0 + ib;
            __m512 x0 = _mm512_maskz_loadu_ps(valid, r0);
            __m512 x1 = _mm512_maskz_loadu_ps(2 * p + 1 < kc ? valid : 0, r0 + ld);
            __m512i v = _mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
            if (contiguous)
                _mm512_storeu_si512(out + (size_t)(ib / width) * pairs * width + (size_t)p * width + ib % width, v);
            else
                _mm512_mask_i32scatter_epi32(out + (size_t)p * width, inside, base, v, 4);
        }
    }
}

__attribute__((target("avx512f,avx512bf16"))) static void kernel(int pairs, const uint16_t *a, const uint16_t *b, float *c,
                                                                 int ldc, int mr, int nr, float beta) {
    __m512 acc[MR][2];
    for (int r = 0; r < MR; r++) acc[r][0] = _mm512_setzero_ps(), acc[r][1] = _mm512_setzero_ps();
    const uint32_t *a32 = (const uint32_t *)a;
    for (int p = 0; p < pairs; p++) {
        __m512bh b0 = (__m512bh)_mm512_load_si512((const void *)(b + (size_t)p * 2 * NR));
        __m512bh b1 = (__m512bh)_mm512_load_si512((const void *)(b + (size_t)p * 2 * NR + NR));
        for (int r = 0; r < MR; r++) {
            __m512bh av = (__m512bh)_mm512_set1_epi32((int)a32[(size_t)p * MR + r]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
        }
    }
    __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? 0xffff : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
    __m512 vb = _mm512_set1_ps(beta);
    for (int r = 0; r < mr; r++) {
        float *row = c + (size_t)r * ldc;
        if (beta == 0.0f) { /* C is not read: it may hold anything */
            _mm512_mask_storeu_ps(row, m0, acc[r][0]);
            _mm512_mask_storeu_ps(row + 16, m1, acc[r][1]);
        } else {
            __m512 c0 = _mm512_maskz_loadu_ps(m0, row), c1 = _mm512_maskz_loadu_ps(m1, row + 16);
            _mm512_mask_storeu_ps(row, m0, _mm512_fmadd_ps(vb, c0, acc[r][0]));
            _mm512_mask_storeu_ps(row + 16, m1, _mm512_fmadd_ps(vb, c1, acc[r][1]));
        }
    }
}

void gemm_bf16(int transA, int transB, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta,
               float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* C = beta C */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    /* split over threads when called outside a parallel region (the grouped expert GEMMs are
     * already spread over the experts) and the product is worth it */
    int parallel = !omp_in_parallel() && (double)M * N * K > 4e6 && M > MC;
    for (int j0 = 0; j0 < N; j0 += NC) {
        int nc = N - j0 < NC ? N - j0 : NC;
        for (int k0 = 0; k0 < K; k0 += KC) {
            int kc = K - k0 < KC ? K - k0 : KC, pairs = (kc + 1) / 2;
            float b_eff = k0 == 0 ? beta : 1.0f;
            uint16_t *bp = buffer(&tl_bpack, &tl_bcap, (size_t)((nc + NR - 1) / NR) * pairs * 2 * NR);
            pack(bp, B, ldb, !transB, j0, nc, k0, kc, NR);
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
            for (int i0 = 0; i0 < M; i0 += MC) {
                int mc = M - i0 < MC ? M - i0 : MC;
                uint16_t *ap = buffer(&tl_apack, &tl_acap, (size_t)((mc + MR - 1) / MR) * pairs * 2 * MR);
                pack(ap, A, lda, transA, i0, mc, k0, kc, MR);
                for (int jq = 0; jq * NR < nc; jq++)
                    for (int iq = 0; iq * MR < mc; iq++) {
                        int mr = mc - iq * MR < MR ? mc - iq * MR : MR, nr = nc - jq * NR < NR ? nc - jq * NR : NR;
                        kernel(pairs, ap + (size_t)iq * pairs * 2 * MR, bp + (size_t)jq * pairs * 2 * NR,
                               C + (size_t)(i0 + iq * MR) * ldc + j0 + jq * NR, ldc, mr, nr, b_eff);
                    }
            }
        }
    }
}
