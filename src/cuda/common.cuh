/* common.cuh - state and helpers shared by the CUDA backend's op families.
 *
 * Everything in src/cuda/ is one translation unit (backend_cuda.cu includes each .cuh once),
 * so the state below is file-static. All work goes to one stream, g_stream; memory transfers
 * to and from the host synchronize it, nothing else does. Reductions run in a fixed order
 * (no floating-point atomics), so a run is bit-reproducible on a given GPU. */
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend.h"
#include "util.h"
}

static cudaStream_t g_stream;
static cublasHandle_t g_cublas;
static int g_sm_count = 1;
static int g_bf16;          /* PRECISION_BF16: GEMMs take bf16 inputs, accumulate and store fp32 */
static int g_expert_cublas; /* UPCYCLE_EXPERT_GEMM=cublas: per-expert cuBLAS GEMMs (host reads offsets) */

static void cuda_die(const char *what, const char *detail, const char *file, int line) {
    fprintf(stderr, "upcycle: CUDA error in %s (%s:%d): %s; expected a working GPU (or --device cpu)\n", what, file, line,
            detail);
    exit(1);
}

#define CUDA_CHECK(call)                                                                            \
    do {                                                                                            \
        cudaError_t e_ = (call);                                                                    \
        if (e_ != cudaSuccess) cuda_die(#call, cudaGetErrorString(e_), __FILE__, __LINE__);         \
    } while (0)

#define CUBLAS_CHECK(call)                                                                          \
    do {                                                                                            \
        cublasStatus_t s_ = (call);                                                                 \
        if (s_ != CUBLAS_STATUS_SUCCESS) cuda_die(#call, cublasGetStatusString(s_), __FILE__, __LINE__); \
    } while (0)

/* after every launch: catches launch-configuration errors without synchronizing */
#define KERNEL_CHECK() CUDA_CHECK(cudaGetLastError())

#define FULL_MASK 0xffffffffu

static inline unsigned cdiv(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

/* blocks for a grid-stride loop over n items with 256 threads per block */
static inline unsigned grid_for(size_t n) {
    size_t blocks = (n + 255) / 256, cap = (size_t)g_sm_count * 32;
    if (blocks < 1) blocks = 1;
    return (unsigned)(blocks < cap ? blocks : cap);
}

/* Kernels that need more than the default 48 KiB of dynamic shared memory opt in. */
template <typename K>
static void allow_smem(K kernel, size_t bytes) {
    if (bytes > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

/* ---- workspace: one device buffer that ops carve scratch from; grows on demand ----
 * Ops run in stream order, so one op's scratch is free again when the next op starts. Each op
 * takes the workspace once (ws_begin) and carves all its pieces from it. Growth frees the old
 * buffer after synchronizing the stream: it happens in the first step only. */
static char *g_ws;
static size_t g_ws_size;

typedef struct {
    char *base;
    size_t used;
} WsCarve;

static inline size_t ws_align(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

static WsCarve ws_begin(size_t total_bytes) {
    if (total_bytes > g_ws_size) {
        if (g_ws) {
            CUDA_CHECK(cudaStreamSynchronize(g_stream));
            CUDA_CHECK(cudaFree(g_ws));
        }
        size_t n = total_bytes > 2 * g_ws_size ? total_bytes : 2 * g_ws_size;
        if (cudaMalloc((void **)&g_ws, n) != cudaSuccess) {
            fprintf(stderr, "upcycle: CUDA out of memory for %.1f MB of scratch; expected a smaller batch or --device cpu\n",
                    n / 1e6);
            exit(1);
        }
        g_ws_size = n;
    }
    WsCarve c = {g_ws, 0};
    return c;
}

static void *ws_take(WsCarve *c, size_t bytes) {
    void *p = c->base + c->used;
    c->used += ws_align(bytes);
    return p;
}

/* ---- warp and block reductions (fixed order: deterministic) ---- */

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

/* sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result */
template <typename T>
__device__ T block_sum(T v) {
    __shared__ T warp_part[32];
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads(); /* warp_part may still be read by a previous call */
    if (lane == 0) warp_part[warp] = v;
    __syncthreads();
    T r = lane < n_warps ? warp_part[lane] : (T)0;
    return warp_sum(r);
}

/* Exclusive prefix sums out[0..n) of f(0..n-1), out[n] = total, by the whole block (all threads
 * call it). part: blockDim.x ints of shared scratch. out may be shared or global memory. */
template <typename F>
__device__ void block_exclusive_scan(int n, F f, int *out, int *part) {
    int nt = blockDim.x, tid = threadIdx.x;
    int per = (n + nt - 1) / nt, lo = min(n, tid * per), hi = min(n, lo + per);
    int s = 0;
    for (int i = lo; i < hi; i++) s += f(i);
    part[tid] = s;
    __syncthreads();
    if (tid == 0) {
        int acc = 0;
        for (int i = 0; i < nt; i++) {
            int v = part[i];
            part[i] = acc;
            acc += v;
        }
        out[n] = acc;
    }
    __syncthreads();
    int acc = part[tid];
    for (int i = lo; i < hi; i++) {
        out[i] = acc;
        acc += f(i);
    }
    __syncthreads();
}

__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

/* The second half of a column sum over row blocks (RMSNorm's dweight, a bias's gradient):
 * acc[c] += sum over b of partial[b][c], in block order (deterministic), one thread per column */
__global__ void column_partials_add_kernel(float *acc, const float *partial, int n_blocks, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float a = acc[c];
    for (int b = 0; b < n_blocks; b++) a += partial[(size_t)b * C + c];
    acc[c] = a;
}
