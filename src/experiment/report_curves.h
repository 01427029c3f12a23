/* report_curves.h - training curves of results.json turned into plottable series: the runs
 * of a sweep grouped by (arm, label), and per group the mean / min / max over seeds of a
 * curve field at each step, with the mean cumulative FLOPs and seconds at that step.
 *
 * Internal to the report (report_figures.c draws them). Only finite values enter a series;
 * steps where no run of the group has a value are absent. Ownership: a Series owns its
 * arrays (series_free); Groups own their run lists (groups_free) but the runs, arms and
 * labels point into the Results tree. */
#ifndef UPCYCLE_REPORT_CURVES_H
#define UPCYCLE_REPORT_CURVES_H

#include "experiment/report_results.h"

/* one line on a plot: mean over seeds at each step, with min/max */
typedef struct {
    char name[200];   /* legend text: "upcycled (3 seeds)", "upcycled · label (3 seeds)" */
    const char *arm;
    const char *label;
    const char *color;
    const char *dash;
    int nruns;
    int n;            /* points; each array holds n (+1 spare) values, sorted by step */
    double *step, *mean, *lo, *hi, *flops, *secs;
    double growth;    /* first growth step of the group's runs, NAN if none */
} Series;

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

enum { X_STEP, X_FLOPS, X_SECS }; /* which x a series is plotted against */

void series_alloc(Series *s, int n);
void series_free(Series *s);
/* mean/min/max of curve[field] over runs (nr of them) at each step where it is a number */
void series_from_runs(Results *R, Series *s, const cJSON *const *runs, int nr, const char *field);
/* the finished (not failed) runs of a sweep, grouped, in arm order then by arm and label names */
void collect_groups(Results *R, const char *sweep, Groups *gs);
void groups_free(Groups *gs);
/* one Series per group with data (mean of `field` over seeds, arm colors, dashes for
 * several labels of one arm) into out (gs->n entries); returns the count */
int build_series(const Groups *gs, Results *R, const char *field, Series *out);
const double *series_x(const Series *s, int which);
/* y range of the series over points with x >= xcut (all points when that leaves fewer than
 * 3 per series); band: include the min/max. NAN, NAN when there is nothing. */
void series_yrange(const Series *s, int ns, int which, double xcut, int band, double *ylo, double *yhi);
void series_xrange(const Series *s, int ns, int which, double *xlo, double *xhi);
/* x position (in the chosen unit) of a growth step, interpolated on a curve-derived series */
double growth_x(const Series *s, int which, double step);
/* distinct growth steps of the runs of a sweep (at most max) */
int sweep_growth_steps(Results *R, const char *sweep, double *out, int max);

#endif
