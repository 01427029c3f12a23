/* upcycle experiment: Fixed-E vs Upcycled vs Fixed-mE (and sweeps) over seeds, with a report. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "experiment/experiment.h"
#include "util.h"

int cmd_experiment(int argc, char **argv) {
    const char *preset = NULL, *plan_file = NULL, *data = NULL, *out = NULL, *device = "auto", *precision = "fp32", *seeds = NULL;
    const char *mpi_schedule = "auto", *cluster = NULL;
    float cost_ratio = 0;
    int jobs = 0, threads = 0, dry_run = 0, probe_batches = 2, list = 0, expert_parallel = 0, ep_size = 0;
    CliOption opts[] = {
        {"preset", OPT_STR, &preset, "demo (~5 min), paper-tiny (~45 min), paper-full (hours)"},
        {"plan", OPT_STR, &plan_file, "a plan JSON file instead of a preset (format: docs/experiment.md)"},
        {"data", OPT_STR, &data, "data directory from `upcycle tokenize` (required)"},
        {"out", OPT_STR, &out, "output directory; re-running resumes (finished stages are skipped)"},
        {"seeds", OPT_STR, &seeds, "override the plan's seeds: a count (3 = seeds 1..3), a list (7,8,9) or a range (101-103)"},
        {"device", OPT_STR, &device, CLI_DEVICE_HELP "; where the stages train"},
        {"probe-batches", OPT_INT, &probe_batches, "validation batches for the replica diagnostics (0 disables)"},
        {"threads", OPT_COUNT, &threads, "threads (default: all cores), split between the jobs"},
        {"jobs", OPT_INT, &jobs, "stages trained side by side (default: one per core for models with d_model <= 256, else 1)"},
        {"mpi-schedule", OPT_STR, &mpi_schedule, "under mpirun: stages (each rank trains whole stages), steps (all ranks on each stage) "
                                                 "or auto (default: stages for models with d_model <= 256)"},
        {"precision", OPT_STR, &precision, "fp32 (default) or bf16: every stage's GEMMs take bf16 operands (as train --precision)"},
        {"expert-parallel", OPT_FLAG, &expert_parallel, "under mpirun: shard each MoE layer's experts over the ranks (all-to-all)"},
        {"ep-size", OPT_INT, &ep_size, "with --expert-parallel: ranks per expert group (default: all; groups hold replicas)"},
        {"cost-ratio", OPT_FLOAT, &cost_ratio, "also report the saving modeled with t_mE / t_E = R (seconds per step where you will train)"},
        {"cluster", OPT_STR, &cluster, "also report the saving modeled on a cluster: gpus=G,ep=D,link=GB/s[,tflops=T,hbm=GB/s,mem=GB]"},
        {"dry-run", OPT_FLAG, &dry_run, "list the runs and stages and exit"},
        {"list-presets", OPT_FLAG, &list, "list the presets and exit"},
    };
    int prc = cli_parse("experiment", "(--preset NAME | --plan FILE) --data DIR --out DIR [options]", argc, argv, opts,
                        sizeof opts / sizeof *opts);
    if (prc) return prc == 1 ? 0 : prc;
    if (list) {
        const char *names[3] = {"demo", "paper-tiny", "paper-full"};
        for (int i = 0; i < 3; i++) {
            Plan p;
            if (plan_load_preset(&p, names[i]) == 0) {
                printf("  %-11s %s (%d runs)\n", names[i], p.description, p.n_runs);
                plan_free(&p);
            }
        }
        return 0;
    }
    if (preset && plan_file) return cli_usage_error("experiment", "--preset and --plan are exclusive; expected one of them");
    if (!data || (!out && !dry_run)) return cli_usage_error("experiment", "--data and --out are required; expected --data DIR --out DIR");
    if (probe_batches < 0) return cli_usage_error("experiment", "--probe-batches %d; expected a count >= 0", probe_batches);
    int seed_list[MAX_SEEDS], n_seeds = 0;
    if (seeds && plan_parse_seeds(seeds, seed_list, &n_seeds)) return cli_fail();
    int prec;
    if (cli_precision("experiment", precision, &prec)) return 2;
    if (jobs < 0 || jobs > 256) return cli_usage_error("experiment", "--jobs %d; expected 1..256 (0: by model size)", jobs);
    int sched = !strcmp(mpi_schedule, "auto") ? MPI_SCHEDULE_AUTO : !strcmp(mpi_schedule, "stages") ? MPI_SCHEDULE_STAGES
              : !strcmp(mpi_schedule, "steps") ? MPI_SCHEDULE_STEPS : -1;
    if (sched < 0) return cli_usage_error("experiment", "--mpi-schedule %s; expected auto, stages or steps", mpi_schedule);
    if (cost_ratio < 0) return cli_usage_error("experiment", "--cost-ratio %g; expected t_mE / t_E > 0", cost_ratio);
    if (cost_ratio > 0 && cluster) return cli_usage_error("experiment", "--cost-ratio and --cluster are exclusive; expected one cost model");
    ClusterShape shape;
    if (cluster && cost_parse_cluster(cluster, &shape)) return cli_fail();
    if (ep_size < 0 || (ep_size && !expert_parallel))
        return cli_usage_error("experiment", "--ep-size %d; expected a positive group size, with --expert-parallel", ep_size);
    Plan plan;
    if (plan_file ? plan_load_json(&plan, plan_file) : plan_load_preset(&plan, preset ? preset : "demo")) return cli_fail();
    if (n_seeds && plan_set_seed_list(&plan, seed_list, n_seeds)) {
        plan_free(&plan);
        return cli_fail();
    }
    if (dry_run) {
        for (int i = 0; i < plan.n_runs; i++) {
            printf("%s\n", plan.runs[i].id);
            for (int k = 0; k < plan.runs[i].n_stages; k++) printf("    stage %d: %s\n", k, plan.runs[i].stages[k].key);
        }
        plan_free(&plan);
        return 0;
    }
    char *pretrain = path_join(data, "pretrain.bin");
    int have_data = path_exists(pretrain);
    free(pretrain);
    if (!have_data) { /* data/linux-docs is generated, not shipped */
        plan_free(&plan);
        up_error("%s: no pretrain.bin; expected a data directory from `upcycle tokenize` (data/linux-docs, the paper-tiny corpus: "
                 "run scripts/prepare_corpus.sh)", data);
        return cli_fail();
    }
    const Backend *be = NULL;
    int brc = cli_backend("experiment", device, &be);
    if (brc) {
        plan_free(&plan);
        return brc;
    }
    cli_set_threads(threads);
    const Backend *stage_be = be ? be : backend_cpu();
    if (stage_be->set_precision && stage_be->set_precision(prec)) { /* e.g. no AVX-512 BF16: say so before any stage */
        plan_free(&plan);
        return cli_fail();
    }
    ExperimentOptions eo = {.data_dir = data, .out_dir = out, .probe_batches = probe_batches, .backend = be,
                           .expert_parallel = expert_parallel, .ep_size = ep_size, .precision = prec, .jobs = jobs,
                           .mpi_schedule = sched, .cost_ratio = cost_ratio, .cluster = cluster ? &shape : NULL};
    int rc = experiment_run(&plan, &eo);
    plan_free(&plan);
    return rc ? cli_fail() : 0;
}
