/* runner.c - executes a plan's stages (resumable), collects results, statistics and reports. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <omp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "experiment/cost.h"
#include "experiment/diag.h"
#include "experiment/experiment.h"
#include "experiment/report.h"
#include "experiment/stats.h"
#include "io/checkpoint.h"
#include "io/run_dir.h"
#include "model.h"
#include "train.h"
#include "util.h"
#include "util/json.h"

typedef struct {
    long long steps_total, steps_done; /* steps_done: of finished stages */
    long long steps_at_start;          /* steps already done when this invocation started */
    double started;
    int stages_total, stages_done, running;
    int tokens_per_step;
    int quiet;
} Progress;

static char *stage_dir(const ExperimentOptions *opt, const Stage *s) {
    char *stages = path_join(opt->out_dir, "stages"), *dir = path_join(stages, s->key);
    free(stages);
    return dir;
}

static int stage_done(const ExperimentOptions *opt, const Stage *s) {
    char *dir = stage_dir(opt, s), *path = path_join(dir, "stage.json");
    int done = path_exists(path);
    free(dir), free(path);
    return done;
}

/* the latest resumable checkpoint of an interrupted stage, or NULL */
static char *latest_checkpoint(const char *dir) {
    int *steps, n;
    run_dir_list_checkpoints(dir, 1, &steps, &n);
    char *latest = n ? run_dir_checkpoint(dir, steps[n - 1]) : NULL;
    free(steps);
    return latest;
}

static ModelConfig stage_model(const Plan *p, const Run *r, const Stage *s) {
    ModelConfig mc = p->model;
    mc.n_experts = s->experts;
    mc.top_k = s->experts ? r->top_k : 0;
    return mc;
}

static int write_stage_json(const char *dir, const Stage *s, const TrainResult *res, double flops, double before, double after) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "key", s->key);
    cJSON_AddNumberToObject(j, "steps", s->steps);
    cJSON_AddNumberToObject(j, "experts", s->experts);
    double sps = res->steps_run ? res->step_seconds / res->steps_run : 0;
    cJSON_AddNumberToObject(j, "seconds_per_step", sps);
    cJSON_AddNumberToObject(j, "seconds", sps * s->steps);
    cJSON_AddNumberToObject(j, "flops", flops);
    cJSON_AddNumberToObject(j, "final_val_loss", res->final_val_loss);
    cJSON_AddNumberToObject(j, "final_val_stderr", res->final_val_stderr);
    cJSON_AddNumberToObject(j, "final_val_tokens", (double)res->final_val_tokens);
    if (!isnan(before)) cJSON_AddNumberToObject(j, "loss_before_growth", before);
    if (!isnan(after)) cJSON_AddNumberToObject(j, "loss_after_growth", after);
    char *text = cJSON_Print(j), *path = path_join(dir, "stage.json");
    int rc = atomic_write_file(path, text, strlen(text));
    free(text), free(path);
    cJSON_Delete(j);
    return rc;
}

static void add_num_or_null(cJSON *j, const char *key, double v) {
    if (isnan(v)) cJSON_AddNullToObject(j, key);
    else cJSON_AddNumberToObject(j, key, v);
}

/* "[experiment 3/27 stages, 2 running | 41% of steps | 12.3 steps/s, 25.2k tokens/s | 5m10s elapsed, ETA 8m05s]";
 * steps_now adds the running stages' progress to the finished ones; the rate is this invocation's */
static void print_progress(const Progress *pg, long long steps_now, const char *what) {
    if (pg->quiet) return;
    double elapsed = now_seconds() - pg->started;
    long long measured = steps_now - pg->steps_at_start;
    char el[32], eta[48] = "ETA: measuring";
    format_duration(elapsed, el, sizeof el);
    double rate = measured > 0 && elapsed > 0 ? measured / elapsed : 0;
    if (rate > 0) {
        char t[32];
        format_duration((pg->steps_total - steps_now) / rate, t, sizeof t);
        snprintf(eta, sizeof eta, "ETA %s", t);
    }
    char running[32] = "";
    if (pg->running) snprintf(running, sizeof running, ", %d running", pg->running);
    printf("[experiment %d/%d stages%s | %.0f%% of steps | %.1f steps/s, %.1fk tokens/s | %s elapsed, %s] %s\n", pg->stages_done,
           pg->stages_total, running, pg->steps_total ? 100.0 * steps_now / pg->steps_total : 100.0, rate,
           rate * pg->tokens_per_step / 1e3, el, eta, what);
    fflush(stdout);
}

/* ranks training one stage together: a failure on one must end them all, after saying why;
 * alone (one process, a worker, or a rank training its own stage) the error is returned */
static void stop_other_ranks(void) {
    if (!dist_active()) return;
    fprintf(stderr, "upcycle: rank %d: %s\n", dist_rank(), up_last_error());
    fflush(stderr);
    dist_abort(1);
}

