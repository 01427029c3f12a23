/* hf_family.c - Hugging Face MoE families, tensor names and MoE structure (see hf_family.h).
 *
 * hf_moe_open reads the config, picks the family by model_type, opens the weights and
 * classifies every tensor by name (scan_moe), then checks each MoE layer (check_layer). */
#include "io/hf_family.h"

#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define MAX_LAYER_INDEX 1000000
#define SUPPORTED                                                                                    \
    "qwen2_moe, qwen3_moe, olmoe (num_experts), mixtral (num_local_experts), deepseek_v2, deepseek_v3 " \
    "(n_routed_experts)"

static const HfFamily FAMILIES[] = {
    {"qwen2_moe", HF_FAMILY_QWEN2_MOE, "num_experts", "mlp"},
    {"qwen3_moe", HF_FAMILY_QWEN3_MOE, "num_experts", "mlp"},
    {"olmoe", HF_FAMILY_OLMOE, "num_experts", "mlp"},
    {"mixtral", HF_FAMILY_MIXTRAL, "num_local_experts", "block_sparse_moe"},
    {"deepseek_v2", HF_FAMILY_DEEPSEEK_V2, "n_routed_experts", "mlp"},
    {"deepseek_v3", HF_FAMILY_DEEPSEEK_V3, "n_routed_experts", "mlp"},
};
#define N_FAMILIES ((int)(sizeof FAMILIES / sizeof FAMILIES[0]))

const HfFamily *hf_family_find(const char *model_type) {
    const HfFamily *found = NULL;
    for (int i = 0; i < N_FAMILIES; i++)
        if (strcmp(FAMILIES[i].model_type, model_type) == 0) found = &FAMILIES[i];
    return found;
}

const char *hf_family_name(int family) {
    for (int i = 0; i < N_FAMILIES; i++)
        if (FAMILIES[i].family == family) return FAMILIES[i].model_type;
    return "?";
}

/* ------------------------------------------------------------------ tensor names */

/* Parses a non-negative decimal integer at *p (at least one digit, no sign), advancing *p. */
static int parse_index(const char **p, long *out) {
    const char *s = *p;
    if (!isdigit((unsigned char)*s)) return -1;
    long v = 0;
    while (isdigit((unsigned char)*s)) {
        v = v * 10 + (*s - '0');
        if (v > MAX_LAYER_INDEX * 10L) return -1;
        s++;
    }
    *p = s;
    *out = v;
    return 0;
}

int hf_classify_tensor(const char *name, const char *prefix, long *layer, long *expert, const char **suffix) {
    static const char head[] = "model.layers.";
    if (strncmp(name, head, sizeof head - 1) != 0) return HF_TENSOR_OTHER;
    const char *p = name + sizeof head - 1;
    if (parse_index(&p, layer) != 0 || *p != '.') return HF_TENSOR_OTHER;
    p++;
    size_t plen = strlen(prefix);
    if (strncmp(p, prefix, plen) != 0 || p[plen] != '.') return HF_TENSOR_OTHER;
    p += plen + 1;
    if (strncmp(p, "experts.", 8) == 0) {
        p += 8;
        if (parse_index(&p, expert) != 0 || *p != '.' || !p[1]) return HF_TENSOR_OTHER;
        *suffix = p + 1;
        return HF_TENSOR_EXPERT;
    }
    if (strncmp(p, "gate.", 5) == 0) {
        p += 5;
        if (strcmp(p, "weight") == 0) return HF_TENSOR_ROUTER;
        if (strcmp(p, "e_score_correction_bias") == 0) return HF_TENSOR_BIAS;
        return -1;
    }
    return HF_TENSOR_OTHER;
}

char *hf_expert_name(const HfFamily *fam, int layer, int expert, const char *suffix) {
    return xasprintf("model.layers.%d.%s.experts.%d.%s", layer, fam->prefix, expert, suffix);
}

/* ------------------------------------------------------------------ config */

/* An integer-valued JSON number in [lo, hi], else -1. */
static int json_int(const cJSON *item, long lo, long hi, long *out) {
    if (!cJSON_IsNumber(item)) return -1;
    double d = item->valuedouble;
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d)) return -1;
    *out = (long)d;
    return 0;
}

/* An optional non-negative integer key of the config, 0 if absent or not one. */
static int config_count(const cJSON *config, const char *key) {
    long v;
    return json_int(cJSON_GetObjectItemCaseSensitive(config, key), 0, INT_MAX, &v) == 0 ? (int)v : 0;
}

