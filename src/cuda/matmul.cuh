/* matmul.cuh - dense linear layers through cuBLAS (row-major wrappers).
 *
 * fp32: CUBLAS_COMPUTE_32F (no TF32), for parity with the CPU. bf16: CUBLAS_COMPUTE_32F_FAST_16BF,
 * cuBLAS rounds the fp32 operands to bf16 and runs the tensor cores, accumulating and storing
 * fp32 (the master weights and activations stay fp32). */
#pragma once

#include "common.cuh"

/* Row-major C (M,N) = op(A) op(B) + beta C, op(A) (M,K), op(B) (K,N); ta/tb: A/B stored
 * transposed (A as (K,M), B as (N,K)). A row-major X is the column-major X^T, so this is the
 * column-major C^T = op(B)^T op(A)^T. */
static void rm_gemm(bool ta, bool tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta,
                    float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    const float alpha = 1.0f;
    cublasComputeType_t compute = g_bf16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F;
    CUBLAS_CHECK(cublasGemmEx(g_cublas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B,
                              CUDA_R_32F, ldb, A, CUDA_R_32F, lda, &beta, C, CUDA_R_32F, ldc, compute,
                              CUBLAS_GEMM_DEFAULT));
}

static void cuda_matmul_forward(float *out, const float *inp, const float *weight, int N, int n_in, int n_out) {
    if (N == 0) return;
    rm_gemm(false, true, N, n_out, n_in, inp, n_in, weight, n_in, 0.0f, out, n_out);
}

static void cuda_matmul_backward(float *dinp, float *dweight, const float *dout, const float *inp, const float *weight,
                                 int N, int n_in, int n_out) {
    if (N == 0) return;
    if (dinp) rm_gemm(false, false, N, n_in, n_out, dout, n_out, weight, n_in, 1.0f, dinp, n_in);
    if (dweight) rm_gemm(true, false, n_out, n_in, N, dout, n_out, inp, n_in, 1.0f, dweight, n_in);
}
