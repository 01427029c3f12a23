/* Experiment plans, statistics, and a whole (tiny) experiment end to end: results, report,
 * resumption. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "experiment/cost.h"
#include "experiment/experiment.h"
#include "experiment/stats.h"
#include "fixtures.h"
#include "model.h"
#include "train.h"
#include "test.h"
#include "util.h"

TEST(stats_efficiency_and_undefined_rule) {
    double E[3] = {2.10, 2.11, 2.09}, U[3] = {2.05, 2.06, 2.04}, M[3] = {2.00, 2.01, 1.99};
    Efficiency e = stats_efficiency(E, U, M, 3, 1);
    CHECK(e.defined && e.unpaired_defined);
    CHECK_CLOSE(e.mean, 50.0, 1e-9);
    CHECK(e.lo <= e.mean && e.mean <= e.hi);
    /* Fixed-mE within noise of Fixed-E: undefined, never a percentage */
    double M2[3] = {2.095, 2.12, 2.08};
    e = stats_efficiency(E, U, M2, 3, 1);
    CHECK(!e.defined && isnan(e.mean) && strstr(e.reason, "undefined: Fixed-mE is not better than Fixed-E"));
    double M3[3] = {2.2, 2.2, 2.2}; /* worse */
    CHECK(!stats_efficiency(E, U, M3, 3, 1).defined);
    /* one seed: no interval and no verdict, never a percentage */
    e = stats_efficiency(E, U, M, 1, 1);
    CHECK(!e.defined && isnan(e.mean) && isnan(e.lo) && !strcmp(e.reason, "1 seed: no interval, no verdict"));
    CHECK(isnan(e.premise.t_lo) && fabs(e.premise.mean - 0.1) < 1e-12);
    CHECK_CLOSE(stats_std(E, 3), 0.01, 1e-9);
}

/* the paired interval against a hand-computed case (paired t with n-1 = 2 degrees of freedom) */
TEST(stats_paired_gap_hand_computed) {
    double E[3] = {3.725, 3.720, 3.678}, M[3] = {3.698, 3.702, 3.709};
    PairedGap g = stats_paired_gap(E, M, 3, 7);
    /* d = 0.027, 0.018, -0.031: mean 0.0046667, sd 0.0312143, half width 4.303 * sd / sqrt(3) */
    CHECK_CLOSE(g.mean, 0.004666666666666, 1e-9);
    CHECK_CLOSE(g.sd, 0.031214312956, 1e-9);
    CHECK_CLOSE(g.t_lo, -0.0728800, 1e-6);
    CHECK_CLOSE(g.t_hi, 0.0822133, 1e-6);
    /* the bootstrap of a mean of 3 values lies within [min d, max d] and brackets the mean */
    CHECK(g.boot_lo >= -0.031 - 1e-12 && g.boot_hi <= 0.027 + 1e-12 && g.boot_lo <= g.mean && g.mean <= g.boot_hi);
    CHECK_CLOSE(stats_t975(2), 4.303, 1e-12);
    CHECK_CLOSE(stats_t975(40), 2.021, 2e-3); /* the expansion past the table */
    CHECK_CLOSE(stats_t975(1000), 1.962, 1e-3);
}

/* Seeds far apart, gaps consistent: the paired rule calls Fixed-mE better, the unpaired one cannot */
TEST(stats_paired_and_unpaired_rules_disagree) {
    double E[3] = {3.70, 3.90, 3.60}, M[3] = {3.65, 3.86, 3.555}, U[3] = {3.675, 3.88, 3.5775};
    Efficiency e = stats_efficiency(E, U, M, 3, 3);
    CHECK(e.defined && !e.unpaired_defined);
    CHECK(e.premise.t_lo > 0);
    CHECK_CLOSE(e.mean, 50.0, 1e-9);
    /* and the reverse: the mean gap (0.0267) beats the unpaired spread (0.0153), but the per-seed
     * gaps (0.01, 0.05, 0.02) vary too much for 3 seeds: the paired interval reaches below 0 */
    double E2[3] = {3.00, 3.02, 3.01}, M2[3] = {2.99, 2.97, 2.99};
    e = stats_efficiency(E2, E2, M2, 3, 3);
    CHECK(!e.defined && e.unpaired_defined);
    CHECK_CLOSE(e.premise.t_lo, -0.0250489571, 1e-6);
}

