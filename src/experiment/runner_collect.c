/* runner_collect.c - a run's stages read back: final losses, curves, loads, diagnostics. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <omp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "experiment/cost.h"
#include "experiment/diag.h"
#include "experiment/experiment.h"
#include "experiment/report.h"
#include "experiment/stats.h"
#include "io/checkpoint.h"
#include "io/run_dir.h"
#include "model.h"
#include "train.h"
#include "util.h"
#include "util/json.h"
#include "experiment/runner.h"

/* one line of metrics.jsonl (train.c writes them): the step, its loss (null on a skipped
 * step), the validation loss at evaluation steps and the per-layer load imbalance */
static int metrics_line(const char *origin, const cJSON *j, int *step, double *loss, double *val, const cJSON **imb) {
    return json_get_int(origin, j, "step", step) || json_get_number_or_null(origin, j, "loss", loss) ||
           json_opt_number(origin, j, "val_loss", NAN, val) || json_opt_array(origin, j, "load_imbalance", imb);
}

/* metrics.jsonl of one stage appended to the curve/load arrays, steps offset by `offset`;
 * a line that is not JSON (cut short by a crash) is skipped, a malformed field is an error */
static int append_curve(const char *stage_path, int offset, double *flops_acc, double *seconds_acc, double flops_per_step,
                        double sps, int tokens_per_step, cJSON *curve, cJSON *load_steps, cJSON *load_rows) {
    char *path = run_dir_metrics(stage_path), *text;
    size_t n;
    if (read_file(path, &text, &n)) {
        free(path);
        return 0;
    }
    int last_step = 0, line_no = 0, rc = 0;
    for (char *line = strtok(text, "\n"); line && !rc; line = strtok(NULL, "\n")) {
        char origin[4200];
        snprintf(origin, sizeof origin, "%s: line %d", path, ++line_no);
        cJSON *j = cJSON_Parse(line);
        if (!cJSON_IsObject(j)) {
            cJSON_Delete(j);
            continue;
        }
        int step;
        double loss, val;
        const cJSON *imb;
        if ((rc = metrics_line(origin, j, &step, &loss, &val, &imb)) || step <= last_step) {
            cJSON_Delete(j); /* duplicate lines after a resume: keep the first pass */
            continue;
        }
        last_step = step;
        int global = offset + step;
        if (!isnan(val) || step % 10 == 0) {
            cJSON *pt = cJSON_CreateObject();
            cJSON_AddNumberToObject(pt, "step", global);
            cJSON_AddNumberToObject(pt, "tokens", (double)global * tokens_per_step);
            cJSON_AddNumberToObject(pt, "flops", *flops_acc + flops_per_step * step);
            cJSON_AddNumberToObject(pt, "seconds", *seconds_acc + sps * step);
            cJSON_AddNumberToObject(pt, "loss", loss);
            if (isnan(val)) cJSON_AddNullToObject(pt, "val_loss");
            else cJSON_AddNumberToObject(pt, "val_loss", val);
            cJSON_AddItemToArray(curve, pt);
        }
        if (step % 5 == 0 && cJSON_GetArraySize(imb) > 0) {
            cJSON_AddItemToArray(load_steps, cJSON_CreateNumber(global));
            for (int layer = 0; layer < cJSON_GetArraySize(imb) && !rc; layer++) {
                double v;
                if ((rc = json_elem_number(origin, imb, "load_imbalance", layer, &v))) break;
                cJSON *row = cJSON_GetArrayItem(load_rows, layer);
                if (!row) cJSON_AddItemToArray(load_rows, row = cJSON_CreateArray());
                cJSON_AddItemToArray(row, cJSON_CreateNumber(v));
            }
        }
        cJSON_Delete(j);
    }
    free(text), free(path);
    *flops_acc += flops_per_step * last_step;
    *seconds_acc += sps * last_step;
    return rc;
}

/* one layer of a diag_checkpoint result as a results.json "diag" entry (diag.h has the format;
 * the four statistics are null where undefined, routing ones absent without a probe) */
