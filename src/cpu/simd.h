/* simd.h - the CPU kernels' vector width, and the vectorizable exp, in one place.
 *
 * vfloat is one machine vector of VW floats: 16 with AVX-512, 8 with AVX2 + FMA, 4 with SSE2
 * (any x86-64, the portable build), and a plain float (VW = 1) elsewhere, so a kernel written
 * with these macros is one source for every x86-64 level and still builds on any C11 compiler. -march decides which one a build gets.
 * The loops that the compiler vectorizes by itself (elementwise ops, `omp simd`) need none of
 * this; it is for register-tiled kernels that must keep accumulators in named registers. */
#ifndef UPCYCLE_CPU_SIMD_H
#define UPCYCLE_CPU_SIMD_H

#include <stdint.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#define VW 16
#define SIMD_NAME "avx512"
#define SIMD_LEVEL 3 /* widest 3, scalar 0 */
typedef __m512 vfloat;
#define v_zero() _mm512_setzero_ps()
#define v_load(p) _mm512_loadu_ps(p)
#define v_store(p, x) _mm512_storeu_ps(p, x)
#define v_set1(s) _mm512_set1_ps(s)
#define v_fma(a, b, c) _mm512_fmadd_ps(a, b, c) /* a * b + c, one rounding */
#define v_mul(a, b) _mm512_mul_ps(a, b)
#define v_add(a, b) _mm512_add_ps(a, b)
#define v_sub(a, b) _mm512_sub_ps(a, b)
#define v_min(a, b) _mm512_min_ps(a, b) /* b when either is NaN */
#define v_max(a, b) _mm512_max_ps(a, b)
#define v_and(a, b) _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)))
#define v_or(a, b) _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)))
#define v_hsum(x) _mm512_reduce_add_ps(x)
#define v_hmax(x) _mm512_reduce_max_ps(x)
/* 2^n for integral n in [-126, 127], as the float's exponent bits */
#define v_pow2i(n) _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23))
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define VW 8
#define SIMD_NAME "avx2"
#define SIMD_LEVEL 2
typedef __m256 vfloat;
#define v_zero() _mm256_setzero_ps()
#define v_load(p) _mm256_loadu_ps(p)
#define v_store(p, x) _mm256_storeu_ps(p, x)
#define v_set1(s) _mm256_set1_ps(s)
#define v_fma(a, b, c) _mm256_fmadd_ps(a, b, c)
#define v_mul(a, b) _mm256_mul_ps(a, b)
#define v_add(a, b) _mm256_add_ps(a, b)
#define v_sub(a, b) _mm256_sub_ps(a, b)
#define v_min(a, b) _mm256_min_ps(a, b)
#define v_max(a, b) _mm256_max_ps(a, b)
#define v_and(a, b) _mm256_and_ps(a, b) /* bitwise */
#define v_or(a, b) _mm256_or_ps(a, b)
static inline float v_hsum(__m256 x) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
static inline float v_hmax(__m256 x) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}
#define v_pow2i(n) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23))
#elif defined(__SSE2__) /* every x86-64: the portable build (make PORTABLE=1) */
#include <emmintrin.h>
#define VW 4
#define SIMD_NAME "sse2"
#define SIMD_LEVEL 1
typedef __m128 vfloat;
#define v_zero() _mm_setzero_ps()
#define v_load(p) _mm_loadu_ps(p)
#define v_store(p, x) _mm_storeu_ps(p, x)
#define v_set1(s) _mm_set1_ps(s)
#define v_fma(a, b, c) _mm_add_ps(_mm_mul_ps(a, b), c) /* no FMA: two roundings */
#define v_mul(a, b) _mm_mul_ps(a, b)
#define v_add(a, b) _mm_add_ps(a, b)
#define v_sub(a, b) _mm_sub_ps(a, b)
#define v_min(a, b) _mm_min_ps(a, b)
#define v_max(a, b) _mm_max_ps(a, b)
#define v_and(a, b) _mm_and_ps(a, b)
#define v_or(a, b) _mm_or_ps(a, b)
static inline float v_hsum(__m128 s) {
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}
static inline float v_hmax(__m128 s) {
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps(s, s, 1)));
}
#define v_pow2i(n) _mm_castsi128_ps(_mm_slli_epi32(_mm_add_epi32(_mm_cvtps_epi32(n), _mm_set1_epi32(127)), 23))
#else
#define VW 1
#define SIMD_NAME "scalar"
#define SIMD_LEVEL 0
typedef float vfloat;
#define v_zero() 0.0f
#define v_load(p) (*(p))
#define v_store(p, x) (*(p) = (x))
#define v_set1(s) (s)
#define v_fma(a, b, c) ((a) * (b) + (c))
#define v_mul(a, b) ((a) * (b))
#define v_add(a, b) ((a) + (b))
#define v_sub(a, b) ((a) - (b))
#define v_min(a, b) ((a) < (b) ? (a) : (b))
#define v_max(a, b) ((a) > (b) ? (a) : (b))
#define v_hsum(x) (x)
#define v_hmax(x) (x)
static inline float v_bits(float a, float b, int or) {
    uint32_t x, y;
    __builtin_memcpy(&x, &a, 4);
    __builtin_memcpy(&y, &b, 4);
    x = or ? x | y : x & y;
    __builtin_memcpy(&a, &x, 4);
    return a;
}
#define v_and(a, b) v_bits(a, b, 0)
#define v_or(a, b) v_bits(a, b, 1)
#endif

