/* The upcycling operator on upcycle checkpoints: exact copies, byte-identical non-expert
 * tensors, allocation rules, bias noise, optimizer state, dense -> MoE, errors. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "grow/grow.h"
#include "io/checkpoint.h"
#include "model.h"
#include "test.h"
#include "util.h"

static int load(const char *dir, Model *m) { return checkpoint_load_model(dir, m, 1, NULL); }

static float *tensor(const Model *m, const char *fmt, int a, int b) {
    char name[PARAM_NAME_MAX];
    snprintf(name, sizeof name, fmt, a, b);
    int i = model_find_param(m, name);
    return i < 0 ? NULL : model_param(m, i);
}

TEST(grow_allocation_rules) {
    int source[6], copies[4];
    LayerPlan lp = {.layer = 1, .n_old = 4, .n_new = 6, .source = source, .copies = copies};
    CHECK(allocate_uniform(&lp) == -1 && strstr(up_last_error(), "not a multiple"));
    double utility[4] = {1.0, 10.0, 3.0, 0.5};
    CHECK(allocate_greedy(&lp, utility, 0) == 0);
    /* greedy on utility per copy: 10 -> 10/2 = 5 -> (3 and 5 compete: 5 wins) -> r = {1,3,1,1} */
    CHECK(copies[0] == 1 && copies[1] == 3 && copies[2] == 1 && copies[3] == 1);
    CHECK(source[4] == 1 && source[5] == 1 && source[3] == 3);
    CHECK(allocate_greedy(&lp, utility, 2) == 0);
    CHECK(copies[1] == 2 && copies[2] == 2);
    lp.n_new = 12;
    CHECK(allocate_greedy(&lp, utility, 2) == -1 && strstr(up_last_error(), "--max-copies"));
    float zeros[4] = {0};
    CHECK_CLOSE(grow_bias_noise_std(zeros, 4, 2.0f), 2e-3, 1e-9); /* the 1e-3 floor */
    float spread[2] = {-1, 1};
    CHECK_CLOSE(grow_bias_noise_std(spread, 2, 0.5f), 0.5, 1e-6);
}

TEST(grow_uniform_exact_copies) {
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    char *data = fixture_data_dir(), *src_dir = fixture_trained_checkpoint("src", &mc, &tc, data);
    char *out = path_join(test_tmpdir(), "grown");
    GrowOptions o;
    grow_options_defaults(&o);
    o.factor = 2, o.quiet = 1, o.check = 1, o.data_dir = data;
    GrowReport r;
    CHECK(grow_checkpoint(src_dir, out, &o, &r) == 0);
    CHECK(r.n_old == 4 && r.n_new == 8);
    CHECK_MSG(fabs(r.loss_after - r.loss_before) < 0.1, "warm start gap %g -> %g", r.loss_before, r.loss_after);
    Model a, b;
    CHECK(load(src_dir, &a) == 0 && load(out, &b) == 0);
    CHECK(b.cfg.n_experts == 8 && b.step == a.step);
    /* every tensor of the source exists in the output; all but router and bias byte-identical */
    for (int i = 0; i < a.n_params; i++) {
        int j = model_find_param(&b, a.params[i].name);
        CHECK(j >= 0);
        if (j < 0 || strstr(a.params[i].name, "mlp.gate.")) continue;
        CHECK_MSG(memcmp(model_param(&a, i), model_param(&b, j), a.params[i].numel * 4) == 0, "%s changed", a.params[i].name);
    }
    int F = mc.moe_intermediate_size, C = mc.d_model;
    float *ra = tensor(&a, "model.layers.%d.mlp.gate.weight", 1, 0), *rb = tensor(&b, "model.layers.%d.mlp.gate.weight", 1, 0);
    float *ba = tensor(&a, "model.layers.%d.mlp.gate.e_score_correction_bias", 1, 0);
    float *bb = tensor(&b, "model.layers.%d.mlp.gate.e_score_correction_bias", 1, 0);
    for (int j = 0; j < 8; j++) {
        int s = j < 4 ? j : j - 4; /* one replica per source, appended in source order */
        CHECK(memcmp(rb + j * C, ra + s * C, C * 4) == 0);
        CHECK(memcmp(tensor(&b, "model.layers.1.mlp.experts.%d.down_proj.weight", j, 0),
                     tensor(&a, "model.layers.1.mlp.experts.%d.down_proj.weight", s, 0), (size_t)F * C * 4) == 0);
        if (j < 4) CHECK(bb[j] == ba[j]);
        else CHECK(bb[j] != ba[s] && fabs(bb[j] - ba[s]) < 0.2);
        /* optimizer state copied */
        size_t off_a = a.params[model_find_param(&a, "model.layers.1.mlp.experts.0.up_proj.weight") + s].offset;
        size_t off_b = b.params[model_find_param(&b, "model.layers.1.mlp.experts.0.up_proj.weight") + j].offset;
        CHECK(memcmp(a.adam_m + off_a, b.adam_m + off_b, (size_t)F * C * 4) == 0);
    }
    /* grow.json records the sources */
    char *path = path_join(out, "grow.json"), *text;
    CHECK(read_file(path, &text, NULL) == 0);
    cJSON *j = cJSON_Parse(text);
    cJSON *layer = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "layers"), 0);
    CHECK(cJSON_GetObjectItem(layer, "layer")->valueint == 1);
    CHECK(cJSON_GetArrayItem(cJSON_GetObjectItem(layer, "source"), 7)->valueint == 3);
    cJSON_Delete(j);
    free(text), free(path);
    /* the output exists now: refused without --force, accepted with it */
    CHECK(grow_checkpoint(src_dir, out, &o, &r) == -1 && strstr(up_last_error(), "--force"));
    model_free(&a), model_free(&b);
    free(data), free(src_dir), free(out);
}

