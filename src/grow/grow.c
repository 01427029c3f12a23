#include "grow/grow.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/shard.h"
#include "dist/dist.h"
#include "io/checkpoint.h"
#include "model.h"
#include "train.h"
#include "util.h"

void grow_options_defaults(GrowOptions *o) {
    memset(o, 0, sizeof *o);
    o->alloc = ALLOC_UNIFORM;
    o->utility = UTIL_GRAD2;
    o->utility_batches = 4;
    o->bias_noise = 1.0f;
    expert_init_parse("copy", &o->expert_init);
    router_init_parse("copy", &o->router_init);
    o->optim_state = OPTIM_COPY;
    o->seed = 1;
    o->check_batches = 4;
    o->sparse_step = 1;
}

static const char *UTILITY_NAMES[] = {"grad2", "saliency", "weight-norm", "fisher"};
static const char *OPTIM_NAMES[] = {"copy", "reset", "scale", "interpolate"};

/* batch shape for utilities and --check: the checkpoint's training shape, else 8 x 128 */
static void batch_shape(const char *ckpt, const ModelConfig *c, int *B, int *T) {
    TrainerState st;
    int have = trainer_state_load(ckpt, &st) == 0;
    *B = have ? st.train.batch_size : 8;
    *T = have ? st.train.seq_len : 128;
    if (*T > c->max_seq_len) *T = c->max_seq_len;
}

static int load_model(const char *dir, Model *m, int *has_optimizer) { return checkpoint_load_model(dir, m, 1, has_optimizer); }

/* the three tensors of expert e of layer l: offsets into the parameter buffer */
static void expert_slices(const Model *m, int layer, int e, size_t offsets[3], size_t sizes[3]) {
    const LayerParams *L = &m->layers[layer];
    int first[3] = {L->expert_gate, L->expert_up, L->expert_down};
    for (int p = 0; p < 3; p++) offsets[p] = m->params[first[p] + e].offset, sizes[p] = m->params[first[p] + e].numel;
}

static double sum_sq(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return s;
}

/* Accumulates gradients over `batches` batches of the pretrain split (in order, no shuffle)
 * and scores every expert of every MoE layer. With all_ranks (every MPI rank calls this), rank
 * r takes batches r, r + ranks, ... and the sums are added across ranks. */
static int utilities_of_model(Model *m, const char *ckpt, int has_optimizer, const char *data_dir, UtilityKind kind,
                              int batches, int all_ranks, double *utility) {
    int ranks = all_ranks ? dist_size() : 1, rank = all_ranks ? dist_rank() : 0;
    int n_moe = model_config_n_moe_layers(&m->cfg), E = m->cfg.n_experts;
    float *sum_g = NULL, *sum_g2 = NULL;
    if (kind != UTIL_WEIGHT_NORM) {
        if (!data_dir) return up_error("--alloc utility with --utility %s needs --data DIR; expected a data directory", UTILITY_NAMES[kind]);
        int B, T;
        batch_shape(ckpt, &m->cfg, &B, &T);
        Loader ld;
        if (loader_open(&ld, data_dir, "pretrain", B, T, 0, 0)) return -1;
        if (loader_check_vocab(&ld, m->cfg.vocab_size)) {
            loader_close(&ld);
            return -1;
        }
        model_set_batch(m, B, T);
        sum_g = xcalloc(m->n_floats, sizeof(float));
        sum_g2 = xcalloc(m->n_floats, sizeof(float));
        int32_t *tokens = xmalloc(sizeof(int32_t) * B * (T + 1));
        float *g = xmalloc(sizeof(float) * m->n_floats);
        for (int b = 0; b < batches; b++) {
            loader_next(&ld, tokens);
            if (b % ranks != rank) continue;
            model_zero_grad(m);
            model_forward(m, tokens, 0, 0);
            model_backward(m, 0, 0);
            m->be->download(g, m->grad_mem, sizeof(float) * m->n_floats);
            for (size_t i = 0; i < m->n_floats; i++) sum_g[i] += g[i] / batches, sum_g2[i] += g[i] * g[i] / batches;
        }
        free(g);
        free(tokens);
        loader_close(&ld);
        if (ranks > 1) {
            dist_sum_floats(sum_g, m->n_floats, "the utility gradients");
            dist_sum_floats(sum_g2, m->n_floats, "the utility gradients");
        }
    }
    float *w = xmalloc(sizeof(float) * m->n_floats), *v = NULL;
    m->be->download(w, m->param_mem, sizeof(float) * m->n_floats);
    if (kind == UTIL_FISHER && has_optimizer) {
        v = xmalloc(sizeof(float) * m->n_floats);
        m->be->download(v, m->adam_v, sizeof(float) * m->n_floats);
    }
    int row = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        if (!m->layers[l].is_moe) continue;
        for (int e = 0; e < E; e++) {
            size_t off[3], n[3];
            expert_slices(m, l, e, off, n);
            double g2 = 0, w2 = 0, fisher = 0;
            for (int p = 0; p < 3; p++) {
                w2 += sum_sq(w + off[p], n[p]);
                if (sum_g) g2 += sum_sq(sum_g + off[p], n[p]);
                if (kind == UTIL_FISHER)
                    for (size_t i = 0; i < n[p]; i++) {
                        /* curvature-normalized: g^2 / F with the diagonal Fisher F from Adam's v, or
                         * from the mean squared per-batch gradient */
                        double F = v ? v[off[p] + i] : sum_g2[off[p] + i];
                        double gi = sum_g[off[p] + i];
                        fisher += gi * gi / (F + 1e-12);
                    }
            }
            double u = kind == UTIL_GRAD2 ? g2 : kind == UTIL_SALIENCY ? sqrt(w2) * sqrt(g2) : kind == UTIL_WEIGHT_NORM ? sqrt(w2) : fisher;
            utility[row * E + e] = u;
        }
        row++;
    }
    (void)n_moe;
    free(w), free(v), free(sum_g), free(sum_g2);
    return 0;
}

