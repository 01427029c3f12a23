/* experts.cuh - grouped expert SwiGLU GEMMs that read the expert offsets on the device.
 *
 * cuBLAS's grouped GEMM takes the per-group sizes on the host, which would need a device-to-
 * host copy of the offsets inside every MoE layer. These kernels read offsets[] instead:
 *   VAR_M  (x W^T, dy W): the rows [offsets[e], offsets[e+1]) of A and C form group e and
 *          B is expert e's weight. A persistent grid walks the tiles of all groups; each block
 *          computes the per-group tile counts' prefix sums from offsets in shared memory.
 *   VAR_K  (weight gradients dy^T h, dg^T x): group e reduces over its rows; grid (tiles, E).
 * Tiles are 64x64: fp32 uses CUDA cores (256 threads, 4x4 outputs each, BK 16); bf16 uses
 * WMMA tensor cores (bf16 operands rounded in shared memory, fp32 accumulation, BK 32).
 * UPCYCLE_EXPERT_GEMM=cublas switches to one cuBLAS GEMM per expert (the host reads the
 * offsets: one synchronization per call), kept for benchmarking. */
#pragma once

#include <mma.h>

#include "common.cuh"
#include "elementwise.cuh"
#include "matmul.cuh"

#define GG_TM 64
#define GG_TN 64
#define GG_THREADS 256
#define GG_BK32 16 /* fp32 k-step */
#define GG_BK16 32 /* bf16 k-step */

struct GroupedGemm {
    const float *A, *B;
    float *C;
    int lda, ldb, ldc;
    size_t strideA, strideB, strideC; /* per-expert strides of the operands that are not row groups */
    int M, N, K;                      /* the fixed dimensions (VAR_M ignores M, VAR_K ignores K) */
    float beta;                       /* 0 (overwrite: C is not read) or 1 (accumulate) */
};

struct SmemF32 {
    float As[GG_BK32][GG_TM + 4];
    float Bs[GG_BK32][GG_TN];
};

struct __align__(128) SmemBF16 {
    __nv_bfloat16 As[GG_TM][GG_BK16 + 8];
    __nv_bfloat16 Bs[GG_BK16][GG_TN + 8];
    float Cs[GG_TM][GG_TN + 4];
};

union __align__(128) GemmSmem {
    SmemF32 f;
    SmemBF16 b;
};

/* element (m, k) of op(A) and (k, n) of op(B), row-major storage */
template <bool TA>
__device__ __forceinline__ float load_a(const float *A, int lda, int M, int K, int m, int k) {
    if (m >= M || k >= K) return 0.0f;
    return TA ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k];
}

template <bool TB>
__device__ __forceinline__ float load_b(const float *B, int ldb, int N, int K, int k, int n) {
    if (n >= N || k >= K) return 0.0f;
    return TB ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n];
}

__device__ __forceinline__ void store_c(float *C, int ldc, int M, int N, int m, int n, float v, float beta) {
    if (m >= M || n >= N) return;
    float *c = C + (size_t)m * ldc + n;
    *c = beta == 0.0f ? v : v + beta * *c;
}

/* C[m0:m0+64, n0:n0+64] = op(A) op(B) (+ beta C) over K, fp32 on CUDA cores */
template <bool TA, bool TB>
__device__ void tile_f32(const float *A, int lda, const float *B, int ldb, float *C, int ldc, int M, int N, int K, int m0,
                         int n0, float beta, SmemF32 &sm) {
    const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += GG_BK32) {
#pragma unroll
        for (int i = 0; i < GG_TM * GG_BK32 / GG_THREADS; i++) {
            int idx = tid + i * GG_THREADS, m, k;
            if (TA) m = idx % GG_TM, k = idx / GG_TM; /* consecutive threads: consecutive m in memory */
            else k = idx % GG_BK32, m = idx / GG_BK32;
            sm.As[k][m] = load_a<TA>(A, lda, M, K, m0 + m, k0 + k);
        }
#pragma unroll
        for (int i = 0; i < GG_TN * GG_BK32 / GG_THREADS; i++) {
            int idx = tid + i * GG_THREADS, n, k;
            if (TB) k = idx % GG_BK32, n = idx / GG_BK32;
            else n = idx % GG_TN, k = idx / GG_TN;
            sm.Bs[k][n] = load_b<TB>(B, ldb, N, K, k0 + k, n0 + n);
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < GG_BK32; k++) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = sm.As[k][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; j++) b[j] = sm.Bs[k][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) store_c(C, ldc, M, N, m0 + ty + 16 * i, n0 + tx + 16 * j, acc[i][j], beta);
}

