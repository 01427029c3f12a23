/* model.h - the MoE transformer: parameter table, layer stack, forward/backward, AdamW step.
 *
 * All parameters live in one contiguous backend buffer described by `params` (name, shape,
 * offset); gradients and the two Adam moments are buffers of the same layout, so zeroing,
 * the optimizer and checkpointing are single loops. The experts of one MoE layer are laid
 * out back to back per projection (experts.0.gate_proj, experts.1.gate_proj, ...), so each
 * projection is one (E, F, C) block that the grouped expert GEMMs index directly.
 * model.c owns no math: every op is a backend call. */
#ifndef UPCYCLE_MODEL_H
#define UPCYCLE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "dist/expert_parallel.h"

#define PARAM_NAME_MAX 96

typedef struct {
    char name[PARAM_NAME_MAX]; /* Hugging Face tensor name */
    int ndim;
    int64_t shape[3];
    size_t offset, numel;      /* in floats, into the parameter buffer */
    int trainable;             /* 0 for the balancing bias (updated by the load rule, not by AdamW) */
    int decay;                 /* weight decay applies (matrices, not norms or biases) */
    int expert;                /* global index of the expert this weight belongs to, else -1 */
    int sharded;               /* held by this rank only (expert parallel), not replicated */
} ParamInfo;

/* indices into the parameter table; -1 where absent */
typedef struct {
    int is_moe;
    int input_norm, q_proj, k_proj, v_proj, o_proj, q_norm, k_norm, post_norm;
    int q_bias, k_bias, v_bias;                                 /* attention_bias */
    int gate_proj, up_proj, down_proj;                          /* dense FFN */
    int router, expert_bias, expert_gate, expert_up, expert_down; /* MoE: first expert of each block */
    int shared_gate, shared_up, shared_down, shared_expert_gate; /* MoE with a shared expert */
} LayerParams;

typedef struct {
    float *x_in;                       /* (N,C) residual stream entering the layer */
    float *ln1, *ln1_rstd;             /* (N,C), (N) */
    float *q_pre, *k_pre;              /* (N,H*hd), (N,KV*hd) projections (+ biases) before qk-norm */
    float *q_rstd, *k_rstd;            /* (N*H), (N*KV); (N) each with qk_norm_full */
    float *q_unclipped, *k_unclipped, *v_unclipped; /* clip_qkv: the clamp's inputs (q/k: the qk-norm
                                        * output, or q_pre/k_pre without qk-norm); NULL otherwise */
    float *q, *k, *v;                  /* after qk-norm, clamp and RoPE */
    float *att_lse;                    /* (B,H,T) logsumexp of each attention row */
    float *att_out;                    /* (N,H*hd) */
    float *x_mid;                      /* (N,C) after the attention residual */
    float *ln2, *ln2_rstd;             /* (N,C), (N) */
    float *ffn_gate, *ffn_up, *ffn_h;  /* dense: (N,I) */
    float *router_logits, *router_probs; /* MoE: (N,E) */
    int32_t *topk, *loads;             /* (N,K), (E) */
    float *gates;                      /* (N,K) */
    int32_t *offsets, *token_of, *position_of; /* (E+1), (N*K), (N*K) */
    float *xg, *eg, *eu, *eh, *yg;     /* (N*K,C), (N*K,F) x3, (N*K,C) */
    float *sh_gate, *sh_up, *sh_h;     /* shared expert: (N,S) x3 */
    float *sh_y, *sh_logit;            /* shared expert output (N,C), its gate's logit (N) */
    float *ffn_out;                    /* (N,C) */
} LayerActs;

/* Expert parallel, per MoE layer: the exchange of the last forward (dist/expert_parallel.h) and
 * the rows this rank's experts computed on, kept for the backward. Host memory (the CPU backend);
 * grown, never shrunk. */
typedef struct {
    EpExchange ex;
    float *xe, *eg, *eu, *eh;          /* (rows, C), (rows, F) x3, expert-major */
    int cap;
} LayerEp;

typedef struct {
    ModelConfig cfg;
    const Backend *be;
    int n_params;
    ParamInfo *params;
    size_t n_floats;                   /* total parameter count (including the balancing biases) */
    float *param_mem, *grad_mem, *adam_m, *adam_v; /* backend memory, n_floats each */
    LayerParams layers[MAX_LAYERS];
    int embed, final_norm, lm_head;    /* lm_head == embed when tied */

    /* activations, allocated for (B, T) by model_set_batch */
    int B, T;
    size_t act_bytes;                  /* bytes of the activation block for (B, T) */
    int32_t *host_tokens;              /* host staging for model_forward: inputs, targets (2N) */
    float *host_losses;                /* (N) */
    LayerActs acts[MAX_LAYERS];
    float *x_final, *lnf, *lnf_rstd, *logits, *losses; /* (N,C) (N,C) (N) (N,V) (N) */
    int32_t *inputs, *targets;         /* (N) each */
    /* backward scratch */
    float *d_resid, *d_ln, *d_q, *d_k, *d_v, *d_att, *d_ffn_a, *d_ffn_b, *d_ffn_c, *d_router, *d_gates;
    float *d_xg, *d_yg, *d_eg, *d_eu, *d_eh;
    float *d_sh_y, *d_sh_logit;        /* shared expert: (N,C), (N) */

    /* data parallel (src/dist): the backward computes gradients of loss_scale x loss (1 / ranks,
     * so that summing the ranks' gradients gives the mean), and calls grad_ready, when set, as
     * soon as the gradients of a contiguous range of grad_mem are final (last layer first) */
    float loss_scale;
    void (*grad_ready)(void *ctx, size_t offset, size_t count, int experts); /* experts: this rank's expert shard */
    void *grad_ready_ctx;

    /* expert parallel (model_create_ep): the experts of every MoE layer are split over ep_size
     * ranks in contiguous blocks; this rank holds experts [first_expert, first_expert +
     * n_local_experts) and exchanges tokens with the others (all-to-all) in forward and
     * backward. ep_size 1: every expert is here. */
    int ep_rank, ep_size, n_local_experts, first_expert;
    LayerEp *ep;                       /* (n_layers) */
    float *ep_scratch;                 /* 3 x (cap, C) + 3 x (cap, F), shared by the layers */
    size_t ep_scratch_cap;

    /* results of the last forward */
    double last_ce_loss, last_aux_loss;
    int step;                          /* optimizer steps taken (AdamW's t) */
} Model;

