/* report_tables.c - see report_tables.h. A Table is a grid of copied strings: the builders
 * fill it from results.json, table_html / table_text render it. */
#include "experiment/report_tables.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* ------------------------------------------------------------------ a table of text cells */

typedef struct {
    int ncols, nrows, cap;
    const char *const *head;
    const char *align; /* text output: 'l' or 'r' per column (NULL: first left, others right) */
    char **cell; /* nrows * ncols */
    char **cls;  /* per cell, may be NULL */
    char **rowcls;
} Table;

static void table_init(Table *t, int ncols, const char *const *head) {
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
    t->head = head;
}

static void table_add(Table *t, char **cells, const char **cls, const char *rowcls) {
    if (t->nrows == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 16;
        t->cell = xrealloc(t->cell, sizeof(char *) * (size_t)t->cap * (size_t)t->ncols);
        t->cls = xrealloc(t->cls, sizeof(char *) * (size_t)t->cap * (size_t)t->ncols);
        t->rowcls = xrealloc(t->rowcls, sizeof(char *) * (size_t)t->cap);
    }
    for (int c = 0; c < t->ncols; c++) {
        t->cell[t->nrows * t->ncols + c] = xstrdup(cells[c] ? cells[c] : DASH);
        t->cls[t->nrows * t->ncols + c] = cls && cls[c] ? xstrdup(cls[c]) : NULL;
    }
    t->rowcls[t->nrows] = rowcls ? xstrdup(rowcls) : NULL;
    t->nrows++;
}

static void table_free(Table *t) {
    for (int i = 0; i < t->nrows * t->ncols; i++) free(t->cell[i]), free(t->cls[i]);
    for (int r = 0; r < t->nrows; r++) free(t->rowcls[r]);
    free(t->cell);
    free(t->cls);
    free(t->rowcls);
    memset(t, 0, sizeof *t);
}

static void table_html(Strbuf *b, const Table *t, const char *klass) {
    sb_printf(b, "<table class=\"%s\">\n<thead><tr>", klass);
    for (int c = 0; c < t->ncols; c++) {
        sb_put(b, "<th>");
        sb_put_escaped(b, t->head[c]);
        sb_put(b, "</th>");
    }
    sb_put(b, "</tr></thead>\n<tbody>\n");
    for (int r = 0; r < t->nrows; r++) {
        if (t->rowcls[r]) {
            sb_put(b, "<tr class=\"");
            sb_put_escaped(b, t->rowcls[r]);
            sb_put(b, "\">");
        } else sb_put(b, "<tr>");
        for (int c = 0; c < t->ncols; c++) {
            const char *cl = t->cls[r * t->ncols + c];
            if (cl) {
                sb_put(b, "<td class=\"");
                sb_put_escaped(b, cl);
                sb_put(b, "\">");
            } else sb_put(b, "<td>");
            sb_put_escaped(b, t->cell[r * t->ncols + c]);
            sb_put(b, "</td>");
        }
        sb_put(b, "</tr>\n");
    }
    sb_put(b, "</tbody></table>\n");
}

static void pad(Strbuf *b, int n) {
    for (int i = 0; i < n; i++) sb_putn(b, " ", 1);
}

/* columns separated by " | ", first column left-aligned, the others right-aligned */
static void table_text(Strbuf *b, const Table *t) {
    int w[32] = {0};
    int nc = t->ncols < 32 ? t->ncols : 32;
    for (int c = 0; c < nc; c++) {
        w[c] = utf8_width(t->head[c]);
        for (int r = 0; r < t->nrows; r++) {
            int x = utf8_width(t->cell[r * t->ncols + c]);
            if (x > w[c]) w[c] = x;
        }
    }
    for (int r = -1; r < t->nrows; r++) {
        for (int c = 0; c < nc; c++) {
            const char *s = r < 0 ? t->head[c] : t->cell[r * t->ncols + c];
            int gap = w[c] - utf8_width(s);
            if (c) sb_put(b, " | ");
            int left = t->align && c < (int)strlen(t->align) ? t->align[c] == 'l' : c == 0;
            if (left) {
                sb_put(b, s);
                if (c < nc - 1) pad(b, gap);
            } else {
                pad(b, gap);
                sb_put(b, s);
            }
        }
        sb_put(b, "\n");
        if (r < 0) {
            for (int c = 0; c < nc; c++) {
                if (c) sb_put(b, "-+-");
                for (int i = 0; i < w[c]; i++) sb_putn(b, "-", 1);
            }
            sb_put(b, "\n");
        }
    }
}

