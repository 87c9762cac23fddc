/* Trace statistics: firing rates, silent and saturated neurons, attention-mask densities and the
 * membrane distribution relative to threshold, read back from a trace file (io/trace.h layout).
 * Every HDF5 handle is a local closed before return; one sample of one layer is in memory at a
 * time. */
#define _POSIX_C_SOURCE 200809L
#include "report.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "../kernels/base.h"
#include "../models/qkformer.h"
#include "h5_internal.h"
#include "trace.h"

const double qkf_report_bin_edges[QKF_REPORT_BINS + 1] = {-INFINITY, 0.0, 0.25, 0.5, 0.75,
                                                          0.9,       1.0, 1.5,  2.0, INFINITY};

static const char *const obs_names[QKF_TRACE_NOBS] = {"v", "h", "input", "spikes"};

/* Read-only; a file still open for writing (or left by a killed writer) needs SWMR-read mode. */
static hid_t open_trace(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        qkf_set_error("%s: cannot open (%s)", path, strerror(errno));
        return H5I_INVALID_HID;
    }
    close(fd);
    /* the first attempt may fail by design: keep HDF5 from printing its error stack */
    H5E_auto2_t fn;
    void *data;
    H5Eget_auto2(H5E_DEFAULT, &fn, &data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (fid < 0)
        fid = H5Fopen(path, H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, H5P_DEFAULT);
    H5Eset_auto2(H5E_DEFAULT, fn, data);
    if (fid < 0)
        qkf_set_error("%s: not an HDF5 file or unreadable", path);
    return fid;
}

/* A numeric attribute holding one value, read as mtype: 0 if absent (val untouched), 1 when read,
 * -1 (error set, naming the file, where and the attribute) if it is there but not one number. */
static int attr_num(hid_t obj, const char *path, const char *where, const char *name,
                    hid_t mtype, void *val)
{
    if (H5Aexists(obj, name) <= 0)
        return 0;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    hid_t ft = a >= 0 ? H5Aget_type(a) : H5I_INVALID_HID, sp = a >= 0 ? H5Aget_space(a) : -1;
    H5T_class_t cls = ft >= 0 ? H5Tget_class(ft) : H5T_NO_CLASS;
    int ok = (cls == H5T_INTEGER || cls == H5T_FLOAT) && sp >= 0 &&
             H5Sget_simple_extent_npoints(sp) == 1 && H5Aread(a, mtype, val) >= 0;
    if (sp >= 0)
        H5Sclose(sp);
    if (ft >= 0)
        H5Tclose(ft);
    if (a >= 0)
        H5Aclose(a);
    if (!ok)
        return qkf_set_error("%s: %sattribute '%s' is not one number", path, where, name);
    return 1;
}

/* A string attribute (variable or fixed length) as a qkf_malloc'ed string; "" if absent. */
static char *read_attr_str(hid_t obj, const char *name)
{
    char *out = NULL;
    hid_t a = H5Aexists(obj, name) > 0 ? H5Aopen(obj, name, H5P_DEFAULT) : H5I_INVALID_HID;
    hid_t ft = a >= 0 ? H5Aget_type(a) : H5I_INVALID_HID;
    if (ft >= 0 && H5Tget_class(ft) == H5T_STRING) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        if (H5Tis_variable_str(ft) > 0) {
            char *v = NULL;
            H5Tset_size(mt, H5T_VARIABLE);
            H5Tset_cset(mt, H5Tget_cset(ft));
            if (H5Aread(a, mt, &v) >= 0 && v) {
                size_t n = strlen(v) + 1;
                out = qkf_malloc(n);
                memcpy(out, v, n);
                H5free_memory(v);
            }
        } else {
            size_t n = H5Tget_size(ft);
            H5Tset_size(mt, n + 1);
            out = qkf_calloc(n + 2, 1);
            if (H5Aread(a, mt, out) < 0)
                out[0] = 0;
        }
        H5Tclose(mt);
    }
    if (ft >= 0)
        H5Tclose(ft);
    if (a >= 0)
        H5Aclose(a);
    if (!out)
        out = qkf_calloc(1, 1);
    return out;
}

/* Shape of dataset `name` under loc (rank 1..3), or -1. */
static int ds_shape(hid_t ds, int64_t shape[3])
{
    hid_t sp = H5Dget_space(ds);
    int rank = sp < 0 ? -1 : H5Sget_simple_extent_ndims(sp);
    hsize_t d[3] = {0, 0, 0};
    if (rank < 1 || rank > 3 || H5Sget_simple_extent_dims(sp, d, NULL) < 0)
        rank = -1;
    for (int i = 0; i < 3; i++)
        shape[i] = (int64_t)d[i];
    if (sp >= 0)
        H5Sclose(sp);
    return rank;
}

