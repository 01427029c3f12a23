/* config_family.c - config.json of the Hugging Face families the engine trains (see config.h,
 * "Hugging Face families"): which model_type is which family, the family's defaults for keys
 * a config leaves out, the keys whose names differ, the key policy, and the family's own
 * keys when writing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "util.h"
#include "util/json.h"

typedef struct {
    const char *model_type, *architecture;
    int family;
    int dense; /* the family's model without MoE layers (qwen3: a qwen3_moe model with none) */
} FamilyName;

static const FamilyName FAMILIES[] = {
    {"qwen3_moe", "Qwen3MoeForCausalLM", MODEL_FAMILY_QWEN3_MOE, 0},
    {"qwen2_moe", "Qwen2MoeForCausalLM", MODEL_FAMILY_QWEN2_MOE, 0},
    {"olmoe", "OlmoeForCausalLM", MODEL_FAMILY_OLMOE, 0},
    {"mixtral", "MixtralForCausalLM", MODEL_FAMILY_MIXTRAL, 0},
    {"qwen3", "Qwen3ForCausalLM", MODEL_FAMILY_QWEN3_MOE, 1},
};
#define N_FAMILIES (int)(sizeof FAMILIES / sizeof *FAMILIES)

/* families `grow` copies but the engine does not run */
static const char *const GROWN_ONLY[] = {"deepseek_v2", "deepseek_v3", "gpt_oss"};

static const FamilyName *family_of(const ModelConfig *c) {
    int dense = c->family == MODEL_FAMILY_QWEN3_MOE && model_config_n_moe_layers(c) == 0;
    for (int i = 0; i < N_FAMILIES; i++)
        if (FAMILIES[i].family == c->family && FAMILIES[i].dense == dense) return &FAMILIES[i];
    return NULL;
}

const char *config_family_model_type(const ModelConfig *c) {
    const FamilyName *f = family_of(c);
    return f ? f->model_type : "?";
}

const char *config_family_architecture(const ModelConfig *c) {
    const FamilyName *f = family_of(c);
    return f ? f->architecture : "?";
}

int config_family_is_dense(const ModelConfig *c) {
    const FamilyName *f = family_of(c);
    return f && f->dense;
}

/* Keys that do not change the math, ignored on reading and kept (extra_keys) for writing:
 * generation ids, dtypes, bookkeeping, training-only losses the train config sets instead. */
static const char *const IGNORED[] = {
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "use_cache", "bos_token_id",
    "eos_token_id", "pad_token_id", "output_router_logits", "router_aux_loss_coef", "router_z_loss_coef",
    "_name_or_path", "tokenizer_class", "max_window_layers", "return_dict", "output_hidden_states",
    "output_attentions", "torchscript", "is_encoder_decoder", "chunk_size_feed_forward", "quantization_config_note",
};

/* keys the engine reads (config.c and the family code below), per family (0: every family) */
typedef struct {
    const char *key;
    int family; /* -1: every family */
} KnownKey;

static const KnownKey KNOWN[] = {
    {"vocab_size", -1}, {"hidden_size", -1}, {"num_hidden_layers", -1}, {"num_attention_heads", -1},
    {"num_key_value_heads", -1}, {"head_dim", -1}, {"intermediate_size", -1}, {"num_experts_per_tok", -1},
    {"tie_word_embeddings", -1}, {"rope_theta", -1}, {"rms_norm_eps", -1}, {"max_position_embeddings", -1},
    {"initializer_range", -1}, {"hidden_act", -1}, {"attention_dropout", -1}, {"rope_scaling", -1},
    {"rope_parameters", -1}, {"attention_bias", -1}, {"sliding_window", -1}, {"use_sliding_window", -1},
    {"layer_types", -1}, {"mlp_bias", -1},
    {"num_experts", MODEL_FAMILY_QWEN3_MOE}, {"moe_intermediate_size", MODEL_FAMILY_QWEN3_MOE},
    {"decoder_sparse_step", MODEL_FAMILY_QWEN3_MOE}, {"mlp_only_layers", MODEL_FAMILY_QWEN3_MOE},
    {"norm_topk_prob", MODEL_FAMILY_QWEN3_MOE},
    {"num_experts", MODEL_FAMILY_QWEN2_MOE}, {"moe_intermediate_size", MODEL_FAMILY_QWEN2_MOE},
    {"decoder_sparse_step", MODEL_FAMILY_QWEN2_MOE}, {"mlp_only_layers", MODEL_FAMILY_QWEN2_MOE},
    {"norm_topk_prob", MODEL_FAMILY_QWEN2_MOE}, {"shared_expert_intermediate_size", MODEL_FAMILY_QWEN2_MOE},
    {"qkv_bias", MODEL_FAMILY_QWEN2_MOE},
    {"num_experts", MODEL_FAMILY_OLMOE}, {"norm_topk_prob", MODEL_FAMILY_OLMOE}, {"clip_qkv", MODEL_FAMILY_OLMOE},
    /* transformers 5 writes every MoE family's expert count as num_local_experts */
    {"num_local_experts", -1}, {"router_jitter_noise", MODEL_FAMILY_MIXTRAL},
};