/* ---- the errors for unknown or dense checkpoints ---- */

static int config_mentions_experts(const cJSON *config) {
    for (const cJSON *item = config->child; item; item = item->next)
        if (item->string && strcasestr(item->string, "expert")) return 1;
    return 0;
}

static int tensors_mention_experts(const HfCkpt *ck) {
    for (HfTensorRef r = HF_TENSOR_BEGIN; hf_ckpt_next(ck, &r);)
        if (strstr(hf_ckpt_tensor(ck, r)->name, "expert")) return 1;
    return 0;
}

static int dense_error(const char *config_path, const char *model_type, const char *why) {
    return up_error("%s: model_type \"%s\" has no MoE layers (%s); expected an MoE checkpoint of a supported family "
                    "(" SUPPORTED "); to upcycle a dense checkpoint use `upcycle grow --from-dense`",
                    config_path, model_type, why);
}

static int unknown_error(const char *config_path, const cJSON *config, const char *model_type) {
    char keys[480];
    size_t used = 0;
    keys[0] = 0;
    for (const cJSON *item = config->child; item; item = item->next) {
        if (!item->string) continue;
        size_t need = strlen(item->string) + 2;
        if (used + need + 5 >= sizeof keys) {
            snprintf(keys + used, sizeof keys - used, ", ...");
            break;
        }
        used += (size_t)snprintf(keys + used, sizeof keys - used, "%s%s", used ? ", " : "", item->string);
    }
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(config, "architectures");
    const char *arch_name = cJSON_IsArray(arch) && cJSON_IsString(arch->child) ? arch->child->valuestring : "none";
    return up_error("%s: unknown MoE architecture: model_type \"%s\", architectures [%s], config keys: %s; expected one "
                    "of the supported families: " SUPPORTED,
                    config_path, model_type, arch_name, keys);
}

/* ------------------------------------------------------------------ MoE structure */

typedef struct {
    int e;
    const char *suffix;
    HfTensorRef ref;
} ExpertEntry;

typedef struct {
    HfTensorRef router, bias;
    ExpertEntry *experts;
    int n_experts, cap_experts;
} LayerScan;

