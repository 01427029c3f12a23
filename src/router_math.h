/* router_math.h - the router's per-token math, compiled by both backends (plain C inline
 * functions on the CPU, __host__ __device__ ones in CUDA), so that the two cannot drift apart:
 * they route every token to the same experts and give the same gradients, operation for
 * operation. The loops over tokens (OpenMP threads, one CUDA thread per token) stay in each
 * backend. */
#ifndef UPCYCLE_ROUTER_MATH_H
#define UPCYCLE_ROUTER_MATH_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define ROUTER_FN static inline __host__ __device__
#else
#define ROUTER_FN static inline
#endif

/* sel (K) = the K experts with the highest biased scores p[e] + bias[e], best first; ties go
 * to the lower expert index. gates (K) = the selected experts' unbiased probabilities
 * p[sel[k]], divided by their sum when norm_topk. p and bias are (E). */
ROUTER_FN void router_select_topk(int32_t *sel, float *gates, const float *p, const float *bias, int E, int K,
                                       int norm_topk) {
    float gate_sum = 0.0f;
    for (int k = 0; k < K; k++) {
        int best = -1;
        float best_score = -INFINITY;
        for (int e = 0; e < E; e++) {
            int taken = 0;
            for (int j = 0; j < k; j++) taken |= sel[j] == e;
            float s = p[e] + bias[e];
            if (!taken && (best < 0 || s > best_score)) best = e, best_score = s;
        }
        sel[k] = best;
        gates[k] = p[best];
        gate_sum += gates[k];
    }
    if (norm_topk)
        for (int k = 0; k < K; k++) gates[k] /= gate_sum;
}

/* One token's dlogits (E) from its probabilities p (E), selection sel (K), dgates dg (K) and
 * logits l (E): the softmax backward of dp = the gates' gradient (through the renormalization
 * when norm_topk) + the balance loss's aux_coef * E * f_e / N, plus the z-loss's
 * 2 z_coef lse(l) / N * p. loads (E) are the batch's expert counts of its N*K selections. */
ROUTER_FN void router_token_backward(float *dl, const float *p, const int32_t *sel, const float *dg, const float *l,
                                     const int32_t *loads, int N, int E, int K, int norm_topk, float aux_coef,
                                     float z_coef) {
    float *dp = dl; /* dp first, then dl in place: element e is read before it is written */
    for (int e = 0; e < E; e++) dp[e] = aux_coef > 0 ? aux_coef * E * ((float)loads[e] / ((float)N * K)) / N : 0.0f;
    if (norm_topk) {
        /* g_k = p_k / S: dp_j = (dg_j - sum_k dg_k g_k) / S */
        float S = 0, dot = 0;
        for (int k = 0; k < K; k++) S += p[sel[k]];
        for (int k = 0; k < K; k++) dot += dg[k] * p[sel[k]] / S;
        for (int k = 0; k < K; k++) dp[sel[k]] += (dg[k] - dot) / S;
    } else {
        for (int k = 0; k < K; k++) dp[sel[k]] += dg[k];
    }
    float dot = 0;
    for (int e = 0; e < E; e++) dot += p[e] * dp[e];
    float z_scale = 0;
    if (z_coef > 0) {
        float mx = -INFINITY;
        for (int e = 0; e < E; e++) mx = l[e] > mx ? l[e] : mx;
        double sum = 0;
        for (int e = 0; e < E; e++) sum += exp((double)(l[e] - mx));
        z_scale = (float)(2.0 * z_coef * (mx + log(sum)) / N);
    }
    for (int e = 0; e < E; e++) dl[e] = p[e] * (dp[e] - dot) + z_scale * p[e];
}

#endif
