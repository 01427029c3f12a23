/* Experiment plans, statistics, and a whole (tiny) experiment end to end: results, report,
 * resumption. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "experiment/experiment.h"
#include "experiment/stats.h"
#include "fixtures.h"
#include "test.h"
#include "util.h"

TEST(stats_efficiency_and_undefined_rule) {
    double E[3] = {2.10, 2.11, 2.09}, U[3] = {2.05, 2.06, 2.04}, M[3] = {2.00, 2.01, 1.99};
    Efficiency e = stats_efficiency(E, U, M, 3, 1);
    CHECK(e.defined);
    CHECK_CLOSE(e.mean, 50.0, 1e-9);
    CHECK(e.lo <= e.mean && e.mean <= e.hi);
    /* Fixed-mE within the seed spread of Fixed-E: undefined, never a percentage */
    double M2[3] = {2.095, 2.12, 2.08};
    e = stats_efficiency(E, U, M2, 3, 1);
    CHECK(!e.defined && strstr(e.reason, "undefined: Fixed-mE is not better than Fixed-E"));
    double M3[3] = {2.2, 2.2, 2.2}; /* worse */
    CHECK(!stats_efficiency(E, U, M3, 3, 1).defined);
    /* one seed: defined without an interval */
    e = stats_efficiency(E, U, M, 1, 1);
    CHECK(e.defined && isnan(e.lo));
    CHECK_CLOSE(stats_std(E, 3), 0.01, 1e-9);
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
