/* crossentropy.cuh - fused cross-entropy over the vocabulary: one block per token row; each
 * thread runs an online softmax (running max and rescaled sum) over its strided chunk of the
 * vocabulary in one read, then the block merges the (max, sum) pairs in a fixed order. The
 * backward writes scale * (softmax - onehot) in place of the logits in a second pass. */
#pragma once

#include "common.cuh"

#define CE_THREADS 256

struct MaxSum {
    float m, s;
};

__device__ __forceinline__ MaxSum maxsum_merge(MaxSum a, MaxSum b) {
    if (b.m == -INFINITY) return a;
    if (a.m == -INFINITY) return b;
    float m = fmaxf(a.m, b.m);
    MaxSum r = {m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
    return r;
}

/* (max, sum exp(x - max)) of a row, merged over the block; every thread gets the result */
__device__ MaxSum row_maxsum(const float *l, int V) {
    __shared__ MaxSum part[CE_THREADS / 32];
    MaxSum a = {-INFINITY, 0.0f};
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float x = l[i];
        if (x > a.m) {
            a.s = a.s * expf(a.m - x) + 1.0f;
            a.m = x;
        } else {
            a.s += expf(x - a.m);
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        MaxSum b = {__shfl_xor_sync(FULL_MASK, a.m, o), __shfl_xor_sync(FULL_MASK, a.s, o)};
        a = maxsum_merge(a, b);
    }
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) part[warp] = a;
    __syncthreads();
    MaxSum r = part[0];
    for (int w = 1; w < (int)blockDim.x / 32; w++) r = maxsum_merge(r, part[w]);
    return r;
}

__global__ void __launch_bounds__(CE_THREADS) crossentropy_forward_kernel(float *losses, const float *logits,
                                                                           const int32_t *targets, int V) {
    int t = blockIdx.x;
    const float *l = logits + (size_t)t * V;
    MaxSum a = row_maxsum(l, V);
    if (threadIdx.x == 0) losses[t] = (float)((double)a.m + log((double)a.s) - (double)l[targets[t]]);
}

/* in place: each element is read (pass 1) and written (pass 2) by the same thread */
__global__ void __launch_bounds__(CE_THREADS) crossentropy_backward_kernel(float *dlogits, const float *logits,
                                                                            const int32_t *targets, int V, float scale) {
    int t = blockIdx.x;
    const float *l = logits + (size_t)t * V;
    float *d = dlogits + (size_t)t * V;
    MaxSum a = row_maxsum(l, V);
    int target = targets[t];
    float inv = scale / a.s;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float v = expf(l[i] - a.m) * inv;
        if (i == target) v -= scale;
        d[i] = v;
    }
}

static void cuda_crossentropy_forward(float *losses, const float *logits, const int32_t *targets, int N, int V) {
    if (N <= 0) return;
    crossentropy_forward_kernel<<<(unsigned)N, CE_THREADS, 0, g_stream>>>(losses, logits, targets, V);
    KERNEL_CHECK();
}

static void cuda_crossentropy_backward(float *dlogits, const float *logits, const int32_t *targets, int N, int V,
                                       float scale) {
    if (N <= 0) return;
    crossentropy_backward_kernel<<<(unsigned)N, CE_THREADS, 0, g_stream>>>(dlogits, logits, targets, V, scale);
    KERNEL_CHECK();
}
