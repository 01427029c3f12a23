/* expert_parallel.h - the token exchange of an expert-parallel MoE layer: how many rows each rank
 * sends to each of this rank's experts, the all-to-all that moves them, and the expert-major
 * order of the rows this rank receives. The rank protocol only: the experts' compute stays in
 * model.c, which calls this around it.
 *
 * After moe_permute a rank's N*K rows are sorted by global expert, so the rows for the experts of
 * rank d are one contiguous range: the all-to-all sends range d to rank d. The rows received are
 * grouped by source rank, then by expert; perm puts them in expert-major order (rank 0's rows of
 * expert j, rank 1's rows of expert j, ...), the same rows in the same order as one process
 * holding the whole batch would use. Host memory (the CPU backend). */
#ifndef UPCYCLE_DIST_EXPERT_PARALLEL_H
#define UPCYCLE_DIST_EXPERT_PARALLEL_H

#include <stddef.h>
#include <stdint.h>

#define MAX_EP_RANKS 1024 /* expert parallel ranks */

typedef struct {
    int ranks, local_experts;
    int32_t *recv_counts;       /* (ranks * local experts): rows from rank s for local expert j */
    int *send_rows, *recv_rows; /* (ranks) rows sent to and received from each rank */
    int32_t *offsets;           /* (local experts + 1) row ranges of the local experts, expert-major */
    int32_t *perm, *inv;        /* (cap) expert-major row -> received row, and back */
    int *displs;                /* (2 * ranks) the all-to-all's displacements */
    int rows, cap;              /* rows received in the last plan; capacity of perm and inv */
} EpExchange;

void ep_exchange_init(EpExchange *X, int ranks, int local_experts);
void ep_exchange_free(EpExchange *X);
/* Plans the exchange of this rank's rows: loads (ranks * local experts) its rows per global
 * expert, offsets (ranks * local experts + 1) their ranges. Exchanges the counts with every rank
 * and fills X (rows, perm, inv, offsets). All ranks stop, with one line, when an exchange would
 * exceed an MPI message: the rows received of received_floats floats each (the widest buffer
 * they fill), or this rank's local_rows of local_floats. */
void ep_exchange_plan(EpExchange *X, const int32_t *loads, const int32_t *offsets, int received_floats, size_t local_rows,
                      int local_floats);
/* rows in this rank's local layout (sorted by global expert, ranges `offsets`) <-> rows grouped
 * by source rank, `width` floats each; to_experts: local -> grouped, else grouped -> local */
void ep_exchange_rows(const EpExchange *X, const int32_t *offsets, const float *local, float *grouped, int width,
                      int to_experts, const char *what);

#endif
