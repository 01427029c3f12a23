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

double stats_t975(int df) {
    static const double table[30] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                     2.201,  2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                     2.080,  2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
    if (df < 1) return NAN;
    if (df <= 30) return table[df - 1];
    /* Cornish-Fisher expansion around the normal quantile: within 1e-3 of the exact value past 30 */
    double z = 1.959964, d = df;
    return z + (z * z * z + z) / (4 * d) + (5 * pow(z, 5) + 16 * z * z * z + 3 * z) / (96 * d * d);
}

enum { RESAMPLES = 2000 };

PairedGap stats_paired_gap(const double *a, const double *b, int n, uint64_t seed) {
    PairedGap g = {n, NAN, NAN, NAN, NAN, NAN, NAN};
    if (n < 1) return g;
    double *d = xmalloc(sizeof(double) * n), *means = xmalloc(sizeof(double) * RESAMPLES);
    for (int i = 0; i < n; i++) d[i] = a[i] - b[i];
    g.mean = stats_mean(d, n);
    if (n >= 2) {
        g.sd = stats_std(d, n);
        double half = stats_t975(n - 1) * g.sd / sqrt((double)n);
        g.t_lo = g.mean - half, g.t_hi = g.mean + half;
        Rng rng;
        rng_seed(&rng, seed);
        for (int r = 0; r < RESAMPLES; r++) {
            double sum = 0;
            for (int i = 0; i < n; i++) sum += d[rng_below(&rng, n)];
            means[r] = sum / n;
        }
        qsort(means, RESAMPLES, sizeof(double), cmp_double);
        g.boot_lo = means[(int)(0.025 * (RESAMPLES - 1))];
        g.boot_hi = means[(int)(0.975 * (RESAMPLES - 1))];
    }
    free(d), free(means);
    return g;
}

Efficiency stats_efficiency(const double *loss_E, const double *loss_up, const double *loss_mE, int n, uint64_t seed) {
    Efficiency e = {0, 0, NAN, NAN, NAN, {0}, {0}, NULL};
    e.premise = stats_paired_gap(loss_E, loss_mE, n, seed);
    e.gain = stats_paired_gap(loss_E, loss_up, n, seed + 1);
    double gap = stats_mean(loss_E, n) - stats_mean(loss_mE, n);
    double spread = sqrt(pow(stats_std(loss_E, n), 2) + pow(stats_std(loss_mE, n), 2));
    e.unpaired_defined = n >= 1 && gap > spread && gap > 0;
    if (n < 2) {
        e.reason = "1 seed: no interval, no verdict";
        return e;
    }
    if (!(e.premise.t_lo > 0)) {
        e.reason = "undefined: Fixed-mE is not better than Fixed-E at this budget (paired 95% interval of L_E - L_mE reaches 0)";
        return e;
    }
    e.defined = 1;
    e.mean = 100.0 * (stats_mean(loss_E, n) - stats_mean(loss_up, n)) / gap;
    /* paired bootstrap over seeds: resample (E, up, mE) triples, ratio of mean gaps */
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
