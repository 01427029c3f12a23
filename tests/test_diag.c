/* Replica diagnostics (experiment/diag.h): cosines right after growth, after continued
 * pre-training and with orthogonal init; token overlap under exact ties; loads; errors. */
#include <cjson/cJSON.h>
#include <stdio.h> /* diag.h uses FILE without including it */
#include <stdlib.h>
#include <string.h>

#include "experiment/diag.h"
#include "fixtures.h"
#include "grow/grow.h"
#include "test.h"
#include "train.h"
#include "util.h"

static const cJSON *get(const cJSON *o, const char *key) { return cJSON_GetObjectItemCaseSensitive(o, key); }
static double getnum(const cJSON *o, const char *key) {
    const cJSON *v = get(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}
static const cJSON *layer0(const cJSON *d) { return cJSON_GetArrayItem(get(d, "layers"), 0); }

/* trains the fixture run into DIR/src and grows it 4 -> 8 experts into DIR/<name> */
static char *grown(const char *name, char **src_out, char **data_out, float bias_noise, const char *expert_init) {
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    char *data = fixture_data_dir(), *src = fixture_trained_checkpoint("src", &mc, &tc, data);
    char *out = path_join(test_tmpdir(), name);
    GrowOptions o;
    grow_options_defaults(&o);
    o.factor = 2, o.quiet = 1, o.bias_noise = bias_noise;
    if (expert_init) CHECK(expert_init_parse(expert_init, &o.expert_init) == 0);
    GrowReport r;
    CHECK(grow_checkpoint(src, out, &o, &r) == 0);
    *src_out = src, *data_out = data;
    return out;
}

/* load counts sum to probe_tokens * K and agree with min/max/dead */
static void check_loads(const cJSON *d) {
    const cJSON *l;
    double N = getnum(d, "probe_tokens"), K = getnum(d, "top_k");
    cJSON_ArrayForEach(l, get(d, "layers")) {
        const cJSON *load = get(l, "load"), *c;
        CHECK(load != NULL);
        if (!load) return;
        double sum = 0, mn = 1e300, mx = -1;
        int dead = 0;
        cJSON_ArrayForEach(c, get(load, "counts")) {
            sum += c->valuedouble, mn = fmin(mn, c->valuedouble), mx = fmax(mx, c->valuedouble);
            dead += c->valuedouble == 0;
        }
        CHECK_MSG(sum == N * K, "loads sum to %g; expected N*K = %g", sum, N * K);
        CHECK(getnum(load, "total") == N * K);
        CHECK(getnum(load, "min") == mn && getnum(load, "max") == mx);
        CHECK_CLOSE(getnum(load, "max_violation"), mx / (N * K / getnum(l, "n_experts")) - 1, 1e-12);
        CHECK(cJSON_GetArraySize(get(l, "dead_experts")) == dead);
        double H = getnum(l, "routing_entropy");
        CHECK(H > 0 && H <= log(getnum(l, "n_experts")) + 1e-9);
    }
}

TEST(diag_copy_growth_replicas_identical) {
    char *src, *data, *g = grown("grown", &src, &data, 0.0f, NULL);
    cJSON *d = diag_checkpoint(g, NULL, src, data, 2);
    CHECK_MSG(d != NULL, "%s", up_last_error());
    if (!d) return;
    const cJSON *l = layer0(d), *grp;
    CHECK(getnum(l, "layer") == 1 && getnum(l, "n_experts") == 8);
    CHECK(cJSON_GetArraySize(get(l, "groups")) == 4);
    CHECK(getnum(d, "probe_tokens") == 2 * 4 * 16); /* 2 batches of the trainer's 4 x 16 */
    CHECK(isfinite(getnum(d, "val_loss")) && getnum(d, "val_loss") > 0);
    const cJSON *load_counts = get(get(l, "load"), "counts");
    int empty = 0;
    cJSON_ArrayForEach(grp, get(l, "groups")) {
        int s = (int)getnum(grp, "source");
        const cJSON *members = get(grp, "members"), *v;
        CHECK(cJSON_GetArraySize(members) == 2);
        CHECK(cJSON_GetArrayItem(members, 0)->valueint == s && cJSON_GetArrayItem(members, 1)->valueint == s + 4);
        cJSON_ArrayForEach(v, get(grp, "pairwise_cosine")) CHECK_CLOSE(v->valuedouble, 1.0, 1e-6);
        cJSON_ArrayForEach(v, get(grp, "cosine_to_source")) CHECK_CLOSE(v->valuedouble, 1.0, 1e-6);
        CHECK(cJSON_GetArraySize(get(grp, "cosine_to_source")) == 2);
        /* exact ties (same router row, same bias) with K = 2 = group size: top-K breaks the tie to
         * the lower index, so a group is always selected together - both members receive the very
         * same tokens (Jaccard 1, equal loads), or neither does (0/0, reported as 0) */
        int ca = cJSON_GetArrayItem(load_counts, s)->valueint, cb = cJSON_GetArrayItem(load_counts, s + 4)->valueint;
        CHECK_MSG(ca == cb, "group %d: loads %d vs %d", s, ca, cb);
        double jac = cJSON_GetArrayItem(get(grp, "jaccard"), 0)->valuedouble;
        CHECK_MSG(jac == (ca ? 1.0 : 0.0), "group %d: jaccard %g with load %d", s, jac, ca);
        empty += ca == 0;
    }
    CHECK(getnum(l, "jaccard_empty_pairs") == empty);
    CHECK_CLOSE(getnum(l, "jaccard_mean"), (4.0 - empty) / 4, 1e-12);
    CHECK_CLOSE(getnum(l, "replica_cosine_mean"), 1.0, 1e-6);
    CHECK_CLOSE(getnum(l, "cosine_to_source_mean"), 1.0, 1e-6);
    check_loads(d);
    /* the text summary */
    char *txt = path_join(test_tmpdir(), "diag.txt");
    FILE *f = fopen(txt, "w");
    diag_print(d, f);
    fclose(f);
    char *text;
    size_t n;
    CHECK(read_file(txt, &text, &n) == 0);
    CHECK(strstr(text, "layer 1: 8 experts in 4 groups") && strstr(text, "replica cosine") && strstr(text, "Jaccard") &&
          strstr(text, "routing entropy") && strstr(text, "dead experts") && strstr(text, "cosine to source"));
    free(text), free(txt);
    cJSON_Delete(d);
    /* without source and data: weights only, routing keys absent */
    d = diag_checkpoint(g, NULL, NULL, NULL, 2);
    CHECK(d != NULL);
    if (d) {
        l = layer0(d);
        CHECK(get(l, "load") == NULL && get(l, "routing_entropy") == NULL && get(d, "probe_tokens") == NULL);
        CHECK(get(cJSON_GetArrayItem(get(l, "groups"), 0), "cosine_to_source") == NULL);
        CHECK_CLOSE(getnum(l, "replica_cosine_mean"), 1.0, 1e-6);
        cJSON_Delete(d);
    }
    free(src), free(data), free(g);
}

/* grows with the given bias noise, trains 6 steps of continued pre-training from the grown
 * checkpoint and returns the diagnostics of the result (grow.json and source given explicitly) */
static cJSON *diag_after_cpt(float bias_noise) {
    char *src, *data, *g = grown("grown", &src, &data, bias_noise, NULL);
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    tc.steps = 6, tc.save_every = 0;
    char *out = path_join(test_tmpdir(), "cpt");
    TrainOptions o = {.data_dir = data, .out_dir = out, .init = g, .split = "cpt", .quiet = 1};
    TrainResult r;
    CHECK(train_run(&mc, &tc, &o, &r) == 0);
    free(r.losses);
    char *final = path_join(out, "final"), *gj = path_join(g, "grow.json");
    /* the trained checkpoint has no grow.json of its own */
    CHECK(diag_checkpoint(final, NULL, src, data, 2) == NULL && strstr(up_last_error(), "grow.json: not found") &&
          strstr(up_last_error(), "--grow-json"));
    cJSON *d = diag_checkpoint(final, gj, src, data, 2);
    CHECK_MSG(d != NULL, "%s", up_last_error());
    if (d) check_loads(d);
    remove_tree(out);
    free(src), free(data), free(g), free(out), free(final), free(gj);
    return d;
}

/* Continued pre-training separates the replicas once the default bias noise breaks the tie. */
TEST(diag_replicas_diverge_after_training) {
    cJSON *d = diag_after_cpt(1.0f);
    if (!d) return;
    const cJSON *l = layer0(d), *grp, *v;
    cJSON_ArrayForEach(grp, get(l, "groups")) {
        cJSON_ArrayForEach(v, get(grp, "pairwise_cosine")) CHECK_MSG(v->valuedouble < 1 - 1e-6, "cosine %.9f", v->valuedouble);
        cJSON_ArrayForEach(v, get(grp, "cosine_to_source")) CHECK_MSG(v->valuedouble < 1 - 1e-6, "to source %.9f", v->valuedouble);
        cJSON_ArrayForEach(v, get(grp, "jaccard")) CHECK(v->valuedouble >= 0 && v->valuedouble <= 1);
    }
    CHECK(getnum(l, "replica_cosine_mean") < 1 - 1e-6 && getnum(l, "replica_cosine_mean") > 0.5);
    CHECK(getnum(l, "jaccard_mean") < 1);
    cJSON_Delete(d);
}

/* Without bias noise a plain copy never separates from its source: same router row, same bias,
 * so (K = 2 = group size) the same tokens with the same gates, hence the same gradients, the
 * same loads and the same bias updates. Both move away from the pre-growth weights together. */
TEST(diag_replicas_without_bias_noise_stay_identical) {
    cJSON *d = diag_after_cpt(0.0f);
    if (!d) return;
    const cJSON *l = layer0(d), *grp, *v;
    cJSON_ArrayForEach(grp, get(l, "groups")) {
        cJSON_ArrayForEach(v, get(grp, "pairwise_cosine")) CHECK_CLOSE(v->valuedouble, 1.0, 1e-6);
        cJSON_ArrayForEach(v, get(grp, "cosine_to_source")) CHECK_MSG(v->valuedouble < 1 - 1e-6, "to source %.9f", v->valuedouble);
        cJSON_ArrayForEach(v, get(grp, "jaccard")) CHECK(v->valuedouble == 1.0 || v->valuedouble == 0.0);
    }
    cJSON_Delete(d);
}

TEST(diag_orthogonal_init_replicas_orthogonal_to_source) {
    char *src, *data, *g = grown("grown", &src, &data, 1.0f, "orthogonal");
    cJSON *d = diag_checkpoint(g, NULL, src, data, 1);
    CHECK_MSG(d != NULL, "%s", up_last_error());
    if (d) {
        const cJSON *l = layer0(d), *grp;
        cJSON_ArrayForEach(grp, get(l, "groups")) {
            const cJSON *cts = get(grp, "cosine_to_source");
            CHECK_CLOSE(cJSON_GetArrayItem(cts, 0)->valuedouble, 1.0, 1e-6); /* the original is untouched */
            CHECK_MSG(fabs(cJSON_GetArrayItem(cts, 1)->valuedouble) < 1e-4, "replica cosine to source %g",
                      cJSON_GetArrayItem(cts, 1)->valuedouble);
            CHECK(fabs(cJSON_GetArrayItem(get(grp, "pairwise_cosine"), 0)->valuedouble) < 1e-4);
        }
        CHECK(fabs(getnum(l, "replica_cosine_to_source_mean")) < 1e-4);
        CHECK(getnum(d, "probe_tokens") == 4 * 16);
        check_loads(d);
        cJSON_Delete(d);
    }
    free(src), free(data), free(g);
}

static void write_text(const char *path, const char *text) { CHECK(atomic_write_file(path, text, strlen(text)) == 0); }

TEST(diag_errors) {
    char *src, *data, *g = grown("grown", &src, &data, 0.0f, NULL);
    /* a checkpoint that was not grown */
    CHECK(diag_checkpoint(src, NULL, NULL, NULL, 2) == NULL);
    char want[2048];
    snprintf(want, sizeof want, "%s/grow.json: not found; expected a checkpoint produced by `upcycle grow` (or --grow-json FILE)", src);
    CHECK_MSG(strcmp(up_last_error(), want) == 0, "%s", up_last_error());
    char *missing = path_join(test_tmpdir(), "nope.json");
    CHECK(diag_checkpoint(missing, NULL, NULL, NULL, 2) == NULL && strstr(up_last_error(), "not a checkpoint directory"));
    CHECK(diag_checkpoint(g, missing, NULL, NULL, 2) == NULL && strstr(up_last_error(), "nope.json: not found; expected"));
    /* grow.json inconsistent with the checkpoint */
    struct {
        const char *text, *expect;
    } cases[] = {
        {"{\"layers\": [{\"layer\": 0, \"source\": [0,1,2,3,0,1,2,3]}]}", "layer 0 is not an MoE layer"},
        {"{\"layers\": [{\"layer\": 7, \"source\": [0,1,2,3,0,1,2,3]}]}", "out of range"},
        {"{\"layers\": [{\"layer\": 1, \"source\": [0,1,2,3]}]}", "4 sources but the checkpoint has 8 experts"},
        {"{\"layers\": [{\"layer\": 1, \"source\": [0,1,2,3,0,1,2,9]}]}", "source[7] = 9 is out of range"},
        {"{\"layers\": [{\"layer\": 1, \"source\": [0,1,2,3,0,1,2,-1]}]}", "source[7] = -1 is out of range"},
        {"{\"experts_before\": 4, \"layers\": [{\"layer\": 1, \"source\": [0,1,2,3,0,1,2,5]}]}", "expected an integer expert index in 0..3"},
        {"{\"layers\": []}", "no \"layers\" array"},
        {"{\"layers\": [{\"layer\": 1}]}", "lacks \"layer\" or \"source\""},
        {"not json", "invalid JSON"},
    };
    char *bad = path_join(test_tmpdir(), "bad_grow.json");
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_text(bad, cases[i].text);
        cJSON *d = diag_checkpoint(g, bad, NULL, NULL, 2);
        CHECK_MSG(d == NULL && strstr(up_last_error(), "bad_grow.json: ") && strstr(up_last_error(), cases[i].expect) &&
                      strstr(up_last_error(), "expected"),
                  "case %zu: %s", i, up_last_error());
        cJSON_Delete(d);
    }
    /* a --source that lacks an expert grow.json names (source 5 of a 4-expert checkpoint) */
    write_text(bad, "{\"layers\": [{\"layer\": 1, \"source\": [0,1,2,3,5,5,5,5]}]}");
    CHECK(diag_checkpoint(g, bad, src, NULL, 2) == NULL && strstr(up_last_error(), "has 4 experts but grow.json names source expert 5"));
    free(src), free(data), free(g), free(missing), free(bad);
}

