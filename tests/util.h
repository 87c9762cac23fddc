/* Helpers shared by the test files: numeric comparison, scratch directories, shell commands and
 * a tiny image dataset. */
#ifndef QKF_TESTS_UTIL_H
#define QKF_TESTS_UTIL_H

#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../io/io.h"
#include "../kernels/base.h"
#include "../kernels/isa.h"
#include "../models/hw.h"

/* ---- kernel paths ---------------------------------------------------------------------------
 * FOR_EACH_ISA(p) { ... } runs its body once per kernel path this CPU and build support
 * (kernels/isa.h: portable, then AVX2, then AVX-512), with that path forced and p its index
 * (qkf_isa_name((qkf_isa)p) names it); afterwards the path of the environment (QKF_ISA, else the
 * best) is back in force. */
static inline int isa_next(int *p)
{
    while (++*p < QKF_ISA_COUNT)
        if (qkf_isa_supported((qkf_isa)*p) && qkf_isa_set((qkf_isa)*p) == 0)
            return 1;
    (void)qkf_isa_init();
    return 0;
}
#define FOR_EACH_ISA(p) for (int p = -1; isa_next(&p);)
#define ISA_NAME(p) qkf_isa_name((qkf_isa)(p))

/* max |a - b| over n values and its index (a NaN difference counts as the largest). */
static inline double max_abs_err(const float *a, const float *b, int64_t n, int64_t *worst)
{
    double m = 0.0;
    *worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > m || isnan(d)) {
            m = d;
            *worst = i;
        }
    }
    return m;
}

/* ---- scratch directories ---------------------------------------------------------------------
 * A suite makes one per test in its init (tmpdir_make(dir, sizeof dir, "io") gives
 * "/tmp/qkf-test-io-XXXXXX") and removes it, with everything in it, in its fini. */

static inline void tmpdir_make(char *dir, size_t cap, const char *name)
{
    snprintf(dir, cap, "/tmp/qkf-test-%s-XXXXXX", name);
    cr_assert_not_null(mkdtemp(dir), "%s", dir);
}

static inline void tmpdir_remove(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            int n = snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (n > 0 && (size_t)n < sizeof p && unlink(p) != 0) /* a subdirectory */
                tmpdir_remove(p);
        }
    closedir(d);
    rmdir(dir);
}

/* "<dir>/<name>" in one of a few rotating buffers, so several can be alive at once. */
static inline const char *tmpdir_path(const char *dir, const char *name)
{
    static char bufs[4][512];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

/* Entries of dir, excluding . and ..; *only (optional) receives the name when there is exactly
 * one. */
static inline int tmpdir_entries(const char *dir, char *only, size_t cap)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "%s", dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (only)
            snprintf(only, cap, "%s", e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

/* ---- commands and data ----------------------------------------------------------------------- */

/* Runs a shell command (printf-style); returns its exit status, -1 if it did not exit. */
static inline int run_cmd(const char *fmt, ...) QKF_PRINTF(1, 2);
static inline int run_cmd(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#ifdef QKF_BINARY
/* Runs the qkf binary with args (shell words) in dir, captures its stdout and stderr into out
 * and err (NUL-terminated, truncated to the buffers) and returns its exit status (255 if it did
 * not exit). The capture files are removed again, so a test can count what qkf left in dir. */
static inline int run_qkf(const char *dir, const char *args, char *out, size_t nout, char *err,
                          size_t nerr)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd %s && %s %s >%s/.qkf-stdout 2>%s/.qkf-stderr", dir, QKF_BINARY,
             args, dir, dir);
    int st = system(cmd);
    char *dst[2] = {out, err};
    size_t cap[2] = {nout, nerr};
    const char *name[2] = {".qkf-stdout", ".qkf-stderr"};
    for (int i = 0; i < 2; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, name[i]);
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(dst[i], 1, cap[i] - 1, f) : 0;
        dst[i][n] = 0;
        if (f)
            fclose(f);
        remove(path);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}
#endif

/* The per-step losses of a JSON-lines metrics file (kind "step"), in order; returns the count. */
static inline int read_losses(const char *path, double *loss, int cap)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < cap) {
        const char *p = strstr(line, "\"loss\":");
        if (strstr(line, "\"kind\":\"step\"") && p)
            loss[n++] = strtod(p + 7, NULL);
    }
    fclose(f);
    return n;
}

