/* Model-level tests: schedules, config validation and JSON, parameter table, whole-model
 * finite differences, checkpoint round trip, determinism and bit-exact resume. */
#include <stdlib.h>
#include <string.h>

#include "data/shard.h"
#include "io/checkpoint.h"
#include "model.h"
#include "optim.h"
#include "test.h"
#include "train.h"
#include "util.h"
#include "fixtures.h"

TEST(schedule_wsd_values) {
    TrainConfig t;
    train_config_defaults(&t);
    t.lr = 1.0f, t.min_lr = 0.1f, t.warmup_steps = 10, t.decay_frac = 0.1f, t.schedule = SCHED_WSD;
    CHECK_CLOSE(lr_at(&t, 0, 100), 0.1, 1e-7);   /* warmup: (s+1)/warmup */
    CHECK_CLOSE(lr_at(&t, 9, 100), 1.0, 1e-7);
    CHECK_CLOSE(lr_at(&t, 50, 100), 1.0, 1e-7);  /* stable */
    CHECK_CLOSE(lr_at(&t, 89, 100), 1.0, 1e-7);  /* last stable step */
    CHECK_CLOSE(lr_at(&t, 90, 100), 1.0 - 0.9 * 0.1, 1e-6); /* decay over the last 10 steps */
    CHECK_CLOSE(lr_at(&t, 94, 100), 1.0 - 0.9 * 0.5, 1e-6);
    CHECK_CLOSE(lr_at(&t, 99, 100), 0.1, 1e-7);  /* ends at min_lr */
    t.decay_shape = DECAY_1_SQRT;
    CHECK_CLOSE(lr_at(&t, 94, 100), 0.1 + 0.9 * (1 - sqrt(0.5)), 1e-6);
    CHECK_CLOSE(lr_at(&t, 99, 100), 0.1, 1e-7);
    t.schedule = SCHED_COSINE;
    CHECK_CLOSE(lr_at(&t, 10, 100), 1.0, 1e-6);
    CHECK_CLOSE(lr_at(&t, 99, 100), 0.1, 1e-6);
    CHECK_CLOSE(lr_at(&t, 10 + 89 / 2, 100), 0.55 + 0.45 * cos(M_PI * 44.0 / 89.0), 1e-5);
    t.schedule = SCHED_CONSTANT;
    CHECK(lr_at(&t, 3, 100) == 1.0f);
}

TEST(config_validation_messages) {
    ModelConfig c;
    model_config_defaults(&c);
    c.head_dim = c.d_model / c.n_heads;
    CHECK(model_config_validate(&c, "x.json") == 0);
    c.top_k = 9; /* 8 experts */
    CHECK(model_config_validate(&c, "x.json") == -1);
    CHECK(strstr(up_last_error(), "x.json") && strstr(up_last_error(), "top-K") && strstr(up_last_error(), "expected"));
    model_config_defaults(&c);
    c.head_dim = 32, c.n_kv_heads = 3;
    CHECK(model_config_validate(&c, "y.json") == -1);
    CHECK(strstr(up_last_error(), "not divisible") != NULL);
    CHECK(preset_find("nope") == NULL && preset_find("tiny") != NULL);
}

