/* Quantised checkpoints: a qkf_qmodel (models/quant.h) as HDF5 that h5py users can read.
 *
 * Layout (docs/hardware.md, "Quantisation"): at the root, per conv layer under its official name
 *   <conv>.weight      int8 (weight_bits <= 8) or int16 mantissas, the official shape
 *                      ([cout][cin][k][k], Conv1d [cout][cin][1])
 *   <conv>.weight_exp  int8 [cout]          W = weight << weight_exp
 *   <conv>.bias        int32 [cout]         folded bias mantissa (membrane units)
 *   <conv>.bias_exp    int8 [cout]          bias = bias << bias_exp
 * per LIF <lif>.threshold int32 [C] and <lif>.delta float64 [C] (the membrane unit; attention
 * neurons carry attribute in_weight on the threshold), and head.weight (int8/int16 [classes][C],
 * attribute scale = the logit scale), head.weight_exp (int8 [1]), head.bias (int64 [classes]).
 * Root attributes: qkf_quant_format, the model configuration as in float checkpoints (variant,
 * img_size, ..., input_mean/input_std), in_scale, in_max, hw_name and every arithmetic field of
 * the profile as hw.<field>. Loading checks every name, shape, type and range. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <hdf5.h>

#include "../kernels/base.h"
#include "../models/quant.h"
#include "h5_internal.h"
#include "hw_profile.h"
#include "io.h"

#define ARITH_FIELDS(X)                                                                        \
    X(weight_bits) X(weight_exp_min) X(weight_exp_max) X(per_channel) X(current_bits)          \
        X(current_wrap) X(current_shift) X(membrane_bits) X(membrane_wrap) X(decay_bits)       \
            X(threshold_bits) X(threshold_shift) X(threshold_ge) X(reset_subtract)             \
                X(bias_bits) X(bias_exp_max) X(graded_bits) X(input_bits) X(leak)

/* |head.bias| at most this (what qkf_quantize can write, 4e18): the logit sum of the engines,
 * bias + weights x spike counts in int64, keeps its headroom. */
#define QKF_QCKPT_HEAD_BIAS_MAX 4000000000000000000LL

static int put_i(qkf_h5out *o, const char *name, int ndim, const int64_t *shape, int64_t n,
                 int bytes, const void *src, int src_bytes)
{
    int64_t *b = qkf_malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
    for (int64_t i = 0; i < n; i++)
        b[i] = src_bytes == 1   ? ((const int8_t *)src)[i]
               : src_bytes == 2 ? ((const int16_t *)src)[i]
               : src_bytes == 4 ? ((const int32_t *)src)[i]
                                : ((const int64_t *)src)[i];
    int rc = qkf_h5out_int(o, name, ndim, shape, b, bytes);
    qkf_free(b);
    return rc;
}

static void conv_shape(const qkf_op *op, int *nd, int64_t *sh)
{
    sh[0] = op->cout, sh[1] = op->cin;
    if (op->conv1d)
        *nd = 3, sh[2] = 1;
    else
        *nd = 4, sh[2] = sh[3] = op->k;
}

