#include "dist/expert_parallel.h"

#include <stdio.h>
#include <stdlib.h>

#include "dist/dist.h"
#include "util.h"

void ep_exchange_init(EpExchange *X, int ranks, int local_experts) {
    *X = (EpExchange){.ranks = ranks, .local_experts = local_experts};
    X->recv_counts = xcalloc((size_t)ranks * local_experts, sizeof(int32_t));
    X->send_rows = xcalloc((size_t)ranks, sizeof(int));
    X->recv_rows = xcalloc((size_t)ranks, sizeof(int));
    X->offsets = xcalloc((size_t)local_experts + 1, sizeof(int32_t));
    X->displs = xcalloc(2 * (size_t)ranks, sizeof(int));
}

void ep_exchange_free(EpExchange *X) {
    free(X->recv_counts), free(X->send_rows), free(X->recv_rows), free(X->offsets);
    free(X->perm), free(X->inv), free(X->displs);
    *X = (EpExchange){0};
}

void ep_exchange_plan(EpExchange *X, const int32_t *loads, const int32_t *offsets, int received_floats, size_t local_rows,
                      int local_floats) {
    int R = X->ranks, El = X->local_experts;
    /* how many rows each rank sends to each of this rank's experts */
    dist_alltoall_ints(loads, X->recv_counts, El, "the expert parallel token counts");
    int rows = 0;
    for (int r = 0; r < R; r++) {
        X->send_rows[r] = offsets[(r + 1) * El] - offsets[r * El];
        X->recv_rows[r] = 0;
        for (int j = 0; j < El; j++) X->recv_rows[r] += X->recv_counts[r * El + j];
        rows += X->recv_rows[r];
    }
    if ((size_t)rows * received_floats > INT32_MAX || local_rows * local_floats > INT32_MAX) {
        fprintf(stderr, "upcycle: expert parallel: %d rows of %d floats exceed an MPI message; expected a smaller batch\n", rows,
                local_floats);
        dist_abort(1);
    }
    if (rows > X->cap) {
        X->cap = rows + rows / 4 + 16;
        free(X->perm), free(X->inv);
        X->perm = xmalloc(sizeof(int32_t) * X->cap), X->inv = xmalloc(sizeof(int32_t) * X->cap);
    }
    X->rows = rows;
    /* expert-major order: for expert j, the rows of rank 0, then rank 1, ... */
    X->offsets[0] = 0;
    for (int j = 0, pos = 0; j < El; j++) {
        for (int r = 0, base = 0; r < R; r++) {
            int start = base;
            for (int jj = 0; jj < j; jj++) start += X->recv_counts[r * El + jj];
            for (int i = 0; i < X->recv_counts[r * El + j]; i++) X->perm[pos++] = start + i;
            base += X->recv_rows[r];
        }
        X->offsets[j + 1] = pos;
    }
    for (int i = 0; i < rows; i++) X->inv[X->perm[i]] = i;
}

void ep_exchange_rows(const EpExchange *X, const int32_t *offsets, const float *local, float *grouped, int width,
                      int to_experts, const char *what) {
    int R = X->ranks, El = X->local_experts, *ldispl = X->displs, *gdispl = X->displs + R;
    int lcount[MAX_EP_RANKS], gcount[MAX_EP_RANKS];
    for (int r = 0, g = 0; r < R; r++) {
        ldispl[r] = offsets[r * El] * width, lcount[r] = X->send_rows[r] * width;
        gdispl[r] = g * width, gcount[r] = X->recv_rows[r] * width;
        g += X->recv_rows[r];
    }
    if (to_experts) dist_alltoallv_floats(local, lcount, ldispl, grouped, gcount, gdispl, what);
    else dist_alltoallv_floats(grouped, gcount, gdispl, (float *)local, lcount, ldispl, what);
}
