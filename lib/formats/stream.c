/* stream.c: the record stream of cav-stream(5). Writing serialises a record into one payload buffer and
 * compresses it as one zstd frame (with content size and checksum). Reading checks every header field
 * before acting on it and grows its buffers only as the input actually delivers bytes, so a frame header
 * that lies about its size ends in a "truncated" error, never in a huge allocation. */
#include "stream.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "cli.h"
#include "clip.h"
#include "idset.h"

#define TAG_HEADER "HDR"
#define TAG_RECORD "REC"
#define TAG_END "END"
#define FRAME_HEAD 20 /* tag[4], u64 compressed size, u64 uncompressed size */

/* ---- little-endian helpers (the format is little-endian whatever the host) ---- */
static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ---- growable byte buffer ---- */
typedef struct {
    unsigned char *p;
    size_t n, cap;
} buf;

static int buf_reserve(buf *b, size_t need) {
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : 2 * cap;
    unsigned char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}
static int buf_add(buf *b, const void *d, size_t n) {
    if (buf_reserve(b, b->n + n)) return -1;
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
    return 0;
}
static int buf_u32(buf *b, uint32_t v) {
    unsigned char t[4];
    put_u32(t, v);
    return buf_add(b, t, 4);
}
static int buf_u64(buf *b, uint64_t v) {
    unsigned char t[8];
    put_u64(t, v);
    return buf_add(b, t, 8);
}
static int buf_str(buf *b, const char *s) {
    size_t n = strlen(s);
    return n > UINT32_MAX || buf_u32(b, (uint32_t)n) || buf_add(b, s, n) ? -1 : 0;
}
static int buf_attrs(buf *b, const cav_attrs *a) {
    if (buf_u32(b, a ? (uint32_t)a->n : 0)) return -1;
    for (int i = 0; a && i < a->n; i++)
        if (buf_str(b, a->v[i].key) || buf_str(b, a->v[i].value)) return -1;
    return 0;
}

/* ==================================== writer ==================================== */
struct cav_stream_writer {
    FILE *f;
    char *name;
    int close_file;
    ZSTD_CCtx *cctx;
    buf payload, comp;
    int64_t count;
    int failed;
};

static int write_frame(cav_stream_writer *w, const char *tag, cav_err *err) {
    size_t bound = ZSTD_compressBound(w->payload.n);
    w->comp.n = 0;
    if (buf_reserve(&w->comp, FRAME_HEAD + bound))
        return cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory for a %zu-byte frame", w->name, bound);
    size_t c = ZSTD_compress2(w->cctx, w->comp.p + FRAME_HEAD, bound, w->payload.p, w->payload.n);
    if (ZSTD_isError(c))
        return cav_fail(err, CAV_EXIT_INTERNAL, "%s: zstd: %s", w->name, ZSTD_getErrorName(c));
    memset(w->comp.p, 0, 4);
    memcpy(w->comp.p, tag, 3);
    put_u64(w->comp.p + 4, c);
    put_u64(w->comp.p + 12, w->payload.n);
    if (fwrite(w->comp.p, 1, FRAME_HEAD + c, w->f) != FRAME_HEAD + c)
        return cav_fail(err, CAV_EXIT_INTERNAL, "%s: write failed (disk full or closed pipe?)", w->name);
    return 0;
}

static void writer_free(cav_stream_writer *w) {
    if (!w) return;
    if (w->close_file && w->f) fclose(w->f);
    ZSTD_freeCCtx(w->cctx);
    free(w->payload.p);
    free(w->comp.p);
    free(w->name);
    free(w);
}

cav_stream_writer *cav_stream_writer_open(FILE *f, const char *name, const cav_attrs *attrs, int level,
                                          int close_file, cav_err *err) {
    cav_stream_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->name = strdup(name)) || !(w->cctx = ZSTD_createCCtx())) {
        cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", name);
        if (w) w->close_file = 0;
        writer_free(w);
        return NULL;
    }
    w->f = f;
    w->close_file = close_file;
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, level ? level : 3);
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1);
    unsigned char head[CAV_STREAM_MAGIC_LEN + 8];
    memcpy(head, CAV_STREAM_MAGIC, CAV_STREAM_MAGIC_LEN);
    put_u32(head + 8, CAV_STREAM_VERSION);
    put_u32(head + 12, 0); /* flags: none defined */
    if (fwrite(head, 1, sizeof head, f) != sizeof head) {
        cav_fail(err, CAV_EXIT_INTERNAL, "%s: write failed", name);
        writer_free(w);
        return NULL;
    }
    if (buf_attrs(&w->payload, attrs)) {
        cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", name);
        writer_free(w);
        return NULL;
    }
    if (write_frame(w, TAG_HEADER, err)) {
        writer_free(w);
        return NULL;
    }
    return w;
}

