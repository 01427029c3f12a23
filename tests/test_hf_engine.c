/* test_hf_engine.c - Hugging Face checkpoints in the engine (src/config_family.c,
 * src/io/hf_names.c, src/io/checkpoint.c): every parameter loaded from a family's files equals
 * the file's tensor (read here by the family's own names, straight from the safetensors);
 * saving writes the family's names, dtype (byte-identical for an unchanged model), layout and
 * shards; the config key policy refuses what the engine does not implement, naming the key.
 * Fixtures come from tests/make_hf_fixtures.py (python3 with torch). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "io/checkpoint.h"
#include "io/hf_ckpt.h"
#include "io/safetensors.h"
#include "model.h"
#include "test.h"
#include "util.h"

/* the family's tensor name of our parameter, spelled out here (not through hf_names.c) */
static void mixtral_name(const char *ours, char *out, size_t n) {
    int l, e;
    char proj[32];
    if (sscanf(ours, "model.layers.%d.mlp.experts.%d.%31[a-z_].weight", &l, &e, proj) == 3) {
        const char *w = !strcmp(proj, "gate_proj") ? "w1" : !strcmp(proj, "up_proj") ? "w3" : "w2";
        snprintf(out, n, "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", l, e, w);
    } else if (strstr(ours, ".mlp.gate.") && sscanf(ours, "model.layers.%d.", &l) == 1) {
        snprintf(out, n, "model.layers.%d.block_sparse_moe.gate.%s", l, strstr(ours, "mlp.gate.") + strlen("mlp.gate."));
    } else {
        snprintf(out, n, "%s", ours);
    }
}

/* tensor `name` of checkpoint dir as floats (malloc'd), from whichever file holds it; NULL if none */
static float *file_tensor(const char *dir, const char *name, int64_t *numel, StDtype *dtype) {
    HfCkpt ck;
    if (hf_ckpt_open(dir, &ck)) return NULL;
    const StFile *f;
    const StTensor *t = hf_ckpt_find(&ck, name, &f);
    float *out = NULL;
    if (t) {
        *numel = st_numel(t), *dtype = t->dtype;
        out = xmalloc((size_t)*numel * sizeof(float));
        const unsigned char *p = st_data(f, t);
        for (int64_t i = 0; i < *numel; i++) {
            uint16_t h;
            if (t->dtype == ST_F32) memcpy(&out[i], p + 4 * i, 4);
            else memcpy(&h, p + 2 * i, 2), out[i] = t->dtype == ST_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
        }
    }
    hf_ckpt_close(&ck);
    return out;
}

static char *fixtures(const char *names) {
    char *dir = path_join(test_tmpdir(), "hf");
    if (fixture_hf(dir, names) == 0) return dir;
    free(dir);
    return NULL;
}

/* every parameter of a model loaded from dir equals the file's tensor under the family's name */
static void check_loaded(const char *dir, int mixtral) {
    Model m;
    up_clear_error();
    if (checkpoint_load_model(dir, &m, 0, NULL)) {
        CHECK_MSG(0, "%s does not load: %s", dir, up_last_error());
        return;
    }
    int checked = 0;
    for (int i = 0; i < m.n_params; i++) {
        const ParamInfo *p = &m.params[i];
        char name[256];
        if (mixtral) mixtral_name(p->name, name, sizeof name);
        else snprintf(name, sizeof name, "%s", p->name);
        int64_t n = 0;
        StDtype dt;
        float *want = file_tensor(dir, name, &n, &dt);
        if (!want) { /* only the balancing bias may be absent: it starts at zero */
            CHECK_MSG(!p->trainable, "%s: %s is not in the files", dir, name);
            for (size_t k = 0; k < p->numel; k++) CHECK(m.param_mem[p->offset + k] == 0.0f);
            continue;
        }
        CHECK_MSG((size_t)n == p->numel, "%s: %s has %lld elements, the model %zu", dir, name, (long long)n, p->numel);
        CHECK_MSG(memcmp(want, m.param_mem + p->offset, p->numel * sizeof(float)) == 0, "%s: %s differs", dir, name);
        free(want);
        checked++;
    }
    CHECK(checked > 10);
    model_free(&m);
}