static int run_stage(const Plan *p, const Run *r, int k, const ExperimentOptions *opt, Progress *pg) {
    const Stage *s = &r->stages[k];
    if (stage_done(opt, s)) return 0;
    char *dir = stage_dir(opt, s);
    char what[600];
    snprintf(what, sizeof what, "%s: stage %d (%s, %d experts, %d steps)", r->id, k,
             s->kind == STAGE_GROW ? "grow + CPT" : s->kind == STAGE_FRESH_CONTINUE ? "fresh big model" : "train", s->experts, s->steps);
    print_progress(pg, pg->steps_done, what);
    ModelConfig mc = stage_model(p, r, s);
    TrainConfig tc = p->train;
    tc.steps = s->steps;
    tc.precision = opt->precision;
    tc.seed = p->train.seed + (unsigned long long)r->seed * 1000003ULL;
    tc.eval_batches = p->train.eval_batches;
    if (tc.eval_every <= 0 || tc.eval_every > s->steps) tc.eval_every = s->steps;
    tc.save_every = s->steps >= 8 ? s->steps / 4 : 0;
    if (k > 0 && !s->rewarm) tc.warmup_steps = 0;
    if (s->decay_frac >= 0) tc.decay_frac = s->decay_frac;
    if (tc.warmup_steps >= s->steps) tc.warmup_steps = s->steps / 10;
    TrainOptions to = {.data_dir = opt->data_dir, .out_dir = dir, .quiet = 1, .final_eval_batches = p->final_eval_batches,
                       .keep_checkpoints = k > 0 ? 1000 : 1, .backend = opt->backend,
                       .expert_parallel = opt->expert_parallel, .ep_size = opt->ep_size};
    char *resume = latest_checkpoint(dir), *prev_final = NULL, *grown = NULL;
    double before = NAN, after = NAN;
    int rc = 0;
    if (k > 0) {
        char *prev_dir = stage_dir(opt, &r->stages[k - 1]);
        prev_final = path_join(prev_dir, "final");
        free(prev_dir);
    }
    int leader = dist_rank() == 0;
    if (!resume && leader) {
        /* a stage without a checkpoint restarts from scratch: drop partial metrics */
        char *metrics = run_dir_metrics(dir);
        remove(metrics);
        free(metrics);
    }
    if (s->kind == STAGE_GROW) {
        grown = path_join(dir, "grown");
        char *grow_json = path_join(grown, "grow.json");
        if (leader && !path_exists(grow_json)) { /* data parallel: rank 0 grows, the others wait */
            GrowOptions g = s->grow;
            g.data_dir = opt->data_dir, g.force = 1, g.quiet = 1, g.check = 1;
            g.seed = tc.seed;
            GrowReport gr;
            rc = mkdir_p(dir) || grow_checkpoint(prev_final, grown, &g, &gr);
        }
        if (rc) stop_other_ranks(); /* rank 0 failed: do not leave the others waiting */
        dist_wait_for_leader("the growth on rank 0");
        if (!rc) {
            cJSON *j = json_load_file(grow_json, "the grow.json written by `upcycle grow`");
            rc = !j || json_opt_number(grow_json, j, "check_loss_before", NAN, &before) ||
                 json_opt_number(grow_json, j, "check_loss_after", NAN, &after);
            cJSON_Delete(j);
        }
        free(grow_json);
        to.init = grown, to.stream_from = grown;
    } else if (s->kind == STAGE_FRESH_CONTINUE) {
        to.stream_from = prev_final;
    }
    if (resume) to.init = NULL, to.resume = resume;
    TrainResult res = {0};
    if (!rc) rc = train_run(&mc, &tc, &to, &res);
    if (!rc) {
        double flops = 3.0 * model_flops_per_token(&mc, tc.seq_len) * (double)tc.batch_size * tc.seq_len * s->steps;
        if (leader) rc = write_stage_json(dir, s, &res, flops, before, after);
        if (!pg->quiet) {
            printf("    done %s: val loss %.4f (s.e. %.4f over %lld tokens), %.3f s/step\n", s->key, res.final_val_loss, res.final_val_stderr,
                   res.final_val_tokens, res.steps_run ? res.step_seconds / res.steps_run : 0);
            if (!isnan(before)) printf("    growth: val loss %.4f -> %.4f right after growth\n", before, after);
            fflush(stdout);
        }
    }
    free(res.losses);
    free(resume), free(prev_final), free(grown), free(dir);
    if (rc) stop_other_ranks();
    dist_wait_for_leader("the end of a stage on rank 0"); /* every rank sees its stage.json */
    return rc;
}

/* ---- collecting results ---- */

typedef struct {
    const Run *run;
    int ok;
    double final_val, final_se, final_tokens, seconds, flops, before, after;
    double stage_sps[3], stage_flops[3];
} RunResult;

/* one line of metrics.jsonl (train.c writes them): the step, its loss (null on a skipped
 * step), the validation loss at evaluation steps and the per-layer load imbalance */
static int metrics_line(const char *origin, const cJSON *j, int *step, double *loss, double *val, const cJSON **imb) {
    return json_get_int(origin, j, "step", step) || json_get_number_or_null(origin, j, "loss", loss) ||
           json_opt_number(origin, j, "val_loss", NAN, val) || json_opt_array(origin, j, "load_imbalance", imb);
}

/* metrics.jsonl of one stage appended to the curve/load arrays, steps offset by `offset`;
 * a line that is not JSON (cut short by a crash) is skipped, a malformed field is an error */
static int append_curve(const char *stage_path, int offset, double *flops_acc, double *seconds_acc, double flops_per_step,
                        double sps, int tokens_per_step, cJSON *curve, cJSON *load_steps, cJSON *load_rows) {
    char *path = run_dir_metrics(stage_path), *text;
    size_t n;
    if (read_file(path, &text, &n)) {
        free(path);
        return 0;
    }
    int last_step = 0, line_no = 0, rc = 0;
    for (char *line = strtok(text, "\n"); line && !rc; line = strtok(NULL, "\n")) {
        char origin[4200];
        snprintf(origin, sizeof origin, "%s: line %d", path, ++line_no);
        cJSON *j = cJSON_Parse(line);
        if (!cJSON_IsObject(j)) {
            cJSON_Delete(j);
            continue;
        }
        int step;
        double loss, val;
        const cJSON *imb;
        if ((rc = metrics_line(origin, j, &step, &loss, &val, &imb)) || step <= last_step) {
            cJSON_Delete(j); /* duplicate lines after a resume: keep the first pass */
            continue;
        }
        last_step = step;
        int global = offset + step;
        if (!isnan(val) || step % 10 == 0) {
            cJSON *pt = cJSON_CreateObject();
            cJSON_AddNumberToObject(pt, "step", global);
            cJSON_AddNumberToObject(pt, "tokens", (double)global * tokens_per_step);
            cJSON_AddNumberToObject(pt, "flops", *flops_acc + flops_per_step * step);
            cJSON_AddNumberToObject(pt, "seconds", *seconds_acc + sps * step);
            cJSON_AddNumberToObject(pt, "loss", loss);
            if (isnan(val)) cJSON_AddNullToObject(pt, "val_loss");
            else cJSON_AddNumberToObject(pt, "val_loss", val);
            cJSON_AddItemToArray(curve, pt);
        }
        if (step % 5 == 0 && cJSON_GetArraySize(imb) > 0) {
            cJSON_AddItemToArray(load_steps, cJSON_CreateNumber(global));
            for (int layer = 0; layer < cJSON_GetArraySize(imb) && !rc; layer++) {
                double v;
                if ((rc = json_elem_number(origin, imb, "load_imbalance", layer, &v))) break;
                cJSON *row = cJSON_GetArrayItem(load_rows, layer);
                if (!row) cJSON_AddItemToArray(load_rows, row = cJSON_CreateArray());
                cJSON_AddItemToArray(row, cJSON_CreateNumber(v));
            }
        }
        cJSON_Delete(j);
    }
    free(text), free(path);
    *flops_acc += flops_per_step * last_step;
    *seconds_acc += sps * last_step;
    return rc;
}

/* one layer of a diag_checkpoint result as a results.json "diag" entry (diag.h has the format;
 * the four statistics are null where undefined, routing ones absent without a probe) */
