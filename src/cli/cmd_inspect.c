/* upcycle inspect: the config, parameters, experts and balancing biases of a checkpoint. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "grow/hf.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "io/checkpoint.h"
#include "model.h"
#include "train.h"
#include "util.h"
#include "util/json.h"

int cmd_inspect(int argc, char **argv) {
    const char *ckpt = NULL;
    CliOption opts[] = {{"ckpt", OPT_STR, &ckpt, "checkpoint directory (required)"}};
    int prc = cli_parse("inspect", "--ckpt DIR", argc, argv, opts, 1);
    if (prc) return prc == 1 ? 0 : prc;
    if (!ckpt) return cli_usage_error("inspect", "--ckpt is required; expected --ckpt DIR");
    Model m;
    if (checkpoint_load_model(ckpt, &m, 0, NULL)) {
        /* a family the engine does not run (DeepSeek, GPT-OSS): what the streaming grower sees */
        char engine_error[1024];
        snprintf(engine_error, sizeof engine_error, "%s", up_last_error());
        HfMoeInfo info;
        if (!strstr(engine_error, "does not train or evaluate") || hf_inspect(ckpt, &info)) {
            up_error("%s", engine_error);
            return cli_fail();
        }
        printf("checkpoint %s\nformat: %s (grown by copy; the engine does not run it), %s, %s\n", ckpt, info.model_type, info.dtype,
               info.sharded ? "sharded" : "one file");
        printf("MoE layers: %d of %d, %d experts (%s) top-%d, %d tensors per expert, %.3f GB of tensors\n", info.n_moe_layers,
               info.n_layers, info.n_experts, info.experts_key, info.n_experts_per_tok, info.n_expert_tensors, info.total_bytes / 1e9);
        hf_info_free(&info);
        return 0;
    }
    const ModelConfig *c = &m.cfg;
    size_t total, active, embedding;
    model_param_counts(&m, &total, &active, &embedding);
    printf("checkpoint %s\n", ckpt);
    printf("format: %s (%s), weights %s, experts %s\n", config_family_model_type(&m.cfg), config_family_architecture(&m.cfg),
           m.cfg.weight_dtype == WEIGHT_BF16 ? "bf16" : m.cfg.weight_dtype == WEIGHT_F16 ? "fp16" : "fp32",
           m.cfg.packed_experts ? "packed (gate_up_proj, down_proj)" : "per expert");
    model_config_print(c, stdout);
    printf("params: %zu total (%.3fM), %zu active per token (%.3fM), %zu embedding; %.1f MFLOP/token forward at T=256\n",
           total, total / 1e6, active, active / 1e6, embedding, model_flops_per_token(c, 256) / 1e6);
    TrainerState st;
    if (trainer_state_load(ckpt, &st) == 0)
        printf("trainer: step %d, %lld tokens seen, data %s (epoch %llu, cursor %llu)\n", st.step, st.tokens_seen,
               st.data_dir, (unsigned long long)st.data_epoch, (unsigned long long)st.data_cursor);
    float *host = xmalloc(m.n_floats * sizeof(float));
    m.be->download(host, m.param_mem, m.n_floats * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        const LayerParams *L = &m.layers[l];
        if (!L->is_moe) {
            printf("layer %2d: dense FFN (%d)\n", l, c->intermediate_size);
            continue;
        }
        printf("layer %2d: MoE, %d experts, top-%d\n", l, c->n_experts, c->top_k);
        const float *bias = host + m.params[L->expert_bias].offset;
        printf("  balancing bias:");
        for (int e = 0; e < c->n_experts; e++) printf(" %+.4f", bias[e]);
        printf("\n  expert norms (gate/up/down Frobenius):");
        size_t per = (size_t)c->moe_intermediate_size * c->d_model;
        for (int e = 0; e < c->n_experts; e++) {
            double ss = 0;
            for (int part = 0; part < 3; part++) {
                int first = part == 0 ? L->expert_gate : part == 1 ? L->expert_up : L->expert_down;
                const float *w = host + m.params[first].offset + e * per;
                for (size_t i = 0; i < per; i++) ss += (double)w[i] * w[i];
            }
            printf(" %.3f", sqrt(ss));
        }
        printf("\n");
    }
    free(host);
    model_free(&m);
    return 0;
}
