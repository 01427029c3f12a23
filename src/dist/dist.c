/* dist.c - MPI data parallelism (see dist.h); stubs for one rank without UPCYCLE_MPI. */
#include "dist/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

#ifdef UPCYCLE_MPI
#include <mpi.h>

static int g_active = 0, g_rank = 0, g_size = 1;
static int g_solo = 0; /* dist_set_solo: this rank trains alone */
static double g_timeout = 300;
/* expert parallel: this rank's expert group, and the ranks holding the same experts */
static MPI_Comm g_ep_comm = MPI_COMM_NULL, g_rep_comm = MPI_COMM_NULL;
static int g_ep_rank = 0, g_ep_size = 1;

static int launched_by_mpi(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK") || getenv("SLURM_STEP_ID");
}

void dist_init(int *argc, char ***argv) {
    if (!launched_by_mpi()) return;
    int provided;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    g_active = 1;
    const char *t = getenv("UPCYCLE_MPI_TIMEOUT");
    if (t && atof(t) > 0) g_timeout = atof(t);
}

void dist_finalize(void) {
    if (g_ep_comm != MPI_COMM_NULL) MPI_Comm_free(&g_ep_comm);
    if (g_rep_comm != MPI_COMM_NULL) MPI_Comm_free(&g_rep_comm);
    if (g_active) MPI_Finalize();
    g_active = 0;
}

int dist_rank(void) { return g_solo ? 0 : g_rank; }
int dist_size(void) { return g_solo ? 1 : g_size; }
int dist_active(void) { return g_active && g_size > 1 && !g_solo; }
int dist_world_rank(void) { return g_rank; }
int dist_world_size(void) { return g_size; }
int dist_launched(void) { return g_active; }
void dist_set_solo(int solo) { g_solo = solo; }

void dist_abort(int code) {
    if (g_active) MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
    exit(code ? code : 1);
}

/* wait for a request, polling (tightly at first, then with short sleeps so that a waiting rank
 * does not hold a core), at most `timeout` seconds (<= 0: no limit) */
static void wait_request(MPI_Request *req, const char *what, double timeout) {
    double start = now_seconds();
    int done = 0;
    for (long polls = 0; !done; polls++) {
        MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (done) break;
        if (polls > 20000) usleep(polls > 200000 ? 2000 : 100);
        if (timeout > 0 && now_seconds() - start > timeout) {
            fprintf(stderr, "upcycle: rank %d of %d: no answer from the other ranks for %.0f s in %s; expected every rank alive "
                    "(UPCYCLE_MPI_TIMEOUT) - stopping the job\n", g_rank, g_size, g_timeout, what);
            fflush(stderr);
            MPI_Abort(MPI_COMM_WORLD, 3);
        }
    }
}

static void wait_or_abort(MPI_Request *req, const char *what) { wait_request(req, what, g_timeout); }

static void sum_over(void *x, size_t n, MPI_Datatype type, MPI_Comm comm, const char *what) {
    if (!dist_active() || n == 0) return;
    MPI_Request req;
    MPI_Iallreduce(MPI_IN_PLACE, x, (int)n, type, MPI_SUM, comm, &req);
    wait_or_abort(&req, what);
}

static void sum(void *x, size_t n, MPI_Datatype type, const char *what) { sum_over(x, n, type, MPI_COMM_WORLD, what); }

void dist_sum_floats(float *x, size_t n, const char *what) { sum(x, n, MPI_FLOAT, what); }
void dist_sum_doubles(double *x, size_t n, const char *what) { sum(x, n, MPI_DOUBLE, what); }
void dist_sum_ints(int32_t *x, size_t n, const char *what) { sum(x, n, MPI_INT32_T, what); }

void dist_barrier(const char *what) {
    if (!dist_active()) return;
    MPI_Request req;
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    wait_or_abort(&req, what);
}

void dist_wait_for_leader(const char *what) {
    if (!dist_active()) return;
    MPI_Request req;
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    wait_request(&req, what, 0);
}

void dist_bcast_bytes(void *x, size_t n, const char *what) {
    if (!dist_active() || n == 0) return;
    MPI_Request req;
    MPI_Ibcast(x, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD, &req);
    wait_or_abort(&req, what);
}