/* window w's mean token loss, computed alone in row 0 of a batch of otherwise unrelated windows */
static double window_loss(Model *m, Loader *ld, uint64_t w) {
    int B = m->B, T = m->T;
    int32_t *tokens = xmalloc(sizeof(int32_t) * (size_t)B * (T + 1));
    for (int b = 0; b < B; b++) loader_copy_window(ld, b == 0 ? w : (w + 7 * (uint64_t)b) % ld->n_windows, tokens + (size_t)b * (T + 1));
    model_forward(m, tokens, 0, 0);
    double sum = 0;
    for (int t = 0; t < T; t++) sum += m->host_losses[t];
    free(tokens);
    return sum / T;
}

/* whole-split and strided evaluation against a direct sum over windows */
TEST(evaluation_whole_split_and_strided) {
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    char *data = fixture_data_dir();
    Model m;
    CHECK(model_create(&m, &mc, backend_cpu()) == 0);
    model_init_weights(&m, 9);
    int B = 3, T = 8; /* the window count is not a multiple of B: the last batch is padded */
    model_set_batch(&m, B, T);
    Loader ld;
    CHECK(loader_open(&ld, data, "val", B, T, 0, 0) == 0);
    uint64_t W = ld.n_windows;
    CHECK_MSG(W >= 20 && W % B != 0, "fixture val split has %llu windows", (unsigned long long)W);
    double *direct = xmalloc(sizeof(double) * W), sum = 0, sq = 0;
    for (uint64_t w = 0; w < W; w++) direct[w] = window_loss(&m, &ld, w), sum += direct[w], sq += direct[w] * direct[w];
    EvalResult all = evaluate_split(&m, &ld, 0);
    CHECK(all.windows == (long long)W && all.tokens == (long long)W * T);
    CHECK_CLOSE(all.loss, sum / W, 1e-6);
    double var = (sq - sum * sum / W) / (W - 1);
    CHECK_CLOSE(all.std_error, sqrt(var / W), 1e-6);
    /* asking for more batches than the split has: the whole split, once */
    CHECK_CLOSE(evaluate_split(&m, &ld, 1000).loss, all.loss, 1e-12);
    /* 2 batches = 6 windows strided over the whole split, not its first 6 */
    EvalResult few = evaluate_split(&m, &ld, 2);
    double s6 = 0;
    uint64_t last = 0;
    for (uint64_t i = 0; i < 6; i++) {
        uint64_t w = eval_window(i, 6, W);
        CHECK(w == i * W / 6);
        s6 += direct[w], last = w;
    }
    CHECK(few.windows == 6 && last >= W / 2);
    CHECK_CLOSE(few.loss, s6 / 6, 1e-6);
    /* the same subset every time, whatever the loader's position */
    int32_t *scratch = xmalloc(sizeof(int32_t) * (size_t)B * (T + 1));
    loader_next(&ld, scratch);
    CHECK(evaluate_split(&m, &ld, 2).loss == few.loss);
    free(scratch);
    loader_close(&ld);
    model_free(&m);
    free(direct), free(data);
}

/* the compute formula against the paper's own figures: 27,888 vs 41,328 GPU hours at 50% CPT
 * (growth after pre-training P, CPT 0.5 P: tau = 2/3 of T), 67% fewer in the sunk-cost case */
