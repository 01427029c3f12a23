#include "checkpoint.h"

#include <errno.h>
#include <math.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/hf_ckpt.h"
#include "io/hf_names.h"
#include "io/safetensors.h"
#include "util.h"
#include "util/json.h"
#include "util/dir_replace.h"

/* One safetensors file of the source's tensors, one pass per kind: passes[k] tensors are named
 * prefixes[k] + the entry's name. Optimizer moments exist for trainable entries only. */
static int write_tensors(const char *path, TensorSource *src, const CkptTensorKind *passes, const char *const *prefixes,
                         int n_passes, const char *meta_step) {
    StWriter *w = st_writer_new();
    char name[PARAM_NAME_MAX + 32];
    for (int k = 0; k < n_passes; k++)
        for (int i = 0; i < src->n_tensors; i++) {
            const ParamInfo *p = &src->table[i];
            if (passes[k] != CKPT_WEIGHTS && !p->trainable) continue;
            snprintf(name, sizeof name, "%s%s", prefixes[k], p->name);
            st_writer_add(w, name, ST_F32, p->ndim, p->shape);
        }
    st_writer_meta(w, "format", "pt");
    if (meta_step) st_writer_meta(w, "step", meta_step);
    int rc = st_writer_open(w, path);
    for (int k = 0; k < n_passes && !rc; k++)
        for (int i = 0; i < src->n_tensors && !rc; i++) {
            const ParamInfo *p = &src->table[i];
            if (passes[k] != CKPT_WEIGHTS && !p->trainable) continue;
            const float *data = src->data(src, passes[k], i);
            rc = data ? st_writer_write(w, data, p->numel * sizeof(float)) : -1;
        }
    if (rc) { /* e.g. disk full: close and remove the temp file, free the writer; the error stays */
        st_writer_abort(w);
        return -1;
    }
    return st_writer_commit(w);
}

/* ---- model.safetensors (or shards + index) in the family's names, layout and dtype ---- */

static uint64_t g_shard_bytes = 5000000000ULL; /* as Hugging Face's save_pretrained: 5 GB */

void checkpoint_set_shard_bytes(uint64_t bytes) { g_shard_bytes = bytes ? bytes : 5000000000ULL; }

/* one output tensor: a table entry, or a layer's packed experts (parts: table entries, in order) */
typedef struct {
    char name[HF_NAME_MAX];
    int ndim;
    int64_t shape[3];
    int n_parts;
    int *parts;
    uint64_t bytes;
    int shard;
    StDtype dtype;
} OutTensor;

static int is_balance_bias(const ParamInfo *p) { return !p->trainable && strstr(p->name, "e_score_correction_bias") != NULL; }

/* The tensors of model.safetensors, in table order. No family the engine writes has a balancing
 * bias (transformers would report it unexpected and route without it): the biases go to
 * training/balance_bias.safetensors. */
static int plan_model_tensors(const ModelConfig *cfg, const TensorSource *src, int packed, StDtype dtype, OutTensor **out) {
    OutTensor *t = xcalloc((size_t)src->n_tensors, sizeof *t);
    int n = 0;
    for (int i = 0; i < src->n_tensors; i++) {
        const ParamInfo *p = &src->table[i];
        if (is_balance_bias(p)) continue;
        HfPackedSpan span;
        if (packed && p->expert >= 0 && hf_names_packed(cfg, p->name, &span)) {
            int gate_up = strstr(span.name, "gate_up_proj") != NULL;
            if (p->expert != 0 || strstr(p->name, "up_proj.weight")) continue; /* added with expert 0's gate/down */
            OutTensor *o = &t[n++];
            snprintf(o->name, sizeof o->name, "%s", span.name);
            o->ndim = 3, o->shape[0] = cfg->n_experts;
            o->shape[1] = gate_up ? 2 * p->shape[0] : p->shape[0], o->shape[2] = p->shape[1];
            o->parts = xmalloc(sizeof(int) * 2 * (size_t)cfg->n_experts);
            /* expert e's rows: gate then up (gate_up_proj), or down; the table holds a layer's
             * gates, then its ups, then its downs, each by expert */
            for (int e = 0; e < cfg->n_experts; e++) {
                o->parts[o->n_parts++] = i + e;
                if (gate_up) o->parts[o->n_parts++] = i + cfg->n_experts + e;
            }
        } else {
            OutTensor *o = &t[n++];
            hf_names_family(cfg->family, packed, p->name, o->name, sizeof o->name);
            o->ndim = p->ndim;
            for (int d = 0; d < p->ndim; d++) o->shape[d] = p->shape[d];
            o->parts = xmalloc(sizeof(int));
            o->parts[o->n_parts++] = i;
        }
    }
    for (int k = 0; k < n; k++) {
        uint64_t numel = 1;
        for (int d = 0; d < t[k].ndim; d++) numel *= (uint64_t)t[k].shape[d];
        t[k].dtype = dtype;
        t[k].bytes = numel * st_dtype_size(t[k].dtype);
    }
    *out = t;
    return n;
}

