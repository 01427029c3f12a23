#include "dist/dist_checkpoint.h"

#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "util.h"

#define N_KINDS 3

/* Rank 0's tensor source over the whole model's table: its own tensors from a host copy,
 * the others' received from their owners. Each kind's walk over the table keeps its own
 * position, so that what was not asked for can be drained in the senders' order. */
typedef struct {
    TensorSource src;
    const Model *m;
    ParamInfo *full;              /* the whole model's table */
    float *received;              /* one tensor from another rank */
    float *host;                  /* this rank's copy of the buffer of host_kind */
    CkptTensorKind host_kind;
    int next[N_KINDS];            /* next full-table entry of each kind's walk */
    int cursor[N_KINDS];          /* the walk's position in this rank's table (model_local_param) */
} RankSource;

static const char *const WHAT = "the expert weights for the checkpoint";

/* the other ranks send a kind's entries that they hold: weights all, moments the trainable ones */
static int sent(const Model *m, CkptTensorKind kind, const ParamInfo *p) {
    return model_param_owner(m, p) > 0 && (kind == CKPT_WEIGHTS || p->trainable);
}

static const float *buffer_of(const Model *m, CkptTensorKind kind) {
    return kind == CKPT_WEIGHTS ? m->param_mem : kind == CKPT_EXP_AVG ? m->adam_m : m->adam_v;
}

/* entry i of the kind's walk: this rank's data, or the received tensor */
static const float *visit(RankSource *s, CkptTensorKind kind, int i) {
    const Model *m = s->m;
    const ParamInfo *p = &s->full[i];
    s->next[kind] = i + 1;
    int here = model_local_param(m, p, &s->cursor[kind]);
    if (here >= 0) {
        if (s->host_kind != kind) {
            m->be->download(s->host, buffer_of(m, kind), m->n_floats * sizeof(float));
            s->host_kind = kind;
        }
        return s->host + m->params[here].offset;
    }
    if (sent(m, kind, p)) dist_recv_floats(s->received, p->numel, model_param_owner(m, p), WHAT);
    return s->received;
}

/* walks kind's entries up to (not including) end, receiving and dropping what is sent */
static void skip_to(RankSource *s, CkptTensorKind kind, int end) {
    while (s->next[kind] < end) {
        int i = s->next[kind];
        s->next[kind] = i + 1;
        if (model_local_param(s->m, &s->full[i], &s->cursor[kind]) < 0 && sent(s->m, kind, &s->full[i]))
            dist_recv_floats(s->received, s->full[i].numel, model_param_owner(s->m, &s->full[i]), WHAT);
    }
}

static const float *rank_source_data(TensorSource *src, CkptTensorKind kind, int i) {
    RankSource *s = (RankSource *)src;
    skip_to(s, kind, i);
    return visit(s, kind, i);
}

/* the other ranks of rank 0's expert group: their experts of one buffer, in table order */
static void send_experts(const Model *m, CkptTensorKind kind, float *host) {
    m->be->download(host, buffer_of(m, kind), m->n_floats * sizeof(float));
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].sharded && (kind == CKPT_WEIGHTS || m->params[i].trainable))
            dist_send_floats(host + m->params[i].offset, m->params[i].numel, 0, WHAT);
}

/* Every rank learns rank 0's result, with its message: whichever rank's error line the job
 * prints before MPI_Abort stops the others, it says why. */
static int result_from_rank0(const char *dir, int rc) {
    struct {
        int32_t rc;
        char why[500];
    } result = {rc, ""};
    if (rc && dist_rank() == 0) snprintf(result.why, sizeof result.why, "%s", up_last_error());
    dist_bcast_bytes(&result, sizeof result, "the checkpoint result");
    if (result.rc && dist_rank() != 0) return up_error("rank 0 could not write the checkpoint %s: %s", dir, result.why);
    return result.rc ? -1 : 0;
}

int dist_checkpoint_save(const char *dir, const Model *m, const TrainerState *state, int with_optimizer,
                         const char *extra_name, const char *extra_text) {
    if (m->ep_size <= 1) return dist_rank() == 0 ? checkpoint_save_with(dir, m, state, with_optimizer, extra_name, extra_text) : 0;
    int n_kinds = with_optimizer ? N_KINDS : 1;
    if (dist_rank() != 0) {
        if (dist_rank() < m->ep_size) {
            float *host = xmalloc(m->n_floats * sizeof(float));
            for (int k = 0; k < n_kinds; k++) send_experts(m, (CkptTensorKind)k, host);
            free(host);
        }
        return result_from_rank0(dir, 0);
    }
    RankSource s;
    memset(&s, 0, sizeof s);
    s.m = m;
    int n_full = model_full_table(&m->cfg, &s.full);
    s.src = (TensorSource){.table = s.full, .n_tensors = n_full, .data = rank_source_data};
    s.received = xmalloc(model_max_numel(s.full, n_full) * sizeof(float));
    s.host = xmalloc(m->n_floats * sizeof(float));
    s.host_kind = (CkptTensorKind)-1;
    int rc = checkpoint_write(dir, &m->cfg, &s.src, with_optimizer, m->step, state, extra_name, extra_text);
    for (int k = 0; k < n_kinds; k++) skip_to(&s, (CkptTensorKind)k, n_full); /* after a failure: what is still sent */
    free(s.full);
    free(s.received);
    free(s.host);
    return result_from_rank0(dir, rc);
}