TEST(cost_formula_paper_figures) {
    double tau_frac = 2.0 / 3.0, saving = 1.0 - 27888.0 / 41328.0;
    CHECK_CLOSE(cost_sunk_saving(tau_frac), 0.667, 1e-3);
    double ratio = cost_implied_ratio(tau_frac, saving);
    CHECK_CLOSE(ratio, 1.9520, 1e-3);
    CHECK_CLOSE(cost_saving(tau_frac, ratio), saving, 1e-12);
    /* growing at half of the steps instead, the same saving would need t_mE = 2.86 t_E */
    CHECK_CLOSE(cost_implied_ratio(0.5, saving), 2.8598, 1e-3);
    /* equal step times save nothing; a saving above tau_frac is impossible */
    CHECK_CLOSE(cost_saving(0.5, 1.0), 0.0, 1e-12);
    CHECK(isnan(cost_implied_ratio(0.5, 0.6)));
}

TEST(cost_cluster_model) {
    ClusterShape c;
    CHECK(cost_parse_cluster("gpus=8,ep=4,link=50", &c) == 0 && c.gpus == 8 && c.ep == 4 && c.link_gbs == 50 && c.tflops == 400);
    CHECK(cost_parse_cluster("gpus=8,ep=3,link=50", &c) == -1 && strstr(up_last_error(), "ep=3 does not divide gpus=8"));
    CHECK(cost_parse_cluster("gpus=8,ep=4", &c) == -1 && strstr(up_last_error(), "link"));
    CHECK(cost_parse_cluster("gpus=8,ep=4,link=50,speed=3", &c) == -1 && strstr(up_last_error(), "unknown key 'speed'"));
    CHECK(cost_parse_cluster("gpus=8,ep=4,link=-5", &c) == -1 && strstr(up_last_error(), "link=-5"));
    CHECK(cost_parse_cluster("gpus=8,ep=4,link=50", &c) == 0);
    ModelConfig small = preset_find("tiny")->model, big = small;
    big.n_experts = 2 * small.n_experts;
    StepCost a = cost_model_step(&small, 4096, 128, &c), b = cost_model_step(&big, 4096, 128, &c);
    /* top-K fixed: the same FLOPs (but the router's few more) and all-to-all; the experts'
     * gradients and optimizer grow */
    CHECK(fabs(a.compute - b.compute) < 0.01 * a.compute);
    CHECK_CLOSE(a.all_to_all, b.all_to_all, 1e-15);
    CHECK(b.grad_sync > a.grad_sync && b.optimizer > a.optimizer && b.total > a.total);
    /* by hand: all-to-all = MoE layers x 4 x (tokens / G) x top_k x d_model x 2 bytes x (ep-1)/ep / link */
    double a2a = model_config_n_moe_layers(&small) * 4.0 * (4096.0 / 8) * small.top_k * small.d_model * 2 * 0.75 / 50e9;
    CHECK_CLOSE(a.all_to_all, a2a, 1e-15);
    /* optimizer: 28 bytes per held parameter over the HBM bandwidth */
    CHECK_CLOSE(b.optimizer, 28.0 * b.params_per_gpu / 3350e9, 1e-18);
    /* ep = G: no expert replicas, so the experts add no gradient sync (only the router's new rows) */
    ClusterShape full = c;
    full.ep = 8;
    StepCost af = cost_model_step(&small, 4096, 128, &full), bf = cost_model_step(&big, 4096, 128, &full);
    double router_rows = model_config_n_moe_layers(&small) * (double)(big.n_experts - small.n_experts) * (small.d_model + 1);
    CHECK_CLOSE(bf.grad_sync - af.grad_sync, 2.0 * 7 / 8 * router_rows * 4 / 50e9, 1e-12);
}

TEST(stats_spearman_values) {
    double x[5] = {1, 2, 3, 4, 5}, y[5] = {10, 20, 30, 40, 50}, z[5] = {5, 4, 3, 2, 1}, t[5] = {1, 1, 2, 2, 3};
    CHECK_CLOSE(stats_spearman(x, y, 5), 1.0, 1e-12);
    CHECK_CLOSE(stats_spearman(x, z, 5), -1.0, 1e-12);
    /* ties get average ranks: ranks of t = 1.5 1.5 3.5 3.5 5 */
    CHECK_CLOSE(stats_spearman(x, t, 5), 0.9486832980505138, 1e-9);
    CHECK(isnan(stats_spearman(x, y, 2)));
}