static int check_layer(const HfMoeCkpt *mc, int L, LayerScan *ls, HfMoeLayer *ml) {
    const HfCkpt *ck = &mc->ck;
    const char *prefix = mc->fam->prefix, *key = mc->fam->experts_key;
    int E = mc->n_experts;
    char shape[128];
    ml->layer = L;
    ml->router = ls->router;
    ml->bias = ls->bias;
    if (ls->router.file < 0) {
        const HfTensorRef any = ls->n_experts ? ls->experts[0].ref : ls->bias;
        return up_error("%s: tensor %s belongs to layer %d, which has no router model.layers.%d.%s.gate.weight; expected "
                        "a router in every MoE layer", hf_ckpt_file(ck, any)->path, hf_ckpt_tensor(ck, any)->name, L, L,
                        prefix);
    }
    const StTensor *router = hf_ckpt_tensor(ck, ls->router);
    const char *router_path = hf_ckpt_file(ck, ls->router)->path;
    if (router->ndim != 2 || router->shape[0] != E) {
        st_format_shape(shape, sizeof shape, router->ndim, router->shape);
        return up_error("%s: router %s has shape %s; expected [%d, hidden] (%s = %d in config.json)", router_path,
                        router->name, shape, E, key, E);
    }
    if (ls->bias.file >= 0) {
        const StTensor *b = hf_ckpt_tensor(ck, ls->bias);
        if (b->ndim != 1 || b->shape[0] != E || (b->dtype != ST_F32 && b->dtype != ST_BF16 && b->dtype != ST_F16)) {
            st_format_shape(shape, sizeof shape, b->ndim, b->shape);
            return up_error("%s: balancing bias %s is %s %s; expected F32, BF16 or F16 [%d]",
                            hf_ckpt_file(ck, ls->bias)->path, b->name, st_dtype_name(b->dtype), shape, E);
        }
    }
    if (ls->n_experts == 0)
        return up_error("%s: layer %d has a router %s but no expert tensors model.layers.%d.%s.experts.{e}.*; expected "
                        "%d experts", router_path, L, router->name, L, prefix, E);
    /* suffixes of expert 0, in file order */
    ml->suffix = xcalloc((size_t)ls->n_experts, sizeof *ml->suffix);
    for (int i = 0; i < ls->n_experts; i++)
        if (ls->experts[i].e == 0) ml->suffix[ml->n_suffix++] = ls->experts[i].suffix;
    if (ml->n_suffix == 0)
        return up_error("%s: layer %d has no tensors model.layers.%d.%s.experts.0.*; expected %d experts numbered from 0",
                        hf_ckpt_file(ck, ls->experts[0].ref)->path, L, L, prefix, E);
    ml->experts = xmalloc((size_t)E * ml->n_suffix * sizeof *ml->experts);
    for (int i = 0; i < E * ml->n_suffix; i++) ml->experts[i].file = -1;
    for (int i = 0; i < ls->n_experts; i++) {
        const ExpertEntry *x = &ls->experts[i];
        const char *path = hf_ckpt_file(ck, x->ref)->path, *name = hf_ckpt_tensor(ck, x->ref)->name;
        if (x->e >= E)
            return up_error("%s: tensor %s has expert index %d; expected indices below %s = %d from config.json", path,
                            name, x->e, key, E);
        int s = 0;
        while (s < ml->n_suffix && strcmp(ml->suffix[s], x->suffix) != 0) s++;
        if (s == ml->n_suffix)
            return up_error("%s: tensor %s has no counterpart model.layers.%d.%s.experts.0.%s; expected every expert of "
                            "a layer to have the same tensors", path, name, L, prefix, x->suffix);
        ml->experts[x->e * ml->n_suffix + s] = x->ref;
    }
    for (int e = 0; e < E; e++) {
        for (int s = 0; s < ml->n_suffix; s++) {
            HfTensorRef r = ml->experts[e * ml->n_suffix + s], r0 = ml->experts[s];
            if (r.file < 0)
                return up_error("%s: tensor model.layers.%d.%s.experts.%d.%s is missing (expert 0 has it); expected all "
                                "%d experts of layer %d with the same tensors",
                                ck->sharded ? HF_INDEX_NAME : hf_ckpt_file(ck, r0)->path, L, prefix, e, ml->suffix[s],
                                E, L);
            const StTensor *t = hf_ckpt_tensor(ck, r), *t0 = hf_ckpt_tensor(ck, r0);
            int same = t->dtype == t0->dtype && t->ndim == t0->ndim;
            for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == t0->shape[d];
            if (!same) {
                char shape0[128];
                st_format_shape(shape, sizeof shape, t->ndim, t->shape);
                st_format_shape(shape0, sizeof shape0, t0->ndim, t0->shape);
                return up_error("%s: tensor %s is %s %s but %s is %s %s; expected all experts of a layer to have equal "
                                "shapes and dtypes", hf_ckpt_file(ck, r)->path, t->name, st_dtype_name(t->dtype), shape,
                                t0->name, st_dtype_name(t0->dtype), shape0);
            }
        }
    }
    return 0;
}

