/* runner_results.c - comparing the arms (paired statistics, efficiency, the compute frontier)
 * and writing results.json. */
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
    double d[MAX_SEEDS];
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

/* One comparison's matched seeds: per seed, the final loss and its standard error of Fixed-E,
 * the upcycled arm and Fixed-mE; the measured step costs, averaged over the seeds. */
enum { ARM_E, ARM_UP, ARM_M, N_ARMS };
typedef struct {
    int n;
    double seed[MAX_SEEDS];
    double loss[N_ARMS][MAX_SEEDS], se[N_ARMS][MAX_SEEDS];
    double t_E, t_mE, flops_E, flops_mE; /* seconds and FLOPs per step of the fixed arms' first stage */
    double up_seconds, up_flops;         /* the upcycled arm's measured totals */
} ArmSamples;

/* the runs of rr[i]'s comparison (same sweep, arm and label; every seed), marked done, with
 * their Fixed-E and Fixed-mE runs of the same steps and seed; a premise comparison is its
 * Fixed-mE runs */
static void gather_arms(const RunResult *rr, int n, int i, int premise, int *done, ArmSamples *a) {
    const Run *r = rr[i].run;
    memset(a, 0, sizeof *a);
    for (int j = i; j < n; j++) {
        const Run *q = rr[j].run;
        if (strcmp(q->sweep, r->sweep) || strcmp(q->arm, r->arm) || strcmp(q->label, r->label)) continue;
        done[j] = 1;
        const RunResult *E = find_fixed(rr, n, q->small_experts, q->top_k, q->total_steps, q->seed);
        const RunResult *M = find_fixed(rr, n, q->big_experts, q->top_k, q->total_steps, q->seed);
        if (!rr[j].ok || !E || !M || a->n >= MAX_SEEDS) continue;
        if (premise && M != &rr[j]) continue;
        int k = a->n++;
        const RunResult *arm[N_ARMS] = {E, &rr[j], M};
        for (int x = 0; x < N_ARMS; x++) a->loss[x][k] = arm[x]->final_val, a->se[x][k] = arm[x]->final_se;
        a->seed[k] = q->seed;
        a->t_E += E->stage_sps[0], a->t_mE += M->stage_sps[0];
        a->flops_E += E->stage_flops[0] / q->total_steps, a->flops_mE += M->stage_flops[0] / q->total_steps;
        a->up_seconds += rr[j].seconds, a->up_flops += rr[j].flops;
    }
    if (a->n) {
        double k = a->n;
        a->t_E /= k, a->t_mE /= k, a->flops_E /= k, a->flops_mE /= k, a->up_seconds /= k, a->up_flops /= k;
    }
}

static void add_efficiency(cJSON *c, const Efficiency *e) {
    cJSON *ej = cJSON_AddObjectToObject(c, "efficiency");
    cJSON_AddBoolToObject(ej, "defined", e->defined);
    cJSON_AddStringToObject(ej, "rule", "paired: the t 95% interval of L_E - L_mE over seeds lies above 0");
    if (e->defined) {
        cJSON_AddNumberToObject(ej, "mean", e->mean);
        add_interval(ej, "ci95", e->lo, e->hi);
        cJSON_AddNullToObject(ej, "reason");
    } else {
        cJSON_AddNullToObject(ej, "mean");
        cJSON_AddNullToObject(ej, "ci95");
        cJSON_AddStringToObject(ej, "reason", e->reason);
    }
}

/* compute: C_fixed = T t_mE; C_up = tau t_E + (T - tau) t_mE; sunk cost: (T - tau) t_mE */
static void add_compute(cJSON *c, const Plan *p, const Run *r, const ArmSamples *a, const ExperimentOptions *opt) {
    int T = r->total_steps, tau = r->stages[0].steps;
    double c_fixed = T * a->t_mE, c_up = tau * a->t_E + (T - tau) * a->t_mE, c_sunk = (T - tau) * a->t_mE;
    cJSON *cc = cJSON_AddObjectToObject(c, "compute");
    cJSON_AddNumberToObject(cc, "t_E", a->t_E);
    cJSON_AddNumberToObject(cc, "t_mE", a->t_mE);
    cJSON_AddNumberToObject(cc, "seconds_upcycled", c_up);
    cJSON_AddNumberToObject(cc, "seconds_fixed_mE", c_fixed);
    cJSON_AddNumberToObject(cc, "measured_seconds_upcycled", a->up_seconds);
    cJSON_AddNumberToObject(cc, "saving_pct", 100.0 * (1 - c_up / c_fixed));
    cJSON_AddNumberToObject(cc, "sunk_cost_saving_pct", 100.0 * (1 - c_sunk / c_fixed));
    cJSON_AddNumberToObject(cc, "flops_saving_pct", 100.0 * (1 - (tau * a->flops_E + (T - tau) * a->flops_mE) / (T * a->flops_mE)));
    cJSON *modeled = modeled_compute(p, r, opt);
    if (modeled) cJSON_AddItemToObject(cc, "modeled", modeled);
}

