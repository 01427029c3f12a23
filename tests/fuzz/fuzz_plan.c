/* fuzz_plan.c - libFuzzer harness for experiment plan files (src/experiment/plan.c).
 * The input is a `upcycle experiment --plan FILE`. A plan that loads has at least one run,
 * each with 1..3 stages of positive length; it is then regenerated for another seed count
 * (plan_set_seeds, as --seeds does). */
#include "experiment/experiment.h"
#include "fuzz_common.h"

static void check_runs(const Plan *p) {
    if (p->n_runs < 1) abort();
    for (int i = 0; i < p->n_runs; i++) {
        const Run *r = &p->runs[i];
        if (r->n_stages < 1 || r->n_stages > 3) abort();
        for (int s = 0; s < r->n_stages; s++)
            if (r->stages[s].steps < 1) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[128];
    fuzz_path(path, sizeof path, "plan", ".json");
    fuzz_write_file(path, data, size);
    Plan p;
    if (plan_load_json(&p, path) == 0) {
        check_runs(&p);
        if (plan_set_seeds(&p, p.seeds == 1 ? 2 : 1) == 0) check_runs(&p);
        plan_free(&p);
    }
    unlink(path);
    return 0;
}
