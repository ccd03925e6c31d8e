/* shard.h: the HDF5 shard of cav-shard(5), the container for files: one row per clip, tensors in
 * per-sample chunks compressed with the zstd filter (32015), fixed-shape fields as one [N, ...] dataset,
 * variable-shape fields as flat data plus per-row offsets and shapes. Opening validates the schema and the
 * row counts; rows are then read at random, e.g. by the training data loader.
 *
 * Threads: the Debian HDF5 library is not thread-safe, so every function here takes one process-wide
 * mutex around its HDF5 calls. Several threads may share one cav_shard (or use several). Rows of fixed
 * fields stored one per chunk (fbank, frames, patches) are fetched raw under the lock and decompressed
 * outside it, so those decompress in parallel; ragged fields and small fixed fields are decoded by HDF5
 * under the lock. Code outside shard.c that calls HDF5 directly must not run concurrently with these. */
#ifndef CAV_SHARD_H
#define CAV_SHARD_H

#include <stdint.h>

#include "record.h"

#define CAV_SHARD_SCHEMA "cav-shard"
#define CAV_SHARD_VERSION 1

typedef struct cav_shard cav_shard;

cav_shard *cav_shard_open(const char *path, cav_err *err);
void cav_shard_close(cav_shard *s);
const char *cav_shard_path(const cav_shard *s);
int64_t cav_shard_rows(const cav_shard *s);
const cav_attrs *cav_shard_attrs(const cav_shard *s);
const char *cav_shard_id(const cav_shard *s, int64_t row);  /* NULL when row is out of range */
int64_t cav_shard_find(const cav_shard *s, const char *id); /* row, or -1 */
/* A row attribute's value (e.g. sample_rate), NULL when the row does not set it; no file access. */
const char *cav_shard_row_attr(const cav_shard *s, int64_t row, const char *key);

typedef struct {
    const char *name;
    cav_dtype dtype;
    int ragged; /* 0: one [N, shape...] dataset; 1: flat data + per-row offset/ndim/shape */
    int ndim;   /* fixed fields: the row shape */
    int64_t shape[CAV_MAX_NDIM];
    int64_t present; /* rows that hold this field */
} cav_shard_field;
int cav_shard_nfields(const cav_shard *s);
int cav_shard_field_info(const cav_shard *s, int i, cav_shard_field *out); /* 0 ok, -1 out of range */

/* Reads row into rec (cleared first): id, row attributes and every field present in the row. 0 ok, -1
 * error (err names file, row, id and field). */
int cav_shard_read(cav_shard *s, int64_t row, cav_record *rec, cav_err *err);
/* As cav_shard_read, restricted to the n named fields (a field absent from the shard or the row is an
 * error); attributes and id are always read. */
int cav_shard_read_fields(cav_shard *s, int64_t row, const char *const *names, int n, cav_record *rec,
                          cav_err *err);

typedef struct cav_shard_writer cav_shard_writer;
/* Creates path (written as path.tmp.PID and renamed on a successful close, so a crash never leaves a
 * complete-looking shard). attrs: dataset-level attributes (may be NULL). level: zstd level, 0 = 3. */
cav_shard_writer *cav_shard_create(const char *path, const cav_attrs *attrs, int level, cav_err *err);
/* Appends one row. Bad records (missing/duplicated id, bad names, a field whose dtype changes) fail with
 * CAV_EXIT_INPUT and leave the writer usable; I/O failures are final. */
int cav_shard_append(cav_shard_writer *w, const cav_record *rec, cav_err *err);
/* Bytes in the file so far as HDF5 reports them (rows still buffered or cached are not counted yet). */
uint64_t cav_shard_writer_bytes(cav_shard_writer *w);
int cav_shard_writer_close(cav_shard_writer *w, cav_err *err); /* 0 ok; frees w either way */
void cav_shard_writer_abort(cav_shard_writer *w);              /* removes the temporary file */

#endif
