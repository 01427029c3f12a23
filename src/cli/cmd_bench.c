/* upcycle bench gemm | train: figures, not pass/fail. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "grow/hf.h"
#include "util.h"

#include "backend_profile.h"
#include "bench.h"
#include "cli.h"
#include "config.h"
#include "model.h"

static int bench_gemm(int argc, char **argv) {
    int size = 1024, threads = 0;
    float seconds = 2.0f;
    CliOption opts[] = {
        {"size", OPT_INT, &size, "matrix size n of the n x n x n sgemm (default 1024)"},
        {"seconds", OPT_FLOAT, &seconds, "measurement time (default 2)"},
        {"threads", OPT_COUNT, &threads, "threads (default: all cores)"},
    };
    int prc = cli_parse("bench gemm", "[--size N] [--seconds S]", argc, argv, opts, 3);
    if (prc) return prc == 1 ? 0 : prc;
    if (size < 16 || size > 16384) return cli_usage_error("bench gemm", "--size %d; expected 16..16384", size);
    cli_set_threads(threads);
    char cpu[256];
    cpu_description(cpu, sizeof cpu);
    printf("machine: %s, %d cores, %d threads\n", cpu, omp_get_num_procs(), omp_get_max_threads());
    double sg = bench_sgemm_gflops(size, seconds), bf = bench_bf16_gemm_gflops(size, seconds);
    printf("sgemm %dx%dx%d: %.1f GFLOP/s\n", size, size, size, sg);
    if (bf > 0) printf("bf16 GEMM (AVX-512 BF16, fp32 accumulation, --precision bf16) %dx%dx%d: %.1f GFLOP/s = %.2fx sgemm\n",
                       size, size, size, bf, bf / sg);
    else printf("bf16 GEMM: skipped (this CPU has no AVX-512 BF16)\n");
    return 0;
}

/* The PyTorch paths of --compare-torch (tests/torch_bench.py --impl), PyTorch 2 from PyPI */
#define N_TORCH 3
static const char *const TORCH_IMPL[N_TORCH] = {"hf", "ref", "ref-compiled"};
static const char *const TORCH_WHAT[N_TORCH] = {
    "transformers' own model for the config (AutoModelForCausalLM, default attention), forward + backward + AdamW",
    "tests/torch_ref.py's model, eager",
    "tests/torch_ref.py's model under torch.compile (compiled in 3 untimed warm-up steps)",
};

