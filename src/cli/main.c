/* upcycle - train Mixture-of-Experts models and grow their expert count. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "dist/dist.h"

/* Under mpirun every rank starts the command. A command "on every rank" decides each rank's
 * part itself (train and experiment: data parallel; grow: the ranks split utility scoring);
 * any other command runs on rank 0 while the others wait, so that `mpirun -np N ./upcycle
 * eval ...` in a job script does the work once. */
typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    int on_every_rank;
    const char *summary;
} Command;

static const Command g_commands[] = {
    {"tokenize", cmd_tokenize, 0, "turn a text file into token shards (byte or BPE) for pretrain/cpt/val"},
    {"encode", cmd_encode, 0, "print a text file's token ids as one JSON array (byte or a data directory's BPE)"},
    {"decode", cmd_decode, 0, "turn a JSON array of token ids back into text"},
    {"train", cmd_train, 1, "train a model from a preset or config, or resume / continue a checkpoint"},
    {"grow", cmd_grow, 1, "grow a trained MoE's experts (E -> m*E): uniform or utility-based, init heuristics"},
    {"diag", cmd_diag, 0, "replica diagnostics of a grown checkpoint: weight cosines, token overlap, load"},
    {"experiment", cmd_experiment, 1, "Fixed-E vs Upcycled vs Fixed-mE over seeds and sweeps, with a report"},
    {"convert", cmd_convert, 0, "rewrite a checkpoint through the engine: another dtype, expert layout or shard size"},
    {"eval", cmd_eval, 0, "validation loss and perplexity of a checkpoint"},
    {"sample", cmd_sample, 0, "generate text from a checkpoint"},
    {"inspect", cmd_inspect, 0, "config, parameter counts, experts, balancing biases of a checkpoint"},
    {"bench", cmd_bench, 0, "measure sgemm GFLOP/s (bench gemm) and training throughput (bench train)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: upcycle COMMAND [options]   (upcycle COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof g_commands / sizeof *g_commands; i++)
        fprintf(f, "  %-10s %s\n", g_commands[i].name, g_commands[i].summary);
}

static const Command *find_command(const char *name) {
    for (size_t i = 0; i < sizeof g_commands / sizeof *g_commands; i++)
        if (!strcmp(name, g_commands[i].name)) return &g_commands[i];
    return NULL;
}

static int unknown_command(const char *name) {
    fprintf(stderr, "upcycle: unknown command '%s'; expected one of", name);
    for (size_t i = 0; i < sizeof g_commands / sizeof *g_commands; i++) fprintf(stderr, "%s %s", i ? "," : "", g_commands[i].name);
    fprintf(stderr, "\n");
    return 2;
}

/* A rank that fails stops the whole job (MPI_Abort) rather than leaving the others waiting in
 * a collective. */
int main(int argc, char **argv) {
    dist_init(&argc, &argv);
    int rc = 0;
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        if (dist_rank() == 0) usage(argc < 2 ? stderr : stdout);
        rc = argc < 2 ? 2 : 0;
    } else {
        const Command *c = find_command(argv[1]);
        if (!c) rc = dist_rank() == 0 ? unknown_command(argv[1]) : 0;
        else if (c->on_every_rank || dist_rank() == 0) rc = c->run(argc - 2, argv + 2);
        if ((!c || !c->on_every_rank) && !rc) dist_wait_for_leader("the end of the command on rank 0");
    }
    fflush(stdout);
    fflush(stderr);
    if (rc && dist_active()) dist_abort(rc);
    dist_finalize();
    return rc;
}
