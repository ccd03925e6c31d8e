/* io.c: the io.h front: readers that sniff the container from the first bytes (stream magic or HDF5
 * signature), writers for either container, "-" for stdin/stdout, and the provenance attributes. A shard
 * cannot come from stdin (HDF5 needs a seekable file); that is refused with a message saying so. */
#include "io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomicfile.h"
#include "cli.h"
#include "clip.h"
#include "shard.h"
#include "stream.h"

static const unsigned char hdf5_sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

cav_format cav_format_for_path(const char *path) {
    size_t n = strlen(path);
    if ((n >= 3 && strcmp(path + n - 3, ".h5") == 0) || (n >= 5 && strcmp(path + n - 5, ".hdf5") == 0))
        return CAV_FMT_SHARD;
    return CAV_FMT_STREAM;
}

struct cav_reader {
    char *path;
    cav_format fmt;
    cav_stream_reader *st;
    cav_shard *sh;
    int64_t row; /* shard: next row */
};

cav_reader *cav_reader_open(const char *path, cav_err *err) {
    int is_stdin = strcmp(path, "-") == 0;
    const char *name = is_stdin ? "stdin" : path;
    cav_reader *rd = calloc(1, sizeof *rd);
    if (!rd || !(rd->path = strdup(name))) {
        free(rd);
        cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", name);
        return NULL;
    }
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        cav_fail(err, CAV_EXIT_INPUT, "%s: cannot open: %m", path);
        goto fail;
    }
    if (!is_stdin) setvbuf(f, NULL, _IOFBF, 1 << 20);
    cav_input_note_fd(fileno(f)); /* no output may replace it */
    unsigned char m[8];
    size_t k = fread(m, 1, 8, f);
    if (k < 8 && ferror(f)) {
        cav_fail(err, CAV_EXIT_INPUT, "%s: cannot read: %m", name);
        if (!is_stdin) fclose(f);
        goto fail;
    }
    if (k == 8 && memcmp(m, CAV_STREAM_MAGIC, 8) == 0) {
        rd->fmt = CAV_FMT_STREAM;
        rd->st = cav_stream_reader_open(f, name, 1, !is_stdin, err);
        if (!rd->st) {
            if (!is_stdin) fclose(f);
            goto fail;
        }
        return rd;
    }
    if (!is_stdin) fclose(f);
    if (is_stdin) {
        cav_fail(
            err, CAV_EXIT_INPUT, "stdin: %s",
            k == 8 && memcmp(m, hdf5_sig, 8) == 0
                ? "an HDF5 shard cannot be read from a pipe (HDF5 needs a seekable file): give its file name"
            : k == 0 ? "empty input: not a cav record stream"
                     : "magic: not a cav record stream");
        goto fail;
    }
    /* anything else is tried as a shard (HDF5 also allows its signature at 512, 1024, ... bytes) */
    rd->fmt = CAV_FMT_SHARD;
    cav_input_note(path);
    rd->sh = cav_shard_open(path, err);
    if (!rd->sh) {
        if (k < 8 || memcmp(m, hdf5_sig, 8))
            cav_fail(err, CAV_EXIT_INPUT, "%s: %s", path,
                     k == 0 ? "empty file: neither a cav record stream nor a shard"
                            : "magic: neither a cav record stream nor an HDF5 shard");
        goto fail;
    }
    return rd;
fail:
    free(rd->path);
    free(rd);
    return NULL;
}

const char *cav_reader_path(const cav_reader *rd) {
    return rd->path;
}
cav_format cav_reader_format(const cav_reader *rd) {
    return rd->fmt;
}
struct cav_shard *cav_reader_shard(cav_reader *rd) {
    return rd->sh;
}

const cav_attrs *cav_reader_attrs(const cav_reader *rd) {
    return rd->st ? cav_stream_reader_attrs(rd->st) : cav_shard_attrs(rd->sh);
}

int cav_reader_next(cav_reader *rd, cav_record *rec, cav_err *err) {
    if (rd->st) return cav_stream_reader_next(rd->st, rec, err);
    cav_record_clear(rec);
    if (rd->row >= cav_shard_rows(rd->sh)) return 0;
    return cav_shard_read(rd->sh, rd->row++, rec, err) ? -1 : 1;
}

int64_t cav_reader_index(const cav_reader *rd) {
    return rd->st ? cav_stream_reader_index(rd->st) : rd->row - 1;
}

void cav_reader_close(cav_reader *rd) {
    if (!rd) return;
    if (rd->st) cav_stream_reader_close(rd->st);
    if (rd->sh) cav_shard_close(rd->sh);
    free(rd->path);
    free(rd);
}

/* A FILE that counts what goes through it is not worth it: the stream writer's frames are counted here by
 * asking the FILE position where possible, else by the frames' sizes. A stream file is written through
 * atomicfile.h (temporary file, renamed into place by a successful close), as the shard writer does. */
struct cav_writer {
    cav_format fmt;
    cav_stream_writer *st;
    cav_shard_writer *sh;
    cav_afile *out;
    FILE *f;
    int is_stdout;
    int64_t count;
};