TEST(hf_engine_loads_families_by_their_names_and_dtypes) {
    char *dir = fixtures("qwen3_moe mixtral qwen2_moe olmoe");
    if (!dir) return;
    char *qwen = path_join(dir, "qwen3_moe"), *mixtral = path_join(dir, "mixtral");
    char *qwen2 = path_join(dir, "qwen2_moe"), *olmoe = path_join(dir, "olmoe");
    check_loaded(qwen, 0);    /* BF16, 2 shards + index, a balancing bias */
    check_loaded(mixtral, 1); /* BF16, 3 shards, block_sparse_moe w1/w3/w2, no bias */
    check_loaded(qwen2, 0);   /* F32, q/k/v biases, shared expert and its gate */
    check_loaded(olmoe, 0);   /* F16, q/k norms over the whole projections */
    ModelConfig q2, ol;
    CHECK(checkpoint_load_config(qwen2, &q2) == 0 && q2.family == MODEL_FAMILY_QWEN2_MOE && q2.attention_bias == 1 &&
          q2.shared_expert_size == 12 && q2.qk_norm == 0 && q2.norm_topk_prob == 0);
    CHECK(checkpoint_load_config(olmoe, &ol) == 0 && ol.family == MODEL_FAMILY_OLMOE && ol.qk_norm == 1 && ol.qk_norm_full == 1 &&
          ol.clip_qkv == 0 && ol.moe_intermediate_size == 8 && ol.weight_dtype == WEIGHT_F16);
    free(qwen2), free(olmoe);
    ModelConfig c;
    CHECK(checkpoint_load_config(mixtral, &c) == 0);
    CHECK(c.family == MODEL_FAMILY_MIXTRAL && c.n_experts == 4 && c.moe_intermediate_size == 8 && c.norm_topk_prob == 1 &&
          c.qk_norm == 0 && c.weight_dtype == WEIGHT_BF16 && c.decoder_sparse_step == 1);
    CHECK(strstr(c.extra_keys, "\"bos_token_id\":1") && strstr(c.extra_keys, "use_cache")); /* kept to be written back */
    CHECK(checkpoint_load_config(qwen, &c) == 0 && c.family == MODEL_FAMILY_QWEN3_MOE && c.qk_norm == 1 && c.norm_topk_prob == 1);
    free(qwen), free(mixtral), free(dir);
}

/* the names and dtypes of every tensor of a checkpoint directory, and their bytes, must match;
 * a balancing bias of a (a DeepSeek-style name no family the engine writes holds) must be in
 * b's training/balance_bias.safetensors, F32 and bit for bit */
