/* The bf16 GEMM (src/cpu/gemm_bf16.c) against a double-precision product of the same
 * bf16-rounded operands: every shape class (ragged M, N, odd K, several K blocks), both
 * transposes, beta 0 and 1, each element within 1e-5 of sum |a||b| (fp32 accumulation). */
#include <stdlib.h>
#include <string.h>

#include "cpu/gemm_bf16.h"
#include "test.h"
#include "util.h"

static double check_gemm(Rng *rng, int tA, int tB, int M, int N, int K, float beta) {
    int lda = tA ? M + 3 : K + 1, ldb = tB ? K + 2 : N + 5, ldc = N + 4; /* padded strides */
    size_t na = (size_t)(tA ? K : M) * lda, nb = (size_t)(tB ? N : K) * ldb, nc = (size_t)M * ldc;
    float *A = xmalloc(sizeof(float) * na), *B = xmalloc(sizeof(float) * nb), *C = xmalloc(sizeof(float) * nc);
    float *C0 = xmalloc(sizeof(float) * nc);
    for (size_t i = 0; i < na; i++) A[i] = rng_normal(rng);
    for (size_t i = 0; i < nb; i++) B[i] = rng_normal(rng);
    for (size_t i = 0; i < nc; i++) C0[i] = C[i] = beta == 0.0f ? NAN : rng_normal(rng); /* beta 0 must not read C */
    gemm_bf16(tA, tB, M, N, K, A, lda, B, ldb, beta, C, ldc);
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double ref = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double a = gemm_bf16_round(tA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k]);
                double b = gemm_bf16_round(tB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j]);
                ref += a * b, mag += fabs(a * b);
            }
            if (beta != 0.0f) ref += beta * C0[(size_t)i * ldc + j], mag += fabs(C0[(size_t)i * ldc + j]);
            double err = fabs(C[(size_t)i * ldc + j] - ref) / fmax(mag, 1e-30);
            if (!(err <= worst)) worst = isnan(err) ? INFINITY : err;
        }
    /* the padding columns of C stay untouched */
    for (int i = 0; i < M; i++)
        for (int j = N; j < ldc; j++)
            if (memcmp(&C[(size_t)i * ldc + j], &C0[(size_t)i * ldc + j], sizeof(float))) worst = INFINITY;
    free(A), free(B), free(C), free(C0);
    return worst;
}

TEST(gemm_bf16_matches_rounded_reference) {
    if (!gemm_bf16_supported()) {
        test_skip("this CPU has no AVX-512 BF16");
        return;
    }
    Rng rng;
    rng_seed(&rng, 7);
    const int shapes[][3] = {{1, 1, 1}, {6, 32, 2}, {7, 33, 3}, {5, 17, 9}, {13, 70, 257}, {80, 40, 600}, {150, 520, 64}, {3, 600, 515}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int t = 0; t < 4; t++)
            for (int b = 0; b < 2; b++) {
                int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                double err = check_gemm(&rng, t & 1, t >> 1, M, N, K, (float)b);
                CHECK_MSG(err <= 1e-5, "M %d N %d K %d transA %d transB %d beta %d: worst error %.3g of sum |a b|", M, N, K,
                          t & 1, t >> 1, b, err);
            }
}

TEST(gemm_bf16_rounds_to_nearest_even) {
    CHECK(gemm_bf16_round(1.0f) == 1.0f);
    CHECK(gemm_bf16_round(1.0f + 1.0f / 256) == 1.0f);              /* halfway: to even (1.0) */
    CHECK(gemm_bf16_round(1.0f + 3.0f / 256) == 1.0f + 4.0f / 256); /* halfway: to even (1 + 2/128) */
    CHECK(gemm_bf16_round(1.0f + 1.5f / 256) == 1.0f + 2.0f / 256); /* above halfway: up */
    CHECK(isnan(gemm_bf16_round(NAN)) && isinf(gemm_bf16_round(INFINITY)));
    CHECK(gemm_bf16_round(1e-39f) == 0.0f && signbit(gemm_bf16_round(-1e-39f))); /* denormals: signed zero, as the vector path */
}
