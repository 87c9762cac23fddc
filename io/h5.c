/* HDF5 readers for single datasets, and the atomic writer behind every output file.
 *
 * Readers open the file read-only, let HDF5 convert the stored numbers to the requested native
 * type, and close every handle before returning. The writer (qkf_h5out) builds
 * "<path>.tmp.<pid>"; qkf_h5out_commit closes it, syncs it and renames it over <path>, so a
 * reader never sees a partial file. Datasets of 4096 or more elements are chunked and stored
 * with shuffle + gzip level 4; smaller ones are contiguous. Every function keeps its HDF5
 * handles in locals initialised to H5I_INVALID_HID and closes them at one cleanup label. */
#define _POSIX_C_SOURCE 200809L
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "../kernels/base.h"
#include "h5_internal.h"

#define MAX_RANK 5
#define COMPRESS_MIN 4096   /* elements: below this, chunk overhead outweighs any gain */
#define CHUNK_TARGET 262144 /* elements per chunk (1 MiB of float32) */
#define ROWS_OPEN 8         /* datasets written by rows that one writer holds open */

struct qkf_h5out {
    hid_t fid;
    char *path; /* final name, used in every message */
    char *tmp;  /* "<path>.tmp.<pid>" */
    int failed; /* a write failed: commit refuses and repeats this message */
    char err[512];
    /* datasets written a block of rows at a time, held open (with a chunk cache that holds
     * their partly written chunks) until commit or abort */
    hid_t rows_did[ROWS_OPEN];
    char *rows_name[ROWS_OPEN];
    int n_rows;
};

void qkf_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

/* ---- reading ------------------------------------------------------------------------- */

hid_t qkf_h5_open_ro(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        qkf_set_error("%s: cannot open (%s)", path, strerror(errno));
        return H5I_INVALID_HID;
    }
    close(fd);
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (fid < 0)
        qkf_set_error("%s: not an HDF5 file or unreadable", path);
    return fid;
}

/* Each prefix of name is checked first, because H5Lexists fails rather than answers when an
 * intermediate group is missing. */
int qkf_h5_probe(hid_t loc, const char *name)
{
    size_t len = strlen(name);
    if (len == 0)
        return 0;
    char *buf = qkf_malloc(len + 1);
    memcpy(buf, name, len + 1);
    int found = 1;
    for (size_t i = 1; i <= len && found; i++) {
        if (i < len && buf[i] != '/')
            continue;
        char save = buf[i];
        buf[i] = 0;
        if (H5Lexists(loc, buf, H5P_DEFAULT) <= 0)
            found = 0;
        buf[i] = save;
    }
    qkf_free(buf);
    if (!found)
        return 0;
    hid_t oid = H5Oopen(loc, name, H5P_DEFAULT);
    if (oid < 0)
        return 0; /* a dangling soft or external link */
    int kind = H5Iget_type(oid) == H5I_DATASET ? 1 : 2;
    H5Oclose(oid);
    return kind;
}

int qkf_h5_open_dataset(hid_t fid, const char *path, const char *name, hid_t dapl, hid_t *did,
                        hid_t *tid, hid_t *sid)
{
    *did = *tid = *sid = H5I_INVALID_HID;
    int kind = qkf_h5_probe(fid, name);
    if (kind == 0)
        return qkf_set_error("%s: no dataset '%s'", path, name);
    if (kind != 1)
        return qkf_set_error("%s: '%s' is a group, not a dataset", path, name);
    if ((*did = H5Dopen2(fid, name, dapl)) >= 0 && (*tid = H5Dget_type(*did)) >= 0 &&
        (*sid = H5Dget_space(*did)) >= 0)
        return 0;
    if (*tid >= 0)
        H5Tclose(*tid);
    if (*did >= 0)
        H5Dclose(*did);
    *did = *tid = H5I_INVALID_HID;
    return qkf_set_error("%s: cannot open dataset '%s'", path, name);
}