/* ------------------------------------------------------------------ cells */

/* an array of exactly two finite numbers (a confidence interval) */
static int interval(Results *R, const cJSON *arr, const char *name, double *lo, double *hi) {
    if (cJSON_GetArraySize(arr) != 2) return 0;
    *lo = res_elem_num(R, arr, name, 0), *hi = res_elem_num(R, arr, name, 1);
    return isfinite(*lo) && isfinite(*hi);
}

void stat_cell(Results *R, char *out, size_t n, const cJSON *st) {
    double m = res_num(R, st, "mean");
    if (!isfinite(m)) {
        snprintf(out, n, "%s", DASH);
        return;
    }
    double s = res_num(R, st, "std"), k = res_num(R, st, "n");
    char ks[32] = "";
    if (isfinite(k)) snprintf(ks, sizeof ks, " (%.0f)", k);
    if (isfinite(s)) snprintf(out, n, "%s " PM " %s%s", fmt_fixed(m, 4).s, fmt_fixed(s, 4).s, ks);
    else snprintf(out, n, "%s%s", fmt_fixed(m, 4).s, ks);
}

int eff_cell(Results *R, char *out, size_t n, const cJSON *eff) {
    if (!eff) {
        snprintf(out, n, "%s", DASH);
        return 0;
    }
    double m = res_num(R, eff, "mean");
    if (!res_bool(R, eff, "defined", 1) || !isfinite(m)) {
        const char *why = res_str(R, eff, "reason");
        snprintf(out, n, "%s", why ? why : "undefined");
        return 1;
    }
    double lo, hi;
    if (interval(R, res_arr(R, eff, "ci95"), "ci95", &lo, &hi))
        snprintf(out, n, "%s [%s, %s]", fmt_fixed(m, 1).s, fmt_fixed(lo, 1).s, fmt_fixed(hi, 1).s);
    else snprintf(out, n, "%s", fmt_fixed(m, 1).s);
    return 0;
}

static const char *const CMP_HEAD[] = {"Label", "Fixed-E", "Upcycled", "Fixed-mE", "E - mE per seed", "E - mE paired 95% CI",
                                       "Eff. % (paired rule)", "unpaired rule"};
static const char *const SEED_HEAD[] = {"Label", "Seed", "Fixed-E", "Upcycled", "Fixed-mE", "E - mE", "E - Up", "eval s.e. E / Up / mE"};
static const char *const COMPUTE_HEAD[] = {"Label",        "t_E (s/step)", "t_mE (s/step)",       "Upcycled (s)",
                                           "Fixed-mE (s)", "Saving %",     "Sunk-cost saving %", "FLOPs saving %",
                                           "Modeled saving % (t_mE/t_E)"};
static const char *const RUNS_HEAD[] = {"Run", "Arm", "Label", "x", "Seed", "Status", "Experts", "Growth step(s)",
                                        "Final val loss", "Seconds", "FLOPs"};

/* "+0.0270 / +0.0180 / -0.0310" */
static void per_seed_cell(Results *R, char *out, size_t n, const cJSON *values) {
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < cJSON_GetArraySize(values); i++) {
        double v = res_elem_num(R, values, "values", i);
        if (!isfinite(v)) continue;
        int w = snprintf(out + o, n - o, "%s%+.4f", o ? " / " : "", v);
        if (w < 0 || (size_t)w >= n - o) break;
        o += (size_t)w;
    }
    if (!o) snprintf(out, n, "%s", DASH);
}

