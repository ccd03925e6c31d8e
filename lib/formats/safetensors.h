/* safetensors.h: reading and writing safetensors files, the checkpoint and debug-state container shared
 * with PyTorch. Layout: an 8-byte little-endian header length N, N bytes of a JSON object (tensor name ->
 * {"dtype", "shape", "data_offsets": [begin, end)} relative to the data area, plus an optional
 * "__metadata__" object of string values), then the raw little-endian data.
 *
 * The reader maps the file read-only and validates the header strictly before anything is used: header
 * length sane and inside the file, JSON well formed, every entry with exactly the three fields, a known
 * dtype, non-negative integral shape and offsets, shape x element size equal to the byte range, ranges
 * inside the data area, no overlaps and no holes (as the reference library demands). Any violation is
 * cav_err code 2 naming the file and the tensor. */
#ifndef CAV_SAFETENSORS_H
#define CAV_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "record.h"

/* Headers larger than this are refused (the reference library's limit is 100 MB as well). */
#define CAV_ST_MAX_HEADER (100u * 1024u * 1024u)

typedef struct {
    char *name;
    const char *st_dtype; /* safetensors dtype name: "F32", "BF16", ... (static string) */
    cav_dtype dtype;      /* the record dtype, or 0 when the record types have none (BF16, I8, BOOL, ...) */
    size_t elem_size;
    int ndim;
    int64_t shape[CAV_MAX_NDIM];
    size_t numel, nbytes;
    const void *data; /* inside the mapping; may be unaligned: read with memcpy or cav_st_copy_f32 */
} cav_st_tensor;

typedef struct {
    char *path;
    int n;
    cav_st_tensor *t; /* in header order */
    int nmeta;
    char **meta_keys, **meta_vals;
    void *map;
    size_t map_len;
} cav_safetensors;

/* Opens and validates path. 0 ok; -1 with err (code 2 bad file, 3 resources). st is zeroed on failure. */
int cav_st_open(cav_safetensors *st, const char *path, cav_err *err);
void cav_st_close(cav_safetensors *st);
const cav_st_tensor *cav_st_find(const cav_safetensors *st, const char *name);
const char *cav_st_meta(const cav_safetensors *st, const char *key); /* NULL if absent */

/* Converts a float tensor (F32, F16, BF16, F64) to count f32 values at dst; count must equal its numel.
 * -1 with code 2 otherwise. */
int cav_st_copy_f32(const cav_safetensors *st, const cav_st_tensor *t, float *dst, size_t count,
                    cav_err *err);
/* As cav_st_copy_f32 for an integer tensor (I64, I32, I16, I8, U8) into int64 values. */
int cav_st_copy_i64(const cav_safetensors *st, const cav_st_tensor *t, int64_t *dst, size_t count,
                    cav_err *err);

/* One tensor to write: data holds numel x size(dtype) bytes in row-major order. */
typedef struct {
    const char *name;
    cav_dtype dtype;
    int ndim;
    int64_t shape[CAV_MAX_NDIM];
    const void *data;
} cav_st_entry;

/* Writes n entries (in the given order; names must be distinct and not "__metadata__") and nmeta metadata
 * pairs to path, through a temporary file renamed into place. The header is padded with spaces to a
 * multiple of 8 so that every tensor is 8-byte aligned. 0 ok, -1 with err. */
int cav_st_write(const char *path, const cav_st_entry *e, int n, const char *const *meta_keys,
                 const char *const *meta_vals, int nmeta, cav_err *err);

#endif