cav_writer *cav_writer_open_level(const char *path, cav_format fmt, const cav_attrs *attrs, int level,
                                  cav_err *err) {
    int is_stdout = strcmp(path, "-") == 0;
    cav_writer *w = calloc(1, sizeof *w);
    if (!w) return cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", path), NULL;
    w->fmt = fmt;
    w->is_stdout = is_stdout;
    if (fmt == CAV_FMT_SHARD) {
        if (is_stdout) {
            cav_fail(err, CAV_EXIT_USAGE,
                     "stdout: an HDF5 shard cannot be written to a pipe: give a file name");
            free(w);
            return NULL;
        }
        if (!(w->sh = cav_shard_create(path, attrs, level, err))) return free(w), NULL;
        return w;
    }
    if (!(w->out = cav_afile_open(path, 0, err))) return free(w), NULL;
    if (!(w->f = cav_afile_stream(w->out))) {
        cav_fail(err, CAV_EXIT_INTERNAL, "%s: cannot create: %m", cav_afile_name(w->out));
        cav_afile_abort(w->out);
        free(w);
        return NULL;
    }
    /* the stream writer flushes but does not close: the commit syncs, closes and renames */
    w->st = cav_stream_writer_open(w->f, cav_afile_name(w->out), attrs, level, 0, err);
    if (!w->st) {
        cav_afile_abort(w->out);
        free(w);
        return NULL;
    }
    return w;
}

cav_writer *cav_writer_open(const char *path, cav_format fmt, const cav_attrs *attrs, cav_err *err) {
    return cav_writer_open_level(path, fmt, attrs, 0, err);
}

int cav_writer_put(cav_writer *w, const cav_record *rec, cav_err *err) {
    int st = w->st ? cav_stream_writer_put(w->st, rec, err) : cav_shard_append(w->sh, rec, err);
    if (!st) w->count++;
    return st;
}

int64_t cav_writer_count(const cav_writer *w) {
    return w->count;
}

void cav_writer_abort(cav_writer *w) {
    if (!w) return;
    if (w->sh) cav_shard_writer_abort(w->sh);
    if (w->st) cav_stream_writer_abort(w->st);
    cav_afile_abort(w->out);
    free(w);
}

uint64_t cav_writer_bytes(cav_writer *w) {
    if (w->sh) return cav_shard_writer_bytes(w->sh);
    long pos = w->is_stdout ? -1 : ftell(w->f);
    return pos < 0 ? 0 : (uint64_t)pos;
}

int cav_writer_close(cav_writer *w, cav_err *err) {
    int st = w->st ? cav_stream_writer_close(w->st, err) : cav_shard_writer_close(w->sh, err);
    if (w->out) {
        if (st)
            cav_afile_abort(w->out);
        else
            st = cav_afile_commit(w->out, err);
    }
    free(w);
    return st;
}

/* Appends s to out, shell-quoted when it has characters a shell would read specially; sep first. */
static int append_quoted(char **out, size_t *len, size_t *cap, const char *sep, const char *s) {
    int plain = s[0] != 0;
    for (const char *p = s; *p && plain; p++)
        plain =
            strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./=:,+-%@", *p) != NULL;
    size_t need = *len + strlen(sep) + 4 * strlen(s) + 3;
    if (need > *cap) {
        size_t nc = need * 2;
        char *n = realloc(*out, nc);
        if (!n) return -1;
        *out = n;
        *cap = nc;
    }
    char *o = *out + *len;
    o += sprintf(o, "%s", sep);
    if (plain) {
        o += sprintf(o, "%s", s);
    } else {
        *o++ = '\'';
        for (const char *p = s; *p; p++) {
            if (*p == '\'') {
                memcpy(o, "'\\''", 4);
                o += 4;
            } else {
                *o++ = *p;
            }
        }
        *o++ = '\'';
        *o = 0;
    }
    *len = (size_t)(o - *out);
    return 0;
}

int cav_attrs_provenance(cav_attrs *a, int argc, char **argv) {
    size_t len = 0, cap = 64;
    char *args = malloc(cap);
    if (!args) return -1;
    args[0] = 0;
    for (int i = 1; i < argc; i++)
        if (append_quoted(&args, &len, &cap, i > 1 ? " " : "", argv[i])) return free(args), -1;
    const char *old = cav_attrs_get(a, CAV_DATTR_HISTORY);
    size_t hn = (old ? strlen(old) + 1 : 0) + strlen(cav_tool()) + strlen(cav_version_string()) + len + 3;
    char *hist = malloc(hn);
    if (!hist) return free(args), -1;
    snprintf(hist, hn, "%s%s%s %s%s%s", old ? old : "", old ? "\n" : "", cav_tool(), cav_version_string(),
             len ? " " : "", args);
    int st = cav_attrs_set(a, CAV_DATTR_TOOL, cav_tool()) ||
             cav_attrs_set(a, CAV_DATTR_VERSION, cav_version_string()) ||
             cav_attrs_set(a, CAV_DATTR_ARGS, args) || cav_attrs_set(a, CAV_DATTR_HISTORY, hist);
    free(hist);
    free(args);
    return st ? -1 : 0;
}
