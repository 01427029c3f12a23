/* fixtures.h - small data directories, configs and checkpoints shared by tests. */
#ifndef UPCYCLE_TEST_FIXTURES_H
#define UPCYCLE_TEST_FIXTURES_H

#include "config.h"

/* DIR/data with pretrain/cpt/val shards of structured tokens (vocab 40); malloc'd path */
char *fixture_data_dir(void);
/* a 2-layer model (one dense, one MoE with 4 experts top-2) and a 12-step training config */
void fixture_small_run(ModelConfig *mc, TrainConfig *tc);
/* trains the small run into DIR/<name> and returns the path of its final checkpoint */
char *fixture_trained_checkpoint(const char *name, const ModelConfig *mc, const TrainConfig *tc, const char *data_dir);

/* The Hugging Face fixtures of tests/make_hf_fixtures.py (space-separated names) as dir/<name>.
 * One python with torch costs seconds, so each is made once per run, in test_run_dir(), and
 * copied from there; the script seeds every fixture by its name, so a copy is what a fresh call
 * would make. 0, or -1 after recording a test failure (no python3 with torch, script failed). */
int fixture_hf(const char *dir, const char *names);

/* The parity configurations shared by the PyTorch and GPU parity tests (index 0..4): dense with
 * tied embeddings, interleaved with aux and z losses, full MoE with a first dense layer and no
 * renormalization, Qwen2-MoE-shaped (q/k/v biases, shared expert) and OLMoE-shaped (q/k norm
 * over the whole projection, clip_qkv) full MoE without renormalization. */
#define FIXTURE_PARITY_CASES 6
#define FIXTURE_PARITY_STEPS 20
const char *fixture_parity_case(int index, ModelConfig *mc, TrainConfig *tc);

#endif