/* the main sweep's note: the premise gap and whether efficiency is defined */
static void add_main_note(cJSON *notes, const Run *r, const ArmSamples *a, const Efficiency *e) {
    char note[600], ci[96] = "no interval";
    int k = a->n;
    if (k >= 2) snprintf(ci, sizeof ci, "paired 95%% interval [%+.4f, %+.4f]", e->premise.t_lo, e->premise.t_hi);
    snprintf(note, sizeof note, "main: Fixed-%d minus Fixed-%d validation loss = %+.4f over %d seed(s) (%s; seed spread %.4f); %s",
             r->small_experts, r->big_experts, e->premise.mean, k, ci,
             sqrt(pow(stats_std(a->loss[ARM_E], k), 2) + pow(stats_std(a->loss[ARM_M], k), 2)),
             k < 2 ? "1 seed: no interval, no verdict"
             : e->defined ? "the bigger MoE is better at this budget"
                          : "the bigger MoE is NOT clearly better at this budget, so efficiency is undefined");
    cJSON_AddItemToArray(notes, cJSON_CreateString(note));
}

static cJSON *compare(const Plan *p, const RunResult *rr, int n, cJSON *notes, const ExperimentOptions *opt) {
    cJSON *out = cJSON_CreateArray();
    int *done = xcalloc(n, sizeof(int));
    ArmSamples a;
    for (int i = 0; i < n; i++) {
        const Run *r = rr[i].run;
        int premise = !strcmp(r->sweep, "premise") && !strcmp(r->arm, "fixed-mE");
        if (done[i] || (!premise && !strncmp(r->arm, "fixed", 5))) continue;
        gather_arms(rr, n, i, premise, done, &a);
        int k = a.n;
        if (k == 0) continue;
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "sweep", r->sweep);
        char label[160];
        if (premise) snprintf(label, sizeof label, "premise T%d (%d vs %d experts)", r->total_steps, r->small_experts, r->big_experts);
        else snprintf(label, sizeof label, "%s %s (%d -> %d experts)", r->arm, r->label, r->small_experts, r->big_experts);
        cJSON_AddStringToObject(c, "label", label);
        if (isnan(r->x)) cJSON_AddNullToObject(c, "x");
        else cJSON_AddNumberToObject(c, "x", r->x);
        cJSON_AddItemToObject(c, "seeds", cJSON_CreateDoubleArray(a.seed, k));
        cJSON_AddItemToObject(c, "fixed_E", stat_object(a.loss[ARM_E], a.se[ARM_E], k));
        if (!premise) cJSON_AddItemToObject(c, "upcycled", stat_object(a.loss[ARM_UP], a.se[ARM_UP], k));
        cJSON_AddItemToObject(c, "fixed_mE", stat_object(a.loss[ARM_M], a.se[ARM_M], k));
        Efficiency e = stats_efficiency(a.loss[ARM_E], a.loss[ARM_UP], a.loss[ARM_M], k, 12345);
        cJSON_AddItemToObject(c, "paired_gap_E_minus_mE", paired_object(a.loss[ARM_E], a.loss[ARM_M], k, &e.premise));
        if (!premise) cJSON_AddItemToObject(c, "paired_gap_E_minus_up", paired_object(a.loss[ARM_E], a.loss[ARM_UP], k, &e.gain));
        int premise_holds = k >= 2 && e.premise.t_lo > 0;
        cJSON_AddStringToObject(c, "paired_rule", k < 2 ? "1 seed: no interval" : premise_holds ? "Fixed-mE better" : "not established");
        cJSON_AddStringToObject(c, "unpaired_rule", k < 2 ? "1 seed: no interval" : e.unpaired_defined ? "Fixed-mE better" : "not established");
        if (!premise) { /* the scale probes (premise) have no upcycled arm */
            add_efficiency(c, &e);
            add_compute(c, p, r, &a, opt);
        }
        cJSON_AddItemToArray(out, c);
        if (!premise && !strcmp(r->sweep, "main")) add_main_note(notes, r, &a, &e);
    }
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

int write_results(const Plan *p, const ExperimentOptions *opt, const char *path) {
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
