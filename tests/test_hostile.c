/* Malformed-but-valid HDF5 (issue #17): checkpoints, inputs, datasets, traces and training
 * checkpoints that HDF5 opens without complaint but that are wrong inside, built with the HDF5 C
 * API from good files the CLI wrote. Every command that reads such a file must answer with one
 * line on stderr naming the file and the key, exit non-zero, and leave no output file (nor a
 * temporary) behind; no crash, no abort, no allocation the file cannot justify.
 *
 * The good files (made in each test's init): w.h5, a training checkpoint of the cifar_small
 * fixture after one update (weights, configuration attributes, optim/ group); x.h5, an input
 * [2,3,16,16]; d.h5, an image dataset (images uint8 [4,3,16,16], labels int64 [4]); t.h5, a
 * trace of x.h5; q.h5, w.h5 quantised for loihi (qkf quantize; io/qckpt.c). A case copies one of
 * them to bad.h5, changes it, and runs every command that reads that kind of file on it. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hdf5.h>

#include "../io/io.h"
#include "../kernels/base.h"

static char dir[256];

/* Runs `qkf args` in dir; stdout and stderr go to files there; returns the exit status. */
static int qkf(const char *args)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd %s && %s %s >stdout.txt 2>stderr.txt", dir, QKF_BINARY, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

static const char *path_of(const char *name)
{
    static char bufs[4][512];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

static int exists(const char *name)
{
    struct stat sb;
    return stat(path_of(name), &sb) == 0;
}

static void slurp(const char *name, char *buf, size_t cap)
{
    FILE *f = fopen(path_of(name), "r");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = 0;
    if (f)
        fclose(f);
}

static void copy(const char *from, const char *to)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cp %s %s", path_of(from), path_of(to));
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/qkf-test-hostile-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    qkf_h5_quiet();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    /* x.h5: input [2,3,16,16]; d.h5: images and labels */
    float x[2 * 3 * 16 * 16];
    for (int i = 0; i < 2 * 768; i++)
        x[i] = (float)((i * 7919) % 17) / 8.0f - 1.0f;
    int64_t xs[4] = {2, 3, 16, 16};
    qkf_h5out *o = qkf_h5out_open(path_of("x.h5"));
    cr_assert(o && qkf_h5out_f32(o, "input", 4, xs, x) == 0 && qkf_h5out_commit(o) == 0, "%s",
              qkf_last_error());
    uint8_t img[4 * 768];
    for (int i = 0; i < 4 * 768; i++)
        img[i] = (uint8_t)(i * 37 + i / 768);
    int64_t ds[4] = {4, 3, 16, 16}, ls = 4, lab[4] = {0, 3, 1, 2};
    o = qkf_h5out_open(path_of("d.h5"));
    cr_assert(o && qkf_h5out_u8(o, "images", 4, ds, img) == 0 &&
                  qkf_h5out_i64(o, "labels", 1, &ls, lab) == 0 && qkf_h5out_commit(o) == 0,
              "%s", qkf_last_error());
    cr_assert_eq(qkf("train --init " QKF_FIXTURE_DIR "/cifar_small.weights.h5 --data h5:d.h5 "
                     "--max-steps 1 --batch 2 --no-eval --quiet --threads 1 --out w.h5"),
                 0, "qkf train failed");
    cr_assert_eq(qkf("infer --weights w.h5 --input x.h5 --output y0.h5 --trace t.h5 --quiet "
                     "--threads 1"),
                 0, "qkf infer --trace failed");
    remove(path_of("y0.h5"));
    cr_assert_eq(qkf("quantize --weights w.h5 --hw loihi --out q.h5 --quiet"), 0,
                 "qkf quantize failed");
}

