#include "config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "util/json.h"

void model_config_defaults(ModelConfig *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 256;
    c->d_model = 128;
    c->n_layers = 4;
    c->n_heads = 4;
    c->n_kv_heads = 2;
    c->head_dim = 0; /* derived: d_model / n_heads */
    c->intermediate_size = 384;
    c->n_experts = 8;
    c->top_k = 2;
    c->moe_intermediate_size = 128;
    c->decoder_sparse_step = 2;
    c->first_k_dense = 0;
    c->norm_topk_prob = 1;
    c->qk_norm = 1;
    c->tie_embeddings = 0;
    c->rope_theta = 10000.0f;
    c->rms_norm_eps = 1e-6f;
    c->max_seq_len = 4096;
    c->init_std = 0.02f;
}

void train_config_defaults(TrainConfig *t) {
    memset(t, 0, sizeof *t);
    t->batch_size = 16;
    t->seq_len = 128;
    t->steps = 600;
    t->lr = 3e-3f;
    t->min_lr = 3e-4f;
    t->warmup_steps = 30;
    t->decay_frac = 0.1f;
    t->schedule = SCHED_WSD;
    t->decay_shape = DECAY_LINEAR;
    t->beta1 = 0.9f;
    t->beta2 = 0.95f;
    t->adam_eps = 1e-8f;
    t->weight_decay = 0.1f;
    t->grad_clip = 1.0f;
    t->bias_update_rate = 1e-3f;
    t->aux_loss_coef = 0.0f;
    t->z_loss_coef = 0.0f;
    t->seed = 1234;
    t->eval_every = 100;
    t->eval_batches = 8;
    t->save_every = 0; /* 0: only at the end */
    t->log_every = 10;
    t->skip_nonfinite = 0;
    t->spike_factor = 0.0f;
    t->max_skips = 10;
}

/* ---- presets: sized for a 2-core machine ---- */

static Preset g_presets[8];
static int g_n_presets;

static void add_preset(const char *name, const char *summary, ModelConfig m, TrainConfig t) {
    if (m.head_dim == 0) m.head_dim = m.d_model / m.n_heads;
    g_presets[g_n_presets++] = (Preset){name, summary, m, t};
}

static void init_presets(void) {
    if (g_n_presets) return;
    ModelConfig m;
    TrainConfig t;

    /* tiny: interleaved MoE, byte vocab; the demo trains it in about two minutes */
    model_config_defaults(&m);
    train_config_defaults(&t);
    add_preset("tiny", "interleaved MoE, d=128, 4 layers, 8 experts top-2, T=128 (demo, ~2 min)", m, t);

    /* small: the engine's speed target (>= 40% of sgemm peak) is measured on it */
    model_config_defaults(&m);
    m.d_model = 256, m.n_layers = 6, m.n_heads = 8, m.n_kv_heads = 4, m.intermediate_size = 768;
    m.n_experts = 8, m.moe_intermediate_size = 384;
    train_config_defaults(&t);
    t.seq_len = 256, t.batch_size = 16, t.steps = 2000, t.lr = 2e-3f, t.min_lr = 2e-4f, t.warmup_steps = 100;
    add_preset("small", "interleaved MoE, d=256, 6 layers, 8 experts top-2, T=256", m, t);

    /* dense: no experts, for comparison and benchmarks */
    model_config_defaults(&m);
    m.n_experts = 0, m.top_k = 0, m.moe_intermediate_size = 0, m.decoder_sparse_step = 1;
    train_config_defaults(&t);
    add_preset("dense", "dense SwiGLU, d=128, 4 layers, T=128", m, t);

    /* interleaved: the paper's main family (dense and MoE layers alternate) */
    model_config_defaults(&m);
    m.d_model = 192, m.n_layers = 6, m.n_heads = 6, m.n_kv_heads = 2, m.intermediate_size = 512;
    m.n_experts = 16, m.moe_intermediate_size = 192;
    train_config_defaults(&t);
    t.steps = 1000;
    add_preset("interleaved", "dense/MoE alternating, d=192, 6 layers, 16 experts top-2, T=128", m, t);

    /* fullmoe: every layer MoE (the paper's 256->512 family, scaled down) */
    model_config_defaults(&m);
    m.n_layers = 4, m.n_experts = 16, m.top_k = 2, m.moe_intermediate_size = 96, m.decoder_sparse_step = 1;
    train_config_defaults(&t);
    t.steps = 1000;
    add_preset("fullmoe", "every layer MoE, d=128, 4 layers, 16 experts top-2, T=128", m, t);

    /* large: d_model 512, for throughput measurements */
    model_config_defaults(&m);
    m.d_model = 512, m.n_layers = 8, m.n_heads = 8, m.n_kv_heads = 4, m.intermediate_size = 1536;
    m.n_experts = 8, m.moe_intermediate_size = 768;
    train_config_defaults(&t);
    t.seq_len = 256, t.batch_size = 8, t.steps = 2000, t.lr = 1e-3f, t.min_lr = 1e-4f, t.warmup_steps = 100;
    add_preset("large", "interleaved MoE, d=512, 8 layers, 8 experts top-2, T=256 (benchmarks)", m, t);
}