static StDtype st_dtype_of(int weight_dtype) {
    return weight_dtype == WEIGHT_BF16 ? ST_BF16 : weight_dtype == WEIGHT_F16 ? ST_F16 : ST_F32;
}

/* n floats into dtype, into buf (n * size bytes) */
static void convert_out(const float *src, size_t n, StDtype dtype, unsigned char *buf) {
    if (dtype == ST_F32) {
        memcpy(buf, src, n * sizeof(float));
        return;
    }
    uint16_t *h = (uint16_t *)buf;
    for (size_t k = 0; k < n; k++) h[k] = dtype == ST_BF16 ? f32_to_bf16(src[k]) : f32_to_f16(src[k]);
}

/* table entry i, if it is a balancing bias: appended to side (F32, as DeepSeek-V3 keeps its bias:
 * steps of u = 1e-3 vanish in bf16) */
static int take_side(TensorSource *src, int i, float *side, size_t *at) {
    const ParamInfo *p = &src->table[i];
    if (!is_balance_bias(p)) return 0;
    const float *data = src->data(src, CKPT_WEIGHTS, i);
    if (!data) return -1;
    memcpy(side + *at, data, p->numel * sizeof(float));
    *at += p->numel;
    return 0;
}

/* DIR/training, created when it is not there yet; malloc'd path or NULL (up_error) */
static char *training_dir(const char *dir) {
    char *training = path_join(dir, CKPT_TRAINING_DIR);
    if (mkdir(training, 0755) && errno != EEXIST) {
        up_error("%s: cannot create the directory: %s", training, strerror(errno));
        free(training);
        return NULL;
    }
    return training;
}

/* keep_zero_bias: write the balancing biases also when all are zero (a checkpoint with training
 * state); without it, zero biases (a Hugging Face model converted) leave no file: zero is what
 * a reader assumes */
