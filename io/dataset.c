/* Datasets (MNIST-format idx, CIFAR binary batches, generic HDF5) and the background batch
 * loader. See dataset.h for the sources. Every reader checks magic numbers, sizes and label
 * ranges and reports the first problem as "<file>: <what> at byte <offset>". */
#define _POSIX_C_SOURCE 200809L
#include "dataset.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "../kernels/base.h"
#include "io.h"

/* ---- idx (MNIST, Fashion-MNIST) -------------------------------------------------------------- */

/* Opens path, or path + ".gz" if path does not exist. gzread reads plain files as they are. */
static gzFile open_maybe_gz(const char *dir, const char *base, char *used, size_t cap)
{
    const char *ext[2] = {".gz", ""};
    for (int i = 0; i < 2; i++) {
        snprintf(used, cap, "%s/%s%s", dir, base, ext[i]);
        struct stat st;
        if (stat(used, &st) == 0) {
            gzFile f = gzopen(used, "rb");
            if (!f)
                qkf_set_error("%s: cannot open (%s)", used, strerror(errno));
            return f;
        }
    }
    snprintf(used, cap, "%s/%s[.gz]", dir, base);
    qkf_set_error("%s: no such file", used);
    return NULL;
}

/* Reads exactly n bytes at *off; a short read is an error naming the offset. */
static int gz_read_exact(gzFile f, const char *path, void *buf, int64_t n, int64_t *off)
{
    uint8_t *p = buf;
    int64_t left = n;
    while (left > 0) {
        unsigned chunk = left > (1 << 30) ? 1u << 30 : (unsigned)left;
        int r = gzread(f, p, chunk);
        if (r < 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            return qkf_set_error("%s: corrupt compressed data near byte %lld (%s)", path,
                                 (long long)*off, msg);
        }
        if (r == 0)
            return qkf_set_error("%s: truncated: expected %lld more bytes at byte %lld", path,
                                 (long long)left, (long long)*off);
        p += r, left -= r, *off += r;
    }
    return 0;
}

static uint32_t be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* One idx file: ndim_want 3 (images) or 1 (labels). Allocates *data. */
static int read_idx(const char *dir, const char *base, int ndim_want, int64_t *dims,
                    uint8_t **data, char *used, size_t cap)
{
    gzFile f = open_maybe_gz(dir, base, used, cap);
    if (!f)
        return -1;
    int64_t off = 0;
    uint8_t hdr[4];
    *data = NULL;
    if (gz_read_exact(f, used, hdr, 4, &off))
        goto fail;
    if (hdr[0] != 0 || hdr[1] != 0 || hdr[2] != 0x08 || hdr[3] != ndim_want) {
        qkf_set_error("%s: wrong magic 0x%02x%02x%02x%02x at byte 0 (expected 0x000008%02x, an "
                      "idx file of unsigned bytes with %d dimensions)",
                      used, hdr[0], hdr[1], hdr[2], hdr[3], ndim_want, ndim_want);
        goto fail;
    }
    int64_t total = 1;
    for (int i = 0; i < ndim_want; i++) {
        uint8_t b[4];
        if (gz_read_exact(f, used, b, 4, &off))
            goto fail;
        dims[i] = be32(b);
        if (dims[i] < 1 || dims[i] > (1 << 28)) {
            qkf_set_error("%s: implausible dimension %lld at byte %lld", used, (long long)dims[i],
                          (long long)(off - 4));
            goto fail;
        }
        total *= dims[i];
    }
    *data = qkf_malloc((size_t)total);
    if (gz_read_exact(f, used, *data, total, &off))
        goto fail;
    gzclose(f);
    return 0;
fail:
    qkf_free(*data);
    *data = NULL;
    gzclose(f);
    return -1;
}

