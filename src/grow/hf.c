/* hf.c - Expert Upcycling on Hugging Face MoE checkpoint directories (see hf.h).
 *
 * Structure: ckpt_open reads config.json, opens every safetensors file (mmap + header
 * validation by StFile), indexes all tensor names and classifies each tensor as router, bias,
 * expert or other, validating the MoE structure. hf_grow then streams each input shard into the
 * matching output shard: other tensors and original experts are copied chunk by chunk from
 * the mmap (pages dropped behind the copy so the resident set stays small), routers and biases
 * are extended, and replicas are appended after their layer's router. */
#include "grow/hf.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "util.h"
#include "util/strmap.h"

#define COPY_CHUNK ((size_t)8 << 20) /* bytes per write from the mmap */
#define MAX_LAYER_INDEX 1000000
#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define SUPPORTED                                                                                    \
    "qwen2_moe, qwen3_moe, olmoe (num_experts), mixtral (num_local_experts), deepseek_v2, deepseek_v3 " \
    "(n_routed_experts)"

typedef struct {
    const char *model_type;
    int family;
    const char *experts_key;
    const char *prefix;
} FamilyDesc;

static const FamilyDesc FAMILIES[] = {
    {"qwen2_moe", HF_FAMILY_QWEN2_MOE, "num_experts", "mlp"},
    {"qwen3_moe", HF_FAMILY_QWEN3_MOE, "num_experts", "mlp"},
    {"olmoe", HF_FAMILY_OLMOE, "num_experts", "mlp"},
    {"mixtral", HF_FAMILY_MIXTRAL, "num_local_experts", "block_sparse_moe"},
    {"deepseek_v2", HF_FAMILY_DEEPSEEK_V2, "n_routed_experts", "mlp"},
    {"deepseek_v3", HF_FAMILY_DEEPSEEK_V3, "n_routed_experts", "mlp"},
};
#define N_FAMILIES ((int)(sizeof FAMILIES / sizeof FAMILIES[0]))

const char *hf_family_name(int family) {
    for (int i = 0; i < N_FAMILIES; i++)
        if (FAMILIES[i].family == family) return FAMILIES[i].model_type;
    return "?";
}

/* ------------------------------------------------------------------ small helpers */

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

/* An integer-valued JSON number in [lo, hi], else -1. */
static int json_int(const cJSON *item, long lo, long hi, long *out) {
    if (!cJSON_IsNumber(item)) return -1;
    double d = item->valuedouble;
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d)) return -1;
    *out = (long)d;
    return 0;
}

/* Drops the pages of a consumed mmap range from our resident set (they are clean file pages
 * and fault back in from the file if needed again). */
