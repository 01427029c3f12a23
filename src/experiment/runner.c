/* runner.c - executes a plan: the unique stages in worker processes or ranks, claimed and
 * resumable, with progress; then the results (runner_results.c). */
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