static int write_model(const char *dir, const ModelConfig *cfg, TensorSource *src, int keep_zero_bias) {
    StDtype dtype = st_dtype_of(cfg->weight_dtype);
    size_t elt = st_dtype_size(dtype);
    /* packed experts need every expert of a layer at once: a source that yields tensors in
     * table order only (expert parallel) writes them per expert */
    int packed = cfg->packed_experts && src->random_access;
    OutTensor *t;
    int n = plan_model_tensors(cfg, src, packed, dtype, &t);
    /* shards of at most g_shard_bytes each (a larger tensor alone in its shard), in order */
    int n_shards = 1;
    uint64_t in_shard = 0, total = 0;
    for (int k = 0; k < n; k++) {
        if (in_shard > 0 && in_shard + t[k].bytes > g_shard_bytes) n_shards++, in_shard = 0;
        t[k].shard = n_shards - 1;
        in_shard += t[k].bytes, total += t[k].bytes;
    }
    unsigned char *buf = dtype == ST_F32 ? NULL : xmalloc(model_max_numel(src->table, src->n_tensors) * elt);
    int rc = 0, k = 0;
    cJSON *index = n_shards > 1 ? cJSON_CreateObject() : NULL, *weight_map = NULL;
    if (index) {
        cJSON *meta = cJSON_AddObjectToObject(index, "metadata");
        cJSON_AddNumberToObject(meta, "total_size", (double)total);
        weight_map = cJSON_AddObjectToObject(index, "weight_map");
    }
    /* the balancing biases go to training/ (F32); they are taken from the source in table
     * order with the rest, as a source may stream */
    int n_side = 0;
    size_t side_floats = 0;
    for (int i = 0; i < src->n_tensors; i++)
        if (is_balance_bias(&src->table[i])) n_side++, side_floats += src->table[i].numel;
    float *side = n_side ? xmalloc(side_floats * sizeof(float)) : NULL;
    int next_side = 0; /* table entries before it are taken */
    size_t side_at = 0;
    for (int s = 0; s < n_shards && !rc; s++) {
        char file[64];
        if (n_shards == 1) snprintf(file, sizeof file, "%s", HF_SINGLE_NAME);
        else snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        StWriter *w = st_writer_new();
        int first = k;
        for (; k < n && t[k].shard == s; k++) {
            st_writer_add(w, t[k].name, t[k].dtype, t[k].ndim, t[k].shape);
            if (weight_map) cJSON_AddStringToObject(weight_map, t[k].name, file);
        }
        st_writer_meta(w, "format", "pt");
        char *path = path_join(dir, file);
        rc = st_writer_open(w, path);
        free(path);
        for (int q = first; q < k && !rc; q++)
            for (int part = 0; part < t[q].n_parts && !rc; part++) {
                const ParamInfo *p = &src->table[t[q].parts[part]];
                for (; side && next_side < t[q].parts[part] && !rc; next_side++)
                    rc = take_side(src, next_side, side, &side_at);
                next_side = next_side > t[q].parts[part] ? next_side : t[q].parts[part] + 1;
                const float *data = rc ? NULL : src->data(src, CKPT_WEIGHTS, t[q].parts[part]);
                if (!data) rc = -1;
                else if (t[q].dtype == ST_F32) rc = st_writer_write(w, data, p->numel * sizeof(float));
                else convert_out(data, p->numel, t[q].dtype, buf), rc = st_writer_write(w, buf, p->numel * elt);
            }
        if (rc) st_writer_abort(w);
        else rc = st_writer_commit(w);
    }
    if (!rc && index) rc = hf_ckpt_write_json(dir, HF_INDEX_NAME, index);
    cJSON_Delete(index);
    for (; side && next_side < src->n_tensors && !rc; next_side++) rc = take_side(src, next_side, side, &side_at);
    int any_bias = 0;
    for (size_t i = 0; i < side_at; i++) any_bias |= side[i] != 0;
    if (!rc && side && (any_bias || keep_zero_bias)) {
        StWriter *w = st_writer_new();
        for (int i = 0; i < src->n_tensors; i++)
            if (is_balance_bias(&src->table[i])) st_writer_add(w, src->table[i].name, ST_F32, src->table[i].ndim, src->table[i].shape);
        st_writer_meta(w, "format", "pt");
        char *training = training_dir(dir), *path = training ? path_join(training, BALANCE_BIAS_NAME) : NULL;
        free(training);
        rc = path ? st_writer_open(w, path) : -1;
        free(path);
        if (!rc) rc = st_writer_write(w, side, side_floats * sizeof(float));
        if (rc) st_writer_abort(w);
        else rc = st_writer_commit(w);
    }
    free(side);
    for (int q = 0; q < n; q++) free(t[q].parts);
    free(t);
    free(buf);
    return rc;
}

static int write_optimizer(const char *path, TensorSource *src, int step) {
    static const CkptTensorKind passes[] = {CKPT_EXP_AVG, CKPT_EXP_AVG_SQ};
    static const char *const prefixes[] = {"exp_avg.", "exp_avg_sq."};
    char step_text[32];
    snprintf(step_text, sizeof step_text, "%d", step);
    return write_tensors(path, src, passes, prefixes, 2, step_text);
}

static int write_trainer_state(const char *path, const TrainerState *s) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddNumberToObject(j, "step", s->step);
    cJSON_AddNumberToObject(j, "stage_start_step", s->stage_start_step);
    cJSON_AddNumberToObject(j, "tokens_seen", (double)s->tokens_seen);
    if (s->skipped_steps) cJSON_AddNumberToObject(j, "skipped_steps", s->skipped_steps);
    if (s->loss_mean_steps) {
        char mean[40];
        snprintf(mean, sizeof mean, "%a", s->loss_mean); /* exact: resuming takes the same skip decisions */
        cJSON *lm = cJSON_AddObjectToObject(j, "loss_mean");
        cJSON_AddStringToObject(lm, "value", mean);
        cJSON_AddNumberToObject(lm, "steps", s->loss_mean_steps);
    }
    cJSON *data = cJSON_AddObjectToObject(j, "data");
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)s->data_epoch);
    cJSON_AddStringToObject(data, "epoch", buf);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)s->data_cursor);
    cJSON_AddStringToObject(data, "cursor", buf);
    cJSON_AddStringToObject(data, "dir", s->data_dir);
    cJSON *rng = cJSON_AddArrayToObject(j, "rng_state");
    for (int i = 0; i < 4; i++) {
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)s->rng_state[i]);
        cJSON_AddItemToArray(rng, cJSON_CreateString(buf));
    }
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    int rc = atomic_write_file(path, text, strlen(text));
    free(text);
    return rc;
}

