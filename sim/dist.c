/* The rank layer (sim/dist.h): MPI when built with QKF_MPI and started by mpirun, otherwise one
 * rank whose reductions do nothing. MPI errors return instead of aborting (MPI_ERRORS_RETURN)
 * and are translated into qkf errors here, where they enter. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/base.h"
#include "dist.h"

#ifdef QKF_MPI
#include <mpi.h>
#endif

static int g_init, g_mpi, g_rank, g_size = 1;
static int64_t g_bytes;
static double g_seconds;

_Static_assert(sizeof(qkf_work) == 7 * sizeof(int64_t), "qkf_work is summed as int64 counters");

int qkf_dist_compiled(void)
{
#ifdef QKF_MPI
    return 1;
#else
    return 0;
#endif
}

#ifdef QKF_MPI
static int mpi_fail(int err, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(err, msg, &len);
    return qkf_set_error("rank %d: %s failed (%s)", g_rank, what, msg);
}

/* Started by an MPI launcher? (Open MPI, PMIx, MPICH/Hydra.) A plain `qkf` stays one rank and
 * never touches MPI, so it starts as fast as a build without it. */
static int launched(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_SIZE");
}
#endif

int qkf_dist_init(void)
{
    if (g_init)
        return 0;
    g_init = 1;
#ifdef QKF_MPI
    if (!launched())
        return 0;
    int err = MPI_Init(NULL, NULL);
    if (err != MPI_SUCCESS)
        return mpi_fail(err, "MPI_Init");
    g_mpi = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
#endif
    return 0;
}

void qkf_dist_finalize(void)
{
#ifdef QKF_MPI
    if (g_mpi)
        MPI_Finalize();
#endif
    g_mpi = 0;
    g_init = 0;
    g_rank = 0;
    g_size = 1;
}

void qkf_dist_abort(int code)
{
#ifdef QKF_MPI
    if (g_mpi)
        MPI_Abort(MPI_COMM_WORLD, code);
#endif
    exit(code);
}

int qkf_dist_rank(void) { return g_rank; }
int qkf_dist_size(void) { return g_size; }
int64_t qkf_dist_bytes(void) { return g_bytes; }
double qkf_dist_seconds(void) { return g_seconds; }

/* Large buffers go in pieces of at most 2^30 elements (MPI counts are int).
 *
 * Watchdog. Every collective is non-blocking and polled against a deadline (QKF_MPI_TIMEOUT
 * seconds, default 600), so a rank that died or hangs cannot stall the job forever. To name it,
 * each rank also sends rank 0 a small "arrived at collective #k" message: when the deadline
 * passes, rank 0 prints one line naming the ranks that never arrived and aborts the job; the
 * other ranks wait a grace period longer for rank 0 to do so (and abort on their own, naming
 * rank 0, if it is rank 0 that hangs). */
#ifdef QKF_MPI
#define TAG_ARRIVE 7301
static int64_t g_seq; /* collectives so far: the same on every rank */

static double timeout_s(void)
{
    const char *t = getenv("QKF_MPI_TIMEOUT");
    double v = t && *t ? atof(t) : 600.0;
    return v > 0 ? v : 600.0;
}

static void hung(int64_t seq, const int *arrived)
{
    if (g_rank == 0) {
        char who[256] = "";
        size_t k = 0;
        for (int r = 1; r < g_size && k + 16 < sizeof who; r++)
            if (!arrived[r])
                k += (size_t)snprintf(who + k, sizeof who - k, "%s%d", k ? ", " : "", r);
        fprintf(stderr,
                "qkf: rank %s did not reach collective #%lld within %g s (dead or hung); "
                "aborting the job\n",
                who[0] ? who : "?", (long long)seq, timeout_s());
    } else {
        fprintf(stderr,
                "qkf: rank 0 did not finish collective #%lld within %g s (dead or hung); "
                "aborting the job (rank %d)\n",
                (long long)seq, timeout_s(), g_rank);
    }
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 3);
    exit(3);
}

static int allreduce_timed(void *buf, int64_t n, MPI_Datatype t, size_t size, MPI_Op op);

