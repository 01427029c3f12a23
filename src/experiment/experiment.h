/* experiment.h - plans of training runs (Fixed-E, Fixed-mE, Upcycled and the sweeps), the
 * resumable runner, and the results (results.json, results.csv, report.html).
 *
 * A run is a sequence of stages; a stage either trains a fresh model, grows the previous
 * stage's final checkpoint and continues training it (CPT), or trains a fresh big model on
 * the continuing data stream (the "random init of the big model" control). Every stage is
 * keyed by its whole history, so runs that share a prefix (e.g. the E-expert pre-training
 * before different growth variants) share its checkpoint: OUT/stages/<key>/. A finished
 * stage (stage.json present) is skipped; an interrupted one resumes from its checkpoint. */
#ifndef UPCYCLE_EXPERIMENT_H
#define UPCYCLE_EXPERIMENT_H

#include "backend.h"
#include "config.h"
#include "grow/grow.h"

typedef enum { STAGE_FRESH = 0, STAGE_GROW = 1, STAGE_FRESH_CONTINUE = 2 } StageKind;

typedef struct {
    StageKind kind;
    int experts;          /* experts of this stage's model (0: dense) */
    int steps;
    int rewarm;           /* CPT schedule: 1 = warmup again, 0 = continue without warmup */
    GrowOptions grow;     /* STAGE_GROW */
    char key[400];
} Stage;

typedef struct {
    char id[200], sweep[24], arm[24], label[96];
    double x;             /* sweep coordinate or NAN */
    int seed;
    int n_stages;
    Stage stages[3];
    int total_steps;
    int small_experts, big_experts; /* the Fixed-E and Fixed-mE this run is compared with */
    int top_k;
} Run;

typedef struct {
    char name[64];
    char description[256];
    ModelConfig model;    /* num_experts = E (the small model) */
    TrainConfig train;
    int factor, steps, seeds, final_eval_batches, rewarm;
    int n_runs, capacity;
    Run *runs;
    char *sweeps_json;    /* the plan's sweeps, to regenerate runs (plan_set_seeds) */
    char origin[128];
} Plan;

int plan_load_json(Plan *plan, const char *path);       /* --plan FILE */
int plan_load_preset(Plan *plan, const char *name);     /* demo, paper-tiny, paper-full */
const char *plan_preset_names(void);
void plan_free(Plan *plan);
/* regenerates the runs for a different number of seeds */
int plan_set_seeds(Plan *plan, int seeds);

typedef struct {
    const char *data_dir, *out_dir;
    int quiet;
    int probe_batches;    /* diagnostics */
    const Backend *backend; /* training stages (NULL: the CPU); grow and diagnostics run on the CPU */
    int expert_parallel;  /* under mpirun: training stages shard the experts over the ranks */
    int ep_size;          /* ranks per expert group (0: all) */
    int precision;        /* PRECISION_FP32 or PRECISION_BF16 for every training stage */
} ExperimentOptions;

/* Runs (or resumes) every run of the plan, then writes OUT/results.json, OUT/results.csv and
 * OUT/report.html, and prints the comparison tables. */
int experiment_run(const Plan *plan, const ExperimentOptions *opt);

#endif