/* Reads rows [r0, r0 + nr) of dataset ds (rank 2 or 3) as mtype into buf. */
static int read_rows(hid_t ds, hid_t mtype, int rank, const int64_t *shape, int64_t r0, int64_t nr,
                     void *buf)
{
    hsize_t st[3] = {(hsize_t)r0, 0, 0},
            ct[3] = {(hsize_t)nr, (hsize_t)shape[1], (hsize_t)shape[2]};
    return qkf_h5_read_slab(ds, mtype, rank, st, ct, buf);
}

static int spike_stats(const char *path, hid_t og, qkf_report_layer *L)
{
    int rc = -1;
    int64_t shape[3], nsh[3], *cnt = NULL, *neurons = NULL;
    int32_t *row = NULL;
    hid_t ds = H5Dopen2(og, "idx", H5P_DEFAULT);
    if (ds < 0 || ds_shape(ds, shape) != 2) {
        qkf_set_error("%s: %s: no readable spikes/idx", path, L->name);
        goto done;
    }
    char where[200], what[240];
    snprintf(where, sizeof where, "%s: spikes ", L->name);
    snprintf(what, sizeof what, "%s/spikes/idx", L->name);
    if (qkf_h5_check_storage_ds(ds, path, what))
        goto done;
    int64_t steps = 0;
    int got = attr_num(og, path, where, "n_steps", H5T_NATIVE_INT64, &steps);
    if (got < 0)
        goto done;
    if (got == 0 || steps < 1)
        steps = 1;
    L->spike_samples = shape[0];
    L->spike_steps = steps;
    L->spike_neurons = L->n_neurons;
    if (H5Lexists(og, "neurons", H5P_DEFAULT) > 0) {
        hid_t nd = H5Dopen2(og, "neurons", H5P_DEFAULT);
        snprintf(what, sizeof what, "%s/spikes/neurons", L->name);
        if (nd >= 0 && qkf_h5_check_storage_ds(nd, path, what)) {
            H5Dclose(nd);
            goto done;
        }
        if (nd >= 0 && ds_shape(nd, nsh) == 1) {
            neurons = qkf_malloc((size_t)(nsh[0] + 1) * sizeof(int64_t));
            if (H5Dread(nd, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, neurons) >= 0)
                L->spike_neurons = nsh[0];
        }
        if (nd >= 0)
            H5Dclose(nd);
    }
    cnt = qkf_calloc((size_t)L->n_neurons + 1, sizeof(int64_t));
    row = qkf_malloc((size_t)(shape[1] + 1) * sizeof(int32_t));
    for (int64_t s = 0; s < shape[0]; s++) {
        if (shape[1] && read_rows(ds, H5T_NATIVE_INT32, 2, shape, s, 1, row)) {
            qkf_set_error("%s: %s: cannot read spikes of sample %lld", path, L->name, (long long)s);
            goto done;
        }
        for (int64_t j = 0; j < shape[1]; j++)
            if (row[j] >= 0 && row[j] < L->n_neurons) {
                cnt[row[j]]++;
                L->spikes++;
            }
    }
    int64_t full = shape[0] * steps;
    for (int64_t j = 0; j < L->spike_neurons; j++) {
        int64_t n = neurons ? neurons[j] : j;
        if (n < 0 || n >= L->n_neurons)
            continue;
        L->silent += cnt[n] == 0;
        L->saturated += full > 0 && cnt[n] == full;
    }
    double denom = (double)L->spike_neurons * (double)steps * (double)shape[0];
    L->rate = denom > 0 ? (double)L->spikes / denom : 0.0;
    rc = 0;
done:
    qkf_free(cnt);
    qkf_free(row);
    qkf_free(neurons);
    if (ds >= 0)
        H5Dclose(ds);
    return rc;
}