static void check_same_tensors(const char *a_dir, const char *b_dir) {
    HfCkpt a, b;
    StFile side;
    char *training = path_join(b_dir, CKPT_TRAINING_DIR), *side_path = path_join(training, BALANCE_BIAS_NAME);
    int have_side = path_exists(side_path) && st_open(&side, side_path) == 0;
    int n_bias = 0;
    free(training), free(side_path);
    if (hf_ckpt_open(a_dir, &a)) {
        CHECK_MSG(0, "%s: %s", a_dir, up_last_error());
        return;
    }
    if (hf_ckpt_open(b_dir, &b)) {
        CHECK_MSG(0, "%s: %s", b_dir, up_last_error());
        hf_ckpt_close(&a);
        return;
    }
    int n_a = 0, n_b = 0;
    for (HfTensorRef r = HF_TENSOR_BEGIN; hf_ckpt_next(&b, &r);) n_b++;
    for (HfTensorRef r = HF_TENSOR_BEGIN; hf_ckpt_next(&a, &r);) {
        const StTensor *t = hf_ckpt_tensor(&a, r);
        n_a++;
        const StFile *fb;
        if (strstr(t->name, "e_score_correction_bias")) {
            const StTensor *u = have_side ? st_find(&side, t->name) : NULL;
            CHECK_MSG(u && u->dtype == ST_F32 && t->dtype == ST_F32 && u->end - u->begin == t->end - t->begin &&
                          !memcmp(st_data(hf_ckpt_file(&a, r), t), st_data(&side, u), t->end - t->begin),
                      "%s: not in %s/training/%s as it was", t->name, b_dir, BALANCE_BIAS_NAME);
            CHECK_MSG(!hf_ckpt_find(&b, t->name, NULL), "%s: in %s's model files", t->name, b_dir);
            n_bias++;
            continue;
        }
        const StTensor *u = hf_ckpt_find(&b, t->name, &fb);
        CHECK_MSG(u != NULL, "%s has no tensor %s", b_dir, t->name);
        if (!u) continue;
        CHECK_MSG(u->dtype == t->dtype && u->end - u->begin == t->end - t->begin, "%s: dtype or size differs", t->name);
        if (u->end - u->begin == t->end - t->begin)
            CHECK_MSG(memcmp(st_data(hf_ckpt_file(&a, r), t), st_data(fb, u), t->end - t->begin) == 0, "%s: bytes differ", t->name);
    }
    CHECK_MSG(n_a - n_bias == n_b, "%d tensors vs %d", n_a - n_bias, n_b);
    if (have_side) st_close(&side);
    hf_ckpt_close(&a);
    hf_ckpt_close(&b);
}

TEST(hf_engine_saves_the_family_names_dtype_and_shards) {
    char *dir = fixtures("mixtral qwen3_moe");
    if (!dir) return;
    char *mixtral = path_join(dir, "mixtral"), *out = path_join(test_tmpdir(), "saved"), *out1 = path_join(test_tmpdir(), "one");
    Model m;
    CHECK(checkpoint_load_model(mixtral, &m, 0, NULL) == 0);
    /* an unchanged model saved in its dtype: the same tensors, byte for byte (BF16 -> F32 -> BF16) */
    checkpoint_set_shard_bytes(4096);
    CHECK(checkpoint_save(out, &m, NULL, 0) == 0);
    checkpoint_set_shard_bytes(0);
    check_same_tensors(mixtral, out);
    char *index = path_join(out, "model.safetensors.index.json");
    CHECK_MSG(path_exists(index), "no index for shards of at most 4096 bytes");
    CHECK(checkpoint_save(out1, &m, NULL, 0) == 0); /* 5 GB shards: one file */
    check_same_tensors(mixtral, out1);
    char *single = path_join(out1, "model.safetensors");
    CHECK(path_exists(single));
    ModelConfig c;
    CHECK(checkpoint_load_config(out, &c) == 0 && c.family == MODEL_FAMILY_MIXTRAL && c.weight_dtype == WEIGHT_BF16);
    char *config = path_join(out, "config.json"), *text;
    CHECK(read_file(config, &text, NULL) == 0);
    CHECK(strstr(text, "\"num_local_experts\"") && strstr(text, "\"mixtral\"") && strstr(text, "MixtralForCausalLM") &&
          strstr(text, "\"bos_token_id\"") && !strstr(text, "\"num_experts\""));
    free(text);
    /* the family has no balancing bias: zero biases without training state leave no file (zero
     * is what a reader assumes); nonzero ones are kept in training/, and read back */
    char *training = path_join(out, CKPT_TRAINING_DIR), *side = path_join(training, BALANCE_BIAS_NAME);
    free(training);
    CHECK(!path_exists(side));
    Model back;
    int bias = m.layers[0].expert_bias;
    m.param_mem[m.params[bias].offset + 1] = 0.25f;
    CHECK(checkpoint_save(out, &m, NULL, 0) == 0);
    CHECK(path_exists(side));
    CHECK(checkpoint_load_model(out, &back, 0, NULL) == 0);
    CHECK(back.param_mem[back.params[bias].offset + 1] == 0.25f);
    model_free(&back);
    model_free(&m);
    free(side), free(config), free(single), free(index), free(out1), free(out), free(mixtral), free(dir);
}