const Preset *preset_find(const char *name) {
    init_presets();
    for (int i = 0; i < g_n_presets; i++)
        if (!strcmp(g_presets[i].name, name)) return &g_presets[i];
    return NULL;
}

const Preset *preset_list(int *count) {
    init_presets();
    *count = g_n_presets;
    return g_presets;
}

/* ---- layout and validation ---- */

int layer_is_moe(const ModelConfig *c, int layer) {
    if (c->n_experts <= 0 || layer < c->first_k_dense) return 0;
    int step = c->decoder_sparse_step > 0 ? c->decoder_sparse_step : 1;
    return (layer + 1) % step == 0;
}

int model_config_n_moe_layers(const ModelConfig *c) {
    int n = 0;
    for (int l = 0; l < c->n_layers; l++) n += layer_is_moe(c, l);
    return n;
}

#define REQUIRE(cond, ...)                 \
    do {                                   \
        if (!(cond)) return up_error(__VA_ARGS__); \
    } while (0)

int model_config_validate(const ModelConfig *c, const char *origin) {
    REQUIRE(c->vocab_size >= 2 && c->vocab_size <= (1 << 24), "%s: vocab_size %d; expected 2..16777216", origin, c->vocab_size);
    REQUIRE(c->d_model >= 1 && c->d_model <= 65536, "%s: hidden_size %d; expected 1..65536", origin, c->d_model);
    REQUIRE(c->n_layers >= 1 && c->n_layers <= MAX_LAYERS, "%s: num_hidden_layers %d; expected 1..%d", origin, c->n_layers, MAX_LAYERS);
    REQUIRE(c->n_heads >= 1, "%s: num_attention_heads %d; expected >= 1", origin, c->n_heads);
    REQUIRE(c->n_kv_heads >= 1 && c->n_heads % c->n_kv_heads == 0,
            "%s: num_attention_heads %d is not divisible by num_key_value_heads %d; expected a divisor of the head count",
            origin, c->n_heads, c->n_kv_heads);
    REQUIRE(c->head_dim >= 2 && c->head_dim % 2 == 0, "%s: head_dim %d; expected an even number >= 2 (RoPE rotates pairs)", origin, c->head_dim);
    REQUIRE(c->rope_theta > 0, "%s: rope_theta %g; expected > 0", origin, c->rope_theta);
    REQUIRE(c->rms_norm_eps > 0 && c->rms_norm_eps < 1, "%s: rms_norm_eps %g; expected in (0, 1)", origin, c->rms_norm_eps);
    REQUIRE(c->max_seq_len >= 1, "%s: max_position_embeddings %d; expected >= 1", origin, c->max_seq_len);
    REQUIRE(c->init_std > 0 && c->init_std < 1, "%s: initializer_range %g; expected in (0, 1)", origin, c->init_std);
    REQUIRE(c->n_experts >= 0 && c->n_experts <= 4096, "%s: num_experts %d; expected 0..4096", origin, c->n_experts);
    REQUIRE(c->decoder_sparse_step >= 1, "%s: decoder_sparse_step %d; expected >= 1", origin, c->decoder_sparse_step);
    REQUIRE(c->first_k_dense >= 0, "%s: first_k_dense %d; expected >= 0", origin, c->first_k_dense);
    int n_moe = model_config_n_moe_layers(c);
    if (n_moe > 0) {
        REQUIRE(c->top_k >= 1 && c->top_k <= c->n_experts,
                "%s: num_experts_per_tok (top-K) %d with %d experts; expected 1 <= top-K <= num_experts", origin, c->top_k,
                c->n_experts);
        REQUIRE(c->moe_intermediate_size >= 1, "%s: moe_intermediate_size %d; expected >= 1", origin, c->moe_intermediate_size);
    }
    if (n_moe < c->n_layers)
        REQUIRE(c->intermediate_size >= 1, "%s: intermediate_size %d; expected >= 1 for dense layers", origin, c->intermediate_size);
    REQUIRE(c->family >= MODEL_FAMILY_QWEN3_MOE && c->family <= MODEL_FAMILY_MIXTRAL, "%s: family %d; expected a known model family", origin, c->family);
    REQUIRE(c->clip_qkv >= 0 && isfinite(c->clip_qkv), "%s: clip_qkv %g; expected a finite value >= 0 (0: off)", origin, c->clip_qkv);
    REQUIRE(c->shared_expert_size >= 0, "%s: shared_expert_intermediate_size %d; expected >= 0", origin, c->shared_expert_size);
    REQUIRE(!c->qk_norm_full || c->qk_norm,
            "%s: q/k norm over the whole projection (OLMoE) without q/k norm; expected upcycle_qk_norm true with it", origin);
    return 0;
}

