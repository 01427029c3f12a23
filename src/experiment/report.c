/* report.c - results.json -> HTML report (inline CSS + SVG drawn here), CSV, text tables.
 *
 * Everything read from the JSON is optional except the "runs" array: a null or absent
 * value prints as "—" and a plot whose data is absent is left out. Numbers that are not
 * finite are never printed (the file cannot hold NaN, but means of nothing could be). */
#include "experiment/report.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "util/strbuf.h"

#define DASH "\xe2\x80\x94" /* "—": a value that is absent */
#define PM "\xc2\xb1"       /* "±" */

/* ------------------------------------------------------------------ JSON access */

static const cJSON *jget(const cJSON *o, const char *k) {
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

static int jnum(const cJSON *o, const char *k, double *v) {
    const cJSON *n = jget(o, k);
    if (!cJSON_IsNumber(n) || !isfinite(n->valuedouble)) return 0;
    *v = n->valuedouble;
    return 1;
}

static double jnum_or(const cJSON *o, const char *k, double dflt) {
    double v;
    return jnum(o, k, &v) ? v : dflt;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *s = jget(o, k);
    return cJSON_IsString(s) && s->valuestring ? s->valuestring : NULL;
}

static const cJSON *jarr(const cJSON *o, const char *k) {
    const cJSON *a = jget(o, k);
    return cJSON_IsArray(a) ? a : NULL;
}

static int item_num(const cJSON *it, double *v) {
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble)) return 0;
    *v = it->valuedouble;
    return 1;
}

static int run_done(const cJSON *run) {
    const char *st = jstr(run, "status");
    return !st || strcmp(st, "failed") != 0;
}

static const char *str_or(const char *s, const char *dflt) { return s ? s : dflt; }

/* ------------------------------------------------------------------ number formatting */

typedef struct {
    char s[96];
} Num;

/* fixed decimals; "—" when not finite */
static Num fmt_fixed(double v, int dec) {
    Num n;
    if (!isfinite(v)) snprintf(n.s, sizeof n.s, "%s", DASH);
    else {
        snprintf(n.s, sizeof n.s, "%.*f", dec, v);
        if (strcmp(n.s, "-0") == 0 || (n.s[0] == '-' && strspn(n.s + 1, "0.") == strlen(n.s + 1)))
            memmove(n.s, n.s + 1, strlen(n.s)); /* no "-0.0" */
    }
    return n;
}

static Num fmt_sig(double v, int sig) {
    Num n;
    if (!isfinite(v)) snprintf(n.s, sizeof n.s, "%s", DASH);
    else snprintf(n.s, sizeof n.s, "%.*g", sig, v);
    return n;
}

/* integers without decimals, otherwise up to 10 significant digits; "" when not finite */
static Num fmt_csv_num(double v) {
    Num n;
    if (!isfinite(v)) n.s[0] = 0;
    else if (v == floor(v) && fabs(v) < 1e15) snprintf(n.s, sizeof n.s, "%.0f", v);
    else snprintf(n.s, sizeof n.s, "%.10g", v);
    return n;
}

/* 1234567 -> "1,234,567" */
static Num fmt_thousands(double v) {
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

/* ------------------------------------------------------------------ loading */

static cJSON *load_results(const char *path) {
    char *data = NULL;
    size_t bytes = 0;
    if (read_file(path, &data, &bytes)) return NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(data, &end, 0);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        int line = 1;
        if (at && at >= data && at <= data + bytes)
            for (const char *p = data; p < at; p++) line += *p == '\n';
        up_error("%s: invalid JSON (parse error near line %d); expected a results.json as written by "
                 "`upcycle experiment` (docs/results-schema.md)",
                 path, line);
        free(data);
        return NULL;
    }
    free(data);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        up_error("%s: top level is not a JSON object; expected a results.json object with a \"runs\" array", path);
        return NULL;
    }
    if (!jarr(root, "runs")) {
        cJSON_Delete(root);
        up_error("%s: no \"runs\" array; expected a results.json with a \"runs\" list (docs/results-schema.md)", path);
        return NULL;
    }
    return root;
}

/* ------------------------------------------------------------------ arms, sweeps, colors */

static const char *const ARM_ORDER[] = {"fixed-E", "upcycled", "fixed-mE", "sparse-upcycled", "random-big", "iterative"};
static const char *const ARM_COLOR[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#6b6b6b", "#9467bd"};
#define N_ARMS 6

static int arm_rank(const char *arm) {
    for (int i = 0; arm && i < N_ARMS; i++)
        if (strcmp(arm, ARM_ORDER[i]) == 0) return i;
    return N_ARMS;
}

static const char *arm_color(const char *arm) {
    int r = arm_rank(arm);
    return r < N_ARMS ? ARM_COLOR[r] : "#8c564b";
}

/* categorical colors for layers / labels (distinct from the arm colors) */
static const char *const CAT_COLOR[] = {"#17becf", "#e377c2", "#bcbd22", "#8c564b", "#393b79", "#ad494a", "#637939", "#7b4173"};
#define N_CAT 8

static const char *const SWEEP_ORDER[] = {"main", "timing", "cpt_budget", "alloc", "init", "activation", "iterative", "schedule", "premise"};
#define N_SWEEPS 9

static const char *sweep_title(const char *sw) {
    static const char *const desc[] = {
        "main comparison: Fixed-E vs Upcycled vs Fixed-mE at matched tokens",
        "transition timing: when to grow (total steps fixed)",
        "CPT budget: continued pre-training length (pre-training fixed)",
        "replica allocation: which experts to copy",
        "replica initialization heuristics",
        "activation ratio: expert upcycling (MoE\xe2\x86\x92MoE) vs sparse upcycling (dense\xe2\x86\x92MoE)",
        "iterative growth (E\xe2\x86\x92" "2E\xe2\x86\x92" "4E) vs one jump",
        "schedule ablation: grow from the stable phase (no anneal before growth), continue at the peak, one decay at the end",
        "premise: Fixed-E vs Fixed-mE only (scale probes; no upcycled arm)",
    };
    for (int i = 0; i < N_SWEEPS; i++)
        if (strcmp(sw, SWEEP_ORDER[i]) == 0) return desc[i];
    return "other sweep";
}

typedef struct {
    const char *name[64];
    int n;
} SweepList;

static void sweep_add(SweepList *l, const char *s) {
    if (!s) return;
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->name[i], s) == 0) return;
    if (l->n < 64) l->name[l->n++] = s;
}

/* sweeps present in comparisons or runs: known ones in the schema's order, then others */
static SweepList collect_sweeps(const cJSON *root) {
    SweepList seen = {0}, out = {0};
    const cJSON *it;
    cJSON_ArrayForEach(it, jarr(root, "comparisons")) sweep_add(&seen, jstr(it, "sweep"));
    cJSON_ArrayForEach(it, jarr(root, "runs")) sweep_add(&seen, jstr(it, "sweep"));
    for (int k = 0; k < N_SWEEPS; k++)
        for (int i = 0; i < seen.n; i++)
            if (strcmp(seen.name[i], SWEEP_ORDER[k]) == 0) sweep_add(&out, seen.name[i]);
    for (int i = 0; i < seen.n; i++) sweep_add(&out, seen.name[i]);
    return out;
}

static int count_in_sweep(const cJSON *arr, const char *sweep) {
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        const char *s = jstr(it, "sweep");
        n += s && strcmp(s, sweep) == 0;
    }
    return n;
}

/* ------------------------------------------------------------------ tables */

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

/* "2.1000 ± 0.0100 (3)" */
static void stat_cell(char *out, size_t n, const cJSON *st) {
    double m, s, k;
    if (!jnum(st, "mean", &m)) {
        snprintf(out, n, "%s", DASH);
        return;
    }
    int has_s = jnum(st, "std", &s), has_k = jnum(st, "n", &k);
    char ks[32] = "";
    if (has_k) snprintf(ks, sizeof ks, " (%.0f)", k);
    if (has_s) snprintf(out, n, "%s " PM " %s%s", fmt_fixed(m, 4).s, fmt_fixed(s, 4).s, ks);
    else snprintf(out, n, "%s%s", fmt_fixed(m, 4).s, ks);
}

/* "92.3 [80.1, 101.2]" or the undefined reason; returns 1 when undefined */
static int eff_cell(char *out, size_t n, const cJSON *eff) {
    if (!cJSON_IsObject(eff)) {
        snprintf(out, n, "%s", DASH);
        return 0;
    }
    const cJSON *def = jget(eff, "defined");
    double m;
    int has_m = jnum(eff, "mean", &m);
    if (cJSON_IsFalse(def) || !has_m) {
        const char *why = jstr(eff, "reason");
        snprintf(out, n, "%s", why ? why : "undefined");
        return 1;
    }
    const cJSON *ci = jarr(eff, "ci95");
    double lo, hi;
    if (ci && cJSON_GetArraySize(ci) == 2 && item_num(cJSON_GetArrayItem(ci, 0), &lo) &&
        item_num(cJSON_GetArrayItem(ci, 1), &hi))
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
static void per_seed_cell(char *out, size_t n, const cJSON *values) {
    size_t o = 0;
    out[0] = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, values) {
        double v;
        if (!item_num(it, &v)) continue;
        int w = snprintf(out + o, n - o, "%s%+.4f", o ? " / " : "", v);
        if (w < 0 || (size_t)w >= n - o) break;
        o += (size_t)w;
    }
    if (!o) snprintf(out, n, "%s", DASH);
}

/* "[-0.0729, +0.0822] (bootstrap [-0.0310, +0.0270])" or "1 seed: no interval" */
static void paired_cell(char *out, size_t n, const cJSON *gap) {
    const cJSON *t = jarr(gap, "t_ci95"), *b = jarr(gap, "bootstrap_ci95");
    double lo, hi, blo, bhi;
    if (!t || cJSON_GetArraySize(t) != 2 || !item_num(cJSON_GetArrayItem(t, 0), &lo) || !item_num(cJSON_GetArrayItem(t, 1), &hi)) {
        snprintf(out, n, "%s", jget(gap, "n") ? "1 seed: no interval" : DASH);
        return;
    }
    if (b && cJSON_GetArraySize(b) == 2 && item_num(cJSON_GetArrayItem(b, 0), &blo) && item_num(cJSON_GetArrayItem(b, 1), &bhi))
        snprintf(out, n, "[%+.4f, %+.4f] (bootstrap [%+.4f, %+.4f])", lo, hi, blo, bhi);
    else snprintf(out, n, "[%+.4f, %+.4f]", lo, hi);
}

static void build_cmp_table(const cJSON *root, const char *sweep, Table *t) {
    table_init(t, 8, CMP_HEAD);
    t->align = "lrrrllll"; /* the efficiency column may hold a sentence */
    const cJSON *c;
    cJSON_ArrayForEach(c, jarr(root, "comparisons")) {
        const char *sw = jstr(c, "sweep");
        if (!sw || strcmp(sw, sweep) != 0) continue;
        char e[256], u[256], m[256], eff[1024], seeds[512], ci[256];
        stat_cell(e, sizeof e, jget(c, "fixed_E"));
        stat_cell(u, sizeof u, jget(c, "upcycled"));
        stat_cell(m, sizeof m, jget(c, "fixed_mE"));
        const cJSON *gap = jget(c, "paired_gap_E_minus_mE");
        per_seed_cell(seeds, sizeof seeds, jarr(gap, "values"));
        paired_cell(ci, sizeof ci, gap);
        int undef = eff_cell(eff, sizeof eff, jget(c, "efficiency"));
        char *cells[8] = {(char *)str_or(jstr(c, "label"), DASH), e, u, m, seeds, ci, eff, (char *)str_or(jstr(c, "unpaired_rule"), DASH)};
        const char *cls[8] = {NULL, NULL, NULL, NULL, NULL, NULL, undef ? "undef" : "eff", NULL};
        table_add(t, cells, cls, NULL);
    }
}

