/* afl++ harness for the image-dataset readers of io/dataset.c (idx and CIFAR binary; HDF5 is
 * left to the HDF5 library); not part of the CMake build (see tools/fuzz/README.md).
 *
 * The readers take a directory, so each input is written as files into a private temporary
 * directory (in /dev/shm when there is one). Byte 0 of the input picks the reader (mod 3):
 *   0  idx: bytes 1-2 are L (big-endian), the next L bytes the images file, the rest the labels
 *      file; written once as they are (split "train"; an input starting 1f 8b is read by zlib)
 *      and once gzipped by the harness (split "t10k");
 *   1  CIFAR-10: bytes 1.. are test_batch.bin and each of data_batch_1..5.bin;
 *   2  CIFAR-100: bytes 1.. are test.bin.
 * Every split goes through qkf_dataset_probe, qkf_dataset_load and qkf_dataset_load_subset (the
 * first and last samples and every other one of the first 64), and the readers' contract is
 * checked; a breach aborts (afl records it as a crash):
 *   - on error: nothing left to free, one printable line starting with the path of one of the
 *     split's files, naming a byte offset within that file (uncompressed) as "byte N";
 *   - a probe that fails means the load fails too; after a successful load the probe agrees on
 *     the size and shape, and every subset succeeds and holds exactly the load's records;
 *   - on success: the shape the format says, every label within the class count, images and
 *     labels equal to the file's bytes, one label per image.
 *
 * Without arguments (afl's persistent mode, when built with afl-clang-fast) inputs come from
 * afl's shared memory; with arguments each is a file to run once (triage, replaying a queue);
 * `--seeds DIR` writes the seed inputs (from the Fashion-MNIST test split when it is installed). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h> /* unlink, rmdir */
#include <zlib.h>

#include "io/dataset.h"
#include "kernels/base.h"
#include "fuzz_util.h"

static char dir[256];

static void breach(const char *what, const char *name)
{
    fprintf(stderr, "fuzz_dataset: contract broken (%s; dataset %s): %s\n", what, name,
            qkf_last_error());
    abort();
}

static void put_file(const char *base, const uint8_t *data, size_t len, int gz)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, base);
    if (gz) {
        gzFile f = gzopen(path, "wb");
        if (!f || (len && gzwrite(f, data, (unsigned)len) != (int)len) || gzclose(f) != Z_OK)
            breach("cannot write a gzipped input file", path);
        return;
    }
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0)
        breach("cannot write an input file", path);
}

/* The files of the split being tested: their names and (uncompressed) sizes, -1 if unknown. */
typedef struct {
    const char *base[6];
    long long size[6];
    int nf;
} files;

static int is_gz(const uint8_t *b, size_t len) { return len >= 2 && b[0] == 0x1f && b[1] == 0x8b; }

/* The message starts with one of the split's files, fits one line and names a byte offset within
 * that file. */
static void check_error(const files *fs, const char *name)
{
    const char *msg = qkf_last_error();
    size_t dl = strlen(dir);
    for (const char *m = msg; *m; m++)
        if ((unsigned char)*m < 0x20 || *m == 0x7F)
            breach("message is not one printable line", name);
    if (strncmp(msg, dir, dl) != 0 || msg[dl] != '/')
        breach("message does not start with a file of the split", name);
    int f = -1;
    for (int i = 0; i < fs->nf; i++) {
        size_t bl = strlen(fs->base[i]);
        if (!strncmp(msg + dl + 1, fs->base[i], bl) &&
            (msg[dl + 1 + bl] == ':' || !strncmp(msg + dl + 1 + bl, ".gz:", 4)))
            f = i;
    }
    if (f < 0)
        breach("message does not start with a file of the split", name);
    const char *b = strstr(msg, "byte ");
    if (!b)
        breach("message names no byte offset", name);
    long long off = strtoll(b + 5, NULL, 10);
    if (off < 0 || (fs->size[f] >= 0 && off > fs->size[f]))
        breach("byte offset outside the file", name);
}

static void check_zeroed(const qkf_dataset *d, const char *name)
{
    if (d->pixels || d->labels || d->index || d->n)
        breach("data left after an error", name);
}

/* The subsets of a split of `total` samples: after a good load each equals the load's records;
 * after a failed one a subset may still succeed (its records are fine) or fail by the rules. */
