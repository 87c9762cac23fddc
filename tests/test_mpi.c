/* Sharded evaluation and simulation under mpirun (sim/dist.c): two ranks reproduce one process's
 * accuracy and every integer counter of the sim report exactly, and ranks that disagree on the
 * checkpoint stop with one line naming the rank. Skipped when this build has no MPI
 * (-DQKF_MPI=OFF) or mpirun is missing; tools/test.sh runs them in its MPI stage. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "../io/io.h"
#include "../kernels/base.h"
#include "../sim/dist.h"
#include "util.h"

#define MPIRUN "mpirun --allow-run-as-root --oversubscribe -np 2 "
#define ENV "OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive "

static char tdir[64];

static void setup(void)
{
    if (!qkf_dist_compiled() || system("command -v mpirun >/dev/null 2>&1") != 0)
        cr_skip_test("built without QKF_MPI, or no mpirun");
    qkf_h5_quiet();
    tmpdir_make(tdir, sizeof tdir, "mpi");
}

static void teardown(void) { tmpdir_remove(tdir); }

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
    write_quadrant_dataset(data, 64, 7);
    cr_assert_eq(run_cmd(ENV
                         "%s train --img-size 8 --in-channels 1 --num-classes 4 --embed-dims 16 "
                         "--num-heads 2 --mlp-ratio 2 --depths 3 --T 2 --batch 8 --epochs 1 "
                         "--threads 1 --no-eval --quiet --data h5:%s --out %s",
                         QKF_BINARY, data, w),
                 0);
    for (int event = 0; event < 2; event++) {
        const char *mode = event ? "event" : "dense";
        cr_assert_eq(run_cmd(ENV "%s eval --weights %s --data h5:%s --mode %s --limit 37 --batch 5 "
                                 "2>/dev/null >%s/e1.txt",
                             QKF_BINARY, w, data, mode, tdir),
                     0);
        cr_assert_eq(run_cmd(ENV MPIRUN "%s eval --weights %s --data h5:%s --mode %s --limit 37 "
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

        cr_assert_eq(run_cmd(ENV "%s sim --weights %s --data h5:%s --mode %s --limit 37 --batch 4 "
                                 "--report %s/s1.json --quiet",
                             QKF_BINARY, w, data, mode, tdir),
                     0);
        cr_assert_eq(run_cmd(ENV MPIRUN "%s sim --weights %s --data h5:%s --mode %s --limit 37 "
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
    write_quadrant_dataset(data, 8, 7);
    const char *fx = QKF_FIXTURE_DIR;
    cr_assert_neq(run_cmd(ENV "mpirun --allow-run-as-root --oversubscribe -np 1 %s sim --weights "
                              "%s/cifar_small.weights.h5 --input %s/cifar_small.ref.h5 --quiet : "
                              "-np 1 %s sim --weights %s/imagenet_small.weights.h5 --input "
                              "%s/cifar_small.ref.h5 --quiet 2>%s/err.txt >/dev/null",
                          QKF_BINARY, fx, fx, QKF_BINARY, fx, fx, tdir),
                  0);
    char err[4096], p[256];
    snprintf(p, sizeof p, "%s/err.txt", tdir);
    slurp(p, err, sizeof err);
    cr_expect(strstr(err, "rank 1: its checkpoint differs") != NULL, "%s", err);
    cr_assert_neq(run_cmd(ENV "mpirun --allow-run-as-root --oversubscribe -np 3 %s sim --weights "
                              "%s/cifar_small.weights.h5 --input %s/cifar_small.ref.h5 --quiet "
                              "2>%s/err.txt >/dev/null",
                          QKF_BINARY, fx, fx, tdir),
                  0);
    slurp(p, err, sizeof err);
    cr_expect(strstr(err, "2 samples for 3 ranks") != NULL, "%s", err);
}

/* ---- data-parallel training -------------------------------------------------------------------- */

