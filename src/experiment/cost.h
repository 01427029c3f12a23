/* cost.h - compute cost of upcycling: the measured formula, and a labelled model of where the
 * user will train (expert-parallel GPUs), since on one CPU box the E and m*E models cost about
 * the same per step (top-K fixes the FLOPs per token) while on a cluster the bigger model pays
 * for its parameters (gradient sync of the experts, optimizer, memory).
 *
 * Compute (the paper's): C_fixed = T t_mE; C_upcycled = tau t_E + (T - tau) t_mE; with the
 * source checkpoint already trained (sunk cost) only (T - tau) t_mE. */
#ifndef UPCYCLE_COST_H
#define UPCYCLE_COST_H

#include "config.h"

/* 1 - C_upcycled / C_fixed for a growth at tau_frac = tau / T and ratio = t_mE / t_E */
double cost_saving(double tau_frac, double ratio);
double cost_sunk_saving(double tau_frac);
/* the t_mE / t_E a saving implies at tau_frac (the inverse of cost_saving); NAN if none does */
double cost_implied_ratio(double tau_frac, double saving);

/* A cluster the user names: --cluster gpus=G,ep=D,link=GB/s[,tflops=T,hbm=GB/s,mem=GB] */
typedef struct {
    int gpus;          /* G */
    int ep;            /* expert-parallel degree: each MoE layer's experts split over ep GPUs */
    double link_gbs;   /* per-GPU interconnect bandwidth, GB/s, for the all-to-all and allreduces */
    double tflops;     /* sustained TFLOP/s per GPU on the model's GEMMs (default 400: ~40% of a bf16 H100) */
    double hbm_gbs;    /* per-GPU memory bandwidth, GB/s (default 3350, H100 SXM) */
    double mem_gb;     /* per-GPU memory, GB (default 80) */
} ClusterShape;
/* parses the --cluster value; errors name the key and what was expected */
int cost_parse_cluster(const char *spec, ClusterShape *out);

/* Modeled seconds per training step, by part (labelled "modeled" wherever it is shown):
 * - compute: 3 x forward FLOPs of the active path x tokens / (G x tflops); equal for E and m*E;
 * - all_to_all: per MoE layer, dispatch + combine in forward and backward, bf16 rows of d_model
 *   for each (token, slot), the (ep-1)/ep that leave the GPU, over link_gbs; equal for E and m*E;
 * - grad_sync: ring allreduce of fp32 gradients: the dense parameters over all G GPUs, each
 *   expert shard over its G/ep replicas; grows with the experts;
 * - optimizer: AdamW reads parameter, gradient and both moments and writes three (28 bytes) per
 *   parameter a GPU holds, over hbm_gbs; grows with the experts.
 * fits: the 16 bytes per held parameter (weights, gradients, two moments) within mem_gb. */
typedef struct {
    double compute, all_to_all, grad_sync, optimizer, total;
    double params_per_gpu;
    int fits;
} StepCost;
StepCost cost_model_step(const ModelConfig *mc, int tokens_per_step, int seq_len, const ClusterShape *c);

#endif