static void check_subsets(const char *name, int train, const files *fs, int64_t total,
                          const qkf_dataset *full)
{
    int64_t idx[40], k = 0;
    idx[k++] = 0;
    for (int64_t i = 2; i < total && i < 64; i += 2)
        idx[k++] = i;
    if (total - 1 > idx[k - 1])
        idx[k++] = total - 1;
    qkf_dataset s;
    for (int pass = 0; pass < 2; pass++) {
        int64_t kk = pass ? 1 : k; /* the first sample alone, then all of them */
        memset(&s, 0x5A, sizeof s);
        qkf_clear_error();
        if (qkf_dataset_load_subset(name, train, idx, kk, 255.0f, &s)) {
            if (full)
                breach("a subset of a good split fails", name);
            check_error(fs, name);
            check_zeroed(&s, name);
            continue;
        }
        if (s.n != kk || s.total != total || !s.index || !s.pixels || !s.labels)
            breach("subset has the wrong size", name);
        int64_t per = (int64_t)s.c * s.h * s.w;
        for (int64_t j = 0; j < kk; j++) {
            if (s.index[j] != idx[j] || s.labels[j] < 0 || s.labels[j] >= s.classes)
                breach("subset index or label wrong", name);
            if (full && (s.labels[j] != full->labels[idx[j]] ||
                         memcmp(s.pixels + j * per, full->pixels + idx[j] * per, (size_t)per)))
                breach("subset differs from the whole load", name);
        }
        if (full && (s.c != full->c || s.h != full->h || s.w != full->w || s.t != full->t ||
                     s.classes != full->classes))
            breach("subset shape differs from the whole load", name);
        qkf_dataset_free(&s);
    }
}

/* Probe, load and subsets of one split; `expect` checks a good load against the input bytes. */
static void run_split(const char *name, int train, const files *fs,
                      void (*expect)(const qkf_dataset *, const void *), const void *arg)
{
    qkf_dataset p, d;
    memset(&p, 0x5A, sizeof p);
    qkf_clear_error();
    int prc = qkf_dataset_probe(name, train, &p);
    if (prc)
        check_error(fs, name);
    memset(&d, 0x5A, sizeof d);
    qkf_clear_error();
    if (qkf_dataset_load(name, train, &d)) {
        check_error(fs, name);
        check_zeroed(&d, name);
        if (!prc && p.total > 0)
            check_subsets(name, train, fs, p.total, NULL);
        return;
    }
    if (prc)
        breach("the probe fails but the load succeeds", name);
    if (d.n < 1 || d.total != d.n || d.index || d.t || !d.pixels || !d.labels)
        breach("bad counts after a load", name);
    if (p.n != d.n || p.total != d.n || p.c != d.c || p.h != d.h || p.w != d.w || p.t != d.t ||
        p.classes != d.classes || p.pixels || p.labels)
        breach("the probe disagrees with the load", name);
    for (int64_t i = 0; i < d.n; i++)
        if (d.labels[i] < 0 || d.labels[i] >= d.classes)
            breach("label outside the class count", name);
    expect(&d, arg);
    check_subsets(name, train, fs, d.total, &d);
    qkf_dataset_free(&d);
}

typedef struct {
    const uint8_t *img, *lab;
    size_t ni, nl;
    int exact; /* the loader sees these bytes (not a gzip stream of them that zlib unpacks) */
} idx_input;

static void expect_idx(const qkf_dataset *d, const void *arg)
{
    const idx_input *in = arg;
    int64_t per = (int64_t)d->h * d->w;
    if (d->c != 1 || d->classes != 10 || d->h < 1 || d->w < 1)
        breach("idx shape", "idx");
    if (!in->exact)
        return;
    if (16 + d->n * per > (int64_t)in->ni || 8 + d->n > (int64_t)in->nl)
        breach("idx load holds more than the files", "idx");
    if (memcmp(d->pixels, in->img + 16, (size_t)(d->n * per)))
        breach("idx pixels differ from the file", "idx");
    for (int64_t i = 0; i < d->n; i++)
        if (d->labels[i] != in->lab[8 + i])
            breach("idx labels differ from the file", "idx");
}

typedef struct {
    const uint8_t *data;
    size_t len;
    int lb, copies;
} cifar_input;