/* element i of the array `key` of an arm's stat object, NAN if absent */
static double nth_value(const cJSON *stat, const char *key, int i) {
    double v;
    return item_num(cJSON_GetArrayItem(jarr(stat, key), i), &v) ? v : NAN;
}

/* one row per comparison and seed: the three arms' final losses and the paired gaps */
static int build_seed_table(const cJSON *root, const char *sweep, Table *t) {
    table_init(t, 8, SEED_HEAD);
    t->align = "lrrrrrrl";
    int rows = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, jarr(root, "comparisons")) {
        const char *sw = jstr(c, "sweep");
        if (!sw || strcmp(sw, sweep) != 0) continue;
        const cJSON *E = jget(c, "fixed_E"), *U = jget(c, "upcycled"), *M = jget(c, "fixed_mE");
        int n = cJSON_GetArraySize(jarr(E, "values"));
        for (int i = 0; i < n; i++) {
            double seed = NAN, lE = nth_value(E, "values", i), lU = nth_value(U, "values", i), lM = nth_value(M, "values", i);
            item_num(cJSON_GetArrayItem(jarr(c, "seeds"), i), &seed);
            char cells_txt[6][96];
            snprintf(cells_txt[0], 96, "%s", fmt_sig(seed, 10).s);
            snprintf(cells_txt[1], 96, "%s", fmt_fixed(lE, 4).s);
            snprintf(cells_txt[2], 96, "%s", fmt_fixed(lU, 4).s);
            snprintf(cells_txt[3], 96, "%s", fmt_fixed(lM, 4).s);
            snprintf(cells_txt[4], 96, "%+.4f", lE - lM);
            if (isnan(lU)) snprintf(cells_txt[5], 96, "%s", DASH);
            else snprintf(cells_txt[5], 96, "%+.4f", lE - lU);
            char se[200];
            snprintf(se, sizeof se, "%s / %s / %s", fmt_sig(nth_value(E, "eval_stderr_values", i), 2).s,
                     fmt_sig(nth_value(U, "eval_stderr_values", i), 2).s, fmt_sig(nth_value(M, "eval_stderr_values", i), 2).s);
            char *cells[8] = {(char *)str_or(jstr(c, "label"), DASH), cells_txt[0], cells_txt[1], cells_txt[2], cells_txt[3],
                              cells_txt[4], cells_txt[5], se};
            table_add(t, cells, NULL, NULL);
            rows++;
        }
    }
    return rows;
}

/* returns the number of rows with any compute data */
static int build_compute_table(const cJSON *root, const char *sweep, Table *t) {
    table_init(t, 9, COMPUTE_HEAD);
    int any = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, jarr(root, "comparisons")) {
        const char *sw = jstr(c, "sweep");
        if (!sw || strcmp(sw, sweep) != 0) continue;
        const cJSON *k = jget(c, "compute");
        if (!cJSON_IsObject(k)) continue;
        any++;
        Num v[7] = {fmt_sig(jnum_or(k, "t_E", NAN), 4),
                    fmt_sig(jnum_or(k, "t_mE", NAN), 4),
                    fmt_fixed(jnum_or(k, "seconds_upcycled", NAN), 1),
                    fmt_fixed(jnum_or(k, "seconds_fixed_mE", NAN), 1),
                    fmt_fixed(jnum_or(k, "saving_pct", NAN), 1),
                    fmt_fixed(jnum_or(k, "sunk_cost_saving_pct", NAN), 1),
                    fmt_fixed(jnum_or(k, "flops_saving_pct", NAN), 1)};
        const cJSON *mod = jget(k, "modeled");
        char modeled[96];
        if (cJSON_IsObject(mod))
            snprintf(modeled, sizeof modeled, "%s (%sx), modeled", fmt_fixed(jnum_or(mod, "saving_pct", NAN), 1).s,
                     fmt_sig(jnum_or(mod, "ratio_t_mE_over_t_E", NAN), 3).s);
        else snprintf(modeled, sizeof modeled, "%s", DASH);
        char *cells[9] = {(char *)str_or(jstr(c, "label"), DASH), v[0].s, v[1].s, v[2].s, v[3].s, v[4].s, v[5].s, v[6].s, modeled};
        table_add(t, cells, NULL, NULL);
    }
    return any;
}

static void join_nums(char *out, size_t n, const cJSON *arr, const char *sep) {
    out[0] = 0;
    const cJSON *it;
    size_t o = 0;
    int first = 1;
    cJSON_ArrayForEach(it, arr) {
        double v;
        if (!item_num(it, &v)) continue;
        int w = snprintf(out + o, n - o, "%s%s", first ? "" : sep, fmt_csv_num(v).s);
        if (w < 0 || (size_t)w >= n - o) break;
        o += (size_t)w;
        first = 0;
    }
}

static void build_runs_table(const cJSON *root, Table *t) {
    table_init(t, 11, RUNS_HEAD);
    t->align = "lllrrllrrrr";
    const cJSON *r;
    cJSON_ArrayForEach(r, jarr(root, "runs")) {
        char ex[128], gr[128];
        join_nums(ex, sizeof ex, jarr(r, "experts"), " \xe2\x86\x92 ");
        join_nums(gr, sizeof gr, jarr(r, "growth_steps"), ", ");
        double x;
        Num xs = jnum(r, "x", &x) ? fmt_sig(x, 4) : fmt_fixed(NAN, 0);
        Num seed = fmt_sig(jnum_or(r, "seed", NAN), 10);
        Num fl = fmt_fixed(jnum_or(r, "final_val_loss", NAN), 4);
        Num sec = fmt_fixed(jnum_or(r, "total_seconds", NAN), 1);
        Num flops = fmt_sig(jnum_or(r, "total_flops", NAN), 3);
        char *cells[11] = {(char *)str_or(jstr(r, "id"), DASH),
                           (char *)str_or(jstr(r, "arm"), DASH),
                           (char *)str_or(jstr(r, "label"), DASH),
                           xs.s,
                           seed.s,
                           (char *)str_or(jstr(r, "status"), DASH),
                           ex[0] ? ex : (char *)DASH,
                           gr[0] ? gr : (char *)DASH,
                           fl.s,
                           sec.s,
                           flops.s};
        table_add(t, cells, NULL, run_done(r) ? NULL : "failed");
    }
}

/* ------------------------------------------------------------------ header summaries */

static void model_summary(char *out, size_t n, const cJSON *root) {
    const cJSON *m = jget(jget(root, "base"), "model");
    out[0] = 0;
    if (!cJSON_IsObject(m)) return;
    size_t o = 0;
    double v, w;
#define APPEND(...)                                                                  \
    do {                                                                             \
        int k_ = snprintf(out + o, n - o, __VA_ARGS__);                              \
        if (k_ > 0 && (size_t)k_ < n - o) o += (size_t)k_;                           \
    } while (0)
    if (jnum(m, "hidden_size", &v)) APPEND("%shidden_size %.0f", o ? " \xc2\xb7 " : "", v);
    if (jnum(m, "num_hidden_layers", &v)) {
        APPEND("%s%.0f layers", o ? " \xc2\xb7 " : "", v);
        if (jnum(m, "decoder_sparse_step", &w) && w > 1) APPEND(" (MoE every %.0f)", w);
    }
    if (jnum(m, "num_experts", &v)) {
        APPEND("%s%.0f experts", o ? " \xc2\xb7 " : "", v);
        if (jnum(m, "num_experts_per_tok", &w)) APPEND(", top-%.0f", w);
    } else if (jnum(m, "num_experts_per_tok", &w))
        APPEND("%stop-%.0f", o ? " \xc2\xb7 " : "", w);
    if (jnum(m, "moe_intermediate_size", &v)) APPEND("%sexpert FFN %.0f", o ? " \xc2\xb7 " : "", v);
    if (jnum(m, "num_attention_heads", &v)) APPEND("%s%.0f heads", o ? " \xc2\xb7 " : "", v);
    if (jnum(m, "vocab_size", &v)) APPEND("%svocab %.0f", o ? " \xc2\xb7 " : "", v);
}

static void budget_summary(char *out, size_t n, const cJSON *root) {
    const cJSON *t = jget(jget(root, "base"), "train");
    out[0] = 0;
    if (!cJSON_IsObject(t)) return;
    size_t o = 0;
    double steps, bs, sl, v;
    int hs = jnum(t, "steps", &steps), hb = jnum(t, "batch_size", &bs), hl = jnum(t, "seq_len", &sl);
    if (hs) APPEND("%.0f steps", steps);
    if (hb && hl) {
        APPEND("%s%.0f seq \xc3\x97 %.0f tokens/step", o ? " \xc3\x97 " : "", bs, sl);
        if (hs) APPEND(" = %s tokens per run", fmt_thousands(steps * bs * sl).s);
    }
    if (jnum(t, "lr", &v)) {
        const char *sch = jstr(t, "schedule");
        APPEND("%speak lr %s%s%s%s", o ? " \xc2\xb7 " : "", fmt_sig(v, 3).s, sch ? " (" : "", sch ? sch : "", sch ? ")" : "");
    }
    if (jnum(t, "warmup_steps", &v)) APPEND("%swarmup %.0f", o ? " \xc2\xb7 " : "", v);
    if (jnum(t, "eval_every", &v)) APPEND("%seval every %.0f steps", o ? " \xc2\xb7 " : "", v);
#undef APPEND
}

static void runs_summary(char *out, size_t n, const cJSON *root) {
    int total = 0, failed = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, jarr(root, "runs")) total++, failed += !run_done(r);
    SweepList sw = collect_sweeps(root);
    size_t o = (size_t)snprintf(out, n, "%d (%d done, %d failed)", total, total - failed, failed);
    for (int i = 0; i < sw.n && o < n; i++) {
        int k = snprintf(out + o, n - o, "%s%s", i ? ", " : "; sweeps: ", sw.name[i]);
        if (k < 0) break;
        o += (size_t)k;
    }
}

static void spearman_line(char *out, size_t n, const cJSON *root) {
    const cJSON *sp = jget(root, "spearman");
    double rho, k;
    out[0] = 0;
    if (!cJSON_IsObject(sp) || !jnum(sp, "rho", &rho)) return;
    const char *what = jstr(sp, "what");
    if (jnum(sp, "n", &k))
        snprintf(out, n, "Spearman \xcf\x81 = %s (n = %.0f)%s%s", fmt_fixed(rho, 3).s, k, what ? ": " : "", what ? what : "");
    else snprintf(out, n, "Spearman \xcf\x81 = %s%s%s", fmt_fixed(rho, 3).s, what ? ": " : "", what ? what : "");
}

/* ------------------------------------------------------------------ SVG plots */

typedef struct {
    char name[240];
    const char *color;
    const char *dash; /* NULL: solid */
    int kind;         /* 0 line, 1 filled marker, 2 hollow marker, 3 band */
} LegendItem;

typedef struct {
    Strbuf body;
    double x0, x1, y0, y1;       /* axis range (after rounding to ticks) */
    double xstep, ystep;
    int xexp, yexp;              /* labels show v / 10^exp */
    double W, L, R, T, pw, ph;   /* plot area: [L, L+pw] x [T, T+ph] */
    int id;
    LegendItem leg[40];
    int nleg;
    char title[200], xlabel[120], ylabel[120];
} Plot;

typedef struct {
    const char *path;
    const cJSON *root;
    int next_id;
} Ctx;

static double nice_step(double range, int target) {
    if (!(range > 0) || !isfinite(range)) return 1;
    double raw = range / target, mag = pow(10, floor(log10(raw))), f = raw / mag;
    double s = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    return s * mag;
}

