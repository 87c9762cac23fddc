/* Checkpoints: one HDF5 file per model.
 *
 * Layout. Every entry of the official PyTorch state_dict (BatchNorm running statistics
 * included, num_batches_tracked left out) is a float32 dataset at the root, named by its key
 * ("stage1.0.tssa.q_conv.weight") with the official shape. The configuration is stored as root
 * attributes: variant (string), img_size, in_channels, num_classes, embed_dims, num_heads,
 * depths, T (int64), mlp_ratio (float64), qk_attn (string "token" or "channel"), optionally
 * input_mean and input_std (float arrays of in_channels values), plus qkf_format (int64) and
 * qkf_version (string). Checkpoints converted from PyTorch by tools/reference may store the
 * numbers with other numeric types, lack qkf_format, or carry num_batches_tracked and extra
 * attributes; the loader accepts all of that. Groups at the root (optimizer state) are
 * ignored. Any other difference from the parameter table of the configured model is an error
 * naming the key. qkf_ckpt_load fills *m only on success; on failure *m is left untouched. */
#define _POSIX_C_SOURCE 200809L
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "../kernels/base.h"
#include "h5_internal.h"

#define MAX_DIMS 32 /* H5S_MAX_RANK: enough to describe whatever shape a file holds */

/* Re-records the current error with "path: " in front (messages from models/ do not know the
 * file). The copy is needed because qkf_set_error writes the buffer qkf_last_error reads. */
static int prefix_error(const char *path)
{
    char msg[768];
    snprintf(msg, sizeof msg, "%s", qkf_last_error());
    return qkf_set_error("%s: %s", path, msg);
}

/* ---- root attributes ------------------------------------------------------------------ */

/* Opens root attribute `key`. Returns 1 and sets *aid, 0 if it is absent and optional, -1 on
 * error (a required one missing). */
static int attr_open(hid_t fid, const char *path, const char *key, int required, hid_t *aid)
{
    *aid = H5I_INVALID_HID;
    htri_t ex = H5Aexists(fid, key);
    if (ex < 0)
        return qkf_set_error("%s: cannot check attribute '%s'", path, key);
    if (ex == 0)
        return required
                   ? qkf_set_error("%s: missing attribute '%s' (part of the model configuration)",
                                   path, key)
                   : 0;
    if ((*aid = H5Aopen(fid, key, H5P_DEFAULT)) < 0)
        return qkf_set_error("%s: cannot open attribute '%s'", path, key);
    return 1;
}

/* Reads string attribute `key` (fixed or variable length, ASCII or UTF-8, scalar or one
 * element) into buf. Returns 1, 0 if absent and optional, or -1. */