static int diag_entry(const char *origin, const cJSON *layer, int step, cJSON *out) {
    static const char *keys[] = {"replica_cosine_mean", "cosine_to_source_mean", "jaccard_mean", "routing_entropy"};
    int l;
    double v[4];
    const cJSON *dead;
    if (json_get_int(origin, layer, "layer", &l) || json_opt_array(origin, layer, "dead_experts", &dead)) return -1;
    for (int k = 0; k < 4; k++)
        if (json_opt_number(origin, layer, keys[k], NAN, &v[k])) return -1;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "step", step);
    cJSON_AddNumberToObject(e, "layer", l);
    for (int k = 0; k < 4; k++) {
        if (isnan(v[k])) cJSON_AddNullToObject(e, keys[k]);
        else cJSON_AddNumberToObject(e, keys[k], v[k]);
    }
    cJSON_AddNumberToObject(e, "dead_experts", cJSON_GetArraySize(dead));
    cJSON_AddItemToArray(out, e);
    return 0;
}

/* diagnostics at the grown checkpoint, every periodic checkpoint and the final one */
static int append_diag(const ExperimentOptions *opt, const char *stage_path, const char *prev_final, int offset, cJSON *out) {
    char *grown = path_join(stage_path, "grown"), *grow_json = path_join(grown, "grow.json");
    if (!path_exists(grow_json)) {
        free(grown), free(grow_json);
        return 0;
    }
    int rc = 0;
    /* the grown checkpoint (step 0), every periodic one, then the final one (-1) */
    int *ckpts, n_ckpts;
    run_dir_list_checkpoints(stage_path, 0, &ckpts, &n_ckpts);
    int n = n_ckpts + 2, *steps = xmalloc(sizeof(int) * (size_t)n);
    steps[0] = 0, steps[n - 1] = -1;
    if (n_ckpts) memcpy(steps + 1, ckpts, sizeof(int) * (size_t)n_ckpts);
    free(ckpts);
    for (int i = 0; i < n && !rc; i++) {
        char *ck;
        if (steps[i] == 0) ck = xstrdup(grown);
        else if (steps[i] < 0) ck = path_join(stage_path, RUN_FINAL_NAME);
        else ck = run_dir_checkpoint(stage_path, steps[i]);
        cJSON *dj = diag_checkpoint(ck, grow_json, prev_final, opt->data_dir, opt->probe_batches);
        TrainerState st;
        int step = steps[i] >= 0 ? steps[i] : (trainer_state_load(ck, &st) == 0 ? st.step : 0);
        char origin[600];
        snprintf(origin, sizeof origin, "diagnostics of %s", ck);
        const cJSON *layers = NULL, *layer;
        if (dj) rc = json_get_array(origin, dj, "layers", &layers); /* a checkpoint it cannot read has no entry */
        for (int l = 0; l < cJSON_GetArraySize(layers) && !rc; l++)
            rc = json_elem_object(origin, layers, "layers", l, &layer) || diag_entry(origin, layer, offset + step, out);
        cJSON_Delete(dj);
        free(ck);
    }
    free(steps), free(grown), free(grow_json);
    return rc ? -1 : 0;
}

/* a stage.json as write_stage_json writes it (fields older versions lack are optional) */
typedef struct {
    double sps, flops, final_val, final_se, final_tokens, before, after;
} StageJson;

static int read_stage_json(const char *path, StageJson *sj) {
    cJSON *j = json_load_file(path, "a stage.json written by `upcycle experiment`");
    if (!j) return -1;
    int rc = json_get_number_or_null(path, j, "seconds_per_step", &sj->sps) || json_get_number_or_null(path, j, "flops", &sj->flops) ||
             json_get_number_or_null(path, j, "final_val_loss", &sj->final_val) ||
             json_opt_number(path, j, "final_val_stderr", NAN, &sj->final_se) ||
             json_opt_number(path, j, "final_val_tokens", NAN, &sj->final_tokens) ||
             json_opt_number(path, j, "loss_before_growth", NAN, &sj->before) || json_opt_number(path, j, "loss_after_growth", NAN, &sj->after);
    cJSON_Delete(j);
    return rc ? -1 : 0;
}

/* one run's entry of results.json from its stages' files; a stage without stage.json makes a
 * failed run; NULL with up_error when a file the run has is malformed */