#define TRAIN_ARGS                                                                                 \
    "train --img-size 8 --in-channels 1 --num-classes 4 --embed-dims 16 --num-heads 2 "          \
    "--mlp-ratio 2 --depths 3 --T 2 --batch 8 --epochs 2 --limit-train 32 --log-every 1 "        \
    "--threads 1 --no-eval --quiet --seed 5 "

/* Largest |a - b| / (|b| + 1e-3) over the parameters and running statistics of two checkpoints,
 * with the name of the worst tensor, and (*bias_diff) the largest |a - b| over the biases of
 * convolutions followed by BatchNorm and the running means they shift: BatchNorm cancels those
 * biases, so their gradient is zero but for rounding noise, which AdamW turns into steps of up
 * to +-lr in either run; they are compared separately against that bound. */
static double weights_diff(const char *pa, const char *pb, char *worst, size_t cap,
                           double *bias_diff)
{
    qkf_model a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    cr_assert_eq(qkf_ckpt_load(pa, &a), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_ckpt_load(pb, &b), 0, "%s", qkf_last_error());
    cr_assert_eq(a.params.total, b.params.total);
    qkf_graph g;
    cr_assert_eq(qkf_graph_build(&a.cfg, &a.params, 0, &g), 0, "%s", qkf_last_error());
    int *cancelled = qkf_calloc((size_t)a.params.n, sizeof(int));
    for (int i = 0; i < g.n_ops; i++)
        if (g.ops[i].kind == QKF_OP_CONV && g.ops[i].p_b >= 0)
            cancelled[g.ops[i].p_b] = cancelled[g.ops[i].p_bn_mean] = 1;
    double worst_d = 0.0;
    *bias_diff = 0.0;
    for (int k = 0; k < a.params.n; k++) {
        const qkf_param *p = &a.params.p[k];
        for (int64_t i = 0; i < p->numel; i++) {
            double x = (double)a.params.data[p->offset + i], y = (double)b.params.data[p->offset + i];
            if (cancelled[k]) {
                *bias_diff = fmax(*bias_diff, fabs(x - y));
                continue;
            }
            double d = fabs(x - y) / (fabs(y) + 1e-3);
            if (d > worst_d) {
                worst_d = d;
                snprintf(worst, cap, "%s[%lld]: %.9g vs %.9g", p->name, (long long)i, x, y);
            }
        }
    }
    qkf_free(cancelled);
    qkf_graph_free(&g);
    qkf_model_free(&a);
    qkf_model_free(&b);
    return worst_d;
}

/* --sync-bn: two ranks sharing a global batch of 8 (4 each) follow one process with batch 8: the
 * same per-step losses and the same final weights, within float rounding (the sums run in another
 * order). Then a run stopped after epoch 1 on one process and resumed on two ranks ends where the
 * uninterrupted run does. */
