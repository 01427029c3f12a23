/* Hardening tests: training never silently continues on garbage. A non-finite loss, gradient
 * norm or weight stops the run with one error line naming the step, and no checkpoint of the
 * bad state is written (no final/, no periodic checkpoint after it); the checkpoints written
 * before it stay and load with finite weights. */
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "io/checkpoint.h"
#include "model.h"
#include "test.h"
#include "train.h"
#include "util.h"

/* Runs training into DIR/<name>; returns train_run's status, the error in err. */
static int train_into(const char *name, const ModelConfig *mc, const TrainConfig *tc, const char *data,
                      const char *init, char *err, size_t err_cap) {
    char *out = path_join(test_tmpdir(), name);
    TrainOptions o = {.data_dir = data, .out_dir = out, .init = init, .quiet = 1, .keep_checkpoints = 100};
    TrainResult r;
    up_clear_error();
    int rc = train_run(mc, tc, &o, &r);
    snprintf(err, err_cap, "%s", rc ? up_last_error() : "");
    free(r.losses);
    free(out);
    return rc;
}

/* Counts DIR/<name>/ckpt_* and checks that every one loads with finite weights; final/ must
 * not exist. Returns the number of periodic checkpoints. */
static int check_no_bad_checkpoint(const char *name) {
    char *out = path_join(test_tmpdir(), name), *final = path_join(out, "final");
    CHECK_MSG(!path_exists(final), "%s exists: the run that hit a non-finite value saved a final checkpoint", final);
    int n = 0;
    DIR *d = opendir(out);
    CHECK(d != NULL);
    for (struct dirent *e; d && (e = readdir(d));) {
        CHECK_MSG(strstr(e->d_name, ".tmp.") == NULL, "temporary entry %s left in %s", e->d_name, out);
        if (strncmp(e->d_name, "ckpt_", 5) != 0) continue;
        n++;
        char *ck = path_join(out, e->d_name);
        Model m;
        if (checkpoint_load_model(ck, &m, 1, NULL) == 0) {
            double weights = m.be->sum_squares(m.param_mem, m.n_floats);
            double moments = m.be->sum_squares(m.adam_m, m.n_floats) + m.be->sum_squares(m.adam_v, m.n_floats);
            CHECK_MSG(isfinite(weights) && isfinite(moments), "%s holds non-finite weights or optimizer state", ck);
            model_free(&m);
        } else {
            CHECK_MSG(0, "%s does not load: %s", ck, up_last_error());
        }
        free(ck);
    }
    if (d) closedir(d);
    free(final);
    free(out);
    return n;
}

TEST(nan_guard_diverging_lr_stops_at_non_finite_gradient) {
    char *data = fixture_data_dir();
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    tc.lr = 1e9f, tc.min_lr = 0, tc.warmup_steps = 0, tc.save_every = 1, tc.eval_every = 0;
    char err[1024];
    CHECK(train_into("lr1e9", &mc, &tc, data, NULL, err, sizeof err) == -1);
    /* the first update (lr 1e9) leaves finite but huge weights; the next backward overflows */
    CHECK_MSG(strstr(err, "gradient norm is") && strstr(err, "expected a finite gradient") && strstr(err, "step "),
              "error: %s", err);
    int n = check_no_bad_checkpoint("lr1e9");
    CHECK_MSG(n >= 1 && n < tc.steps, "%d periodic checkpoints; expected the good ones before the failing step", n);
    free(data);
}

TEST(nan_guard_update_making_weights_non_finite_saves_nothing) {
    char *data = fixture_data_dir();
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    /* lr / (1 - beta1) overflows float: the very first update writes inf/NaN into the weights
     * while the gradient (of the initial weights) is finite */
    tc.lr = 1e38f, tc.min_lr = 0, tc.warmup_steps = 0, tc.schedule = SCHED_CONSTANT, tc.save_every = 1;
    char err[1024];
    CHECK(train_into("lr1e38", &mc, &tc, data, NULL, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "step 0: the update made a weight non-finite") && strstr(err, "expected"), "error: %s", err);
    CHECK(check_no_bad_checkpoint("lr1e38") == 0);
    free(data);
}

TEST(nan_guard_init_from_nan_checkpoint_stops_at_step_0) {
    char *data = fixture_data_dir();
    ModelConfig mc;
    TrainConfig tc;
    fixture_small_run(&mc, &tc);
    tc.steps = 2, tc.save_every = 0;
    char *good = fixture_trained_checkpoint("good", &mc, &tc, data);
    /* corrupt one weight of the checkpoint to NaN (a bit flip on disk, a bad grow) */
    Model m;
    CHECK(checkpoint_load_model(good, &m, 1, NULL) == 0);
    float nan_value = NAN;
    int q = model_find_param(&m, "model.layers.0.self_attn.q_proj.weight");
    CHECK(q >= 0);
    if (q >= 0) m.be->upload(model_param(&m, q) + 3, &nan_value, sizeof nan_value);
    char *bad = path_join(test_tmpdir(), "nan_ckpt");
    CHECK(checkpoint_save(bad, &m, NULL, 1) == 0);
    model_free(&m);

    tc.steps = 4, tc.save_every = 1;
    char err[1024];
    CHECK(train_into("from_nan", &mc, &tc, data, bad, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "step 0: loss is") && strstr(err, "expected a finite loss"), "error: %s", err);
    CHECK(check_no_bad_checkpoint("from_nan") == 0);
    free(bad);
    free(good);
    free(data);
}