static const char *model_type_name(int family) {
    for (int i = 0; i < N_FAMILIES; i++)
        if (FAMILIES[i].family == family) return FAMILIES[i].model_type;
    return "?";
}

static int is_ignored(const char *key) {
    if (!strncmp(key, "upcycle_", 8)) return 1; /* ours: read by config.c where they matter */
    for (size_t i = 0; i < sizeof IGNORED / sizeof *IGNORED; i++)
        if (!strcmp(key, IGNORED[i])) return 1;
    return 0;
}

static int is_known(const char *key, int family) {
    for (size_t i = 0; i < sizeof KNOWN / sizeof *KNOWN; i++)
        if (!strcmp(key, KNOWN[i].key) && (KNOWN[i].family < 0 || KNOWN[i].family == family)) return 1;
    return 0;
}

int config_family_detect(const cJSON *j, const char *path, int *family, int *hf_origin, int *dense) {
    *family = MODEL_FAMILY_QWEN3_MOE, *hf_origin = 0, *dense = 0;
    const char *model_type = NULL;
    if (json_opt_string(path, j, "model_type", NULL, &model_type)) return -1;
    if (!model_type) return 0; /* a --config or plan "model" object: our keys and defaults */
    for (size_t i = 0; i < sizeof GROWN_ONLY / sizeof *GROWN_ONLY; i++)
        if (!strcmp(model_type, GROWN_ONLY[i]))
            return up_error("%s: model_type %s: the engine does not train or evaluate this family; expected qwen3_moe, "
                            "qwen2_moe, olmoe or mixtral (`upcycle grow --factor M` grows it by copy)", path, model_type);
    for (int i = 0; i < N_FAMILIES; i++)
        if (!strcmp(model_type, FAMILIES[i].model_type)) {
            *family = FAMILIES[i].family, *dense = FAMILIES[i].dense;
            /* written by us: our upcycle_* keys; else a Hugging Face config, whose absent keys
             * take the family's defaults, not ours */
            *hf_origin = !json_has(j, "upcycle_qk_norm");
            return 0;
        }
    return up_error("%s: model_type %s; expected one the engine trains: qwen3_moe, qwen2_moe, olmoe, mixtral or qwen3 (dense)", path, model_type);
}

/* transformers' defaults (the configuration classes) for the keys the engine reads */
void config_family_defaults(ModelConfig *c, int family) {
    c->family = family;
    c->decoder_sparse_step = 1;
    c->first_k_dense = 0;
    c->tie_embeddings = 0;
    c->rope_theta = 10000.0f;
    c->init_std = 0.02f;
    c->norm_topk_prob = 0;
    c->qk_norm = 0, c->qk_norm_full = 0;
    c->rms_norm_eps = 1e-6f;
    switch (family) {
    case MODEL_FAMILY_QWEN3_MOE:
        c->qk_norm = 1; /* every Qwen3 attention has per-head q_norm and k_norm */
        c->max_seq_len = 32768;
        break;
    case MODEL_FAMILY_QWEN2_MOE:
        c->attention_bias = 1; /* q/k/v projections with biases */
        c->max_seq_len = 32768;
        break;
    case MODEL_FAMILY_OLMOE:
        c->qk_norm = 1, c->qk_norm_full = 1;
        c->rms_norm_eps = 1e-5f;
        c->max_seq_len = 4096;
        break;
    case MODEL_FAMILY_MIXTRAL:
        c->norm_topk_prob = 1; /* softmax over the top-K logits = renormalized top-K probabilities */
        c->rms_norm_eps = 1e-5f;
        c->max_seq_len = 131072;
        break;
    }
}

/* A key that must have one value for the engine's math (e.g. hidden_act silu) */
static int require_string(const cJSON *j, const char *path, const char *key, const char *want) {
    const char *v = NULL;
    if (json_opt_string(path, j, key, want, &v)) return -1;
    if (strcmp(v, want)) return up_error("%s: field %s is \"%s\"; expected \"%s\" (the only one the engine implements)", path, key, v, want);
    return 0;
}