/* A tiny HDF5 image dataset (train and test split alike): n 8x8 grey images ('images' uint8
 * [n,1,8,8], 'labels' int64 [n]) whose class 0..3 is the quadrant of a bright 3x3 square. */
static inline void write_quadrant_dataset(const char *path, int n, uint64_t seed)
{
    qkf_h5out *o = qkf_h5out_open(path);
    cr_assert_not_null(o, "%s", qkf_last_error());
    uint8_t *img = qkf_calloc((size_t)n * 64, 1);
    int64_t *lab = qkf_malloc((size_t)n * sizeof(int64_t));
    qkf_rng r;
    qkf_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        int q = (int)(qkf_rng_u64(&r) % 4);
        lab[i] = q;
        for (int j = 0; j < 64; j++)
            img[i * 64 + j] = (uint8_t)(qkf_rng_u64(&r) % 60);
        int y0 = (q / 2) * 4, x0 = (q % 2) * 4;
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 3; x++)
                img[i * 64 + (y0 + y) * 8 + x0 + x] = 250;
    }
    int64_t s[4] = {n, 1, 8, 8}, ls = n;
    cr_assert_eq(qkf_h5out_u8(o, "images", 4, s, img), 0);
    cr_assert_eq(qkf_h5out_i64(o, "labels", 1, &ls, lab), 0);
    cr_assert_eq(qkf_h5out_commit(o), 0);
    qkf_free(img);
    qkf_free(lab);
}

/* The arithmetic of an integer fixture (the 'arith' dataset of tests/fixtures/MODEL_int_PROFILE.h5,
 * in tools/reference/qkformer_int.py's ARITH_FIELDS order) as a qkf_hw_arith. */
static inline void fixture_arith(const int64_t *v, qkf_hw_arith *a)
{
    memset(a, 0, sizeof *a);
    int *f[] = {&a->is_float,        &a->weight_bits,   &a->weight_exp_min, &a->weight_exp_max,
                &a->per_channel,     &a->current_bits,  &a->current_wrap,   &a->current_shift,
                &a->membrane_bits,   &a->membrane_wrap, &a->decay_bits,     &a->threshold_bits,
                &a->threshold_shift, &a->threshold_ge,  &a->reset_subtract, &a->bias_bits,
                &a->bias_exp_max,    &a->graded_bits,   &a->input_bits,     &a->leak,
                &a->weight_codebook};
    for (int i = 0; i < 21; i++)
        *f[i] = (int)v[i];
}

/* An integer fixture made with a dataset normalisation (datasets norm_mean, norm_std) gives it to
 * the float model m before quantisation, as a checkpoint's input_mean / input_std would. */
static inline void fixture_norm(const char *path, qkf_model *m)
{
    if (qkf_h5_has(path, "norm_mean") != 1)
        return;
    float *mean, *sd;
    int nd;
    int64_t sh[5], sh2[5];
    cr_assert_eq(qkf_h5_read_f32(path, "norm_mean", &mean, &nd, sh), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_h5_read_f32(path, "norm_std", &sd, &nd, sh2), 0, "%s", qkf_last_error());
    cr_assert(sh[0] == sh2[0] && sh[0] >= 1 && sh[0] <= 4, "%s: norm shapes", path);
    m->n_norm = (int)sh[0];
    for (int c = 0; c < m->n_norm && c < 4; c++)
        m->input_mean[c] = mean[c], m->input_std[c] = sd[c];
    qkf_free(mean);
    qkf_free(sd);
}

#endif