TEST(grow_utility_non_doubling_and_optimizer_modes) {
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    char *data = fixture_data_dir(), *src_dir = fixture_trained_checkpoint("src", &mc, &tc, data);
    const char *kinds[4] = {"grad2", "saliency", "weight-norm", "fisher"};
    for (int k = 0; k < 4; k++) {
        char name[32];
        snprintf(name, sizeof name, "u%d", k);
        char *out = path_join(test_tmpdir(), name);
        GrowOptions o;
        grow_options_defaults(&o);
        o.target_experts = 6, o.alloc = ALLOC_UTILITY, o.utility = (UtilityKind)k, o.data_dir = data, o.quiet = 1;
        o.optim_state = (OptimStateKind)k; /* copy, reset, scale, interpolate */
        GrowReport r;
        CHECK_MSG(grow_checkpoint(src_dir, out, &o, &r) == 0, "utility %s: %s", kinds[k], up_last_error());
        Model a, b;
        CHECK(load(src_dir, &a) == 0 && load(out, &b) == 0);
        CHECK(b.cfg.n_experts == 6);
        /* the replicas' sources: from grow.json */
        char *path = path_join(out, "grow.json"), *text;
        CHECK(read_file(path, &text, NULL) == 0);
        cJSON *j = cJSON_Parse(text);
        cJSON *layer = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "layers"), 0);
        int s4 = cJSON_GetArrayItem(cJSON_GetObjectItem(layer, "source"), 4)->valueint;
        int sum = 0;
        for (int e = 0; e < 4; e++) sum += cJSON_GetArrayItem(cJSON_GetObjectItem(layer, "copies"), e)->valueint;
        CHECK(sum == 6);
        CHECK(cJSON_GetArrayItem(cJSON_GetObjectItem(layer, "utility"), 0) != NULL);
        int r4 = cJSON_GetArrayItem(cJSON_GetObjectItem(layer, "copies"), s4)->valueint;
        cJSON_Delete(j);
        free(text), free(path);
        int first_a = model_find_param(&a, "model.layers.1.mlp.experts.0.gate_proj.weight");
        int first_b = model_find_param(&b, "model.layers.1.mlp.experts.0.gate_proj.weight");
        const float *ma = a.adam_m + a.params[first_a + s4].offset, *mb = b.adam_m + b.params[first_b + 4].offset;
        size_t n = a.params[first_a].numel;
        int ok = 1;
        for (size_t i = 0; i < n; i++) {
            float expect = k == 0 ? ma[i] : k == 1 ? 0.0f : k == 2 ? ma[i] / r4 : mb[i];
            ok &= mb[i] == expect;
        }
        CHECK_MSG(ok, "optimizer state mode %d of replica 4 (source %d, r=%d)", k, s4, r4);
        model_free(&a), model_free(&b);
        free(out);
    }
    free(data), free(src_dir);
}

