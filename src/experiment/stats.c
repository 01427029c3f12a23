#include "experiment/stats.h"

#include <math.h>
#include <stdlib.h>

#include "util.h"

double stats_mean(const double *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    return n ? s / n : NAN;
}

double stats_std(const double *x, int n) {
    if (n < 2) return 0;
    double m = stats_mean(x, n), s = 0;
    for (int i = 0; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return sqrt(s / (n - 1));
}

static void ranks(const double *x, int n, double *r) {
    for (int i = 0; i < n; i++) {
        int less = 0, equal = 0;
        for (int j = 0; j < n; j++) less += x[j] < x[i], equal += x[j] == x[i];
        r[i] = less + (equal + 1) / 2.0; /* average rank of a tie block, 1-based */
    }
}

double stats_spearman(const double *x, const double *y, int n) {
    if (n < 3) return NAN;
    double *rx = xmalloc(sizeof(double) * n), *ry = xmalloc(sizeof(double) * n);
    ranks(x, n, rx);
    ranks(y, n, ry);
    double mx = stats_mean(rx, n), my = stats_mean(ry, n), sxy = 0, sxx = 0, syy = 0;
    for (int i = 0; i < n; i++) {
        sxy += (rx[i] - mx) * (ry[i] - my);
        sxx += (rx[i] - mx) * (rx[i] - mx);
        syy += (ry[i] - my) * (ry[i] - my);
    }
    free(rx), free(ry);
    return sxx > 0 && syy > 0 ? sxy / sqrt(sxx * syy) : NAN;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

Efficiency stats_efficiency(const double *loss_E, const double *loss_up, const double *loss_mE, int n, uint64_t seed) {
    Efficiency e = {0, NAN, NAN, NAN, NULL};
    double gap = stats_mean(loss_E, n) - stats_mean(loss_mE, n);
    double spread = sqrt(pow(stats_std(loss_E, n), 2) + pow(stats_std(loss_mE, n), 2));
    if (!(gap > spread) || gap <= 0) {
        e.reason = "undefined: Fixed-mE is not better than Fixed-E at this budget";
        return e;
    }
    e.defined = 1;
    e.mean = 100.0 * (stats_mean(loss_E, n) - stats_mean(loss_up, n)) / gap;
    if (n < 2) return e;
    /* bootstrap over seeds: resample (E, up, mE) triples, ratio of means */
    enum { RESAMPLES = 2000 };
    double *samples = xmalloc(sizeof(double) * RESAMPLES);
    int kept = 0;
    Rng rng;
    rng_seed(&rng, seed);
    for (int b = 0; b < RESAMPLES; b++) {
        double sE = 0, sU = 0, sM = 0;
        for (int i = 0; i < n; i++) {
            int k = (int)rng_below(&rng, n);
            sE += loss_E[k], sU += loss_up[k], sM += loss_mE[k];
        }
        if (sE - sM > 0) samples[kept++] = 100.0 * (sE - sU) / (sE - sM);
    }
    qsort(samples, kept, sizeof(double), cmp_double);
    if (kept > 0) {
        e.lo = samples[(int)(0.025 * (kept - 1))];
        e.hi = samples[(int)(0.975 * (kept - 1))];
    }
    free(samples);
    return e;
}