int train_config_validate(const TrainConfig *t, const char *origin) {
    REQUIRE(t->batch_size >= 1, "%s: batch_size %d; expected >= 1", origin, t->batch_size);
    REQUIRE(t->seq_len >= 1, "%s: seq_len %d; expected >= 1", origin, t->seq_len);
    REQUIRE(t->steps >= 1, "%s: steps %d; expected >= 1", origin, t->steps);
    REQUIRE(t->lr > 0 && isfinite(t->lr), "%s: lr %g; expected > 0", origin, t->lr);
    REQUIRE(t->min_lr >= 0 && t->min_lr <= t->lr, "%s: min_lr %g; expected 0 <= min_lr <= lr (%g)", origin, t->min_lr, t->lr);
    REQUIRE(t->warmup_steps >= 0, "%s: warmup_steps %d; expected >= 0", origin, t->warmup_steps);
    REQUIRE(t->decay_frac >= 0 && t->decay_frac <= 1, "%s: decay_frac %g; expected in [0, 1]", origin, t->decay_frac);
    REQUIRE(t->beta1 >= 0 && t->beta1 < 1, "%s: beta1 %g; expected in [0, 1)", origin, t->beta1);
    REQUIRE(t->beta2 >= 0 && t->beta2 < 1, "%s: beta2 %g; expected in [0, 1)", origin, t->beta2);
    REQUIRE(t->adam_eps > 0, "%s: adam_eps %g; expected > 0", origin, t->adam_eps);
    REQUIRE(t->weight_decay >= 0, "%s: weight_decay %g; expected >= 0", origin, t->weight_decay);
    REQUIRE(t->grad_clip >= 0, "%s: grad_clip %g; expected >= 0 (0 disables)", origin, t->grad_clip);
    REQUIRE(t->bias_update_rate >= 0, "%s: bias_update_rate %g; expected >= 0", origin, t->bias_update_rate);
    REQUIRE(t->aux_loss_coef >= 0 && t->z_loss_coef >= 0, "%s: aux/z loss coefficients must be >= 0", origin);
    REQUIRE(t->eval_every >= 0 && t->save_every >= 0 && t->log_every >= 1 && t->eval_batches >= 1,
            "%s: eval_every/save_every must be >= 0, log_every and eval_batches >= 1", origin);
    REQUIRE(t->spike_factor == 0 || (t->spike_factor > 1 && isfinite(t->spike_factor)),
            "%s: spike_factor %g; expected 0 (off) or > 1", origin, t->spike_factor);
    REQUIRE(t->max_skips >= 0, "%s: max_skips %d; expected >= 0", origin, t->max_skips);
    return 0;
}