/* Runs one PyTorch path on the same config/batch/threads; tokens/s into *tps. */
static int torch_bench_run(const char *python, int impl, const ModelConfig *mc, const TrainConfig *tc, int steps, int threads,
                           double *tps, double *rss_mb, char *version, size_t version_cap) {
    char script[4096];
    if (cli_repo_file("tests/torch_bench.py", "UPCYCLE_TORCH_BENCH", script, sizeof script)) return -1;
    char *tdir = make_scratch_dir("upcycle-bench-torch");
    if (!tdir) return -1;
    char *cfg = path_join(tdir, "config.json");
    int rc = model_config_save_json(mc, cfg);
    char cmd[12288];
    snprintf(cmd, sizeof cmd,
             "'%s' '%s' '%s' --impl %s --batch %d --seq %d --steps %d --threads %d --lr %g --weight-decay %g "
             "--grad-clip %g --bias-rate %g 2>&1",
             python, script, tdir, TORCH_IMPL[impl], tc->batch_size, tc->seq_len, steps, threads, tc->lr, tc->weight_decay,
             tc->grad_clip, tc->bias_update_rate);
    char line[1024], last[1024] = "";
    *tps = 0;
    if (!rc) {
        FILE *p = popen(cmd, "r");
        if (!p) rc = up_error("cannot run %s; expected the Python of scripts/pyenv.sh", python);
        while (p && fgets(line, sizeof line, p)) {
            double sps;
            char ver[32];
            if (sscanf(line, "torch %31s (%*[^)]): %*d steps, %lf s/step, %lf tokens/s, peak RSS %lf MB", ver, &sps, tps, rss_mb) == 4) {
                snprintf(version, version_cap, "%s", ver);
                continue;
            }
            snprintf(last, sizeof last, "%s", line);
        }
        int st = p ? pclose(p) : -1;
        if (!rc && (st != 0 || *tps <= 0)) {
            last[strcspn(last, "\n")] = 0;
            rc = up_error("PyTorch baseline %s (%s) failed: %s; expected PyTorch 2 from scripts/pyenv.sh", TORCH_IMPL[impl], script,
                          last[0] ? last : "no output");
        }
    }
    remove_tree(tdir);
    free(cfg), free(tdir);
    return rc;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(const double *v, int n) { /* n <= 100 */
    double s[100];
    memcpy(s, v, sizeof(double) * n);
    qsort(s, n, sizeof(double), compare_doubles);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}
static double min_of(const double *v, int n) {
    double m = v[0];
    for (int i = 1; i < n; i++) m = v[i] < m ? v[i] : m;
    return m;
}
static double max_of(const double *v, int n) {
    double m = v[0];
    for (int i = 1; i < n; i++) m = v[i] > m ? v[i] : m;
    return m;
}

/* What one `bench train` invocation measures with, shared by its presets */
typedef struct {
    const Backend *be;
    int on_cpu, steps, repeat, profile, memory, compare, n_threads;
    int use_torch[N_TORCH];
    char python[4096];     /* PyTorch 2's Python (--compare-torch) */
    const char *precision; /* its name, for the lines printed */
    double peak;           /* the best sgemm GFLOP/s measured so far */
    int n_sgemm;           /* sgemm measurements so far */
} BenchTrain;

/* --torch hf,ref,ref-compiled into use[]; 0 or a usage error (2) */
static int parse_torch_paths(const char *list, int use[N_TORCH]) {
    char tlist[256];
    snprintf(tlist, sizeof tlist, "%s", list);
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(tlist, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int k = 0;
        while (k < N_TORCH && strcmp(tok, TORCH_IMPL[k])) k++;
        if (k == N_TORCH) return cli_usage_error("bench train", "--torch %s; expected hf, ref or ref-compiled, comma-separated", tok);
        n += !use[k], use[k] = 1;
    }
    return n ? 0 : cli_usage_error("bench train", "--torch is empty; expected hf, ref or ref-compiled");
}

/* One preset: --repeat rounds of ours (each with the sgemm before and after) and the PyTorch
 * paths, alternating; the round lines and the medians of the per-round ratios. *best is our
 * fastest round, torch_tps/torch_rss each path's best. The host's speed drifts between minutes:
 * alternating, and pairing each round with its own sgemm and PyTorch, cancels most of it. */
static int bench_preset(BenchTrain *b, const Preset *preset, const TrainConfig *tc, TrainBench *best, double *torch_tps,
                        double *torch_rss) {
    char version[32] = "?";
    double round_ratio[N_TORCH][100], round_share[100];
    for (int round = 0; round < b->repeat; round++) {
        TrainBench rb;
        double g = b->peak, g_before = 0, g_after = 0;
        int paired = b->repeat > 1 && b->on_cpu;
        if (paired) g_before = bench_sgemm_gflops(1024, 1.0);
        if (bench_train(b->be, &preset->model, tc, 1, b->steps, b->profile, &rb)) return -1;
        /* the round's sgemm: the mean of one before ours and one after (a round of a large
         * preset lasts longer than the host stays at one speed); the peak: the best of all */
        if (paired) {
            g_after = bench_sgemm_gflops(1024, 1.0);
            g = 0.5 * (g_before + g_after);
            b->n_sgemm += 2;
            b->peak = fmax(b->peak, fmax(g_before, g_after));
        }
        double tps[N_TORCH] = {0};
        for (int k = 0; k < N_TORCH && b->compare; k++) {
            double rss = 0;
            if (!b->use_torch[k]) continue;
            if (torch_bench_run(b->python, k, &preset->model, tc, b->steps, b->n_threads, &tps[k], &rss, version, sizeof version))
                return -1;
            round_ratio[k][round] = rb.tokens_per_second / tps[k];
            torch_tps[k] = fmax(torch_tps[k], tps[k]);
            torch_rss[k] = fmax(torch_rss[k], rss);
        }
        round_share[round] = g > 0 ? 100.0 * rb.model_gflops / g : 0;
        if (b->repeat > 1) {
            printf("preset %s: round %d of %d: %.0f tokens/s", preset->name, round + 1, b->repeat, rb.tokens_per_second);
            if (b->on_cpu)
                printf(" (%.1f%% of this round's sgemm %.1f GFLOP/s, the mean of %.1f before and %.1f after)", round_share[round], g,
                       g_before, g_after);
            for (int k = 0; k < N_TORCH && b->compare; k++)
                if (b->use_torch[k]) printf(", PyTorch %s %.0f tokens/s, %.2fx", TORCH_IMPL[k], tps[k], round_ratio[k][round]);
            printf("\n");
        }
        if (round == 0 || rb.tokens_per_second > best->tokens_per_second) *best = rb;
    }
    if (b->repeat > 1 && b->on_cpu) {
        printf("preset %s: per round, median of %d: %.1f%% of the round's sgemm (%.1f-%.1f%%)", preset->name, b->repeat,
               median(round_share, b->repeat), min_of(round_share, b->repeat), max_of(round_share, b->repeat));
        for (int k = 0; k < N_TORCH && b->compare; k++)
            if (b->use_torch[k])
                printf(", upcycle / PyTorch %s %.2fx (%.2f-%.2fx)", TORCH_IMPL[k], median(round_ratio[k], b->repeat),
                       min_of(round_ratio[k], b->repeat), max_of(round_ratio[k], b->repeat));
        printf("\n");
    }
    printf("preset %s: batch %d x %d tokens, %.3f s/step, %.0f tokens/s (%s, %s, %d threads%s)\n", preset->name, tc->batch_size,
           tc->seq_len, best->seconds_per_step, best->tokens_per_second, b->be->name, b->precision, b->n_threads,
           b->repeat > 1 ? "; the best round" : "");
    if (b->profile) backend_profile_print(stdout, b->steps, best->seconds_per_step, b->peak);
    if (b->memory) {
        double analytic = best->param_state_bytes + best->activation_bytes;
        printf("  memory: params+grads+Adam %.1f MB + activations %.1f MB = %.1f MB analytic; peak RSS %.1f MB "
               "(%.2fx analytic; %.1f MB before the model)\n",
               best->param_state_bytes / 1e6, best->activation_bytes / 1e6, analytic / 1e6, best->rss_peak_bytes / 1e6,
               best->rss_peak_bytes / analytic, best->rss_before_bytes / 1e6);
    }
    for (int k = 0; k < N_TORCH && b->compare; k++)
        if (b->use_torch[k])
            printf("  PyTorch %s %s (%s; fp32, same config, batch and threads%s): %.0f tokens/s, peak RSS %.0f MB -> "
                   "upcycle / PyTorch = %.2fx\n",
                   version, TORCH_IMPL[k], TORCH_WHAT[k], b->repeat > 1 ? "; the best round" : "", torch_tps[k], torch_rss[k],
                   best->tokens_per_second / torch_tps[k]);
    return 0;
}

static int bench_train_cmd(int argc, char **argv) {
    const char *presets = "small", *device = "auto", *precision = "fp32", *torch_list = "hf,ref,ref-compiled";
    int threads = 0, batch = 0, seq = 0;
    BenchTrain b = {.steps = 5, .repeat = 1};
    CliOption opts[] = {
        {"preset", OPT_STR, &presets, "preset(s) to time, comma-separated (default small)"},
        {"steps", OPT_INT, &b.steps, "timed steps (default 5, after 1 warm-up step)"},
        {"repeat", OPT_INT, &b.repeat, "rounds per preset: ours and PyTorch alternate, sgemm is measured before and after ours in each round, and the best round of each is reported with the medians of the per-round ratios (default 1)"},
        {"batch-size", OPT_INT, &batch, "override the preset's batch size"},
        {"seq-len", OPT_INT, &seq, "override the preset's sequence length"},
        {"threads", OPT_COUNT, &threads, "threads (default: all cores)"},
        {"device", OPT_STR, &device, CLI_DEVICE_HELP},
        {"precision", OPT_STR, &precision, "fp32 (default) or bf16 (GEMM operands in bf16: tensor cores, or AVX-512 BF16 on the CPU)"},
        {"compare-torch", OPT_FLAG, &b.compare, "also time PyTorch 2 (tests/torch_bench.py, the pinned PyPI environment) on the same config, batch and threads, and print the ratios"},
        {"torch", OPT_STR, &torch_list, "with --compare-torch: the PyTorch paths, comma-separated: hf (transformers' model), ref (tests/torch_ref.py eager), ref-compiled (its torch.compile); default all three"},
        {"report-memory", OPT_FLAG, &b.memory, "print peak RSS against the analytic bytes (params, grads, Adam, activations)"},
        {"profile", OPT_FLAG, &b.profile, "time every backend op of the timed steps: ms/step, share, GFLOP/s, % of sgemm, GB/s (CPU)"},
    };
    int prc = cli_parse("bench train", "[--preset P[,P...]] [--steps N] [--repeat N] [--compare-torch] [--report-memory]", argc, argv,
                        opts, sizeof opts / sizeof *opts);
    if (prc) return prc == 1 ? 0 : prc;
    if (b.steps < 1) return cli_usage_error("bench train", "--steps %d; expected >= 1", b.steps);
    if (b.repeat < 1 || b.repeat > 100) return cli_usage_error("bench train", "--repeat %d; expected 1 to 100", b.repeat);
    if (b.repeat > 1 && b.profile)
        return cli_usage_error("bench train", "--repeat %d with --profile; expected one of them (a profile is of one round)", b.repeat);
    int prec;
    if (cli_precision("bench train", precision, &prec)) return 2;
    b.precision = precision;
    char list[512];
    snprintf(list, sizeof list, "%s", presets);
    int n_presets = 0;
    const Preset *chosen[16];
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        const Preset *p = preset_find(tok);
        if (!p) return cli_usage_error("bench train", "unknown preset '%s'; expected one of tiny, small, dense, interleaved, fullmoe, large", tok);
        if (n_presets == 16) return cli_usage_error("bench train", "too many presets; expected at most 16");
        chosen[n_presets++] = p;
    }
    if (!n_presets) return cli_usage_error("bench train", "--preset is empty; expected a preset name");
    int brc = cli_backend("bench train", device, &b.be);
    if (brc) return brc;
    cli_set_threads(threads);
    b.on_cpu = b.be->runs_on_host;
    if (b.compare && !b.on_cpu) return cli_usage_error("bench train", "--compare-torch times the CPU; expected --device cpu");
    if (parse_torch_paths(torch_list, b.use_torch)) return 2;
    char why[4096] = "";
    if (b.compare && cli_pyenv_python("tf5", "UPCYCLE_TORCH_PYTHON", b.python, sizeof b.python, why, sizeof why)) {
        up_error("--compare-torch: no PyTorch 2: %s; expected the pinned environment (make test-deps, scripts/pyenv.sh) or UPCYCLE_TORCH_PYTHON", why);
        return cli_fail();
    }
    if (b.profile && !b.on_cpu) return cli_usage_error("bench train", "--profile times host ops; expected --device cpu");
    char cpu[256];
    cpu_description(cpu, sizeof cpu);
    b.peak = b.on_cpu ? bench_sgemm_gflops(1024, 1.0) : 0;
    b.n_sgemm = b.on_cpu;
    if (b.on_cpu) printf("machine: %s, %d cores; sgemm 1024^3 %.1f GFLOP/s\n", cpu, omp_get_num_procs(), b.peak);
    b.n_threads = b.on_cpu ? omp_get_max_threads() : 1;
    TrainBench r[16];
    for (int i = 0; i < n_presets; i++) {
        /* one process measures one model's peak RSS: later presets run after earlier ones, so
         * their figure is a maximum over both; order presets small to large with --report-memory */
        TrainConfig tc = chosen[i]->train;
        if (batch > 0) tc.batch_size = batch;
        if (seq > 0) tc.seq_len = seq;
        tc.precision = prec;
        double torch_tps[N_TORCH] = {0}, torch_rss[N_TORCH] = {0};
        if (bench_preset(&b, chosen[i], &tc, &r[i], torch_tps, torch_rss)) return cli_fail();
    }
    if (b.on_cpu) {
        if (b.n_sgemm > 1)
            printf("sgemm 1024^3: the best of %d measurements (one at the start, then two per round), %.1f GFLOP/s\n", b.n_sgemm, b.peak);
        for (int i = 0; i < n_presets; i++)
            printf("preset %s: model FLOPs %.2f GFLOP/step -> %.1f GFLOP/s = %.1f%% of measured sgemm peak %.1f GFLOP/s\n",
                   chosen[i]->name, r[i].flops_per_step / 1e9, r[i].model_gflops, 100.0 * r[i].model_gflops / b.peak, b.peak);
    } else {
        for (int i = 0; i < n_presets; i++)
            printf("preset %s: model FLOPs %.2f GFLOP/step -> %.1f GFLOP/s\n", chosen[i]->name, r[i].flops_per_step / 1e9,
                   r[i].model_gflops);
    }
    return 0;
}