Test(mpi, sync_bn_training_matches_one_process, .init = setup, .fini = teardown, .timeout = 180)
{
    char data[128];
    snprintf(data, sizeof data, "%s/d.h5", tdir);
    write_quadrant_dataset(data, 64, 7);
    cr_assert_eq(run_cmd(ENV "%s " TRAIN_ARGS "--data h5:%s --out %s/w1.h5 --metrics %s/m1.jsonl",
                         QKF_BINARY, data, tdir, tdir),
                 0);
    cr_assert_eq(run_cmd(ENV MPIRUN "%s " TRAIN_ARGS "--sync-bn --data h5:%s --out %s/w2.h5 "
                                    "--metrics %s/m2.jsonl",
                         QKF_BINARY, data, tdir, tdir),
                 0);
    char p1[256], p2[256], worst[512] = "";
    double l1[64], l2[64];
    snprintf(p1, sizeof p1, "%s/m1.jsonl", tdir);
    snprintf(p2, sizeof p2, "%s/m2.jsonl", tdir);
    int n1 = read_losses(p1, l1, 64), n2 = read_losses(p2, l2, 64);
    cr_assert_eq(n1, 8);
    cr_assert_eq(n2, 8, "rank 0 alone writes the metrics: one line per step");
    double ld = 0.0;
    for (int i = 0; i < n1; i++) {
        ld = fmax(ld, fabs(l1[i] - l2[i]) / fabs(l1[i]));
        cr_expect(fabs(l1[i] - l2[i]) <= 1e-4 * fabs(l1[i]), "step %d: loss %.6f vs %.6f", i + 1,
                  l1[i], l2[i]);
    }
    cr_log_info("sync-bn, 2 ranks vs 1: largest relative loss difference %.3g", ld);
    snprintf(p1, sizeof p1, "%s/w1.h5", tdir);
    snprintf(p2, sizeof p2, "%s/w2.h5", tdir);
    double bd, d = weights_diff(p2, p1, worst, sizeof worst, &bd);
    cr_log_info("sync-bn, 2 ranks vs 1: largest relative weight difference %.3g (%s); "
                "BN-cancelled biases %.3g",
                d, worst, bd);
    cr_expect(d <= 1e-4, "final weights differ: %s", worst);
    cr_expect(bd <= 2 * 8 * 1.5e-3, "BN-cancelled biases differ by %g", bd);

    /* one process for epoch 1, two ranks for epoch 2 */
    cr_assert_eq(run_cmd(ENV "%s " TRAIN_ARGS "--max-steps 4 --data h5:%s --out %s/w3.h5",
                         QKF_BINARY, data, tdir),
                 0);
    cr_assert_eq(run_cmd(ENV MPIRUN "%s train --resume %s/w3.h5 --sync-bn --no-eval --quiet "
                                    "--threads 1 --out %s/w3.h5",
                         QKF_BINARY, tdir, tdir),
                 0);
    snprintf(p2, sizeof p2, "%s/w3.h5", tdir);
    d = weights_diff(p2, p1, worst, sizeof worst, &bd);
    cr_log_info("resumed on 2 ranks vs 1: largest relative weight difference %.3g (%s); "
                "BN-cancelled biases %.3g",
                d, worst, bd);
    cr_expect(d <= 1e-4, "resumed run differs: %s", worst);
    cr_expect(bd <= 2 * 8 * 1.5e-3, "BN-cancelled biases differ by %g", bd);
}

/* The gradient all-reduce in small buckets overlapped with the backward (many buckets on this
 * small model) gives exactly the weights of one all-reduce after the backward: the same sums,
 * element by element, with per-rank and with synchronised BatchNorm. */
Test(mpi, bucketed_allreduce_equals_one_allreduce, .init = setup, .fini = teardown,
     .timeout = 180)
{
    char data[128], worst[512] = "", pa[256], pb[256];
    snprintf(data, sizeof data, "%s/d.h5", tdir);
    write_quadrant_dataset(data, 64, 7);
    const char *bn[2] = {"", "--sync-bn "};
    for (int k = 0; k < 2; k++) {
        cr_assert_eq(run_cmd(ENV MPIRUN "%s " TRAIN_ARGS
                                        "%s--bucket-mb 0 --data h5:%s --out %s/a.h5",
                             QKF_BINARY, bn[k], data, tdir),
                     0);
        cr_assert_eq(run_cmd(ENV MPIRUN "%s " TRAIN_ARGS
                                        "%s--bucket-mb 0.002 --data h5:%s --out %s/b.h5",
                             QKF_BINARY, bn[k], data, tdir),
                     0);
        snprintf(pa, sizeof pa, "%s/a.h5", tdir);
        snprintf(pb, sizeof pb, "%s/b.h5", tdir);
        double bd, d = weights_diff(pa, pb, worst, sizeof worst, &bd);
        cr_expect(d == 0.0 && bd == 0.0, "%sbuckets change the weights: %s", bn[k], worst);
    }
}

/* Per-rank BatchNorm (the default) runs and keeps the ranks identical (running statistics
 * averaged); a rank whose parameters drift (test hook) stops the job at the epoch's checksum with
 * one line naming it, and no checkpoint is written. */