static void drop_pages(const void *addr, size_t len) {
    static size_t page;
    if (!page) page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)addr, b = a + len;
    a = (a + page - 1) & ~(uintptr_t)(page - 1);
    b &= ~(uintptr_t)(page - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

typedef struct {
    int file;  /* index into Ckpt.st, -1 = none */
    int index; /* index into st[file].tensors */
} TRef;

/* ------------------------------------------------------------------ checkpoint model */

enum { ROLE_OTHER = 0, ROLE_ROUTER = 1, ROLE_BIAS = 2, ROLE_EXPERT = 3 };
#define ROLE(kind, moe) (((moe) << 2) | (kind))
#define ROLE_KIND(r) ((r) & 3)
#define ROLE_MOE(r) ((r) >> 2)

typedef struct {
    int layer;
    TRef router, bias; /* bias.file == -1: no bias */
    int n_suffix;
    const char **suffix; /* (n_suffix) expert tensor suffixes, pointing into tensor names */
    TRef *experts;       /* (E * n_suffix) */
} MoeLayer;

typedef struct {
    char *dir;
    cJSON *config;
    const FamilyDesc *fam;
    int sharded;
    cJSON *index; /* parsed index json when sharded */
    int n_files;
    char **files;
    StFile *st;
    int **role; /* per file, per tensor: ROLE(kind, moe index) */
    StrMap names; /* tensor name -> TRef */
    int n_moe;
    MoeLayer *moe; /* ascending layer order */
    int E, topk, n_group, n_layers;
} Ckpt;

static const StTensor *tref(const Ckpt *ck, TRef r) { return &ck->st[r.file].tensors[r.index]; }
static const char *tref_path(const Ckpt *ck, TRef r) { return ck->st[r.file].path; }

static void ckpt_close(Ckpt *ck) {
    for (int i = 0; i < ck->n_moe; i++) {
        free(ck->moe[i].suffix);
        free(ck->moe[i].experts);
    }
    free(ck->moe);
    for (int f = 0; f < ck->n_files; f++) {
        if (ck->st) st_close(&ck->st[f]);
        if (ck->role) free(ck->role[f]);
        free(ck->files[f]);
    }
    free(ck->st);
    free(ck->role);
    free(ck->files);
    strmap_free(&ck->names);
    cJSON_Delete(ck->config);
    cJSON_Delete(ck->index);
    free(ck->dir);
    memset(ck, 0, sizeof *ck);
}

static int compare_strings(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Fills ck->files / n_files from the index (sorted distinct file names) or the single file. */
static int list_weight_files(Ckpt *ck) {
    char *index_path = path_join(ck->dir, INDEX_NAME), *single_path = path_join(ck->dir, SINGLE_NAME);
    int rc = 0;
    if (path_exists(index_path)) {
        ck->sharded = 1;
        char *text = NULL;
        if (read_file(index_path, &text, NULL) != 0) {
            rc = -1;
            goto done;
        }
        ck->index = cJSON_Parse(text);
        free(text);
        const cJSON *wm = ck->index ? cJSON_GetObjectItemCaseSensitive(ck->index, "weight_map") : NULL;
        if (!cJSON_IsObject(ck->index) || !cJSON_IsObject(wm) || !wm->child) {
            rc = up_error("%s: not a JSON object with a non-empty \"weight_map\"; expected {\"metadata\": {...}, "
                          "\"weight_map\": {\"tensor name\": \"model-00001-of-0000N.safetensors\", ...}}",
                          index_path);
            goto done;
        }
        int n = cJSON_GetArraySize(wm), count = 0;
        char **names = xcalloc((size_t)n, sizeof *names);
        for (const cJSON *e = wm->child; e; e = e->next) {
            if (!cJSON_IsString(e) || !e->valuestring[0] || strchr(e->valuestring, '/') ||
                !str_ends_with(e->valuestring, ".safetensors")) {
                free(names);
                rc = up_error("%s: weight_map entry %s is not a plain *.safetensors file name; expected \"name\": "
                              "\"model-00001-of-0000N.safetensors\"", index_path, e->string);
                goto done;
            }
            names[count++] = e->valuestring;
        }
        qsort(names, (size_t)count, sizeof *names, compare_strings);
        ck->files = xcalloc((size_t)count, sizeof *ck->files);
        for (int i = 0; i < count; i++)
            if (i == 0 || strcmp(names[i], names[i - 1]) != 0) ck->files[ck->n_files++] = xstrdup(names[i]);
        free(names);
    } else if (path_exists(single_path)) {
        ck->files = xcalloc(1, sizeof *ck->files);
        ck->files[ck->n_files++] = xstrdup(SINGLE_NAME);
    } else {
        rc = up_error("%s: no %s and no %s; expected Hugging Face safetensors weights (a single file or shards with "
                      "an index)", ck->dir, SINGLE_NAME, INDEX_NAME);
    }
done:
    free(index_path);
    free(single_path);
    return rc;
}

/* Opens every weight file and indexes tensor names; checks the index against the files. */
static int open_weights(Ckpt *ck) {
    if (list_weight_files(ck) != 0) return -1;
    ck->st = xcalloc((size_t)ck->n_files, sizeof *ck->st);
    ck->role = xcalloc((size_t)ck->n_files, sizeof *ck->role);
    size_t total = 0;
    for (int f = 0; f < ck->n_files; f++) {
        char *path = path_join(ck->dir, ck->files[f]);
        int rc = st_open(&ck->st[f], path);
        free(path);
        if (rc != 0) return -1;
        ck->role[f] = xcalloc((size_t)ck->st[f].n_tensors + 1, sizeof **ck->role);
        total += (size_t)ck->st[f].n_tensors;
    }
    strmap_init(&ck->names, sizeof(TRef), total);
    for (int f = 0; f < ck->n_files; f++) {
        for (int i = 0; i < ck->st[f].n_tensors; i++) {
            TRef r = {f, i};
            const TRef *old = strmap_put(&ck->names, ck->st[f].tensors[i].name, &r);
            if (old)
                return up_error("%s: tensor %s is also in %s; expected each tensor in exactly one file", ck->st[f].path,
                                ck->st[f].tensors[i].name, ck->st[old->file].path);
        }
    }
    if (!ck->sharded) return 0;
    char *index_path = path_join(ck->dir, INDEX_NAME);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(ck->index, "weight_map");
    int rc = 0, listed = 0;
    for (const cJSON *e = wm->child; e && rc == 0; e = e->next) {
        const TRef *r = strmap_get(&ck->names, e->string);
        if (!r)
            rc = up_error("%s: weight_map lists tensor %s in %s, but no file has it; expected the index to match the "
                          "shards", index_path, e->string, e->valuestring);
        else if (strcmp(ck->files[r->file], e->valuestring) != 0)
            rc = up_error("%s: weight_map puts tensor %s in %s, but it is in %s; expected the index to match the shards",
                          index_path, e->string, e->valuestring, ck->files[r->file]);
        else
            listed++;
    }
    if (rc == 0 && (size_t)listed != strmap_count(&ck->names)) {
        for (int f = 0; f < ck->n_files && rc == 0; f++)
            for (int i = 0; i < ck->st[f].n_tensors && rc == 0; i++)
                if (!cJSON_GetObjectItemCaseSensitive(wm, ck->st[f].tensors[i].name))
                    rc = up_error("%s: tensor %s is not in the weight_map of %s; expected the index to list every "
                                  "tensor", ck->st[f].path, ck->st[f].tensors[i].name, index_path);
        if (rc == 0)
            rc = up_error("%s: weight_map has %d entries for %zu tensors (duplicate names?); expected one entry per "
                          "tensor", index_path, listed, strmap_count(&ck->names));
    }
    free(index_path);
    return rc;
}

/* ---- family detection and the errors for unknown or dense checkpoints ---- */

static int config_mentions_experts(const cJSON *config) {
    for (const cJSON *item = config->child; item; item = item->next)
        if (item->string && strcasestr(item->string, "expert")) return 1;
    return 0;
}

static int tensors_mention_experts(const Ckpt *ck) {
    for (int f = 0; f < ck->n_files && ck->st; f++)
        for (int i = 0; i < ck->st[f].n_tensors; i++)
            if (strstr(ck->st[f].tensors[i].name, "expert")) return 1;
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

/* ---- MoE structure ---- */

typedef struct {
    int e;
    const char *suffix;
    TRef ref;
} ExpertEntry;

typedef struct {
    TRef router, bias;
    ExpertEntry *experts;
    int n_experts, cap_experts;
} LayerScan;

/* Classifies "model.layers.{L}.<prefix>.<...>"; returns 0 for other tensors, else the role kind
 * with *layer (and *expert, *suffix for experts) filled; -1 on an unsupported router tensor. */
static int classify(const char *name, const char *prefix, long *layer, long *expert, const char **suffix) {
    static const char head[] = "model.layers.";
    if (strncmp(name, head, sizeof head - 1) != 0) return ROLE_OTHER;
    const char *p = name + sizeof head - 1;
    if (parse_index(&p, layer) != 0 || *p != '.') return ROLE_OTHER;
    p++;
    size_t plen = strlen(prefix);
    if (strncmp(p, prefix, plen) != 0 || p[plen] != '.') return ROLE_OTHER;
    p += plen + 1;
    if (strncmp(p, "experts.", 8) == 0) {
        p += 8;
        if (parse_index(&p, expert) != 0 || *p != '.' || !p[1]) return ROLE_OTHER;
        *suffix = p + 1;
        return ROLE_EXPERT;
    }
    if (strncmp(p, "gate.", 5) == 0) {
        p += 5;
        if (strcmp(p, "weight") == 0) return ROLE_ROUTER;
        if (strcmp(p, "e_score_correction_bias") == 0) return ROLE_BIAS;
        return -1;
    }
    return ROLE_OTHER;
}

static int check_layer(Ckpt *ck, int L, LayerScan *ls, MoeLayer *ml) {
    const char *prefix = ck->fam->prefix, *key = ck->fam->experts_key;
    int E = ck->E;
    char shape[128];
    ml->layer = L;
    ml->router = ls->router;
    ml->bias = ls->bias;
    if (ls->router.file < 0) {
        const TRef any = ls->n_experts ? ls->experts[0].ref : ls->bias;
        return up_error("%s: tensor %s belongs to layer %d, which has no router model.layers.%d.%s.gate.weight; expected "
                        "a router in every MoE layer", tref_path(ck, any), tref(ck, any)->name, L, L, prefix);
    }
    const StTensor *router = tref(ck, ls->router);
    if (router->ndim != 2 || router->shape[0] != E) {
        st_format_shape(shape, sizeof shape, router->ndim, router->shape);
        return up_error("%s: router %s has shape %s; expected [%d, hidden] (%s = %d in config.json)",
                        tref_path(ck, ls->router), router->name, shape, E, key, E);
    }
    if (ls->bias.file >= 0) {
        const StTensor *b = tref(ck, ls->bias);
        if (b->ndim != 1 || b->shape[0] != E || (b->dtype != ST_F32 && b->dtype != ST_BF16 && b->dtype != ST_F16)) {
            st_format_shape(shape, sizeof shape, b->ndim, b->shape);
            return up_error("%s: balancing bias %s is %s %s; expected F32, BF16 or F16 [%d]", tref_path(ck, ls->bias),
                            b->name, st_dtype_name(b->dtype), shape, E);
        }
    }
    if (ls->n_experts == 0)
        return up_error("%s: layer %d has a router %s but no expert tensors model.layers.%d.%s.experts.{e}.*; expected "
                        "%d experts", tref_path(ck, ls->router), L, router->name, L, prefix, E);
    /* suffixes of expert 0, in file order */
    ml->suffix = xcalloc((size_t)ls->n_experts, sizeof *ml->suffix);
    for (int i = 0; i < ls->n_experts; i++)
        if (ls->experts[i].e == 0) ml->suffix[ml->n_suffix++] = ls->experts[i].suffix;
    if (ml->n_suffix == 0)
        return up_error("%s: layer %d has no tensors model.layers.%d.%s.experts.0.*; expected %d experts numbered from 0",
                        tref_path(ck, ls->experts[0].ref), L, L, prefix, E);
    ml->experts = xmalloc((size_t)E * ml->n_suffix * sizeof *ml->experts);
    for (int i = 0; i < E * ml->n_suffix; i++) ml->experts[i].file = -1;
    for (int i = 0; i < ls->n_experts; i++) {
        const ExpertEntry *x = &ls->experts[i];
        if (x->e >= E)
            return up_error("%s: tensor %s has expert index %d; expected indices below %s = %d from config.json",
                            tref_path(ck, x->ref), tref(ck, x->ref)->name, x->e, key, E);
        int s = 0;
        while (s < ml->n_suffix && strcmp(ml->suffix[s], x->suffix) != 0) s++;
        if (s == ml->n_suffix)
            return up_error("%s: tensor %s has no counterpart model.layers.%d.%s.experts.0.%s; expected every expert of "
                            "a layer to have the same tensors", tref_path(ck, x->ref), tref(ck, x->ref)->name, L,
                            prefix, x->suffix);
        ml->experts[x->e * ml->n_suffix + s] = x->ref;
    }
    for (int e = 0; e < E; e++) {
        for (int s = 0; s < ml->n_suffix; s++) {
            TRef r = ml->experts[e * ml->n_suffix + s], r0 = ml->experts[s];
            if (r.file < 0)
                return up_error("%s: tensor model.layers.%d.%s.experts.%d.%s is missing (expert 0 has it); expected all "
                                "%d experts of layer %d with the same tensors",
                                ck->sharded ? INDEX_NAME : tref_path(ck, r0), L, prefix, e, ml->suffix[s], E, L);
            const StTensor *t = tref(ck, r), *t0 = tref(ck, r0);
            int same = t->dtype == t0->dtype && t->ndim == t0->ndim;
            for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == t0->shape[d];
            if (!same) {
                char shape0[128];
                st_format_shape(shape, sizeof shape, t->ndim, t->shape);
                st_format_shape(shape0, sizeof shape0, t0->ndim, t0->shape);
                return up_error("%s: tensor %s is %s %s but %s is %s %s; expected all experts of a layer to have equal "
                                "shapes and dtypes", tref_path(ck, r), t->name, st_dtype_name(t->dtype), shape, t0->name,
                                st_dtype_name(t0->dtype), shape0);
            }
        }
    }
    return 0;
}

static int scan_moe(Ckpt *ck, const char *config_path, const char *model_type) {
    const char *prefix = ck->fam->prefix;
    int cap = 0;
    LayerScan *scan = NULL;
    int rc = 0;
    for (int f = 0; f < ck->n_files && rc == 0; f++) {
        for (int i = 0; i < ck->st[f].n_tensors && rc == 0; i++) {
            const char *name = ck->st[f].tensors[i].name, *suffix = NULL;
            long L = 0, e = 0;
            int kind = classify(name, prefix, &L, &e, &suffix);
            if (kind < 0) {
                rc = up_error("%s: unsupported router tensor %s; expected only %s.gate.weight and "
                              "%s.gate.e_score_correction_bias", ck->st[f].path, name, prefix, prefix);
                break;
            }
            if (kind == ROLE_OTHER) continue;
            if (L >= MAX_LAYER_INDEX || e >= MAX_LAYER_INDEX) {
                rc = up_error("%s: tensor %s has an index above %d; expected a real layer and expert index",
                              ck->st[f].path, name, MAX_LAYER_INDEX);
                break;
            }
            if (L >= cap) {
                int ncap = cap ? cap : 8;
                while (ncap <= L) ncap *= 2;
                scan = xrealloc(scan, (size_t)ncap * sizeof *scan);
                for (int k = cap; k < ncap; k++) {
                    memset(&scan[k], 0, sizeof scan[k]);
                    scan[k].router.file = scan[k].bias.file = -1;
                }
                cap = ncap;
            }
            LayerScan *ls = &scan[L];
            TRef r = {f, i};
            ck->role[f][i] = kind; /* the MoE index is filled in below */
            if (kind == ROLE_ROUTER) ls->router = r;
            else if (kind == ROLE_BIAS) ls->bias = r;
            else {
                if (ls->n_experts == ls->cap_experts) {
                    ls->cap_experts = ls->cap_experts ? 2 * ls->cap_experts : 64;
                    ls->experts = xrealloc(ls->experts, (size_t)ls->cap_experts * sizeof *ls->experts);
                }
                ls->experts[ls->n_experts++] = (ExpertEntry){(int)e, suffix, r};
            }
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
        const cJSON *count = cJSON_GetObjectItemCaseSensitive(ck->config, ck->fam->experts_key);
        long E;
        if (json_int(count, 1, 1 << 20, &E) != 0)
            rc = up_error("%s: \"%s\" is missing or not a positive integer; expected the number of routed experts for "
                          "model_type %s", config_path, ck->fam->experts_key, model_type);
        else
            ck->E = (int)E;
    }
    if (rc == 0) {
        ck->moe = xcalloc((size_t)n_moe, sizeof *ck->moe);
        for (int L = 0; L < cap && rc == 0; L++) {
            if (scan[L].router.file < 0 && scan[L].bias.file < 0 && !scan[L].n_experts) continue;
            int m = ck->n_moe++;
            rc = check_layer(ck, L, &scan[L], &ck->moe[m]);
            if (rc) break;
            MoeLayer *ml = &ck->moe[m];
            ck->role[ml->router.file][ml->router.index] = ROLE(ROLE_ROUTER, m);
            if (ml->bias.file >= 0) ck->role[ml->bias.file][ml->bias.index] = ROLE(ROLE_BIAS, m);
            for (int k = 0; k < ck->E * ml->n_suffix; k++)
                ck->role[ml->experts[k].file][ml->experts[k].index] = ROLE(ROLE_EXPERT, m);
        }
    }
    for (int L = 0; L < cap; L++) free(scan[L].experts);
    free(scan);
    return rc;
}

static int ckpt_open(const char *dir, Ckpt *ck) {
    memset(ck, 0, sizeof *ck);
    ck->dir = xstrdup(dir);
    if (!is_dir(dir)) {
        up_error("%s: no such directory; expected a Hugging Face checkpoint directory with config.json", dir);
        goto fail;
    }
    char *config_path = path_join(dir, "config.json");
    if (!path_exists(config_path)) {
        up_error("%s: missing; expected a Hugging Face checkpoint directory with config.json and %s (or shards with "
                 "%s)", config_path, SINGLE_NAME, INDEX_NAME);
        free(config_path);
        goto fail;
    }
    char *text = NULL;
    if (read_file(config_path, &text, NULL) != 0) {
        free(config_path);
        goto fail;
    }
    ck->config = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(ck->config)) {
        up_error("%s: not a JSON object; expected a Hugging Face config.json", config_path);
        free(config_path);
        goto fail;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(ck->config, "model_type");
    const char *model_type = cJSON_IsString(mt) ? mt->valuestring : "(none)";
    for (int i = 0; i < N_FAMILIES; i++)
        if (strcmp(FAMILIES[i].model_type, model_type) == 0) ck->fam = &FAMILIES[i];
    int rc;
    if (!ck->fam) {
        /* the weights only help to tell an unknown MoE from a dense model */
        int loaded = open_weights(ck) == 0;
        if (config_mentions_experts(ck->config) || (loaded && tensors_mention_experts(ck)))
            rc = unknown_error(config_path, ck->config, model_type);
        else
            rc = dense_error(config_path, model_type, "no expert count in config.json and no expert tensors");
    } else {
        rc = open_weights(ck);
        if (rc == 0) rc = scan_moe(ck, config_path, model_type);
    }
    if (rc == 0) {
        long v;
        const cJSON *item = cJSON_GetObjectItemCaseSensitive(ck->config, "num_experts_per_tok");
        ck->topk = json_int(item, 0, INT_MAX, &v) == 0 ? (int)v : 0;
        item = cJSON_GetObjectItemCaseSensitive(ck->config, "n_group");
        ck->n_group = json_int(item, 0, INT_MAX, &v) == 0 ? (int)v : 0;
        item = cJSON_GetObjectItemCaseSensitive(ck->config, "num_hidden_layers");
        ck->n_layers = json_int(item, 0, INT_MAX, &v) == 0 ? (int)v : 0;
    }
    free(config_path);
    if (rc != 0) goto fail;
    return 0;
fail:
    ckpt_close(ck);
    return -1;
}

/* ------------------------------------------------------------------ inspect */

int hf_inspect(const char *dir, HfMoeInfo *info) {
    memset(info, 0, sizeof *info);
    Ckpt ck;
    if (ckpt_open(dir, &ck) != 0) return -1;
    snprintf(info->model_type, sizeof info->model_type, "%s", ck.fam->model_type);
    info->family = ck.fam->family;
    info->n_layers = ck.n_layers;
    info->n_moe_layers = ck.n_moe;
    info->moe_layers = xcalloc((size_t)ck.n_moe, sizeof *info->moe_layers);
    for (int i = 0; i < ck.n_moe; i++) {
        info->moe_layers[i] = ck.moe[i].layer;
        if (ck.moe[i].bias.file >= 0) info->has_bias = 1;
    }
    info->n_experts = ck.E;
    info->experts_key = ck.fam->experts_key;
    info->n_experts_per_tok = ck.topk;
    info->moe_prefix = ck.fam->prefix;
    info->n_group = ck.n_group;
    const MoeLayer *first = &ck.moe[0];
    snprintf(info->dtype, sizeof info->dtype, "%s", st_dtype_name(tref(&ck, first->experts[0])->dtype));
    info->hidden = (int)tref(&ck, first->router)->shape[1];
    info->n_expert_tensors = first->n_suffix;
    for (int s = 0; s < first->n_suffix; s++) {
        const StTensor *t = tref(&ck, first->experts[s]);
        info->expert_bytes += (long long)(t->end - t->begin);
    }
    for (int f = 0; f < ck.n_files; f++)
        for (int i = 0; i < ck.st[f].n_tensors; i++)
            info->total_bytes += (long long)(ck.st[f].tensors[i].end - ck.st[f].tensors[i].begin);
    info->sharded = ck.sharded;
    info->n_files = ck.n_files;
    info->files = xcalloc((size_t)ck.n_files, sizeof *info->files);
    for (int f = 0; f < ck.n_files; f++) info->files[f] = xstrdup(ck.files[f]);
    ckpt_close(&ck);
    return 0;
}

void hf_info_free(HfMoeInfo *info) {
    free(info->moe_layers);
    for (int f = 0; f < info->n_files; f++) free(info->files[f]);
    free(info->files);
    memset(info, 0, sizeof *info);
}

int hf_plan_uniform(const HfMoeInfo *info, int n_new, GrowPlan *plan) {
    memset(plan, 0, sizeof *plan);
    if (n_new < info->n_experts)
        return up_error("grow to %d experts: fewer than the %d the checkpoint has; expected a target >= %d", n_new,
                        info->n_experts, info->n_experts);
    plan->n_layers = info->n_moe_layers;
    plan->layers = xcalloc((size_t)info->n_moe_layers, sizeof *plan->layers);
    for (int i = 0; i < info->n_moe_layers; i++) {
        LayerPlan *lp = &plan->layers[i];
        lp->layer = info->moe_layers[i];
        lp->n_old = info->n_experts;
        lp->n_new = n_new;
        lp->source = xcalloc((size_t)n_new, sizeof *lp->source);
        lp->copies = xcalloc((size_t)info->n_experts, sizeof *lp->copies);
        if (allocate_uniform(lp) != 0) {
            grow_plan_free(plan);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ grow */

typedef struct {
    const Ckpt *ck;
    const LayerPlan **plan; /* per MoE index */
    int n_new;
    unsigned char **bias_out; /* per MoE index: grown bias bytes, or NULL */
    /* output names for the index */
    const char **out_names;
    int *out_files;
    size_t n_out, cap_out;
    char **owned; /* replica names */
    size_t n_owned, cap_owned;
    uint64_t *file_bytes; /* per output file: tensor data bytes */
} GrowState;

static void record_output(GrowState *gs, const char *name, int file, int owned) {
    if (gs->n_out == gs->cap_out) {
        gs->cap_out = gs->cap_out ? 2 * gs->cap_out : 1024;
        gs->out_names = xrealloc(gs->out_names, gs->cap_out * sizeof *gs->out_names);
        gs->out_files = xrealloc(gs->out_files, gs->cap_out * sizeof *gs->out_files);
    }
    gs->out_names[gs->n_out] = name;
    gs->out_files[gs->n_out++] = file;
    if (owned) {
        if (gs->n_owned == gs->cap_owned) {
            gs->cap_owned = gs->cap_owned ? 2 * gs->cap_owned : 1024;
            gs->owned = xrealloc(gs->owned, gs->cap_owned * sizeof *gs->owned);
        }
        gs->owned[gs->n_owned++] = (char *)name;
    }
}

static int check_plan(const Ckpt *ck, const GrowPlan *plan, GrowState *gs) {
    gs->plan = xcalloc((size_t)ck->n_moe, sizeof *gs->plan);
    for (int i = 0; i < plan->n_layers; i++) {
        const LayerPlan *lp = &plan->layers[i];
        int m = 0;
        while (m < ck->n_moe && ck->moe[m].layer != lp->layer) m++;
        if (m == ck->n_moe)
            return up_error("%s: the growth plan names layer %d, which has no MoE block (no model.layers.%d.%s.gate."
                            "weight); expected only MoE layers", ck->dir, lp->layer, lp->layer, ck->fam->prefix);
        if (gs->plan[m])
            return up_error("%s: the growth plan names layer %d twice; expected each MoE layer once", ck->dir, lp->layer);
        if (lp->n_old != ck->E)
            return up_error("%s: the growth plan for layer %d starts from %d experts; expected %d (%s in config.json)",
                            ck->dir, lp->layer, lp->n_old, ck->E, ck->fam->experts_key);
        if (lp->n_new < lp->n_old || !lp->source)
            return up_error("%s: the growth plan for layer %d goes from %d to %d experts; expected at least %d with a "
                            "source for each", ck->dir, lp->layer, lp->n_old, lp->n_new, lp->n_old);
        if (i > 0 && lp->n_new != plan->layers[0].n_new)
            return up_error("%s: the growth plan grows layer %d to %d experts but layer %d to %d; expected one expert "
                            "count for every layer (a Hugging Face config has a single %s)", ck->dir, lp->layer,
                            lp->n_new, plan->layers[0].layer, plan->layers[0].n_new, ck->fam->experts_key);
        for (int j = 0; j < lp->n_new; j++) {
            int ok = j < lp->n_old ? lp->source[j] == j : lp->source[j] >= 0 && lp->source[j] < lp->n_old;
            if (!ok)
                return up_error("%s: the growth plan for layer %d gives new expert %d source %d; expected %s", ck->dir,
                                lp->layer, j, lp->source[j], j < lp->n_old ? "originals to keep their index" :
                                                                              "a source below the old expert count");
        }
        gs->plan[m] = lp;
    }
    for (int m = 0; m < ck->n_moe; m++)
        if (!gs->plan[m])
            return up_error("%s: the growth plan has no entry for MoE layer %d; expected every MoE layer (the config "
                            "has one %s for all layers)", ck->dir, ck->moe[m].layer, ck->fam->experts_key);
    gs->n_new = ck->n_moe ? gs->plan[0]->n_new : ck->E;
    if (ck->n_group > 1 && gs->n_new % ck->n_group != 0)
        return up_error("%s: growing to %d experts with n_group = %d expert groups in config.json; expected a multiple "
                        "of %d (group-limited routing splits the experts into equal groups)", ck->dir, gs->n_new,
                        ck->n_group, ck->n_group);
    return 0;
}

/* Grown balancing biases, in ascending layer order from one Rng (independent of sharding). */
static int grow_biases(const Ckpt *ck, GrowState *gs, const HfGrowOptions *opt) {
    Rng rng;
    rng_seed(&rng, opt->seed);
    gs->bias_out = xcalloc((size_t)ck->n_moe, sizeof *gs->bias_out);
    for (int m = 0; m < ck->n_moe; m++) {
        const MoeLayer *ml = &ck->moe[m];
        if (ml->bias.file < 0) continue;
        const StFile *st = &ck->st[ml->bias.file];
        const StTensor *t = tref(ck, ml->bias);
        const LayerPlan *lp = gs->plan[m];
        int E = ck->E;
        size_t ds = st_dtype_size(t->dtype);
        float *b = xmalloc((size_t)E * sizeof *b);
        int64_t shape[1] = {E};
        if (st_read_f32(st, t->name, b, 1, shape) != 0) {
            free(b);
            return -1;
        }
        float s = grow_bias_noise_std(b, E, opt->bias_noise);
        unsigned char *out = xmalloc((size_t)lp->n_new * ds);
        const unsigned char *src = st_data(st, t);
        memcpy(out, src, (size_t)E * ds);
        for (int j = E; j < lp->n_new; j++) {
            int from = lp->source[j];
            if (s == 0.0f || opt->bias_noise == 0.0f) {
                memcpy(out + (size_t)j * ds, src + (size_t)from * ds, ds);
                continue;
            }
            float v = b[from] + s * rng_normal(&rng);
            if (t->dtype == ST_F32) memcpy(out + (size_t)j * ds, &v, 4);
            else {
                uint16_t h = t->dtype == ST_BF16 ? f32_to_bf16(v) : f32_to_f16(v);
                memcpy(out + (size_t)j * ds, &h, 2);
            }
        }
        free(b);
        gs->bias_out[m] = out;
    }
    return 0;
}

enum { ITEM_COPY, ITEM_ROUTER, ITEM_BIAS, ITEM_REPLICA };
typedef struct {
    int kind, a, b, c;
} Item;

/* Maps in a range before it is copied: one call instead of a page fault per page (about 1.5x
 * faster copies); a no-op where the kernel lacks MADV_POPULATE_READ (Linux < 5.14). */
static void prefault(const void *addr, size_t len) {
#ifdef MADV_POPULATE_READ
    static size_t page;
    if (!page) page = (size_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)addr & ~(uintptr_t)(page - 1), b = (uintptr_t)addr + len;
    if (len) madvise((void *)a, b - a, MADV_POPULATE_READ);
#else
    (void)addr;
    (void)len;
#endif
}

static int write_mapped(StWriter *w, const unsigned char *p, size_t n) {
    for (size_t off = 0; off < n;) {
        size_t len = n - off < COPY_CHUNK ? n - off : COPY_CHUNK;
        prefault(p + off, len);
        if (st_writer_write(w, p + off, len) != 0) return -1;
        drop_pages(p + off, len);
        off += len;
    }
    return 0;
}

static int write_item(StWriter *w, const GrowState *gs, int f, const Item *it) {
    const Ckpt *ck = gs->ck;
    const StFile *st = &ck->st[f];
    switch (it->kind) {
    case ITEM_COPY: {
        const StTensor *t = &st->tensors[it->a];
        return write_mapped(w, st_data(st, t), (size_t)(t->end - t->begin));
    }
    case ITEM_ROUTER: {
        const MoeLayer *ml = &ck->moe[it->a];
        const LayerPlan *lp = gs->plan[it->a];
        const StTensor *t = tref(ck, ml->router);
        const unsigned char *src = st_data(&ck->st[ml->router.file], t);
        size_t row = (size_t)(t->end - t->begin) / (size_t)ck->E;
        for (int j = 0; j < lp->n_new; j++)
            if (st_writer_write(w, src + (size_t)lp->source[j] * row, row) != 0) return -1;
        return 0;
    }
    case ITEM_BIAS: {
        const StTensor *t = tref(ck, ck->moe[it->a].bias);
        return st_writer_write(w, gs->bias_out[it->a], (size_t)gs->n_new * st_dtype_size(t->dtype));
    }
    default: { /* replica b of layer a, suffix c */
        const MoeLayer *ml = &ck->moe[it->a];
        TRef r = ml->experts[gs->plan[it->a]->source[it->b] * ml->n_suffix + it->c];
        const StTensor *t = tref(ck, r);
        return write_mapped(w, st_data(&ck->st[r.file], t), (size_t)(t->end - t->begin));
    }
    }
}

static int write_shard(GrowState *gs, int f, const char *tmp_dir) {
    const Ckpt *ck = gs->ck;
    const StFile *st = &ck->st[f];
    StWriter *w = st_writer_new();
    for (int k = 0; k < st->n_meta; k++) st_writer_meta(w, st->meta_keys[k], st->meta_values[k]);
    Item *items = NULL;
    size_t n_items = 0, cap_items = 0;
    uint64_t bytes = 0;
#define PUSH(...)                                                                                   \
    do {                                                                                            \
        if (n_items == cap_items) {                                                                 \
            cap_items = cap_items ? 2 * cap_items : 256;                                            \
            items = xrealloc(items, cap_items * sizeof *items);                                     \
        }                                                                                           \
        items[n_items++] = (Item){__VA_ARGS__};                                                     \
    } while (0)
    for (int i = 0; i < st->n_tensors; i++) {
        const StTensor *t = &st->tensors[i];
        int role = ck->role[f][i], m = ROLE_MOE(role);
        int64_t shape[ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        size_t tbytes = (size_t)(t->end - t->begin);
        if (ROLE_KIND(role) == ROLE_ROUTER) {
            shape[0] = gs->n_new;
            st_writer_add(w, t->name, t->dtype, t->ndim, shape);
            PUSH(ITEM_ROUTER, m, 0, 0);
            bytes += tbytes / (size_t)ck->E * (size_t)gs->n_new;
            record_output(gs, t->name, f, 0);
            /* the layer's replicas follow its router */
            const MoeLayer *ml = &ck->moe[m];
            const LayerPlan *lp = gs->plan[m];
            for (int j = ck->E; j < lp->n_new; j++) {
                for (int s = 0; s < ml->n_suffix; s++) {
                    const StTensor *src = tref(ck, ml->experts[lp->source[j] * ml->n_suffix + s]);
                    char *name = xasprintf("model.layers.%d.%s.experts.%d.%s", ml->layer, ck->fam->prefix, j,
                                            ml->suffix[s]);
                    st_writer_add(w, name, src->dtype, src->ndim, src->shape);
                    PUSH(ITEM_REPLICA, m, j, s);
                    bytes += src->end - src->begin;
                    record_output(gs, name, f, 1);
                }
            }
        } else if (ROLE_KIND(role) == ROLE_BIAS) {
            shape[0] = gs->n_new;
            st_writer_add(w, t->name, t->dtype, t->ndim, shape);
            PUSH(ITEM_BIAS, m, 0, 0);
            bytes += (size_t)gs->n_new * st_dtype_size(t->dtype);
            record_output(gs, t->name, f, 0);
        } else {
            st_writer_add(w, t->name, t->dtype, t->ndim, t->shape);
            PUSH(ITEM_COPY, i, 0, 0);
            bytes += tbytes;
            record_output(gs, t->name, f, 0);
        }
    }
#undef PUSH
    gs->file_bytes[f] = bytes;
    char *path = path_join(tmp_dir, ck->files[f]);
    int rc = st_writer_open(w, path);
    for (size_t k = 0; k < n_items && rc == 0; k++) rc = write_item(w, gs, f, &items[k]);
    free(items);
    free(path);
    if (rc != 0) {
        st_writer_abort(w);
        return -1;
    }
    return st_writer_commit(w);
}

static char *json_print(const cJSON *root) {
    char *text = cJSON_Print(root);
    if (!text) {
        fprintf(stderr, "upcycle: out of memory printing JSON\n");
        exit(3);
    }
    size_t n = strlen(text);
    text = xrealloc(text, n + 2); /* cJSON_Print uses malloc */
    text[n] = '\n';
    text[n + 1] = 0;
    return text;
}

static int write_config(const Ckpt *ck, int n_new, const char *tmp_dir) {
    cJSON *config = cJSON_Duplicate(ck->config, 1);
    cJSON_ReplaceItemInObjectCaseSensitive(config, ck->fam->experts_key, cJSON_CreateNumber(n_new));
    char *text = json_print(config);
    cJSON_Delete(config);
    char *path = path_join(tmp_dir, "config.json");
    int rc = atomic_write_file(path, text, strlen(text));
    free(path);
    free(text);
    return rc;
}

static const GrowState *g_sort_state;
static int compare_out(const void *a, const void *b) {
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    return strcmp(g_sort_state->out_names[i], g_sort_state->out_names[j]);
}

static int write_index(const GrowState *gs, const char *tmp_dir) {
    const Ckpt *ck = gs->ck;
    cJSON *index = cJSON_Duplicate(ck->index, 1);
    uint64_t total = 0;
    for (int f = 0; f < ck->n_files; f++) total += gs->file_bytes[f];
    cJSON *meta = cJSON_GetObjectItemCaseSensitive(index, "metadata");
    if (!cJSON_IsObject(meta)) {
        cJSON_DeleteItemFromObjectCaseSensitive(index, "metadata");
        meta = cJSON_AddObjectToObject(index, "metadata");
    }
    char number[32];
    snprintf(number, sizeof number, "%" PRIu64, total);
    if (cJSON_GetObjectItemCaseSensitive(meta, "total_size"))
        cJSON_ReplaceItemInObjectCaseSensitive(meta, "total_size", cJSON_CreateRaw(number));
    else
        cJSON_AddItemToObject(meta, "total_size", cJSON_CreateRaw(number));
    size_t *order = xmalloc(gs->n_out * sizeof *order);
    for (size_t i = 0; i < gs->n_out; i++) order[i] = i;
    g_sort_state = gs;
    qsort(order, gs->n_out, sizeof *order, compare_out);
    cJSON *wm = cJSON_CreateObject();
    for (size_t k = 0; k < gs->n_out; k++)
        cJSON_AddItemToObject(wm, gs->out_names[order[k]], cJSON_CreateString(ck->files[gs->out_files[order[k]]]));
    free(order);
    cJSON_ReplaceItemInObjectCaseSensitive(index, "weight_map", wm);
    char *text = json_print(index);
    cJSON_Delete(index);
    char *path = path_join(tmp_dir, INDEX_NAME);
    int rc = atomic_write_file(path, text, strlen(text));
    free(path);
    free(text);
    return rc;
}

static int is_skipped_file(const char *name) {
    static const char *skip_ext[] = {".safetensors", ".safetensors.index.json", ".bin", ".pt", ".pth",
                                     ".ckpt",        ".gguf",                   ".h5",  ".msgpack"};
    if (strcmp(name, "config.json") == 0) return 1;
    for (size_t i = 0; i < sizeof skip_ext / sizeof *skip_ext; i++)
        if (str_ends_with(name, skip_ext[i])) return 1;
    return 0;
}

static int copy_other_files(const Ckpt *ck, const char *tmp_dir) {
    DIR *d = opendir(ck->dir);
    if (!d) return up_error("%s: cannot list (%s); expected a readable directory", ck->dir, strerror(errno));
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        if (de->d_name[0] == '.' || is_skipped_file(de->d_name)) continue;
        char *src = path_join(ck->dir, de->d_name);
        struct stat st;
        if (stat(src, &st) == 0 && S_ISREG(st.st_mode)) { /* follows symlinks (Hugging Face cache snapshots) */
            char *dst = path_join(tmp_dir, de->d_name);
            rc = copy_file(src, dst);
            free(dst);
        }
        free(src);
    }
    closedir(d);
    return rc;
}

static int check_paths(const char *in_dir, const char *out, int force) {
    char in_real[PATH_MAX], out_real[PATH_MAX];
    if (!realpath(in_dir, in_real)) return up_error("%s: cannot resolve (%s); expected an existing directory", in_dir, strerror(errno));
    if (path_exists(out)) {
        if (!force)
            return up_error("%s: already exists; expected a new output directory (or --force to replace it)", out);
        if (realpath(out, out_real)) {
            size_t n = strlen(out_real);
            if (strcmp(in_real, out_real) == 0)
                return up_error("%s: is the input checkpoint; expected a different output directory", out);
            if (strncmp(in_real, out_real, n) == 0 && in_real[n] == '/')
                return up_error("%s: contains the input checkpoint %s, which --force would delete; expected another "
                                "output directory", out, in_dir);
        }
    }
    return 0;
}

static int check_space(const GrowState *gs, const char *parent, const char *out) {
    const Ckpt *ck = gs->ck;
    uint64_t need = 0;
    for (int f = 0; f < ck->n_files; f++)
        for (int i = 0; i < ck->st[f].n_tensors; i++) need += ck->st[f].tensors[i].end - ck->st[f].tensors[i].begin;
    for (int m = 0; m < ck->n_moe; m++) {
        const MoeLayer *ml = &ck->moe[m];
        for (int j = ck->E; j < gs->n_new; j++)
            for (int s = 0; s < ml->n_suffix; s++) {
                const StTensor *t = tref(ck, ml->experts[gs->plan[m]->source[j] * ml->n_suffix + s]);
                need += t->end - t->begin;
            }
    }
    struct statvfs vfs;
    if (statvfs(parent, &vfs) != 0) return 0; /* the mkdir that follows reports a bad parent */
    uint64_t avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    if (avail < need)
        return up_error("%s: the grown checkpoint needs %.2f GB but its filesystem has %.2f GB free; expected enough "
                        "disk space", out, need / 1e9, avail / 1e9);
    return 0;
}

static int finish(const char *tmp, const char *out, int force) {
    if (path_exists(out)) {
        if (!force)
            return up_error("%s: already exists (created while growing); expected a new output directory (or --force)",
                            out);
        char *old = xasprintf("%s.old.%ld", out, (long)getpid());
        remove_tree(old);
        if (rename(out, old) != 0) {
            int e = errno;
            free(old);
            return up_error("%s: cannot move the existing directory aside (%s); expected a writable parent", out,
                            strerror(e));
        }
        if (rename(tmp, out) != 0) {
            int e = errno;
            rename(old, out);
            free(old);
            return up_error("%s: cannot rename %s into place (%s); expected a writable parent", out, tmp, strerror(e));
        }
        remove_tree(old);
        free(old);
    } else if (rename(tmp, out) != 0) {
        return up_error("%s: cannot rename %s into place (%s); expected a writable parent", out, tmp, strerror(errno));
    }
    char *parent = path_dirname(out);
    fsync_dir(parent);
    free(parent);
    return 0;
}

int hf_grow(const char *in_dir, const char *out_dir, const GrowPlan *plan, const HfGrowOptions *opt) {
    HfGrowOptions defaults = {0};
    if (!opt) opt = &defaults;
    Ckpt ck;
    if (ckpt_open(in_dir, &ck) != 0) return -1;
    GrowState gs;
    memset(&gs, 0, sizeof gs);
    gs.ck = &ck;
    char *out = xstrdup(out_dir);
    for (size_t n = strlen(out); n > 1 && out[n - 1] == '/'; n--) out[n - 1] = 0;
    char *tmp = xasprintf("%s.tmp.%ld", out, (long)getpid());
    char *parent = path_dirname(out);
    int made_tmp = 0;
    int rc = check_plan(&ck, plan, &gs);
    if (rc == 0) rc = check_paths(in_dir, out, opt->force);
    if (rc == 0) rc = grow_biases(&ck, &gs, opt);
    if (rc == 0 && !is_dir(parent) && mkdir_p(parent) != 0) rc = -1;
    if (rc == 0) rc = check_space(&gs, parent, out);
    if (rc == 0) {
        remove_tree(tmp);
        if (mkdir(tmp, 0755) != 0)
            rc = up_error("%s: cannot create directory (%s); expected a writable parent directory for %s", tmp,
                          strerror(errno), out);
        else
            made_tmp = 1;
    }
    if (rc == 0) {
        for (int f = 0; f < ck.n_files; f++) madvise(ck.st[f].map, ck.st[f].file_bytes, MADV_SEQUENTIAL);
        gs.file_bytes = xcalloc((size_t)ck.n_files, sizeof *gs.file_bytes);
        for (int f = 0; f < ck.n_files && rc == 0; f++) rc = write_shard(&gs, f, tmp);
    }
    if (rc == 0) rc = write_config(&ck, gs.n_new, tmp);
    if (rc == 0 && ck.sharded) rc = write_index(&gs, tmp);
    if (rc == 0) rc = copy_other_files(&ck, tmp);
    if (rc == 0 && fsync_dir(tmp) != 0) rc = up_error("%s: fsync failed (%s); expected a writable disk", tmp, strerror(errno));
    if (rc == 0) rc = finish(tmp, out, opt->force);
    if (rc != 0 && made_tmp) remove_tree(tmp);
    for (size_t i = 0; i < gs.n_owned; i++) free(gs.owned[i]);
    free(gs.owned);
    free(gs.out_names);
    free(gs.out_files);
    free(gs.file_bytes);
    if (gs.bias_out)
        for (int m = 0; m < ck.n_moe; m++) free(gs.bias_out[m]);
    free(gs.bias_out);
    free(gs.plan);
    free(parent);
    free(tmp);
    free(out);
    ckpt_close(&ck);
    return rc;
}

/* ------------------------------------------------------------------ synthetic benchmark checkpoint */

typedef struct {
    char name[96];
    StDtype dtype;
    int ndim;
    int64_t shape[2];
    int fill; /* 0 random bf16, 1 ones (norms), 2 small f32 bias */
    uint64_t bytes;
    int shard;
} BenchTensor;

static void bench_fill(const BenchTensor *t, Rng *rng, unsigned char *buf, size_t n) {
    if (t->fill == 1) {
        for (size_t i = 0; i + 1 < n; i += 2) buf[i] = 0x80, buf[i + 1] = 0x3f; /* bf16 1.0 */
    } else if (t->fill == 2) {
        for (size_t i = 0; i + 3 < n; i += 4) {
            float v = (float)(rng_uniform(rng) - 0.5) * 0.02f;
            memcpy(buf + i, &v, 4);
        }
    } else {
        /* bf16 with random sign and mantissa, magnitude 2^-9 .. 2^-5: fast and weight-like */
        for (size_t i = 0; i + 7 < n; i += 8) {
            uint64_t r = rng_next(rng);
            for (int k = 0; k < 4; k++, r >>= 16) {
                uint16_t h = (uint16_t)((r & 0x8000u) | ((118u + ((r >> 7) & 3u)) << 7) | (r & 0x7fu));
                memcpy(buf + i + 2 * k, &h, 2);
            }
        }
        for (size_t i = n & ~(size_t)7; i < n; i++) buf[i] = 0;
    }
}

int hf_bench_make_checkpoint(const char *dir, double gigabytes) {
    const int L = 4, E = 32, H = 1024, heads = 16, kv = 4, hd = 64;
    const double target = gigabytes * 1e9;
    /* embeddings and lm_head take about 5% of the size, like a real checkpoint */
    long V = (long)(target * 0.025 / (2.0 * H) / 256.0) * 256;
    if (V < 256) V = 256;
    if (V > 151936) V = 151936;
    double fixed = 2.0 * V * H * 2 + L * ((double)2 * H * heads * hd + 2.0 * H * kv * hd) * 2;
    double per_width = (double)L * E * 3 * H * 2;
    long I = (long)((target - fixed) / per_width / 64.0 + 0.5) * 64;
    if (I < 64) I = 64;
    if (mkdir_p(dir) != 0) return -1;

    size_t n = 0, cap = 64;
    BenchTensor *ts = xcalloc(cap, sizeof *ts);
#define ADD(fill_, dtype_, d0, d1, ...)                                                         \
    do {                                                                                        \
        if (n == cap) ts = xrealloc(ts, (cap *= 2) * sizeof *ts);                               \
        BenchTensor *t_ = &ts[n++];                                                             \
        memset(t_, 0, sizeof *t_);                                                              \
        snprintf(t_->name, sizeof t_->name, __VA_ARGS__);                                       \
        t_->fill = fill_;                                                                       \
        t_->dtype = dtype_;                                                                     \
        t_->shape[0] = d0;                                                                      \
        t_->shape[1] = d1;                                                                      \
        t_->ndim = (d1) != 0 ? 2 : 1;                                                                \
        t_->bytes = (uint64_t)(d0) * ((d1) != 0 ? (uint64_t)(d1) : 1) * st_dtype_size(dtype_);             \
    } while (0)
    ADD(0, ST_BF16, V, H, "model.embed_tokens.weight");
    for (int l = 0; l < L; l++) {
        ADD(1, ST_BF16, H, 0, "model.layers.%d.input_layernorm.weight", l);
        ADD(0, ST_BF16, heads * hd, H, "model.layers.%d.self_attn.q_proj.weight", l);
        ADD(0, ST_BF16, kv * hd, H, "model.layers.%d.self_attn.k_proj.weight", l);
        ADD(0, ST_BF16, kv * hd, H, "model.layers.%d.self_attn.v_proj.weight", l);
        ADD(0, ST_BF16, H, heads * hd, "model.layers.%d.self_attn.o_proj.weight", l);
        ADD(1, ST_BF16, hd, 0, "model.layers.%d.self_attn.q_norm.weight", l);
        ADD(1, ST_BF16, hd, 0, "model.layers.%d.self_attn.k_norm.weight", l);
        ADD(1, ST_BF16, H, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(0, ST_BF16, E, H, "model.layers.%d.mlp.gate.weight", l);
        ADD(2, ST_F32, E, 0, "model.layers.%d.mlp.gate.e_score_correction_bias", l);
        for (int e = 0; e < E; e++) {
            ADD(0, ST_BF16, I, H, "model.layers.%d.mlp.experts.%d.gate_proj.weight", l, e);
            ADD(0, ST_BF16, I, H, "model.layers.%d.mlp.experts.%d.up_proj.weight", l, e);
            ADD(0, ST_BF16, H, I, "model.layers.%d.mlp.experts.%d.down_proj.weight", l, e);
        }
    }
    ADD(1, ST_BF16, H, 0, "model.norm.weight");
    ADD(0, ST_BF16, V, H, "lm_head.weight");
#undef ADD
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) total += ts[i].bytes;
    int n_shards = (int)ceil(gigabytes);
    if (n_shards < 2) n_shards = 2;
    uint64_t before = 0;
    for (size_t i = 0; i < n; i++) {
        int s = (int)((double)before / (double)total * n_shards);
        ts[i].shard = s < n_shards ? s : n_shards - 1;
        before += ts[i].bytes;
    }

    int rc = 0;
    Rng rng;
    rng_seed(&rng, 12345);
    size_t buf_cap = COPY_CHUNK;
    unsigned char *buf = xmalloc(buf_cap);
    cJSON *index = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(index, "metadata");
    char number[32];
    snprintf(number, sizeof number, "%" PRIu64, total);
    cJSON_AddItemToObject(meta, "total_size", cJSON_CreateRaw(number));
    cJSON *wm = cJSON_AddObjectToObject(index, "weight_map");
    for (int s = 0; s < n_shards && rc == 0; s++) {
        char file[64];
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        StWriter *w = st_writer_new();
        st_writer_meta(w, "format", "pt");
        for (size_t i = 0; i < n; i++)
            if (ts[i].shard == s) {
                st_writer_add(w, ts[i].name, ts[i].dtype, ts[i].ndim, ts[i].shape);
                cJSON_AddStringToObject(wm, ts[i].name, file);
            }
        char *path = path_join(dir, file);
        rc = st_writer_open(w, path);
        for (size_t i = 0; i < n && rc == 0; i++) {
            if (ts[i].shard != s) continue;
            for (uint64_t off = 0; off < ts[i].bytes && rc == 0;) {
                size_t len = ts[i].bytes - off < buf_cap ? (size_t)(ts[i].bytes - off) : buf_cap;
                bench_fill(&ts[i], &rng, buf, len);
                rc = st_writer_write(w, buf, len);
                off += len;
            }
        }
        free(path);
        if (rc == 0) rc = st_writer_commit(w);
        else st_writer_abort(w);
    }
    free(buf);
    free(ts);
    if (rc == 0) {
        char *text = json_print(index), *path = path_join(dir, INDEX_NAME);
        rc = atomic_write_file(path, text, strlen(text));
        free(text);
        free(path);
    }
    cJSON_Delete(index);
    if (rc == 0) {
        cJSON *c = cJSON_CreateObject();
        cJSON *arch = cJSON_AddArrayToObject(c, "architectures");
        cJSON_AddItemToArray(arch, cJSON_CreateString("Qwen3MoeForCausalLM"));
        cJSON_AddStringToObject(c, "model_type", "qwen3_moe");
        cJSON_AddNumberToObject(c, "hidden_size", H);
        cJSON_AddNumberToObject(c, "intermediate_size", 4 * H);
        cJSON_AddNumberToObject(c, "moe_intermediate_size", (double)I);
        cJSON_AddNumberToObject(c, "num_experts", E);
        cJSON_AddNumberToObject(c, "num_experts_per_tok", 4);
        cJSON_AddNumberToObject(c, "num_hidden_layers", L);
        cJSON_AddNumberToObject(c, "num_attention_heads", heads);
        cJSON_AddNumberToObject(c, "num_key_value_heads", kv);
        cJSON_AddNumberToObject(c, "head_dim", hd);
        cJSON_AddNumberToObject(c, "vocab_size", V);
        cJSON_AddNumberToObject(c, "decoder_sparse_step", 1);
        cJSON_AddItemToObject(c, "mlp_only_layers", cJSON_CreateArray());
        cJSON_AddBoolToObject(c, "norm_topk_prob", 1);
        cJSON_AddNumberToObject(c, "rms_norm_eps", 1e-6);
        cJSON_AddNumberToObject(c, "rope_theta", 1000000);
        cJSON_AddNumberToObject(c, "max_position_embeddings", 4096);
        cJSON_AddBoolToObject(c, "tie_word_embeddings", 0);
        cJSON_AddStringToObject(c, "torch_dtype", "bfloat16");
        char *text = json_print(c), *path = path_join(dir, "config.json");
        rc = atomic_write_file(path, text, strlen(text));
        free(text);
        free(path);
        cJSON_Delete(c);
    }
    return rc;
}
