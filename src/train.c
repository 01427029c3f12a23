#include "train.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "io/checkpoint.h"
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

/* spike guard: active once the running loss mean has this many steps; then an EMA over ~this many */
#define SPIKE_MIN_STEPS 20
#define SPIKE_EMA_STEPS 50

/* A resumed run re-does the steps after its checkpoint: drop the lines the interrupted run
 * logged past that step, so metrics.jsonl holds each step once (rewritten atomically). */
static int truncate_metrics(const char *path, int max_step) {
    if (!path_exists(path)) return 0;
    char *text;
    size_t n;
    if (read_file(path, &text, &n)) return -1;
    char *kept = xmalloc(n + 1);
    size_t k = 0;
    int dropped = 0;
    for (char *line = text, *next; line < text + n; line = next) {
        char *nl = memchr(line, '\n', (size_t)(text + n - line));
        next = nl ? nl + 1 : text + n;
        const char *p = strstr(line, "\"step\": ");
        long step = p && p < next ? strtol(p + 8, NULL, 10) : 0;
        if (!nl || step > max_step) { /* a torn last line, or a step after the checkpoint */
            dropped = 1;
            continue;
        }
        memcpy(kept + k, line, (size_t)(next - line));
        k += (size_t)(next - line);
    }
    int rc = dropped ? atomic_write_file(path, kept, k) : 0;
    free(kept);
    free(text);
    return rc;
}

uint64_t eval_window(uint64_t i, uint64_t n_eval, uint64_t n_windows) {
    return (uint64_t)((unsigned __int128)i * n_windows / n_eval);
}

EvalResult evaluate_split(Model *m, Loader *ld, int n_batches) {
    /* data parallel: the loader's batch is the global one (ranks x m->B sequences); each rank
     * evaluates its slice of every batch and the sums are added across ranks */
    int B = ld->batch_size, T = m->T, ranks = B / m->B, slice = ranks > 1 ? dist_rank() : 0;
    uint64_t W = ld->n_windows, n_eval = W;
    if (n_batches > 0 && (uint64_t)n_batches * (uint64_t)B < W) n_eval = (uint64_t)n_batches * (uint64_t)B;
    uint64_t batches = (n_eval + (uint64_t)B - 1) / (uint64_t)B;
    int32_t *tokens = xmalloc(sizeof(int32_t) * (size_t)B * (T + 1));
    double sums[3] = {0, 0, 0}; /* windows, sum of window losses, sum of their squares */
    for (uint64_t j = 0; j < batches; j++) {
        for (int b = 0; b < B; b++) {
            uint64_t i = j * (uint64_t)B + (uint64_t)b;
            /* the last batch is padded with window 0; padded rows are not counted (rows of a batch
             * do not interact: routing is per token and the balancing bias is fixed here) */
            loader_copy_window(ld, i < n_eval ? eval_window(i, n_eval, W) : 0, tokens + (size_t)b * (T + 1));
        }
        model_forward(m, tokens + (size_t)slice * m->B * (T + 1), 0, 0);
        for (int b = 0; b < m->B; b++) {
            uint64_t i = j * (uint64_t)B + (uint64_t)slice * m->B + (uint64_t)b;
            if (i >= n_eval) continue;
            double row = 0;
            for (int t = 0; t < T; t++) row += m->host_losses[(size_t)b * T + t];
            row /= T;
            sums[0] += 1, sums[1] += row, sums[2] += row * row;
        }
    }
    free(tokens);
    if (ranks > 1) dist_sum_doubles(sums, 3, "the validation loss");
    EvalResult r;
    r.windows = (long long)sums[0];
    r.tokens = r.windows * T;
    r.loss = sums[1] / sums[0];
    double var = sums[0] > 1 ? (sums[2] - sums[1] * sums[1] / sums[0]) / (sums[0] - 1) : 0;
    r.std_error = sums[0] > 1 && var > 0 ? sqrt(var / sums[0]) : 0;
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
    char name[64];
    snprintf(name, sizeof name, "ckpt_%06d", st->step);
    char *dir = path_join(out_dir, name);
    int rc = checkpoint_save(dir, m, st, 1);
    free(dir);
    if (!rc && keep > 0 && dist_rank() == 0) {
        /* remove the one that falls out of the window (saves are evenly spaced) */
        int interval = st->train.save_every;
        int old_step = st->step - keep * interval;
        if (old_step > 0) {
            snprintf(name, sizeof name, "ckpt_%06d", old_step);
            char *old = path_join(out_dir, name);
            dir_remove(old); /* never a half-deleted directory under a checkpoint's name */
            free(old);
        }
    }
    return rc;
}

