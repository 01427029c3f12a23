/* gemm_bf16.h - the CPU backend's bf16 GEMM (AVX-512 BF16): row-major
 *   C (M x N, ldc) = beta * C + op(A) op(B),   op(A) M x K, op(B) K x N,
 * with op(X) = X or X^T (transA/transB), operands rounded to bf16 (nearest even), products
 * accumulated in fp32. beta == 0 never reads C. Call only where gemm_bf16_supported(). */
#ifndef UPCYCLE_GEMM_BF16_H
#define UPCYCLE_GEMM_BF16_H

int gemm_bf16_supported(void);
void gemm_bf16(int transA, int transB, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta,
               float *C, int ldc);
/* x rounded to the nearest bf16 (tests, references) */
float gemm_bf16_round(float x);

#endif
