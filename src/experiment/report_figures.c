/* report_figures.c - see report_figures.h. Each plot_* reads what it draws from results.json
 * (through report_curves.h for the training curves) and appends one <figure>. */
#include "experiment/report_figures.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiment/report_curves.h"
#include "experiment/report_tables.h"
#include "util.h"
#include "util/svgplot.h"

typedef struct {
    Results *R;
    int next_id; /* figure ids on the page: clip paths and gradients need unique names */
} Ctx;

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
    plot_begin(&p, ++cx->next_id,
               zoom ? "(a\xe2\x80\xb2) Validation loss after growth (zoom)" : "(a) Validation loss vs step \xe2\x80\x94 main sweep",
               "training step", "validation loss", zoom ? xstart : fmin(0, xlo), xhi, ylo - pad, yhi + pad);
    if (zoom && p.x0 < xstart - 1e-9) { /* keep the zoom tight: start at the first tick >= xstart */
        double t = ceil(xstart / p.xstep - 1e-9) * p.xstep;
        if (t < p.x1) p.x0 = t;
    }
    for (int i = 0; i < ns; i++) plot_band(&p, s[i].step, s[i].lo, s[i].hi, s[i].n, s[i].color, 0.16);
    for (int i = 0; i < ns; i++) {
        plot_line(&p, s[i].step, s[i].mean, s[i].n, s[i].color, 2.2, s[i].dash, 1);
        plot_legend(&p, s[i].name, s[i].color, s[i].dash, PLOT_LEGEND_LINE);
    }
    growth_lines(&p, gsteps, ng, gsteps);
    int multi = 0;
    for (int i = 0; i < ns; i++) multi |= s[i].nruns > 1;
    if (multi) plot_legend(&p, "min\xe2\x80\x93max over seeds", "#888", NULL, PLOT_LEGEND_BAND);
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
    Results *R = cx->R;
    const cJSON *fr = res_arr(R, R->root, "frontier");
    const char *key = which == X_FLOPS ? "flops" : "seconds";
    Series fs[32];
    int nf = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, fr) {
        if (nf == 32) break;
        const cJSON *xa = res_arr(R, e, key), *ya = res_arr(R, e, "val_loss");
        int n = cJSON_GetArraySize(xa), m = cJSON_GetArraySize(ya);
        if (m < n) n = m;
        if (n <= 0) continue;
        Series *f = &fs[nf];
        memset(f, 0, sizeof *f);
        series_alloc(f, n);
        int good = 0;
        for (int k = 0; k < n; k++) {
            double xv = res_elem_num(R, xa, key, k), yv = res_elem_num(R, ya, "val_loss", k);
            f->step[k] = NAN;
            f->flops[k] = f->secs[k] = xv;
            f->mean[k] = yv;
            f->lo[k] = f->hi[k] = NAN;
            good += isfinite(xv) && isfinite(yv);
        }
        if (!good) {
            series_free(f);
            continue;
        }
        f->arm = res_str(R, e, "arm");
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
    plot_begin(&p, ++cx->next_id,
               which == X_FLOPS ? "(b) Validation loss vs cumulative FLOPs" : "(c) Validation loss vs measured seconds",
               which == X_FLOPS ? "cumulative training FLOPs" : "wall-clock training seconds", "validation loss", 0, xhi,
               ylo - pad, yhi + pad);
    for (int i = 0; i < nu && i < 64; i++) {
        if (!good[i]) continue;
        plot_line(&p, series_x(&use[i], which), use[i].mean, use[i].n, use[i].color, 2.2, use[i].dash, 1);
        const double *x = series_x(&use[i], which);
        for (int k = 0; k < use[i].n; k++) plot_marker(&p, x[k], use[i].mean[k], use[i].color, 0, 2.2);
        plot_legend(&p, use[i].name, use[i].color, use[i].dash, PLOT_LEGEND_LINE);
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
    Results *R = cx->R;
    typedef struct {
        double x, m, lo, hi;
        int defined;
        const char *reason, *label;
    } EP;
    EP pts[64];
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, res_arr(R, R->root, "comparisons")) {
        const char *sw = res_str(R, c, "sweep");
        double x;
        if (!sw || strcmp(sw, sweep) != 0 || !isfinite(x = res_num(R, c, "x")) || n == 64) continue;
        const cJSON *eff = res_obj(R, c, "efficiency");
        if (!eff) continue;
        EP *e = &pts[n++];
        e->x = x, e->label = res_str(R, c, "label");
        e->defined = res_bool(R, eff, "defined", 1) && isfinite(e->m = res_num(R, eff, "mean"));
        e->reason = res_str(R, eff, "reason");
        e->lo = e->hi = NAN;
        const cJSON *ci = res_arr(R, eff, "ci95");
        if (ci && cJSON_GetArraySize(ci) == 2) {
            e->lo = res_elem_num(R, ci, "ci95", 0);
            e->hi = res_elem_num(R, ci, "ci95", 1);
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
    plot_begin(&p, ++cx->next_id, title,
               is_cpt ? "continued pre-training, fraction of pre-training steps"
                      : strcmp(sweep, "timing") == 0 ? "growth step \xcf\x84 as a fraction of training" : "x",
               "upcycling efficiency (%)", 0, xhi, ylo, yhi);
    double strip_top = p.y0 + 0.10 * (p.y1 - p.y0), strip_mid = p.y0 + 0.05 * (p.y1 - p.y0);
    if (nundef) {
        sb_printf(&p.body, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#f1f1f1\"/>\n", p.L, plot_y(&p, strip_top), p.pw,
                plot_y(&p, p.y0) - plot_y(&p, strip_top));
    }
    plot_hline(&p, 100, "100% = as good as Fixed-mE");
    plot_hline(&p, 0, "0% = no better than Fixed-E");
    if (is_cpt) {
        plot_line(&p, paper_x, paper_y, 5, "#999", 1.5, "4 3", 1);
        for (int i = 0; i < 5; i++) plot_marker(&p, paper_x[i], paper_y[i], "#999", 0, 2.5);
        plot_legend(&p, "paper, 7B\xe2\x86\x92" "13B scale (shape only)", "#999", "4 3", PLOT_LEGEND_LINE);
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
    if (nl) plot_legend(&p, "measured (mean, 95% CI)", col, NULL, PLOT_LEGEND_DOT);
    if (nundef) plot_legend(&p, "undefined (see note)", col, NULL, PLOT_LEGEND_RING);
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
static const cJSON *pick_run(Results *R, const char *what) {
    const cJSON *best = NULL;
    int best_score = -1;
    const cJSON *r;
    cJSON_ArrayForEach(r, res_arr(R, R->root, "runs")) {
        int has;
        if (strcmp(what, "load") == 0) {
            const cJSON *d = res_obj(R, r, "load");
            has = cJSON_GetArraySize(res_arr(R, d, "layers")) > 0 && cJSON_GetArraySize(res_arr(R, d, "steps")) > 0;
        } else has = cJSON_GetArraySize(res_arr(R, r, "diag")) > 0;
        if (!has) continue;
        const char *arm = res_str(R, r, "arm"), *sw = res_str(R, r, "sweep");
        int score = (arm && strcmp(arm, "upcycled") == 0) * 4 + (sw && strcmp(sw, "main") == 0) * 2 + run_done(R, r);
        if (score > best_score) best = r, best_score = score;
    }
    return best;
}

/* (e) per-layer load imbalance over steps for one run */
static void plot_load_heatmap(Ctx *cx, Strbuf *out) {
    Results *R = cx->R;
    const cJSON *run = pick_run(R, "load");
    if (!run) return;
    const cJSON *ld = res_obj(R, run, "load");
    const cJSON *layers = res_arr(R, ld, "layers"), *steps = res_arr(R, ld, "steps"), *imb = res_arr(R, ld, "imbalance");
    int nr = cJSON_GetArraySize(layers), nc = cJSON_GetArraySize(steps);
    if (nr <= 0 || nc <= 0 || !imb) return;
    if (nr > 256) nr = 256;
    double *val = xmalloc(sizeof(double) * (size_t)nr * (size_t)nc);
    double *stp = xmalloc(sizeof(double) * (size_t)nc);
    double vmin = INFINITY, vmax = -INFINITY;
    for (int c = 0; c < nc; c++)
        stp[c] = res_elem_num(R, steps, "steps", c);
    for (int r = 0; r < nr; r++) {
        const cJSON *row = res_elem_arr(R, imb, "imbalance", r);
        for (int c = 0; c < nc; c++) {
            double v = res_elem_num(R, row, "imbalance[]", c);
            val[r * nc + c] = v;
            if (isfinite(v)) vmin = fmin(vmin, v), vmax = fmax(vmax, v);
        }
    }
    if (!(vmin <= vmax)) {
        free(val), free(stp);
        return;
    }
    if (vmax - vmin < 1e-9) vmax = vmin + 0.1;
    double W = 560, L = 66, Rm = 92, T = 40; /* Rm: the right margin holds the color scale */
    double pw = W - L - Rm;
    double cellh = 200.0 / nr;
    if (cellh > 44) cellh = 44;
    if (cellh < 10) cellh = 10;
    double ph = cellh * nr;
    if (ph < 100) ph = 100, cellh = ph / nr;
    double H = T + ph + 52;
    double cw = pw / nc;
    const char *id = str_or(res_str(R, run, "id"), "?");
    char title[300];
    snprintf(title, sizeof title, "(e) Expert load imbalance (max/mean) per layer");
    sb_put(out, "<figure>\n");
    svg_open(out, W, H, title);
    char col[16];
    for (int r = 0; r < nr; r++) {
        double layer = res_elem_num(R, layers, "layers", r);
        double y = T + r * cellh;
        for (int c = 0; c < nc; c++) {
            double v = val[r * nc + c];
            if (isfinite(v)) plot_viridis((v - vmin) / (vmax - vmin), col, sizeof col);
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
    const cJSON *growth = res_arr(R, run, "growth_steps");
    for (int i = 0; i < cJSON_GetArraySize(growth); i++) {
        double gs = res_elem_num(R, growth, "growth_steps", i);
        if (!isfinite(gs)) continue;
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
        plot_viridis(i / 8.0, col, sizeof col);
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
    Results *R = cx->R;
    const cJSON *run = pick_run(R, "diag");
    if (!run) return;
    const cJSON *d = res_arr(R, run, "diag");
    double layers[16];
    int nl = 0;
    const cJSON *e;
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    cJSON_ArrayForEach(e, d) {
        double l, st, a, b;
        if (!isfinite(l = res_num(R, e, "layer")) || !isfinite(st = res_num(R, e, "step"))) continue;
        int ha = isfinite(a = res_num(R, e, "replica_cosine_mean")), hb = isfinite(b = res_num(R, e, "cosine_to_source_mean"));
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
    double gstep = res_elem_num(R, res_arr(R, run, "growth_steps"), "growth_steps", 0);
    if (isfinite(gstep)) xlo = fmin(xlo, gstep);
    double span = fmax(yhi - ylo, 0.01);
    Plot p;
    plot_begin(&p, ++cx->next_id, "(f) Replica similarity during continued pre-training", "training step", "cosine similarity", xlo, xhi,
               ylo - 0.05 * span, yhi <= 1.0 ? 1.0 : yhi + 0.02 * span);
    int cap = cJSON_GetArraySize(d);
    DiagPt *pt = xmalloc(sizeof(DiagPt) * ((size_t)cap + 1));
    double *xs = xmalloc(sizeof(double) * ((size_t)cap + 1)), *ys = xmalloc(sizeof(double) * ((size_t)cap + 1));
    for (int li = 0; li < nl; li++) {
        int n = 0;
        cJSON_ArrayForEach(e, d) {
            double l, st;
            if (!isfinite(l = res_num(R, e, "layer")) || l != layers[li] || !isfinite(st = res_num(R, e, "step"))) continue;
            pt[n].step = st;
            pt[n].rc = res_num(R, e, "replica_cosine_mean");
            pt[n].cs = res_num(R, e, "cosine_to_source_mean");
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
            plot_legend(&p, name, col, dash, PLOT_LEGEND_LINE);
        }
    }
    free(pt), free(xs), free(ys);
    if (isfinite(gstep)) {
        double gs[1] = {gstep};
        growth_lines(&p, gs, 1, gs);
    }
    Strbuf capb = {0};
    sb_put(&capb, "Run ");
    sb_put(&capb, str_or(res_str(R, run, "id"), "?"));
    sb_put(&capb, ". Solid: mean pairwise cosine between replicas of the same source expert (replica_cosine_mean); dashed: mean "
                "cosine of each replica to its source expert (cosine_to_source_mean). 1.0 = still identical copies; "
                "falling lines = the replicas specialize.");
    plot_end(&p, out, capb.s);
    sb_free(&capb);
}

/* (g) training loss of every init-sweep run */
static void plot_init(Ctx *cx, Strbuf *out) {
    Results *R = cx->R;
    Groups gs;
    collect_groups(R, "init", &gs);
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
            series_from_runs(R, &s[ns], &gs.g[i].runs[r], 1, "loss");
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
    plot_begin(&p, ++cx->next_id, "(g) Training loss of the init-sweep runs", "training step", "training loss", fmin(0, xlo), xhi, ylo - pad,
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
        plot_legend(&p, name, gcol[i], NULL, PLOT_LEGEND_LINE);
    }
    double g[8];
    int ng = sweep_growth_steps(R, "init", g, 8);
    growth_lines(&p, g, ng, g);
    Strbuf cap = {0};
    sb_put(&cap, "One thin line per run (training loss as logged; not averaged). ");
    size_t before = cap.len;
    spearman_line(R, &cap);
    if (cap.len > before) sb_put(&cap, ".");
    plot_end(&p, out, cap.s);
    sb_free(&cap);
    for (int i = 0; i < ns; i++) series_free(&s[i]);
    free(s), free(grp);
    groups_free(&gs);
}

void figures_html(Results *R, Strbuf *b) {
    Ctx ctx = {R, 0}, *cx = &ctx;
    Strbuf fig = {0};
    Groups gs;
    collect_groups(R, "main", &gs);
    if (gs.n) {
        Series s[64];
        int ns = build_series(&gs, R, "val_loss", s);
        double g[8];
        int ng = sweep_growth_steps(R, "main", g, 8);
        if (ns) {
            plot_main_vs_step(cx, &fig, s, ns, g, ng, 0);
            plot_main_vs_step(cx, &fig, s, ns, g, ng, 1);
            plot_main_vs_compute(cx, &fig, s, ns, g, ng, X_FLOPS);
            plot_main_vs_compute(cx, &fig, s, ns, g, ng, X_SECS);
        }
        for (int i = 0; i < ns; i++) series_free(&s[i]);
    } else if (cJSON_GetArraySize(res_arr(R, R->root, "frontier")) > 0) {
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