TEST(plan_presets_and_sharing) {
    Plan p;
    CHECK(plan_load_preset(&p, "demo") == 0);
    CHECK(p.n_runs == 3 && p.seeds == 1);
    CHECK(!strcmp(p.runs[2].arm, "upcycled") && p.runs[2].n_stages == 2 && p.runs[2].total_steps == p.steps);
    CHECK(p.runs[2].stages[1].kind == STAGE_GROW && p.runs[2].stages[1].experts == 2 * p.model.n_experts);
    plan_free(&p);
    CHECK(plan_load_preset(&p, "paper-full") == 0);
    int sweeps[7] = {0};
    const char *names[7] = {"main", "timing", "cpt_budget", "alloc", "init", "activation", "iterative"};
    for (int i = 0; i < p.n_runs; i++)
        for (int s = 0; s < 7; s++) sweeps[s] |= !strcmp(p.runs[i].sweep, names[s]);
    for (int s = 0; s < 7; s++) CHECK_MSG(sweeps[s], "paper-full lacks sweep %s", names[s]);
    /* 20 init heuristics: copy/copy plus 9 + 9 more, per seed */
    int init_runs = 0;
    for (int i = 0; i < p.n_runs; i++) init_runs += !strcmp(p.runs[i].sweep, "init") && !strcmp(p.runs[i].arm, "upcycled");
    CHECK(init_runs == 19 * p.seeds);
    CHECK(plan_set_seeds(&p, 1) == 0 && p.seeds == 1);
    plan_free(&p);
    CHECK(plan_load_preset(&p, "nope") == -1 && strstr(up_last_error(), "demo"));
}

static int load_plan_text(Plan *p, const char *text) {
    char *path = path_join(test_tmpdir(), "plan.json");
    atomic_write_file(path, text, strlen(text));
    int rc = plan_load_json(p, path);
    free(path);
    return rc;
}

TEST(plan_errors_name_the_file) {
    Plan p;
    CHECK(load_plan_text(&p, "{\"sweeps\": {\"mian\": {}}}") == -1 && strstr(up_last_error(), "plan.json") && strstr(up_last_error(), "mian"));
    CHECK(load_plan_text(&p, "{\"sweeps\": {\"main\": {\"tau\": 1.5}}}") == -1 && strstr(up_last_error(), "tau"));
    CHECK(load_plan_text(&p, "{\"stepz\": 3, \"sweeps\": {}}") == -1 && strstr(up_last_error(), "stepz"));
    CHECK(load_plan_text(&p, "{\"sweeps\": {}}") == -1 && strstr(up_last_error(), "no runs"));
    CHECK(load_plan_text(&p, "[1, 2]") == -1 && strstr(up_last_error(), "expected an experiment plan"));
    CHECK(load_plan_text(&p, "{\"cpt_schedule\": \"later\", \"sweeps\": {\"main\": {\"tau\": 0.5}}}") == -1);
}