static void axis_range(double lo, double hi, int target, double *a0, double *a1, double *step, int *expo) {
    if (!isfinite(lo) || !isfinite(hi)) lo = 0, hi = 1;
    if (hi < lo) {
        double t = lo;
        lo = hi, hi = t;
    }
    if (hi - lo < 1e-12 * fmax(1, fabs(hi))) {
        double d = fabs(hi) > 0 ? fabs(hi) * 0.05 : 0.5;
        lo -= d, hi += d;
    }
    *step = nice_step(hi - lo, target);
    *a0 = floor(lo / *step + 1e-9) * *step;
    *a1 = ceil(hi / *step - 1e-9) * *step;
    double m = fmax(fabs(*a0), fabs(*a1));
    *expo = m >= 1e5 ? (int)floor(log10(m)) : 0;
}

static void tick_label(char *out, size_t n, double v, double step, int expo) {
    double sc = pow(10, expo);
    double s = step / sc;
    int dec = s >= 1 ? 0 : (int)ceil(-log10(s) - 1e-9);
    if (dec > 6) dec = 6;
    double x = v / sc;
    if (fabs(x) < s * 1e-6) x = 0;
    snprintf(out, n, "%.*f", dec, x);
}

static double PX(const Plot *p, double x) { return p->L + (x - p->x0) / (p->x1 - p->x0) * p->pw; }
static double PY(const Plot *p, double y) { return p->T + p->ph - (y - p->y0) / (p->y1 - p->y0) * p->ph; }

static void plot_begin(Ctx *cx, Plot *p, const char *title, const char *xlabel, const char *ylabel, double xmin,
                       double xmax, double ymin, double ymax) {
    memset(p, 0, sizeof *p);
    p->id = ++cx->next_id;
    utf8_copy(p->title, sizeof p->title, title);
    utf8_copy(p->xlabel, sizeof p->xlabel, xlabel);
    utf8_copy(p->ylabel, sizeof p->ylabel, ylabel);
    axis_range(xmin, xmax, 6, &p->x0, &p->x1, &p->xstep, &p->xexp);
    axis_range(ymin, ymax, 6, &p->y0, &p->y1, &p->ystep, &p->yexp);
    p->W = 560, p->L = 66, p->R = 18, p->T = 40;
    p->pw = p->W - p->L - p->R;
    p->ph = 270;
}

static void plot_legend(Plot *p, const char *name, const char *color, const char *dash, int kind) {
    if (p->nleg >= 40) return;
    LegendItem *it = &p->leg[p->nleg++];
    utf8_copy(it->name, sizeof it->name, name);
    it->color = color, it->dash = dash, it->kind = kind;
}

static void dash_attr(Strbuf *b, const char *dash) {
    if (dash && *dash) sb_printf(b, " stroke-dasharray=\"%s\"", dash);
}

/* a polyline through the finite points; non-finite points break it into pieces */
static void plot_line(Plot *p, const double *x, const double *y, int n, const char *color, double width,
                      const char *dash, double opacity) {
    int open = 0;
    for (int i = 0; i <= n; i++) {
        int ok = i < n && isfinite(x[i]) && isfinite(y[i]);
        if (ok) {
            double X = PX(p, x[i]), Y = PY(p, y[i]);
            if (!open) {
                sb_printf(&p->body, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\" stroke-linejoin=\"round\"",
                        color, width);
                dash_attr(&p->body, dash);
                if (opacity < 1) sb_printf(&p->body, " stroke-opacity=\"%.2f\"", opacity);
                sb_put(&p->body, " points=\"");
                open = 1;
            }
            sb_printf(&p->body, "%.1f,%.1f ", X, Y);
        } else if (open) {
            sb_put(&p->body, "\"/>\n");
            open = 0;
        }
    }
}

/* a filled band between lo and hi over the finite points (one polygon per finite run) */
static void plot_band(Plot *p, const double *x, const double *lo, const double *hi, int n, const char *color,
                      double opacity) {
    int i = 0;
    while (i < n) {
        while (i < n && !(isfinite(x[i]) && isfinite(lo[i]) && isfinite(hi[i]))) i++;
        int j = i;
        while (j < n && isfinite(x[j]) && isfinite(lo[j]) && isfinite(hi[j])) j++;
        if (j - i >= 2) {
            sb_printf(&p->body, "<polygon fill=\"%s\" fill-opacity=\"%.2f\" stroke=\"none\" points=\"", color, opacity);
            for (int k = i; k < j; k++) sb_printf(&p->body, "%.1f,%.1f ", PX(p, x[k]), PY(p, hi[k]));
            for (int k = j - 1; k >= i; k--) sb_printf(&p->body, "%.1f,%.1f ", PX(p, x[k]), PY(p, lo[k]));
            sb_put(&p->body, "\"/>\n");
        }
        i = j;
    }
}

static void plot_marker(Plot *p, double x, double y, const char *color, int hollow, double r) {
    if (!isfinite(x) || !isfinite(y)) return;
    if (hollow)
        sb_printf(&p->body, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"#fff\" stroke=\"%s\" stroke-width=\"1.8\"/>\n",
                PX(p, x), PY(p, y), r, color);
    else
        sb_printf(&p->body, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\" stroke=\"#fff\" stroke-width=\"0.8\"/>\n",
                PX(p, x), PY(p, y), r, color);
}

static void plot_errbar(Plot *p, double x, double lo, double hi, const char *color) {
    if (!isfinite(x) || !isfinite(lo) || !isfinite(hi)) return;
    double X = PX(p, x), Y0 = PY(p, lo), Y1 = PY(p, hi);
    sb_printf(&p->body,
            "<path d=\"M%.1f %.1fV%.1fM%.1f %.1fH%.1fM%.1f %.1fH%.1f\" stroke=\"%s\" stroke-width=\"1.5\" fill=\"none\"/>\n", X,
            Y0, Y1, X - 5, Y0, X + 5, X - 5, Y1, X + 5, color);
}

/* dashed vertical line at data x with a small label at the top */
static void plot_vline(Plot *p, double x, const char *label) {
    if (!isfinite(x) || x < p->x0 || x > p->x1) return;
    double X = PX(p, x);
    sb_printf(&p->body, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\" stroke-width=\"1.2\" stroke-dasharray=\"5 4\"/>\n",
            X, p->T, X, p->T + p->ph);
    if (label && *label) {
        int right = X + 8 + 6.2 * utf8_width(label) < p->L + p->pw;
        sb_printf(&p->body, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#444\" text-anchor=\"%s\">", right ? X + 4 : X - 4,
                p->T + 13, right ? "start" : "end");
        sb_put_escaped(&p->body, label);
        sb_put(&p->body, "</text>\n");
    }
}

static void plot_hline(Plot *p, double y, const char *label) {
    if (!isfinite(y) || y < p->y0 || y > p->y1) return;
    double Y = PY(p, y);
    sb_printf(&p->body, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\" stroke-width=\"1\" stroke-dasharray=\"3 3\"/>\n",
            p->L, Y, p->L + p->pw, Y);
    if (label && *label) {
        sb_printf(&p->body, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#666\">", p->L + 5, Y - 4);
        sb_put_escaped(&p->body, label);
        sb_put(&p->body, "</text>\n");
    }
}

static void plot_text(Plot *p, double x, double y, double dx, double dy, const char *anchor, const char *color, const char *s) {
    if (!isfinite(x) || !isfinite(y)) return;
    sb_printf(&p->body, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"%s\" text-anchor=\"%s\">", PX(p, x) + dx, PY(p, y) + dy,
            color, anchor);
    sb_put_escaped(&p->body, s);
    sb_put(&p->body, "</text>\n");
}

static void legend_swatch(Strbuf *b, const LegendItem *it, double x, double y) {
    switch (it->kind) {
    case 1: sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>", x + 11, y, it->color); break;
    case 2: sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"#fff\" stroke=\"%s\" stroke-width=\"1.8\"/>", x + 11, y, it->color); break;
    case 3: sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"22\" height=\"10\" fill=\"%s\" fill-opacity=\"0.25\"/>", x, y - 5, it->color); break;
    default:
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2.5\"", x, y, x + 22, y, it->color);
        dash_attr(b, it->dash);
        sb_put(b, "/>");
    }
}

/* legend rows below the axes; returns the height used */
static double legend_rows(Strbuf *b, const LegendItem *leg, int n, double left, double right, double top) {
    if (!n) return 0;
    double x = left, y = top + 8, rowh = 18;
    for (int i = 0; i < n; i++) {
        double w = 30 + 6.4 * utf8_width(leg[i].name) + 18;
        if (x > left && x + w > right) x = left, y += rowh;
        if (b) {
            legend_swatch(b, &leg[i], x, y);
            sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"12\">", x + 28, y + 4);
            sb_put_escaped(b, leg[i].name);
            sb_put(b, "</text>");
        }
        x += w;
    }
    return y - top + rowh - 4;
}

static void svg_open(Strbuf *b, double W, double H, const char *title) {
    sb_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" height=\"%.0f\" role=\"img\" aria-label=\"",
            W, H, W, H);
    sb_put_escaped(b, title);
    sb_put(b, "\" font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif\" font-size=\"12\" fill=\"#222\">\n");
    sb_printf(b, "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"#fff\"/>\n", W, H);
    sb_printf(b, "<text x=\"%.1f\" y=\"22\" font-size=\"14\" font-weight=\"600\" text-anchor=\"middle\">", W / 2);
    sb_put_escaped(b, title);
    sb_put(b, "</text>\n");
}

/* emits the figure: svg with frame, grid, ticks, labels, clipped data, legend; then the caption */
static void plot_end(Plot *p, Strbuf *out, const char *caption) {
    double axis_h = 46;
    double leg_h = legend_rows(NULL, p->leg, p->nleg, p->L, p->W - 8, 0);
    double H = p->T + p->ph + axis_h + (p->nleg ? leg_h + 6 : 0) + 6;
    sb_put(out, "<figure>\n");
    svg_open(out, p->W, H, p->title);
    sb_printf(out, "<defs><clipPath id=\"clip%d\"><rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/></clipPath></defs>\n",
            p->id, p->L, p->T, p->pw, p->ph);
    /* grid and ticks */
    char lab[64];
    for (int i = 0;; i++) {
        double v = p->x0 + i * p->xstep;
        if (v > p->x1 + p->xstep * 1e-6 || i > 100) break;
        double X = PX(p, v);
        sb_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>", X, p->T, X, p->T + p->ph);
        sb_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>", X, p->T + p->ph, X, p->T + p->ph + 5);
        tick_label(lab, sizeof lab, v, p->xstep, p->xexp);
        sb_printf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\">%s</text>\n", X, p->T + p->ph + 18, lab);
    }
    for (int i = 0;; i++) {
        double v = p->y0 + i * p->ystep;
        if (v > p->y1 + p->ystep * 1e-6 || i > 100) break;
        double Y = PY(p, v);
        sb_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>", p->L, Y, p->L + p->pw, Y);
        sb_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>", p->L - 5, Y, p->L, Y);
        tick_label(lab, sizeof lab, v, p->ystep, p->yexp);
        sb_printf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">%s</text>\n", p->L - 8, Y + 4, lab);
    }
    /* data */
    sb_printf(out, "<g clip-path=\"url(#clip%d)\">\n", p->id);
    if (p->body.s) sb_put(out, p->body.s);
    sb_put(out, "</g>\n");
    sb_printf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", p->L, p->T, p->pw,
            p->ph);
    /* axis labels (with the common power of ten) */
    sb_printf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\">", p->L + p->pw / 2, p->T + p->ph + 36);
    sb_put_escaped(out, p->xlabel);
    if (p->xexp) sb_printf(out, " (\xc3\x97 10<tspan dy=\"-5\" font-size=\"9\">%d</tspan><tspan dy=\"5\">)</tspan>", p->xexp);
    sb_put(out, "</text>\n");
    double yc = p->T + p->ph / 2;
    sb_printf(out, "<text transform=\"translate(16 %.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">", yc);
    sb_put_escaped(out, p->ylabel);
    if (p->yexp) sb_printf(out, " (\xc3\x97 10<tspan dy=\"-5\" font-size=\"9\">%d</tspan><tspan dy=\"5\">)</tspan>", p->yexp);
    sb_put(out, "</text>\n");
    legend_rows(out, p->leg, p->nleg, p->L, p->W - 8, p->T + p->ph + axis_h);
    sb_put(out, "</svg>\n");
    if (caption && *caption) {
        sb_put(out, "<figcaption>");
        sb_put_escaped(out, caption);
        sb_put(out, "</figcaption>\n");
    }
    sb_put(out, "</figure>\n");
    sb_free(&p->body);
}

