/* pack.h: an output that splits records over numbered files: a path pattern with one printf integer
 * conversion ("out-%03d.h5"), a row and/or byte limit per file, the container chosen by the name
 * (io.h: .h5/.hdf5 shard, else stream; "-" is stdout). Used by shard-pack, and by any tool that writes
 * many shards. */
#ifndef CAV_PACK_H
#define CAV_PACK_H

#include <stdint.h>

#include "record.h"

/* 1: pattern has exactly one integer conversion (%d %i %u %x with flags/width), 0: none, -1: malformed
 * (another conversion, or more than one). "%%" is a literal percent sign. */
int cav_pattern_check(const char *pattern);

typedef struct cav_pack_out cav_pack_out;
/* max_rows / max_bytes: 0 = no limit; a limit needs a pattern. The first file is created at once (so no
 * input still gives one, empty, output). */
cav_pack_out *cav_pack_out_open(const char *pattern, const cav_attrs *attrs, int level, int64_t max_rows,
                                uint64_t max_bytes, cav_err *err);
int cav_pack_out_put(cav_pack_out *o, const cav_record *rec, cav_err *err);
int cav_pack_out_close(cav_pack_out *o, cav_err *err); /* frees o either way */
void cav_pack_out_abort(cav_pack_out *o);              /* the current file is abandoned (cav_writer_abort) */
int cav_pack_out_files(const cav_pack_out *o);         /* files written so far */
int64_t cav_pack_out_count(const cav_pack_out *o);     /* records written so far */

#endif
