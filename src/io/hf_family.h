/* hf_family.h - the Hugging Face MoE families we know, what their tensor names mean, the MoE
 * structure of a checkpoint of one of them, and where each expert's weights live in it.
 *
 * Families (config.json model_type -> expert count key, MoE block, per-expert projections):
 *   qwen2_moe, qwen3_moe, olmoe   num_experts        mlp               gate_proj, up_proj, down_proj
 *   mixtral                       num_local_experts  block_sparse_moe  w1 (gate), w3 (up), w2 (down)
 *   deepseek_v2, deepseek_v3      n_routed_experts   mlp               gate_proj, up_proj, down_proj
 *   gpt_oss                       num_local_experts  mlp               (packed only, with biases)
 * (If the family's key is absent, the other two keys are tried; the one found is rewritten.)
 *
 * Two expert layouts (names and shapes checked against transformers' modeling and conversion
 * code at commit 000c33fd of src/transformers/conversion_mapping.py, transformers 5):
 *   per-expert  "model.layers.{i}.<block>.experts.{e}.<proj>.weight": gate/up [I, H], down [H, I];
 *   packed      "model.layers.{i}.<block>.experts.gate_up_proj" [E, 2I, H] (expert e's gate rows
 *               0..I-1, then its up rows I..2I-1) and "...experts.down_proj" [E, H, I]. transformers 5
 *               loads per-expert checkpoints into this layout (MergeModulelist(dim=0) then
 *               Concatenate(dim=1) of gate and up) and moves Mixtral's block from block_sparse_moe
 *               to mlp (router mlp.gate.weight). FP8 packed weights carry "<name>_scale_inv"
 *               [E, ceil(2I/b0), ceil(H/b1)] (its fine-grained FP8 experts).
 *   GPT-OSS     packed only, transposed and interleaved: gate_up_proj [E, H, 2I] (gate = even
 *               columns, up = odd ones), gate_up_proj_bias [E, 2I], down_proj [E, I, H],
 *               down_proj_bias [E, H]; router mlp.router.weight [E, H] and mlp.router.bias [E].
 *               The original release stores the weights as MXFP4: gate_up_proj_blocks U8
 *               [E, 2I, H/32, 16] + gate_up_proj_scales U8 [E, 2I, H/32] (down_proj likewise).
 * A layer is an MoE layer when it has a router "model.layers.{i}.<block>.<router>.weight" [E, C]
 * (<router> = gate, or router for GPT-OSS). Its expert tensors are every
 * "<block>.experts.{e}.<suffix>" (per-expert; all suffixes, so FP8 scales travel with their
 * weights) or every "<block>.experts.<name>" (packed; each one [E, ...], sliced along the expert
 * axis); an optional balancing bias "<block>.gate.e_score_correction_bias" [E] (grown with
 * noise) and GPT-OSS's router bias "<block>.router.bias" [E] (copied like router rows). Any other
 * "<block>.<router>.*" tensor is refused. Shared experts (mlp.shared_expert(s).*,
 * mlp.shared_expert_gate.*) and dense layers are ordinary tensors.
 *
 * FP8 (F8_E4M3 / F8_E5M2) expert tensors must come with their block scales "<name>_scale_inv"
 * (F32, BF16 or F16) of shape [ceil(out/b0), ceil(in/b1)] (packed: [E, ...] of that), the block
 * b0 x b1 from config quantization_config.weight_block_size (default 128 x 128); the
 * dequantized weight is W * scale of its block (DeepSeek-V3's weight_scale_inv).
 *
 * hf_moe_open reads config.json and the safetensors headers (no tensor data) and guarantees,
 * for a checkpoint it accepts: a supported family; at least one MoE layer; E = the config's
 * expert count, a positive integer; one MoE block name and one layout in every MoE layer; a
 * router [E, C], biases (if any) F32/BF16/F16 [E]; per-expert: experts 0..E-1 that all have the
 * tensors of expert 0, with equal dtypes and shapes per suffix; packed: tensors whose first
 * dimension is E; FP8 scales as above. Its errors, one up_error line each: those of
 * hf_ckpt_open (missing config.json, ...); unknown architecture (lists model_type, the config
 * keys and the supported families); no MoE layers (suggests --from-dense); unequal, missing or
 * surplus experts, packed tensors that are not [E, ...], FP8 weights without scales and bad
 * router or bias shapes (naming the tensors). */
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
    HF_FAMILY_GPT_OSS,
};

