/* Tests for io/: the HDF5 readers, the atomic writer and checkpoints.
 *
 * Each test works in its own mkdtemp directory under /tmp, removed by the suite's fini. Broken
 * checkpoints are made in C: a good checkpoint is saved, copied, and the copy edited with the
 * HDF5 API (or cut short). Every error test checks that the message names the file and the
 * key or attribute at fault, and that no HDF5 handle is left open. */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>
#include <zlib.h>

#include "io/dataset.h"
#include "io/io.h"
#include "kernels/base.h"
#include "models/qkformer.h"
#include "tools/app/evaluate.h"
#include "util.h"

static char tmpdir[64];

static void io_setup(void)
{
    qkf_h5_quiet();
    tmpdir_make(tmpdir, sizeof tmpdir, "io");
}

static void io_teardown(void) { tmpdir_remove(tmpdir); }

TestSuite(io, .init = io_setup, .fini = io_teardown, .timeout = 60);

/* ---- helpers -------------------------------------------------------------------------------- */

static const char *tpath(const char *name) { return tmpdir_path(tmpdir, name); }

/* HDF5 ids a test holds on purpose (an open writer is one file id). */
static ssize_t handles_held;

static void no_open_handles(void)
{
    ssize_t n = H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL);
    cr_assert_eq(n, handles_held, "%zd HDF5 handles open, expected %zd", n, handles_held);
}

/* The last error mentions every one of the given strings (NULL-terminated list). */
static void expect_error(int rc, const char *first, ...)
{
    cr_assert_lt(rc, 0, "expected a failure");
    const char *msg = qkf_last_error();
    cr_assert_null(strchr(msg, '\n'), "error is not one line: %s", msg);
    cr_log_info("error: %s", msg);
    va_list ap;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *))
        cr_assert_not_null(strstr(msg, s), "error '%s' does not mention '%s'", msg, s);
    va_end(ap);
    no_open_handles();
}

/* Copies the first `keep` bytes of src to dst (all of it when keep < 0); returns src's size. */
static long copy_file(const char *src, const char *dst, long keep)
{
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    cr_assert(in && out);
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    fseek(in, 0, SEEK_SET);
    long n = keep < 0 ? size : keep;
    char *buf = malloc((size_t)size);
    cr_assert_eq(fread(buf, 1, (size_t)size, in), (size_t)size);
    cr_assert_eq(fwrite(buf, 1, (size_t)n, out), (size_t)n);
    free(buf);
    fclose(in);
    fclose(out);
    return size;
}

static void make_model(qkf_model *m, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    cr_assert_eq(qkf_config_preset("cifar10", &m->cfg), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_params_build(&m->cfg, &m->params), 0, "%s", qkf_last_error());
    qkf_params_init(&m->cfg, &m->params, seed);
    cr_assert_gt(m->params.n, 2);
}

/* Saves a fresh cifar10 model to tmpdir/name and returns the file's path. */
static const char *saved_ckpt(const char *name)
{
    qkf_model m;
    make_model(&m, 7);
    const char *p = tpath(name);
    cr_assert_eq(qkf_ckpt_save(p, &m), 0, "%s", qkf_last_error());
    qkf_model_free(&m);
    return p;
}

/* A copy of a saved checkpoint opened for editing. */
static hid_t edit_copy(const char *copy)
{
    copy_file(saved_ckpt("good.h5"), copy, -1);
    hid_t f = H5Fopen(copy, H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(f, 0);
    return f;
}

static void put_f32(hid_t loc, const char *name, int ndim, const hsize_t *dims, const float *v)
{
    hid_t s = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t d = H5Dcreate2(loc, name, H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(d, 0, "cannot create %s", name);
    cr_assert_geq(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v), 0);
    H5Dclose(d);
    H5Sclose(s);
}

/* Replaces root attribute `key` with a scalar of file type ftype holding *v (memory type mtype). */
static void put_attr(hid_t f, const char *key, hid_t ftype, hid_t mtype, const void *v)
{
    if (H5Aexists(f, key) > 0)
        H5Adelete(f, key);
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, key, ftype, s, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(a, 0);
    cr_assert_geq(H5Awrite(a, mtype, v), 0);
    H5Aclose(a);
    H5Sclose(s);
}

/* A fixed-length ASCII string attribute, as numpy bytes are stored by h5py. */
static void put_attr_fixed_str(hid_t f, const char *key, const char *v)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v));
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    put_attr(f, key, t, t, v);
    H5Tclose(t);
}

static int find_or_fail(const qkf_params *ps, const char *name)
{
    int k = qkf_params_find(ps, name);
    cr_assert_geq(k, 0, "model has no %s", name);
    return k;
}

/* ---- checkpoints ---------------------------------------------------------------------------- */

static void assert_same_model(const qkf_model *a, const qkf_model *b)
{
    cr_assert_eq(a->cfg.variant, b->cfg.variant);
    cr_assert_eq(a->cfg.img_size, b->cfg.img_size);
    cr_assert_eq(a->cfg.in_channels, b->cfg.in_channels);
    cr_assert_eq(a->cfg.num_classes, b->cfg.num_classes);
    cr_assert_eq(a->cfg.embed_dims, b->cfg.embed_dims);
    cr_assert_eq(a->cfg.num_heads, b->cfg.num_heads);
    cr_assert_eq(a->cfg.depths, b->cfg.depths);
    cr_assert_eq(a->cfg.T, b->cfg.T);
    cr_assert_eq(a->cfg.qk_attn, b->cfg.qk_attn);
    /* float -> float64 attribute -> float is exact. */
    cr_assert(a->cfg.mlp_ratio == b->cfg.mlp_ratio);
    cr_assert_eq(a->n_norm, b->n_norm);
    for (int i = 0; i < a->n_norm; i++) {
        cr_assert(a->input_mean[i] == b->input_mean[i]);
        cr_assert(a->input_std[i] == b->input_std[i]);
    }
    cr_assert_eq(a->params.n, b->params.n);
    cr_assert_eq(a->params.total, b->params.total);
    for (int k = 0; k < a->params.n; k++) {
        const qkf_param *p = &a->params.p[k], *q = &b->params.p[k];
        cr_assert_str_eq(p->name, q->name);
        cr_assert_eq(p->ndim, q->ndim);
        cr_assert_eq(p->offset, q->offset);
        for (int64_t i = 0; i < p->numel; i++) {
            /* Stored as float32, so every value must come back bit for bit. */
            float x = a->params.data[p->offset + i], y = b->params.data[q->offset + i];
            cr_assert(memcmp(&x, &y, sizeof x) == 0, "%s[%lld]: %.9g != %.9g", p->name,
                      (long long)i, (double)x, (double)y);
        }
    }
}

Test(io, ckpt_roundtrip)
{
    qkf_model m, back;
    make_model(&m, 1234);
    m.cfg.qk_attn = QKF_QK_CHANNEL;
    m.n_norm = 3;
    const float mean[3] = {0.4914f, 0.4822f, 0.4465f}, std[3] = {0.247f, 0.2435f, 0.2616f};
    memcpy(m.input_mean, mean, sizeof mean);
    memcpy(m.input_std, std, sizeof std);
    /* Running statistics must travel too: make them distinctive. */
    for (int k = 0; k < m.params.n; k++)
        if (m.params.p[k].is_buffer)
            for (int64_t i = 0; i < m.params.p[k].numel; i++)
                m.params.data[m.params.p[k].offset + i] = 0.5f + (float)i;

    const char *p = tpath("m.h5");
    cr_assert_eq(qkf_ckpt_save(p, &m), 0, "%s", qkf_last_error());
    char only[256];
    cr_assert_eq(tmpdir_entries(tmpdir, only, sizeof only), 1);
    cr_assert_str_eq(only, "m.h5");

    memset(&back, 0xAB, sizeof back); /* load must not depend on what was there */
    cr_assert_eq(qkf_ckpt_load(p, &back), 0, "%s", qkf_last_error());
    no_open_handles();
    assert_same_model(&m, &back);

    /* The stored attribute types are the documented ones. */
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    int64_t fmt = 0;
    hid_t a = H5Aopen(f, "qkf_format", H5P_DEFAULT), t = H5Aget_type(a);
    cr_assert(H5Tequal(t, H5T_STD_I64LE) > 0);
    H5Aread(a, H5T_NATIVE_INT64, &fmt);
    cr_assert_eq(fmt, QKF_CKPT_FORMAT);
    H5Tclose(t);
    H5Aclose(a);
    a = H5Aopen(f, "variant", H5P_DEFAULT);
    t = H5Aget_type(a);
    cr_assert_eq(H5Tget_class(t), H5T_STRING);
    cr_assert(H5Tis_variable_str(t) > 0);
    cr_assert_eq(H5Tget_cset(t), H5T_CSET_UTF8);
    H5Tclose(t);
    H5Aclose(a);
    a = H5Aopen(f, "mlp_ratio", H5P_DEFAULT);
    t = H5Aget_type(a);
    cr_assert(H5Tequal(t, H5T_IEEE_F64LE) > 0);
    H5Tclose(t);
    H5Aclose(a);
    a = H5Aopen(f, "T", H5P_DEFAULT);
    t = H5Aget_type(a);
    cr_assert(H5Tequal(t, H5T_STD_I64LE) > 0);
    H5Tclose(t);
    H5Aclose(a);
    cr_assert(H5Aexists(f, "qkf_version") > 0);
    H5Fclose(f);

    qkf_model_free(&m);
    qkf_model_free(&back);
    no_open_handles();
}

