/* report.h - turn an experiment's results.json (docs/results-schema.md) into something a
 * person reads: a self-contained HTML report (tables laid out like the paper's, inline SVG
 * plots), a CSV with one row per run, and plain-text tables for the terminal.
 *
 * All three read the file with util/json.h and tolerate missing optional fields (null values,
 * absent arrays, runs without curves): what is absent is shown as "—" or its plot is
 * skipped. A field of the wrong type is shown as absent too, and the HTML and the text
 * tables list its error ("<file>: field <name>: ...; expected ...") under "Problems".
 * Invalid JSON or a missing "runs" array is an error naming the file.
 * Each returns 0 or -1 with up_error("<file>: <what>; expected <what>") set; files are
 * written atomically (a crash leaves the old file or none). */
#ifndef UPCYCLE_REPORT_H
#define UPCYCLE_REPORT_H

#include <stdio.h>

/* HTML: header (preset, data, machine, base model and budget), per-sweep comparison and
 * compute tables, plots (validation loss vs step / FLOPs / seconds for the main sweep,
 * efficiency vs CPT fraction, per-layer load imbalance heat-map, replica similarity,
 * init-sweep training curves), notes and a "how to read this" paragraph. No external
 * resources: inline CSS and SVG only. */
int report_write_html(const char *results_json_path, const char *html_path);

/* CSV, one row per run:
 * id,sweep,arm,label,x,seed,status,experts,growth_steps,final_val_loss,total_seconds,
 * total_flops,loss_before_growth,loss_after_growth
 * Lists (experts, growth_steps) are joined with ';' ("8;16"); null/absent values are empty
 * fields; fields holding a comma, quote or newline are quoted (RFC 4180). */
int report_write_csv(const char *results_json_path, const char *csv_path);

/* The HTML report's tables as aligned plain text (UTF-8) for the terminal. */
int report_print_tables(const char *results_json_path, FILE *out);

#endif