TEST(config_json_round_trip) {
    const Preset *p = preset_find("fullmoe");
    ModelConfig c = p->model, back;
    c.first_k_dense = 1, c.tie_embeddings = 1, c.qk_norm = 0, c.norm_topk_prob = 0;
    char *path = path_join(test_tmpdir(), "config.json");
    CHECK(model_config_save_json(&c, path) == 0);
    CHECK(model_config_load_json(&back, path) == 0);
    CHECK(memcmp(&c, &back, sizeof c) == 0);
    /* no upcycle_* switch keys: each switch is its family's own key */
    char *text;
    CHECK(read_file(path, &text, NULL) == 0);
    CHECK(!strstr(text, "upcycle_attention_bias") && !strstr(text, "upcycle_shared_expert_size") &&
          !strstr(text, "upcycle_qk_norm_full") && !strstr(text, "upcycle_clip_qkv"));
    free(text);
    /* Qwen2-MoE's q/k/v biases and shared expert, OLMoE's whole-projection q/k norm and clamp
     * round-trip in their families' keys */
    ModelConfig q2 = c;
    q2.family = MODEL_FAMILY_QWEN2_MOE, q2.attention_bias = 1, q2.shared_expert_size = 40, q2.qk_norm = 0;
    CHECK(config_family_check(&q2, "q2") == 0);
    CHECK(model_config_save_json(&q2, path) == 0);
    CHECK(model_config_load_json(&back, path) == 0);
    CHECK(memcmp(&q2, &back, sizeof q2) == 0);
    ModelConfig ol = c;
    ol.family = MODEL_FAMILY_OLMOE, ol.qk_norm = 1, ol.qk_norm_full = 1, ol.clip_qkv = 8.5f, ol.first_k_dense = 0;
    ol.moe_intermediate_size = ol.intermediate_size; /* OLMoE's experts are intermediate_size wide */
    CHECK(config_family_check(&ol, "ol") == 0);
    CHECK(model_config_save_json(&ol, path) == 0);
    CHECK(model_config_load_json(&back, path) == 0);
    CHECK(memcmp(&ol, &back, sizeof ol) == 0);
    ol.clip_qkv = 0.3f; /* not exact in binary: survives the decimal text */
    CHECK(model_config_save_json(&ol, path) == 0);
    CHECK(model_config_load_json(&back, path) == 0);
    CHECK(memcmp(&ol, &back, sizeof ol) == 0);
    CHECK(read_file(path, &text, NULL) == 0);
    CHECK(strstr(text, "\"clip_qkv\":\t0.3,") && strstr(text, "\"rope_theta\":\t10000.0,")); /* float literals */
    free(text);
    /* q/k norm over the whole projection needs q/k norm */
    back.qk_norm = 0;
    CHECK(model_config_validate(&back, "z.json") == -1 && strstr(up_last_error(), "upcycle_qk_norm"));
    free(path);
}

TEST(param_table_layout) {
    ModelConfig c = preset_find("tiny")->model;
    Model m;
    CHECK(model_create(&m, &c, backend_cpu()) == 0);
    /* experts of one projection are contiguous blocks */
    const LayerParams *L = &m.layers[1];
    CHECK(L->is_moe && !m.layers[0].is_moe);
    size_t per = (size_t)c.moe_intermediate_size * c.d_model;
    for (int e = 1; e < c.n_experts; e++) CHECK(m.params[L->expert_gate + e].offset == m.params[L->expert_gate].offset + e * per);
    CHECK(!strcmp(m.params[L->expert_bias].name, "model.layers.1.mlp.gate.e_score_correction_bias"));
    CHECK(!m.params[L->expert_bias].trainable && !m.params[L->input_norm].decay && m.params[L->q_proj].decay);
    CHECK(model_find_param(&m, "lm_head.weight") >= 0);
    size_t total, active, emb;
    model_param_counts(&m, &total, &active, &emb);
    CHECK(total - active == 2 * (size_t)(c.n_experts - c.top_k) * 3 * per);
    model_free(&m);
    c.tie_embeddings = 1;
    CHECK(model_create(&m, &c, backend_cpu()) == 0);
    CHECK(model_find_param(&m, "lm_head.weight") < 0 && m.lm_head == m.embed);
    model_free(&m);
}

/* Whole model: d loss / d theta by central differences on a few entries of every tensor kind.
 * Returns the relative error; *skipped counts samples where the perturbation changed routing. */