static int load_idx(const char *dir, int train, int classes, qkf_dataset *d)
{
    char ipath[600], lpath[600];
    int64_t idims[3], ldims[1];
    uint8_t *lab = NULL;
    const char *pre = train ? "train" : "t10k";
    char base[64];
    snprintf(base, sizeof base, "%s-images-idx3-ubyte", pre);
    if (read_idx(dir, base, 3, idims, &d->pixels, ipath, sizeof ipath))
        return -1;
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", pre);
    if (read_idx(dir, base, 1, ldims, &lab, lpath, sizeof lpath))
        return -1;
    if (ldims[0] != idims[0]) {
        qkf_free(lab);
        return qkf_set_error("%s: %lld labels for %lld images in %s", lpath, (long long)ldims[0],
                             (long long)idims[0], ipath);
    }
    d->n = idims[0], d->c = 1, d->h = (int)idims[1], d->w = (int)idims[2];
    d->classes = classes;
    d->labels = qkf_malloc((size_t)d->n * sizeof(int32_t));
    for (int64_t i = 0; i < d->n; i++) {
        if (lab[i] >= classes) {
            int v = lab[i];
            qkf_free(lab);
            return qkf_set_error("%s: label %d out of range 0..%d at byte %lld", lpath, v,
                                 classes - 1, (long long)(8 + i));
        }
        d->labels[i] = lab[i];
    }
    qkf_free(lab);
    snprintf(d->source, sizeof d->source, "%s", ipath);
    return 0;
}

/* ---- CIFAR binary ---------------------------------------------------------------------------- */

static int load_cifar(const char *dir, int train, int c100, qkf_dataset *d)
{
    const char *files10[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                             "data_batch_4.bin", "data_batch_5.bin"};
    const char *names[5];
    int nf;
    if (c100) {
        names[0] = train ? "train.bin" : "test.bin";
        nf = 1;
    } else if (train) {
        for (int i = 0; i < 5; i++)
            names[i] = files10[i];
        nf = 5;
    } else {
        names[0] = "test_batch.bin";
        nf = 1;
    }
    int lb = c100 ? 2 : 1, rec = lb + 3072, classes = c100 ? 100 : 10;
    int64_t sizes[5], total = 0;
    char path[600];
    for (int i = 0; i < nf; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct stat st;
        if (stat(path, &st) != 0)
            return qkf_set_error("%s: cannot open (%s)", path, strerror(errno));
        if (st.st_size == 0 || st.st_size % rec)
            return qkf_set_error("%s: truncated or not a CIFAR-%d binary batch: %lld bytes is "
                                 "not a multiple of the %d-byte record (last record starts at "
                                 "byte %lld)",
                                 path, classes, (long long)st.st_size, rec,
                                 (long long)(st.st_size / rec * rec));
        sizes[i] = st.st_size / rec;
        total += sizes[i];
    }
    d->n = total, d->c = 3, d->h = 32, d->w = 32, d->classes = classes;
    d->pixels = qkf_malloc((size_t)total * 3072);
    d->labels = qkf_malloc((size_t)total * sizeof(int32_t));
    uint8_t *buf = qkf_malloc((size_t)rec);
    int64_t k = 0;
    for (int i = 0; i < nf; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "rb");
        if (!f) {
            qkf_free(buf);
            return qkf_set_error("%s: cannot open (%s)", path, strerror(errno));
        }
        for (int64_t r = 0; r < sizes[i]; r++, k++) {
            if (fread(buf, 1, (size_t)rec, f) != (size_t)rec) {
                fclose(f);
                qkf_free(buf);
                return qkf_set_error("%s: short read at byte %lld", path, (long long)(r * rec));
            }
            int label = buf[lb - 1];
            if (label >= classes) {
                fclose(f);
                qkf_free(buf);
                return qkf_set_error("%s: label %d out of range 0..%d at byte %lld", path, label,
                                     classes - 1, (long long)(r * rec + lb - 1));
            }
            d->labels[k] = label;
            memcpy(d->pixels + k * 3072, buf + lb, 3072);
        }
        fclose(f);
    }
    qkf_free(buf);
    snprintf(d->source, sizeof d->source, "%s", dir);
    return 0;
}

/* ---- HDF5 ------------------------------------------------------------------------------------ */