static int attr_str(hid_t fid, const char *path, const char *key, int required, char *buf,
                    size_t cap)
{
    hid_t aid, ftype = H5I_INVALID_HID, mtype = H5I_INVALID_HID, sid = H5I_INVALID_HID;
    char *vs = NULL;
    int rc = attr_open(fid, path, key, required, &aid);
    if (rc <= 0)
        return rc;
    rc = -1;
    if ((ftype = H5Aget_type(aid)) < 0 || (sid = H5Aget_space(aid)) < 0) {
        qkf_set_error("%s: cannot read attribute '%s'", path, key);
        goto done;
    }
    if (H5Tget_class(ftype) != H5T_STRING) {
        qkf_set_error("%s: attribute '%s' is not a string", path, key);
        goto done;
    }
    if (H5Sget_simple_extent_npoints(sid) != 1) {
        qkf_set_error("%s: attribute '%s' must hold one string", path, key);
        goto done;
    }
    /* HDF5 does not convert between ASCII and UTF-8, so read in the stored character set. */
    if ((mtype = H5Tcopy(H5T_C_S1)) < 0 || H5Tset_cset(mtype, H5Tget_cset(ftype)) < 0) {
        qkf_set_error("%s: cannot read attribute '%s'", path, key);
        goto done;
    }
    if (H5Tis_variable_str(ftype) > 0) {
        if (H5Tset_size(mtype, H5T_VARIABLE) < 0 || H5Aread(aid, mtype, &vs) < 0 || !vs) {
            qkf_set_error("%s: cannot read attribute '%s'", path, key);
            goto done;
        }
        if (strlen(vs) >= cap) {
            qkf_set_error("%s: attribute '%s' is too long", path, key);
            goto done;
        }
        memcpy(buf, vs, strlen(vs) + 1);
    } else {
        size_t sz = H5Tget_size(ftype);
        if (sz == 0 || sz >= cap) {
            qkf_set_error("%s: attribute '%s' is too long", path, key);
            goto done;
        }
        memset(buf, 0, cap);
        if (H5Tset_size(mtype, sz + 1) < 0 || H5Tset_strpad(mtype, H5T_STR_NULLTERM) < 0 ||
            H5Aread(aid, mtype, buf) < 0) {
            qkf_set_error("%s: cannot read attribute '%s'", path, key);
            goto done;
        }
        buf[sz] = 0;
    }
    rc = 1;
done:
    if (vs)
        H5free_memory(vs);
    if (mtype >= 0)
        H5Tclose(mtype);
    if (sid >= 0)
        H5Sclose(sid);
    if (ftype >= 0)
        H5Tclose(ftype);
    H5Aclose(aid);
    return rc;
}

/* Reads numeric attribute `key` (any integer or float type) holding exactly n values, converted
 * to double. Returns 1, 0 if absent and optional, or -1. */
static int attr_num(hid_t fid, const char *path, const char *key, int required, int n, double *v)
{
    hid_t aid, ftype = H5I_INVALID_HID, sid = H5I_INVALID_HID;
    int rc = attr_open(fid, path, key, required, &aid);
    if (rc <= 0)
        return rc;
    rc = -1;
    if ((ftype = H5Aget_type(aid)) < 0 || (sid = H5Aget_space(aid)) < 0) {
        qkf_set_error("%s: cannot read attribute '%s'", path, key);
        goto done;
    }
    H5T_class_t cls = H5Tget_class(ftype);
    if (cls != H5T_INTEGER && cls != H5T_FLOAT) {
        qkf_set_error("%s: attribute '%s' is not a number", path, key);
        goto done;
    }
    hssize_t np = H5Sget_simple_extent_npoints(sid);
    if (np != n) {
        qkf_set_error("%s: attribute '%s' has %lld values (expected %d)", path, key, (long long)np,
                      n);
        goto done;
    }
    if (H5Aread(aid, H5T_NATIVE_DOUBLE, v) < 0) {
        qkf_set_error("%s: cannot read attribute '%s'", path, key);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if (!isfinite(v[i])) {
            qkf_set_error("%s: attribute '%s' is not finite", path, key);
            goto done;
        }
    }
    rc = 1;
done:
    if (sid >= 0)
        H5Sclose(sid);
    if (ftype >= 0)
        H5Tclose(ftype);
    H5Aclose(aid);
    return rc;
}

static int attr_int(hid_t fid, const char *path, const char *key, int *out)
{
    double v;
    if (attr_num(fid, path, key, 1, 1, &v) < 0)
        return -1;
    if (v != floor(v) || v < INT_MIN || v > INT_MAX)
        return qkf_set_error("%s: attribute '%s' is %.17g, not an integer of int's range", path,
                             key, v);
    *out = (int)v;
    return 0;
}

