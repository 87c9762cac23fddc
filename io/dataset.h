/* Image datasets for training and evaluation, and a background batch loader.
 *
 * Sources (NAME as given to --data):
 *   fashion-mnist, mnist     idx files (plain or gzipped) in the Debian dataset directory
 *                            (/usr/share/datasets/<name>) or NAME:DIR
 *   mnist:DIR, idx:DIR       train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
 *                            t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]
 *   cifar10:DIR              data_batch_1..5.bin / test_batch.bin (the binary version)
 *   cifar100:DIR             train.bin / test.bin (fine labels)
 *   h5:TRAIN.h5[,TEST.h5]    or any NAME ending in .h5: datasets `images` [n,C,H,W] (uint8
 *                            0..255, or float in [0,1]; values above 1 are taken as 0..255)
 *                            and `labels` [n] (integers); or, for the DVS variants, `input`
 *                            [n,T,C,H,W] event-count frames (integers 0..255, as `qkf events
 *                            emulate|frames --out X.h5` write them) and `labels` [n]
 * Pixels are kept as bytes (0..255); the loader scales them to [0,1], normalises with the
 * model's mean/std and augments. Frames are event counts: the loader passes them on as they are
 * (the official DVS pipeline feeds counts), with the same crop and flip for every frame. Errors
 * name the file and, for corrupt data, the byte offset.
 *
 * A dataset is either a whole split (qkf_dataset_load) or a subset of one: the samples of given
 * split indices (qkf_dataset_load_subset), read selectively so that a rank under mpirun holds only
 * its share: random access (pread) into plain idx files and CIFAR batches, one streaming pass
 * through a gzipped idx file, hyperslab reads of HDF5 datasets. */
#ifndef QKF_DATASET_H
#define QKF_DATASET_H

#include <stdint.h>

typedef struct {
    int64_t n;
    int c, h, w;
    int t;           /* frames per sample ([n][t][c][h][w] event counts); 0: images */
    int classes;     /* 1 + the largest label (or the dataset's known class count) */
    uint8_t *pixels; /* [n][c][h][w], or [n][t][c][h][w] for frames */
    int32_t *labels; /* [n] */
    int64_t total;   /* samples in the whole split (n for a whole load) */
    int64_t *index;  /* NULL: the whole split; else each held sample's split index, ascending */
    char source[1024];
} qkf_dataset;

/* Loads the training (train = 1) or test split of NAME. */
int qkf_dataset_load(const char *name, int train, qkf_dataset *d);
void qkf_dataset_free(qkf_dataset *d);
/* Per-channel mean and std of the pixels scaled to [0,1] (for the normalisation). */
void qkf_dataset_stats(const qkf_dataset *d, float *mean, float *std);

/* The size, shape and source of split `train` of NAME, reading headers only: d->n = d->total =
 * the split's samples, no pixels or labels. Structural errors (magic numbers, record sizes, shapes,
 * a plain file shorter than its header says) are found here. */
int qkf_dataset_probe(const char *name, int train, qkf_dataset *d);
/* Loads only the samples index[0..k) (ascending, distinct, below the split's size) of the split:
 * d->n = k, d->index a copy of index, d->total the split's size, pixels and labels in index order,
 * equal byte for byte to those records of a whole load. `mx` is the largest value of the whole
 * split for HDF5 images (stored floats in [0, 1] are scaled by 255 only when mx <= 1; see
 * qkf_dataset_max); it is ignored for other sources. Errors name the file and byte offset (or
 * flat index) as qkf_dataset_load's do, for the records read. */
int qkf_dataset_load_subset(const char *name, int train, const int64_t *index, int64_t k,
                            float mx, qkf_dataset *d);
/* The largest stored value of samples [lo, hi) of the split, for HDF5 images (read in blocks of
 * 256 samples); 255 without reading for every other source. */
int qkf_dataset_max(const char *name, int train, int64_t lo, int64_t hi, float *mx);
/* Where d holds split sample i (its row), -1 if it does not. */
int64_t qkf_dataset_find(const qkf_dataset *d, int64_t i);
/* Bytes of pixels, labels and index held. */
int64_t qkf_dataset_bytes(const qkf_dataset *d);
/* Per-channel sums of the pixels (0..255) and of their squares, exact: the normalisation of a set
 * spread over ranks is computed from these sums added over the ranks. */
