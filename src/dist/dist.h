/* dist.h - data-parallel training across processes and nodes through MPI (OpenMPI).
 *
 * `mpirun -np N ./upcycle train ...` runs N ranks. Each rank trains on its slice of every
 * global batch (batch_size / N sequences); gradients are summed across ranks with allreduces,
 * bucketed by layer and started while the backward pass goes on through the layers below, then
 * divided by N, so every rank applies the same update to the same weights. Per-expert loads are
 * summed before the balancing-bias update, so the biases stay identical too. Rank 0 alone writes
 * checkpoints, metrics and progress. In a build without MPI, or a process not started by a
 * launcher, everything here is a no-op for one rank.
 *
 * Collectives wait at most UPCYCLE_MPI_TIMEOUT seconds (default 300): a rank that died or hangs
 * makes the others stop with a message naming the operation, instead of a job that hangs. */
#ifndef UPCYCLE_DIST_H
#define UPCYCLE_DIST_H

#include <stddef.h>
#include <stdint.h>

void dist_init(int *argc, char ***argv); /* MPI_Init when started by mpirun/srun */
void dist_finalize(void);
int dist_rank(void);
int dist_size(void);
int dist_active(void);                   /* 1 when more than one rank */
/* Solo mode: this rank works alone (dist_rank 0, dist_size 1, collectives do nothing) until
 * switched off, e.g. while it trains a whole experiment stage of its own; dist_world_* are the
 * real position. dist_abort still stops every rank. */
void dist_set_solo(int solo);
int dist_world_rank(void);
int dist_world_size(void);
int dist_launched(void);                 /* MPI_Init was called (started by a launcher, even with one rank) */
/* stop every rank (a failure on one rank must not leave the others waiting) */
void dist_abort(int code);

/* in-place sums across ranks; `what` names the data in a timeout message */
void dist_sum_floats(float *x, size_t n, const char *what);
void dist_sum_doubles(double *x, size_t n, const char *what);
void dist_sum_ints(int32_t *x, size_t n, const char *what);
void dist_barrier(const char *what);
/* a barrier without the timeout: the other ranks wait while rank 0 alone runs a command */
void dist_wait_for_leader(const char *what);
/* rank 0's value of x on every rank */
void dist_bcast_bytes(void *x, size_t n, const char *what);

/* Expert parallel groups: with group size G (a divisor of the number of ranks), ranks
 * [g*G, (g+1)*G) form expert group g and split every MoE layer's experts among them; the ranks
 * at the same position of different groups hold the same experts (replicas) and sum those
 * experts' gradients. G = ranks (the default): one group, no replicas. Returns 0 or -1
 * (up_error). Without it, the group is every rank. */
int dist_ep_setup(int group_size);
int dist_ep_rank(void);                  /* position in the expert group */
int dist_ep_size(void);
/* in-place sum over this rank's expert group */
void dist_sum_doubles_ep(double *x, size_t n, const char *what);

/* Expert parallel (model.c): exchanges of the tokens routed to experts on other ranks of the
 * expert group.
 * alltoall_ints sends per_rank ints to each rank (block r of send to rank r) and receives
 * block r of recv from rank r; alltoallv does the same for floats with per-rank counts and
 * displacements in elements. */
void dist_alltoall_ints(const int32_t *send, int32_t *recv, int per_rank, const char *what);
void dist_alltoallv_floats(const float *send, const int *send_counts, const int *send_displs, float *recv,
                           const int *recv_counts, const int *recv_displs, const char *what);
/* point to point (rank 0 gathering expert shards into a checkpoint, in a fixed order) */
void dist_send_floats(const float *x, size_t n, int to, const char *what);
void dist_recv_floats(float *x, size_t n, int from, const char *what);

/* Bucketed gradient allreduce: start a nonblocking sum of a float range (host memory) now,
 * let it progress while computing, and wait for all of them at the end. */
typedef struct DistBuckets DistBuckets;
DistBuckets *dist_buckets_new(void);
void dist_buckets_start(DistBuckets *b, float *x, size_t n);
/* the same over the replicas of this rank's experts (nothing with one expert group) */
void dist_buckets_start_replicas(DistBuckets *b, float *x, size_t n);
void dist_buckets_progress(DistBuckets *b);
void dist_buckets_wait(DistBuckets *b, const char *what);
void dist_buckets_free(DistBuckets *b);

#endif
