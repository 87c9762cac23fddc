/* Sharded evaluation and simulation under mpirun (sim/dist.c): two ranks reproduce one process's
 * accuracy and every integer counter of the sim report exactly, and ranks that disagree on the
 * checkpoint stop with one line naming the rank. Skipped when this build has no MPI
 * (-DQKF_MPI=OFF) or mpirun is missing; tools/test.sh runs them in its MPI stage. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../io/io.h"
#include "../kernels/base.h"
#include "../sim/dist.h"

#define MPIRUN "mpirun --allow-run-as-root --oversubscribe -np 2 "
#define ENV "OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive "

static char tdir[64];

static void setup(void)
{
    if (!qkf_dist_compiled() || system("command -v mpirun >/dev/null 2>&1") != 0)
        cr_skip_test("built without QKF_MPI, or no mpirun");
    qkf_h5_quiet();
    snprintf(tdir, sizeof tdir, "/tmp/qkf-test-mpi-XXXXXX");
    cr_assert_not_null(mkdtemp(tdir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tdir);
    cr_assert_eq(system(cmd), 0);
}

static int run(const char *fmt, ...) QKF_PRINTF(1, 2);
static int run(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A tiny HDF5 dataset (train and test split alike) of 8x8 grey images of 4 classes. */
static void write_dataset(const char *path, int n)
{
    qkf_h5out *o = qkf_h5out_open(path);
    cr_assert_not_null(o, "%s", qkf_last_error());
    uint8_t *img = qkf_calloc((size_t)n * 64, 1);
    int64_t *lab = qkf_malloc((size_t)n * sizeof(int64_t));
    qkf_rng r;
    qkf_rng_seed(&r, 7);
    for (int i = 0; i < n; i++) {
        int q = (int)(qkf_rng_u64(&r) % 4);
        lab[i] = q;
        for (int j = 0; j < 64; j++)
            img[i * 64 + j] = (uint8_t)(qkf_rng_u64(&r) % 60);
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 3; x++)
                img[i * 64 + ((q / 2) * 4 + y) * 8 + (q % 2) * 4 + x] = 250;
    }
    int64_t s[4] = {n, 1, 8, 8}, ls = n;
    cr_assert_eq(qkf_h5out_u8(o, "images", 4, s, img), 0);
    cr_assert_eq(qkf_h5out_i64(o, "labels", 1, &ls, lab), 0);
    cr_assert_eq(qkf_h5out_commit(o), 0);
    qkf_free(img);
    qkf_free(lab);
}

/* Reads a whole small file into buf (NUL-terminated). */
static void slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = 0;
    fclose(f);
}

/* Drops every "seconds" value of a JSON report (wall times differ between runs), in place. */
static void drop_seconds(char *s)
{
    char *p;
    while ((p = strstr(s, "\"seconds\": "))) {
        char *e = p + 11;
        while (*e && *e != ',' && *e != '\n' && *e != '}')
            e++;
        memmove(p, e, strlen(e) + 1);
    }
}

/* A model trained for a few steps (so its accuracy is not trivial), then the same eval and sim
 * on one process and on two ranks. --limit 37: shards of 19 and 18, batches that do not divide
 * them. */