void qkf_dataset_pixel_sums(const qkf_dataset *d, int64_t *sum, int64_t *sq);
/* Mean and std of pixels scaled to [0,1] from such sums over `count` pixels per channel. */
void qkf_dataset_stats_from_sums(const int64_t *sum, const int64_t *sq, int channels,
                                 int64_t count, float *mean, float *std);
/* Samples [lo, hi) of split `train` of NAME read in order, a block at a time, holding only the
 * block (qkf sim --data): each qkf_dataset_stream_next gives the next k samples as a subset
 * (d->index their split indices), equal byte for byte to those records of a whole load. A
 * gzipped idx file is read forward through one open stream (never inflated twice) and, after the
 * last block, to its end, so that truncation and trailing bytes are found as a whole load finds
 * them; other sources are read as qkf_dataset_load_subset reads them. mx: as for
 * qkf_dataset_load_subset. Errors name the file and byte offset (or flat index). */
typedef struct qkf_dataset_stream qkf_dataset_stream;
qkf_dataset_stream *qkf_dataset_stream_open(const char *name, int train, int64_t lo, int64_t hi,
                                            float mx);
/* The next min(k, those left) samples into d, which is freed first (zero it before the first
 * call) and holds only them afterwards (a subset: d->index their split indices, d->total the
 * split's size). Returns how many, 0 at the end, -1 on error (d then empty). */
int64_t qkf_dataset_stream_next(qkf_dataset_stream *s, int64_t k, qkf_dataset *d);
void qkf_dataset_stream_close(qkf_dataset_stream *s);

/* ---- background loader ---------------------------------------------------------------------- */

typedef struct {
    const qkf_dataset *d;
    int batch;
    int shuffle;   /* a permutation per epoch, from (seed, epoch) */
    int crop_pad;  /* random crop with this zero padding (0: none) */
    int flip;      /* random horizontal flip */
    int drop_last; /* skip the last incomplete batch */
    int64_t limit; /* use only the first `limit` samples (0: all) */
    /* ranks > 1: each batch handed out is rank `rank`'s contiguous slice of the global batch
     * (as qkf_dist_shard splits it), and d may be a subset holding the samples of
     * qkf_loader_indices. */
    int ranks, rank;
    uint64_t seed;
    int n_norm;
    float mean[4], std[4];
} qkf_loader_cfg;

typedef struct qkf_loader qkf_loader;

/* Starts a worker thread producing the batches of epoch `epoch` from batch `first` on. The
 * order and augmentation of every sample depend only on (seed, epoch, sample index), so a
 * resumed run sees exactly the batches an uninterrupted one would. */
qkf_loader *qkf_loader_start(const qkf_loader_cfg *cfg, int64_t epoch, int64_t first);
/* The next batch: x [B][c][h][w] normalised floats (frames: [B][t][c][h][w] counts), labels [B];
 * valid until the next call.
 * Returns 1 with a batch, 0 at the end of the epoch. */
int qkf_loader_next(qkf_loader *l, const float **x, const int32_t **labels, int *B);
/* Batches in one epoch. */
int64_t qkf_loader_batches(const qkf_loader_cfg *cfg);
/* Size of the global batch the last batch handed out belongs to (its B when ranks <= 1). */
int qkf_loader_global_batch(const qkf_loader *l);
/* The split indices (ascending, distinct; *index allocated) that rank cfg->rank of cfg->ranks
 * consumes in epoch `epoch` from batch `first` on: what a subset must hold for the loader. Only
 * cfg->d's size is used (a probe will do). */
int qkf_loader_indices(const qkf_loader_cfg *cfg, int64_t epoch, int64_t first, int64_t **index,
                       int64_t *k);
/* Seconds the consumer spent waiting for the worker so far. */
double qkf_loader_wait_seconds(const qkf_loader *l);
void qkf_loader_stop(qkf_loader *l);

#endif