/* a copy of the qwen3_moe fixture with every layer's experts packed as transformers 5 keeps
 * them: gate_up_proj [E, 2I, C] (expert e: gate rows, then up rows), down_proj [E, C, I] */
static char *packed_copy(const char *src, const Model *m) {
    char *dst = path_join(test_tmpdir(), "packed");
    CHECK(mkdir_p(dst) == 0);
    char *from = path_join(src, "config.json"), *to = path_join(dst, "config.json");
    CHECK(copy_file(from, to) == 0);
    free(from), free(to);
    const ModelConfig *c = &m->cfg;
    int E = c->n_experts, I = c->moe_intermediate_size, C = c->d_model;
    StWriter *w = st_writer_new();
    char *path = path_join(dst, "model.safetensors");
    /* pass 0 declares the tensors, pass 1 writes them, in the same order */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) CHECK(st_writer_open(w, path) == 0);
        for (int i = 0; i < m->n_params; i++) {
            const ParamInfo *p = &m->params[i];
            int l, e;
            char proj[32];
            if (sscanf(p->name, "model.layers.%d.mlp.experts.%d.%31[a-z_].weight", &l, &e, proj) != 3) {
                if (pass == 0) st_writer_add(w, p->name, ST_F32, p->ndim, p->shape);
                else st_writer_write(w, m->param_mem + p->offset, p->numel * sizeof(float));
                continue;
            }
            if (e != 0 || !strcmp(proj, "up_proj")) continue; /* a layer's packed tensor goes at its expert 0 */
            int down = !strcmp(proj, "down_proj");
            if (pass == 0) {
                char name[128];
                snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%s", l, down ? "down_proj" : "gate_up_proj");
                int64_t shape[3] = {E, down ? C : 2 * I, down ? I : C};
                st_writer_add(w, name, ST_F32, 3, shape);
                continue;
            }
            for (int x = 0; x < E; x++) { /* expert x: its gate rows, then its up rows */
                st_writer_write(w, m->param_mem + m->params[i + x].offset, p->numel * sizeof(float));
                if (!down) st_writer_write(w, m->param_mem + m->params[i + E + x].offset, p->numel * sizeof(float));
            }
        }
    }
    CHECK(st_writer_commit(w) == 0);
    free(path);
    return dst;
}

TEST(hf_engine_reads_and_keeps_packed_experts) {
    char *dir = fixtures("qwen3_moe");
    if (!dir) return;
    char *qwen = path_join(dir, "qwen3_moe");
    Model per_expert, packed;
    CHECK(checkpoint_load_model(qwen, &per_expert, 0, NULL) == 0);
    char *pk = packed_copy(qwen, &per_expert);
    up_clear_error();
    CHECK_MSG(checkpoint_load_model(pk, &packed, 0, NULL) == 0, "%s", up_last_error());
    CHECK(packed.cfg.packed_experts == 1 && per_expert.cfg.packed_experts == 0);
    CHECK(memcmp(packed.param_mem, per_expert.param_mem, packed.n_floats * sizeof(float)) == 0);
    /* saved as it came: packed tensors, no per-expert ones; and read back the same */
    char *out = path_join(test_tmpdir(), "packed_saved");
    packed.cfg.weight_dtype = WEIGHT_F32;
    CHECK(checkpoint_save(out, &packed, NULL, 0) == 0);
    check_same_tensors(pk, out);
    model_free(&packed);
    CHECK(checkpoint_load_model(out, &packed, 0, NULL) == 0);
    CHECK(memcmp(packed.param_mem, per_expert.param_mem, packed.n_floats * sizeof(float)) == 0);
    model_free(&packed);
    model_free(&per_expert);
    free(out), free(pk), free(qwen), free(dir);
}