/* plans by util/json.h's rule: a field of the wrong type is an error naming the file and the field */
TEST(plan_fields_of_the_wrong_type_name_the_field) {
    struct {
        const char *plan, *expect;
    } cases[] = {
        {"{\"factor\": \"2\", \"sweeps\": {\"main\": {\"tau\": 0.5}}}", "field factor: is a string; expected an integer"},
        {"{\"factor\": 2.5, \"sweeps\": {\"main\": {\"tau\": 0.5}}}", "field factor: is 2.5; expected an integer"},
        {"{\"preset\": 3, \"sweeps\": {\"main\": {\"tau\": 0.5}}}", "field preset: is a number; expected a string"},
        {"{\"cpt_schedule\": true, \"sweeps\": {\"main\": {\"tau\": 0.5}}}", "field cpt_schedule: is true; expected a string"},
        {"{\"seeds\": [1, \"2\"], \"sweeps\": {\"main\": {\"tau\": 0.5}}}", "field seeds[1]: is a string; expected a number"},
        {"{\"model\": 4, \"sweeps\": {\"main\": {\"tau\": 0.5}}}", "field model: is a number; expected an object"},
        {"{\"sweeps\": [1]}", "field sweeps: is an array; expected an object"},
        {"{\"sweeps\": {\"main\": 5}}", "field sweeps.main: is a number; expected an object"},
        {"{\"sweeps\": {\"timing\": {\"tau\": [0.25, \"x\"]}}}", "field sweeps.timing.tau[1]: is a string; expected a number"},
        {"{\"sweeps\": {\"alloc\": {\"tau\": 0.5, \"methods\": [\"grad2\", 3]}}}", "field sweeps.alloc.methods[1]: is a number; expected a string"},
        {"{\"sweeps\": {\"cpt_budget\": {\"pretrain_steps\": \"8\", \"cpt\": [0.5]}}}",
         "field sweeps.cpt_budget.pretrain_steps: is a string; expected an integer"},
        {"{\"sweeps\": {\"init\": {\"tau\": 0.5, \"expert\": \"noise\"}}}", "field sweeps.init.expert: is a string; expected an array"},
        {"{\"sweeps\": {\"activation\": {\"tau\": 0.5, \"experts\": [8], \"top_k\": \"1\"}}}",
         "field sweeps.activation.top_k: is a string; expected an integer"},
    };
    char *path = path_join(test_tmpdir(), "plan.json");
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        Plan p;
        up_clear_error();
        CHECK(load_plan_text(&p, cases[i].plan) == -1);
        char want[1200];
        snprintf(want, sizeof want, "%s: %s", path, cases[i].expect);
        CHECK_MSG(strcmp(up_last_error(), want) == 0, "case %zu: '%s', expected '%s'", i, up_last_error(), want);
    }
    /* null is absent: the defaults */
    Plan p;
    CHECK_MSG(load_plan_text(&p, "{\"name\": null, \"factor\": null, \"seeds\": null, \"sweeps\": {\"main\": {\"tau\": 0.5}}}") == 0, "%s",
              up_last_error());
    CHECK(!strcmp(p.name, "plan") && p.factor == 2 && p.seeds == 1);
    plan_free(&p);
    free(path);
}

/* one table of sweeps: the plan accepts exactly its names (and lists them), the report orders by it */
TEST(plan_sweep_table_is_the_one_list) {
    int seen_order[N_SWEEPS] = {0};
    for (int i = 0; i < N_SWEEPS; i++) {
        CHECK(SWEEPS[i].name && SWEEPS[i].description && SWEEPS[i].description[0]);
        CHECK(sweep_find(SWEEPS[i].name) == &SWEEPS[i]);
        CHECK(SWEEPS[i].report_order >= 0 && SWEEPS[i].report_order < N_SWEEPS);
        if (SWEEPS[i].report_order >= 0 && SWEEPS[i].report_order < N_SWEEPS) seen_order[SWEEPS[i].report_order]++;
    }
    for (int k = 0; k < N_SWEEPS; k++) CHECK(seen_order[k] == 1); /* report_order is a permutation */
    CHECK(sweep_find("nope") == NULL && sweep_find(NULL) == NULL);
    /* what users see: the report's order ... */
    const char *report[N_SWEEPS] = {"main", "timing", "cpt_budget", "alloc", "init", "activation", "iterative", "schedule", "premise"};
    for (int i = 0; i < N_SWEEPS; i++) CHECK(sweep_find(report[i]) && sweep_find(report[i])->report_order == i);
    /* ... and the plan's message, which lists the table */
    Plan p;
    CHECK(load_plan_text(&p, "{\"sweeps\": {\"mian\": {}}}") == -1);
    CHECK_MSG(strstr(up_last_error(), "unknown sweep mian; expected main, premise, schedule, timing, cpt_budget, alloc, init, activation, iterative"),
              "%s", up_last_error());
    /* the premise sweep is known to the plan (no upcycled arm) */
    CHECK_MSG(load_plan_text(&p, "{\"sweeps\": {\"premise\": {}}}") == 0, "%s", up_last_error());
    plan_free(&p);
}