Test(mpi, train_ranks_stay_identical, .init = setup, .fini = teardown, .timeout = 120)
{
    char data[128], err[4096], p[256];
    snprintf(data, sizeof data, "%s/d.h5", tdir);
    write_quadrant_dataset(data, 64, 7);
    cr_assert_eq(
        run_cmd(ENV MPIRUN "%s " TRAIN_ARGS "--data h5:%s --out %s/w.h5", QKF_BINARY, data, tdir),
        0);
    cr_assert_neq(run_cmd(ENV "QKF_TEST_DESYNC_RANK=1 " MPIRUN "%s " TRAIN_ARGS
                              "--data h5:%s --out %s/bad.h5 2>%s/err.txt",
                          QKF_BINARY, data, tdir, tdir),
                  0);
    snprintf(p, sizeof p, "%s/err.txt", tdir);
    slurp(p, err, sizeof err);
    cr_expect(strstr(err, "qkf train: rank 1: its parameters differ from rank 0's after step 4") !=
                  NULL,
              "%s", err);
    snprintf(p, sizeof p, "%s/bad.h5", tdir);
    cr_expect_neq(access(p, F_OK), 0, "a diverged run wrote %s", p);
    /* the global batch must give each rank a sample */
    cr_assert_neq(run_cmd(ENV MPIRUN "%s " TRAIN_ARGS "--batch 1 --data h5:%s --out %s/w.h5 "
                                     "2>%s/err.txt",
                          QKF_BINARY, data, tdir, tdir),
                  0);
    snprintf(p, sizeof p, "%s/err.txt", tdir);
    slurp(p, err, sizeof err);
    cr_expect(strstr(err, "--batch 1 is the global batch") != NULL, "%s", err);
}

/* A rank that stops answering ends the job within the watchdog's timeout, with one line from
 * rank 0 naming it, a non-zero exit, and the previous checkpoint intact. */
Test(mpi, hung_rank_is_named_and_the_job_ends, .init = setup, .fini = teardown, .timeout = 60)
{
    char data[128], err[8192], p[256];
    snprintf(data, sizeof data, "%s/d.h5", tdir);
    write_quadrant_dataset(data, 64, 7);
    cr_assert_eq(
        run_cmd(ENV MPIRUN "%s " TRAIN_ARGS "--data h5:%s --out %s/w.h5", QKF_BINARY, data, tdir),
        0);
    snprintf(p, sizeof p, "%s/w.h5", tdir);
    qkf_model before, after;
    memset(&before, 0, sizeof before);
    memset(&after, 0, sizeof after);
    cr_assert_eq(qkf_ckpt_load(p, &before), 0, "%s", qkf_last_error());
    double t0 = qkf_now();
    cr_assert_neq(run_cmd(ENV "QKF_MPI_TIMEOUT=2 " MPIRUN
                              "-x QKF_MPI_TIMEOUT -x QKF_TEST_HANG_RANK=1 "
                              "%s " TRAIN_ARGS "--data h5:%s --out %s/w.h5 2>%s/err.txt",
                          QKF_BINARY, data, tdir, tdir),
                  0);
    double dt = qkf_now() - t0;
    cr_expect_lt(dt, 30.0, "the job took %.1f s to end", dt);
    char ep[256];
    snprintf(ep, sizeof ep, "%s/err.txt", tdir);
    slurp(ep, err, sizeof err);
    cr_expect(strstr(err, "qkf: rank 1 did not reach collective #") != NULL, "%s", err);
    cr_assert_eq(qkf_ckpt_load(p, &after), 0, "the checkpoint was damaged: %s", qkf_last_error());
    cr_expect_eq(memcmp(before.params.data, after.params.data,
                        (size_t)before.params.total * sizeof(float)),
                 0, "the checkpoint changed");
    qkf_model_free(&before);
    qkf_model_free(&after);
}

/* ---- each rank reads only its share of the data ---------------------------------------------- */

