/* upcycle grow: the expert upcycling operator (and dense -> MoE sparse upcycling). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dist/dist.h"
#include "grow/grow.h"
#include "grow/hf.h"
#include "grow/init.h"
#include "io/checkpoint.h"
#include "model.h"
#include "train.h"
#include "data/shard.h"
#include "util.h"

static int parse_enum(const char *command, const char *option, const char *value, const char *const *names, int n, int *out) {
    for (int i = 0; i < n; i++)
        if (!strcmp(value, names[i])) {
            *out = i;
            return 0;
        }
    char list[256] = "";
    for (int i = 0; i < n; i++) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", names[i]);
    return cli_usage_error(command, "--%s %s; expected one of %s", option, value, list);
}

/* An upcycle checkpoint has trainer.json or the qwen3_moe layout we write; anything else goes
 * through the streaming Hugging Face path. */
static int is_upcycle_checkpoint(const char *dir) {
    return checkpoint_is_upcycle(dir);
}

/* Hugging Face MoE checkpoints (Qwen2/3-MoE, OLMoE, Mixtral, DeepSeek-V2/V3, GPT-OSS): streamed
 * growth, uniform or by weight-norm utilities, in either expert layout; the gradient
 * utilities and the init heuristics need our engine's architecture. */
static int cli_grow_hf(const char *in, const char *out, const GrowOptions *o, int layout) {
    int utility = o->alloc == ALLOC_UTILITY;
    if ((utility && o->utility != UTIL_WEIGHT_NORM) || (o->layers && strcmp(o->layers, "all")) || o->from_dense ||
        o->check || strcmp(o->expert_init.name, "copy") || strcmp(o->router_init.name, "copy")) {
        up_error("%s: not an upcycle checkpoint; expected uniform growth or --alloc utility --utility weight-norm, "
                 "with copy init, for Hugging Face checkpoints (the gradient utilities, --layers, --check, "
                 "--from-dense and init heuristics need an upcycle checkpoint)", in);
        return cli_fail();
    }
    HfMoeInfo info;
    if (hf_inspect(in, &info)) return cli_fail();
    int target = o->target_experts ? o->target_experts : o->factor * info.n_experts;
    GrowPlan plan = {0};
    double *norms = NULL;
    int rc = 0;
    if (utility) {
        norms = xcalloc((size_t)info.n_moe_layers * info.n_experts, sizeof *norms);
        rc = hf_weight_norms(in, norms);
        if (!rc) rc = hf_plan_utility(&info, target, norms, o->max_copies, &plan);
    } else {
        rc = hf_plan_uniform(&info, target, &plan);
    }
    HfGrowOptions hopt = {.bias_noise = o->bias_noise, .seed = o->seed, .force = o->force, .layout = layout,
                          .record = utility, .utility = "weight-norm"};
    double t0 = now_seconds();
    if (!rc) rc = hf_grow(in, out, &plan, &hopt);
    if (!rc) {
        if (utility) grow_plan_print_table(&plan, 1);
        printf("grew %s (%s, %s, %d MoE layers): %d -> %d experts in %.1fs -> %s%s\n", in, hf_family_name(info.family),
               info.dtype, info.n_moe_layers, info.n_experts, target, now_seconds() - t0, out,
               utility ? " (see grow.json)" : "");
    }
    grow_plan_free(&plan); /* the planners zero it first, so also after a failure */
    free(norms);
    hf_info_free(&info);
    return rc ? cli_fail() : 0;
}

static int grow_on_ranks(const char *in, const char *out, const GrowOptions *o, int layout);