static int require_zero(const cJSON *j, const char *path, const char *key, const char *what) {
    double v = 0;
    if (json_opt_number(path, j, key, 0, &v)) return -1;
    if (v != 0) return up_error("%s: field %s is %g; expected 0 (%s is not implemented)", path, key, v, what);
    return 0;
}

static int require_absent(const cJSON *j, const char *path, const char *key, const char *what) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (v && !cJSON_IsNull(v) && !(cJSON_IsObject(v) && !v->child))
        return up_error("%s: field %s is set; expected null (%s is not implemented)", path, key, what);
    return 0;
}

/* keys written from the config itself, never from extra_keys */
static int is_written(const char *key) {
    return !strcmp(key, "architectures") || !strcmp(key, "model_type") || !strcmp(key, "torch_dtype") || !strcmp(key, "dtype") ||
           !strncmp(key, "upcycle_", 8);
}

/* the ignored keys' values, kept to be written back (dropped, with a note, if they do not fit) */
static void keep_extra_keys(ModelConfig *c, const cJSON *j, const char *path) {
    cJSON *extra = cJSON_CreateObject();
    for (const cJSON *it = j ? j->child : NULL; it; it = it->next)
        if (is_ignored(it->string) && !is_written(it->string)) cJSON_AddItemToObject(extra, it->string, cJSON_Duplicate(it, 1));
    char *text = extra->child ? cJSON_PrintUnformatted(extra) : NULL;
    c->extra_keys[0] = 0;
    if (text && strlen(text) < sizeof c->extra_keys) snprintf(c->extra_keys, sizeof c->extra_keys, "%s", text);
    else if (text) fprintf(stderr, "upcycle: %s: its keys that do not change the math take more than %zu bytes; they are not written back\n", path, sizeof c->extra_keys - 1);
    free(text);
    cJSON_Delete(extra);
}

void config_family_write_extra(const ModelConfig *c, cJSON *j) {
    cJSON *extra = c->extra_keys[0] ? cJSON_Parse(c->extra_keys) : NULL;
    for (cJSON *it = extra ? extra->child : NULL; it; it = it->next)
        if (!cJSON_GetObjectItemCaseSensitive(j, it->string)) cJSON_AddItemToObject(j, it->string, cJSON_Duplicate(it, 1));
    cJSON_Delete(extra);
}

