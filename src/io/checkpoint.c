#include "checkpoint.h"

#include <errno.h>
#include <math.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static int write_weights(const char *path, TensorSource *src) {
    static const CkptTensorKind passes[] = {CKPT_WEIGHTS};
    static const char *const prefixes[] = {""};
    return write_tensors(path, src, passes, prefixes, 1, NULL);
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

int checkpoint_write(const char *dir, const ModelConfig *cfg, TensorSource *src, int with_optimizer, int optimizer_step,
                     const TrainerState *state, const char *extra_name, const char *extra_text) {
    DirReplace d;
    if (dir_replace_begin(&d, dir)) return -1;
    char *path = path_join(d.tmp, "config.json");
    int rc = model_config_save_json(cfg, path);
    free(path);
    if (!rc) {
        path = path_join(d.tmp, "model.safetensors");
        rc = write_weights(path, src);
        free(path);
    }
    if (!rc && with_optimizer) {
        path = path_join(d.tmp, "optimizer.safetensors");
        rc = write_optimizer(path, src, optimizer_step);
        free(path);
    }
    if (!rc && state) {
        path = path_join(d.tmp, "trainer.json");
        rc = write_trainer_state(path, state);
        free(path);
        if (!rc) {
            path = path_join(d.tmp, "train_config.json");
            rc = train_config_save_json(&state->train, path);
            free(path);
        }
    }
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
    s->src = (TensorSource){.table = m->params, .n_tensors = m->n_params, .data = model_source_data};
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

/* Reads every table entry with prefix from an open file into host (float32, shape-checked)
 * and rejects tensors the model does not have. */
static int read_tensors(const StFile *f, const Model *m, float *host, const char *prefix, int trainable_only) {
    char name[PARAM_NAME_MAX + 32];
    int expected = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ParamInfo *p = &m->params[i];
        if (trainable_only && !p->trainable) continue;
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        if (st_read_f32(f, name, host + p->offset, p->ndim, p->shape)) return -1;
        expected++;
    }
    /* expert parallel: the file holds every rank's experts; each rank reads its own */
    ParamInfo *full = NULL;
    int n_full = m->ep_size > 1 ? model_full_table(&m->cfg, &full) : 0;
    if (full) {
        expected = 0;
        for (int i = 0; i < n_full; i++) expected += !trainable_only || full[i].trainable;
    }
    if (f->n_tensors != expected) {
        const ParamInfo *names = full ? full : m->params; /* the names the file may hold */
        int n_names = full ? n_full : m->n_params;
        size_t pl = strlen(prefix);
        for (int t = 0; t < f->n_tensors; t++) {
            const char *tn = f->tensors[t].name;
            int known = 0;
            for (int i = 0; i < n_names && !known; i++) known = strncmp(tn, prefix, pl) == 0 && !strcmp(names[i].name, tn + pl);
            if (!known) {
                free(full);
                return up_error("%s: unexpected tensor %s; expected only the tensors of the model in config.json", f->path, tn);
            }
        }
    }
    free(full);
    return 0;
}

int checkpoint_load_weights(const char *dir, Model *m) {
    char *path = path_join(dir, "model.safetensors");
    StFile f;
    int rc = st_open(&f, path);
    free(path);
    if (rc) return -1;
    float *host = xmalloc(m->n_floats * sizeof(float));
    rc = read_tensors(&f, m, host, "", 0);
    if (!rc) m->be->upload(m->param_mem, host, m->n_floats * sizeof(float));
    free(host);
    st_close(&f);
    return rc;
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

int checkpoint_has_optimizer(const char *dir) {
    char *path = path_join(dir, "optimizer.safetensors");
    int exists = path_exists(path);
    free(path);
    return exists;
}

int checkpoint_load_optimizer(const char *dir, Model *m) {
    char *path = path_join(dir, "optimizer.safetensors");
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
    char *path = path_join(dir, "trainer.json");
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
        char *tc = path_join(dir, "train_config.json");
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