int grow_compute_utilities(const char *ckpt, const char *data_dir, UtilityKind kind, int batches, double *utility) {
    Model m;
    int has_opt;
    if (load_model(ckpt, &m, &has_opt)) return -1;
    int rc = utilities_of_model(&m, ckpt, has_opt, data_dir, kind, batches, 0, utility);
    model_free(&m);
    return rc;
}

/* ---- building the grown model ---- */

/* name of new expert j's tensor in the source: experts.<source[j]> */
static void source_name(const char *name, const LayerPlan *lp, char *out, size_t n) {
    const char *p = strstr(name, ".mlp.experts.");
    if (!p || !lp) {
        snprintf(out, n, "%s", name);
        return;
    }
    int j = atoi(p + strlen(".mlp.experts."));
    const char *rest = strchr(p + strlen(".mlp.experts."), '.');
    snprintf(out, n, "%.*s.mlp.experts.%d%s", (int)(p - name), name, lp->source[j], rest);
}

static const LayerPlan *plan_for_layer(const GrowPlan *plan, int layer) {
    for (int i = 0; i < plan->n_layers; i++)
        if (plan->layers[i].layer == layer) return &plan->layers[i];
    return NULL;
}

static int layer_of(const char *name) {
    const char *p = strstr(name, "model.layers.");
    return p ? atoi(p + strlen("model.layers.")) : -1;
}

/* Copies one buffer (params, m or v) of src into dst following the plan: same-name tensors,
 * replica expert tensors from their source, router rows and biases row by row. */
static void copy_following_plan(const Model *src, const Model *dst, const float *src_buf, float *dst_buf, const GrowPlan *plan) {
    char name[PARAM_NAME_MAX];
    for (int i = 0; i < dst->n_params; i++) {
        const ParamInfo *p = &dst->params[i];
        int layer = layer_of(p->name);
        const LayerPlan *lp = layer >= 0 ? plan_for_layer(plan, layer) : NULL;
        int is_router = strstr(p->name, ".mlp.gate.weight") != NULL, is_bias = strstr(p->name, "e_score_correction_bias") != NULL;
        source_name(p->name, lp, name, sizeof name);
        int s = model_find_param(src, name);
        if (s < 0) continue; /* not present in the source (dense -> MoE): filled by the caller */
        const ParamInfo *q = &src->params[s];
        if (lp && (is_router || is_bias)) {
            size_t row = is_router ? (size_t)p->shape[1] : 1;
            for (int j = 0; j < lp->n_new; j++)
                memcpy(dst_buf + p->offset + j * row, src_buf + q->offset + lp->source[j] * row, row * sizeof(float));
        } else {
            memcpy(dst_buf + p->offset, src_buf + q->offset, p->numel * sizeof(float));
        }
    }
}