static const char *TINY_PLAN =
    "{\"name\": \"tiny-test\", \"model\": {\"vocab_size\": 40, \"hidden_size\": 32, \"num_hidden_layers\": 2,"
    " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 8, \"intermediate_size\": 48,"
    " \"num_experts\": 2, \"moe_intermediate_size\": 16},"
    " \"train\": {\"batch_size\": 4, \"seq_len\": 16, \"eval_every\": 4, \"eval_batches\": 2, \"warmup_steps\": 2, \"lr\": 0.01},"
    " \"factor\": 2, \"steps\": 16, \"seeds\": 2, \"final_eval_batches\": 4,"
    " \"sweeps\": {\"main\": {\"tau\": 0.5}, \"alloc\": {\"tau\": 0.5, \"methods\": [\"grad2\", \"random\"]}}}";

TEST(experiment_end_to_end_and_resume) {
    Plan p;
    CHECK(load_plan_text(&p, TINY_PLAN) == 0);
    char *data = fixture_data_dir(), *out = path_join(test_tmpdir(), "exp");
    ExperimentOptions eo = {.data_dir = data, .out_dir = out, .quiet = 1, .probe_batches = 1};
    CHECK(experiment_run(&p, &eo) == 0);
    char *results = path_join(out, "results.json"), *text;
    CHECK(read_file(results, &text, NULL) == 0);
    cJSON *j = cJSON_Parse(text);
    free(text);
    cJSON *runs = cJSON_GetObjectItem(j, "runs"), *comps = cJSON_GetObjectItem(j, "comparisons");
    CHECK(cJSON_GetArraySize(runs) == p.n_runs);
    const cJSON *r;
    int grown = 0;
    cJSON_ArrayForEach(r, runs) {
        CHECK(!strcmp(cJSON_GetObjectItem(r, "status")->valuestring, "done"));
        if (cJSON_GetArraySize(cJSON_GetObjectItem(r, "growth_steps")) == 1) {
            grown++;
            CHECK(cJSON_GetArrayItem(cJSON_GetObjectItem(r, "growth_steps"), 0)->valueint == 8);
        }
    }
    CHECK(grown == 3 * 2); /* uniform, grad2, random; 2 seeds */
    /* main, grad2 and random comparisons, each over 2 seeds */
    CHECK(cJSON_GetArraySize(comps) == 3);
    const cJSON *c = cJSON_GetArrayItem(comps, 0);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "upcycled"), "n")->valueint == 2);
    const cJSON *cc = cJSON_GetObjectItem(c, "compute");
    CHECK(cJSON_GetObjectItem(cc, "sunk_cost_saving_pct")->valuedouble > 49.9 && cJSON_GetObjectItem(cc, "sunk_cost_saving_pct")->valuedouble < 50.1);
    /* replica diagnostics recorded during CPT of the uniform run */
    const cJSON *up = NULL;
    cJSON_ArrayForEach(r, runs) if (!strcmp(cJSON_GetObjectItem(r, "arm")->valuestring, "upcycled") && !up) up = r;
    CHECK(up && cJSON_GetArraySize(cJSON_GetObjectItem(up, "diag")) >= 2);
    cJSON_Delete(j);
    char *html = path_join(out, "report.html"), *csv = path_join(out, "results.csv");
    CHECK(path_exists(html) && path_exists(csv));
    /* a second run skips every finished stage: stage.json files are not rewritten */
    char *stage_json = path_join(out, "stages/E2-k2-T8-s1/stage.json"), *before, *after;
    CHECK(read_file(stage_json, &before, NULL) == 0);
    CHECK(experiment_run(&p, &eo) == 0);
    CHECK(read_file(stage_json, &after, NULL) == 0 && !strcmp(before, after));
    free(before), free(after);
    /* an interrupted stage resumes from its checkpoint: the final loss is the same */
    char *stage = path_join(out, "stages/E2-k2-T16-s1"), *sj = path_join(stage, "stage.json"), *fin = path_join(stage, "final");
    char *orig;
    CHECK(read_file(sj, &orig, NULL) == 0);
    remove(sj);
    remove_tree(fin);
    CHECK(experiment_run(&p, &eo) == 0);
    char *again;
    CHECK(read_file(sj, &again, NULL) == 0);
    cJSON *a = cJSON_Parse(orig), *b = cJSON_Parse(again);
    CHECK(cJSON_GetObjectItem(a, "final_val_loss")->valuedouble == cJSON_GetObjectItem(b, "final_val_loss")->valuedouble);
    cJSON_Delete(a), cJSON_Delete(b);
    free(orig), free(again), free(stage), free(sj), free(fin), free(stage_json);
    free(html), free(csv), free(results), free(out), free(data);
    plan_free(&p);
}