/* grow throughput next to `cp` of the same bytes, in the same run */
static int bench_grow_cmd(int argc, char **argv) {
    const char *dir = NULL, *layout = "per-expert";
    float gigabytes = 2.0f;
    int keep = 0;
    CliOption opts[] = {
        {"dir", OPT_STR, &dir, "scratch directory (default: a new directory under $TMPDIR or /tmp)"},
        {"gb", OPT_FLOAT, &gigabytes, "size of the generated bf16 checkpoint in GB (default 2)"},
        {"layout", OPT_STR, &layout, "experts of the generated checkpoint: per-expert (default) or packed (transformers 5's gate_up_proj/down_proj, converted before timing)"},
        {"keep", OPT_FLAG, &keep, "keep the generated files"},
    };
    int prc = cli_parse("bench grow", "[--gb G] [--dir DIR] [--layout per-expert|packed]", argc, argv, opts, 4);
    if (prc) return prc == 1 ? 0 : prc;
    if (gigabytes <= 0 || gigabytes > 1000) return cli_usage_error("bench grow", "--gb %g; expected 0 < G <= 1000", gigabytes);
    int packed = !strcmp(layout, "packed");
    if (!packed && strcmp(layout, "per-expert"))
        return cli_usage_error("bench grow", "--layout %s; expected per-expert or packed", layout);
    char scratch[1024];
    if (dir) snprintf(scratch, sizeof scratch, "%s", dir);
    else snprintf(scratch, sizeof scratch, "%s/upcycle-bench-grow-%ld", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (long)getpid());
    if (mkdir_p(scratch)) return cli_fail();
    char *in = path_join(scratch, "in"), *copy = path_join(scratch, "copy"), *out = path_join(scratch, "grown");
    remove_tree(in), remove_tree(copy), remove_tree(out);
    int rc;
    if (!packed) {
        rc = hf_bench_make_checkpoint(in, gigabytes);
    } else { /* the same checkpoint, its experts packed by a 1x growth into that layout */
        char *generated = path_join(scratch, "generated");
        remove_tree(generated);
        rc = hf_bench_make_checkpoint(generated, gigabytes);
        HfMoeInfo gen;
        GrowPlan same;
        HfGrowOptions to_packed = {.bias_noise = 0.0f, .seed = 1, .layout = HF_GROW_LAYOUT_PACKED};
        if (!rc) rc = hf_inspect(generated, &gen);
        if (!rc) {
            rc = hf_plan_uniform(&gen, gen.n_experts, &same);
            if (!rc) rc = hf_grow(generated, in, &same, &to_packed);
            grow_plan_free(&same);
            hf_info_free(&gen);
        }
        remove_tree(generated);
        free(generated);
    }
    HfMoeInfo info;
    if (!rc) rc = hf_inspect(in, &info);
    if (rc) {
        free(in), free(copy), free(out);
        return cli_fail();
    }
    double in_gb = info.total_bytes / 1e9;
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "sync; cp -r '%s' '%s' && sync", in, copy);
    double t0 = now_seconds();
    int cp_rc = system(cmd);
    double t_cp = now_seconds() - t0;
    GrowPlan plan;
    HfGrowOptions hopt = {.bias_noise = 1.0f, .seed = 1, .force = 0};
    rc = hf_plan_uniform(&info, 2 * info.n_experts, &plan);
    t0 = now_seconds();
    if (!rc) rc = hf_grow(in, out, &plan, &hopt);
    double t_grow = now_seconds() - t0;
    grow_plan_free(&plan); /* hf_plan_uniform zeroes it first, so also after a failure */
    if (!rc) {
        HfMoeInfo grown;
        double out_gb = 0;
        if (hf_inspect(out, &grown) == 0) out_gb = grown.total_bytes / 1e9, hf_info_free(&grown);
        printf("checkpoint: %.2f GB bf16, %d MoE layers x %d %s experts -> %d experts (%.2f GB written)\n", in_gb,
               info.n_moe_layers, info.n_experts, hf_layout_name(info.layout), 2 * info.n_experts, out_gb);
        printf("cp -r (read %.2f GB, write %.2f GB): %.2f s = %.2f GB/s written%s\n", in_gb, in_gb, t_cp, in_gb / t_cp,
               cp_rc ? " (cp failed)" : "");
        printf("grow 2x (read %.2f GB, write %.2f GB): %.2f s = %.2f GB/s written\n", in_gb, out_gb, t_grow, out_gb / t_grow);
        printf("grow / cp throughput (bytes written per second): %.2fx; peak RSS %.0f MB (checkpoint %.0f MB)\n",
               (out_gb / t_grow) / (in_gb / t_cp), peak_rss_bytes() / (1 << 20), in_gb * 1e3);
    }
    hf_info_free(&info);
    if (!keep) remove_tree(in), remove_tree(copy), remove_tree(out), (dir ? 0 : rmdir(scratch));
    free(in), free(copy), free(out);
    return rc ? cli_fail() : 0;
}

int cmd_bench(int argc, char **argv) {
    if (argc >= 1 && !strcmp(argv[0], "grow")) return bench_grow_cmd(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "gemm")) return bench_gemm(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "train")) return bench_train_cmd(argc - 1, argv + 1);
    if (argc >= 1 && !strcmp(argv[0], "tokenize")) return bench_tokenize_cmd(argc - 1, argv + 1);
    if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
        printf("usage: upcycle bench gemm [--size N] | bench train [--preset P] [--steps N] | bench grow [--gb G] | "
               "bench tokenize --tokenizer hf:PATH --input PATH\n");
        return 0;
    }
    return cli_usage_error("bench", "missing or unknown benchmark; expected gemm, train, grow or tokenize");
}