static double model_fd_error(const ModelConfig *c, int *skipped) {
    Model m;
    CHECK(model_create(&m, c, backend_cpu()) == 0);
    model_init_weights(&m, 5);
    Rng rng;
    rng_seed(&rng, 3);
    for (int i = 0; i < m.n_params; i++) /* q/k/v biases start at 0: make them matter */
        if (str_ends_with(m.params[i].name, ".bias"))
            for (size_t k = 0; k < m.params[i].numel; k++) model_param(&m, i)[k] = 0.2f * rng_normal(&rng);
    int B = 2, T = 6;
    model_set_batch(&m, B, T);
    int32_t tokens[2 * 7];
    rng_seed(&rng, 3);
    for (int i = 0; i < 14; i++) tokens[i] = (int32_t)rng_below(&rng, c->vocab_size);
    model_zero_grad(&m);
    model_forward(&m, tokens, 0, 0);
    /* the routing of every MoE layer at the unperturbed weights */
    size_t nk = (size_t)B * T * c->top_k;
    int32_t *topk_ref = xcalloc((size_t)c->n_layers * (nk ? nk : 1), sizeof(int32_t));
    for (int l = 0; l < c->n_layers; l++)
        if (m.layers[l].is_moe) memcpy(topk_ref + l * nk, m.acts[l].topk, nk * sizeof(int32_t));
    model_backward(&m, 0, 0);
    float *grad = xmalloc(m.n_floats * 4);
    memcpy(grad, m.grad_mem, m.n_floats * 4);
    double num2 = 0, diff2 = 0;
    *skipped = 0;
    for (int i = 0; i < m.n_params; i++) {
        if (!m.params[i].trainable) continue;
        for (int s = 0; s < 2; s++) {
            size_t j = m.params[i].offset + rng_below(&rng, m.params[i].numel);
            float saved = m.param_mem[j];
            double l[2];
            int moved = 0;
            for (int d = 0; d < 2; d++) {
                m.param_mem[j] = saved + (d ? -1e-2f : 1e-2f);
                l[d] = model_forward(&m, tokens, 0, 0);
                for (int layer = 0; layer < c->n_layers; layer++)
                    moved |= m.layers[layer].is_moe && memcmp(topk_ref + layer * nk, m.acts[layer].topk, nk * 4) != 0;
            }
            m.param_mem[j] = saved;
            if (moved) {
                (*skipped)++;
                continue;
            }
            double numeric = (l[0] - l[1]) / 2e-2;
            num2 += numeric * numeric;
            diff2 += (numeric - grad[j]) * (numeric - grad[j]);
        }
    }
    free(grad), free(topk_ref);
    model_free(&m);
    return sqrt(diff2) / sqrt(num2);
}

static void fd_config(ModelConfig *c) {
    model_config_defaults(c);
    c->vocab_size = 29, c->d_model = 16, c->n_layers = 2, c->n_heads = 4, c->n_kv_heads = 2, c->head_dim = 4;
    c->intermediate_size = 24, c->n_experts = 4, c->top_k = 2, c->moe_intermediate_size = 12, c->init_std = 0.2f;
}

TEST(model_gradients_finite_differences) {
    ModelConfig c;
    fd_config(&c);
    int skipped;
    double err = model_fd_error(&c, &skipped);
    CHECK_MSG(err < 2e-2, "whole-model gradient relative error %.3g (%d samples skipped)", err, skipped);
    CHECK(skipped < 10);
}

/* every family switch at once (the engine allows any combination): q/k/v biases, a shared
 * expert, q/k norm over the whole projection, a clamp loose enough that finite differences
 * rarely straddle it */
TEST(model_gradients_finite_differences_family_switches) {
    ModelConfig c;
    fd_config(&c);
    c.attention_bias = 1, c.shared_expert_size = 10, c.qk_norm_full = 1, c.clip_qkv = 2.5f, c.norm_topk_prob = 0;
    int skipped;
    double err = model_fd_error(&c, &skipped);
    CHECK_MSG(err < 2e-2, "whole-model gradient relative error %.3g (%d samples skipped)", err, skipped);
    CHECK(skipped < 10);
}