/* ------------------------------------------------------------------ curve aggregation */

typedef struct {
    double step, v, f, s;
} Pt;

static int pt_cmp(const void *a, const void *b) {
    double x = ((const Pt *)a)->step, y = ((const Pt *)b)->step;
    return x < y ? -1 : x > y;
}

/* one line on a plot: mean over seeds at each step, with min/max */
typedef struct {
    char name[200];
    const char *arm;
    const char *label;
    const char *color;
    const char *dash;
    int nruns;
    int n;
    double *step, *mean, *lo, *hi, *flops, *secs;
    double growth; /* first growth step of the group's runs, NAN if none */
} Series;

static void series_free(Series *s) {
    free(s->step), free(s->mean), free(s->lo), free(s->hi), free(s->flops), free(s->secs);
    s->step = s->mean = s->lo = s->hi = s->flops = s->secs = NULL;
    s->n = 0;
}

static void series_alloc(Series *s, int n) {
    s->n = n;
    s->step = xcalloc((size_t)n + 1, sizeof(double));
    s->mean = xcalloc((size_t)n + 1, sizeof(double));
    s->lo = xcalloc((size_t)n + 1, sizeof(double));
    s->hi = xcalloc((size_t)n + 1, sizeof(double));
    s->flops = xcalloc((size_t)n + 1, sizeof(double));
    s->secs = xcalloc((size_t)n + 1, sizeof(double));
}

/* mean/min/max of curve[field] over runs at each step where it is a number */
static void series_from_runs(Series *s, const cJSON *const *runs, int nr, const char *field) {
    int cap = 0;
    for (int r = 0; r < nr; r++) cap += cJSON_GetArraySize(jarr(runs[r], "curve"));
    Pt *pt = xmalloc(sizeof(Pt) * ((size_t)cap + 1));
    int np = 0;
    for (int r = 0; r < nr; r++) {
        const cJSON *c;
        cJSON_ArrayForEach(c, jarr(runs[r], "curve")) {
            double st, v;
            if (!jnum(c, "step", &st) || !jnum(c, field, &v)) continue;
            pt[np].step = st, pt[np].v = v;
            pt[np].f = jnum_or(c, "flops", NAN), pt[np].s = jnum_or(c, "seconds", NAN);
            np++;
        }
    }
    qsort(pt, (size_t)np, sizeof(Pt), pt_cmp);
    int groups = 0;
    for (int i = 0; i < np; i++) groups += i == 0 || pt[i].step != pt[i - 1].step;
    series_alloc(s, groups);
    int g = -1;
    int cnt = 0, cf = 0, cs = 0;
    for (int i = 0; i <= np; i++) {
        if (i == np || i == 0 || pt[i].step != pt[i - 1].step) {
            if (g >= 0) {
                s->mean[g] /= cnt;
                s->flops[g] = cf ? s->flops[g] / cf : NAN;
                s->secs[g] = cs ? s->secs[g] / cs : NAN;
            }
            if (i == np) break;
            g++;
            s->step[g] = pt[i].step;
            s->mean[g] = 0, s->lo[g] = INFINITY, s->hi[g] = -INFINITY, s->flops[g] = 0, s->secs[g] = 0;
            cnt = cf = cs = 0;
        }
        s->mean[g] += pt[i].v, cnt++;
        if (pt[i].v < s->lo[g]) s->lo[g] = pt[i].v;
        if (pt[i].v > s->hi[g]) s->hi[g] = pt[i].v;
        if (isfinite(pt[i].f)) s->flops[g] += pt[i].f, cf++;
        if (isfinite(pt[i].s)) s->secs[g] += pt[i].s, cs++;
    }
    free(pt);
    s->nruns = nr;
    s->growth = NAN;
    for (int r = 0; r < nr && !isfinite(s->growth); r++) {
        const cJSON *gs = jarr(runs[r], "growth_steps");
        double v;
        if (gs && item_num(cJSON_GetArrayItem(gs, 0), &v)) s->growth = v;
    }
}

/* runs of a sweep grouped by (arm, label) */
typedef struct {
    const char *arm, *label;
    const cJSON **runs;
    int n, cap;
} Group;

typedef struct {
    Group g[64];
    int n;
} Groups;

static int group_cmp(const void *a, const void *b) {
    const Group *x = a, *y = b;
    int rx = arm_rank(x->arm), ry = arm_rank(y->arm);
    if (rx != ry) return rx - ry;
    int c = strcmp(str_or(x->arm, ""), str_or(y->arm, ""));
    if (c) return c;
    return strcmp(str_or(x->label, ""), str_or(y->label, ""));
}

static void collect_groups(const cJSON *root, const char *sweep, Groups *gs) {
    memset(gs, 0, sizeof *gs);
    const cJSON *r;
    cJSON_ArrayForEach(r, jarr(root, "runs")) {
        const char *sw = jstr(r, "sweep");
        if (!sw || strcmp(sw, sweep) != 0 || !run_done(r)) continue;
        const char *arm = jstr(r, "arm"), *label = jstr(r, "label");
        int k;
        for (k = 0; k < gs->n; k++)
            if (strcmp(str_or(gs->g[k].arm, ""), str_or(arm, "")) == 0 && strcmp(str_or(gs->g[k].label, ""), str_or(label, "")) == 0)
                break;
        if (k == gs->n) {
            if (gs->n == 64) continue;
            gs->g[gs->n].arm = arm, gs->g[gs->n].label = label;
            gs->n++;
        }
        Group *g = &gs->g[k];
        if (g->n == g->cap) {
            g->cap = g->cap ? 2 * g->cap : 8;
            g->runs = xrealloc(g->runs, sizeof(cJSON *) * (size_t)g->cap);
        }
        g->runs[g->n++] = r;
    }
    qsort(gs->g, (size_t)gs->n, sizeof(Group), group_cmp);
}

static void groups_free(Groups *gs) {
    for (int i = 0; i < gs->n; i++) free(gs->g[i].runs);
    gs->n = 0;
}

static const char *const DASHES[] = {NULL, "7 3", "2 3", "9 3 2 3"};

/* one Series per group (mean of `field` over seeds); returns the count */
static int build_series(const Groups *gs, const char *field, Series *out) {
    int ns = 0;
    for (int i = 0; i < gs->n; i++) {
        const Group *g = &gs->g[i];
        Series *s = &out[ns];
        memset(s, 0, sizeof *s);
        series_from_runs(s, g->runs, g->n, field);
        if (s->n == 0) {
            series_free(s);
            continue;
        }
        int same_arm = 0, idx = 0;
        for (int j = 0; j < gs->n; j++)
            if (strcmp(str_or(gs->g[j].arm, ""), str_or(g->arm, "")) == 0) {
                if (j < i) idx++;
                same_arm++;
            }
        s->arm = g->arm, s->label = g->label;
        s->color = arm_color(g->arm);
        s->dash = DASHES[idx % 4];
        if (same_arm > 1 && g->label)
            snprintf(s->name, sizeof s->name, "%s \xc2\xb7 %s (%d seed%s)", str_or(g->arm, "?"), g->label, g->n, g->n == 1 ? "" : "s");
        else snprintf(s->name, sizeof s->name, "%s (%d seed%s)", str_or(g->arm, "?"), g->n, g->n == 1 ? "" : "s");
        ns++;
    }
    return ns;
}

enum { X_STEP, X_FLOPS, X_SECS };

static const double *series_x(const Series *s, int which) {
    return which == X_FLOPS ? s->flops : which == X_SECS ? s->secs : s->step;
}

/* y range of the series over points with x >= xcut (all points when that leaves none) */
static void series_yrange(const Series *s, int ns, int which, double xcut, int band, double *ylo, double *yhi) {
    for (int pass = 0; pass < 2; pass++) {
        double lo = INFINITY, hi = -INFINITY;
        int kept = 0;
        for (int i = 0; i < ns; i++) {
            const double *x = series_x(&s[i], which);
            for (int k = 0; k < s[i].n; k++) {
                if (!isfinite(x[k]) || (pass == 0 && x[k] < xcut)) continue;
                kept++;
                double a = s[i].mean[k], b = s[i].mean[k];
                if (band && isfinite(s[i].lo[k])) a = fmin(a, s[i].lo[k]);
                if (band && isfinite(s[i].hi[k])) b = fmax(b, s[i].hi[k]);
                if (isfinite(a)) lo = fmin(lo, a);
                if (isfinite(b)) hi = fmax(hi, b);
            }
        }
        if (lo <= hi && (pass == 1 || kept >= 3 * ns)) { /* too few points left: show them all */
            *ylo = lo, *yhi = hi;
            return;
        }
    }
    *ylo = NAN, *yhi = NAN;
}

static void series_xrange(const Series *s, int ns, int which, double *xlo, double *xhi) {
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < ns; i++) {
        const double *x = series_x(&s[i], which);
        for (int k = 0; k < s[i].n; k++)
            if (isfinite(x[k]) && isfinite(s[i].mean[k])) lo = fmin(lo, x[k]), hi = fmax(hi, x[k]);
    }
    *xlo = lo, *xhi = hi;
}

/* x position (in the chosen unit) of a growth step, read off a curve-derived series */
static double growth_x(const Series *s, int which, double step) {
    if (which == X_STEP) return step;
    const double *x = series_x(s, which);
    for (int k = 0; k + 1 < s->n; k++)
        if (s->step[k] <= step && step <= s->step[k + 1] && isfinite(x[k]) && isfinite(x[k + 1])) {
            double t = s->step[k + 1] > s->step[k] ? (step - s->step[k]) / (s->step[k + 1] - s->step[k]) : 0;
            return x[k] + t * (x[k + 1] - x[k]);
        }
    return NAN;
}

/* distinct growth steps of the runs of a sweep */
static int sweep_growth_steps(const cJSON *root, const char *sweep, double *out, int max) {
    int n = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, jarr(root, "runs")) {
        const char *sw = jstr(r, "sweep");
        if (!sw || strcmp(sw, sweep) != 0) continue;
        const cJSON *g;
        cJSON_ArrayForEach(g, jarr(r, "growth_steps")) {
            double v;
            if (!item_num(g, &v)) continue;
            int seen = 0;
            for (int i = 0; i < n; i++) seen |= out[i] == v;
            if (!seen && n < max) out[n++] = v;
        }
    }
    return n;
}

/* ------------------------------------------------------------------ the plots */

static void growth_lines(Plot *p, const double *gx, int ng, const double *gstep) {
    for (int i = 0; i < ng; i++) {
        char lab[128];
        if (ng <= 2) snprintf(lab, sizeof lab, "growth (step %s)", fmt_sig(gstep[i], 8).s);
        else lab[0] = 0;
        plot_vline(p, gx[i], lab);
    }
}

