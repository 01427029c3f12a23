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
#include "experiment/cost.h"
#include "grow/grow.h"

typedef enum { STAGE_FRESH = 0, STAGE_GROW = 1, STAGE_FRESH_CONTINUE = 2 } StageKind;

/* the limits, named once: seeds of a plan, stages of a run (pre-train, grow + CPT, a second growth) */
#define MAX_SEEDS 100
#define MAX_STAGES 3

typedef struct {
    StageKind kind;
    int experts;          /* experts of this stage's model (0: dense) */
    int steps;
    int rewarm;           /* CPT schedule: 1 = warmup again, 0 = continue without warmup */
    float decay_frac;     /* WSD decay fraction of this stage (< 0: the plan's train.decay_frac) */
    GrowOptions grow;     /* STAGE_GROW */
    char key[400];
} Stage;

typedef struct {
    char id[200], sweep[24], arm[24], label[96];
    double x;             /* sweep coordinate or NAN */
    int seed;
    int n_stages;
    Stage stages[MAX_STAGES];
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
    int seed_ids[MAX_SEEDS]; /* the seeds (seeds of them): 1..N by default, or a list (--seeds 7,8,9) */
    int n_runs, capacity;
    Run *runs;
    char *sweeps_json;    /* the plan's sweeps, to regenerate runs (plan_set_seeds) */
    char origin[128];
} Plan;

/* The sweeps a plan may name ("sweeps": {"main": {...}, ...}), each once, with the line the
 * report titles it with and the function that adds its runs for one seed. The table is in the
 * order the runs are made (per seed, sweep by sweep) and plan errors name them; the report shows
 * sweeps by report_order (0 first). plan.c holds it. */
struct SweepArgs;
typedef struct {
    const char *name;
    const char *description;
    int report_order;
    /* adds the sweep's runs for one seed from the plan's sweep object s; 0 or up_error */
    int (*expand)(Plan *p, const struct cJSON *s, const char *origin, int seed, const struct SweepArgs *a);
} SweepInfo;
#define N_SWEEPS 9
extern const SweepInfo SWEEPS[N_SWEEPS];
const SweepInfo *sweep_find(const char *name); /* NULL when name is not a sweep */

int plan_load_json(Plan *plan, const char *path);       /* --plan FILE */
int plan_load_preset(Plan *plan, const char *name);     /* demo, paper-tiny, paper-full */
const char *plan_preset_names(void);
void plan_free(Plan *plan);
/* regenerates the runs for seeds 1..seeds */
int plan_set_seeds(Plan *plan, int seeds);
/* regenerates the runs for the listed seeds (each >= 1, distinct, at most MAX_SEEDS) */
int plan_set_seed_list(Plan *plan, const int *seeds, int n);
/* "3" (seeds 1..3), "7,8,9" or "101-103": the seeds; errors name the option */
int plan_parse_seeds(const char *spec, int *seeds, int *n);

typedef struct {
    const char *data_dir, *out_dir;
    int quiet;
    int probe_batches;    /* diagnostics */
    const Backend *backend; /* training stages (NULL: the CPU); grow and diagnostics run on the CPU */
    int expert_parallel;  /* under mpirun: training stages shard the experts over the ranks */
    int ep_size;          /* ranks per expert group (0: all) */
    int precision;        /* PRECISION_FP32 or PRECISION_BF16 for every training stage */
    int jobs;             /* stages trained side by side in worker processes (0: by model size) */
    int mpi_schedule;     /* under mpirun: MPI_SCHEDULE_AUTO, _STAGES (a stage per rank) or _STEPS */
    double cost_ratio;    /* > 0: the modeled saving with t_mE / t_E = cost_ratio (--cost-ratio) */
    const ClusterShape *cluster; /* or from a cost model of this cluster (--cluster); NULL: none */
} ExperimentOptions;

enum { MPI_SCHEDULE_AUTO = 0, MPI_SCHEDULE_STAGES = 1, MPI_SCHEDULE_STEPS = 2 };

/* Runs (or resumes) every run of the plan, then writes OUT/results.json, OUT/results.csv and
 * OUT/report.html, and prints the comparison tables. Workers (jobs > 1: forked processes with
 * the threads split between them; under mpirun with whole stages per rank: the ranks) take
 * the first unfinished stage whose previous stage is done, claimed by an exclusive file in
 * OUT/stages/.claims/, so a stage runs once and its result is what it would be alone with the
 * same thread count. */
int experiment_run(const Plan *plan, const ExperimentOptions *opt);

#endif
