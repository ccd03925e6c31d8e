/* h5zstd.c: the zstd filter for HDF5 (id 32015). Compression writes one zstd frame with its content size
 * and a checksum; decompression accepts any single frame (also those written by hdf5plugin, with or
 * without content size) and refuses, by returning 0, anything corrupt or larger than an HDF5 chunk can be. */
#include "h5zstd.h"

#include <pthread.h>
#include <stdlib.h>
#include <zstd.h>

static size_t decompress(size_t nbytes, size_t *buf_size, void **buf) {
    const void *in = *buf;
    size_t fsz = ZSTD_findFrameCompressedSize(in, nbytes);
    if (ZSTD_isError(fsz) || fsz > nbytes) return 0;
    unsigned long long cs = ZSTD_getFrameContentSize(in, nbytes);
    if (cs == ZSTD_CONTENTSIZE_ERROR) return 0;
    if (cs != ZSTD_CONTENTSIZE_UNKNOWN) {
        if (cs > CAV_H5Z_ZSTD_MAX) return 0;
        void *out = malloc(cs ? (size_t)cs : 1);
        if (!out) return 0;
        size_t d = ZSTD_decompress(out, (size_t)cs, in, fsz);
        if (ZSTD_isError(d) || d != cs) return free(out), (size_t)0;
        free(*buf);
        *buf = out;
        *buf_size = cs ? (size_t)cs : 1;
        return (size_t)cs;
    }
    /* No content size in the frame (streaming writers): grow the output as it is produced. */
    ZSTD_DCtx *dc = ZSTD_createDCtx();
    if (!dc) return 0;
    size_t cap = nbytes * 4 > ((size_t)1 << 16) ? nbytes * 4 : ((size_t)1 << 16), n = 0;
    unsigned char *out = NULL;
    ZSTD_inBuffer ib = {in, fsz, 0};
    for (;;) {
        if (!out || n == cap) {
            if (out) cap = cap > CAV_H5Z_ZSTD_MAX / 2 ? CAV_H5Z_ZSTD_MAX : cap * 2;
            if (out && n == cap) goto fail; /* over the chunk limit */
            unsigned char *o = realloc(out, cap);
            if (!o) goto fail;
            out = o;
        }
        ZSTD_outBuffer ob = {out, cap, n};
        size_t z = ZSTD_decompressStream(dc, &ob, &ib);
        n = ob.pos;
        if (ZSTD_isError(z)) goto fail;
        if (z == 0) break;
        if (ib.pos == ib.size && ob.pos < ob.size) goto fail; /* frame ends early */
    }
    ZSTD_freeDCtx(dc);
    free(*buf);
    *buf = out;
    *buf_size = cap;
    return n;
fail:
    ZSTD_freeDCtx(dc);
    free(out);
    return 0;
}

size_t cav_h5z_zstd_filter(unsigned int flags, size_t cd_nelmts, const unsigned int cd_values[],
                           size_t nbytes, size_t *buf_size, void **buf) {
    if (flags & H5Z_FLAG_REVERSE) return decompress(nbytes, buf_size, buf);
    int level = cd_nelmts > 0 ? (int)cd_values[0] : 3; /* negative (fast) levels arrive as unsigned */
    if (level < ZSTD_minCLevel()) level = ZSTD_minCLevel();
    if (level > ZSTD_maxCLevel()) level = ZSTD_maxCLevel();
    size_t bound = ZSTD_compressBound(nbytes);
    void *out = malloc(bound);
    if (!out) return 0;
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    if (!cc) return free(out), (size_t)0;
    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
    size_t c = ZSTD_compress2(cc, out, bound, *buf, nbytes);
    ZSTD_freeCCtx(cc);
    if (ZSTD_isError(c)) return free(out), (size_t)0;
    free(*buf);
    *buf = out;
    *buf_size = bound;
    return c;
}

const H5Z_class2_t cav_h5z_zstd_class = {
    H5Z_CLASS_T_VERS, (H5Z_filter_t)CAV_H5Z_ZSTD, 1, 1, "zstd (cav-mae)", NULL, NULL, cav_h5z_zstd_filter,
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int reg_status = -1;
static void reg(void) {
    /* Registering over a filter loaded earlier from a plugin replaces it: the same code everywhere. */
    reg_status = H5Zregister(&cav_h5z_zstd_class) < 0 ? -1 : 0;
}
int cav_h5zstd_register(void) {
    pthread_once(&once, reg);
    return reg_status;
}
