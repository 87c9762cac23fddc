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
 * (the official DVS pipeline feeds counts), with the same crop and flip for every frame. Errors name the file and, for corrupt data, the byte offset. */
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
    char source[1024];
} qkf_dataset;

/* Loads the training (train = 1) or test split of NAME. */
int qkf_dataset_load(const char *name, int train, qkf_dataset *d);
void qkf_dataset_free(qkf_dataset *d);
/* Per-channel mean and std of the pixels scaled to [0,1] (for the normalisation). */
void qkf_dataset_stats(const qkf_dataset *d, float *mean, float *std);

/* ---- background loader ---------------------------------------------------------------------- */

typedef struct {
    const qkf_dataset *d;
    int batch;
    int shuffle;   /* a permutation per epoch, from (seed, epoch) */
    int crop_pad;  /* random crop with this zero padding (0: none) */
    int flip;      /* random horizontal flip */
    int drop_last; /* skip the last incomplete batch */
    int64_t limit; /* use only the first `limit` samples (0: all) */
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
/* Seconds the consumer spent waiting for the worker so far. */
double qkf_loader_wait_seconds(const qkf_loader *l);
void qkf_loader_stop(qkf_loader *l);

#endif
