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
    /* ---- how checkpoints store the weights (no effect on the math) ---- */
    int weight_dtype;          /* WEIGHT_F32 (default), WEIGHT_BF16, WEIGHT_F16: config.json
                                * torch_dtype, the dtype model.safetensors is written in */
    int packed_experts;        /* experts stored packed (transformers 5 gate_up_proj/down_proj):
                                * found when loading, kept when saving */
    char extra_keys[1024];     /* a JSON object of the source config's keys that do not change
                                * the math (token ids, ...), written back as they were; "" if none */
} ModelConfig;

enum { WEIGHT_F32 = 0, WEIGHT_BF16, WEIGHT_F16 };
/* an option that overrides weight_dtype: 0 keeps the model's, SAVE_AS(WEIGHT_*) sets it */
#define SAVE_AS(weight_dtype) ((weight_dtype) + 1)
/* an option that overrides packed_experts: 0 keeps the model's */
enum { SAVE_LAYOUT_KEEP = 0, SAVE_PER_EXPERT, SAVE_PACKED };

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

/* config.json (Hugging Face keys of the model's family, plus our marker "upcycle_qk_norm" and the
 * note "upcycle_balance_bias", neither of which changes the family's math). Configs written
 * before the family check may carry upcycle_attention_bias, upcycle_shared_expert_size,
 * upcycle_qk_norm_full and upcycle_clip_qkv on a qwen3_moe model: they are still read (and such a
 * model is refused when saved). Reading checks types and ranges and names the file and key. */

/* Hugging Face families (src/config_family.c). A config.json whose model_type is qwen3_moe,
 * qwen2_moe, olmoe or mixtral is read with that family's key names; without our upcycle_*
 * keys (a Hugging Face checkpoint), keys it leaves out take transformers' defaults for the
 * family, not ours. Every key is one the engine implements (with a value it implements:
 * hidden_act silu, no RoPE scaling, no sliding window, no dropout, ...) or one known not to
 * change the math (torch_dtype, use_cache, token ids, ...; ignored); any other key is refused
 * with one line naming it. deepseek_v2/v3 and gpt_oss are refused in one line: `grow`
 * copies them, the engine does not run them. An object without model_type (a --config or a
 * plan's "model") has our keys and defaults. Writing uses the family's model_type,
 * architecture and key names. */
struct cJSON;
int config_family_detect(const struct cJSON *j, const char *path, int *family, int *hf_origin, int *dense);
void config_family_defaults(ModelConfig *c, int family);
int config_family_read(ModelConfig *c, const struct cJSON *j, const char *path, int family, int hf_origin);
/* the model_type and architecture a config is written as: its family's, or qwen3 /
 * Qwen3ForCausalLM for a qwen3_moe model without MoE layers (config_family_is_dense) */
const char *config_family_model_type(const ModelConfig *c);
int config_family_is_dense(const ModelConfig *c);
/* 0 when the family's transformers code computes the model c; else one up_error line naming the
 * switch it lacks (q/k/v biases, a shared expert, the whole-projection q/k norm, clip_qkv, dense
 * layers, ...) and the families that hold it. Checkpoints are written only after it passes. */
int config_family_check(const ModelConfig *c, const char *origin);
void config_family_write_extra(const ModelConfig *c, struct cJSON *j); /* extra_keys into j */
const char *config_family_architecture(const ModelConfig *c);
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