static int name_ok(const char *s) {
    return s && s[0] && strlen(s) <= CAV_MAX_NAME;
}

int cav_stream_writer_put(cav_stream_writer *w, const cav_record *rec, cav_err *err) {
    const char *id = rec->id ? rec->id : "";
    if (w->failed) return cav_fail(err, CAV_EXIT_INTERNAL, "%s: writer already failed", w->name);
    if (!name_ok(rec->id))
        return cav_fail(err, CAV_EXIT_INPUT, "%s: record %lld: id: missing, empty or longer than %d bytes",
                        w->name, (long long)w->count, CAV_MAX_NAME);
    buf *b = &w->payload;
    b->n = 0;
    int bad = buf_str(b, id) || buf_attrs(b, &rec->attrs) || buf_u32(b, (uint32_t)rec->ntensors);
    for (int i = 0; !bad && i < rec->ntensors; i++) {
        const cav_tensor *t = &rec->tensors[i];
        unsigned char d[4] = {(unsigned char)t->dtype, (unsigned char)t->ndim, 0, 0};
        bad = buf_str(b, t->name) || buf_add(b, d, 4);
        for (int k = 0; !bad && k < t->ndim; k++) bad = buf_u64(b, (uint64_t)t->shape[k]);
        bad = bad || buf_u64(b, t->nbytes) || buf_add(b, t->data, t->nbytes);
    }
    if (bad)
        return cav_fail(err, CAV_EXIT_INTERNAL, "%s: record %lld (id '%s'): out of memory", w->name,
                        (long long)w->count, id);
    if (b->n > CAV_STREAM_MAX_FRAME)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: record %lld (id '%s'): %zu bytes exceed the frame limit",
                        w->name, (long long)w->count, id, b->n);
    if (write_frame(w, TAG_RECORD, err)) return w->failed = 1, -1;
    w->count++;
    return 0;
}

int cav_stream_writer_close(cav_stream_writer *w, cav_err *err) {
    int st = 0;
    if (!w->failed) {
        unsigned char end[FRAME_HEAD] = {0};
        memcpy(end, TAG_END, 3);
        put_u64(end + 12, (uint64_t)w->count);
        if (fwrite(end, 1, sizeof end, w->f) != sizeof end || fflush(w->f))
            st = cav_fail(err, CAV_EXIT_INTERNAL, "%s: write failed", w->name);
    } else {
        st = -1;
    }
    if (w->close_file) {
        if (fclose(w->f) && !st) st = cav_fail(err, CAV_EXIT_INTERNAL, "%s: close failed", w->name);
        w->f = NULL;
    }
    writer_free(w);
    return st;
}

void cav_stream_writer_abort(cav_stream_writer *w) {
    if (!w) return;
    if (w->f) fflush(w->f);
    writer_free(w);
}

/* ==================================== reader ==================================== */
struct cav_stream_reader {
    FILE *f;
    char *name;
    int close_file, done;
    ZSTD_DCtx *dctx;
    buf comp, payload;
    cav_attrs attrs;
    int64_t index; /* index of the last record returned */
    int64_t cur;   /* index of the frame being read: -1 the header */
    cav_idset ids;
};

/* Where an error happened: "FILE: record I (id 'X')" or "FILE: header". */
static const char *where(const cav_stream_reader *r, const char *id, char *out, size_t n) {
    if (r->cur < 0)
        snprintf(out, n, "%s: header", r->name);
    else if (id)
        snprintf(out, n, "%s: record %lld (id '%s')", r->name, (long long)r->cur, id);
    else
        snprintf(out, n, "%s: record %lld", r->name, (long long)r->cur);
    return out;
}

/* Reads exactly n bytes; grows b only as bytes arrive. 1 ok, 0 clean EOF before any byte, -1 short. */
static int read_exact(FILE *f, buf *b, size_t n) {
    b->n = 0;
    while (b->n < n) {
        size_t want = n - b->n, step = b->cap > b->n ? b->cap - b->n : 0;
        if (step == 0) {
            size_t grow = b->cap < ((size_t)1 << 20) ? ((size_t)1 << 20) : b->cap;
            if (buf_reserve(b, b->n + (want < grow ? want : grow))) return -2;
            step = b->cap - b->n;
        }
        size_t k = fread(b->p + b->n, 1, want < step ? want : step, f);
        if (k == 0) return b->n == 0 ? 0 : -1;
        b->n += k;
    }
    return 1;
}