int cmd_grow(int argc, char **argv) {
    GrowOptions o;
    grow_options_defaults(&o);
    const char *in = NULL, *out = NULL, *alloc = "uniform", *utility = "grad2", *optim = "copy", *layers = "all";
    const char *expert_init = "copy", *router_init = "copy", *seed_str = NULL, *layout_str = NULL, *save_dtype = NULL,
               *shard_size = NULL;
    int help_inits = 0, threads = 0;
    CliOption opts[] = {
        {"ckpt", OPT_STR, &in, "input checkpoint: an upcycle checkpoint or a Hugging Face MoE directory (required)"},
        {"out", OPT_STR, &out, "output checkpoint directory (required; refused if it exists unless --force)"},
        {"factor", OPT_INT, &o.factor, "grow every MoE layer to M x E experts"},
        {"experts", OPT_INT, &o.target_experts, "grow every MoE layer to N experts (any N >= E with --alloc utility)"},
        {"alloc", OPT_STR, &alloc, "uniform (r_e = N/E, default) or utility (greedy on --utility scores)"},
        {"utility", OPT_STR, &utility, "grad2 (default: ||g_e||^2), saliency (||W_e|| ||g_e||), weight-norm (||W_e||), fisher"},
        {"data", OPT_STR, &o.data_dir, "data directory for utilities (pretrain split) and --check (val split)"},
        {"utility-batches", OPT_INT, &o.utility_batches, "batches over which gradients are accumulated (default 4)"},
        {"max-copies", OPT_INT, &o.max_copies, "cap on r_e per expert (default: none)"},
        {"bias-noise", OPT_FLOAT, &o.bias_noise, "replica bias noise: N(0, (SIGMA * max(std(layer biases), 1e-3))^2); default 1"},
        {"expert-init", OPT_STR, &expert_init, "replica expert init METHOD[:k=v,...] (see --list-inits; default copy)"},
        {"router-init", OPT_STR, &router_init, "replica router-row init METHOD[:k=v,...] (default copy)"},
        {"optim-state", OPT_STR, &optim, "replica Adam state: copy (default), reset, scale (m/r, v/r^2), interpolate"},
        {"layers", OPT_STR, &layers, "all (default) or a list 1,3: layers where utility allocation and init heuristics apply; the others grow uniformly by exact copy (one expert count for all layers)"},
        {"seed", OPT_STR, &seed_str, "seed for noise and init heuristics (default 1)"},
        {"check", OPT_FLAG, &o.check, "print val loss before and after growth on a few batches (needs --data)"},
        {"check-batches", OPT_INT, &o.check_batches, "batches for --check (default 4)"},
        {"from-dense", OPT_FLAG, &o.from_dense, "sparse upcycling: copy each dense FFN into --experts N experts, fresh router"},
        {"top-k", OPT_INT, &o.top_k, "with --from-dense: experts per token"},
        {"sparse-step", OPT_INT, &o.sparse_step, "with --from-dense: every Nth layer becomes MoE (default 1: all)"},
        {"layout", OPT_STR, &layout_str, "Hugging Face experts: per-expert (experts.{e}.*) or packed (experts.gate_up_proj, down_proj); default: the input's"},
        {"force", OPT_FLAG, &o.force, "replace an existing output directory"},
        {"save-dtype", OPT_STR, &save_dtype, CLI_SAVE_DTYPE_HELP " (streamed growth copies the input's bytes: its dtype)"},
        {"shard-size", OPT_STR, &shard_size, CLI_SHARD_SIZE_HELP " (streamed growth keeps the input's shards)"},
        {"threads", OPT_COUNT, &threads, "threads (default: all cores)"},
        {"list-inits", OPT_FLAG, &help_inits, "list the expert and router init methods with their parameters"},
    };
    int prc = cli_parse("grow", "--ckpt IN --out OUT (--factor M | --experts N) [options]", argc, argv, opts,
                        sizeof opts / sizeof *opts);
    if (prc) return prc == 1 ? 0 : prc;
    if (help_inits) {
        printf("expert-level (--expert-init):\n%s\nrouter-level (--router-init):\n%s", expert_init_help(), router_init_help());
        return 0;
    }
    if (!in || !out) return cli_usage_error("grow", "--ckpt and --out are required");
    if (o.factor && o.target_experts) return cli_usage_error("grow", "--factor and --experts are exclusive");
    if (!o.from_dense && !o.factor && !o.target_experts) return cli_usage_error("grow", "--factor or --experts is missing or 0; expected --factor M (M >= 1) or --experts N");
    if (o.factor < 0 || (o.factor == 0 && o.target_experts < 0))
        return cli_usage_error("grow", "--factor %d; expected an integer >= 1", o.factor);
    if (o.utility_batches < 1 || o.check_batches < 1) return cli_usage_error("grow", "--utility-batches and --check-batches must be >= 1");
    if (o.bias_noise < 0) return cli_usage_error("grow", "--bias-noise %g; expected >= 0", o.bias_noise);
    o.layers = layers;
    static const char *const allocs[] = {"uniform", "utility"};
    static const char *const utilities[] = {"grad2", "saliency", "weight-norm", "fisher"};
    static const char *const optims[] = {"copy", "reset", "scale", "interpolate"};
    int v = 0;
    if (parse_enum("grow", "alloc", alloc, allocs, 2, &v)) return 2;
    o.alloc = (AllocKind)v;
    if (parse_enum("grow", "utility", utility, utilities, 4, &v)) return 2;
    o.utility = (UtilityKind)v;
    if (parse_enum("grow", "optim-state", optim, optims, 4, &v)) return 2;
    o.optim_state = (OptimStateKind)v;
    static const char *const layouts[] = {"per-expert", "packed"};
    int layout = HF_GROW_LAYOUT_KEEP;
    if (layout_str) {
        if (parse_enum("grow", "layout", layout_str, layouts, 2, &v)) return 2;
        layout = v == 0 ? HF_GROW_LAYOUT_PER_EXPERT : HF_GROW_LAYOUT_PACKED;
    }
    if (expert_init_parse(expert_init, &o.expert_init) || router_init_parse(router_init, &o.router_init)) return cli_fail();
    if (seed_str) {
        char *end;
        o.seed = strtoull(seed_str, &end, 10);
        if (!*seed_str || *end) return cli_usage_error("grow", "--seed %s; expected a non-negative integer", seed_str);
    }
    int weight_dtype;
    if (cli_save_format("grow", save_dtype, shard_size, &weight_dtype)) return 2;
    o.save_dtype = weight_dtype >= 0 ? SAVE_AS(weight_dtype) : 0;
    cli_set_threads(threads);
    /* Under mpirun every rank runs this (src/cli/main.c). With --alloc utility on an upcycle
     * checkpoint the ranks split the utility batches and rank 0 alone writes and reports;
     * otherwise (Hugging Face checkpoints included) rank 0 grows alone while the others wait. */
    o.all_ranks = dist_active() && o.alloc == ALLOC_UTILITY && is_upcycle_checkpoint(in);
    if (o.all_ranks) return grow_on_ranks(in, out, &o, layout);
    int rc = dist_rank() == 0 ? grow_on_ranks(in, out, &o, layout) : 0;
    if (!rc) dist_wait_for_leader("the growth on rank 0");
    return rc;
}

