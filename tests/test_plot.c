/* test_plot.c - the SVG plot kit (util/svgplot.h): tick steps, axis ranges, tick labels,
 * escaping of labels, and the elements of a small plot. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "test.h"
#include "util/svgplot.h"

static int count_of(const char *h, const char *needle) {
    int n = 0;
    for (const char *p = h; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

TEST(plot_nice_step_is_1_2_or_5_times_a_power_of_ten) {
    struct {
        double range;
        int target;
        double step;
    } cases[] = {
        {10, 6, 2},     /* 1.67 per tick -> 2 */
        {1, 6, 0.2},    /* 0.167 -> 0.2 */
        {0.7, 6, 0.1},  /* 0.117 -> 0.1 */
        {3.3, 6, 0.5},  /* 0.55 -> 0.5 */
        {40, 6, 5},     /* 6.67 -> 5 */
        {45, 6, 10},    /* 7.5 -> 10 */
        {1350, 6, 200}, /* 225 -> 200 */
        {2.5e9, 5, 5e8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        double s = plot_nice_step(cases[i].range, cases[i].target);
        CHECK_MSG(fabs(s - cases[i].step) <= 1e-12 * cases[i].step, "range %g target %d: step %g, expected %g", cases[i].range,
                  cases[i].target, s, cases[i].step);
    }
    /* not a positive finite range: a step of 1, never 0 or NaN */
    CHECK(plot_nice_step(0, 6) == 1);
    CHECK(plot_nice_step(-3, 6) == 1);
    CHECK(plot_nice_step(NAN, 6) == 1);
    CHECK(plot_nice_step(INFINITY, 6) == 1);
}

TEST(plot_axis_range_rounds_out_to_ticks_and_pads_empty_ranges) {
    double a0, a1, step;
    int expo;
    plot_axis_range(0.13, 0.87, 6, &a0, &a1, &step, &expo);
    CHECK_CLOSE(step, 0.1, 1e-12);
    CHECK_CLOSE(a0, 0.1, 1e-12);
    CHECK_CLOSE(a1, 0.9, 1e-12);
    CHECK(expo == 0);
    /* ends already on a tick stay there (no extra tick from rounding noise) */
    plot_axis_range(0, 1, 5, &a0, &a1, &step, &expo);
    CHECK_CLOSE(step, 0.2, 1e-12);
    CHECK(a0 == 0);
    CHECK_CLOSE(a1, 1.0, 1e-12);
    /* reversed ends are swapped */
    plot_axis_range(5, 1, 4, &a0, &a1, &step, &expo);
    CHECK_CLOSE(step, 1, 1e-12);
    CHECK(a0 == 1 && a1 == 5);
    /* an empty range is widened by 5% of |value| on each side ... */
    plot_axis_range(3, 3, 6, &a0, &a1, &step, &expo);
    CHECK(a0 < 3 && a1 > 3);
    CHECK_CLOSE(step, 0.05, 1e-12);
    CHECK_CLOSE(a0, 2.85, 1e-12);
    CHECK_CLOSE(a1, 3.15, 1e-12);
    /* ... or by 0.5 at zero */
    plot_axis_range(0, 0, 6, &a0, &a1, &step, &expo);
    CHECK_CLOSE(step, 0.2, 1e-12);
    CHECK_CLOSE(a0, -0.6, 1e-12);
    CHECK_CLOSE(a1, 0.6, 1e-12);
    /* non-finite data: [0, 1] */
    plot_axis_range(NAN, 4, 6, &a0, &a1, &step, &expo);
    CHECK(a0 == 0);
    CHECK_CLOSE(a1, 1, 1e-12);
    plot_axis_range(-INFINITY, INFINITY, 6, &a0, &a1, &step, &expo);
    CHECK(a0 == 0);
    CHECK_CLOSE(a1, 1, 1e-12);
    /* large values: labels divided by a power of ten */
    plot_axis_range(0, 2.4e6, 6, &a0, &a1, &step, &expo);
    CHECK(expo == 6);
    CHECK_CLOSE(step, 5e5, 1e-12);
    CHECK_CLOSE(a1, 2.5e6, 1e-12);
    plot_axis_range(0, 99999, 6, &a0, &a1, &step, &expo);
    CHECK(expo == 5); /* rounded out to 100000 */
    plot_axis_range(0, 80000, 6, &a0, &a1, &step, &expo);
    CHECK(expo == 0);
}