TEST(grow_weight_norm_utility_values) {
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    char *data = fixture_data_dir(), *src_dir = fixture_trained_checkpoint("src", &mc, &tc, data);
    double u[4];
    CHECK(grow_compute_utilities(src_dir, NULL, UTIL_WEIGHT_NORM, 1, u) == 0);
    Model a;
    CHECK(load(src_dir, &a) == 0);
    for (int e = 0; e < 4; e++) {
        double ss = 0;
        const char *parts[3] = {"gate_proj", "up_proj", "down_proj"};
        for (int p = 0; p < 3; p++) {
            char name[PARAM_NAME_MAX];
            snprintf(name, sizeof name, "model.layers.1.mlp.experts.%d.%s.weight", e, parts[p]);
            int i = model_find_param(&a, name);
            for (size_t k = 0; k < a.params[i].numel; k++) ss += (double)model_param(&a, i)[k] * model_param(&a, i)[k];
        }
        CHECK_CLOSE(u[e], sqrt(ss), 1e-9);
    }
    CHECK(grow_compute_utilities(src_dir, NULL, UTIL_GRAD2, 1, u) == -1 && strstr(up_last_error(), "--data"));
    model_free(&a);
    free(data), free(src_dir);
}

TEST(grow_errors) {
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    char *data = fixture_data_dir(), *src_dir = fixture_trained_checkpoint("src", &mc, &tc, data);
    char *out = path_join(test_tmpdir(), "never");
    GrowOptions o;
    grow_options_defaults(&o);
    o.quiet = 1;
    GrowReport r;
    o.target_experts = 3; /* below 4 */
    CHECK(grow_checkpoint(src_dir, out, &o, &r) == -1 && strstr(up_last_error(), "below"));
    o.target_experts = 6; /* uniform, not divisible */
    CHECK(grow_checkpoint(src_dir, out, &o, &r) == -1 && strstr(up_last_error(), "multiple"));
    CHECK(!path_exists(out));
    o.target_experts = 8, o.layers = "0"; /* layer 0 is dense */
    CHECK(grow_checkpoint(src_dir, out, &o, &r) == -1 && strstr(up_last_error(), "not an MoE layer"));
    o.layers = NULL;
    /* a dense checkpoint: suggests --from-dense */
    mc.n_experts = 0;
    char *dense = fixture_trained_checkpoint("dense", &mc, &tc, data);
    o.target_experts = 8;
    CHECK(grow_checkpoint(dense, out, &o, &r) == -1 && strstr(up_last_error(), "--from-dense"));
    CHECK(!path_exists(out));
    free(dense), free(data), free(src_dir), free(out);
}

/* Sparse upcycling: N identical copies of the dense FFN with renormalized gates compute the
 * dense FFN exactly, so the loss does not move. */
/* --layers: heuristics apply to the listed layers only; the others get exact copies */
TEST(grow_layers_selects_where_heuristics_apply) {
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    mc.decoder_sparse_step = 1, mc.n_layers = 3; /* MoE layers 0, 1, 2 */
    char *data = fixture_data_dir(), *src_dir = fixture_trained_checkpoint("src", &mc, &tc, data);
    char *out = path_join(test_tmpdir(), "g");
    GrowOptions o;
    grow_options_defaults(&o);
    o.factor = 2, o.quiet = 1, o.layers = "1";
    CHECK(expert_init_parse("scaled:factor=0.5", &o.expert_init) == 0);
    GrowReport r;
    CHECK(grow_checkpoint(src_dir, out, &o, &r) == 0);
    Model a, b;
    CHECK(load(src_dir, &a) == 0 && load(out, &b) == 0);
    size_t n = (size_t)mc.moe_intermediate_size * mc.d_model;
    for (int layer = 0; layer < 3; layer++) {
        const float *src = tensor(&a, "model.layers.%d.mlp.experts.0.up_proj.weight", layer, 0);
        const float *rep = tensor(&b, "model.layers.%d.mlp.experts.4.up_proj.weight", layer, 0);
        int exact = memcmp(src, rep, n * 4) == 0, halved = 1;
        for (size_t i = 0; i < n; i++) halved &= rep[i] == 0.5f * src[i];
        CHECK_MSG(layer == 1 ? halved : exact, "layer %d: replica of expert 0 should be %s", layer, layer == 1 ? "scaled" : "an exact copy");
    }
    model_free(&a), model_free(&b);
    free(out), free(src_dir), free(data);
}