/* the runner reads its stages' files by util/json.h's rule: a malformed field is an error naming
 * the file (and the metrics line) and the field; a torn last metrics line is skipped */
TEST(experiment_malformed_stage_files_name_file_and_field) {
    static const char *plan =
        "{\"name\": \"tiny-main\", \"model\": {\"vocab_size\": 40, \"hidden_size\": 32, \"num_hidden_layers\": 2,"
        " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 8, \"intermediate_size\": 48,"
        " \"num_experts\": 2, \"moe_intermediate_size\": 16},"
        " \"train\": {\"batch_size\": 4, \"seq_len\": 16, \"eval_every\": 4, \"eval_batches\": 2, \"warmup_steps\": 2, \"lr\": 0.01},"
        " \"factor\": 2, \"steps\": 8, \"seeds\": 1, \"final_eval_batches\": 2, \"sweeps\": {\"main\": {\"tau\": 0.5}}}";
    Plan p;
    CHECK(load_plan_text(&p, plan) == 0);
    char *data = fixture_data_dir(), *out = path_join(test_tmpdir(), "exp");
    ExperimentOptions eo = {.data_dir = data, .out_dir = out, .quiet = 1, .probe_batches = 0};
    CHECK_MSG(experiment_run(&p, &eo) == 0, "%s", up_last_error());
    char *stage = path_join(out, "stages/E2-k2-T8-s1"), *sj = path_join(stage, "stage.json"), *metrics = path_join(stage, "metrics.jsonl");
    char *orig_sj = NULL, *orig_metrics = NULL;
    CHECK(read_file(sj, &orig_sj, NULL) == 0 && read_file(metrics, &orig_metrics, NULL) == 0);
    if (!orig_sj || !orig_metrics) goto done;
    /* stage.json: "flops" a string */
    cJSON *j = cJSON_Parse(orig_sj);
    cJSON_ReplaceItemInObject(j, "flops", cJSON_CreateString("many"));
    char *bad = cJSON_Print(j);
    cJSON_Delete(j);
    CHECK(atomic_write_file(sj, bad, strlen(bad)) == 0);
    free(bad);
    up_clear_error();
    CHECK(experiment_run(&p, &eo) == -1);
    char want[4096];
    snprintf(want, sizeof want, "%s: field flops: is a string; expected a number or null", sj);
    CHECK_MSG(strcmp(up_last_error(), want) == 0, "'%s', expected '%s'", up_last_error(), want);
    CHECK(atomic_write_file(sj, orig_sj, strlen(orig_sj)) == 0);
    /* a metrics line cut short by a crash is skipped */
    char *text = xmalloc(strlen(orig_metrics) + 200);
    sprintf(text, "%s{\"step\": 99, \"lo", orig_metrics);
    CHECK(atomic_write_file(metrics, text, strlen(text)) == 0);
    CHECK_MSG(experiment_run(&p, &eo) == 0, "%s", up_last_error());
    /* a line with a wrong-typed field is an error naming its line */
    int lines = 0;
    for (const char *c = orig_metrics; *c; c++) lines += *c == '\n';
    sprintf(text, "%s{\"step\": \"nine\", \"loss\": 1.0}\n", orig_metrics);
    CHECK(atomic_write_file(metrics, text, strlen(text)) == 0);
    up_clear_error();
    CHECK(experiment_run(&p, &eo) == -1);
    snprintf(want, sizeof want, "%s: line %d: field step: is a string; expected an integer", metrics, lines + 1);
    CHECK_MSG(strcmp(up_last_error(), want) == 0, "'%s', expected '%s'", up_last_error(), want);
    free(text);
    CHECK(atomic_write_file(metrics, orig_metrics, strlen(orig_metrics)) == 0);
    CHECK_MSG(experiment_run(&p, &eo) == 0, "%s", up_last_error());
done:
    free(orig_sj), free(orig_metrics), free(stage), free(sj), free(metrics), free(out), free(data);
    plan_free(&p);
}