/* (a) val loss vs step, (a') the same zoomed on the part after growth */
static void plot_main_vs_step(Ctx *cx, Strbuf *out, const Series *s, int ns, const double *gsteps, int ng, int zoom) {
    double xlo, xhi, ylo, yhi;
    series_xrange(s, ns, X_STEP, &xlo, &xhi);
    if (!(xlo <= xhi)) return;
    double xstart = 0;
    if (zoom) {
        double g = INFINITY;
        for (int i = 0; i < ng; i++) g = fmin(g, gsteps[i]);
        xstart = isfinite(g) && g < xhi ? g - 0.05 * (xhi - xlo) : xlo + 0.5 * (xhi - xlo);
        if (xstart < xlo) xstart = xlo;
    }
    double xcut = zoom ? xstart : xlo + 0.08 * (xhi - xlo);
    series_yrange(s, ns, X_STEP, xcut, 1, &ylo, &yhi);
    if (!isfinite(ylo)) return;
    double pad = 0.04 * (yhi - ylo);
    Plot p;
    plot_begin(cx, &p,
               zoom ? "(a\xe2\x80\xb2) Validation loss after growth (zoom)" : "(a) Validation loss vs step \xe2\x80\x94 main sweep",
               "training step", "validation loss", zoom ? xstart : fmin(0, xlo), xhi, ylo - pad, yhi + pad);
    if (zoom && p.x0 < xstart - 1e-9) { /* keep the zoom tight: start at the first tick >= xstart */
        double t = ceil(xstart / p.xstep - 1e-9) * p.xstep;
        if (t < p.x1) p.x0 = t;
    }
    for (int i = 0; i < ns; i++) plot_band(&p, s[i].step, s[i].lo, s[i].hi, s[i].n, s[i].color, 0.16);
    for (int i = 0; i < ns; i++) {
        plot_line(&p, s[i].step, s[i].mean, s[i].n, s[i].color, 2.2, s[i].dash, 1);
        plot_legend(&p, s[i].name, s[i].color, s[i].dash, 0);
    }
    growth_lines(&p, gsteps, ng, gsteps);
    int multi = 0;
    for (int i = 0; i < ns; i++) multi |= s[i].nruns > 1;
    if (multi) plot_legend(&p, "min\xe2\x80\x93max over seeds", "#888", NULL, 3);
    char cap[600];
    double ymax_all = -INFINITY;
    for (int i = 0; i < ns; i++)
        for (int k = 0; k < s[i].n; k++)
            if (isfinite(s[i].hi[k])) ymax_all = fmax(ymax_all, s[i].hi[k]);
    if (zoom)
        snprintf(cap, sizeof cap, "Zoom on the steps after growth: does Upcycled (red) end at Fixed-mE (green) or at Fixed-E (blue)? "
                                  "Lines: mean over seeds; bands: min\xe2\x80\x93max across seeds.");
    else
        snprintf(cap, sizeof cap, "Lines: mean over seeds at each evaluation; shaded bands: min\xe2\x80\x93max across seeds; dashed vertical line: "
                                  "growth step.%s",
                 ymax_all > p.y1 + 1e-9 ? " The y-axis leaves out the first 8% of training (early losses run off the top)." : "");
    plot_end(&p, out, cap);
}

/* (b) vs cumulative FLOPs, (c) vs measured seconds: frontier if present, else curves */
static void plot_main_vs_compute(Ctx *cx, Strbuf *out, const Series *s, int ns, const double *gsteps, int ng, int which) {
    const cJSON *fr = jarr(cx->root, "frontier");
    const char *key = which == X_FLOPS ? "flops" : "seconds";
    Series fs[32];
    int nf = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, fr) {
        if (nf == 32) break;
        const cJSON *xa = jarr(e, key), *ya = jarr(e, "val_loss");
        int n = cJSON_GetArraySize(xa), m = cJSON_GetArraySize(ya);
        if (m < n) n = m;
        if (n <= 0) continue;
        Series *f = &fs[nf];
        memset(f, 0, sizeof *f);
        series_alloc(f, n);
        int good = 0;
        for (int k = 0; k < n; k++) {
            double xv, yv;
            int hx = item_num(cJSON_GetArrayItem(xa, k), &xv), hy = item_num(cJSON_GetArrayItem(ya, k), &yv);
            f->step[k] = NAN;
            f->flops[k] = f->secs[k] = hx ? xv : NAN;
            f->mean[k] = hy ? yv : NAN;
            f->lo[k] = f->hi[k] = NAN;
            good += hx && hy;
        }
        if (!good) {
            series_free(f);
            continue;
        }
        f->arm = jstr(e, "arm");
        f->color = arm_color(f->arm);
        f->dash = NULL;
        utf8_copy(f->name, sizeof f->name, str_or(f->arm, "?"));
        nf++;
    }
    const Series *use = nf ? fs : s;
    int nu = nf ? nf : ns;
    int good[64] = {0}, drawable = 0; /* finite points per series: a line needs two */
    for (int i = 0; i < nu && i < 64; i++) {
        const double *x = series_x(&use[i], which);
        for (int k = 0; k < use[i].n; k++) good[i] += isfinite(x[k]) && isfinite(use[i].mean[k]);
        drawable |= good[i] >= 2;
    }
    double xlo, xhi, ylo, yhi;
    series_xrange(use, nu, which, &xlo, &xhi);
    if (!drawable || !(xlo <= xhi)) {
        for (int i = 0; i < nf; i++) series_free(&fs[i]);
        return;
    }
    series_yrange(use, nu, which, xlo + 0.08 * (xhi - xlo), 0, &ylo, &yhi);
    double pad = 0.04 * (yhi - ylo);
    Plot p;
    plot_begin(cx, &p,
               which == X_FLOPS ? "(b) Validation loss vs cumulative FLOPs" : "(c) Validation loss vs measured seconds",
               which == X_FLOPS ? "cumulative training FLOPs" : "wall-clock training seconds", "validation loss", 0, xhi,
               ylo - pad, yhi + pad);
    for (int i = 0; i < nu && i < 64; i++) {
        if (!good[i]) continue;
        plot_line(&p, series_x(&use[i], which), use[i].mean, use[i].n, use[i].color, 2.2, use[i].dash, 1);
        const double *x = series_x(&use[i], which);
        for (int k = 0; k < use[i].n; k++) plot_marker(&p, x[k], use[i].mean[k], use[i].color, 0, 2.2);
        plot_legend(&p, use[i].name, use[i].color, use[i].dash, 0);
    }
    /* growth: where the (curve-derived) upcycled series crosses its growth step */
    double gx[8];
    int n_gx = 0;
    for (int j = 0; j < ng && n_gx < 8; j++)
        for (int i = 0; i < ns; i++)
            if (isfinite(s[i].growth) && s[i].growth == gsteps[j]) {
                double v = growth_x(&s[i], which, gsteps[j]);
                if (isfinite(v)) {
                    gx[n_gx++] = v;
                    break;
                }
            }
    if (n_gx) growth_lines(&p, gx, n_gx, gsteps);
    char cap[600];
    snprintf(cap, sizeof cap,
             "The compute-matched view: a point further left at the same loss is cheaper. %s Source: %s.",
             which == X_FLOPS ? "FLOPs count the model's forward and backward passes."
                              : "Seconds are measured on this machine, so they include the larger model's memory traffic.",
             nf ? "\"frontier\" (mean over seeds at evaluation points)" : "run curves (mean over seeds at evaluation points)");
    plot_end(&p, out, cap);
    for (int i = 0; i < nf; i++) series_free(&fs[i]);
}

/* (d) efficiency vs sweep coordinate (CPT fraction, transition point) */
static void plot_efficiency(Ctx *cx, Strbuf *out, const char *sweep) {
    typedef struct {
        double x, m, lo, hi;
        int defined;
        const char *reason, *label;
    } EP;
    EP pts[64];
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, jarr(cx->root, "comparisons")) {
        const char *sw = jstr(c, "sweep");
        double x;
        if (!sw || strcmp(sw, sweep) != 0 || !jnum(c, "x", &x) || n == 64) continue;
        const cJSON *eff = jget(c, "efficiency");
        if (!cJSON_IsObject(eff)) continue;
        EP *e = &pts[n++];
        e->x = x, e->label = jstr(c, "label");
        e->defined = !cJSON_IsFalse(jget(eff, "defined")) && jnum(eff, "mean", &e->m);
        e->reason = jstr(eff, "reason");
        e->lo = e->hi = NAN;
        const cJSON *ci = jarr(eff, "ci95");
        if (ci && cJSON_GetArraySize(ci) == 2) {
            item_num(cJSON_GetArrayItem(ci, 0), &e->lo);
            item_num(cJSON_GetArrayItem(ci, 1), &e->hi);
        }
    }
    if (!n) return;
    /* sort by x */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && pts[j].x < pts[j - 1].x; j--) {
            EP t = pts[j];
            pts[j] = pts[j - 1], pts[j - 1] = t;
        }
    int is_cpt = strcmp(sweep, "cpt_budget") == 0;
    /* the paper's CPT-budget sweep (PAPER.md), drawn for shape only */
    static const double paper_x[] = {0.10, 0.26, 0.50, 0.76, 1.00}, paper_y[] = {34.7, 64.0, 84.3, 88.5, 98.0};
    double ylo = 0, yhi = 100, xhi = 0;
    for (int i = 0; i < n; i++) {
        xhi = fmax(xhi, pts[i].x);
        if (!pts[i].defined) continue;
        ylo = fmin(ylo, pts[i].m), yhi = fmax(yhi, pts[i].m);
        if (isfinite(pts[i].lo)) ylo = fmin(ylo, pts[i].lo);
        if (isfinite(pts[i].hi)) yhi = fmax(yhi, pts[i].hi);
    }
    if (is_cpt) xhi = fmax(xhi, 1.0);
    xhi *= 1.06; /* points at the right end stay off the frame */
    int nundef = 0;
    for (int i = 0; i < n; i++) nundef += !pts[i].defined;
    double span = yhi - ylo;
    ylo -= (nundef ? 0.18 : 0.04) * span, yhi += 0.05 * span; /* a strip at the bottom for "undefined" */
    Plot p;
    char title[160];
    snprintf(title, sizeof title, "(d) Upcycling efficiency vs %s", is_cpt ? "CPT fraction" : "sweep coordinate");
    if (strcmp(sweep, "timing") == 0) snprintf(title, sizeof title, "(d\xe2\x80\xb2) Upcycling efficiency vs transition point \xcf\x84");
    plot_begin(cx, &p, title,
               is_cpt ? "continued pre-training, fraction of pre-training steps"
                      : strcmp(sweep, "timing") == 0 ? "growth step \xcf\x84 as a fraction of training" : "x",
               "upcycling efficiency (%)", 0, xhi, ylo, yhi);
    double strip_top = p.y0 + 0.10 * (p.y1 - p.y0), strip_mid = p.y0 + 0.05 * (p.y1 - p.y0);
    if (nundef) {
        sb_printf(&p.body, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#f1f1f1\"/>\n", p.L, PY(&p, strip_top), p.pw,
                PY(&p, p.y0) - PY(&p, strip_top));
    }
    plot_hline(&p, 100, "100% = as good as Fixed-mE");
    plot_hline(&p, 0, "0% = no better than Fixed-E");
    if (is_cpt) {
        plot_line(&p, paper_x, paper_y, 5, "#999", 1.5, "4 3", 1);
        for (int i = 0; i < 5; i++) plot_marker(&p, paper_x[i], paper_y[i], "#999", 0, 2.5);
        plot_legend(&p, "paper, 7B\xe2\x86\x92" "13B scale (shape only)", "#999", "4 3", 0);
    }
    const char *col = arm_color("upcycled");
    double lx[64], ly[64];
    int nl = 0;
    for (int i = 0; i < n; i++)
        if (pts[i].defined) lx[nl] = pts[i].x, ly[nl++] = pts[i].m;
    plot_line(&p, lx, ly, nl, col, 1.5, NULL, 0.6);
    for (int i = 0; i < n; i++) {
        int right = pts[i].x > p.x0 + 0.8 * (p.x1 - p.x0); /* label on the left near the right edge */
        if (pts[i].defined) {
            plot_errbar(&p, pts[i].x, pts[i].lo, pts[i].hi, col);
            plot_marker(&p, pts[i].x, pts[i].m, col, 0, 4.5);
            char v[128];
            snprintf(v, sizeof v, "%s%%", fmt_fixed(pts[i].m, 1).s);
            plot_text(&p, pts[i].x, pts[i].m, right ? -8 : 8, 4, right ? "end" : "start", col, v);
        } else {
            plot_marker(&p, pts[i].x, strip_mid, col, 1, 5);
            plot_text(&p, pts[i].x, strip_mid, right ? -9 : 9, 4, right ? "end" : "start", col, "undefined");
        }
    }
    if (nl) plot_legend(&p, "measured (mean, 95% CI)", col, NULL, 1);
    if (nundef) plot_legend(&p, "undefined (see note)", col, NULL, 2);
    Strbuf cap = {0};
    sb_put(&cap, "Efficiency = (L_fixedE \xe2\x88\x92 L_upcycled) / (L_fixedE \xe2\x88\x92 L_fixedmE) \xc3\x97 100%, final validation loss, "
               "error bars = 95% CI over seeds.");
    for (int i = 0; i < n; i++)
        if (!pts[i].defined)
            sb_printf(&cap, " Hollow marker at x = %s: %s.", fmt_sig(pts[i].x, 4).s, str_or(pts[i].reason, "undefined"));
    plot_end(&p, out, cap.s);
    sb_free(&cap);
}

