/* record.h: the in-memory clip record that tools pass along — an id, named typed shaped tensors and string
 * attributes. The error value every fallible libcav call fills is err.h's; the clip schema (field names,
 * typed accessors) is clip.h; the two containers that carry records (record stream, HDF5 shard) are behind
 * io.h. */
#ifndef CAV_RECORD_H
#define CAV_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Element types. The numeric values are part of the stream format (cav-stream(5)): never renumber. */
typedef enum {
    CAV_U8 = 1,
    CAV_I16 = 2,
    CAV_I32 = 3,
    CAV_I64 = 4,
    CAV_F16 = 5, /* IEEE half, stored as uint16 bits */
    CAV_F32 = 6,
    CAV_F64 = 7,
} cav_dtype;

size_t cav_dtype_size(cav_dtype t);      /* 0 for an unknown type */
const char *cav_dtype_name(cav_dtype t); /* "u8", "i16", ... or NULL */
int cav_dtype_parse(const char *name);   /* inverse of cav_dtype_name; -1 if unknown */

#define CAV_MAX_NDIM 8
#define CAV_MAX_NAME 255 /* tensor names, attribute keys and ids, in bytes */

typedef struct {
    char *name;
    cav_dtype dtype;
    int ndim; /* 0 is a scalar (one element) */
    int64_t shape[CAV_MAX_NDIM];
    size_t nbytes; /* element count x element size */
    void *data;    /* owned by the record */
} cav_tensor;

typedef struct {
    char *key, *value;
} cav_attr;

typedef struct {
    int n, cap;
    cav_attr *v;
} cav_attrs;

typedef struct {
    char *id;
    int ntensors, cap;
    cav_tensor *tensors;
    cav_attrs attrs;
} cav_record;

/* Element count of a shape, or -1 when a dimension is negative or the product (times elem_size) would
 * exceed limit bytes; the guard that keeps hostile headers from turning into huge allocations. */
int64_t cav_shape_count(int ndim, const int64_t *shape, size_t elem_size, uint64_t limit);

void cav_record_init(cav_record *r);
void cav_record_clear(cav_record *r); /* frees everything, leaves an empty record */
int cav_record_set_id(cav_record *r, const char *id);
/* Adds (or replaces) a zero-filled tensor; returns it, or NULL on a bad shape/name or out of memory. */
cav_tensor *cav_record_add(cav_record *r, const char *name, cav_dtype t, int ndim, const int64_t *shape);
/* As cav_record_add, then copies nbytes of data in. */
cav_tensor *cav_record_put(cav_record *r, const char *name, cav_dtype t, int ndim, const int64_t *shape,
                           const void *data);
cav_tensor *cav_record_find(const cav_record *r, const char *name);
int cav_record_remove(cav_record *r, const char *name);      /* 1 removed, 0 absent */
int cav_record_copy(cav_record *dst, const cav_record *src); /* deep copy; 0 ok, -1 out of memory */
/* 1 when ids, tensors (names, types, shapes, bytes, in any order) and attributes are equal. */
int cav_record_equal(const cav_record *a, const cav_record *b);

void cav_attrs_init(cav_attrs *a);
void cav_attrs_clear(cav_attrs *a);
int cav_attrs_set(cav_attrs *a, const char *key, const char *value); /* 0 ok, -1 out of memory */
const char *cav_attrs_get(const cav_attrs *a, const char *key);      /* NULL if absent */
int cav_attrs_copy(cav_attrs *dst, const cav_attrs *src);

/* IEEE half <-> float (round to nearest even). */
uint16_t cav_f32_to_f16(float f);
float cav_f16_to_f32(uint16_t h);

/* The largest record (uncompressed frame payload) a reader accepts before allocating for it: 256 MiB by
 * default, CAV_MAX_RECORD_BYTES in the environment (bytes, K/M/G suffixes) raises or lowers it, up to the
 * format's 16 GiB. A header cannot make a reader spend more than this. */
uint64_t cav_record_limit(void);

/* 1 when s is valid UTF-8 (shortest forms, no surrogates) without control characters (tab and newline
 * allowed when allow_lines); what ids and attribute strings must be. */
int cav_text_ok(const char *s, int allow_lines);

#endif
