/* upcycle train: a fresh run from a preset or config, a resume, or a new stage from --init. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "io/run_dir.h"
#include "cli.h"
#include "config.h"
#include "train.h"
#include "util.h"

static int list_presets(void) {
    int n;
    const Preset *p = preset_list(&n);
    for (int i = 0; i < n; i++) printf("  %-12s %s\n", p[i].name, p[i].summary);
    return 0;
}

int cmd_train(int argc, char **argv) {
    const char *preset = NULL, *config = NULL, *data = NULL, *out = NULL, *resume = NULL, *init = NULL;
    const char *split = "pretrain", *schedule = NULL, *decay_shape = NULL, *device = "auto", *precision = "fp32";
    /* options left at UNSET keep the preset's or config's value; a given value, whatever it is,
     * replaces it and is judged by train_config_validate (one line naming the field) */
    enum { UNSET = INT_MIN };
    const float UNSET_F = -INFINITY; /* OPT_FLOAT takes finite numbers only */
    int steps = UNSET, threads = 0, batch = UNSET, seq = UNSET, warmup = UNSET, eval_every = UNSET, save_every = UNSET, log_every = UNSET;
    int eval_batches = UNSET, final_eval_batches = 0, quiet = 0, force = 0, presets = 0, keep = 2, skip_nonfinite = 0, max_skips = UNSET,
        expert_parallel = 0, ep_size = 0;
    float spike = UNSET_F;
    float lr = UNSET_F, min_lr = UNSET_F, decay_frac = UNSET_F, bias_rate = UNSET_F, aux = UNSET_F, zloss = UNSET_F, wd = UNSET_F, clip = UNSET_F;
    unsigned long long seed = 0;
    int seed_set = 0;
    const char *seed_str = NULL, *save_dtype = NULL, *shard_size = NULL, *layout = NULL;
    CliOption opts[] = {
        {"preset", OPT_STR, &preset, "model + training preset: tiny (default), small, dense, interleaved, fullmoe, large"},
        {"config", OPT_STR, &config, "JSON file {\"model\": {HF config keys}, \"train\": {...}} instead of a preset"},
        {"data", OPT_STR, &data, "data directory from `upcycle tokenize` (required)"},
        {"out", OPT_STR, &out, "output directory: metrics.jsonl, ckpt_NNNNNN/, final/ (required)"},
        {"split", OPT_STR, &split, "training split: pretrain (default) or cpt"},
        {"steps", OPT_INT, &steps, "optimizer steps of this stage (default from the preset)"},
        {"resume", OPT_STR, &resume, "checkpoint to resume bit-exactly (weights, optimizer, data position)"},
        {"init", OPT_STR, &init, "checkpoint to start a new WSD stage from (e.g. the output of grow)"},
        {"batch-size", OPT_INT, &batch, "sequences per step"},
        {"seq-len", OPT_INT, &seq, "tokens per sequence"},
        {"lr", OPT_FLOAT, &lr, "peak learning rate"},
        {"min-lr", OPT_FLOAT, &min_lr, "final learning rate of the decay"},
        {"warmup", OPT_INT, &warmup, "warmup steps"},
        {"schedule", OPT_STR, &schedule, "wsd (default), cosine or constant"},
        {"decay-frac", OPT_FLOAT, &decay_frac, "WSD: fraction of steps in the final decay (default 0.1)"},
        {"decay-shape", OPT_STR, &decay_shape, "WSD decay: linear (default) or 1-sqrt"},
        {"weight-decay", OPT_FLOAT, &wd, "AdamW decoupled weight decay (not on norms or biases)"},
        {"grad-clip", OPT_FLOAT, &clip, "global gradient-norm clipping (0 disables)"},
        {"bias-rate", OPT_FLOAT, &bias_rate, "loss-free balancing bias update rate u (default 1e-3; 0 disables)"},
        {"aux-loss", OPT_FLOAT, &aux, "Switch-style load-balancing loss coefficient (default 0)"},
        {"z-loss", OPT_FLOAT, &zloss, "router z-loss coefficient (default 0)"},
        {"skip-nonfinite", OPT_FLAG, &skip_nonfinite, "skip (no update) a step with a non-finite loss or gradient instead of stopping"},
        {"spike-factor", OPT_FLOAT, &spike, "skip a step whose loss exceeds F x the running mean (default 0: off)"},
        {"max-skips", OPT_INT, &max_skips, "stop when more than N steps were skipped (default 10)"},
        {"seed", OPT_STR, &seed_str, "seed for initialization and data order"},
        {"eval-every", OPT_INT, &eval_every, "validation loss every N steps (0: only at the end)"},
        {"eval-batches", OPT_INT, &eval_batches, "validation batches per evaluation (strided over the split, the same ones each time)"},
        {"final-eval-batches", OPT_INT, &final_eval_batches, "0 (default): the final validation loss over the whole split; N: N strided batches"},
        {"save-every", OPT_INT, &save_every, "checkpoint every N steps (0: only the final one)"},
        {"keep", OPT_INT, &keep, "periodic checkpoints to keep, >= 1 (default 2)"},
        {"save-dtype", OPT_STR, &save_dtype, CLI_SAVE_DTYPE_HELP},
        {"shard-size", OPT_STR, &shard_size, CLI_SHARD_SIZE_HELP},
        {"layout", OPT_STR, &layout, "experts in the saved checkpoints: per-expert (experts.{e}.*) or packed (transformers 5's experts.gate_up_proj, down_proj); default: the input's"},
        {"log-every", OPT_INT, &log_every, "progress line every N steps"},
        {"threads", OPT_COUNT, &threads, "OpenMP/OpenBLAS threads (default: all cores)"},
        {"device", OPT_STR, &device, CLI_DEVICE_HELP},
        {"precision", OPT_STR, &precision, "fp32 (default) or bf16 (bf16 GEMM operands, fp32 accumulation and master weights; CPU: AVX-512 BF16)"},
        {"force", OPT_FLAG, &force, "start fresh in an output directory that already has a run"},
        {"expert-parallel", OPT_FLAG, &expert_parallel, "under mpirun: shard each MoE layer's experts over the ranks (all-to-all)"},
        {"ep-size", OPT_INT, &ep_size, "with --expert-parallel: ranks per expert group (default: all; groups hold replicas)"},
        {"quiet", OPT_FLAG, &quiet, "no progress lines"},
        {"list-presets", OPT_FLAG, &presets, "list the presets and exit"},
    };
    int prc = cli_parse("train", "(--preset NAME | --config FILE) --data DIR --out DIR [options]", argc, argv, opts,
                        sizeof opts / sizeof *opts);
    if (prc) return prc == 1 ? 0 : prc;
    if (presets) return list_presets();
    if (!data || !out) return cli_usage_error("train", "--data and --out are required; expected --data DIR --out DIR");
    if (preset && config) return cli_usage_error("train", "--preset and --config are exclusive; expected one of them");
    if (resume && init) return cli_usage_error("train", "--resume and --init are exclusive; expected one of them");
    if (ep_size < 0 || (ep_size && !expert_parallel))
        return cli_usage_error("train", "--ep-size %d; expected a positive group size, with --expert-parallel", ep_size);
    if (strcmp(split, "pretrain") && strcmp(split, "cpt"))
        return cli_usage_error("train", "--split %s; expected pretrain or cpt", split);
    int prec;
    if (cli_precision("train", precision, &prec)) return 2;
    if (seed_str) {
        char *end;
        seed = strtoull(seed_str, &end, 10);
        if (!*seed_str || *end) return cli_usage_error("train", "--seed %s; expected a non-negative integer", seed_str);
        seed_set = 1;
    }

    ModelConfig mc;
    TrainConfig tc;
    if (config) {
        model_config_defaults(&mc);
        train_config_defaults(&tc);
        if (train_config_load_json(&mc, &tc, config)) return cli_fail();
    } else {
        const Preset *p = preset_find(preset ? preset : "tiny");
        if (!p) {
            up_error("unknown preset '%s'; expected one of tiny, small, dense, interleaved, fullmoe, large", preset);
            return cli_fail();
        }
        mc = p->model, tc = p->train;
    }
    if (steps != UNSET) tc.steps = steps;
    else if (resume) tc.steps = 0; /* the checkpoint's own step count */
    int *ints[] = {&batch, &seq, &warmup, &eval_every, &eval_batches, &save_every, &log_every, &max_skips};
    int *int_fields[] = {&tc.batch_size, &tc.seq_len, &tc.warmup_steps, &tc.eval_every, &tc.eval_batches, &tc.save_every,
                         &tc.log_every, &tc.max_skips};
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++)
        if (*ints[i] != UNSET) *int_fields[i] = *ints[i];
    float *floats[] = {&lr, &min_lr, &decay_frac, &wd, &clip, &bias_rate, &aux, &zloss, &spike};
    float *float_fields[] = {&tc.lr, &tc.min_lr, &tc.decay_frac, &tc.weight_decay, &tc.grad_clip, &tc.bias_update_rate,
                             &tc.aux_loss_coef, &tc.z_loss_coef, &tc.spike_factor};
    for (size_t i = 0; i < sizeof floats / sizeof *floats; i++)
        if (*floats[i] != UNSET_F) *float_fields[i] = *floats[i];
    if (seed_set) tc.seed = seed;
    if (skip_nonfinite) tc.skip_nonfinite = 1;
    tc.precision = prec;
    if (schedule) {
        if (!strcmp(schedule, "wsd")) tc.schedule = SCHED_WSD;
        else if (!strcmp(schedule, "cosine")) tc.schedule = SCHED_COSINE;
        else if (!strcmp(schedule, "constant")) tc.schedule = SCHED_CONSTANT;
        else return cli_usage_error("train", "--schedule %s; expected wsd, cosine or constant", schedule);
    }
    if (decay_shape) {
        if (!strcmp(decay_shape, "linear")) tc.decay_shape = DECAY_LINEAR;
        else if (!strcmp(decay_shape, "1-sqrt")) tc.decay_shape = DECAY_1_SQRT;
        else return cli_usage_error("train", "--decay-shape %s; expected linear or 1-sqrt", decay_shape);
    }
    if (keep < 1) return cli_usage_error("train", "--keep %d; expected a count >= 1 of periodic checkpoints to keep", keep);
    if (final_eval_batches < 0) return cli_usage_error("train", "--final-eval-batches %d; expected 0 (the whole split) or a count", final_eval_batches);
    int weight_dtype, save_layout = SAVE_LAYOUT_KEEP;
    if (cli_save_format("train", save_dtype, shard_size, &weight_dtype)) return 2;
    if (layout && strcmp(layout, "per-expert") && strcmp(layout, "packed"))
        return cli_usage_error("train", "--layout %s; expected per-expert or packed", layout);
    if (layout) save_layout = strcmp(layout, "packed") ? SAVE_PER_EXPERT : SAVE_PACKED;
    const Backend *be;
    int brc = cli_backend("train", device, &be);
    if (brc) return brc;
    if (be->set_precision && be->set_precision(tc.precision)) return cli_fail();
    if (!resume && dist_rank() == 0) { /* data parallel: rank 0 owns the output directory */
        char *metrics = run_dir_metrics(out);
        int exists = path_exists(metrics);
        free(metrics);
        if (exists && !force) {
            up_error("%s: output directory already holds a run; expected a new directory (or --resume CKPT, or --force)", out);
            return cli_fail();
        }
        if (exists) remove_tree(out);
    }
    dist_barrier("the start of training");
    cli_set_threads(threads);
    TrainOptions opt = {.data_dir = data, .split = split, .out_dir = out, .resume = resume, .init = init,
                        .quiet = quiet, .report_balance_bias = 1, .keep_checkpoints = keep, .backend = be, .final_eval_batches = final_eval_batches,
                        .expert_parallel = expert_parallel, .ep_size = ep_size, .save_dtype = weight_dtype >= 0 ? SAVE_AS(weight_dtype) : 0,
                        .save_layout = save_layout};
    TrainResult res;
    int rc = train_run(&mc, &tc, &opt, &res);
    if (!rc && dist_rank() == 0)
        printf("done: %d steps in %.1fs (%.1fk tok/s), final train loss %.4f, val loss %.4f (ppl %.2f; s.e. %.4f over %lld tokens)\n",
               res.steps_run, res.seconds, res.tokens_per_second / 1e3, res.final_train_loss, res.final_val_loss, exp(res.final_val_loss),
               res.final_val_stderr, res.final_val_tokens);
    free(res.losses);
    return rc ? cli_fail() : 0;
}