static int load_h5(const char *path, qkf_dataset *d)
{
    float *img = NULL;
    int64_t *lab = NULL;
    int nd, ld;
    int64_t s[5], ls[5];
    /* images [n,C,H,W], or event-count frames `input` [n,T,C,H,W] for the DVS variants */
    int frames = qkf_h5_has(path, "images") == 0 && qkf_h5_has(path, "input") == 1;
    const char *key = frames ? "input" : "images";
    if (qkf_h5_read_f32(path, key, &img, &nd, s))
        return -1;
    if (frames ? (nd != 5 || s[2] > 4) : (nd != 4 || s[1] > 4)) {
        qkf_free(img);
        return frames ? qkf_set_error("%s: dataset 'input' must be frames [n,T,C,H,W] with C <= 4",
                                      path)
                      : qkf_set_error("%s: dataset 'images' must be [n,C,H,W] with C <= 4", path);
    }
    if (qkf_h5_read_i64(path, "labels", &lab, &ld, ls)) {
        qkf_free(img);
        return -1;
    }
    if (ld != 1 || ls[0] != s[0]) {
        qkf_free(img);
        qkf_free(lab);
        return qkf_set_error("%s: dataset 'labels' must be [n] with n = %lld", path,
                             (long long)s[0]);
    }
    int o = frames; /* shape offset: frames have T at index 1 */
    int64_t per = s[1 + o] * s[2 + o] * s[3 + o] * (frames ? s[1] : 1), total = s[0] * per;
    float mx = 0.0f;
    for (int64_t i = 0; i < total; i++)
        mx = img[i] > mx ? img[i] : mx;
    float scale = frames || mx > 1.0f ? 1.0f : 255.0f;
    d->n = s[0], d->t = frames ? (int)s[1] : 0;
    d->c = (int)s[1 + o], d->h = (int)s[2 + o], d->w = (int)s[3 + o];
    d->pixels = qkf_malloc((size_t)total);
    d->labels = qkf_malloc((size_t)d->n * sizeof(int32_t));
    for (int64_t i = 0; i < total; i++) {
        float v = img[i] * scale;
        if (!(v >= 0.0f && v <= 255.0f) || (frames && v != floorf(v))) {
            if (frames)
                qkf_set_error("%s: input value %g at flat index %lld is not an event count in "
                              "0..255",
                              path, (double)img[i], (long long)i);
            else
                qkf_set_error("%s: images value %g at flat index %lld is outside [0, %s]", path,
                              (double)img[i], (long long)i, scale > 1.0f ? "1" : "255");
            qkf_free(img);
            qkf_free(lab);
            return -1;
        }
        d->pixels[i] = (uint8_t)(v + 0.5f);
    }
    int64_t mxl = 0;
    for (int64_t i = 0; i < d->n; i++) {
        if (lab[i] < 0 || lab[i] > 100000) {
            int64_t v = lab[i];
            qkf_free(img);
            qkf_free(lab);
            return qkf_set_error("%s: labels[%lld] = %lld is out of range", path, (long long)i,
                                 (long long)v);
        }
        d->labels[i] = (int32_t)lab[i];
        mxl = lab[i] > mxl ? lab[i] : mxl;
    }
    d->classes = (int)mxl + 1;
    qkf_free(img);
    qkf_free(lab);
    snprintf(d->source, sizeof d->source, "%s", path);
    return 0;
}

/* ---- dispatch ------------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

int qkf_dataset_load(const char *name, int train, qkf_dataset *d)
{
    memset(d, 0, sizeof *d);
    char kind[32] = "", arg[512] = "";
    const char *colon = strchr(name, ':');
    if (colon && (size_t)(colon - name) < sizeof kind) {
        memcpy(kind, name, (size_t)(colon - name));
        kind[colon - name] = 0;
        snprintf(arg, sizeof arg, "%s", colon + 1);
    } else {
        snprintf(kind, sizeof kind, "%s", ends_with(name, ".h5") ? "h5" : name);
        snprintf(arg, sizeof arg, "%s", ends_with(name, ".h5") ? name : "");
    }
    int rc;
    if (!strcmp(kind, "fashion-mnist") || !strcmp(kind, "mnist") || !strcmp(kind, "idx")) {
        char dir[600];
        if (arg[0])
            snprintf(dir, sizeof dir, "%s", arg);
        else
            snprintf(dir, sizeof dir, "/usr/share/datasets/%s", kind);
        rc = load_idx(dir, train, 10, d);
    } else if (!strcmp(kind, "cifar10") || !strcmp(kind, "cifar100")) {
        if (!arg[0])
            return qkf_set_error("dataset '%s' needs a directory: %s:DIR", name, kind);
        rc = load_cifar(arg, train, !strcmp(kind, "cifar100"), d);
    } else if (!strcmp(kind, "h5")) {
        /* TRAIN.h5[,TEST.h5]: the test split is the second file, or the same file */
        char *comma = strchr(arg, ',');
        if (comma) {
            *comma = 0;
            rc = load_h5(train ? arg : comma + 1, d);
        } else {
            rc = load_h5(arg, d);
        }
    } else {
        return qkf_set_error("unknown dataset '%s' (fashion-mnist, mnist, mnist:DIR, "
                             "cifar10:DIR, cifar100:DIR, h5:FILE.h5[,TEST.h5])",
                             name);
    }
    if (rc) {
        qkf_dataset_free(d);
        return -1;
    }
    return 0;
}