char *checkpoint_training_path(const char *dir, const char *name) {
    char *training = path_join(dir, CKPT_TRAINING_DIR), *path = path_join(training, name);
    free(training);
    if (path_exists(path)) return path;
    char *old = path_join(dir, name);
    if (path_exists(old)) {
        free(path);
        return old;
    }
    free(old);
    return path;
}

int checkpoint_write(const char *dir, const ModelConfig *cfg, TensorSource *src, int with_optimizer, int optimizer_step,
                     const TrainerState *state, const char *extra_name, const char *extra_text) {
    if (config_family_check(cfg, dir)) return -1; /* before anything is written */
    DirReplace d;
    if (dir_replace_begin(&d, dir)) return -1;
    char *path = path_join(d.tmp, "config.json");
    int rc = model_config_save_json(cfg, path);
    free(path);
    int training_state = with_optimizer || state; /* training/ holds more than the biases */
    if (!rc) rc = write_model(d.tmp, cfg, src, training_state);
    char *training = !rc && training_state ? training_dir(d.tmp) : NULL;
    if (!rc && training_state && !training) rc = -1;
    if (!rc && with_optimizer) {
        path = path_join(training, "optimizer.safetensors");
        rc = write_optimizer(path, src, optimizer_step);
        free(path);
    }
    if (!rc && state) {
        path = path_join(training, "trainer.json");
        rc = write_trainer_state(path, state);
        free(path);
        if (!rc) {
            path = path_join(training, "train_config.json");
            rc = train_config_save_json(&state->train, path);
            free(path);
        }
    }
    free(training);
    if (!rc && extra_name) {
        path = path_join(d.tmp, extra_name);
        rc = atomic_write_file(path, extra_text, strlen(extra_text));
        free(path);
    }
    /* the old checkpoint disappears only after the new one is complete */
    if (rc) {
        dir_replace_abort(&d);
        return -1;
    }
    return dir_replace_commit(&d);
}

/* A model's own tensors: one host copy of the weights or of a moment at a time */
typedef struct {
    TensorSource src;
    const Model *m;
    CkptTensorKind kind; /* which buffer host holds */
    float *host;
} ModelSource;

static const float *model_source_data(TensorSource *src, CkptTensorKind kind, int i) {
    ModelSource *s = (ModelSource *)src;
    const Model *m = s->m;
    if (!s->host || s->kind != kind) {
        const float *mem = kind == CKPT_WEIGHTS ? m->param_mem : kind == CKPT_EXP_AVG ? m->adam_m : m->adam_v;
        if (!s->host) s->host = xmalloc(m->n_floats * sizeof(float));
        m->be->download(s->host, mem, m->n_floats * sizeof(float));
        s->kind = kind;
    }
    return s->host + m->params[i].offset;
}

TensorSource *checkpoint_model_source(const Model *m) {
    ModelSource *s = xcalloc(1, sizeof *s);
    s->src = (TensorSource){.table = m->params, .n_tensors = m->n_params, .data = model_source_data, .random_access = 1};
    s->m = m;
    return &s->src;
}

void checkpoint_model_source_free(TensorSource *src) {
    if (!src) return;
    ModelSource *s = (ModelSource *)src;
    free(s->host);
    free(s);
}

int checkpoint_save(const char *dir, const Model *m, const TrainerState *state, int with_optimizer) {
    return checkpoint_save_with(dir, m, state, with_optimizer, NULL, NULL);
}

int checkpoint_save_with(const char *dir, const Model *m, const TrainerState *state, int with_optimizer,
                         const char *extra_name, const char *extra_text) {
    if (m->ep_size > 1)
        return up_error("%s: this model holds %d of its experts; expected the whole model (expert parallel ranks save through "
                        "dist_checkpoint_save)", dir, m->n_local_experts);
    TensorSource *src = checkpoint_model_source(m);
    int rc = checkpoint_write(dir, &m->cfg, src, with_optimizer, m->step, state, extra_name, extra_text);
    checkpoint_model_source_free(src);
    return rc;
}

