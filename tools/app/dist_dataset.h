/* Datasets under mpirun: each rank reads only its share of a split. An application of the rank
 * layer (sim/dist.h) and the dataset readers (io/dataset.h), used by training, evaluation and
 * qkf sim.
 *
 * These are collective (every rank calls them, in the same order) and agree on failure: they
 * return 0 on every rank, or -1 on a rank that failed (message in qkf_last_error()) and -2 on
 * the others (another rank failed; nothing to print). On one rank they do what a single process
 * always did. */
#ifndef QKF_DIST_DATASET_H
#define QKF_DIST_DATASET_H

#include <stdint.h>

#include "../../io/dataset.h"
#include "../../sim/dist.h"

/* The size and shape of split `train` of NAME (qkf_dataset_probe) and, in *mx, the largest stored
 * value of the whole split for HDF5 images (each rank scans its contiguous share, then a max
 * reduction), so every rank scales HDF5 pixels as a whole load would. */
int qkf_dist_dataset_probe(const char *name, int train, qkf_dataset *meta, float *mx);
/* This rank's contiguous shard [lo, hi) (qkf_dist_shard) of the first `limit` samples (0: all) of
 * the split. One rank: the whole split (qkf_dataset_load; the caller applies the limit). Several:
 * only the shard's samples, d->index holding their split indices. Fewer samples than ranks is an
 * error ("N samples for R ranks"). */
int qkf_dist_dataset_shard(const char *name, int train, int64_t limit, qkf_dataset *d);
/* Per-channel mean and std of the whole split (as qkf_dataset_stats), from the exact pixel sums of
 * each rank's contiguous share added over the ranks. */
int qkf_dist_dataset_stats(const char *name, int train, const qkf_dataset *meta, float mx,
                           float *mean, float *std);

#endif
