/* backend_profile.h - a backend that times every op of another one (bench train --profile).
 *
 * backend_profiled(inner) returns a table whose ops call inner's and add their wall time, their
 * FLOPs (GEMMs, attention, experts) and an estimate of the bytes they must move (each operand
 * read or written once, 4 bytes a float) to a per-op account. Ops run synchronously on the
 * CPU backend, so wall time is the op's time; on a device backend it would be launch time
 * only, so profiling is for backends that run on the host. One profile per process. */
#ifndef UPCYCLE_BACKEND_PROFILE_H
#define UPCYCLE_BACKEND_PROFILE_H

#include <stdio.h>

#include "backend.h"

const Backend *backend_profiled(const Backend *inner);
void backend_profile_reset(void);
/* the table: per op, calls, ms and % of step_seconds per step, GFLOP/s, GB/s; then the time
 * outside the ops (the model's own code) */
void backend_profile_print(FILE *f, int steps, double step_seconds, double sgemm_gflops);

#endif
