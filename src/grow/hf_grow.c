/* hf_grow.c - the streaming writer of Expert Upcycling on Hugging Face checkpoints (see hf.h).
 *
 * hf_grow opens the input (hf_moe_open), checks the plan (hf_plan_check), grows the balancing
 * biases in memory, then streams each input shard into the matching output shard: other
 * tensors and original experts are copied chunk by chunk from the mmap (pages dropped behind
 * the copy so the resident set stays small), routers and biases are extended, and replicas are
 * appended after their layer's router. config.json, the index and the other files follow, in a
 * temporary directory that util/dir_replace swaps into place. */
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
#include "util/dir_replace.h"

#define COPY_CHUNK ((size_t)8 << 20) /* bytes per write from the mmap */

typedef struct {
    const HfMoeCkpt *mc;
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

/* ------------------------------------------------------------------ streaming copies */

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

/* ------------------------------------------------------------------ output shards */

enum { ITEM_COPY, ITEM_ROUTER, ITEM_BIAS, ITEM_REPLICA };
typedef struct {
    int kind, a, b, c;
} Item;

static int write_item(StWriter *w, const GrowState *gs, int f, const Item *it) {
    const HfMoeCkpt *mc = gs->mc;
    const HfCkpt *ck = &mc->ck;
    const StFile *st = &ck->st[f];
    switch (it->kind) {
    case ITEM_COPY: {
        const StTensor *t = &st->tensors[it->a];
        return write_mapped(w, st_data(st, t), (size_t)(t->end - t->begin));
    }
    case ITEM_ROUTER: {
        const HfMoeLayer *ml = &mc->moe[it->a];
        const LayerPlan *lp = gs->plan[it->a];
        const StTensor *t = hf_ckpt_tensor(ck, ml->router);
        const unsigned char *src = st_data(hf_ckpt_file(ck, ml->router), t);
        size_t row = (size_t)(t->end - t->begin) / (size_t)mc->n_experts;
        for (int j = 0; j < lp->n_new; j++)
            if (st_writer_write(w, src + (size_t)lp->source[j] * row, row) != 0) return -1;
        return 0;
    }
    case ITEM_BIAS: {
        const StTensor *t = hf_ckpt_tensor(ck, mc->moe[it->a].bias);
        return st_writer_write(w, gs->bias_out[it->a], (size_t)gs->n_new * st_dtype_size(t->dtype));
    }
    default: { /* replica b of layer a, suffix c */
        const HfMoeLayer *ml = &mc->moe[it->a];
        HfTensorRef r = ml->experts[gs->plan[it->a]->source[it->b] * ml->n_suffix + it->c];
        const StTensor *t = hf_ckpt_tensor(ck, r);
        return write_mapped(w, st_data(hf_ckpt_file(ck, r), t), (size_t)(t->end - t->begin));
    }
    }
}

static int write_shard(GrowState *gs, int f, const char *tmp_dir) {
    const HfMoeCkpt *mc = gs->mc;
    const HfCkpt *ck = &mc->ck;
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
        int role = mc->role[f][i], m = HF_ROLE_MOE(role);
        int64_t shape[ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        size_t tbytes = (size_t)(t->end - t->begin);
        if (HF_ROLE_KIND(role) == HF_TENSOR_ROUTER) {
            shape[0] = gs->n_new;
            st_writer_add(w, t->name, t->dtype, t->ndim, shape);
            PUSH(ITEM_ROUTER, m, 0, 0);
            bytes += tbytes / (size_t)mc->n_experts * (size_t)gs->n_new;
            record_output(gs, t->name, f, 0);
            /* the layer's replicas follow its router */
            const HfMoeLayer *ml = &mc->moe[m];
            const LayerPlan *lp = gs->plan[m];
            for (int j = mc->n_experts; j < lp->n_new; j++) {
                for (int s = 0; s < ml->n_suffix; s++) {
                    const StTensor *src = hf_ckpt_tensor(ck, ml->experts[lp->source[j] * ml->n_suffix + s]);
                    char *name = hf_expert_name(mc->fam, ml->layer, j, ml->suffix[s]);
                    st_writer_add(w, name, src->dtype, src->ndim, src->shape);
                    PUSH(ITEM_REPLICA, m, j, s);
                    bytes += src->end - src->begin;
                    record_output(gs, name, f, 1);
                }
            }
        } else if (HF_ROLE_KIND(role) == HF_TENSOR_BIAS) {
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

/* ------------------------------------------------------------------ config, index, other files */

static int write_config(const HfMoeCkpt *mc, int n_new, const char *tmp_dir) {
    cJSON *config = cJSON_Duplicate(mc->ck.config, 1);
    cJSON_ReplaceItemInObjectCaseSensitive(config, mc->fam->experts_key, cJSON_CreateNumber(n_new));
    int rc = hf_ckpt_write_json(tmp_dir, HF_CONFIG_NAME, config);
    cJSON_Delete(config);
    return rc;
}

static const GrowState *g_sort_state;
static int compare_out(const void *a, const void *b) {
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    return strcmp(g_sort_state->out_names[i], g_sort_state->out_names[j]);
}

static int write_index(const GrowState *gs, const char *tmp_dir) {
    const HfCkpt *ck = &gs->mc->ck;
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
    int rc = hf_ckpt_write_json(tmp_dir, HF_INDEX_NAME, index);
    cJSON_Delete(index);
    return rc;
}

static int is_skipped_file(const char *name) {
    static const char *skip_ext[] = {".safetensors", ".safetensors.index.json", ".bin", ".pt", ".pth",
                                     ".ckpt",        ".gguf",                   ".h5",  ".msgpack"};
    if (strcmp(name, HF_CONFIG_NAME) == 0) return 1;
    for (size_t i = 0; i < sizeof skip_ext / sizeof *skip_ext; i++)
        if (str_ends_with(name, skip_ext[i])) return 1;
    return 0;
}

static int copy_other_files(const HfCkpt *ck, const char *tmp_dir) {
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
    const HfMoeCkpt *mc = gs->mc;
    uint64_t need = hf_ckpt_tensor_bytes(&mc->ck);
    for (int m = 0; m < mc->n_moe; m++) {
        const HfMoeLayer *ml = &mc->moe[m];
        for (int j = mc->n_experts; j < gs->n_new; j++)
            for (int s = 0; s < ml->n_suffix; s++) {
                const StTensor *t = hf_ckpt_tensor(&mc->ck, ml->experts[gs->plan[m]->source[j] * ml->n_suffix + s]);
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

int hf_grow(const char *in_dir, const char *out_dir, const GrowPlan *plan, const HfGrowOptions *opt) {
    HfGrowOptions defaults = {0};
    if (!opt) opt = &defaults;
    HfMoeCkpt mc;
    if (hf_moe_open(in_dir, &mc) != 0) return -1;
    const HfCkpt *ck = &mc.ck;
    GrowState gs;
    memset(&gs, 0, sizeof gs);
    gs.mc = &mc;
    char *out = xstrdup(out_dir);
    for (size_t n = strlen(out); n > 1 && out[n - 1] == '/'; n--) out[n - 1] = 0;
    char *parent = path_dirname(out);
    DirReplace d = {0}; /* the grown checkpoint is written under d.tmp, then swapped into place */
    int rc = hf_plan_check(&mc, plan, &gs.plan, &gs.n_new);
    if (rc == 0) rc = check_paths(in_dir, out, opt->force);
    if (rc == 0) rc = grow_biases(&gs, opt);
    if (rc == 0 && !is_dir(parent) && mkdir_p(parent) != 0) rc = -1;
    if (rc == 0) rc = check_space(&gs, parent, out);
    if (rc == 0) rc = dir_replace_begin(&d, out);
    const char *tmp = d.tmp;
    if (rc == 0) {
        for (int f = 0; f < ck->n_files; f++) madvise(ck->st[f].map, ck->st[f].file_bytes, MADV_SEQUENTIAL);
        gs.file_bytes = xcalloc((size_t)ck->n_files, sizeof *gs.file_bytes);
        for (int f = 0; f < ck->n_files && rc == 0; f++) rc = write_shard(&gs, f, tmp);
    }
    if (rc == 0) rc = write_config(&mc, gs.n_new, tmp);
    if (rc == 0 && ck->sharded) rc = write_index(&gs, tmp);
    if (rc == 0) rc = copy_other_files(ck, tmp);
    if (rc == 0 && !opt->force && path_exists(out))
        rc = up_error("%s: already exists (created while growing); expected a new output directory (or --force)", out);
    if (d.tmp) {
        if (rc) dir_replace_abort(&d);
        else rc = dir_replace_commit(&d);
    }
    for (size_t i = 0; i < gs.n_owned; i++) free(gs.owned[i]);
    free(gs.owned);
    free(gs.out_names);
    free(gs.out_files);
    free(gs.file_bytes);
    if (gs.bias_out)
        for (int m = 0; m < mc.n_moe; m++) free(gs.bias_out[m]);
    free(gs.bias_out);
    free(gs.plan);
    free(parent);
    free(out);
    hf_moe_close(&mc);
    return rc;
}
