/* h5zstd.h: the HDF5 zstd filter, registered id 32015 (the id the HDF Group's registry, hdf5plugin and
 * HDF5Plugin-Zstandard use). A chunk is one plain zstd frame; cd_values[0], when present, is the compression
 * level. The tools register it in-process; build/plugin/libcav_h5zstd.so exposes the same filter to h5dump,
 * h5py and other HDF5 programs through HDF5_PLUGIN_PATH. */
#ifndef CAV_H5ZSTD_H
#define CAV_H5ZSTD_H

#include <hdf5.h>

#define CAV_H5Z_ZSTD 32015
/* Largest chunk the filter will decode: HDF5 chunks are limited to 4 GiB. */
#define CAV_H5Z_ZSTD_MAX ((size_t)UINT32_MAX)

extern const H5Z_class2_t cav_h5z_zstd_class;

/* The filter callback (H5Z_func_t): returns the new data size, or 0 on failure (corrupt, oversized or
 * out of memory), which makes the HDF5 read or write fail cleanly. */
size_t cav_h5z_zstd_filter(unsigned int flags, size_t cd_nelmts, const unsigned int cd_values[],
                           size_t nbytes, size_t *buf_size, void **buf);

/* Registers the filter with the HDF5 library once per process; 0 ok, -1 failure. Thread-safe. */
int cav_h5zstd_register(void);

#endif
