/* checkpoint.h - a checkpoint is a directory other tools can read:
 *   config.json            Hugging Face Qwen3-MoE keys (model_config_save_json)
 *   model.safetensors      every parameter, F32, Hugging Face names
 *   optimizer.safetensors  Adam moments: "exp_avg.<name>", "exp_avg_sq.<name>"; metadata "step"
 *   trainer.json           step, data position, RNG state, schedule, training config
 * The directory is written under a temporary name and renamed into place, so a crash leaves
 * the previous checkpoint or none, never half of one. */
#ifndef UPCYCLE_CHECKPOINT_H
#define UPCYCLE_CHECKPOINT_H

#include <stdint.h>

#include "config.h"
#include "model.h"

typedef struct {
    int step;                 /* optimizer steps completed */
    uint64_t data_epoch, data_cursor;
    uint64_t rng_state[4];
    long long tokens_seen;
    int stage_start_step;     /* first step of the current WSD stage (continued pre-training) */
    int skipped_steps;        /* steps skipped by the guards in this stage */
    double loss_mean;         /* running mean of the loss (spike guard) and its number of steps */
    int loss_mean_steps;
    TrainConfig train;        /* the configuration of the run that wrote it */
    char data_dir[1024];
} TrainerState;

/* Where the writer takes its tensors from: n_tensors entries of table (names, shapes; the whole
 * model's, in file order), and data(src, kind, i) returning entry i's floats of that kind (the
 * weights, or Adam's first or second moment) in host memory, valid until the next call; NULL
 * means failure (up_error set). The writer asks for every entry of a kind in table order, the
 * moments for trainable entries only, and stops at its first failure. */
typedef enum { CKPT_WEIGHTS, CKPT_EXP_AVG, CKPT_EXP_AVG_SQ } CkptTensorKind;
typedef struct TensorSource {
    const ParamInfo *table;
    int n_tensors;
    const float *(*data)(struct TensorSource *src, CkptTensorKind kind, int i);
    int random_access; /* 1: data may be asked in any order (packed experts need it); 0: table order only */
} TensorSource;

/* the balancing biases of a family whose checkpoints have none (all but Qwen3-MoE), beside the weights */
#define BALANCE_BIAS_NAME "balance_bias.safetensors"
/* model.safetensors is split into shards of at most this many bytes, with an index (0: 5 GB) */
void checkpoint_set_shard_bytes(uint64_t bytes);

/* Writes checkpoint DIR from a source: config.json, model.safetensors, with_optimizer:
 * optimizer.safetensors (metadata step = optimizer_step), state: trainer.json and
 * train_config.json (state may be NULL), extra_name: one more text file. The directory is
 * replaced whole (util/dir_replace.h). */
int checkpoint_write(const char *dir, const ModelConfig *cfg, TensorSource *src, int with_optimizer, int optimizer_step,
                     const TrainerState *state, const char *extra_name, const char *extra_text);
/* the source of a whole model in one process (one host copy of one buffer at a time) */
TensorSource *checkpoint_model_source(const Model *m);
void checkpoint_model_source_free(TensorSource *src);

/* checkpoint_write of model m (which must hold all its experts: an expert parallel rank saves
 * through dist_checkpoint_save); state may be NULL; with_optimizer writes the moments */
int checkpoint_save(const char *dir, const Model *m, const TrainerState *state, int with_optimizer);
/* the same, plus one extra text file (e.g. grow.json) inside the same atomic directory */
int checkpoint_save_with(const char *dir, const Model *m, const TrainerState *state, int with_optimizer,
                         const char *extra_name, const char *extra_text);
int checkpoint_load_config(const char *dir, ModelConfig *cfg);
/* Loads model.safetensors into an already created model: every name, dtype and shape must
 * match the model's table, and no tensor may be missing or unexpected. */
int checkpoint_load_weights(const char *dir, Model *m);
int checkpoint_load_optimizer(const char *dir, Model *m);
/* Creates the model of DIR/config.json on the CPU backend and loads its weights, and its
 * optimizer state when with_optimizer and the checkpoint has one (*has_optimizer says which). */
int checkpoint_load_model(const char *dir, Model *m, int with_optimizer, int *has_optimizer);
/* the same on backend be (eval and sample with --device) */
int checkpoint_load_model_on(const char *dir, const Backend *be, Model *m, int with_optimizer, int *has_optimizer);
int checkpoint_has_optimizer(const char *dir);
/* 1 if DIR/config.json was written by upcycle (has our upcycle_* keys), else 0 */
int checkpoint_is_upcycle(const char *dir);
int trainer_state_load(const char *dir, TrainerState *state);

#endif
