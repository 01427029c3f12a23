/* diag.c - replica diagnostics (see diag.h).
 *
 * Groups. grow.json's layers[i].source[j] is the original expert that expert j of the grown
 * layer was copied from. A group is the set {j : source[j] == s} for each distinct s, in
 * ascending s; its members are listed in ascending index (for `upcycle grow` output: s itself,
 * then its replicas). Singleton groups (r_s = 1, e.g. under utility allocation) are listed too,
 * with empty per-pair arrays.
 *
 * Per-pair arrays (pairwise_cosine, jaccard) follow the order of "pairs": (m0,m1), (m0,m2), ...,
 * (m1,m2), ... over the members m0 < m1 < ...; each group carries "pairs" explicitly.
 *
 * Expert vector: the concatenation of the expert's gate (F,C), up (F,C) and down (C,F)
 * matrices. Cosines are accumulated in double; a zero vector has cosine 0 with anything.
 * cosine_to_source compares every member (the original included, which also drifts during
 * continued pre-training) with expert s of the source checkpoint; for a dense-to-MoE growth
 * (the source layer is dense) expert "0" is the dense FFN. "replica_cosine_to_source_mean"
 * (an extra key) averages members other than s only, i.e. the replicas.
 *
 * Routing (with data_dir): the probe is the first probe_batches batches of the val split, in
 * order, never wrapping (a routing probe, not a loss: its windows need not span the split). A member "receives" a token position when it is in
 * that token's top-K. Jaccard of a pair = |A ∩ B| / |A ∪ B| over probe positions; 0/0 (neither
 * member received any token) is defined as 0 and counted in "jaccard_empty_pairs" (an extra
 * key), so a mean below 1 can come from dead groups rather than from replicas that split tokens.
 *
 * Exact ties. Right after a plain-copy growth with bias noise 0, a replica has the same router
 * row and bias as its source, so their scores are equal and top-K breaks the tie towards the
 * lower index. With K >= r (group size) the whole group is selected together whenever its best
 * member is: every pair has Jaccard 1 (all members see the same tokens). With K < r only the
 * lowest-indexed members can be selected and the others are dead (Jaccard 0 against them): the
 * replicas are indistinguishable until bias noise or training separates them.
 *
 * Without data_dir the routing keys (jaccard, jaccard_mean, routing_entropy, load,
 * dead_experts, probe_tokens, val_loss) are omitted; without source the cosine_to_source keys
 * are. A mean over an empty set (no pairs) is null. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/shard.h"
#include "experiment/diag.h"
#include "io/checkpoint.h"
#include "model.h"
#include "train.h"
#include "util.h"
#include "util/json.h"

typedef struct {
    int source;
    int n;        /* members */
    int *members; /* ascending */
} Group;

typedef struct {
    int layer;
    int n_groups;
    Group *groups;
    /* routing accumulators: per group, per pair */
    long long **inter, **uni;
    long long *counts;  /* (E) tokens received over the probe */
    double entropy_sum; /* over probe tokens */
} LayerDiag;

static void layers_free(LayerDiag *ld, int n) {
    if (!ld) return;
    for (int i = 0; i < n; i++) {
        for (int g = 0; g < ld[i].n_groups; g++) {
            free(ld[i].groups[g].members);
            if (ld[i].inter) free(ld[i].inter[g]);
            if (ld[i].uni) free(ld[i].uni[g]);
        }
        free(ld[i].groups), free(ld[i].inter), free(ld[i].uni), free(ld[i].counts);
    }
    free(ld);
}

static int n_pairs(int n) { return n * (n - 1) / 2; }