static cJSON *collect_run(const Plan *p, const Run *r, const ExperimentOptions *opt, RunResult *rr) {
    memset(rr, 0, sizeof *rr);
    rr->run = r;
    rr->before = rr->after = NAN;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", r->id);
    cJSON_AddStringToObject(j, "sweep", r->sweep);
    cJSON_AddStringToObject(j, "arm", r->arm);
    cJSON_AddStringToObject(j, "label", r->label);
    if (isnan(r->x)) cJSON_AddNullToObject(j, "x");
    else cJSON_AddNumberToObject(j, "x", r->x);
    cJSON_AddNumberToObject(j, "seed", r->seed);
    cJSON *growth = cJSON_AddArrayToObject(j, "growth_steps"), *experts = cJSON_AddArrayToObject(j, "experts");
    cJSON *stages = cJSON_AddArrayToObject(j, "stages"), *curve = cJSON_CreateArray(), *diag = cJSON_CreateArray();
    cJSON *load = cJSON_CreateObject(), *load_steps = cJSON_CreateArray(), *load_rows = cJSON_CreateArray();
    int ok = 1, offset = 0, rc = 0;
    double flops_acc = 0, seconds_acc = 0, final_val = NAN;
    for (int k = 0; k < r->n_stages && !rc; k++) {
        const Stage *s = &r->stages[k];
        char *dir = stage_dir(opt, s), *path = path_join(dir, "stage.json");
        StageJson sj;
        if (!path_exists(path)) ok = 0;
        else rc = read_stage_json(path, &sj);
        free(path);
        if (!ok || rc) {
            free(dir);
            break;
        }
        if (k > 0) cJSON_AddItemToArray(growth, cJSON_CreateNumber(offset));
        cJSON_AddItemToArray(experts, cJSON_CreateNumber(s->experts));
        double sps = sj.sps, flops = sj.flops;
        rr->stage_sps[k] = sps, rr->stage_flops[k] = flops;
        cJSON *st = cJSON_CreateObject();
        cJSON_AddNumberToObject(st, "steps", s->steps);
        cJSON_AddNumberToObject(st, "experts", s->experts);
        cJSON_AddNumberToObject(st, "seconds", sps * s->steps);
        cJSON_AddNumberToObject(st, "seconds_per_step", sps);
        cJSON_AddNumberToObject(st, "flops", flops);
        cJSON_AddNumberToObject(st, "final_val_loss", sj.final_val);
        add_num_or_null(st, "final_val_stderr", sj.final_se);
        add_num_or_null(st, "final_val_tokens", sj.final_tokens);
        cJSON_AddItemToArray(stages, st);
        rr->final_se = sj.final_se, rr->final_tokens = sj.final_tokens;
        if (k == 1) rr->before = sj.before, rr->after = sj.after;
        final_val = sj.final_val;
        rc = append_curve(dir, offset, &flops_acc, &seconds_acc, flops / s->steps, sps,
                          p->train.batch_size * p->train.seq_len, curve, load_steps, load_rows);
        if (!rc && s->kind == STAGE_GROW && opt->probe_batches > 0) {
            char *prev = stage_dir(opt, &r->stages[k - 1]), *prev_final = path_join(prev, "final");
            rc = append_diag(opt, dir, prev_final, offset, diag);
            free(prev), free(prev_final);
        }
        offset += s->steps;
        rr->seconds += sps * s->steps, rr->flops += flops;
        free(dir);
    }
    if (rc) {
        cJSON_Delete(j), cJSON_Delete(curve), cJSON_Delete(diag), cJSON_Delete(load), cJSON_Delete(load_steps), cJSON_Delete(load_rows);
        return NULL;
    }
    rr->ok = ok, rr->final_val = final_val;
    cJSON_AddStringToObject(j, "status", ok ? "done" : "failed");
    cJSON_AddNumberToObject(j, "final_val_loss", ok ? final_val : 0);
    add_num_or_null(j, "final_val_stderr", ok ? rr->final_se : NAN);
    add_num_or_null(j, "final_val_tokens", ok ? rr->final_tokens : NAN);
    cJSON_AddNumberToObject(j, "total_seconds", rr->seconds);
    cJSON_AddNumberToObject(j, "total_flops", rr->flops);
    if (isnan(rr->before)) cJSON_AddNullToObject(j, "loss_before_growth"), cJSON_AddNullToObject(j, "loss_after_growth");
    else cJSON_AddNumberToObject(j, "loss_before_growth", rr->before), cJSON_AddNumberToObject(j, "loss_after_growth", rr->after);
    cJSON_AddItemToObject(j, "curve", curve);
    cJSON *layers = cJSON_AddArrayToObject(load, "layers");
    ModelConfig mc = stage_model(p, r, &r->stages[r->n_stages - 1]);
    for (int l = 0; l < mc.n_layers; l++)
        if (layer_is_moe(&mc, l)) cJSON_AddItemToArray(layers, cJSON_CreateNumber(l));
    cJSON_AddItemToObject(load, "steps", load_steps);
    cJSON_AddItemToObject(load, "imbalance", load_rows);
    cJSON_AddItemToObject(j, "load", load);
    cJSON_AddItemToObject(j, "diag", diag);
    return j;
}

/* ---- comparisons ---- */

static const RunResult *find_fixed(const RunResult *rr, int n, int experts, int top_k, int steps, int seed) {
    for (int i = 0; i < n; i++) {
        const Run *r = rr[i].run;
        if (rr[i].ok && r->n_stages == 1 && !strncmp(r->arm, "fixed", 5) && r->stages[0].experts == experts &&
            r->top_k == top_k && r->total_steps == steps && r->seed == seed)
            return &rr[i];
    }
    return NULL;
}

/* per-seed final losses, their mean and spread, and the evaluation's own standard error
 * (mean over seeds of each run's standard error over validation windows) */
static cJSON *stat_object(const double *v, const double *se, int n) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "mean", stats_mean(v, n));
    cJSON_AddNumberToObject(o, "std", stats_std(v, n));
    cJSON_AddNumberToObject(o, "n", n);
    cJSON_AddItemToObject(o, "values", cJSON_CreateDoubleArray(v, n));
    add_num_or_null(o, "eval_stderr", stats_mean(se, n));
    cJSON_AddItemToObject(o, "eval_stderr_values", cJSON_CreateDoubleArray(se, n));
    return o;
}

static void add_interval(cJSON *o, const char *key, double lo, double hi) {
    if (isnan(lo) || isnan(hi)) {
        cJSON_AddNullToObject(o, key);
        return;
    }
    double ci[2] = {lo, hi};
    cJSON_AddItemToObject(o, key, cJSON_CreateDoubleArray(ci, 2));
}

/* d_s = a_s - b_s per seed, with the paired t and bootstrap intervals */
static cJSON *paired_object(const double *a, const double *b, int n, const PairedGap *g) {
    cJSON *o = cJSON_CreateObject();
    double d[100];
    for (int i = 0; i < n; i++) d[i] = a[i] - b[i];
    cJSON_AddItemToObject(o, "values", cJSON_CreateDoubleArray(d, n));
    cJSON_AddNumberToObject(o, "n", n);
    add_num_or_null(o, "mean", g->mean);
    add_num_or_null(o, "sd", g->sd);
    add_interval(o, "t_ci95", g->t_lo, g->t_hi);
    add_interval(o, "bootstrap_ci95", g->boot_lo, g->boot_hi);
    return o;
}

/* the saving under a cost model of where the user trains (--cost-ratio or --cluster), labelled
 * as modeled; NULL when neither is given */
static cJSON *modeled_compute(const Plan *p, const Run *r, const ExperimentOptions *opt) {
    if (!(opt->cost_ratio > 0) && !opt->cluster) return NULL;
    int T = r->total_steps, tau = r->stages[0].steps;
    double tau_frac = (double)tau / T, ratio;
    cJSON *m = cJSON_CreateObject();
    cJSON_AddBoolToObject(m, "modeled", 1);
    if (opt->cost_ratio > 0) {
        ratio = opt->cost_ratio;
        cJSON_AddStringToObject(m, "source", "--cost-ratio (t_mE / t_E as given)");
    } else {
        const ClusterShape *c = opt->cluster;
        ModelConfig small = p->model, big = p->model;
        small.n_experts = r->small_experts, big.n_experts = r->big_experts;
        small.top_k = big.top_k = r->top_k;
        int tokens = p->train.batch_size * p->train.seq_len;
        StepCost a = cost_model_step(&small, tokens, p->train.seq_len, c), b = cost_model_step(&big, tokens, p->train.seq_len, c);
        ratio = b.total / a.total;
        char src[200];
        snprintf(src, sizeof src, "cluster model: %d GPUs, expert parallel %d, %g GB/s links, %g TFLOP/s, %g GB/s HBM", c->gpus, c->ep,
                 c->link_gbs, c->tflops, c->hbm_gbs);
        cJSON_AddStringToObject(m, "source", src);
        const StepCost *parts[2] = {&a, &b};
        const char *names[2] = {"step_E", "step_mE"};
        for (int i = 0; i < 2; i++) {
            cJSON *o = cJSON_AddObjectToObject(m, names[i]);
            cJSON_AddNumberToObject(o, "compute_s", parts[i]->compute);
            cJSON_AddNumberToObject(o, "all_to_all_s", parts[i]->all_to_all);
            cJSON_AddNumberToObject(o, "grad_sync_s", parts[i]->grad_sync);
            cJSON_AddNumberToObject(o, "optimizer_s", parts[i]->optimizer);
            cJSON_AddNumberToObject(o, "total_s", parts[i]->total);
            cJSON_AddNumberToObject(o, "params_per_gpu", parts[i]->params_per_gpu);
            cJSON_AddBoolToObject(o, "fits_memory", parts[i]->fits);
        }
    }
    cJSON_AddNumberToObject(m, "ratio_t_mE_over_t_E", ratio);
    cJSON_AddNumberToObject(m, "saving_pct", 100.0 * cost_saving(tau_frac, ratio));
    cJSON_AddNumberToObject(m, "sunk_cost_saving_pct", 100.0 * cost_sunk_saving(tau_frac));
    return m;
}