/* What a converter writing with h5py/numpy produces: other numeric types, fixed-length ASCII
 * strings, no qk_attn or qkf_format, plus num_batches_tracked, unknown attributes and an
 * optimizer group, all of which the loader accepts or ignores. */
Test(io, ckpt_accepts_converted_files)
{
    qkf_model ref, back;
    make_model(&ref, 7); /* the same weights as saved_ckpt() */
    const char *p = tpath("conv.h5");
    hid_t f = edit_copy(p);
    int32_t i32 = ref.cfg.img_size;
    float f32 = ref.cfg.mlp_ratio;
    uint8_t u8 = (uint8_t)ref.cfg.T;
    put_attr(f, "img_size", H5T_STD_I32LE, H5T_NATIVE_INT32, &i32);
    put_attr(f, "mlp_ratio", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, &f32);
    put_attr(f, "T", H5T_STD_U8LE, H5T_NATIVE_UINT8, &u8);
    double d = ref.cfg.embed_dims;
    put_attr(f, "embed_dims", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &d);
    put_attr_fixed_str(f, "variant", qkf_variant_name(ref.cfg.variant));
    put_attr_fixed_str(f, "epoch_note", "best");
    H5Adelete(f, "qk_attn");
    H5Adelete(f, "qkf_format");
    H5Adelete(f, "qkf_version");
    float one = 1.0f;
    put_f32(f, "patch_embed1.proj_bn.num_batches_tracked", 0, NULL, &one);
    hid_t g = H5Gcreate2(f, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t n3 = 3;
    float junk[3] = {1, 2, 3};
    put_f32(g, "state.0.exp_avg", 1, &n3, junk);
    H5Gclose(g);
    /* A key stored as float64 converts exactly back to the float32 values. */
    int k = find_or_fail(&ref.params, "head.bias");
    const qkf_param *hb = &ref.params.p[k];
    double *v = calloc((size_t)hb->numel, sizeof *v);
    for (int64_t i = 0; i < hb->numel; i++)
        v[i] = (double)ref.params.data[hb->offset + i];
    H5Ldelete(f, "head.bias", H5P_DEFAULT);
    hsize_t hd = (hsize_t)hb->shape[0];
    hid_t s = H5Screate_simple(1, &hd, NULL);
    hid_t ds = H5Dcreate2(f, "head.bias", H5T_IEEE_F64LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
    H5Dclose(ds);
    H5Sclose(s);
    free(v);
    H5Fclose(f);

    cr_assert_eq(qkf_ckpt_load(p, &back), 0, "%s", qkf_last_error());
    cr_assert_eq(back.cfg.qk_attn, QKF_QK_TOKEN);
    cr_assert_eq(back.n_norm, 0);
    cr_assert(back.input_mean[0] == 0.0f && back.input_std[0] == 1.0f);
    assert_same_model(&ref, &back);
    qkf_model_free(&ref);
    qkf_model_free(&back);
    no_open_handles();
}

Test(io, ckpt_missing_key)
{
    qkf_model m;
    make_model(&m, 7);
    const char *key = m.params.p[m.params.n / 2].name;
    const char *p = tpath("missing.h5");
    hid_t f = edit_copy(p);
    cr_assert_geq(H5Ldelete(f, key, H5P_DEFAULT), 0);
    H5Fclose(f);
    qkf_model back;
    expect_error(qkf_ckpt_load(p, &back), p, "missing key", key, NULL);
    qkf_model_free(&m);
}

Test(io, ckpt_extra_key)
{
    const char *p = tpath("extra.h5");
    hid_t f = edit_copy(p);
    hsize_t n = 4;
    float v[4] = {0};
    put_f32(f, "stage9.0.attn.q_conv.weight", 1, &n, v);
    H5Fclose(f);
    qkf_model back;
    expect_error(qkf_ckpt_load(p, &back), p, "unexpected key 'stage9.0.attn.q_conv.weight'",
                 "cifar", NULL);
}

Test(io, ckpt_wrong_shape)
{
    qkf_model m;
    make_model(&m, 7);
    int k = find_or_fail(&m.params, "head.weight");
    const qkf_param *hw = &m.params.p[k];
    cr_assert_eq(hw->ndim, 2);
    const char *p = tpath("shape.h5");
    hid_t f = edit_copy(p);
    H5Ldelete(f, "head.weight", H5P_DEFAULT);
    hsize_t dims[2] = {(hsize_t)hw->shape[0], (hsize_t)hw->shape[1] - 1};
    float *z = calloc(dims[0] * dims[1], sizeof *z);
    put_f32(f, "head.weight", 2, dims, z);
    free(z);
    H5Fclose(f);
    char have[64], want[64];
    snprintf(have, sizeof have, "[%d,%d]", hw->shape[0], hw->shape[1] - 1);
    snprintf(want, sizeof want, "[%d,%d]", hw->shape[0], hw->shape[1]);
    qkf_model back;
    expect_error(qkf_ckpt_load(p, &back), p, "'head.weight'", have, want, NULL);
    qkf_model_free(&m);
}

Test(io, ckpt_nan_weight)
{
    qkf_model m;
    make_model(&m, 7);
    int k = find_or_fail(&m.params, "head.bias");
    m.params.data[m.params.p[k].offset + 3] = NAN;
    const char *p = tpath("nan.h5");
    cr_assert_eq(qkf_ckpt_save(p, &m), 0, "%s", qkf_last_error());
    qkf_model back;
    expect_error(qkf_ckpt_load(p, &back), p, "'head.bias'", "non-finite", "index 3", NULL);
    qkf_model_free(&m);
}

Test(io, ckpt_not_hdf5)
{
    const char *p = tpath("notes.txt");
    FILE *fp = fopen(p, "w");
    fputs("this is not a checkpoint\n", fp);
    fclose(fp);
    qkf_model back;
    expect_error(qkf_ckpt_load(p, &back), p, "not an HDF5 file or unreadable", NULL);
}

Test(io, ckpt_truncated)
{
    /* Cut both a checkpoint written by the PyTorch reference and one of our own. */
    const char *srcs[2] = {QKF_FIXTURE_DIR "/cifar_small.weights.h5", saved_ckpt("good.h5")};
    for (int i = 0; i < 2; i++) {
        const char *p = tpath("half.h5");
        FILE *fp = fopen(srcs[i], "rb");
        cr_assert_not_null(fp, "cannot open %s", srcs[i]);
        fseek(fp, 0, SEEK_END);
        long size = ftell(fp);
        fclose(fp);
        copy_file(srcs[i], p, size / 2);
        qkf_model back;
        expect_error(qkf_ckpt_load(p, &back), p, "not an HDF5 file or unreadable", NULL);
    }
}

/* The weights the PyTorch reference wrote for the numerics fixtures load, and saving them again
 * gives the same model. */
Test(io, ckpt_loads_reference_fixtures)
{
    DIR *d = opendir(QKF_FIXTURE_DIR);
    cr_assert_not_null(d, "cannot list %s", QKF_FIXTURE_DIR);
    int loaded = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 11 || strcmp(e->d_name + n - 11, ".weights.h5") != 0)
            continue;
        char src[512];
        snprintf(src, sizeof src, "%s/%s", QKF_FIXTURE_DIR, e->d_name);
        qkf_model m, back;
        cr_assert_eq(qkf_ckpt_load(src, &m), 0, "%s", qkf_last_error());
        no_open_handles();
        const char *p = tpath("again.h5");
        cr_assert_eq(qkf_ckpt_save(p, &m), 0, "%s", qkf_last_error());
        cr_assert_eq(qkf_ckpt_load(p, &back), 0, "%s", qkf_last_error());
        assert_same_model(&m, &back);
        qkf_model_free(&m);
        qkf_model_free(&back);
        loaded++;
    }
    closedir(d);
    cr_assert_geq(loaded, 1, "no *.weights.h5 fixtures in %s", QKF_FIXTURE_DIR);
    no_open_handles();
}

