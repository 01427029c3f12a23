/* train.h - the training loop as a library call (the CLI and the experiment runner use it). */
#ifndef UPCYCLE_TRAIN_H
#define UPCYCLE_TRAIN_H

#include "backend.h"
#include "config.h"
#include "data/shard.h"
#include "io/checkpoint.h"
#include "model.h"

typedef struct {
    const char *data_dir;
    const char *split;       /* training split: "pretrain" (default) or "cpt" */
    const char *out_dir;     /* checkpoints, metrics.jsonl */
    const char *resume;      /* checkpoint to resume (weights, optimizer, data position, schedule) */
    const char *init;        /* checkpoint to start a new stage from (weights; optimizer state if present) */
    const char *stream_from; /* continue the data stream at this checkpoint's position (e.g. the grown one) */
    int final_eval_batches;  /* batches for the final validation loss, strided over the split (0: the whole split) */
    int quiet;               /* no progress lines */
    int keep_checkpoints;    /* periodic checkpoints kept (default 2) */
    const Backend *backend;  /* NULL: the CPU backend */
    int expert_parallel;     /* under mpirun: shard the experts over the ranks (else data parallel only) */
    int ep_size;             /* ranks per expert group (0: all ranks) */
    int save_dtype;          /* dtype of the checkpoints' weights: 0 the model's own (config.json
                              * torch_dtype), else SAVE_AS(WEIGHT_*) */
    int save_layout;         /* experts in the checkpoints: SAVE_LAYOUT_KEEP (the model's), SAVE_PER_EXPERT, SAVE_PACKED */
    int report_balance_bias; /* after the final save, when the balancing biases are nonzero: one line
                              * with what they change (the saved model routes without them) */
} TrainOptions;

typedef struct {
    int steps_run;
    double final_train_loss, final_val_loss;
    double final_val_stderr;   /* standard error of final_val_loss over the evaluated windows */
    long long final_val_tokens; /* tokens the final validation loss covers */
    double seconds, tokens_per_second;
    double step_seconds;     /* time in training steps only (no evaluation, no checkpoints) */
    float *losses;           /* per step of this run (malloc'd, steps_run entries) */
} TrainResult;

/* The verdict on a step, from its loss and gradient norm alone (the gradient norm is not
 * looked at when the loss is non-finite: no backward is run then). A non-finite loss or
 * gradient norm is skipped only with tc->skip_nonfinite; a loss spike (loss > spike_factor x
 * the running mean, once the mean has SPIKE_MIN_STEPS steps; spike_factor 0 disables) is
 * skipped; either stops the run once st->skipped_steps reached tc->max_skips. */
#define SPIKE_MIN_STEPS 20 /* the spike guard is active once the running mean has this many steps */
#define SPIKE_EMA_STEPS 50 /* then the mean is an EMA over about this many */
typedef enum { STEP_FINE, STEP_NONFINITE_LOSS, STEP_NONFINITE_GRAD, STEP_LOSS_SPIKE } StepCause;
typedef enum { STEP_APPLY, STEP_SKIP, STEP_STOP } StepAction;
typedef struct {
    StepCause cause;
    StepAction action;
} StepVerdict;
StepVerdict train_step_verdict(double loss, double grad_norm, const TrainConfig *tc, const TrainerState *st);
/* the spike guard's running mean after an applied step: the exact mean over the first
 * SPIKE_EMA_STEPS steps, then an EMA with weight 1/SPIKE_EMA_STEPS */
void train_loss_mean_update(TrainerState *st, double loss);

/* Runs training; model config and train config are used for a fresh run; with resume the
 * checkpoint's config wins (train->steps may extend it). Returns 0 or -1 (up_error). */
int train_run(const ModelConfig *model_cfg, const TrainConfig *train_cfg, const TrainOptions *opt, TrainResult *result);

/* Validation loss of a split: the mean over windows of each window's mean token loss (every
 * window has T targets, so this is token-weighted). n_batches <= 0, or at least the split:
 * every window once. Otherwise n_batches * B windows strided evenly over the whole split
 * (window eval_window(i, n, W) for i < n), the same subset at every call; never its first N
 * windows. std_error: the standard deviation of the window losses / sqrt(windows). The
 * loader's position is not used or changed. */
typedef struct {
    double loss, std_error;
    long long windows, tokens;
} EvalResult;
EvalResult evaluate_split(Model *m, Loader *ld, int n_batches);
/* The effect of the loss-free balancing biases on a model evaluated without them. */
typedef struct {
    int has_bias;          /* some bias is nonzero; else the fields below are 0 */
    double max_abs_bias;   /* the largest |bias| of any expert of any layer */
    double loss_with_bias; /* the validation loss routing with the biases (as in training) */
    double topk_agreement; /* share of (token, MoE layer) pairs whose top-K expert set is the same */
} BiasEffect;
/* evaluate_split of the function a saved checkpoint computes in transformers: routing without
 * the balancing biases (no family the engine writes has them), which are restored afterwards;
 * effect (may be NULL) gets what they change. */
EvalResult evaluate_split_unbiased(Model *m, Loader *ld, int n_batches, BiasEffect *effect);
/* rows of a (n_tokens, K) and b (n_tokens, K) that select the same set of experts */
size_t topk_same_sets(const int32_t *a, const int32_t *b, size_t n_tokens, int K);
double evaluate_loss(Model *m, Loader *ld, int n_batches); /* evaluate_split(...).loss */
uint64_t eval_window(uint64_t i, uint64_t n_eval, uint64_t n_windows); /* floor(i * W / n) */

#endif
