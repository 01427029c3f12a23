/* stats.h - the small statistics the experiment report needs. */
#ifndef UPCYCLE_STATS_H
#define UPCYCLE_STATS_H

#include <stdint.h>

double stats_mean(const double *x, int n);
double stats_std(const double *x, int n); /* sample std (n-1); 0 for n < 2 */
/* Spearman rank correlation (ties get their average rank); NAN for n < 3 or constant input */
double stats_spearman(const double *x, const double *y, int n);

/* Two-sided 95% quantile of Student's t with df degrees of freedom (df >= 1). */
double stats_t975(int df);

/* A paired comparison over seeds: d_s = a_s - b_s (the arms of one seed share the data order, and
 * an upcycled run shares Fixed-E's pre-growth prefix). t interval: mean +- t975(n-1) sd/sqrt(n);
 * bootstrap: the 2.5/97.5 percentiles of the mean of d over 2000 resamples of the seeds. With
 * n < 2 there is no interval (NAN). */
typedef struct {
    int n;
    double mean, sd;
    double t_lo, t_hi;
    double boot_lo, boot_hi;
} PairedGap;
PairedGap stats_paired_gap(const double *a, const double *b, int n, uint64_t seed);

/* Upcycling efficiency (L_E - L_up) / (L_E - L_mE) in % from per-seed final losses (paired by
 * index), with a paired bootstrap 95% interval over seeds (resampling seed indices, ratio of
 * mean gaps).
 * Rule (fixed before the data it judges): defined iff n >= 2 and the paired t interval of
 * d_s = L_E,s - L_mE,s lies above zero. With one seed: never defined ("1 seed: no interval").
 * unpaired_defined is the older rule, printed beside it: mean gap > sqrt(std_E^2 + std_mE^2). */
typedef struct {
    int defined, unpaired_defined;
    double mean, lo, hi; /* %; NAN when undefined */
    PairedGap premise;   /* L_E - L_mE */
    PairedGap gain;      /* L_E - L_up */
    const char *reason;  /* when undefined */
} Efficiency;
Efficiency stats_efficiency(const double *loss_E, const double *loss_up, const double *loss_mE, int n, uint64_t seed);

#endif