static cJSON *compare(const Plan *p, const RunResult *rr, int n, cJSON *notes, const ExperimentOptions *opt) {
    cJSON *out = cJSON_CreateArray();
    int *done = xcalloc(n, sizeof(int));
    for (int i = 0; i < n; i++) {
        const Run *r = rr[i].run;
        int premise = !strcmp(r->sweep, "premise") && !strcmp(r->arm, "fixed-mE");
        if (done[i] || (!premise && !strncmp(r->arm, "fixed", 5))) continue;
        double lE[100], lU[100], lM[100], sE[100], sU[100], sM[100], seeds[100];
        double tE = 0, tM = 0, fE = 0, fM = 0, up_seconds = 0, up_flops = 0;
        int k = 0;
        for (int j = i; j < n; j++) {
            const Run *q = rr[j].run;
            if (strcmp(q->sweep, r->sweep) || strcmp(q->arm, r->arm) || strcmp(q->label, r->label)) continue;
            done[j] = 1;
            const RunResult *E = find_fixed(rr, n, q->small_experts, q->top_k, q->total_steps, q->seed);
            const RunResult *M = find_fixed(rr, n, q->big_experts, q->top_k, q->total_steps, q->seed);
            if (!rr[j].ok || !E || !M || k >= 100) continue;
            if (premise && M != &rr[j]) continue;
            lE[k] = E->final_val, lU[k] = rr[j].final_val, lM[k] = M->final_val;
            sE[k] = E->final_se, sU[k] = rr[j].final_se, sM[k] = M->final_se, seeds[k] = q->seed;
            tE += E->stage_sps[0], tM += M->stage_sps[0], fE += E->stage_flops[0] / q->total_steps, fM += M->stage_flops[0] / q->total_steps;
            up_seconds += rr[j].seconds, up_flops += rr[j].flops;
            k++;
        }
        if (k == 0) continue;
        tE /= k, tM /= k, fE /= k, fM /= k, up_seconds /= k, up_flops /= k;
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "sweep", r->sweep);
        char label[160];
        if (premise) snprintf(label, sizeof label, "premise T%d (%d vs %d experts)", r->total_steps, r->small_experts, r->big_experts);
        else snprintf(label, sizeof label, "%s %s (%d -> %d experts)", r->arm, r->label, r->small_experts, r->big_experts);
        cJSON_AddStringToObject(c, "label", label);
        if (isnan(r->x)) cJSON_AddNullToObject(c, "x");
        else cJSON_AddNumberToObject(c, "x", r->x);
        cJSON_AddItemToObject(c, "seeds", cJSON_CreateDoubleArray(seeds, k));
        cJSON_AddItemToObject(c, "fixed_E", stat_object(lE, sE, k));
        if (!premise) cJSON_AddItemToObject(c, "upcycled", stat_object(lU, sU, k));
        cJSON_AddItemToObject(c, "fixed_mE", stat_object(lM, sM, k));
        Efficiency e = stats_efficiency(lE, lU, lM, k, 12345);
        cJSON_AddItemToObject(c, "paired_gap_E_minus_mE", paired_object(lE, lM, k, &e.premise));
        if (!premise) cJSON_AddItemToObject(c, "paired_gap_E_minus_up", paired_object(lE, lU, k, &e.gain));
        int premise_holds = k >= 2 && e.premise.t_lo > 0;
        cJSON_AddStringToObject(c, "paired_rule", k < 2 ? "1 seed: no interval" : premise_holds ? "Fixed-mE better" : "not established");
        cJSON_AddStringToObject(c, "unpaired_rule", k < 2 ? "1 seed: no interval" : e.unpaired_defined ? "Fixed-mE better" : "not established");
        if (premise) { /* the scale probes: the premise only, no upcycled arm */
            cJSON_AddItemToArray(out, c);
            continue;
        }
        cJSON *ej = cJSON_AddObjectToObject(c, "efficiency");
        cJSON_AddBoolToObject(ej, "defined", e.defined);
        cJSON_AddStringToObject(ej, "rule", "paired: the t 95% interval of L_E - L_mE over seeds lies above 0");
        if (e.defined) {
            cJSON_AddNumberToObject(ej, "mean", e.mean);
            add_interval(ej, "ci95", e.lo, e.hi);
            cJSON_AddNullToObject(ej, "reason");
        } else {
            cJSON_AddNullToObject(ej, "mean");
            cJSON_AddNullToObject(ej, "ci95");
            cJSON_AddStringToObject(ej, "reason", e.reason);
        }
        /* compute: C_fixed = T t_mE; C_up = tau t_E + (T - tau) t_mE; sunk cost: (T - tau) t_mE */
        int T = r->total_steps, tau = r->stages[0].steps;
        double c_fixed = T * tM, c_up = tau * tE + (T - tau) * tM, c_sunk = (T - tau) * tM;
        cJSON *cc = cJSON_AddObjectToObject(c, "compute");
        cJSON_AddNumberToObject(cc, "t_E", tE);
        cJSON_AddNumberToObject(cc, "t_mE", tM);
        cJSON_AddNumberToObject(cc, "seconds_upcycled", c_up);
        cJSON_AddNumberToObject(cc, "seconds_fixed_mE", c_fixed);
        cJSON_AddNumberToObject(cc, "measured_seconds_upcycled", up_seconds);
        cJSON_AddNumberToObject(cc, "saving_pct", 100.0 * (1 - c_up / c_fixed));
        cJSON_AddNumberToObject(cc, "sunk_cost_saving_pct", 100.0 * (1 - c_sunk / c_fixed));
        cJSON_AddNumberToObject(cc, "flops_saving_pct", 100.0 * (1 - (tau * fE + (T - tau) * fM) / (T * fM)));
        cJSON *modeled = modeled_compute(p, r, opt);
        if (modeled) cJSON_AddItemToObject(cc, "modeled", modeled);
        cJSON_AddItemToArray(out, c);
        if (!strcmp(r->sweep, "main")) {
            char note[600], ci[96] = "no interval";
            if (k >= 2) snprintf(ci, sizeof ci, "paired 95%% interval [%+.4f, %+.4f]", e.premise.t_lo, e.premise.t_hi);
            snprintf(note, sizeof note,
                     "main: Fixed-%d minus Fixed-%d validation loss = %+.4f over %d seed(s) (%s; seed spread %.4f); %s", r->small_experts,
                     r->big_experts, e.premise.mean, k, ci, sqrt(pow(stats_std(lE, k), 2) + pow(stats_std(lM, k), 2)),
                     k < 2 ? "1 seed: no interval, no verdict"
                     : e.defined ? "the bigger MoE is better at this budget"
                                 : "the bigger MoE is NOT clearly better at this budget, so efficiency is undefined");
            cJSON_AddItemToArray(notes, cJSON_CreateString(note));
        }
    }
    (void)p;
    free(done);
    return out;
}