void model_config_print(const ModelConfig *c, FILE *f) {
    fprintf(f, "model: vocab %d, d_model %d, layers %d (%d MoE, sparse step %d, first %d dense), heads %d/%d kv, head_dim %d\n",
            c->vocab_size, c->d_model, c->n_layers, model_config_n_moe_layers(c), c->decoder_sparse_step,
            c->first_k_dense, c->n_heads, c->n_kv_heads, c->head_dim);
    fprintf(f, "       dense ffn %d; experts %d top-%d, expert ffn %d, norm_topk_prob %d; qk_norm %d, tied %d, rope_theta %g, eps %g\n",
            c->intermediate_size, c->n_experts, c->top_k, c->moe_intermediate_size, c->norm_topk_prob, c->qk_norm,
            c->tie_embeddings, c->rope_theta, c->rms_norm_eps);
    if (c->attention_bias || c->shared_expert_size || c->qk_norm_full || c->clip_qkv > 0)
        fprintf(f, "       q/k/v biases %d; shared expert ffn %d; qk_norm over the whole projection %d; clip_qkv %g\n",
                c->attention_bias, c->shared_expert_size, c->qk_norm_full, c->clip_qkv);
}

static const char *schedule_name(ScheduleKind s) {
    return s == SCHED_WSD ? "wsd" : s == SCHED_COSINE ? "cosine" : "constant";
}

void train_config_print(const TrainConfig *t, FILE *f) {
    fprintf(f, "train: batch %d x seq %d, steps %d, lr %g -> %g (%s, warmup %d, decay %.0f%% %s), AdamW b=(%g,%g) eps %g wd %g, clip %g\n",
            t->batch_size, t->seq_len, t->steps, t->lr, t->min_lr, schedule_name(t->schedule), t->warmup_steps,
            100.0 * t->decay_frac, t->decay_shape == DECAY_1_SQRT ? "1-sqrt" : "linear", t->beta1, t->beta2, t->adam_eps,
            t->weight_decay, t->grad_clip);
    fprintf(f, "       balance bias u %g, aux loss %g, z-loss %g, seed %llu\n", t->bias_update_rate, t->aux_loss_coef,
            t->z_loss_coef, t->seed);
    if (t->skip_nonfinite || t->spike_factor > 0)
        fprintf(f, "       guards: skip non-finite steps %s, skip loss spikes > %gx the running mean%s, at most %d skips\n",
                t->skip_nonfinite ? "on" : "off", t->spike_factor, t->spike_factor > 0 ? "" : " (off)", t->max_skips);
}

/* ---- JSON ---- */

/* For printing: the float keys as float literals that read back as the same float (2.0, not 2:
 * transformers 5's strict config fields refuse an int for a float). Raw items, so only on a
 * tree about to be printed. */
static void float_literals(cJSON *j) {
    static const char *const keys[] = {"clip_qkv", "rope_theta", "rms_norm_eps", "initializer_range"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        cJSON *it = cJSON_GetObjectItemCaseSensitive(j, keys[k]);
        if (!cJSON_IsNumber(it)) continue;
        float v = (float)it->valuedouble;
        char text[40];
        for (int digits = 6; digits <= 9; digits++) {
            snprintf(text, sizeof text, "%.*g", digits, v);
            if (strtof(text, NULL) == v) break;
        }
        if (!strpbrk(text, ".eEn")) strcat(text, ".0");
        cJSON_ReplaceItemInObjectCaseSensitive(j, keys[k], cJSON_CreateRaw(text));
    }
}

