#include "checkpoint.h"

#include <math.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "io/safetensors.h"
#include "util.h"
#include "util/dir_replace.h"

/* Expert parallel: rank 0 writes every tensor of the whole model's table; the experts it does
 * not hold arrive from their ranks one tensor at a time, in table order (bounded memory). The
 * other ranks send theirs in the same order (send_shards). Rank 0 receives every tensor even
 * after a write failed, so that no rank is left waiting. Without expert parallelism the table
 * is the model's own. */
typedef struct {
    const Model *m;
    ParamInfo *table;
    int n, own;                 /* own: table is m->params */
    float *buf;                 /* one tensor from another rank */
} FullTable;

static void full_table_open(FullTable *t, const Model *m) {
    memset(t, 0, sizeof *t);
    t->m = m;
    if (m->ep_size > 1) {
        t->n = model_full_table(&m->cfg, &t->table);
        t->buf = xmalloc(model_max_numel(t->table, t->n) * sizeof(float));
    } else {
        t->table = m->params, t->n = m->n_params, t->own = 1;
    }
}

static void full_table_close(FullTable *t) {
    if (!t->own) free(t->table);
    free(t->buf);
}

/* the data of full-table entry i: from host (this rank's copy of a buffer), or received.
 * *local walks this rank's table alongside (same order). */
static const float *full_table_data(FullTable *t, int i, const float *host, int *local) {
    const Model *m = t->m;
    const ParamInfo *p = &t->table[i];
    int here = model_local_param(m, p, local);
    if (here >= 0) return host + m->params[here].offset;
    dist_recv_floats(t->buf, p->numel, model_param_owner(m, p), "the expert weights for the checkpoint");
    return t->buf;
}

/* rank 0 after a failed write: receive the other ranks' tensors of `passes` passes, unwritten */
static void drain_shards(const Model *m, int trainable_only, int passes) {
    FullTable t;
    full_table_open(&t, m);
    for (int pass = 0; pass < passes; pass++)
        for (int i = 0, local = 0; i < t.n; i++)
            if (model_param_owner(m, &t.table[i]) > 0 && (!trainable_only || t.table[i].trainable))
                full_table_data(&t, i, NULL, &local);
    full_table_close(&t);
}

/* the other ranks' side: this rank's experts, in table order */
static void send_shards(const Model *m, const float *host, int trainable_only) {
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].sharded && (!trainable_only || m->params[i].trainable))
            dist_send_floats(host + m->params[i].offset, m->params[i].numel, 0, "the expert weights for the checkpoint");
}

/* Writes tensors (one per parameter of the whole model, selected by filter) from a host copy
 * of a buffer; with host_b, a second pass writes prefix_b tensors from it (Adam's moments). */
static int write_tensors(const char *path, const Model *m, const float *host, const char *prefix, const float *host_b,
                         const char *prefix_b, int trainable_only, const char *meta_step) {
    FullTable t;
    full_table_open(&t, m);
    StWriter *w = st_writer_new();
    char name[PARAM_NAME_MAX + 32];
    int passes = host_b ? 2 : 1;
    for (int pass = 0; pass < passes; pass++)
        for (int i = 0; i < t.n; i++) {
            const ParamInfo *p = &t.table[i];
            if (trainable_only && !p->trainable) continue;
            snprintf(name, sizeof name, "%s%s", pass ? prefix_b : prefix, p->name);
            st_writer_add(w, name, ST_F32, p->ndim, p->shape);
        }
    st_writer_meta(w, "format", "pt");
    if (meta_step) st_writer_meta(w, "step", meta_step);
    int rc = st_writer_open(w, path);
    for (int pass = 0; pass < passes; pass++) {
        int local = 0;
        for (int i = 0; i < t.n; i++) {
            const ParamInfo *p = &t.table[i];
            if (trainable_only && !p->trainable) {
                model_local_param(m, p, &local); /* keep the walk in step */
                continue;
            }
            const float *data = full_table_data(&t, i, pass ? host_b : host, &local);
            if (!rc) rc = st_writer_write(w, data, p->numel * sizeof(float));
        }
    }
    full_table_close(&t);
    if (rc) { /* e.g. disk full: close and remove the temp file, free the writer; the error stays */
        st_writer_abort(w);
        return -1;
    }
    return st_writer_commit(w);
}

