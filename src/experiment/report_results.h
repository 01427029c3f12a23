/* report_results.h - results.json as the report reads it (docs/results-schema.md): loading,
 * field access, the order and colors of arms and sweeps, and how values print. Internal to
 * the report (report.c, report_tables.c, report_curves.c, report_figures.c, report_csv.c);
 * the public API is report.h.
 *
 * Reading rule: the report shows what a file has, read with util/json.h. Every field is
 * optional except the "runs" array: an absent or null field (or list element) reads as "no
 * value" (NAN for numbers, NULL otherwise) and prints as DASH, or leaves its plot out. A field
 * of the wrong type is json.h's error: the report does not stop for it but shows the value
 * as absent and lists the error under "Problems" (R->problems). Items of a list of records
 * that are not objects read as empty records.
 * Ownership: a Results owns its parsed tree and the problem list; strings and objects returned
 * by the accessors point into the tree and live until results_free. */
#ifndef UPCYCLE_REPORT_RESULTS_H
#define UPCYCLE_REPORT_RESULTS_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "util/strbuf.h"

#define DASH "\xe2\x80\x94" /* "—": a value that is absent */
#define PM "\xc2\xb1"       /* "±" */

typedef struct {
    const char *path; /* the results.json as given: messages and the HTML header name it */
    cJSON *root;
    Strbuf problems;  /* "<file>: field <name>: ...; expected ...\n" per malformed field met, once each */
    int n_problems;
} Results;

/* 0, or -1 with up_error naming the file (unreadable, invalid JSON, not an object, no
 * "runs" array) */
int results_load(Results *R, const char *path);
void results_free(Results *R);

/* ---- fields (obj may be NULL: an absent parent has no fields) ---- */
double res_num(Results *R, const cJSON *obj, const char *key);            /* NAN: no value */
const char *res_str(Results *R, const cJSON *obj, const char *key);       /* NULL: no value */
const cJSON *res_obj(Results *R, const cJSON *obj, const char *key);      /* NULL: no object */
const cJSON *res_arr(Results *R, const cJSON *obj, const char *key);      /* NULL: no array */
int res_bool(Results *R, const cJSON *obj, const char *key, int dflt);    /* dflt: no value */
int res_has(const cJSON *obj, const char *key);                           /* present, null included */
/* element i of an array read with res_arr (name: its key, for messages); NAN / NULL past the end */
double res_elem_num(Results *R, const cJSON *arr, const char *name, int i);
const char *res_elem_str(Results *R, const cJSON *arr, const char *name, int i);
const cJSON *res_elem_arr(Results *R, const cJSON *arr, const char *name, int i);

int run_done(Results *R, const cJSON *run); /* not "status": "failed" */
const char *str_or(const char *s, const char *dflt);

/* ---- arms: the order of tables and legends, one color each in every plot ---- */
#define N_ARMS 6
extern const char *const ARM_ORDER[N_ARMS];
extern const char *const ARM_COLOR[N_ARMS];
int arm_rank(const char *arm); /* index in ARM_ORDER; N_ARMS for others and NULL */
const char *arm_color(const char *arm);
/* categorical colors for layers / labels (distinct from the arm colors) */
#define N_CAT 8
extern const char *const CAT_COLOR[N_CAT];

/* ---- sweeps ---- */
typedef struct {
    const char *name[64];
    int n;
} SweepList;
/* sweeps present in comparisons or runs: known ones (SWEEPS, experiment.h) in their report_order,
 * then others in the order first seen */
SweepList collect_sweeps(Results *R);
int count_in_sweep(Results *R, const cJSON *arr, const char *sweep); /* items whose "sweep" is sweep */
const char *sweep_title(const char *sweep); /* SWEEPS[].description; "other sweep" when unknown */

/* ---- how values print ---- */
typedef struct {
    char s[96];
} Num;
Num fmt_fixed(double v, int dec); /* fixed decimals, never "-0.0"; DASH when not finite */
Num fmt_sig(double v, int sig);   /* %.*g; DASH when not finite */
Num fmt_csv_num(double v);        /* integers without decimals, else %.10g; "" when not finite */
Num fmt_thousands(double v);      /* 1234567 -> "1,234,567" */
/* the finite numbers of an array joined with sep ("8 → 16"); "" when there are none */
void join_nums(Results *R, char *out, size_t n, const cJSON *arr, const char *name, const char *sep);

#endif