Test(mpi, sharded_eval_and_sim_are_exact, .init = setup, .fini = teardown, .timeout = 120)
{
    char data[128], w[128];
    snprintf(data, sizeof data, "%s/d.h5", tdir);
    snprintf(w, sizeof w, "%s/w.h5", tdir);
    write_dataset(data, 64);
    cr_assert_eq(run(ENV "%s train --img-size 8 --in-channels 1 --num-classes 4 --embed-dims 16 "
                         "--num-heads 2 --mlp-ratio 2 --depths 3 --T 2 --batch 8 --epochs 1 "
                         "--threads 1 --no-eval --quiet --data h5:%s --out %s",
                     QKF_BINARY, data, w),
                 0);
    for (int event = 0; event < 2; event++) {
        const char *mode = event ? "event" : "dense";
        cr_assert_eq(run(ENV "%s eval --weights %s --data h5:%s --mode %s --limit 37 --batch 5 "
                             "2>/dev/null >%s/e1.txt",
                         QKF_BINARY, w, data, mode, tdir),
                     0);
        cr_assert_eq(run(ENV MPIRUN "%s eval --weights %s --data h5:%s --mode %s --limit 37 "
                                    "--batch 5 2>/dev/null >%s/e2.txt",
                         QKF_BINARY, w, data, mode, tdir),
                     0);
        char a[256], b[256], p[256];
        snprintf(p, sizeof p, "%s/e1.txt", tdir);
        slurp(p, a, sizeof a);
        snprintf(p, sizeof p, "%s/e2.txt", tdir);
        slurp(p, b, sizeof b);
        cr_expect(strstr(a, "accuracy: ") != NULL, "%s", a);
        cr_expect_str_eq(a, b, "eval --mode %s: one process and two ranks differ", mode);

        cr_assert_eq(run(ENV "%s sim --weights %s --data h5:%s --mode %s --limit 37 --batch 4 "
                             "--report %s/s1.json --quiet",
                         QKF_BINARY, w, data, mode, tdir),
                     0);
        cr_assert_eq(run(ENV MPIRUN "%s sim --weights %s --data h5:%s --mode %s --limit 37 "
                                    "--batch 4 --report %s/s2.json --quiet",
                         QKF_BINARY, w, data, mode, tdir),
                     0);
        static char r1[1 << 20], r2[1 << 20];
        snprintf(p, sizeof p, "%s/s1.json", tdir);
        slurp(p, r1, sizeof r1);
        snprintf(p, sizeof p, "%s/s2.json", tdir);
        slurp(p, r2, sizeof r2);
        drop_seconds(r1);
        drop_seconds(r2);
        cr_expect(strstr(r1, "\"samples\": 37") != NULL);
        /* integer counters summed exactly, so the whole report (energy included) is equal */
        cr_expect_str_eq(r1, r2, "sim --mode %s: one process and two ranks differ", mode);
    }
}

/* Ranks given different checkpoints (mpirun's MPMD form) stop at start-up, naming the rank;
 * more ranks than samples is refused too. */
Test(mpi, disagreeing_ranks_and_tiny_sets_fail, .init = setup, .fini = teardown, .timeout = 60)
{
    char data[128];
    snprintf(data, sizeof data, "%s/d.h5", tdir);
    write_dataset(data, 8);
    const char *fx = QKF_FIXTURE_DIR;
    cr_assert_neq(run(ENV "mpirun --allow-run-as-root --oversubscribe -np 1 %s sim --weights "
                          "%s/cifar_small.weights.h5 --input %s/cifar_small.ref.h5 --quiet : "
                          "-np 1 %s sim --weights %s/imagenet_small.weights.h5 --input "
                          "%s/cifar_small.ref.h5 --quiet 2>%s/err.txt >/dev/null",
                      QKF_BINARY, fx, fx, QKF_BINARY, fx, fx, tdir),
                  0);
    char err[4096], p[256];
    snprintf(p, sizeof p, "%s/err.txt", tdir);
    slurp(p, err, sizeof err);
    cr_expect(strstr(err, "rank 1: its checkpoint differs") != NULL, "%s", err);
    cr_assert_neq(run(ENV "mpirun --allow-run-as-root --oversubscribe -np 3 %s sim --weights "
                          "%s/cifar_small.weights.h5 --input %s/cifar_small.ref.h5 --quiet "
                          "2>%s/err.txt >/dev/null",
                      QKF_BINARY, fx, fx, tdir),
                  0);
    slurp(p, err, sizeof err);
    cr_expect(strstr(err, "2 samples for 3 ranks") != NULL, "%s", err);
}
