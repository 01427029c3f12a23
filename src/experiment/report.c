/* report.c - results.json -> the HTML report, the text tables and the CSV (report.h): reads
 * the file (report_results.h) and puts the page together from the tables (report_tables.h)
 * and the figures (report_figures.h); the CSV is report_csv.c.
 *
 * Everything read from the JSON is optional except the "runs" array: a null or absent
 * value prints as "—" and a plot whose data is absent is left out. A field of the wrong type
 * prints as absent too and is listed under "Problems" (report_results.h). Numbers that are
 * not finite are never printed (the file cannot hold NaN, but means of nothing could be). */
#include "experiment/report.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "experiment/report_figures.h"
#include "experiment/report_results.h"
#include "experiment/report_tables.h"
#include "util.h"
#include "util/strbuf.h"

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

/* the main comparison in one sentence: losses, efficiency and the compute saving */
static void html_key_result(Results *R, Strbuf *b) {
    const cJSON *c, *main_c = NULL;
    cJSON_ArrayForEach(c, res_arr(R, R->root, "comparisons")) {
        const char *sw = res_str(R, c, "sweep");
        if (sw && strcmp(sw, "main") == 0) {
            main_c = c;
            break;
        }
    }
    if (!main_c) return;
    char e[256], u[256], m[256], eff[1024];
    stat_cell(R, e, sizeof e, res_obj(R, main_c, "fixed_E"));
    stat_cell(R, u, sizeof u, res_obj(R, main_c, "upcycled"));
    stat_cell(R, m, sizeof m, res_obj(R, main_c, "fixed_mE"));
    int undef = eff_cell(R, eff, sizeof eff, res_obj(R, main_c, "efficiency"));
    sb_put(b, "<div class=\"key\"><b>Main result");
    const char *label = res_str(R, main_c, "label");
    if (label) {
        sb_put(b, " (");
        sb_put_escaped(b, label);
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
    const cJSON *k = res_obj(R, main_c, "compute");
    double sv = res_num(R, k, "saving_pct");
    if (isfinite(sv)) {
        if (sv >= 0) sb_printf(b, "; upcycling saves %s%% of Fixed-mE\xe2\x80\x99s measured seconds", fmt_fixed(sv, 1).s);
        else sb_printf(b, "; upcycling takes %s%% more measured seconds than Fixed-mE", fmt_fixed(-sv, 1).s);
        double sk = res_num(R, k, "sunk_cost_saving_pct");
        if (isfinite(sk)) sb_printf(b, " (%s%% if the source checkpoint already exists)", fmt_fixed(sk, 1).s);
        const cJSON *mod = res_obj(R, k, "modeled");
        double ms = res_num(R, mod, "saving_pct");
        if (mod && isfinite(ms)) {
            sb_printf(b, "; modeled where you train (%s, t_mE/t_E = %s): upcycling %s %s%%", str_or(res_str(R, mod, "source"), DASH),
                      fmt_sig(res_num(R, mod, "ratio_t_mE_over_t_E"), 3).s, ms >= 0 ? "saves" : "takes more by", fmt_fixed(fabs(ms), 1).s);
        }
    }
    sb_put(b, ".</div>\n");
}

/* fields of the wrong type met while rendering: the report shows them as absent and says so */
static void html_problems(Results *R, Strbuf *b) {
    if (!R->n_problems) return;
    sb_put(b, "<h2>Problems</h2>\n<p>Fields of the wrong type in this file, shown as absent (" DASH "):</p>\n<ul>\n");
    for (const char *p = R->problems.s, *e; p && (e = strchr(p, '\n')); p = e + 1) {
        sb_put(b, "<li>");
        char line[1200];
        snprintf(line, sizeof line, "%.*s", (int)(e - p), p);
        sb_put_escaped(b, line);
        sb_put(b, "</li>\n");
    }
    sb_put(b, "</ul>\n");
}

static void build_html(Results *R, Strbuf *b) {
    const cJSON *root = R->root;
    const char *preset = res_str(R, root, "preset");
    sb_put(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
              "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>upcycle report");
    if (preset) {
        sb_put(b, " \xe2\x80\x94 ");
        sb_put_escaped(b, preset);
    }
    sb_put(b, "</title>\n<style>\n");
    sb_put(b, CSS);
    sb_put(b, "</style>\n</head>\n<body>\n<main>\n<h1>Expert Upcycling report</h1>\n<p class=\"sub\">Generated by <code>upcycle</code> from <code>");
    sb_put_escaped(b, R->path);
    sb_put(b, "</code></p>\n");

    /* 1. header */
    Strbuf model = {0}, budget = {0}, runs = {0};
    model_summary(R, &model), budget_summary(R, &budget), runs_summary(R, &runs);
    sb_put(b, "<table class=\"meta\">\n");
    html_meta_row(b, "Preset", preset);
    html_meta_row(b, "Data", res_str(R, root, "data"));
    html_meta_row(b, "Machine", res_str(R, root, "machine"));
    html_meta_row(b, "Base model", model.s);
    html_meta_row(b, "Training budget", budget.s);
    html_meta_row(b, "Runs", runs.s);
    sb_put(b, "</table>\n");
    sb_free(&model), sb_free(&budget), sb_free(&runs);
    html_key_result(R, b);

    /* 2. tables */
    sb_put(b, "<h2>Results</h2>\n<p>Final validation loss as <i>mean " PM " std (n seeds)</i>; efficiency as <i>mean [95% CI]</i> in percent. "
              "Compute: measured seconds per step of the small (t_E) and grown (t_mE) model and total seconds per arm.</p>\n");
    tables_html(R, b);

    /* 3. plots */
    sb_put(b, "<h2>Plots</h2>\n");
    figures_html(R, b);

    /* all runs */
    runs_table_html(R, b);

    /* 4. notes and how to read */
    sb_put(b, "<h2>Notes</h2>\n");
    const cJSON *notes = res_arr(R, root, "notes");
    int nn = 0;
    for (int i = 0; i < cJSON_GetArraySize(notes); i++) nn += res_elem_str(R, notes, "notes", i) != NULL;
    if (nn) {
        sb_put(b, "<ul>\n");
        for (int i = 0; i < cJSON_GetArraySize(notes); i++) {
            const char *note = res_elem_str(R, notes, "notes", i);
            if (!note) continue;
            sb_put(b, "<li>");
            sb_put_escaped(b, note);
            sb_put(b, "</li>\n");
        }
        sb_put(b, "</ul>\n");
    } else sb_put(b, "<p>No notes.</p>\n");
    html_problems(R, b);
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
    Results R;
    if (results_load(&R, results_json_path)) return -1;
    Strbuf b = {0};
    build_html(&R, &b);
    int rc = atomic_write_file(html_path, b.s, b.len);
    sb_free(&b);
    results_free(&R);
    return rc;
}

int report_print_tables(const char *results_json_path, FILE *out) {
    Results R;
    if (results_load(&R, results_json_path)) return -1;
    const cJSON *root = R.root;
    Strbuf b = {0}, model = {0}, budget = {0}, runs = {0};
    sb_printf(&b, "Expert Upcycling report: %s\n", results_json_path);
    sb_printf(&b, "preset: %s   data: %s\nmachine: %s\n", str_or(res_str(&R, root, "preset"), DASH), str_or(res_str(&R, root, "data"), DASH),
              str_or(res_str(&R, root, "machine"), DASH));
    model_summary(&R, &model), budget_summary(&R, &budget), runs_summary(&R, &runs);
    sb_printf(&b, "base model: %s\n", model.len ? model.s : DASH);
    sb_printf(&b, "training budget: %s\n", budget.len ? budget.s : DASH);
    sb_printf(&b, "runs: %s\n", runs.s);
    sb_free(&model), sb_free(&budget), sb_free(&runs);
    sb_put(&b, "Values: final validation loss, mean " PM " std (n seeds); Eff. %: mean [95% CI].\n");
    tables_text(&R, &b);
    runs_table_text(&R, &b);
    const cJSON *notes = res_arr(&R, root, "notes");
    int first = 1;
    for (int i = 0; i < cJSON_GetArraySize(notes); i++) {
        const char *note = res_elem_str(&R, notes, "notes", i);
        if (!note) continue;
        if (first) sb_put(&b, "\nNotes:\n");
        first = 0;
        sb_printf(&b, "- %s\n", note);
    }
    if (R.n_problems) {
        sb_put(&b, "\nProblems (fields of the wrong type, shown as absent):\n");
        for (const char *p = R.problems.s, *e; p && (e = strchr(p, '\n')); p = e + 1) sb_printf(&b, "- %.*s\n", (int)(e - p), p);
    }
    int rc = 0;
    if (b.len && fwrite(b.s, 1, b.len, out) != b.len) rc = up_error("%s: cannot write the tables; expected a writable output stream", results_json_path);
    fflush(out);
    sb_free(&b);
    results_free(&R);
    return rc;
}