/* a * b + c: one rounding where the machine has FMA (a polynomial step is then one
 * instruction), two elsewhere */
#if defined(__FMA__)
#define fmadd(a, b, c) __builtin_fmaf(a, b, c)
#else
#define fmadd(a, b, c) ((a) * (b) + (c))
#endif

/* ---- vectorizable exp ----
 * exp(x) = 2^n * e^r with n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2], e^r by the
 * Cephes expf polynomial (relative error ~2e-7, like libm's expf). Branch-free, so the softmax,
 * cross-entropy and SiLU loops vectorize (`omp simd`: 16 lanes with AVX-512) instead of
 * calling libm once per element, which was ~30% of a small model's step. Arguments are clamped
 * to [-87.3, 88.7] (the normal float range); NaN passes through. */
static inline float vexpf(float x) {
    float c = x < -87.3f ? -87.3f : x > 88.7f ? 88.7f : x; /* NaN stays NaN */
    /* round to nearest by adding and subtracting 1.5 * 2^23 (|c / ln 2| < 128; libm's floorf is a
     * call that stops the loop from vectorizing) */
    float n = fmadd(c != c ? 0.0f : c, 1.44269504088896341f, 12582912.0f) - 12582912.0f;
    float r = fmadd(n, 2.12194440e-4f, fmadd(n, -0.693359375f, c));
    float p = 1.9875691500e-4f;
    p = fmadd(p, r, 1.3981999507e-3f);
    p = fmadd(p, r, 8.3334519073e-3f);
    p = fmadd(p, r, 4.1665795894e-2f);
    p = fmadd(p, r, 1.6666665459e-1f);
    p = fmadd(p, r, 5.0000001201e-1f);
    p = fmadd(p, r * r, r + 1.0f);
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    __builtin_memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* vexpf on a whole vector: the same steps, so the same values (NaN passes through: the clamps
 * return their second operand when either is NaN) */
#if VW > 1
static inline vfloat v_exp(vfloat x) {
    vfloat c = v_max(v_set1(-87.3f), v_min(v_set1(88.7f), x));
    vfloat n = v_sub(v_fma(c, v_set1(1.44269504088896341f), v_set1(12582912.0f)), v_set1(12582912.0f));
    vfloat r = v_fma(n, v_set1(2.12194440e-4f), v_fma(n, v_set1(-0.693359375f), c));
    vfloat p = v_set1(1.9875691500e-4f);
    p = v_fma(p, r, v_set1(1.3981999507e-3f));
    p = v_fma(p, r, v_set1(8.3334519073e-3f));
    p = v_fma(p, r, v_set1(4.1665795894e-2f));
    p = v_fma(p, r, v_set1(1.6666665459e-1f));
    p = v_fma(p, r, v_set1(5.0000001201e-1f));
    p = v_fma(p, v_mul(r, r), v_add(r, v_set1(1.0f)));
    return v_mul(p, v_pow2i(n));
}
#else
#define v_exp(x) vexpf(x)
#endif

#endif
