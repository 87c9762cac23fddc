/* Partial HDF5 reads (h5_part.h). Each call opens the file read-only, selects the wanted rows as
 * a union of hyperslabs (one block per run of consecutive indices, at most RUNS blocks per
 * H5Dread, since HDF5 combines long unions slowly), reads them into a contiguous memory space
 * and closes every handle at one cleanup label. */
#define _POSIX_C_SOURCE 200809L
#include "h5_part.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

#include <hdf5.h>

#include "../kernels/base.h"
#include "h5_internal.h"

/* qkf infer and qkf sim read their input a batch at a time while a trace's writer thread
 * writes its file: HDF5 must serialise the two (Debian's libhdf5-dev is built thread-safe). */
#ifndef H5_HAVE_THREADSAFE
#error "qkf needs a thread-safe HDF5 (--enable-threadsafe; Debian's libhdf5-dev is)"
#endif

#define MAX_RANK 5
#define RUNS 256

/* Opens dataset `name` of an open file and checks it holds numbers of rank 1..5. */
static hid_t open_numeric(hid_t fid, const char *path, const char *name, int *ndim,
                          hsize_t dims[MAX_RANK])
{
    hid_t did, tid, sid;
    /* a chunk cache that holds the chunks one read of scattered rows touches (HDF5's default
     * of 1 MiB would decompress a chunk again for every read that comes back to it) */
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    H5Pset_chunk_cache(dapl, 12421, (size_t)32 << 20, 1.0);
    int rc = qkf_h5_open_dataset(fid, path, name, dapl, &did, &tid, &sid);
    H5Pclose(dapl);
    if (rc < 0)
        return H5I_INVALID_HID;
    H5T_class_t cls = H5Tget_class(tid);
    if (cls != H5T_INTEGER && cls != H5T_FLOAT) {
        qkf_set_error("%s: dataset '%s' does not hold numbers", path, name);
        goto fail;
    }
    int r = H5Sget_simple_extent_type(sid) == H5S_SIMPLE ? H5Sget_simple_extent_ndims(sid) : 0;
    if (r < 1 || r > MAX_RANK) {
        qkf_set_error("%s: dataset '%s' has rank %d (expected 1 to %d)", path, name, r, MAX_RANK);
        goto fail;
    }
    H5Sget_simple_extent_dims(sid, dims, NULL);
    if (qkf_h5_check_storage(did, tid, path, name, r, dims))
        goto fail;
    *ndim = r;
    H5Tclose(tid);
    H5Sclose(sid);
    return did;
fail:
    H5Sclose(sid);
    H5Tclose(tid);
    H5Dclose(did);
    return H5I_INVALID_HID;
}

int qkf_h5_shape(const char *path, const char *name, int *ndim, int64_t shape[5])
{
    hid_t fid = qkf_h5_open_ro(path);
    if (fid < 0)
        return -1;
    hsize_t dims[MAX_RANK] = {0};
    hid_t did = open_numeric(fid, path, name, ndim, dims);
    H5Fclose(fid);
    if (did < 0)
        return -1;
    H5Dclose(did);
    for (int i = 0; i < MAX_RANK; i++)
        shape[i] = i < *ndim ? (int64_t)dims[i] : 0;
    return 0;
}

