/* optim.h - learning-rate schedules. The AdamW update itself is a backend op. */
#ifndef UPCYCLE_OPTIM_H
#define UPCYCLE_OPTIM_H

#include "config.h"

/* Learning rate for step s (0-based) of a stage of total_steps steps.
 * WSD: linear warmup to lr over warmup_steps, constant, then over the last
 * round(decay_frac * total_steps) steps down to min_lr (linear, or 1-sqrt), reaching min_lr
 * at the final step. Cosine: warmup, then cosine from lr to min_lr. */
float lr_at(const TrainConfig *t, int s, int total_steps);

#endif