Test(io, h5_reads_reference_input)
{
    float *x;
    int ndim;
    int64_t shape[5];
    const char *src = QKF_FIXTURE_DIR "/cifar_small.ref.h5";
    cr_assert_eq(qkf_h5_read_f32(src, "input", &x, &ndim, shape), 0, "%s", qkf_last_error());
    cr_assert_eq(ndim, 4);
    cr_assert(shape[0] >= 1 && shape[1] == 3);
    qkf_free(x);
    cr_assert_eq(qkf_h5_has(src, "logits"), 1);
    no_open_handles();
}

Test(io, ckpt_missing_file)
{
    const char *p = tpath("nowhere.h5");
    qkf_model back;
    expect_error(qkf_ckpt_load(p, &back), p, "No such file", NULL);
}

Test(io, ckpt_missing_attribute)
{
    const char *p = tpath("noattr.h5");
    hid_t f = edit_copy(p);
    cr_assert_geq(H5Adelete(f, "num_heads"), 0);
    H5Fclose(f);
    qkf_model back;
    expect_error(qkf_ckpt_load(p, &back), p, "missing attribute 'num_heads'", NULL);
}

Test(io, ckpt_bad_attributes)
{
    const char *p = tpath("badvar.h5");
    hid_t f = edit_copy(p);
    put_attr_fixed_str(f, "variant", "resnet50");
    H5Fclose(f);
    qkf_model back;
    expect_error(qkf_ckpt_load(p, &back), p, "'variant'", "resnet50", NULL);

    p = tpath("badint.h5");
    f = edit_copy(p);
    double half = 32.5;
    put_attr(f, "img_size", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &half);
    H5Fclose(f);
    expect_error(qkf_ckpt_load(p, &back), p, "'img_size'", "not an integer", NULL);

    p = tpath("badqk.h5");
    f = edit_copy(p);
    put_attr_fixed_str(f, "qk_attn", "diagonal");
    H5Fclose(f);
    expect_error(qkf_ckpt_load(p, &back), p, "'qk_attn'", "diagonal", NULL);

    p = tpath("strint.h5");
    f = edit_copy(p);
    put_attr_fixed_str(f, "T", "4");
    H5Fclose(f);
    expect_error(qkf_ckpt_load(p, &back), p, "'T'", "not a number", NULL);

    p = tpath("future.h5");
    f = edit_copy(p);
    int64_t fmt = QKF_CKPT_FORMAT + 1;
    put_attr(f, "qkf_format", H5T_STD_I64LE, H5T_NATIVE_INT64, &fmt);
    H5Fclose(f);
    expect_error(qkf_ckpt_load(p, &back), p, "format", NULL);

    /* Normalisation needs both arrays, each with one value per input channel. */
    p = tpath("halfnorm.h5");
    f = edit_copy(p);
    double one = 1.0;
    put_attr(f, "input_mean", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &one);
    H5Fclose(f);
    expect_error(qkf_ckpt_load(p, &back), p, "'input_mean'", "input_std", NULL);

    p = tpath("shortnorm.h5");
    f = edit_copy(p);
    put_attr(f, "input_mean", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &one);
    put_attr(f, "input_std", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &one);
    H5Fclose(f);
    expect_error(qkf_ckpt_load(p, &back), p, "'input_mean'", "expected 3", NULL);
}

Test(io, ckpt_invalid_config_names_file)
{
    const char *p = tpath("tiny.h5");
    hid_t f = edit_copy(p);
    int64_t heads = 7; /* 384 channels do not split into 7 heads */
    put_attr(f, "num_heads", H5T_STD_I64LE, H5T_NATIVE_INT64, &heads);
    H5Fclose(f);
    qkf_model back;
    expect_error(qkf_ckpt_load(p, &back), p, "num_heads", NULL);
}

Test(io, ckpt_save_fails_cleanly)
{
    qkf_model m;
    make_model(&m, 7);
    expect_error(qkf_ckpt_save("/nonexistent-dir/m.h5", &m), "/nonexistent-dir/m.h5", NULL);
    m.n_norm = 2; /* does not match in_channels = 3 */
    expect_error(qkf_ckpt_save(tpath("m.h5"), &m), "m.h5", "in_channels", NULL);
    m.n_norm = 0;
    m.cfg.num_heads = 7; /* the loader would refuse this configuration */
    expect_error(qkf_ckpt_save(tpath("m.h5"), &m), "m.h5", "num_heads", NULL);
    cr_assert_eq(tmpdir_entries(tmpdir, NULL, 0), 0);
    qkf_model_free(&m);
}

/* ---- the writer ----------------------------------------------------------------------------- */

Test(io, h5out_commit_leaves_only_the_final_file)
{
    const char *p = tpath("out.h5");
    qkf_h5out *o = qkf_h5out_open(p);
    cr_assert_not_null(o, "%s", qkf_last_error());
    int64_t shape[1] = {3};
    const double v[3] = {1, 2, 3};
    cr_assert_eq(qkf_h5out_f64(o, "x", 1, shape, v), 0, "%s", qkf_last_error());
    char only[256];
    cr_assert_eq(tmpdir_entries(tmpdir, only, sizeof only), 1);
    cr_assert_neq(strcmp(only, "out.h5"), 0, "the final name appeared before commit");
    cr_assert_eq(qkf_h5out_commit(o), 0, "%s", qkf_last_error());
    cr_assert_eq(tmpdir_entries(tmpdir, only, sizeof only), 1);
    cr_assert_str_eq(only, "out.h5");
    no_open_handles();

    /* Committing again replaces the old file. */
    o = qkf_h5out_open(p);
    cr_assert_not_null(o);
    cr_assert_eq(qkf_h5out_attr_i64(o, NULL, "second", 2), 0);
    cr_assert_eq(qkf_h5out_commit(o), 0, "%s", qkf_last_error());
    cr_assert_eq(tmpdir_entries(tmpdir, NULL, 0), 1);
    cr_assert_eq(qkf_h5_has(p, "x"), 0);
}

Test(io, h5out_abort_leaves_nothing)
{
    const char *p = tpath("out.h5");
    qkf_h5out *o = qkf_h5out_open(p);
    cr_assert_not_null(o);
    int64_t shape[2] = {100, 100};
    float *z = calloc(10000, sizeof *z);
    cr_assert_eq(qkf_h5out_f32(o, "big", 2, shape, z), 0);
    free(z);
    qkf_h5out_abort(o);
    cr_assert_eq(tmpdir_entries(tmpdir, NULL, 0), 0);
    no_open_handles();
    qkf_h5out_abort(NULL);
}

Test(io, h5out_abort_keeps_an_existing_file)
{
    const char *p = tpath("out.h5");
    qkf_h5out *o = qkf_h5out_open(p);
    cr_assert_eq(qkf_h5out_attr_str(o, NULL, "gen", "first"), 0);
    cr_assert_eq(qkf_h5out_commit(o), 0);
    o = qkf_h5out_open(p);
    cr_assert_eq(qkf_h5out_attr_str(o, NULL, "gen", "second"), 0);
    qkf_h5out_abort(o);
    char only[256];
    cr_assert_eq(tmpdir_entries(tmpdir, only, sizeof only), 1);
    cr_assert_str_eq(only, "out.h5");
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t a = H5Aopen(f, "gen", H5P_DEFAULT), t = H5Aget_type(a);
    char *s = NULL;
    H5Aread(a, t, &s);
    cr_assert_str_eq(s, "first");
    H5free_memory(s);
    H5Tclose(t);
    H5Aclose(a);
    H5Fclose(f);
    no_open_handles();
}