TEST(plot_tick_labels_have_the_decimals_the_step_needs) {
    char s[64];
    plot_tick_label(s, sizeof s, 0.1 + 0.2, 0.1, 0); /* 0.30000000000000004 */
    CHECK_MSG(strcmp(s, "0.3") == 0, "%s", s);
    plot_tick_label(s, sizeof s, 250, 50, 0);
    CHECK_MSG(strcmp(s, "250") == 0, "%s", s);
    plot_tick_label(s, sizeof s, 0.05, 0.05, 0);
    CHECK_MSG(strcmp(s, "0.05") == 0, "%s", s);
    plot_tick_label(s, sizeof s, 2e6, 5e5, 6);
    CHECK_MSG(strcmp(s, "2.0") == 0, "%s", s);
    plot_tick_label(s, sizeof s, -0.2 + 0.1 + 0.1, 0.1, 0); /* rounding noise around 0: no "-0.0" */
    CHECK_MSG(strcmp(s, "0.0") == 0, "%s", s);
    plot_tick_label(s, sizeof s, 1e-9, 1e-9, 0); /* at most 6 decimals */
    CHECK_MSG(strcmp(s, "0.000000") == 0, "%s", s);
}

TEST(plot_escapes_titles_labels_legends_and_captions) {
    Plot p;
    plot_begin(&p, 3, "a<b & \"c\"", "x <step>", "y's", 0, 10, 0, 1);
    double x[2] = {0, 10}, y[2] = {0, 1};
    plot_line(&p, x, y, 2, "#123456", 2, NULL, 1);
    plot_legend(&p, "arm \"E\" > mE", "#123456", NULL, PLOT_LEGEND_LINE);
    plot_vline(&p, 5, "grow <here>");
    plot_hline(&p, 0.5, "half & half");
    plot_text(&p, 1, 0.2, 0, 0, "start", "#000", "<tag>");
    Strbuf out = {0};
    plot_end(&p, &out, "caption with <b> & \"quotes\"");
    const char *h = out.s;
    CHECK(h != NULL);
    if (!h) return;
    CHECK(strstr(h, "a&lt;b &amp; &quot;c&quot;") != NULL); /* title: aria-label and text */
    CHECK(count_of(h, "a&lt;b &amp; &quot;c&quot;") == 2);
    CHECK(strstr(h, "x &lt;step&gt;") != NULL);
    CHECK(strstr(h, "y&#39;s") != NULL);
    CHECK(strstr(h, "arm &quot;E&quot; &gt; mE") != NULL);
    CHECK(strstr(h, "grow &lt;here&gt;") != NULL);
    CHECK(strstr(h, "half &amp; half") != NULL);
    CHECK(strstr(h, "&lt;tag&gt;") != NULL);
    CHECK(strstr(h, "<figcaption>caption with &lt;b&gt; &amp; &quot;quotes&quot;</figcaption>") != NULL);
    /* no raw text leaked: every '<' opens one of the kit's own elements */
    CHECK(strstr(h, "<b") == NULL && strstr(h, "<step") == NULL && strstr(h, "<here") == NULL && strstr(h, "<tag") == NULL);
    sb_free(&out);
}