int dist_ep_setup(int group_size) {
    if (group_size <= 0) group_size = g_size;
    if (group_size > g_size || g_size % group_size)
        return up_error("--ep-size %d with %d ranks; expected a divisor of the number of ranks", group_size, g_size);
    if (g_ep_comm != MPI_COMM_NULL) MPI_Comm_free(&g_ep_comm);
    if (g_rep_comm != MPI_COMM_NULL) MPI_Comm_free(&g_rep_comm);
    if (!dist_active()) {
        g_ep_rank = 0, g_ep_size = 1;
        return 0;
    }
    MPI_Comm_split(MPI_COMM_WORLD, g_rank / group_size, g_rank, &g_ep_comm);
    MPI_Comm_split(MPI_COMM_WORLD, g_rank % group_size, g_rank, &g_rep_comm);
    MPI_Comm_rank(g_ep_comm, &g_ep_rank);
    MPI_Comm_size(g_ep_comm, &g_ep_size);
    return 0;
}

int dist_ep_rank(void) { return g_ep_rank; }
int dist_ep_size(void) { return g_ep_size; }
static MPI_Comm ep_comm(void) { return g_ep_comm != MPI_COMM_NULL ? g_ep_comm : MPI_COMM_WORLD; }

void dist_sum_doubles_ep(double *x, size_t n, const char *what) { sum_over(x, n, MPI_DOUBLE, ep_comm(), what); }

void dist_alltoall_ints(const int32_t *send, int32_t *recv, int per_rank, const char *what) {
    if (!dist_active()) {
        memcpy(recv, send, sizeof(int32_t) * (size_t)per_rank);
        return;
    }
    MPI_Request req;
    MPI_Ialltoall(send, per_rank, MPI_INT32_T, recv, per_rank, MPI_INT32_T, ep_comm(), &req);
    wait_or_abort(&req, what);
}

void dist_alltoallv_floats(const float *send, const int *send_counts, const int *send_displs, float *recv,
                           const int *recv_counts, const int *recv_displs, const char *what) {
    if (!dist_active()) {
        memcpy(recv + recv_displs[0], send + send_displs[0], sizeof(float) * (size_t)send_counts[0]);
        return;
    }
    MPI_Request req;
    MPI_Ialltoallv(send, send_counts, send_displs, MPI_FLOAT, recv, recv_counts, recv_displs, MPI_FLOAT, ep_comm(), &req);
    wait_or_abort(&req, what);
}

/* MPI counts are int: long messages go in pieces (the same on both sides) */
#define MAX_PIECE ((size_t)1 << 30)

void dist_send_floats(const float *x, size_t n, int to, const char *what) {
    for (size_t off = 0; off < n; off += MAX_PIECE) {
        MPI_Request req;
        MPI_Isend(x + off, (int)(n - off < MAX_PIECE ? n - off : MAX_PIECE), MPI_FLOAT, to, 7, MPI_COMM_WORLD, &req);
        wait_or_abort(&req, what);
    }
}

void dist_recv_floats(float *x, size_t n, int from, const char *what) {
    for (size_t off = 0; off < n; off += MAX_PIECE) {
        MPI_Request req;
        MPI_Irecv(x + off, (int)(n - off < MAX_PIECE ? n - off : MAX_PIECE), MPI_FLOAT, from, 7, MPI_COMM_WORLD, &req);
        wait_or_abort(&req, what);
    }
}

struct DistBuckets {
    MPI_Request *reqs;
    int n, cap;
};

DistBuckets *dist_buckets_new(void) { return xcalloc(1, sizeof(DistBuckets)); }

static void buckets_start(DistBuckets *b, float *x, size_t n, MPI_Comm comm) {
    for (size_t off = 0; off < n; off += MAX_PIECE) { /* MPI counts are int */
        size_t count = n - off < MAX_PIECE ? n - off : MAX_PIECE;
        if (b->n == b->cap) {
            b->cap = b->cap ? 2 * b->cap : 16;
            b->reqs = xrealloc(b->reqs, sizeof(MPI_Request) * b->cap);
        }
        MPI_Iallreduce(MPI_IN_PLACE, x + off, (int)count, MPI_FLOAT, MPI_SUM, comm, &b->reqs[b->n++]);
    }
}