int qkf_qckpt_save(const char *path, const qkf_qmodel *q)
{
    qkf_h5out *o = qkf_h5out_open(path);
    if (!o)
        return -1;
    const qkf_graph *g = &q->g;
    const qkf_config *c = &q->cfg;
    char nm[2 * QKF_MAX_NAME];
    int wbytes = q->arith.weight_bits <= 8 ? 1 : 2;
    int rc = 0;
    for (int i = 0; i < g->n_ops && !rc; i++) {
        const qkf_op *op = &g->ops[i];
        const qkf_qop *qo = &q->ops[i];
        int64_t sh[4];
        int nd;
        if (op->kind == QKF_OP_CONV) {
            conv_shape(op, &nd, sh);
            int64_t n = (int64_t)op->cout * op->cin * op->k * op->k, cs = op->cout;
            snprintf(nm, sizeof nm, "%s.weight", op->name);
            rc |= put_i(o, nm, nd, sh, n, wbytes, qo->w_mant, 2);
            snprintf(nm, sizeof nm, "%s.weight_exp", op->name);
            rc |= put_i(o, nm, 1, &cs, cs, 1, qo->w_exp, 1);
            snprintf(nm, sizeof nm, "%s.bias", op->name);
            rc |= put_i(o, nm, 1, &cs, cs, 4, qo->bias_mant, 4);
            snprintf(nm, sizeof nm, "%s.bias_exp", op->name);
            rc |= put_i(o, nm, 1, &cs, cs, 1, qo->bias_exp, 1);
        } else if (op->kind == QKF_OP_LIF) {
            int64_t C = g->tensors[op->out].c;
            snprintf(nm, sizeof nm, "%s.threshold", op->name);
            rc |= put_i(o, nm, 1, &C, C, 4, qo->theta, 4);
            if (!rc && qo->conv < 0)
                rc |= qkf_h5out_attr_i64(o, nm, "in_weight", qo->in_weight);
            snprintf(nm, sizeof nm, "%s.delta", op->name);
            rc |= qkf_h5out_f64(o, nm, 1, &C, qo->delta);
        } else if (op->kind == QKF_OP_READOUT) {
            int64_t K = c->num_classes, C = g->tensors[op->in0].c, s2[2] = {K, C}, one = 1;
            int8_t he = (int8_t)qo->head_exp;
            rc |= put_i(o, "head.weight", 2, s2, K * C, wbytes, qo->head_mant, 2);
            rc |= qkf_h5out_attr_f64(o, "head.weight", "scale", qo->head_scale);
            rc |= put_i(o, "head.weight_exp", 1, &one, 1, 1, &he, 1);
            rc |= put_i(o, "head.bias", 1, &K, K, 8, qo->head_b, 8);
        }
    }
    rc |= qkf_h5out_attr_i64(o, NULL, "qkf_quant_format", QKF_QUANT_FORMAT);
    rc |= qkf_h5out_attr_str(o, NULL, "qkf_version", QKF_VERSION);
    rc |= qkf_h5out_attr_str(o, NULL, "variant", qkf_variant_name(c->variant));
    rc |= qkf_h5out_attr_i64(o, NULL, "img_size", c->img_size);
    rc |= qkf_h5out_attr_i64(o, NULL, "in_channels", c->in_channels);
    rc |= qkf_h5out_attr_i64(o, NULL, "num_classes", c->num_classes);
    rc |= qkf_h5out_attr_i64(o, NULL, "embed_dims", c->embed_dims);
    rc |= qkf_h5out_attr_i64(o, NULL, "num_heads", c->num_heads);
    rc |= qkf_h5out_attr_i64(o, NULL, "depths", c->depths);
    rc |= qkf_h5out_attr_i64(o, NULL, "T", c->T);
    rc |= qkf_h5out_attr_f64(o, NULL, "mlp_ratio", (double)c->mlp_ratio);
    rc |= qkf_h5out_attr_str(o, NULL, "qk_attn", c->qk_attn == QKF_QK_CHANNEL ? "channel" : "token");
    if (q->n_norm > 0) {
        double mean[4], std[4];
        for (int i = 0; i < q->n_norm; i++)
            mean[i] = (double)q->input_mean[i], std[i] = (double)q->input_std[i];
        rc |= qkf_h5out_attr_f64v(o, NULL, "input_mean", q->n_norm, mean);
        rc |= qkf_h5out_attr_f64v(o, NULL, "input_std", q->n_norm, std);
    }
    rc |= qkf_h5out_attr_f64(o, NULL, "in_scale", q->in_scale);
    rc |= qkf_h5out_attr_i64(o, NULL, "in_max", q->in_max);
    rc |= qkf_h5out_attr_str(o, NULL, "hw_name", q->hw_name);
#define PUT(f) rc |= qkf_h5out_attr_i64(o, NULL, "hw." #f, q->arith.f);
    ARITH_FIELDS(PUT)
#undef PUT
    if (rc) {
        qkf_h5out_abort(o);
        return -1;
    }
    return qkf_h5out_commit(o);
}

/* ---- loading -------------------------------------------------------------------------------- */

