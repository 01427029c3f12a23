/* hf_grow.c - the streaming writer of Expert Upcycling on Hugging Face checkpoints (see hf.h).
 *
 * hf_grow opens the input (hf_moe_open), checks the plan (hf_plan_check) and a layout
 * conversion, grows the balancing biases in memory, then lays out every output shard as a list
 * of tensors, each a list of pieces: byte ranges of input tensors (a whole tensor, a router row
 * or packed expert slice of a source expert, a gate or up half of a packed slice) or a grown
 * bias. Writing a shard is then one pass over its pieces, copied chunk by chunk from the mmap
 * (pages dropped behind the copy so the resident set stays small). config.json, the index and
 * the other files follow, in a temporary directory that util/dir_replace swaps into place. */
#include "grow/hf.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "util.h"
#include "util/json.h"
#include "util/dir_replace.h"

#define COPY_CHUNK ((size_t)8 << 20) /* bytes per write from the mmap */
#define GROW_JSON_NAME "grow.json"

enum { PIECE_BYTES, PIECE_BIAS };
typedef struct {
    int kind;
    HfTensorRef ref;    /* PIECE_BYTES: bytes [off, off + len) of this tensor's data */
    uint64_t off, len;
    int moe;            /* PIECE_BIAS: the grown balancing bias of this MoE layer */
} Piece;

typedef struct {
    const char *name;   /* an input tensor's name, or owned (see owned) */
    int owned;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t first_piece, n_pieces;
} OutTensor;

typedef struct {
    OutTensor *tensors;
    size_t n_tensors, cap_tensors;
    Piece *pieces;
    size_t n_pieces, cap_pieces;
    uint64_t bytes;     /* tensor data bytes */
} OutShard;

typedef struct {
    const HfMoeCkpt *mc;
    const LayerPlan **plan;   /* per MoE index */
    int n_new;
    int layout;               /* HF_LAYOUT_* of the output */
    const char *prefix;       /* its MoE block name */
    unsigned char **bias_out; /* per MoE index: grown bias bytes, or NULL */
    OutShard *shards;         /* per input (= output) file */
} GrowState;

/* ------------------------------------------------------------------ the output layout */