void qkf_dataset_free(qkf_dataset *d)
{
    qkf_free(d->pixels);
    qkf_free(d->labels);
    memset(d, 0, sizeof *d);
}

void qkf_dataset_stats(const qkf_dataset *d, float *mean, float *std)
{
    int64_t plane = (int64_t)d->h * d->w;
    for (int c = 0; c < d->c; c++) {
        double s = 0.0, ss = 0.0;
        for (int64_t i = 0; i < d->n; i++) {
            const uint8_t *p = d->pixels + (i * d->c + c) * plane;
            for (int64_t j = 0; j < plane; j++) {
                double v = (double)p[j] / 255.0;
                s += v;
                ss += v * v;
            }
        }
        double cnt = (double)d->n * (double)plane, mu = s / cnt;
        mean[c] = (float)mu;
        double var = ss / cnt - mu * mu;
        std[c] = (float)sqrt(var > 1e-12 ? var : 1e-12);
    }
}

/* ---- background loader ----------------------------------------------------------------------- */

#define SLOTS 3

struct qkf_loader {
    qkf_loader_cfg cfg;
    int64_t epoch, next_batch, n_batches, n_use;
    int64_t *perm;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    /* slot s holds batch index slot_batch[s] when ready[s] */
    float *x[SLOTS];
    int32_t *lab[SLOTS];
    int nb[SLOTS];
    int ready[SLOTS];
    int64_t slot_batch[SLOTS];
    int64_t produce, consume; /* next batch index to produce / hand out */
    int held;                 /* slot handed to the consumer, -1 none */
    double wait;
};

static uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int64_t qkf_loader_batches(const qkf_loader_cfg *c)
{
    int64_t n = c->limit > 0 && c->limit < c->d->n ? c->limit : c->d->n;
    return c->drop_last ? n / c->batch : (n + c->batch - 1) / c->batch;
}

/* Sample `idx` of the dataset into dst [c][h][w]: crop, flip, scale, normalise. */
static void make_sample(const qkf_loader *l, int64_t idx, float *dst)
{
    const qkf_loader_cfg *c = &l->cfg;
    const qkf_dataset *d = c->d;
    qkf_rng r;
    qkf_rng_seed(&r, mix64(c->seed ^ mix64((uint64_t)l->epoch * 0x100000001ull + (uint64_t)idx)));
    int dy = 0, dx = 0, flip = 0;
    if (c->crop_pad > 0) {
        dy = (int)(qkf_rng_u64(&r) % (uint64_t)(2 * c->crop_pad + 1)) - c->crop_pad;
        dx = (int)(qkf_rng_u64(&r) % (uint64_t)(2 * c->crop_pad + 1)) - c->crop_pad;
    }
    if (c->flip)
        flip = (int)(qkf_rng_u64(&r) >> 63);
    /* every plane (channel, and frame for event frames) gets the same crop and flip */
    int64_t plane = (int64_t)d->h * d->w, planes = (int64_t)d->c * (d->t > 0 ? d->t : 1);
    for (int64_t pl = 0; pl < planes; pl++) {
        int ch = (int)(pl % d->c);
        const uint8_t *src = d->pixels + (idx * planes + pl) * plane;
        float m = ch < c->n_norm ? c->mean[ch] : 0.0f, s = ch < c->n_norm ? c->std[ch] : 1.0f;
        float a = 1.0f / (255.0f * s), b = -m / s;
        if (d->t > 0) /* event counts pass as they are */
            a = 1.0f, b = 0.0f;
        float *o = dst + pl * plane;
        for (int y = 0; y < d->h; y++)
            for (int x = 0; x < d->w; x++) {
                int sy = y + dy, sx = (flip ? d->w - 1 - x : x) + dx;
                float v = (sy >= 0 && sy < d->h && sx >= 0 && sx < d->w)
                              ? (float)src[sy * d->w + sx]
                              : 0.0f;
                o[y * d->w + x] = v * a + b;
            }
    }
}