TEST(grow_from_dense_preserves_function) {
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    mc.n_experts = 0;
    char *data = fixture_data_dir(), *dense = fixture_trained_checkpoint("dense", &mc, &tc, data);
    char *out = path_join(test_tmpdir(), "moe");
    GrowOptions o;
    grow_options_defaults(&o);
    o.from_dense = 1, o.target_experts = 4, o.top_k = 2, o.sparse_step = 2, o.quiet = 1, o.check = 1, o.data_dir = data;
    GrowReport r;
    CHECK(grow_checkpoint(dense, out, &o, &r) == 0);
    CHECK_CLOSE(r.loss_after, r.loss_before, 1e-5);
    Model b;
    CHECK(load(out, &b) == 0);
    CHECK(b.cfg.n_experts == 4 && b.layers[1].is_moe && !b.layers[0].is_moe);
    CHECK(b.cfg.moe_intermediate_size == mc.intermediate_size);
    model_free(&b);
    /* drop-upcycling changes experts 1..N-1 only */
    char *out2 = path_join(test_tmpdir(), "moe_drop");
    CHECK(expert_init_parse("drop:frac=0.5", &o.expert_init) == 0);
    CHECK(grow_checkpoint(dense, out2, &o, &r) == 0);
    CHECK(r.loss_after != r.loss_before);
    free(out2), free(out), free(dense), free(data);
}

/* A Qwen2-MoE-shaped checkpoint (q/k/v biases, a gated shared expert): the shared expert and
 * the biases are ordinary tensors, copied unchanged. With top-1 routing, renormalized gates,
 * zero balancing biases and no bias noise, a token picks its source expert or one of its exact
 * replicas with gate 1, so growth preserves the function: the loss does not move. */
TEST(grow_qwen2_moe_shared_expert_preserves_function) {
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    mc.family = MODEL_FAMILY_QWEN2_MOE, mc.attention_bias = 1, mc.qk_norm = 0, mc.shared_expert_size = 24, mc.top_k = 1, mc.norm_topk_prob = 1;
    tc.bias_update_rate = 0;
    char *data = fixture_data_dir(), *src_dir = fixture_trained_checkpoint("src", &mc, &tc, data);
    char *out = path_join(test_tmpdir(), "grown");
    GrowOptions o;
    grow_options_defaults(&o);
    o.factor = 2, o.bias_noise = 0, o.quiet = 1, o.check = 1, o.data_dir = data;
    GrowReport r;
    CHECK_MSG(grow_checkpoint(src_dir, out, &o, &r) == 0, "%s", up_last_error());
    CHECK(r.n_old == 4 && r.n_new == 8);
    CHECK_MSG(fabs(r.loss_after - r.loss_before) <= 1e-6 * r.loss_before, "loss at growth %.9g vs source %.9g",
              r.loss_after, r.loss_before);
    Model a, b;
    CHECK(load(src_dir, &a) == 0 && load(out, &b) == 0);
    CHECK(b.cfg.n_experts == 8 && b.cfg.shared_expert_size == 24 && b.cfg.attention_bias);
    const char *kept[] = {"model.layers.1.mlp.shared_expert.gate_proj.weight", "model.layers.1.mlp.shared_expert.up_proj.weight",
                          "model.layers.1.mlp.shared_expert.down_proj.weight", "model.layers.1.mlp.shared_expert_gate.weight",
                          "model.layers.1.self_attn.q_proj.bias", "model.layers.0.self_attn.v_proj.bias"};
    for (size_t i = 0; i < sizeof kept / sizeof *kept; i++) {
        int pa = model_find_param(&a, kept[i]), pb = model_find_param(&b, kept[i]);
        CHECK_MSG(pa >= 0 && pb >= 0, "%s missing", kept[i]);
        if (pa < 0 || pb < 0) continue;
        size_t n = a.params[pa].numel;
        CHECK_MSG(b.params[pb].numel == n && !memcmp(model_param(&a, pa), model_param(&b, pb), n * 4) &&
                      !memcmp(a.adam_m + a.params[pa].offset, b.adam_m + b.params[pb].offset, n * 4),
                  "%s (or its optimizer state) changed", kept[i]);
    }
    model_free(&a), model_free(&b);
    free(out), free(src_dir), free(data);
}
