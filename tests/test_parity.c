/* Parity with the independent PyTorch reference (tests/torch_ref.py, Debian's python3-torch):
 * logits, loss, every parameter's gradient, and the losses of 20 AdamW steps (with clipping,
 * the WSD schedule and the balancing-bias update) for dense, interleaved and full-MoE configs,
 * and Qwen2-MoE-, OLMoE- and Mixtral-shaped ones (q/k/v biases, shared expert; whole-projection
 * q/k norm, clip_qkv; Mixtral's names and keys, read by the reference on its own). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "model.h"
#include "optim.h"
#include "fixtures.h"
#include "test.h"
#include "util.h"

#define PARITY_STEPS 20

static int write_batches(const char *path, const int32_t *tokens, int S, int B, int T) {
    StWriter *w = st_writer_new();
    int64_t shape[3] = {S, B, T + 1};
    st_writer_add(w, "tokens", ST_I32, 3, shape);
    if (st_writer_open(w, path)) return -1;
    if (st_writer_write(w, tokens, sizeof(int32_t) * S * B * (T + 1))) return -1;
    return st_writer_commit(w);
}

static int write_ours(const char *path, const Model *m, const float *logits, float loss) {
    int B = m->B, T = m->T, V = m->cfg.vocab_size;
    float *grads = xmalloc(m->n_floats * sizeof(float));
    m->be->download(grads, m->grad_mem, m->n_floats * sizeof(float));
    StWriter *w = st_writer_new();
    int64_t lshape[3] = {B, T, V}, one[1] = {1};
    st_writer_add(w, "logits", ST_F32, 3, lshape);
    st_writer_add(w, "loss", ST_F32, 1, one);
    char name[PARAM_NAME_MAX + 8];
    for (int i = 0; i < m->n_params; i++) {
        if (!m->params[i].trainable) continue;
        snprintf(name, sizeof name, "grad.%s", m->params[i].name);
        st_writer_add(w, name, ST_F32, m->params[i].ndim, m->params[i].shape);
    }
    int rc = st_writer_open(w, path);
    if (!rc) rc = st_writer_write(w, logits, sizeof(float) * B * T * V);
    if (!rc) rc = st_writer_write(w, &loss, sizeof loss);
    for (int i = 0; i < m->n_params && !rc; i++)
        if (m->params[i].trainable) rc = st_writer_write(w, grads + m->params[i].offset, m->params[i].numel * sizeof(float));
    if (!rc) rc = st_writer_commit(w);
    free(grads);
    return rc;
}

static void run_parity(const char *label, ModelConfig mc, TrainConfig tc) {
    mc.head_dim = mc.d_model / mc.n_heads;
    const int B = tc.batch_size, T = tc.seq_len, S = PARITY_STEPS;
    char *dir = path_join(test_tmpdir(), label);
    Model m;
    CHECK(model_create(&m, &mc, backend_cpu()) == 0);
    model_init_weights(&m, 42);
    /* q/k/v biases start at zero; random ones make the first forward depend on them */
    Rng brng;
    rng_seed(&brng, 7);
    for (int i = 0; i < m.n_params; i++) {
        if (!str_ends_with(m.params[i].name, ".bias")) continue;
        float *b = model_param(&m, i);
        for (size_t k = 0; k < m.params[i].numel; k++) b[k] = 0.1f * rng_normal(&brng);
    }
    model_set_batch(&m, B, T);
    CHECK(checkpoint_save(dir, &m, NULL, 0) == 0); /* config.json + model.safetensors */

    Rng rng;
    rng_seed(&rng, 99);
    size_t per_batch = (size_t)B * (T + 1);
    int32_t *tokens = xmalloc(sizeof(int32_t) * per_batch * S);
    for (size_t i = 0; i < per_batch * S; i++) tokens[i] = (int32_t)rng_below(&rng, mc.vocab_size);
    char *path = path_join(dir, "batch.safetensors");
    CHECK(write_batches(path, tokens, S, B, T) == 0);
    free(path);

    /* logits, loss and gradients at the initial weights on batch 0 */
    model_zero_grad(&m);
    double loss = model_forward(&m, tokens, tc.aux_loss_coef, tc.z_loss_coef);
    float *logits = xmalloc(sizeof(float) * B * T * mc.vocab_size);
    m.be->download(logits, m.logits, sizeof(float) * B * T * mc.vocab_size);
    model_backward(&m, tc.aux_loss_coef, tc.z_loss_coef);
    if (mc.clip_qkv > 0) { /* the clamp must bite: some q, k and v entries lie outside +-clip_qkv */
        size_t nq = (size_t)B * T * mc.n_heads * mc.head_dim, nkv = (size_t)B * T * mc.n_kv_heads * mc.head_dim;
        const LayerActs *A = &m.acts[0];
        const float *in[3] = {A->q_unclipped, A->k_unclipped, A->v_unclipped};
        size_t n[3] = {nq, nkv, nkv}, clamped[3] = {0, 0, 0};
        for (int t = 0; t < 3; t++)
            for (size_t i = 0; i < n[t]; i++) clamped[t] += fabsf(in[t][i]) > mc.clip_qkv;
        printf("    [%s] layer 0 clamped: q %.1f%%, k %.1f%%, v %.1f%%\n", label, 100.0 * clamped[0] / nq,
               100.0 * clamped[1] / nkv, 100.0 * clamped[2] / nkv);
        fflush(stdout); /* before torch_ref's lines */
        CHECK_MSG(clamped[0] && clamped[1] && clamped[2] && clamped[0] < nq, "%s: clip_qkv %g clamps q %zu, k %zu, v %zu",
                  label, mc.clip_qkv, clamped[0], clamped[1], clamped[2]);
    }
    path = path_join(dir, "ours.safetensors");
    CHECK(write_ours(path, &m, logits, (float)loss) == 0);
    free(path);

    /* 20 steps from the same initial weights: the gradients above are not applied twice */
    cJSON *j = cJSON_CreateObject(), *losses = cJSON_AddArrayToObject(j, "losses"), *lrs = cJSON_AddArrayToObject(j, "lrs");
    cJSON *loads = cJSON_AddArrayToObject(j, "loads");
    int32_t *layer_loads = xmalloc(sizeof(int32_t) * (mc.n_experts ? mc.n_experts : 1));
    for (int s = 0; s < S; s++) {
        float lr = lr_at(&tc, s, S);
        model_zero_grad(&m);
        double l = model_forward(&m, tokens + per_batch * s, tc.aux_loss_coef, tc.z_loss_coef);
        model_backward(&m, tc.aux_loss_coef, tc.z_loss_coef);
        cJSON *step_loads = cJSON_CreateArray();
        for (int layer = 0; layer < mc.n_layers; layer++) {
            if (!m.layers[layer].is_moe) continue;
            model_layer_loads(&m, layer, layer_loads);
            for (int e = 0; e < mc.n_experts; e++) cJSON_AddItemToArray(step_loads, cJSON_CreateNumber(layer_loads[e]));
        }
        cJSON_AddItemToArray(loads, step_loads);
        model_optimizer_step(&m, &tc, lr);
        cJSON_AddItemToArray(losses, cJSON_CreateNumber(l));
        cJSON_AddItemToArray(lrs, cJSON_CreateNumber(lr));
    }
    if (!model_config_n_moe_layers(&mc)) cJSON_DeleteItemFromObject(j, "loads");
    cJSON *train = cJSON_AddObjectToObject(j, "train");
    cJSON_AddNumberToObject(train, "beta1", tc.beta1);
    cJSON_AddNumberToObject(train, "beta2", tc.beta2);
    cJSON_AddNumberToObject(train, "eps", tc.adam_eps);
    cJSON_AddNumberToObject(train, "weight_decay", tc.weight_decay);
    cJSON_AddNumberToObject(train, "grad_clip", tc.grad_clip);
    cJSON_AddNumberToObject(train, "bias_update_rate", tc.bias_update_rate);
    cJSON_AddNumberToObject(train, "aux_loss_coef", tc.aux_loss_coef);
    cJSON_AddNumberToObject(train, "z_loss_coef", tc.z_loss_coef);
    char *text = cJSON_Print(j);
    path = path_join(dir, "ours_steps.json");
    CHECK(atomic_write_file(path, text, strlen(text)) == 0);
    free(path);
    free(text);
    cJSON_Delete(j);

    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 tests/torch_ref.py '%s' > '%s/torch_ref.log' 2>&1", dir, dir);
    int rc = system(cmd);
    snprintf(cmd, sizeof cmd, "sed 's/^/    [%s] /' '%s/torch_ref.log'", label, dir);
    if (system(cmd) != 0) test_fail(__FILE__, __LINE__, "cannot show torch_ref.log");
    CHECK_MSG(rc == 0, "%s: tests/torch_ref.py reported a mismatch or failed to run (exit %d); is python3-torch installed?",
              label, rc);
    free(layer_loads);
    free(logits);
    free(tokens);
    free(dir);
    model_free(&m);
}


TEST(parity_torch_dense_tied) {
    ModelConfig mc;
    TrainConfig tc;
    const char *label = fixture_parity_case(0, &mc, &tc);
    run_parity(label, mc, tc);
}

TEST(parity_torch_interleaved_aux_losses) {
    ModelConfig mc;
    TrainConfig tc;
    const char *label = fixture_parity_case(1, &mc, &tc);
    run_parity(label, mc, tc);
}

TEST(parity_torch_full_moe) {
    ModelConfig mc;
    TrainConfig tc;
    const char *label = fixture_parity_case(2, &mc, &tc);
    run_parity(label, mc, tc);
}

TEST(parity_torch_qwen2_moe) {
    ModelConfig mc;
    TrainConfig tc;
    const char *label = fixture_parity_case(3, &mc, &tc);
    run_parity(label, mc, tc);
}

TEST(parity_torch_mixtral) {
    ModelConfig mc;
    TrainConfig tc;
    const char *label = fixture_parity_case(5, &mc, &tc);
    run_parity(label, mc, tc);
}

TEST(parity_torch_olmoe) {
    ModelConfig mc;
    TrainConfig tc;
    const char *label = fixture_parity_case(4, &mc, &tc);
    run_parity(label, mc, tc);
}
