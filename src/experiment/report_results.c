/* report_results.c - see report_results.h. */
#include "experiment/report_results.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiment/experiment.h"
#include "util.h"
#include "util/json.h"

/* ------------------------------------------------------------------ loading */

int results_load(Results *R, const char *path) {
    memset(R, 0, sizeof *R);
    R->path = path;
    R->root = json_load_file(path, "a results.json as written by `upcycle experiment` (docs/results-schema.md)");
    if (!R->root) return -1;
    const cJSON *runs = NULL;
    if (json_opt_array(path, R->root, "runs", &runs) || !runs) {
        results_free(R);
        return up_error("%s: no \"runs\" array; expected a results.json with a \"runs\" list (docs/results-schema.md)", path);
    }
    return 0;
}

void results_free(Results *R) {
    cJSON_Delete(R->root);
    R->root = NULL;
    sb_free(&R->problems);
    R->n_problems = 0;
}

/* ------------------------------------------------------------------ fields */

#define MAX_PROBLEMS 20 /* listed; more are summed up in one line */

/* the getter's message becomes a line of R->problems (once), and the value reads as absent */
static void problem(Results *R) {
    const char *e = up_last_error();
    size_t n = strlen(e);
    for (const char *p = R->problems.s; p && *p; p = strchr(p, '\n') + 1)
        if (strncmp(p, e, n) == 0 && p[n] == '\n') {
            up_clear_error();
            return;
        }
    if (R->n_problems < MAX_PROBLEMS) sb_printf(&R->problems, "%s\n", e);
    else if (R->n_problems == MAX_PROBLEMS) sb_put(&R->problems, "(more fields of the wrong type are not listed)\n");
    if (R->n_problems <= MAX_PROBLEMS) R->n_problems++;
    up_clear_error();
}

double res_num(Results *R, const cJSON *obj, const char *key) {
    double v = NAN;
    if (json_opt_number(R->path, obj, key, NAN, &v)) problem(R), v = NAN;
    return v;
}

const char *res_str(Results *R, const cJSON *obj, const char *key) {
    const char *s = NULL;
    if (json_opt_string(R->path, obj, key, NULL, &s)) problem(R), s = NULL;
    return s;
}

const cJSON *res_obj(Results *R, const cJSON *obj, const char *key) {
    const cJSON *o = NULL;
    if (json_opt_object(R->path, obj, key, &o)) problem(R), o = NULL;
    return o;
}

const cJSON *res_arr(Results *R, const cJSON *obj, const char *key) {
    const cJSON *a = NULL;
    if (json_opt_array(R->path, obj, key, &a)) problem(R), a = NULL;
    return a;
}

int res_bool(Results *R, const cJSON *obj, const char *key, int dflt) {
    int b = dflt;
    if (json_opt_bool(R->path, obj, key, dflt, &b)) problem(R), b = dflt;
    return b;
}

int res_has(const cJSON *obj, const char *key) { return json_has(obj, key); }

/* elements past the end of a list, and null elements, are absent values, not problems */
static const cJSON *element(const cJSON *arr, int i) {
    const cJSON *it = cJSON_GetArrayItem(arr, i);
    return cJSON_IsNull(it) ? NULL : it;
}

double res_elem_num(Results *R, const cJSON *arr, const char *name, int i) {
    double v = NAN;
    if (element(arr, i) && json_elem_number(R->path, arr, name, i, &v)) problem(R), v = NAN;
    return v;
}

const char *res_elem_str(Results *R, const cJSON *arr, const char *name, int i) {
    const char *s = NULL;
    if (element(arr, i) && json_elem_string(R->path, arr, name, i, &s)) problem(R), s = NULL;
    return s;
}

const cJSON *res_elem_arr(Results *R, const cJSON *arr, const char *name, int i) {
    const cJSON *a = NULL;
    if (element(arr, i) && json_elem_array(R->path, arr, name, i, &a)) problem(R), a = NULL;
    return a;
}

int run_done(Results *R, const cJSON *run) {
    const char *st = res_str(R, run, "status");
    return !st || strcmp(st, "failed") != 0;
}

const char *str_or(const char *s, const char *dflt) { return s ? s : dflt; }

/* ------------------------------------------------------------------ arms */

