/* svgplot.c - see svgplot.h. Layout constants (margins, font sizes, legend row height) are
 * fixed here so every figure of a page has the same look. */
#include "util/svgplot.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

double plot_nice_step(double range, int target) {
    if (!(range > 0) || !isfinite(range)) return 1;
    double raw = range / target, mag = pow(10, floor(log10(raw))), f = raw / mag;
    double s = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    return s * mag;
}

void plot_axis_range(double lo, double hi, int target, double *a0, double *a1, double *step, int *expo) {
    if (!isfinite(lo) || !isfinite(hi)) lo = 0, hi = 1;
    if (hi < lo) {
        double t = lo;
        lo = hi, hi = t;
    }
    if (hi - lo < 1e-12 * fmax(1, fabs(hi))) {
        double d = fabs(hi) > 0 ? fabs(hi) * 0.05 : 0.5;
        lo -= d, hi += d;
    }
    *step = plot_nice_step(hi - lo, target);
    *a0 = floor(lo / *step + 1e-9) * *step;
    *a1 = ceil(hi / *step - 1e-9) * *step;
    double m = fmax(fabs(*a0), fabs(*a1));
    *expo = m >= 1e5 ? (int)floor(log10(m)) : 0;
}

void plot_tick_label(char *out, size_t n, double v, double step, int expo) {
    double sc = pow(10, expo);
    double s = step / sc;
    int dec = s >= 1 ? 0 : (int)ceil(-log10(s) - 1e-9);
    if (dec > 6) dec = 6;
    double x = v / sc;
    if (fabs(x) < s * 1e-6) x = 0;
    snprintf(out, n, "%.*f", dec, x);
}

double plot_x(const Plot *p, double x) { return p->L + (x - p->x0) / (p->x1 - p->x0) * p->pw; }
double plot_y(const Plot *p, double y) { return p->T + p->ph - (y - p->y0) / (p->y1 - p->y0) * p->ph; }

void plot_begin(Plot *p, int id, const char *title, const char *xlabel, const char *ylabel, double xmin,
                double xmax, double ymin, double ymax) {
    memset(p, 0, sizeof *p);
    p->id = id;
    utf8_copy(p->title, sizeof p->title, title);
    utf8_copy(p->xlabel, sizeof p->xlabel, xlabel);
    utf8_copy(p->ylabel, sizeof p->ylabel, ylabel);
    plot_axis_range(xmin, xmax, 6, &p->x0, &p->x1, &p->xstep, &p->xexp);
    plot_axis_range(ymin, ymax, 6, &p->y0, &p->y1, &p->ystep, &p->yexp);
    p->W = 560, p->L = 66, p->R = 18, p->T = 40;
    p->pw = p->W - p->L - p->R;
    p->ph = 270;
}

void plot_legend(Plot *p, const char *name, const char *color, const char *dash, int kind) {
    if (p->nleg >= 40) return;
    PlotLegend *it = &p->leg[p->nleg++];
    utf8_copy(it->name, sizeof it->name, name);
    it->color = color, it->dash = dash, it->kind = kind;
}

static void dash_attr(Strbuf *b, const char *dash) {
    if (dash && *dash) sb_printf(b, " stroke-dasharray=\"%s\"", dash);
}

