/* report_tables.h - the report's tables, laid out like the paper's: per sweep a comparison
 * table (three arms, paired gap, efficiency), a per-seed table and a compute table; the
 * list of all runs; and the one-line summaries of the header. Each renders as HTML or as
 * aligned plain text (UTF-8, columns separated by " | ").
 *
 * Internal to the report (report.h is the public API). Cells hold what the file has, DASH
 * for what it lacks; all HTML text is escaped. Appends to the caller's Strbuf. */
#ifndef UPCYCLE_REPORT_TABLES_H
#define UPCYCLE_REPORT_TABLES_H

#include <stddef.h>

#include "experiment/report_results.h"
#include "util/strbuf.h"

/* per sweep (collect_sweeps order): heading, comparison / per-seed / compute tables and,
 * for "init" (or at the end when there is no init sweep), the Spearman line */
void tables_html(Results *R, Strbuf *b);
void tables_text(Results *R, Strbuf *b);
/* all runs, failed ones marked; nothing when there are no runs */
void runs_table_html(Results *R, Strbuf *b);
void runs_table_text(Results *R, Strbuf *b);

/* cells and lines the page header reuses */
void stat_cell(Results *R, char *out, size_t n, const cJSON *stat); /* "2.1000 ± 0.0100 (3)" */
/* "92.3 [80.1, 101.2]", or the reason it is undefined (then returns 1) */
int eff_cell(Results *R, char *out, size_t n, const cJSON *eff);
/* appended to b (nothing when the file has no such data) */
void model_summary(Results *R, Strbuf *b);  /* "hidden_size 128 · 4 layers ..." */
void budget_summary(Results *R, Strbuf *b); /* "300 steps × 16 seq × 128 tokens/step ..." */
void runs_summary(Results *R, Strbuf *b);   /* "12 (11 done, 1 failed); sweeps: main, ..." */
void spearman_line(Results *R, Strbuf *b);  /* "Spearman ρ = 0.500 (n = 6): ..." */

#endif
