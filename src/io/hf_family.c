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
    "(n_routed_experts), gpt_oss (num_local_experts)"
#define FP8_DEFAULT_BLOCK 128

#define SWIGLU {"gate_proj", "up_proj", "down_proj"}
static const HfFamily FAMILIES[] = {
    {"qwen2_moe", HF_FAMILY_QWEN2_MOE, "num_experts", "mlp", "mlp", "gate", SWIGLU, 0},
    {"qwen3_moe", HF_FAMILY_QWEN3_MOE, "num_experts", "mlp", "mlp", "gate", SWIGLU, 0},
    {"olmoe", HF_FAMILY_OLMOE, "num_experts", "mlp", "mlp", "gate", SWIGLU, 0},
    {"mixtral", HF_FAMILY_MIXTRAL, "num_local_experts", "block_sparse_moe", "mlp", "gate", {"w1", "w3", "w2"}, 0},
    {"deepseek_v2", HF_FAMILY_DEEPSEEK_V2, "n_routed_experts", "mlp", "mlp", "gate", SWIGLU, 0},
    {"deepseek_v3", HF_FAMILY_DEEPSEEK_V3, "n_routed_experts", "mlp", "mlp", "gate", SWIGLU, 0},
    {"gpt_oss", HF_FAMILY_GPT_OSS, "num_local_experts", "mlp", "mlp", "router", {NULL, NULL, NULL}, 1},
};
/* the expert count keys tried when the family's own is absent */
static const char *const EXPERT_KEYS[] = {"num_experts", "num_local_experts", "n_routed_experts"};
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

const char *hf_layout_name(int layout) { return layout == HF_LAYOUT_PACKED ? "packed" : "per-expert"; }

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

int hf_classify_name(const char *name, const char *prefix, const char *router, long *layer, long *expert,
                     const char **suffix) {
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
        if (*p && !isdigit((unsigned char)*p) && !strchr(p, '.')) { /* packed: experts.gate_up_proj */
            *suffix = p;
            return HF_TENSOR_PACKED;
        }
        if (parse_index(&p, expert) != 0 || *p != '.' || !p[1]) return HF_TENSOR_OTHER;
        *suffix = p + 1;
        return HF_TENSOR_EXPERT;
    }
    size_t rlen = strlen(router);
    if (strncmp(p, router, rlen) == 0 && p[rlen] == '.') {
        p += rlen + 1;
        if (strcmp(p, "weight") == 0) return HF_TENSOR_ROUTER;
        if (strcmp(router, "gate") == 0 && strcmp(p, "e_score_correction_bias") == 0) return HF_TENSOR_BIAS;
        if (strcmp(router, "router") == 0 && strcmp(p, "bias") == 0) return HF_TENSOR_ROUTER_BIAS;
        return -1;
    }
    return HF_TENSOR_OTHER;
}

int hf_classify_tensor(const char *name, const char *prefix, long *layer, long *expert, const char **suffix) {
    return hf_classify_name(name, prefix, "gate", layer, expert, suffix);
}

char *hf_moe_expert_name(const char *prefix, int layer, int expert, const char *suffix) {
    if (expert < 0) return xasprintf("model.layers.%d.%s.experts.%s", layer, prefix, suffix);
    return xasprintf("model.layers.%d.%s.experts.%d.%s", layer, prefix, expert, suffix);
}

char *hf_expert_name(const HfFamily *fam, int layer, int expert, const char *suffix) {
    return hf_moe_expert_name(fam->prefix, layer, expert, suffix);
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
    int e; /* -1: packed */
    const char *suffix;
    HfTensorRef ref;
} ExpertEntry;

typedef struct {
    HfTensorRef router, bias, router_bias;
    ExpertEntry *experts;
    int n_experts, cap_experts;
} LayerScan;

static int same_shape(const StTensor *a, int ndim, const int64_t *shape) {
    if (a->ndim != ndim) return 0;
    for (int d = 0; d < ndim; d++)
        if (a->shape[d] != shape[d]) return 0;
    return 1;
}