/* evaluate_split_unbiased: the loss with the balancing biases set to zero (as transformers
 * computes a saved model), the loss with them as evaluate_split gives it, the top-K agreement
 * counted independently, and the biases restored */
TEST(evaluation_without_the_balancing_biases) {
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    char *data = fixture_data_dir();
    Model m;
    CHECK(model_create(&m, &mc, backend_cpu()) == 0);
    model_init_weights(&m, 9);
    int B = 3, T = 8;
    model_set_batch(&m, B, T);
    Loader ld;
    CHECK(loader_open(&ld, data, "val", B, T, 0, 0) == 0);
    BiasEffect e;
    EvalResult zero = evaluate_split_unbiased(&m, &ld, 4, &e);
    CHECK(!e.has_bias && zero.loss == evaluate_split(&m, &ld, 4).loss);
    size_t n = (size_t)model_config_n_moe_layers(&mc) * mc.n_experts;
    float *bias = xmalloc(n * sizeof(float)), *back = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) bias[i] = (i % 3 == 0) ? 0.3f : -0.05f * (float)(i % 5);
    model_balance_bias_set(&m, bias);
    double with = evaluate_split(&m, &ld, 4).loss;
    EvalResult r = evaluate_split_unbiased(&m, &ld, 4, &e);
    model_balance_bias_get(&m, back);
    CHECK(memcmp(bias, back, n * sizeof(float)) == 0); /* restored */
    CHECK(e.has_bias && e.loss_with_bias == with && r.loss == zero.loss && e.max_abs_bias == 0.3f);
    CHECK_MSG(e.topk_agreement > 0 && e.topk_agreement < 1, "agreement %g", e.topk_agreement);
    /* the agreement by hand on the first batch window set: forward without, then with */
    int32_t *tok = xmalloc(sizeof(int32_t) * B * (T + 1));
    for (int b = 0; b < B; b++) loader_copy_window(&ld, eval_window((uint64_t)b, 4 * (uint64_t)B, ld.n_windows), tok + b * (T + 1));
    int K = mc.top_k;
    int32_t *a = xmalloc(sizeof(int32_t) * B * T * K), *c = xmalloc(sizeof(int32_t) * B * T * K);
    int moe = 0;
    while (!layer_is_moe(&mc, moe)) moe++;
    model_balance_bias_set(&m, NULL);
    model_forward(&m, tok, 0, 0);
    model_layer_topk(&m, moe, a);
    model_balance_bias_set(&m, bias);
    model_forward(&m, tok, 0, 0);
    model_layer_topk(&m, moe, c);
    size_t same = 0;
    for (int t = 0; t < B * T; t++) {
        int eq = 1;
        for (int k = 0; k < K; k++) {
            int found = 0;
            for (int k2 = 0; k2 < K; k2++) found |= a[t * K + k2] == c[t * K + k];
            eq &= found;
        }
        same += eq;
    }
    CHECK(topk_same_sets(a, c, (size_t)B * T, K) == same && same < (size_t)B * T);
    free(a), free(c), free(tok), free(bias), free(back);
    loader_close(&ld);
    model_free(&m);
    free(data);
}