static cJSON *model_config_to_json(const ModelConfig *c) {
    cJSON *j = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(j, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString(config_family_architecture(c)));
    cJSON_AddStringToObject(j, "model_type", config_family_model_type(c));
    int dense = config_family_is_dense(c); /* qwen3: no MoE keys */
    cJSON_AddNumberToObject(j, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(j, "hidden_size", c->d_model);
    cJSON_AddNumberToObject(j, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(j, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(j, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(j, "head_dim", c->head_dim);
    /* OLMoE and Mixtral: every layer is MoE and intermediate_size is the experts' width */
    int all_moe = c->family == MODEL_FAMILY_OLMOE || c->family == MODEL_FAMILY_MIXTRAL;
    cJSON_AddNumberToObject(j, "intermediate_size", all_moe ? c->moe_intermediate_size : c->intermediate_size);
    if (!dense) {
        cJSON_AddNumberToObject(j, c->family == MODEL_FAMILY_MIXTRAL ? "num_local_experts" : "num_experts", c->n_experts);
        cJSON_AddNumberToObject(j, "num_experts_per_tok", c->top_k);
    }
    if (!all_moe && !dense) {
        cJSON_AddNumberToObject(j, "moe_intermediate_size", c->moe_intermediate_size);
        cJSON_AddNumberToObject(j, "decoder_sparse_step", c->decoder_sparse_step);
        cJSON *mlp_only = cJSON_AddArrayToObject(j, "mlp_only_layers");
        for (int l = 0; l < c->first_k_dense && l < c->n_layers; l++) cJSON_AddItemToArray(mlp_only, cJSON_CreateNumber(l));
    }
    if (c->family != MODEL_FAMILY_MIXTRAL && !dense) cJSON_AddBoolToObject(j, "norm_topk_prob", c->norm_topk_prob);
    if (c->family == MODEL_FAMILY_QWEN2_MOE) cJSON_AddNumberToObject(j, "shared_expert_intermediate_size", c->shared_expert_size);
    if (c->family == MODEL_FAMILY_OLMOE) {
        if (c->clip_qkv > 0) cJSON_AddNumberToObject(j, "clip_qkv", c->clip_qkv);
        else cJSON_AddNullToObject(j, "clip_qkv");
    }
    cJSON_AddNumberToObject(j, "rope_theta", c->rope_theta);
    cJSON_AddNumberToObject(j, "rms_norm_eps", c->rms_norm_eps);
    cJSON_AddNumberToObject(j, "max_position_embeddings", c->max_seq_len);
    cJSON_AddNumberToObject(j, "initializer_range", c->init_std);
    cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tie_embeddings);
    if (c->family == MODEL_FAMILY_QWEN2_MOE) cJSON_AddBoolToObject(j, "qkv_bias", c->attention_bias); /* attention_bias: o_proj */
    cJSON_AddBoolToObject(j, "attention_bias", 0); /* Hugging Face's: with an o_proj bias, which the engine has not */
    cJSON_AddStringToObject(j, "hidden_act", "silu");
    cJSON_AddStringToObject(j, "torch_dtype", c->weight_dtype == WEIGHT_BF16 ? "bfloat16" : c->weight_dtype == WEIGHT_F16 ? "float16" : "float32");
    /* our marker (the family's own q/k norm, so it never disagrees with what transformers
     * computes once config_family_check passed) and a note on where the balancing bias is */
    cJSON_AddBoolToObject(j, "upcycle_qk_norm", c->qk_norm);
    if (!dense)
        cJSON_AddStringToObject(j, "upcycle_balance_bias", "training/balance_bias.safetensors: used in training for expert "
                                                           "selection only; not part of this model's function");
    config_family_write_extra(c, j);
    return j;
}

char *model_config_to_json_string(const ModelConfig *c) {
    cJSON *j = model_config_to_json(c);
    float_literals(j);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

static int write_json(cJSON *j, const char *path) {
    char *s = cJSON_Print(j);
    size_t n = strlen(s);
    s = xrealloc(s, n + 2);
    s[n] = '\n', s[n + 1] = 0;
    int rc = atomic_write_file(path, s, n + 1);
    free(s);
    return rc;
}

int model_config_save_json(const ModelConfig *c, const char *path) {
    cJSON *j = model_config_to_json(c);
    float_literals(j);
    int rc = write_json(j, path);
    cJSON_Delete(j);
    return rc;
}

/* Optional keys (absent or null: the value stays as it is) by util/json.h's rule. */
static int get_int(const cJSON *j, const char *key, int *out, const char *path) { return json_opt_int(path, j, key, *out, out); }

static int get_bool(const cJSON *j, const char *key, int *out, const char *path) { return json_opt_bool(path, j, key, *out, out); }

static int get_float(const cJSON *j, const char *key, float *out, const char *path) {
    double v;
    if (json_opt_number(path, j, key, *out, &v)) return -1;
    *out = (float)v;
    return 0;
}

static int model_config_from_json(ModelConfig *c, const cJSON *j, const char *path) {
    model_config_defaults(c);
    c->head_dim = 0;
    int family, hf_origin, dense;
    if (config_family_detect(j, path, &family, &hf_origin, &dense)) return -1;
    if (hf_origin) config_family_defaults(c, family);
    if (dense) c->n_experts = 0, c->top_k = 0, c->moe_intermediate_size = 0; /* qwen3 */
    /* fields a checkpoint must have */
    static const char *required[] = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"};
    for (size_t i = 0; i < sizeof required / sizeof *required; i++)
        if (!json_has(j, required[i]))
            return up_error("%s: field %s is missing; expected a Qwen3-MoE style config.json", path, required[i]);
    c->n_kv_heads = -1;
    int rc = 0;
    rc |= get_int(j, "vocab_size", &c->vocab_size, path);
    rc |= get_int(j, "hidden_size", &c->d_model, path);
    rc |= get_int(j, "num_hidden_layers", &c->n_layers, path);
    rc |= get_int(j, "num_attention_heads", &c->n_heads, path);
    rc |= get_int(j, "num_key_value_heads", &c->n_kv_heads, path);
    rc |= get_int(j, "head_dim", &c->head_dim, path);
    rc |= get_int(j, "intermediate_size", &c->intermediate_size, path);
    rc |= get_int(j, "num_experts", &c->n_experts, path);
    rc |= get_int(j, "num_experts_per_tok", &c->top_k, path);
    rc |= get_int(j, "moe_intermediate_size", &c->moe_intermediate_size, path);
    rc |= get_int(j, "decoder_sparse_step", &c->decoder_sparse_step, path);
    rc |= get_bool(j, "norm_topk_prob", &c->norm_topk_prob, path);
    rc |= get_bool(j, "upcycle_qk_norm", &c->qk_norm, path);
    rc |= get_bool(j, "tie_word_embeddings", &c->tie_embeddings, path);
    rc |= get_float(j, "rope_theta", &c->rope_theta, path);
    rc |= get_float(j, "rms_norm_eps", &c->rms_norm_eps, path);
    rc |= get_int(j, "max_position_embeddings", &c->max_seq_len, path);
    rc |= get_float(j, "initializer_range", &c->init_std, path);
    rc |= get_bool(j, "upcycle_attention_bias", &c->attention_bias, path);
    rc |= get_int(j, "upcycle_shared_expert_size", &c->shared_expert_size, path);
    rc |= get_bool(j, "upcycle_qk_norm_full", &c->qk_norm_full, path);
    rc |= get_float(j, "upcycle_clip_qkv", &c->clip_qkv, path);
    if (rc) return -1;
    if (c->n_kv_heads < 0) c->n_kv_heads = c->n_heads;
    if (c->clip_qkv == 0) c->clip_qkv = 0; /* -0.0 is off too, and is written as absent */
    /* mlp_only_layers must be a prefix [0, k): the only pattern the engine trains */
    const cJSON *mlp_only;
    if (json_opt_array(path, j, "mlp_only_layers", &mlp_only)) return -1;
    c->first_k_dense = 0;
    for (int i = 0; i < cJSON_GetArraySize(mlp_only); i++) {
        double v;
        if (json_elem_number(path, mlp_only, "mlp_only_layers", i, &v)) return -1;
        if (v != (double)i) /* compared as doubles: (int)1e10 is undefined */
            return up_error("%s: field mlp_only_layers[%d]; expected the prefix 0, 1, 2, ... (first-k dense layers)", path, i);
        c->first_k_dense = i + 1;
    }
    if (config_family_read(c, j, path, family, hf_origin)) return -1;
    if (dense && c->n_experts)
        return up_error("%s: model_type qwen3 with num_experts %d; expected model_type qwen3_moe for a model with experts", path, c->n_experts);
    if (c->head_dim == 0 && c->n_heads > 0) c->head_dim = c->d_model / c->n_heads;
    return model_config_validate(c, path);
}

static int parse_json_file(const char *path, cJSON **out) {
    *out = json_load_file(path, "a JSON configuration");
    return *out ? 0 : -1;
}

int model_config_load_json(ModelConfig *c, const char *path) {
    cJSON *j = NULL;
    if (parse_json_file(path, &j)) return -1;
    int rc = model_config_from_json(c, j, path);
    cJSON_Delete(j);
    return rc;
}

static cJSON *train_config_to_json(const TrainConfig *t) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "batch_size", t->batch_size);
    cJSON_AddNumberToObject(j, "seq_len", t->seq_len);
    cJSON_AddNumberToObject(j, "steps", t->steps);
    cJSON_AddNumberToObject(j, "lr", t->lr);
    cJSON_AddNumberToObject(j, "min_lr", t->min_lr);
    cJSON_AddNumberToObject(j, "warmup_steps", t->warmup_steps);
    cJSON_AddNumberToObject(j, "decay_frac", t->decay_frac);
    cJSON_AddStringToObject(j, "schedule", schedule_name(t->schedule));
    cJSON_AddStringToObject(j, "decay_shape", t->decay_shape == DECAY_1_SQRT ? "1-sqrt" : "linear");
    cJSON_AddNumberToObject(j, "beta1", t->beta1);
    cJSON_AddNumberToObject(j, "beta2", t->beta2);
    cJSON_AddNumberToObject(j, "adam_eps", t->adam_eps);
    cJSON_AddNumberToObject(j, "weight_decay", t->weight_decay);
    cJSON_AddNumberToObject(j, "grad_clip", t->grad_clip);
    cJSON_AddNumberToObject(j, "bias_update_rate", t->bias_update_rate);
    cJSON_AddNumberToObject(j, "aux_loss_coef", t->aux_loss_coef);
    cJSON_AddNumberToObject(j, "z_loss_coef", t->z_loss_coef);
    cJSON_AddNumberToObject(j, "seed", (double)t->seed);
    cJSON_AddNumberToObject(j, "eval_every", t->eval_every);
    cJSON_AddNumberToObject(j, "eval_batches", t->eval_batches);
    cJSON_AddNumberToObject(j, "save_every", t->save_every);
    cJSON_AddNumberToObject(j, "log_every", t->log_every);
    cJSON_AddBoolToObject(j, "skip_nonfinite", t->skip_nonfinite);
    cJSON_AddNumberToObject(j, "spike_factor", t->spike_factor);
    cJSON_AddNumberToObject(j, "max_skips", t->max_skips);
    return j;
}

int train_config_save_json(const TrainConfig *t, const char *path) {
    cJSON *j = train_config_to_json(t);
    int rc = write_json(j, path);
    cJSON_Delete(j);
    return rc;
}

static int train_config_from_json(TrainConfig *t, const cJSON *j, const char *path) {
    static const char *known[] = {"batch_size", "seq_len", "steps", "lr", "min_lr", "warmup_steps", "decay_frac",
                                  "schedule", "decay_shape", "beta1", "beta2", "adam_eps", "weight_decay", "grad_clip",
                                  "bias_update_rate", "aux_loss_coef", "z_loss_coef", "seed", "eval_every",
                                  "eval_batches", "save_every", "log_every", "skip_nonfinite", "spike_factor",
                                  "max_skips"};
    const cJSON *it;
    cJSON_ArrayForEach(it, j) {
        int ok = 0;
        for (size_t i = 0; i < sizeof known / sizeof *known; i++) ok |= !strcmp(it->string, known[i]);
        if (!ok) return up_error("%s: unknown field train.%s; expected one of batch_size, seq_len, steps, lr, ...", path, it->string);
    }
    int rc = 0, seed = -1;
    rc |= get_int(j, "train.batch_size", &t->batch_size, path);
    rc |= get_int(j, "train.seq_len", &t->seq_len, path);
    rc |= get_int(j, "train.steps", &t->steps, path);
    rc |= get_float(j, "train.lr", &t->lr, path);
    rc |= get_float(j, "train.min_lr", &t->min_lr, path);
    rc |= get_int(j, "train.warmup_steps", &t->warmup_steps, path);
    rc |= get_float(j, "train.decay_frac", &t->decay_frac, path);
    rc |= get_float(j, "train.beta1", &t->beta1, path);
    rc |= get_float(j, "train.beta2", &t->beta2, path);
    rc |= get_float(j, "train.adam_eps", &t->adam_eps, path);
    rc |= get_float(j, "train.weight_decay", &t->weight_decay, path);
    rc |= get_float(j, "train.grad_clip", &t->grad_clip, path);
    rc |= get_float(j, "train.bias_update_rate", &t->bias_update_rate, path);
    rc |= get_float(j, "train.aux_loss_coef", &t->aux_loss_coef, path);
    rc |= get_float(j, "train.z_loss_coef", &t->z_loss_coef, path);
    rc |= get_int(j, "train.seed", &seed, path);
    rc |= get_int(j, "train.eval_every", &t->eval_every, path);
    rc |= get_int(j, "train.eval_batches", &t->eval_batches, path);
    rc |= get_int(j, "train.save_every", &t->save_every, path);
    rc |= get_int(j, "train.log_every", &t->log_every, path);
    rc |= get_float(j, "train.spike_factor", &t->spike_factor, path);
    rc |= get_int(j, "train.max_skips", &t->max_skips, path);
    rc |= get_bool(j, "train.skip_nonfinite", &t->skip_nonfinite, path);
    const char *s = NULL, *d = NULL;
    rc |= json_opt_string(path, j, "train.schedule", NULL, &s);
    rc |= json_opt_string(path, j, "train.decay_shape", NULL, &d);
    if (rc) return -1;
    if (seed >= 0) t->seed = (unsigned long long)seed;
    if (s) {
        if (!strcmp(s, "wsd")) t->schedule = SCHED_WSD;
        else if (!strcmp(s, "cosine")) t->schedule = SCHED_COSINE;
        else if (!strcmp(s, "constant")) t->schedule = SCHED_CONSTANT;
        else return up_error("%s: field train.schedule is \"%s\"; expected \"wsd\", \"cosine\" or \"constant\"", path, s);
    }
    if (d) {
        if (!strcmp(d, "linear")) t->decay_shape = DECAY_LINEAR;
        else if (!strcmp(d, "1-sqrt")) t->decay_shape = DECAY_1_SQRT;
        else return up_error("%s: field train.decay_shape; expected \"linear\" or \"1-sqrt\"", path);
    }
    return train_config_validate(t, path);
}

int train_config_load_json(ModelConfig *m, TrainConfig *t, const char *path) {
    cJSON *j = NULL;
    if (parse_json_file(path, &j)) return -1;
    const cJSON *jm = NULL, *jt = NULL;
    int rc = json_opt_object(path, j, "model", &jm) || json_opt_object(path, j, "train", &jt) ? -1 : 0;
    if (!rc && (json_has(j, "model") || json_has(j, "train"))) {
        const cJSON *it;
        cJSON_ArrayForEach(it, j) {
            if (strcmp(it->string, "model") && strcmp(it->string, "train")) {
                rc = up_error("%s: unknown field %s; expected model and train", path, it->string);
                break;
            }
        }
    }
    if (!rc) rc = model_config_from_json(m, jm ? jm : j, path);
    if (!rc && jt) rc = train_config_from_json(t, jt, path);
    cJSON_Delete(j);
    return rc;
}

int train_config_load_bare_json(TrainConfig *t, const char *path) {
    cJSON *j = NULL;
    if (parse_json_file(path, &j)) return -1;
    int rc = train_config_from_json(t, j, path);
    cJSON_Delete(j);
    return rc;
}

int model_config_overlay_json(ModelConfig *c, const cJSON *overlay, const char *origin) {
    /* an array's items have no key: adding them to the object would fail and leak them */
    if (!cJSON_IsObject(overlay)) return up_error("%s: field model is not an object; expected {\"key\": value, ...}", origin);
    cJSON *base = model_config_to_json(c);
    /* an overlay that names the dense qwen3 drops the base's MoE keys, which qwen3 has not */
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(overlay, "model_type");
    if (cJSON_IsString(type) && !strcmp(type->valuestring, "qwen3")) {
        static const char *const moe_keys[] = {"num_experts", "num_local_experts", "num_experts_per_tok", "moe_intermediate_size",
                                               "decoder_sparse_step", "mlp_only_layers", "norm_topk_prob", "upcycle_balance_bias"};
        for (size_t k = 0; k < sizeof moe_keys / sizeof *moe_keys; k++) cJSON_DeleteItemFromObjectCaseSensitive(base, moe_keys[k]);
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, overlay) {
        cJSON_DeleteItemFromObjectCaseSensitive(base, it->string);
        cJSON_AddItemToObject(base, it->string, cJSON_Duplicate(it, 1));
    }
    int rc = model_config_from_json(c, base, origin);
    cJSON_Delete(base);
    return rc;
}

int train_config_overlay_json(TrainConfig *t, const cJSON *j, const char *origin) {
    /* train_config_from_json reads every item's key: an array's items have none (NULL) */
    if (!cJSON_IsObject(j)) return up_error("%s: field train is not an object; expected {\"key\": value, ...}", origin);
    return train_config_from_json(t, j, origin);
}
