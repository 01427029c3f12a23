/* grow.h - the expert upcycling operator on upcycle (Qwen3-MoE layout) checkpoints.
 *
 * grow_checkpoint: E -> target experts per MoE layer. Counts r_e >= 1 (uniform: target/E;
 * utility: greedy on gradient-based scores), replicas appended after the originals (see
 * plan.h), exact copies of their source's gate/up/down and router row, Gaussian noise on the
 * replicas' balancing biases only (rule in plan.h), optional init heuristics (init.h),
 * optimizer state for replicas per --optim-state. Every other tensor is byte-identical.
 * Writes OUT atomically with OUT/grow.json (sources, counts, utilities, options). */
#ifndef UPCYCLE_GROW_H
#define UPCYCLE_GROW_H

#include <stdint.h>

#include "grow/init.h"
#include "grow/plan.h"

typedef enum { ALLOC_UNIFORM = 0, ALLOC_UTILITY = 1 } AllocKind;
typedef enum { UTIL_GRAD2 = 0, UTIL_SALIENCY = 1, UTIL_WEIGHT_NORM = 2, UTIL_FISHER = 3 } UtilityKind;
typedef enum { OPTIM_COPY = 0, OPTIM_RESET = 1, OPTIM_SCALE = 2, OPTIM_INTERPOLATE = 3 } OptimStateKind;

typedef struct {
    int target_experts;       /* or 0 with factor */
    int factor;
    AllocKind alloc;
    UtilityKind utility;
    const char *data_dir;     /* for utilities and --check */
    int utility_batches;
    int max_copies;           /* 0 = no cap */
    float bias_noise;         /* sigma of the bias-noise rule */
    ExpertInit expert_init;
    RouterInit router_init;
    OptimStateKind optim_state;
    uint64_t seed;
    int check;                /* val loss before/after on check_batches batches */
    int check_batches;
    const char *layers;       /* NULL/"all", or "1,3,..": layers where utility allocation and init
                               * heuristics apply; other MoE layers grow uniformly by exact copy */
    int force;
    int save_dtype;           /* dtype of the grown checkpoint's weights: 0 the input's, else SAVE_AS(WEIGHT_*) */
    int save_layout;          /* SAVE_LAYOUT_KEEP (the input's), SAVE_PER_EXPERT or SAVE_PACKED experts */
    int all_ranks;            /* under mpirun every rank runs grow: they split the utility batches; rank 0 writes */
    int quiet;
    /* dense -> MoE sparse upcycling */
    int from_dense, top_k, sparse_step;
} GrowOptions;

typedef struct {
    double loss_before, loss_after; /* with check */
    int n_old, n_new;
    int written;                    /* this process wrote out_dir (with all_ranks: rank 0 only) */
} GrowReport;

void grow_options_defaults(GrowOptions *o);
int grow_checkpoint(const char *in_dir, const char *out_dir, const GrowOptions *opt, GrowReport *report);
/* utilities (n_moe_layers x E, row-major) of a checkpoint on data_dir's pretrain split */
int grow_compute_utilities(const char *ckpt, const char *data_dir, UtilityKind kind, int batches, double *utility);

#endif