/* config.json variants of the qwen3_moe fixture: what the engine does not implement is refused by key */
TEST(hf_engine_config_key_policy) {
    char *dir = fixtures("qwen3_moe");
    if (!dir) return;
    char *path = path_join(dir, "qwen3_moe/config.json"), *text;
    CHECK(read_file(path, &text, NULL) == 0);
    static const struct {
        const char *key, *value, *message; /* message NULL: accepted */
    } cases[] = {
        {"foo_scale", "2", "key foo_scale"},
        {"rope_scaling", "{\"type\": \"yarn\", \"factor\": 4}", "field rope_scaling"},
        {"hidden_act", "\"gelu\"", "field hidden_act"},
        {"use_sliding_window", "true", "field use_sliding_window"},
        {"attention_dropout", "0.1", "field attention_dropout"},
        {"attention_bias", "true", "field attention_bias"},
        {"torch_dtype", "\"int8\"", "field torch_dtype"},
        {"model_type", "\"deepseek_v3\"", "does not train or evaluate"},
        {"model_type", "\"llama\"", "model_type llama"},
        {"use_cache", "false", NULL},
        {"transformers_version", "\"5.0.0\"", NULL},
        {"rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 500.0}", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cJSON *j = cJSON_Parse(text);
        cJSON_DeleteItemFromObject(j, cases[i].key);
        cJSON_AddItemToObject(j, cases[i].key, cJSON_Parse(cases[i].value));
        char *variant = cJSON_Print(j);
        char *vpath = path_join(test_tmpdir(), "variant.json");
        CHECK(atomic_write_file(vpath, variant, strlen(variant)) == 0);
        ModelConfig c;
        up_clear_error();
        int rc = model_config_load_json(&c, vpath);
        if (cases[i].message)
            CHECK_MSG(rc == -1 && strstr(up_last_error(), cases[i].message) && strstr(up_last_error(), vpath), "%s: %s", cases[i].key,
                      rc ? up_last_error() : "accepted");
        else
            CHECK_MSG(rc == 0, "%s: %s", cases[i].key, up_last_error());
        if (!rc && !strcmp(cases[i].key, "rope_parameters")) CHECK(c.rope_theta == 500.0f);
        free(vpath), free(variant);
        cJSON_Delete(j);
    }
    free(text), free(path), free(dir);
}

/* transformers 5's packed twins of the fixtures (same values; Mixtral's block moved to mlp):
 * each loads to exactly the per-expert model, and is saved packed again in those names */
TEST(hf_engine_packed_twins_of_every_family) {
    char *dir = fixtures("qwen3_moe qwen3_moe_packed qwen2_moe qwen2_moe_packed olmoe olmoe_packed mixtral mixtral_packed");
    if (!dir) return;
    static const char *const families[] = {"qwen3_moe", "qwen2_moe", "olmoe", "mixtral"};
    for (int i = 0; i < 4; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s_packed", families[i]);
        char *per = path_join(dir, families[i]), *pk = path_join(dir, name), *out = path_join(test_tmpdir(), name);
        Model a, b;
        up_clear_error();
        if (checkpoint_load_model(per, &a, 0, NULL) || checkpoint_load_model(pk, &b, 0, NULL)) {
            CHECK_MSG(0, "%s: %s", families[i], up_last_error());
            free(per), free(pk), free(out);
            continue;
        }
        CHECK_MSG(b.cfg.packed_experts && !a.cfg.packed_experts, "%s: layout not recognized", families[i]);
        CHECK_MSG(a.n_floats == b.n_floats && memcmp(a.param_mem, b.param_mem, a.n_floats * sizeof(float)) == 0,
                  "%s: the packed twin loads other values", families[i]);
        CHECK(checkpoint_save(out, &b, NULL, 0) == 0);
        check_same_tensors(pk, out); /* the twin's names, dtype and bytes */
        model_free(&a), model_free(&b);
        free(per), free(pk), free(out);
    }
    free(dir);
}