static int read_rows(const char *path, const char *name, hid_t memtype, size_t esize,
                     const int64_t *index, int64_t k, void *out)
{
    hid_t fid = H5I_INVALID_HID, did = H5I_INVALID_HID, fs = H5I_INVALID_HID;
    hid_t ms = H5I_INVALID_HID;
    int rc = -1, ndim = 0;
    hsize_t dims[MAX_RANK] = {0};
    if ((fid = qkf_h5_open_ro(path)) < 0)
        goto done;
    if ((did = open_numeric(fid, path, name, &ndim, dims)) < 0)
        goto done;
    if ((fs = H5Dget_space(did)) < 0) {
        qkf_set_error("%s: cannot read dataset '%s'", path, name);
        goto done;
    }
    hsize_t row = 1;
    for (int i = 1; i < ndim; i++)
        row *= dims[i];
    for (int64_t j = 0; j < k; j++)
        if (index[j] < 0 || (hsize_t)index[j] >= dims[0] || (j && index[j] <= index[j - 1])) {
            qkf_set_error("%s: dataset '%s': row %lld is not in 0..%llu (or not ascending)",
                          path, name, (long long)index[j], (unsigned long long)dims[0] - 1);
            goto done;
        }
    char *dst = out;
    int64_t j = 0;
    while (j < k) {
        /* up to RUNS runs of consecutive rows in one selection */
        H5Sselect_none(fs);
        hsize_t rows = 0;
        for (int r = 0; r < RUNS && j < k; r++) {
            int64_t e = j + 1;
            while (e < k && index[e] == index[e - 1] + 1)
                e++;
            hsize_t start[MAX_RANK] = {0}, count[MAX_RANK];
            start[0] = (hsize_t)index[j];
            count[0] = (hsize_t)(e - j);
            for (int i = 1; i < ndim; i++)
                count[i] = dims[i];
            if (H5Sselect_hyperslab(fs, r ? H5S_SELECT_OR : H5S_SELECT_SET, start, NULL, count,
                                    NULL) < 0) {
                qkf_set_error("%s: cannot select rows of dataset '%s'", path, name);
                goto done;
            }
            rows += (hsize_t)(e - j);
            j = e;
        }
        hsize_t mdim = rows * row;
        if ((ms = H5Screate_simple(1, &mdim, NULL)) < 0 ||
            H5Dread(did, memtype, ms, fs, H5P_DEFAULT, dst) < 0) {
            qkf_set_error("%s: cannot read dataset '%s'", path, name);
            goto done;
        }
        H5Sclose(ms);
        ms = H5I_INVALID_HID;
        dst += (size_t)mdim * esize;
    }
    rc = 0;
done:
    if (ms >= 0)
        H5Sclose(ms);
    if (fs >= 0)
        H5Sclose(fs);
    if (did >= 0)
        H5Dclose(did);
    if (fid >= 0)
        H5Fclose(fid);
    return rc;
}

int qkf_h5_read_rows_f32(const char *path, const char *name, const int64_t *index, int64_t k,
                         float *out)
{
    int ndim;
    int64_t shape[MAX_RANK];
    if (qkf_h5_shape(path, name, &ndim, shape) ||
        read_rows(path, name, H5T_NATIVE_FLOAT, sizeof(float), index, k, out))
        return -1;
    int64_t row = 1;
    for (int i = 1; i < ndim; i++)
        row *= shape[i];
    for (int64_t j = 0; j < k; j++)
        for (int64_t e = 0; e < row; e++) {
            float v = out[j * row + e];
            if (!isfinite(v))
                return qkf_set_error("%s: dataset '%s' has a non-finite value (%s) at flat index "
                                     "%" PRId64,
                                     path, name, isnan(v) ? "nan" : v > 0 ? "inf" : "-inf",
                                     index[j] * row + e);
        }
    return 0;
}

int qkf_h5_read_rows_i64(const char *path, const char *name, const int64_t *index, int64_t k,
                         int64_t *out)
{
    return read_rows(path, name, H5T_NATIVE_INT64, sizeof(int64_t), index, k, out);
}

/* ---- a dataset read a block of rows at a time ---------------------------------------------- */

struct qkf_h5_rows {
    hid_t fid, did;
    int ndim;
    hsize_t dims[MAX_RANK];
    int64_t row; /* elements per row */
    char *path, *name;
};