/* the same tile on tensor cores: 8 warps, warp w computes rows 16 (w/2) and columns 32 (w%2) */
template <bool TA, bool TB>
__device__ void tile_bf16(const float *A, int lda, const float *B, int ldb, float *C, int ldc, int M, int N, int K, int m0,
                          int n0, float beta, SmemBF16 &sm) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using namespace nvcuda;
    const int tid = threadIdx.x, warp = tid / 32, fr = warp / 2, fc = (warp % 2) * 2;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
    wmma::fill_fragment(acc[0], 0.0f);
    wmma::fill_fragment(acc[1], 0.0f);
    for (int k0 = 0; k0 < K; k0 += GG_BK16) {
#pragma unroll
        for (int i = 0; i < GG_TM * GG_BK16 / GG_THREADS; i++) {
            int idx = tid + i * GG_THREADS, m, k;
            if (TA) m = idx % GG_TM, k = idx / GG_TM;
            else k = idx % GG_BK16, m = idx / GG_BK16;
            sm.As[m][k] = __float2bfloat16(load_a<TA>(A, lda, M, K, m0 + m, k0 + k));
        }
#pragma unroll
        for (int i = 0; i < GG_TN * GG_BK16 / GG_THREADS; i++) {
            int idx = tid + i * GG_THREADS, n, k;
            if (TB) k = idx % GG_BK16, n = idx / GG_BK16;
            else n = idx % GG_TN, k = idx / GG_TN;
            sm.Bs[k][n] = __float2bfloat16(load_b<TB>(B, ldb, N, K, k0 + k, n0 + n));
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GG_BK16; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
            wmma::load_matrix_sync(a, &sm.As[fr * 16][kk], GG_BK16 + 8);
#pragma unroll
            for (int c = 0; c < 2; c++) {
                wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
                wmma::load_matrix_sync(b, &sm.Bs[kk][(fc + c) * 16], GG_TN + 8);
                wmma::mma_sync(acc[c], a, b, acc[c]);
            }
        }
        __syncthreads();
    }
    wmma::store_matrix_sync(&sm.Cs[fr * 16][fc * 16], acc[0], GG_TN + 4, wmma::mem_row_major);
    wmma::store_matrix_sync(&sm.Cs[fr * 16][(fc + 1) * 16], acc[1], GG_TN + 4, wmma::mem_row_major);
    __syncthreads();
    for (int idx = tid; idx < GG_TM * GG_TN; idx += GG_THREADS) {
        int m = idx / GG_TN, n = idx % GG_TN;
        store_c(C, ldc, M, N, m0 + m, n0 + n, sm.Cs[m][n], beta);
    }
    __syncthreads();
#else
    __trap(); /* never launched: the host only picks bf16 tiles on sm_80+ */
#endif
}

template <bool TA, bool TB, bool BF16>
__device__ __forceinline__ void tile(const float *A, int lda, const float *B, int ldb, float *C, int ldc, int M, int N,
                                     int K, int m0, int n0, float beta, GemmSmem &sm) {
    if (BF16) tile_bf16<TA, TB>(A, lda, B, ldb, C, ldc, M, N, K, m0, n0, beta, sm.b);
    else tile_f32<TA, TB>(A, lda, B, ldb, C, ldc, M, N, K, m0, n0, beta, sm.f);
}