enum { HF_PROJ_GATE = 0, HF_PROJ_UP = 1, HF_PROJ_DOWN = 2 };

typedef struct {
    const char *model_type;    /* config.json "model_type" */
    int family;                /* HF_FAMILY_* */
    const char *experts_key;   /* config key of the routed expert count */
    const char *prefix;        /* MoE block of per-expert checkpoints: "mlp" or "block_sparse_moe" */
    const char *packed_prefix; /* MoE block of packed checkpoints ("mlp": transformers 5 renames Mixtral's) */
    const char *router;        /* router module in the block: "gate", or "router" (GPT-OSS) */
    const char *proj[3];       /* per-expert projection names by HF_PROJ_*; NULL: packed only (GPT-OSS) */
    int transposed;            /* GPT-OSS's packed layout: gate_up_proj [E, H, 2I] interleaved, down [E, I, H] */
} HfFamily;

const HfFamily *hf_family_find(const char *model_type); /* NULL if not supported */
const char *hf_family_name(int family);                 /* model_type, "?" if unknown */

/* ---- tensor names ---- */

enum {
    HF_TENSOR_OTHER = 0,
    HF_TENSOR_ROUTER = 1,      /* <router>.weight [E, C] */
    HF_TENSOR_BIAS = 2,        /* gate.e_score_correction_bias [E]: balancing bias */
    HF_TENSOR_EXPERT = 3,      /* experts.{e}.<suffix> */
    HF_TENSOR_PACKED = 4,      /* experts.<name> [E, ...] */
    HF_TENSOR_ROUTER_BIAS = 5, /* router.bias [E] (GPT-OSS) */
};
enum { HF_LAYOUT_PER_EXPERT = 0, HF_LAYOUT_PACKED = 1 };
const char *hf_layout_name(int layout); /* "per-expert", "packed" */

/* What "model.layers.{L}.<prefix>.<...>" is, for a router module named `router`:
 * HF_TENSOR_OTHER for every other name, else the kind with *layer (and *suffix for experts:
 * what follows "experts.{e}." or, packed, "experts."; *expert for per-expert ones) filled;
 * suffix points into name; -1 for an unsupported "<prefix>.<router>.*" tensor. Indices are
 * decimal digits without a sign; a packed name has no '.'. */
int hf_classify_name(const char *name, const char *prefix, const char *router, long *layer, long *expert,
                     const char **suffix);
/* hf_classify_name with the router "gate" (every family but GPT-OSS) */
int hf_classify_tensor(const char *name, const char *prefix, long *layer, long *expert, const char **suffix);
/* "model.layers.{layer}.<prefix>.experts.{expert}.{suffix}" (expert >= 0) or, packed (expert < 0),
 * "model.layers.{layer}.<prefix>.experts.{suffix}"; malloc'd */
char *hf_moe_expert_name(const char *prefix, int layer, int expert, const char *suffix);
char *hf_expert_name(const HfFamily *fam, int layer, int expert, const char *suffix); /* fam->prefix */

/* ---- the MoE structure of a checkpoint ---- */

typedef struct {
    int layer;
    int layout;               /* HF_LAYOUT_* */
    HfTensorRef router;       /* [E, C] */
    HfTensorRef bias;         /* balancing bias [E]; file == -1: none */
    HfTensorRef router_bias;  /* GPT-OSS router.bias [E]; file == -1: none */
    int n_suffix;
    const char **suffix;      /* (n_suffix) per-expert: suffixes after "experts.{e}." in expert 0's file
                               * order; packed: names after "experts." in file order; into tensor names */
    HfTensorRef *experts;     /* per-expert: (E * n_suffix), expert e's suffix s at e * n_suffix + s;
                               * packed: (n_suffix) tensors [E, ...] */
} HfMoeLayer;

/* role of a tensor: its kind (HF_TENSOR_*) and, for every kind but OTHER, its MoE layer */
#define HF_ROLE(kind, moe) (((moe) << 3) | (kind))
#define HF_ROLE_KIND(r) ((r) & 7)
#define HF_ROLE_MOE(r) ((r) >> 3)

