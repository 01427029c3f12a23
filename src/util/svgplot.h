/* svgplot.h - a small kit for line/marker plots as inline SVG: axes with "nice" ticks, a
 * clipped data layer, reference lines, labels and a legend. It knows nothing of what is
 * plotted (the experiment's figures are built on it in experiment/report_figures.c).
 *
 * Use: plot_begin (sets the data ranges, rounded out to whole tick steps), draw into the
 * plot with plot_line/band/marker/... (data coordinates; non-finite points are skipped),
 * add legend rows, then plot_end appends one <figure> (the SVG and a caption) to a Strbuf.
 * Guarantees: all text (titles, labels, legend names, captions) is XML-escaped; numbers are
 * printed with %.1f, so the output is deterministic; drawing is clipped to the plot area.
 * Ownership: a Plot copies its title, axis labels and legend names (bounded, whole UTF-8
 * characters); color and dash strings are kept as pointers and must outlive plot_end (pass
 * literals). plot_end frees the Plot's drawing buffer; a Plot is not reused after it. */
#ifndef UPCYCLE_UTIL_SVGPLOT_H
#define UPCYCLE_UTIL_SVGPLOT_H

#include <stddef.h>

#include "util/strbuf.h"

/* legend swatches */
enum { PLOT_LEGEND_LINE = 0, PLOT_LEGEND_DOT = 1, PLOT_LEGEND_RING = 2, PLOT_LEGEND_BAND = 3 };

typedef struct {
    char name[240];
    const char *color;
    const char *dash; /* SVG stroke-dasharray ("7 3"); NULL: solid */
    int kind;         /* PLOT_LEGEND_* */
} PlotLegend;

typedef struct {
    Strbuf body;                 /* the data layer, drawn inside the clip path */
    double x0, x1, y0, y1;       /* axis range (after rounding to ticks); may be narrowed before plot_end */
    double xstep, ystep;
    int xexp, yexp;              /* tick labels show v / 10^exp (exp > 0 only for |v| >= 1e5) */
    double W, L, R, T, pw, ph;   /* width; plot area [L, L+pw] x [T, T+ph] in SVG units */
    int id;                      /* unique per page: names the clip path */
    PlotLegend leg[40];
    int nleg;
    char title[200], xlabel[120], ylabel[120];
} Plot;

/* The tick step for about `target` ticks over range: 1, 2 or 5 times a power of ten
 * (1 when range is not a positive finite number). */
double plot_nice_step(double range, int target);
/* The axis for data in [lo, hi]: [*a0, *a1] rounded out to multiples of *step; an empty
 * range is widened by 5% of |hi| (0.5 when hi is 0), non-finite ends become [0, 1]. *expo is
 * the power of ten the tick labels are divided by (0 below 1e5). */
void plot_axis_range(double lo, double hi, int target, double *a0, double *a1, double *step, int *expo);
/* v / 10^expo with as many decimals as the step needs (at most 6); "0" for rounding noise */
void plot_tick_label(char *out, size_t n, double v, double step, int expo);

/* a 560 x ~360 plot; id must be unique on the page (it names the clip path) */
void plot_begin(Plot *p, int id, const char *title, const char *xlabel, const char *ylabel, double xmin, double xmax,
                double ymin, double ymax);
double plot_x(const Plot *p, double x); /* data -> SVG coordinates */
double plot_y(const Plot *p, double y);
void plot_legend(Plot *p, const char *name, const char *color, const char *dash, int kind); /* at most 40 rows */
/* a polyline through the finite points (x, y are n long); a non-finite point breaks the line */
void plot_line(Plot *p, const double *x, const double *y, int n, const char *color, double width, const char *dash,
               double opacity);
/* a filled band between lo and hi, one polygon per run of finite points */
void plot_band(Plot *p, const double *x, const double *lo, const double *hi, int n, const char *color, double opacity);
void plot_marker(Plot *p, double x, double y, const char *color, int hollow, double r);
void plot_errbar(Plot *p, double x, double lo, double hi, const char *color);
void plot_vline(Plot *p, double x, const char *label); /* dashed, with a label at the top (NULL/"": none) */
void plot_hline(Plot *p, double y, const char *label);
/* text at data (x, y) shifted by (dx, dy) SVG units; anchor: "start", "middle" or "end" */
void plot_text(Plot *p, double x, double y, double dx, double dy, const char *anchor, const char *color, const char *s);
/* appends <figure><svg>frame, grid, ticks, data, axis labels, legend</svg><figcaption>caption</figcaption></figure>
 * (no figcaption when caption is NULL or empty); frees p->body */
void plot_end(Plot *p, Strbuf *out, const char *caption);

/* For figures drawn without the axes (a heat map): the <svg> start tag, white background
 * and centered title; the caller appends the rest and "</svg>". */
void svg_open(Strbuf *b, double W, double H, const char *title);
/* the viridis color map at t in [0, 1] (clamped; NaN reads as 0): "#rrggbb" into out (>= 8 bytes) */
void plot_viridis(double t, char *out, size_t n);

#endif