/* A bias of MoE layer L: F32/BF16/F16 [E]. */
static int check_bias(const HfMoeCkpt *mc, HfTensorRef r, const char *what) {
    if (r.file < 0) return 0;
    const StTensor *b = hf_ckpt_tensor(&mc->ck, r);
    if (b->ndim != 1 || b->shape[0] != mc->n_experts || (b->dtype != ST_F32 && b->dtype != ST_BF16 && b->dtype != ST_F16)) {
        char shape[128];
        st_format_shape(shape, sizeof shape, b->ndim, b->shape);
        return up_error("%s: %s %s is %s %s; expected F32, BF16 or F16 [%d]", hf_ckpt_file(&mc->ck, r)->path, what,
                        b->name, st_dtype_name(b->dtype), shape, mc->n_experts);
    }
    return 0;
}

static int check_per_expert(const HfMoeCkpt *mc, int L, const LayerScan *ls, HfMoeLayer *ml) {
    const HfCkpt *ck = &mc->ck;
    const char *prefix = mc->prefix, *key = mc->experts_key;
    int E = mc->n_experts;
    char shape[128];
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
            if (t->dtype != t0->dtype || !same_shape(t, t0->ndim, t0->shape)) {
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

static int check_packed(const HfMoeCkpt *mc, const LayerScan *ls, HfMoeLayer *ml) {
    const HfCkpt *ck = &mc->ck;
    int E = mc->n_experts;
    ml->suffix = xcalloc((size_t)ls->n_experts, sizeof *ml->suffix);
    ml->experts = xcalloc((size_t)ls->n_experts, sizeof *ml->experts);
    for (int i = 0; i < ls->n_experts; i++) {
        const StTensor *t = hf_ckpt_tensor(ck, ls->experts[i].ref);
        if (t->ndim < 1 || t->shape[0] != E) {
            char shape[128];
            st_format_shape(shape, sizeof shape, t->ndim, t->shape);
            return up_error("%s: packed expert tensor %s has shape %s; expected [%d, ...] with the experts along its "
                            "first dimension (%s = %d in config.json)", hf_ckpt_file(ck, ls->experts[i].ref)->path,
                            t->name, shape, E, mc->experts_key, E);
        }
        ml->suffix[ml->n_suffix] = ls->experts[i].suffix;
        ml->experts[ml->n_suffix++] = ls->experts[i].ref;
    }
    return 0;
}

/* Every FP8 expert tensor X has X_scale_inv of one scale per block of its last two dimensions. */
static int check_fp8_scales(const HfMoeCkpt *mc, const HfMoeLayer *ml) {
    const HfCkpt *ck = &mc->ck;
    for (int s = 0; s < ml->n_suffix; s++) {
        HfTensorRef r = hf_moe_expert_tensor(mc, (int)(ml - mc->moe), 0, ml->suffix[s]);
        const StTensor *t = hf_ckpt_tensor(ck, r);
        if (t->dtype != ST_F8_E4M3 && t->dtype != ST_F8_E5M2) continue;
        char *scale_suffix = xasprintf("%s_scale_inv", ml->suffix[s]);
        HfTensorRef rs = hf_moe_expert_tensor(mc, (int)(ml - mc->moe), 0, scale_suffix);
        int lead = ml->layout == HF_LAYOUT_PACKED; /* packed: [E, out, in] */
        int rc = 0;
        if (t->ndim != 2 + lead) {
            char shape[128];
            st_format_shape(shape, sizeof shape, t->ndim, t->shape);
            rc = up_error("%s: FP8 tensor %s has shape %s; expected a %s matrix with block scales",
                          hf_ckpt_file(ck, r)->path, t->name, shape, lead ? "[E, out, in]" : "[out, in]");
        } else if (rs.file < 0) {
            rc = up_error("%s: FP8 tensor %s (%s) has no scale tensor %s_scale_inv; expected the per-block scales "
                          "that come with every FP8 weight (as DeepSeek-V3 ships them)",
                          hf_ckpt_file(ck, r)->path, t->name, st_dtype_name(t->dtype), t->name);
        } else {
            const StTensor *sc = hf_ckpt_tensor(ck, rs);
            int64_t want[3] = {mc->n_experts, 0, 0};
            want[lead] = (t->shape[lead] + mc->fp8_block[0] - 1) / mc->fp8_block[0];
            want[lead + 1] = (t->shape[lead + 1] + mc->fp8_block[1] - 1) / mc->fp8_block[1];
            if ((sc->dtype != ST_F32 && sc->dtype != ST_BF16 && sc->dtype != ST_F16) || !same_shape(sc, 2 + lead, want)) {
                char have[128], expect[128];
                st_format_shape(have, sizeof have, sc->ndim, sc->shape);
                st_format_shape(expect, sizeof expect, 2 + lead, want);
                rc = up_error("%s: scale tensor %s is %s %s; expected F32, BF16 or F16 %s (one scale per %d x %d block "
                              "of %s, quantization_config.weight_block_size)", hf_ckpt_file(ck, rs)->path, sc->name,
                              st_dtype_name(sc->dtype), have, expect, mc->fp8_block[0], mc->fp8_block[1], t->name);
            }
        }
        free(scale_suffix);
        if (rc) return rc;
    }
    return 0;
}

static int check_layer(const HfMoeCkpt *mc, int L, LayerScan *ls, HfMoeLayer *ml) {
    const HfCkpt *ck = &mc->ck;
    const char *prefix = mc->prefix, *key = mc->experts_key, *router_name = mc->fam->router;
    int E = mc->n_experts;
    char shape[128];
    ml->layer = L;
    ml->router = ls->router;
    ml->bias = ls->bias;
    ml->router_bias = ls->router_bias;
    if (ls->router.file < 0) {
        const HfTensorRef any = ls->n_experts ? ls->experts[0].ref : ls->bias.file >= 0 ? ls->bias : ls->router_bias;
        return up_error("%s: tensor %s belongs to layer %d, which has no router model.layers.%d.%s.%s.weight; expected "
                        "a router in every MoE layer", hf_ckpt_file(ck, any)->path, hf_ckpt_tensor(ck, any)->name, L, L,
                        prefix, router_name);
    }
    const StTensor *router = hf_ckpt_tensor(ck, ls->router);
    const char *router_path = hf_ckpt_file(ck, ls->router)->path;
    if (router->ndim != 2 || router->shape[0] != E) {
        st_format_shape(shape, sizeof shape, router->ndim, router->shape);
        return up_error("%s: router %s has shape %s; expected [%d, hidden] (%s = %d in config.json)", router_path,
                        router->name, shape, E, key, E);
    }
    if (check_bias(mc, ls->bias, "balancing bias") != 0 || check_bias(mc, ls->router_bias, "router bias") != 0) return -1;
    if (ls->n_experts == 0)
        return up_error("%s: layer %d has a router %s but no expert tensors model.layers.%d.%s.experts.*; expected "
                        "%d experts", router_path, L, router->name, L, prefix, E);
    int per_expert = -1, packed = -1;
    for (int i = 0; i < ls->n_experts; i++) {
        if (ls->experts[i].e < 0 && packed < 0) packed = i;
        if (ls->experts[i].e >= 0 && per_expert < 0) per_expert = i;
    }
    if (packed >= 0 && per_expert >= 0)
        return up_error("%s: layer %d has per-expert tensor %s and packed tensor %s; expected one expert layout per "
                        "layer", hf_ckpt_file(ck, ls->experts[packed].ref)->path, L,
                        hf_ckpt_tensor(ck, ls->experts[per_expert].ref)->name,
                        hf_ckpt_tensor(ck, ls->experts[packed].ref)->name);
    ml->layout = packed >= 0 ? HF_LAYOUT_PACKED : HF_LAYOUT_PER_EXPERT;
    int rc = ml->layout == HF_LAYOUT_PACKED ? check_packed(mc, ls, ml) : check_per_expert(mc, L, ls, ml);
    return rc ? rc : check_fp8_scales(mc, ml);
}

/* Classifies a tensor under the family's per-expert block, else its packed one (Mixtral). */
static int classify(const HfMoeCkpt *mc, const char *name, const char **prefix, long *L, long *e, const char **suffix) {
    const HfFamily *fam = mc->fam;
    *prefix = fam->prefix;
    int kind = hf_classify_name(name, fam->prefix, fam->router, L, e, suffix);
    if (kind == HF_TENSOR_OTHER && strcmp(fam->packed_prefix, fam->prefix) != 0) {
        *prefix = fam->packed_prefix;
        kind = hf_classify_name(name, fam->packed_prefix, fam->router, L, e, suffix);
    }
    return kind;
}

static int scan_moe(HfMoeCkpt *mc, const char *model_type) {
    const HfCkpt *ck = &mc->ck;
    const HfFamily *fam = mc->fam;
    const char *config_path = ck->config_path;
    mc->role = xcalloc((size_t)ck->n_files, sizeof *mc->role);
    for (int f = 0; f < ck->n_files; f++) mc->role[f] = xcalloc((size_t)ck->st[f].n_tensors + 1, sizeof **mc->role);
    int cap = 0;
    LayerScan *scan = NULL;
    const char *first_moe = NULL; /* the first MoE tensor, which set mc->prefix */
    int rc = 0;
    for (HfTensorRef r = HF_TENSOR_BEGIN; rc == 0 && hf_ckpt_next(ck, &r);) {
        const char *name = hf_ckpt_tensor(ck, r)->name, *suffix = NULL, *prefix = NULL;
        long L = 0, e = -1;
        int kind = classify(mc, name, &prefix, &L, &e, &suffix);
        if (kind < 0) {
            rc = fam->family == HF_FAMILY_GPT_OSS
                     ? up_error("%s: unsupported router tensor %s; expected only %s.router.weight and %s.router.bias",
                                ck->st[r.file].path, name, prefix, prefix)
                     : up_error("%s: unsupported router tensor %s; expected only %s.gate.weight and "
                                "%s.gate.e_score_correction_bias", ck->st[r.file].path, name, prefix, prefix);
            break;
        }
        if (kind == HF_TENSOR_OTHER) continue;
        if (L >= MAX_LAYER_INDEX || e >= MAX_LAYER_INDEX) {
            rc = up_error("%s: tensor %s has an index above %d; expected a real layer and expert index",
                          ck->st[r.file].path, name, MAX_LAYER_INDEX);
            break;
        }
        if (!first_moe) first_moe = name, mc->prefix = prefix;
        if (strcmp(prefix, mc->prefix) != 0) {
            rc = up_error("%s: tensor %s is in the MoE block %s but %s is in %s; expected one MoE block name in every "
                          "layer", ck->st[r.file].path, name, prefix, first_moe, mc->prefix);
            break;
        }
        if (L >= cap) {
            int ncap = cap ? cap : 8;
            while (ncap <= L) ncap *= 2;
            scan = xrealloc(scan, (size_t)ncap * sizeof *scan);
            for (int k = cap; k < ncap; k++) {
                memset(&scan[k], 0, sizeof scan[k]);
                scan[k].router = scan[k].bias = scan[k].router_bias = HF_TENSOR_NONE;
            }
            cap = ncap;
        }
        LayerScan *ls = &scan[L];
        mc->role[r.file][r.index] = kind; /* the MoE index is filled in below */
        if (kind == HF_TENSOR_ROUTER) ls->router = r;
        else if (kind == HF_TENSOR_BIAS) ls->bias = r;
        else if (kind == HF_TENSOR_ROUTER_BIAS) ls->router_bias = r;
        else {
            if (ls->n_experts == ls->cap_experts) {
                ls->cap_experts = ls->cap_experts ? 2 * ls->cap_experts : 64;
                ls->experts = xrealloc(ls->experts, (size_t)ls->cap_experts * sizeof *ls->experts);
            }
            ls->experts[ls->n_experts++] = (ExpertEntry){kind == HF_TENSOR_PACKED ? -1 : (int)e, suffix, r};
        }
    }
    if (!mc->prefix) mc->prefix = fam->prefix;
    int n_moe = 0;
    for (int L = 0; L < cap; L++)
        if (scan[L].router.file >= 0 || scan[L].bias.file >= 0 || scan[L].router_bias.file >= 0 || scan[L].n_experts)
            n_moe++;
    if (rc == 0 && n_moe == 0) {
        char why[200];
        snprintf(why, sizeof why, "no tensor model.layers.{i}.%s.%s.weight", fam->prefix, fam->router);
        rc = dense_error(config_path, model_type, why);
    }
    if (rc == 0) {
        mc->experts_key = fam->experts_key;
        const cJSON *count = cJSON_GetObjectItemCaseSensitive(ck->config, fam->experts_key);
        for (size_t k = 0; !count && k < sizeof EXPERT_KEYS / sizeof *EXPERT_KEYS; k++)
            if ((count = cJSON_GetObjectItemCaseSensitive(ck->config, EXPERT_KEYS[k]))) mc->experts_key = EXPERT_KEYS[k];
        long E;
        if (json_int(count, 1, 1 << 20, &E) != 0)
            rc = up_error("%s: \"%s\" is missing or not a positive integer; expected the number of routed experts for "
                          "model_type %s", config_path, mc->experts_key, model_type);
        else
            mc->n_experts = (int)E;
    }
    if (rc == 0) {
        mc->moe = xcalloc((size_t)n_moe, sizeof *mc->moe);
        for (int L = 0; L < cap && rc == 0; L++) {
            if (scan[L].router.file < 0 && scan[L].bias.file < 0 && scan[L].router_bias.file < 0 && !scan[L].n_experts)
                continue;
            int m = mc->n_moe++;
            rc = check_layer(mc, L, &scan[L], &mc->moe[m]);
            if (rc) break;
            HfMoeLayer *ml = &mc->moe[m];
            if (m == 0) mc->layout = ml->layout;
            if (ml->layout != mc->layout) {
                rc = up_error("%s: layer %d has %s experts but layer %d %s ones; expected one expert layout in every "
                              "layer", ck->dir, L, hf_layout_name(ml->layout), mc->moe[0].layer,
                              hf_layout_name(mc->layout));
                break;
            }
            mc->role[ml->router.file][ml->router.index] = HF_ROLE(HF_TENSOR_ROUTER, m);
            if (ml->bias.file >= 0) mc->role[ml->bias.file][ml->bias.index] = HF_ROLE(HF_TENSOR_BIAS, m);
            if (ml->router_bias.file >= 0)
                mc->role[ml->router_bias.file][ml->router_bias.index] = HF_ROLE(HF_TENSOR_ROUTER_BIAS, m);
            int n_refs = ml->layout == HF_LAYOUT_PACKED ? ml->n_suffix : mc->n_experts * ml->n_suffix;
            int kind = ml->layout == HF_LAYOUT_PACKED ? HF_TENSOR_PACKED : HF_TENSOR_EXPERT;
            for (int k = 0; k < n_refs; k++) mc->role[ml->experts[k].file][ml->experts[k].index] = HF_ROLE(kind, m);
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

/* quantization_config.weight_block_size [b0, b1] (positive integers), else 128 x 128 */
static void read_fp8_block(const cJSON *config, int block[2]) {
    block[0] = block[1] = FP8_DEFAULT_BLOCK;
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(config, "quantization_config");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(q, "weight_block_size");
    long b0, b1;
    if (cJSON_GetArraySize(b) == 2 && json_int(cJSON_GetArrayItem(b, 0), 1, 1 << 20, &b0) == 0 &&
        json_int(cJSON_GetArrayItem(b, 1), 1, 1 << 20, &b1) == 0)
        block[0] = (int)b0, block[1] = (int)b1;
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
        read_fp8_block(ck->config, mc->fp8_block);
        rc = hf_ckpt_open_weights(ck);
        if (rc == 0) rc = scan_moe(mc, model_type);
    }
    if (rc == 0) {
        mc->n_experts_per_tok = config_count(ck->config, "num_experts_per_tok");
        if (!mc->n_experts_per_tok) mc->n_experts_per_tok = config_count(ck->config, "experts_per_token");
        mc->n_group = config_count(ck->config, "n_group");
        mc->n_layers = config_count(ck->config, "num_hidden_layers");
        return 0;
    }
    hf_moe_close(mc);
    return -1;
}

/* ------------------------------------------------------------------ expert tensors and projections */

HfTensorRef hf_moe_expert_tensor(const HfMoeCkpt *mc, int m, int e, const char *suffix) {
    const HfMoeLayer *ml = &mc->moe[m];
    for (int s = 0; s < ml->n_suffix; s++)
        if (strcmp(ml->suffix[s], suffix) == 0)
            return ml->layout == HF_LAYOUT_PACKED ? ml->experts[s] : ml->experts[e * ml->n_suffix + s];
    return HF_TENSOR_NONE;
}

uint64_t hf_moe_expert_bytes(const HfMoeCkpt *mc, int m) {
    const HfMoeLayer *ml = &mc->moe[m];
    uint64_t bytes = 0;
    for (int s = 0; s < ml->n_suffix; s++) {
        const StTensor *t = hf_ckpt_tensor(&mc->ck, ml->experts[s]);
        bytes += ml->layout == HF_LAYOUT_PACKED ? (t->end - t->begin) / (uint64_t)mc->n_experts : t->end - t->begin;
    }
    return bytes;
}

/* The weight (and FP8 scale) tensor named suffix of expert e; names the layer's missing tensor. */
static int find_weight(const HfMoeCkpt *mc, int m, int e, const char *suffix, HfProj *p) {
    const HfMoeLayer *ml = &mc->moe[m];
    p->weight = hf_moe_expert_tensor(mc, m, e, suffix);
    if (p->weight.file < 0) {
        char *blocks = xasprintf("%s_blocks", suffix);
        int mxfp4 = hf_moe_expert_tensor(mc, m, e, blocks).file >= 0;
        char *name = hf_moe_expert_name(mc->prefix, ml->layer, ml->layout == HF_LAYOUT_PACKED ? -1 : e, mxfp4 ? blocks : suffix);
        int rc = mxfp4 ? up_error("%s: experts of layer %d are MXFP4 (%s and its _scales); expected BF16, F16, F32 or "
                                  "FP8 expert weights (MXFP4 is not dequantized here)", mc->ck.dir, ml->layer, name)
                       : up_error("%s: layer %d has no expert tensor %s; expected the %s projections of model_type %s",
                                  mc->ck.dir, ml->layer, name, hf_layout_name(ml->layout), mc->fam->model_type);
        free(name);
        free(blocks);
        return rc;
    }
    const StTensor *t = hf_ckpt_tensor(&mc->ck, p->weight);
    p->dtype = t->dtype;
    if (!st_dtype_is_float(t->dtype))
        return up_error("%s: expert tensor %s is %s; expected F32, BF16, F16, F8_E4M3 or F8_E5M2 weights",
                        hf_ckpt_file(&mc->ck, p->weight)->path, t->name, st_dtype_name(t->dtype));
    p->scale = HF_TENSOR_NONE;
    if (t->dtype == ST_F8_E4M3 || t->dtype == ST_F8_E5M2) { /* hf_moe_open checked that it has its scales */
        char *scale = xasprintf("%s_scale_inv", suffix);
        p->scale = hf_moe_expert_tensor(mc, m, e, scale);
        free(scale);
        const StTensor *st = hf_ckpt_tensor(&mc->ck, p->scale);
        p->scale_cols = st->shape[st->ndim - 1];
        p->scale_offset = ml->layout == HF_LAYOUT_PACKED ? (int64_t)e * st->shape[1] * st->shape[2] : 0;
        p->block[0] = mc->fp8_block[0], p->block[1] = mc->fp8_block[1];
    }
    return 0;
}

static int shape_error(const HfMoeCkpt *mc, const HfProj *p, const char *expected) {
    const StTensor *t = hf_ckpt_tensor(&mc->ck, p->weight);
    char shape[128];
    st_format_shape(shape, sizeof shape, t->ndim, t->shape);
    return up_error("%s: expert tensor %s has shape %s; expected %s", hf_ckpt_file(&mc->ck, p->weight)->path, t->name,
                    shape, expected);
}

int hf_expert_proj(const HfMoeCkpt *mc, int m, int e, int proj, HfProj *p) {
    memset(p, 0, sizeof *p);
    const HfMoeLayer *ml = &mc->moe[m];
    const HfFamily *fam = mc->fam;
    int64_t H = hf_ckpt_tensor(&mc->ck, ml->router)->shape[1];
    char expected[160];
    if (ml->layout == HF_LAYOUT_PER_EXPERT) {
        if (!fam->proj[proj])
            return up_error("%s: model_type %s has no per-expert projections; expected packed experts", mc->ck.dir,
                            fam->model_type);
        char *suffix = xasprintf("%s.weight", fam->proj[proj]);
        int rc = find_weight(mc, m, e, suffix, p);
        free(suffix);
        if (rc) return rc;
        const StTensor *t = hf_ckpt_tensor(&mc->ck, p->weight);
        int64_t hidden_dim = proj == HF_PROJ_DOWN ? 0 : 1; /* gate/up [I, H], down [H, I] */
        snprintf(expected, sizeof expected, "%s with H = %lld (the router's columns)",
                 proj == HF_PROJ_DOWN ? "[H, I]" : "[I, H]", (long long)H);
        if (t->ndim != 2 || t->shape[hidden_dim] != H) return shape_error(mc, p, expected);
        p->out = t->shape[0], p->in = t->shape[1];
        p->stride_out = p->in, p->stride_in = 1;
        return 0;
    }
    int rc = find_weight(mc, m, e, proj == HF_PROJ_DOWN ? "down_proj" : "gate_up_proj", p);
    if (rc) return rc;
    const StTensor *t = hf_ckpt_tensor(&mc->ck, p->weight);
    if (t->ndim != 3) return shape_error(mc, p, "a packed [E, rows, cols] tensor");
    int64_t rows = t->shape[1], cols = t->shape[2];
    if (!fam->transposed) { /* gate_up_proj [E, 2I, H] (gate rows, then up rows), down_proj [E, H, I] */
        snprintf(expected, sizeof expected, "%s with H = %lld (the router's columns)",
                 proj == HF_PROJ_DOWN ? "[E, H, I]" : "[E, 2I, H]", (long long)H);
        if (proj == HF_PROJ_DOWN ? rows != H : cols != H || rows % 2 != 0) return shape_error(mc, p, expected);
        p->out = proj == HF_PROJ_DOWN ? rows : rows / 2, p->in = cols;
        p->row0 = proj == HF_PROJ_UP ? p->out : 0;
        p->offset = (int64_t)e * rows * cols + p->row0 * cols;
        p->stride_out = cols, p->stride_in = 1;
    } else { /* GPT-OSS: gate_up_proj [E, H, 2I] (gate even columns, up odd), down_proj [E, I, H] */
        if (p->scale.file >= 0)
            return up_error("%s: FP8 expert tensor %s in GPT-OSS's transposed layout; expected BF16, F16 or F32 (no "
                            "block scales are defined for it)", hf_ckpt_file(&mc->ck, p->weight)->path, t->name);
        snprintf(expected, sizeof expected, "%s with H = %lld (the router's columns)",
                 proj == HF_PROJ_DOWN ? "[E, I, H]" : "[E, H, 2I]", (long long)H);
        if (proj == HF_PROJ_DOWN ? cols != H : rows != H || cols % 2 != 0) return shape_error(mc, p, expected);
        p->offset = (int64_t)e * rows * cols;
        if (proj == HF_PROJ_DOWN) p->out = cols, p->in = rows, p->stride_out = 1, p->stride_in = cols;
        else p->out = cols / 2, p->in = rows, p->stride_out = 2, p->stride_in = cols, p->offset += proj == HF_PROJ_UP;
    }
    return 0;
}

float hf_proj_value(const HfMoeCkpt *mc, const HfProj *p, int64_t o, int64_t i) {
    const HfCkpt *ck = &mc->ck;
    const StTensor *t = hf_ckpt_tensor(ck, p->weight);
    const unsigned char *data = st_data(hf_ckpt_file(ck, p->weight), t);
    size_t size = st_dtype_size(p->dtype);
    float v = st_element_f32(p->dtype, data + (size_t)(p->offset + o * p->stride_out + i * p->stride_in) * size);
    if (p->scale.file < 0) return v;
    const StTensor *s = hf_ckpt_tensor(ck, p->scale);
    const unsigned char *sdata = st_data(hf_ckpt_file(ck, p->scale), s);
    int64_t k = p->scale_offset + ((p->row0 + o) / p->block[0]) * p->scale_cols + i / p->block[1];
    return v * st_element_f32(s->dtype, sdata + (size_t)k * st_dtype_size(s->dtype));
}