/* VAR_M: persistent blocks over all tiles of all groups. Dynamic shared memory: E + 1 tile
 * starts and GG_THREADS ints of scan scratch. */
template <bool TB, bool BF16>
__global__ void __launch_bounds__(GG_THREADS) grouped_gemm_var_m_kernel(GroupedGemm p, const int32_t *offsets, int E) {
    __shared__ GemmSmem sm;
    extern __shared__ int dyn[];
    int *tile_start = dyn, *scan_part = dyn + E + 1;
    const int tiles_n = (p.N + GG_TN - 1) / GG_TN;
    block_exclusive_scan(
        E, [&](int e) { return (offsets[e + 1] - offsets[e] + GG_TM - 1) / GG_TM * tiles_n; }, tile_start, scan_part);
    const int total = tile_start[E];
    for (int t = blockIdx.x; t < total; t += gridDim.x) {
        int lo = 0, hi = E; /* tile_start[lo] <= t < tile_start[hi] */
        while (hi - lo > 1) {
            int mid = (lo + hi) / 2;
            if (tile_start[mid] <= t) lo = mid;
            else hi = mid;
        }
        const int e = lo, local = t - tile_start[e], row0 = offsets[e], rows = offsets[e + 1] - row0;
        tile<false, TB, BF16>(p.A + (size_t)row0 * p.lda, p.lda, p.B + (size_t)e * p.strideB, p.ldb,
                              p.C + (size_t)row0 * p.ldc, p.ldc, rows, p.N, p.K, (local / tiles_n) * GG_TM,
                              (local % tiles_n) * GG_TN, p.beta, sm);
    }
}

/* VAR_K: C_e (M,N) (+)= A_e^T B_e over the rows of group e; grid (tiles_n, tiles_m, E) */
template <bool BF16>
__global__ void __launch_bounds__(GG_THREADS) grouped_gemm_var_k_kernel(GroupedGemm p, const int32_t *offsets) {
    __shared__ GemmSmem sm;
    const int e = blockIdx.z, row0 = offsets[e], rows = offsets[e + 1] - row0;
    if (rows == 0) return; /* as the CPU backend: an expert without tokens leaves its gradient alone */
    tile<true, false, BF16>(p.A + (size_t)row0 * p.lda, p.lda, p.B + (size_t)row0 * p.ldb, p.ldb,
                            p.C + (size_t)e * p.strideC, p.ldc, p.M, p.N, rows, blockIdx.y * GG_TM, blockIdx.x * GG_TN,
                            p.beta, sm);
}

static int g_device_sm80; /* set at init: tensor-core bf16 tiles available */

template <bool TB, bool BF16>
static void launch_var_m(const GroupedGemm &p, const int32_t *offsets, int E) {
    size_t dyn = sizeof(int) * (size_t)(E + 1 + GG_THREADS);
    allow_smem(grouped_gemm_var_m_kernel<TB, BF16>, dyn + sizeof(GemmSmem));
    grouped_gemm_var_m_kernel<TB, BF16><<<(unsigned)(g_sm_count * 4), GG_THREADS, dyn, g_stream>>>(p, offsets, E);
    KERNEL_CHECK();
}

/* C rows of group e = A rows of group e (N... K) times B_e (TB: B_e stored (N,K), else (K,N)) */
static void grouped_var_m(bool tb, const GroupedGemm &p, const int32_t *offsets, int E) {
    bool bf16 = g_bf16 && g_device_sm80;
    if (tb) bf16 ? launch_var_m<true, true>(p, offsets, E) : launch_var_m<true, false>(p, offsets, E);
    else bf16 ? launch_var_m<false, true>(p, offsets, E) : launch_var_m<false, false>(p, offsets, E);
}