int config_family_read(ModelConfig *c, const cJSON *j, const char *path, int family, int hf_origin) {
    c->family = family;
    keep_extra_keys(c, j, path);
    /* the key policy: what the engine does not know might change the math */
    for (const cJSON *it = j ? j->child : NULL; it; it = it->next)
        if (!is_ignored(it->string) && !is_known(it->string, family))
            return up_error("%s: key %s: not one the engine implements for %s; expected only the keys of a %s config the "
                            "engine trains (docs/hf-checkpoints.md)", path, it->string, model_type_name(family),
                            model_type_name(family));
    int rc = require_string(j, path, "hidden_act", "silu");
    if (!rc) rc = require_zero(j, path, "attention_dropout", "attention dropout");
    if (!rc) rc = require_absent(j, path, "rope_scaling", "RoPE scaling");
    if (!rc) {
        const cJSON *rp;
        rc = json_opt_object(path, j, "rope_parameters", &rp); /* transformers 5: {"rope_type", "rope_theta"} */
        if (!rc && rp) {
            rc = require_string(rp, path, "rope_parameters.rope_type", "default");
            double theta = c->rope_theta;
            if (!rc) rc = json_opt_number(path, rp, "rope_parameters.rope_theta", theta, &theta);
            c->rope_theta = (float)theta;
        }
    }
    const cJSON *types;
    if (!rc) rc = json_opt_array(path, j, "layer_types", &types);
    for (int i = 0; !rc && i < cJSON_GetArraySize(types); i++) {
        const char *t;
        rc = json_elem_string(path, types, "layer_types", i, &t);
        if (!rc && strcmp(t, "full_attention"))
            rc = up_error("%s: field layer_types[%d] is \"%s\"; expected \"full_attention\" (sliding-window attention is not implemented)", path, i, t);
    }
    int sliding = 0;
    if (!rc) rc = json_opt_bool(path, j, "use_sliding_window", 0, &sliding);
    if (!rc && sliding) rc = up_error("%s: field use_sliding_window is true; expected false (sliding-window attention is not implemented)", path);
    if (!rc && family == MODEL_FAMILY_MIXTRAL) rc = require_absent(j, path, "sliding_window", "sliding-window attention");
    if (!rc) rc = require_zero(j, path, "router_jitter_noise", "router jitter noise");
    int mlp_bias = 0;
    if (!rc) rc = json_opt_bool(path, j, "mlp_bias", 0, &mlp_bias);
    if (!rc && mlp_bias) rc = up_error("%s: field mlp_bias is true; expected false (MLP biases are not implemented)", path);
    if (rc) return -1;

    /* the dtype the weights are kept in (transformers 5 writes "dtype", earlier "torch_dtype") */
    const char *dtype = NULL;
    if (json_opt_string(path, j, "torch_dtype", NULL, &dtype) || (!dtype && json_opt_string(path, j, "dtype", NULL, &dtype))) return -1;
    if (dtype) {
        if (!strcmp(dtype, "float32")) c->weight_dtype = WEIGHT_F32;
        else if (!strcmp(dtype, "bfloat16")) c->weight_dtype = WEIGHT_BF16;
        else if (!strcmp(dtype, "float16")) c->weight_dtype = WEIGHT_F16;
        else return up_error("%s: field torch_dtype is \"%s\"; expected float32, bfloat16 or float16", path, dtype);
    }
    /* Hugging Face's attention_bias puts a bias on o_proj too, which the engine does not have;
     * q/k/v biases alone are Qwen2-MoE's (qkv_bias), or our upcycle_attention_bias */
    int bias = 0;
    if (json_opt_bool(path, j, "attention_bias", 0, &bias)) return -1;
    if (family == MODEL_FAMILY_QWEN2_MOE) {
        /* Qwen2-MoE: q/k/v biases (qkv_bias where a config names it), attention_bias for o_proj */
        int qkv = hf_origin ? 1 : c->attention_bias;
        if (json_opt_bool(path, j, "qkv_bias", qkv, &qkv)) return -1;
        if (bias) return up_error("%s: field attention_bias is true; expected false (an o_proj bias is not implemented)", path);
        c->attention_bias = qkv;
    } else if (bias) {
        return up_error("%s: field attention_bias is true; expected false (an o_proj bias is not implemented)", path);
    }
    /* the expert count: num_experts, or num_local_experts (Mixtral's, and every family's in
     * transformers 5); both must agree where both are given */
    int local = -1;
    if (json_opt_int(path, j, "num_local_experts", -1, &local)) return -1;
    if (local >= 0 && json_has(j, "num_experts") && local != c->n_experts)
        return up_error("%s: fields num_experts %d and num_local_experts %d disagree; expected one expert count", path, c->n_experts, local);
    if (local >= 0) c->n_experts = local;
    /* the q/k norm each family's transformers code always computes, whatever our marker says
     * (qwen3_moe's written before the family check may say otherwise: upcycle_* keys, read in config.c) */
    if (family == MODEL_FAMILY_QWEN2_MOE || family == MODEL_FAMILY_MIXTRAL) c->qk_norm = 0, c->qk_norm_full = 0;
    if (family == MODEL_FAMILY_OLMOE) c->qk_norm = 1, c->qk_norm_full = 1;
    switch (family) {
    case MODEL_FAMILY_QWEN2_MOE:
        if (json_opt_int(path, j, "shared_expert_intermediate_size", c->shared_expert_size, &c->shared_expert_size)) return -1;
        break;
    case MODEL_FAMILY_OLMOE: {
        /* every layer is MoE and intermediate_size is the experts' width */
        c->moe_intermediate_size = c->intermediate_size;
        c->decoder_sparse_step = 1, c->first_k_dense = 0;
        double clip = c->clip_qkv;
        if (json_opt_number(path, j, "clip_qkv", clip, &clip)) return -1;
        c->clip_qkv = (float)clip;
        break;
    }
    case MODEL_FAMILY_MIXTRAL:
        c->moe_intermediate_size = c->intermediate_size;
        c->decoder_sparse_step = 1, c->first_k_dense = 0;
        c->norm_topk_prob = 1;
        break;
    }
    return 0;
}

/* ---- what each family's transformers code computes ----
 * A model is written as its config's family only when that family's code computes it: every
 * switch below that the model has must be one the family holds. Families as bits; QWEN3 is the
 * dense qwen3 a qwen3_moe model without MoE layers is written as. */