Test(io, h5out_errors)
{
    expect_error(qkf_h5out_open("/nonexistent-dir/x.h5") == NULL ? -1 : 0, "/nonexistent-dir/x.h5",
                 NULL);
    expect_error(qkf_h5out_f32(NULL, "x", 0, NULL, NULL), "'x'", NULL);
    expect_error(qkf_h5out_commit(NULL), NULL);

    const char *p = tpath("err.h5");
    qkf_h5out *o = qkf_h5out_open(p);
    handles_held = 1;
    int64_t shape[6] = {1, 1, 1, 1, 1, 1};
    float v = 1.0f;
    cr_assert_eq(qkf_h5out_f32(o, "a/b", 1, shape, &v), 0);
    expect_error(qkf_h5out_f32(o, "a/b", 1, shape, &v), p, "'a/b'", "already exists", NULL);
    expect_error(qkf_h5out_f32(o, "six", 6, shape, &v), p, "'six'", "rank 6", NULL);
    int64_t neg[1] = {-2};
    expect_error(qkf_h5out_f32(o, "neg", 1, neg, &v), p, "'neg'", NULL);
    expect_error(qkf_h5out_attr_i64(o, "no/such", "k", 1), p, "'k'", "no/such", NULL);
    expect_error(qkf_h5out_attr_f64v(o, NULL, "empty", 0, NULL), p, "'empty'", NULL);
    /* After a failed write, commit refuses with the first message and leaves nothing. */
    handles_held = 0;
    expect_error(qkf_h5out_commit(o), p, "'a/b'", "already exists", NULL);
    cr_assert_eq(tmpdir_entries(tmpdir, NULL, 0), 0);
}

/* ---- the readers ---------------------------------------------------------------------------- */

Test(io, h5_read_roundtrip)
{
    const char *p = tpath("data.h5");
    qkf_h5out *o = qkf_h5out_open(p);
    cr_assert_not_null(o);
    /* Big enough to be chunked and compressed, with a shape that does not divide the chunk. */
    int64_t big_shape[3] = {70, 33, 129};
    int64_t nbig = 70 * 33 * 129;
    float *big = malloc((size_t)nbig * sizeof *big);
    for (int64_t i = 0; i < nbig; i++)
        big[i] = (float)(i % 1000) * 0.25f - 7.0f;
    cr_assert_eq(qkf_h5out_f32(o, "input", 3, big_shape, big), 0, "%s", qkf_last_error());
    int64_t lab_shape[1] = {5};
    const int64_t labels[5] = {0, 9, -3, 1LL << 40, 2};
    cr_assert_eq(qkf_h5out_i64(o, "spike_count/stage1.0.tssa.q_lif", 1, lab_shape, labels), 0, "%s",
                 qkf_last_error());
    int64_t u8_shape[2] = {2, 3};
    const uint8_t bytes[6] = {0, 1, 2, 253, 254, 255};
    cr_assert_eq(qkf_h5out_u8(o, "events/p", 2, u8_shape, bytes), 0);
    const double pi = 3.25;
    cr_assert_eq(qkf_h5out_f64(o, "scalar", 0, NULL, &pi), 0);
    cr_assert_eq(qkf_h5out_attr_str(o, "events/p", "unit", "polarity"), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_h5out_attr_f64(o, "/", "rate", 0.5), 0);
    cr_assert_eq(qkf_h5out_commit(o), 0, "%s", qkf_last_error());

    float *x;
    int ndim;
    int64_t shape[5];
    cr_assert_eq(qkf_h5_read_f32(p, "input", &x, &ndim, shape), 0, "%s", qkf_last_error());
    cr_assert_eq(ndim, 3);
    cr_assert(shape[0] == 70 && shape[1] == 33 && shape[2] == 129);
    cr_assert(memcmp(x, big, (size_t)nbig * sizeof *big) == 0);
    qkf_free(x);
    free(big);

    int64_t *iv;
    cr_assert_eq(qkf_h5_read_i64(p, "spike_count/stage1.0.tssa.q_lif", &iv, &ndim, shape), 0);
    cr_assert(ndim == 1 && shape[0] == 5);
    cr_assert(memcmp(iv, labels, sizeof labels) == 0);
    qkf_free(iv);
    /* Converted by HDF5: uint8 to int64 and to float. */
    cr_assert_eq(qkf_h5_read_i64(p, "events/p", &iv, &ndim, shape), 0);
    cr_assert(ndim == 2 && shape[0] == 2 && shape[1] == 3);
    cr_assert(iv[5] == 255 && iv[3] == 253);
    qkf_free(iv);
    cr_assert_eq(qkf_h5_read_f32(p, "events/p", &x, &ndim, shape), 0);
    cr_assert(x[4] == 254.0f);
    qkf_free(x);
    cr_assert_eq(qkf_h5_read_f32(p, "scalar", &x, &ndim, shape), 0);
    cr_assert_eq(ndim, 0);
    cr_assert(x[0] == 3.25f);
    qkf_free(x);

    /* The big dataset is chunked and compressed; the small ones are not. */
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "input", H5P_DEFAULT), pl = H5Dget_create_plist(d);
    cr_assert_eq(H5Pget_layout(pl), H5D_CHUNKED);
    cr_assert_geq(H5Pget_nfilters(pl), 1);
    H5Pclose(pl);
    H5Dclose(d);
    d = H5Dopen2(f, "events/p", H5P_DEFAULT);
    pl = H5Dget_create_plist(d);
    cr_assert_neq(H5Pget_layout(pl), H5D_CHUNKED);
    H5Pclose(pl);
    /* String attributes are variable-length UTF-8 (h5py reads them as str). */
    hid_t a = H5Aopen(d, "unit", H5P_DEFAULT), t = H5Aget_type(a);
    cr_assert(H5Tis_variable_str(t) > 0);
    cr_assert_eq(H5Tget_cset(t), H5T_CSET_UTF8);
    char *s = NULL;
    H5Aread(a, t, &s);
    cr_assert_str_eq(s, "polarity");
    H5free_memory(s);
    H5Tclose(t);
    H5Aclose(a);
    H5Dclose(d);
    H5Fclose(f);
    no_open_handles();
}

Test(io, h5_read_nan_names_the_index)
{
    const char *p = tpath("nan.h5");
    qkf_h5out *o = qkf_h5out_open(p);
    int64_t shape[2] = {50, 50};
    float *v = calloc(2500, sizeof *v);
    v[1234] = NAN;
    v[2000] = INFINITY;
    cr_assert_eq(qkf_h5out_f32(o, "input", 2, shape, v), 0);
    free(v);
    cr_assert_eq(qkf_h5out_commit(o), 0);
    float *x = (float *)&x; /* a failed read sets it to NULL, never to freed memory */
    int ndim;
    int64_t sh[5];
    expect_error(qkf_h5_read_f32(p, "input", &x, &ndim, sh), p, "'input'", "nan", "index 1234",
                 NULL);
    cr_assert_null(x);
}