static void grouped_var_k(const GroupedGemm &p, const int32_t *offsets, int E) {
    dim3 grid(cdiv(p.N, GG_TN), cdiv(p.M, GG_TM), (unsigned)E);
    if (g_bf16 && g_device_sm80) grouped_gemm_var_k_kernel<true><<<grid, GG_THREADS, 0, g_stream>>>(p, offsets);
    else grouped_gemm_var_k_kernel<false><<<grid, GG_THREADS, 0, g_stream>>>(p, offsets);
    KERNEL_CHECK();
}

static GroupedGemm gg(const float *A, int lda, size_t strideA, const float *B, int ldb, size_t strideB, float *C, int ldc,
                      size_t strideC, int M, int N, int K, float beta) {
    GroupedGemm p;
    p.A = A, p.B = B, p.C = C, p.lda = lda, p.ldb = ldb, p.ldc = ldc;
    p.strideA = strideA, p.strideB = strideB, p.strideC = strideC;
    p.M = M, p.N = N, p.K = K, p.beta = beta;
    return p;
}

/* ---- the per-expert cuBLAS path (UPCYCLE_EXPERT_GEMM=cublas) ---- */

static int32_t *host_offsets(const int32_t *offsets, int E) {
    int32_t *h = (int32_t *)xmalloc(sizeof(int32_t) * (E + 1));
    cuda_download(h, offsets, sizeof(int32_t) * (E + 1));
    return h;
}

static void experts_forward_cublas(float *yg, float *g, float *u, float *h, const float *xg, const int32_t *offsets,
                                   const float *w_gate, const float *w_up, const float *w_down, int E, int C, int F) {
    int32_t *off = host_offsets(offsets, E);
    const size_t w = (size_t)F * C;
    for (int e = 0; e < E; e++) {
        int row = off[e], n = off[e + 1] - off[e];
        if (n == 0) continue;
        rm_gemm(false, true, n, F, C, xg + (size_t)row * C, C, w_gate + e * w, C, 0.0f, g + (size_t)row * F, F);
        rm_gemm(false, true, n, F, C, xg + (size_t)row * C, C, w_up + e * w, C, 0.0f, u + (size_t)row * F, F);
    }
    size_t n = (size_t)off[E] * F;
    if (n) {
        swiglu_forward_kernel<<<grid_for(n), 256, 0, g_stream>>>(h, g, u, n, NULL, 0);
        KERNEL_CHECK();
    }
    for (int e = 0; e < E; e++) {
        int row = off[e], n_e = off[e + 1] - off[e];
        if (n_e == 0) continue;
        rm_gemm(false, true, n_e, C, F, h + (size_t)row * F, F, w_down + e * w, F, 0.0f, yg + (size_t)row * C, C);
    }
    free(off);
}

static void experts_backward_cublas(float *dxg, float *dw_gate, float *dw_up, float *dw_down, float *dg, float *du,
                                    float *dh, const float *dyg, const float *g, const float *u, const float *h,
                                    const float *xg, const int32_t *offsets, const float *w_gate, const float *w_up,
                                    const float *w_down, int E, int C, int F) {
    int32_t *off = host_offsets(offsets, E);
    const size_t w = (size_t)F * C;
    for (int e = 0; e < E; e++) {
        int row = off[e], n = off[e + 1] - off[e];
        if (n == 0) continue;
        size_t r = (size_t)row;
        rm_gemm(false, false, n, F, C, dyg + r * C, C, w_down + e * w, F, 0.0f, dh + r * F, F);
        rm_gemm(true, false, C, F, n, dyg + r * C, C, h + r * F, F, 1.0f, dw_down + e * w, F);
    }
    size_t n = (size_t)off[E] * F;
    if (n) {
        swiglu_backward_kernel<<<grid_for(n), 256, 0, g_stream>>>(dg, du, dh, g, u, n, NULL, 0);
        KERNEL_CHECK();
    }
    for (int e = 0; e < E; e++) {
        int row = off[e], n_e = off[e + 1] - off[e];
        if (n_e == 0) continue;
        size_t r = (size_t)row;
        rm_gemm(false, false, n_e, C, F, dg + r * F, F, w_gate + e * w, C, 0.0f, dxg + r * C, C);
        rm_gemm(false, false, n_e, C, F, du + r * F, F, w_up + e * w, C, 1.0f, dxg + r * C, C);
        rm_gemm(true, false, F, C, n_e, dg + r * F, F, xg + r * C, C, 1.0f, dw_gate + e * w, C);
        rm_gemm(true, false, F, C, n_e, du + r * F, F, xg + r * C, C, 1.0f, dw_up + e * w, C);
    }
    free(off);
}

