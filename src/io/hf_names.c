#include "io/hf_names.h"

#include <stdio.h>
#include <string.h>

/* "model.layers.{l}.mlp.<rest>": l and rest, or 0 */
static int split_mlp(const char *ours, int *layer, const char **rest) {
    int n = 0;
    if (sscanf(ours, "model.layers.%d.mlp.%n", layer, &n) != 1 || n == 0) return 0;
    *rest = ours + n;
    return 1;
}

void hf_names_family(int family, int packed, const char *ours, char *out, size_t n) {
    int layer, expert, k = 0;
    const char *rest;
    if (family != MODEL_FAMILY_MIXTRAL || packed || !split_mlp(ours, &layer, &rest)) {
        snprintf(out, n, "%s", ours);
        return;
    }
    char proj[32];
    if (sscanf(rest, "experts.%d.%31[a-z_].weight%n", &expert, proj, &k) == 2 && k && !rest[k]) {
        const char *w = !strcmp(proj, "gate_proj") ? "w1" : !strcmp(proj, "up_proj") ? "w3" : !strcmp(proj, "down_proj") ? "w2" : proj;
        snprintf(out, n, "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", layer, expert, w);
    } else {
        snprintf(out, n, "model.layers.%d.block_sparse_moe.%s", layer, rest);
    }
}

int hf_names_packed(const ModelConfig *c, const char *ours, HfPackedSpan *span) {
    int layer, expert, k = 0;
    const char *rest;
    char proj[32];
    if (!split_mlp(ours, &layer, &rest) || sscanf(rest, "experts.%d.%31[a-z_].weight%n", &expert, proj, &k) != 2 || !k || rest[k])
        return 0;
    const char *block = "mlp"; /* transformers 5 moves Mixtral's block_sparse_moe to mlp too */
    uint64_t I = (uint64_t)c->moe_intermediate_size, C = (uint64_t)c->d_model, e = (uint64_t)expert;
    if (!strcmp(proj, "down_proj")) {
        snprintf(span->name, sizeof span->name, "model.layers.%d.%s.experts.down_proj", layer, block);
        span->first = e * C * I, span->count = C * I;
    } else {
        int up = !strcmp(proj, "up_proj");
        if (!up && strcmp(proj, "gate_proj")) return 0;
        snprintf(span->name, sizeof span->name, "model.layers.%d.%s.experts.gate_up_proj", layer, block);
        span->first = (e * 2 * I + (up ? I : 0)) * C, span->count = I * C;
    }
    return 1;
}

int hf_names_is_derived(const char *name) {
    size_t n = strlen(name), s = strlen("rotary_emb.inv_freq");
    return n >= s && !strcmp(name + n - s, "rotary_emb.inv_freq");
}