/* Parses and checks grow.json against the model's configuration; fills *out (n_out layers). */
static int parse_grow_json(const char *path, const ModelConfig *c, LayerDiag **out, int *n_out) {
    *out = NULL, *n_out = 0;
    cJSON *j = json_load_file(path, "the grow.json written by `upcycle grow`");
    if (!j) return -1;
    const cJSON *layers = NULL;
    int E = c->n_experts, before = E;
    if (json_opt_array(path, j, "layers", &layers) || json_opt_int(path, j, "experts_before", E, &before)) {
        cJSON_Delete(j);
        return -1;
    }
    int n = cJSON_GetArraySize(layers);
    if (n <= 0) {
        cJSON_Delete(j);
        return up_error("%s: no \"layers\" array; expected {\"layers\": [{\"layer\": L, \"source\": [...]}, ...]}", path);
    }
    int bound = before >= 1 && before <= E ? before : E; /* source experts: those before growth */
    LayerDiag *ld = xcalloc(n, sizeof *ld);
    int rc = 0, i = 0;
    for (; i < n; i++) {
        char where[64], layer_name[80], source_name[80];
        snprintf(where, sizeof where, "layers[%d]", i);
        snprintf(layer_name, sizeof layer_name, "%s.layer", where);
        snprintf(source_name, sizeof source_name, "%s.source", where);
        const cJSON *item, *js;
        double lv;
        if ((rc = json_elem_object(path, layers, "layers", i, &item) || json_opt_number(path, item, layer_name, NAN, &lv) ||
                  json_opt_array(path, item, source_name, &js)))
            break;
        if (isnan(lv) || !js) {
            rc = up_error("%s: layers[%d] lacks \"layer\" or \"source\"; expected {\"layer\": L, \"source\": [...]}", path, i);
            break;
        }
        if (lv != floor(lv) || lv < 0 || lv >= c->n_layers) {
            rc = up_error("%s: layers[%d].layer %g is out of range; expected 0..%d (the checkpoint's layers)", path, i, lv,
                          c->n_layers - 1);
            break;
        }
        int l = (int)lv;
        for (int k = 0; k < i; k++)
            if (ld[k].layer == l) rc = up_error("%s: layer %d is listed twice; expected one entry per MoE layer", path, l);
        if (rc) break;
        if (!layer_is_moe(c, l)) {
            rc = up_error("%s: layer %d is not an MoE layer of the checkpoint; expected only MoE layers", path, l);
            break;
        }
        int len = cJSON_GetArraySize(js);
        if (len != E) {
            rc = up_error("%s: layer %d has %d sources but the checkpoint has %d experts; expected one source per expert "
                          "(grow.json of this checkpoint?)",
                          path, l, len, E);
            break;
        }
        int *src = xmalloc(sizeof(int) * E);
        for (int e = 0; e < E && !rc; e++) {
            double v;
            if ((rc = json_elem_number(path, js, source_name, e, &v))) break;
            if (v != floor(v) || v < 0 || v >= bound)
                rc = up_error("%s: layer %d source[%d] = %g is out of range; expected an integer expert index in 0..%d", path, l,
                              e, v, bound - 1);
            else src[e] = (int)v;
        }
        if (!rc) {
            ld[i].layer = l;
            ld[i].groups = xcalloc(E, sizeof(Group));
            for (int s = 0; s < E; s++) {
                int cnt = 0;
                for (int e = 0; e < E; e++) cnt += src[e] == s;
                if (!cnt) continue;
                Group *g = &ld[i].groups[ld[i].n_groups++];
                g->source = s, g->n = 0, g->members = xmalloc(sizeof(int) * cnt);
                for (int e = 0; e < E; e++)
                    if (src[e] == s) g->members[g->n++] = e;
            }
        }
        free(src);
        if (rc) break;
    }
    cJSON_Delete(j);
    if (rc) {
        layers_free(ld, i + 1 <= n ? i + 1 : n);
        return -1;
    }
    *out = ld, *n_out = n;
    return 0;
}

int diag_check_grow_json(const char *path, const ModelConfig *cfg) {
    LayerDiag *ld = NULL;
    int n = 0;
    if (parse_grow_json(path, cfg, &ld, &n)) return -1;
    layers_free(ld, n);
    return 0;
}