/* "[-0.0729, +0.0822] (bootstrap [-0.0310, +0.0270])" or "1 seed: no interval" */
static void paired_cell(Results *R, char *out, size_t n, const cJSON *gap) {
    double lo, hi, blo, bhi;
    if (!interval(R, res_arr(R, gap, "t_ci95"), "t_ci95", &lo, &hi)) {
        snprintf(out, n, "%s", res_has(gap, "n") ? "1 seed: no interval" : DASH);
        return;
    }
    if (interval(R, res_arr(R, gap, "bootstrap_ci95"), "bootstrap_ci95", &blo, &bhi))
        snprintf(out, n, "[%+.4f, %+.4f] (bootstrap [%+.4f, %+.4f])", lo, hi, blo, bhi);
    else snprintf(out, n, "[%+.4f, %+.4f]", lo, hi);
}

/* ------------------------------------------------------------------ the tables */

static int in_sweep(Results *R, const cJSON *item, const char *sweep) {
    const char *sw = res_str(R, item, "sweep");
    return sw && strcmp(sw, sweep) == 0;
}

static void build_cmp_table(Results *R, const char *sweep, Table *t) {
    table_init(t, 8, CMP_HEAD);
    t->align = "lrrrllll"; /* the efficiency column may hold a sentence */
    const cJSON *c;
    cJSON_ArrayForEach(c, res_arr(R, R->root, "comparisons")) {
        if (!in_sweep(R, c, sweep)) continue;
        char e[256], u[256], m[256], eff[1024], seeds[512], ci[256];
        stat_cell(R, e, sizeof e, res_obj(R, c, "fixed_E"));
        stat_cell(R, u, sizeof u, res_obj(R, c, "upcycled"));
        stat_cell(R, m, sizeof m, res_obj(R, c, "fixed_mE"));
        const cJSON *gap = res_obj(R, c, "paired_gap_E_minus_mE");
        per_seed_cell(R, seeds, sizeof seeds, res_arr(R, gap, "values"));
        paired_cell(R, ci, sizeof ci, gap);
        int undef = eff_cell(R, eff, sizeof eff, res_obj(R, c, "efficiency"));
        char *cells[8] = {(char *)str_or(res_str(R, c, "label"), DASH), e, u, m, seeds, ci, eff,
                          (char *)str_or(res_str(R, c, "unpaired_rule"), DASH)};
        const char *cls[8] = {NULL, NULL, NULL, NULL, NULL, NULL, undef ? "undef" : "eff", NULL};
        table_add(t, cells, cls, NULL);
    }
}

/* element i of the array `key` of an arm's stat object, NAN if absent */
static double nth_value(Results *R, const cJSON *stat, const char *key, int i) {
    return res_elem_num(R, res_arr(R, stat, key), key, i);
}

/* one row per comparison and seed: the three arms' final losses and the paired gaps */
static int build_seed_table(Results *R, const char *sweep, Table *t) {
    table_init(t, 8, SEED_HEAD);
    t->align = "lrrrrrrl";
    int rows = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, res_arr(R, R->root, "comparisons")) {
        if (!in_sweep(R, c, sweep)) continue;
        const cJSON *E = res_obj(R, c, "fixed_E"), *U = res_obj(R, c, "upcycled"), *M = res_obj(R, c, "fixed_mE");
        int n = cJSON_GetArraySize(res_arr(R, E, "values"));
        for (int i = 0; i < n; i++) {
            double lE = nth_value(R, E, "values", i), lU = nth_value(R, U, "values", i), lM = nth_value(R, M, "values", i);
            double seed = res_elem_num(R, res_arr(R, c, "seeds"), "seeds", i);
            char cells_txt[6][96];
            snprintf(cells_txt[0], 96, "%s", fmt_sig(seed, 10).s);
            snprintf(cells_txt[1], 96, "%s", fmt_fixed(lE, 4).s);
            snprintf(cells_txt[2], 96, "%s", fmt_fixed(lU, 4).s);
            snprintf(cells_txt[3], 96, "%s", fmt_fixed(lM, 4).s);
            snprintf(cells_txt[4], 96, "%+.4f", lE - lM);
            if (isnan(lU)) snprintf(cells_txt[5], 96, "%s", DASH);
            else snprintf(cells_txt[5], 96, "%+.4f", lE - lU);
            char se[200];
            snprintf(se, sizeof se, "%s / %s / %s", fmt_sig(nth_value(R, E, "eval_stderr_values", i), 2).s,
                     fmt_sig(nth_value(R, U, "eval_stderr_values", i), 2).s, fmt_sig(nth_value(R, M, "eval_stderr_values", i), 2).s);
            char *cells[8] = {(char *)str_or(res_str(R, c, "label"), DASH), cells_txt[0], cells_txt[1], cells_txt[2], cells_txt[3],
                              cells_txt[4], cells_txt[5], se};
            table_add(t, cells, NULL, NULL);
            rows++;
        }
    }
    return rows;
}

