/* io/run_dir: checkpoint names and listing, metrics.jsonl's last step and truncation */
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "io/run_dir.h"
#include "test.h"
#include "util.h"

static void touch_dir(const char *run, const char *name, int with_state) {
    char *p = path_join(run, name);
    CHECK(mkdir_p(p) == 0);
    if (with_state) {
        char *t = path_join(p, CKPT_TRAINING_DIR), *f = path_join(t, "trainer.json");
        CHECK(mkdir_p(t) == 0 && atomic_write_file(f, "{}", 2) == 0);
        free(t), free(f);
    }
    free(p);
}

TEST(run_dir_checkpoints_and_metrics) {
    const char *run = test_tmpdir();
    char *c = run_dir_checkpoint(run, 42);
    CHECK(strstr(c, "/ckpt_000042") && !strcmp(strstr(c, "/ckpt_"), "/ckpt_000042"));
    free(c);
    int step = -1;
    CHECK(run_dir_is_checkpoint("ckpt_000042", &step) && step == 42);
    CHECK(run_dir_is_checkpoint("ckpt_1234567", &step) && step == 1234567); /* past six digits */
    CHECK(!run_dir_is_checkpoint("ckpt_12x", &step) && !run_dir_is_checkpoint("ckpt_", &step) &&
          !run_dir_is_checkpoint("final", &step) && !run_dir_is_checkpoint("ckpt_000042.tmp.77", &step));
    /* 70 checkpoints (more than the 62 an earlier fixed array held), out of order, one without state */
    for (int s = 70; s >= 1; s--) {
        char name[32];
        snprintf(name, sizeof name, "ckpt_%06d", s * 10);
        touch_dir(run, name, s != 35);
    }
    touch_dir(run, "ckpt_000005.tmp.123", 1);
    touch_dir(run, "final", 1);
    int *steps, n;
    run_dir_list_checkpoints(run, 0, &steps, &n);
    CHECK(n == 70);
    for (int i = 0; i < n; i++) CHECK_MSG(steps[i] == 10 * (i + 1), "steps[%d] = %d", i, steps[i]);
    free(steps);
    run_dir_list_checkpoints(run, 1, &steps, &n);
    CHECK(n == 69 && steps[n - 1] == 700);
    for (int i = 0; i < n; i++) CHECK(steps[i] != 350);
    free(steps);
    char *none = path_join(run, "absent");
    run_dir_list_checkpoints(none, 0, &steps, &n);
    CHECK(n == 0 && steps == NULL && run_dir_metrics_last_step(none) == 0);
    free(none);
    /* metrics: the last step; truncation drops later steps and a torn last line, keeps the rest */
    char *m = run_dir_metrics(run);
    const char *text = "{\"step\": 1, \"loss\": 3.5}\n{\"step\": 2, \"loss\": null, \"skipped\": true}\n"
                       "{\"step\": 3, \"loss\": 3.1}\n{\"step\": 4, \"lo";
    CHECK(atomic_write_file(m, text, strlen(text)) == 0);
    CHECK(run_dir_metrics_last_step(run) == 3);
    CHECK(run_dir_metrics_truncate(run, 2) == 0);
    char *back;
    size_t len;
    CHECK(read_file(m, &back, &len) == 0);
    CHECK(len == strlen("{\"step\": 1, \"loss\": 3.5}\n{\"step\": 2, \"loss\": null, \"skipped\": true}\n") &&
          !memcmp(back, text, len));
    free(back);
    CHECK(run_dir_metrics_last_step(run) == 2);
    long s2;
    CHECK(run_dir_metrics_step("{\"step\": 7}", &s2) && s2 == 7 && !run_dir_metrics_step("{\"loss\": 1}", &s2) &&
          !run_dir_metrics_step("{\"step\": 1.5}", &s2) && !run_dir_metrics_step("{\"step\": 8", &s2));
    free(m);
}
