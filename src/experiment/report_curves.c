/* report_curves.c - see report_curves.h. */
#include "experiment/report_curves.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct {
    double step, v, f, s;
} Pt;

static int pt_cmp(const void *a, const void *b) {
    double x = ((const Pt *)a)->step, y = ((const Pt *)b)->step;
    return x < y ? -1 : x > y;
}

void series_free(Series *s) {
    free(s->step), free(s->mean), free(s->lo), free(s->hi), free(s->flops), free(s->secs);
    s->step = s->mean = s->lo = s->hi = s->flops = s->secs = NULL;
    s->n = 0;
}

void series_alloc(Series *s, int n) {
    s->n = n;
    s->step = xcalloc((size_t)n + 1, sizeof(double));
    s->mean = xcalloc((size_t)n + 1, sizeof(double));
    s->lo = xcalloc((size_t)n + 1, sizeof(double));
    s->hi = xcalloc((size_t)n + 1, sizeof(double));
    s->flops = xcalloc((size_t)n + 1, sizeof(double));
    s->secs = xcalloc((size_t)n + 1, sizeof(double));
}

/* mean/min/max of curve[field] over runs at each step where it is a number */
void series_from_runs(Results *R, Series *s, const cJSON *const *runs, int nr, const char *field) {
    int cap = 0;
    for (int r = 0; r < nr; r++) cap += cJSON_GetArraySize(res_arr(R, runs[r], "curve"));
    Pt *pt = xmalloc(sizeof(Pt) * ((size_t)cap + 1));
    int np = 0;
    for (int r = 0; r < nr; r++) {
        const cJSON *c;
        cJSON_ArrayForEach(c, res_arr(R, runs[r], "curve")) {
            double st, v;
            if (!isfinite(st = res_num(R, c, "step")) || !isfinite(v = res_num(R, c, field))) continue;
            pt[np].step = st, pt[np].v = v;
            pt[np].f = res_num(R, c, "flops"), pt[np].s = res_num(R, c, "seconds");
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
        const cJSON *gs = res_arr(R, runs[r], "growth_steps");
        s->growth = res_elem_num(R, gs, "growth_steps", 0);
    }
}

static int group_cmp(const void *a, const void *b) {
    const Group *x = a, *y = b;
    int rx = arm_rank(x->arm), ry = arm_rank(y->arm);
    if (rx != ry) return rx - ry;
    int c = strcmp(str_or(x->arm, ""), str_or(y->arm, ""));
    if (c) return c;
    return strcmp(str_or(x->label, ""), str_or(y->label, ""));
}

void collect_groups(Results *R, const char *sweep, Groups *gs) {
    memset(gs, 0, sizeof *gs);
    const cJSON *r;
    cJSON_ArrayForEach(r, res_arr(R, R->root, "runs")) {
        const char *sw = res_str(R, r, "sweep");
        if (!sw || strcmp(sw, sweep) != 0 || !run_done(R, r)) continue;
        const char *arm = res_str(R, r, "arm"), *label = res_str(R, r, "label");
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

void groups_free(Groups *gs) {
    for (int i = 0; i < gs->n; i++) free(gs->g[i].runs);
    gs->n = 0;
}

static const char *const DASHES[] = {NULL, "7 3", "2 3", "9 3 2 3"};

/* one Series per group (mean of `field` over seeds); returns the count */
int build_series(const Groups *gs, Results *R, const char *field, Series *out) {
    int ns = 0;
    for (int i = 0; i < gs->n; i++) {
        const Group *g = &gs->g[i];
        Series *s = &out[ns];
        memset(s, 0, sizeof *s);
        series_from_runs(R, s, g->runs, g->n, field);
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

const double *series_x(const Series *s, int which) {
    return which == X_FLOPS ? s->flops : which == X_SECS ? s->secs : s->step;
}

/* y range of the series over points with x >= xcut (all points when that leaves none) */
void series_yrange(const Series *s, int ns, int which, double xcut, int band, double *ylo, double *yhi) {
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

void series_xrange(const Series *s, int ns, int which, double *xlo, double *xhi) {
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < ns; i++) {
        const double *x = series_x(&s[i], which);
        for (int k = 0; k < s[i].n; k++)
            if (isfinite(x[k]) && isfinite(s[i].mean[k])) lo = fmin(lo, x[k]), hi = fmax(hi, x[k]);
    }
    *xlo = lo, *xhi = hi;
}

/* x position (in the chosen unit) of a growth step, read off a curve-derived series */
double growth_x(const Series *s, int which, double step) {
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
int sweep_growth_steps(Results *R, const char *sweep, double *out, int max) {
    int n = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, res_arr(R, R->root, "runs")) {
        const char *sw = res_str(R, r, "sweep");
        if (!sw || strcmp(sw, sweep) != 0) continue;
        const cJSON *gs = res_arr(R, r, "growth_steps");
        for (int k = 0; k < cJSON_GetArraySize(gs); k++) {
            double v = res_elem_num(R, gs, "growth_steps", k);
            if (!isfinite(v)) continue;
            int seen = 0;
            for (int i = 0; i < n; i++) seen |= out[i] == v;
            if (!seen && n < max) out[n++] = v;
        }
    }
    return n;
}