static int attr_d(hid_t fid, const char *path, const char *key, int n, double *v, int required)
{
    htri_t ex = H5Aexists(fid, key);
    if (ex <= 0)
        return required ? qkf_set_error("%s: missing attribute '%s'", path, key) : 0;
    hid_t aid = H5Aopen(fid, key, H5P_DEFAULT), sid = H5I_INVALID_HID, tid = H5I_INVALID_HID;
    int rc = -1;
    if (aid < 0 || (sid = H5Aget_space(aid)) < 0 || (tid = H5Aget_type(aid)) < 0) {
        qkf_set_error("%s: cannot read attribute '%s'", path, key);
        goto done;
    }
    if (H5Tget_class(tid) != H5T_INTEGER && H5Tget_class(tid) != H5T_FLOAT) {
        qkf_set_error("%s: attribute '%s' is not a number", path, key);
        goto done;
    }
    if (H5Sget_simple_extent_npoints(sid) != n) {
        qkf_set_error("%s: attribute '%s' must hold %d value%s", path, key, n, n > 1 ? "s" : "");
        goto done;
    }
    if (H5Aread(aid, H5T_NATIVE_DOUBLE, v) < 0) {
        qkf_set_error("%s: cannot read attribute '%s'", path, key);
        goto done;
    }
    for (int i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            qkf_set_error("%s: attribute '%s' is not finite", path, key);
            goto done;
        }
    rc = 1;
done:
    if (tid >= 0)
        H5Tclose(tid);
    if (sid >= 0)
        H5Sclose(sid);
    if (aid >= 0)
        H5Aclose(aid);
    return rc;
}

static int attr_int(hid_t fid, const char *path, const char *key, int lo, int hi, int *out)
{
    double v;
    if (attr_d(fid, path, key, 1, &v, 1) < 0)
        return -1;
    if (v != floor(v) || v < lo || v > hi)
        return qkf_set_error("%s: attribute '%s' is %g (expected an integer in %d..%d)", path, key,
                             v, lo, hi);
    *out = (int)v;
    return 0;
}

static int attr_s(hid_t fid, const char *path, const char *key, char *buf, size_t cap)
{
    if (H5Aexists(fid, key) <= 0)
        return qkf_set_error("%s: missing attribute '%s'", path, key);
    hid_t aid = H5Aopen(fid, key, H5P_DEFAULT), tid = H5I_INVALID_HID, mt = H5I_INVALID_HID;
    int rc = -1;
    char *vs = NULL;
    if (aid < 0 || (tid = H5Aget_type(aid)) < 0 || H5Tget_class(tid) != H5T_STRING) {
        qkf_set_error("%s: attribute '%s' is not a string", path, key);
        goto done;
    }
    mt = H5Tcopy(H5T_C_S1);
    H5Tset_cset(mt, H5Tget_cset(tid));
    if (H5Tis_variable_str(tid) > 0) {
        H5Tset_size(mt, H5T_VARIABLE);
        if (H5Aread(aid, mt, &vs) < 0 || !vs || strlen(vs) >= cap) {
            qkf_set_error("%s: attribute '%s' cannot be read (or is too long)", path, key);
            goto done;
        }
        memcpy(buf, vs, strlen(vs) + 1);
    } else {
        size_t sz = H5Tget_size(tid);
        if (sz == 0 || sz >= cap) {
            qkf_set_error("%s: attribute '%s' is too long", path, key);
            goto done;
        }
        memset(buf, 0, cap);
        H5Tset_size(mt, sz + 1);
        H5Tset_strpad(mt, H5T_STR_NULLTERM);
        if (H5Aread(aid, mt, buf) < 0) {
            qkf_set_error("%s: cannot read attribute '%s'", path, key);
            goto done;
        }
    }
    rc = 0;
done:
    if (vs)
        H5free_memory(vs);
    if (mt >= 0)
        H5Tclose(mt);
    if (tid >= 0)
        H5Tclose(tid);
    if (aid >= 0)
        H5Aclose(aid);
    return rc;
}