static int allreduce(void *buf, int64_t n, MPI_Datatype t, size_t size, MPI_Op op)
{
    double t0 = qkf_now();
    int rc = allreduce_timed(buf, n, t, size, op);
    g_seconds += qkf_now() - t0;
    return rc;
}

static int allreduce_timed(void *buf, int64_t n, MPI_Datatype t, size_t size, MPI_Op op)
{
    char *p = buf;
    g_bytes += n * (int64_t)size;
    const char *hang = getenv("QKF_TEST_HANG_RANK"); /* test hook: this rank stops answering */
    if (hang && *hang && atoi(hang) == g_rank && g_seq >= 1)
        for (;;)
            qkf_sleep_ms(1000);
    while (n > 0) {
        int c = n > (1 << 30) ? 1 << 30 : (int)n;
        int64_t seq = g_seq++;
        MPI_Request req, arr_send = MPI_REQUEST_NULL;
        MPI_Request *arr = NULL;
        int *arrived = NULL;
        int64_t one = seq;
        if (g_rank == 0) {
            arr = qkf_malloc((size_t)g_size * sizeof *arr);
            arrived = qkf_calloc((size_t)g_size, sizeof *arrived);
            int64_t *in = qkf_malloc((size_t)g_size * sizeof *in);
            arr[0] = MPI_REQUEST_NULL;
            arrived[0] = 1;
            for (int r = 1; r < g_size; r++)
                MPI_Irecv(&in[r], 1, MPI_INT64_T, r, TAG_ARRIVE, MPI_COMM_WORLD, &arr[r]);
            int err = MPI_Iallreduce(MPI_IN_PLACE, p, c, t, op, MPI_COMM_WORLD, &req);
            if (err != MPI_SUCCESS)
                return mpi_fail(err, "MPI_Allreduce");
            double deadline = qkf_now() + timeout_s();
            int done = 0;
            while (!done) {
                MPI_Test(&req, &done, MPI_STATUS_IGNORE);
                for (int r = 1; r < g_size; r++)
                    if (!arrived[r])
                        MPI_Test(&arr[r], &arrived[r], MPI_STATUS_IGNORE);
                if (!done && qkf_now() > deadline)
                    hung(seq, arrived);
                if (!done && qkf_now() > deadline - timeout_s() + 0.002) /* spin 2 ms first */
                    qkf_sleep_ms(1);
            }
            MPI_Waitall(g_size, arr, MPI_STATUSES_IGNORE);
            qkf_free(in);
            qkf_free(arr);
            qkf_free(arrived);
        } else {
            MPI_Isend(&one, 1, MPI_INT64_T, 0, TAG_ARRIVE, MPI_COMM_WORLD, &arr_send);
            int err = MPI_Iallreduce(MPI_IN_PLACE, p, c, t, op, MPI_COMM_WORLD, &req);
            if (err != MPI_SUCCESS)
                return mpi_fail(err, "MPI_Allreduce");
            double deadline = qkf_now() + timeout_s() + 5.0; /* rank 0 speaks first */
            int done = 0;
            while (!done) {
                MPI_Test(&req, &done, MPI_STATUS_IGNORE);
                if (!done && qkf_now() > deadline)
                    hung(seq, NULL);
                if (!done && qkf_now() > deadline - timeout_s() - 5.0 + 0.002)
                    qkf_sleep_ms(1);
            }
            MPI_Wait(&arr_send, MPI_STATUS_IGNORE);
        }
        p += (size_t)c * size;
        n -= c;
    }
    return 0;
}
#endif

int qkf_dist_sum_i64(int64_t *buf, int64_t n)
{
#ifdef QKF_MPI
    if (g_mpi)
        return allreduce(buf, n, MPI_INT64_T, sizeof *buf, MPI_SUM);
#endif
    (void)buf, (void)n;
    return 0;
}

int qkf_dist_sum_f64(double *buf, int64_t n)
{
#ifdef QKF_MPI
    if (g_mpi)
        return allreduce(buf, n, MPI_DOUBLE, sizeof *buf, MPI_SUM);
#endif
    (void)buf, (void)n;
    return 0;
}

