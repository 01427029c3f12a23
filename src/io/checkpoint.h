/* checkpoint.h - a checkpoint is a directory other tools can read. Its top level is exactly the
 * model that the family's transformers code computes (docs/hf-checkpoints.md):
 *   config.json            the family's keys (model_config_save_json; a family that computes
 *                          every switch of the model, else the save is refused)
 *   model.safetensors      every model parameter in the family's names, layout and dtype (or
 *                          shards + model.safetensors.index.json); no other *.safetensors
 * Training state that no family holds lives in a subfolder, where transformers and vLLM (which
 * load every top-level *.safetensors of an unindexed directory) never look:
 *   training/optimizer.safetensors    Adam moments "exp_avg.<name>", "exp_avg_sq.<name>"; metadata "step"
 *   training/balance_bias.safetensors the loss-free balancing biases "...mlp.gate.e_score_correction_bias"
 *                                     [E] F32 (selection only; not part of the saved model's function)
 *   training/trainer.json             step, data position, RNG state, schedule
 *   training/train_config.json        the training configuration
 * Readers also take these files from the top level (checkpoints written before the subfolder),
 * and a balancing bias inside model.safetensors. The directory is written under a temporary name
 * and renamed into place, so a crash leaves the previous checkpoint or none, never half of one. */
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

/* the subfolder of training state, and the balancing biases' file in it */
#define CKPT_TRAINING_DIR "training"
#define BALANCE_BIAS_NAME "balance_bias.safetensors"
/* DIR/training/NAME, or DIR/NAME where only that exists (an earlier layout); malloc'd */
char *checkpoint_training_path(const char *dir, const char *name);
/* model.safetensors is split into shards of at most this many bytes, with an index (0: 5 GB) */
void checkpoint_set_shard_bytes(uint64_t bytes);

/* Writes checkpoint DIR from a source: config.json, model.safetensors, the balancing biases
 * (training/), with_optimizer: training/optimizer.safetensors (metadata step = optimizer_step),
 * state: training/trainer.json and train_config.json (state may be NULL), extra_name: one more
 * text file at the top. The directory is replaced whole (util/dir_replace.h). Refused, writing
 * nothing, when the config's family cannot compute the model (config_family_check). */
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
int checkpoint_has_trainer_state(const char *dir); /* training/trainer.json (or an earlier layout's) */
/* 1 if DIR/config.json was written by upcycle (has our upcycle_* keys), else 0 */
int checkpoint_is_upcycle(const char *dir);
int trainer_state_load(const char *dir, TrainerState *state);

#endif
