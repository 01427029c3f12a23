/* router.cuh - router softmax + balancing bias + top-K, expert loads, auxiliary losses.
 *
 * One thread per token, with the CPU backend's exact sequence of float operations for the
 * softmax, and the selection from src/router_math.h, which the CPU backend compiles too (ties
 * to the lower expert index), so routing matches it. Loads are
 * integer atomics (order-independent). The auxiliary-loss value is a device reduction in a
 * fixed order, copied to the host only when a coefficient is non-zero. */
#pragma once

#include "common.cuh"
#include "router_math.h"

__global__ void router_forward_kernel(float *probs, int32_t *topk, float *gates, double *lse_sq, const float *logits,
                                      const float *bias, int N, int E, int K, int norm_topk) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= N) return;
    const float *l = logits + (size_t)t * E;
    float *p = probs + (size_t)t * E;
    float mx = -INFINITY, sum = 0.0f;
    for (int e = 0; e < E; e++) mx = l[e] > mx ? l[e] : mx;
    for (int e = 0; e < E; e++) sum += (p[e] = expf(l[e] - mx));
    for (int e = 0; e < E; e++) p[e] /= sum;
    double lse = mx + log((double)sum);
    lse_sq[t] = lse * lse;
    router_select_topk(topk + (size_t)t * K, gates + (size_t)t * K, p, bias, E, K, norm_topk); /* the CPU's own code */
}

__global__ void count_loads_kernel(int32_t *loads, const int32_t *topk, int NK) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < NK; i += gridDim.x * blockDim.x) atomicAdd(&loads[topk[i]], 1);
}

#define ROUTER_CHUNK 4096

/* grid (E + 1, n_chunks): block (e, c) sums probs[t][e] (e < E) or lse_sq[t] (e == E) over the
 * tokens of chunk c */
__global__ void router_aux_partial_kernel(double *partial, const float *probs, const double *lse_sq, int N, int E,
                                          int n_chunks) {
    int e = blockIdx.x, c = blockIdx.y;
    int lo = c * ROUTER_CHUNK, hi = min(N, lo + ROUTER_CHUNK);
    double s = 0;
    for (int t = lo + threadIdx.x; t < hi; t += blockDim.x) s += e < E ? (double)probs[(size_t)t * E + e] : lse_sq[t];
    s = block_sum(s);
    if (threadIdx.x == 0) partial[(size_t)e * n_chunks + c] = s;
}

/* one block: aux_coef * E * sum_e f_e P_e + z_coef * mean lse^2, as the CPU backend sums it */
__global__ void router_aux_final_kernel(double *out, double *per_expert, const double *partial, const int32_t *loads, int N,
                                        int E, int K, int n_chunks, float aux_coef, float z_coef) {
    for (int e = threadIdx.x; e <= E; e += blockDim.x) {
        double s = 0;
        for (int c = 0; c < n_chunks; c++) s += partial[(size_t)e * n_chunks + c];
        per_expert[e] = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double aux = 0;
        if (aux_coef > 0) {
            for (int e = 0; e < E; e++) aux += (double)loads[e] / ((double)N * K) * (per_expert[e] / N);
            aux *= (double)aux_coef * E;
        }
        if (z_coef > 0) aux += z_coef * per_expert[E] / N;
        *out = aux;
    }
}

static double cuda_router_forward(float *probs, int32_t *topk, float *gates, int32_t *loads, const float *logits,
                                  const float *bias, int N, int E, int K, int norm_topk, float aux_coef, float z_coef) {
    CUDA_CHECK(cudaMemsetAsync(loads, 0, sizeof(int32_t) * E, g_stream));
    if (N <= 0) return 0;
    int n_chunks = (int)cdiv(N, ROUTER_CHUNK);
    WsCarve ws = ws_begin(ws_align(sizeof(double) * N) + ws_align(sizeof(double) * (size_t)(E + 1) * n_chunks) +
                          ws_align(sizeof(double) * (E + 1)) + ws_align(sizeof(double)));
    double *lse_sq = (double *)ws_take(&ws, sizeof(double) * N);
    double *partial = (double *)ws_take(&ws, sizeof(double) * (size_t)(E + 1) * n_chunks);
    double *per_expert = (double *)ws_take(&ws, sizeof(double) * (E + 1)), *result = (double *)ws_take(&ws, sizeof(double));
    router_forward_kernel<<<cdiv(N, 128), 128, 0, g_stream>>>(probs, topk, gates, lse_sq, logits, bias, N, E, K, norm_topk);
    KERNEL_CHECK();
    count_loads_kernel<<<grid_for((size_t)N * K), 256, 0, g_stream>>>(loads, topk, N * K);
    KERNEL_CHECK();
    if (!(aux_coef > 0) && !(z_coef > 0)) return 0; /* nothing to report: no host synchronization */
    dim3 grid((unsigned)(E + 1), (unsigned)n_chunks);
    router_aux_partial_kernel<<<grid, 256, 0, g_stream>>>(partial, probs, lse_sq, N, E, n_chunks);
    KERNEL_CHECK();
    router_aux_final_kernel<<<1, 256, 0, g_stream>>>(result, per_expert, partial, loads, N, E, K, n_chunks, aux_coef, z_coef);
    KERNEL_CHECK();
    double aux = 0;
    cuda_download(&aux, result, sizeof aux);
    return aux;
}

/* dlogits (N,E) overwrite; the row of dlogits holds d probs until the softmax backward */
__global__ void router_backward_kernel(float *dlogits, const float *dgates, const float *probs, const int32_t *topk,
                                       const float *logits, const int32_t *loads, int N, int E, int K, int norm_topk,
                                       float aux_coef, float z_coef) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= N) return;
    router_token_backward(dlogits + (size_t)t * E, probs + (size_t)t * E, topk + (size_t)t * K, dgates + (size_t)t * K,
                          logits + (size_t)t * E, loads, N, E, K, norm_topk, aux_coef, z_coef); /* the CPU's own code */
}

static void cuda_router_backward(float *dlogits, const float *dgates, const float *probs, const int32_t *topk,
                                 const float *logits, const int32_t *loads, int N, int E, int K, int norm_topk,
                                 float aux_coef, float z_coef) {
    if (N <= 0) return;
    router_backward_kernel<<<cdiv(N, 128), 128, 0, g_stream>>>(dlogits, dgates, probs, topk, logits, loads, N, E, K,
                                                               norm_topk, aux_coef, z_coef);
    KERNEL_CHECK();
}