/* the runs collect_run wrote: whether one is in the main sweep with this arm */
static int is_main_arm(const char *origin, const cJSON *r, const char *arm, int *yes) {
    const char *sw, *a;
    if (json_get_string(origin, r, "sweep", &sw) || json_get_string(origin, r, "arm", &a)) return -1;
    *yes = !strcmp(sw, "main") && !strcmp(a, arm);
    return 0;
}

/* a point of a curve collect_run wrote; val_loss is NAN where the step was not evaluated */
static int curve_point(const char *origin, const cJSON *pt, double *step, double *val, double *flops, double *secs) {
    return json_get_number(origin, pt, "step", step) || json_get_number_or_null(origin, pt, "val_loss", val) ||
           json_get_number_or_null(origin, pt, "flops", flops) || json_get_number_or_null(origin, pt, "seconds", secs);
}

/* mean over seeds of the main sweep's curves, per arm (points where every seed has a val loss);
 * origin names results.json in messages (a malformed run entry is a bug in collect_run) */
static cJSON *frontier(const char *origin, const cJSON *runs) {
    cJSON *out = cJSON_CreateArray();
    const char *arms[3] = {"fixed-E", "upcycled", "fixed-mE"};
    int rc = 0;
    for (int a = 0; a < 3 && !rc; a++) {
        const cJSON *first = NULL, *r;
        int n_seeds = 0, yes = 0;
        cJSON_ArrayForEach(r, runs) {
            if ((rc = is_main_arm(origin, r, arms[a], &yes))) break;
            if (!yes) continue;
            if (!first) first = r;
            n_seeds++;
        }
        if (rc || !first) continue;
        cJSON *flops = cJSON_CreateArray(), *secs = cJSON_CreateArray(), *vals = cJSON_CreateArray();
        const cJSON *curve = NULL, *pt;
        rc = json_get_array(origin, first, "curve", &curve);
        for (int k = 0; k < cJSON_GetArraySize(curve) && !rc; k++) {
            double step, val, f, sec;
            if ((rc = json_elem_object(origin, curve, "curve", k, &pt) || curve_point(origin, pt, &step, &val, &f, &sec))) break;
            if (isnan(val)) continue;
            double sum = 0;
            int count = 0;
            cJSON_ArrayForEach(r, runs) {
                const cJSON *qc = NULL, *q;
                if ((rc = is_main_arm(origin, r, arms[a], &yes))) break;
                if (!yes) continue;
                if ((rc = json_get_array(origin, r, "curve", &qc))) break;
                cJSON_ArrayForEach(q, qc) {
                    double qs, qv, qf, qsec;
                    if ((rc = curve_point(origin, q, &qs, &qv, &qf, &qsec))) break;
                    if ((int)qs == (int)step && !isnan(qv)) {
                        sum += qv, count++;
                        break;
                    }
                }
                if (rc) break;
            }
            if (rc || count != n_seeds) continue;
            cJSON_AddItemToArray(flops, cJSON_CreateNumber(f));
            cJSON_AddItemToArray(secs, cJSON_CreateNumber(sec));
            cJSON_AddItemToArray(vals, cJSON_CreateNumber(sum / count));
        }
        cJSON *fo = cJSON_CreateObject();
        cJSON_AddStringToObject(fo, "arm", arms[a]);
        cJSON_AddItemToObject(fo, "flops", flops);
        cJSON_AddItemToObject(fo, "seconds", secs);
        cJSON_AddItemToObject(fo, "val_loss", vals);
        cJSON_AddItemToArray(out, fo);
    }
    if (rc) {
        cJSON_Delete(out);
        return NULL;
    }
    return out;
}