/* Reads dataset name (integer class, or float when is_float) of exactly the shape nd/sh into
 * dst (int64 or double), as the caller's n values. */
static int read_ds(hid_t fid, const char *path, const char *name, int nd, const int64_t *sh,
                   int is_float, void *dst)
{
    hid_t did, tid, sid;
    if (qkf_h5_open_dataset(fid, path, name, H5P_DEFAULT, &did, &tid, &sid) < 0)
        return -1;
    int rc = -1;
    H5T_class_t cls = H5Tget_class(tid);
    if (is_float ? cls != H5T_FLOAT : cls != H5T_INTEGER) {
        qkf_set_error("%s: key '%s' must hold %s", path, name, is_float ? "floats" : "integers");
        goto done;
    }
    int rank = H5Sget_simple_extent_ndims(sid);
    hsize_t dims[32];
    int same = rank == nd && rank >= 0 && rank <= 32;
    if (same && H5Sget_simple_extent_dims(sid, dims, NULL) < 0)
        same = 0;
    for (int i = 0; same && i < nd; i++)
        same = dims[i] == (hsize_t)sh[i];
    if (!same) {
        char ws[96];
        int u = snprintf(ws, sizeof ws, "[");
        for (int i = 0; i < nd && u < (int)sizeof ws - 16; i++)
            u += snprintf(ws + u, sizeof ws - (size_t)u, i ? ", %lld" : "%lld", (long long)sh[i]);
        snprintf(ws + u, sizeof ws - (size_t)u, "]");
        qkf_set_error("%s: key '%s' has the wrong shape (the model expects %s)", path, name, ws);
        goto done;
    }
    if (H5Dread(did, is_float ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64, H5S_ALL, H5S_ALL,
                H5P_DEFAULT, dst) < 0) {
        qkf_set_error("%s: cannot read key '%s'", path, name);
        goto done;
    }
    rc = 0;
done:
    H5Sclose(sid);
    H5Tclose(tid);
    H5Dclose(did);
    return rc;
}

static int range_err(const char *path, const char *name, int64_t i, int64_t v, int64_t lo,
                     int64_t hi)
{
    return qkf_set_error("%s: key '%s' has %lld at flat index %lld (allowed %lld..%lld)", path,
                         name, (long long)v, (long long)i, (long long)lo, (long long)hi);
}

static int check_range(const char *path, const char *name, const int64_t *v, int64_t n,
                       int64_t lo, int64_t hi)
{
    for (int64_t i = 0; i < n; i++)
        if (v[i] < lo || v[i] > hi)
            return range_err(path, name, i, v[i], lo, hi);
    return 0;
}

/* The profile name a checkpoint carries, as the profile loader accepts names (io/hw_profile.c):
 * not empty, no control character (a message naming it stays one line), no range ('['). */
static int check_hw_name(const char *path, const char *name)
{
    if (!name[0])
        return qkf_set_error("%s: attribute 'hw_name' is empty (the profile the checkpoint was "
                             "quantised for)",
                             path);
    for (const char *c = name; *c; c++)
        if ((unsigned char)*c < 32 || *c == 127 || *c == '[')
            return qkf_set_error("%s: attribute 'hw_name' holds byte 0x%02x at offset %d (a "
                                 "profile name holds no control character or range)",
                                 path, (unsigned char)*c, (int)(c - name));
    return 0;
}

/* A checkpoint quantised for a bundled profile carries that profile's arithmetic, field by
 * field: an arithmetic block that contradicts the name it is filed under is refused (it was
 * edited, or the profile changed since: quantise again). A name no profile is bundled under is a
 * profile from a file (qkf quantize --hw FILE.yaml); its arithmetic is what the checkpoint
 * carries. */
