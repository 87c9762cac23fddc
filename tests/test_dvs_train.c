/* A DVS-style QKFormer trained and simulated on emulated Fashion-MNIST events, from the command
 * line: qkf events emulate -> qkf train (frames dataset) -> qkf eval in both engines -> qkf sim. */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../io/dataset.h"
#include "../kernels/base.h"

static char dir[256];

static int sh(char *out, size_t n, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    char full[4608];
    snprintf(full, sizeof full, "cd %s && %s > out.txt 2>&1", dir, cmd);
    int st = system(full);
    char path[300];
    snprintf(path, sizeof path, "%s/out.txt", dir);
    FILE *f = fopen(path, "r");
    size_t k = f ? fread(out, 1, n - 1, f) : 0;
    out[k] = 0;
    if (f)
        fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

static double accuracy(const char *out)
{
    const char *p = strstr(out, "accuracy: ");
    return p ? atof(p + 10) : -1.0;
}

Test(dvs_train, emulated_fashion_mnist_end_to_end, .timeout = 300)
{
    if (access("/usr/share/datasets/fashion-mnist", R_OK) != 0)
        cr_skip_test("no /usr/share/datasets/fashion-mnist");
    snprintf(dir, sizeof dir, "/tmp/qkf_dvs_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    static char out[1 << 16];
    cr_assert_eq(sh(out, sizeof out,
                    "%s events emulate --data fashion-mnist --index 0 --count 512 --sensor 16 "
                    "--T 2 --out train.h5",
                    QKF_BINARY),
                 0, "%s", out);
    cr_assert_eq(sh(out, sizeof out,
                    "%s events emulate --data fashion-mnist --index 0 --count 64 --test "
                    "--sensor 16 --T 2 --out test.h5",
                    QKF_BINARY),
                 0, "%s", out);

    /* the frames dataset as the trainer's loader sees it */
    char path[300];
    snprintf(path, sizeof path, "h5:%s/train.h5", dir);
    qkf_dataset d;
    memset(&d, 0, sizeof d);
    cr_assert_eq(qkf_dataset_load(path, 1, &d), 0, "%s", qkf_last_error());
    cr_expect(d.n == 512 && d.t == 2 && d.c == 2 && d.h == 16 && d.w == 16, "%lld %d %d %d %d",
              (long long)d.n, d.t, d.c, d.h, d.w);
    qkf_loader_cfg lc;
    memset(&lc, 0, sizeof lc);
    lc.d = &d, lc.batch = 4;
    qkf_loader *l = qkf_loader_start(&lc, 0, 0);
    const float *x;
    const int32_t *lab;
    int B;
    cr_assert_eq(qkf_loader_next(l, &x, &lab, &B), 1);
    /* counts pass unnormalised: the first sample equals its stored frames */
    for (int64_t i = 0; i < 2 * 2 * 16 * 16; i++)
        cr_assert_eq(x[i], (float)d.pixels[i], "element %lld", (long long)i);
    qkf_loader_stop(l);
    qkf_dataset_free(&d);

    const char *model = "--model dvs128 --img-size 16 --in-channels 2 --num-classes 10 "
                        "--embed-dims 32 --num-heads 4 --T 2";
    cr_assert_eq(sh(out, sizeof out,
                    "%s train %s --data h5:train.h5,test.h5 --epochs 10 --batch 16 --crop-pad 0 --threads 2 "
                    "--out m.h5 --quiet",
                    QKF_BINARY, model),
                 0, "%s", out);
    cr_assert_eq(sh(out, sizeof out, "%s eval --weights m.h5 --data h5:train.h5,test.h5 --mode dense",
                    QKF_BINARY),
                 0, "%s", out);
    double dense = accuracy(out);
    cr_assert_eq(sh(out, sizeof out, "%s eval --weights m.h5 --data h5:train.h5,test.h5 --mode event",
                    QKF_BINARY),
                 0, "%s", out);
    double event = accuracy(out);
    cr_expect_eq(dense, event, "dense %g vs event %g", dense, event);
    cr_expect_gt(dense, 0.25, "a trained model beats chance (0.1) clearly: %g", dense);
    cr_assert_eq(sh(out, sizeof out, "%s sim --weights m.h5 --data h5:train.h5,test.h5", QKF_BINARY),
                 0, "%s", out);
    cr_expect_eq(accuracy(out) / 100.0, dense, "sim: %s", out);

    /* frames do not fit an image model, and T must match */
    cr_expect_neq(sh(out, sizeof out, "%s train --data h5:train.h5 --epochs 1 --out x.h5", QKF_BINARY),
                  0);
    cr_expect(strstr(out, "event frames") != NULL, "%s", out);
    cr_expect_neq(sh(out, sizeof out,
                     "%s train --model dvs128 --img-size 16 --embed-dims 32 --num-heads 4 --T 3 "
                     "--num-classes 10 --data h5:train.h5 --epochs 1 --out x.h5",
                     QKF_BINARY),
                  0);
    cr_expect(strstr(out, "T = 3") != NULL, "%s", out);
    char rm[300];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    cr_assert_eq(system(rm), 0);
}