Test(io, h5_read_errors)
{
    const char *p = tpath("r.h5");
    qkf_h5out *o = qkf_h5out_open(p);
    int64_t shape[1] = {2};
    const int64_t v[2] = {1, 2};
    cr_assert_eq(qkf_h5out_i64(o, "grp/x", 1, shape, v), 0);
    cr_assert_eq(qkf_h5out_commit(o), 0);
    float *x;
    int ndim;
    int64_t sh[5];
    expect_error(qkf_h5_read_f32(p, "input", &x, &ndim, sh), p, "'input'", NULL);
    expect_error(qkf_h5_read_f32(p, "grp", &x, &ndim, sh), p, "'grp'", "not a dataset", NULL);
    expect_error(qkf_h5_read_f32(p, "grp/x/y", &x, &ndim, sh), p, "'grp/x/y'", NULL);
    expect_error(qkf_h5_read_f32(p, "nogrp/x", &x, &ndim, sh), p, "'nogrp/x'", NULL);
    expect_error(qkf_h5_read_f32(tpath("absent.h5"), "input", &x, &ndim, sh), "absent.h5", NULL);

    /* A string dataset and a rank-6 dataset. */
    hid_t f = H5Fopen(p, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 4);
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t d = H5Dcreate2(f, "text", t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(d);
    H5Sclose(s);
    H5Tclose(t);
    hsize_t dims6[6] = {1, 1, 1, 1, 1, 2};
    float six[2] = {0, 0};
    put_f32(f, "six", 6, dims6, six);
    H5Fclose(f);
    expect_error(qkf_h5_read_f32(p, "text", &x, &ndim, sh), p, "'text'", "string", NULL);
    expect_error(qkf_h5_read_f32(p, "six", &x, &ndim, sh), p, "'six'", "rank 6", NULL);
}

Test(io, h5_has)
{
    const char *p = tpath("has.h5");
    qkf_h5out *o = qkf_h5out_open(p);
    int64_t shape[1] = {1};
    const float v = 1.0f;
    cr_assert_eq(qkf_h5out_f32(o, "a/b/c", 1, shape, &v), 0);
    cr_assert_eq(qkf_h5out_commit(o), 0);
    cr_assert_eq(qkf_h5_has(p, "a/b/c"), 1);
    cr_assert_eq(qkf_h5_has(p, "/a/b/c"), 1);
    cr_assert_eq(qkf_h5_has(p, "a/b"), 0); /* a group, not a dataset */
    cr_assert_eq(qkf_h5_has(p, "a/x/c"), 0);
    cr_assert_eq(qkf_h5_has(p, "input"), 0);
    no_open_handles();
    FILE *fp = fopen(tpath("t.txt"), "w");
    fputs("text", fp);
    fclose(fp);
    cr_assert_eq(qkf_h5_has(tpath("t.txt"), "input"), -1);
    cr_assert_not_null(strstr(qkf_last_error(), "t.txt"));
    cr_assert_eq(qkf_h5_has(tpath("none.h5"), "input"), -1);
    no_open_handles();
}

/* ---- datasets: selective reading (io/dataset.c, io/h5_part.c) ------------------------------- */

/* A subset read must hold, row for row, what a whole load holds at those indices. */
static void expect_subset_matches(const qkf_dataset *full, const qkf_dataset *sub,
                                  const int64_t *idx, int64_t k)
{
    int64_t per = (int64_t)full->c * full->h * full->w * (full->t > 0 ? full->t : 1);
    cr_assert_eq(sub->n, k);
    cr_assert_eq(sub->total, full->n);
    cr_assert_eq(sub->c, full->c);
    cr_assert_eq(sub->h, full->h);
    cr_assert_eq(sub->w, full->w);
    cr_assert_eq(sub->t, full->t);
    for (int64_t j = 0; j < k; j++) {
        cr_expect_eq(sub->index[j], idx[j]);
        cr_expect_eq(sub->labels[j], full->labels[idx[j]], "label of sample %lld",
                     (long long)idx[j]);
        cr_expect_eq(memcmp(sub->pixels + j * per, full->pixels + idx[j] * per, (size_t)per), 0,
                     "pixels of sample %lld", (long long)idx[j]);
        cr_expect_eq(qkf_dataset_find(sub, idx[j]), j);
    }
    cr_expect_eq(qkf_dataset_find(sub, full->n), -1);
}

static void put_be32(uint8_t *b, uint32_t v)
{
    b[0] = (uint8_t)(v >> 24), b[1] = (uint8_t)(v >> 16), b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

/* idx files of n 5x4 images for split `pre` ("train"/"t10k"), images gzipped or plain, labels
 * plain; cut: bytes cut off the end of the image data. */
static void write_idx(const char *pre, int n, int gz, int cut)
{
    char name[128];
    uint8_t hdr[16];
    put_be32(hdr, 0x00000803u), put_be32(hdr + 4, (uint32_t)n);
    put_be32(hdr + 8, 5), put_be32(hdr + 12, 4);
    int npix = n * 20 - cut;
    uint8_t *pix = qkf_malloc((size_t)npix);
    for (int i = 0; i < npix; i++)
        pix[i] = (uint8_t)(i * 31 + i / 20);
    snprintf(name, sizeof name, "%s-images-idx3-ubyte%s", pre, gz ? ".gz" : "");
    if (gz) {
        gzFile f = gzopen(tpath(name), "wb");
        gzwrite(f, hdr, 16);
        gzwrite(f, pix, (unsigned)npix);
        gzclose(f);
    } else {
        FILE *f = fopen(tpath(name), "wb");
        fwrite(hdr, 1, 16, f);
        fwrite(pix, 1, (size_t)npix, f);
        fclose(f);
    }
    qkf_free(pix);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", pre);
    FILE *f = fopen(tpath(name), "wb");
    put_be32(hdr, 0x00000801u), put_be32(hdr + 4, (uint32_t)n);
    fwrite(hdr, 1, 8, f);
    for (int i = 0; i < n; i++) {
        uint8_t l = (uint8_t)((i * 7) % 10);
        fwrite(&l, 1, 1, f);
    }
    fclose(f);
}

Test(io, dataset_subset_idx_plain_and_gz)
{
    char name[128];
    snprintf(name, sizeof name, "idx:%s", tmpdir);
    write_idx("train", 50, 0, 0); /* plain */
    write_idx("t10k", 50, 1, 0);  /* gzipped images */
    const int64_t idx[] = {0, 3, 4, 5, 17, 48, 49};
    int64_t k = 7;
    for (int train = 0; train < 2; train++) {
        qkf_dataset full, sub, probe;
        cr_assert_eq(qkf_dataset_load(name, train, &full), 0, "%s", qkf_last_error());
        cr_assert_eq(full.total, 50);
        cr_assert_eq(qkf_dataset_probe(name, train, &probe), 0, "%s", qkf_last_error());
        cr_expect_eq(probe.total, 50);
        cr_expect_null(probe.pixels);
        cr_assert_eq(qkf_dataset_load_subset(name, train, idx, k, 255.0f, &sub), 0, "%s",
                     qkf_last_error());
        expect_subset_matches(&full, &sub, idx, k);
        cr_expect_eq(qkf_dataset_bytes(&sub), k * (20 + 4 + 8));
        qkf_dataset_free(&sub);
        /* an empty subset and the whole set as a subset */
        cr_assert_eq(qkf_dataset_load_subset(name, train, idx, 0, 255.0f, &sub), 0);
        cr_expect_eq(sub.n, 0);
        qkf_dataset_free(&sub);
        int64_t all[50];
        for (int i = 0; i < 50; i++)
            all[i] = i;
        cr_assert_eq(qkf_dataset_load_subset(name, train, all, 50, 255.0f, &sub), 0);
        expect_subset_matches(&full, &sub, all, 50);
        qkf_dataset_free(&sub);
        qkf_dataset_free(&full);
    }
    /* out of range or not ascending */
    qkf_dataset sub;
    const int64_t bad[] = {3, 2};
    expect_error(qkf_dataset_load_subset(name, 1, bad, 2, 255.0f, &sub), "train-images", "2",
                 NULL);
    const int64_t far[] = {50};
    expect_error(qkf_dataset_load_subset(name, 1, far, 1, 255.0f, &sub), "sample 50", NULL);
}

/* A truncated file is an error naming the file and the byte offset, the same offset a whole load
 * names, whichever samples are wanted. */
Test(io, dataset_subset_idx_truncated)
{
    char name[128], whole[1024];
    snprintf(name, sizeof name, "idx:%s", tmpdir);
    const int64_t first[] = {0, 1};
    qkf_dataset d;
    for (int gz = 0; gz < 2; gz++) {
        write_idx("train", 20, gz, 5);
        /* 16 header bytes + 20 * 20 pixels - 5 cut: the data ends at byte 411 */
        cr_assert_eq(qkf_dataset_load(name, 1, &d), -1);
        snprintf(whole, sizeof whole, "%s", qkf_last_error());
        cr_expect(strstr(whole, "byte 411"), "%s", whole);
        expect_error(qkf_dataset_load_subset(name, 1, first, 2, 255.0f, &d),
                     "train-images-idx3-ubyte", "truncated", "byte 411", NULL);
        if (gz) {
            remove(tpath("train-images-idx3-ubyte.gz"));
        } else {
            expect_error(qkf_dataset_probe(name, 1, &d), "train-images-idx3-ubyte", "byte 411",
                         NULL);
            remove(tpath("train-images-idx3-ubyte"));
        }
    }
    /* a label out of range names the labels file and its byte */
    write_idx("train", 20, 0, 0);
    FILE *f = fopen(tpath("train-labels-idx1-ubyte"), "r+b");
    fseek(f, 8 + 13, SEEK_SET);
    fputc(12, f);
    fclose(f);
    const int64_t idx[] = {2, 13};
    expect_error(qkf_dataset_load_subset(name, 1, idx, 2, 255.0f, &d), "train-labels-idx1-ubyte",
                 "label 12", "byte 21", NULL);
    const int64_t other[] = {2, 14}; /* a subset without the bad record reads fine */
    cr_assert_eq(qkf_dataset_load_subset(name, 1, other, 2, 255.0f, &d), 0, "%s",
                 qkf_last_error());
    qkf_dataset_free(&d);
}

static void put_bytes(const char *base, const uint8_t *b, size_t len, int gz);

/* ---- datasets: reading a range of a split in order, a block at a time ------------------------- */

/* Samples [lo, hi) of split `train` of name through a reader, `block` at a time: every block
 * must be what a whole load holds there. */
static void expect_reader_matches(const char *name, int train, const qkf_dataset *full, float mx,
                                  int64_t lo, int64_t hi, int64_t block)
{
    qkf_dataset_stream *r = qkf_dataset_stream_open(name, train, lo, hi, mx);
    cr_assert_not_null(r, "%s", qkf_last_error());
    int64_t at = lo, got, idx[256];
    qkf_dataset b;
    memset(&b, 0, sizeof b);
    while ((got = qkf_dataset_stream_next(r, block, &b)) > 0) {
        cr_assert_leq(got, block);
        for (int64_t j = 0; j < got; j++)
            idx[j] = at + j;
        expect_subset_matches(full, &b, idx, got);
        qkf_dataset_free(&b);
        at += got;
    }
    cr_assert_eq(got, 0, "%s", qkf_last_error());
    cr_expect_eq(at, hi);
    cr_expect_eq(qkf_dataset_stream_next(r, block, &b), 0); /* stays at the end */
    qkf_dataset_stream_close(r);
}

Test(io, dataset_reader_idx_and_h5)
{
    char name[128];
    snprintf(name, sizeof name, "idx:%s", tmpdir);
    write_idx("train", 50, 0, 0); /* plain */
    write_idx("t10k", 50, 1, 0);  /* gzipped images */
    const int64_t ranges[][3] = {{0, 50, 8}, {7, 50, 6}, {13, 14, 5}, {0, 50, 50}, {49, 50, 1},
                                 {20, 20, 4}};
    for (int train = 0; train < 2; train++) {
        qkf_dataset full;
        cr_assert_eq(qkf_dataset_load(name, train, &full), 0, "%s", qkf_last_error());
        for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++)
            expect_reader_matches(name, train, &full, 255.0f, ranges[i][0], ranges[i][1],
                                  ranges[i][2]);
        qkf_dataset_free(&full);
    }
    /* HDF5 images stored as floats in [0, 1]: the split's largest value decides the scale */
    float img[30 * 3 * 4 * 4];
    int64_t lab[30], is[4] = {30, 3, 4, 4}, ls = 30;
    for (int i = 0; i < 30 * 48; i++)
        img[i] = (float)((i * 37) % 101) / 100.0f;
    for (int i = 0; i < 30; i++)
        lab[i] = (i * 3) % 7;
    qkf_h5out *o = qkf_h5out_open(tpath("r.h5"));
    cr_assert(o && qkf_h5out_f32(o, "images", 4, is, img) == 0 &&
              qkf_h5out_i64(o, "labels", 1, &ls, lab) == 0 && qkf_h5out_commit(o) == 0);
    snprintf(name, sizeof name, "h5:%s", tpath("r.h5"));
    qkf_dataset full;
    float mx;
    cr_assert_eq(qkf_dataset_load(name, 0, &full), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_dataset_max(name, 0, 0, 30, &mx), 0);
    cr_expect_eq(mx, 1.0f);
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++)
        expect_reader_matches(name, 0, &full, mx, ranges[i][0] < 30 ? ranges[i][0] : 29,
                              ranges[i][1] < 30 ? ranges[i][1] : 30, ranges[i][2]);
    qkf_dataset_free(&full);
    /* a range outside the split */
    cr_expect_null(qkf_dataset_stream_open(name, 0, 5, 31, mx));
    cr_expect(strstr(qkf_last_error(), "r.h5") != NULL, "%s", qkf_last_error());
    no_open_handles();
}