static int write_results(const Plan *p, const ExperimentOptions *opt, const char *path) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddStringToObject(j, "preset", p->name);
    cJSON_AddStringToObject(j, "description", p->description);
    char machine[320];
    int on_gpu = opt->backend && !opt->backend->runs_on_host;
    int ranks = dist_world_size();
    snprintf(machine, sizeof machine, "%ld cores, %s backend%s, %d rank%s%s%s", sysconf(_SC_NPROCESSORS_ONLN),
             on_gpu ? "CUDA" : "CPU", on_gpu ? "" : " (OpenBLAS + OpenMP)", ranks,
             ranks > 1 ? (opt->expert_parallel ? "s (MPI data + expert parallel)" : opt->mpi_schedule == MPI_SCHEDULE_STAGES ? "s (MPI, whole stages per rank)" : "s (MPI data parallel)") : "",
             opt->precision == PRECISION_BF16 ? ", bf16 GEMMs" : "", opt->jobs > 1 ? ", stages side by side in worker processes" : "");
    cJSON_AddStringToObject(j, "machine", machine);
    cJSON_AddStringToObject(j, "data", opt->data_dir);
    cJSON *base = cJSON_AddObjectToObject(j, "base");
    char *mj = model_config_to_json_string(&p->model);
    cJSON_AddItemToObject(base, "model", cJSON_Parse(mj));
    free(mj);
    cJSON *train = cJSON_AddObjectToObject(base, "train");
    cJSON_AddNumberToObject(train, "steps", p->steps);
    cJSON_AddNumberToObject(train, "batch_size", p->train.batch_size);
    cJSON_AddNumberToObject(train, "seq_len", p->train.seq_len);
    cJSON_AddNumberToObject(train, "lr", p->train.lr);
    cJSON_AddNumberToObject(train, "factor", p->factor);
    cJSON_AddNumberToObject(train, "seeds", p->seeds);
    cJSON_AddStringToObject(train, "cpt_schedule", p->rewarm ? "rewarm" : "continue");
    cJSON *runs = cJSON_AddArrayToObject(j, "runs"), *notes = cJSON_CreateArray();
    RunResult *rr = xcalloc(p->n_runs, sizeof(RunResult));
    for (int i = 0; i < p->n_runs; i++) {
        cJSON *run = collect_run(p, &p->runs[i], opt, &rr[i]);
        if (!run) {
            cJSON_Delete(j), cJSON_Delete(notes), free(rr);
            return -1;
        }
        cJSON_AddItemToArray(runs, run);
    }
    cJSON_AddItemToObject(j, "comparisons", compare(p, rr, p->n_runs, notes, opt));
    /* Spearman: loss right after growth vs final loss, over the init-heuristic runs (else all grown runs) */
    double x[1000], y[1000];
    int n = 0;
    for (int pass = 0; pass < 2 && n < 3; pass++) {
        n = 0;
        for (int i = 0; i < p->n_runs && n < 1000; i++)
            if (rr[i].ok && !isnan(rr[i].after) && (pass || !strcmp(rr[i].run->sweep, "init"))) x[n] = rr[i].after, y[n++] = rr[i].final_val;
    }
    cJSON *sp = cJSON_AddObjectToObject(j, "spearman");
    double rho = stats_spearman(x, y, n);
    if (isnan(rho)) cJSON_AddNullToObject(sp, "rho");
    else cJSON_AddNumberToObject(sp, "rho", rho);
    cJSON_AddNumberToObject(sp, "n", n);
    cJSON_AddStringToObject(sp, "what", "val loss right after growth vs final val loss across grown runs");
    cJSON *fr = frontier(path, runs);
    if (!fr) {
        cJSON_Delete(j), cJSON_Delete(notes), free(rr);
        return -1;
    }
    cJSON_AddItemToObject(j, "frontier", fr);
    cJSON_AddItemToObject(j, "notes", notes);
    free(rr);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    int rc = atomic_write_file(path, text, strlen(text));
    free(text);
    return rc;
}

/* ---- scheduling: workers take ready stages ---- */

typedef struct {
    const Run *run;
    int k;
} StageRef;

/* the unique stages (a shared prefix once), in plan order */
static int unique_stages(const Plan *p, StageRef *out) {
    int n = 0;
    for (int i = 0; i < p->n_runs; i++)
        for (int k = 0; k < p->runs[i].n_stages; k++) {
            int seen = 0;
            for (int u = 0; u < n && !seen; u++) seen = !strcmp(out[u].run->stages[out[u].k].key, p->runs[i].stages[k].key);
            if (!seen) out[n++] = (StageRef){&p->runs[i], k};
        }
    return n;
}

static char *claim_path(const ExperimentOptions *opt, const char *key) {
    char *stages = path_join(opt->out_dir, "stages"), *claims = path_join(stages, ".claims"), *path = path_join(claims, key);
    free(stages), free(claims);
    return path;
}

/* O_CREAT | O_EXCL: exactly one worker (process or rank, on a shared file system) wins a stage.
 * 1: claimed, 0: another worker has it, -1: the claim file cannot be made (up_error) */
static int claim_stage(const ExperimentOptions *opt, const char *key) {
    char *path = claim_path(opt, key), *dir = path_dirname(path);
    int rc = mkdir_p(dir) ? -1 : 0, fd = -1;
    if (!rc) {
        fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0644);
        if (fd >= 0) rc = 1, close(fd);
        else if (errno != EEXIST) rc = up_error("%s: cannot create the stage claim (%s); expected a writable output directory", path, strerror(errno));
    }
    free(path), free(dir);
    return rc;
}

/* the last step a stage has logged in metrics.jsonl (its progress), 0 without one */
static long long stage_logged_steps(const ExperimentOptions *opt, const Stage *s) {
    char *dir = stage_dir(opt, s);
    long step = run_dir_metrics_last_step(dir);
    free(dir);
    return step;
}

/* steps of finished stages plus the logged steps of unfinished ones */
static long long steps_now(const ExperimentOptions *opt, const StageRef *u, int n, int *done_out) {
    long long total = 0;
    int done = 0;
    for (int i = 0; i < n; i++) {
        const Stage *s = &u[i].run->stages[u[i].k];
        if (stage_done(opt, s)) total += s->steps, done++;
        else total += stage_logged_steps(opt, s);
    }
    if (done_out) *done_out = done;
    return total;
}

/* One worker: take the first unfinished stage whose previous stage is done and that nobody has
 * claimed, run it, repeat; wait while the stages left depend on ones still running. Ranks that
 * train each stage together (data or expert parallel) do not claim: they run the stages in plan
 * order, all of them the same stage at a time. */
static int stage_worker(const Plan *p, const StageRef *u, int n, const ExperimentOptions *opt, Progress *pg) {
    int together = dist_active();
    for (;;) {
        int pending = 0, ran = 0;
        for (int i = 0; i < n && !ran; i++) {
            const Stage *s = &u[i].run->stages[u[i].k];
            if (stage_done(opt, s)) continue;
            pending++;
            if (u[i].k > 0 && !stage_done(opt, &u[i].run->stages[u[i].k - 1])) continue;
            if (!together) {
                int claimed = claim_stage(opt, s->key);
                if (claimed < 0) return -1;
                if (!claimed) continue;
            }
            pg->steps_done = steps_now(opt, u, n, &pg->stages_done);
            if (run_stage(p, u[i].run, u[i].k, opt, pg)) return -1;
            ran = 1;
        }
        if (!pending) return 0;
        if (!ran) usleep(200000);
    }
}

static int default_jobs(const Plan *p, int cores) {
    /* small models: one stage per core beats one stage on all cores (their non-GEMM ops are
     * too small to split across threads; scripts/bench_jobs.sh measures it) */
    return p->model.d_model <= 256 && cores > 1 ? cores : 1;
}