TEST(plot_small_plot_has_the_expected_elements) {
    Plot p;
    plot_begin(&p, 7, "Loss", "step", "loss", 0, 100, 2, 3);
    CHECK_CLOSE(p.x0, 0, 1e-12);
    CHECK_CLOSE(p.x1, 100, 1e-12);
    CHECK_CLOSE(p.y0, 2, 1e-12);
    CHECK_CLOSE(p.y1, 3, 1e-12);
    /* data corners map to the plot area's corners */
    CHECK_CLOSE(plot_x(&p, 0), p.L, 1e-12);
    CHECK_CLOSE(plot_x(&p, 100), p.L + p.pw, 1e-12);
    CHECK_CLOSE(plot_y(&p, 2), p.T + p.ph, 1e-12);
    CHECK_CLOSE(plot_y(&p, 3), p.T, 1e-12);
    double x[5] = {0, 25, 50, 75, 100}, y[5] = {3, 2.8, NAN, 2.4, 2.2}, lo[5] = {2.9, 2.7, 2.6, 2.3, 2.1}, hi[5] = {3, 2.9, 2.7, 2.5, 2.3};
    plot_band(&p, x, lo, hi, 5, "#d62728", 0.16);
    plot_line(&p, x, y, 5, "#d62728", 2.2, "7 3", 1); /* NaN at 50: two pieces */
    plot_marker(&p, 25, 2.8, "#d62728", 0, 3);
    plot_marker(&p, 75, 2.4, "#d62728", 1, 3);
    plot_marker(&p, NAN, 2.4, "#d62728", 1, 3); /* skipped */
    plot_errbar(&p, 50, 2.5, 2.7, "#333");
    plot_vline(&p, 200, "outside"); /* off the axis: skipped */
    plot_legend(&p, "upcycled (3 seeds)", "#d62728", "7 3", PLOT_LEGEND_LINE);
    plot_legend(&p, "min-max", "#888", NULL, PLOT_LEGEND_BAND);
    plot_legend(&p, "point", "#000", NULL, PLOT_LEGEND_DOT);
    plot_legend(&p, "ring", "#000", NULL, PLOT_LEGEND_RING);
    Strbuf out = {0};
    plot_end(&p, &out, NULL);
    const char *h = out.s;
    CHECK(h != NULL);
    if (!h) return;
    const char *start = "<figure>\n<svg xmlns=\"http://www.w3.org/2000/svg\"";
    CHECK(strncmp(h, start, strlen(start)) == 0);
    CHECK(count_of(h, "<svg") == 1 && count_of(h, "</svg>") == 1 && strstr(h, "</figure>\n") != NULL);
    CHECK(strstr(h, "<clipPath id=\"clip7\">") && strstr(h, "clip-path=\"url(#clip7)\""));
    CHECK(count_of(h, "<polyline") == 2);
    CHECK(strstr(h, "stroke-dasharray=\"7 3\"") != NULL);
    CHECK(count_of(h, "<polygon") == 1); /* the band has no gap: lo and hi are finite everywhere */
    CHECK(count_of(h, "<circle") == 2 + 2); /* 2 markers + the dot and ring swatches */
    CHECK(strstr(h, "<path d=\"M") != NULL); /* error bar */
    CHECK(strstr(h, "outside") == NULL);
    CHECK(strstr(h, ">step</text>") && strstr(h, ">loss</text>") && strstr(h, ">Loss</text>"));
    CHECK(strstr(h, ">upcycled (3 seeds)</text>") && strstr(h, ">min-max</text>"));
    CHECK(strstr(h, "<figcaption>") == NULL); /* no caption given */
    /* ticks every 20 steps and every 0.2 of loss, labelled */
    CHECK(strstr(h, ">0</text>") && strstr(h, ">20</text>") && strstr(h, ">100</text>"));
    CHECK(strstr(h, ">2.0</text>") && strstr(h, ">2.4</text>") && strstr(h, ">3.0</text>"));
    CHECK(p.body.s == NULL); /* plot_end freed the drawing */
    sb_free(&out);
}

TEST(plot_band_splits_at_gaps_and_large_axes_show_the_power_of_ten) {
    Plot p;
    plot_begin(&p, 1, "t", "flops", "y", 0, 4e9, 0, 1);
    CHECK(p.xexp == 9);
    double x[4] = {0, 1e9, 2e9, 3e9}, lo[4] = {0.1, NAN, 0.2, 0.3}, hi[4] = {0.2, 0.3, 0.4, 0.5};
    plot_band(&p, x, lo, hi, 4, "#000", 0.2); /* runs of 1 and 2 finite points: only the second is drawn */
    Strbuf out = {0};
    plot_end(&p, &out, "c");
    CHECK(out.s && count_of(out.s, "<polygon") == 1);
    CHECK(out.s && strstr(out.s, "flops (\xc3\x97 10<tspan dy=\"-5\" font-size=\"9\">9</tspan>") != NULL);
    sb_free(&out);
}

TEST(plot_viridis_ends_and_clamping) {
    char c[16];
    plot_viridis(0, c, sizeof c);
    CHECK_MSG(strcmp(c, "#440154") == 0, "%s", c);
    plot_viridis(1, c, sizeof c);
    CHECK_MSG(strcmp(c, "#fde725") == 0, "%s", c);
    plot_viridis(-2, c, sizeof c);
    CHECK(strcmp(c, "#440154") == 0);
    plot_viridis(7, c, sizeof c);
    CHECK(strcmp(c, "#fde725") == 0);
    plot_viridis(NAN, c, sizeof c);
    CHECK(strcmp(c, "#440154") == 0);
}