/* One hyperslab transfer: reads into rbuf, or writes wbuf when rbuf is NULL. */
static int slab(hid_t ds, hid_t mtype, int rank, const hsize_t *start, const hsize_t *count,
                void *rbuf, const void *wbuf)
{
    hid_t fs = H5Dget_space(ds), ms = H5Screate_simple(rank, count, NULL);
    int rc = fs < 0 || ms < 0 ||
                     H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
                     (rbuf ? H5Dread(ds, mtype, ms, fs, H5P_DEFAULT, rbuf)
                           : H5Dwrite(ds, mtype, ms, fs, H5P_DEFAULT, wbuf)) < 0
                 ? -1
                 : 0;
    if (ms >= 0)
        H5Sclose(ms);
    if (fs >= 0)
        H5Sclose(fs);
    return rc;
}

int qkf_h5_read_slab(hid_t ds, hid_t mtype, int rank, const hsize_t *start, const hsize_t *count,
                     void *buf)
{
    return slab(ds, mtype, rank, start, count, buf, NULL);
}

int qkf_h5_write_slab(hid_t ds, hid_t mtype, int rank, const hsize_t *start, const hsize_t *count,
                      const void *buf)
{
    return slab(ds, mtype, rank, start, count, NULL, buf);
}

#define STORAGE_RATIO 1032.0 /* deflate's largest expansion: a 258-byte match in two bits */

int qkf_h5_check_storage(hid_t did, hid_t tid, const char *path, const char *name, int rank,
                         const hsize_t *dims)
{
    double bytes = (double)H5Tget_size(tid);
    char shape[160];
    size_t used = (size_t)snprintf(shape, sizeof shape, "[");
    for (int i = 0; i < rank; i++) {
        bytes *= (double)dims[i];
        if (used < sizeof shape)
            used += (size_t)snprintf(shape + used, sizeof shape - used, "%s%llu", i ? "," : "",
                                     (unsigned long long)dims[i]);
    }
    if (used < sizeof shape)
        snprintf(shape + used, sizeof shape - used, "]");
    if (bytes <= (double)(1 << 20))
        return 0;
    hsize_t stored = H5Dget_storage_size(did);
    if (bytes <= STORAGE_RATIO * (double)stored)
        return 0;
    return qkf_set_error("%s: dataset '%s' of shape %s describes %.4g bytes, but the file stores "
                         "%llu bytes of it (chunks never written, or not the data it claims)",
                         path, name, shape, bytes, (unsigned long long)stored);
}

int qkf_h5_check_storage_ds(hid_t did, const char *path, const char *name)
{
    hid_t tid = H5Dget_type(did), sid = H5Dget_space(did);
    int rank = sid >= 0 ? H5Sget_simple_extent_ndims(sid) : -1, rc = 0;
    hsize_t dims[H5S_MAX_RANK];
    if (tid < 0 || rank < 0 || rank > H5S_MAX_RANK ||
        (rank > 0 && H5Sget_simple_extent_dims(sid, dims, NULL) < 0))
        rc = qkf_set_error("%s: cannot read the shape of dataset '%s'", path, name);
    else
        rc = qkf_h5_check_storage(did, tid, path, name, rank, dims);
    if (sid >= 0)
        H5Sclose(sid);
    if (tid >= 0)
        H5Tclose(tid);
    return rc;
}

static const char *class_name(H5T_class_t c)
{
    switch (c) {
    case H5T_INTEGER: return "integer";
    case H5T_FLOAT: return "float";
    case H5T_STRING: return "string";
    case H5T_COMPOUND: return "compound";
    case H5T_ENUM: return "enum";
    case H5T_ARRAY: return "array";
    case H5T_VLEN: return "variable-length";
    case H5T_OPAQUE: return "opaque";
    case H5T_BITFIELD: return "bitfield";
    case H5T_REFERENCE: return "reference";
    default: return "unknown";
    }
}

/* Reads dataset `name` of any integer or float type, converted to memtype (esize bytes each),
 * into a qkf_malloc'ed buffer. Scalar datasets give ndim 0 and one element. */