const char *const ARM_ORDER[N_ARMS] = {"fixed-E", "upcycled", "fixed-mE", "sparse-upcycled", "random-big", "iterative"};
const char *const ARM_COLOR[N_ARMS] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#6b6b6b", "#9467bd"};
const char *const CAT_COLOR[N_CAT] = {"#17becf", "#e377c2", "#bcbd22", "#8c564b", "#393b79", "#ad494a", "#637939", "#7b4173"};

int arm_rank(const char *arm) {
    for (int i = 0; arm && i < N_ARMS; i++)
        if (strcmp(arm, ARM_ORDER[i]) == 0) return i;
    return N_ARMS;
}

const char *arm_color(const char *arm) {
    int r = arm_rank(arm);
    return r < N_ARMS ? ARM_COLOR[r] : "#8c564b";
}

/* ------------------------------------------------------------------ sweeps */

const char *sweep_title(const char *sw) {
    const SweepInfo *s = sweep_find(sw);
    return s ? s->description : "other sweep";
}

static void sweep_add(SweepList *l, const char *s) {
    if (!s) return;
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->name[i], s) == 0) return;
    if (l->n < 64) l->name[l->n++] = s;
}

SweepList collect_sweeps(Results *R) {
    SweepList seen = {0}, out = {0};
    const cJSON *it;
    cJSON_ArrayForEach(it, res_arr(R, R->root, "comparisons")) sweep_add(&seen, res_str(R, it, "sweep"));
    cJSON_ArrayForEach(it, res_arr(R, R->root, "runs")) sweep_add(&seen, res_str(R, it, "sweep"));
    for (int k = 0; k < N_SWEEPS; k++)
        for (int e = 0; e < N_SWEEPS; e++)
            if (SWEEPS[e].report_order == k)
                for (int i = 0; i < seen.n; i++)
                    if (strcmp(seen.name[i], SWEEPS[e].name) == 0) sweep_add(&out, seen.name[i]);
    for (int i = 0; i < seen.n; i++) sweep_add(&out, seen.name[i]);
    return out;
}

int count_in_sweep(Results *R, const cJSON *arr, const char *sweep) {
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        const char *s = res_str(R, it, "sweep");
        n += s && strcmp(s, sweep) == 0;
    }
    return n;
}

/* ------------------------------------------------------------------ number formatting */

Num fmt_fixed(double v, int dec) {
    Num n;
    if (!isfinite(v)) snprintf(n.s, sizeof n.s, "%s", DASH);
    else {
        snprintf(n.s, sizeof n.s, "%.*f", dec, v);
        if (strcmp(n.s, "-0") == 0 || (n.s[0] == '-' && strspn(n.s + 1, "0.") == strlen(n.s + 1)))
            memmove(n.s, n.s + 1, strlen(n.s)); /* no "-0.0" */
    }
    return n;
}

Num fmt_sig(double v, int sig) {
    Num n;
    if (!isfinite(v)) snprintf(n.s, sizeof n.s, "%s", DASH);
    else snprintf(n.s, sizeof n.s, "%.*g", sig, v);
    return n;
}

Num fmt_csv_num(double v) {
    Num n;
    if (!isfinite(v)) n.s[0] = 0;
    else if (v == floor(v) && fabs(v) < 1e15) snprintf(n.s, sizeof n.s, "%.0f", v);
    else snprintf(n.s, sizeof n.s, "%.10g", v);
    return n;
}

Num fmt_thousands(double v) {
    Num n;
    if (!isfinite(v) || fabs(v) >= 1e18) return fmt_sig(v, 4);
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.0f", fabs(v));
    size_t len = strlen(tmp), o = 0;
    if (v < 0) n.s[o++] = '-';
    for (size_t i = 0; i < len; i++) {
        if (i && (len - i) % 3 == 0) n.s[o++] = ',';
        n.s[o++] = tmp[i];
    }
    n.s[o] = 0;
    return n;
}

void join_nums(Results *R, char *out, size_t n, const cJSON *arr, const char *name, const char *sep) {
    out[0] = 0;
    size_t o = 0;
    int first = 1;
    for (int i = 0; i < cJSON_GetArraySize(arr); i++) {
        double v = res_elem_num(R, arr, name, i);
        if (!isfinite(v)) continue;
        int w = snprintf(out + o, n - o, "%s%s", first ? "" : sep, fmt_csv_num(v).s);
        if (w < 0 || (size_t)w >= n - o) break;
        o += (size_t)w;
        first = 0;
    }
}
