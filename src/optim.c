#include "optim.h"

#include <math.h>

float lr_at(const TrainConfig *t, int s, int total_steps) {
    if (t->schedule == SCHED_CONSTANT) return t->lr;
    if (s < t->warmup_steps) return t->lr * (float)(s + 1) / (float)t->warmup_steps;
    if (t->schedule == SCHED_COSINE) {
        int span = total_steps - t->warmup_steps;
        double progress = span > 1 ? (double)(s - t->warmup_steps) / (span - 1) : 1.0;
        if (progress > 1) progress = 1;
        return (float)(t->min_lr + 0.5 * (t->lr - t->min_lr) * (1.0 + cos(M_PI * progress)));
    }
    int decay_steps = (int)lround(t->decay_frac * total_steps);
    int decay_start = total_steps - decay_steps;
    if (decay_steps <= 0 || s < decay_start) return t->lr;
    double progress = (double)(s - decay_start + 1) / decay_steps;
    if (progress > 1) progress = 1;
    double shape = t->decay_shape == DECAY_1_SQRT ? 1.0 - sqrt(progress) : 1.0 - progress;
    return (float)(t->min_lr + (t->lr - t->min_lr) * shape);
}