TEST(checkpoint_round_trip_exact) {
    ModelConfig c = preset_find("fullmoe")->model;
    c.d_model = 32, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 8, c.moe_intermediate_size = 16;
    Model a, b;
    CHECK(model_create(&a, &c, backend_cpu()) == 0);
    model_init_weights(&a, 11);
    for (size_t i = 0; i < a.n_floats; i++) a.adam_m[i] = (float)i * 1e-3f, a.adam_v[i] = (float)i * 2e-3f;
    a.step = 17;
    TrainerState st = {0};
    st.step = 17, st.data_epoch = 2, st.data_cursor = 5, st.rng_state[3] = 0xfffffffffffffff1ULL;
    train_config_defaults(&st.train);
    st.train.lr = 0.125f;
    char *dir = path_join(test_tmpdir(), "ckpt");
    CHECK(checkpoint_save(dir, &a, &st, 1) == 0);
    ModelConfig c2;
    CHECK(checkpoint_load_config(dir, &c2) == 0 && memcmp(&c, &c2, sizeof c) == 0);
    CHECK(model_create(&b, &c2, backend_cpu()) == 0);
    CHECK(checkpoint_load_weights(dir, &b) == 0);
    CHECK(checkpoint_load_optimizer(dir, &b) == 0);
    CHECK(memcmp(a.param_mem, b.param_mem, a.n_floats * 4) == 0);
    size_t bias = b.params[b.layers[0].expert_bias].offset;
    /* optimizer state of trainable tensors round-trips; the bias has none */
    for (int i = 0; i < a.n_params; i++) {
        if (!a.params[i].trainable) continue;
        size_t o = a.params[i].offset;
        CHECK(memcmp(a.adam_m + o, b.adam_m + o, a.params[i].numel * 4) == 0);
        CHECK(memcmp(a.adam_v + o, b.adam_v + o, a.params[i].numel * 4) == 0);
    }
    (void)bias;
    CHECK(b.step == 17);
    TrainerState back;
    CHECK(trainer_state_load(dir, &back) == 0);
    CHECK(back.step == 17 && back.data_epoch == 2 && back.data_cursor == 5 && back.rng_state[3] == 0xfffffffffffffff1ULL);
    CHECK(back.train.lr == 0.125f);
    /* overwrite in place: the new one replaces the old, no temp directories remain */
    a.step = 18;
    CHECK(checkpoint_save(dir, &a, &st, 1) == 0);
    CHECK(checkpoint_load_optimizer(dir, &b) == 0 && b.step == 18);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q tmp", test_tmpdir());
    CHECK(system(cmd) != 0);
    /* a checkpoint of another shape is refused, naming the file and tensor */
    ModelConfig other = c;
    other.moe_intermediate_size = 8;
    Model wrong;
    CHECK(model_create(&wrong, &other, backend_cpu()) == 0);
    CHECK(checkpoint_load_weights(dir, &wrong) == -1);
    CHECK(strstr(up_last_error(), "model.safetensors") && strstr(up_last_error(), "expected"));
    model_free(&wrong);
    model_free(&a);
    model_free(&b);
    free(dir);
}

TEST(training_is_deterministic_and_learns) {
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    char *data = fixture_data_dir(), *out1 = path_join(test_tmpdir(), "r1"), *out2 = path_join(test_tmpdir(), "r2");
    TrainOptions o1 = {.data_dir = data, .out_dir = out1, .quiet = 1}, o2 = {.data_dir = data, .out_dir = out2, .quiet = 1};
    TrainResult a, b;
    CHECK(train_run(&mc, &tc, &o1, &a) == 0);
    CHECK(train_run(&mc, &tc, &o2, &b) == 0);
    CHECK(a.steps_run == 12 && b.steps_run == 12);
    CHECK(memcmp(a.losses, b.losses, 12 * sizeof(float)) == 0);
    CHECK_MSG(a.losses[11] < a.losses[0] - 0.5, "loss did not fall: %g -> %g", a.losses[0], a.losses[11]);
    free(a.losses), free(b.losses), free(data), free(out1), free(out2);
}