/* Errors name the file and byte as a whole load's do, in the block that reaches them: a
 * truncated gzipped file, bytes after the data of a gzipped file (found with the block that ends
 * the split), a label out of range. */
Test(io, dataset_reader_errors)
{
    char name[128];
    snprintf(name, sizeof name, "idx:%s", tmpdir);
    qkf_dataset b;
    memset(&b, 0, sizeof b);
    write_idx("train", 20, 1, 5); /* the image data ends at byte 411 */
    qkf_dataset_stream *r = qkf_dataset_stream_open(name, 1, 0, 20, 255.0f);
    cr_assert_not_null(r, "%s", qkf_last_error());
    cr_assert_eq(qkf_dataset_stream_next(r, 8, &b), 8, "%s", qkf_last_error());
    qkf_dataset_free(&b);
    cr_assert_eq(qkf_dataset_stream_next(r, 8, &b), 8, "%s", qkf_last_error());
    qkf_dataset_free(&b);
    expect_error((int)qkf_dataset_stream_next(r, 8, &b), "train-images-idx3-ubyte.gz",
                 "truncated", "byte 411", NULL);
    cr_expect(!b.pixels && !b.labels && !b.n);
    qkf_dataset_stream_close(r);
    remove(tpath("train-images-idx3-ubyte.gz"));
    /* 20 images and 7 bytes more, gzipped: a whole load and the last block refuse them */
    write_idx("train", 20, 0, 0);
    uint8_t buf[16 + 20 * 20 + 7];
    FILE *f = fopen(tpath("train-images-idx3-ubyte"), "rb");
    cr_assert(f && fread(buf, 1, 16 + 400, f) == 416);
    fclose(f);
    memset(buf + 416, 9, 7);
    remove(tpath("train-images-idx3-ubyte"));
    put_bytes("train-images-idx3-ubyte.gz", buf, sizeof buf, 1);
    r = qkf_dataset_stream_open(name, 1, 0, 20, 255.0f);
    cr_assert_not_null(r, "%s", qkf_last_error());
    cr_assert_eq(qkf_dataset_stream_next(r, 16, &b), 16, "%s", qkf_last_error());
    qkf_dataset_free(&b);
    expect_error((int)qkf_dataset_stream_next(r, 16, &b), "train-images-idx3-ubyte.gz",
                 "7 trailing bytes", "byte 416", NULL);
    qkf_dataset_stream_close(r);
    remove(tpath("train-images-idx3-ubyte.gz"));
    /* a label out of range names the labels file and its byte */
    write_idx("train", 20, 0, 0);
    f = fopen(tpath("train-labels-idx1-ubyte"), "r+b");
    fseek(f, 8 + 13, SEEK_SET);
    fputc(12, f);
    fclose(f);
    r = qkf_dataset_stream_open(name, 1, 2, 20, 255.0f);
    cr_assert_not_null(r, "%s", qkf_last_error());
    cr_assert_eq(qkf_dataset_stream_next(r, 8, &b), 8, "%s", qkf_last_error()); /* 2..9 */
    qkf_dataset_free(&b);
    expect_error((int)qkf_dataset_stream_next(r, 8, &b), "train-labels-idx1-ubyte", "label 12",
                 "byte 21", NULL);
    qkf_dataset_stream_close(r);
}

/* qkf_stream_split hands out the batches a whole load's loader does, byte for byte, whatever the
 * block (rounded up to whole batches), from any first sample. */
typedef struct {
    float *x;
    int32_t *lab;
    int64_t n, per;
    int sizes[64], nb;
} collect_ctx;

static int collect(void *p, const float *x, const int32_t *lab, int B)
{
    collect_ctx *c = p;
    memcpy(c->x + c->n * c->per, x, (size_t)(B * c->per) * sizeof(float));
    memcpy(c->lab + c->n, lab, (size_t)B * sizeof(int32_t));
    c->n += B;
    c->sizes[c->nb++] = B;
    return 0;
}

Test(io, stream_split_batches_as_whole)
{
    char name[128];
    snprintf(name, sizeof name, "idx:%s", tmpdir);
    write_idx("t10k", 50, 1, 0);
    qkf_dataset full, meta;
    cr_assert_eq(qkf_dataset_load(name, 0, &full), 0, "%s", qkf_last_error());
    cr_assert_eq(qkf_dataset_probe(name, 0, &meta), 0, "%s", qkf_last_error());
    float mean[4] = {0.3f}, sd[4] = {0.7f};
    const int64_t cases[][3] = {{0, 0}, {0, 8}, {0, 6}, {5, 12}, {3, 4}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t lo = cases[i][0], block = cases[i][1];
        /* the whole load's batches of 4 from sample lo */
        qkf_dataset v = full;
        v.pixels += lo * 20, v.labels += lo, v.n -= lo, v.total = v.n;
        qkf_loader_cfg lc;
        memset(&lc, 0, sizeof lc);
        lc.d = &v, lc.batch = 4, lc.n_norm = 1;
        memcpy(lc.mean, mean, sizeof mean);
        memcpy(lc.std, sd, sizeof sd);
        qkf_loader *l = qkf_loader_start(&lc, 0, 0);
        collect_ctx c;
        memset(&c, 0, sizeof c);
        c.per = 20;
        c.x = qkf_malloc(50 * 20 * sizeof(float));
        c.lab = qkf_malloc(50 * sizeof(int32_t));
        cr_assert_eq(qkf_stream_split(name, 0, &meta, 255.0f, lo, 50, block, 4, 1, mean, sd, 10,
                                      collect, &c),
                     0, "%s", qkf_last_error());
        const float *x;
        const int32_t *lab;
        int B, k = 0;
        int64_t at = 0;
        while (qkf_loader_next(l, &x, &lab, &B)) {
            cr_assert_lt(k, c.nb);
            cr_expect_eq(c.sizes[k], B, "lo %lld block %lld: batch %d", (long long)lo,
                         (long long)block, k);
            cr_expect_eq(memcmp(c.x + at * 20, x, (size_t)B * 20 * sizeof(float)), 0);
            cr_expect_eq(memcmp(c.lab + at, lab, (size_t)B * sizeof(int32_t)), 0);
            at += B, k++;
        }
        qkf_loader_stop(l);
        cr_expect_eq(k, c.nb);
        cr_expect_eq(at, 50 - lo);
        qkf_free(c.x);
        qkf_free(c.lab);
    }
    /* a label the model does not have names the sample; fn's value stops the stream */
    collect_ctx c;
    memset(&c, 0, sizeof c);
    c.per = 20;
    c.x = qkf_malloc(50 * 20 * sizeof(float));
    c.lab = qkf_malloc(50 * sizeof(int32_t));
    expect_error(qkf_stream_split(name, 0, &meta, 255.0f, 0, 50, 8, 4, 1, mean, sd, 3, collect,
                                  &c),
                 "sample 1 has label 7", NULL);
    qkf_free(c.x);
    qkf_free(c.lab);
    qkf_dataset_free(&full);
}