static int check_bundled(const char *path, const qkf_qmodel *q)
{
    int found = -1;
    for (int i = 0; i < qkf_hw_count(); i++)
        if (qkf_hw_name(i) && strcmp(qkf_hw_name(i), q->hw_name) == 0)
            found = i;
    if (found < 0)
        return 0;
    qkf_hw_profile *p = qkf_calloc(1, sizeof *p);
    int rc = 0;
    if (qkf_hw_load(q->hw_name, p) < 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", qkf_last_error());
        rc = qkf_set_error("%s: attribute 'hw_name' '%s': %s", path, q->hw_name, msg);
    }
#define CMP(f)                                                                                 \
    if (!rc && p->arith.f != q->arith.f)                                                       \
        rc = qkf_set_error("%s: attribute 'hw." #f "' is %d but profile '%s' (attribute "       \
                           "'hw_name') has %d: the arithmetic contradicts the profile named "   \
                           "(quantise the float checkpoint again)",                             \
                           path, q->arith.f, q->hw_name, p->arith.f);
    ARITH_FIELDS(CMP)
#undef CMP
    qkf_free(p);
    return rc;
}

int qkf_qckpt_is_quant(const char *path)
{
    hid_t fid = qkf_h5_open_ro(path);
    if (fid < 0)
        return -1;
    int r = H5Aexists(fid, "qkf_quant_format") > 0;
    H5Fclose(fid);
    return r;
}

