/* hf_plan.h - what an MoE Hugging Face checkpoint is (hf_inspect) and how it grows: a uniform
 * growth plan, a utility plan from the experts' weight norms, and the check that a plan fits a
 * checkpoint before anything is written.
 *
 * hf_inspect reads config.json and the safetensors headers only (no tensor data), with the
 * checks and errors of hf_moe_open (hf_family.h). A plan for a Hugging Face checkpoint grows
 * every MoE layer to the same expert count, since its config has one expert count key; how
 * many copies each expert gets may differ from layer to layer. */
#ifndef UPCYCLE_GROW_HF_PLAN_H
#define UPCYCLE_GROW_HF_PLAN_H

#include "io/hf_family.h"
#include "grow/plan.h"

typedef struct {
    char model_type[64];
    int family;               /* HF_FAMILY_* */
    int n_layers;             /* config num_hidden_layers */
    int n_moe_layers;
    int *moe_layers;          /* (n_moe_layers) ascending layer indices that have a router; may include
                               * layers >= n_layers (DeepSeek-V3's multi-token-prediction layer) */
    int n_experts;            /* E, from the config, checked against every router */
    const char *experts_key;  /* "num_experts", "num_local_experts" or "n_routed_experts" */
    int n_experts_per_tok;    /* top-K from the config (0 if absent) */
    int has_bias;             /* some MoE layer has gate.e_score_correction_bias */
    char dtype[8];            /* dtype of the expert weights, e.g. "BF16", "F8_E4M3", "MXFP4" (U8 blocks) */
    long long total_bytes;    /* tensor data bytes of the whole checkpoint */
    const char *moe_prefix;   /* the MoE block the checkpoint uses: "mlp" or "block_sparse_moe" */
    int layout;               /* HF_LAYOUT_PER_EXPERT or HF_LAYOUT_PACKED */
    int hidden;               /* router columns C */
    int n_expert_tensors;     /* tensors per expert (3 for gate/up/down); packed: per MoE layer */
    long long expert_bytes;   /* bytes of one expert's tensors (first MoE layer; packed: its share) */
    int n_group;              /* DeepSeek group-limited routing groups (0 if none): E' must divide */
    int sharded;              /* 1 = index + shards, 0 = model.safetensors */
    int n_files;
    char **files;             /* (n_files) safetensors file names relative to the directory */
} HfMoeInfo;

/* Reads config.json and the safetensors headers (no tensor data) and validates the MoE
 * structure. Errors: missing config.json; unknown architecture (lists model_type, the config
 * keys and the supported families); no MoE layers (suggests --from-dense); experts of unequal
 * shapes or dtypes, missing experts, router/bias shapes (name the tensors). */
int hf_inspect(const char *dir, HfMoeInfo *info);
void hf_info_free(HfMoeInfo *info);

/* A plan growing every MoE layer of info uniformly to n_new experts (allocate_uniform). */
int hf_plan_uniform(const HfMoeInfo *info, int n_new, GrowPlan *plan);

/* Weight-norm utilities: utility[m * E + e] = ||W_e|| of expert e of MoE layer m, the Frobenius
 * norm over its gate, up and down weights (hf_expert_proj), summed in double after
 * dequantizing (F32/BF16/F16; FP8 times its block scales). Streams over the mmapped tensors,
 * releasing their pages as it goes, so it works for checkpoints larger than memory. Errors: those
 * of hf_moe_open and hf_expert_proj (experts named otherwise; MXFP4 is refused in one line). */
int hf_weight_norms(const char *dir, double *utility);
/* A plan growing every MoE layer of info to n_new experts by the greedy utility allocation of
 * plan.h (allocate_greedy: one copy each, then each copy to the highest utility / copies, never
 * above max_copies; 0 = no cap), from utility (n_moe_layers x E, as hf_weight_norms gives it).
 * Each LayerPlan keeps its utilities. */
int hf_plan_utility(const HfMoeInfo *info, int n_new, const double *utility, int max_copies, GrowPlan *plan);

/* Checks that plan fits the checkpoint: every MoE layer exactly once and no other layer,
 * n_old == E, one n_new >= E for every layer (a multiple of n_group when the config has
 * one), originals keeping their index and replicas' sources below E. On success *by_moe
 * (malloc'd, mc->n_moe entries) is each MoE layer's LayerPlan, and *n_new the common target;
 * on error *by_moe is NULL. Errors name the checkpoint directory. */
int hf_plan_check(const HfMoeCkpt *mc, const GrowPlan *plan, const LayerPlan ***by_moe, int *n_new);

#endif