int checkpoint_load_config(const char *dir, ModelConfig *cfg) {
    if (!is_dir(dir)) return up_error("%s: not a checkpoint directory; expected a directory with config.json and model.safetensors", dir);
    char *path = path_join(dir, "config.json");
    int rc = model_config_load_json(cfg, path);
    free(path);
    return rc;
}

/* Where parameter p lives in the checkpoint: the family's tensor of its shape, or its span of
 * a packed expert tensor. 0 and *t NULL when the checkpoint has neither; -1 on a bad shape. */
static int find_param(const HfCkpt *ck, const ModelConfig *c, const ParamInfo *p, const StFile **f, const StTensor **t,
                      uint64_t *first) {
    char name[HF_NAME_MAX];
    hf_names_family(c->family, 0, p->name, name, sizeof name);
    *first = 0;
    *t = hf_ckpt_find(ck, name, f);
    if (!*t) *t = hf_ckpt_find(ck, p->name, f); /* e.g. a packed Mixtral's router: mlp.gate.weight */
    if (*t) {
        int same = (*t)->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = (*t)->shape[d] == p->shape[d];
        if (same) return 0;
        char have[128], want[128];
        st_format_shape(have, sizeof have, (*t)->ndim, (*t)->shape);
        st_format_shape(want, sizeof want, p->ndim, p->shape);
        return up_error("%s: tensor %s has shape %s; expected %s", (*f)->path, name, have, want);
    }
    HfPackedSpan span;
    if (!hf_names_packed(c, p->name, &span) || !(*t = hf_ckpt_find(ck, span.name, f))) return 0;
    /* [E, 2I, C] or [E, C, I]: E experts of 2 (gate, up) or 1 (down) projections */
    uint64_t per_expert = strstr(span.name, "gate_up_proj") ? 2 * (uint64_t)p->numel : (uint64_t)p->numel;
    if ((*t)->ndim != 3 || (*t)->shape[0] != c->n_experts || (uint64_t)st_numel(*t) != per_expert * (uint64_t)c->n_experts) {
        char have[128];
        st_format_shape(have, sizeof have, (*t)->ndim, (*t)->shape);
        return up_error("%s: packed tensor %s has shape %s; expected [%d, ...] holding %d experts' %s", (*f)->path, span.name, have,
                        c->n_experts, c->n_experts, strstr(span.name, "gate_up_proj") ? "gate and up rows" : "down rows");
    }
    *first = span.first;
    return 0;
}

/* marks tensor t of the checkpoint as read (used: one flag per tensor of each file) */
static void mark_used(const HfCkpt *ck, const StFile *f, const StTensor *t, unsigned char **used) {
    int file = (int)(f - ck->st);
    used[file][t - f->tensors] = 1;
}

