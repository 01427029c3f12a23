/* runner_stage.c - running one stage of a run (train, grow, CPT) into its directory, resumably. */
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
#include "experiment/runner.h"

char *stage_dir(const ExperimentOptions *opt, const Stage *s) {
    char *stages = path_join(opt->out_dir, "stages"), *dir = path_join(stages, s->key);
    free(stages);
    return dir;
}

int stage_done(const ExperimentOptions *opt, const Stage *s) {
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

ModelConfig stage_model(const Plan *p, const Run *r, const Stage *s) {
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

void add_num_or_null(cJSON *j, const char *key, double v) {
    if (isnan(v)) cJSON_AddNullToObject(j, key);
    else cJSON_AddNumberToObject(j, key, v);
}

/* "[experiment 3/27 stages, 2 running | 41% of steps | 12.3 steps/s, 25.2k tokens/s | 5m10s elapsed, ETA 8m05s]";
 * steps_now adds the running stages' progress to the finished ones; the rate is this invocation's */
void print_progress(const Progress *pg, long long steps_now, const char *what) {
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

int run_stage(const Plan *p, const Run *r, int k, const ExperimentOptions *opt, Progress *pg) {
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
