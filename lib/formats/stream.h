/* stream.h: the record stream of cav-stream(5), the container for pipes: a magic and version, a header
 * frame with the dataset-level attributes, one zstd-compressed frame per record, an end frame with the
 * record count. Tools normally go through io.h, which sniffs the format; these are the parts io.c uses. */
#ifndef CAV_STREAM_H
#define CAV_STREAM_H

#include <stdio.h>

#include "record.h"

#define CAV_STREAM_MAGIC                                                                                     \
    "\x89"                                                                                                   \
    "CAV\r\n\x1a\n" /* 8 bytes */
#define CAV_STREAM_MAGIC_LEN 8
#define CAV_STREAM_VERSION 1
/* Largest frame (uncompressed payload) a reader accepts or a writer produces: 16 GiB. Memory is still
 * only allocated as the input actually delivers bytes, so a lying header costs nothing. */
#define CAV_STREAM_MAX_FRAME (UINT64_C(1) << 34)

typedef struct cav_stream_reader cav_stream_reader;
/* Reads the magic (unless magic_done: the caller already consumed and checked the 8 bytes), the version
 * and the header frame. name is used in messages. close_file: fclose(f) on close (on failure f stays
 * open: the caller closes it). */
cav_stream_reader *cav_stream_reader_open(FILE *f, const char *name, int magic_done, int close_file,
                                          cav_err *err);
const cav_attrs *cav_stream_reader_attrs(const cav_stream_reader *r);
/* 1 record, 0 end (after a valid end frame), -1 error (the stream cannot be resumed). */
int cav_stream_reader_next(cav_stream_reader *r, cav_record *rec, cav_err *err);
int64_t cav_stream_reader_index(const cav_stream_reader *r);
void cav_stream_reader_close(cav_stream_reader *r);

typedef struct cav_stream_writer cav_stream_writer;
/* Writes magic, version and the header frame. level: zstd level (0 = default 3). */
cav_stream_writer *cav_stream_writer_open(FILE *f, const char *name, const cav_attrs *attrs, int level,
                                          int close_file, cav_err *err);
int cav_stream_writer_put(cav_stream_writer *w, const cav_record *rec, cav_err *err);
/* Writes the end frame and flushes; frees w either way. 0 ok, -1 error. */
int cav_stream_writer_close(cav_stream_writer *w, cav_err *err);
/* Stops without the end frame (readers will report the stream as truncated); frees w. */
void cav_stream_writer_abort(cav_stream_writer *w);

#endif