static int read_numeric(const char *path, const char *name, hid_t memtype, size_t esize,
                        void **data, int *ndim, int64_t shape[MAX_RANK])
{
    hid_t fid = H5I_INVALID_HID, did = H5I_INVALID_HID, sid = H5I_INVALID_HID;
    hid_t tid = H5I_INVALID_HID;
    void *buf = NULL;
    int rc = -1;

    *data = NULL;
    *ndim = 0;
    for (int i = 0; i < MAX_RANK; i++)
        shape[i] = 0;

    if ((fid = qkf_h5_open_ro(path)) < 0)
        goto done;
    if (qkf_h5_open_dataset(fid, path, name, H5P_DEFAULT, &did, &tid, &sid) < 0)
        goto done;
    H5T_class_t cls = H5Tget_class(tid);
    if (cls != H5T_INTEGER && cls != H5T_FLOAT) {
        qkf_set_error("%s: dataset '%s' holds %s values (expected numbers)", path, name,
                      class_name(cls));
        goto done;
    }
    H5S_class_t scls = H5Sget_simple_extent_type(sid);
    int rank = 0;
    hsize_t dims[MAX_RANK] = {0};
    if (scls == H5S_SIMPLE) {
        rank = H5Sget_simple_extent_ndims(sid);
        if (rank < 1 || rank > MAX_RANK) {
            qkf_set_error("%s: dataset '%s' has rank %d (expected 0 to %d)", path, name, rank,
                          MAX_RANK);
            goto done;
        }
        H5Sget_simple_extent_dims(sid, dims, NULL);
    } else if (scls != H5S_SCALAR) {
        qkf_set_error("%s: dataset '%s' is empty (null dataspace)", path, name);
        goto done;
    }
    if (qkf_h5_check_storage(did, tid, path, name, rank, dims))
        goto done;
    size_t numel = 1;
    for (int i = 0; i < rank; i++) {
        if (dims[i] != 0 && numel > SIZE_MAX / esize / dims[i]) {
            qkf_set_error("%s: dataset '%s' is too large to read", path, name);
            goto done;
        }
        numel *= (size_t)dims[i];
    }
    buf = qkf_malloc(numel * esize);
    if (numel > 0 && H5Dread(did, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        qkf_set_error("%s: cannot read dataset '%s'", path, name);
        goto done;
    }
    *ndim = rank;
    for (int i = 0; i < rank; i++)
        shape[i] = (int64_t)dims[i];
    *data = buf;
    buf = NULL;
    rc = 0;
done:
    qkf_free(buf);
    if (sid >= 0)
        H5Sclose(sid);
    if (tid >= 0)
        H5Tclose(tid);
    if (did >= 0)
        H5Dclose(did);
    if (fid >= 0)
        H5Fclose(fid);
    return rc;
}

static int64_t numel_of(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

int qkf_h5_read_f32(const char *path, const char *name, float **data, int *ndim, int64_t shape[5])
{
    void *buf;
    *data = NULL;
    if (read_numeric(path, name, H5T_NATIVE_FLOAT, sizeof(float), &buf, ndim, shape) < 0)
        return -1;
    float *x = buf;
    int64_t n = numel_of(*ndim, shape);
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) {
            const char *what = isnan(x[i]) ? "nan" : x[i] > 0 ? "inf" : "-inf";
            qkf_set_error("%s: dataset '%s' has a non-finite value (%s) at flat index %" PRId64,
                          path, name, what, i);
            qkf_free(x);
            *ndim = 0;
            return -1;
        }
    }
    *data = x;
    return 0;
}

int qkf_h5_read_i64(const char *path, const char *name, int64_t **data, int *ndim, int64_t shape[5])
{
    void *buf;
    *data = NULL;
    if (read_numeric(path, name, H5T_NATIVE_INT64, sizeof(int64_t), &buf, ndim, shape) < 0)
        return -1;
    *data = buf;
    return 0;
}

int qkf_h5_has(const char *path, const char *name)
{
    hid_t fid = qkf_h5_open_ro(path);
    if (fid < 0)
        return -1;
    int kind = qkf_h5_probe(fid, name);
    H5Fclose(fid);
    return kind == 1;
}

/* ---- writing ------------------------------------------------------------------------- */

