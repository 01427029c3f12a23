/* embedding.cuh - token embedding forward (row gather) and backward (deterministic scatter-add).
 *
 * The backward sorts the token ids with a stable radix sort (CUB), so the rows of one token
 * are contiguous and in token order; the first position of each run adds the run's rows to
 * the table row in that order: the same summation order as the CPU backend, no atomics. */
#pragma once

#include <cub/cub.cuh>

#include "common.cuh"

__global__ void embedding_forward_kernel(float *out, const int32_t *tokens, const float *table, int N, int C) {
    size_t n = (size_t)N * C;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i / C, c = i % C;
        out[i] = table[(size_t)tokens[t] * C + c];
    }
}

__global__ void iota_kernel(int32_t *v, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) v[i] = i;
}

/* grid (N, ceil(C / blockDim)): block x handles sorted position x if it starts a run */
__global__ void embedding_backward_kernel(float *dtable, const float *dout, const uint32_t *keys, const int32_t *rows,
                                          int N, int C) {
    int i = blockIdx.x;
    uint32_t key = keys[i];
    if (i > 0 && keys[i - 1] == key) return;
    int c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float *dst = dtable + (size_t)key * C + c;
    float acc = *dst;
    for (int j = i; j < N && keys[j] == key; j++) acc += dout[(size_t)rows[j] * C + c];
    *dst = acc;
}

static int bits_for(int n_values) { /* bits to represent 0..n_values-1 */
    int bits = 1;
    while (bits < 31 && (1 << bits) < n_values) bits++;
    return bits;
}

/* stable sort of n keys (< n_values) with their indices 0..n-1; results in keys_out, idx_out */
static void sort_indices_by_key(const uint32_t *keys, uint32_t *keys_out, int32_t *idx_in, int32_t *idx_out, int n,
                                int n_values, void *temp, size_t temp_bytes) {
    iota_kernel<<<grid_for(n), 256, 0, g_stream>>>(idx_in, n);
    KERNEL_CHECK();
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys, keys_out, idx_in, idx_out, n, 0, bits_for(n_values),
                                               g_stream));
}

static size_t sort_temp_bytes(int n, int n_values) {
    size_t bytes = 0;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs((void *)NULL, bytes, (const uint32_t *)NULL, (uint32_t *)NULL,
                                               (const int32_t *)NULL, (int32_t *)NULL, n, 0, bits_for(n_values), g_stream));
    return bytes;
}

static void cuda_embedding_forward(float *out, const int32_t *tokens, const float *table, int N, int C) {
    if (N <= 0) return;
    embedding_forward_kernel<<<grid_for((size_t)N * C), 256, 0, g_stream>>>(out, tokens, table, N, C);
    KERNEL_CHECK();
}

static void cuda_embedding_backward(float *dtable, const float *dout, const int32_t *tokens, int N, int C, int V) {
    if (N <= 0) return;
    size_t temp_bytes = sort_temp_bytes(N, V);
    WsCarve ws = ws_begin(3 * ws_align(sizeof(int32_t) * N) + ws_align(temp_bytes));
    uint32_t *keys = (uint32_t *)ws_take(&ws, sizeof(uint32_t) * N);
    int32_t *idx_in = (int32_t *)ws_take(&ws, sizeof(int32_t) * N), *rows = (int32_t *)ws_take(&ws, sizeof(int32_t) * N);
    void *temp = ws_take(&ws, temp_bytes);
    sort_indices_by_key((const uint32_t *)tokens, keys, idx_in, rows, N, V, temp, temp_bytes);
    dim3 grid((unsigned)N, cdiv(C, 128));
    embedding_backward_kernel<<<grid, 128, 0, g_stream>>>(dtable, dout, keys, rows, N, C);
    KERNEL_CHECK();
}
