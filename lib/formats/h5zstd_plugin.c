/* h5zstd_plugin.c: the entry points HDF5's dynamic plugin loader looks for, so that
 * build/plugin/libcav_h5zstd.so provides filter 32015 to h5dump, h5py and any HDF5 program run with
 * HDF5_PLUGIN_PATH pointing at its directory. The filter itself is h5zstd.c. */
#include <H5PLextern.h>

#include "h5zstd.h"

H5PL_type_t H5PLget_plugin_type(void) {
    return H5PL_TYPE_FILTER;
}
const void *H5PLget_plugin_info(void) {
    return &cav_h5z_zstd_class;
}