static int read_config(hid_t fid, const char *path, qkf_model *m)
{
    qkf_config *c = &m->cfg;
    char s[64];

    if (attr_str(fid, path, "variant", 1, s, sizeof s) < 0)
        return -1;
    if (qkf_variant_parse(s, &c->variant) < 0)
        return qkf_set_error("%s: attribute 'variant' is '%s' (expected cifar, imagenet, dvs128 "
                             "or cifar10dvs)",
                             path, s);

    const struct {
        const char *key;
        int *dst;
    } ints[] = {
        {"img_size", &c->img_size},
        {"in_channels", &c->in_channels},
        {"num_classes", &c->num_classes},
        {"embed_dims", &c->embed_dims},
        {"num_heads", &c->num_heads},
        {"depths", &c->depths},
        {"T", &c->T},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (attr_int(fid, path, ints[i].key, ints[i].dst) < 0)
            return -1;

    double r;
    if (attr_num(fid, path, "mlp_ratio", 1, 1, &r) < 0)
        return -1;
    c->mlp_ratio = (float)r;

    int rc = attr_str(fid, path, "qk_attn", 0, s, sizeof s);
    if (rc < 0)
        return -1;
    c->qk_attn = QKF_QK_TOKEN;
    if (rc > 0) {
        if (strcmp(s, "channel") == 0)
            c->qk_attn = QKF_QK_CHANNEL;
        else if (strcmp(s, "token") != 0)
            return qkf_set_error("%s: attribute 'qk_attn' is '%s' (expected token or channel)",
                                 path, s);
    }

    double fmt;
    if ((rc = attr_num(fid, path, "qkf_format", 0, 1, &fmt)) < 0)
        return -1;
    if (rc > 0 && fmt > QKF_CKPT_FORMAT)
        return qkf_set_error("%s: checkpoint format %g is newer than this qkf reads (%d; "
                             "upgrade qkf)",
                             path, fmt, QKF_CKPT_FORMAT);

    /* Input normalisation: both arrays or neither, one value per input channel. */
    m->n_norm = 0;
    for (int i = 0; i < 4; i++) {
        m->input_mean[i] = 0.0f;
        m->input_std[i] = 1.0f;
    }
    int has_mean = H5Aexists(fid, "input_mean") > 0, has_std = H5Aexists(fid, "input_std") > 0;
    if (has_mean != has_std)
        return qkf_set_error("%s: attribute '%s' is present without '%s'", path,
                             has_mean ? "input_mean" : "input_std",
                             has_mean ? "input_std" : "input_mean");
    if (has_mean) {
        int n = c->in_channels;
        double mean[4], std[4];
        if (n < 1 || n > 4)
            return qkf_set_error("%s: attribute 'input_mean' given for %d input channels "
                                 "(at most 4 supported)",
                                 path, n);
        if (attr_num(fid, path, "input_mean", 1, n, mean) < 0 ||
            attr_num(fid, path, "input_std", 1, n, std) < 0)
            return -1;
        for (int i = 0; i < n; i++) {
            if (!(std[i] > 0.0))
                return qkf_set_error("%s: attribute 'input_std' has a non-positive value "
                                     "at index %d",
                                     path, i);
            m->input_mean[i] = (float)mean[i];
            m->input_std[i] = (float)std[i];
        }
        m->n_norm = n;
    }
    return 0;
}

/* ---- datasets ----------------------------------------------------------------------------- */

static void fmt_shape(char *buf, size_t cap, int ndim, const int64_t *dims)
{
    size_t used = 0;
    used += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && used < cap; i++)
        used +=
            (size_t)snprintf(buf + used, cap - used, "%s%lld", i ? "," : "", (long long)dims[i]);
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Reads one key into dst after checking its type and shape against p. */
static int read_key(hid_t did, const char *path, const qkf_param *p, float *dst)
{
    hid_t tid = H5I_INVALID_HID, sid = H5I_INVALID_HID;
    int rc = -1;
    if ((tid = H5Dget_type(did)) < 0 || (sid = H5Dget_space(did)) < 0) {
        qkf_set_error("%s: cannot open key '%s'", path, p->name);
        goto done;
    }
    H5T_class_t cls = H5Tget_class(tid);
    if (cls != H5T_INTEGER && cls != H5T_FLOAT) {
        qkf_set_error("%s: key '%s' does not hold numbers", path, p->name);
        goto done;
    }
    int rank = 0;
    hsize_t dims[MAX_DIMS];
    H5S_class_t scls = H5Sget_simple_extent_type(sid);
    if (scls == H5S_SIMPLE) {
        rank = H5Sget_simple_extent_ndims(sid);
        if (rank < 0 || rank > MAX_DIMS || H5Sget_simple_extent_dims(sid, dims, NULL) < 0) {
            qkf_set_error("%s: cannot read the shape of key '%s'", path, p->name);
            goto done;
        }
    } else if (scls != H5S_SCALAR) {
        qkf_set_error("%s: key '%s' is empty (null dataspace)", path, p->name);
        goto done;
    }
    int same = rank == p->ndim;
    for (int i = 0; same && i < rank; i++)
        same = dims[i] == (hsize_t)p->shape[i];
    if (!same) {
        int64_t have[MAX_DIMS], want[4];
        char hs[256], ws[128];
        for (int i = 0; i < rank; i++)
            have[i] = (int64_t)dims[i];
        for (int i = 0; i < p->ndim; i++)
            want[i] = p->shape[i];
        fmt_shape(hs, sizeof hs, rank, have);
        fmt_shape(ws, sizeof ws, p->ndim, want);
        qkf_set_error("%s: key '%s' has shape %s but the model expects %s", path, p->name, hs, ws);
        goto done;
    }
    if (p->numel > 0 && H5Dread(did, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0) {
        qkf_set_error("%s: cannot read key '%s'", path, p->name);
        goto done;
    }
    for (int64_t i = 0; i < p->numel; i++) {
        if (!isfinite(dst[i])) {
            qkf_set_error("%s: key '%s' has a non-finite value at flat index %lld", path, p->name,
                          (long long)i);
            goto done;
        }
    }
    rc = 0;
done:
    if (sid >= 0)
        H5Sclose(sid);
    if (tid >= 0)
        H5Tclose(tid);
    return rc;
}

int qkf_ckpt_load(const char *path, qkf_model *m)
{
    hid_t fid = H5I_INVALID_HID, oid = H5I_INVALID_HID;
    qkf_model nm;
    int built = 0, rc = -1;
    unsigned char *seen = NULL;
    char *name = NULL;

    memset(&nm, 0, sizeof nm);
    if ((fid = qkf_h5_open_ro(path)) < 0)
        goto done;
    if (read_config(fid, path, &nm) < 0)
        goto done;
    if (qkf_config_validate(&nm.cfg) < 0 || qkf_params_build(&nm.cfg, &nm.params) < 0) {
        prefix_error(path);
        goto done;
    }
    built = 1;
    const qkf_params *ps = &nm.params;
    seen = qkf_calloc((size_t)(ps->n > 0 ? ps->n : 1), 1);

    H5G_info_t gi;
    if (H5Gget_info(fid, &gi) < 0) {
        qkf_set_error("%s: cannot list the keys", path);
        goto done;
    }
    for (hsize_t li = 0; li < gi.nlinks; li++) {
        ssize_t len =
            H5Lget_name_by_idx(fid, ".", H5_INDEX_NAME, H5_ITER_INC, li, NULL, 0, H5P_DEFAULT);
        if (len < 0) {
            qkf_set_error("%s: cannot list the keys", path);
            goto done;
        }
        name = qkf_malloc((size_t)len + 1);
        if (H5Lget_name_by_idx(fid, ".", H5_INDEX_NAME, H5_ITER_INC, li, name, (size_t)len + 1,
                               H5P_DEFAULT) < 0) {
            qkf_set_error("%s: cannot list the keys", path);
            goto done;
        }
        if ((oid = H5Oopen(fid, name, H5P_DEFAULT)) < 0) {
            qkf_set_error("%s: cannot open key '%s'", path, name);
            goto done;
        }
        if (H5Iget_type(oid) == H5I_DATASET && !ends_with(name, "num_batches_tracked")) {
            int k = qkf_params_find(ps, name);
            if (k < 0) {
                qkf_set_error("%s: unexpected key '%s' (not in a %s model)", path, name,
                              qkf_variant_name(nm.cfg.variant));
                goto done;
            }
            if (read_key(oid, path, &ps->p[k], ps->data + ps->p[k].offset) < 0)
                goto done;
            seen[k] = 1;
        }
        H5Oclose(oid);
        oid = H5I_INVALID_HID;
        qkf_free(name);
        name = NULL;
    }
    for (int k = 0; k < ps->n; k++) {
        if (!seen[k]) {
            qkf_set_error("%s: missing key '%s'", path, ps->p[k].name);
            goto done;
        }
    }
    *m = nm;
    built = 0;
    rc = 0;
done:
    qkf_free(name);
    qkf_free(seen);
    if (built)
        qkf_params_free(&nm.params);
    if (oid >= 0)
        H5Oclose(oid);
    if (fid >= 0)
        H5Fclose(fid);
    return rc;
}

int qkf_ckpt_write(qkf_h5out *o, const char *path, const qkf_model *m)
{
    const qkf_config *c = &m->cfg;
    const qkf_params *ps = &m->params;

    /* Never write a file the loader would refuse. */
    if (qkf_config_validate(c) < 0)
        return prefix_error(path);
    if (m->n_norm < 0 || m->n_norm > 4 || (m->n_norm > 0 && m->n_norm != c->in_channels))
        return qkf_set_error("%s: input normalisation has %d channels but in_channels is %d", path,
                             m->n_norm, c->in_channels);
    const char *variant = qkf_variant_name(c->variant);

    const struct {
        const char *key;
        int val;
    } ints[] = {
        {"img_size", c->img_size},
        {"in_channels", c->in_channels},
        {"num_classes", c->num_classes},
        {"embed_dims", c->embed_dims},
        {"num_heads", c->num_heads},
        {"depths", c->depths},
        {"T", c->T},
    };
    if (qkf_h5out_attr_str(o, NULL, "variant", variant) < 0)
        goto fail;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (qkf_h5out_attr_i64(o, NULL, ints[i].key, ints[i].val) < 0)
            goto fail;
    if (qkf_h5out_attr_f64(o, NULL, "mlp_ratio", (double)c->mlp_ratio) < 0 ||
        qkf_h5out_attr_str(o, NULL, "qk_attn", c->qk_attn == QKF_QK_CHANNEL ? "channel" : "token") <
            0 ||
        qkf_h5out_attr_i64(o, NULL, "qkf_format", QKF_CKPT_FORMAT) < 0 ||
        qkf_h5out_attr_str(o, NULL, "qkf_version", QKF_VERSION) < 0)
        goto fail;
    if (m->n_norm > 0) {
        double mean[4], std[4];
        for (int i = 0; i < m->n_norm; i++) {
            mean[i] = (double)m->input_mean[i];
            std[i] = (double)m->input_std[i];
        }
        if (qkf_h5out_attr_f64v(o, NULL, "input_mean", m->n_norm, mean) < 0 ||
            qkf_h5out_attr_f64v(o, NULL, "input_std", m->n_norm, std) < 0)
            goto fail;
    }
    for (int k = 0; k < ps->n; k++)
        if (qkf_ckpt_write_param(o, "", &ps->p[k], ps->data + ps->p[k].offset) < 0)
            goto fail;
    return 0;
fail:
    return -1;
}

int qkf_ckpt_write_param(qkf_h5out *o, const char *prefix, const qkf_param *p, const float *data)
{
    int64_t shape[4];
    for (int i = 0; i < p->ndim; i++)
        shape[i] = p->shape[i];
    char name[QKF_MAX_NAME + 16];
    snprintf(name, sizeof name, "%s%s", prefix, p->name);
    return qkf_h5out_f32(o, name, p->ndim, shape, data);
}

int qkf_ckpt_save(const char *path, const qkf_model *m)
{
    qkf_h5out *o = qkf_h5out_open(path);
    if (!o)
        return -1;
    if (qkf_ckpt_write(o, path, m) < 0) {
        qkf_h5out_abort(o);
        return -1;
    }
    return qkf_h5out_commit(o);
}