/* pick the run whose `what` ("load" object or "diag" array) is shown: main upcycled first */
static const cJSON *pick_run(const cJSON *root, const char *what) {
    const cJSON *best = NULL;
    int best_score = -1;
    const cJSON *r;
    cJSON_ArrayForEach(r, jarr(root, "runs")) {
        const cJSON *d = jget(r, what);
        int has = strcmp(what, "load") == 0 ? cJSON_GetArraySize(jarr(d, "layers")) > 0 && cJSON_GetArraySize(jarr(d, "steps")) > 0
                                            : cJSON_GetArraySize(d) > 0 && cJSON_IsArray(d);
        if (!has) continue;
        const char *arm = jstr(r, "arm"), *sw = jstr(r, "sweep");
        int score = (arm && strcmp(arm, "upcycled") == 0) * 4 + (sw && strcmp(sw, "main") == 0) * 2 + run_done(r);
        if (score > best_score) best = r, best_score = score;
    }
    return best;
}

static void viridis(double t, char *out, size_t n) {
    static const double st[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
    if (!isfinite(t)) t = 0;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    double f = t * 4;
    int i = (int)f;
    if (i > 3) i = 3;
    f -= i;
    snprintf(out, n, "#%02x%02x%02x", (int)lround(st[i][0] + f * (st[i + 1][0] - st[i][0])),
             (int)lround(st[i][1] + f * (st[i + 1][1] - st[i][1])), (int)lround(st[i][2] + f * (st[i + 1][2] - st[i][2])));
}

/* (e) per-layer load imbalance over steps for one run */
static void plot_load_heatmap(Ctx *cx, Strbuf *out) {
    const cJSON *run = pick_run(cx->root, "load");
    if (!run) return;
    const cJSON *ld = jget(run, "load");
    const cJSON *layers = jarr(ld, "layers"), *steps = jarr(ld, "steps"), *imb = jarr(ld, "imbalance");
    int nr = cJSON_GetArraySize(layers), nc = cJSON_GetArraySize(steps);
    if (nr <= 0 || nc <= 0 || !imb) return;
    if (nr > 256) nr = 256;
    double *val = xmalloc(sizeof(double) * (size_t)nr * (size_t)nc);
    double *stp = xmalloc(sizeof(double) * (size_t)nc);
    double vmin = INFINITY, vmax = -INFINITY;
    for (int c = 0; c < nc; c++)
        if (!item_num(cJSON_GetArrayItem(steps, c), &stp[c])) stp[c] = NAN;
    for (int r = 0; r < nr; r++) {
        const cJSON *row = cJSON_GetArrayItem(imb, r);
        for (int c = 0; c < nc; c++) {
            double v = NAN;
            if (!cJSON_IsArray(row) || !item_num(cJSON_GetArrayItem(row, c), &v)) v = NAN;
            val[r * nc + c] = v;
            if (isfinite(v)) vmin = fmin(vmin, v), vmax = fmax(vmax, v);
        }
    }
    if (!(vmin <= vmax)) {
        free(val), free(stp);
        return;
    }
    if (vmax - vmin < 1e-9) vmax = vmin + 0.1;
    double W = 560, L = 66, R = 92, T = 40;
    double pw = W - L - R;
    double cellh = 200.0 / nr;
    if (cellh > 44) cellh = 44;
    if (cellh < 10) cellh = 10;
    double ph = cellh * nr;
    if (ph < 100) ph = 100, cellh = ph / nr;
    double H = T + ph + 52;
    double cw = pw / nc;
    const char *id = str_or(jstr(run, "id"), "?");
    char title[300];
    snprintf(title, sizeof title, "(e) Expert load imbalance (max/mean) per layer");
    sb_put(out, "<figure>\n");
    svg_open(out, W, H, title);
    char col[16];
    for (int r = 0; r < nr; r++) {
        double layer = NAN;
        item_num(cJSON_GetArrayItem(layers, r), &layer);
        double y = T + r * cellh;
        for (int c = 0; c < nc; c++) {
            double v = val[r * nc + c];
            if (isfinite(v)) viridis((v - vmin) / (vmax - vmin), col, sizeof col);
            else snprintf(col, sizeof col, "#dddddd");
            sb_printf(out, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"><title>layer %s, step %s: %s</title></rect>\n",
                    L + c * cw, y, cw + 0.3, cellh + 0.3, col, fmt_sig(layer, 6).s, fmt_sig(stp[c], 10).s,
                    isfinite(v) ? fmt_fixed(v, 3).s : "no data");
        }
        sb_printf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">layer %s</text>\n", L - 6, y + cellh / 2 + 4,
                fmt_sig(layer, 6).s);
    }
    sb_printf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", L, T, pw, ph);
    /* x ticks: every k-th column, labelled with its step */
    int k = (int)ceil(nc / 8.0);
    if (k < 1) k = 1;
    for (int c = 0; c < nc; c += k) {
        double X = L + (c + 0.5) * cw;
        sb_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>", X, T + ph, X, T + ph + 5);
        sb_printf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\">%s</text>\n", X, T + ph + 18,
                fmt_sig(stp[c], 10).s);
    }
    sb_printf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\">training step</text>\n", L + pw / 2, T + ph + 36);
    /* growth steps: on the boundary after the last column at or before the step */
    const cJSON *g;
    cJSON_ArrayForEach(g, jarr(run, "growth_steps")) {
        double gs;
        if (!item_num(g, &gs)) continue;
        int last = -1;
        for (int c = 0; c < nc; c++)
            if (isfinite(stp[c]) && stp[c] <= gs) last = c;
        if (last < 0 || last >= nc - 1) continue;
        double X = L + (last + 1) * cw;
        sb_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#fff\" stroke-width=\"2\" stroke-dasharray=\"5 4\"/>\n",
                X, T - 4, X, T + ph + 4);
        sb_printf(out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">growth</text>\n", X, T - 6);
    }
    /* color scale */
    double bx = L + pw + 22, bw = 14;
    sb_printf(out, "<defs><linearGradient id=\"grad%d\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">", ++cx->next_id);
    for (int i = 0; i <= 8; i++) {
        viridis(i / 8.0, col, sizeof col);
        sb_printf(out, "<stop offset=\"%.3f\" stop-color=\"%s\"/>", i / 8.0, col);
    }
    sb_put(out, "</linearGradient></defs>\n");
    sb_printf(out, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"url(#grad%d)\" stroke=\"#333\"/>\n", bx, T, bw, ph,
            cx->next_id);
    for (int i = 0; i <= 4; i++) {
        double v = vmin + (vmax - vmin) * i / 4.0, Y = T + ph - ph * i / 4.0;
        sb_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>", bx + bw, Y, bx + bw + 4, Y);
        sb_printf(out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">%s</text>\n", bx + bw + 6, Y + 4, fmt_fixed(v, 2).s);
    }
    sb_printf(out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">max/mean</text>\n", bx + bw / 2 + 10, T + ph + 18);
    sb_put(out, "</svg>\n<figcaption>");
    sb_put(out, "Run <code>");
    sb_put_escaped(out, id);
    sb_put(out, "</code>. Each cell: the busiest expert\xe2\x80\x99s load divided by the mean load in that layer at that step "
              "(1.00 = perfectly balanced). Dashed line: growth step. Hover a cell for its value.</figcaption>\n</figure>\n");
    free(val), free(stp);
}

typedef struct {
    double step, rc, cs;
} DiagPt;

static int diag_cmp(const void *a, const void *b) {
    double x = ((const DiagPt *)a)->step, y = ((const DiagPt *)b)->step;
    return x < y ? -1 : x > y;
}

/* (f) replica similarity over CPT, one line per layer */
static void plot_diag(Ctx *cx, Strbuf *out) {
    const cJSON *run = pick_run(cx->root, "diag");
    if (!run) return;
    const cJSON *d = jarr(run, "diag");
    double layers[16];
    int nl = 0;
    const cJSON *e;
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    cJSON_ArrayForEach(e, d) {
        double l, st, a, b;
        if (!jnum(e, "layer", &l) || !jnum(e, "step", &st)) continue;
        int ha = jnum(e, "replica_cosine_mean", &a), hb = jnum(e, "cosine_to_source_mean", &b);
        if (!ha && !hb) continue;
        int seen = 0;
        for (int i = 0; i < nl; i++) seen |= layers[i] == l;
        if (!seen && nl < 16) layers[nl++] = l;
        xlo = fmin(xlo, st), xhi = fmax(xhi, st);
        if (ha) ylo = fmin(ylo, a), yhi = fmax(yhi, a);
        if (hb) ylo = fmin(ylo, b), yhi = fmax(yhi, b);
    }
    if (!nl) return;
    for (int i = 1; i < nl; i++)
        for (int j = i; j > 0 && layers[j] < layers[j - 1]; j--) {
            double t = layers[j];
            layers[j] = layers[j - 1], layers[j - 1] = t;
        }
    double gstep = NAN;
    double gv;
    if (item_num(cJSON_GetArrayItem(jarr(run, "growth_steps"), 0), &gv)) gstep = gv;
    if (isfinite(gstep)) xlo = fmin(xlo, gstep);
    double span = fmax(yhi - ylo, 0.01);
    Plot p;
    plot_begin(cx, &p, "(f) Replica similarity during continued pre-training", "training step", "cosine similarity", xlo, xhi,
               ylo - 0.05 * span, yhi <= 1.0 ? 1.0 : yhi + 0.02 * span);
    int cap = cJSON_GetArraySize(d);
    DiagPt *pt = xmalloc(sizeof(DiagPt) * ((size_t)cap + 1));
    double *xs = xmalloc(sizeof(double) * ((size_t)cap + 1)), *ys = xmalloc(sizeof(double) * ((size_t)cap + 1));
    for (int li = 0; li < nl; li++) {
        int n = 0;
        cJSON_ArrayForEach(e, d) {
            double l, st;
            if (!jnum(e, "layer", &l) || l != layers[li] || !jnum(e, "step", &st)) continue;
            pt[n].step = st;
            pt[n].rc = jnum_or(e, "replica_cosine_mean", NAN);
            pt[n].cs = jnum_or(e, "cosine_to_source_mean", NAN);
            n++;
        }
        qsort(pt, (size_t)n, sizeof(DiagPt), diag_cmp);
        const char *col = CAT_COLOR[li % N_CAT];
        char name[200];
        for (int which = 0; which < 2; which++) {
            int have = 0;
            for (int k = 0; k < n; k++) {
                xs[k] = pt[k].step, ys[k] = which ? pt[k].cs : pt[k].rc;
                have += isfinite(ys[k]);
            }
            if (!have) continue;
            const char *dash = which ? "6 3" : NULL;
            plot_line(&p, xs, ys, n, col, 2, dash, 1);
            for (int k = 0; k < n; k++) plot_marker(&p, xs[k], ys[k], col, which, 2.6);
            snprintf(name, sizeof name, "layer %s: %s", fmt_sig(layers[li], 6).s, which ? "replica vs source" : "replica vs replica");
            plot_legend(&p, name, col, dash, 0);
        }
    }
    free(pt), free(xs), free(ys);
    if (isfinite(gstep)) {
        double gs[1] = {gstep};
        growth_lines(&p, gs, 1, gs);
    }
    Strbuf capb = {0};
    sb_put(&capb, "Run ");
    sb_put(&capb, str_or(jstr(run, "id"), "?"));
    sb_put(&capb, ". Solid: mean pairwise cosine between replicas of the same source expert (replica_cosine_mean); dashed: mean "
                "cosine of each replica to its source expert (cosine_to_source_mean). 1.0 = still identical copies; "
                "falling lines = the replicas specialize.");
    plot_end(&p, out, capb.s);
    sb_free(&capb);
}