enum { F_QWEN3_MOE = 1, F_QWEN2_MOE = 2, F_OLMOE = 4, F_MIXTRAL = 8, F_QWEN3 = 16 };

typedef struct {
    const char *what;              /* the switch, as the refusal names it */
    int (*has)(const ModelConfig *c);
    int holds;                     /* F_* of the families whose transformers code computes it */
} FamilySwitch;

static int sw_head_norm(const ModelConfig *c) { return c->qk_norm && !c->qk_norm_full; }
static int sw_full_norm(const ModelConfig *c) { return c->qk_norm && c->qk_norm_full; }
static int sw_no_norm(const ModelConfig *c) { return !c->qk_norm; }
static int sw_qkv_bias(const ModelConfig *c) { return c->attention_bias; }
static int sw_shared(const ModelConfig *c) { return c->shared_expert_size > 0; }
static int sw_no_shared(const ModelConfig *c) { return c->shared_expert_size == 0 && model_config_n_moe_layers(c) > 0; }
static int sw_clip(const ModelConfig *c) { return c->clip_qkv > 0; }
static int sw_dense_layers(const ModelConfig *c) {
    int n_moe = model_config_n_moe_layers(c);
    return n_moe > 0 && n_moe < c->n_layers;
}
static int sw_no_moe(const ModelConfig *c) { return model_config_n_moe_layers(c) == 0; }
static int sw_unnormalized(const ModelConfig *c) { return !c->norm_topk_prob && model_config_n_moe_layers(c) > 0; }
static int sw_head_dim(const ModelConfig *c) { return c->head_dim * c->n_heads != c->d_model; }

static const FamilySwitch SWITCHES[] = {
    {"per-head q/k RMSNorm (qk_norm)", sw_head_norm, F_QWEN3_MOE | F_QWEN3},
    {"q/k RMSNorm over the whole projection (qk_norm_full)", sw_full_norm, F_OLMOE},
    {"no q/k norm (qk_norm false)", sw_no_norm, F_QWEN2_MOE | F_MIXTRAL},
    {"q/k/v projection biases (attention_bias)", sw_qkv_bias, F_QWEN2_MOE},
    {"a shared expert (shared_expert_size)", sw_shared, F_QWEN2_MOE},
    {"MoE layers without a shared expert", sw_no_shared, F_QWEN3_MOE | F_OLMOE | F_MIXTRAL},
    {"q/k/v clamping (clip_qkv)", sw_clip, F_OLMOE},
    {"dense layers between MoE layers (decoder_sparse_step, mlp_only_layers)", sw_dense_layers, F_QWEN3_MOE | F_QWEN2_MOE},
    {"no MoE layers", sw_no_moe, F_QWEN3},
    {"top-K gates not renormalized (norm_topk_prob false)", sw_unnormalized, F_QWEN3_MOE | F_QWEN2_MOE | F_OLMOE},
    {"head_dim x num_attention_heads != hidden_size", sw_head_dim, F_QWEN3_MOE | F_QWEN2_MOE | F_MIXTRAL | F_QWEN3},
};

static int family_bit(const ModelConfig *c) {
    if (config_family_is_dense(c)) return F_QWEN3;
    switch (c->family) {
    case MODEL_FAMILY_QWEN2_MOE: return F_QWEN2_MOE;
    case MODEL_FAMILY_OLMOE: return F_OLMOE;
    case MODEL_FAMILY_MIXTRAL: return F_MIXTRAL;
    default: return F_QWEN3_MOE;
    }
}

static void family_names(int bits, char *out, size_t n) {
    static const char *const names[] = {"qwen3_moe", "qwen2_moe", "olmoe", "mixtral", "qwen3 (no MoE layers)"};
    out[0] = 0;
    for (int i = 0; i < 5; i++)
        if (bits & (1 << i)) snprintf(out + strlen(out), n - strlen(out), "%s%s", out[0] ? " or " : "", names[i]);
}

int config_family_check(const ModelConfig *c, const char *origin) {
    int bit = family_bit(c);
    for (size_t i = 0; i < sizeof SWITCHES / sizeof *SWITCHES; i++) {
        if (!SWITCHES[i].has(c) || (SWITCHES[i].holds & bit)) continue;
        char holds[160];
        family_names(SWITCHES[i].holds, holds, sizeof holds);
        return up_error("%s: the model has %s, which %s's transformers code does not compute; expected model_type %s (the "
                        "family that holds it), so nothing is written", origin, SWITCHES[i].what,
                        config_family_model_type(c), holds);
    }
    return 0;
}
