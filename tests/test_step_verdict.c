/* train_step_verdict and the spike guard's running mean: pure functions, tested without a
 * training run (the training-run tests of the same guards are in test_hardening.c). */
#include <math.h>
#include <string.h>

#include "config.h"
#include "test.h"
#include "train.h"

static TrainConfig guards(int skip_nonfinite, float spike_factor, int max_skips) {
    TrainConfig tc;
    train_config_defaults(&tc);
    tc.skip_nonfinite = skip_nonfinite, tc.spike_factor = spike_factor, tc.max_skips = max_skips;
    return tc;
}

static TrainerState state(double loss_mean, int mean_steps, int skipped) {
    TrainerState st;
    memset(&st, 0, sizeof st);
    st.loss_mean = loss_mean, st.loss_mean_steps = mean_steps, st.skipped_steps = skipped;
    return st;
}

#define EXPECT(v, c, a) CHECK_MSG((v).cause == (c) && (v).action == (a), "verdict (%d, %d); expected (%d, %d)", (v).cause, (v).action, c, a)

TEST(step_verdict_nonfinite_loss_and_gradient) {
    TrainConfig stop = guards(0, 0, 3), skip = guards(1, 0, 3);
    TrainerState st = state(0, 0, 0);
    EXPECT(train_step_verdict(2.0, 1.0, &stop, &st), STEP_FINE, STEP_APPLY);
    EXPECT(train_step_verdict(NAN, 1.0, &stop, &st), STEP_NONFINITE_LOSS, STEP_STOP);
    EXPECT(train_step_verdict(INFINITY, NAN, &stop, &st), STEP_NONFINITE_LOSS, STEP_STOP); /* the loss decides first */
    EXPECT(train_step_verdict(2.0, INFINITY, &stop, &st), STEP_NONFINITE_GRAD, STEP_STOP);
    EXPECT(train_step_verdict(NAN, 1.0, &skip, &st), STEP_NONFINITE_LOSS, STEP_SKIP);
    EXPECT(train_step_verdict(2.0, NAN, &skip, &st), STEP_NONFINITE_GRAD, STEP_SKIP);
    /* the skip budget: max_skips skipped already stops the run */
    TrainerState spent = state(0, 0, 3), left = state(0, 0, 2);
    EXPECT(train_step_verdict(NAN, 1.0, &skip, &spent), STEP_NONFINITE_LOSS, STEP_STOP);
    EXPECT(train_step_verdict(NAN, 1.0, &skip, &left), STEP_NONFINITE_LOSS, STEP_SKIP);
    TrainConfig none = guards(1, 0, 0);
    EXPECT(train_step_verdict(NAN, 1.0, &none, &st), STEP_NONFINITE_LOSS, STEP_STOP);
}

TEST(step_verdict_loss_spike) {
    TrainConfig tc = guards(0, 3.0f, 2);
    /* active once the running mean has SPIKE_MIN_STEPS steps */
    TrainerState young = state(1.0, SPIKE_MIN_STEPS - 1, 0), ready = state(1.0, SPIKE_MIN_STEPS, 0);
    EXPECT(train_step_verdict(3.5, 1.0, &tc, &young), STEP_FINE, STEP_APPLY);
    EXPECT(train_step_verdict(3.5, 1.0, &tc, &ready), STEP_LOSS_SPIKE, STEP_SKIP); /* skipped without skip_nonfinite */
    EXPECT(train_step_verdict(3.0, 1.0, &tc, &ready), STEP_FINE, STEP_APPLY);      /* not above the factor */
    TrainerState spent = state(1.0, SPIKE_MIN_STEPS, 2);
    EXPECT(train_step_verdict(3.5, 1.0, &tc, &spent), STEP_LOSS_SPIKE, STEP_STOP);
    TrainConfig off = guards(0, 0, 2);
    EXPECT(train_step_verdict(100.0, 1.0, &off, &ready), STEP_FINE, STEP_APPLY);
    /* a non-finite gradient outranks a spike */
    EXPECT(train_step_verdict(3.5, NAN, &tc, &ready), STEP_NONFINITE_GRAD, STEP_STOP);
}

TEST(loss_mean_exact_then_ema) {
    TrainerState st = state(0, 0, 0);
    double sum = 0;
    for (int i = 1; i < SPIKE_EMA_STEPS; i++) { /* the exact mean while fewer than SPIKE_EMA_STEPS steps */
        train_loss_mean_update(&st, i);
        sum += i;
        CHECK_CLOSE(st.loss_mean, sum / i, 1e-12);
        CHECK(st.loss_mean_steps == i);
    }
    double before = st.loss_mean;
    train_loss_mean_update(&st, 1000.0);
    CHECK_CLOSE(st.loss_mean, before + (1000.0 - before) / SPIKE_EMA_STEPS, 1e-12);
    before = st.loss_mean;
    train_loss_mean_update(&st, 0.0);
    CHECK_CLOSE(st.loss_mean, before * (1.0 - 1.0 / SPIKE_EMA_STEPS), 1e-12);
}