/* Writes `len` bytes as tmpdir/base (gzipped if gz). */
static void put_bytes(const char *base, const uint8_t *b, size_t len, int gz)
{
    if (gz) {
        gzFile f = gzopen(tpath(base), "wb");
        cr_assert(f && gzwrite(f, b, (unsigned)len) == (int)len && gzclose(f) == Z_OK);
    } else {
        FILE *f = fopen(tpath(base), "wb");
        cr_assert(f && fwrite(b, 1, len, f) == len && fclose(f) == 0);
    }
}

/* Probe, whole load and subset of split "train" all fail, naming each of the given strings. */
static void expect_idx_errors(const char *s1, const char *s2, const char *s3)
{
    char name[128];
    snprintf(name, sizeof name, "idx:%s", tmpdir);
    const int64_t first[] = {0};
    qkf_dataset d;
    memset(&d, 0x5A, sizeof d);
    expect_error(qkf_dataset_probe(name, 1, &d), s1, s2, s3, NULL);
    expect_error(qkf_dataset_load(name, 1, &d), s1, s2, s3, NULL);
    cr_expect(!d.pixels && !d.labels && !d.n);
    expect_error(qkf_dataset_load_subset(name, 1, first, 1, 255.0f, &d), s1, s2, s3, NULL);
    cr_expect(!d.pixels && !d.labels && !d.index && !d.n);
}

/* Inputs from tools/fuzz/fuzz_dataset.c: a bad magic number (the probe divided by a dimension it
 * never read), dimensions whose product overflows, a 16-byte header describing 210 GB (the
 * readers allocated it, and out of memory aborts), and a count mismatch with no byte offset. */
Test(io, dataset_idx_fuzz_findings)
{
    remove(tpath("train-images-idx3-ubyte.gz"));
    write_idx("train", 4, 0, 0);
    uint8_t h[16];
    put_be32(h, 0x00000804u), put_be32(h + 4, 4), put_be32(h + 8, 5), put_be32(h + 12, 4);
    put_bytes("train-images-idx3-ubyte", h, 16, 0);
    expect_idx_errors("train-images-idx3-ubyte: wrong magic 0x00000804 at byte 0", NULL, NULL);
    /* 2^28 x 2^28 x 2^28 bytes: more than int64_t holds */
    put_be32(h, 0x00000803u), put_be32(h + 4, 1u << 28), put_be32(h + 8, 1u << 28);
    put_be32(h + 12, 1u << 28);
    put_bytes("train-images-idx3-ubyte", h, 16, 0);
    expect_idx_errors("train-images-idx3-ubyte:", "implausible dimension 268435456", "byte 8");
    /* 2^28 images of 28 x 28 in a 16-byte file, plain and gzipped */
    put_be32(h + 8, 28), put_be32(h + 12, 28);
    put_bytes("train-images-idx3-ubyte", h, 16, 0);
    expect_idx_errors("train-images-idx3-ubyte:", "truncated", "at byte 16");
    remove(tpath("train-images-idx3-ubyte"));
    put_bytes("train-images-idx3-ubyte.gz", h, 16, 1);
    expect_idx_errors("train-images-idx3-ubyte.gz: dimensions at byte 4 describe 210453397520 "
                      "bytes",
                      "gzip file can hold", NULL);
    remove(tpath("train-images-idx3-ubyte.gz"));
    /* 5 labels for 4 images: the labels file's count is at byte 4 */
    write_idx("train", 4, 0, 0);
    uint8_t l[13];
    put_be32(l, 0x00000801u), put_be32(l + 4, 5);
    memset(l + 8, 1, 5);
    put_bytes("train-labels-idx1-ubyte", l, 13, 0);
    expect_idx_errors("train-labels-idx1-ubyte: 5 labels at byte 4 for 4 images", NULL, NULL);
    /* the same files gzipped read as the plain ones did */
    write_idx("train", 4, 1, 0);
    char name[128];
    snprintf(name, sizeof name, "idx:%s", tmpdir);
    qkf_dataset d;
    cr_assert_eq(qkf_dataset_load(name, 1, &d), 0, "%s", qkf_last_error());
    cr_expect_eq(d.n, 4);
    qkf_dataset_free(&d);
    remove(tpath("train-images-idx3-ubyte.gz"));
}

/* Bytes after the data an idx header describes are an error naming where the data ends (the
 * MNIST and Fashion-MNIST files end exactly there), plain (probe, load and subset) or gzipped
 * (load and subset: the probe reads only the header of a compressed file). */
Test(io, dataset_idx_trailing_bytes)
{
    remove(tpath("train-images-idx3-ubyte.gz"));
    write_idx("train", 4, 0, 0);
    FILE *f = fopen(tpath("train-images-idx3-ubyte"), "ab");
    cr_assert(f && fwrite("xyz", 1, 3, f) == 3 && fclose(f) == 0);
    expect_idx_errors("train-images-idx3-ubyte: 3 trailing bytes after the data, at byte 96",
                      NULL, NULL);
    write_idx("train", 4, 0, 0);
    f = fopen(tpath("train-labels-idx1-ubyte"), "ab");
    cr_assert(f && fputc(7, f) == 7 && fclose(f) == 0);
    expect_idx_errors("train-labels-idx1-ubyte: 1 trailing bytes after the data, at byte 12",
                      NULL, NULL);
    /* gzipped: the 16-byte header, 80 pixels and 5 more bytes inside the compressed stream */
    write_idx("train", 4, 0, 0);
    remove(tpath("train-images-idx3-ubyte"));
    uint8_t img[16 + 80 + 5];
    put_be32(img, 0x00000803u), put_be32(img + 4, 4), put_be32(img + 8, 5), put_be32(img + 12, 4);
    for (int i = 16; i < (int)sizeof img; i++)
        img[i] = (uint8_t)i;
    put_bytes("train-images-idx3-ubyte.gz", img, sizeof img, 1);
    char name[128];
    snprintf(name, sizeof name, "idx:%s", tmpdir);
    const int64_t first[] = {0};
    qkf_dataset d;
    memset(&d, 0, sizeof d);
    const char *want = "train-images-idx3-ubyte.gz: 5 trailing bytes after the data, at byte 96";
    expect_error(qkf_dataset_load(name, 1, &d), want, NULL, NULL, NULL);
    expect_error(qkf_dataset_load_subset(name, 1, first, 1, 255.0f, &d), want, NULL, NULL, NULL);
    /* without them the same file loads */
    put_bytes("train-images-idx3-ubyte.gz", img, 16 + 80, 1);
    cr_assert_eq(qkf_dataset_load(name, 1, &d), 0, "%s", qkf_last_error());
    cr_expect_eq(d.n, 4);
    qkf_dataset_free(&d);
    remove(tpath("train-images-idx3-ubyte.gz"));
}