qkf_h5out *qkf_h5out_open(const char *path)
{
    size_t cap = strlen(path) + 32;
    char *tmp = qkf_malloc(cap);
    snprintf(tmp, cap, "%s.tmp.%ld", path, (long)getpid());
    /* Create the file ourselves first: errno then says why (no such directory, permission). */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) {
        qkf_set_error("%s: cannot create %s (%s)", path, tmp, strerror(errno));
        qkf_free(tmp);
        return NULL;
    }
    close(fd);
    hid_t fid = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (fid < 0) {
        qkf_set_error("%s: cannot create HDF5 file %s", path, tmp);
        unlink(tmp);
        qkf_free(tmp);
        return NULL;
    }
    qkf_h5out *o = qkf_calloc(1, sizeof *o);
    size_t plen = strlen(path) + 1;
    o->path = qkf_malloc(plen);
    memcpy(o->path, path, plen);
    o->tmp = tmp;
    o->fid = fid;
    return o;
}

/* Records a failure on o (the first one is kept for commit) and returns -1. */
static int out_fail(qkf_h5out *o)
{
    if (!o->failed) {
        o->failed = 1;
        snprintf(o->err, sizeof o->err, "%s", qkf_last_error());
    }
    return -1;
}

/* Chunk shape of about CHUNK_TARGET elements: trailing dimensions kept whole, leading ones
 * shrunk first, so a chunk is a contiguous run of rows. */
static void chunk_shape(int ndim, const hsize_t *dims, hsize_t *chunk)
{
    for (int i = 0; i < ndim; i++)
        chunk[i] = dims[i];
    for (int i = 0; i < ndim; i++) {
        hsize_t rest = 1;
        for (int j = i + 1; j < ndim; j++)
            rest *= chunk[j];
        if (chunk[i] * rest <= CHUNK_TARGET)
            break;
        hsize_t c = CHUNK_TARGET / rest;
        chunk[i] = c < 1 ? 1 : c;
    }
}

/* deferred: create the dataset only; its rows come later (write_rows). */
static int write_ds_(qkf_h5out *o, const char *name, int ndim, const int64_t *shape,
                     hid_t memtype, hid_t filetype, const void *data, int deferred)
{
    hid_t sid = H5I_INVALID_HID, lcpl = H5I_INVALID_HID, dcpl = H5I_INVALID_HID;
    hid_t did = H5I_INVALID_HID;
    int rc = -1;

    if (!o)
        return qkf_set_error("dataset '%s': output file was not opened", name ? name : "?");
    if (!name || !*name) {
        qkf_set_error("%s: empty dataset name", o->path);
        goto done;
    }
    if (ndim < 0 || ndim > MAX_RANK) {
        qkf_set_error("%s: dataset '%s' has rank %d (expected 0 to %d)", o->path, name, ndim,
                      MAX_RANK);
        goto done;
    }
    hsize_t dims[MAX_RANK], chunk[MAX_RANK];
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && numel > INT64_MAX / shape[i])) {
            qkf_set_error("%s: dataset '%s' has an invalid shape", o->path, name);
            goto done;
        }
        dims[i] = (hsize_t)shape[i];
        numel *= shape[i];
    }
    if (numel > 0 && !data && !deferred) {
        qkf_set_error("%s: dataset '%s': no data", o->path, name);
        goto done;
    }
    if (qkf_h5_probe(o->fid, name) != 0) {
        qkf_set_error("%s: dataset '%s' already exists", o->path, name);
        goto done;
    }
    sid = ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(ndim, dims, NULL);
    lcpl = H5Pcreate(H5P_LINK_CREATE);
    dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (sid < 0 || lcpl < 0 || dcpl < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0) {
        qkf_set_error("%s: dataset '%s': cannot set up HDF5 properties", o->path, name);
        goto done;
    }
    if (ndim > 0 && numel >= COMPRESS_MIN) {
        chunk_shape(ndim, dims, chunk);
        if (H5Pset_chunk(dcpl, ndim, chunk) < 0 ||
            (H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0 &&
             (H5Pset_shuffle(dcpl) < 0 || H5Pset_deflate(dcpl, 4) < 0))) {
            qkf_set_error("%s: dataset '%s': cannot set up compression", o->path, name);
            goto done;
        }
    }
    did = H5Dcreate2(o->fid, name, filetype, sid, lcpl, dcpl, H5P_DEFAULT);
    if (did < 0) {
        qkf_set_error("%s: cannot create dataset '%s'", o->path, name);
        goto done;
    }
    if (!deferred && numel > 0 &&
        H5Dwrite(did, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) {
        qkf_set_error("%s: cannot write dataset '%s'", o->path, name);
        goto done;
    }
    rc = 0;
done:
    if (did >= 0)
        H5Dclose(did);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (lcpl >= 0)
        H5Pclose(lcpl);
    if (sid >= 0)
        H5Sclose(sid);
    return rc < 0 ? out_fail(o) : 0;
}

