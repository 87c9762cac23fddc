/* HDF5 helpers shared inside io/ (not part of the public API, which stays free of HDF5 types). */
#ifndef QKF_H5_INTERNAL_H
#define QKF_H5_INTERNAL_H

#include <hdf5.h>

/* Opens path read-only. A missing or unreadable file gets the errno text; anything that exists
 * but is not a complete HDF5 file (text, truncated copy) gets one fixed message. */
hid_t qkf_h5_open_ro(const char *path);

/* What `name` refers to in loc: 1 a dataset, 2 another object (group, named type), 0 nothing
 * (a dangling link included). */
int qkf_h5_probe(hid_t loc, const char *name);

/* Opens dataset `name` of the open file fid (dapl: its access properties, or H5P_DEFAULT) with
 * its type and dataspace, for the caller to close. Otherwise sets the error (no dataset, not a
 * dataset, cannot open; path names the file) and returns -1 with nothing left open. */
int qkf_h5_open_dataset(hid_t fid, const char *path, const char *name, hid_t dapl, hid_t *did,
                        hid_t *tid, hid_t *sid);

/* Reads or writes the hyperslab start/count (rank dimensions) of dataset ds from or to a
 * contiguous buffer of memory type mtype. 0 or -1 (no error message: the caller names it). */
int qkf_h5_read_slab(hid_t ds, hid_t mtype, int rank, const hsize_t *start, const hsize_t *count,
                     void *buf);
int qkf_h5_write_slab(hid_t ds, hid_t mtype, int rank, const hsize_t *start, const hsize_t *count,
                      const void *buf);

/* Whether dataset did (of `rank` dimensions dims, file type tid) can hold what its shape says:
 * HDF5 stores only what was written (chunks never written read as the fill value) and deflate
 * expands at most 1032:1, so a dataset of more than 1 MiB whose stored bytes would have to
 * expand further (2^40 samples in a few kilobytes) is refused, naming it, before anything its
 * size is allocated or read. 0, or -1 with the error set. */
int qkf_h5_check_storage(hid_t did, hid_t tid, const char *path, const char *name, int rank,
                         const hsize_t *dims);
/* The same for an open dataset (its type and shape read from it). */
int qkf_h5_check_storage_ds(hid_t did, const char *path, const char *name);

#endif