/* returns the number of rows with any compute data */
static int build_compute_table(Results *R, const char *sweep, Table *t) {
    table_init(t, 9, COMPUTE_HEAD);
    int any = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, res_arr(R, R->root, "comparisons")) {
        if (!in_sweep(R, c, sweep)) continue;
        const cJSON *k = res_obj(R, c, "compute");
        if (!k) continue;
        any++;
        Num v[7] = {fmt_sig(res_num(R, k, "t_E"), 4),
                    fmt_sig(res_num(R, k, "t_mE"), 4),
                    fmt_fixed(res_num(R, k, "seconds_upcycled"), 1),
                    fmt_fixed(res_num(R, k, "seconds_fixed_mE"), 1),
                    fmt_fixed(res_num(R, k, "saving_pct"), 1),
                    fmt_fixed(res_num(R, k, "sunk_cost_saving_pct"), 1),
                    fmt_fixed(res_num(R, k, "flops_saving_pct"), 1)};
        const cJSON *mod = res_obj(R, k, "modeled");
        char modeled[96];
        if (mod)
            snprintf(modeled, sizeof modeled, "%s (%sx), modeled", fmt_fixed(res_num(R, mod, "saving_pct"), 1).s,
                     fmt_sig(res_num(R, mod, "ratio_t_mE_over_t_E"), 3).s);
        else snprintf(modeled, sizeof modeled, "%s", DASH);
        char *cells[9] = {(char *)str_or(res_str(R, c, "label"), DASH), v[0].s, v[1].s, v[2].s, v[3].s, v[4].s, v[5].s, v[6].s, modeled};
        table_add(t, cells, NULL, NULL);
    }
    return any;
}

static void build_runs_table(Results *R, Table *t) {
    table_init(t, 11, RUNS_HEAD);
    t->align = "lllrrllrrrr";
    const cJSON *r;
    cJSON_ArrayForEach(r, res_arr(R, R->root, "runs")) {
        char ex[128], gr[128];
        join_nums(R, ex, sizeof ex, res_arr(R, r, "experts"), "experts", " \xe2\x86\x92 ");
        join_nums(R, gr, sizeof gr, res_arr(R, r, "growth_steps"), "growth_steps", ", ");
        double x = res_num(R, r, "x");
        Num xs = isfinite(x) ? fmt_sig(x, 4) : fmt_fixed(NAN, 0);
        Num seed = fmt_sig(res_num(R, r, "seed"), 10);
        Num fl = fmt_fixed(res_num(R, r, "final_val_loss"), 4);
        Num sec = fmt_fixed(res_num(R, r, "total_seconds"), 1);
        Num flops = fmt_sig(res_num(R, r, "total_flops"), 3);
        char *cells[11] = {(char *)str_or(res_str(R, r, "id"), DASH),
                           (char *)str_or(res_str(R, r, "arm"), DASH),
                           (char *)str_or(res_str(R, r, "label"), DASH),
                           xs.s,
                           seed.s,
                           (char *)str_or(res_str(R, r, "status"), DASH),
                           ex[0] ? ex : (char *)DASH,
                           gr[0] ? gr : (char *)DASH,
                           fl.s,
                           sec.s,
                           flops.s};
        table_add(t, cells, NULL, run_done(R, r) ? NULL : "failed");
    }
}

/* ------------------------------------------------------------------ header summaries */

