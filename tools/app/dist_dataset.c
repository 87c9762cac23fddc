/* Datasets under mpirun: each rank reads only its share of a split (tools/app/dist_dataset.h).
 * An application of the rank layer (sim/dist.h) and of the dataset readers (io/dataset.h), so
 * it sits above both. */
#include <string.h>

#include "../../kernels/base.h"
#include "dist_dataset.h"

/* Agrees on a rank-local phase: 0 everywhere, or -1 here if this rank failed, -2 if another did. */
static int agree_phase(int rc)
{
    if (qkf_dist_all_ok(rc == 0, NULL))
        return 0;
    return rc ? -1 : -2;
}

int qkf_dist_dataset_probe(const char *name, int train, qkf_dataset *meta, float *mx)
{
    int rc = qkf_dataset_probe(name, train, meta), arc;
    if ((arc = agree_phase(rc)))
        return arc;
    int64_t lo, hi;
    qkf_dist_shard(meta->total, &lo, &hi);
    rc = qkf_dataset_max(name, train, lo, hi, mx);
    if ((arc = agree_phase(rc)))
        return arc;
    double m = (double)*mx;
    if (qkf_dist_max_f64(&m))
        return -1;
    *mx = (float)m;
    return 0;
}

int qkf_dist_dataset_shard(const char *name, int train, int64_t limit, qkf_dataset *d)
{
    memset(d, 0, sizeof *d);
    if (qkf_dist_size() == 1)
        return qkf_dataset_load(name, train, d);
    qkf_dataset meta;
    float mx = 255.0f;
    int rc = qkf_dist_dataset_probe(name, train, &meta, &mx);
    if (rc)
        return rc;
    int64_t n = limit > 0 && limit < meta.total ? limit : meta.total, lo, hi;
    if (n < qkf_dist_size()) /* the same on every rank */
        return qkf_set_error("%s: %lld samples for %d ranks (use fewer ranks)", meta.source,
                             (long long)n, qkf_dist_size());
    qkf_dist_shard(n, &lo, &hi);
    int64_t *idx = qkf_malloc((size_t)(hi - lo) * sizeof(int64_t));
    for (int64_t i = lo; i < hi; i++)
        idx[i - lo] = i;
    rc = qkf_dataset_load_subset(name, train, idx, hi - lo, mx, d);
    qkf_free(idx);
    return agree_phase(rc);
}

int qkf_dist_dataset_stats(const char *name, int train, const qkf_dataset *meta, float mx,
                           float *mean, float *std)
{
    int64_t lo, hi, sums[8] = {0};
    qkf_dist_shard(meta->total, &lo, &hi);
    qkf_dataset part;
    int64_t *idx = qkf_malloc((size_t)(hi - lo > 0 ? hi - lo : 1) * sizeof(int64_t));
    for (int64_t i = lo; i < hi; i++)
        idx[i - lo] = i;
    int rc = qkf_dataset_load_subset(name, train, idx, hi - lo, mx, &part), arc;
    qkf_free(idx);
    if (rc == 0) {
        qkf_dataset_pixel_sums(&part, sums, sums + 4);
        qkf_dataset_free(&part);
    }
    if ((arc = agree_phase(rc)))
        return arc;
    if (qkf_dist_sum_i64(sums, 8))
        return -1;
    qkf_dataset_stats_from_sums(sums, sums + 4, meta->c, meta->total * meta->h * meta->w, mean,
                                std);
    return 0;
}
