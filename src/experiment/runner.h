/* runner.h - the experiment runner's parts, private to src/experiment (experiment.h is the
 * public contract):
 *   runner_stage.c    running one stage (train, grow, CPT) into its directory, resumably
 *   runner_collect.c  reading a run's stages back: final losses, curves, loads, diagnostics
 *   runner_results.c  comparing the arms (paired statistics, efficiency) and writing results.json
 *   runner.c          scheduling: the unique stages, worker processes or ranks, claims, progress */
#ifndef UPCYCLE_EXPERIMENT_RUNNER_H
#define UPCYCLE_EXPERIMENT_RUNNER_H

#include <cjson/cJSON.h>

#include "experiment/experiment.h"

typedef struct {
    long long steps_total, steps_done; /* steps_done: of finished stages */
    long long steps_at_start;          /* steps already done when this invocation started */
    double started;
    int stages_total, stages_done, running;
    int tokens_per_step;
    int quiet;
} Progress;

/* a run's stages read back (runner_collect.c) */
typedef struct {
    const Run *run;
    int ok;
    double final_val, final_se, final_tokens, seconds, flops, before, after;
    double stage_sps[3], stage_flops[3];
} RunResult;

char *stage_dir(const ExperimentOptions *opt, const Stage *s);     /* malloc'd */
int stage_done(const ExperimentOptions *opt, const Stage *s);      /* its stage.json exists */
ModelConfig stage_model(const Plan *p, const Run *r, const Stage *s);
void add_num_or_null(cJSON *j, const char *key, double v);         /* null for a non-finite v */
void print_progress(const Progress *pg, long long steps_now, const char *what);
int run_stage(const Plan *p, const Run *r, int k, const ExperimentOptions *opt, Progress *pg);
cJSON *collect_run(const Plan *p, const Run *r, const ExperimentOptions *opt, RunResult *rr);
int write_results(const Plan *p, const ExperimentOptions *opt, const char *path);

#endif
