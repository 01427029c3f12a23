/* stats.h - the small statistics the experiment report needs. */
#ifndef UPCYCLE_STATS_H
#define UPCYCLE_STATS_H

#include <stdint.h>

double stats_mean(const double *x, int n);
double stats_std(const double *x, int n); /* sample std (n-1); 0 for n < 2 */
/* Spearman rank correlation (ties get their average rank); NAN for n < 3 or constant input */
double stats_spearman(const double *x, const double *y, int n);

/* Upcycling efficiency (L_E - L_up) / (L_E - L_mE) in % from per-seed final losses (paired by
 * index), with a bootstrap 95% interval over seeds (resampling seed indices). defined is 0
 * when Fixed-mE does not beat Fixed-E by more than the seed spread sqrt(std_E^2 + std_mE^2). */
typedef struct {
    int defined;
    double mean, lo, hi; /* %, lo/hi NAN with a single seed */
    const char *reason;  /* when undefined */
} Efficiency;
Efficiency stats_efficiency(const double *loss_E, const double *loss_up, const double *loss_mE, int n, uint64_t seed);

#endif