int checkpoint_load_weights(const char *dir, Model *m) {
    HfCkpt ck;
    if (hf_ckpt_open(dir, &ck)) return -1;
    unsigned char **used = xcalloc((size_t)ck.n_files, sizeof *used);
    for (int f = 0; f < ck.n_files; f++) used[f] = xcalloc((size_t)ck.st[f].n_tensors + 1, 1);
    /* the host buffers are the parameters themselves on a host backend; else one tensor's */
    float *staging = m->be->runs_on_host ? NULL : xmalloc(model_max_numel(m->params, m->n_params) * sizeof(float));
    /* the balancing biases, kept in training/ (or, earlier, beside the weights) */
    StFile side;
    char *side_path = checkpoint_training_path(dir, BALANCE_BIAS_NAME);
    int rc = 0, have_side = path_exists(side_path) && !(rc = st_open(&side, side_path));
    for (int i = 0; i < m->n_params && !rc; i++) {
        const ParamInfo *p = &m->params[i];
        const StFile *f;
        const StTensor *t;
        uint64_t first;
        if ((rc = find_param(&ck, &m->cfg, p, &f, &t, &first))) break;
        float *dst = staging ? staging : m->param_mem + p->offset;
        if (!t && !p->trainable && have_side && st_find(&side, p->name)) {
            rc = st_read_f32(&side, p->name, dst, p->ndim, p->shape);
        } else if (!t && !p->trainable) { /* no balancing bias saved (a Hugging Face checkpoint): zero */
            memset(dst, 0, p->numel * sizeof(float));
        } else if (!t) {
            char name[HF_NAME_MAX];
            hf_names_family(m->cfg.family, 0, p->name, name, sizeof name);
            rc = up_error("%s: tensor %s not found in %s; expected it for the model in config.json", dir, name,
                          ck.sharded ? "any of the shards" : "model.safetensors");
            break;
        } else {
            rc = st_read_f32_span(f, t, first, p->numel, dst);
            mark_used(&ck, f, t, used);
            if (p->expert >= 0 && (uint64_t)st_numel(t) != p->numel) m->cfg.packed_experts = 1; /* saved the same way */
        }
        if (!rc && staging) m->be->upload(m->param_mem + p->offset, staging, p->numel * sizeof(float));
    }
    /* expert parallel: the checkpoint holds every rank's experts; each rank reads its own */
    ParamInfo *full = NULL;
    int n_full = m->ep_size > 1 ? model_full_table(&m->cfg, &full) : 0;
    for (int i = 0; i < n_full && !rc; i++) {
        const StFile *f;
        const StTensor *t;
        uint64_t first;
        rc = find_param(&ck, &m->cfg, &full[i], &f, &t, &first);
        if (!rc && t) mark_used(&ck, f, t, used);
    }
    for (HfTensorRef r = HF_TENSOR_BEGIN; !rc && hf_ckpt_next(&ck, &r);) {
        const StTensor *t = hf_ckpt_tensor(&ck, r);
        if (!used[r.file][r.index] && !hf_names_is_derived(t->name))
            rc = up_error("%s: unexpected tensor %s; expected only the tensors of the model in config.json", ck.st[r.file].path, t->name);
    }
    free(full);
    free(staging);
    if (have_side) st_close(&side);
    free(side_path);
    for (int f = 0; f < ck.n_files; f++) free(used[f]);
    free(used);
    hf_ckpt_close(&ck);
    return rc ? -1 : 0;
}

int checkpoint_load_model(const char *dir, Model *m, int with_optimizer, int *has_optimizer) {
    return checkpoint_load_model_on(dir, backend_cpu(), m, with_optimizer, has_optimizer);
}

int checkpoint_load_model_on(const char *dir, const Backend *be, Model *m, int with_optimizer, int *has_optimizer) {
    ModelConfig c;
    if (checkpoint_load_config(dir, &c) || model_create(m, &c, be)) return -1;
    int has = with_optimizer && checkpoint_has_optimizer(dir);
    if (checkpoint_load_weights(dir, m) || (has && checkpoint_load_optimizer(dir, m))) {
        model_free(m);
        return -1;
    }
    if (has_optimizer) *has_optimizer = has;
    return 0;
}

static int has_training_file(const char *dir, const char *name) {
    char *path = checkpoint_training_path(dir, name);
    int exists = path_exists(path);
    free(path);
    return exists;
}

int checkpoint_has_optimizer(const char *dir) { return has_training_file(dir, "optimizer.safetensors"); }
int checkpoint_has_trainer_state(const char *dir) { return has_training_file(dir, "trainer.json"); }

int checkpoint_load_optimizer(const char *dir, Model *m) {
    char *path = checkpoint_training_path(dir, "optimizer.safetensors");
    StFile f;
    int rc = st_open(&f, path);
    free(path);
    if (rc) return -1;
    size_t bytes = m->n_floats * sizeof(float);
    float *mom1 = xcalloc(m->n_floats, sizeof(float)), *mom2 = xcalloc(m->n_floats, sizeof(float));
    char name[PARAM_NAME_MAX + 32];
    for (int i = 0; i < m->n_params && !rc; i++) {
        const ParamInfo *p = &m->params[i];
        if (!p->trainable) continue;
        snprintf(name, sizeof name, "exp_avg.%s", p->name);
        rc = st_read_f32(&f, name, mom1 + p->offset, p->ndim, p->shape);
        snprintf(name, sizeof name, "exp_avg_sq.%s", p->name);
        if (!rc) rc = st_read_f32(&f, name, mom2 + p->offset, p->ndim, p->shape);
    }
    const char *step = st_meta(&f, "step");
    if (!rc) {
        char *end = NULL;
        long s = step ? strtol(step, &end, 10) : -1;
        if (!step || *end || s < 0) rc = up_error("%s: metadata step is missing or invalid; expected a step count", f.path);
        else m->step = (int)s;
    }
    if (!rc) {
        m->be->upload(m->adam_m, mom1, bytes);
        m->be->upload(m->adam_v, mom2, bytes);
    }
    free(mom1);
    free(mom2);
    st_close(&f);
    return rc;
}

