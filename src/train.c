#include "train.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "dist/dist_checkpoint.h"
#include "io/checkpoint.h"
#include "io/run_dir.h"
#include "optim.h"
#include "util.h"
#include "util/dir_replace.h"

/* metrics.jsonl lines: rank 0 only (metrics is NULL on the other ranks) */
static void mlog(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mlog(FILE *f, const char *fmt, ...) {
    if (!f) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
}

/* Lines of metrics.jsonl must not be lost silently (a full disk): a failed write stops the run
 * with one line, like a failed checkpoint. With close, the file is closed too. */
static int metrics_flush(FILE *f, const char *path, int close) {
    if (!f) return 0;
    int bad = fflush(f) != 0 || ferror(f);
    if (close) bad |= fclose(f) != 0;
    return bad ? up_error("%s: write failed (%s); expected space for the metrics log", path, strerror(errno ? errno : EIO)) : 0;
}



uint64_t eval_window(uint64_t i, uint64_t n_eval, uint64_t n_windows) {
    return (uint64_t)((unsigned __int128)i * n_windows / n_eval);
}

size_t topk_same_sets(const int32_t *a, const int32_t *b, size_t n_tokens, int K) {
    size_t same = 0;
    for (size_t t = 0; t < n_tokens; t++) {
        const int32_t *x = a + t * K, *y = b + t * K;
        int equal = 1; /* the same set: every expert of y is in x (the K of a row are distinct) */
        for (int k = 0; k < K && equal; k++) {
            int found = 0;
            for (int k2 = 0; k2 < K; k2++) found |= x[k2] == y[k];
            equal = found;
        }
        same += equal;
    }
    return same;
}

/* The windows' losses of the model as it routes now, and, with bias (the model's balancing
 * biases, host copy; routing is then done without them), the losses with them and the top-K
 * agreement of the two routings (effect). */
static EvalResult eval_windows(Model *m, Loader *ld, int n_batches, const float *bias, BiasEffect *effect) {
    /* data parallel: the loader's batch is the global one (ranks x m->B sequences); each rank
     * evaluates its slice of every batch and the sums are added across ranks */
    int B = ld->batch_size, T = m->T, ranks = B / m->B, slice = ranks > 1 ? dist_rank() : 0;
    uint64_t W = ld->n_windows, n_eval = W;
    if (n_batches > 0 && (uint64_t)n_batches * (uint64_t)B < W) n_eval = (uint64_t)n_batches * (uint64_t)B;
    uint64_t batches = (n_eval + (uint64_t)B - 1) / (uint64_t)B;
    int32_t *tokens = xmalloc(sizeof(int32_t) * (size_t)B * (T + 1));
    /* windows, sum of window losses, sum of their squares; with bias: sum of window losses
     * with it, (token, MoE layer) pairs compared, pairs with the same top-K set */
    double sums[6] = {0, 0, 0, 0, 0, 0};
    int K = m->cfg.top_k, n_moe = model_config_n_moe_layers(&m->cfg);
    size_t NK = (size_t)m->B * T * K;
    /* each MoE layer's top-K of the pass without the biases, then of the pass with them */
    int32_t *top[2] = {NULL, NULL};
    for (int pass = 0; bias && pass < 2; pass++) top[pass] = xmalloc(sizeof(int32_t) * NK * n_moe);
    for (uint64_t j = 0; j < batches; j++) {
        for (int b = 0; b < B; b++) {
            uint64_t i = j * (uint64_t)B + (uint64_t)b;
            /* the last batch is padded with window 0; padded rows are not counted (rows of a batch
             * do not interact: routing is per token and the balancing bias is fixed here) */
            loader_copy_window(ld, i < n_eval ? eval_window(i, n_eval, W) : 0, tokens + (size_t)b * (T + 1));
        }
        const int32_t *mine = tokens + (size_t)slice * m->B * (T + 1);
        for (int pass = 0; pass < (bias ? 2 : 1); pass++) {
            if (bias) model_balance_bias_set(m, pass ? bias : NULL);
            model_forward(m, mine, 0, 0);
            for (int b = 0; b < m->B; b++) {
                uint64_t i = j * (uint64_t)B + (uint64_t)slice * m->B + (uint64_t)b;
                if (i >= n_eval) continue;
                double row = 0;
                for (int t = 0; t < T; t++) row += m->host_losses[(size_t)b * T + t];
                row /= T;
                if (pass) sums[3] += row;
                else sums[0] += 1, sums[1] += row, sums[2] += row * row;
            }
            if (bias) model_moe_topk(m, top[pass]);
            for (int q = 0; pass && q < n_moe; q++)
                for (int b = 0; b < m->B; b++) {
                    if (j * (uint64_t)B + (uint64_t)slice * m->B + (uint64_t)b >= n_eval) continue;
                    size_t at = NK * q + (size_t)b * T * K;
                    sums[4] += T, sums[5] += (double)topk_same_sets(top[0] + at, top[1] + at, (size_t)T, K);
                }
        }
    }
    free(tokens), free(top[0]), free(top[1]);
    if (ranks > 1) dist_sum_doubles(sums, 6, "the validation loss");
    EvalResult r;
    r.windows = (long long)sums[0];
    r.tokens = r.windows * T;
    r.loss = sums[1] / sums[0];
    double var = sums[0] > 1 ? (sums[2] - sums[1] * sums[1] / sums[0]) / (sums[0] - 1) : 0;
    r.std_error = sums[0] > 1 && var > 0 ? sqrt(var / sums[0]) : 0;
    if (effect && bias) {
        effect->loss_with_bias = sums[3] / sums[0];
        effect->topk_agreement = sums[4] > 0 ? sums[5] / sums[4] : 1;
    }
    return r;
}

EvalResult evaluate_split(Model *m, Loader *ld, int n_batches) { return eval_windows(m, ld, n_batches, NULL, NULL); }

EvalResult evaluate_split_unbiased(Model *m, Loader *ld, int n_batches, BiasEffect *effect) {
    BiasEffect e = {0};
    float *bias = model_balance_bias_copy(m, &e.max_abs_bias);
    e.has_bias = e.max_abs_bias > 0;
    EvalResult r = eval_windows(m, ld, n_batches, e.has_bias ? bias : NULL, &e);
    if (e.has_bias) model_balance_bias_set(m, bias); /* restored */
    if (effect) *effect = e;
    free(bias);
    return r;
}

double evaluate_loss(Model *m, Loader *ld, int n_batches) { return evaluate_split(m, ld, n_batches).loss; }

/* data parallel: start the allreduce of a layer's gradients while the backward goes on */
typedef struct {
    float *grads;
    DistBuckets *buckets;
} GradSync;

static void start_grad_bucket(void *ctx, size_t offset, size_t count, int experts) {
    GradSync *g = ctx;
    dist_buckets_progress(g->buckets);
    if (experts) dist_buckets_start_replicas(g->buckets, g->grads + offset, count); /* expert parallel */
    else dist_buckets_start(g->buckets, g->grads + offset, count);
}

/* data parallel: every rank's expert loads summed, before the balancing-bias update and the
 * imbalance figures (host memory: the CPU backend) */
static void sum_expert_loads(Model *m) {
    for (int l = 0; l < m->cfg.n_layers; l++)
        if (m->layers[l].is_moe) dist_sum_ints(m->acts[l].loads, (size_t)m->cfg.n_experts, "the expert loads");
}

/* max load / mean load per MoE layer: 1.0 is perfect balance */
static int layer_imbalance(const Model *m, double *imbalance) {
    int n = 0;
    int32_t loads[4096];
    for (int l = 0; l < m->cfg.n_layers; l++) {
        if (!m->layers[l].is_moe) continue;
        model_layer_loads(m, l, loads);
        double total = 0, max = 0;
        for (int e = 0; e < m->cfg.n_experts; e++) total += loads[e], max = loads[e] > max ? loads[e] : max;
        imbalance[n++] = total > 0 ? max / (total / m->cfg.n_experts) : 0;
    }
    return n;
}

static int save_periodic(const char *out_dir, const Model *m, const TrainerState *st, int keep) {
    char *dir = run_dir_checkpoint(out_dir, st->step);
    int rc = dist_checkpoint_save(dir, m, st, 1, NULL, NULL);
    free(dir);
    if (!rc && keep > 0 && dist_rank() == 0) {
        /* remove the one that falls out of the window (saves are evenly spaced) */
        int interval = st->train.save_every;
        int old_step = st->step - keep * interval;
        if (old_step > 0) {
            char *old = run_dir_checkpoint(out_dir, old_step);
            dir_remove(old); /* never a half-deleted directory under a checkpoint's name */
            free(old);
        }
    }
    return rc;
}

/* ---- the step's verdict ---- */

StepVerdict train_step_verdict(double loss, double grad_norm, const TrainConfig *tc, const TrainerState *st) {
    StepVerdict v = {STEP_FINE, STEP_APPLY};
    if (!isfinite(loss)) v.cause = STEP_NONFINITE_LOSS;
    else if (!isfinite(grad_norm)) v.cause = STEP_NONFINITE_GRAD;
    else if (tc->spike_factor > 0 && st->loss_mean_steps >= SPIKE_MIN_STEPS && loss > tc->spike_factor * st->loss_mean)
        v.cause = STEP_LOSS_SPIKE;
    if (v.cause == STEP_FINE) return v;
    int may_skip = v.cause == STEP_LOSS_SPIKE || tc->skip_nonfinite;
    v.action = may_skip && st->skipped_steps < tc->max_skips ? STEP_SKIP : STEP_STOP;
    return v;
}

void train_loss_mean_update(TrainerState *st, double loss) {
    st->loss_mean_steps++;
    double a = st->loss_mean_steps < SPIKE_EMA_STEPS ? 1.0 / st->loss_mean_steps : 1.0 / SPIKE_EMA_STEPS;
    st->loss_mean += a * (loss - st->loss_mean);
}

/* ---- one run: its state, set up in named steps, released by one cleanup path ---- */

typedef struct {
    const TrainOptions *opt;
    ModelConfig mc;
    TrainConfig tc;
    TrainerState st;
    const char *split;
    int keep;                      /* periodic checkpoints kept */
    Loader train_ld, val_ld;
    int have_train_ld, have_val_ld;
    Model m;
    int have_model;
    const Backend *be;
    int ranks, leader, quiet, ep;  /* data parallel ranks; rank 0 alone writes; expert parallel */
    int slice;                     /* this rank's slice of every global batch */
    GradSync sync;
    char *metrics_path;
    FILE *metrics;                 /* NULL on ranks other than 0 */
    int32_t *tokens;               /* (batch_size, seq_len + 1) */
} Run;

/* the run's configs: fresh, resumed (the checkpoint's wins) or a new stage from a checkpoint */
static int run_configure(Run *r, const ModelConfig *model_cfg, const TrainConfig *train_cfg) {
    const TrainOptions *opt = r->opt;
    r->mc = *model_cfg;
    r->tc = *train_cfg;
    r->split = opt->split ? opt->split : "pretrain";
    r->keep = opt->keep_checkpoints > 0 ? opt->keep_checkpoints : 2;
    if (opt->resume) {
        if (checkpoint_load_config(opt->resume, &r->mc) || trainer_state_load(opt->resume, &r->st)) return -1;
        int steps = r->tc.steps;
        r->tc = r->st.train;
        if (steps > r->tc.steps) r->tc.steps = steps; /* allow extending a finished run */
        r->tc.precision = train_cfg->precision;       /* a run-time choice, like the device */
        if (!checkpoint_has_optimizer(opt->resume))
            return up_error("%s: training/optimizer.safetensors is missing; expected a checkpoint written by `upcycle train`", opt->resume);
    } else if (opt->init) {
        if (checkpoint_load_config(opt->init, &r->mc)) return -1;
    }
    if (model_config_validate(&r->mc, "model config") || train_config_validate(&r->tc, "train config")) return -1;
    /* refused before training, not after it: checkpoints are written only in a family that computes the model */
    if (config_family_check(&r->mc, "model config")) return -1;
    if (r->tc.seq_len > r->mc.max_seq_len)
        return up_error("train config: seq_len %d exceeds max_position_embeddings %d; expected seq_len <= %d", r->tc.seq_len,
                        r->mc.max_seq_len, r->mc.max_seq_len);
    return 0;
}

static int run_open_data(Run *r) {
    const TrainOptions *opt = r->opt;
    const TrainConfig *tc = &r->tc;
    if (loader_open(&r->train_ld, opt->data_dir, r->split, tc->batch_size, tc->seq_len, tc->seed, 1)) return -1;
    r->have_train_ld = 1;
    if (loader_check_vocab(&r->train_ld, r->mc.vocab_size)) return -1;
    if (loader_open(&r->val_ld, opt->data_dir, "val", tc->batch_size, tc->seq_len, 0, 0)) return -1;
    r->have_val_ld = 1;
    return 0;
}

/* the model on its backend (and its ranks), with weights fresh, resumed or from --init */
static int run_create_model(Run *r) {
    const TrainOptions *opt = r->opt;
    r->be = opt->backend ? opt->backend : backend_cpu();
    r->ep = opt->expert_parallel && dist_size() > 1;
    if (r->ep && dist_ep_setup(opt->ep_size)) return -1;
    if ((r->be->set_precision && r->be->set_precision(r->tc.precision)) ||
        model_create_ep(&r->m, &r->mc, r->be, r->ep ? dist_ep_rank() : 0, r->ep ? dist_ep_size() : 1))
        return -1;
    r->have_model = 1;
    int rc = 0;
    if (opt->resume) {
        rc = checkpoint_load_weights(opt->resume, &r->m);
        if (!rc) rc = checkpoint_load_optimizer(opt->resume, &r->m);
        if (!rc) loader_set_position(&r->train_ld, r->st.data_epoch, r->st.data_cursor);
    } else if (opt->init) {
        rc = checkpoint_load_weights(opt->init, &r->m);
        if (!rc && checkpoint_has_optimizer(opt->init)) rc = checkpoint_load_optimizer(opt->init, &r->m);
        r->st.step = 0;
    } else {
        model_init_weights(&r->m, r->tc.seed);
    }
    if (!rc && !opt->resume && opt->stream_from) {
        TrainerState from;
        rc = trainer_state_load(opt->stream_from, &from);
        if (!rc) loader_set_position(&r->train_ld, from.data_epoch, from.data_cursor);
    }
    if (dist_size() > 1) { /* expert parallel ranks load different tensors: all stop if one fails */
        int32_t failed = rc != 0;
        dist_sum_ints(&failed, 1, "the checkpoint load");
        if (failed && !rc) rc = up_error("rank %d: another rank could not load its weights (its message says why)", dist_rank());
    }
    if (rc) return -1;
    if (opt->save_dtype) r->m.cfg.weight_dtype = opt->save_dtype - 1; /* how checkpoints store it; the math stays fp32 */
    if (opt->save_layout) r->m.cfg.packed_experts = opt->save_layout == SAVE_PACKED;
    r->st.train = r->tc;
    snprintf(r->st.data_dir, sizeof r->st.data_dir, "%s", opt->data_dir);
    return 0;
}

/* data parallel: rank 0 alone writes (output directory, metrics, checkpoints, progress) */
static int run_open_output(Run *r) {
    const TrainOptions *opt = r->opt;
    r->ranks = dist_size(), r->leader = dist_rank() == 0, r->quiet = opt->quiet || !r->leader;
    if (r->ranks > 1 && !r->be->runs_on_host)
        return up_error("data parallel training over %d ranks runs on the CPU backend; expected --device cpu", r->ranks);
    if (r->ranks > 1 && r->tc.batch_size % r->ranks)
        return up_error("train config: batch_size %d over %d ranks; expected a multiple of the number of ranks",
                        r->tc.batch_size, r->ranks);
    if (!r->leader) return 0;
    if (mkdir_p(opt->out_dir)) return -1;
    r->metrics_path = run_dir_metrics(opt->out_dir);
    /* a failed truncation has said why (e.g. no space left); keep that message */
    if (opt->resume && run_dir_metrics_truncate(opt->out_dir, r->st.step)) return -1;
    r->metrics = fopen(r->metrics_path, "a");
    if (!r->metrics)
        return up_error("%s: cannot open for appending (%s); expected a writable output directory", r->metrics_path,
                        strerror(errno));
    return 0;
}

static void run_print_header(const Run *r) {
    const TrainOptions *opt = r->opt;
    const Model *m = &r->m;
    size_t total, active, embedding;
    model_param_counts(m, &total, &active, &embedding);
    model_config_print(&r->mc, stdout);
    train_config_print(&r->tc, stdout);
    printf("params: %.3fM total, %.3fM active per token, %.3fM embedding; data %s/%s: %llu tokens\n", total / 1e6,
           active / 1e6, embedding / 1e6, opt->data_dir, r->split, (unsigned long long)r->train_ld.shard.n_tokens);
    if (opt->resume) printf("resumed from %s at step %d\n", opt->resume, r->st.step);
    if (opt->init) printf("initialized from %s (new stage, AdamW step counter %d)\n", opt->init, m->step);
    printf("device: %s, precision %s\n", r->be->name, r->tc.precision == PRECISION_BF16 ? "bf16" : "fp32");
    if (r->ranks > 1)
        printf("data parallel: %d ranks x %d sequences (global batch %d); gradients and expert loads summed across ranks\n",
               r->ranks, r->tc.batch_size / r->ranks, r->tc.batch_size);
    if (r->ep) {
        size_t here = 0;
        for (int i = 0; i < m->n_params; i++) here += m->params[i].trainable ? m->params[i].numel : 0;
        printf("expert parallel: %d experts per MoE layer on each of %d ranks (rank 0 holds %.3fM of the %.3fM parameters); "
               "tokens exchanged all-to-all", m->n_local_experts, m->ep_size, here / 1e6, total / 1e6);
        if (m->ep_size < r->ranks) printf("; %d expert groups, replicas sum their expert gradients", r->ranks / m->ep_size);
        printf("\n");
    }
}

/* data parallel: every rank holds the same weights (rank 0's, to be certain) and trains on its
 * slice of each global batch; gradients of loss / ranks are summed layer by layer */
static void run_setup_ranks(Run *r) {
    Model *m = &r->m;
    r->slice = r->ranks > 1 ? dist_rank() : 0;
    r->sync = (GradSync){.grads = m->grad_mem, .buckets = dist_buckets_new()};
    if (r->ranks > 1) {
        /* (expert parallel: each rank's experts are its own) */
        for (int i = 0, j; i < m->n_params; i = j) {
            size_t off, n;
            j = model_sharded_run(m, i, &off, &n);
            if (!m->params[i].sharded) dist_bcast_bytes(m->param_mem + off, sizeof(float) * n, "the initial weights");
        }
        m->loss_scale = 1.0f / r->ranks;
        m->grad_ready = start_grad_bucket, m->grad_ready_ctx = &r->sync;
    }
    model_set_batch(m, r->tc.batch_size / r->ranks, r->tc.seq_len);
    r->tokens = xmalloc(sizeof(int32_t) * (size_t)r->tc.batch_size * (r->tc.seq_len + 1));
}

static void run_close(Run *r) {
    if (r->sync.buckets) dist_buckets_free(r->sync.buckets);
    if (r->metrics) fclose(r->metrics);
    free(r->metrics_path);
    free(r->tokens);
    if (r->have_model) model_free(&r->m);
    if (r->have_train_ld) loader_close(&r->train_ld);
    if (r->have_val_ld) loader_close(&r->val_ld);
}

/* Forward and (for a finite loss) backward of the next batch: the global batch's mean loss and
 * the gradient norm (NAN without a backward), the same on every rank. */
static void run_forward_backward(Run *r, double *loss_out, double *grad_norm_out) {
    Model *m = &r->m;
    const TrainConfig *tc = &r->tc;
    loader_next(&r->train_ld, r->tokens);
    model_zero_grad(m);
    double loss = model_forward(m, r->tokens + (size_t)r->slice * m->B * (tc->seq_len + 1), tc->aux_loss_coef, tc->z_loss_coef);
    if (r->ranks > 1) { /* all ranks take the same decisions */
        dist_sum_doubles(&loss, 1, "the loss");
        loss /= r->ranks;
    }
    double grad_norm = NAN;
    if (isfinite(loss)) {
        model_backward(m, tc->aux_loss_coef, tc->z_loss_coef);
        if (r->ranks > 1) {
            dist_buckets_wait(r->sync.buckets, "the gradient allreduce");
            sum_expert_loads(m);
        }
        grad_norm = model_grad_norm(m);
    }
    *loss_out = loss, *grad_norm_out = grad_norm;
}

/* what went wrong in a step the verdict did not apply, naming the tensor where it can */
static void describe_bad_step(Model *m, StepCause cause, double loss, double grad_norm, const TrainConfig *tc,
                              const TrainerState *st, char *why, size_t n_why) {
    char where[PARAM_NAME_MAX + 64];
    if (cause == STEP_NONFINITE_LOSS) {
        /* a non-finite weight, else the first activation that went non-finite */
        int n = model_find_nonfinite_weight(m, where, sizeof where);
        if (n) snprintf(why, n_why, "loss is %g (weight %s is non-finite, %d tensors in all)", loss, where, n);
        else if (model_find_nonfinite_activation(m, where, sizeof where))
            snprintf(why, n_why, "loss is %g (first non-finite activation: %s)", loss, where);
        else snprintf(why, n_why, "loss is %g", loss);
    } else if (cause == STEP_NONFINITE_GRAD) {
        int n = model_find_nonfinite_grad(m, where, sizeof where);
        snprintf(why, n_why, "gradient norm is %g (first non-finite gradient in backward order: %s, %d tensors in all)",
                 grad_norm, n ? where : "?", n);
    } else {
        snprintf(why, n_why, "loss spike %.4f > %g x the running mean %.4f", loss, tc->spike_factor, st->loss_mean);
    }
}

/* metrics.jsonl's line and the progress line of an applied step */
static int run_log_step(Run *r, TrainResult *result, double loss, double grad_norm, float lr, double *last_val,
                        double *t_window, int *window_steps, double t_start) {
    const TrainConfig *tc = &r->tc;
    const TrainerState *st = &r->st;
    FILE *metrics = r->metrics;
    double imbalance[MAX_LAYERS];
    int n_imb = layer_imbalance(&r->m, imbalance);
    int do_eval = tc->eval_every > 0 && (st->step % tc->eval_every == 0 || st->step == tc->steps);
    if (do_eval) *last_val = evaluate_loss(&r->m, &r->val_ld, tc->eval_batches);
    mlog(metrics, "{\"step\": %d, \"loss\": %.6f, \"lr\": %.6g, \"grad_norm\": %.6g, \"tokens\": %lld", st->step, loss, lr,
         grad_norm, st->tokens_seen);
    if (do_eval) mlog(metrics, ", \"val_loss\": %.6f", *last_val);
    mlog(metrics, ", \"load_imbalance\": [");
    for (int i = 0; i < n_imb; i++) mlog(metrics, "%s%.4f", i ? ", " : "", imbalance[i]);
    mlog(metrics, "]}\n");
    if (metrics_flush(metrics, r->metrics_path, 0)) return -1;
    if (r->quiet || !(st->step % tc->log_every == 0 || st->step == tc->steps || do_eval)) return 0;
    double now = now_seconds();
    double tok_s = *window_steps * (double)tc->batch_size * tc->seq_len / (now - *t_window);
    double eta = (tc->steps - st->step) * (now - t_start) / result->steps_run;
    char eta_buf[32];
    format_duration(eta, eta_buf, sizeof eta_buf);
    printf("step %5d/%d | loss %.4f | lr %.2e | gnorm %.3f | %.1fk tok/s | ETA %s", st->step, tc->steps, loss, lr, grad_norm,
           tok_s / 1e3, eta_buf);
    if (n_imb) {
        printf(" | imb");
        for (int i = 0; i < n_imb; i++) printf(" %.2f", imbalance[i]);
    }
    if (do_eval) printf(" | val %.4f", *last_val);
    printf("\n");
    fflush(stdout);
    *t_window = now, *window_steps = 0;
    return 0;
}

/* a step the verdict skips: its line in metrics.jsonl and on stderr */
static int run_log_skip(Run *r, double loss, float lr, const char *why) {
    TrainerState *st = &r->st;
    st->skipped_steps++;
    fprintf(stderr, "upcycle: step %d skipped (%d of at most %d): %s\n", st->step, st->skipped_steps, r->tc.max_skips, why);
    mlog(r->metrics, "{\"step\": %d, \"loss\": ", st->step + 1);
    if (isfinite(loss)) mlog(r->metrics, "%.6f", loss);
    else mlog(r->metrics, "null");
    mlog(r->metrics, ", \"lr\": %.6g, \"skipped\": true, \"tokens\": %lld}\n", lr,
         st->tokens_seen + (long long)r->tc.batch_size * r->tc.seq_len);
    return metrics_flush(r->metrics, r->metrics_path, 0);
}

/* AdamW; an update that makes a weight non-finite (e.g. lr * weight decay > 2 grows weights
 * geometrically) stops the run: it is applied already, so it cannot be skipped */
static int run_apply_update(Run *r, float lr, double loss, double grad_norm) {
    Model *m = &r->m;
    model_optimizer_step_with_norm(m, &r->tc, lr, grad_norm);
    int32_t bad_weights = !isfinite(m->be->sum_squares(m->param_mem, m->n_floats));
    if (r->ep) dist_sum_ints(&bad_weights, 1, "the weight check"); /* every rank stops together */
    if (bad_weights) {
        char where[PARAM_NAME_MAX + 64];
        model_find_nonfinite_weight(m, where, sizeof where);
        return up_error("step %d: the update made a weight non-finite (first: %s); expected finite weights (lower the learning rate?)",
                        r->st.step, where);
    }
    train_loss_mean_update(&r->st, loss);
    return 0;
}

/* The training loop: for each step, the verdict on its loss and gradient decides whether the
 * update is applied, skipped or the run stops (never continuing, or checkpointing, garbage:
 * the last checkpoint stays as it was) */
static int run_train(Run *r, TrainResult *result) {
    TrainConfig *tc = &r->tc;
    TrainerState *st = &r->st;
    int steps_this_run = tc->steps - st->step;
    if (steps_this_run < 0) steps_this_run = 0;
    result->losses = xcalloc(steps_this_run ? steps_this_run : 1, sizeof(float));
    double t_start = now_seconds(), t_window = t_start, last_val = NAN;
    int window_steps = 0, rc = 0;
    while (st->step < tc->steps && !rc) {
        double t_step = now_seconds();
        float lr = lr_at(tc, st->step, tc->steps);
        double loss, grad_norm;
        run_forward_backward(r, &loss, &grad_norm);
        StepVerdict v = train_step_verdict(loss, grad_norm, tc, st);
        char why[PARAM_NAME_MAX + 160] = "";
        if (v.cause != STEP_FINE) describe_bad_step(&r->m, v.cause, loss, grad_norm, tc, st, why, sizeof why);
        if (v.action == STEP_STOP) {
            int nonfinite = v.cause != STEP_LOSS_SPIKE, may_skip = !nonfinite || tc->skip_nonfinite;
            rc = up_error("step %d: %s; expected %s%s", st->step, why,
                          !nonfinite ? "no loss spike" : v.cause == STEP_NONFINITE_GRAD ? "a finite gradient" : "a finite loss",
                          may_skip ? " (more than --max-skips steps skipped)" : " (lower the learning rate? --skip-nonfinite skips such steps)");
            break;
        }
        if (v.action == STEP_SKIP) rc = run_log_skip(r, loss, lr, why);
        else rc = run_apply_update(r, lr, loss, grad_norm);
        if (rc) break;
        result->losses[result->steps_run++] = (float)loss;
        st->step++;
        st->tokens_seen += (long long)tc->batch_size * tc->seq_len;
        st->data_epoch = r->train_ld.epoch, st->data_cursor = r->train_ld.cursor;
        window_steps++;
        result->step_seconds += now_seconds() - t_step;
        if (v.action == STEP_APPLY) /* a skipped step has logged its own line */
            rc = run_log_step(r, result, loss, grad_norm, lr, &last_val, &t_window, &window_steps, t_start);
        if (!rc && tc->save_every > 0 && st->step % tc->save_every == 0 && st->step < tc->steps)
            rc = save_periodic(r->opt->out_dir, &r->m, st, r->keep);
    }
    result->seconds = now_seconds() - t_start;
    return rc;
}

int train_run(const ModelConfig *model_cfg, const TrainConfig *train_cfg, const TrainOptions *opt, TrainResult *result) {
    memset(result, 0, sizeof *result);
    Run r;
    memset(&r, 0, sizeof r);
    r.opt = opt;
    int rc = run_configure(&r, model_cfg, train_cfg);
    if (!rc) rc = run_open_data(&r);
    if (!rc) rc = run_create_model(&r);
    if (!rc) rc = run_open_output(&r);
    if (rc) {
        run_close(&r);
        return -1;
    }
    if (!r.quiet) run_print_header(&r);
    run_setup_ranks(&r);
    rc = run_train(&r, result);
    if (!rc) { /* expert parallel: every rank sends its experts to rank 0, which writes */
        char *final_dir = path_join(opt->out_dir, "final");
        rc = dist_checkpoint_save(final_dir, &r.m, &r.st, 1, NULL, NULL);
        if (!rc && !r.quiet) printf("saved %s (step %d)\n", final_dir, r.st.step);
        free(final_dir);
    }
    const TrainConfig *tc = &r.tc;
    result->tokens_per_second = result->steps_run ? result->steps_run * (double)tc->batch_size * tc->seq_len / result->seconds : 0;
    result->final_train_loss = result->steps_run ? result->losses[result->steps_run - 1] : NAN;
    EvalResult final_eval;
    if (!rc && opt->report_balance_bias) {
        /* the final loss as trained (with the biases), and as transformers computes the saved
         * model (without them) */
        BiasEffect bias;
        final_eval = evaluate_split_unbiased(&r.m, &r.val_ld, opt->final_eval_batches, &bias);
        if (bias.has_bias) {
            if (dist_rank() == 0)
                printf("note: %s/final: %s has no balancing bias, so the saved model routes without it (kept in %s/%s for "
                       "resuming; largest |bias| %.4f): val loss %.4f without, %.4f with; top-K expert sets agree on %.1f%% of "
                       "(token, MoE layer) pairs (--aux-loss with --bias-rate 0 trains a model that needs none)\n",
                       opt->out_dir, config_family_model_type(&r.m.cfg), CKPT_TRAINING_DIR, BALANCE_BIAS_NAME, bias.max_abs_bias,
                       final_eval.loss, bias.loss_with_bias, 100 * bias.topk_agreement);
            final_eval.loss = bias.loss_with_bias; /* the run's own function, as without the report */
        }
    } else {
        final_eval = evaluate_split(&r.m, &r.val_ld, opt->final_eval_batches);
    }
    result->final_val_loss = final_eval.loss;
    result->final_val_stderr = final_eval.std_error;
    result->final_val_tokens = final_eval.tokens;
    int close_rc = metrics_flush(r.metrics, r.metrics_path, 1);
    r.metrics = NULL; /* closed */
    if (!rc) rc = close_rc;
    run_close(&r);
    return rc;
}