/* Optimizer state of the replicas (and, for scale, of their sources) per --optim-state. */
static void adjust_optimizer_state(const Model *dst, float *mom1, float *mom2, const GrowPlan *plan, OptimStateKind kind) {
    if (kind == OPTIM_COPY) return;
    for (int i = 0; i < plan->n_layers; i++) {
        const LayerPlan *lp = &plan->layers[i];
        const LayerParams *L = &dst->layers[lp->layer];
        size_t C = dst->cfg.d_model, per_layer_rows = 0;
        (void)per_layer_rows;
        /* layer mean state per tensor kind, for interpolate */
        for (int part = 0; part < 4; part++) {
            size_t size = part < 3 ? dst->params[(part == 0 ? L->expert_gate : part == 1 ? L->expert_up : L->expert_down)].numel : C;
            float *mean1 = xcalloc(size, sizeof(float)), *mean2 = xcalloc(size, sizeof(float));
            for (int e = 0; e < lp->n_old; e++) {
                size_t off = part < 3 ? dst->params[(part == 0 ? L->expert_gate : part == 1 ? L->expert_up : L->expert_down) + e].offset
                                      : dst->params[L->router].offset + e * C;
                for (size_t k = 0; k < size; k++) mean1[k] += mom1[off + k] / lp->n_old, mean2[k] += mom2[off + k] / lp->n_old;
            }
            for (int j = 0; j < lp->n_new; j++) {
                size_t off = part < 3 ? dst->params[(part == 0 ? L->expert_gate : part == 1 ? L->expert_up : L->expert_down) + j].offset
                                      : dst->params[L->router].offset + j * C;
                int r = lp->copies[lp->source[j]];
                float *m1 = mom1 + off, *m2 = mom2 + off;
                if (kind == OPTIM_RESET && j >= lp->n_old) {
                    memset(m1, 0, size * sizeof(float)), memset(m2, 0, size * sizeof(float));
                } else if (kind == OPTIM_SCALE) {
                    /* a group of r copies shares the source's first moment: m/r, v/r^2 */
                    for (size_t k = 0; k < size; k++) m1[k] /= r, m2[k] /= (float)r * r;
                } else if (kind == OPTIM_INTERPOLATE && j >= lp->n_old) {
                    for (size_t k = 0; k < size; k++) m1[k] = 0.5f * (m1[k] + mean1[k]), m2[k] = 0.5f * (m2[k] + mean2[k]);
                }
            }
            free(mean1), free(mean2);
        }
    }
}

static cJSON *plan_to_json(const GrowPlan *plan, const GrowOptions *opt, const ModelConfig *from, const ModelConfig *to) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddStringToObject(j, "operator", opt->from_dense ? "dense-to-moe" : "expert-upcycling");
    cJSON_AddNumberToObject(j, "experts_before", from->n_experts);
    cJSON_AddNumberToObject(j, "experts_after", to->n_experts);
    cJSON_AddStringToObject(j, "alloc", opt->alloc == ALLOC_UTILITY ? "utility" : "uniform");
    if (opt->alloc == ALLOC_UTILITY) {
        cJSON_AddStringToObject(j, "utility", UTILITY_NAMES[opt->utility]);
        cJSON_AddNumberToObject(j, "utility_batches", opt->utility_batches);
        cJSON_AddNumberToObject(j, "utility_ranks", opt->all_ranks ? dist_size() : 1); /* MPI ranks that scored them */
    }
    char spec[128];
    expert_init_describe(&opt->expert_init, spec, sizeof spec);
    cJSON_AddStringToObject(j, "expert_init", spec);
    router_init_describe(&opt->router_init, spec, sizeof spec);
    cJSON_AddStringToObject(j, "router_init", spec);
    cJSON_AddStringToObject(j, "optim_state", OPTIM_NAMES[opt->optim_state]);
    cJSON_AddNumberToObject(j, "bias_noise", opt->bias_noise);
    cJSON_AddNumberToObject(j, "seed", (double)opt->seed);
    cJSON_AddStringToObject(j, "expert_order", "originals keep indices 0..E-1; replicas appended in order of their source");
    cJSON_AddItemToObject(j, "layers", grow_plan_layers_json(plan));
    return j;
}

/* --layers: NULL or "all" selects every layer; else a comma list of MoE layer indices */
static int parse_layers(const char *spec, const Model *m, int *selected) {
    for (int l = 0; l < m->cfg.n_layers; l++) selected[l] = spec == NULL || !strcmp(spec, "all");
    if (spec == NULL || !strcmp(spec, "all")) return 0;
    char *copy = xstrdup(spec), *save = NULL;
    int rc = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
        char *end;
        long l = strtol(tok, &end, 10);
        if (*end || end == tok || l < 0 || l >= m->cfg.n_layers || !m->layers[l].is_moe)
            rc = up_error("--layers %s: '%s' is not an MoE layer of this checkpoint; expected all or a list of MoE layer indices", spec, tok);
        else selected[l] = 1;
    }
    free(copy);
    return rc;
}

