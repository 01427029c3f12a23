/* report_figures.h - the report's figures, drawn with the SVG kit (util/svgplot.h):
 * (a) validation loss vs step for the main sweep and (a') its zoom after growth, (b) vs
 * cumulative FLOPs and (c) vs measured seconds, (d) upcycling efficiency vs CPT fraction and
 * vs transition point, (e) per-layer load imbalance heat map, (f) replica similarity during
 * continued pre-training, (g) training loss of the init-sweep runs.
 *
 * Internal to the report. A figure whose data is absent is left out; when none is drawn the
 * section says so. Every figure has a caption that says how to read it. */
#ifndef UPCYCLE_REPORT_FIGURES_H
#define UPCYCLE_REPORT_FIGURES_H

#include "experiment/report_results.h"
#include "util/strbuf.h"

/* the arm color key and a <div class="plots"> of figures, or a sentence when there is no data */
void figures_html(Results *R, Strbuf *b);

#endif