Test(io, dataset_subset_cifar)
{
    const char *files[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                           "data_batch_4.bin", "data_batch_5.bin"};
    const int counts[] = {3, 2, 4, 1, 2};
    uint8_t rec[3073];
    int s = 0;
    for (int i = 0; i < 5; i++) {
        FILE *f = fopen(tpath(files[i]), "wb");
        for (int r = 0; r < counts[i]; r++, s++) {
            rec[0] = (uint8_t)(s % 10);
            for (int j = 1; j < 3073; j++)
                rec[j] = (uint8_t)(j * 13 + s * 7);
            fwrite(rec, 1, sizeof rec, f);
        }
        fclose(f);
    }
    char name[128];
    snprintf(name, sizeof name, "cifar10:%s", tmpdir);
    qkf_dataset full, sub;
    cr_assert_eq(qkf_dataset_load(name, 1, &full), 0, "%s", qkf_last_error());
    cr_assert_eq(full.n, 12);
    const int64_t idx[] = {1, 2, 3, 5, 9, 11}; /* across file boundaries */
    cr_assert_eq(qkf_dataset_load_subset(name, 1, idx, 6, 255.0f, &sub), 0, "%s",
                 qkf_last_error());
    expect_subset_matches(&full, &sub, idx, 6);
    qkf_dataset_free(&sub);
    qkf_dataset_free(&full);
    /* a batch file that is not a whole number of records */
    cr_assert_eq(truncate(tpath("data_batch_3.bin"), 3073 * 2 + 100), 0);
    expect_error(qkf_dataset_load_subset(name, 1, idx, 1, 255.0f, &sub), "data_batch_3.bin",
                 "6146", NULL);
}

/* HDF5 images (floats in [0,1], scaled by 255 as the whole split's largest value says) and event
 * frames, read as hyperslabs. */
Test(io, dataset_subset_h5)
{
    enum { N = 40 };
    float *img = qkf_malloc((size_t)N * 2 * 3 * 3 * sizeof(float));
    uint8_t *fr = qkf_malloc((size_t)N * 2 * 1 * 4 * 4);
    int64_t lab[N];
    for (int i = 0; i < N * 18; i++)
        img[i] = (float)((i * 37) % 256) / 255.0f;
    for (int i = 0; i < N * 32; i++)
        fr[i] = (uint8_t)((i * 11) % 7);
    for (int i = 0; i < N; i++)
        lab[i] = (i * 3) % 5;
    int64_t si[4] = {N, 2, 3, 3}, sf[5] = {N, 2, 1, 4, 4}, sl = N;
    qkf_h5out *o = qkf_h5out_open(tpath("img.h5"));
    cr_assert_eq(qkf_h5out_f32(o, "images", 4, si, img), 0);
    cr_assert_eq(qkf_h5out_i64(o, "labels", 1, &sl, lab), 0);
    cr_assert_eq(qkf_h5out_commit(o), 0);
    o = qkf_h5out_open(tpath("fr.h5"));
    cr_assert_eq(qkf_h5out_u8(o, "input", 5, sf, fr), 0);
    cr_assert_eq(qkf_h5out_i64(o, "labels", 1, &sl, lab), 0);
    cr_assert_eq(qkf_h5out_commit(o), 0);
    const int64_t idx[] = {0, 1, 2, 7, 8, 20, 39};
    for (int frames = 0; frames < 2; frames++) {
        char name[600];
        snprintf(name, sizeof name, "h5:%s", tpath(frames ? "fr.h5" : "img.h5"));
        qkf_dataset full, sub;
        cr_assert_eq(qkf_dataset_load(name, 1, &full), 0, "%s", qkf_last_error());
        float mx = 0.0f, m1, m2;
        cr_assert_eq(qkf_dataset_max(name, 1, 0, 17, &m1), 0, "%s", qkf_last_error());
        cr_assert_eq(qkf_dataset_max(name, 1, 17, N, &m2), 0, "%s", qkf_last_error());
        mx = m1 > m2 ? m1 : m2;
        if (!frames)
            cr_expect_float_eq(mx, 1.0f, 1e-6);
        cr_assert_eq(qkf_dataset_load_subset(name, 1, idx, 7, mx, &sub), 0, "%s",
                     qkf_last_error());
        expect_subset_matches(&full, &sub, idx, 7);
        qkf_dataset_free(&sub);
        qkf_dataset_free(&full);
    }
    no_open_handles();
    /* a bad value names the flat index in the whole dataset, wherever the subset starts */
    img[20 * 18 + 4] = 3.0f;
    o = qkf_h5out_open(tpath("img.h5"));
    cr_assert_eq(qkf_h5out_f32(o, "images", 4, si, img), 0);
    cr_assert_eq(qkf_h5out_i64(o, "labels", 1, &sl, lab), 0);
    cr_assert_eq(qkf_h5out_commit(o), 0);
    char name[600];
    snprintf(name, sizeof name, "h5:%s", tpath("img.h5"));
    qkf_dataset sub;
    expect_error(qkf_dataset_load_subset(name, 1, idx, 7, 1.0f, &sub), "img.h5",
                 "flat index 364", NULL);
    /* a file that is not HDF5 */
    FILE *f = fopen(tpath("t.h5"), "w");
    fputs("text", f);
    fclose(f);
    snprintf(name, sizeof name, "h5:%s", tpath("t.h5"));
    expect_error(qkf_dataset_probe(name, 1, &sub), "t.h5", NULL);
    qkf_free(img);
    qkf_free(fr);
}

/* The loader under ranks: with each rank holding only qkf_loader_indices' samples, rank r's
 * batches are exactly its slices of the global batches one process produces (same shuffle,
 * crops and flips). */
Test(io, loader_rank_slices_from_subsets)
{
    char name[128];
    snprintf(name, sizeof name, "idx:%s", tmpdir);
    write_idx("train", 45, 1, 0);
    qkf_dataset full;
    cr_assert_eq(qkf_dataset_load(name, 1, &full), 0, "%s", qkf_last_error());
    qkf_loader_cfg c;
    memset(&c, 0, sizeof c);
    c.d = &full, c.batch = 7, c.shuffle = 1, c.crop_pad = 1, c.flip = 1, c.drop_last = 1;
    c.seed = 11, c.n_norm = 1, c.mean[0] = 0.3f, c.std[0] = 0.2f, c.limit = 40;
    int64_t nb = qkf_loader_batches(&c), per = 20;
    cr_assert_eq(nb, 5);
    float *gx = qkf_malloc((size_t)(nb * 7 * per) * sizeof(float));
    int32_t gl[5 * 7];
    qkf_loader *l = qkf_loader_start(&c, 2, 1);
    const float *x;
    const int32_t *lab;
    int B, k = 1;
    while (qkf_loader_next(l, &x, &lab, &B)) {
        cr_assert_eq(B, 7);
        memcpy(gx + k * 7 * per, x, (size_t)(7 * per) * sizeof(float));
        memcpy(gl + k * 7, lab, 7 * sizeof(int32_t));
        k++;
    }
    qkf_loader_stop(l);
    {
        int64_t held = 0;
        for (int r = 0; r < 3; r++) {
            qkf_loader_cfg rc = c;
            qkf_dataset meta, sub;
            cr_assert_eq(qkf_dataset_probe(name, 1, &meta), 0);
            rc.d = &meta, rc.ranks = 3, rc.rank = r;
            int64_t *idx, n;
            cr_assert_eq(qkf_loader_indices(&rc, 2, 1, &idx, &n), 0);
            cr_assert_eq(qkf_dataset_load_subset(name, 1, idx, n, 255.0f, &sub), 0, "%s",
                         qkf_last_error());
            qkf_free(idx);
            held += n;
            rc.d = &sub;
            cr_expect_eq(qkf_loader_batches(&rc), nb);
            l = qkf_loader_start(&rc, 2, 1);
            int64_t lo = r * 2 + (r < 1 ? r : 1), hi = lo + 2 + (r < 1); /* 7 = 3 + 2 + 2 */
            for (int64_t bi = 1; bi < nb; bi++) {
                cr_assert_eq(qkf_loader_next(l, &x, &lab, &B), 1);
                cr_assert_eq(B, hi - lo);
                cr_assert_eq(qkf_loader_global_batch(l), 7);
                for (int j = 0; j < B; j++) {
                    cr_expect_eq(memcmp(x + j * per, gx + (bi * 7 + lo + j) * per,
                                        (size_t)per * sizeof(float)),
                                 0, "rank %d batch %lld row %d", r, (long long)bi, j);
                    cr_expect_eq(lab[j], gl[bi * 7 + lo + j]);
                }
            }
            cr_assert_eq(qkf_loader_next(l, &x, &lab, &B), 0);
            qkf_loader_stop(l);
            qkf_dataset_free(&sub);
        }
        /* the ranks hold disjoint shares: the 4 batches of 7 between them */
        cr_expect_eq(held, 28);
    }
    qkf_free(gx);
    qkf_dataset_free(&full);
}
