/* Distributed runs over MPI: the rank layer under `mpirun -np N qkf train|eval|sim`.
 *
 * Built with -DQKF_MPI=ON this wraps MPI (Open MPI); without it, or when the process was not
 * started by an MPI launcher, it is a single rank (rank 0 of 1) whose reductions are no-ops, so
 * callers never need an #ifdef. Every reduction is in place and collective: all ranks call it in
 * the same order. Integer sums are exact; float sums are exact on one rank and otherwise in MPI's
 * order (the same on every rank for a given rank count). Failures return -1 with a message
 * (qkf_last_error()). */
#ifndef QKF_DIST_H
#define QKF_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "stats.h"

/* Joins the job if the process was started by mpirun (MPI_Init), else stays a single rank.
 * Idempotent. */
int qkf_dist_init(void);
/* Leaves the job (MPI_Finalize); call once at the end of the command, on every rank. */
void qkf_dist_finalize(void);
/* Ends the whole job now with exit code `code` (MPI_Abort; plain exit on a single rank). */
void qkf_dist_abort(int code);
int qkf_dist_rank(void);
int qkf_dist_size(void);
/* 1 when this binary was built with MPI support. */
int qkf_dist_compiled(void);
/* Bytes this rank has sent in reductions so far (payload, one copy per reduction). */
int64_t qkf_dist_bytes(void);
/* Wall seconds this rank has spent inside reductions so far (waiting included). */
double qkf_dist_seconds(void);

/* In-place sums over all ranks. */
int qkf_dist_sum_i64(int64_t *buf, int64_t n);
int qkf_dist_sum_f64(double *buf, int64_t n);
int qkf_dist_sum_f32(float *buf, int64_t n);
/* In-place mean over all ranks (sum, then times 1/size; exact on one rank). */
int qkf_dist_mean_f32(float *buf, int64_t n);
/* Maximum over all ranks. */
int qkf_dist_max_f64(double *v);

/* 1 when every rank passes ok != 0, else 0 (and *first_bad, if not NULL, gets the lowest rank
 * that passed 0). Used after each rank-local phase so that one rank's error ends every rank
 * cleanly instead of leaving the others in a collective. */
int qkf_dist_all_ok(int ok, int *first_bad);
/* Compares `hash` across ranks: 0 if all agree; otherwise -1, *bad_rank the lowest rank whose
 * hash differs from rank 0's. */
int qkf_dist_agree(uint64_t hash, int *bad_rank);
/* FNV-1a over n bytes, continuing from h (start with QKF_DIST_HASH_INIT). */
#define QKF_DIST_HASH_INIT 0xcbf29ce484222325ull
uint64_t qkf_dist_hash(uint64_t h, const void *p, size_t n);

/* This rank's contiguous share [lo, hi) of n items: the first n % size ranks get one more. */
void qkf_dist_shard(int64_t n, int64_t *lo, int64_t *hi);

/* Batch mixup across ranks. Each rank holds rows [lo, hi) (qkf_dist_shard of G) of a global
 * batch of G rows of `row` floats, in `mine`; out [hi - lo][row] receives, for each of them, the
 * row at the mirrored position G - 1 - (lo + j), wherever it is held. One all-reduce of the G rows
 * (each rank contributing its own, zeros elsewhere: exact, as x + 0 = x); scratch holds G * row
 * floats. */
int qkf_dist_mirror_rows(const float *mine, int64_t G, int64_t row, float *scratch, float *out);

/* Gathers one value per rank: all[r] = rank r's v (all holds size() values). */
int qkf_dist_gather_i64(int64_t v, int64_t *all);

/* Sums every work counter and the sample and batch counts of s over all ranks (exact int64
 * sums), the per-node seconds too; seconds becomes the slowest rank's. */
int qkf_dist_stats_sum(qkf_stats *s);

/* ---- bucketed gradient all-reduce, overlapped with the backward ------------------------------
 * The flat gradient buffer is cut into buckets of bucket_floats from its top end down (the
 * backward finishes the last parameters first). As the backward reports that everything at and
 * above offset lo is final (qkf_dist_buckets_ready), the buckets inside that range start as
 * non-blocking MPI_Iallreduce sums while the backward goes on; qkf_dist_buckets_finish starts
 * the rest and waits for all (watchdog: QKF_MPI_TIMEOUT). Every rank must start the buckets in
 * the same order relative to its other collectives: call ready() from deterministic points
 * (after each graph op's backward), and start_all() before any other collective that might
 * otherwise overtake a bucket on another rank. The sums are those of one qkf_dist_sum_f32 of
 * the whole buffer, element by element. On a single rank everything is a no-op. */
typedef struct qkf_dist_buckets qkf_dist_buckets;
qkf_dist_buckets *qkf_dist_buckets_create(float *buf, int64_t n, int64_t bucket_floats);
void qkf_dist_buckets_free(qkf_dist_buckets *b);
int qkf_dist_buckets_count(const qkf_dist_buckets *b);
int qkf_dist_buckets_ready(qkf_dist_buckets *b, int64_t lo);
int qkf_dist_buckets_start_all(qkf_dist_buckets *b);
int qkf_dist_buckets_finish(qkf_dist_buckets *b);
/* Seconds the last finish() waited: the all-reduce time the backward did not hide. */
double qkf_dist_buckets_wait_seconds(const qkf_dist_buckets *b);

#endif