TEST(diag_grow_json_fields_of_the_wrong_type_name_the_field) {
    /* util/json.h's rule: a field of the wrong type is an error naming the file and the field */
    ModelConfig cfg = preset_find("tiny")->model;
    cfg.n_experts = 16; /* MoE layers 1 and 3 */
    const char *ok_source = "[0,1,2,3,4,5,6,7,0,1,2,3,4,5,6,7]";
    char text[1024];
    snprintf(text, sizeof text, "{\"experts_before\": 8, \"layers\": [{\"layer\": 1, \"source\": %s}]}", ok_source);
    char *path = path_join(test_tmpdir(), "typed_grow.json");
    write_text(path, text);
    CHECK_MSG(diag_check_grow_json(path, &cfg) == 0, "%s", up_last_error());
    struct {
        const char *text, *expect;
    } cases[] = {
        {"{\"layers\": {\"layer\": 1}}", "field layers: is an object; expected an array"},
        {"{\"experts_before\": \"8\", \"layers\": [{\"layer\": 1, \"source\": %s}]}", "field experts_before: is a string; expected an integer"},
        {"{\"experts_before\": 7.5, \"layers\": [{\"layer\": 1, \"source\": %s}]}", "field experts_before: is 7.5; expected an integer"},
        {"{\"layers\": [3]}", "field layers[0]: is a number; expected an object"},
        {"{\"layers\": [{\"layer\": \"1\", \"source\": %s}]}", "field layers[0].layer: is a string; expected a number"},
        {"{\"layers\": [{\"layer\": 1, \"source\": {\"0\": 1}}]}", "field layers[0].source: is an object; expected an array"},
        {"{\"layers\": [{\"layer\": 1, \"source\": [0,1,2,\"3\",4,5,6,7,0,1,2,3,4,5,6,7]}]}", "field layers[0].source[3]: is a string; expected a number"},
        {"{\"layers\": [{\"layer\": 1, \"source\": [0,1,2,null,4,5,6,7,0,1,2,3,4,5,6,7]}]}", "field layers[0].source[3]: is null; expected a number"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        snprintf(text, sizeof text, cases[i].text, ok_source);
        write_text(path, text);
        up_clear_error();
        CHECK(diag_check_grow_json(path, &cfg) == -1);
        char want[512];
        snprintf(want, sizeof want, "%s: %s", path, cases[i].expect);
        CHECK_MSG(strcmp(up_last_error(), want) == 0, "case %zu: '%s', expected '%s'", i, up_last_error(), want);
    }
    free(path);
}

TEST(diag_print_reads_its_result_by_the_json_rule) {
    /* a well-formed result prints; a malformed one is an error naming the field, not a guess */
    cJSON *d = cJSON_Parse("{\"layers\": [{\"layer\": 1, \"n_experts\": 4, \"groups\": [{\"source\": 0, \"members\": [0, 2],"
                           " \"pairwise_cosine\": [0.5]}, {\"source\": 1, \"members\": [1]}], \"replica_cosine_mean\": null}]}");
    char *out = path_join(test_tmpdir(), "print.txt");
    FILE *f = fopen(out, "w");
    CHECK(f && diag_print(d, f) == 0);
    if (f) fclose(f);
    char *text = NULL;
    CHECK(read_file(out, &text, NULL) == 0);
    CHECK(text && strstr(text, "probe: none") && strstr(text, "layer 1: 4 experts in 2 groups (1 with replicas)") &&
          strstr(text, "replica cosine: n/a") && strstr(text, "  group 0: members 0 2; cos 0.5000\n"));
    free(text);
    cJSON_Delete(d);
    d = cJSON_Parse("{\"layers\": [{\"layer\": \"one\", \"n_experts\": 4, \"groups\": []}]}");
    f = fopen(out, "w");
    up_clear_error();
    CHECK(f && diag_print(d, f) == -1 && strstr(up_last_error(), "field layer: is a string; expected an integer"));
    if (f) fclose(f);
    cJSON_Delete(d);
    free(out);
}