static double check_loss(Model *m, const char *data_dir, int B, int T, int batches) {
    Loader ld;
    if (loader_open(&ld, data_dir, "val", B, T, 0, 0)) return NAN;
    model_set_batch(m, B, T);
    double loss = evaluate_loss(m, &ld, batches);
    loader_close(&ld);
    return loss;
}

int grow_checkpoint(const char *in_dir, const char *out_dir, const GrowOptions *opt, GrowReport *report) {
    memset(report, 0, sizeof *report);
    if (path_exists(out_dir) && !opt->force)
        return up_error("%s: output exists; expected a new directory (or --force to replace it)", out_dir);
    Model src, dst;
    int has_opt;
    if (load_model(in_dir, &src, &has_opt)) return -1;
    const ModelConfig *sc = &src.cfg;
    int n_moe = model_config_n_moe_layers(sc), rc = 0;
    ModelConfig dc = *sc;
    if (opt->from_dense) {
        if (n_moe > 0) rc = up_error("%s: checkpoint already has %d MoE layers; expected a dense checkpoint for --from-dense (use --factor/--experts)", in_dir, n_moe);
        else if (opt->target_experts < 1 || opt->top_k < 1 || opt->top_k > opt->target_experts)
            rc = up_error("--from-dense needs --experts N and --top-k K with 1 <= K <= N; expected e.g. --experts 8 --top-k 2");
        dc.n_experts = opt->target_experts, dc.top_k = opt->top_k, dc.moe_intermediate_size = sc->intermediate_size;
        dc.decoder_sparse_step = opt->sparse_step;
    } else {
        if (n_moe == 0) rc = up_error("%s: checkpoint has no MoE layers; expected an MoE checkpoint (use --from-dense --experts N --top-k K for a dense one)", in_dir);
        int target = opt->target_experts ? opt->target_experts : opt->factor * sc->n_experts;
        if (!rc && (opt->factor < 0 || (opt->factor == 0 && opt->target_experts == 0)))
            rc = up_error("grow: --factor %d; expected --factor M >= 1 or --experts N", opt->factor);
        else if (!rc && target < sc->n_experts)
            rc = up_error("grow: target %d experts is below the checkpoint's %d; expected a target >= %d", target, sc->n_experts, sc->n_experts);
        dc.n_experts = target;
    }
    if (opt->save_dtype) dc.weight_dtype = opt->save_dtype - 1;
    if (opt->save_layout) dc.packed_experts = opt->save_layout == SAVE_PACKED;
    if (rc || model_config_validate(&dc, "grown config") || model_create(&dst, &dc, backend_cpu())) {
        model_free(&src);
        return -1;
    }
    report->n_old = sc->n_experts, report->n_new = dc.n_experts;

    /* ---- plan ---- */
    GrowPlan plan = {0};
    int dst_moe = model_config_n_moe_layers(&dc);
    plan.layers = xcalloc(dst_moe, sizeof(LayerPlan));
    double *utility = NULL;
    if (!opt->from_dense && opt->alloc == ALLOC_UTILITY) {
        utility = xcalloc((size_t)n_moe * sc->n_experts, sizeof(double));
        rc = utilities_of_model(&src, in_dir, has_opt, opt->data_dir, opt->utility, opt->utility_batches, opt->all_ranks,
                                utility);
        if (!rc && opt->all_ranks && dist_rank() != 0) { /* the scores are in; rank 0 writes */
            free(utility), free(plan.layers);
            model_free(&src), model_free(&dst);
            return 0;
        }
    }
    int selected[MAX_LAYERS];
    if (!rc) rc = parse_layers(opt->layers, &dst, selected);
    int row = 0;
    for (int l = 0; l < dc.n_layers && !rc; l++) {
        if (!dst.layers[l].is_moe) continue;
        LayerPlan *lp = &plan.layers[plan.n_layers++];
        lp->layer = l;
        lp->n_old = opt->from_dense ? 1 : sc->n_experts;
        lp->n_new = dc.n_experts;
        lp->source = xcalloc(lp->n_new, sizeof(int));
        lp->copies = xcalloc(lp->n_old, sizeof(int));
        if (opt->from_dense) {
            lp->copies[0] = lp->n_new;
            for (int j = 0; j < lp->n_new; j++) lp->source[j] = 0;
        } else if (opt->alloc == ALLOC_UTILITY && selected[l]) {
            lp->utility = xmalloc(sizeof(double) * lp->n_old);
            memcpy(lp->utility, utility + (size_t)row * lp->n_old, sizeof(double) * lp->n_old);
            rc = allocate_greedy(lp, lp->utility, opt->max_copies);
        } else {
            rc = allocate_uniform(lp);
            if (!rc && opt->max_copies > 0 && lp->copies[0] > opt->max_copies)
                rc = up_error("uniform growth needs %d copies per expert; expected --max-copies >= %d", lp->copies[0], lp->copies[0]);
        }
        row++;
    }
    free(utility);

    /* ---- weights, router, biases, optimizer state ---- */
    Rng rng;
    rng_seed(&rng, opt->seed);
    if (!rc) {
        copy_following_plan(&src, &dst, src.param_mem, dst.param_mem, &plan);
        if (has_opt) {
            copy_following_plan(&src, &dst, src.adam_m, dst.adam_m, &plan);
            copy_following_plan(&src, &dst, src.adam_v, dst.adam_v, &plan);
            adjust_optimizer_state(&dst, dst.adam_m, dst.adam_v, &plan, opt->optim_state);
            dst.step = src.step;
        }
        int F = dc.moe_intermediate_size, C = dc.d_model;
        for (int i = 0; i < plan.n_layers && !rc; i++) {
            const LayerPlan *lp = &plan.layers[i];
            const LayerParams *L = &dst.layers[lp->layer];
            float *gate = model_param(&dst, L->expert_gate), *up = model_param(&dst, L->expert_up);
            float *down = model_param(&dst, L->expert_down), *router = model_param(&dst, L->router);
            float *bias = model_param(&dst, L->expert_bias);
            if (opt->from_dense) {
                /* every expert is the dense FFN; fresh router, zero biases */
                const LayerParams *S = &src.layers[lp->layer];
                size_t n = (size_t)F * C;
                for (int e = 0; e < lp->n_new; e++) {
                    memcpy(gate + e * n, model_param(&src, S->gate_proj), n * sizeof(float));
                    memcpy(up + e * n, model_param(&src, S->up_proj), n * sizeof(float));
                    memcpy(down + e * n, model_param(&src, S->down_proj), n * sizeof(float));
                }
                for (size_t k = 0; k < (size_t)lp->n_new * C; k++) router[k] = dc.init_std * rng_normal(&rng);
                memset(bias, 0, sizeof(float) * lp->n_new);
                for (int e = 1; e < lp->n_new && !rc; e++)
                    rc = expert_init_apply(&opt->expert_init, gate, up, down, lp->n_new, C, F, 0, e, &rng);
                continue;
            }
            float noise = grow_bias_noise_std(bias, lp->n_old, opt->bias_noise);
            for (int j = lp->n_old; j < lp->n_new && !rc; j++) {
                bias[j] += noise * rng_normal(&rng);
                if (!selected[lp->layer]) continue; /* outside --layers: exact copies */
                rc = expert_init_apply(&opt->expert_init, gate, up, down, lp->n_new, C, F, lp->source[j], j, &rng);
                if (!rc) rc = router_init_apply(&opt->router_init, router, bias, lp->n_new, C, lp->source[j], j, &rng);
            }
        }
    }

    /* ---- check, report, write ---- */
    if (!rc && opt->check) {
        if (!opt->data_dir) rc = up_error("--check needs --data DIR; expected a data directory with val.bin");
        else {
            int B, T;
            batch_shape(in_dir, sc, &B, &T);
            report->loss_before = check_loss(&src, opt->data_dir, B, T, opt->check_batches);
            report->loss_after = check_loss(&dst, opt->data_dir, B, T, opt->check_batches);
            if (isnan(report->loss_before) || isnan(report->loss_after)) rc = -1;
        }
    }
    if (!rc && !opt->quiet) grow_plan_print_table(&plan, opt->alloc == ALLOC_UTILITY && !opt->from_dense);
    if (!rc) {
        TrainerState st, *stp = NULL;
        if (trainer_state_load(in_dir, &st) == 0) stp = &st;
        cJSON *j = plan_to_json(&plan, opt, sc, &dc);
        if (opt->check) {
            cJSON_AddNumberToObject(j, "check_loss_before", report->loss_before);
            cJSON_AddNumberToObject(j, "check_loss_after", report->loss_after);
        }
        char *text = cJSON_Print(j);
        cJSON_Delete(j);
        rc = checkpoint_save_with(out_dir, &dst, stp, has_opt, "grow.json", text);
        report->written = !rc;
        free(text);
    }
    grow_plan_free(&plan);
    model_free(&src);
    model_free(&dst);
    return rc;
}
