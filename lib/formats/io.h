/* io.h: reading and writing records through the two containers: the record stream (cav-stream(5), for
 * pipes) and the HDF5 shard (cav-shard(5), for files). Readers sniff the format from the first bytes, so
 * every tool reads either; "-" is stdin/stdout. Dataset-level attributes (sample rate, fbank settings, label
 * names, provenance) travel in both containers beside the records. */
#ifndef CAV_IO_H
#define CAV_IO_H

#include "opts.h"
#include "record.h"

typedef enum { CAV_FMT_STREAM = 0, CAV_FMT_SHARD = 1 } cav_format;

/* Shard for names ending in .h5 / .hdf5, stream otherwise ("-" included). */
cav_format cav_format_for_path(const char *path);

typedef struct cav_reader cav_reader;
cav_reader *cav_reader_open(const char *path, cav_err *err);
const char *cav_reader_path(const cav_reader *rd);
const cav_attrs *cav_reader_attrs(const cav_reader *rd);
/* 1: a record was read into rec (cleared first); 0: end of input; -1: error (err names file, record,
 * field). After an error in a shard the reader may continue with the next row; in a stream it cannot. */
int cav_reader_next(cav_reader *rd, cav_record *rec, cav_err *err);
int64_t cav_reader_index(const cav_reader *rd); /* 0-based index of the last record returned */
void cav_reader_close(cav_reader *rd);

typedef struct cav_writer cav_writer;
/* attrs: dataset-level attributes written once (may be NULL). */
cav_writer *cav_writer_open(const char *path, cav_format fmt, const cav_attrs *attrs, cav_err *err);
int cav_writer_put(cav_writer *w, const cav_record *rec, cav_err *err); /* 0 ok, -1 error */
int cav_writer_close(cav_writer *w, cav_err *err); /* flushes; 0 ok, -1 error (the file is then incomplete) */

/* Writers with a compression level, and abandoning a write. */
/* As cav_writer_open, with a zstd level (0 = the default 3; 1..19, negative for the fast levels). */
cav_writer *cav_writer_open_level(const char *path, cav_format fmt, const cav_attrs *attrs, int level,
                                  cav_err *err);
/* Gives up: a shard's temporary file is removed, a stream is left without its end frame (so readers see
 * it as truncated). Frees w. */
void cav_writer_abort(cav_writer *w);
int64_t cav_writer_count(const cav_writer *w); /* records put so far */
uint64_t cav_writer_bytes(cav_writer *w);      /* bytes written so far (shards: as HDF5 reports them) */
cav_format cav_reader_format(const cav_reader *rd);
/* The shard behind a reader of a shard (random access, shard.h), or NULL for a stream. */
struct cav_shard *cav_reader_shard(cav_reader *rd);

/* Adds the standard provenance attributes ("tool", "version", "args") for the running tool, and appends a
 * line "tool version args" to "history" (so the stages that made a file accumulate). 0 ok, -1 no memory. */
int cav_attrs_provenance(cav_attrs *a, int argc, char **argv);

/* The fields of the option-table entries (opts.h) the tools that write records share, to put in braces
 * (more fields may follow): -o/--output over a const char * field at off ('-' = stdout, the default, which
 * text says), and -l/--level N over an int field (the zstd level; the field's zero is the container's
 * default, 3). */
#define CAV_OUTPUT_OPTION(off, argname, text)                                                                \
    .name = "output", .short_name = 'o', .type = CAV_OPTT_STRING, .offset = (off), .def = "-",               \
    .arg = (argname), .help = (text), .flags = CAV_OPTF_NODEFAULT
#define CAV_LEVEL_HELP "zstd level of the output (default 3; 1..19, negative = faster)"
#define CAV_LEVEL_OPTION(off, text)                                                                          \
    .name = "level", .short_name = 'l', .type = CAV_OPTT_INT, .offset = (off), .min = -7, .max = 19,         \
    .arg = "N", .help = (text)
/* The end of --help (after the option lines) of the tools that read and write records. */
#define CAV_RECORD_USAGE_TAIL                                                                                \
    "      --help               print this help and exit\n"                                                  \
    "      --version            print the version and exit\n"                                                \
    "\n"                                                                                                     \
    "Exit status: 0 ok, 1 usage, 2 bad input (message names file, record and field), 3 internal error.\n"

#endif