static int diag_entry(const char *origin, const cJSON *layer, int step, cJSON *out) {
    static const char *keys[] = {"replica_cosine_mean", "cosine_to_source_mean", "jaccard_mean", "routing_entropy"};
    int l;
    double v[4];
    const cJSON *dead;
    if (json_get_int(origin, layer, "layer", &l) || json_opt_array(origin, layer, "dead_experts", &dead)) return -1;
    for (int k = 0; k < 4; k++)
        if (json_opt_number(origin, layer, keys[k], NAN, &v[k])) return -1;
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "step", step);
    cJSON_AddNumberToObject(e, "layer", l);
    for (int k = 0; k < 4; k++) {
        if (isnan(v[k])) cJSON_AddNullToObject(e, keys[k]);
        else cJSON_AddNumberToObject(e, keys[k], v[k]);
    }
    cJSON_AddNumberToObject(e, "dead_experts", cJSON_GetArraySize(dead));
    cJSON_AddItemToArray(out, e);
    return 0;
}

/* diagnostics at the grown checkpoint, every periodic checkpoint and the final one */
static int append_diag(const ExperimentOptions *opt, const char *stage_path, const char *prev_final, int offset, cJSON *out) {
    char *grown = path_join(stage_path, "grown"), *grow_json = path_join(grown, "grow.json");
    if (!path_exists(grow_json)) {
        free(grown), free(grow_json);
        return 0;
    }
    int rc = 0;
    /* the grown checkpoint (step 0), every periodic one, then the final one (-1) */
    int *ckpts, n_ckpts;
    run_dir_list_checkpoints(stage_path, 0, &ckpts, &n_ckpts);
    int n = n_ckpts + 2, *steps = xmalloc(sizeof(int) * (size_t)n);
    steps[0] = 0, steps[n - 1] = -1;
    if (n_ckpts) memcpy(steps + 1, ckpts, sizeof(int) * (size_t)n_ckpts);
    free(ckpts);
    for (int i = 0; i < n && !rc; i++) {
        char *ck;
        if (steps[i] == 0) ck = xstrdup(grown);
        else if (steps[i] < 0) ck = path_join(stage_path, RUN_FINAL_NAME);
        else ck = run_dir_checkpoint(stage_path, steps[i]);
        cJSON *dj = diag_checkpoint(ck, grow_json, prev_final, opt->data_dir, opt->probe_batches);
        TrainerState st;
        int step = steps[i] >= 0 ? steps[i] : (trainer_state_load(ck, &st) == 0 ? st.step : 0);
        char origin[600];
        snprintf(origin, sizeof origin, "diagnostics of %s", ck);
        const cJSON *layers = NULL, *layer;
        if (dj) rc = json_get_array(origin, dj, "layers", &layers); /* a checkpoint it cannot read has no entry */
        for (int l = 0; l < cJSON_GetArraySize(layers) && !rc; l++)
            rc = json_elem_object(origin, layers, "layers", l, &layer) || diag_entry(origin, layer, offset + step, out);
        cJSON_Delete(dj);
        free(ck);
    }
    free(steps), free(grown), free(grow_json);
    return rc ? -1 : 0;
}

/* a stage.json as write_stage_json writes it (fields older versions lack are optional) */
typedef struct {
    double sps, flops, final_val, final_se, final_tokens, before, after;
} StageJson;

static int read_stage_json(const char *path, StageJson *sj) {
    cJSON *j = json_load_file(path, "a stage.json written by `upcycle experiment`");
    if (!j) return -1;
    int rc = json_get_number_or_null(path, j, "seconds_per_step", &sj->sps) || json_get_number_or_null(path, j, "flops", &sj->flops) ||
             json_get_number_or_null(path, j, "final_val_loss", &sj->final_val) ||
             json_opt_number(path, j, "final_val_stderr", NAN, &sj->final_se) ||
             json_opt_number(path, j, "final_val_tokens", NAN, &sj->final_tokens) ||
             json_opt_number(path, j, "loss_before_growth", NAN, &sj->before) || json_opt_number(path, j, "loss_after_growth", NAN, &sj->after);
    cJSON_Delete(j);
    return rc ? -1 : 0;
}

/* one run's entry of results.json from its stages' files; a stage without stage.json makes a
 * failed run; NULL with up_error when a file the run has is malformed */
