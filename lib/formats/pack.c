/* pack.c: the splitting output of pack.h. A new file starts before a record when the current one holds
 * max_rows records or has reached max_bytes (as the container reports its size), so no file is empty
 * except when there are no records at all. */
#include "pack.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "io.h"

int cav_pattern_check(const char *p) {
    int conv = 0;
    for (; *p; p++) {
        if (*p != '%') continue;
        if (p[1] == '%') {
            p++;
            continue;
        }
        p++;
        while (*p && strchr("-+ #0", *p)) p++;
        while (*p >= '0' && *p <= '9') p++;
        if (!*p || !strchr("diux", *p)) return -1;
        conv++;
    }
    return conv > 1 ? -1 : conv;
}

struct cav_pack_out {
    char *pattern;
    int numbered, level, files;
    cav_attrs attrs;
    int64_t max_rows, count;
    uint64_t max_bytes;
    cav_writer *w;
};

static int open_next(cav_pack_out *o, cav_err *err) {
    char path[4096];
    if (o->numbered) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        snprintf(path, sizeof path, o->pattern, o->files);
#pragma GCC diagnostic pop
    } else {
        snprintf(path, sizeof path, "%s", o->pattern);
    }
    o->w = cav_writer_open_level(path, cav_format_for_path(path), &o->attrs, o->level, err);
    if (!o->w) return -1;
    o->files++;
    return 0;
}

cav_pack_out *cav_pack_out_open(const char *pattern, const cav_attrs *attrs, int level, int64_t max_rows,
                                uint64_t max_bytes, cav_err *err) {
    int pc = cav_pattern_check(pattern);
    if (pc < 0)
        return cav_fail(err, CAV_EXIT_USAGE,
                        "output pattern '%s': one integer conversion (%%d, %%03d...) at most", pattern),
               NULL;
    if (pc == 0 && (max_rows || max_bytes))
        return cav_fail(err, CAV_EXIT_USAGE,
                        "output '%s': a row or size limit needs a numbered pattern such as out-%%03d.h5",
                        pattern),
               NULL;
    cav_pack_out *o = calloc(1, sizeof *o);
    if (!o || !(o->pattern = strdup(pattern)) || (attrs && cav_attrs_copy(&o->attrs, attrs))) {
        if (o) cav_attrs_clear(&o->attrs), free(o->pattern);
        free(o);
        return cav_fail(err, CAV_EXIT_INTERNAL, "out of memory"), NULL;
    }
    o->numbered = pc;
    o->level = level;
    o->max_rows = max_rows;
    o->max_bytes = max_bytes;
    if (open_next(o, err)) {
        cav_attrs_clear(&o->attrs);
        free(o->pattern);
        free(o);
        return NULL;
    }
    return o;
}

int cav_pack_out_put(cav_pack_out *o, const cav_record *rec, cav_err *err) {
    int64_t n = cav_writer_count(o->w);
    if (n > 0 &&
        ((o->max_rows && n >= o->max_rows) || (o->max_bytes && cav_writer_bytes(o->w) >= o->max_bytes))) {
        cav_writer *w = o->w;
        o->w = NULL;
        if (cav_writer_close(w, err) || open_next(o, err)) return -1;
    }
    if (cav_writer_put(o->w, rec, err)) return -1;
    o->count++;
    return 0;
}

int cav_pack_out_close(cav_pack_out *o, cav_err *err) {
    int st = o->w ? cav_writer_close(o->w, err) : 0;
    cav_attrs_clear(&o->attrs);
    free(o->pattern);
    free(o);
    return st;
}

void cav_pack_out_abort(cav_pack_out *o) {
    if (!o) return;
    cav_writer_abort(o->w);
    cav_attrs_clear(&o->attrs);
    free(o->pattern);
    free(o);
}

int cav_pack_out_files(const cav_pack_out *o) {
    return o->files;
}
int64_t cav_pack_out_count(const cav_pack_out *o) {
    return o->count;
}