static OutTensor *add_tensor(OutShard *sh, const char *name, int owned, StDtype dtype, int ndim, const int64_t *shape) {
    if (sh->n_tensors == sh->cap_tensors) {
        sh->cap_tensors = sh->cap_tensors ? 2 * sh->cap_tensors : 256;
        sh->tensors = xrealloc(sh->tensors, sh->cap_tensors * sizeof *sh->tensors);
    }
    OutTensor *t = &sh->tensors[sh->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = name, t->owned = owned, t->dtype = dtype, t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->first_piece = sh->n_pieces;
    return t;
}

static void add_piece(OutShard *sh, Piece p) {
    OutTensor *t = &sh->tensors[sh->n_tensors - 1];
    Piece *last = t->n_pieces ? &sh->pieces[sh->n_pieces - 1] : NULL;
    if (last && p.kind == PIECE_BYTES && last->kind == PIECE_BYTES && last->ref.file == p.ref.file &&
        last->ref.index == p.ref.index && last->off + last->len == p.off) { /* adjacent slices: one copy */
        last->len += p.len;
        sh->bytes += p.len;
        return;
    }
    if (sh->n_pieces == sh->cap_pieces) {
        sh->cap_pieces = sh->cap_pieces ? 2 * sh->cap_pieces : 1024;
        sh->pieces = xrealloc(sh->pieces, sh->cap_pieces * sizeof *sh->pieces);
    }
    sh->pieces[sh->n_pieces++] = p;
    t->n_pieces++;
    sh->bytes += p.len;
}

static void add_bytes(OutShard *sh, HfTensorRef ref, uint64_t off, uint64_t len) {
    add_piece(sh, (Piece){PIECE_BYTES, ref, off, len, -1});
}

static uint64_t tensor_bytes(const GrowState *gs, HfTensorRef r) {
    const StTensor *t = hf_ckpt_tensor(&gs->mc->ck, r);
    return t->end - t->begin;
}

/* An input tensor [E, ...] grown to [E', ...]: slice j is slice source[j] (router rows, router
 * bias, packed expert tensors). */
static void add_rows(GrowState *gs, OutShard *sh, int m, HfTensorRef r, const char *name, int owned) {
    const StTensor *t = hf_ckpt_tensor(&gs->mc->ck, r);
    int64_t shape[ST_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[0] = gs->n_new;
    add_tensor(sh, name, owned, t->dtype, t->ndim, shape);
    uint64_t row = tensor_bytes(gs, r) / (uint64_t)gs->mc->n_experts;
    for (int j = 0; j < gs->n_new; j++) add_bytes(sh, r, (uint64_t)gs->plan[m]->source[j] * row, row);
}

/* A router or bias name in the output's MoE block (Mixtral's block changes with the layout). */
static const char *block_name(const GrowState *gs, int m, const char *name, int *owned) {
    const HfMoeCkpt *mc = gs->mc;
    *owned = 0;
    if (strcmp(gs->prefix, mc->prefix) == 0) return name;
    char head[128];
    snprintf(head, sizeof head, "model.layers.%d.%s.", mc->moe[m].layer, mc->prefix);
    *owned = 1;
    return xasprintf("model.layers.%d.%s.%s", mc->moe[m].layer, gs->prefix, name + strlen(head));
}

/* Per-expert input, packed output: gate_up_proj [E', 2I, H] (expert j: gate then up of
 * source[j]) and down_proj [E', H, I], after the layer's router. */
static void add_packed_from_experts(GrowState *gs, OutShard *sh, int m) {
    const HfMoeCkpt *mc = gs->mc;
    const LayerPlan *lp = gs->plan[m];
    int layer = mc->moe[m].layer;
    HfProj gate, down, p;
    hf_expert_proj(mc, m, 0, HF_PROJ_GATE, &gate); /* check_layout checked every projection */
    hf_expert_proj(mc, m, 0, HF_PROJ_DOWN, &down);
    int64_t gate_up_shape[3] = {gs->n_new, 2 * gate.out, gate.in}, down_shape[3] = {gs->n_new, down.out, down.in};
    add_tensor(sh, hf_moe_expert_name(gs->prefix, layer, -1, "gate_up_proj"), 1, gate.dtype, 3, gate_up_shape);
    for (int j = 0; j < gs->n_new; j++)
        for (int k = HF_PROJ_GATE; k <= HF_PROJ_UP; k++) {
            hf_expert_proj(mc, m, lp->source[j], k, &p);
            add_bytes(sh, p.weight, 0, tensor_bytes(gs, p.weight));
        }
    add_tensor(sh, hf_moe_expert_name(gs->prefix, layer, -1, "down_proj"), 1, down.dtype, 3, down_shape);
    for (int j = 0; j < gs->n_new; j++) {
        hf_expert_proj(mc, m, lp->source[j], HF_PROJ_DOWN, &p);
        add_bytes(sh, p.weight, 0, tensor_bytes(gs, p.weight));
    }
}

/* Packed input, per-expert output: in place of gate_up_proj every expert j's gate and up
 * weights, in place of down_proj every down weight, each a slice of source[j]'s. */
static void add_experts_from_packed(GrowState *gs, OutShard *sh, int m, int down_half) {
    const HfMoeCkpt *mc = gs->mc;
    const HfFamily *fam = mc->fam;
    for (int j = 0; j < gs->n_new; j++) {
        for (int k = down_half ? HF_PROJ_DOWN : HF_PROJ_GATE; k <= (down_half ? HF_PROJ_DOWN : HF_PROJ_UP); k++) {
            HfProj p;
            hf_expert_proj(mc, m, gs->plan[m]->source[j], k, &p); /* checked by check_layout */
            char *suffix = xasprintf("%s.weight", fam->proj[k]);
            int64_t shape[2] = {p.out, p.in};
            size_t size = st_dtype_size(p.dtype);
            add_tensor(sh, hf_moe_expert_name(gs->prefix, mc->moe[m].layer, j, suffix), 1, p.dtype, 2, shape);
            add_bytes(sh, p.weight, (uint64_t)p.offset * size, (uint64_t)(p.out * p.in) * size);
            free(suffix);
        }
    }
}

static void layout_shard(GrowState *gs, int f) {
    const HfMoeCkpt *mc = gs->mc;
    const HfCkpt *ck = &mc->ck;
    const StFile *st = &ck->st[f];
    OutShard *sh = &gs->shards[f];
    int convert = gs->layout != mc->layout;
    for (int i = 0; i < st->n_tensors; i++) {
        const StTensor *t = &st->tensors[i];
        HfTensorRef r = {f, i};
        int role = mc->role[f][i], kind = HF_ROLE_KIND(role), m = HF_ROLE_MOE(role), owned = 0;
        const char *name;
        switch (kind) {
        case HF_TENSOR_ROUTER: {
            name = block_name(gs, m, t->name, &owned);
            add_rows(gs, sh, m, r, name, owned);
            const HfMoeLayer *ml = &mc->moe[m];
            const LayerPlan *lp = gs->plan[m];
            if (mc->layout == HF_LAYOUT_PER_EXPERT && !convert) { /* the layer's replicas follow its router */
                for (int j = mc->n_experts; j < lp->n_new; j++)
                    for (int s = 0; s < ml->n_suffix; s++) {
                        HfTensorRef src = ml->experts[lp->source[j] * ml->n_suffix + s];
                        const StTensor *x = hf_ckpt_tensor(ck, src);
                        add_tensor(sh, hf_moe_expert_name(gs->prefix, ml->layer, j, ml->suffix[s]), 1, x->dtype, x->ndim,
                                   x->shape);
                        add_bytes(sh, src, 0, tensor_bytes(gs, src));
                    }
            } else if (mc->layout == HF_LAYOUT_PER_EXPERT) {
                add_packed_from_experts(gs, sh, m);
            }
            break;
        }
        case HF_TENSOR_ROUTER_BIAS: add_rows(gs, sh, m, r, t->name, 0); break;
        case HF_TENSOR_BIAS: {
            name = block_name(gs, m, t->name, &owned);
            int64_t shape[1] = {gs->n_new};
            add_tensor(sh, name, owned, t->dtype, 1, shape);
            add_piece(sh, (Piece){PIECE_BIAS, r, 0, (uint64_t)gs->n_new * st_dtype_size(t->dtype), m});
            break;
        }
        case HF_TENSOR_EXPERT:
            if (convert) break; /* gathered into the packed tensors after the router */
            add_tensor(sh, t->name, 0, t->dtype, t->ndim, t->shape);
            add_bytes(sh, r, 0, tensor_bytes(gs, r));
            break;
        case HF_TENSOR_PACKED:
            if (!convert) add_rows(gs, sh, m, r, t->name, 0);
            else {
                HfTensorRef down = hf_moe_expert_tensor(mc, m, 0, "down_proj");
                add_experts_from_packed(gs, sh, m, down.file == f && down.index == i);
            }
            break;
        default:
            add_tensor(sh, t->name, 0, t->dtype, t->ndim, t->shape);
            add_bytes(sh, r, 0, tensor_bytes(gs, r));
        }
    }
}

/* A layout conversion needs experts that are exactly gate, up and down weights. */
static int check_layout(const GrowState *gs) {
    const HfMoeCkpt *mc = gs->mc;
    const HfFamily *fam = mc->fam;
    if (gs->layout == mc->layout) return 0;
    const char *to = hf_layout_name(gs->layout);
    if (!fam->proj[0])
        return up_error("%s: --layout %s for model_type %s, whose experts exist only packed (gate and up interleaved, "
                        "with biases); expected --layout packed", mc->ck.dir, to, fam->model_type);
    for (int m = 0; m < mc->n_moe; m++) {
        const HfMoeLayer *ml = &mc->moe[m];
        for (int s = 0; s < ml->n_suffix; s++) {
            int known = 0;
            for (int k = 0; k < 3; k++) {
                char *want = gs->layout == HF_LAYOUT_PACKED ? xasprintf("%s.weight", fam->proj[k])
                                                            : xstrdup(k == HF_PROJ_DOWN ? "down_proj" : "gate_up_proj");
                known |= strcmp(ml->suffix[s], want) == 0;
                free(want);
            }
            if (!known) {
                char *name = hf_moe_expert_name(mc->prefix, ml->layer, ml->layout == HF_LAYOUT_PACKED ? -1 : 0, ml->suffix[s]);
                int rc = up_error("%s: --layout %s: expert tensor %s has no %s counterpart; expected experts of only "
                                  "gate, up and down weights (quantized experts keep their layout)", mc->ck.dir, to,
                                  name, to);
                free(name);
                return rc;
            }
        }
        HfProj p[3];
        for (int k = 0; k < 3; k++)
            if (hf_expert_proj(mc, m, 0, k, &p[k]) != 0) return -1;
        if (p[HF_PROJ_GATE].dtype != p[HF_PROJ_UP].dtype || p[HF_PROJ_GATE].out != p[HF_PROJ_UP].out)
            return up_error("%s: --layout packed: layer %d's gate and up weights differ in dtype or shape; expected "
                            "equal ones to concatenate into gate_up_proj", mc->ck.dir, ml->layer);
    }
    return 0;
}

/* ------------------------------------------------------------------ biases */

/* Grown balancing biases, in ascending layer order from one Rng (independent of sharding). */
static int grow_biases(GrowState *gs, const HfGrowOptions *opt) {
    const HfMoeCkpt *mc = gs->mc;
    Rng rng;
    rng_seed(&rng, opt->seed);
    gs->bias_out = xcalloc((size_t)mc->n_moe, sizeof *gs->bias_out);
    for (int m = 0; m < mc->n_moe; m++) {
        const HfMoeLayer *ml = &mc->moe[m];
        if (ml->bias.file < 0) continue;
        const StFile *st = hf_ckpt_file(&mc->ck, ml->bias);
        const StTensor *t = hf_ckpt_tensor(&mc->ck, ml->bias);
        const LayerPlan *lp = gs->plan[m];
        int E = mc->n_experts;
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

/* ------------------------------------------------------------------ writing a shard */

static int write_mapped(StWriter *w, const unsigned char *p, size_t n) {
    for (size_t off = 0; off < n;) {
        size_t len = n - off < COPY_CHUNK ? n - off : COPY_CHUNK;
        map_prefault(p + off, len);
        if (st_writer_write(w, p + off, len) != 0) return -1;
        map_release(p + off, len);
        off += len;
    }
    return 0;
}

static int write_shard(const GrowState *gs, int f, const char *tmp_dir) {
    const HfCkpt *ck = &gs->mc->ck;
    const StFile *st = &ck->st[f];
    const OutShard *sh = &gs->shards[f];
    StWriter *w = st_writer_new();
    for (int k = 0; k < st->n_meta; k++) st_writer_meta(w, st->meta_keys[k], st->meta_values[k]);
    for (size_t i = 0; i < sh->n_tensors; i++)
        st_writer_add(w, sh->tensors[i].name, sh->tensors[i].dtype, sh->tensors[i].ndim, sh->tensors[i].shape);
    char *path = path_join(tmp_dir, ck->files[f]);
    int rc = st_writer_open(w, path);
    for (size_t k = 0; k < sh->n_pieces && rc == 0; k++) {
        const Piece *p = &sh->pieces[k];
        if (p->kind == PIECE_BIAS) rc = st_writer_write(w, gs->bias_out[p->moe], p->len);
        else rc = write_mapped(w, (const unsigned char *)st_data(hf_ckpt_file(ck, p->ref), hf_ckpt_tensor(ck, p->ref)) + p->off, p->len);
    }
    free(path);
    if (rc != 0) {
        st_writer_abort(w);
        return -1;
    }
    return st_writer_commit(w);
}

/* ------------------------------------------------------------------ config, index, other files */

/* the input's config.json with only the expert count changed, every other byte kept (a
 * re-printed config would turn float literals such as clip_qkv 2.0 into 2) */
static int write_config(const HfMoeCkpt *mc, int n_new, const char *tmp_dir) {
    char *text = NULL, *grown = NULL;
    size_t n = 0;
    int rc = read_file(mc->ck.config_path, &text, &n);
    if (!rc && !(grown = json_text_set_top_int(text, n, mc->experts_key, n_new)))
        rc = up_error("%s: field %s is not a number at the top level; expected the expert count", mc->ck.config_path, mc->experts_key);
    char *path = rc ? NULL : path_join(tmp_dir, HF_CONFIG_NAME);
    if (!rc) rc = atomic_write_file(path, grown, strlen(grown));
    free(path), free(grown), free(text);
    return rc;
}

typedef struct {
    const char *name;
    int file;
} IndexEntry;

static int compare_entries(const void *a, const void *b) {
    return strcmp(((const IndexEntry *)a)->name, ((const IndexEntry *)b)->name);
}

static int write_index(const GrowState *gs, const char *tmp_dir) {
    const HfCkpt *ck = &gs->mc->ck;
    cJSON *index = cJSON_Duplicate(ck->index, 1);
    uint64_t total = 0;
    size_t n = 0;
    for (int f = 0; f < ck->n_files; f++) total += gs->shards[f].bytes, n += gs->shards[f].n_tensors;
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
    IndexEntry *entries = xmalloc((n ? n : 1) * sizeof *entries);
    size_t k = 0;
    for (int f = 0; f < ck->n_files; f++)
        for (size_t i = 0; i < gs->shards[f].n_tensors; i++) entries[k++] = (IndexEntry){gs->shards[f].tensors[i].name, f};
    qsort(entries, n, sizeof *entries, compare_entries);
    cJSON *wm = cJSON_CreateObject();
    for (k = 0; k < n; k++) cJSON_AddItemToObject(wm, entries[k].name, cJSON_CreateString(ck->files[entries[k].file]));
    free(entries);
    cJSON_ReplaceItemInObjectCaseSensitive(index, "weight_map", wm);
    int rc = hf_ckpt_write_json(tmp_dir, HF_INDEX_NAME, index);
    cJSON_Delete(index);
    return rc;
}

static int write_record(const GrowState *gs, const GrowPlan *plan, const HfGrowOptions *opt, const char *tmp_dir) {
    const HfMoeCkpt *mc = gs->mc;
    int utility = plan->n_layers > 0 && plan->layers[0].utility;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddStringToObject(j, "operator", "expert-upcycling");
    cJSON_AddStringToObject(j, "checkpoint", "huggingface");
    cJSON_AddStringToObject(j, "model_type", mc->fam->model_type);
    cJSON_AddNumberToObject(j, "experts_before", mc->n_experts);
    cJSON_AddNumberToObject(j, "experts_after", gs->n_new);
    cJSON_AddStringToObject(j, "alloc", utility ? "utility" : "uniform");
    if (utility && opt->utility) cJSON_AddStringToObject(j, "utility", opt->utility);
    cJSON_AddStringToObject(j, "layout", hf_layout_name(gs->layout));
    cJSON_AddNumberToObject(j, "bias_noise", opt->bias_noise);
    cJSON_AddNumberToObject(j, "seed", (double)opt->seed);
    cJSON_AddStringToObject(j, "expert_order", "originals keep indices 0..E-1; replicas appended in order of their source");
    cJSON_AddItemToObject(j, "layers", grow_plan_layers_json(plan));
    int rc = hf_ckpt_write_json(tmp_dir, GROW_JSON_NAME, j);
    cJSON_Delete(j);
    return rc;
}

/* grow.json is ours: an input's describes an earlier growth, so it is skipped when a new one is written */
static int is_skipped_file(const char *name, int new_record) {
    static const char *skip_ext[] = {".safetensors", ".safetensors.index.json", ".bin", ".pt", ".pth",
                                     ".ckpt",        ".gguf",                   ".h5",  ".msgpack"};
    if (strcmp(name, HF_CONFIG_NAME) == 0 || (new_record && strcmp(name, GROW_JSON_NAME) == 0)) return 1;
    for (size_t i = 0; i < sizeof skip_ext / sizeof *skip_ext; i++)
        if (str_ends_with(name, skip_ext[i])) return 1;
    return 0;
}

static int copy_other_files(const HfCkpt *ck, const char *tmp_dir, int new_record) {
    DIR *d = opendir(ck->dir);
    if (!d) return up_error("%s: cannot list (%s); expected a readable directory", ck->dir, strerror(errno));
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        if (de->d_name[0] == '.' || is_skipped_file(de->d_name, new_record)) continue;
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

/* ------------------------------------------------------------------ the output directory */

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
    uint64_t need = 0;
    for (int f = 0; f < gs->mc->ck.n_files; f++) need += gs->shards[f].bytes;
    struct statvfs vfs;
    if (statvfs(parent, &vfs) != 0) return 0; /* the mkdir that follows reports a bad parent */
    uint64_t avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    if (avail < need)
        return up_error("%s: the grown checkpoint needs %.2f GB but its filesystem has %.2f GB free; expected enough "
                        "disk space", out, need / 1e9, avail / 1e9);
    return 0;
}

static void free_state(GrowState *gs) {
    const HfMoeCkpt *mc = gs->mc;
    if (gs->shards)
        for (int f = 0; f < mc->ck.n_files; f++) {
            OutShard *sh = &gs->shards[f];
            for (size_t i = 0; i < sh->n_tensors; i++)
                if (sh->tensors[i].owned) free((char *)sh->tensors[i].name);
            free(sh->tensors);
            free(sh->pieces);
        }
    free(gs->shards);
    if (gs->bias_out)
        for (int m = 0; m < mc->n_moe; m++) free(gs->bias_out[m]);
    free(gs->bias_out);
    free(gs->plan);
}

int hf_grow(const char *in_dir, const char *out_dir, const GrowPlan *plan, const HfGrowOptions *opt) {
    HfGrowOptions defaults = {0};
    if (!opt) opt = &defaults;
    HfMoeCkpt mc;
    if (hf_moe_open(in_dir, &mc) != 0) return -1;
    const HfCkpt *ck = &mc.ck;
    GrowState gs;
    memset(&gs, 0, sizeof gs);
    gs.mc = &mc;
    gs.layout = opt->layout == HF_GROW_LAYOUT_PACKED       ? HF_LAYOUT_PACKED
                : opt->layout == HF_GROW_LAYOUT_PER_EXPERT ? HF_LAYOUT_PER_EXPERT
                                                           : mc.layout;
    gs.prefix = gs.layout == mc.layout ? mc.prefix : gs.layout == HF_LAYOUT_PACKED ? mc.fam->packed_prefix : mc.fam->prefix;
    char *out = xstrdup(out_dir);
    for (size_t n = strlen(out); n > 1 && out[n - 1] == '/'; n--) out[n - 1] = 0;
    char *parent = path_dirname(out);
    DirReplace d = {0}; /* the grown checkpoint is written under d.tmp, then swapped into place */
    int rc = hf_plan_check(&mc, plan, &gs.plan, &gs.n_new);
    if (rc == 0) rc = check_layout(&gs);
    if (rc == 0) rc = check_paths(in_dir, out, opt->force);
    if (rc == 0) rc = grow_biases(&gs, opt);
    if (rc == 0) {
        gs.shards = xcalloc((size_t)ck->n_files, sizeof *gs.shards);
        for (int f = 0; f < ck->n_files; f++) layout_shard(&gs, f);
    }
    if (rc == 0 && !is_dir(parent) && mkdir_p(parent) != 0) rc = -1;
    if (rc == 0) rc = check_space(&gs, parent, out);
    if (rc == 0) rc = dir_replace_begin(&d, out);
    const char *tmp = d.tmp;
    if (rc == 0) {
        for (int f = 0; f < ck->n_files; f++) madvise(ck->st[f].map, ck->st[f].file_bytes, MADV_SEQUENTIAL);
        for (int f = 0; f < ck->n_files && rc == 0; f++) rc = write_shard(&gs, f, tmp);
    }
    if (rc == 0) rc = write_config(&mc, gs.n_new, tmp);
    if (rc == 0 && ck->sharded) rc = write_index(&gs, tmp);
    if (rc == 0 && opt->record) rc = write_record(&gs, plan, opt, tmp);
    if (rc == 0) rc = copy_other_files(ck, tmp, opt->record);
    if (rc == 0 && !opt->force && path_exists(out))
        rc = up_error("%s: already exists (created while growing); expected a new output directory (or --force)", out);
    if (d.tmp) {
        if (rc) dir_replace_abort(&d);
        else rc = dir_replace_commit(&d);
    }
    free_state(&gs);
    free(parent);
    free(out);
    hf_moe_close(&mc);
    return rc;
}