/* the separator before a part that is not the first */
static const char *sep(const Strbuf *b, const char *s) { return b->len ? s : ""; }

void model_summary(Results *R, Strbuf *b) {
    const cJSON *m = res_obj(R, res_obj(R, R->root, "base"), "model");
    if (!m) return;
    double v, w;
    if (isfinite(v = res_num(R, m, "hidden_size"))) sb_printf(b, "%shidden_size %.0f", sep(b, " \xc2\xb7 "), v);
    if (isfinite(v = res_num(R, m, "num_hidden_layers"))) {
        sb_printf(b, "%s%.0f layers", sep(b, " \xc2\xb7 "), v);
        if (isfinite(w = res_num(R, m, "decoder_sparse_step")) && w > 1) sb_printf(b, " (MoE every %.0f)", w);
    }
    if (isfinite(v = res_num(R, m, "num_experts"))) {
        sb_printf(b, "%s%.0f experts", sep(b, " \xc2\xb7 "), v);
        if (isfinite(w = res_num(R, m, "num_experts_per_tok"))) sb_printf(b, ", top-%.0f", w);
    } else if (isfinite(w = res_num(R, m, "num_experts_per_tok")))
        sb_printf(b, "%stop-%.0f", sep(b, " \xc2\xb7 "), w);
    if (isfinite(v = res_num(R, m, "moe_intermediate_size"))) sb_printf(b, "%sexpert FFN %.0f", sep(b, " \xc2\xb7 "), v);
    if (isfinite(v = res_num(R, m, "num_attention_heads"))) sb_printf(b, "%s%.0f heads", sep(b, " \xc2\xb7 "), v);
    if (isfinite(v = res_num(R, m, "vocab_size"))) sb_printf(b, "%svocab %.0f", sep(b, " \xc2\xb7 "), v);
}

void budget_summary(Results *R, Strbuf *b) {
    const cJSON *t = res_obj(R, res_obj(R, R->root, "base"), "train");
    if (!t) return;
    double steps = res_num(R, t, "steps"), bs = res_num(R, t, "batch_size"), sl = res_num(R, t, "seq_len"), v;
    if (isfinite(steps)) sb_printf(b, "%.0f steps", steps);
    if (isfinite(bs) && isfinite(sl)) {
        sb_printf(b, "%s%.0f seq \xc3\x97 %.0f tokens/step", sep(b, " \xc3\x97 "), bs, sl);
        if (isfinite(steps)) sb_printf(b, " = %s tokens per run", fmt_thousands(steps * bs * sl).s);
    }
    if (isfinite(v = res_num(R, t, "lr"))) {
        const char *sch = res_str(R, t, "schedule");
        sb_printf(b, "%speak lr %s%s%s%s", sep(b, " \xc2\xb7 "), fmt_sig(v, 3).s, sch ? " (" : "", sch ? sch : "", sch ? ")" : "");
    }
    if (isfinite(v = res_num(R, t, "warmup_steps"))) sb_printf(b, "%swarmup %.0f", sep(b, " \xc2\xb7 "), v);
    if (isfinite(v = res_num(R, t, "eval_every"))) sb_printf(b, "%seval every %.0f steps", sep(b, " \xc2\xb7 "), v);
}

void runs_summary(Results *R, Strbuf *b) {
    int total = 0, failed = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, res_arr(R, R->root, "runs")) total++, failed += !run_done(R, r);
    SweepList sw = collect_sweeps(R);
    sb_printf(b, "%d (%d done, %d failed)", total, total - failed, failed);
    for (int i = 0; i < sw.n; i++) sb_printf(b, "%s%s", i ? ", " : "; sweeps: ", sw.name[i]);
}

void spearman_line(Results *R, Strbuf *b) {
    const cJSON *sp = res_obj(R, R->root, "spearman");
    double rho = res_num(R, sp, "rho");
    if (!sp || !isfinite(rho)) return;
    const char *what = res_str(R, sp, "what");
    double k = res_num(R, sp, "n");
    sb_printf(b, "Spearman \xcf\x81 = %s", fmt_fixed(rho, 3).s);
    if (isfinite(k)) sb_printf(b, " (n = %.0f)", k);
    if (what) sb_printf(b, ": %s", what);
}