/* Reads one frame into r->payload. Returns 1 and the tag, 0 at the end frame, -1 on error. */
static int read_frame(cav_stream_reader *r, char tag[4], cav_err *err) {
    char w[600];
    unsigned char h[FRAME_HEAD];
    size_t k = fread(h, 1, FRAME_HEAD, r->f);
    if (k != FRAME_HEAD)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: frame header: truncated stream (%s; no end frame)",
                        where(r, NULL, w, sizeof w), k ? "partial frame header" : "input ends");
    memcpy(tag, h, 4);
    uint64_t cs = get_u64(h + 4), us = get_u64(h + 12);
    if (memcmp(tag, TAG_END "\0", 4) == 0) {
        if (cs != 0)
            return cav_fail(err, CAV_EXIT_INPUT, "%s: end frame: compressed size %llu, expected 0", r->name,
                            (unsigned long long)cs);
        if ((int64_t)us != r->index + 1 || us > INT64_MAX)
            return cav_fail(err, CAV_EXIT_INPUT, "%s: end frame: says %llu records, the stream held %lld",
                            r->name, (unsigned long long)us, (long long)(r->index + 1));
        return 0;
    }
    if (memcmp(tag, TAG_RECORD "\0", 4) && memcmp(tag, TAG_HEADER "\0", 4))
        return cav_fail(err, CAV_EXIT_INPUT, "%s: frame tag: unknown tag %02x%02x%02x%02x",
                        where(r, NULL, w, sizeof w), h[0], h[1], h[2], h[3]);
    if (us > CAV_STREAM_MAX_FRAME)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: frame size: %llu uncompressed bytes exceed the limit %llu",
                        where(r, NULL, w, sizeof w), (unsigned long long)us,
                        (unsigned long long)CAV_STREAM_MAX_FRAME);
    uint64_t limit = cav_record_limit();
    if (us > limit && memcmp(tag, TAG_RECORD "\0", 4) == 0)
        return cav_fail(err, CAV_EXIT_INPUT,
                        "%s: frame size: %llu uncompressed bytes exceed the record limit %llu "
                        "(CAV_MAX_RECORD_BYTES raises it)",
                        where(r, NULL, w, sizeof w), (unsigned long long)us, (unsigned long long)limit);
    if (cs < 9 || cs > ZSTD_compressBound((size_t)us))
        return cav_fail(err, CAV_EXIT_INPUT,
                        "%s: frame size: compressed size %llu impossible for %llu uncompressed bytes",
                        where(r, NULL, w, sizeof w), (unsigned long long)cs, (unsigned long long)us);
    int st = read_exact(r->f, &r->comp, (size_t)cs);
    if (st == -2) return cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", where(r, NULL, w, sizeof w));
    if (st != 1)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: frame data: truncated (%zu of %llu compressed bytes)",
                        where(r, NULL, w, sizeof w), r->comp.n, (unsigned long long)cs);
    unsigned long long fcs = ZSTD_getFrameContentSize(r->comp.p, r->comp.n);
    size_t fsz = ZSTD_findFrameCompressedSize(r->comp.p, r->comp.n);
    if (fcs == ZSTD_CONTENTSIZE_ERROR || ZSTD_isError(fsz) || fsz != r->comp.n)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: frame data: not one zstd frame of %llu bytes",
                        where(r, NULL, w, sizeof w), (unsigned long long)cs);
    if (fcs != us)
        return cav_fail(err, CAV_EXIT_INPUT,
                        "%s: frame size: header says %llu uncompressed bytes, the zstd frame says %llu",
                        where(r, NULL, w, sizeof w), (unsigned long long)us, fcs);
    /* Decompress into a buffer that grows with the output actually produced. */
    ZSTD_DCtx_reset(r->dctx, ZSTD_reset_session_only);
    ZSTD_inBuffer in = {r->comp.p, r->comp.n, 0};
    r->payload.n = 0;
    for (;;) {
        if (r->payload.n == r->payload.cap) {
            size_t target = r->payload.cap ? 2 * r->payload.cap : ((size_t)1 << 20);
            if (target > us) target = (size_t)us;
            if (target <= r->payload.cap) target = r->payload.cap + 1; /* more output than announced */
            if (buf_reserve(&r->payload, target))
                return cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", where(r, NULL, w, sizeof w));
        }
        ZSTD_outBuffer out = {r->payload.p, r->payload.cap, r->payload.n};
        size_t z = ZSTD_decompressStream(r->dctx, &out, &in);
        r->payload.n = out.pos;
        if (ZSTD_isError(z))
            return cav_fail(err, CAV_EXIT_INPUT, "%s: frame data: zstd: %s", where(r, NULL, w, sizeof w),
                            ZSTD_getErrorName(z));
        if (r->payload.n > us)
            return cav_fail(err, CAV_EXIT_INPUT, "%s: frame data: more than the %llu bytes announced",
                            where(r, NULL, w, sizeof w), (unsigned long long)us);
        if (z == 0) break;
        if (in.pos == in.size && out.pos < out.size)
            return cav_fail(err, CAV_EXIT_INPUT, "%s: frame data: zstd frame ends early",
                            where(r, NULL, w, sizeof w));
    }
    if (r->payload.n != us)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: frame data: %zu bytes decoded, %llu announced",
                        where(r, NULL, w, sizeof w), r->payload.n, (unsigned long long)us);
    return 1;
}