static void *worker(void *arg)
{
    qkf_loader *l = arg;
    const qkf_dataset *d = l->cfg.d;
    int64_t per = (int64_t)d->c * d->h * d->w * (d->t > 0 ? d->t : 1);
    for (;;) {
        pthread_mutex_lock(&l->mu);
        int s = -1;
        while (!l->stop && l->produce < l->n_batches) {
            for (int k = 0; k < SLOTS; k++)
                if (!l->ready[k] && k != l->held) {
                    s = k;
                    break;
                }
            if (s >= 0)
                break;
            pthread_cond_wait(&l->cv, &l->mu);
        }
        if (l->stop || l->produce >= l->n_batches) {
            pthread_mutex_unlock(&l->mu);
            return NULL;
        }
        int64_t bi = l->produce++;
        l->ready[s] = 0;
        l->slot_batch[s] = -1;
        pthread_mutex_unlock(&l->mu);

        int64_t i0 = bi * l->cfg.batch;
        int n = (int)(l->n_use - i0 < l->cfg.batch ? l->n_use - i0 : l->cfg.batch);
        for (int j = 0; j < n; j++) {
            int64_t idx = l->perm[i0 + j];
            make_sample(l, idx, l->x[s] + j * per);
            l->lab[s][j] = d->labels[idx];
        }
        pthread_mutex_lock(&l->mu);
        l->nb[s] = n;
        l->slot_batch[s] = bi;
        l->ready[s] = 1;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
    }
}

qkf_loader *qkf_loader_start(const qkf_loader_cfg *cfg, int64_t epoch, int64_t first)
{
    qkf_loader *l = qkf_calloc(1, sizeof *l);
    l->cfg = *cfg;
    l->epoch = epoch;
    l->n_use = cfg->limit > 0 && cfg->limit < cfg->d->n ? cfg->limit : cfg->d->n;
    l->n_batches = qkf_loader_batches(cfg);
    l->perm = qkf_malloc((size_t)l->n_use * sizeof(int64_t));
    for (int64_t i = 0; i < l->n_use; i++)
        l->perm[i] = i;
    if (cfg->shuffle) {
        qkf_rng r;
        qkf_rng_seed(&r, mix64(cfg->seed ^ mix64(0x5eed0000ull + (uint64_t)epoch)));
        for (int64_t i = l->n_use - 1; i > 0; i--) {
            int64_t j = (int64_t)(qkf_rng_u64(&r) % (uint64_t)(i + 1));
            int64_t t = l->perm[i];
            l->perm[i] = l->perm[j];
            l->perm[j] = t;
        }
    }
    int64_t per = (int64_t)cfg->d->c * cfg->d->h * cfg->d->w * (cfg->d->t > 0 ? cfg->d->t : 1);
    for (int s = 0; s < SLOTS; s++) {
        l->x[s] = qkf_malloc((size_t)(per * cfg->batch) * sizeof(float));
        l->lab[s] = qkf_malloc((size_t)cfg->batch * sizeof(int32_t));
    }
    l->produce = l->consume = first < 0 ? 0 : first;
    l->held = -1;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    pthread_create(&l->thread, NULL, worker, l);
    return l;
}

int qkf_loader_next(qkf_loader *l, const float **x, const int32_t **labels, int *B)
{
    pthread_mutex_lock(&l->mu);
    if (l->held >= 0) { /* the consumer is done with the previous batch */
        l->ready[l->held] = 0;
        l->held = -1;
        pthread_cond_broadcast(&l->cv);
    }
    if (l->consume >= l->n_batches) {
        pthread_mutex_unlock(&l->mu);
        return 0;
    }
    double t0 = qkf_now();
    int s;
    for (;;) {
        s = -1;
        for (int k = 0; k < SLOTS; k++)
            if (l->ready[k] && l->slot_batch[k] == l->consume)
                s = k;
        if (s >= 0)
            break;
        pthread_cond_wait(&l->cv, &l->mu);
    }
    l->wait += qkf_now() - t0;
    l->held = s;
    l->consume++;
    *x = l->x[s];
    *labels = l->lab[s];
    *B = l->nb[s];
    pthread_mutex_unlock(&l->mu);
    return 1;
}

double qkf_loader_wait_seconds(const qkf_loader *l) { return l->wait; }

void qkf_loader_stop(qkf_loader *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    for (int s = 0; s < SLOTS; s++) {
        qkf_free(l->x[s]);
        qkf_free(l->lab[s]);
    }
    qkf_free(l->perm);
    qkf_free(l);
}