/* (g) training loss of every init-sweep run */
static void plot_init(Ctx *cx, Strbuf *out) {
    Groups gs;
    collect_groups(cx->root, "init", &gs);
    if (!gs.n) {
        groups_free(&gs);
        return;
    }
    /* one Series per run (no averaging) so each run is a thin line */
    int total = 0;
    for (int i = 0; i < gs.n; i++) total += gs.g[i].n;
    Series *s = xcalloc((size_t)total + 1, sizeof(Series));
    int *grp = xcalloc((size_t)total + 1, sizeof(int));
    int ns = 0;
    for (int i = 0; i < gs.n; i++)
        for (int r = 0; r < gs.g[i].n; r++) {
            series_from_runs(&s[ns], &gs.g[i].runs[r], 1, "loss");
            if (s[ns].n == 0) {
                series_free(&s[ns]);
                continue;
            }
            grp[ns++] = i;
        }
    if (!ns) {
        free(s), free(grp);
        groups_free(&gs);
        return;
    }
    double xlo, xhi, ylo, yhi;
    series_xrange(s, ns, X_STEP, &xlo, &xhi);
    series_yrange(s, ns, X_STEP, xlo + 0.08 * (xhi - xlo), 0, &ylo, &yhi);
    double pad = 0.04 * (yhi - ylo);
    Plot p;
    plot_begin(cx, &p, "(g) Training loss of the init-sweep runs", "training step", "training loss", fmin(0, xlo), xhi, ylo - pad,
               yhi + pad);
    /* color: the arm's color for baselines, a categorical color per label for upcycled variants */
    const char *gcol[64];
    int cat = 0;
    for (int i = 0; i < gs.n; i++) {
        int r = arm_rank(gs.g[i].arm);
        gcol[i] = (r == 1 || r >= N_ARMS) ? CAT_COLOR[cat++ % N_CAT] : ARM_COLOR[r];
    }
    for (int i = 0; i < ns; i++) plot_line(&p, s[i].step, s[i].mean, s[i].n, gcol[grp[i]], 1.1, NULL, 0.8);
    for (int i = 0; i < gs.n; i++) {
        char name[200];
        snprintf(name, sizeof name, "%s%s%s", str_or(gs.g[i].label, str_or(gs.g[i].arm, "?")),
                 arm_rank(gs.g[i].arm) == 1 ? "" : " \xc2\xb7 ", arm_rank(gs.g[i].arm) == 1 ? "" : str_or(gs.g[i].arm, ""));
        plot_legend(&p, name, gcol[i], NULL, 0);
    }
    double g[8];
    int ng = sweep_growth_steps(cx->root, "init", g, 8);
    growth_lines(&p, g, ng, g);
    char sp[600], cap[900];
    spearman_line(sp, sizeof sp, cx->root);
    snprintf(cap, sizeof cap, "One thin line per run (training loss as logged; not averaged). %s%s", sp, sp[0] ? "." : "");
    plot_end(&p, out, cap);
    for (int i = 0; i < ns; i++) series_free(&s[i]);
    free(s), free(grp);
    groups_free(&gs);
}

/* ------------------------------------------------------------------ HTML */

static const char CSS[] =
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;color:#222;background:#eef0f3;margin:0}\n"
    "main{max-width:1180px;margin:0 auto;padding:18px 24px 40px;background:#fff}\n"
    "h1{font-size:24px;margin:6px 0 2px}h2{font-size:19px;border-bottom:2px solid #e2e5ea;padding-bottom:3px;margin:30px 0 10px}\n"
    "h3{font-size:15.5px;margin:20px 0 6px}h3 small{font-weight:normal;color:#666}\n"
    ".sub{color:#666;margin:0 0 12px}\n"
    "table{border-collapse:collapse;margin:6px 0 14px;font-variant-numeric:tabular-nums}\n"
    "th,td{border:1px solid #dfe3e8;padding:4px 9px;text-align:right;vertical-align:top}\n"
    "th{background:#f3f5f8;font-weight:600;white-space:nowrap}td:first-child,th:first-child{text-align:left}\n"
    "td.undef{color:#8a5300;font-style:italic;text-align:left;max-width:380px}\n"
    "td.eff{font-weight:600}tr.failed td{color:#b00020}\n"
    "table.meta th,table.meta td{text-align:left;border:none;background:none;padding:2px 16px 2px 0}\n"
    "table.meta th{color:#555;font-weight:600;white-space:nowrap}\n"
    "table.runs{font-size:12.5px}\n"
    ".key{background:#f4f8ff;border-left:4px solid #1f77b4;padding:8px 12px;margin:12px 0}\n"
    ".plots{display:flex;flex-wrap:wrap;gap:22px 24px}\n"
    "figure{margin:0;flex:0 1 548px;max-width:100%}figure svg{width:100%;height:auto;display:block;border:1px solid #e2e5ea}\n"
    "figcaption{font-size:12.5px;color:#555;margin-top:4px}\n"
    ".legend-arms span{display:inline-block;margin-right:14px}.legend-arms i{display:inline-block;width:18px;height:4px;"
    "vertical-align:middle;margin-right:5px}\n"
    "code{font-size:12.5px;background:#f3f5f8;padding:0 3px}details summary{cursor:pointer;color:#1f4f99}\n";

static void html_meta_row(Strbuf *b, const char *k, const char *v) {
    sb_put(b, "<tr><th>");
    sb_put_escaped(b, k);
    sb_put(b, "</th><td>");
    sb_put_escaped(b, v && *v ? v : DASH);
    sb_put(b, "</td></tr>\n");
}

static void html_key_result(Strbuf *b, const cJSON *root) {
    const cJSON *c, *main_c = NULL;
    cJSON_ArrayForEach(c, jarr(root, "comparisons")) {
        const char *sw = jstr(c, "sweep");
        if (sw && strcmp(sw, "main") == 0) {
            main_c = c;
            break;
        }
    }
    if (!main_c) return;
    char e[256], u[256], m[256], eff[1024];
    stat_cell(e, sizeof e, jget(main_c, "fixed_E"));
    stat_cell(u, sizeof u, jget(main_c, "upcycled"));
    stat_cell(m, sizeof m, jget(main_c, "fixed_mE"));
    int undef = eff_cell(eff, sizeof eff, jget(main_c, "efficiency"));
    sb_put(b, "<div class=\"key\"><b>Main result");
    if (jstr(main_c, "label")) {
        sb_put(b, " (");
        sb_put_escaped(b, jstr(main_c, "label"));
        sb_put(b, ")");
    }
    sb_put(b, ":</b> final validation loss Fixed-E ");
    sb_put_escaped(b, e);
    sb_put(b, ", Upcycled ");
    sb_put_escaped(b, u);
    sb_put(b, ", Fixed-mE ");
    sb_put_escaped(b, m);
    sb_put(b, " \xe2\x86\x92 efficiency ");
    sb_put_escaped(b, eff);
    if (!undef && strcmp(eff, DASH) != 0) sb_put(b, " %");
    const cJSON *k = jget(main_c, "compute");
    double sv, sk;
    if (jnum(k, "saving_pct", &sv)) {
        if (sv >= 0) sb_printf(b, "; upcycling saves %s%% of Fixed-mE\xe2\x80\x99s measured seconds", fmt_fixed(sv, 1).s);
        else sb_printf(b, "; upcycling takes %s%% more measured seconds than Fixed-mE", fmt_fixed(-sv, 1).s);
        if (jnum(k, "sunk_cost_saving_pct", &sk)) sb_printf(b, " (%s%% if the source checkpoint already exists)", fmt_fixed(sk, 1).s);
        const cJSON *mod = jget(k, "modeled");
        double ms;
        if (cJSON_IsObject(mod) && jnum(mod, "saving_pct", &ms)) {
            sb_printf(b, "; modeled where you train (%s, t_mE/t_E = %s): upcycling %s %s%%", str_or(jstr(mod, "source"), DASH),
                    fmt_sig(jnum_or(mod, "ratio_t_mE_over_t_E", NAN), 3).s, ms >= 0 ? "saves" : "takes more by", fmt_fixed(fabs(ms), 1).s);
        }
    }
    sb_put(b, ".</div>\n");
}

static void html_tables(Strbuf *b, const cJSON *root) {
    SweepList sw = collect_sweeps(root);
    const cJSON *comps = jarr(root, "comparisons");
    for (int i = 0; i < sw.n; i++) {
        const char *s = sw.name[i];
        int nc = count_in_sweep(comps, s);
        int nr = count_in_sweep(jarr(root, "runs"), s);
        sb_put(b, "<h3>");
        sb_put_escaped(b, s);
        sb_put(b, " <small>\xe2\x80\x94 ");
        sb_put_escaped(b, sweep_title(s));
        sb_printf(b, " (%d run%s)</small></h3>\n", nr, nr == 1 ? "" : "s");
        if (nc) {
            Table t;
            build_cmp_table(root, s, &t);
            table_html(b, &t, "cmp");
            table_free(&t);
            if (build_seed_table(root, s, &t)) table_html(b, &t, "seeds");
            table_free(&t);
            if (build_compute_table(root, s, &t)) table_html(b, &t, "compute");
            table_free(&t);
        } else sb_put(b, "<p>No comparison computed for this sweep (runs only).</p>\n");
        if (strcmp(s, "init") == 0) {
            char sp[600];
            spearman_line(sp, sizeof sp, root);
            if (sp[0]) {
                sb_put(b, "<p>");
                sb_put_escaped(b, sp);
                sb_put(b, "</p>\n");
            }
        }
    }
    if (!count_in_sweep(jarr(root, "runs"), "init")) {
        char sp[600];
        spearman_line(sp, sizeof sp, root);
        if (sp[0]) {
            sb_put(b, "<p>");
            sb_put_escaped(b, sp);
            sb_put(b, "</p>\n");
        }
    }
    if (!sw.n) sb_put(b, "<p>No runs or comparisons in this file.</p>\n");
}

static void html_plots(Ctx *cx, Strbuf *b) {
    Strbuf fig = {0};
    Groups gs;
    collect_groups(cx->root, "main", &gs);
    if (gs.n) {
        Series s[64];
        int ns = build_series(&gs, "val_loss", s);
        double g[8];
        int ng = sweep_growth_steps(cx->root, "main", g, 8);
        if (ns) {
            plot_main_vs_step(cx, &fig, s, ns, g, ng, 0);
            plot_main_vs_step(cx, &fig, s, ns, g, ng, 1);
            plot_main_vs_compute(cx, &fig, s, ns, g, ng, X_FLOPS);
            plot_main_vs_compute(cx, &fig, s, ns, g, ng, X_SECS);
        }
        for (int i = 0; i < ns; i++) series_free(&s[i]);
    } else if (cJSON_GetArraySize(jarr(cx->root, "frontier")) > 0) {
        plot_main_vs_compute(cx, &fig, NULL, 0, NULL, 0, X_FLOPS);
        plot_main_vs_compute(cx, &fig, NULL, 0, NULL, 0, X_SECS);
    }
    groups_free(&gs);
    plot_efficiency(cx, &fig, "cpt_budget");
    plot_efficiency(cx, &fig, "timing");
    plot_load_heatmap(cx, &fig);
    plot_diag(cx, &fig);
    plot_init(cx, &fig);
    if (fig.len) {
        sb_put(b, "<p class=\"legend-arms\">Arm colors (same in every plot): ");
        for (int i = 0; i < N_ARMS; i++)
            sb_printf(b, "<span><i style=\"background:%s\"></i>%s</span>", ARM_COLOR[i], ARM_ORDER[i]);
        sb_put(b, "</p>\n<div class=\"plots\">\n");
        sb_put(b, fig.s);
        sb_put(b, "</div>\n");
    } else sb_put(b, "<p>No curve, load or diagnostic data to plot.</p>\n");
    sb_free(&fig);
}