static int write_ds(qkf_h5out *o, const char *name, int ndim, const int64_t *shape, hid_t memtype,
                    hid_t filetype, const void *data)
{
    return write_ds_(o, name, ndim, shape, memtype, filetype, data, 0);
}

/* Rows [r0, r0 + n) of a dataset made by write_ds_(deferred), from data (whole rows). */
static int write_rows(qkf_h5out *o, const char *name, hid_t memtype, int64_t r0, int64_t n,
                      const void *data)
{
    if (!o)
        return qkf_set_error("dataset '%s': output file was not opened", name ? name : "?");
    if (o->failed)
        return qkf_set_error("%s", o->err);
    hid_t did = H5I_INVALID_HID;
    for (int i = 0; i < o->n_rows && did < 0; i++)
        if (!strcmp(o->rows_name[i], name))
            did = o->rows_did[i];
    if (did < 0 && o->n_rows < ROWS_OPEN && qkf_h5_probe(o->fid, name) == 1) {
        hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
        /* two chunks (write_ds_'s chunks are about CHUNK_TARGET elements): a chunk is
         * compressed once, when it is complete or at the close */
        H5Pset_chunk_cache(dapl, 521, (size_t)CHUNK_TARGET * 8 * 2, 1.0);
        did = H5Dopen2(o->fid, name, dapl);
        H5Pclose(dapl);
        if (did >= 0) {
            size_t ln = strlen(name) + 1;
            o->rows_name[o->n_rows] = qkf_malloc(ln);
            memcpy(o->rows_name[o->n_rows], name, ln);
            o->rows_did[o->n_rows++] = did;
        }
    }
    hid_t sid = did >= 0 ? H5Dget_space(did) : H5I_INVALID_HID;
    int rank = sid >= 0 ? H5Sget_simple_extent_ndims(sid) : -1, rc = -1;
    hsize_t dims[MAX_RANK] = {0};
    if (rank >= 1 && rank <= MAX_RANK)
        H5Sget_simple_extent_dims(sid, dims, NULL);
    if (rank < 1 || rank > MAX_RANK || r0 < 0 || n < 0 || (hsize_t)(r0 + n) > dims[0])
        qkf_set_error("%s: dataset '%s': rows %lld..%lld are not in it", o->path, name,
                      (long long)r0, (long long)(r0 + n));
    else if (n == 0)
        rc = 0;
    else {
        hsize_t start[MAX_RANK] = {(hsize_t)r0}, count[MAX_RANK];
        count[0] = (hsize_t)n;
        for (int i = 1; i < rank; i++)
            count[i] = dims[i];
        rc = qkf_h5_write_slab(did, memtype, rank, start, count, data);
        if (rc)
            qkf_set_error("%s: cannot write rows %lld..%lld of dataset '%s'", o->path,
                          (long long)r0, (long long)(r0 + n), name);
    }
    if (sid >= 0)
        H5Sclose(sid);
    return rc < 0 ? out_fail(o) : 0;
}

int qkf_h5out_f32_create(qkf_h5out *o, const char *name, int ndim, const int64_t *shape)
{
    return write_ds_(o, name, ndim, shape, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, NULL, 1);
}

