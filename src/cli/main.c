/* upcycle - train Mixture-of-Experts models and grow their expert count. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "dist/dist.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Command;

static const Command g_commands[] = {
    {"tokenize", cmd_tokenize, "turn a text file into token shards (byte or BPE) for pretrain/cpt/val"},
    {"train", cmd_train, "train a model from a preset or config, or resume / continue a checkpoint"},
    {"grow", cmd_grow, "grow a trained MoE's experts (E -> m*E): uniform or utility-based, init heuristics"},
    {"diag", cmd_diag, "replica diagnostics of a grown checkpoint: weight cosines, token overlap, load"},
    {"experiment", cmd_experiment, "Fixed-E vs Upcycled vs Fixed-mE over seeds and sweeps, with a report"},
    {"eval", cmd_eval, "validation loss and perplexity of a checkpoint"},
    {"sample", cmd_sample, "generate text from a checkpoint"},
    {"inspect", cmd_inspect, "config, parameter counts, experts, balancing biases of a checkpoint"},
    {"bench", cmd_bench, "measure sgemm GFLOP/s (bench gemm) and training throughput (bench train)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: upcycle COMMAND [options]   (upcycle COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof g_commands / sizeof *g_commands; i++)
        fprintf(f, "  %-10s %s\n", g_commands[i].name, g_commands[i].summary);
}

static int run_command(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof g_commands / sizeof *g_commands; i++)
        if (!strcmp(argv[1], g_commands[i].name)) return g_commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "upcycle: unknown command '%s'; expected one of", argv[1]);
    for (size_t i = 0; i < sizeof g_commands / sizeof *g_commands; i++) fprintf(stderr, "%s %s", i ? "," : "", g_commands[i].name);
    fprintf(stderr, "\n");
    return 2;
}

static int grow_uses_utility(int argc, char **argv) {
    for (int i = 2; i < argc; i++)
        if ((!strcmp(argv[i], "--alloc") && i + 1 < argc && !strcmp(argv[i + 1], "utility")) || !strcmp(argv[i], "--alloc=utility"))
            return 1;
    return 0;
}

/* Under mpirun every rank runs the command (train: data parallel). A rank that fails stops the
 * whole job (MPI_Abort) rather than leaving the others waiting in a collective. */
int main(int argc, char **argv) {
    dist_init(&argc, &argv);
    int rc = 0;
    /* train and experiment are data parallel; every other command runs on rank 0 while the others wait, so that
     * `mpirun -np N ./upcycle grow ...` in a job script does the work once */
    int parallel = argc >= 2 && (!strcmp(argv[1], "train") || !strcmp(argv[1], "experiment"));
    /* grow --alloc utility: every rank scores a share of the batches, then rank 0 writes */
    int helpers = argc >= 2 && !strcmp(argv[1], "grow") && grow_uses_utility(argc, argv);
    if (parallel || helpers || dist_rank() == 0) rc = run_command(argc, argv);
    if (!parallel && !rc) dist_wait_for_leader("the end of the command on rank 0");
    fflush(stdout);
    fflush(stderr);
    if (rc && dist_active()) dist_abort(rc);
    dist_finalize();
    return rc;
}