/* a polyline through the finite points; non-finite points break it into pieces */
void plot_line(Plot *p, const double *x, const double *y, int n, const char *color, double width,
                      const char *dash, double opacity) {
    int open = 0;
    for (int i = 0; i <= n; i++) {
        int ok = i < n && isfinite(x[i]) && isfinite(y[i]);
        if (ok) {
            double X = plot_x(p, x[i]), Y = plot_y(p, y[i]);
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
void plot_band(Plot *p, const double *x, const double *lo, const double *hi, int n, const char *color,
                      double opacity) {
    int i = 0;
    while (i < n) {
        while (i < n && !(isfinite(x[i]) && isfinite(lo[i]) && isfinite(hi[i]))) i++;
        int j = i;
        while (j < n && isfinite(x[j]) && isfinite(lo[j]) && isfinite(hi[j])) j++;
        if (j - i >= 2) {
            sb_printf(&p->body, "<polygon fill=\"%s\" fill-opacity=\"%.2f\" stroke=\"none\" points=\"", color, opacity);
            for (int k = i; k < j; k++) sb_printf(&p->body, "%.1f,%.1f ", plot_x(p, x[k]), plot_y(p, hi[k]));
            for (int k = j - 1; k >= i; k--) sb_printf(&p->body, "%.1f,%.1f ", plot_x(p, x[k]), plot_y(p, lo[k]));
            sb_put(&p->body, "\"/>\n");
        }
        i = j;
    }
}

void plot_marker(Plot *p, double x, double y, const char *color, int hollow, double r) {
    if (!isfinite(x) || !isfinite(y)) return;
    if (hollow)
        sb_printf(&p->body, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"#fff\" stroke=\"%s\" stroke-width=\"1.8\"/>\n",
                plot_x(p, x), plot_y(p, y), r, color);
    else
        sb_printf(&p->body, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\" stroke=\"#fff\" stroke-width=\"0.8\"/>\n",
                plot_x(p, x), plot_y(p, y), r, color);
}

void plot_errbar(Plot *p, double x, double lo, double hi, const char *color) {
    if (!isfinite(x) || !isfinite(lo) || !isfinite(hi)) return;
    double X = plot_x(p, x), Y0 = plot_y(p, lo), Y1 = plot_y(p, hi);
    sb_printf(&p->body,
            "<path d=\"M%.1f %.1fV%.1fM%.1f %.1fH%.1fM%.1f %.1fH%.1f\" stroke=\"%s\" stroke-width=\"1.5\" fill=\"none\"/>\n", X,
            Y0, Y1, X - 5, Y0, X + 5, X - 5, Y1, X + 5, color);
}

/* dashed vertical line at data x with a small label at the top */
void plot_vline(Plot *p, double x, const char *label) {
    if (!isfinite(x) || x < p->x0 || x > p->x1) return;
    double X = plot_x(p, x);
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

void plot_hline(Plot *p, double y, const char *label) {
    if (!isfinite(y) || y < p->y0 || y > p->y1) return;
    double Y = plot_y(p, y);
    sb_printf(&p->body, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#888\" stroke-width=\"1\" stroke-dasharray=\"3 3\"/>\n",
            p->L, Y, p->L + p->pw, Y);
    if (label && *label) {
        sb_printf(&p->body, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#666\">", p->L + 5, Y - 4);
        sb_put_escaped(&p->body, label);
        sb_put(&p->body, "</text>\n");
    }
}

void plot_text(Plot *p, double x, double y, double dx, double dy, const char *anchor, const char *color, const char *s) {
    if (!isfinite(x) || !isfinite(y)) return;
    sb_printf(&p->body, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"%s\" text-anchor=\"%s\">", plot_x(p, x) + dx, plot_y(p, y) + dy,
            color, anchor);
    sb_put_escaped(&p->body, s);
    sb_put(&p->body, "</text>\n");
}

static void legend_swatch(Strbuf *b, const PlotLegend *it, double x, double y) {
    switch (it->kind) {
    case PLOT_LEGEND_DOT: sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>", x + 11, y, it->color); break;
    case PLOT_LEGEND_RING: sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"#fff\" stroke=\"%s\" stroke-width=\"1.8\"/>", x + 11, y, it->color); break;
    case PLOT_LEGEND_BAND: sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"22\" height=\"10\" fill=\"%s\" fill-opacity=\"0.25\"/>", x, y - 5, it->color); break;
    default:
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2.5\"", x, y, x + 22, y, it->color);
        dash_attr(b, it->dash);
        sb_put(b, "/>");
    }
}

/* legend rows below the axes; returns the height used */
static double legend_rows(Strbuf *b, const PlotLegend *leg, int n, double left, double right, double top) {
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

void svg_open(Strbuf *b, double W, double H, const char *title) {
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
void plot_end(Plot *p, Strbuf *out, const char *caption) {
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
        double X = plot_x(p, v);
        sb_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>", X, p->T, X, p->T + p->ph);
        sb_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>", X, p->T + p->ph, X, p->T + p->ph + 5);
        plot_tick_label(lab, sizeof lab, v, p->xstep, p->xexp);
        sb_printf(out, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\">%s</text>\n", X, p->T + p->ph + 18, lab);
    }
    for (int i = 0;; i++) {
        double v = p->y0 + i * p->ystep;
        if (v > p->y1 + p->ystep * 1e-6 || i > 100) break;
        double Y = plot_y(p, v);
        sb_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>", p->L, Y, p->L + p->pw, Y);
        sb_printf(out, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\"/>", p->L - 5, Y, p->L, Y);
        plot_tick_label(lab, sizeof lab, v, p->ystep, p->yexp);
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


void plot_viridis(double t, char *out, size_t n) {
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