qkf_h5_rows *qkf_h5_rows_open(const char *path, const char *name, int *ndim, int64_t shape[5])
{
    hid_t fid = qkf_h5_open_ro(path);
    if (fid < 0)
        return NULL;
    qkf_h5_rows *r = qkf_calloc(1, sizeof *r);
    r->fid = fid;
    r->did = open_numeric(fid, path, name, &r->ndim, r->dims);
    if (r->did < 0) {
        H5Fclose(fid);
        qkf_free(r);
        return NULL;
    }
    r->row = 1;
    for (int i = 1; i < r->ndim; i++)
        r->row *= (int64_t)r->dims[i];
    /* rows are read in order: a chunk cache of two chunks serves every block of a chunk after
     * the first (open_numeric's 32 MiB is for scattered rows) */
    hid_t dcpl = H5Dget_create_plist(r->did);
    hsize_t cd[MAX_RANK];
    if (dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED &&
        H5Pget_chunk(dcpl, MAX_RANK, cd) == r->ndim) {
        hid_t tid = H5Dget_type(r->did), dapl = H5Pcreate(H5P_DATASET_ACCESS);
        double bytes = (double)H5Tget_size(tid);
        for (int i = 0; i < r->ndim; i++)
            bytes *= (double)cd[i];
        size_t cache = bytes * 2 < (double)(1 << 20)   ? (size_t)1 << 20
                       : bytes * 2 > (double)(1 << 30) ? (size_t)1 << 30
                                                       : (size_t)(bytes * 2);
        H5Pset_chunk_cache(dapl, 521, cache, 1.0);
        /* (the cache belongs to the open dataset: it takes effect on the next open) */
        H5Dclose(r->did);
        r->did = H5Dopen2(fid, name, dapl);
        H5Pclose(dapl);
        H5Tclose(tid);
    }
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (r->did < 0) {
        qkf_set_error("%s: cannot open dataset '%s'", path, name);
        H5Fclose(fid);
        qkf_free(r);
        return NULL;
    }
    size_t lp = strlen(path) + 1, ln = strlen(name) + 1;
    r->path = qkf_malloc(lp);
    memcpy(r->path, path, lp);
    r->name = qkf_malloc(ln);
    memcpy(r->name, name, ln);
    *ndim = r->ndim;
    for (int i = 0; i < MAX_RANK; i++)
        shape[i] = i < r->ndim ? (int64_t)r->dims[i] : 0;
    return r;
}

int qkf_h5_rows_read_f32(qkf_h5_rows *r, int64_t r0, int64_t n, float *out)
{
    if (r0 < 0 || n < 0 || (hsize_t)(r0 + n) > r->dims[0])
        return qkf_set_error("%s: dataset '%s': rows %lld..%lld are not in 0..%llu", r->path,
                             r->name, (long long)r0, (long long)(r0 + n),
                             (unsigned long long)r->dims[0]);
    if (n == 0)
        return 0;
    hsize_t start[MAX_RANK] = {(hsize_t)r0}, count[MAX_RANK];
    count[0] = (hsize_t)n;
    for (int i = 1; i < r->ndim; i++)
        count[i] = r->dims[i];
    if (qkf_h5_read_slab(r->did, H5T_NATIVE_FLOAT, r->ndim, start, count, out))
        return qkf_set_error("%s: cannot read rows %lld..%lld of dataset '%s'", r->path,
                             (long long)r0, (long long)(r0 + n), r->name);
    for (int64_t e = 0; e < n * r->row; e++)
        if (!isfinite(out[e]))
            return qkf_set_error("%s: dataset '%s' has a non-finite value (%s) at flat index "
                                 "%" PRId64,
                                 r->path, r->name,
                                 isnan(out[e]) ? "nan" : out[e] > 0 ? "inf" : "-inf",
                                 r0 * r->row + e);
    return 0;
}

void qkf_h5_rows_close(qkf_h5_rows *r)
{
    if (!r)
        return;
    H5Dclose(r->did);
    H5Fclose(r->fid);
    qkf_free(r->path);
    qkf_free(r->name);
    qkf_free(r);
}