static int membrane_stats(const char *path, hid_t og, qkf_report_layer *L)
{
    int64_t shape[3];
    hid_t ds = H5Dopen2(og, "data", H5P_DEFAULT);
    if (ds < 0 || ds_shape(ds, shape) != 3) {
        if (ds >= 0)
            H5Dclose(ds);
        return qkf_set_error("%s: %s: no readable %s/data", path, L->name, L->membrane);
    }
    char what[240];
    snprintf(what, sizeof what, "%s/%s/data", L->name, L->membrane);
    if (qkf_h5_check_storage_ds(ds, path, what)) {
        H5Dclose(ds);
        return -1;
    }
    int64_t per = shape[1] * shape[2];
    float *buf = qkf_malloc((size_t)(per + 1) * sizeof(float));
    double sum = 0.0, vth = L->vth > 0 ? L->vth : 1.0;
    int rc = 0;
    for (int64_t s = 0; s < shape[0] && !rc; s++) {
        if (per && read_rows(ds, H5T_NATIVE_FLOAT, 3, shape, s, 1, buf)) {
            rc = qkf_set_error("%s: %s: cannot read %s of sample %lld", path, L->name, L->membrane,
                               (long long)s);
            break;
        }
        for (int64_t j = 0; j < per; j++) {
            if (isnan(buf[j])) {
                L->missing++;
                continue;
            }
            double r = (double)buf[j] / vth;
            int k = 0;
            while (k < QKF_REPORT_BINS - 1 && r >= qkf_report_bin_edges[k + 1])
                k++;
            L->hist[k]++;
            L->values++;
            sum += r;
        }
    }
    L->mean_rel = L->values ? sum / (double)L->values : 0.0;
    qkf_free(buf);
    H5Dclose(ds);
    return rc;
}

static herr_t collect(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)g, (void)info;
    qkf_report *r = data;
    qkf_report_layer *nl = qkf_calloc((size_t)r->n_layers + 1, sizeof *nl);
    if (r->n_layers)
        memcpy(nl, r->layers, (size_t)r->n_layers * sizeof *nl);
    qkf_free(r->layers);
    r->layers = nl;
    snprintf(nl[r->n_layers].name, sizeof nl[r->n_layers].name, "%s", name);
    r->n_layers++;
    return 0;
}

static int by_index(const void *a, const void *b)
{
    const qkf_report_layer *x = a, *y = b;
    return (x->lif_index > y->lif_index) - (x->lif_index < y->lif_index);
}

int qkf_report_load(const char *path, qkf_report *r)
{
    memset(r, 0, sizeof *r);
    hid_t fid = open_trace(path);
    if (fid < 0)
        return -1;
    int rc = -1;
    hid_t nodes = H5I_INVALID_HID;
    char *type = read_attr_str(fid, "__type__");
    if (strcmp(type, "NIRGraphData") != 0) {
        qkf_set_error("%s: not a trace (root __type__ is '%s', expected NIRGraphData)", path, type);
        goto done;
    }
    r->version = read_attr_str(fid, "qkf_version");
    r->engine = read_attr_str(fid, "engine");
    r->config = read_attr_str(fid, "model_config");
    r->checkpoint = read_attr_str(fid, "checkpoint");
    r->sha256 = read_attr_str(fid, "checkpoint_sha256");
    r->command = read_attr_str(fid, "command_line");
    if (attr_num(fid, path, "root ", "seed", H5T_NATIVE_UINT64, &r->seed) < 0 ||
        attr_num(fid, path, "root ", "T", H5T_NATIVE_INT64, &r->T) < 0)
        goto done;
    if (H5Lexists(fid, "nodes", H5P_DEFAULT) <= 0 ||
        (nodes = H5Gopen2(fid, "nodes", H5P_DEFAULT)) < 0) {
        qkf_set_error("%s: no /nodes group", path);
        goto done;
    }
    if (H5Literate(nodes, H5_INDEX_NAME, H5_ITER_INC, NULL, collect, r) < 0) {
        qkf_set_error("%s: cannot list /nodes", path);
        goto done;
    }
    for (int i = 0; i < r->n_layers; i++) {
        qkf_report_layer *L = &r->layers[i];
        hid_t ng = H5Gopen2(nodes, L->name, H5P_DEFAULT);
        if (ng < 0) {
            qkf_set_error("%s: cannot open node %s", path, L->name);
            goto done;
        }
        int64_t li = i;
        L->vth = 1.0;
        char where[200];
        snprintf(where, sizeof where, "%s: ", L->name);
        if (attr_num(ng, path, where, "vth", H5T_NATIVE_DOUBLE, &L->vth) < 0 ||
            attr_num(ng, path, where, "lif_index", H5T_NATIVE_INT64, &li) < 0 ||
            attr_num(ng, path, where, "n_neurons", H5T_NATIVE_INT64, &L->n_neurons) < 0) {
            H5Gclose(ng);
            goto done;
        }
        L->lif_index = li < 0 || li > INT_MAX ? INT_MAX : (int)li;
        size_t len = strlen(L->name);
        L->is_qk_mask = len >= 13 && strcmp(L->name + len - 13, "tssa.attn_lif") == 0;
        hid_t obs = H5Lexists(ng, "observables", H5P_DEFAULT) > 0
                        ? H5Gopen2(ng, "observables", H5P_DEFAULT)
                        : H5I_INVALID_HID;
        int err = 0;
        for (int o = 0; o < QKF_TRACE_NOBS && obs >= 0; o++)
            if (H5Lexists(obs, obs_names[o], H5P_DEFAULT) > 0)
                L->obs |= 1u << o;
        if (obs >= 0 && (L->obs & (1u << QKF_TRACE_SPIKES))) {
            hid_t og = H5Gopen2(obs, "spikes", H5P_DEFAULT);
            if (L->n_neurons <= 0 && og >= 0 &&
                attr_num(og, path, where, "n_neurons", H5T_NATIVE_INT64, &L->n_neurons) < 0)
                err = 1;
            /* a count of neurons sized by the attribute: no more than one layer can have */
            if (!err && (L->n_neurons < 0 || L->n_neurons > QKF_MAX_LAYER_VALUES))
                err = qkf_set_error("%s: %s: attribute 'n_neurons' is %lld (0..2^31)", path,
                                    L->name, (long long)L->n_neurons) < 0;
            if (!err)
                err = og < 0 || spike_stats(path, og, L);
            if (og >= 0)
                H5Gclose(og);
        }
        int mo = L->obs & (1u << QKF_TRACE_H)   ? QKF_TRACE_H
                 : L->obs & (1u << QKF_TRACE_V) ? QKF_TRACE_V
                                                : -1;
        if (!err && obs >= 0 && mo >= 0) {
            snprintf(L->membrane, sizeof L->membrane, "%s", obs_names[mo]);
            hid_t og = H5Gopen2(obs, obs_names[mo], H5P_DEFAULT);
            err = og < 0 || membrane_stats(path, og, L);
            if (og >= 0)
                H5Gclose(og);
        }
        if (obs >= 0)
            H5Gclose(obs);
        H5Gclose(ng);
        if (err)
            goto done;
    }
    qsort(r->layers, (size_t)r->n_layers, sizeof *r->layers, by_index);
    rc = 0;
done:
    qkf_free(type);
    if (nodes >= 0)
        H5Gclose(nodes);
    H5Fclose(fid);
    if (rc)
        qkf_report_free(r);
    return rc;
}