int qkf_h5out_i64_create(qkf_h5out *o, const char *name, int ndim, const int64_t *shape)
{
    return write_ds_(o, name, ndim, shape, H5T_NATIVE_INT64, H5T_STD_I64LE, NULL, 1);
}

int qkf_h5out_f32_rows(qkf_h5out *o, const char *name, int64_t r0, int64_t n, const float *data)
{
    return write_rows(o, name, H5T_NATIVE_FLOAT, r0, n, data);
}

int qkf_h5out_i64_rows(qkf_h5out *o, const char *name, int64_t r0, int64_t n,
                       const int64_t *data)
{
    return write_rows(o, name, H5T_NATIVE_INT64, r0, n, data);
}

int qkf_h5out_f32(qkf_h5out *o, const char *name, int ndim, const int64_t *shape, const float *data)
{
    return write_ds(o, name, ndim, shape, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, data);
}

int qkf_h5out_f64(qkf_h5out *o, const char *name, int ndim, const int64_t *shape,
                  const double *data)
{
    return write_ds(o, name, ndim, shape, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, data);
}

int qkf_h5out_i64(qkf_h5out *o, const char *name, int ndim, const int64_t *shape,
                  const int64_t *data)
{
    return write_ds(o, name, ndim, shape, H5T_NATIVE_INT64, H5T_STD_I64LE, data);
}

int qkf_h5out_u8(qkf_h5out *o, const char *name, int ndim, const int64_t *shape,
                 const uint8_t *data)
{
    return write_ds(o, name, ndim, shape, H5T_NATIVE_UINT8, H5T_STD_U8LE, data);
}

int qkf_h5out_int(qkf_h5out *o, const char *name, int ndim, const int64_t *shape,
                  const int64_t *data, int bytes)
{
    hid_t ft = bytes == 1 ? H5T_STD_I8LE : bytes == 2 ? H5T_STD_I16LE
             : bytes == 4 ? H5T_STD_I32LE : H5T_STD_I64LE;
    return write_ds(o, name, ndim, shape, H5T_NATIVE_INT64, ft, data);
}

/* Writes attribute `key` (replacing one of the same name) on obj, or on the root when obj is
 * NULL or "/". n < 0 means a scalar dataspace, n >= 1 a one-dimensional array. */