cJSON *collect_run(const Plan *p, const Run *r, const ExperimentOptions *opt, RunResult *rr) {
    memset(rr, 0, sizeof *rr);
    rr->run = r;
    rr->before = rr->after = NAN;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", r->id);
    cJSON_AddStringToObject(j, "sweep", r->sweep);
    cJSON_AddStringToObject(j, "arm", r->arm);
    cJSON_AddStringToObject(j, "label", r->label);
    if (isnan(r->x)) cJSON_AddNullToObject(j, "x");
    else cJSON_AddNumberToObject(j, "x", r->x);
    cJSON_AddNumberToObject(j, "seed", r->seed);
    cJSON *growth = cJSON_AddArrayToObject(j, "growth_steps"), *experts = cJSON_AddArrayToObject(j, "experts");
    cJSON *stages = cJSON_AddArrayToObject(j, "stages"), *curve = cJSON_CreateArray(), *diag = cJSON_CreateArray();
    cJSON *load = cJSON_CreateObject(), *load_steps = cJSON_CreateArray(), *load_rows = cJSON_CreateArray();
    int ok = 1, offset = 0, rc = 0;
    double flops_acc = 0, seconds_acc = 0, final_val = NAN;
    for (int k = 0; k < r->n_stages && !rc; k++) {
        const Stage *s = &r->stages[k];
        char *dir = stage_dir(opt, s), *path = path_join(dir, "stage.json");
        StageJson sj;
        if (!path_exists(path)) ok = 0;
        else rc = read_stage_json(path, &sj);
        free(path);
        if (!ok || rc) {
            free(dir);
            break;
        }
        if (k > 0) cJSON_AddItemToArray(growth, cJSON_CreateNumber(offset));
        cJSON_AddItemToArray(experts, cJSON_CreateNumber(s->experts));
        double sps = sj.sps, flops = sj.flops;
        rr->stage_sps[k] = sps, rr->stage_flops[k] = flops;
        cJSON *st = cJSON_CreateObject();
        cJSON_AddNumberToObject(st, "steps", s->steps);
        cJSON_AddNumberToObject(st, "experts", s->experts);
        cJSON_AddNumberToObject(st, "seconds", sps * s->steps);
        cJSON_AddNumberToObject(st, "seconds_per_step", sps);
        cJSON_AddNumberToObject(st, "flops", flops);
        cJSON_AddNumberToObject(st, "final_val_loss", sj.final_val);
        add_num_or_null(st, "final_val_stderr", sj.final_se);
        add_num_or_null(st, "final_val_tokens", sj.final_tokens);
        cJSON_AddItemToArray(stages, st);
        rr->final_se = sj.final_se, rr->final_tokens = sj.final_tokens;
        if (k == 1) rr->before = sj.before, rr->after = sj.after;
        final_val = sj.final_val;
        rc = append_curve(dir, offset, &flops_acc, &seconds_acc, flops / s->steps, sps,
                          p->train.batch_size * p->train.seq_len, curve, load_steps, load_rows);
        if (!rc && s->kind == STAGE_GROW && opt->probe_batches > 0) {
            char *prev = stage_dir(opt, &r->stages[k - 1]), *prev_final = path_join(prev, "final");
            rc = append_diag(opt, dir, prev_final, offset, diag);
            free(prev), free(prev_final);
        }
        offset += s->steps;
        rr->seconds += sps * s->steps, rr->flops += flops;
        free(dir);
    }
    if (rc) {
        cJSON_Delete(j), cJSON_Delete(curve), cJSON_Delete(diag), cJSON_Delete(load), cJSON_Delete(load_steps), cJSON_Delete(load_rows);
        return NULL;
    }
    rr->ok = ok, rr->final_val = final_val;
    cJSON_AddStringToObject(j, "status", ok ? "done" : "failed");
    cJSON_AddNumberToObject(j, "final_val_loss", ok ? final_val : 0);
    add_num_or_null(j, "final_val_stderr", ok ? rr->final_se : NAN);
    add_num_or_null(j, "final_val_tokens", ok ? rr->final_tokens : NAN);
    cJSON_AddNumberToObject(j, "total_seconds", rr->seconds);
    cJSON_AddNumberToObject(j, "total_flops", rr->flops);
    if (isnan(rr->before)) cJSON_AddNullToObject(j, "loss_before_growth"), cJSON_AddNullToObject(j, "loss_after_growth");
    else cJSON_AddNumberToObject(j, "loss_before_growth", rr->before), cJSON_AddNumberToObject(j, "loss_after_growth", rr->after);
    cJSON_AddItemToObject(j, "curve", curve);
    cJSON *layers = cJSON_AddArrayToObject(load, "layers");
    ModelConfig mc = stage_model(p, r, &r->stages[r->n_stages - 1]);
    for (int l = 0; l < mc.n_layers; l++)
        if (layer_is_moe(&mc, l)) cJSON_AddItemToArray(layers, cJSON_CreateNumber(l));
    cJSON_AddItemToObject(load, "steps", load_steps);
    cJSON_AddItemToObject(load, "imbalance", load_rows);
    cJSON_AddItemToObject(j, "load", load);
    cJSON_AddItemToObject(j, "diag", diag);
    return j;
}