void qkf_report_free(qkf_report *r)
{
    qkf_free(r->version);
    qkf_free(r->engine);
    qkf_free(r->config);
    qkf_free(r->checkpoint);
    qkf_free(r->sha256);
    qkf_free(r->command);
    qkf_free(r->layers);
    memset(r, 0, sizeof *r);
}

static int read_all(const char *path, const char *name, hid_t mtype, size_t esize, void **data,
                    int *ndim, int64_t shape[3])
{
    *data = NULL;
    hid_t fid = open_trace(path);
    if (fid < 0)
        return -1;
    int rc = -1;
    hid_t ds = qkf_h5_probe(fid, name) ? H5Dopen2(fid, name, H5P_DEFAULT) : H5I_INVALID_HID;
    int rank = ds >= 0 ? ds_shape(ds, shape) : -1;
    if (rank < 0) {
        qkf_set_error("%s: no dataset '%s' of rank 1 to 3", path, name);
    } else {
        int64_t n = shape[0] * (rank > 1 ? shape[1] : 1) * (rank > 2 ? shape[2] : 1);
        void *buf = qkf_malloc((size_t)(n + 1) * esize);
        if (n > 0 && H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
            qkf_set_error("%s: cannot read '%s'", path, name);
            qkf_free(buf);
        } else {
            *data = buf;
            *ndim = rank;
            rc = 0;
        }
    }
    if (ds >= 0)
        H5Dclose(ds);
    H5Fclose(fid);
    return rc;
}

int qkf_report_read_f32(const char *path, const char *name, float **data, int *ndim,
                        int64_t shape[3])
{
    void *p;
    int rc = read_all(path, name, H5T_NATIVE_FLOAT, sizeof(float), &p, ndim, shape);
    *data = p;
    return rc;
}

int qkf_report_read_i64(const char *path, const char *name, int64_t **data, int *ndim,
                        int64_t shape[3])
{
    void *p;
    int rc = read_all(path, name, H5T_NATIVE_INT64, sizeof(int64_t), &p, ndim, shape);
    *data = p;
    return rc;
}