void dist_buckets_start(DistBuckets *b, float *x, size_t n) {
    if (dist_active() && n) buckets_start(b, x, n, MPI_COMM_WORLD);
}

void dist_buckets_start_replicas(DistBuckets *b, float *x, size_t n) {
    if (dist_active() && n && g_rep_comm != MPI_COMM_NULL && g_size > g_ep_size) buckets_start(b, x, n, g_rep_comm);
}

void dist_buckets_progress(DistBuckets *b) {
    if (b->n) {
        int flag;
        MPI_Testall(b->n, b->reqs, &flag, MPI_STATUSES_IGNORE);
    }
}

void dist_buckets_wait(DistBuckets *b, const char *what) {
    for (int i = 0; i < b->n; i++) wait_or_abort(&b->reqs[i], what);
    b->n = 0;
}

void dist_buckets_free(DistBuckets *b) {
    if (!b) return;
    free(b->reqs);
    free(b);
}

#else /* one rank */

void dist_init(int *argc, char ***argv) { (void)argc, (void)argv; }
void dist_finalize(void) {}
int dist_rank(void) { return 0; }
int dist_size(void) { return 1; }
int dist_active(void) { return 0; }
int dist_world_rank(void) { return 0; }
int dist_world_size(void) { return 1; }
int dist_launched(void) { return 0; }
void dist_set_solo(int solo) { (void)solo; }
void dist_abort(int code) { exit(code ? code : 1); }
void dist_sum_floats(float *x, size_t n, const char *what) { (void)x, (void)n, (void)what; }
void dist_sum_doubles(double *x, size_t n, const char *what) { (void)x, (void)n, (void)what; }
void dist_sum_ints(int32_t *x, size_t n, const char *what) { (void)x, (void)n, (void)what; }
void dist_barrier(const char *what) { (void)what; }
void dist_wait_for_leader(const char *what) { (void)what; }
void dist_bcast_bytes(void *x, size_t n, const char *what) { (void)x, (void)n, (void)what; }
void dist_alltoall_ints(const int32_t *send, int32_t *recv, int per_rank, const char *what) {
    (void)what;
    memcpy(recv, send, sizeof(int32_t) * (size_t)per_rank);
}
void dist_alltoallv_floats(const float *send, const int *send_counts, const int *send_displs, float *recv,
                           const int *recv_counts, const int *recv_displs, const char *what) {
    (void)recv_counts, (void)what;
    memcpy(recv + recv_displs[0], send + send_displs[0], sizeof(float) * (size_t)send_counts[0]);
}
int dist_ep_setup(int group_size) {
    if (group_size > 1) return up_error("--ep-size %d with 1 rank; expected 1 (run under mpirun for more)", group_size);
    return 0;
}
int dist_ep_rank(void) { return 0; }
int dist_ep_size(void) { return 1; }
void dist_sum_doubles_ep(double *x, size_t n, const char *what) { (void)x, (void)n, (void)what; }
void dist_buckets_start_replicas(DistBuckets *b, float *x, size_t n) { (void)b, (void)x, (void)n; }
/* never called with one rank: there is no other rank to talk to */
void dist_send_floats(const float *x, size_t n, int to, const char *what) { (void)x, (void)n, (void)to, (void)what; }
void dist_recv_floats(float *x, size_t n, int from, const char *what) { (void)x, (void)n, (void)from, (void)what; }
struct DistBuckets {
    int unused;
};
DistBuckets *dist_buckets_new(void) { return xcalloc(1, sizeof(DistBuckets)); }
void dist_buckets_start(DistBuckets *b, float *x, size_t n) { (void)b, (void)x, (void)n; }
void dist_buckets_progress(DistBuckets *b) { (void)b; }
void dist_buckets_wait(DistBuckets *b, const char *what) { (void)b, (void)what; }
void dist_buckets_free(DistBuckets *b) { free(b); }

#endif