static int scan_moe(HfMoeCkpt *mc, const char *model_type) {
    const HfCkpt *ck = &mc->ck;
    const char *prefix = mc->fam->prefix, *config_path = ck->config_path;
    mc->role = xcalloc((size_t)ck->n_files, sizeof *mc->role);
    for (int f = 0; f < ck->n_files; f++) mc->role[f] = xcalloc((size_t)ck->st[f].n_tensors + 1, sizeof **mc->role);
    int cap = 0;
    LayerScan *scan = NULL;
    int rc = 0;
    for (HfTensorRef r = HF_TENSOR_BEGIN; rc == 0 && hf_ckpt_next(ck, &r);) {
        const char *name = hf_ckpt_tensor(ck, r)->name, *suffix = NULL;
        long L = 0, e = 0;
        int kind = hf_classify_tensor(name, prefix, &L, &e, &suffix);
        if (kind < 0) {
            rc = up_error("%s: unsupported router tensor %s; expected only %s.gate.weight and "
                          "%s.gate.e_score_correction_bias", ck->st[r.file].path, name, prefix, prefix);
            break;
        }
        if (kind == HF_TENSOR_OTHER) continue;
        if (L >= MAX_LAYER_INDEX || e >= MAX_LAYER_INDEX) {
            rc = up_error("%s: tensor %s has an index above %d; expected a real layer and expert index",
                          ck->st[r.file].path, name, MAX_LAYER_INDEX);
            break;
        }
        if (L >= cap) {
            int ncap = cap ? cap : 8;
            while (ncap <= L) ncap *= 2;
            scan = xrealloc(scan, (size_t)ncap * sizeof *scan);
            for (int k = cap; k < ncap; k++) {
                memset(&scan[k], 0, sizeof scan[k]);
                scan[k].router = scan[k].bias = HF_TENSOR_NONE;
            }
            cap = ncap;
        }
        LayerScan *ls = &scan[L];
        mc->role[r.file][r.index] = kind; /* the MoE index is filled in below */
        if (kind == HF_TENSOR_ROUTER) ls->router = r;
        else if (kind == HF_TENSOR_BIAS) ls->bias = r;
        else {
            if (ls->n_experts == ls->cap_experts) {
                ls->cap_experts = ls->cap_experts ? 2 * ls->cap_experts : 64;
                ls->experts = xrealloc(ls->experts, (size_t)ls->cap_experts * sizeof *ls->experts);
            }
            ls->experts[ls->n_experts++] = (ExpertEntry){(int)e, suffix, r};
        }
    }
    int n_moe = 0;
    for (int L = 0; L < cap; L++)
        if (scan[L].router.file >= 0 || scan[L].bias.file >= 0 || scan[L].n_experts) n_moe++;
    if (rc == 0 && n_moe == 0) {
        char why[200];
        snprintf(why, sizeof why, "no tensor model.layers.{i}.%s.gate.weight", prefix);
        rc = dense_error(config_path, model_type, why);
    }
    if (rc == 0) {
        const cJSON *count = cJSON_GetObjectItemCaseSensitive(ck->config, mc->fam->experts_key);
        long E;
        if (json_int(count, 1, 1 << 20, &E) != 0)
            rc = up_error("%s: \"%s\" is missing or not a positive integer; expected the number of routed experts for "
                          "model_type %s", config_path, mc->fam->experts_key, model_type);
        else
            mc->n_experts = (int)E;
    }
    if (rc == 0) {
        mc->moe = xcalloc((size_t)n_moe, sizeof *mc->moe);
        for (int L = 0; L < cap && rc == 0; L++) {
            if (scan[L].router.file < 0 && scan[L].bias.file < 0 && !scan[L].n_experts) continue;
            int m = mc->n_moe++;
            rc = check_layer(mc, L, &scan[L], &mc->moe[m]);
            if (rc) break;
            HfMoeLayer *ml = &mc->moe[m];
            mc->role[ml->router.file][ml->router.index] = HF_ROLE(HF_TENSOR_ROUTER, m);
            if (ml->bias.file >= 0) mc->role[ml->bias.file][ml->bias.index] = HF_ROLE(HF_TENSOR_BIAS, m);
            for (int k = 0; k < mc->n_experts * ml->n_suffix; k++)
                mc->role[ml->experts[k].file][ml->experts[k].index] = HF_ROLE(HF_TENSOR_EXPERT, m);
        }
    }
    for (int L = 0; L < cap; L++) free(scan[L].experts);
    free(scan);
    return rc;
}

void hf_moe_close(HfMoeCkpt *mc) {
    for (int i = 0; i < mc->n_moe; i++) {
        free(mc->moe[i].suffix);
        free(mc->moe[i].experts);
    }
    free(mc->moe);
    if (mc->role)
        for (int f = 0; f < mc->ck.n_files; f++) free(mc->role[f]);
    free(mc->role);
    hf_ckpt_close(&mc->ck);
    memset(mc, 0, sizeof *mc);
}

int hf_moe_open(const char *dir, HfMoeCkpt *mc) {
    memset(mc, 0, sizeof *mc);
    HfCkpt *ck = &mc->ck;
    if (hf_ckpt_open_config(dir, ck) != 0) return -1;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(ck->config, "model_type");
    const char *model_type = cJSON_IsString(mt) ? mt->valuestring : "(none)";
    mc->fam = hf_family_find(model_type);
    int rc;
    if (!mc->fam) {
        /* the weights only help to tell an unknown MoE from a dense model */
        int loaded = hf_ckpt_open_weights(ck) == 0;
        if (config_mentions_experts(ck->config) || (loaded && tensors_mention_experts(ck)))
            rc = unknown_error(ck->config_path, ck->config, model_type);
        else
            rc = dense_error(ck->config_path, model_type, "no expert count in config.json and no expert tensors");
    } else {
        rc = hf_ckpt_open_weights(ck);
        if (rc == 0) rc = scan_moe(mc, model_type);
    }
    if (rc == 0) {
        mc->n_experts_per_tok = config_count(ck->config, "num_experts_per_tok");
        mc->n_group = config_count(ck->config, "n_group");
        mc->n_layers = config_count(ck->config, "num_hidden_layers");
        return 0;
    }
    hf_moe_close(mc);
    return -1;
}