/* the Spearman line as a paragraph, when the file has one */
static void spearman_html(Results *R, Strbuf *b) {
    Strbuf sp = {0};
    spearman_line(R, &sp);
    if (sp.len) {
        sb_put(b, "<p>");
        sb_put_escaped(b, sp.s);
        sb_put(b, "</p>\n");
    }
    sb_free(&sp);
}

/* the same as a line of text, after `before` */
static void spearman_text(Results *R, Strbuf *b, const char *before) {
    Strbuf sp = {0};
    spearman_line(R, &sp);
    if (sp.len) sb_printf(b, "%s%s\n", before, sp.s);
    sb_free(&sp);
}

/* ------------------------------------------------------------------ sections */

void tables_html(Results *R, Strbuf *b) {
    SweepList sw = collect_sweeps(R);
    const cJSON *comps = res_arr(R, R->root, "comparisons"), *runs = res_arr(R, R->root, "runs");
    for (int i = 0; i < sw.n; i++) {
        const char *s = sw.name[i];
        int nc = count_in_sweep(R, comps, s);
        int nr = count_in_sweep(R, runs, s);
        sb_put(b, "<h3>");
        sb_put_escaped(b, s);
        sb_put(b, " <small>\xe2\x80\x94 ");
        sb_put_escaped(b, sweep_title(s));
        sb_printf(b, " (%d run%s)</small></h3>\n", nr, nr == 1 ? "" : "s");
        if (nc) {
            Table t;
            build_cmp_table(R, s, &t);
            table_html(b, &t, "cmp");
            table_free(&t);
            if (build_seed_table(R, s, &t)) table_html(b, &t, "seeds");
            table_free(&t);
            if (build_compute_table(R, s, &t)) table_html(b, &t, "compute");
            table_free(&t);
        } else sb_put(b, "<p>No comparison computed for this sweep (runs only).</p>\n");
        if (strcmp(s, "init") == 0) spearman_html(R, b);
    }
    if (!count_in_sweep(R, runs, "init")) spearman_html(R, b);
    if (!sw.n) sb_put(b, "<p>No runs or comparisons in this file.</p>\n");
}

void tables_text(Results *R, Strbuf *b) {
    SweepList sw = collect_sweeps(R);
    const cJSON *comps = res_arr(R, R->root, "comparisons"), *runs = res_arr(R, R->root, "runs");
    for (int i = 0; i < sw.n; i++) {
        const char *s = sw.name[i];
        int nr = count_in_sweep(R, runs, s);
        sb_printf(b, "\n== %s: %s (%d run%s) ==\n", s, sweep_title(s), nr, nr == 1 ? "" : "s");
        if (count_in_sweep(R, comps, s)) {
            Table t;
            build_cmp_table(R, s, &t);
            table_text(b, &t);
            table_free(&t);
            if (build_seed_table(R, s, &t)) {
                sb_put(b, "\nper seed:\n");
                table_text(b, &t);
            }
            table_free(&t);
            if (build_compute_table(R, s, &t)) {
                sb_put(b, "\ncompute:\n");
                table_text(b, &t);
            }
            table_free(&t);
        } else sb_put(b, "No comparison computed for this sweep (runs only).\n");
        if (strcmp(s, "init") == 0) spearman_text(R, b, "");
    }
    if (!count_in_sweep(R, runs, "init")) spearman_text(R, b, "\n");
}

void runs_table_html(Results *R, Strbuf *b) {
    Table t;
    build_runs_table(R, &t);
    if (t.nrows) {
        sb_printf(b, "<h2>Runs</h2>\n<details><summary>All runs (%d)</summary>\n", t.nrows);
        table_html(b, &t, "runs");
        sb_put(b, "</details>\n");
    }
    table_free(&t);
}

void runs_table_text(Results *R, Strbuf *b) {
    Table t;
    build_runs_table(R, &t);
    if (t.nrows) {
        sb_printf(b, "\n== runs (%d) ==\n", t.nrows);
        table_text(b, &t);
    }
    table_free(&t);
}