static int write_attr(qkf_h5out *o, const char *obj, const char *key, hid_t filetype, hid_t memtype,
                      int n, const void *val)
{
    hid_t oid = H5I_INVALID_HID, sid = H5I_INVALID_HID, aid = H5I_INVALID_HID;
    int rc = -1;
    int root = !obj || !*obj || strcmp(obj, "/") == 0;
    const char *where = root ? "/" : obj;

    if (!o)
        return qkf_set_error("attribute '%s': output file was not opened", key ? key : "?");
    if (!key || !*key) {
        qkf_set_error("%s: empty attribute name on '%s'", o->path, where);
        goto done;
    }
    if (!root && qkf_h5_probe(o->fid, obj) == 0) {
        qkf_set_error("%s: attribute '%s': no object '%s'", o->path, key, obj);
        goto done;
    }
    if ((oid = H5Oopen(o->fid, where, H5P_DEFAULT)) < 0) {
        qkf_set_error("%s: attribute '%s': cannot open '%s'", o->path, key, where);
        goto done;
    }
    htri_t exists = H5Aexists(oid, key);
    if (exists < 0 || (exists > 0 && H5Adelete(oid, key) < 0)) {
        qkf_set_error("%s: attribute '%s' on '%s': cannot replace", o->path, key, where);
        goto done;
    }
    hsize_t len = (hsize_t)(n < 1 ? 1 : n);
    sid = n < 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &len, NULL);
    if (sid < 0 || (aid = H5Acreate2(oid, key, filetype, sid, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
        H5Awrite(aid, memtype, val) < 0) {
        qkf_set_error("%s: cannot write attribute '%s' on '%s'", o->path, key, where);
        goto done;
    }
    rc = 0;
done:
    if (aid >= 0)
        H5Aclose(aid);
    if (sid >= 0)
        H5Sclose(sid);
    if (oid >= 0)
        H5Oclose(oid);
    return rc < 0 ? out_fail(o) : 0;
}

int qkf_h5out_attr_str(qkf_h5out *o, const char *obj, const char *key, const char *val)
{
    if (!o)
        return qkf_set_error("attribute '%s': output file was not opened", key ? key : "?");
    /* Variable-length UTF-8: h5py returns it as str (fixed-length strings come back as bytes). */
    hid_t tid = H5Tcopy(H5T_C_S1);
    if (tid < 0 || H5Tset_size(tid, H5T_VARIABLE) < 0 || H5Tset_cset(tid, H5T_CSET_UTF8) < 0) {
        if (tid >= 0)
            H5Tclose(tid);
        qkf_set_error("%s: attribute '%s': cannot make a string type", o->path, key ? key : "?");
        return out_fail(o);
    }
    const char *s = val ? val : "";
    int rc = write_attr(o, obj, key, tid, tid, -1, &s);
    H5Tclose(tid);
    return rc;
}

int qkf_h5out_attr_i64(qkf_h5out *o, const char *obj, const char *key, int64_t val)
{
    return write_attr(o, obj, key, H5T_STD_I64LE, H5T_NATIVE_INT64, -1, &val);
}

int qkf_h5out_attr_f64(qkf_h5out *o, const char *obj, const char *key, double val)
{
    return write_attr(o, obj, key, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, -1, &val);
}

int qkf_h5out_attr_f64v(qkf_h5out *o, const char *obj, const char *key, int n, const double *vals)
{
    if (o && (n < 1 || !vals)) {
        qkf_set_error("%s: attribute '%s': an array attribute needs at least one value", o->path,
                      key ? key : "?");
        return out_fail(o);
    }
    return write_attr(o, obj, key, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, n, vals);
}

static void out_free(qkf_h5out *o)
{
    for (int i = 0; i < o->n_rows; i++) {
        H5Dclose(o->rows_did[i]);
        qkf_free(o->rows_name[i]);
    }
    o->n_rows = 0;
    qkf_free(o->path);
    qkf_free(o->tmp);
    qkf_free(o);
}

int qkf_h5out_commit(qkf_h5out *o)
{
    if (!o)
        return qkf_set_error("qkf_h5out_commit: output file was not opened");
    int rc = 0;
    if (o->failed) {
        /* The caller may have ignored the failed write; report it again rather than commit. */
        rc = qkf_set_error("%s", o->err);
        goto discard;
    }
    herr_t closed = 0;
    for (int i = 0; i < o->n_rows; i++) {
        closed |= H5Dclose(o->rows_did[i]);
        qkf_free(o->rows_name[i]);
    }
    o->n_rows = 0;
    closed |= H5Fclose(o->fid);
    o->fid = H5I_INVALID_HID;
    if (closed < 0) {
        rc = qkf_set_error("%s: cannot finish writing %s", o->path, o->tmp);
        goto discard;
    }
    /* Make the data durable before the rename makes it visible. */
    int fd = open(o->tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        rc = qkf_set_error("%s: cannot sync %s (%s)", o->path, o->tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        goto discard;
    }
    close(fd);
    if (rename(o->tmp, o->path) != 0) {
        rc =
            qkf_set_error("%s: cannot rename %s into place (%s)", o->path, o->tmp, strerror(errno));
        goto discard;
    }
    out_free(o);
    return 0;
discard:
    if (o->fid >= 0) {
        for (int i = 0; i < o->n_rows; i++) {
            H5Dclose(o->rows_did[i]);
            qkf_free(o->rows_name[i]);
        }
        o->n_rows = 0;
        H5Fclose(o->fid);
    }
    unlink(o->tmp);
    out_free(o);
    return rc;
}

void qkf_h5out_abort(qkf_h5out *o)
{
    if (!o)
        return;
    for (int i = 0; i < o->n_rows; i++) {
        H5Dclose(o->rows_did[i]);
        qkf_free(o->rows_name[i]);
    }
    o->n_rows = 0;
    if (o->fid >= 0)
        H5Fclose(o->fid);
    unlink(o->tmp);
    out_free(o);
}
