/* The qkf command as users' scripts call it: documented outputs, and bad input answered with one
 * line on stderr, a non-zero exit, and no output file left behind. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../io/dataset.h"
#include "../io/io.h"
#include "../kernels/base.h"
#include "util.h"

static char dir[256];

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/qkf_cli_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    qkf_h5_quiet();
}

static void teardown(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

static int run(const char *args, char *out, size_t nout, char *err, size_t nerr)
{
    return run_qkf(dir, args, out, nout, err, nerr);
}

static int exists(const char *name)
{
    char path[512];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &sb) == 0;
}

static int lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* Writes an input file with `input` of the given shape, filled with small values. */
static void write_input(const char *name, int ndim, const int64_t *shape, float poison)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    float *x = qkf_malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)((i * 7919) % 17) / 8.0f - 1.0f;
    if (poison != 0.0f)
        x[n / 2] = poison;
    qkf_h5out *o = qkf_h5out_open(path);
    cr_assert_not_null(o, "%s", qkf_last_error());
    cr_assert_eq(qkf_h5out_f32(o, "input", ndim, shape, x), 0);
    cr_assert_eq(qkf_h5out_commit(o), 0);
    qkf_free(x);
}

static void write_text(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
}

#define W QKF_FIXTURE_DIR "/cifar_small.weights.h5"
#define OUTB 65536

TestSuite(cli, .init = setup, .fini = teardown, .timeout = 120);

Test(cli, info_counts_presets)
{
    static char out[OUTB], err[OUTB];
    cr_assert_eq(run("info --variant cifar100", out, OUTB, err, OUTB), 0, "%s", err);
    cr_expect(strstr(out, "\nparameters: 6740884\n") != NULL, "%s", out);
    cr_assert_eq(run("info --variant dvs128-gesture --mlp-ratio 1", out, OUTB, err, OUTB), 0);
    cr_expect(strstr(out, "\nparameters: 1504395\n") != NULL, "%s", out);
    cr_expect_neq(run("info --variant resnet50", out, OUTB, err, OUTB), 0);
    cr_expect_eq(lines(err), 1, "%s", err);
    cr_expect(strstr(err, "resnet50") != NULL, "%s", err);
}

Test(cli, init_then_info_roundtrip)
{
    static char out[OUTB], err[OUTB];
    cr_assert_eq(run("init --variant cifar10 --out w.h5 --seed 3 --num-classes 7", out, OUTB, err,
                     OUTB),
                 0, "%s", err);
    cr_assert_eq(run("info w.h5", out, OUTB, err, OUTB), 0, "%s", err);
    /* 6706234 minus the head's 3 classes: 3 * 384 weights + 3 biases */
    cr_expect(strstr(out, "\nparameters: 6705079\n") != NULL, "%s", out);
    cr_expect(strstr(out, "classes: 7") != NULL, "%s", out);
}

Test(cli, infer_writes_the_documented_datasets)
{
    static char out[OUTB], err[OUTB];
    int64_t shape[4] = {3, 3, 16, 16};
    write_input("x.h5", 4, shape, 0.0f);
    cr_assert_eq(run("infer --weights " W " --input x.h5 --output y.h5", out, OUTB, err, OUTB), 0,
                 "%s", err);
    cr_expect(strstr(out, "stage1.0.tssa.attn_lif") != NULL, "firing-rate table: %s", out);
    char path[512];
    snprintf(path, sizeof path, "%s/y.h5", dir);
    float *logits;
    int nd;
    int64_t sh[5];
    cr_assert_eq(qkf_h5_read_f32(path, "logits", &logits, &nd, sh), 0, "%s", qkf_last_error());
    cr_expect(nd == 2 && sh[0] == 3 && sh[1] == 10);
    int64_t *cnt;
    cr_assert_eq(qkf_h5_read_i64(path, "spike_count/stage3.1.ssa.attn_lif", &cnt, &nd, sh), 0,
                 "%s", qkf_last_error());
    cr_expect_eq(nd, 0);
    cr_expect_gt(cnt[0], 0);
    float *rate;
    cr_assert_eq(qkf_h5_read_f32(path, "firing_rate/patch_embed1.proj_lif", &rate, &nd, sh), 0);
    cr_expect(rate[0] > 0.0f && rate[0] < 1.0f);
    qkf_free(logits);
    qkf_free(cnt);
    qkf_free(rate);
}