static void check_resume_bit_exact(const ModelConfig *mc, const TrainConfig *tc, const char *label) {
    char full_name[64], resumed_name[64];
    snprintf(full_name, sizeof full_name, "full%s", label), snprintf(resumed_name, sizeof resumed_name, "resumed%s", label);
    char *data = fixture_data_dir(), *out1 = path_join(test_tmpdir(), full_name), *out2 = path_join(test_tmpdir(), resumed_name);
    TrainOptions full = {.data_dir = data, .out_dir = out1, .quiet = 1};
    TrainResult a, b;
    char *ckpt = path_join(out1, "ckpt_000006");
    TrainOptions resumed = {.data_dir = data, .out_dir = out2, .resume = ckpt, .quiet = 1};
    if (train_run(mc, tc, &full, &a) || train_run(mc, tc, &resumed, &b)) { /* 12 steps, checkpoint at 6 */
        test_fail(__FILE__, __LINE__, "%s: train_run failed: %s", label, up_last_error());
        free(data), free(out1), free(out2), free(ckpt);
        return;
    }
    CHECK(b.steps_run == 6);
    CHECK_MSG(memcmp(a.losses + 6, b.losses, 6 * sizeof(float)) == 0, "resumed losses differ: %.9g vs %.9g",
              a.losses[6], b.losses[0]);
    /* final weights identical byte for byte */
    char *f1 = path_join(out1, "final/model.safetensors"), *f2 = path_join(out2, "final/model.safetensors");
    char *d1, *d2;
    size_t n1, n2;
    CHECK(read_file(f1, &d1, &n1) == 0 && read_file(f2, &d2, &n2) == 0);
    CHECK(n1 == n2 && memcmp(d1, d2, n1) == 0);
    free(d1), free(d2), free(f1), free(f2);
    free(a.losses), free(b.losses), free(data), free(out1), free(out2), free(ckpt);
}

TEST(resume_is_bit_exact) {
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    check_resume_bit_exact(&mc, &tc, "");
}

/* the families' tensors (Qwen2-MoE's q/k/v biases, shared expert and its gate; OLMoE's
 * whole-projection q/k norms) and their optimizer state go through the checkpoint like every other */
TEST(resume_is_bit_exact_family_switches) {
    for (int fam = 0; fam < 2; fam++) {
        ModelConfig mc;
        TrainConfig tc;
        fixture_small_run(&mc, &tc);
        if (fam == 0) mc.family = MODEL_FAMILY_QWEN2_MOE, mc.qk_norm = 0, mc.attention_bias = 1, mc.shared_expert_size = 24, mc.norm_topk_prob = 0;
        else mc.family = MODEL_FAMILY_OLMOE, mc.qk_norm_full = 1, mc.clip_qkv = 1.5f, mc.decoder_sparse_step = 1, mc.first_k_dense = 0;
        const char *label = fam == 0 ? "-qwen2moe" : "-olmoe";
        check_resume_bit_exact(&mc, &tc, label);
        /* the checkpoint holds them under their Hugging Face names, with optimizer state */
        char name[64];
        snprintf(name, sizeof name, "full%s/final", label);
        char *ckpt = path_join(test_tmpdir(), name);
        Model m;
        CHECK(checkpoint_load_model(ckpt, &m, 1, NULL) == 0);
        CHECK(m.cfg.family == mc.family && m.cfg.shared_expert_size == mc.shared_expert_size && m.cfg.attention_bias == mc.attention_bias &&
              m.cfg.qk_norm_full == mc.qk_norm_full && m.cfg.clip_qkv == mc.clip_qkv);
        const char *qwen2[] = {"model.layers.0.self_attn.q_proj.bias", "model.layers.1.self_attn.v_proj.bias",
                               "model.layers.1.mlp.shared_expert.down_proj.weight", "model.layers.1.mlp.shared_expert_gate.weight"};
        const char *olmoe[] = {"model.layers.0.self_attn.q_norm.weight", "model.layers.1.self_attn.k_norm.weight"};
        const char **names = fam == 0 ? qwen2 : olmoe;
        size_t n = fam == 0 ? 4 : 2;
        for (size_t i = 0; i < n; i++) {
            int p = model_find_param(&m, names[i]);
            CHECK_MSG(p >= 0 && m.params[p].trainable, "%s missing or not trainable", names[i]);
            float seen = 0; /* AdamW has seen its gradient */
            for (size_t k = 0; p >= 0 && k < m.params[p].numel; k++) seen = fmaxf(seen, m.adam_v[m.params[p].offset + k]);
            CHECK_MSG(seen > 0, "%s: no second moment (p %d, first m %g)", names[i], p, p >= 0 ? m.adam_m[m.params[p].offset] : -1.0f);
        }
        if (fam == 0) CHECK(model_find_param(&m, "model.layers.0.mlp.shared_expert_gate.weight") < 0); /* layer 0 is dense */
        int qn = model_find_param(&m, "model.layers.0.self_attn.q_norm.weight");
        if (fam == 1) CHECK(qn >= 0 && m.params[qn].numel == (size_t)mc.n_heads * mc.head_dim);
        model_free(&m);
        free(ckpt);
    }
}

