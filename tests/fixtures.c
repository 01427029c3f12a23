#include "fixtures.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/shard.h"
#include "test.h"
#include "train.h"
#include "util.h"

char *fixture_data_dir(void) {
    char *dir = path_join(test_tmpdir(), "data");
    mkdir_p(dir);
    Rng rng;
    rng_seed(&rng, 8);
    const char *splits[3] = {"pretrain.bin", "cpt.bin", "val.bin"};
    size_t sizes[3] = {20000, 4000, 4000};
    for (int s = 0; s < 3; s++) {
        uint32_t *t = xmalloc(sizes[s] * 4);
        for (size_t i = 0; i < sizes[s]; i++) t[i] = rng_uniform(&rng) < 0.7 ? (uint32_t)(i % 17) : (uint32_t)rng_below(&rng, 40);
        char *p = path_join(dir, splits[s]);
        shard_write(p, t, sizes[s], 40);
        free(p);
        free(t);
    }
    return dir;
}

void fixture_small_run(ModelConfig *mc, TrainConfig *tc) {
    model_config_defaults(mc);
    mc->vocab_size = 40, mc->d_model = 32, mc->n_layers = 2, mc->n_heads = 4, mc->n_kv_heads = 2, mc->head_dim = 8;
    mc->intermediate_size = 48, mc->n_experts = 4, mc->top_k = 2, mc->moe_intermediate_size = 16;
    train_config_defaults(tc);
    tc->batch_size = 4, tc->seq_len = 16, tc->steps = 12, tc->warmup_steps = 2, tc->eval_every = 6, tc->eval_batches = 2;
    tc->save_every = 6, tc->lr = 1e-2f, tc->bias_update_rate = 1e-2f;
}

char *fixture_trained_checkpoint(const char *name, const ModelConfig *mc, const TrainConfig *tc, const char *data_dir) {
    char *out = path_join(test_tmpdir(), name);
    TrainOptions o = {.data_dir = data_dir, .out_dir = out, .quiet = 1};
    TrainResult r;
    CHECK(train_run(mc, tc, &o, &r) == 0);
    free(r.losses);
    char *final = path_join(out, "final");
    free(out);
    return final;
}

const char *fixture_parity_case(int index, ModelConfig *mc, TrainConfig *tc) {
    model_config_defaults(mc);
    mc->vocab_size = 61, mc->d_model = 32, mc->n_layers = 4, mc->n_heads = 4, mc->n_kv_heads = 2;
    mc->intermediate_size = 48, mc->n_experts = 6, mc->top_k = 2, mc->moe_intermediate_size = 24;
    mc->init_std = 0.1f;
    train_config_defaults(tc);
    tc->batch_size = 3, tc->seq_len = 16, tc->steps = FIXTURE_PARITY_STEPS, tc->lr = 1e-2f, tc->min_lr = 1e-3f;
    tc->warmup_steps = 3, tc->decay_frac = 0.2f, tc->grad_clip = 0.5f, tc->bias_update_rate = 1e-2f;
    switch (index) {
    case 0:
        mc->n_experts = 0, mc->tie_embeddings = 1, mc->n_kv_heads = 4; /* written as the dense qwen3 */
        return "dense";
    case 1:
        mc->decoder_sparse_step = 2;
        tc->aux_loss_coef = 0.01f, tc->z_loss_coef = 0.001f;
        return "interleaved";
    case 2:
        mc->decoder_sparse_step = 1, mc->n_experts = 8, mc->top_k = 3, mc->norm_topk_prob = 0, mc->first_k_dense = 1;
        tc->decay_shape = DECAY_1_SQRT;
        return "fullmoe";
    case 3: /* Qwen2-MoE: q/k/v biases, a gated shared expert, no q/k norm, no renormalization */
        mc->family = MODEL_FAMILY_QWEN2_MOE;
        mc->decoder_sparse_step = 1, mc->n_experts = 8, mc->top_k = 2, mc->norm_topk_prob = 0, mc->qk_norm = 0;
        mc->attention_bias = 1, mc->shared_expert_size = 20;
        return "qwen2moe";
    case 5: /* Mixtral: every layer MoE, no q/k norm, top-K renormalized; written in Mixtral's names and keys */
        mc->family = MODEL_FAMILY_MIXTRAL;
        mc->decoder_sparse_step = 1, mc->n_experts = 4, mc->top_k = 2, mc->norm_topk_prob = 1, mc->qk_norm = 0;
        return "mixtral";
    default: /* OLMoE: q/k norm over the whole projection, q/k/v clamped (tight: 15-45% of the values) */
        mc->family = MODEL_FAMILY_OLMOE;
        mc->decoder_sparse_step = 1, mc->n_experts = 8, mc->top_k = 2, mc->norm_topk_prob = 0;
        mc->qk_norm = 1, mc->qk_norm_full = 1, mc->clip_qkv = 0.8f, mc->n_kv_heads = 4;
        return "olmoe";
    }
}

int fixture_hf(const char *dir, const char *names) {
    static int have_torch = 0; /* 1 yes, -1 no, 0 not asked yet */
    char *cache = path_join(test_run_dir(), "hf-fixtures");
    char list[2048], missing[2048] = "", cmd[8192];
    snprintf(list, sizeof list, "%s", names);
    for (char *save = NULL, *w = strtok_r(list, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
        char *p = path_join(cache, w);
        if (!is_dir(p)) snprintf(missing + strlen(missing), sizeof missing - strlen(missing), " %s", w);
        free(p);
    }
    int rc = 0;
    if (*missing) {
        if (!have_torch) have_torch = system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") == 0 ? 1 : -1;
        if (have_torch < 0) {
            test_fail(__FILE__, __LINE__, "/usr/bin/python3 with torch and numpy builds the Hugging Face fixtures "
                                          "(tests/make_hf_fixtures.py); install python3-torch");
            free(cache);
            return -1;
        }
        char script[1024]; /* next to this file, or from the repository root */
        snprintf(script, sizeof script, "%s", __FILE__);
        char *slash = strrchr(script, '/');
        if (slash) snprintf(slash + 1, sizeof script - (size_t)(slash + 1 - script), "make_hf_fixtures.py");
        if (!slash || !path_exists(script)) snprintf(script, sizeof script, "tests/make_hf_fixtures.py");
        snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s'%s >/dev/null", script, cache, missing);
        if (system(cmd) != 0) {
            test_fail(__FILE__, __LINE__, "fixture script failed: %s", cmd);
            remove_tree(cache); /* no half-made fixture is copied later */
            rc = -1;
        }
    }
    if (rc == 0) {
        mkdir_p(dir);
        snprintf(list, sizeof list, "%s", names);
        for (char *save = NULL, *w = strtok_r(list, " ", &save); w && rc == 0; w = strtok_r(NULL, " ", &save)) {
            /* with the files the script writes beside it (NAME.norms.json) */
            snprintf(cmd, sizeof cmd, "cp -R '%s/%s' '%s/' && for f in '%s/%s'.*; do [ ! -e \"$f\" ] || cp \"$f\" '%s/'; done",
                     cache, w, dir, cache, w, dir);
            if (system(cmd) != 0) test_fail(__FILE__, __LINE__, "cannot copy a fixture: %s", cmd), rc = -1;
        }
    }
    free(cache);
    return rc;
}