static void build_html(Ctx *cx, Strbuf *b) {
    const cJSON *root = cx->root;
    const char *preset = jstr(root, "preset");
    sb_put(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>upcycle report");
    if (preset) {
        sb_put(b, " \xe2\x80\x94 ");
        sb_put_escaped(b, preset);
    }
    sb_put(b, "</title>\n<style>\n");
    sb_put(b, CSS);
    sb_put(b, "</style>\n</head>\n<body>\n<main>\n<h1>Expert Upcycling report</h1>\n<p class=\"sub\">Generated by <code>upcycle</code> from <code>");
    sb_put_escaped(b, cx->path);
    sb_put(b, "</code></p>\n");

    /* 1. header */
    char buf[1024];
    sb_put(b, "<table class=\"meta\">\n");
    html_meta_row(b, "Preset", preset);
    html_meta_row(b, "Data", jstr(root, "data"));
    html_meta_row(b, "Machine", jstr(root, "machine"));
    model_summary(buf, sizeof buf, root);
    html_meta_row(b, "Base model", buf);
    budget_summary(buf, sizeof buf, root);
    html_meta_row(b, "Training budget", buf);
    runs_summary(buf, sizeof buf, root);
    html_meta_row(b, "Runs", buf);
    sb_put(b, "</table>\n");
    html_key_result(b, root);

    /* 2. tables */
    sb_put(b, "<h2>Results</h2>\n<p>Final validation loss as <i>mean " PM " std (n seeds)</i>; efficiency as <i>mean [95% CI]</i> in percent. "
            "Compute: measured seconds per step of the small (t_E) and grown (t_mE) model and total seconds per arm.</p>\n");
    html_tables(b, root);

    /* 3. plots */
    sb_put(b, "<h2>Plots</h2>\n");
    html_plots(cx, b);

    /* all runs */
    Table t;
    build_runs_table(root, &t);
    if (t.nrows) {
        sb_printf(b, "<h2>Runs</h2>\n<details><summary>All runs (%d)</summary>\n", t.nrows);
        table_html(b, &t, "runs");
        sb_put(b, "</details>\n");
    }
    table_free(&t);

    /* 4. notes and how to read */
    sb_put(b, "<h2>Notes</h2>\n");
    const cJSON *notes = jarr(root, "notes");
    int nn = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, notes) nn += cJSON_IsString(it) && it->valuestring;
    if (nn) {
        sb_put(b, "<ul>\n");
        cJSON_ArrayForEach(it, notes) {
            if (!cJSON_IsString(it) || !it->valuestring) continue;
            sb_put(b, "<li>");
            sb_put_escaped(b, it->valuestring);
            sb_put(b, "</li>\n");
        }
        sb_put(b, "</ul>\n");
    } else sb_put(b, "<p>No notes.</p>\n");
    sb_put(b,
         "<h2>How to read this</h2>\n<p><b>Upcycling efficiency</b> = (L<sub>Fixed-E</sub> \xe2\x88\x92 L<sub>Upcycled</sub>) / "
         "(L<sub>Fixed-E</sub> \xe2\x88\x92 L<sub>Fixed-mE</sub>) \xc3\x97 100%, on final validation loss, all three arms trained on the "
         "same total number of tokens. 100% means the upcycled model is as good as a model trained at the larger size from "
         "scratch; 0% means growing bought nothing over staying small; above 100% it beat the large model, below 0% it ended "
         "worse than the small one. The ratio is <b>undefined</b> when Fixed-mE is not better than Fixed-E at that budget: the "
         "arms of one seed share the data order, so the rule is paired \xe2\x80\x94 the 95% t interval (n\xe2\x88\x92" "1 degrees "
         "of freedom) of the mean per-seed gap L<sub>Fixed-E</sub> \xe2\x88\x92 L<sub>Fixed-mE</sub> must lie above zero; with one "
         "seed there is no interval and no verdict. Then the table shows the reason instead of a number, and the plot a hollow "
         "marker. The per-seed table gives every seed\xe2\x80\x99s losses, the paired gaps and the evaluation\xe2\x80\x99s own "
         "standard error over validation windows; the older unpaired rule (mean gap above the seed spread) is shown beside "
         "the verdict, not used for it. "
         "<b>Compute</b>: training the large model from scratch costs T\xc2\xb7t<sub>mE</sub>; upcycling costs "
         "\xcf\x84\xc2\xb7t<sub>E</sub> + (T\xe2\x88\x92\xcf\x84)\xc2\xb7t<sub>mE</sub>, with t the measured seconds per step of each "
         "model and \xcf\x84 the growth step. <b>Sunk-cost saving</b> assumes the small model\xe2\x80\x99s checkpoint already exists, so "
         "only (T\xe2\x88\x92\xcf\x84)\xc2\xb7t<sub>mE</sub> is paid. A <b>modeled</b> saving, where shown, uses a cost ratio "
         "t<sub>mE</sub>/t<sub>E</sub> given by the user or a model of expert-parallel training on a named cluster; it is not a "
         "measurement. At this scale the gap between Fixed-E and Fixed-mE can be close to seed-to-seed noise: read "
         "efficiencies together with their confidence intervals.</p>\n");
    sb_put(b, "</main>\n</body>\n</html>\n");
}

/* ------------------------------------------------------------------ public API */

int report_write_html(const char *results_json_path, const char *html_path) {
    cJSON *root = load_results(results_json_path);
    if (!root) return -1;
    Ctx cx = {results_json_path, root, 0};
    Strbuf b = {0};
    build_html(&cx, &b);
    int rc = atomic_write_file(html_path, b.s, b.len);
    sb_free(&b);
    cJSON_Delete(root);
    return rc;
}

static void csv_field(Strbuf *b, const char *s) {
    if (!s) return;
    if (strpbrk(s, ",\"\n\r")) {
        sb_putn(b, "\"", 1);
        for (const char *p = s; *p; p++) {
            if (*p == '"') sb_putn(b, "\"", 1);
            sb_putn(b, p, 1);
        }
        sb_putn(b, "\"", 1);
    } else sb_put(b, s);
}

static void csv_num(Strbuf *b, const cJSON *o, const char *k) {
    double v;
    if (jnum(o, k, &v)) sb_put(b, fmt_csv_num(v).s);
}

int report_write_csv(const char *results_json_path, const char *csv_path) {
    cJSON *root = load_results(results_json_path);
    if (!root) return -1;
    Strbuf b = {0};
    sb_put(&b, "id,sweep,arm,label,x,seed,status,experts,growth_steps,final_val_loss,total_seconds,total_flops,"
             "loss_before_growth,loss_after_growth\n");
    const cJSON *r;
    cJSON_ArrayForEach(r, jarr(root, "runs")) {
        char list[512];
        csv_field(&b, jstr(r, "id"));
        sb_put(&b, ",");
        csv_field(&b, jstr(r, "sweep"));
        sb_put(&b, ",");
        csv_field(&b, jstr(r, "arm"));
        sb_put(&b, ",");
        csv_field(&b, jstr(r, "label"));
        sb_put(&b, ",");
        csv_num(&b, r, "x");
        sb_put(&b, ",");
        csv_num(&b, r, "seed");
        sb_put(&b, ",");
        csv_field(&b, jstr(r, "status"));
        sb_put(&b, ",");
        join_nums(list, sizeof list, jarr(r, "experts"), ";");
        csv_field(&b, list);
        sb_put(&b, ",");
        join_nums(list, sizeof list, jarr(r, "growth_steps"), ";");
        csv_field(&b, list);
        static const char *const nums[] = {"final_val_loss", "total_seconds", "total_flops", "loss_before_growth", "loss_after_growth"};
        for (int i = 0; i < 5; i++) {
            sb_put(&b, ",");
            csv_num(&b, r, nums[i]);
        }
        sb_put(&b, "\n");
    }
    int rc = atomic_write_file(csv_path, b.s, b.len);
    sb_free(&b);
    cJSON_Delete(root);
    return rc;
}

int report_print_tables(const char *results_json_path, FILE *out) {
    cJSON *root = load_results(results_json_path);
    if (!root) return -1;
    Strbuf b = {0};
    char buf[1024];
    sb_printf(&b, "Expert Upcycling report: %s\n", results_json_path);
    sb_printf(&b, "preset: %s   data: %s\nmachine: %s\n", str_or(jstr(root, "preset"), DASH), str_or(jstr(root, "data"), DASH),
            str_or(jstr(root, "machine"), DASH));
    model_summary(buf, sizeof buf, root);
    sb_printf(&b, "base model: %s\n", buf[0] ? buf : DASH);
    budget_summary(buf, sizeof buf, root);
    sb_printf(&b, "training budget: %s\n", buf[0] ? buf : DASH);
    runs_summary(buf, sizeof buf, root);
    sb_printf(&b, "runs: %s\n", buf);
    sb_put(&b, "Values: final validation loss, mean " PM " std (n seeds); Eff. %: mean [95% CI].\n");

    SweepList sw = collect_sweeps(root);
    const cJSON *comps = jarr(root, "comparisons");
    for (int i = 0; i < sw.n; i++) {
        const char *s = sw.name[i];
        int nr = count_in_sweep(jarr(root, "runs"), s);
        sb_printf(&b, "\n== %s: %s (%d run%s) ==\n", s, sweep_title(s), nr, nr == 1 ? "" : "s");
        if (count_in_sweep(comps, s)) {
            Table t;
            build_cmp_table(root, s, &t);
            table_text(&b, &t);
            table_free(&t);
            if (build_seed_table(root, s, &t)) {
                sb_put(&b, "\nper seed:\n");
                table_text(&b, &t);
            }
            table_free(&t);
            if (build_compute_table(root, s, &t)) {
                sb_put(&b, "\ncompute:\n");
                table_text(&b, &t);
            }
            table_free(&t);
        } else sb_put(&b, "No comparison computed for this sweep (runs only).\n");
        if (strcmp(s, "init") == 0) {
            spearman_line(buf, sizeof buf, root);
            if (buf[0]) sb_printf(&b, "%s\n", buf);
        }
    }
    if (!count_in_sweep(jarr(root, "runs"), "init")) {
        spearman_line(buf, sizeof buf, root);
        if (buf[0]) sb_printf(&b, "\n%s\n", buf);
    }
    Table t;
    build_runs_table(root, &t);
    if (t.nrows) {
        sb_printf(&b, "\n== runs (%d) ==\n", t.nrows);
        table_text(&b, &t);
    }
    table_free(&t);
    const cJSON *it;
    int first = 1;
    cJSON_ArrayForEach(it, jarr(root, "notes")) {
        if (!cJSON_IsString(it) || !it->valuestring) continue;
        if (first) sb_put(&b, "\nNotes:\n");
        first = 0;
        sb_printf(&b, "- %s\n", it->valuestring);
    }
    int rc = 0;
    if (b.len && fwrite(b.s, 1, b.len, out) != b.len) rc = up_error("%s: cannot write the tables; expected a writable output stream", results_json_path);
    fflush(out);
    sb_free(&b);
    cJSON_Delete(root);
    return rc;
}