static void expect_cifar(const qkf_dataset *d, const void *arg)
{
    const cifar_input *in = arg;
    int64_t rec = in->lb + 3072, per_file = (int64_t)in->len / rec;
    if (d->c != 3 || d->h != 32 || d->w != 32 || d->classes != (in->lb == 2 ? 100 : 10))
        breach("cifar shape", "cifar");
    if ((int64_t)in->len % rec || d->n != per_file * in->copies)
        breach("cifar sample count differs from the file size", "cifar");
    for (int64_t i = 0; i < d->n; i++) {
        const uint8_t *r = in->data + (i % per_file) * rec;
        if (d->labels[i] != r[in->lb - 1] || memcmp(d->pixels + i * 3072, r + in->lb, 3072))
            breach("cifar record differs from the file", "cifar");
    }
}

static void fuzz_one(const uint8_t *data, size_t len)
{
    char name[300];
    if (len < 1)
        return;
    int sel = data[0] % 3;
    if (sel == 0) {
        size_t l = len >= 3 ? (size_t)data[1] << 8 | data[2] : 0;
        size_t rest = len >= 3 ? len - 3 : 0;
        l = l < rest ? l : rest;
        idx_input in = {data + 3, data + 3 + l, l, rest - l, 0};
        if (len < 3)
            in.img = in.lab = data;
        in.exact = !is_gz(in.img, in.ni) && !is_gz(in.lab, in.nl);
        snprintf(name, sizeof name, "idx:%s", dir);
        /* as they are (zlib reads an input starting 1f 8b), then gzipped */
        files plain = {{"train-images-idx3-ubyte", "train-labels-idx1-ubyte"},
                       {is_gz(in.img, in.ni) ? -1 : (long long)in.ni,
                        is_gz(in.lab, in.nl) ? -1 : (long long)in.nl},
                       2};
        put_file("train-images-idx3-ubyte", in.img, in.ni, 0);
        put_file("train-labels-idx1-ubyte", in.lab, in.nl, 0);
        run_split(name, 1, &plain, expect_idx, &in);
        files gz = {{"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"},
                    {(long long)in.ni, (long long)in.nl},
                    2};
        put_file("t10k-images-idx3-ubyte.gz", in.img, in.ni, 1);
        put_file("t10k-labels-idx1-ubyte.gz", in.lab, in.nl, 1);
        in.exact = 1;
        run_split(name, 0, &gz, expect_idx, &in);
        return;
    }
    cifar_input in = {data + 1, len - 1, sel == 2 ? 2 : 1, 1};
    long long sz = (long long)in.len;
    if (sel == 1) {
        snprintf(name, sizeof name, "cifar10:%s", dir);
        files test = {{"test_batch.bin"}, {sz}, 1};
        put_file("test_batch.bin", in.data, in.len, 0);
        run_split(name, 0, &test, expect_cifar, &in);
        files train = {{"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                        "data_batch_4.bin", "data_batch_5.bin"},
                       {sz, sz, sz, sz, sz},
                       5};
        for (int i = 0; i < 5; i++)
            put_file(train.base[i], in.data, in.len, 0);
        in.copies = 5;
        run_split(name, 1, &train, expect_cifar, &in);
    } else {
        snprintf(name, sizeof name, "cifar100:%s", dir);
        files test = {{"test.bin"}, {sz}, 1};
        put_file("test.bin", in.data, in.len, 0);
        run_split(name, 0, &test, expect_cifar, &in);
    }
}

static void cleanup(void)
{
    const char *names[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                           "test_batch.bin", "data_batch_1.bin", "data_batch_2.bin",
                           "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin",
                           "test.bin"};
    char path[512];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}


/* ---- seeds ----------------------------------------------------------------------------------- */

static void be32(uint8_t *b, uint32_t v)
{
    b[0] = (uint8_t)(v >> 24), b[1] = (uint8_t)(v >> 16), b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

/* An idx seed: selector 0, L, the images file of n h x w images, the labels file. */
static void seed_idx(const char *out, const char *file, int n, int h, int w, const uint8_t *pix,
                     const int32_t *lab, int gz_images)
{
    size_t ni = 16 + (size_t)n * h * w, nl = 8 + (size_t)n;
    uint8_t *img = malloc(ni), *lb = malloc(nl);
    be32(img, 0x803), be32(img + 4, (uint32_t)n), be32(img + 8, (uint32_t)h);
    be32(img + 12, (uint32_t)w);
    memcpy(img + 16, pix, ni - 16);
    be32(lb, 0x801), be32(lb + 4, (uint32_t)n);
    for (int i = 0; i < n; i++)
        lb[8 + i] = (uint8_t)lab[i];
    uint8_t *zimg = NULL;
    if (gz_images) { /* the images part as a gzip stream, for zlib to read */
        uLongf zl = compressBound(ni) + 32;
        zimg = malloc(zl);
        z_stream z;
        memset(&z, 0, sizeof z);
        if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
            abort();
        z.next_in = img, z.avail_in = (uInt)ni, z.next_out = zimg, z.avail_out = (uInt)zl;
        if (deflate(&z, Z_FINISH) != Z_STREAM_END)
            abort();
        ni = z.total_out;
        deflateEnd(&z);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/%s", out, file);
    FILE *f = fopen(path, "wb");
    uint8_t head[3] = {0, (uint8_t)(ni >> 8), (uint8_t)ni};
    fwrite(head, 1, 3, f);
    fwrite(zimg ? zimg : img, 1, ni, f);
    fwrite(lb, 1, nl, f);
    fclose(f);
    free(img), free(lb), free(zimg);
}

/* A CIFAR seed of n records: selector 1 or 2, then the batch. */
static void seed_cifar(const char *out, const char *file, int c100, int n, const uint8_t *pix,
                       const int32_t *lab)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", out, file);
    FILE *f = fopen(path, "wb");
    fputc(c100 ? 2 : 1, f);
    for (int i = 0; i < n; i++) {
        if (c100)
            fputc(lab[i] / 5, f); /* a coarse label: 20 superclasses */
        fputc(lab[i], f);
        fwrite(pix + (size_t)i * 3072, 1, 3072, f);
    }
    fclose(f);
}

static int make_seeds(const char *out)
{
    mkdir(out, 0777);
    /* synthetic: 4 images of 5x4, labels 0, 7, 4, 9 */
    uint8_t tiny[80];
    for (int i = 0; i < 80; i++)
        tiny[i] = (uint8_t)(i * 31 + i / 20);
    const int32_t tl[4] = {0, 7, 4, 9};
    seed_idx(out, "idx_tiny.bin", 4, 5, 4, tiny, tl, 0);
    seed_idx(out, "idx_tiny_gz.bin", 4, 5, 4, tiny, tl, 1);
    /* the first three Fashion-MNIST test images, if installed */
    qkf_dataset d;
    if (qkf_dataset_load("fashion-mnist", 0, &d) == 0) {
        seed_idx(out, "idx_fmnist3.bin", 3, d.h, d.w, d.pixels, d.labels, 0);
        qkf_dataset_free(&d);
    } else {
        fprintf(stderr, "fuzz_dataset: no Fashion-MNIST seed (%s)\n", qkf_last_error());
    }
    /* two CIFAR records each: a smooth colour ramp, labels 3 and 9 (CIFAR-100: 42 and 99) */
    uint8_t pix[2 * 3072];
    for (int i = 0; i < 2 * 3072; i++)
        pix[i] = (uint8_t)(i / 3072 * 100 + (i % 3072) / 1024 * 40 + (i % 1024) / 32 * 2);
    const int32_t l10[2] = {3, 9}, l100[2] = {42, 99};
    seed_cifar(out, "cifar10_2.bin", 0, 2, pix, l10);
    seed_cifar(out, "cifar100_2.bin", 1, 2, pix, l100);
    return 0;
}

/* The directory is made once: under afl, before the fork server starts, so that every child
 * (one at a time) writes into the same one, and no crash leaves a directory behind but this. */
static void make_dir(int remove_at_exit)
{
    struct stat st;
    snprintf(dir, sizeof dir, "%s/qkf-fuzz-dataset-XXXXXX",
             stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "fuzz_dataset: cannot make a temporary directory\n");
        exit(2);
    }
    if (remove_at_exit)
        atexit(cleanup);
}


int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--seeds"))
        return make_seeds(argv[2]);
    if (argc > 1) {
        make_dir(1);
        return fuzz_run_files("fuzz_dataset", argv + 1, argc - 1, fuzz_one);
    }
#ifdef __AFL_FUZZ_TESTCASE_LEN
    make_dir(0); /* left for the user to remove (see the README) */
    return fuzz_persistent(fuzz_one);
#else
    fprintf(stderr, "usage: fuzz_dataset FILE... | --seeds DIR (or under afl-fuzz, built with "
                    "afl-clang-fast)\n");
    return 2;
#endif
}