static void teardown(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* ---- building hostile files -------------------------------------------------------------- */

static hid_t open_bad(const char *base)
{
    copy(base, "bad.h5");
    hid_t f = H5Fopen(path_of("bad.h5"), H5F_ACC_RDWR, H5P_DEFAULT);
    cr_assert_geq(f, 0, "cannot open bad.h5");
    return f;
}

static void unlink_if(hid_t f, const char *name)
{
    if (H5Lexists(f, name, H5P_DEFAULT) > 0)
        cr_assert_geq(H5Ldelete(f, name, H5P_DEFAULT), 0, "delete %s", name);
}

/* Replaces dataset `name` by one of type ft, dims[rank] (rank 0: scalar), written from buf (of
 * memory type mt) when buf is given, chunked when chunk is given. */
static void put_ds(hid_t f, const char *name, hid_t ft, hid_t mt, int rank, const hsize_t *dims,
                   const hsize_t *chunk, const void *buf)
{
    unlink_if(f, name);
    hid_t sp = rank ? H5Screate_simple(rank, dims, NULL) : H5Screate(H5S_SCALAR);
    cr_assert_geq(sp, 0, "dataspace for %s", name);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    if (chunk)
        H5Pset_chunk(dcpl, rank, chunk);
    hid_t d = H5Dcreate2(f, name, ft, sp, lcpl, dcpl, H5P_DEFAULT);
    cr_assert_geq(d, 0, "create %s", name);
    if (buf)
        cr_assert_geq(H5Dwrite(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0, "write %s", name);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Pclose(lcpl);
    H5Sclose(sp);
}

/* Replaces root attribute `name` of object obj ("/" for the root). */
static void put_attr(hid_t f, const char *obj, const char *name, hid_t ft, hid_t mt, int rank,
                     const hsize_t *dims, const void *buf)
{
    if (H5Aexists_by_name(f, obj, name, H5P_DEFAULT) > 0)
        H5Adelete_by_name(f, obj, name, H5P_DEFAULT);
    hid_t sp = rank ? H5Screate_simple(rank, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate_by_name(f, obj, name, ft, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(a, 0, "create attribute %s", name);
    cr_assert_geq(H5Awrite(a, mt, buf), 0, "write attribute %s", name);
    H5Aclose(a);
    H5Sclose(sp);
}

static hid_t str_type(size_t n)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, n);
    return t;
}

static void str_ds(hid_t f, const char *name)
{
    hid_t t = str_type(8);
    hsize_t d = 3;
    put_ds(f, name, t, t, 1, &d, NULL, "abcdefghijklmnopqrstuvwx");
    H5Tclose(t);
}

static void compound_ds(hid_t f, const char *name, hsize_t n)
{
    typedef struct {
        double a;
        int32_t b;
    } pair;
    hid_t t = H5Tcreate(H5T_COMPOUND, sizeof(pair));
    H5Tinsert(t, "a", HOFFSET(pair, a), H5T_NATIVE_DOUBLE);
    H5Tinsert(t, "b", HOFFSET(pair, b), H5T_NATIVE_INT32);
    pair *p = qkf_calloc(n, sizeof *p);
    put_ds(f, name, t, t, 1, &n, NULL, p);
    qkf_free(p);
    H5Tclose(t);
}

static void f64_ds(hid_t f, const char *name, int rank, const hsize_t *dims, double v, int64_t at)
{
    hsize_t n = 1;
    for (int i = 0; i < rank; i++)
        n *= dims[i];
    double *b = qkf_calloc(n ? n : 1, sizeof *b);
    for (hsize_t i = 0; i < n; i++)
        b[i] = 0.01 * (double)(i % 7);
    if (at >= 0 && (hsize_t)at < n)
        b[at] = v;
    put_ds(f, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, rank, dims, NULL, b);
    qkf_free(b);
}

static void i64_attr(hid_t f, const char *name, int64_t v)
{
    put_attr(f, "/", name, H5T_STD_I64LE, H5T_NATIVE_INT64, 0, NULL, &v);
}

static void f64_attr(hid_t f, const char *name, double v)
{
    put_attr(f, "/", name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0, NULL, &v);
}

/* A dataset that is a group (with one dataset inside, so it is not empty). */
static void group_for(hid_t f, const char *name)
{
    unlink_if(f, name);
    hid_t g = H5Gcreate2(f, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(g, 0);
    hsize_t d = 2;
    double v[2] = {1, 2};
    put_ds(g, "inside", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &d, NULL, v);
    H5Gclose(g);
}

static void dangling(hid_t f, const char *name)
{
    unlink_if(f, name);
    cr_assert_geq(H5Lcreate_soft("/no/such/object", f, name, H5P_DEFAULT, H5P_DEFAULT), 0);
}

static void external_missing(hid_t f, const char *name)
{
    unlink_if(f, name);
    cr_assert_geq(H5Lcreate_external("no-such-file.h5", "/x", f, name, H5P_DEFAULT, H5P_DEFAULT),
                  0);
}

/* A chunked, deflated float32 dataset whose first chunk holds bytes that do not inflate. */
static void broken_chunk(hid_t f, const char *name, int rank, const hsize_t *dims)
{
    unlink_if(f, name);
    hsize_t chunk[5];
    for (int i = 0; i < rank; i++)
        chunk[i] = dims[i];
    chunk[0] = 1;
    hid_t sp = H5Screate_simple(rank, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    H5Pset_deflate(dcpl, 4);
    hid_t d = H5Dcreate2(f, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    cr_assert_geq(d, 0);
    uint8_t junk[64];
    for (int i = 0; i < 64; i++)
        junk[i] = (uint8_t)(i * 53 + 7);
    hsize_t off[5] = {0, 0, 0, 0, 0};
    cr_assert_geq(H5Dwrite_chunk(d, H5P_DEFAULT, 0, off, sizeof junk, junk), 0);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
}

/* A chunked dataset of the given dims with nothing written: a few hundred bytes of file. */
static void sparse(hid_t f, const char *name, hid_t type, int rank, const hsize_t *dims)
{
    hsize_t chunk[8];
    for (int i = 0; i < rank && i < 8; i++)
        chunk[i] = dims[i] < 16 ? (dims[i] ? dims[i] : 1) : 16;
    put_ds(f, name, type, type, rank, dims, chunk, NULL);
}

/* ---- the cases ----------------------------------------------------------------------------- */

typedef enum { CKPT, INPUT, DATA, TRACE, RESUME, QCKPT } target;

typedef struct {
    const char *name;
    target t;
    void (*make)(hid_t f);
    const char *key; /* the one line names it */
} hcase;

#define K_HEADW "head.weight"
#define K_BIAS "stage1.0.tssa.q_bn.bias"

/* checkpoints */
static void ck_string(hid_t f) { str_ds(f, K_HEADW); }
static void ck_compound(hid_t f) { compound_ds(f, K_BIAS, 24); }
static void ck_f64_overflow(hid_t f)
{
    hsize_t d[2] = {10, 96};
    f64_ds(f, K_HEADW, 2, d, 1e300, 17); /* beyond float32: inf after conversion */
}
static void ck_rank(hid_t f)
{
    hsize_t d[3] = {10, 96, 1};
    f64_ds(f, K_HEADW, 3, d, 0, -1);
}
static void ck_zero_dim(hid_t f)
{
    hsize_t d[2] = {0, 96};
    f64_ds(f, K_HEADW, 2, d, 0, -1);
}
static void ck_huge_dims(hid_t f)
{
    hsize_t d[2] = {4294967295u, 4294967295u}; /* -1 as int32, and a product beyond 2^63 */
    sparse(f, K_HEADW, H5T_IEEE_F32LE, 2, d);
}
static void ck_scalar(hid_t f) { f64_ds(f, K_HEADW, 0, NULL, 1.0, -1); }
static void ck_group(hid_t f) { group_for(f, K_HEADW); }
static void ck_dangling(hid_t f) { dangling(f, K_HEADW); }
static void ck_external(hid_t f) { external_missing(f, K_HEADW); }
static void ck_nan(hid_t f)
{
    hsize_t d[2] = {10, 96};
    f64_ds(f, K_HEADW, 2, d, NAN, 5);
}
static void ck_inf(hid_t f)
{
    hsize_t d = 24;
    f64_ds(f, K_BIAS, 1, &d, -INFINITY, 23);
}
static void ck_broken_filter(hid_t f)
{
    hsize_t d[2] = {10, 96};
    broken_chunk(f, K_HEADW, 2, d);
}
static void ck_attr_variant_int(hid_t f) { i64_attr(f, "variant", 0); }
static void ck_attr_img_string(hid_t f)
{
    hid_t t = str_type(3);
    put_attr(f, "/", "img_size", t, t, 0, NULL, "16x");
    H5Tclose(t);
}
static void ck_attr_T_array(hid_t f)
{
    int64_t v[4] = {4, 4, 4, 4};
    hsize_t d[2] = {2, 2};
    put_attr(f, "/", "T", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, d, v);
}
static void ck_attr_variant_two(hid_t f)
{
    hid_t t = str_type(5);
    hsize_t d = 2;
    put_attr(f, "/", "variant", t, t, 1, &d, "cifardvs12");
    H5Tclose(t);
}
static void ck_attr_mean_count(hid_t f)
{
    double v[2] = {0.5, 0.5};
    hsize_t d = 2;
    put_attr(f, "/", "input_mean", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &d, v);
    put_attr(f, "/", "input_std", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &d, v);
}
static void ck_attr_std_zero(hid_t f)
{
    double m[3] = {0.5, 0.5, 0.5}, s[3] = {0.2, 0.0, 0.2};
    hsize_t d = 3;
    put_attr(f, "/", "input_mean", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &d, m);
    put_attr(f, "/", "input_std", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 1, &d, s);
}
static void ck_attr_embed_huge(hid_t f) { i64_attr(f, "embed_dims", (int64_t)1 << 30); }
static void ck_attr_img_int64(hid_t f) { i64_attr(f, "img_size", (int64_t)1 << 40); }
static void ck_attr_depths_huge(hid_t f) { i64_attr(f, "depths", 2147483647); }
static void ck_attr_classes_huge(hid_t f) { i64_attr(f, "num_classes", 2147483647); }
static void ck_attr_T_negative(hid_t f) { i64_attr(f, "T", -4); }
static void ck_attr_mlp_nan(hid_t f) { f64_attr(f, "mlp_ratio", NAN); }
static void ck_attr_mlp_huge(hid_t f) { f64_attr(f, "mlp_ratio", 1e30); }
static void ck_attr_heads_frac(hid_t f) { f64_attr(f, "num_heads", 7.5); }
static void ck_attr_qk_unknown(hid_t f)
{
    hid_t t = str_type(6);
    put_attr(f, "/", "qk_attn", t, t, 0, NULL, "spiral");
    H5Tclose(t);
}

/* inputs (qkf infer, qkf sim) */
static void in_string(hid_t f) { str_ds(f, "input"); }
static void in_compound(hid_t f) { compound_ds(f, "input", 4); }
static void in_rank6(hid_t f)
{
    hsize_t d[6] = {2, 1, 3, 16, 16, 1};
    sparse(f, "input", H5T_IEEE_F32LE, 6, d);
}
static void in_zero(hid_t f)
{
    hsize_t d[4] = {0, 3, 16, 16};
    sparse(f, "input", H5T_IEEE_F32LE, 4, d);
}
static void in_huge(hid_t f)
{
    hsize_t d[4] = {(hsize_t)1 << 40, 3, 16, 16}; /* 2^40 samples in a few kilobytes */
    sparse(f, "input", H5T_IEEE_F32LE, 4, d);
}
static void in_neg_dims(hid_t f)
{
    hsize_t d[4] = {2, 4294967295u, 16, 16}; /* -1 channels as int32 */
    sparse(f, "input", H5T_IEEE_F32LE, 4, d);
}
static void in_group(hid_t f) { group_for(f, "input"); }
static void in_dangling(hid_t f) { dangling(f, "input"); }
static void in_nan(hid_t f)
{
    hsize_t d[4] = {2, 3, 16, 16};
    f64_ds(f, "input", 4, d, NAN, 1000);
}
static void in_f64_overflow(hid_t f)
{
    hsize_t d[4] = {2, 3, 16, 16};
    f64_ds(f, "input", 4, d, -1e300, 1535);
}
static void in_broken_filter(hid_t f)
{
    hsize_t d[4] = {2, 3, 16, 16};
    broken_chunk(f, "input", 4, d);
}

/* image datasets (qkf eval, qkf sim --data) */
static void da_images_string(hid_t f) { str_ds(f, "images"); }
static void da_labels_compound(hid_t f) { compound_ds(f, "labels", 4); }
static void da_labels_int64_huge(hid_t f)
{
    int64_t v[4] = {0, (int64_t)1 << 40, 1, 2};
    hsize_t d = 4;
    put_ds(f, "labels", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &d, NULL, v);
}
static void da_labels_rank(hid_t f)
{
    int64_t v[4] = {0, 1, 2, 3};
    hsize_t d[2] = {2, 2};
    put_ds(f, "labels", H5T_STD_I64LE, H5T_NATIVE_INT64, 2, d, NULL, v);
}
static void da_images_huge(hid_t f)
{
    hsize_t d[4] = {(hsize_t)1 << 40, 3, 16, 16};
    sparse(f, "images", H5T_STD_U8LE, 4, d);
}
static void da_images_group(hid_t f) { group_for(f, "images"); }
static void da_labels_dangling(hid_t f) { dangling(f, "labels"); }
static void da_images_nan(hid_t f)
{
    hsize_t d[4] = {4, 3, 16, 16};
    f64_ds(f, "images", 4, d, NAN, 77);
}
static void da_images_broken(hid_t f)
{
    hsize_t d[4] = {4, 3, 16, 16};
    broken_chunk(f, "images", 4, d);
}

/* traces (qkf report) */
#define TNODE "nodes/stage1.0.tssa.q_lif/observables/spikes"
static void tr_idx_string(hid_t f) { str_ds(f, TNODE "/idx"); }
static void tr_idx_huge(hid_t f)
{
    hsize_t d[2] = {2, (hsize_t)1 << 40};
    sparse(f, TNODE "/idx", H5T_STD_I32LE, 2, d);
}
static void tr_idx_group(hid_t f) { group_for(f, TNODE "/idx"); }
static void tr_nodes_dataset(hid_t f)
{
    hsize_t d = 2;
    unlink_if(f, "nodes");
    f64_ds(f, "nodes", 1, &d, 0, -1);
}
static void tr_T_string(hid_t f)
{
    hid_t t = str_type(4);
    put_attr(f, "/", "T", t, t, 0, NULL, "four");
    H5Tclose(t);
}
static void tr_neurons_huge(hid_t f)
{
    hsize_t d = (hsize_t)1 << 40;
    sparse(f, TNODE "/neurons", H5T_STD_I64LE, 1, &d);
}

/* training checkpoints (qkf train --resume) */
static void rs_step_empty(hid_t f)
{
    hsize_t d = 0;
    put_ds(f, "optim/step", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &d, NULL, NULL);
}
static void rs_step_string(hid_t f) { str_ds(f, "optim/step"); }
static void rs_step_negative(hid_t f)
{
    int64_t v = -5;
    hsize_t d = 1;
    put_ds(f, "optim/step", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &d, NULL, &v);
}
static void rs_options_scalar(hid_t f) { f64_ds(f, "optim/options", 0, NULL, 1.0, -1); }
static void rs_moment_nan(hid_t f)
{
    hsize_t d[2] = {10, 96};
    f64_ds(f, "optim/m/" K_HEADW, 2, d, NAN, 3);
}
static void rs_moment_group(hid_t f) { group_for(f, "optim/v/" K_HEADW); }
static void rs_data_int(hid_t f)
{
    int64_t v[3] = {1, 2, 3};
    hsize_t d = 3;
    put_ds(f, "optim/data", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &d, NULL, v);
}


/* quantised checkpoints (qkf quantize --hw loihi of w.h5; io/qckpt.c) */
#define Q_W "stage1.0.tssa.q_conv.weight"
#define Q_WE "stage1.0.tssa.q_conv.weight_exp"
#define Q_B "stage1.0.tssa.q_conv.bias"
#define Q_BE "stage1.0.tssa.q_conv.bias_exp"
#define Q_TH "stage1.0.tssa.q_lif.threshold"
#define Q_DL "stage1.0.tssa.q_lif.delta"
#define Q_ATH "stage1.0.tssa.attn_lif.threshold"

/* The dims of dataset name (rank returned). */
static int dims_of(hid_t f, const char *name, hsize_t *dims)
{
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    cr_assert_geq(d, 0, "open %s", name);
    hid_t sp = H5Dget_space(d);
    int r = H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    H5Dclose(d);
    return r;
}

/* Replaces integer dataset name by one of file type ft and the same shape, values from the old
 * one with v at flat index at (at < 0: none). */
static void int_ds(hid_t f, const char *name, hid_t ft, int64_t v, int64_t at)
{
    hsize_t dims[8], n = 1;
    int r = dims_of(f, name, dims);
    for (int i = 0; i < r; i++)
        n *= dims[i];
    int64_t *b = qkf_calloc(n, sizeof *b);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    cr_assert_geq(H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, b), 0);
    H5Dclose(d);
    if (at >= 0 && (hsize_t)at < n)
        b[at] = v;
    put_ds(f, name, ft, H5T_NATIVE_INT64, r, dims, NULL, b);
    qkf_free(b);
}

/* The same shape in float64 (values v at `at`, 0.01 steps elsewhere). */
static void float_like(hid_t f, const char *name, double v, int64_t at)
{
    hsize_t dims[8];
    int r = dims_of(f, name, dims);
    f64_ds(f, name, r, dims, v, at);
}

static void put_attr_on(hid_t f, const char *obj, const char *name, hid_t ft, hid_t mt,
                        const void *buf)
{
    put_attr(f, obj, name, ft, mt, 0, NULL, buf);
}

static void str_attr(hid_t f, const char *obj, const char *name, const char *v)
{
    hid_t t = str_type(strlen(v) ? strlen(v) : 1);
    put_attr(f, obj, name, t, t, 0, NULL, v);
    H5Tclose(t);
}

/* An integer dataset of the given shape, chunked and deflated, whose first chunk does not
 * inflate. */
static void broken_int_chunk(hid_t f, const char *name)
{
    hsize_t dims[8], chunk[8];
    int r = dims_of(f, name, dims);
    unlink_if(f, name);
    for (int i = 0; i < r; i++)
        chunk[i] = dims[i];
    hid_t sp = H5Screate_simple(r, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, r, chunk);
    H5Pset_deflate(dcpl, 4);
    hid_t d = H5Dcreate2(f, name, H5T_STD_I8LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    cr_assert_geq(d, 0);
    uint8_t junk[64];
    for (int i = 0; i < 64; i++)
        junk[i] = (uint8_t)(i * 53 + 7);
    hsize_t off[8] = {0};
    cr_assert_geq(H5Dwrite_chunk(d, H5P_DEFAULT, 0, off, sizeof junk, junk), 0);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
}

static void qc_w_float(hid_t f) { float_like(f, Q_W, 0.5, 3); }
static void qc_w_string(hid_t f) { str_ds(f, Q_W); }
static void qc_w_compound(hid_t f) { compound_ds(f, Q_W, 4); }
static void qc_w_beyond_bits(hid_t f) { int_ds(f, Q_W, H5T_STD_I16LE, 200, 3); }
static void qc_w_int64_huge(hid_t f) { int_ds(f, Q_W, H5T_STD_I64LE, (int64_t)1 << 40, 0); }
static void qc_w_rank(hid_t f)
{
    hsize_t d[2] = {24, 24};
    int8_t v[24 * 24] = {0};
    put_ds(f, Q_W, H5T_STD_I8LE, H5T_NATIVE_INT8, 2, d, NULL, v);
}
static void qc_w_huge_rows(hid_t f)
{
    hsize_t d[4] = {(hsize_t)1 << 40, 24, 1, 1};
    sparse(f, Q_W, H5T_STD_I8LE, 4, d);
}
static void qc_w_group(hid_t f) { group_for(f, Q_W); }
static void qc_w_broken(hid_t f) { broken_int_chunk(f, Q_W); }
static void qc_w_missing(hid_t f) { unlink_if(f, Q_W); }
static void qc_exp_high(hid_t f) { int_ds(f, Q_WE, H5T_STD_I8LE, 30, 2); }
static void qc_exp_negative(hid_t f) { int_ds(f, Q_WE, H5T_STD_I8LE, -3, 0); }
static void qc_exp_shape(hid_t f)
{
    hsize_t d = 25;
    int8_t v[25] = {0};
    put_ds(f, Q_WE, H5T_STD_I8LE, H5T_NATIVE_INT8, 1, &d, NULL, v);
}
static void qc_bias_beyond(hid_t f) { int_ds(f, Q_B, H5T_STD_I64LE, (int64_t)1 << 40, 5); }
static void qc_bias_float(hid_t f) { float_like(f, Q_B, 1.0, 0); }
static void qc_bias_exp_high(hid_t f) { int_ds(f, Q_BE, H5T_STD_I8LE, 100, 1); }
static void qc_bias_dangling(hid_t f) { dangling(f, Q_B); }
static void qc_bias_external(hid_t f) { external_missing(f, Q_BE); }
static void qc_th_negative(hid_t f) { int_ds(f, Q_TH, H5T_STD_I32LE, -5, 1); }
static void qc_th_beyond(hid_t f) { int_ds(f, Q_TH, H5T_STD_I64LE, (int64_t)1 << 40, 0); }
static void qc_th_huge_rows(hid_t f)
{
    hsize_t d = (hsize_t)1 << 40;
    sparse(f, Q_TH, H5T_STD_I32LE, 1, &d);
}
static void qc_th_scalar(hid_t f)
{
    int32_t v = 7;
    put_ds(f, Q_TH, H5T_STD_I32LE, H5T_NATIVE_INT32, 0, NULL, NULL, &v);
}
static void qc_delta_nan(hid_t f) { float_like(f, Q_DL, NAN, 2); }
static void qc_delta_inf(hid_t f) { float_like(f, Q_DL, INFINITY, 0); }
static void qc_delta_negative(hid_t f) { float_like(f, Q_DL, -0.5, 4); }
static void qc_delta_zero(hid_t f) { float_like(f, Q_DL, 0.0, 1); }
static void qc_delta_int(hid_t f) { int_ds(f, Q_DL, H5T_STD_I32LE, 1, -1); }
static void qc_delta_group(hid_t f) { group_for(f, Q_DL); }
static void qc_inw_missing(hid_t f) { H5Adelete_by_name(f, Q_ATH, "in_weight", H5P_DEFAULT); }
static void qc_inw_string(hid_t f) { str_attr(f, Q_ATH, "in_weight", "one"); }
static void qc_inw_zero(hid_t f)
{
    int64_t v = 0;
    put_attr_on(f, Q_ATH, "in_weight", H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}
static void qc_inw_nan(hid_t f)
{
    double v = NAN;
    put_attr_on(f, Q_ATH, "in_weight", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}
static void qc_scale_zero(hid_t f)
{
    double v = 0.0;
    put_attr_on(f, "head.weight", "scale", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}
static void qc_scale_nan(hid_t f)
{
    double v = NAN;
    put_attr_on(f, "head.weight", "scale", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}
static void qc_scale_missing(hid_t f) { H5Adelete_by_name(f, "head.weight", "scale", H5P_DEFAULT); }
static void qc_scale_string(hid_t f) { str_attr(f, "head.weight", "scale", "1e-3"); }
static void qc_head_exp_high(hid_t f) { int_ds(f, "head.weight_exp", H5T_STD_I8LE, 40, 0); }
static void qc_head_bias_huge(hid_t f)
{
    int_ds(f, "head.bias", H5T_STD_I64LE, INT64_MAX, 3); /* the logit sum would overflow */
}
static void qc_head_bias_float(hid_t f) { float_like(f, "head.bias", 2.0, 0); }
static void qc_extra_key(hid_t f)
{
    hsize_t d = 2;
    f64_ds(f, "stage9.0.mlp.mlp1_conv.weight", 1, &d, 0, -1);
}
static void qa_format_string(hid_t f) { str_attr(f, "/", "qkf_quant_format", "1"); }
static void qa_format_future(hid_t f) { i64_attr(f, "qkf_quant_format", 99); }
static void qa_bits_frac(hid_t f) { f64_attr(f, "hw.weight_bits", 8.5); }
static void qa_bits_zero(hid_t f) { i64_attr(f, "hw.weight_bits", 0); }
static void qa_bits_wide(hid_t f) { i64_attr(f, "hw.weight_bits", 20); }
static void qa_membrane_int64(hid_t f) { i64_attr(f, "hw.membrane_bits", (int64_t)1 << 40); }
static void qa_leak_missing(hid_t f) { H5Adelete_by_name(f, "/", "hw.leak", H5P_DEFAULT); }
static void qa_leak_unknown(hid_t f) { i64_attr(f, "hw.leak", 7); }
static void qa_per_channel_string(hid_t f) { str_attr(f, "/", "hw.per_channel", "yes"); }
static void qa_contradicts(hid_t f) { i64_attr(f, "hw.bias_bits", 16); }
static void qa_contradicts_wrap(hid_t f) { i64_attr(f, "hw.membrane_wrap", 1); }
static void qa_name_int(hid_t f) { i64_attr(f, "hw_name", 3); }
static void qa_name_empty(hid_t f) { str_attr(f, "/", "hw_name", ""); }
static void qa_name_control(hid_t f) { str_attr(f, "/", "hw_name", "loi\nhi"); }
static void qa_name_range(hid_t f) { str_attr(f, "/", "hw_name", "loihi[0..2]"); }
static void qa_in_scale_nan(hid_t f) { f64_attr(f, "in_scale", NAN); }
static void qa_in_scale_negative(hid_t f) { f64_attr(f, "in_scale", -0.25); }
static void qa_in_max_huge(hid_t f) { i64_attr(f, "in_max", (int64_t)1 << 40); }
static void qa_in_max_frac(hid_t f) { f64_attr(f, "in_max", 3.5); }
static void qa_embed_huge(hid_t f) { i64_attr(f, "embed_dims", (int64_t)1 << 30); }
static void qa_variant_unknown(hid_t f) { str_attr(f, "/", "variant", "resnet"); }
static void qa_T_array(hid_t f)
{
    int64_t v[2] = {4, 4};
    hsize_t d = 2;
    put_attr(f, "/", "T", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &d, v);
}

static hcase cases[] = {
    {"ckpt key of strings", CKPT, ck_string, K_HEADW},
    {"ckpt key of compounds", CKPT, ck_compound, K_BIAS},
    {"ckpt float64 beyond float32", CKPT, ck_f64_overflow, K_HEADW},
    {"ckpt key of the wrong rank", CKPT, ck_rank, K_HEADW},
    {"ckpt key with a zero dimension", CKPT, ck_zero_dim, K_HEADW},
    {"ckpt key of 2^32-1 x 2^32-1", CKPT, ck_huge_dims, K_HEADW},
    {"ckpt scalar key", CKPT, ck_scalar, K_HEADW},
    {"ckpt key that is a group", CKPT, ck_group, K_HEADW},
    {"ckpt dangling soft link", CKPT, ck_dangling, K_HEADW},
    {"ckpt external link to a missing file", CKPT, ck_external, K_HEADW},
    {"ckpt NaN", CKPT, ck_nan, K_HEADW},
    {"ckpt -Inf", CKPT, ck_inf, K_BIAS},
    {"ckpt chunk that does not inflate", CKPT, ck_broken_filter, K_HEADW},
    {"attribute variant an integer", CKPT, ck_attr_variant_int, "variant"},
    {"attribute img_size a string", CKPT, ck_attr_img_string, "img_size"},
    {"attribute T a 2x2 array", CKPT, ck_attr_T_array, "'T'"},
    {"attribute variant two strings", CKPT, ck_attr_variant_two, "variant"},
    {"attribute input_mean of 2 for 3 channels", CKPT, ck_attr_mean_count, "input_mean"},
    {"attribute input_std with a zero", CKPT, ck_attr_std_zero, "input_std"},
    {"attribute embed_dims 2^30", CKPT, ck_attr_embed_huge, "embed_dims"},
    {"attribute img_size 2^40 (int64)", CKPT, ck_attr_img_int64, "img_size"},
    {"attribute depths 2^31-1", CKPT, ck_attr_depths_huge, "depths"},
    {"attribute num_classes 2^31-1", CKPT, ck_attr_classes_huge, "num_classes"},
    {"attribute T negative", CKPT, ck_attr_T_negative, "T"},
    {"attribute mlp_ratio NaN", CKPT, ck_attr_mlp_nan, "mlp_ratio"},
    {"attribute mlp_ratio 1e30", CKPT, ck_attr_mlp_huge, "mlp_ratio"},
    {"attribute num_heads 7.5", CKPT, ck_attr_heads_frac, "num_heads"},
    {"attribute qk_attn unknown", CKPT, ck_attr_qk_unknown, "qk_attn"},
    {"input of strings", INPUT, in_string, "'input'"},
    {"input of compounds", INPUT, in_compound, "'input'"},
    {"input of rank 6", INPUT, in_rank6, "'input'"},
    {"input of 0 samples", INPUT, in_zero, "'input'"},
    {"input of 2^40 samples", INPUT, in_huge, "'input'"},
    {"input of 2^32-1 channels", INPUT, in_neg_dims, "'input'"},
    {"input a group", INPUT, in_group, "'input'"},
    {"input a dangling link", INPUT, in_dangling, "'input'"},
    {"input NaN", INPUT, in_nan, "'input'"},
    {"input float64 beyond float32", INPUT, in_f64_overflow, "'input'"},
    {"input chunk that does not inflate", INPUT, in_broken_filter, "'input'"},
    {"images of strings", DATA, da_images_string, "'images'"},
    {"labels of compounds", DATA, da_labels_compound, "'labels'"},
    {"labels int64 2^40", DATA, da_labels_int64_huge, "label"},
    {"labels of rank 2", DATA, da_labels_rank, "'labels'"},
    {"images of 2^40 samples", DATA, da_images_huge, "'images'"},
    {"images a group", DATA, da_images_group, "'images'"},
    {"labels a dangling link", DATA, da_labels_dangling, "'labels'"},
    {"images NaN", DATA, da_images_nan, "images"},
    {"images chunk that does not inflate", DATA, da_images_broken, "'images'"},
    {"trace spikes/idx of strings", TRACE, tr_idx_string, "stage1.0.tssa.q_lif"},
    {"trace spikes/idx of 2^40 per sample", TRACE, tr_idx_huge, "stage1.0.tssa.q_lif"},
    {"trace spikes/idx a group", TRACE, tr_idx_group, "stage1.0.tssa.q_lif"},
    {"trace nodes a dataset", TRACE, tr_nodes_dataset, "nodes"},
    {"trace attribute T a string", TRACE, tr_T_string, "'T'"},
    {"trace spikes/neurons of 2^40", TRACE, tr_neurons_huge, "stage1.0.tssa.q_lif"},
    {"optim/step empty", RESUME, rs_step_empty, "optim/step"},
    {"optim/step of strings", RESUME, rs_step_string, "optim/step"},
    {"optim/step negative", RESUME, rs_step_negative, "optim/step"},
    {"optim/options a scalar", RESUME, rs_options_scalar, "optim/options"},
    {"optim/m NaN", RESUME, rs_moment_nan, "optim/m/" K_HEADW},
    {"optim/v a group", RESUME, rs_moment_group, "optim/v/" K_HEADW},
    {"optim/data integers", RESUME, rs_data_int, "optim/data"},
    {"q: mantissas of floats", QCKPT, qc_w_float, Q_W},
    {"q: mantissas of strings", QCKPT, qc_w_string, Q_W},
    {"q: mantissas of compounds", QCKPT, qc_w_compound, Q_W},
    {"q: mantissa beyond the profile's 8 bits", QCKPT, qc_w_beyond_bits, Q_W},
    {"q: mantissa int64 2^40", QCKPT, qc_w_int64_huge, Q_W},
    {"q: mantissas of rank 2", QCKPT, qc_w_rank, Q_W},
    {"q: mantissas of 2^40 rows", QCKPT, qc_w_huge_rows, Q_W},
    {"q: mantissas a group", QCKPT, qc_w_group, Q_W},
    {"q: mantissas chunk that does not inflate", QCKPT, qc_w_broken, Q_W},
    {"q: mantissas missing", QCKPT, qc_w_missing, Q_W},
    {"q: weight exponent beyond weight_exp_max", QCKPT, qc_exp_high, Q_WE},
    {"q: weight exponent negative", QCKPT, qc_exp_negative, Q_WE},
    {"q: weight exponents of the wrong count", QCKPT, qc_exp_shape, Q_WE},
    {"q: bias int64 beyond bias_bits", QCKPT, qc_bias_beyond, Q_B},
    {"q: bias of floats", QCKPT, qc_bias_float, Q_B},
    {"q: bias exponent beyond bias_exp_max", QCKPT, qc_bias_exp_high, Q_BE},
    {"q: bias a dangling link", QCKPT, qc_bias_dangling, Q_B},
    {"q: bias exponent an external link to a missing file", QCKPT, qc_bias_external, Q_BE},
    {"q: threshold negative", QCKPT, qc_th_negative, Q_TH},
    {"q: threshold int64 beyond the membrane", QCKPT, qc_th_beyond, Q_TH},
    {"q: thresholds of 2^40 rows", QCKPT, qc_th_huge_rows, Q_TH},
    {"q: threshold a scalar", QCKPT, qc_th_scalar, Q_TH},
    {"q: delta NaN", QCKPT, qc_delta_nan, Q_DL},
    {"q: delta Inf", QCKPT, qc_delta_inf, Q_DL},
    {"q: delta negative", QCKPT, qc_delta_negative, Q_DL},
    {"q: delta zero", QCKPT, qc_delta_zero, Q_DL},
    {"q: delta of integers", QCKPT, qc_delta_int, Q_DL},
    {"q: delta a group", QCKPT, qc_delta_group, Q_DL},
    {"q: attention in_weight missing", QCKPT, qc_inw_missing, Q_ATH},
    {"q: attention in_weight a string", QCKPT, qc_inw_string, Q_ATH},
    {"q: attention in_weight 0", QCKPT, qc_inw_zero, Q_ATH},
    {"q: attention in_weight NaN", QCKPT, qc_inw_nan, Q_ATH},
    {"q: head scale 0", QCKPT, qc_scale_zero, "head.weight'"},
    {"q: head scale NaN", QCKPT, qc_scale_nan, "head.weight'"},
    {"q: head scale missing", QCKPT, qc_scale_missing, "head.weight'"},
    {"q: head scale a string", QCKPT, qc_scale_string, "head.weight'"},
    {"q: head exponent 40", QCKPT, qc_head_exp_high, "head.weight_exp"},
    {"q: head bias INT64_MAX", QCKPT, qc_head_bias_huge, "head.bias"},
    {"q: head bias of floats", QCKPT, qc_head_bias_float, "head.bias"},
    {"q: a key no quantised model has", QCKPT, qc_extra_key, "stage9.0.mlp.mlp1_conv.weight"},
    {"q: attribute qkf_quant_format a string", QCKPT, qa_format_string, "qkf_quant_format"},
    {"q: attribute qkf_quant_format 99", QCKPT, qa_format_future, "qkf_quant_format"},
    {"q: attribute hw.weight_bits 8.5", QCKPT, qa_bits_frac, "weight_bits"},
    {"q: attribute hw.weight_bits 0", QCKPT, qa_bits_zero, "weight_bits"},
    {"q: attribute hw.weight_bits 20", QCKPT, qa_bits_wide, "weight_bits"},
    {"q: attribute hw.membrane_bits 2^40", QCKPT, qa_membrane_int64, "membrane_bits"},
    {"q: attribute hw.leak missing", QCKPT, qa_leak_missing, "hw.leak"},
    {"q: attribute hw.leak unknown", QCKPT, qa_leak_unknown, "leak"},
    {"q: attribute hw.per_channel a string", QCKPT, qa_per_channel_string, "hw.per_channel"},
    {"q: bias_bits contradicting loihi", QCKPT, qa_contradicts, "bias_bits"},
    {"q: membrane_wrap contradicting loihi", QCKPT, qa_contradicts_wrap, "membrane_wrap"},
    {"q: attribute hw_name an integer", QCKPT, qa_name_int, "hw_name"},
    {"q: attribute hw_name empty", QCKPT, qa_name_empty, "hw_name"},
    {"q: attribute hw_name with a newline", QCKPT, qa_name_control, "hw_name"},
    {"q: attribute hw_name a range", QCKPT, qa_name_range, "hw_name"},
    {"q: attribute in_scale NaN", QCKPT, qa_in_scale_nan, "in_scale"},
    {"q: attribute in_scale negative", QCKPT, qa_in_scale_negative, "in_scale"},
    {"q: attribute in_max 2^40", QCKPT, qa_in_max_huge, "in_max"},
    {"q: attribute in_max 3.5", QCKPT, qa_in_max_frac, "in_max"},
    {"q: attribute embed_dims 2^30", QCKPT, qa_embed_huge, "embed_dims"},
    {"q: attribute variant unknown", QCKPT, qa_variant_unknown, "variant"},
    {"q: attribute T of two values", QCKPT, qa_T_array, "'T'"},
};

/* ---- running them -------------------------------------------------------------------------- */

static const char *const ckpt_cmds[] = {
    "info bad.h5",
    "infer --weights bad.h5 --input x.h5 --output y.h5 --threads 1 --quiet",
    "sim --weights bad.h5 --input x.h5 --report y.json --threads 1 --quiet",
    "eval --weights bad.h5 --data h5:d.h5 --threads 1",
    "train --resume bad.h5 --max-steps 2 --no-eval --quiet --threads 1 --out y.h5",
    NULL};
static const char *const input_cmds[] = {
    "infer --weights w.h5 --input bad.h5 --output y.h5 --threads 1 --quiet",
    "infer --weights w.h5 --input bad.h5 --output y.h5 --threads 1 --quiet --mode event",
    "sim --weights w.h5 --input bad.h5 --report y.json --threads 1 --quiet", NULL};
static const char *const data_cmds[] = {
    "eval --weights w.h5 --data h5:bad.h5 --threads 1",
    "sim --weights w.h5 --data h5:bad.h5 --report y.json --threads 1 --quiet", NULL};
static const char *const trace_cmds[] = {"report bad.h5", NULL};
/* every command that reads a quantised checkpoint (qkf serve fails at loading, before it would
 * listen; qkf quantize refuses a quantised input without reading it) */
static const char *const qckpt_cmds[] = {
    "info bad.h5",
    "infer --weights bad.h5 --input x.h5 --output y.h5 --threads 1 --quiet",
    "infer --weights bad.h5 --hw loihi --input x.h5 --output y.h5 --threads 1 --quiet",
    "infer --weights bad.h5 --input x.h5 --output y.h5 --threads 1 --quiet --mode event",
    "eval --weights bad.h5 --data h5:d.h5 --threads 1",
    "sim --weights bad.h5 --input x.h5 --report y.json --threads 1 --quiet",
    "serve --weights bad.h5 --listen 127.0.0.1:0 --threads 1", NULL};
static const char *const resume_cmds[] = {
    "train --resume bad.h5 --max-steps 2 --no-eval --quiet --threads 1 --out y.h5", NULL};

static const char *const *cmds_of(target t)
{
    switch (t) {
    case CKPT: return ckpt_cmds;
    case INPUT: return input_cmds;
    case DATA: return data_cmds;
    case TRACE: return trace_cmds;
    case QCKPT: return qckpt_cmds;
    default: return resume_cmds;
    }
}

static const char *base_of(target t)
{
    switch (t) {
    case INPUT: return "x.h5";
    case DATA: return "d.h5";
    case TRACE: return "t.h5";
    case QCKPT: return "q.h5";
    default: return "w.h5";
    }
}

/* One line on stderr naming bad.h5 and the key, a non-zero exit, no y.h5 / y.json and no
 * temporary file. */
static void expect_refusal(const hcase *c, const char *cmd)
{
    static char err[65536];
    int rc = qkf(cmd);
    slurp("stderr.txt", err, sizeof err);
    int lines = 0;
    for (const char *s = err; *s; s++)
        lines += *s == '\n';
    cr_expect(rc != 0 && rc < 128, "%s: qkf %s: exit %d (0 is acceptance, >= 128 a crash): %s",
              c->name, cmd, rc, err);
    cr_expect_eq(lines, 1, "%s: qkf %s: stderr is not one line: %s", c->name, cmd, err);
    cr_expect(strstr(err, "bad.h5") != NULL, "%s: qkf %s: the file is not named: %s", c->name,
              cmd, err);
    cr_expect(strstr(err, c->key) != NULL, "%s: qkf %s: '%s' is not named: %s", c->name, cmd,
              c->key, err);
    cr_expect(!exists("y.h5") && !exists("y.json"), "%s: qkf %s left an output file", c->name,
              cmd);
    char ls[1024];
    snprintf(ls, sizeof ls, "ls %s | grep -q tmp", dir);
    cr_expect_neq(system(ls), 0, "%s: qkf %s left a temporary file", c->name, cmd);
    remove(path_of("y.h5"));
    remove(path_of("y.json"));
}

TestSuite(hostile, .init = setup, .fini = teardown, .timeout = 300);

/* The parameter is an index into cases (a parameter holds no pointers: the test may run in a
 * fresh instance of the binary). */
ParameterizedTestParameters(hostile, table)
{
    static int index[sizeof cases / sizeof cases[0]];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        index[i] = (int)i;
    return cr_make_param_array(int, index, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(int *i, hostile, table)
{
    const hcase *c = &cases[*i];
    cr_log_info("case %d: %s", *i, c->name);
    hid_t f = open_bad(base_of(c->t));
    c->make(f);
    cr_assert_geq(H5Fclose(f), 0);
    for (const char *const *cmd = cmds_of(c->t); *cmd; cmd++)
        expect_refusal(c, *cmd);
}

/* The good files pass every command the table runs (so a refusal is the case's doing), and the
 * table holds at least 30 cases of each kind of file in all. */
Test(hostile, good_files_pass)
{
    cr_expect_geq(sizeof cases / sizeof cases[0], 30);
    int nq = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        nq += cases[i].t == QCKPT;
    cr_expect_geq(nq, 30, "%d quantised cases", nq);
    const char *const *lists[] = {ckpt_cmds, input_cmds, data_cmds, trace_cmds, resume_cmds,
                                  qckpt_cmds};
    const char *bases[] = {"w.h5", "x.h5", "d.h5", "t.h5", "w.h5", "q.h5"};
    static char err[65536];
    for (int l = 0; l < 6; l++) {
        copy(bases[l], "bad.h5");
        for (const char *const *cmd = lists[l]; *cmd; cmd++) {
            int rc = qkf(*cmd);
            slurp("stderr.txt", err, sizeof err);
            if (!strncmp(*cmd, "serve", 5)) /* loaded, then refused for not being a dvs model */
                cr_expect(rc == 1 && strstr(err, "needs a dvs variant"),
                          "qkf %s on the good %s: %d %s", *cmd, bases[l], rc, err);
            else
                cr_expect_eq(rc, 0, "qkf %s on the good %s: %s", *cmd, bases[l], err);
            remove(path_of("y.h5"));
            remove(path_of("y.json"));
        }
    }
    /* qkf quantize takes float checkpoints only: a quantised one is named and refused */
    int rc = qkf("quantize --weights q.h5 --hw loihi --out y.h5 --quiet");
    slurp("stderr.txt", err, sizeof err);
    cr_expect(rc == 1 && strstr(err, "q.h5: already a quantised checkpoint") && !exists("y.h5"),
              "%d %s", rc, err);
}

/* The profile a quantised checkpoint names: a bundled profile's name with its own arithmetic
 * loads; the same name over another profile's arithmetic is refused (hostile/table); a name no
 * profile is bundled under is a profile from a file (qkf quantize --hw FILE.yaml writes its
 * name) and loads with the arithmetic the checkpoint carries, which qkf infer prints. */
Test(hostile, qckpt_profile_name)
{
    static char err[65536], out[65536];
    hid_t f = open_bad("q.h5");
    str_attr(f, "/", "hw_name", "my-chip");
    cr_assert_geq(H5Fclose(f), 0);
    int rc = qkf("infer --weights bad.h5 --input x.h5 --output y.h5 --threads 1");
    slurp("stderr.txt", err, sizeof err);
    slurp("stdout.txt", out, sizeof out);
    cr_expect_eq(rc, 0, "%s", err);
    cr_expect(strstr(out, "(my-chip)") != NULL, "%s", out);
    remove(path_of("y.h5"));
    /* loihi's arithmetic under speck's name: speck's arithmetic differs, so it is refused */
    f = open_bad("q.h5");
    str_attr(f, "/", "hw_name", "speck");
    cr_assert_geq(H5Fclose(f), 0);
    rc = qkf("info bad.h5");
    slurp("stderr.txt", err, sizeof err);
    cr_expect(rc == 1 && strstr(err, "bad.h5") && strstr(err, "speck"), "%d %s", rc, err);
}