/* A cursor over the decoded payload; every read is bounds-checked. */
typedef struct {
    const unsigned char *p;
    size_t n, off;
} cursor;

static int cur_u32(cursor *c, uint32_t *v) {
    if (c->n - c->off < 4) return -1;
    *v = get_u32(c->p + c->off);
    c->off += 4;
    return 0;
}
static int cur_u64(cursor *c, uint64_t *v) {
    if (c->n - c->off < 8) return -1;
    *v = get_u64(c->p + c->off);
    c->off += 8;
    return 0;
}
/* A string of at most max bytes without NUL inside, copied into a new allocation (*out). Returns 0 ok,
 * -1 truncated, -2 too long/empty/NUL, -3 out of memory. */
static int cur_str(cursor *c, size_t max, int allow_empty, char **out) {
    uint32_t len;
    if (cur_u32(c, &len)) return -1;
    if (len > max || (!len && !allow_empty)) return -2;
    if (c->n - c->off < len) return -1;
    if (memchr(c->p + c->off, 0, len)) return -2;
    char *s = malloc((size_t)len + 1);
    if (!s) return -3;
    memcpy(s, c->p + c->off, len);
    s[len] = 0;
    c->off += len;
    *out = s;
    return 0;
}

static int str_fail(int st, cav_err *err, const char *loc, const char *field) {
    if (st == -3) return cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", loc);
    return cav_fail(err, CAV_EXIT_INPUT, "%s: %s: %s", loc, field,
                    st == -1 ? "truncated frame payload" : "empty, too long or containing a NUL byte");
}

static int parse_attrs(cursor *c, cav_attrs *a, const char *loc, cav_err *err) {
    uint32_t n;
    if (cur_u32(c, &n))
        return cav_fail(err, CAV_EXIT_INPUT, "%s: attribute count: truncated frame payload", loc);
    if (n > (c->n - c->off) / 8)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: attribute count: %u cannot fit in the frame", loc, n);
    for (uint32_t i = 0; i < n; i++) {
        char *k = NULL, *v = NULL;
        int st = cur_str(c, CAV_MAX_NAME, 0, &k);
        if (st) return str_fail(st, err, loc, "attribute key");
        st = cur_str(c, c->n, 1, &v);
        if (st) {
            char field[300];
            snprintf(field, sizeof field, "attribute '%s' value", k);
            free(k);
            return str_fail(st, err, loc, field);
        }
        int dup = cav_attrs_get(a, k) != NULL;
        int bad = !dup && cav_attrs_set(a, k, v);
        if (dup) cav_fail(err, CAV_EXIT_INPUT, "%s: attribute '%s': duplicated", loc, k);
        if (bad) cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", loc);
        free(k);
        free(v);
        if (dup || bad) return -1;
    }
    return 0;
}

/* The type, shape and size of one tensor; the element count may not exceed what the rest of the frame
 * holds, so the allocation that follows is bounded by bytes actually received. */