/* host copies of the weights, or of Adam's two moments */
static float *download(const Model *m, const float *mem) {
    float *host = xmalloc(m->n_floats * sizeof(float));
    m->be->download(host, mem, m->n_floats * sizeof(float));
    return host;
}

static int write_weights(const char *path, const Model *m) {
    float *host = download(m, m->param_mem);
    int rc = write_tensors(path, m, host, "", NULL, NULL, 0, NULL);
    free(host);
    return rc;
}

static int write_optimizer(const char *path, const Model *m) {
    float *mom1 = download(m, m->adam_m), *mom2 = download(m, m->adam_v);
    char step[32];
    snprintf(step, sizeof step, "%d", m->step);
    int rc = write_tensors(path, m, mom1, "exp_avg.", mom2, "exp_avg_sq.", 1, step);
    free(mom1);
    free(mom2);
    return rc;
}

/* expert parallel, ranks other than 0: those of rank 0's expert group send their experts
 * (weights, then the moments); every rank learns from rank 0 whether the checkpoint was written */
static int save_as_follower(const Model *m, int with_optimizer) {
    if (dist_rank() >= m->ep_size) goto result; /* rank 0's expert group (ranks 0..ep_size-1) sends */
    float *host = download(m, m->param_mem);
    send_shards(m, host, 0);
    free(host);
    if (with_optimizer) {
        float *mom1 = download(m, m->adam_m), *mom2 = download(m, m->adam_v);
        send_shards(m, mom1, 1);
        send_shards(m, mom2, 1);
        free(mom1);
        free(mom2);
    }
result:;
    int32_t rc = 0;
    dist_bcast_bytes(&rc, sizeof rc, "the checkpoint result");
    return rc ? -1 : 0;
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

int checkpoint_save(const char *dir, const Model *m, const TrainerState *state, int with_optimizer) {
    return checkpoint_save_with(dir, m, state, with_optimizer, NULL, NULL);
}

int checkpoint_save_with(const char *dir, const Model *m, const TrainerState *state, int with_optimizer,
                         const char *extra_name, const char *extra_text) {
    if (m->ep_size > 1 && dist_rank() != 0) return save_as_follower(m, with_optimizer);
    int weights_sent = 0, moments_sent = 0; /* expert parallel: what the other ranks have sent */
    DirReplace d;
    int rc = dir_replace_begin(&d, dir);
    const char *tmp = d.tmp;
    char *path = NULL;
    if (!rc) {
        path = path_join(tmp, "config.json");
        rc = model_config_save_json(&m->cfg, path);
        free(path);
    }
    if (!rc) {
        path = path_join(tmp, "model.safetensors");
        rc = write_weights(path, m);
        weights_sent = 1;
        free(path);
    }
    if (!rc && with_optimizer) {
        path = path_join(tmp, "optimizer.safetensors");
        rc = write_optimizer(path, m);
        moments_sent = 1;
        free(path);
    }
    if (m->ep_size > 1) { /* after a failure: take (and drop) what the other ranks still send */
        if (!weights_sent) drain_shards(m, 0, 1);
        if (with_optimizer && !moments_sent) drain_shards(m, 1, 2);
    }
    if (!rc && state) {
        path = path_join(tmp, "trainer.json");
        rc = write_trainer_state(path, state);
        if (!rc) {
            free(path);
            path = path_join(tmp, "train_config.json");
            rc = train_config_save_json(&state->train, path);
        }
        free(path);
    }
    if (!rc && extra_name) {
        path = path_join(tmp, extra_name);
        rc = atomic_write_file(path, extra_text, strlen(extra_text));
        free(path);
    }
    if (d.tmp) { /* begin succeeded: the old checkpoint disappears only after the new one is complete */
        if (rc) dir_replace_abort(&d);
        else rc = dir_replace_commit(&d);
    }
    if (m->ep_size > 1) { /* tell the other ranks the result */
        int32_t result = rc;
        dist_bcast_bytes(&result, sizeof result, "the checkpoint result");
    }
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

static int parse_u64(const cJSON *item, uint64_t *out, const char *path, const char *field) {
    if (!cJSON_IsString(item)) return up_error("%s: field %s; expected a decimal string", path, field);
    char *end = NULL;
    unsigned long long v = strtoull(item->valuestring, &end, 10);
    if (!item->valuestring[0] || *end) return up_error("%s: field %s is \"%s\"; expected a decimal string", path, field, item->valuestring);
    *out = v;
    return 0;
}

int trainer_state_load(const char *dir, TrainerState *s) {
    memset(s, 0, sizeof *s);
    char *path = path_join(dir, "trainer.json");
    char *text;
    size_t n;
    int rc = read_file(path, &text, &n);
    if (rc) {
        free(path);
        return -1;
    }
    cJSON *j = cJSON_ParseWithLength(text, n);
    free(text);
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(j, "step");
    const cJSON *stage = cJSON_GetObjectItemCaseSensitive(j, "stage_start_step");
    const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(j, "tokens_seen");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    const cJSON *rng = cJSON_GetObjectItemCaseSensitive(j, "rng_state");
    if (!j || !cJSON_IsObject(j)) rc = up_error("%s: not a JSON object; expected trainer state", path);
    else if (!cJSON_IsNumber(step) || step->valuedouble < 0) rc = up_error("%s: field step; expected a step count", path);
    else if (!cJSON_IsObject(data)) rc = up_error("%s: field data; expected an object with epoch and cursor", path);
    else if (!cJSON_IsArray(rng) || cJSON_GetArraySize(rng) != 4) rc = up_error("%s: field rng_state; expected 4 decimal strings", path);
    if (!rc) {
        s->step = (int)step->valuedouble;
        s->stage_start_step = cJSON_IsNumber(stage) ? (int)stage->valuedouble : 0;
        s->tokens_seen = cJSON_IsNumber(tokens) ? (long long)tokens->valuedouble : 0;
        const cJSON *skipped = cJSON_GetObjectItemCaseSensitive(j, "skipped_steps");
        s->skipped_steps = cJSON_IsNumber(skipped) && skipped->valuedouble >= 0 ? (int)skipped->valuedouble : 0;
        const cJSON *lm = cJSON_GetObjectItemCaseSensitive(j, "loss_mean");
        if (lm) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(lm, "value"), *n = cJSON_GetObjectItemCaseSensitive(lm, "steps");
            char *end = NULL;
            double mean = cJSON_IsString(v) ? strtod(v->valuestring, &end) : NAN;
            if (!cJSON_IsNumber(n) || n->valuedouble < 0 || !end || *end || !isfinite(mean))
                rc = up_error("%s: field loss_mean; expected {\"value\": hex float string, \"steps\": count}", path);
            else
                s->loss_mean = mean, s->loss_mean_steps = (int)n->valuedouble;
        }
        rc = parse_u64(cJSON_GetObjectItemCaseSensitive(data, "epoch"), &s->data_epoch, path, "data.epoch");
        if (!rc) rc = parse_u64(cJSON_GetObjectItemCaseSensitive(data, "cursor"), &s->data_cursor, path, "data.cursor");
        const cJSON *ddir = cJSON_GetObjectItemCaseSensitive(data, "dir");
        if (cJSON_IsString(ddir)) snprintf(s->data_dir, sizeof s->data_dir, "%s", ddir->valuestring);
        for (int i = 0; i < 4 && !rc; i++) rc = parse_u64(cJSON_GetArrayItem(rng, i), &s->rng_state[i], path, "rng_state");
    }
    cJSON_Delete(j);
    free(path);
    if (!rc) {
        train_config_defaults(&s->train);
        char *tc = path_join(dir, "train_config.json");
        if (path_exists(tc)) rc = train_config_load_bare_json(&s->train, tc);
        free(tc);
    }
    return rc;
}

int checkpoint_is_upcycle(const char *dir) {
    char *path = path_join(dir, "config.json"), *text;
    size_t n;
    int rc = read_file(path, &text, &n);
    free(path);
    if (rc) return 0;
    cJSON *j = cJSON_ParseWithLength(text, n);
    free(text);
    int ours = cJSON_GetObjectItemCaseSensitive(j, "upcycle_qk_norm") != NULL;
    cJSON_Delete(j);
    return ours;
}