static void put_be32(uint8_t *b, uint32_t v)
{
    b[0] = (uint8_t)(v >> 24), b[1] = (uint8_t)(v >> 16), b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

/* The images of write_dataset as gzipped idx files (train and t10k alike) in dir, the format of
 * the default dataset (Fashion-MNIST); cut: bytes cut off the end of the training images. */
static void write_idx_gz(const char *dir, int n, int cut)
{
    uint8_t *img = qkf_calloc((size_t)n * 64, 1), *lab = qkf_malloc((size_t)n);
    qkf_rng r;
    qkf_rng_seed(&r, 7);
    for (int i = 0; i < n; i++) {
        int q = (int)(qkf_rng_u64(&r) % 4);
        lab[i] = (uint8_t)q;
        for (int j = 0; j < 64; j++)
            img[i * 64 + j] = (uint8_t)(qkf_rng_u64(&r) % 60);
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 3; x++)
                img[i * 64 + ((q / 2) * 4 + y) * 8 + (q % 2) * 4 + x] = 250;
    }
    for (int split = 0; split < 2; split++) {
        char p[256];
        uint8_t hdr[16];
        snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte.gz", dir, split ? "t10k" : "train");
        gzFile f = gzopen(p, "wb");
        put_be32(hdr, 0x803), put_be32(hdr + 4, (uint32_t)n), put_be32(hdr + 8, 8);
        put_be32(hdr + 12, 8);
        gzwrite(f, hdr, 16);
        gzwrite(f, img, (unsigned)(n * 64 - (split ? 0 : cut)));
        gzclose(f);
        snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte.gz", dir, split ? "t10k" : "train");
        f = gzopen(p, "wb");
        put_be32(hdr, 0x801), put_be32(hdr + 4, (uint32_t)n);
        gzwrite(f, hdr, 8);
        gzwrite(f, lab, (unsigned)n);
        gzclose(f);
    }
    qkf_free(img);
    qkf_free(lab);
}

#define SHARE_ARGS                                                                                 \
    "train --img-size 8 --in-channels 1 --num-classes 4 --embed-dims 16 --num-heads 2 "          \
    "--mlp-ratio 2 --depths 3 --T 2 --batch 8 --epochs 2 --limit-train 32 --limit-test 20 "      \
    "--log-every 1 --threads 1 --seed 5 "

/* From gzipped idx files (one streaming pass per epoch and rank) and from HDF5 (hyperslabs): two
 * ranks each hold half the samples an epoch uses and half the test shard, say so, and still train
 * what one process trains (--sync-bn: the same losses within float rounding, mixup included,
 * whose partner rows come from the rank holding them). Then the failures: fewer samples than
 * ranks, and a truncated file named with its byte offset, with nothing written. */