/* Every bad input: exit != 0, exactly one line naming the culprit, no y.h5 and no temporary. */
static void expect_clean_failure(const char *args, const char *needle)
{
    static char out[OUTB], err[OUTB];
    int rc = run(args, out, OUTB, err, OUTB);
    cr_expect_neq(rc, 0, "qkf %s succeeded", args);
    cr_expect_eq(lines(err), 1, "qkf %s: stderr is not one line: %s", args, err);
    cr_expect(strstr(err, needle) != NULL, "qkf %s: '%s' not in: %s", args, needle, err);
    cr_expect(!exists("y.h5"), "qkf %s left y.h5", args);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q tmp", dir);
    cr_expect_neq(system(cmd), 0, "qkf %s left a temporary file", args);
}

Test(cli, infer_bad_inputs)
{
    int64_t good[4] = {2, 3, 16, 16}, chans[4] = {2, 1, 16, 16}, size[4] = {2, 3, 18, 18},
            rank[3] = {3, 16, 16};
    write_input("good.h5", 4, good, 0.0f);
    write_input("chans.h5", 4, chans, 0.0f);
    write_input("size.h5", 4, size, 0.0f);
    write_input("rank.h5", 3, rank, 0.0f);
    write_input("nan.h5", 4, good, NAN);
    write_input("inf.h5", 4, good, INFINITY);
    write_text("text.h5", "this is not an HDF5 file\n");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "head -c 3000 %s > %s/trunc.h5", W, dir);
    cr_assert_eq(system(cmd), 0);

    expect_clean_failure("infer --weights text.h5 --input good.h5 --output y.h5", "text.h5");
    expect_clean_failure("infer --weights trunc.h5 --input good.h5 --output y.h5", "trunc.h5");
    expect_clean_failure("infer --weights missing.h5 --input good.h5 --output y.h5", "missing.h5");
    expect_clean_failure("infer --weights " W " --input text.h5 --output y.h5", "text.h5");
    expect_clean_failure("infer --weights " W " --input chans.h5 --output y.h5", "channels");
    expect_clean_failure("infer --weights " W " --input size.h5 --output y.h5", "18");
    expect_clean_failure("infer --weights " W " --input rank.h5 --output y.h5", "dimensions");
    expect_clean_failure("infer --weights " W " --input nan.h5 --output y.h5", "input");
    expect_clean_failure("infer --weights " W " --input inf.h5 --output y.h5", "input");
    expect_clean_failure("infer --weights " W " --input good.h5 --output y.h5 --threads 0",
                         "--threads");
    expect_clean_failure("infer --weights " W " --input good.h5 --output y.h5 --batch -3",
                         "--batch");
    expect_clean_failure("infer --weights " W " --input good.h5 --output y.h5 --mode quantum",
                         "quantum");
    expect_clean_failure("infer --weights " W " --input good.h5 --output y.h5 --bogus", "--bogus");
    expect_clean_failure("infer --weights " W " --input good.h5 --output y.h5 --conv fft", "fft");
    expect_clean_failure("infer --weights " W " --input good.h5", "--output");
    expect_clean_failure("infer --weights " W " --input good.h5 --output /nonexistent/dir/y.h5",
                         "/nonexistent/dir/y.h5");
}

/* Writes an h5: dataset of n random 3 x 16 x 16 images (byte pixels) with labels lab. */
static void write_images(const char *name, int n, const int64_t *lab)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    qkf_h5out *o = qkf_h5out_open(path);
    cr_assert_not_null(o, "%s", qkf_last_error());
    int64_t per = 3 * 16 * 16, s[4] = {n, 3, 16, 16}, ls = n;
    uint8_t *img = qkf_malloc((size_t)(n * per));
    qkf_rng r;
    qkf_rng_seed(&r, 77);
    for (int64_t i = 0; i < n * per; i++)
        img[i] = (uint8_t)(qkf_rng_u64(&r) % 256);
    cr_assert_eq(qkf_h5out_u8(o, "images", 4, s, img), 0);
    cr_assert_eq(qkf_h5out_i64(o, "labels", 1, &ls, lab), 0);
    cr_assert_eq(qkf_h5out_commit(o), 0, "%s", qkf_last_error());
    qkf_free(img);
}