TEST(init_starts_new_stage_with_optimizer_state) {
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    tc.save_every = 0;
    char *data = fixture_data_dir(), *out1 = path_join(test_tmpdir(), "a"), *out2 = path_join(test_tmpdir(), "b");
    TrainOptions o1 = {.data_dir = data, .out_dir = out1, .quiet = 1};
    TrainResult a, b;
    CHECK(train_run(&mc, &tc, &o1, &a) == 0);
    char *init = path_join(out1, "final");
    tc.steps = 5;
    TrainOptions o2 = {.data_dir = data, .out_dir = out2, .init = init, .split = "cpt", .quiet = 1};
    CHECK(train_run(&mc, &tc, &o2, &b) == 0);
    CHECK(b.steps_run == 5);
    /* the stage starts near the source's loss, not at a random model's ln(40) = 3.69 */
    CHECK_MSG(b.losses[0] < a.losses[0] - 0.3, "init loss %g vs fresh %g", b.losses[0], a.losses[0]);
    char *final2 = path_join(out2, "final");
    Model m;
    CHECK(model_create(&m, &mc, backend_cpu()) == 0);
    CHECK(checkpoint_load_optimizer(final2, &m) == 0);
    CHECK(m.step == 12 + 5); /* AdamW's step counter goes on */
    TrainerState st;
    CHECK(trainer_state_load(final2, &st) == 0 && st.step == 5);
    model_free(&m);
    free(a.losses), free(b.losses), free(data), free(out1), free(out2), free(init), free(final2);
}