Test(mpi, ranks_hold_only_their_share, .init = setup, .fini = teardown, .timeout = 240)
{
    char data[2][256], err[8192], p1[256], p2[256], ep[256];
    snprintf(data[0], sizeof data[0], "idx:%s", tdir);
    write_idx_gz(tdir, 64, 0);
    snprintf(data[1], sizeof data[1], "h5:%s/d.h5", tdir);
    write_quadrant_dataset(data[1] + 3, 64, 7);
    snprintf(ep, sizeof ep, "%s/err.txt", tdir);
    snprintf(p1, sizeof p1, "%s/m1.jsonl", tdir);
    snprintf(p2, sizeof p2, "%s/m2.jsonl", tdir);
    for (int src = 0; src < 2; src++)
        for (int mix = 0; mix < 2; mix++) {
            const char *extra = mix ? "--mixup 0.8 " : "";
            cr_assert_eq(run_cmd(ENV "%s " SHARE_ARGS "%s--data %s --out %s/w1.h5 --metrics %s "
                                     "2>/dev/null",
                                 QKF_BINARY, extra, data[src], tdir, p1),
                         0);
            cr_assert_eq(run_cmd(ENV MPIRUN "%s " SHARE_ARGS "%s--sync-bn --data %s --out %s/w2.h5 "
                                            "--metrics %s 2>%s",
                                 QKF_BINARY, extra, data[src], tdir, p2, ep),
                         0);
            slurp(ep, err, sizeof err);
            cr_expect(strstr(err, "rank 0 holds 16 of 32 training samples (") &&
                          strstr(err, "rank 1 holds 16 of 32 training samples ("),
                      "%s", err);
            cr_expect(strstr(err, "rank 0 holds 10 of 20 test samples (") &&
                          strstr(err, "rank 1 holds 10 of 20 test samples ("),
                      "%s", err);
            double l1[64], l2[64];
            int n1 = read_losses(p1, l1, 64), n2 = read_losses(p2, l2, 64);
            cr_assert_eq(n1, 8);
            cr_assert_eq(n2, 8);
            for (int i = 0; i < n1; i++) /* as in sync_bn_training_matches_one_process */
                cr_expect(fabs(l1[i] - l2[i]) <= 1e-4 * fabs(l1[i]),
                          "%s%s: step %d: loss %.6f vs %.6f", data[src], mix ? ", mixup" : "",
                          i + 1, l1[i], l2[i]);
        }
    /* eval: one rank per shard, and too few samples */
    cr_assert_eq(run_cmd(ENV MPIRUN
                         "%s eval --weights %s/w2.h5 --data %s --limit 5 2>%s >/dev/null",
                         QKF_BINARY, tdir, data[0], ep),
                 0);
    slurp(ep, err, sizeof err);
    cr_expect(strstr(err, "rank 0 holds 3 of 5 test samples") &&
                  strstr(err, "rank 1 holds 2 of 5 test samples"),
              "%s", err);
    cr_assert_neq(run_cmd(ENV MPIRUN
                          "%s eval --weights %s/w2.h5 --data %s --limit 1 2>%s >/dev/null",
                          QKF_BINARY, tdir, data[0], ep),
                  0);
    slurp(ep, err, sizeof err);
    cr_expect(strstr(err, "1 samples for 2 ranks (use fewer ranks)"), "%s", err);
    /* a truncated training file: one line naming it and the byte, no checkpoint */
    write_idx_gz(tdir, 64, 10);
    cr_assert_neq(run_cmd(ENV MPIRUN "%s " SHARE_ARGS "--data %s --out %s/w3.h5 2>%s", QKF_BINARY,
                          data[0], tdir, ep),
                  0);
    slurp(ep, err, sizeof err);
    cr_expect(strstr(err, "train-images-idx3-ubyte.gz: truncated") && strstr(err, "at byte 4102"),
              "%s", err);
    char w3[256];
    snprintf(w3, sizeof w3, "%s/w3.h5", tdir);
    cr_expect_neq(access(w3, F_OK), 0, "a failed run wrote %s", w3);
}

/* qkf sim --input under mpirun: each rank reads only its rows of 'input' (a hyperslab), and the
 * report equals one process's. */
Test(mpi, sim_input_rows_per_rank_are_exact, .init = setup, .fini = teardown, .timeout = 60)
{
    const char *fx = QKF_FIXTURE_DIR;
    char err[4096], p[256];
    static char r1[1 << 20], r2[1 << 20];
    cr_assert_eq(run_cmd(ENV
                         "%s sim --weights %s/cifar_small.weights.h5 --input %s/cifar_small.ref.h5 "
                         "--report %s/s1.json --quiet",
                         QKF_BINARY, fx, fx, tdir),
                 0);
    cr_assert_eq(run_cmd(ENV MPIRUN
                         "%s sim --weights %s/cifar_small.weights.h5 --input "
                         "%s/cifar_small.ref.h5 --report %s/s2.json 2>%s/err.txt >/dev/null",
                         QKF_BINARY, fx, fx, tdir, tdir),
                 0);
    snprintf(p, sizeof p, "%s/err.txt", tdir);
    slurp(p, err, sizeof err);
    cr_expect(strstr(err, "rank 0 holds 1 of 2 samples (") &&
                  strstr(err, "rank 1 holds 1 of 2 samples ("),
              "%s", err);
    snprintf(p, sizeof p, "%s/s1.json", tdir);
    slurp(p, r1, sizeof r1);
    snprintf(p, sizeof p, "%s/s2.json", tdir);
    slurp(p, r2, sizeof r2);
    drop_seconds(r1);
    drop_seconds(r2);
    cr_expect(strstr(r1, "\"samples\": 2") != NULL);
    cr_expect_str_eq(r1, r2, "sim --input: one process and two ranks differ");
}
