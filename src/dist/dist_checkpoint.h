/* dist_checkpoint.h - saving a checkpoint when a model is trained on several ranks.
 *
 * Only rank 0 writes (io/checkpoint.h knows the format, not the ranks). Data parallel: every
 * rank holds the whole model; rank 0 writes, the others return at once. Expert parallel: rank 0
 * writes every tensor of the whole model; the experts it does not hold arrive from the ranks of
 * its expert group (ranks 0..ep_size-1), one tensor at a time in table order (bounded memory:
 * one host copy of one buffer, one received tensor). When the write fails, rank 0 still
 * receives (and drops) everything the others send, so no rank is left waiting; then every rank
 * learns rank 0's result, which each returns. */
#ifndef UPCYCLE_DIST_CHECKPOINT_H
#define UPCYCLE_DIST_CHECKPOINT_H

#include "io/checkpoint.h"

/* checkpoint_save_with's contract, called on every rank */
int dist_checkpoint_save(const char *dir, const Model *m, const TrainerState *state, int with_optimizer,
                         const char *extra_name, const char *extra_text);

#endif