/* The grown checkpoint's balancing biases, when nonzero, in one line: no family the engine writes
 * holds them, so the saved model routes without them; with data, what that changes on the
 * validation split (the batches of --check) */
static int note_balance_bias(const char *out, const char *data, int batches) {
    Model m;
    if (checkpoint_load_model(out, &m, 0, NULL)) return -1;
    double largest;
    free(model_balance_bias_copy(&m, &largest));
    int rc = 0;
    if (largest > 0 && data) {
        int batch = 0, seq = 0;
        cli_default_shape(out, &batch, &seq);
        Loader ld;
        if (seq > m.cfg.max_seq_len) seq = m.cfg.max_seq_len;
        rc = loader_open(&ld, data, "val", batch, seq, 0, 0);
        if (!rc) {
            model_set_batch(&m, batch, seq);
            BiasEffect e;
            EvalResult r = evaluate_split_unbiased(&m, &ld, batches, &e);
            printf("note: %s: %s has no balancing bias, so the saved model routes without the grown biases (kept in %s/%s; "
                   "largest |bias| %.4f): val loss on %d batches %.4f without, %.4f with; top-K expert sets agree on %.1f%% of "
                   "(token, MoE layer) pairs\n", out, config_family_model_type(&m.cfg), CKPT_TRAINING_DIR, BALANCE_BIAS_NAME, largest,
                   batches, r.loss, e.loss_with_bias, 100 * e.topk_agreement);
            loader_close(&ld);
        }
    } else if (largest > 0) {
        printf("note: %s: %s has no balancing bias, so the saved model routes without the grown biases (kept in %s/%s; largest "
               "|bias| %.4f; --check --data DIR measures what that changes)\n", out, config_family_model_type(&m.cfg),
               CKPT_TRAINING_DIR, BALANCE_BIAS_NAME, largest);
    }
    model_free(&m);
    return rc;
}

/* grow on this rank: all of it on rank 0, the utility scoring's share on the others */
static int grow_on_ranks(const char *in, const char *out, const GrowOptions *o, int layout) {
    if (!is_dir(in)) {
        up_error("%s: not a checkpoint directory; expected a directory with config.json and safetensors", in);
        return cli_fail();
    }
    /* A Hugging Face checkpoint is grown by the streaming copier (rank 0, bounded memory,
     * every family), unless the growth needs the engine: gradient utilities, --check, init
     * heuristics, --layers or --from-dense, for the families the engine trains (it loads them) */
    int needs_engine = (o->alloc == ALLOC_UTILITY && o->utility != UTIL_WEIGHT_NORM) || o->check || o->from_dense ||
                       strcmp(o->expert_init.name, "copy") || strcmp(o->router_init.name, "copy") || (o->layers && strcmp(o->layers, "all"));
    int ours = is_upcycle_checkpoint(in);
    if (!ours && !needs_engine) {
        if (o->save_dtype) {
            up_error("%s: --save-dtype with streamed growth, which copies the input's bytes unchanged; expected no --save-dtype "
                     "(train --init OUT --save-dtype DTYPE converts while continuing pre-training)", in);
            return cli_fail();
        }
        return dist_rank() == 0 ? cli_grow_hf(in, out, o, layout) : 0;
    }
    GrowOptions engine = *o; /* the engine writes either layout too */
    if (layout != HF_GROW_LAYOUT_KEEP) engine.save_layout = layout == HF_GROW_LAYOUT_PACKED ? SAVE_PACKED : SAVE_PER_EXPERT;
    o = &engine;
    GrowReport r;
    if (grow_checkpoint(in, out, o, &r)) return cli_fail();
    if (!r.written) return 0; /* a rank that helped score; rank 0 reports */
    if (o->check)
        printf("check (val loss on %d batches): before %.4f | after %.4f | gap %+.4f\n", o->check_batches, r.loss_before,
               r.loss_after, r.loss_after - r.loss_before);
    printf("grew %s: %d -> %d experts per MoE layer -> %s (see %s/grow.json)\n", in, r.n_old, r.n_new, out, out);
    return note_balance_bias(out, o->check ? o->data_dir : NULL, o->check_batches) ? cli_fail() : 0;
}