int qkf_dist_sum_f32(float *buf, int64_t n)
{
#ifdef QKF_MPI
    if (g_mpi)
        return allreduce(buf, n, MPI_FLOAT, sizeof *buf, MPI_SUM);
#endif
    (void)buf, (void)n;
    return 0;
}

int qkf_dist_mean_f32(float *buf, int64_t n)
{
    if (g_size == 1)
        return 0;
    if (qkf_dist_sum_f32(buf, n))
        return -1;
    float s = 1.0f / (float)g_size;
    for (int64_t i = 0; i < n; i++)
        buf[i] *= s;
    return 0;
}

int qkf_dist_max_f64(double *v)
{
#ifdef QKF_MPI
    if (g_mpi)
        return allreduce(v, 1, MPI_DOUBLE, sizeof *v, MPI_MAX);
#endif
    (void)v;
    return 0;
}

int qkf_dist_all_ok(int ok, int *first_bad)
{
    if (first_bad)
        *first_bad = ok ? -1 : g_rank;
#ifdef QKF_MPI
    if (g_mpi) {
        /* the lowest failing rank, or g_size when none failed */
        int64_t v = ok ? g_size : g_rank;
        if (allreduce(&v, 1, MPI_INT64_T, sizeof v, MPI_MIN))
            return 0;
        if (first_bad)
            *first_bad = v < g_size ? (int)v : -1;
        return v == g_size;
    }
#endif
    return ok != 0;
}