/* pointers to the three matrices of expert e of layer l; each is F*C floats */
static void expert_parts(const Model *m, int l, int e, const float *parts[3]) {
    const LayerParams *L = &m->layers[l];
    parts[0] = model_param(m, L->expert_gate + e);
    parts[1] = model_param(m, L->expert_up + e);
    parts[2] = model_param(m, L->expert_down + e);
}

static double cosine3(const float *a[3], const float *b[3], size_t n) {
    double dot = 0, na = 0, nb = 0;
    for (int p = 0; p < 3; p++)
        for (size_t i = 0; i < n; i++) {
            double x = a[p][i], y = b[p][i];
            dot += x * y, na += x * x, nb += y * y;
        }
    return na > 0 && nb > 0 ? dot / sqrt(na * nb) : 0.0;
}

/* the source checkpoint's vector for expert s of layer l (dense FFN for s = 0 of a dense layer) */
static int source_parts(const char *source, const Model *src, const Model *m, int l, int s, const float *parts[3]) {
    const ModelConfig *c = &m->cfg, *sc = &src->cfg;
    if (sc->d_model != c->d_model || l >= sc->n_layers)
        return up_error("%s: d_model %d, %d layers; expected the checkpoint this one was grown from (d_model %d, %d layers)",
                        source, sc->d_model, sc->n_layers, c->d_model, c->n_layers);
    const LayerParams *L = &src->layers[l];
    if (L->is_moe) {
        if (sc->moe_intermediate_size != c->moe_intermediate_size)
            return up_error("%s: moe_intermediate_size %d; expected %d as in the grown checkpoint", source,
                            sc->moe_intermediate_size, c->moe_intermediate_size);
        if (s >= sc->n_experts)
            return up_error("%s: layer %d has %d experts but grow.json names source expert %d; expected the pre-growth checkpoint",
                            source, l, sc->n_experts, s);
        expert_parts(src, l, s, parts);
        return 0;
    }
    if (s != 0 || sc->intermediate_size != c->moe_intermediate_size)
        return up_error("%s: layer %d is dense (intermediate size %d); expected an MoE layer, or for a dense-to-MoE growth "
                        "source 0 and intermediate size %d",
                        source, l, sc->intermediate_size, c->moe_intermediate_size);
    parts[0] = model_param(src, L->gate_proj);
    parts[1] = model_param(src, L->up_proj);
    parts[2] = model_param(src, L->down_proj);
    return 0;
}

/* undefined or non-finite statistics are null, as cJSON prints them: readers get one form */
static void add_number_or_null(cJSON *o, const char *key, double v) {
    if (isfinite(v)) cJSON_AddNumberToObject(o, key, v);
    else cJSON_AddNullToObject(o, key);
}

static void add_mean(cJSON *o, const char *key, double sum, long long n) { add_number_or_null(o, key, n > 0 ? sum / n : NAN); }