/* ---- the Backend entries ---- */

/* g = xg Wg^T, u = xg Wu^T, h = silu(g) u, yg = h Wd^T per row group */
static void cuda_experts_forward(float *yg, float *g, float *u, float *h, const float *xg, const int32_t *offsets,
                                 const float *w_gate, const float *w_up, const float *w_down, int E, int C, int F) {
    if (E <= 0) return;
    if (g_expert_cublas) {
        experts_forward_cublas(yg, g, u, h, xg, offsets, w_gate, w_up, w_down, E, C, F);
        return;
    }
    const size_t w = (size_t)F * C;
    grouped_var_m(true, gg(xg, C, 0, w_gate, C, w, g, F, 0, 0, F, C, 0.0f), offsets, E);
    grouped_var_m(true, gg(xg, C, 0, w_up, C, w, u, F, 0, 0, F, C, 0.0f), offsets, E);
    /* rows = offsets[E], read on the device */
    swiglu_forward_kernel<<<(unsigned)(g_sm_count * 8), 256, 0, g_stream>>>(h, g, u, 0, offsets + E, F);
    KERNEL_CHECK();
    grouped_var_m(true, gg(h, F, 0, w_down, F, w, yg, C, 0, 0, C, F, 0.0f), offsets, E);
}

static void cuda_experts_backward(float *dxg, float *dw_gate, float *dw_up, float *dw_down, float *dg, float *du,
                                  float *dh, const float *dyg, const float *g, const float *u, const float *h,
                                  const float *xg, const int32_t *offsets, const float *w_gate, const float *w_up,
                                  const float *w_down, int E, int C, int F) {
    if (E <= 0) return;
    if (g_expert_cublas) {
        experts_backward_cublas(dxg, dw_gate, dw_up, dw_down, dg, du, dh, dyg, g, u, h, xg, offsets, w_gate, w_up, w_down,
                                E, C, F);
        return;
    }
    const size_t w = (size_t)F * C;
    /* y = h Wd^T: dh = dy Wd (Wd (C,F)); dWd += dy^T h */
    grouped_var_m(false, gg(dyg, C, 0, w_down, F, w, dh, F, 0, 0, F, C, 0.0f), offsets, E);
    grouped_var_k(gg(dyg, C, 0, h, F, 0, dw_down, F, w, C, F, 0, 1.0f), offsets, E);
    swiglu_backward_kernel<<<(unsigned)(g_sm_count * 8), 256, 0, g_stream>>>(dg, du, dh, g, u, 0, offsets + E, F);
    KERNEL_CHECK();
    /* g = x Wg^T, u = x Wu^T: dx = dg Wg + du Wu (W (F,C)); dWg += dg^T x; dWu += du^T x */
    grouped_var_m(false, gg(dg, F, 0, w_gate, C, w, dxg, C, 0, 0, C, F, 0.0f), offsets, E);
    grouped_var_m(false, gg(du, F, 0, w_up, C, w, dxg, C, 0, 0, C, F, 1.0f), offsets, E);
    grouped_var_k(gg(dg, F, 0, xg, C, 0, dw_gate, C, w, F, C, 0, 1.0f), offsets, E);
    grouped_var_k(gg(du, F, 0, xg, C, 0, dw_up, C, w, F, C, 0, 1.0f), offsets, E);
}