static int load_ops(hid_t fid, const char *path, qkf_qmodel *q)
{
    const qkf_graph *g = &q->g;
    const qkf_hw_arith *a = &q->arith;
    char nm[2 * QKF_MAX_NAME];
    int64_t mmax = ((int64_t)1 << (a->weight_bits - 1)) - 1;
    int64_t bmax = ((int64_t)1 << (a->bias_bits - 1)) - 1;
    int64_t memmax = ((int64_t)1 << (a->membrane_bits - 1)) - 1;
    int e_lo = a->weight_exp_min > 0 ? a->weight_exp_min : 0;
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        qkf_qop *qo = &q->ops[i];
        qo->conv = -1;
        if (op->kind == QKF_OP_CONV) {
            int64_t sh[4], cs = op->cout, n = (int64_t)op->cout * op->cin * op->k * op->k;
            int nd;
            conv_shape(op, &nd, sh);
            int64_t *m = qkf_malloc((size_t)n * sizeof(int64_t));
            int64_t *ex = qkf_malloc((size_t)cs * sizeof(int64_t));
            int64_t *bm = qkf_malloc((size_t)cs * sizeof(int64_t));
            int64_t *be = qkf_malloc((size_t)cs * sizeof(int64_t));
            int rc = 0;
            char n1[sizeof nm], n2[sizeof nm], n3[sizeof nm];
            snprintf(nm, sizeof nm, "%s.weight", op->name);
            snprintf(n1, sizeof n1, "%s.weight_exp", op->name);
            snprintf(n2, sizeof n2, "%s.bias", op->name);
            snprintf(n3, sizeof n3, "%s.bias_exp", op->name);
            rc = read_ds(fid, path, nm, nd, sh, 0, m) || check_range(path, nm, m, n, -mmax, mmax) ||
                 read_ds(fid, path, n1, 1, &cs, 0, ex) ||
                 check_range(path, n1, ex, cs, e_lo, a->weight_exp_max) ||
                 read_ds(fid, path, n2, 1, &cs, 0, bm) || check_range(path, n2, bm, cs, -bmax, bmax) ||
                 read_ds(fid, path, n3, 1, &cs, 0, be) ||
                 check_range(path, n3, be, cs, 0, a->bias_exp_max);
            for (int64_t c = 0; !rc && c < cs; c++) {
                if ((double)mmax * ldexp(1.0, (int)ex[c]) > 2147483647.0)
                    rc = range_err(path, n1, c, ex[c], e_lo, 31 - a->weight_bits);
                else if (fabs(ldexp((double)bm[c], (int)be[c])) > 2147483647.0)
                    rc = qkf_set_error("%s: key '%s': bias of channel %lld beyond int32", path, n2,
                                       (long long)c);
            }
            if (!rc) {
                qo->w = qkf_malloc((size_t)n * sizeof(int32_t));
                qo->w_mant = qkf_malloc((size_t)n * sizeof(int16_t));
                qo->w_exp = qkf_malloc((size_t)cs);
                qo->bias = qkf_malloc((size_t)cs * sizeof(int32_t));
                qo->bias_mant = qkf_malloc((size_t)cs * sizeof(int32_t));
                qo->bias_exp = qkf_malloc((size_t)cs);
                int64_t per = n / cs;
                for (int64_t c = 0; c < cs; c++) {
                    qo->w_exp[c] = (int8_t)ex[c];
                    qo->bias_mant[c] = (int32_t)bm[c];
                    qo->bias_exp[c] = (int8_t)be[c];
                    qo->bias[c] = (int32_t)(bm[c] * ((int64_t)1 << be[c]));
                    for (int64_t j = c * per; j < (c + 1) * per; j++) {
                        qo->w_mant[j] = (int16_t)m[j];
                        qo->w[j] = (int32_t)(m[j] * ((int64_t)1 << ex[c]));
                    }
                }
            }
            qkf_free(m);
            qkf_free(ex);
            qkf_free(bm);
            qkf_free(be);
            if (rc)
                return -1;
        } else if (op->kind == QKF_OP_LIF) {
            int64_t C = g->tensors[op->out].c;
            int64_t *th = qkf_malloc((size_t)C * sizeof(int64_t));
            qo->delta = qkf_malloc((size_t)C * sizeof(double));
            snprintf(nm, sizeof nm, "%s.threshold", op->name);
            int rc = read_ds(fid, path, nm, 1, &C, 0, th) ||
                     check_range(path, nm, th, C, a->threshold_ge ? 1 : 0, memmax);
            int attn = i == 0 || g->ops[i - 1].kind != QKF_OP_CONV ||
                       g->ops[i - 1].out != op->in0;
            if (!rc) {
                qo->theta = qkf_malloc((size_t)C * sizeof(int32_t));
                for (int64_t c = 0; c < C; c++)
                    qo->theta[c] = (int32_t)th[c];
                if (attn) {
                    hid_t did = H5Dopen2(fid, nm, H5P_DEFAULT);
                    double w = 0.0;
                    char lab[QKF_MAX_NAME * 2 + 600];
                    snprintf(lab, sizeof lab, "%s: key '%s'", path, nm);
                    int r = did >= 0 ? attr_d(did, lab, "in_weight", 1, &w, 1)
                                     : qkf_set_error("%s: cannot open key '%s'", path, nm);
                    if (did >= 0)
                        H5Dclose(did);
                    if (r < 0)
                        rc = -1;
                    else if (w != floor(w) || w < 1 || w > 65535)
                        rc = qkf_set_error("%s: key '%s': attribute in_weight is %g (expected "
                                           "1..65535)",
                                           path, nm, w);
                    else
                        qo->in_weight = (int32_t)w;
                } else
                    qo->conv = i - 1;
            }
            qkf_free(th);
            snprintf(nm, sizeof nm, "%s.delta", op->name);
            if (!rc && (rc = read_ds(fid, path, nm, 1, &C, 1, qo->delta)) == 0)
                for (int64_t c = 0; c < C && !rc; c++)
                    if (!(qo->delta[c] > 0) || !isfinite(qo->delta[c]))
                        rc = qkf_set_error("%s: key '%s' has a non-positive value at index %lld",
                                           path, nm, (long long)c);
            if (rc)
                return -1;
        } else if (op->kind == QKF_OP_READOUT) {
            int64_t K = q->cfg.num_classes, C = g->tensors[op->in0].c, s2[2] = {K, C}, one = 1;
            int64_t *m = qkf_malloc((size_t)(K * C) * sizeof(int64_t)), he;
            qo->head_b = qkf_malloc((size_t)K * sizeof(int64_t));
            int rc = read_ds(fid, path, "head.weight", 2, s2, 0, m) ||
                     check_range(path, "head.weight", m, K * C, -mmax, mmax) ||
                     read_ds(fid, path, "head.weight_exp", 1, &one, 0, &he) ||
                     check_range(path, "head.weight_exp", &he, 1, 0, 31 - a->weight_bits) ||
                     read_ds(fid, path, "head.bias", 1, &K, 0, qo->head_b) ||
                     check_range(path, "head.bias", qo->head_b, K, -QKF_QCKPT_HEAD_BIAS_MAX,
                                 QKF_QCKPT_HEAD_BIAS_MAX);
            if (!rc) {
                hid_t did = H5Dopen2(fid, "head.weight", H5P_DEFAULT);
                char lab[600];
                snprintf(lab, sizeof lab, "%s: key 'head.weight'", path);
                int r = did >= 0 ? attr_d(did, lab, "scale", 1, &qo->head_scale, 1)
                                 : qkf_set_error("%s: cannot open key 'head.weight'", path);
                if (did >= 0)
                    H5Dclose(did);
                if (r < 0)
                    rc = -1;
                else if (!(qo->head_scale > 0))
                    rc = qkf_set_error("%s: key 'head.weight': attribute scale is not positive",
                                       path);
            }
            if (!rc) {
                qo->head_exp = (int)he;
                qo->head_w = qkf_malloc((size_t)(K * C) * sizeof(int32_t));
                qo->head_mant = qkf_malloc((size_t)(K * C) * sizeof(int16_t));
                for (int64_t j = 0; j < K * C; j++) {
                    qo->head_mant[j] = (int16_t)m[j];
                    qo->head_w[j] = (int32_t)(m[j] * ((int64_t)1 << he));
                }
            }
            qkf_free(m);
            if (rc)
                return -1;
        }
    }
    return 0;
}

