/* config.h - the model configuration (one struct, Hugging Face Qwen3-MoE semantics),
 * the training configuration, presets, validation and config.json I/O. */
#ifndef UPCYCLE_CONFIG_H
#define UPCYCLE_CONFIG_H

#include <stdio.h>

#define MAX_LAYERS 128

typedef struct {
    int vocab_size;
    int d_model;               /* hidden_size */
    int n_layers;              /* num_hidden_layers */
    int n_heads;               /* num_attention_heads */
    int n_kv_heads;            /* num_key_value_heads (GQA groups) */
    int head_dim;              /* head_dim (default d_model / n_heads) */
    int intermediate_size;     /* dense SwiGLU width */
    int n_experts;             /* num_experts (0: no MoE layers) */
    int top_k;                 /* num_experts_per_tok */
    int moe_intermediate_size; /* expert SwiGLU width */
    int decoder_sparse_step;   /* layer i is MoE iff (i+1) % step == 0 (1: every layer) */
    int first_k_dense;         /* layers [0, k) are dense (written as mlp_only_layers) */
    int norm_topk_prob;        /* renormalize the K selected gate weights */
    int qk_norm;               /* per-head RMSNorm on q and k (Qwen3) */
    int tie_embeddings;        /* tie_word_embeddings */
    float rope_theta;
    float rms_norm_eps;
    int max_seq_len;           /* max_position_embeddings */
    float init_std;            /* initializer_range */
    /* ---- Hugging Face families beyond Qwen3-MoE (0 everywhere: Qwen3-MoE as above) ---- */
    int family;                /* MODEL_FAMILY_*: which model_type, names and config keys */
    int attention_bias;        /* q/k/v projections have biases, o_proj none (Qwen2-MoE) */
    int qk_norm_full;          /* with qk_norm: RMSNorm over the whole q and k projections,
                                * weights (H*head_dim) and (KV*head_dim), not per head (OLMoE) */
    float clip_qkv;            /* > 0: q, k, v clamped to [-clip_qkv, clip_qkv] after the projection
                                * and the q/k norm, before RoPE (OLMoE) */
    int shared_expert_size;    /* > 0: every MoE layer adds a shared SwiGLU expert of this width on
                                * every token, scaled by sigmoid(x . shared_expert_gate) (Qwen2-MoE) */
} ModelConfig;

/* ModelConfig.family: the Hugging Face model_type a checkpoint reads and writes */
enum { MODEL_FAMILY_QWEN3_MOE = 0, MODEL_FAMILY_QWEN2_MOE, MODEL_FAMILY_OLMOE, MODEL_FAMILY_MIXTRAL };

typedef enum { SCHED_WSD = 0, SCHED_COSINE = 1, SCHED_CONSTANT = 2 } ScheduleKind;
typedef enum { DECAY_LINEAR = 0, DECAY_1_SQRT = 1 } DecayShape;

typedef struct {
    int batch_size;            /* B sequences per step */
    int seq_len;               /* T tokens per sequence */
    int steps;
    float lr, min_lr;
    int warmup_steps;
    float decay_frac;          /* WSD: fraction of steps spent decaying (default 0.1) */
    ScheduleKind schedule;
    DecayShape decay_shape;
    float beta1, beta2, adam_eps, weight_decay, grad_clip;
    float bias_update_rate;    /* loss-free balancing u (0 disables) */
    float aux_loss_coef;       /* Switch-style balance loss (default 0) */
    float z_loss_coef;         /* router z-loss (default 0) */
    unsigned long long seed;
    int eval_every, eval_batches, save_every, log_every;
    /* guards: skip (no update) a step whose loss or gradient is non-finite (skip_nonfinite) or
     * whose loss exceeds spike_factor x the running mean (0 disables); more than max_skips
     * skipped steps in a run stop it */
    int skip_nonfinite;
    float spike_factor;
    int max_skips;
    int precision;             /* Precision (backend.h): PRECISION_FP32 (default) or PRECISION_BF16;
                                * a run-time choice (--precision), not written to checkpoints */
} TrainConfig;

typedef struct {
    const char *name;
    const char *summary;
    ModelConfig model;
    TrainConfig train;
} Preset;

void model_config_defaults(ModelConfig *c);
void train_config_defaults(TrainConfig *t);
const Preset *preset_find(const char *name);      /* NULL if unknown */
const Preset *preset_list(int *count);
int model_config_validate(const ModelConfig *c, const char *origin); /* 0 or up_error */
int train_config_validate(const TrainConfig *t, const char *origin);
int layer_is_moe(const ModelConfig *c, int layer);
int model_config_n_moe_layers(const ModelConfig *c);
void model_config_print(const ModelConfig *c, FILE *f);
void train_config_print(const TrainConfig *t, FILE *f);

/* config.json (Hugging Face keys, model_type "qwen3_moe", plus our "upcycle_*" extras; the
 * families' switches as upcycle_attention_bias, upcycle_shared_expert_size, upcycle_qk_norm_full
 * and upcycle_clip_qkv, written only when set). Reading checks types and ranges and names the
 * file and key in its error. */
int model_config_save_json(const ModelConfig *c, const char *path);
int model_config_load_json(ModelConfig *c, const char *path);
char *model_config_to_json_string(const ModelConfig *c);

/* A --config FILE for `train`: {"model": {HF keys...}, "train": {...}} or a bare HF config. */
int train_config_load_json(ModelConfig *m, TrainConfig *t, const char *path);
int train_config_save_json(const TrainConfig *t, const char *path); /* bare training keys */
int train_config_load_bare_json(TrainConfig *t, const char *path);

/* Overlays the keys present in a cJSON object on an existing config (Hugging Face keys for the
 * model, training keys for train); errors name origin and the key. */
struct cJSON;
int model_config_overlay_json(ModelConfig *c, const struct cJSON *j, const char *origin);
int train_config_overlay_json(TrainConfig *t, const struct cJSON *j, const char *origin);

#endif