typedef struct {
    HfCkpt ck;
    const HfFamily *fam;
    const char *prefix;      /* the MoE block this checkpoint uses (fam->prefix or fam->packed_prefix) */
    const char *experts_key; /* the config key holding E (fam->experts_key unless that one is absent) */
    int layout;              /* HF_LAYOUT_*, the same in every MoE layer */
    int n_experts;           /* E: the config's expert count, checked against every router */
    int n_experts_per_tok;   /* config num_experts_per_tok (GPT-OSS: or experts_per_token); 0 if absent */
    int n_group;             /* config n_group (0 if absent ...) */
    int n_layers;            /* config num_hidden_layers (0 if absent ...) */
    int fp8_block[2];        /* quantization_config.weight_block_size, default {128, 128} */
    int n_moe;
    HfMoeLayer *moe;         /* (n_moe) ascending layer order; may include layers >= n_layers
                              * (DeepSeek-V3's multi-token-prediction layer) */
    int **role;              /* per file, per tensor: HF_ROLE(kind, MoE index) */
} HfMoeCkpt;

/* Opens dir (hf_ckpt.h), recognizes its family and finds and validates its MoE layers. On
 * error everything is closed. */
int hf_moe_open(const char *dir, HfMoeCkpt *mc);
void hf_moe_close(HfMoeCkpt *mc);

/* The expert tensor of MoE layer m with this suffix (hf_ckpt_tensor-able): per-expert expert
 * e's, packed the layer's (e ignored). HF_TENSOR_NONE if the layer has none. */
HfTensorRef hf_moe_expert_tensor(const HfMoeCkpt *mc, int m, int e, const char *suffix);
/* Bytes of one expert's share of all expert tensors of MoE layer m (per-expert: the sum of
 * expert 0's tensors; packed: the packed tensors' bytes / E). */
uint64_t hf_moe_expert_bytes(const HfMoeCkpt *mc, int m);

/* ---- where expert e's gate, up and down projections live, in either layout ----
 *
 * A projection is the matrix W [out, in] of y = W x (gate and up [I, H], down [H, I]). Element
 * W[o][i] is element `offset + o * stride_out + i * stride_in` of the weight tensor's data
 * (row-major, dtype `dtype`): per-expert offset 0, strides (in, 1); packed gate offset e*2I*H and
 * up e*2I*H + I*H, strides (H, 1); packed down e*H*I, strides (I, 1); GPT-OSS gate e*H*2I and up
 * one more, strides (2, 2I), down e*I*H, strides (1, H). When hf_proj_contiguous, W is the
 * row-major byte range [offset * size, (offset + out * in) * size) of the weight's data.
 * FP8 weights have block scales: the dequantized value is
 *   W[o][i] * S[scale_offset + ((row0 + o) / block[0]) * scale_cols + i / block[1]]
 * with S the scale tensor's data (row0: the projection's first row in its expert's matrix, I
 * for packed up); scale.file == -1 for other dtypes. */
typedef struct {
    HfTensorRef weight;
    StDtype dtype;
    int64_t out, in;
    int64_t offset, stride_out, stride_in; /* in elements */
    HfTensorRef scale;
    int64_t scale_offset, scale_cols, row0;
    int block[2];
} HfProj;

/* Fills *p for projection proj (HF_PROJ_*) of expert e of MoE layer m, checking the tensors'
 * shapes against each other and the router's hidden size. Errors (one line, naming the
 * tensor): no such projection (a checkpoint whose experts are named otherwise), GPT-OSS MXFP4
 * weights (*_blocks/_scales: refused, not dequantized), a dtype that is not F32/BF16/F16/FP8,
 * mismatched shapes. */
int hf_expert_proj(const HfMoeCkpt *mc, int m, int e, int proj, HfProj *p);
static inline int hf_proj_contiguous(const HfProj *p) { return p->stride_in == 1 && p->stride_out == p->in; }
/* W[o][i] dequantized to float (hf_ckpt's mmapped data; no checks: o < out, i < in) */
float hf_proj_value(const HfMoeCkpt *mc, const HfProj *p, int64_t o, int64_t i);

#endif
