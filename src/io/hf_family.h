/* hf_family.h - the Hugging Face MoE families we know, what their tensor names mean, and the
 * MoE structure of a checkpoint of one of them.
 *
 * Families (config.json model_type -> expert count key, MoE block prefix, expert projections):
 *   qwen2_moe, qwen3_moe, olmoe   num_experts        mlp               gate_proj, up_proj, down_proj
 *   mixtral                       num_local_experts  block_sparse_moe  w1, w2, w3
 *   deepseek_v2, deepseek_v3      n_routed_experts   mlp               gate_proj, up_proj, down_proj
 * A layer is an MoE layer when it has a router "model.layers.{i}.<prefix>.gate.weight" [E, C];
 * its experts are every tensor "model.layers.{i}.<prefix>.experts.{e}.<suffix>" (all suffixes,
 * so e.g. quantization scales travel with their weights), and an optional balancing bias
 * "<prefix>.gate.e_score_correction_bias" [E]. Any other "<prefix>.gate.*" tensor is refused.
 * Shared experts (mlp.shared_expert(s).*, mlp.shared_expert_gate.*) and dense layers are
 * ordinary tensors.
 *
 * hf_moe_open reads config.json and the safetensors headers (no tensor data) and guarantees,
 * for a checkpoint it accepts: a supported family; at least one MoE layer; E = the config's
 * expert count, a positive integer; in every MoE layer a router [E, C], a bias (if any)
 * F32/BF16/F16 [E], and experts 0..E-1 that all have the tensors of expert 0, with equal
 * dtypes and shapes per suffix. Its errors, one up_error line each: those of hf_ckpt_open
 * (missing config.json, ...); unknown architecture (lists model_type, the config keys and the
 * supported families); no MoE layers (suggests --from-dense); unequal, missing or surplus
 * experts and bad router or bias shapes (naming the tensors). */
#ifndef UPCYCLE_IO_HF_FAMILY_H
#define UPCYCLE_IO_HF_FAMILY_H

#include "io/hf_ckpt.h"

enum {
    HF_FAMILY_QWEN2_MOE = 1,
    HF_FAMILY_QWEN3_MOE,
    HF_FAMILY_OLMOE,
    HF_FAMILY_MIXTRAL,
    HF_FAMILY_DEEPSEEK_V2,
    HF_FAMILY_DEEPSEEK_V3,
};

typedef struct {
    const char *model_type;  /* config.json "model_type" */
    int family;              /* HF_FAMILY_* */
    const char *experts_key; /* config key of the routed expert count */
    const char *prefix;      /* MoE block: "mlp" or "block_sparse_moe" */
} HfFamily;

const HfFamily *hf_family_find(const char *model_type); /* NULL if not supported */
const char *hf_family_name(int family);                 /* model_type, "?" if unknown */

/* ---- tensor names ---- */

enum { HF_TENSOR_OTHER = 0, HF_TENSOR_ROUTER = 1, HF_TENSOR_BIAS = 2, HF_TENSOR_EXPERT = 3 };

/* What "model.layers.{L}.<prefix>.<...>" is: HF_TENSOR_OTHER for every other name, else the
 * kind with *layer (and *expert, *suffix for experts; suffix points into name) filled; -1 for
 * an unsupported "<prefix>.gate.*" tensor. Indices are decimal digits without a sign. */
int hf_classify_tensor(const char *name, const char *prefix, long *layer, long *expert, const char **suffix);
/* "model.layers.{layer}.<prefix>.experts.{expert}.{suffix}", malloc'd */
char *hf_expert_name(const HfFamily *fam, int layer, int expert, const char *suffix);

/* ---- the MoE structure of a checkpoint ---- */

typedef struct {
    int layer;
    HfTensorRef router, bias; /* bias.file == -1: no bias */
    int n_suffix;
    const char **suffix;      /* (n_suffix) expert tensor suffixes in expert 0's file order,
                               * pointing into tensor names */
    HfTensorRef *experts;     /* (E * n_suffix) expert e's suffix s at e * n_suffix + s */
} HfMoeLayer;

/* role of a tensor: its kind (HF_TENSOR_*) and, for routers, biases and experts, its MoE layer */
#define HF_ROLE(kind, moe) (((moe) << 2) | (kind))
#define HF_ROLE_KIND(r) ((r) & 3)
#define HF_ROLE_MOE(r) ((r) >> 2)

typedef struct {
    HfCkpt ck;
    const HfFamily *fam;
    int n_experts;         /* E: the config's expert count, checked against every router */
    int n_experts_per_tok; /* config num_experts_per_tok (0 if absent or not an integer >= 0) */
    int n_group;           /* config n_group (0 if absent ...) */
    int n_layers;          /* config num_hidden_layers (0 if absent ...) */
    int n_moe;
    HfMoeLayer *moe;       /* (n_moe) ascending layer order; may include layers >= n_layers
                            * (DeepSeek-V3's multi-token-prediction layer) */
    int **role;            /* per file, per tensor: HF_ROLE(kind, MoE index) */
} HfMoeCkpt;

/* Opens dir (hf_ckpt.h), recognizes its family and finds and validates its MoE layers. On
 * error everything is closed. */
int hf_moe_open(const char *dir, HfMoeCkpt *mc);
void hf_moe_close(HfMoeCkpt *mc);

#endif