int train_run(const ModelConfig *model_cfg, const TrainConfig *train_cfg, const TrainOptions *opt, TrainResult *result) {
    memset(result, 0, sizeof *result);
    ModelConfig mc = *model_cfg;
    TrainConfig tc = *train_cfg;
    TrainerState st;
    memset(&st, 0, sizeof st);
    const char *split = opt->split ? opt->split : "pretrain";
    int keep = opt->keep_checkpoints > 0 ? opt->keep_checkpoints : 2;

    if (opt->resume) {
        if (checkpoint_load_config(opt->resume, &mc) || trainer_state_load(opt->resume, &st)) return -1;
        int steps = tc.steps;
        tc = st.train;
        if (steps > tc.steps) tc.steps = steps; /* allow extending a finished run */
        tc.precision = train_cfg->precision;    /* a run-time choice, like the device */
        if (!checkpoint_has_optimizer(opt->resume))
            return up_error("%s: optimizer.safetensors is missing; expected a checkpoint written by `upcycle train`", opt->resume);
    } else if (opt->init) {
        if (checkpoint_load_config(opt->init, &mc)) return -1;
    }
    if (model_config_validate(&mc, "model config") || train_config_validate(&tc, "train config")) return -1;
    if (tc.seq_len > mc.max_seq_len)
        return up_error("train config: seq_len %d exceeds max_position_embeddings %d; expected seq_len <= %d", tc.seq_len,
                        mc.max_seq_len, mc.max_seq_len);

    Loader train_ld, val_ld;
    memset(&val_ld, 0, sizeof val_ld);
    if (loader_open(&train_ld, opt->data_dir, split, tc.batch_size, tc.seq_len, tc.seed, 1)) return -1;
    if ((int)train_ld.shard.vocab_size > mc.vocab_size) {
        int v = train_ld.shard.vocab_size;
        loader_close(&train_ld);
        return up_error("%s: data vocabulary %d is larger than the model's vocab_size %d; expected the tokenizer the model was built for",
                        opt->data_dir, v, mc.vocab_size);
    }
    if (loader_open(&val_ld, opt->data_dir, "val", tc.batch_size, tc.seq_len, 0, 0)) {
        loader_close(&train_ld);
        return -1;
    }

    Model m;
    const Backend *be = opt->backend ? opt->backend : backend_cpu();
    int ep = opt->expert_parallel && dist_size() > 1;
    if (ep && dist_ep_setup(opt->ep_size)) {
        loader_close(&train_ld), loader_close(&val_ld);
        return -1;
    }
    if ((be->set_precision && be->set_precision(tc.precision)) ||
        model_create_ep(&m, &mc, be, ep ? dist_ep_rank() : 0, ep ? dist_ep_size() : 1)) {
        loader_close(&train_ld), loader_close(&val_ld);
        return -1;
    }
    int rc = 0;
    if (opt->resume) {
        rc = checkpoint_load_weights(opt->resume, &m);
        if (!rc) rc = checkpoint_load_optimizer(opt->resume, &m);
        if (!rc) loader_set_position(&train_ld, st.data_epoch, st.data_cursor);
    } else if (opt->init) {
        rc = checkpoint_load_weights(opt->init, &m);
        if (!rc && checkpoint_has_optimizer(opt->init)) rc = checkpoint_load_optimizer(opt->init, &m);
        st.step = 0;
    } else {
        model_init_weights(&m, tc.seed);
    }
    if (!rc && !opt->resume && opt->stream_from) {
        TrainerState from;
        rc = trainer_state_load(opt->stream_from, &from);
        if (!rc) loader_set_position(&train_ld, from.data_epoch, from.data_cursor);
    }
    if (dist_size() > 1) { /* expert parallel ranks load different tensors: all stop if one fails */
        int32_t failed = rc != 0;
        dist_sum_ints(&failed, 1, "the checkpoint load");
        if (failed && !rc) rc = up_error("rank %d: another rank could not load its weights (its message says why)", dist_rank());
    }
    if (rc) {
        model_free(&m);
        loader_close(&train_ld), loader_close(&val_ld);
        return -1;
    }
    st.train = tc;
    snprintf(st.data_dir, sizeof st.data_dir, "%s", opt->data_dir);
    /* data parallel: rank 0 alone writes (output directory, metrics, checkpoints, progress) */
    int ranks = dist_size(), leader = dist_rank() == 0, quiet = opt->quiet || !leader;
    if (ranks > 1 && (tc.batch_size % ranks || be != backend_cpu())) {
        rc = be != backend_cpu()
                 ? up_error("data parallel training over %d ranks runs on the CPU backend; expected --device cpu", ranks)
                 : up_error("train config: batch_size %d over %d ranks; expected a multiple of the number of ranks",
                            tc.batch_size, ranks);
        model_free(&m);
        loader_close(&train_ld), loader_close(&val_ld);
        return rc;
    }
    if (leader && mkdir_p(opt->out_dir)) {
        model_free(&m);
        loader_close(&train_ld), loader_close(&val_ld);
        return -1;
    }
    char *metrics_path = path_join(opt->out_dir, "metrics.jsonl");
    int truncate_failed = leader && opt->resume && truncate_metrics(metrics_path, st.step);
    FILE *metrics = !leader || truncate_failed ? NULL : fopen(metrics_path, "a");
    if (leader && !metrics) {
        /* a failed truncation has said why (e.g. no space left); keep that message */
        rc = truncate_failed ? -1
                             : up_error("%s: cannot open for appending (%s); expected a writable output directory",
                                        metrics_path, strerror(errno));
        free(metrics_path);
        model_free(&m);
        loader_close(&train_ld), loader_close(&val_ld);
        return rc;
    }

    if (!quiet) {
        size_t total, active, embedding;
        model_param_counts(&m, &total, &active, &embedding);
        model_config_print(&mc, stdout);
        train_config_print(&tc, stdout);
        printf("params: %.3fM total, %.3fM active per token, %.3fM embedding; data %s/%s: %llu tokens\n", total / 1e6,
               active / 1e6, embedding / 1e6, opt->data_dir, split, (unsigned long long)train_ld.shard.n_tokens);
        if (opt->resume) printf("resumed from %s at step %d\n", opt->resume, st.step);
        if (opt->init) printf("initialized from %s (new stage, AdamW step counter %d)\n", opt->init, m.step);
        printf("device: %s, precision %s\n", be->name, tc.precision == PRECISION_BF16 ? "bf16" : "fp32");
        if (ranks > 1)
            printf("data parallel: %d ranks x %d sequences (global batch %d); gradients and expert loads summed across ranks\n",
                   ranks, tc.batch_size / ranks, tc.batch_size);
        if (ep) {
            size_t here = 0;
            for (int i = 0; i < m.n_params; i++) here += m.params[i].trainable ? m.params[i].numel : 0;
            printf("expert parallel: %d experts per MoE layer on each of %d ranks (rank 0 holds %.3fM of the %.3fM parameters); "
                   "tokens exchanged all-to-all", m.n_local_experts, m.ep_size, here / 1e6, total / 1e6);
            if (m.ep_size < ranks) printf("; %d expert groups, replicas sum their expert gradients", ranks / m.ep_size);
            printf("\n");
        }
    }

    /* data parallel: every rank holds the same weights (rank 0's, to be certain) and trains on
     * its slice of each global batch; gradients of loss / ranks are summed layer by layer */
    int slice = ranks > 1 ? dist_rank() : 0;
    GradSync sync = {.grads = m.grad_mem, .buckets = dist_buckets_new()};
    if (ranks > 1) {
        /* (expert parallel: each rank's experts are its own) */
        for (int i = 0, j; i < m.n_params; i = j) {
            size_t off, n;
            j = model_sharded_run(&m, i, &off, &n);
            if (!m.params[i].sharded) dist_bcast_bytes(m.param_mem + off, sizeof(float) * n, "the initial weights");
        }
        m.loss_scale = 1.0f / ranks;
        m.grad_ready = start_grad_bucket, m.grad_ready_ctx = &sync;
    }
    model_set_batch(&m, tc.batch_size / ranks, tc.seq_len);
    size_t batch_tokens = (size_t)tc.batch_size * (tc.seq_len + 1);
    int32_t *tokens = xmalloc(sizeof(int32_t) * batch_tokens);
    int steps_this_run = tc.steps - st.step;
    if (steps_this_run < 0) steps_this_run = 0;
    result->losses = xcalloc(steps_this_run ? steps_this_run : 1, sizeof(float));
    double t_start = now_seconds(), t_window = t_start;
    int window_steps = 0;
    double imbalance[MAX_LAYERS];
    double last_val = NAN;

    double step_seconds = 0;
    while (st.step < tc.steps) {
        double t_step = now_seconds();
        float lr = lr_at(&tc, st.step, tc.steps);
        loader_next(&train_ld, tokens);
        model_zero_grad(&m);
        double loss = model_forward(&m, tokens + (size_t)slice * m.B * (tc.seq_len + 1), tc.aux_loss_coef, tc.z_loss_coef);
        if (ranks > 1) { /* the global batch's mean loss, on every rank: all take the same decisions */
            dist_sum_doubles(&loss, 1, "the loss");
            loss /= ranks;
        }
        double grad_norm = NAN;
        char where[PARAM_NAME_MAX + 64], why[PARAM_NAME_MAX + 160];
        int nonfinite = 0;
        why[0] = 0;
        if (!isfinite(loss)) {
            /* name the cause: a non-finite weight, else the first activation that went non-finite */
            int n = model_find_nonfinite_weight(&m, where, sizeof where);
            if (n) snprintf(why, sizeof why, "loss is %g (weight %s is non-finite, %d tensors in all)", loss, where, n);
            else if (model_find_nonfinite_activation(&m, where, sizeof where))
                snprintf(why, sizeof why, "loss is %g (first non-finite activation: %s)", loss, where);
            else snprintf(why, sizeof why, "loss is %g", loss);
            nonfinite = 1;
        } else {
            model_backward(&m, tc.aux_loss_coef, tc.z_loss_coef);
            if (ranks > 1) {
                dist_buckets_wait(sync.buckets, "the gradient allreduce");
                sum_expert_loads(&m);
            }
            grad_norm = model_grad_norm(&m);
            if (!isfinite(grad_norm)) {
                int n = model_find_nonfinite_grad(&m, where, sizeof where);
                snprintf(why, sizeof why, "gradient norm is %g (first non-finite gradient in backward order: %s, %d tensors in all)",
                         grad_norm, n ? where : "?", n);
                nonfinite = 1;
            } else if (tc.spike_factor > 0 && st.loss_mean_steps >= SPIKE_MIN_STEPS && loss > tc.spike_factor * st.loss_mean) {
                snprintf(why, sizeof why, "loss spike %.4f > %g x the running mean %.4f", loss, tc.spike_factor, st.loss_mean);
            }
        }
        if (why[0]) {
            /* Never continue (or checkpoint) garbage: without a guard, or past max_skips, the run
             * stops here, before this state can be saved; the last checkpoint stays as it was. */
            int may_skip = nonfinite ? tc.skip_nonfinite : 1;
            if (!may_skip || st.skipped_steps >= tc.max_skips) {
                rc = up_error("step %d: %s; expected %s%s", st.step, why,
                              !nonfinite ? "no loss spike" : isfinite(loss) ? "a finite gradient" : "a finite loss",
                              may_skip ? " (more than --max-skips steps skipped)" : " (lower the learning rate? --skip-nonfinite skips such steps)");
                break;
            }
            st.skipped_steps++;
            fprintf(stderr, "upcycle: step %d skipped (%d of at most %d): %s\n", st.step, st.skipped_steps, tc.max_skips, why);
            mlog(metrics, "{\"step\": %d, \"loss\": ", st.step + 1);
            if (isfinite(loss)) mlog(metrics, "%.6f", loss);
            else mlog(metrics, "null");
            mlog(metrics, ", \"lr\": %.6g, \"skipped\": true, \"tokens\": %lld}\n", lr,
                    st.tokens_seen + (long long)tc.batch_size * tc.seq_len);
            if ((rc = metrics_flush(metrics, metrics_path, 0))) break;
        } else {
            model_optimizer_step_with_norm(&m, &tc, lr, grad_norm);
            int32_t bad_weights = !isfinite(m.be->sum_squares(m.param_mem, m.n_floats));
            if (ep) dist_sum_ints(&bad_weights, 1, "the weight check"); /* every rank stops together */
            if (bad_weights) {
                /* e.g. lr * weight decay > 2 grows weights geometrically: the update is applied
                 * already, so this one cannot be skipped */
                model_find_nonfinite_weight(&m, where, sizeof where);
                rc = up_error("step %d: the update made a weight non-finite (first: %s); expected finite weights (lower the learning rate?)",
                              st.step, where);
                break;
            }
            /* running mean for the spike guard: exact mean over the first steps, then an EMA */
            st.loss_mean_steps++;
            double a = st.loss_mean_steps < SPIKE_EMA_STEPS ? 1.0 / st.loss_mean_steps : 1.0 / SPIKE_EMA_STEPS;
            st.loss_mean += a * (loss - st.loss_mean);
        }
        result->losses[result->steps_run++] = (float)loss;
        st.step++;
        st.tokens_seen += (long long)tc.batch_size * tc.seq_len;
        st.data_epoch = train_ld.epoch, st.data_cursor = train_ld.cursor;
        window_steps++;
        step_seconds += now_seconds() - t_step;
        if (!why[0]) { /* a skipped step has logged its own line above */
            int n_imb = layer_imbalance(&m, imbalance);
            int do_eval = tc.eval_every > 0 && (st.step % tc.eval_every == 0 || st.step == tc.steps);
            if (do_eval) last_val = evaluate_loss(&m, &val_ld, tc.eval_batches);
            mlog(metrics, "{\"step\": %d, \"loss\": %.6f, \"lr\": %.6g, \"grad_norm\": %.6g, \"tokens\": %lld", st.step, loss, lr,
                    grad_norm, st.tokens_seen);
            if (do_eval) mlog(metrics, ", \"val_loss\": %.6f", last_val);
            mlog(metrics, ", \"load_imbalance\": [");
            for (int i = 0; i < n_imb; i++) mlog(metrics, "%s%.4f", i ? ", " : "", imbalance[i]);
            mlog(metrics, "]}\n");
            if ((rc = metrics_flush(metrics, metrics_path, 0))) break;

            if (!quiet && (st.step % tc.log_every == 0 || st.step == tc.steps || do_eval)) {
                double now = now_seconds();
                double tok_s = window_steps * (double)tc.batch_size * tc.seq_len / (now - t_window);
                double eta = (tc.steps - st.step) * (now - t_start) / result->steps_run;
                char eta_buf[32];
                format_duration(eta, eta_buf, sizeof eta_buf);
                printf("step %5d/%d | loss %.4f | lr %.2e | gnorm %.3f | %.1fk tok/s | ETA %s", st.step, tc.steps, loss, lr,
                       grad_norm, tok_s / 1e3, eta_buf);
                if (n_imb) {
                    printf(" | imb");
                    for (int i = 0; i < n_imb; i++) printf(" %.2f", imbalance[i]);
                }
                if (do_eval) printf(" | val %.4f", last_val);
                printf("\n");
                fflush(stdout);
                t_window = now, window_steps = 0;
            }
        }
        /* expert parallel: every rank sends its experts to rank 0, which writes the checkpoint */
        if ((leader || ep) && tc.save_every > 0 && st.step % tc.save_every == 0 && st.step < tc.steps) {
            if ((rc = save_periodic(opt->out_dir, &m, &st, keep))) break;
        }
    }
    double elapsed = now_seconds() - t_start;
    if (!rc && (leader || ep)) {
        char *final_dir = path_join(opt->out_dir, "final");
        rc = checkpoint_save(final_dir, &m, &st, 1);
        if (!rc && !quiet) printf("saved %s (step %d)\n", final_dir, st.step);
        free(final_dir);
    }
    result->seconds = elapsed;
    result->step_seconds = step_seconds;
    result->tokens_per_second = result->steps_run ? result->steps_run * (double)tc.batch_size * tc.seq_len / elapsed : 0;
    result->final_train_loss = result->steps_run ? result->losses[result->steps_run - 1] : NAN;
    EvalResult final_eval = evaluate_split(&m, &val_ld, opt->final_eval_batches);
    result->final_val_loss = final_eval.loss;
    result->final_val_stderr = final_eval.std_error;
    result->final_val_tokens = final_eval.tokens;
    int close_rc = metrics_flush(metrics, metrics_path, 1);
    if (!rc) rc = close_rc;
    dist_buckets_free(sync.buckets);
    free(metrics_path);
    free(tokens);
    model_free(&m);
    loader_close(&train_ld);
    loader_close(&val_ld);
    return rc;
}