static int parse_tensor_head(cursor *c, int64_t *shape, int *dtype_out, int *ndim_out, int64_t *count_out,
                             uint64_t *nbytes_out, const char *loc, const char *field, cav_err *err) {
    if (c->n - c->off < 4)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: %s: truncated frame payload", loc, field);
    int dtype = c->p[c->off], ndim = c->p[c->off + 1];
    int resv = c->p[c->off + 2] | c->p[c->off + 3];
    c->off += 4;
    if (!cav_dtype_size((cav_dtype)dtype))
        return cav_fail(err, CAV_EXIT_INPUT, "%s: %s: unknown dtype %d", loc, field, dtype);
    if (ndim > CAV_MAX_NDIM)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: %s: %d dimensions (at most %d)", loc, field, ndim,
                        CAV_MAX_NDIM);
    if (resv) return cav_fail(err, CAV_EXIT_INPUT, "%s: %s: reserved bytes are not zero", loc, field);
    for (int k = 0; k < ndim; k++) {
        uint64_t d;
        if (cur_u64(c, &d)) return cav_fail(err, CAV_EXIT_INPUT, "%s: %s: truncated shape", loc, field);
        if (d > INT64_MAX)
            return cav_fail(err, CAV_EXIT_INPUT, "%s: %s: negative dimension %lld", loc, field,
                            (long long)(int64_t)d);
        shape[k] = (int64_t)d;
    }
    uint64_t nbytes;
    if (cur_u64(c, &nbytes)) return cav_fail(err, CAV_EXIT_INPUT, "%s: %s: truncated size", loc, field);
    size_t es = cav_dtype_size((cav_dtype)dtype);
    int64_t count = cav_shape_count(ndim, shape, es, c->n - c->off);
    if (count < 0) {
        if (cav_shape_count(ndim, shape, es, UINT64_MAX) < 0)
            return cav_fail(err, CAV_EXIT_INPUT, "%s: %s: shape product overflows", loc, field);
        return cav_fail(err, CAV_EXIT_INPUT, "%s: %s: shape needs more bytes than the frame holds", loc,
                        field);
    }
    if (nbytes != (uint64_t)count * es)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: %s: size %llu does not match the shape (%llu bytes)", loc,
                        field, (unsigned long long)nbytes, (unsigned long long)count * es);
    *dtype_out = dtype;
    *ndim_out = ndim;
    *count_out = count;
    *nbytes_out = nbytes;
    return 0;
}

static int parse_record(cav_stream_reader *r, cav_record *rec, cav_err *err) {
    char loc[600];
    cursor c = {r->payload.p, r->payload.n, 0};
    char *id = NULL;
    int st = cur_str(&c, CAV_MAX_NAME, 0, &id);
    if (st) return str_fail(st, err, where(r, NULL, loc, sizeof loc), CAV_FIELD_ID);
    rec->id = id;
    where(r, id, loc, sizeof loc);
    int dupid = cav_idset_add(&r->ids, id, r->cur);
    if (dupid < 0) return cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", loc);
    if (dupid == 0)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: id: duplicated (first seen at record %lld)", loc,
                        (long long)cav_idset_get(&r->ids, id));
    if (parse_attrs(&c, &rec->attrs, loc, err)) return -1;
    uint32_t nt;
    if (cur_u32(&c, &nt))
        return cav_fail(err, CAV_EXIT_INPUT, "%s: tensor count: truncated frame payload", loc);
    if (nt > (c.n - c.off) / 17)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: tensor count: %u cannot fit in the frame", loc, nt);
    for (uint32_t i = 0; i < nt; i++) {
        char *name = NULL;
        if ((st = cur_str(&c, CAV_MAX_NAME, 0, &name))) return str_fail(st, err, loc, "tensor name");
        char field[320];
        snprintf(field, sizeof field, "tensor '%s'", name);
        int dup = cav_record_find(rec, name) != NULL;
        int64_t shape[CAV_MAX_NDIM];
        int dtype = 0, ndim = 0;
        int64_t count = -1;
        uint64_t nbytes = 0;
        st = dup ? cav_fail(err, CAV_EXIT_INPUT, "%s: %s: duplicated tensor name", loc, field)
                 : parse_tensor_head(&c, shape, &dtype, &ndim, &count, &nbytes, loc, field, err);
        cav_tensor *t = st ? NULL : cav_record_put(rec, name, (cav_dtype)dtype, ndim, shape, c.p + c.off);
        free(name);
        if (st) return -1;
        if (!t) return cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", loc);
        c.off += (size_t)nbytes;
    }
    if (c.off != c.n)
        return cav_fail(err, CAV_EXIT_INPUT, "%s: %zu stray bytes after the last tensor", loc, c.n - c.off);
    return 0;
}