/* runs the probe: accumulates counts, entropy, pairwise intersections/unions; returns 0 or -1 */
static int run_probe(Model *m, const char *ckpt, const char *data_dir, int probe_batches, LayerDiag *ld, int n_ld,
                     long long *probe_tokens, double *val_loss) {
    int B = 8, T = 128;
    TrainerState st;
    if (trainer_state_load(ckpt, &st) == 0 && st.train.batch_size > 0 && st.train.seq_len > 0)
        B = st.train.batch_size, T = st.train.seq_len;
    up_clear_error();
    if (T > m->cfg.max_seq_len) T = m->cfg.max_seq_len;
    Loader loader;
    if (loader_open(&loader, data_dir, "val", B, T, 0, 0)) return -1;
    if (loader_check_vocab(&loader, m->cfg.vocab_size)) {
        loader_close(&loader);
        return -1;
    }
    model_set_batch(m, B, T);
    const int E = m->cfg.n_experts, K = m->cfg.top_k, N = B * T;
    for (int i = 0; i < n_ld; i++) {
        ld[i].counts = xcalloc(E, sizeof(long long));
        ld[i].inter = xcalloc(ld[i].n_groups, sizeof(long long *));
        ld[i].uni = xcalloc(ld[i].n_groups, sizeof(long long *));
        for (int g = 0; g < ld[i].n_groups; g++) {
            int np = n_pairs(ld[i].groups[g].n);
            ld[i].inter[g] = xcalloc(np ? np : 1, sizeof(long long));
            ld[i].uni[g] = xcalloc(np ? np : 1, sizeof(long long));
        }
    }
    uint64_t available = loader.n_windows / (uint64_t)B;
    if (available == 0) available = 1;
    int batches = probe_batches < 1 ? 1 : probe_batches;
    if ((uint64_t)batches > available) batches = (int)available;
    int32_t *tokens = xmalloc(sizeof(int32_t) * (size_t)B * (T + 1));
    float *probs = xmalloc(sizeof(float) * (size_t)N * E);
    int32_t *topk = xmalloc(sizeof(int32_t) * (size_t)N * K);
    unsigned char *sel = xmalloc((size_t)N * E);
    double loss_sum = 0;
    loader_reset(&loader);
    for (int b = 0; b < batches; b++) {
        loader_next(&loader, tokens);
        model_forward(m, tokens, 0, 0);
        loss_sum += m->last_ce_loss;
        for (int i = 0; i < n_ld; i++) {
            LayerDiag *d = &ld[i];
            const LayerActs *A = &m->acts[d->layer];
            m->be->download(probs, A->router_probs, sizeof(float) * (size_t)N * E);
            m->be->download(topk, A->topk, sizeof(int32_t) * (size_t)N * K);
            double ent = 0;
#pragma omp parallel for schedule(static) reduction(+ : ent)
            for (int t = 0; t < N; t++) {
                const float *p = probs + (size_t)t * E;
                for (int e = 0; e < E; e++)
                    if (p[e] > 0) ent -= (double)p[e] * log((double)p[e]);
            }
            d->entropy_sum += ent;
            memset(sel, 0, (size_t)N * E);
            for (size_t t = 0; t < (size_t)N; t++)
                for (int k = 0; k < K; k++) {
                    int e = topk[t * K + k];
                    sel[t * E + e] = 1;
                    d->counts[e]++;
                }
            for (int g = 0; g < d->n_groups; g++) {
                const Group *G = &d->groups[g];
                int p = 0;
                for (int a = 0; a < G->n; a++)
                    for (int c = a + 1; c < G->n; c++, p++) {
                        int ea = G->members[a], ec = G->members[c];
                        long long in = 0, un = 0;
                        for (size_t t = 0; t < (size_t)N; t++) {
                            int x = sel[t * E + ea], y = sel[t * E + ec];
                            in += x & y, un += x | y;
                        }
                        d->inter[g][p] += in, d->uni[g][p] += un;
                    }
            }
        }
    }
    free(tokens), free(probs), free(topk), free(sel);
    loader_close(&loader);
    *probe_tokens = (long long)batches * N;
    *val_loss = loss_sum / batches;
    return 0;
}