/* a uint64 written as a decimal string (JSON numbers are doubles: exact only to 2^53) */
static int parse_u64(const char *path, const char *field, const char *text, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (!text[0] || *end || text[0] == '-' || errno)
        return up_error("%s: field %s: is \"%s\"; expected a decimal string of an unsigned 64-bit integer", path, field, text);
    *out = v;
    return 0;
}

static int get_u64(const char *path, const cJSON *obj, const char *field, uint64_t *out) {
    const char *text;
    return json_get_string(path, obj, field, &text) || parse_u64(path, field, text, out);
}

static int get_count(const char *path, const cJSON *obj, const char *field, int required, int *out) {
    if (required ? json_get_int(path, obj, field, out) : json_opt_int(path, obj, field, 0, out)) return -1;
    return *out < 0 ? up_error("%s: field %s: is %d; expected a count >= 0", path, field, *out) : 0;
}

int trainer_state_load(const char *dir, TrainerState *s) {
    memset(s, 0, sizeof *s);
    char *path = checkpoint_training_path(dir, "trainer.json");
    cJSON *j = json_load_file(path, "the trainer state written with a checkpoint");
    const cJSON *data = NULL, *rng = NULL, *lm = NULL;
    double tokens = 0;
    int rc = j ? 0 : -1;
    if (!rc) rc = get_count(path, j, "step", 1, &s->step);
    if (!rc) rc = get_count(path, j, "stage_start_step", 0, &s->stage_start_step);
    if (!rc) rc = get_count(path, j, "skipped_steps", 0, &s->skipped_steps);
    if (!rc) rc = json_opt_number(path, j, "tokens_seen", 0, &tokens);
    if (!rc && (tokens < 0 || tokens != floor(tokens)))
        rc = up_error("%s: field tokens_seen: is %g; expected a token count", path, tokens);
    s->tokens_seen = (long long)tokens;
    if (!rc) rc = json_opt_object(path, j, "loss_mean", &lm);
    if (!rc && lm) { /* the spike guard's mean, exact: a resume takes the same skip decisions */
        const char *value;
        rc = json_get_string(path, lm, "loss_mean.value", &value) || get_count(path, lm, "loss_mean.steps", 1, &s->loss_mean_steps);
        char *end = NULL;
        if (!rc) s->loss_mean = strtod(value, &end);
        if (!rc && (!value[0] || *end || !isfinite(s->loss_mean)))
            rc = up_error("%s: field loss_mean.value: is \"%s\"; expected a finite hex float string", path, value);
    }
    if (!rc) rc = json_get_object(path, j, "data", &data);
    if (!rc) rc = get_u64(path, data, "data.epoch", &s->data_epoch) || get_u64(path, data, "data.cursor", &s->data_cursor);
    const char *ddir = "";
    if (!rc) rc = json_opt_string(path, data, "data.dir", "", &ddir);
    if (!rc) snprintf(s->data_dir, sizeof s->data_dir, "%s", ddir);
    if (!rc) rc = json_get_array(path, j, "rng_state", &rng);
    if (!rc && cJSON_GetArraySize(rng) != 4)
        rc = up_error("%s: field rng_state: has %d entries; expected 4 decimal strings", path, cJSON_GetArraySize(rng));
    for (int i = 0; i < 4 && !rc; i++) {
        const char *text;
        char field[32];
        snprintf(field, sizeof field, "rng_state[%d]", i);
        rc = json_elem_string(path, rng, "rng_state", i, &text) || parse_u64(path, field, text, &s->rng_state[i]);
    }
    cJSON_Delete(j);
    free(path);
    if (!rc) {
        train_config_defaults(&s->train);
        char *tc = checkpoint_training_path(dir, "train_config.json");
        if (path_exists(tc)) rc = train_config_load_bare_json(&s->train, tc);
        free(tc);
    }
    return rc ? -1 : 0;
}

int checkpoint_is_upcycle(const char *dir) {
    char *path = path_join(dir, "config.json"), *text;
    size_t n;
    int rc = read_file(path, &text, &n);
    free(path);
    if (rc) return 0; /* a probe: what cannot be read is not ours (the caller's own read says why) */
    cJSON *j = cJSON_ParseWithLength(text, n);
    free(text);
    int ours = json_has(j, "upcycle_qk_norm");
    cJSON_Delete(j);
    return ours;
}