/* --jobs N: N worker processes, threads split between them, and a progress line every 30 s */
static int run_forked(const Plan *p, const StageRef *u, int n, const ExperimentOptions *opt, Progress *pg, int jobs, int threads) {
    pid_t *pids = xcalloc((size_t)jobs, sizeof(pid_t)), parent = getpid();
    int per_job = threads / jobs > 0 ? threads / jobs : 1;
    fflush(stdout), fflush(stderr);
    for (int j = 0; j < jobs; j++) {
        pid_t pid = fork();
        if (pid == 0) { /* the parent ran no OpenMP region, so the child's thread pool starts fresh */
            /* a worker dies with the experiment (killed or not): no orphan writes into a stage that
             * a rerun is about to take */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) _exit(1);
            backend_cpu()->set_threads(per_job);
            int rc = stage_worker(p, u, n, opt, pg);
            if (rc) fprintf(stderr, "upcycle: %s\n", up_last_error());
            fflush(stdout), fflush(stderr);
            _exit(rc ? 1 : 0);
        }
        if (pid < 0) {
            for (int k = 0; k < j; k++) kill(pids[k], SIGTERM), waitpid(pids[k], NULL, 0);
            free(pids);
            return up_error("%s: cannot start worker %d of %d (fork failed); expected --jobs within the process limit", opt->out_dir, j + 1, jobs);
        }
        pids[j] = pid;
    }
    int alive = jobs, failed = 0;
    double last_report = now_seconds();
    while (alive > 0) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid < 0 && errno != EINTR) break; /* no children left to wait for */
        if (pid > 0) {
            for (int j = 0; j < jobs; j++)
                if (pids[j] == pid) pids[j] = 0, alive--;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                if (!failed) /* stop the other workers: their stages stay resumable */
                    for (int j = 0; j < jobs; j++)
                        if (pids[j]) kill(pids[j], SIGTERM);
                failed = 1;
            }
            continue;
        }
        usleep(250000);
        if (now_seconds() - last_report >= 30) {
            int done;
            long long now = steps_now(opt, u, n, &done);
            pg->stages_done = done, pg->running = alive;
            print_progress(pg, now, "");
            last_report = now_seconds();
        }
    }
    free(pids);
    pg->running = 0;
    if (failed) return up_error("%s: a stage failed (its worker's message is above); expected every stage to finish (rerun to resume)", opt->out_dir);
    return 0;
}

int experiment_run(const Plan *p, const ExperimentOptions *opt_in) {
    ExperimentOptions opt_copy = *opt_in;
    const ExperimentOptions *opt = &opt_copy;
    int leader = dist_world_rank() == 0, cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int threads = omp_get_max_threads();
    /* under mpirun: whole stages per rank (small models), or every rank on each stage's steps
     * (data parallel; expert parallel always) */
    int stages_per_rank = dist_world_size() > 1 && !opt->expert_parallel &&
                          (opt->mpi_schedule == MPI_SCHEDULE_STAGES || (opt->mpi_schedule == MPI_SCHEDULE_AUTO && default_jobs(p, 2) > 1));
    int on_cpu = !opt->backend || opt->backend->runs_on_host;
    int jobs = opt->jobs > 0 ? opt->jobs : dist_launched() || !on_cpu ? 1 : default_jobs(p, threads < cores ? threads : cores);
    opt_copy.jobs = jobs;
    opt_copy.mpi_schedule = stages_per_rank ? MPI_SCHEDULE_STAGES : MPI_SCHEDULE_STEPS;
    if (jobs > 1 && !on_cpu)
        return up_error("--jobs %d with a GPU; expected --jobs 1 (worker processes cannot share the CUDA context)", jobs);
    if (jobs > 1 && dist_launched()) return up_error("--jobs %d under mpirun; expected --jobs 1 (ranks take whole stages: --mpi-schedule stages)", jobs);
    if (!leader && !stages_per_rank) opt_copy.quiet = 1; /* with whole stages per rank, every rank reports its own */
    if (leader && mkdir_p(opt->out_dir)) return -1;
    StageRef *u = xmalloc(sizeof(StageRef) * (size_t)(p->n_runs * 3 + 1));
    int n = unique_stages(p, u);
    if (leader) { /* no worker is running yet: claims left by an interrupted run are stale */
        char *claims = claim_path(opt, "");
        remove_tree(claims);
        free(claims);
    }
    dist_wait_for_leader("the output directory");
    Progress pg = {0};
    pg.started = now_seconds();
    pg.quiet = opt->quiet;
    pg.stages_total = n;
    pg.tokens_per_step = p->train.batch_size * p->train.seq_len;
    for (int i = 0; i < n; i++) pg.steps_total += u[i].run->stages[u[i].k].steps;
    pg.steps_at_start = pg.steps_done = steps_now(opt, u, n, &pg.stages_done);
    if (!opt->quiet && leader) {
        char how[160];
        if (stages_per_rank) snprintf(how, sizeof how, "whole stages on %d ranks", dist_world_size());
        else if (dist_world_size() > 1) snprintf(how, sizeof how, "each stage on %d ranks", dist_world_size());
        else snprintf(how, sizeof how, "%d job%s x %d thread%s", jobs, jobs > 1 ? "s" : "", jobs > 1 ? (threads / jobs > 0 ? threads / jobs : 1) : threads,
                      (jobs > 1 ? threads / jobs : threads) > 1 ? "s" : "");
        printf("experiment %s: %d runs, %d unique stages, %lld training steps (%d stages already done), %s\n", p->name, p->n_runs, n,
               pg.steps_total, pg.stages_done, how);
    }
    int rc;
    if (jobs > 1) {
        rc = run_forked(p, u, n, opt, &pg, jobs, threads);
    } else {
        if (stages_per_rank) dist_set_solo(1);
        rc = stage_worker(p, u, n, opt, &pg);
        dist_set_solo(0);
        if (rc && dist_active()) { /* a rank with a stage of its own failed: say why, stop the others */
            fprintf(stderr, "upcycle: rank %d: %s\n", dist_world_rank(), up_last_error());
            fflush(stderr);
            dist_abort(1);
        }
        dist_wait_for_leader("the other ranks' stages");
    }
    if (rc || !leader) {
        free(u);
        return rc;
    }
    pg.steps_done = steps_now(opt, u, n, &pg.stages_done);
    free(u);
    print_progress(&pg, pg.steps_done, "all stages done; collecting results");
    char *results = path_join(opt->out_dir, "results.json"), *csv = path_join(opt->out_dir, "results.csv");
    char *html = path_join(opt->out_dir, "report.html");
    rc = write_results(p, opt, results);
    if (!rc) rc = report_write_csv(results, csv);
    if (!rc) rc = report_write_html(results, html);
    if (!rc && !opt->quiet) {
        printf("\n");
        report_print_tables(results, stdout);
        printf("\nresults: %s, %s, %s\n", results, csv, html);
    }
    free(results), free(csv), free(html);
    return rc;
}