cJSON *diag_checkpoint(const char *ckpt, const char *grow_json, const char *source, const char *data_dir,
                       int probe_batches) {
    if (!ckpt) {
        up_error("diag: no checkpoint given; expected a checkpoint directory");
        return NULL;
    }
    Model m, src;
    int have_src = 0;
    if (checkpoint_load_model(ckpt, &m, 0, NULL)) return NULL;
    char *gpath = grow_json ? xstrdup(grow_json) : path_join(ckpt, "grow.json");
    if (!path_exists(gpath)) {
        if (grow_json) up_error("%s: not found; expected the grow.json written by `upcycle grow`", gpath);
        else up_error("%s: not found; expected a checkpoint produced by `upcycle grow` (or --grow-json FILE)", gpath);
        free(gpath);
        model_free(&m);
        return NULL;
    }
    LayerDiag *ld = NULL;
    int n_ld = 0;
    cJSON *out = NULL;
    if (parse_grow_json(gpath, &m.cfg, &ld, &n_ld)) goto done;
    if (source) {
        if (checkpoint_load_model(source, &src, 0, NULL)) goto done;
        have_src = 1;
    }
    long long probe_tokens = 0;
    double val_loss = 0;
    if (data_dir && run_probe(&m, ckpt, data_dir, probe_batches, ld, n_ld, &probe_tokens, &val_loss)) goto done;

    const int E = m.cfg.n_experts, K = m.cfg.top_k;
    const size_t per = (size_t)m.cfg.moe_intermediate_size * m.cfg.d_model;
    cJSON *root = cJSON_CreateObject();
    cJSON *jlayers = cJSON_AddArrayToObject(root, "layers");
    int failed = 0;
    for (int i = 0; i < n_ld && !failed; i++) {
        const LayerDiag *d = &ld[i];
        cJSON *jl = cJSON_CreateObject();
        cJSON_AddItemToArray(jlayers, jl);
        cJSON_AddNumberToObject(jl, "layer", d->layer);
        cJSON_AddNumberToObject(jl, "n_experts", E);
        cJSON *jg = cJSON_AddArrayToObject(jl, "groups");
        double cos_sum = 0, src_sum = 0, rep_src_sum = 0, jac_sum = 0;
        long long cos_n = 0, src_n = 0, rep_src_n = 0, jac_n = 0, jac_empty = 0;
        for (int g = 0; g < d->n_groups && !failed; g++) {
            const Group *G = &d->groups[g];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddItemToArray(jg, o);
            cJSON_AddNumberToObject(o, "source", G->source);
            cJSON_AddItemToObject(o, "members", cJSON_CreateIntArray(G->members, G->n));
            cJSON *pairs = cJSON_AddArrayToObject(o, "pairs");
            cJSON *pc = cJSON_AddArrayToObject(o, "pairwise_cosine");
            for (int a = 0; a < G->n; a++)
                for (int c = a + 1; c < G->n; c++) {
                    int pr[2] = {G->members[a], G->members[c]};
                    cJSON_AddItemToArray(pairs, cJSON_CreateIntArray(pr, 2));
                    const float *va[3], *vc[3];
                    expert_parts(&m, d->layer, pr[0], va);
                    expert_parts(&m, d->layer, pr[1], vc);
                    double cs = cosine3(va, vc, per);
                    cJSON_AddItemToArray(pc, cJSON_CreateNumber(cs));
                    cos_sum += cs, cos_n++;
                }
            if (have_src) {
                const float *vs[3];
                if (source_parts(source, &src, &m, d->layer, G->source, vs)) {
                    failed = 1;
                    break;
                }
                cJSON *cts = cJSON_AddArrayToObject(o, "cosine_to_source");
                for (int a = 0; a < G->n; a++) {
                    const float *va[3];
                    expert_parts(&m, d->layer, G->members[a], va);
                    double cs = cosine3(va, vs, per);
                    cJSON_AddItemToArray(cts, cJSON_CreateNumber(cs));
                    src_sum += cs, src_n++;
                    if (G->members[a] != G->source) rep_src_sum += cs, rep_src_n++;
                }
            }
            if (data_dir) {
                cJSON *jj = cJSON_AddArrayToObject(o, "jaccard");
                for (int p = 0; p < n_pairs(G->n); p++) {
                    double v = d->uni[g][p] ? (double)d->inter[g][p] / d->uni[g][p] : 0.0;
                    jac_empty += d->uni[g][p] == 0;
                    cJSON_AddItemToArray(jj, cJSON_CreateNumber(v));
                    jac_sum += v, jac_n++;
                }
            }
        }
        if (failed) break;
        add_mean(jl, "replica_cosine_mean", cos_sum, cos_n);
        if (have_src) {
            add_mean(jl, "cosine_to_source_mean", src_sum, src_n);
            add_mean(jl, "replica_cosine_to_source_mean", rep_src_sum, rep_src_n);
        }
        if (data_dir) {
            add_mean(jl, "jaccard_mean", jac_sum, jac_n);
            cJSON_AddNumberToObject(jl, "jaccard_empty_pairs", (double)jac_empty); /* 0/0 pairs, counted as 0 */
            cJSON_AddNumberToObject(jl, "routing_entropy", d->entropy_sum / (double)probe_tokens);
            long long mn = d->counts[0], mx = d->counts[0], total = 0;
            for (int e = 0; e < E; e++) {
                mn = d->counts[e] < mn ? d->counts[e] : mn;
                mx = d->counts[e] > mx ? d->counts[e] : mx;
                total += d->counts[e];
            }
            double mean = (double)total / E, var = 0;
            for (int e = 0; e < E; e++) var += ((double)d->counts[e] - mean) * ((double)d->counts[e] - mean);
            cJSON *jload = cJSON_AddObjectToObject(jl, "load");
            cJSON_AddNumberToObject(jload, "min", (double)mn);
            cJSON_AddNumberToObject(jload, "max", (double)mx);
            cJSON_AddNumberToObject(jload, "std", sqrt(var / E));
            cJSON_AddNumberToObject(jload, "max_violation", mean > 0 ? mx / mean - 1 : 0.0);
            cJSON_AddNumberToObject(jload, "total", (double)total); /* = probe_tokens * top_k */
            double *cnt = xmalloc(sizeof(double) * E);
            for (int e = 0; e < E; e++) cnt[e] = (double)d->counts[e];
            cJSON_AddItemToObject(jload, "counts", cJSON_CreateDoubleArray(cnt, E));
            free(cnt);
            cJSON *dead = cJSON_AddArrayToObject(jl, "dead_experts");
            for (int e = 0; e < E; e++)
                if (d->counts[e] == 0) cJSON_AddItemToArray(dead, cJSON_CreateNumber(e));
        }
    }
    if (failed) {
        cJSON_Delete(root);
        goto done;
    }
    cJSON_AddNumberToObject(root, "top_k", K);
    if (data_dir) {
        cJSON_AddNumberToObject(root, "probe_tokens", (double)probe_tokens);
        add_number_or_null(root, "val_loss", val_loss); /* NaN when the checkpoint has diverged */
    }
    out = root;
done:
    layers_free(ld, n_ld);
    if (have_src) model_free(&src);
    model_free(&m);
    free(gpath);
    return out;
}