/* 1 if name is one of the datasets the model has. */
static int expected(const qkf_graph *g, const char *name)
{
    static const char *conv_sfx[] = {".weight", ".weight_exp", ".bias", ".bias_exp"};
    static const char *lif_sfx[] = {".threshold", ".delta"};
    char nm[2 * QKF_MAX_NAME];
    if (!strcmp(name, "head.weight") || !strcmp(name, "head.weight_exp") ||
        !strcmp(name, "head.bias"))
        return 1;
    for (int i = 0; i < g->n_ops; i++) {
        const qkf_op *op = &g->ops[i];
        size_t l = strlen(op->name);
        if (strncmp(name, op->name, l) != 0)
            continue;
        const char **sfx = op->kind == QKF_OP_CONV ? conv_sfx : op->kind == QKF_OP_LIF ? lif_sfx
                                                                                        : NULL;
        int ns = op->kind == QKF_OP_CONV ? 4 : 2;
        for (int k = 0; sfx && k < ns; k++) {
            snprintf(nm, sizeof nm, "%s%s", op->name, sfx[k]);
            if (!strcmp(nm, name))
                return 1;
        }
    }
    return 0;
}

int qkf_qckpt_load(const char *path, qkf_qmodel *q)
{
    memset(q, 0, sizeof *q);
    hid_t fid = qkf_h5_open_ro(path);
    if (fid < 0)
        return -1;
    qkf_qmodel nq;
    memset(&nq, 0, sizeof nq);
    int rc = -1, fmt;
    char s[QKF_HW_NAME];
    qkf_config *c = &nq.cfg;
    if (H5Aexists(fid, "qkf_quant_format") <= 0) {
        qkf_set_error("%s: not a quantised checkpoint (no attribute 'qkf_quant_format'; make one "
                      "with qkf quantize)",
                      path);
        goto done;
    }
    if (attr_int(fid, path, "qkf_quant_format", 1, QKF_QUANT_FORMAT, &fmt) < 0)
        goto done;
    if (attr_s(fid, path, "variant", s, sizeof s) < 0)
        goto done;
    if (qkf_variant_parse(s, &c->variant) < 0) {
        qkf_set_error("%s: attribute 'variant' is '%s' (expected cifar, imagenet, dvs128 or "
                      "cifar10dvs)",
                      path, s);
        goto done;
    }
    if (attr_int(fid, path, "img_size", 1, 4096, &c->img_size) ||
        attr_int(fid, path, "in_channels", 1, 4, &c->in_channels) ||
        attr_int(fid, path, "num_classes", 1, 1 << 20, &c->num_classes) ||
        attr_int(fid, path, "embed_dims", 1, 1 << 16, &c->embed_dims) ||
        attr_int(fid, path, "num_heads", 1, 1 << 16, &c->num_heads) ||
        attr_int(fid, path, "depths", 0, 1024, &c->depths) || attr_int(fid, path, "T", 1, 4096, &c->T))
        goto done;
    double r;
    if (attr_d(fid, path, "mlp_ratio", 1, &r, 1) < 0)
        goto done;
    c->mlp_ratio = (float)r;
    if (attr_s(fid, path, "qk_attn", s, sizeof s) < 0)
        goto done;
    if (strcmp(s, "token") && strcmp(s, "channel")) {
        qkf_set_error("%s: attribute 'qk_attn' is '%s' (expected token or channel)", path, s);
        goto done;
    }
    c->qk_attn = strcmp(s, "channel") == 0 ? QKF_QK_CHANNEL : QKF_QK_TOKEN;
    if (qkf_config_validate(c) < 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", qkf_last_error());
        qkf_set_error("%s: %s", path, msg);
        goto done;
    }
    for (int i = 0; i < 4; i++)
        nq.input_mean[i] = 0.0f, nq.input_std[i] = 1.0f;
    if (H5Aexists(fid, "input_mean") > 0) {
        double mean[4], sd[4];
        if (attr_d(fid, path, "input_mean", c->in_channels, mean, 1) < 0 ||
            attr_d(fid, path, "input_std", c->in_channels, sd, 1) < 0)
            goto done;
        for (int i = 0; i < c->in_channels; i++) {
            if (!(sd[i] > 0)) {
                qkf_set_error("%s: attribute 'input_std' has a non-positive value at index %d",
                              path, i);
                goto done;
            }
            nq.input_mean[i] = (float)mean[i], nq.input_std[i] = (float)sd[i];
        }
        nq.n_norm = c->in_channels;
    }
    int im;
    if (attr_d(fid, path, "in_scale", 1, &nq.in_scale, 1) < 0 ||
        attr_int(fid, path, "in_max", 0, 65535, &im) < 0)
        goto done;
    nq.in_max = im;
    if (!(nq.in_scale > 0)) {
        qkf_set_error("%s: attribute 'in_scale' is not positive", path);
        goto done;
    }
    if (attr_s(fid, path, "hw_name", nq.hw_name, sizeof nq.hw_name) < 0 ||
        check_hw_name(path, nq.hw_name) < 0)
        goto done;
#define GET(f)                                                                                 \
    if (attr_int(fid, path, "hw." #f, -64, 64, &nq.arith.f) < 0)                               \
        goto done;
    ARITH_FIELDS(GET)
#undef GET
    if (qkf_quant_check_arith(&nq.arith) < 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", qkf_last_error());
        qkf_set_error("%s: %s", path, msg);
        goto done;
    }
    if (check_bundled(path, &nq) < 0)
        goto done;
    if (qkf_graph_walk(c, 0, &nq.g) < 0)
        goto done;
    nq.ops = qkf_calloc((size_t)nq.g.n_ops, sizeof(qkf_qop));
    if (load_ops(fid, path, &nq) < 0)
        goto done;
    /* no dataset the model does not have */
    H5G_info_t gi;
    if (H5Gget_info(fid, &gi) < 0) {
        qkf_set_error("%s: cannot list the keys", path);
        goto done;
    }
    for (hsize_t li = 0; li < gi.nlinks; li++) {
        char name[256];
        ssize_t len = H5Lget_name_by_idx(fid, ".", H5_INDEX_NAME, H5_ITER_INC, li, name,
                                         sizeof name, H5P_DEFAULT);
        if (len < 0 || len >= (ssize_t)sizeof name || !expected(&nq.g, name)) {
            qkf_set_error("%s: unexpected key '%s' (not in a quantised %s model)", path,
                          len >= 0 ? name : "?", qkf_variant_name(c->variant));
            goto done;
        }
    }
    *q = nq;
    memset(&nq, 0, sizeof nq);
    rc = 0;
done:
    if (nq.ops || nq.g.ops)
        qkf_qmodel_free(&nq);
    H5Fclose(fid);
    return rc;
}