cav_stream_reader *cav_stream_reader_open(FILE *f, const char *name, int magic_done, int close_file,
                                          cav_err *err) {
    cav_stream_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->name = strdup(name)) || !(r->dctx = ZSTD_createDCtx())) {
        cav_fail(err, CAV_EXIT_INTERNAL, "%s: out of memory", name);
        if (r) cav_stream_reader_close(r);
        return NULL;
    }
    r->f = f;
    r->close_file = close_file;
    r->index = -1;
    r->cur = -1;
    unsigned char h[16];
    size_t off = magic_done ? CAV_STREAM_MAGIC_LEN : 0;
    if (fread(h + off, 1, sizeof h - off, f) != sizeof h - off) {
        cav_fail(err, CAV_EXIT_INPUT, "%s: header: truncated (shorter than 16 bytes)", name);
        goto fail;
    }
    if (!magic_done && memcmp(h, CAV_STREAM_MAGIC, CAV_STREAM_MAGIC_LEN)) {
        cav_fail(err, CAV_EXIT_INPUT, "%s: header: magic: not a cav record stream", name);
        goto fail;
    }
    uint32_t ver = get_u32(h + 8), flags = get_u32(h + 12);
    if (ver != CAV_STREAM_VERSION) {
        cav_fail(err, CAV_EXIT_INPUT, "%s: header: version: %u (this build reads version %d)", name, ver,
                 CAV_STREAM_VERSION);
        goto fail;
    }
    if (flags) {
        cav_fail(err, CAV_EXIT_INPUT, "%s: header: flags: unknown flags 0x%x", name, flags);
        goto fail;
    }
    char tag[4];
    int st = read_frame(r, tag, err);
    if (st == 0) {
        cav_fail(err, CAV_EXIT_INPUT, "%s: header: end frame where the header frame should be", name);
        goto fail;
    }
    if (st < 0) goto fail;
    if (memcmp(tag, TAG_HEADER "\0", 4)) {
        cav_fail(err, CAV_EXIT_INPUT, "%s: header: first frame is not a header frame", name);
        goto fail;
    }
    cursor c = {r->payload.p, r->payload.n, 0};
    char loc[600];
    snprintf(loc, sizeof loc, "%s: header", name);
    if (parse_attrs(&c, &r->attrs, loc, err)) goto fail;
    if (c.off != c.n) {
        cav_fail(err, CAV_EXIT_INPUT, "%s: header: stray bytes after the attributes", name);
        goto fail;
    }
    return r;
fail:
    r->f = NULL; /* on failure the caller keeps the file */
    cav_stream_reader_close(r);
    return NULL;
}

const cav_attrs *cav_stream_reader_attrs(const cav_stream_reader *r) {
    return &r->attrs;
}
int64_t cav_stream_reader_index(const cav_stream_reader *r) {
    return r->index;
}

int cav_stream_reader_next(cav_stream_reader *r, cav_record *rec, cav_err *err) {
    cav_record_clear(rec);
    if (r->done) return r->done > 0 ? 0 : cav_fail(err, CAV_EXIT_INPUT, "%s: stream already failed", r->name);
    char tag[4];
    r->cur = r->index + 1;
    int st = read_frame(r, tag, err);
    if (st == 0) {
        /* anything after the end frame is a concatenation error, not silently ignored */
        if (fgetc(r->f) != EOF) {
            r->done = -1;
            return cav_fail(err, CAV_EXIT_INPUT, "%s: data after the end frame", r->name);
        }
        r->done = 1;
        return 0;
    }
    r->index++;
    if (st > 0 && memcmp(tag, TAG_RECORD "\0", 4)) {
        char w[600];
        st = cav_fail(err, CAV_EXIT_INPUT, "%s: frame tag: a second header frame",
                      where(r, NULL, w, sizeof w));
    }
    if (st > 0 && parse_record(r, rec, err) == 0) return 1;
    cav_record_clear(rec);
    r->done = -1;
    return -1;
}

void cav_stream_reader_close(cav_stream_reader *r) {
    if (!r) return;
    if (r->close_file && r->f) fclose(r->f);
    ZSTD_freeDCtx(r->dctx);
    free(r->comp.p);
    free(r->payload.p);
    cav_attrs_clear(&r->attrs);
    cav_idset_clear(&r->ids);
    free(r->name);
    free(r);
}