int model_create(Model *m, const ModelConfig *cfg, const Backend *be);
/* expert parallel over ep_size ranks (src/dist), as rank ep_rank: CPU backend, num_experts a
 * multiple of ep_size. Weights are initialized as the whole model's would be. */
int model_create_ep(Model *m, const ModelConfig *cfg, const Backend *be, int ep_rank, int ep_size);
/* The whole model's parameter table (every expert), without memory: checkpoints of an expert
 * parallel model list every tensor. *out is malloc'd; returns the count. */
int model_full_table(const ModelConfig *cfg, ParamInfo **out);
/* rank holding parameter p of the full table (-1: every rank) */
int model_param_owner(const Model *m, const ParamInfo *p);
/* Walking the full table in order with *cursor (start at 0) on this model's table: the index
 * of p in this model's table when this rank holds it (advancing the cursor), else -1. */
int model_local_param(const Model *m, const ParamInfo *p, int *cursor);
/* largest numel in a parameter table */
size_t model_max_numel(const ParamInfo *table, int n);
/* The run of adjacent parameters from index i that share i's `sharded` flag: returns the index
 * after it and sets [*offset, *offset + *count) to its floats. */
int model_sharded_run(const Model *m, int i, size_t *offset, size_t *count);
void model_free(Model *m);
int model_find_param(const Model *m, const char *name); /* index or -1 */
float *model_param(const Model *m, int index);          /* backend pointer */
float *model_grad(const Model *m, int index);
void model_init_weights(Model *m, uint64_t seed);
void model_set_batch(Model *m, int B, int T);          /* (re)allocates activations */

/* Forward on host tokens (B, T+1): inputs [:, :T], targets [:, 1:]. Returns the mean
 * cross-entropy + auxiliary router losses; with targets == NULL semantics (tokens of shape
 * (B,T) and no loss) use model_forward_logits. */
double model_forward(Model *m, const int32_t *tokens, float aux_coef, float z_coef);
void model_forward_logits(Model *m, const int32_t *inputs); /* inputs (B,T); logits in m->logits */
void model_zero_grad(Model *m);
void model_backward(Model *m, float aux_coef, float z_coef);
/* global grad norm (before clipping) */
double model_grad_norm(const Model *m);
/* One optimizer step: clip to grad_clip (0 = none), AdamW with lr, then the balancing-bias
 * update from the last forward's loads. Returns the grad norm before clipping. */
double model_optimizer_step(Model *m, const TrainConfig *t, float lr);
/* the same with the grad norm already computed by model_grad_norm */
void model_optimizer_step_with_norm(Model *m, const TrainConfig *t, float lr, double grad_norm);

/* Where a non-finite value is, for error messages. Each writes a description of the first
 * non-finite tensor into out and returns how many tensors are non-finite (0: none).
 * Weights and gradients are named by their Hugging Face tensor names; gradients are searched
 * in backward order (last layer first: the first to go non-finite). Activations of the last
 * forward are searched in forward order ("layer 2 attention output", "logits", ...). */
int model_find_nonfinite_weight(const Model *m, char *out, size_t cap);
int model_find_nonfinite_grad(const Model *m, char *out, size_t cap);
int model_find_nonfinite_activation(const Model *m, char *out, size_t cap);
/* counts of parameters: total, active per token (top-K experts only), embedding */
void model_param_counts(const Model *m, size_t *total, size_t *active, size_t *embedding);
/* forward FLOPs per token at sequence length T (matmuls + attention) */
double model_flops_per_token(const ModelConfig *c, int T);
/* load of MoE layer l in the last forward: host copy into loads (E) */
void model_layer_loads(const Model *m, int layer, int32_t *loads);
/* the top-K experts of MoE layer l per token in the last forward: host copy into topk (B*T, K) */
void model_layer_topk(const Model *m, int layer, int32_t *topk);
/* the same for every MoE layer, in layer order: topk (MoE layers, B*T, K) */
void model_moe_topk(const Model *m, int32_t *topk);
/* The loss-free balancing biases of every MoE layer, layer order, E floats each (n_moe * E in
 * all): host copies. The biases steer the selection in training only; no Hugging Face family
 * the engine writes has them, so evaluation as transformers computes a checkpoint sets them
 * to zero (model_balance_bias_set with NULL). */
void model_balance_bias_get(const Model *m, float *out);
/* the same into a malloc'd copy (NULL without MoE layers); *largest: the largest |bias| (0: all zero) */
float *model_balance_bias_copy(const Model *m, double *largest);
void model_balance_bias_set(Model *m, const float *in); /* NULL: zeros */

#endif
