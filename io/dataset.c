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
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "../kernels/base.h"
#include "h5_part.h"
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

/* After the last byte of the data at *off: the file must end there (uncompressed). */
static int gz_expect_end(gzFile f, const char *path, int64_t off)
{
    uint8_t extra[4096];
    int64_t n = 0;
    for (int r; (r = gzread(f, extra, sizeof extra)) != 0; n += r) {
        if (r < 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            return qkf_set_error("%s: corrupt compressed data near byte %lld (%s)", path,
                                 (long long)(off + n), msg);
        }
    }
    if (n)
        return qkf_set_error("%s: %lld trailing bytes after the data, at byte %lld "
                             "(uncompressed; the header describes %lld bytes)",
                             path, (long long)n, (long long)off, (long long)off);
    return 0;
}

/* More than any idx file holds; keeps the product of the dimensions far from overflow. */
#define IDX_MAX_BYTES ((int64_t)1 << 46)

static uint32_t be32(const uint8_t *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* The header of an idx file opened with gzopen: checks the magic (unsigned bytes, ndim_want
 * dimensions) and reads the dimensions; *off is the byte after it. */
static int idx_header(gzFile f, const char *used, int ndim_want, int64_t *dims, int64_t *total,
                      int64_t *off)
{
    uint8_t hdr[4];
    *off = 0;
    if (gz_read_exact(f, used, hdr, 4, off))
        return -1;
    if (hdr[0] != 0 || hdr[1] != 0 || hdr[2] != 0x08 || hdr[3] != ndim_want)
        return qkf_set_error("%s: wrong magic 0x%02x%02x%02x%02x at byte 0 (expected 0x000008%02x, "
                             "an idx file of unsigned bytes with %d dimensions)",
                             used, hdr[0], hdr[1], hdr[2], hdr[3], ndim_want, ndim_want);
    *total = 1;
    for (int i = 0; i < ndim_want; i++) {
        uint8_t b[4];
        if (gz_read_exact(f, used, b, 4, off))
            return -1;
        dims[i] = be32(b);
        if (dims[i] < 1 || dims[i] > (1 << 28))
            return qkf_set_error("%s: implausible dimension %lld at byte %lld", used,
                                 (long long)dims[i], (long long)(*off - 4));
        /* three dimensions of up to 2^28 would overflow the product */
        if (*total > IDX_MAX_BYTES / dims[i])
            return qkf_set_error("%s: implausible dimension %lld at byte %lld (the data would "
                                 "exceed %lld bytes)",
                                 used, (long long)dims[i], (long long)(*off - 4),
                                 (long long)IDX_MAX_BYTES);
        *total *= dims[i];
    }
    return 0;
}

/* Whether an idx file can hold the `need` bytes (header included) its header describes, before
 * anything that size is allocated: a plain file must be that long; a gzip file cannot expand by
 * more than deflate's limit of 1032:1 (a 258-byte match in two bits), so a short header cannot
 * make the readers allocate more than the file could ever fill. */
static int idx_check_size(const char *path, int64_t need)
{
    uint8_t magic[2] = {0, 0};
    FILE *fp = fopen(path, "rb");
    struct stat st;
    int got = fp && fread(magic, 1, 2, fp) == 2;
    if (fp)
        fclose(fp);
    if (!got || stat(path, &st) != 0)
        return 0; /* unreadable now: the read that follows reports it */
    int gz = magic[0] == 0x1f && magic[1] == 0x8b;
    if (!gz && st.st_size < need)
        return qkf_set_error("%s: truncated: expected %lld more bytes at byte %lld", path,
                             (long long)(need - st.st_size), (long long)st.st_size);
    if (!gz && st.st_size > need)
        return qkf_set_error("%s: %lld trailing bytes after the data, at byte %lld (the header "
                             "describes a %lld-byte file)",
                             path, (long long)(st.st_size - need), (long long)need,
                             (long long)need);
    if (gz && need / 1032 > (int64_t)st.st_size)
        return qkf_set_error("%s: dimensions at byte 4 describe %lld bytes, more than a "
                             "%lld-byte gzip file can hold (truncated or corrupt)",
                             path, (long long)need, (long long)st.st_size);
    return 0;
}

/* One idx file: ndim_want 3 (images) or 1 (labels). Allocates *data. */
static int read_idx(const char *dir, const char *base, int ndim_want, int64_t *dims,
                    uint8_t **data, char *used, size_t cap)
{
    gzFile f = open_maybe_gz(dir, base, used, cap);
    if (!f)
        return -1;
    int64_t off = 0, total = 0;
    *data = NULL;
    if (idx_header(f, used, ndim_want, dims, &total, &off) || idx_check_size(used, off + total))
        goto fail;
    *data = qkf_malloc((size_t)total);
    if (gz_read_exact(f, used, *data, total, &off) || gz_expect_end(f, used, off))
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
    int64_t idims[3] = {0}, ldims[1] = {0};
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
        return qkf_set_error("%s: %lld labels at byte 4 for %lld images in %s", lpath,
                             (long long)ldims[0], (long long)idims[0], ipath);
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

enum { SRC_IDX, SRC_CIFAR, SRC_H5 };

/* Where split `train` of NAME lives. */
typedef struct {
    int kind;
    int c100;       /* cifar100 */
    char dir[512];  /* idx and CIFAR directory */
    char path[512]; /* the HDF5 file of the split */
} source;

static int resolve(const char *name, int train, source *src)
{
    memset(src, 0, sizeof *src);
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
    if (!strcmp(kind, "fashion-mnist") || !strcmp(kind, "mnist") || !strcmp(kind, "idx")) {
        src->kind = SRC_IDX;
        if (arg[0])
            snprintf(src->dir, sizeof src->dir, "%s", arg);
        else
            snprintf(src->dir, sizeof src->dir, "/usr/share/datasets/%s", kind);
    } else if (!strcmp(kind, "cifar10") || !strcmp(kind, "cifar100")) {
        if (!arg[0])
            return qkf_set_error("dataset '%s' needs a directory: %s:DIR", name, kind);
        src->kind = SRC_CIFAR;
        src->c100 = !strcmp(kind, "cifar100");
        snprintf(src->dir, sizeof src->dir, "%s", arg);
    } else if (!strcmp(kind, "h5")) {
        /* TRAIN.h5[,TEST.h5]: the test split is the second file, or the same file */
        src->kind = SRC_H5;
        char *comma = strchr(arg, ',');
        if (comma)
            *comma = 0;
        snprintf(src->path, sizeof src->path, "%s", comma && !train ? comma + 1 : arg);
    } else {
        return qkf_set_error("unknown dataset '%s' (fashion-mnist, mnist, mnist:DIR, "
                             "cifar10:DIR, cifar100:DIR, h5:FILE.h5[,TEST.h5])",
                             name);
    }
    return 0;
}

int qkf_dataset_load(const char *name, int train, qkf_dataset *d)
{
    memset(d, 0, sizeof *d);
    source src;
    if (resolve(name, train, &src))
        return -1;
    int rc = src.kind == SRC_IDX     ? load_idx(src.dir, train, 10, d)
             : src.kind == SRC_CIFAR ? load_cifar(src.dir, train, src.c100, d)
                                     : load_h5(src.path, d);
    if (rc) {
        qkf_dataset_free(d);
        return -1;
    }
    d->total = d->n;
    return 0;
}

void qkf_dataset_free(qkf_dataset *d)
{
    qkf_free(d->pixels);
    qkf_free(d->labels);
    qkf_free(d->index);
    memset(d, 0, sizeof *d);
}

/* ---- selective reading: the size first, then only the wanted samples ------------------------ */

/* An idx file's place and shape, from its header. */
typedef struct {
    char path[600];
    int64_t dims[3], hdr, rec, n;
} idx_file;

static int idx_probe(const char *dir, const char *base, int ndim, idx_file *x)
{
    gzFile f = open_maybe_gz(dir, base, x->path, sizeof x->path);
    if (!f)
        return -1;
    int64_t off = 0, total = 0;
    int rc = idx_header(f, x->path, ndim, x->dims, &total, &off);
    gzclose(f);
    if (rc)
        return rc;
    x->hdr = off, x->n = x->dims[0], x->rec = total / x->dims[0];
    /* a plain file's size is known without reading it, a gzip file's bounded */
    return idx_check_size(x->path, x->hdr + total);
}

/* Records index[0..k) (ascending) of an idx file into out [k][rec]. A gzipped file is read in one
 * streaming pass to its end (so that truncation is found whatever the subset), keeping only the
 * wanted records; a plain file is read with pread, one call per run of consecutive records, after
 * its size has been checked. */
static int idx_read(const idx_file *x, const int64_t *index, int64_t k, uint8_t *out)
{
    int fd = open(x->path, O_RDONLY);
    if (fd < 0)
        return qkf_set_error("%s: cannot open (%s)", x->path, strerror(errno));
    uint8_t magic[2] = {0, 0};
    ssize_t got = pread(fd, magic, 2, 0);
    int64_t need = x->hdr + x->n * x->rec;
    if (got == 2 && magic[0] == 0x1f && magic[1] == 0x8b) {
        close(fd);
        gzFile f = gzopen(x->path, "rb");
        if (!f)
            return qkf_set_error("%s: cannot open (%s)", x->path, strerror(errno));
        gzbuffer(f, 1 << 17);
        int64_t off = 0, chunk = ((int64_t)1 << 20) / x->rec + 1, j = 0;
        uint8_t *buf = qkf_malloc((size_t)(chunk * x->rec));
        int rc = gz_read_exact(f, x->path, buf, x->hdr, &off);
        for (int64_t r0 = 0; rc == 0 && r0 < x->n; r0 += chunk) {
            int64_t cnt = x->n - r0 < chunk ? x->n - r0 : chunk;
            rc = gz_read_exact(f, x->path, buf, cnt * x->rec, &off);
            for (; rc == 0 && j < k && index[j] < r0 + cnt; j++)
                memcpy(out + j * x->rec, buf + (index[j] - r0) * x->rec, (size_t)x->rec);
        }
        if (rc == 0)
            rc = gz_expect_end(f, x->path, off);
        qkf_free(buf);
        gzclose(f);
        return rc;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < need) {
        int64_t size = fstat(fd, &st) == 0 ? (int64_t)st.st_size : 0;
        close(fd);
        return qkf_set_error("%s: truncated: expected %lld more bytes at byte %lld", x->path,
                             (long long)(need - size), (long long)size);
    }
    for (int64_t j = 0; j < k;) {
        int64_t e = j + 1;
        while (e < k && index[e] == index[e - 1] + 1 && (e - j) * x->rec < (1 << 26))
            e++;
        int64_t len = (e - j) * x->rec, at = x->hdr + index[j] * x->rec, done = 0;
        while (done < len) {
            ssize_t r =
                pread(fd, out + j * x->rec + done, (size_t)(len - done), (off_t)(at + done));
            if (r <= 0) {
                close(fd);
                return qkf_set_error("%s: short read at byte %lld (%s)", x->path,
                                     (long long)(at + done),
                                     r < 0 ? strerror(errno) : "end of file");
            }
            done += r;
        }
        j = e;
    }
    close(fd);
    return 0;
}

typedef struct {
    idx_file img, lab;
} idx_pair;

static int idx_probe_pair(const char *dir, int train, idx_pair *p)
{
    const char *pre = train ? "train" : "t10k";
    char base[64];
    snprintf(base, sizeof base, "%s-images-idx3-ubyte", pre);
    if (idx_probe(dir, base, 3, &p->img))
        return -1;
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", pre);
    if (idx_probe(dir, base, 1, &p->lab))
        return -1;
    if (p->lab.n != p->img.n)
        return qkf_set_error("%s: %lld labels at byte 4 for %lld images in %s", p->lab.path,
                             (long long)p->lab.n, (long long)p->img.n, p->img.path);
    return 0;
}

/* CIFAR: the files of the split and their record counts. */
typedef struct {
    int nf, lb, rec, classes;
    char path[5][600];
    int64_t count[5];
} cifar_files;

static int cifar_probe(const char *dir, int train, int c100, cifar_files *cf)
{
    const char *files10[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                             "data_batch_4.bin", "data_batch_5.bin"};
    cf->nf = !c100 && train ? 5 : 1;
    cf->lb = c100 ? 2 : 1, cf->rec = cf->lb + 3072, cf->classes = c100 ? 100 : 10;
    for (int i = 0; i < cf->nf; i++) {
        const char *nm = c100 ? (train ? "train.bin" : "test.bin")
                              : (train ? files10[i] : "test_batch.bin");
        snprintf(cf->path[i], sizeof cf->path[i], "%s/%s", dir, nm);
        struct stat st;
        if (stat(cf->path[i], &st) != 0)
            return qkf_set_error("%s: cannot open (%s)", cf->path[i], strerror(errno));
        if (st.st_size == 0 || st.st_size % cf->rec)
            return qkf_set_error("%s: truncated or not a CIFAR-%d binary batch: %lld bytes is "
                                 "not a multiple of the %d-byte record (last record starts at "
                                 "byte %lld)",
                                 cf->path[i], cf->classes, (long long)st.st_size, cf->rec,
                                 (long long)(st.st_size / cf->rec * cf->rec));
        cf->count[i] = st.st_size / cf->rec;
    }
    return 0;
}

/* HDF5: which dataset holds the samples, and the shape. */
typedef struct {
    int frames;
    const char *key;
    int64_t s[5], per;
} h5_info;

static int h5_probe(const char *path, h5_info *h)
{
    int nd, ld;
    int64_t ls[5];
    h->frames = qkf_h5_has(path, "images") == 0 && qkf_h5_has(path, "input") == 1;
    h->key = h->frames ? "input" : "images";
    if (qkf_h5_shape(path, h->key, &nd, h->s))
        return -1;
    if (h->frames ? (nd != 5 || h->s[2] > 4) : (nd != 4 || h->s[1] > 4))
        return h->frames
                   ? qkf_set_error("%s: dataset 'input' must be frames [n,T,C,H,W] with C <= 4",
                                   path)
                   : qkf_set_error("%s: dataset 'images' must be [n,C,H,W] with C <= 4", path);
    if (qkf_h5_shape(path, "labels", &ld, ls))
        return -1;
    if (ld != 1 || ls[0] != h->s[0])
        return qkf_set_error("%s: dataset 'labels' must be [n] with n = %lld", path,
                             (long long)h->s[0]);
    int o = h->frames;
    h->per = h->s[1 + o] * h->s[2 + o] * h->s[3 + o] * (h->frames ? h->s[1] : 1);
    return 0;
}

int qkf_dataset_probe(const char *name, int train, qkf_dataset *d)
{
    memset(d, 0, sizeof *d);
    source src;
    if (resolve(name, train, &src))
        return -1;
    if (src.kind == SRC_IDX) {
        idx_pair p;
        if (idx_probe_pair(src.dir, train, &p))
            return -1;
        d->n = p.img.n, d->c = 1, d->h = (int)p.img.dims[1], d->w = (int)p.img.dims[2];
        d->classes = 10;
        snprintf(d->source, sizeof d->source, "%s", p.img.path);
    } else if (src.kind == SRC_CIFAR) {
        cifar_files cf;
        if (cifar_probe(src.dir, train, src.c100, &cf))
            return -1;
        for (int i = 0; i < cf.nf; i++)
            d->n += cf.count[i];
        d->c = 3, d->h = 32, d->w = 32, d->classes = cf.classes;
        snprintf(d->source, sizeof d->source, "%s", src.dir);
    } else {
        h5_info h;
        if (h5_probe(src.path, &h))
            return -1;
        int o = h.frames;
        d->n = h.s[0], d->t = h.frames ? (int)h.s[1] : 0;
        d->c = (int)h.s[1 + o], d->h = (int)h.s[2 + o], d->w = (int)h.s[3 + o];
        snprintf(d->source, sizeof d->source, "%s", src.path);
    }
    d->total = d->n;
    return 0;
}

int qkf_dataset_max(const char *name, int train, int64_t lo, int64_t hi, float *mx)
{
    *mx = 255.0f;
    source src;
    if (resolve(name, train, &src))
        return -1;
    if (src.kind != SRC_H5)
        return 0;
    h5_info h;
    if (h5_probe(src.path, &h))
        return -1;
    if (h.frames)
        return 0;
    enum { BLOCK = 256 };
    /* the dataset held open, read in order (one open and a chunk cache, not one per block) */
    int nd;
    int64_t shape[5];
    qkf_h5_rows *rows = qkf_h5_rows_open(src.path, h.key, &nd, shape);
    if (!rows)
        return -1;
    float *buf = qkf_malloc((size_t)(BLOCK * h.per) * sizeof(float));
    float m = 0.0f;
    int rc = 0;
    for (int64_t r0 = lo; r0 < hi && rc == 0; r0 += BLOCK) {
        int64_t cnt = hi - r0 < BLOCK ? hi - r0 : BLOCK;
        rc = qkf_h5_rows_read_f32(rows, r0, cnt, buf);
        for (int64_t i = 0; rc == 0 && i < cnt * h.per; i++)
            m = buf[i] > m ? buf[i] : m;
    }
    qkf_free(buf);
    qkf_h5_rows_close(rows);
    *mx = m;
    return rc;
}

/* The wanted records of each kind into d (pixels and labels allocated, n = k). */
static int subset_idx(const source *src, int train, const int64_t *index, int64_t k, qkf_dataset *d)
{
    idx_pair p;
    if (idx_probe_pair(src->dir, train, &p))
        return -1;
    uint8_t *lab = qkf_malloc((size_t)(k > 0 ? k : 1));
    if (idx_read(&p.img, index, k, d->pixels) || idx_read(&p.lab, index, k, lab)) {
        qkf_free(lab);
        return -1;
    }
    for (int64_t j = 0; j < k; j++) {
        if (lab[j] >= d->classes) {
            int v = lab[j];
            qkf_free(lab);
            return qkf_set_error("%s: label %d out of range 0..%d at byte %lld", p.lab.path, v,
                                 d->classes - 1, (long long)(p.lab.hdr + index[j]));
        }
        d->labels[j] = lab[j];
    }
    qkf_free(lab);
    return 0;
}

static int subset_cifar(const source *src, int train, const int64_t *index, int64_t k,
                        qkf_dataset *d)
{
    cifar_files cf;
    if (cifar_probe(src->dir, train, src->c100, &cf))
        return -1;
    uint8_t *buf = qkf_malloc((size_t)cf.rec);
    int64_t first = 0, j = 0;
    int rc = 0;
    for (int i = 0; i < cf.nf && rc == 0; first += cf.count[i], i++) {
        if (j >= k || index[j] >= first + cf.count[i])
            continue;
        int fd = open(cf.path[i], O_RDONLY);
        if (fd < 0) {
            rc = qkf_set_error("%s: cannot open (%s)", cf.path[i], strerror(errno));
            break;
        }
        for (; j < k && index[j] < first + cf.count[i]; j++) {
            int64_t at = (index[j] - first) * cf.rec;
            if (pread(fd, buf, (size_t)cf.rec, (off_t)at) != (ssize_t)cf.rec) {
                rc = qkf_set_error("%s: short read at byte %lld", cf.path[i], (long long)at);
                break;
            }
            int label = buf[cf.lb - 1];
            if (label >= cf.classes) {
                rc = qkf_set_error("%s: label %d out of range 0..%d at byte %lld", cf.path[i],
                                   label, cf.classes - 1, (long long)(at + cf.lb - 1));
                break;
            }
            d->labels[j] = label;
            memcpy(d->pixels + j * 3072, buf + cf.lb, 3072);
        }
        close(fd);
    }
    qkf_free(buf);
    return rc;
}

static int subset_h5(const source *src, const int64_t *index, int64_t k, float mx, qkf_dataset *d)
{
    h5_info h;
    if (h5_probe(src->path, &h))
        return -1;
    float *img = qkf_malloc((size_t)((k > 0 ? k : 1) * h.per) * sizeof(float));
    int64_t *lab = qkf_malloc((size_t)(k > 0 ? k : 1) * sizeof(int64_t));
    int rc = -1;
    if (qkf_h5_read_rows_f32(src->path, h.key, index, k, img) ||
        qkf_h5_read_rows_i64(src->path, "labels", index, k, lab))
        goto done;
    /* the scale of the whole split: from its largest value, as load_h5 decides it */
    float scale = h.frames || mx > 1.0f ? 1.0f : 255.0f;
    for (int64_t j = 0; j < k; j++)
        for (int64_t e = 0; e < h.per; e++) {
            float raw = img[j * h.per + e], v = raw * scale;
            if (!(v >= 0.0f && v <= 255.0f) || (h.frames && v != floorf(v))) {
                long long flat = (long long)(index[j] * h.per + e);
                if (h.frames)
                    qkf_set_error("%s: input value %g at flat index %lld is not an event count "
                                  "in 0..255",
                                  src->path, (double)raw, flat);
                else
                    qkf_set_error("%s: images value %g at flat index %lld is outside [0, %s]",
                                  src->path, (double)raw, flat, scale > 1.0f ? "1" : "255");
                goto done;
            }
            d->pixels[j * h.per + e] = (uint8_t)(v + 0.5f);
        }
    int64_t mxl = 0;
    for (int64_t j = 0; j < k; j++) {
        if (lab[j] < 0 || lab[j] > 100000) {
            qkf_set_error("%s: labels[%lld] = %lld is out of range", src->path,
                          (long long)index[j], (long long)lab[j]);
            goto done;
        }
        d->labels[j] = (int32_t)lab[j];
        mxl = lab[j] > mxl ? lab[j] : mxl;
    }
    d->classes = (int)mxl + 1;
    rc = 0;
done:
    qkf_free(img);
    qkf_free(lab);
    return rc;
}

int qkf_dataset_load_subset(const char *name, int train, const int64_t *index, int64_t k,
                            float mx, qkf_dataset *d)
{
    source src;
    if (qkf_dataset_probe(name, train, d) || resolve(name, train, &src))
        return -1;
    for (int64_t j = 0; j < k; j++)
        if (index[j] < 0 || index[j] >= d->total || (j && index[j] <= index[j - 1])) {
            qkf_set_error("%s: sample %lld is not in 0..%lld (or the indices are not ascending)",
                          d->source, (long long)index[j], (long long)d->total - 1);
            memset(d, 0, sizeof *d);
            return -1;
        }
    int64_t per = (int64_t)d->c * d->h * d->w * (d->t > 0 ? d->t : 1);
    d->n = k;
    d->pixels = qkf_malloc((size_t)((k > 0 ? k : 1) * per));
    d->labels = qkf_malloc((size_t)(k > 0 ? k : 1) * sizeof(int32_t));
    d->index = qkf_malloc((size_t)(k > 0 ? k : 1) * sizeof(int64_t));
    if (k > 0)
        memcpy(d->index, index, (size_t)k * sizeof(int64_t));
    int rc = src.kind == SRC_IDX     ? subset_idx(&src, train, index, k, d)
             : src.kind == SRC_CIFAR ? subset_cifar(&src, train, index, k, d)
                                     : subset_h5(&src, index, k, mx, d);
    if (rc) {
        qkf_dataset_free(d);
        return -1;
    }
    return 0;
}

/* ---- streaming: samples [lo, hi) in order, a block at a time ---------------------------------- */

struct qkf_dataset_stream {
    char name[1100];
    int train;
    float mx;
    int64_t pos, hi;
    /* a gzipped idx pair is read forward through open streams (a subset read would inflate the
     * file from its start for every block); everything else by qkf_dataset_load_subset */
    int gz;
    idx_pair p;
    gzFile fi, fl;
    int64_t off_i, off_l; /* uncompressed offsets */
    qkf_dataset meta;
};

static int is_gzip(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    uint8_t m[2] = {0, 0};
    ssize_t got = pread(fd, m, 2, 0);
    close(fd);
    return got == 2 && m[0] == 0x1f && m[1] == 0x8b;
}

/* Reads and drops n records of rec bytes. */
static int gz_skip(gzFile f, const char *path, int64_t n, int64_t rec, int64_t *off)
{
    int64_t chunk = ((int64_t)1 << 20) / rec + 1;
    uint8_t *buf = qkf_malloc((size_t)(chunk * rec));
    int rc = 0;
    for (int64_t r0 = 0; rc == 0 && r0 < n; r0 += chunk)
        rc = gz_read_exact(f, path, buf, (n - r0 < chunk ? n - r0 : chunk) * rec, off);
    qkf_free(buf);
    return rc;
}

void qkf_dataset_stream_close(qkf_dataset_stream *s)
{
    if (!s)
        return;
    if (s->fi)
        gzclose(s->fi);
    if (s->fl)
        gzclose(s->fl);
    qkf_free(s);
}

qkf_dataset_stream *qkf_dataset_stream_open(const char *name, int train, int64_t lo, int64_t hi,
                                            float mx)
{
    qkf_dataset_stream *s = qkf_calloc(1, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->train = train, s->mx = mx, s->pos = lo, s->hi = hi;
    source src;
    if (qkf_dataset_probe(name, train, &s->meta) || resolve(name, train, &src))
        goto fail;
    if (lo < 0 || hi < lo || hi > s->meta.total) {
        qkf_set_error("%s: samples %lld..%lld are not in 0..%lld", s->meta.source, (long long)lo,
                      (long long)hi - 1, (long long)s->meta.total - 1);
        goto fail;
    }
    if (src.kind == SRC_IDX) {
        if (idx_probe_pair(src.dir, train, &s->p))
            goto fail;
        s->gz = is_gzip(s->p.img.path) || is_gzip(s->p.lab.path);
    }
    if (s->gz) {
        if (!(s->fi = gzopen(s->p.img.path, "rb")) || !(s->fl = gzopen(s->p.lab.path, "rb"))) {
            qkf_set_error("%s: cannot open (%s)", s->fi ? s->p.lab.path : s->p.img.path,
                          strerror(errno));
            goto fail;
        }
        gzbuffer(s->fi, 1 << 17);
        if (gz_skip(s->fi, s->p.img.path, 1, s->p.img.hdr, &s->off_i) ||
            gz_skip(s->fl, s->p.lab.path, 1, s->p.lab.hdr, &s->off_l) ||
            gz_skip(s->fi, s->p.img.path, lo, s->p.img.rec, &s->off_i) ||
            gz_skip(s->fl, s->p.lab.path, lo, s->p.lab.rec, &s->off_l))
            goto fail;
    }
    return s;
fail:
    qkf_dataset_stream_close(s);
    return NULL;
}

int64_t qkf_dataset_stream_next(qkf_dataset_stream *s, int64_t k, qkf_dataset *d)
{
    qkf_dataset_free(d);
    if (k > s->hi - s->pos)
        k = s->hi - s->pos;
    if (k <= 0)
        return 0;
    int64_t *index = qkf_malloc((size_t)k * sizeof(int64_t));
    for (int64_t j = 0; j < k; j++)
        index[j] = s->pos + j;
    if (!s->gz) {
        int rc = qkf_dataset_load_subset(s->name, s->train, index, k, s->mx, d);
        qkf_free(index);
        if (rc)
            return -1;
        s->pos += k;
        return k;
    }
    /* as qkf_dataset_load_subset fills d (subset_idx), from the open streams */
    *d = s->meta;
    d->n = k, d->index = index;
    int64_t per = (int64_t)d->c * d->h * d->w;
    d->pixels = qkf_malloc((size_t)(k * per));
    d->labels = qkf_malloc((size_t)k * sizeof(int32_t));
    uint8_t *lab = qkf_malloc((size_t)k);
    int rc = gz_read_exact(s->fi, s->p.img.path, d->pixels, k * s->p.img.rec, &s->off_i) ||
             gz_read_exact(s->fl, s->p.lab.path, lab, k * s->p.lab.rec, &s->off_l);
    for (int64_t j = 0; rc == 0 && j < k; j++) {
        if (lab[j] >= d->classes)
            rc = qkf_set_error("%s: label %d out of range 0..%d at byte %lld", s->p.lab.path,
                               lab[j], d->classes - 1, (long long)(s->p.lab.hdr + index[j]));
        d->labels[j] = lab[j];
    }
    qkf_free(lab);
    s->pos += k;
    /* after the last block, the rest of the files is read (and dropped) so that truncation and
     * trailing bytes are found whatever the range, as a whole load finds them */
    if (rc == 0 && s->pos == s->hi)
        rc = gz_skip(s->fi, s->p.img.path, s->p.img.n - s->hi, s->p.img.rec, &s->off_i) ||
             gz_skip(s->fl, s->p.lab.path, s->p.lab.n - s->hi, s->p.lab.rec, &s->off_l) ||
             gz_expect_end(s->fi, s->p.img.path, s->off_i) ||
             gz_expect_end(s->fl, s->p.lab.path, s->off_l);
    if (rc) {
        qkf_dataset_free(d);
        return -1;
    }
    return k;
}

int64_t qkf_dataset_find(const qkf_dataset *d, int64_t i)
{
    if (!d->index)
        return i >= 0 && i < d->n ? i : -1;
    int64_t lo = 0, hi = d->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (d->index[mid] < i)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < d->n && d->index[lo] == i ? lo : -1;
}

int64_t qkf_dataset_bytes(const qkf_dataset *d)
{
    int64_t per = (int64_t)d->c * d->h * d->w * (d->t > 0 ? d->t : 1);
    return d->n * (per + (int64_t)sizeof(int32_t) + (d->index ? (int64_t)sizeof(int64_t) : 0));
}

void qkf_dataset_pixel_sums(const qkf_dataset *d, int64_t *sum, int64_t *sq)
{
    int64_t plane = (int64_t)d->h * d->w;
    for (int c = 0; c < d->c; c++) {
        int64_t s = 0, ss = 0;
        for (int64_t i = 0; i < d->n; i++) {
            const uint8_t *p = d->pixels + (i * d->c + c) * plane;
            for (int64_t j = 0; j < plane; j++)
                s += p[j], ss += (int64_t)p[j] * p[j];
        }
        sum[c] = s, sq[c] = ss;
    }
}

void qkf_dataset_stats_from_sums(const int64_t *sum, const int64_t *sq, int channels,
                                 int64_t count, float *mean, float *std)
{
    for (int c = 0; c < channels; c++) {
        double cnt = (double)count, mu = (double)sum[c] / 255.0 / cnt;
        mean[c] = (float)mu;
        double var = (double)sq[c] / 65025.0 / cnt - mu * mu;
        std[c] = (float)sqrt(var > 1e-12 ? var : 1e-12);
    }
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
    int gb[SLOTS]; /* size of the global batch the slot's rows belong to */
    int64_t slot_batch[SLOTS];
    int64_t produce, consume; /* next batch index to produce / hand out */
    int held;                 /* slot handed to the consumer, -1 none */
    int held_gb;              /* global batch size of the batch handed out */
    double wait;
};

static uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Samples of the split the loader draws from: the first `limit` of the whole split. */
static int64_t n_use_of(const qkf_loader_cfg *c)
{
    int64_t n = c->d->index ? c->d->total : c->d->n;
    return c->limit > 0 && c->limit < n ? c->limit : n;
}

int64_t qkf_loader_batches(const qkf_loader_cfg *c)
{
    int64_t n = n_use_of(c);
    return c->drop_last ? n / c->batch : (n + c->batch - 1) / c->batch;
}

/* The epoch's order of the n samples: identity, or a permutation from (seed, epoch). */
static int64_t *make_perm(const qkf_loader_cfg *cfg, int64_t epoch, int64_t n)
{
    int64_t *perm = qkf_malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    if (cfg->shuffle) {
        qkf_rng r;
        qkf_rng_seed(&r, mix64(cfg->seed ^ mix64(0x5eed0000ull + (uint64_t)epoch)));
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)(qkf_rng_u64(&r) % (uint64_t)(i + 1));
            int64_t t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
    }
    return perm;
}

/* Rank `rank` of `ranks`'s contiguous share [lo, hi) of n rows (as qkf_dist_shard). */
static void share(int64_t n, int rank, int ranks, int64_t *lo, int64_t *hi)
{
    int64_t q = n / ranks, r = n % ranks;
    *lo = rank * q + (rank < r ? rank : r);
    *hi = *lo + q + (rank < r ? 1 : 0);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int qkf_loader_indices(const qkf_loader_cfg *cfg, int64_t epoch, int64_t first, int64_t **index,
                       int64_t *k)
{
    int64_t n = n_use_of(cfg), nb = qkf_loader_batches(cfg);
    int ranks = cfg->ranks > 1 ? cfg->ranks : 1;
    int64_t *perm = make_perm(cfg, epoch, n);
    int64_t cap = (nb - (first > 0 ? first : 0)) * ((cfg->batch + ranks - 1) / ranks);
    int64_t *out = qkf_malloc((size_t)(cap > 0 ? cap : 1) * sizeof(int64_t)), m = 0;
    for (int64_t bi = first > 0 ? first : 0; bi < nb; bi++) {
        int64_t i0 = bi * cfg->batch, ng = n - i0 < cfg->batch ? n - i0 : cfg->batch, lo, hi;
        share(ng, cfg->rank, ranks, &lo, &hi);
        for (int64_t p = lo; p < hi; p++)
            out[m++] = perm[i0 + p];
    }
    qkf_free(perm);
    qsort(out, (size_t)m, sizeof *out, cmp_i64); /* distinct: a permutation's entries */
    *index = out;
    *k = m;
    return 0;
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
    int64_t at = d->index ? qkf_dataset_find(d, idx) : idx; /* where a subset holds it */
    if (at < 0) /* a programming error: the subset lacks a sample of qkf_loader_indices */
        abort();
    for (int64_t pl = 0; pl < planes; pl++) {
        int ch = (int)(pl % d->c);
        const uint8_t *src = d->pixels + (at * planes + pl) * plane;
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
        int ng = (int)(l->n_use - i0 < l->cfg.batch ? l->n_use - i0 : l->cfg.batch), n = ng;
        if (l->cfg.ranks > 1) { /* this rank's rows of the global batch */
            int64_t lo, hi;
            share(ng, l->cfg.rank, l->cfg.ranks, &lo, &hi);
            n = (int)(hi - lo);
            for (int j = 0; j < n; j++) {
                int64_t idx = l->perm[i0 + lo + j];
                make_sample(l, idx, l->x[s] + j * per);
                l->lab[s][j] = d->labels[qkf_dataset_find(d, idx)];
            }
        } else {
            for (int j = 0; j < n; j++) {
                int64_t idx = l->perm[i0 + j];
                make_sample(l, idx, l->x[s] + j * per);
                l->lab[s][j] = d->labels[d->index ? qkf_dataset_find(d, idx) : idx];
            }
        }
        pthread_mutex_lock(&l->mu);
        l->nb[s] = n;
        l->gb[s] = ng;
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
    l->n_use = n_use_of(cfg);
    l->n_batches = qkf_loader_batches(cfg);
    l->perm = make_perm(cfg, epoch, l->n_use);
    int64_t per = (int64_t)cfg->d->c * cfg->d->h * cfg->d->w * (cfg->d->t > 0 ? cfg->d->t : 1);
    int64_t rows =
        cfg->ranks > 1 ? ((int64_t)cfg->batch + cfg->ranks - 1) / cfg->ranks : cfg->batch;
    for (int s = 0; s < SLOTS; s++) {
        l->x[s] = qkf_malloc((size_t)(per * rows) * sizeof(float));
        l->lab[s] = qkf_malloc((size_t)rows * sizeof(int32_t));
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
    l->held_gb = l->gb[s];
    pthread_mutex_unlock(&l->mu);
    return 1;
}

int qkf_loader_global_batch(const qkf_loader *l) { return l->held_gb; }

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