/* diag_print's reads of a diag_checkpoint result: every field by util/json.h's rule */
#define ORIGIN "diagnostics"

/* the members (or dead experts) as " 0 8" */
static int print_ints(FILE *f, const cJSON *arr, const char *name) {
    for (int i = 0; i < cJSON_GetArraySize(arr); i++) {
        int v;
        if (json_elem_int(ORIGIN, arr, name, i, &v)) return -1;
        fprintf(f, " %d", v);
    }
    return 0;
}

static int print_layer(const cJSON *l, FILE *f) {
    int layer, n_experts;
    const cJSON *groups, *g;
    double rc_mean, cs_mean, rcs_mean, entropy;
    if (json_get_int(ORIGIN, l, "layer", &layer) || json_get_int(ORIGIN, l, "n_experts", &n_experts) ||
        json_get_array(ORIGIN, l, "groups", &groups) || json_get_number_or_null(ORIGIN, l, "replica_cosine_mean", &rc_mean) ||
        json_opt_number(ORIGIN, l, "cosine_to_source_mean", NAN, &cs_mean) ||
        json_opt_number(ORIGIN, l, "replica_cosine_to_source_mean", NAN, &rcs_mean) ||
        json_opt_number(ORIGIN, l, "routing_entropy", NAN, &entropy))
        return -1;
    int n_groups = cJSON_GetArraySize(groups), with_rep = 0;
    for (int i = 0; i < n_groups; i++) {
        const cJSON *members;
        if (json_elem_object(ORIGIN, groups, "groups", i, &g) || json_get_array(ORIGIN, g, "members", &members)) return -1;
        with_rep += cJSON_GetArraySize(members) > 1;
    }
    fprintf(f, "layer %d: %d experts in %d groups (%d with replicas)\n", layer, n_experts, n_groups, with_rep);
    if (!isnan(rc_mean)) fprintf(f, "  replica cosine (mean over pairs): %.6f\n", rc_mean);
    else fprintf(f, "  replica cosine: n/a (no group has replicas)\n");
    if (!isnan(cs_mean)) {
        fprintf(f, "  cosine to source: %.6f (all members)", cs_mean);
        if (!isnan(rcs_mean)) fprintf(f, ", %.6f (replicas only)", rcs_mean);
        fprintf(f, "\n");
    }
    if (!isnan(entropy)) {
        double jac, empty, mn, mx, sd, viol;
        const cJSON *load, *dead;
        if (json_opt_number(ORIGIN, l, "jaccard_mean", NAN, &jac) || json_opt_number(ORIGIN, l, "jaccard_empty_pairs", NAN, &empty) ||
            json_get_object(ORIGIN, l, "load", &load) || json_get_number(ORIGIN, load, "load.min", &mn) ||
            json_get_number(ORIGIN, load, "load.max", &mx) || json_get_number(ORIGIN, load, "load.std", &sd) ||
            json_get_number(ORIGIN, load, "load.max_violation", &viol) || json_get_array(ORIGIN, l, "dead_experts", &dead))
            return -1;
        if (!isnan(jac)) {
            fprintf(f, "  token overlap of replicas (mean Jaccard): %.4f", jac);
            if (empty > 0) fprintf(f, " (%.0f pairs where neither member got a token count as 0)", empty);
            fprintf(f, "\n");
        }
        fprintf(f, "  routing entropy: %.4f nats (uniform: %.4f)\n", entropy, log(n_experts));
        fprintf(f, "  load: min %.0f, max %.0f, std %.1f, max/mean-1 %.3f\n", mn, mx, sd, viol);
        fprintf(f, "  dead experts:");
        if (!cJSON_GetArraySize(dead)) fprintf(f, " none");
        if (print_ints(f, dead, "dead_experts")) return -1;
        fprintf(f, "\n");
    }
    for (int i = 0; i < n_groups; i++) {
        const cJSON *members;
        int source;
        if (json_elem_object(ORIGIN, groups, "groups", i, &g) || json_get_array(ORIGIN, g, "members", &members) ||
            json_get_int(ORIGIN, g, "source", &source))
            return -1;
        if (cJSON_GetArraySize(members) < 2 && !json_has(g, "cosine_to_source")) continue;
        fprintf(f, "  group %d: members", source);
        if (print_ints(f, members, "members")) return -1;
        const char *keys[3] = {"pairwise_cosine", "cosine_to_source", "jaccard"};
        const char *labels[3] = {"cos", "to source", "jaccard"};
        for (int k = 0; k < 3; k++) {
            const cJSON *arr;
            if (json_opt_array(ORIGIN, g, keys[k], &arr)) return -1;
            if (!cJSON_GetArraySize(arr)) continue;
            fprintf(f, "; %s", labels[k]);
            for (int x = 0; x < cJSON_GetArraySize(arr); x++) {
                double v;
                if (json_elem_number_or_null(ORIGIN, arr, keys[k], x, &v)) return -1;
                fprintf(f, " %.4f", v);
            }
        }
        fprintf(f, "\n");
    }
    return 0;
}

int diag_print(const cJSON *diag, FILE *f) {
    double probe, loss = NAN;
    const cJSON *layers, *l;
    if (json_opt_number(ORIGIN, diag, "probe_tokens", NAN, &probe) || json_get_array(ORIGIN, diag, "layers", &layers) ||
        (!isnan(probe) && json_get_number_or_null(ORIGIN, diag, "val_loss", &loss)))
        return -1;
    if (!isnan(probe)) fprintf(f, "probe: %.0f val tokens, loss %.4f\n", probe, loss);
    else fprintf(f, "probe: none (no --data; routing statistics skipped)\n");
    for (int i = 0; i < cJSON_GetArraySize(layers); i++)
        if (json_elem_object(ORIGIN, layers, "layers", i, &l) || print_layer(l, f)) return -1;
    return 0;
}
