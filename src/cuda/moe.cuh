/* moe.cuh - token permutation by expert, gather, weighted combine (scatter-add).
 *
 * Permutation without host synchronization: offsets are the exclusive prefix sums of the
 * loads (one block); the (token, slot) pairs are sorted by expert with a stable radix sort
 * (CUB), so within an expert the pairs keep the order t*K + k, the CPU backend's order. */
#pragma once

#include "common.cuh"
#include "embedding.cuh"

__global__ void moe_offsets_kernel(int32_t *offsets, const int32_t *loads, int E) {
    __shared__ int part[256];
    block_exclusive_scan(E, [&](int e) { return (int)loads[e]; }, offsets, part);
}

__global__ void moe_positions_kernel(int32_t *token_of, int32_t *position_of, const int32_t *sorted_pairs, int NK, int K) {
    for (int pos = blockIdx.x * blockDim.x + threadIdx.x; pos < NK; pos += gridDim.x * blockDim.x) {
        int pair = sorted_pairs[pos];
        token_of[pos] = pair / K;
        position_of[pair] = pos;
    }
}

static void cuda_moe_permute(int32_t *offsets, int32_t *token_of, int32_t *position_of, const int32_t *topk,
                             const int32_t *loads, int N, int E, int K) {
    moe_offsets_kernel<<<1, 256, 0, g_stream>>>(offsets, loads, E);
    KERNEL_CHECK();
    int NK = N * K;
    if (NK <= 0) return;
    size_t temp_bytes = sort_temp_bytes(NK, E);
    WsCarve ws = ws_begin(3 * ws_align(sizeof(int32_t) * NK) + ws_align(temp_bytes));
    uint32_t *keys = (uint32_t *)ws_take(&ws, sizeof(uint32_t) * NK);
    int32_t *idx_in = (int32_t *)ws_take(&ws, sizeof(int32_t) * NK), *sorted = (int32_t *)ws_take(&ws, sizeof(int32_t) * NK);
    void *temp = ws_take(&ws, temp_bytes);
    sort_indices_by_key((const uint32_t *)topk, keys, idx_in, sorted, NK, E, temp, temp_bytes);
    moe_positions_kernel<<<grid_for(NK), 256, 0, g_stream>>>(token_of, position_of, sorted, NK, K);
    KERNEL_CHECK();
}

/* xg (NK, C) = x[token_of] */
__global__ void moe_gather_forward_kernel(float *xg, const float *x, const int32_t *token_of, int NK, int C) {
    size_t n = (size_t)NK * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t p = i / C, c = i % C;
        xg[i] = x[(size_t)token_of[p] * C + c];
    }
}

/* dx[t] += sum_k dxg[position_of[t, k]], in k order */
__global__ void moe_gather_backward_kernel(float *dx, const float *dxg, const int32_t *position_of, int N, int K, int C) {
    size_t n = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / C, c = i % C;
        float d = dx[i];
        for (int k = 0; k < K; k++) d += dxg[(size_t)position_of[t * K + k] * C + c];
        dx[i] = d;
    }
}

/* out[t] = sum_k gates[t, k] yg[position_of[t, k]] (overwrite), in k order */
__global__ void moe_combine_forward_kernel(float *out, const float *yg, const float *gates, const int32_t *position_of,
                                           int N, int K, int C) {
    size_t n = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / C, c = i % C;
        float o = 0.0f;
        for (int k = 0; k < K; k++) o += gates[t * K + k] * yg[(size_t)position_of[t * K + k] * C + c];
        out[i] = o;
    }
}

/* one warp per (t, k): dyg[pos] = g dout[t] (overwrite); dgates[t, k] = dout[t] . yg[pos] */
__global__ void moe_combine_backward_kernel(float *dyg, float *dgates, const float *dout, const float *yg,
                                            const float *gates, const int32_t *position_of, int N, int K, int C) {
    size_t pair = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (pair >= (size_t)N * K) return;
    size_t t = pair / K, pos = (size_t)position_of[pair];
    const float *d = dout + t * C, *y = yg + pos * C;
    float *dy = dyg + pos * C;
    float g = gates[pair], dot = 0.0f;
    for (int c = lane; c < C; c += 32) {
        dot += d[c] * y[c];
        dy[c] = g * d[c];
    }
    dot = warp_sum(dot);
    if (lane == 0) dgates[pair] = dot;
}

static void cuda_moe_gather_forward(float *xg, const float *x, const int32_t *token_of, int NK, int C) {
    if (NK <= 0) return;
    moe_gather_forward_kernel<<<grid_for((size_t)NK * C), 256, 0, g_stream>>>(xg, x, token_of, NK, C);
    KERNEL_CHECK();
}

static void cuda_moe_gather_backward(float *dx, const float *dxg, const int32_t *position_of, int N, int K, int C) {
    if (N <= 0) return;
    moe_gather_backward_kernel<<<grid_for((size_t)N * C), 256, 0, g_stream>>>(dx, dxg, position_of, N, K, C);
    KERNEL_CHECK();
}

static void cuda_moe_combine_forward(float *out, const float *yg, const float *gates, const int32_t *position_of, int N,
                                     int K, int C) {
    if (N <= 0) return;
    moe_combine_forward_kernel<<<grid_for((size_t)N * C), 256, 0, g_stream>>>(out, yg, gates, position_of, N, K, C);
    KERNEL_CHECK();
}

static void cuda_moe_combine_backward(float *dyg, float *dgates, const float *dout, const float *yg, const float *gates,
                                      const int32_t *position_of, int N, int K, int C) {
    if (N <= 0) return;
    moe_combine_backward_kernel<<<cdiv((size_t)N * K * 32, 256), 256, 0, g_stream>>>(dyg, dgates, dout, yg, gates,
                                                                                     position_of, N, K, C);
    KERNEL_CHECK();
}