int qkf_dist_agree(uint64_t hash, int *bad_rank)
{
    *bad_rank = -1;
#ifdef QKF_MPI
    if (g_mpi) {
        uint64_t h0 = hash;
        int err = MPI_Bcast(&h0, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
        if (err != MPI_SUCCESS)
            return mpi_fail(err, "MPI_Bcast");
        int64_t v = hash == h0 ? g_size : g_rank;
        if (allreduce(&v, 1, MPI_INT64_T, sizeof v, MPI_MIN))
            return -1;
        if (v < g_size) {
            *bad_rank = (int)v;
            return -1;
        }
    }
#endif
    (void)hash;
    return 0;
}

uint64_t qkf_dist_hash(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

void qkf_dist_shard(int64_t n, int64_t *lo, int64_t *hi)
{
    int64_t q = n / g_size, r = n % g_size;
    *lo = g_rank * q + (g_rank < r ? g_rank : r);
    *hi = *lo + q + (g_rank < r ? 1 : 0);
}

int qkf_dist_stats_sum(qkf_stats *s)
{
    if (g_size == 1)
        return 0;
    int64_t nw = (int64_t)s->n_nodes * s->T * 7, nh = nw * s->heads_max;
    int64_t cnt[2] = {s->samples, s->batches};
    if (qkf_dist_sum_i64((int64_t *)s->w, nw) || qkf_dist_sum_i64((int64_t *)s->wh, nh) ||
        qkf_dist_sum_i64(cnt, 2) || qkf_dist_max_f64(&s->seconds))
        return -1;
    s->samples = cnt[0], s->batches = cnt[1];
    /* node_seconds may be NULL on some engines; every rank runs the same engine */
    if (s->node_seconds && qkf_dist_sum_f64(s->node_seconds, s->n_nodes))
        return -1;
    return 0;
}

int qkf_dist_mirror_rows(const float *mine, int64_t G, int64_t row, float *scratch, float *out)
{
    int64_t lo, hi;
    qkf_dist_shard(G, &lo, &hi);
    const float *all = mine; /* one rank holds every row */
    if (g_size > 1) {
        memset(scratch, 0, (size_t)(G * row) * sizeof(float));
        memcpy(scratch + lo * row, mine, (size_t)((hi - lo) * row) * sizeof(float));
        if (qkf_dist_sum_f32(scratch, G * row))
            return -1;
        all = scratch;
    }
    for (int64_t j = 0; j < hi - lo; j++)
        memcpy(out + j * row, all + (G - 1 - (lo + j)) * row, (size_t)row * sizeof(float));
    return 0;
}

int qkf_dist_gather_i64(int64_t v, int64_t *all)
{
    for (int r = 0; r < g_size; r++)
        all[r] = r == g_rank ? v : 0;
    return qkf_dist_sum_i64(all, g_size);
}

/* ---- bucketed gradient all-reduce ---------------------------------------------------------- */

struct qkf_dist_buckets {
    float *buf;
    int64_t n, size; /* floats in the buffer, per bucket */
    int nb, started; /* buckets; how many have been started this step (from the top) */
    double t_wait;   /* seconds spent waiting in finish, this step */
#ifdef QKF_MPI
    MPI_Request *req;
#endif
};

#ifdef QKF_MPI
/* bucket k covers [lo(k), hi(k)): the first one ends at the top of the buffer */
static int64_t bucket_lo(const qkf_dist_buckets *b, int k)
{
    int64_t lo = b->n - (int64_t)(k + 1) * b->size;
    return lo > 0 ? lo : 0;
}
#endif

qkf_dist_buckets *qkf_dist_buckets_create(float *buf, int64_t n, int64_t bucket_floats)
{
    qkf_dist_buckets *b = qkf_calloc(1, sizeof *b);
    b->buf = buf;
    b->n = n;
    b->size = bucket_floats < 1 ? 1 : bucket_floats > (1 << 30) ? (1 << 30) : bucket_floats;
    b->nb = (int)((n + b->size - 1) / b->size);
#ifdef QKF_MPI
    b->req = qkf_malloc((size_t)(b->nb + 1) * sizeof *b->req);
    for (int k = 0; k < b->nb; k++)
        b->req[k] = MPI_REQUEST_NULL;
#endif
    return b;
}

void qkf_dist_buckets_free(qkf_dist_buckets *b)
{
    if (!b)
        return;
#ifdef QKF_MPI
    qkf_free(b->req);
#endif
    qkf_free(b);
}

int qkf_dist_buckets_count(const qkf_dist_buckets *b) { return b->nb; }

int qkf_dist_buckets_ready(qkf_dist_buckets *b, int64_t lo)
{
#ifdef QKF_MPI
    if (!g_mpi)
        return 0;
    while (b->started < b->nb && bucket_lo(b, b->started) >= lo) {
        int k = b->started;
        int64_t l = bucket_lo(b, k), h = b->n - (int64_t)k * b->size;
        int err = MPI_Iallreduce(MPI_IN_PLACE, b->buf + l, (int)(h - l), MPI_FLOAT, MPI_SUM,
                                 MPI_COMM_WORLD, &b->req[k]);
        if (err != MPI_SUCCESS)
            return mpi_fail(err, "MPI_Iallreduce");
        g_bytes += (h - l) * (int64_t)sizeof(float);
        b->started++;
    }
    if (b->started > 0) { /* let MPI progress the buckets in flight */
        int done;
        MPI_Testall(b->started, b->req, &done, MPI_STATUSES_IGNORE);
    }
#else
    (void)b, (void)lo;
#endif
    return 0;
}

int qkf_dist_buckets_start_all(qkf_dist_buckets *b) { return qkf_dist_buckets_ready(b, 0); }

int qkf_dist_buckets_finish(qkf_dist_buckets *b)
{
    b->t_wait = 0.0;
#ifdef QKF_MPI
    if (!g_mpi)
        return 0;
    if (qkf_dist_buckets_ready(b, 0))
        return -1;
    double t0 = qkf_now(), deadline = t0 + timeout_s();
    int done = 0;
    while (!done) {
        MPI_Testall(b->nb, b->req, &done, MPI_STATUSES_IGNORE);
        if (!done && qkf_now() > deadline) {
            fprintf(stderr,
                    "qkf: rank %d: the gradient all-reduce did not finish within %g s (a rank "
                    "died or hangs); aborting the job\n",
                    g_rank, timeout_s());
            fflush(stderr);
            MPI_Abort(MPI_COMM_WORLD, 3);
        }
        if (!done && qkf_now() > t0 + 0.002) /* spin 2 ms first */
            qkf_sleep_ms(1);
    }
    b->t_wait = qkf_now() - t0;
    g_seconds += b->t_wait;
#endif
    b->started = 0;
    return 0;
}

double qkf_dist_buckets_wait_seconds(const qkf_dist_buckets *b) { return b->t_wait; }
