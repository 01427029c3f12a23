/* plan.h - a growth plan: for every MoE layer, which source expert each new expert copies.
 *
 * Expert order in a grown layer: the E original experts keep their indices 0..E-1 (so every
 * existing tensor name still means the same expert), and the replicas are appended as
 * E, E+1, ..., in order of their source expert (all replicas of expert 0 first, then of
 * expert 1, ...). source[j] is the original expert new expert j copies (source[j] == j for
 * j < E). */
#ifndef UPCYCLE_GROW_PLAN_H
#define UPCYCLE_GROW_PLAN_H

typedef struct {
    int layer;        /* transformer layer index */
    int n_old;        /* E */
    int n_new;        /* target experts (>= E) */
    int *source;      /* (n_new) source expert of each new expert */
    int *copies;      /* (n_old) r_e >= 1: how many experts in the grown layer descend from e */
    double *utility;  /* (n_old) utility used for the allocation, or NULL (uniform) */
} LayerPlan;

typedef struct {
    int n_layers;     /* MoE layers in the plan */
    LayerPlan *layers;
} GrowPlan;

/* Fills source[] from copies[] in the documented order. copies must sum to n_new, each >= 1. */
void layer_plan_fill_sources(LayerPlan *lp);
void grow_plan_free(GrowPlan *plan);

/* The per-layer table `upcycle grow` prints: "layer | experts | copies per source expert", with
 * each layer's utility min / max when `utility` (and the layer has utilities). */
void grow_plan_print_table(const GrowPlan *plan, int utility);
/* grow.json's "layers" array: per layer {"layer", "source" (n_new), "copies" (n_old), "utility"
 * (n_old, when the plan has utilities)}; the caller owns it. */
struct cJSON *grow_plan_layers_json(const GrowPlan *plan);

#endif

#ifndef UPCYCLE_GROW_PLAN_FUNCS
#define UPCYCLE_GROW_PLAN_FUNCS
/* Uniform: r_e = n_new / n_old; fails (up_error) unless n_old divides n_new. */
int allocate_uniform(LayerPlan *lp);
/* Greedy with replacement: r_e = 1, then each remaining copy goes to the expert with the
 * highest utility / r_e (the utility per copy it would hold), ties to the lower index,
 * never above max_copies (0 = no cap). Fails if the cap makes n_new unreachable. */
int allocate_greedy(LayerPlan *lp, const double *utility, int max_copies);
/* Bias noise rule: replicas' biases get N(0, s^2) with s = sigma * max(std(bias), 1e-3),
 * std over the layer's n biases; 1e-3 is one loss-free balancing step (the floor applies when
 * all biases are equal, e.g. zero). */
float grow_bias_noise_std(const float *bias, int n, float sigma);
#endif