/* The accuracy qkf eval printed ("accuracy: X" on stdout). */
static double eval_accuracy(const char *out)
{
    const char *a = strstr(out, "accuracy: ");
    cr_assert_not_null(a, "%s", out);
    return atof(a + strlen("accuracy: "));
}

/* qkf eval --hw loihi --tb-compat classifies the test split as qkf infer --hw loihi --tb-compat
 * classifies the same normalised samples in the same batches (the SSA proj_lif membrane runs over
 * T*B, so a sample's class depends on its batch): labels set to infer's tb_compat predictions give
 * accuracy 1 in both engines (--mode dense and event), and without --tb-compat eval's accuracy is
 * the share of infer's plain predictions that equal those labels. */
Test(cli, eval_hw_tb_compat_matches_infer, .timeout = 240)
{
    const int n = 13, batch = 5;
    const char *wts = QKF_FIXTURE_DIR "/cifar_tb.weights.h5";
    int64_t lab[13] = {0};
    write_images("d.h5", n, lab);
    /* the samples as eval's loader normalises them, into an infer input file */
    qkf_model m;
    cr_assert_eq(qkf_ckpt_load(wts, &m), 0, "%s", qkf_last_error());
    char path[512], args[2048], out[1 << 14], err[4096];
    snprintf(path, sizeof path, "h5:%s/d.h5", dir);
    qkf_dataset d;
    cr_assert_eq(qkf_dataset_load(path, 0, &d), 0, "%s", qkf_last_error());
    qkf_loader_cfg lc;
    memset(&lc, 0, sizeof lc);
    lc.d = &d, lc.batch = n, lc.n_norm = m.n_norm;
    memcpy(lc.mean, m.input_mean, sizeof lc.mean);
    memcpy(lc.std, m.input_std, sizeof lc.std);
    qkf_loader *ld = qkf_loader_start(&lc, 0, 0);
    const float *x;
    const int32_t *l32;
    int got = 0;
    cr_assert(qkf_loader_next(ld, &x, &l32, &got) && got == n);
    int64_t s[4] = {n, 3, 16, 16};
    snprintf(path, sizeof path, "%s/x.h5", dir);
    qkf_h5out *o = qkf_h5out_open(path);
    cr_assert(o && qkf_h5out_f32(o, "input", 4, s, x) == 0 && qkf_h5out_commit(o) == 0);
    qkf_loader_stop(ld);
    qkf_dataset_free(&d);
    qkf_model_free(&m);
    int64_t *pred[2], sh[5];
    int nd;
    for (int tb = 0; tb < 2; tb++) {
        snprintf(args, sizeof args,
                 "infer --weights %s --hw loihi --input x.h5 --output y%d.h5 --batch %d %s --quiet",
                 wts, tb, batch, tb ? "--tb-compat" : "");
        cr_assert_eq(run(args, out, sizeof out, err, sizeof err), 0, "%s", err);
        snprintf(path, sizeof path, "%s/y%d.h5", dir, tb);
        cr_assert_eq(qkf_h5_read_i64(path, "predictions", &pred[tb], &nd, sh), 0, "%s",
                     qkf_last_error());
        cr_assert_eq(sh[0], n);
    }
    int same = 0;
    for (int i = 0; i < n; i++)
        same += pred[0][i] == pred[1][i];
    { /* the T*B membrane changes the integer logits: the test tells the two graphs apart */
        int64_t *li[2], ndiff = 0;
        for (int tb = 0; tb < 2; tb++) {
            snprintf(path, sizeof path, "%s/y%d.h5", dir, tb);
            cr_assert_eq(qkf_h5_read_i64(path, "logits_int", &li[tb], &nd, sh), 0);
        }
        for (int64_t i = 0; i < sh[0] * sh[1]; i++)
            ndiff += li[0][i] != li[1][i];
        cr_assert_gt(ndiff, 0);
        qkf_free(li[0]);
        qkf_free(li[1]);
        cr_log_info("tb_compat: %d of %d predictions as without it", same, n);
    }
    write_images("d.h5", n, pred[1]);
    static const char *modes[] = {"dense", "event"};
    for (int k = 0; k < 2; k++) {
        snprintf(args, sizeof args,
                 "eval --weights %s --data h5:d.h5 --hw loihi --tb-compat --batch %d --mode %s",
                 wts, batch, modes[k]);
        cr_assert_eq(run(args, out, sizeof out, err, sizeof err), 0, "%s", err);
        cr_expect_eq(eval_accuracy(out), 1.0, "--mode %s --tb-compat: %s", modes[k], out);
        cr_assert(strstr(err, "tb_compat") && strstr(err, modes[k]), "%s", err);
        snprintf(args, sizeof args,
                 "eval --weights %s --data h5:d.h5 --hw loihi --batch %d --mode %s", wts, batch,
                 modes[k]);
        cr_assert_eq(run(args, out, sizeof out, err, sizeof err), 0, "%s", err);
        cr_expect(fabs(eval_accuracy(out) - (double)same / n) < 1e-4, "--mode %s: %s (%d of %d)",
                  modes[k], out, same, n);
    }
    /* --flips in event mode counts the integer event engine's spikes against the float model's:
     * the same table as the dense integer engine's (their spikes are equal) */
    char tab[2][1 << 14];
    for (int k = 0; k < 2; k++) {
        snprintf(args, sizeof args,
                 "eval --weights %s --data h5:d.h5 --hw loihi --tb-compat --batch %d --mode %s "
                 "--flips",
                 wts, batch, modes[k]);
        cr_assert_eq(run(args, tab[k], sizeof tab[k], err, sizeof err), 0, "%s", err);
        cr_assert(strstr(tab[k], "neuron-steps"), "%s", tab[k]);
    }
    cr_expect_str_eq(tab[0], tab[1]);
    qkf_free(pred[0]);
    qkf_free(pred[1]);
}