/* config.json / --config files by util/json.h's rule: a wrong-typed field names file and field */
TEST(config_fields_of_the_wrong_type_name_the_field) {
    const char *base = "\"vocab_size\": 256, \"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4";
    char *path = path_join(test_tmpdir(), "cfg.json");
    char text[1024];
    ModelConfig m;
    TrainConfig t;
    /* null is absent: the default stays */
    snprintf(text, sizeof text, "{%s, \"head_dim\": null, \"norm_topk_prob\": null, \"mlp_only_layers\": null}", base);
    CHECK(atomic_write_file(path, text, strlen(text)) == 0);
    CHECK_MSG(model_config_load_json(&m, path) == 0, "%s", up_last_error());
    CHECK(m.head_dim == 16 && m.first_k_dense == 0);
    struct {
        const char *fields, *expect;
        int train; /* 1: a train config {"model": ..., "train": {fields}} */
    } cases[] = {
        {"\"norm_topk_prob\": 0", "field norm_topk_prob: is a number; expected true or false", 0},
        {"\"num_experts\": true", "field num_experts: is true; expected an integer", 0},
        {"\"num_key_value_heads\": 2.5", "field num_key_value_heads: is 2.5; expected an integer", 0},
        {"\"rope_theta\": \"1e6\"", "field rope_theta: is a string; expected a number", 0},
        {"\"mlp_only_layers\": 0", "field mlp_only_layers: is a number; expected an array", 0},
        {"\"mlp_only_layers\": [\"0\"]", "field mlp_only_layers[0]: is a string; expected a number", 0},
        {"\"lr\": \"fast\"", "field train.lr: is a string; expected a number", 1},
        {"\"steps\": 1e10", "field train.steps: is 1e+10, out of range; expected an integer", 1},
        {"\"schedule\": 3", "field train.schedule: is a number; expected a string", 1},
        {"\"skip_nonfinite\": \"yes\"", "field train.skip_nonfinite: is a string; expected true or false", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (cases[i].train) snprintf(text, sizeof text, "{\"model\": {%s}, \"train\": {%s}}", base, cases[i].fields);
        else snprintf(text, sizeof text, "{%s, %s}", base, cases[i].fields);
        CHECK(atomic_write_file(path, text, strlen(text)) == 0);
        model_config_defaults(&m), train_config_defaults(&t);
        up_clear_error();
        int rc = cases[i].train ? train_config_load_json(&m, &t, path) : model_config_load_json(&m, path);
        char want[1200];
        snprintf(want, sizeof want, "%s: %s", path, cases[i].expect);
        CHECK_MSG(rc == -1 && strcmp(up_last_error(), want) == 0, "case %zu: '%s', expected '%s'", i, up_last_error(), want);
    }
    /* "model" and "train" must be objects */
    snprintf(text, sizeof text, "{\"model\": [1], \"train\": {}}");
    CHECK(atomic_write_file(path, text, strlen(text)) == 0);
    CHECK(train_config_load_json(&m, &t, path) == -1 && strstr(up_last_error(), "field model: is an array; expected an object"));
    free(path);
}

/* trainer.json by the JSON rule: a missing or wrong-typed field names the file and the field */
TEST(trainer_state_errors_name_file_and_field) {
    const char *dir = test_tmpdir();
    char *path = path_join(dir, "trainer.json");
    static const struct {
        const char *json, *field;
    } cases[] = {
        {"{\"data\": {\"epoch\": \"0\", \"cursor\": \"0\"}, \"rng_state\": [\"1\", \"2\", \"3\", \"4\"]}", "field step"},
        {"{\"step\": -1, \"data\": {\"epoch\": \"0\", \"cursor\": \"0\"}, \"rng_state\": [\"1\", \"2\", \"3\", \"4\"]}", "field step"},
        {"{\"step\": 3, \"data\": {\"epoch\": 0, \"cursor\": \"0\"}, \"rng_state\": [\"1\", \"2\", \"3\", \"4\"]}", "field data.epoch"},
        {"{\"step\": 3, \"data\": {\"epoch\": \"0\", \"cursor\": \"-2\"}, \"rng_state\": [\"1\", \"2\", \"3\", \"4\"]}", "field data.cursor"},
        {"{\"step\": 3, \"data\": {\"epoch\": \"0\", \"cursor\": \"0\"}, \"rng_state\": [\"1\", \"2\", \"3\"]}", "field rng_state"},
        {"{\"step\": 3, \"data\": {\"epoch\": \"0\", \"cursor\": \"0\"}, \"rng_state\": [\"1\", \"2\", 3, \"4\"]}", "field rng_state[2]"},
        {"{\"step\": 3, \"loss_mean\": {\"value\": \"nan\", \"steps\": 2}, \"data\": {\"epoch\": \"0\", \"cursor\": \"0\"}, "
         "\"rng_state\": [\"1\", \"2\", \"3\", \"4\"]}", "field loss_mean.value"},
        {"{\"step\": 3, \"skipped_steps\": true, \"data\": {\"epoch\": \"0\", \"cursor\": \"0\"}, "
         "\"rng_state\": [\"1\", \"2\", \"3\", \"4\"]}", "field skipped_steps"},
        {"[1, 2]", "not a JSON object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        CHECK(atomic_write_file(path, cases[i].json, strlen(cases[i].json)) == 0);
        TrainerState st;
        up_clear_error();
        CHECK_MSG(trainer_state_load(dir, &st) == -1, "case %zu loaded", i);
        CHECK_MSG(strstr(up_last_error(), path) && strstr(up_last_error(), cases[i].field), "case %zu: %s", i, up_last_error());
    }
    const char *good = "{\"step\": 3, \"data\": {\"epoch\": \"7\", \"cursor\": \"18446744073709551615\"}, "
                       "\"rng_state\": [\"1\", \"2\", \"3\", \"4\"]}";
    CHECK(atomic_write_file(path, good, strlen(good)) == 0);
    TrainerState st;
    CHECK(trainer_state_load(dir, &st) == 0 && st.step == 3 && st.data_epoch == 7 && st.data_cursor == UINT64_MAX);
    free(path);
}

/* No directory names a model_type whose transformers code computes something else: each switch
 * the family lacks is refused in one line naming it and the families that hold it, before
 * anything is written; a model without MoE layers is the dense qwen3 */
TEST(family_check_refuses_what_the_family_does_not_compute) {
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    CHECK(config_family_check(&mc, "m") == 0);
    ModelConfig c = mc;
    c.attention_bias = 1;
    CHECK(config_family_check(&c, "m") == -1 && strstr(up_last_error(), "q/k/v projection biases") &&
          strstr(up_last_error(), "model_type qwen2_moe") && strstr(up_last_error(), "qwen3_moe's"));
    c = mc, c.shared_expert_size = 16;
    CHECK(config_family_check(&c, "m") == -1 && strstr(up_last_error(), "shared expert") && strstr(up_last_error(), "qwen2_moe"));
    c = mc, c.qk_norm_full = 1;
    CHECK(config_family_check(&c, "m") == -1 && strstr(up_last_error(), "whole projection") && strstr(up_last_error(), "olmoe"));
    c = mc, c.clip_qkv = 2;
    CHECK(config_family_check(&c, "m") == -1 && strstr(up_last_error(), "clip_qkv") && strstr(up_last_error(), "olmoe"));
    c = mc, c.qk_norm = 0;
    CHECK(config_family_check(&c, "m") == -1 && strstr(up_last_error(), "no q/k norm") && strstr(up_last_error(), "mixtral"));
    c = mc, c.family = MODEL_FAMILY_MIXTRAL, c.qk_norm = 0, c.norm_topk_prob = 1, c.decoder_sparse_step = 2;
    CHECK(config_family_check(&c, "m") == -1 && strstr(up_last_error(), "dense layers") && strstr(up_last_error(), "mixtral's"));
    c = mc, c.family = MODEL_FAMILY_QWEN2_MOE, c.qk_norm = 0;
    CHECK(config_family_check(&c, "m") == -1 && strstr(up_last_error(), "without a shared expert"));
    c = mc, c.family = MODEL_FAMILY_OLMOE, c.qk_norm_full = 1, c.decoder_sparse_step = 1, c.head_dim = 16;
    CHECK(config_family_check(&c, "m") == -1 && strstr(up_last_error(), "head_dim"));
    /* the save is refused and leaves nothing */
    c = mc, c.attention_bias = 1;
    Model m;
    CHECK(model_create(&m, &c, backend_cpu()) == 0);
    char *dir = path_join(test_tmpdir(), "refused");
    CHECK(checkpoint_save(dir, &m, NULL, 0) == -1 && !path_exists(dir));
    model_free(&m);
    free(dir);
    /* no MoE layers: qwen3, read back as a model without experts */
    c = mc, c.n_experts = 0, c.top_k = 0, c.moe_intermediate_size = 0;
    CHECK(config_family_check(&c, "m") == 0 && !strcmp(config_family_model_type(&c), "qwen3"));
    dir = path_join(test_tmpdir(), "dense");
    CHECK(model_create(&m, &c, backend_cpu()) == 0);
    CHECK(checkpoint_save(dir, &m, NULL, 0) == 0);
    model_free(&m);
    char *cfg = path_join(dir, "config.json"), *text;
    CHECK(read_file(cfg, &text, NULL) == 0);
    CHECK(strstr(text, "\"model_type\":\t\"qwen3\"") && strstr(text, "Qwen3ForCausalLM") && !strstr(text, "num_experts"));
    free(text);
    ModelConfig back;
    CHECK(checkpoint_load_config(dir, &back) == 0 && back.n_experts == 0 && back.qk_norm == 1);
    c.family = MODEL_FAMILY_QWEN2_MOE, c.qk_norm = 0;
    CHECK(config_family_check(&c, "m") == -1 && strstr(up_last_error(), "no MoE layers") && strstr(up_last_error(), "qwen3"));
    free(cfg), free(dir);
}
