/* HDF5 helpers shared inside io/ (not part of the public API, which stays free of HDF5 types). */
#ifndef QKF_H5_INTERNAL_H
#define QKF_H5_INTERNAL_H

#include <hdf5.h>

/* Opens path read-only. A missing or unreadable file gets the errno text; anything that exists
 * but is not a complete HDF5 file (text, truncated copy) gets one fixed message. */
hid_t qkf_h5_open_ro(const char *path);

#endif