/* qkf info on a quantised checkpoint: the float model's parameter counts as for a float
 * checkpoint (parameters: N), then the arithmetic and a row per integer layer whose weight bits
 * and thresholds are the ones qkf quantize reported for it. */
Test(cli, info_quantised_checkpoint)
{
    char args[1024], rep[1 << 14], out[1 << 15], err[4096];
    snprintf(args, sizeof args,
             "quantize --weights %s/cifar_small.weights.h5 --hw speck --out q.h5",
             QKF_FIXTURE_DIR);
    cr_assert_eq(run(args, rep, sizeof rep, err, sizeof err), 0, "%s", err);
    cr_assert_eq(run("info q.h5", out, sizeof out, err, sizeof err), 0, "%s", err);
    cr_assert(strstr(out, "\nparameters: 425494\n"), "%s", out);
    cr_assert(strstr(out, "arithmetic: weights 8 bits") && strstr(out, "leak none"), "%s", out);
    const char *hd = strstr(out, "integer layer");
    cr_assert_not_null(hd, "%s", out);
    int rows = 0;
    for (const char *l = strchr(rep, '\n') + 1; l && *l;
         l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        char name[128], scale[16], bits[16], th[32];
        int exp;
        double e1, e2;
        if (sscanf(l, "%127s %15s %15s %d %lf%% %lf%% %31s", name, scale, bits, &exp, &e1, &e2,
                   th) != 7 || strcmp(name, "head") == 0)
            continue;
        char want[160];
        snprintf(want, sizeof want, "\n%s ", name);
        const char *r = strstr(hd, want);
        cr_assert_not_null(r, "%s not in\n%s", name, out);
        char rn[128], rb[16], re[16], rbb[16], rbe[16], rth[32];
        long long bmax;
        cr_assert_eq(sscanf(r + 1, "%127s %15s %15s %15s %lld %15s %31s", rn, rb, re, rbb, &bmax,
                            rbe, rth),
                     7, "%.200s", r + 1);
        cr_expect_str_eq(rb, bits, "%s", name);
        cr_expect_str_eq(rth, th, "%s", name);
        cr_expect(bmax >= 0 && bmax <= 127, "%s: |bias| %lld beyond 8 bits", name, bmax);
        rows++;
    }
    cr_assert_eq(rows, 31, "%d conv rows", rows); /* every conv of cifar_small */
    cr_assert(strstr(hd, "\nhead ") && strstr(hd, "logit = logit_int * "), "%s", hd);
}
