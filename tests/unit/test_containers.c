/* test_containers.c: the record stream and the HDF5 shard. Round trips (stream, shard, shard -> stream) are
 * bit-identical for every dtype, scalars, zero-length and 8-dim shapes, shapes that vary across rows,
 * fields and attributes missing from some rows, and a field that changes shape after the writer has fixed
 * its layout. Hostile streams (every truncation point, bad magic/version, lying sizes, overflowing shapes,
 * duplicates) fail with CAV_EXIT_INPUT and a message naming file, record and field. Also: the zstd filter on
 * corrupt chunks, concurrent readers of one shard. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "cli.h"
#include "h5zstd.h"
#include "harness.h"
#include "io.h"
#include "shard.h"
#include "stream.h"

static char tmpdir[256];

static void mkpath(char *out, size_t n, const char *name) {
    snprintf(out, n, "%s/%s", tmpdir, name);
}

static uint64_t lcg(uint64_t *s) {
    return *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
}

static void fill(cav_tensor *t, uint64_t *seed) {
    unsigned char *p = t->data;
    for (size_t i = 0; i < t->nbytes; i++) p[i] = (unsigned char)(lcg(seed) >> 56);
}

/* Row r of the test set: every dtype; shapes odd in every way; some fields/attrs only in some rows. */
static void make_row(cav_record *r, int row) {
    uint64_t seed = 1000 + (uint64_t)row;
    char id[32];
    cav_record_init(r);
    snprintf(id, sizeof id, "clip-%03d", row);
    cav_record_set_id(r, id);
    int64_t s3[3] = {2, 3, 4};
    for (int t = CAV_U8; t <= CAV_F64; t++) {
        char name[16];
        snprintf(name, sizeof name, "fix_%s", cav_dtype_name((cav_dtype)t));
        fill(cav_record_add(r, name, (cav_dtype)t, 3, s3), &seed);
        int64_t len = 1 + (row * 7 + t) % 13; /* varies across rows */
        snprintf(name, sizeof name, "var_%s", cav_dtype_name((cav_dtype)t));
        fill(cav_record_add(r, name, (cav_dtype)t, 1, &len), &seed);
    }
    fill(cav_record_add(r, "scalar", CAV_F32, 0, NULL), &seed);
    int64_t sb[2] = {128, 128}; /* 64 KiB: one row per chunk, read raw and decompressed outside the lock */
    fill(cav_record_add(r, "big", CAV_F32, 2, sb), &seed);
    int64_t z[2] = {0, 5};
    cav_record_add(r, "empty", CAV_I16, 2, z);
    int64_t s8[8] = {1, 2, 1, 2, 1, 2, 1, 2};
    fill(cav_record_add(r, "eight", CAV_U8, 8, s8), &seed);
    if (row % 3 != 1) { /* missing from some rows */
        int64_t k = 4;
        fill(cav_record_add(r, "sometimes", CAV_I32, 1, &k), &seed);
    }
    if (row >= 70) { /* appears after the layouts were chosen */
        int64_t k = 2;
        fill(cav_record_add(r, "late", CAV_F16, 1, &k), &seed);
    }
    int64_t ch[2] = {row < 80 ? 3 : 4, 2}; /* fixed for the first 80 rows, then changes shape */
    fill(cav_record_add(r, "changes", CAV_F32, 2, ch), &seed);
    cav_attrs_set(&r->attrs, "source", id);
    if (row % 2) cav_attrs_set(&r->attrs, "odd", "");
    if (row == 90) cav_attrs_set(&r->attrs, "late_attr", "x y\nz");
}
#define NROWS 100

static void dataset_attrs(cav_attrs *a) {
    cav_attrs_init(a);
    cav_attrs_set(a, "sample_rate", "16000");
    cav_attrs_set(a, "label_names", "Speech\nDog, bark\n");
}

static int write_all(const char *path, cav_format fmt) {
    cav_attrs a;
    dataset_attrs(&a);
    cav_err err = {0};
    cav_writer *w = cav_writer_open(path, fmt, &a, &err);
    cav_attrs_clear(&a);
    if (!w) return fprintf(stderr, "%s\n", err.msg), -1;
    for (int i = 0; i < NROWS; i++) {
        cav_record r;
        make_row(&r, i);
        int st = cav_writer_put(w, &r, &err);
        cav_record_clear(&r);
        if (st) return fprintf(stderr, "%s\n", err.msg), cav_writer_close(w, &err), -1;
    }
    return cav_writer_close(w, &err) ? (fprintf(stderr, "%s\n", err.msg), -1) : 0;
}

/* Reads path and compares every record and the dataset attributes with what was written. */
static int check_all(const char *path) {
    cav_err err = {0};
    cav_reader *rd = cav_reader_open(path, &err);
    if (!rd) return fprintf(stderr, "%s\n", err.msg), -1;
    int bad = 0, n = 0;
    const cav_attrs *da = cav_reader_attrs(rd);
    if (!cav_attrs_get(da, "label_names") || strcmp(cav_attrs_get(da, "label_names"), "Speech\nDog, bark\n"))
        bad++;
    cav_record r, e;
    cav_record_init(&r);
    int st;
    while ((st = cav_reader_next(rd, &r, &err)) == 1) {
        make_row(&e, n);
        if (!cav_record_equal(&r, &e)) {
            fprintf(stderr, "%s: record %d differs\n", path, n);
            bad++;
        }
        cav_record_clear(&e);
        n++;
    }
    if (st < 0) fprintf(stderr, "%s\n", err.msg), bad++;
    cav_record_clear(&r);
    cav_reader_close(rd);
    if (n != NROWS) fprintf(stderr, "%s: %d records\n", path, n), bad++;
    return bad ? -1 : 0;
}

static void stream_round_trip(void) {
    char p[300];
    mkpath(p, sizeof p, "a.cavs");
    REQUIRE(write_all(p, CAV_FMT_STREAM) == 0);
    CHECK(check_all(p) == 0);
}

static void shard_round_trip(void) {
    char p[300];
    mkpath(p, sizeof p, "a.h5");
    REQUIRE(write_all(p, CAV_FMT_SHARD) == 0);
    CHECK(check_all(p) == 0);
    cav_err err;
    cav_shard *s = cav_shard_open(p, &err);
    REQUIRE(s != NULL);
    CHECK(cav_shard_rows(s) == NROWS);
    CHECK(cav_shard_find(s, "clip-042") == 42);
    CHECK(cav_shard_find(s, "nope") == -1);
    int seen = 0;
    for (int i = 0; i < cav_shard_nfields(s); i++) {
        cav_shard_field f;
        cav_shard_field_info(s, i, &f);
        if (!strcmp(f.name, "fix_f16")) {
            seen++;
            CHECK(!f.ragged && f.ndim == 3 && f.shape[2] == 4);
        }
        if (!strcmp(f.name, "var_u8")) {
            seen++;
            CHECK(f.ragged);
        }
        if (!strcmp(f.name, "big")) {
            seen++;
            CHECK(!f.ragged && f.present == NROWS);
        }
        if (!strcmp(f.name, "changes")) {
            seen++;
            CHECK(f.ragged && f.present == NROWS);
        }
        if (!strcmp(f.name, "sometimes")) {
            seen++;
            CHECK(f.ragged && f.present == NROWS - NROWS / 3);
        }
        if (!strcmp(f.name, "late")) {
            seen++;
            CHECK(f.ragged && f.present == NROWS - 70);
        }
        if (!strcmp(f.name, "empty")) {
            seen++;
            CHECK(f.ragged);
        } /* zero-length rows cannot be chunked */
    }
    CHECK(seen == 7);
    cav_record r;
    cav_record_init(&r);
    const char *names[] = {"fix_i64", "late"};
    CHECK(cav_shard_read_fields(s, 75, names, 2, &r, &err) == 0 && r.ntensors == 2);
    CHECK(cav_shard_read_fields(s, 5, names, 2, &r, &err) == -1 && err.code == 2 && strstr(err.msg, "late") &&
          strstr(err.msg, "clip-005"));
    CHECK(cav_shard_read(s, NROWS, &r, &err) == -1);
    cav_record_clear(&r);
    cav_shard_close(s);
}

static void shard_to_stream(void) {
    char a[300], b[300];
    mkpath(a, sizeof a, "a.h5");
    mkpath(b, sizeof b, "b.cavs");
    cav_err err;
    cav_reader *rd = cav_reader_open(a, &err);
    REQUIRE(rd != NULL);
    cav_writer *w = cav_writer_open(b, CAV_FMT_STREAM, cav_reader_attrs(rd), &err);
    REQUIRE(w != NULL);
    cav_record r;
    cav_record_init(&r);
    while (cav_reader_next(rd, &r, &err) == 1) CHECK(cav_writer_put(w, &r, &err) == 0);
    cav_record_clear(&r);
    cav_reader_close(rd);
    CHECK(cav_writer_close(w, &err) == 0);
    CHECK(check_all(b) == 0);
}

/* ---------------------------------------------------------------- hostile streams */

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    unsigned char *b = malloc(*n + 1);
    if (fread(b, 1, *n, f) != *n) *n = 0;
    fclose(f);
    return b;
}

/* Opens bytes as a stream named "hostile" and reads to the end; returns the error code (0 if clean). */
static int read_bytes(const unsigned char *b, size_t n, cav_err *err) {
    FILE *f = fmemopen((void *)b, n ? n : 1, "rb");
    if (!n) fgetc(f); /* an empty input */
    cav_stream_reader *r = cav_stream_reader_open(f, "hostile", 0, 1, err);
    if (!r) return err->code;
    cav_record rec;
    cav_record_init(&rec);
    int st, count = 0;
    while ((st = cav_stream_reader_next(r, &rec, err)) == 1) count++;
    cav_record_clear(&rec);
    cav_stream_reader_close(r);
    return st < 0 ? err->code : 0;
}

static void stream_truncated_everywhere(void) {
    char p[300];
    mkpath(p, sizeof p, "small.cavs");
    cav_err err;
    cav_attrs a;
    dataset_attrs(&a);
    cav_writer *w = cav_writer_open(p, CAV_FMT_STREAM, &a, &err);
    cav_attrs_clear(&a);
    for (int i = 0; i < 3; i++) {
        cav_record r;
        make_row(&r, i);
        cav_record_remove(&r, "big"); /* keeps the stream small: every prefix is read */
        cav_writer_put(w, &r, &err);
        cav_record_clear(&r);
    }
    REQUIRE(cav_writer_close(w, &err) == 0);
    size_t n;
    unsigned char *b = slurp(p, &n);
    REQUIRE(b && n > 100);
    CHECK(read_bytes(b, n, &err) == 0);
    int bad = 0;
    for (size_t k = 0; k < n; k++) {
        int code = read_bytes(b, k, &err);
        if (code != CAV_EXIT_INPUT || !strstr(err.msg, "hostile")) {
            if (!bad) fprintf(stderr, "  truncated at %zu: code %d: %s\n", k, code, err.msg);
            bad++;
        }
    }
    CHECK(bad == 0);
    /* a flipped byte anywhere after the magic is caught (checksums, sizes, tags) */
    int missed = 0;
    for (size_t k = 8; k < n; k += 7) {
        b[k] ^= 0x40;
        if (read_bytes(b, n, &err) == 0) missed++;
        b[k] ^= 0x40;
    }
    CHECK(missed == 0);
    free(b);
}

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* A stream with an empty header frame and one record frame holding payload (compressed for real). */
static size_t craft(unsigned char *out, const unsigned char *payload, size_t pn, uint64_t fake_us,
                    uint64_t fake_cs) {
    size_t o = 0;
    memcpy(out, CAV_STREAM_MAGIC, 8);
    put32(out + 8, 1);
    put32(out + 12, 0);
    o = 16;
    unsigned char zero[4] = {0};
    size_t c = ZSTD_compress(out + o + 20, 4096, zero, 4, 1);
    memcpy(out + o, "HDR", 4);
    put64(out + o + 4, c);
    put64(out + o + 12, 4);
    o += 20 + c;
    c = ZSTD_compress(out + o + 20, 1 << 16, payload, pn, 1);
    memcpy(out + o, "REC", 4);
    put64(out + o + 4, fake_cs ? fake_cs : c);
    put64(out + o + 12, fake_us ? fake_us : pn);
    o += 20 + c;
    memcpy(out + o, "END", 4);
    put64(out + o + 4, 0);
    put64(out + o + 12, 1);
    return o + 20;
}

/* payload: id "x1", no attrs, one tensor named name with dtype/ndim/dims/nbytes, then data bytes */
static size_t tensor_payload(unsigned char *p, const char *name, int dtype, int ndim, const uint64_t *dims,
                             uint64_t nbytes, size_t data) {
    size_t o = 0;
    put32(p, 2);
    memcpy(p + 4, "x1", 2);
    o = 6;
    put32(p + o, 0);
    put32(p + o + 4, 1);
    o += 8;
    put32(p + o, (uint32_t)strlen(name));
    memcpy(p + o + 4, name, strlen(name));
    o += 4 + strlen(name);
    p[o] = (unsigned char)dtype;
    p[o + 1] = (unsigned char)ndim;
    p[o + 2] = p[o + 3] = 0;
    o += 4;
    for (int k = 0; k < ndim; k++, o += 8) put64(p + o, dims[k]);
    put64(p + o, nbytes);
    o += 8;
    memset(p + o, 7, data);
    return o + data;
}

#define EXPECT_BAD(buf, n, ...)                                                                              \
    do {                                                                                                     \
        cav_err e_ = {0};                                                                                    \
        int c_ = read_bytes(buf, n, &e_);                                                                    \
        CHECK(c_ == CAV_EXIT_INPUT);                                                                         \
        const char *w_[] = {__VA_ARGS__};                                                                    \
        for (size_t i_ = 0; i_ < sizeof w_ / sizeof *w_; i_++)                                               \
            if (!strstr(e_.msg, w_[i_])) {                                                                   \
                fprintf(stderr, "  message '%s' lacks '%s'\n", e_.msg, w_[i_]);                              \
                CHECK(strstr(e_.msg, w_[i_]) != NULL);                                                       \
            }                                                                                                \
    } while (0)

static void stream_hostile_headers(void) {
    static unsigned char s[1 << 17], p[4096];
    uint64_t d1[1] = {4};
    size_t pn = tensor_payload(p, "wave", CAV_I16, 1, d1, 8, 8);
    size_t n = craft(s, p, pn, 0, 0);
    cav_err err;
    CHECK(read_bytes(s, n, &err) == 0);
    s[1] = 'X';
    EXPECT_BAD(s, n, "hostile", "magic");
    s[1] = 'C';
    put32(s + 8, 2);
    EXPECT_BAD(s, n, "hostile", "version");
    put32(s + 8, 1);
    /* sizes that lie: 100 GB frame, 2^60 uncompressed, compressed size beyond the input */
    n = craft(s, p, pn, UINT64_C(100) << 30, 0);
    EXPECT_BAD(s, n, "hostile", "record 0", "frame size");
    n = craft(s, p, pn, UINT64_C(1) << 60, 0);
    EXPECT_BAD(s, n, "hostile", "record 0", "frame size");
    n = craft(s, p, pn, 0, UINT64_C(1) << 40);
    EXPECT_BAD(s, n, "hostile", "record 0", "frame size");
    n = craft(s, p, pn, 1 << 20, 0); /* plausible but not what the zstd frame says */
    EXPECT_BAD(s, n, "hostile", "record 0", "frame size");
    /* shape product overflow: 2^60 elements of 8 bytes */
    uint64_t big[2] = {UINT64_C(1) << 32, UINT64_C(1) << 32};
    pn = tensor_payload(p, "fbank", CAV_F64, 2, big, 8, 8);
    n = craft(s, p, pn, 0, 0);
    EXPECT_BAD(s, n, "hostile", "record 0", "id 'x1'", "fbank", "overflow");
    uint64_t huge[1] = {UINT64_C(1) << 40};
    pn = tensor_payload(p, "fbank", CAV_F32, 1, huge, UINT64_C(1) << 42, 8);
    n = craft(s, p, pn, 0, 0);
    EXPECT_BAD(s, n, "hostile", "record 0", "fbank", "more bytes than the frame");
    uint64_t neg[1] = {(uint64_t)-5};
    pn = tensor_payload(p, "wave", CAV_I16, 1, neg, 8, 8);
    n = craft(s, p, pn, 0, 0);
    EXPECT_BAD(s, n, "hostile", "wave", "negative");
    pn = tensor_payload(p, "wave", CAV_I16, 1, d1, 6, 8); /* nbytes disagrees with shape */
    n = craft(s, p, pn, 0, 0);
    EXPECT_BAD(s, n, "hostile", "wave", "size");
    pn = tensor_payload(p, "wave", 9, 1, d1, 8, 8);
    n = craft(s, p, pn, 0, 0);
    EXPECT_BAD(s, n, "hostile", "wave", "dtype");
    uint64_t d9[9] = {1, 1, 1, 1, 4, 1, 1, 1, 1};
    pn = tensor_payload(p, "wave", CAV_I16, 9, d9, 8, 8);
    n = craft(s, p, pn, 0, 0);
    EXPECT_BAD(s, n, "hostile", "wave", "dimensions");
    /* duplicated tensor name: two identical tensors */
    pn = tensor_payload(p, "wave", CAV_I16, 1, d1, 8, 8);
    size_t tl = pn - 14;
    memcpy(p + pn, p + 14, tl);
    put32(p + 10, 2);
    n = craft(s, p, pn + tl, 0, 0);
    EXPECT_BAD(s, n, "hostile", "wave", "duplicated");
    /* a tensor count that cannot fit */
    pn = tensor_payload(p, "wave", CAV_I16, 1, d1, 8, 8);
    put32(p + 10, 0x7fffffff);
    n = craft(s, p, pn, 0, 0);
    EXPECT_BAD(s, n, "hostile", "record 0", "tensor count");
}

static void stream_duplicate_id(void) {
    char p[300];
    mkpath(p, sizeof p, "dup.cavs");
    cav_err err;
    cav_writer *w = cav_writer_open(p, CAV_FMT_STREAM, NULL, &err);
    cav_record r;
    make_row(&r, 3);
    CHECK(cav_writer_put(w, &r, &err) == 0);
    CHECK(cav_writer_put(w, &r, &err) == 0); /* the stream writer does not look; the reader must */
    cav_record_clear(&r);
    CHECK(cav_writer_close(w, &err) == 0);
    size_t n;
    unsigned char *b = slurp(p, &n);
    EXPECT_BAD(b, n, "hostile", "record 1", "clip-003", "id", "duplicated");
    free(b);
    /* the shard writer refuses it at once and stays usable */
    mkpath(p, sizeof p, "dup.h5");
    w = cav_writer_open(p, CAV_FMT_SHARD, NULL, &err);
    REQUIRE(w != NULL);
    make_row(&r, 3);
    CHECK(cav_writer_put(w, &r, &err) == 0);
    CHECK(cav_writer_put(w, &r, &err) == -1 && err.code == CAV_EXIT_INPUT && strstr(err.msg, "duplicated") &&
          strstr(err.msg, "clip-003"));
    cav_record_clear(&r);
    make_row(&r, 4);
    cav_tensor *t = cav_record_find(&r, "fix_u8");
    t->dtype = CAV_I16 == t->dtype ? CAV_U8 : CAV_I16; /* same bytes, other dtype */
    t->nbytes = 24 * 2;
    t->data = realloc(t->data, t->nbytes);
    CHECK(cav_writer_put(w, &r, &err) == -1 && err.code == CAV_EXIT_INPUT && strstr(err.msg, "fix_u8") &&
          strstr(err.msg, "dtype"));
    cav_record_clear(&r);
    CHECK(cav_writer_close(w, &err) == 0);
    cav_shard *s = cav_shard_open(p, &err);
    CHECK(s && cav_shard_rows(s) == 1);
    cav_shard_close(s);
}

static void shard_truncated(void) {
    char a[300], b[300];
    mkpath(a, sizeof a, "a.h5");
    mkpath(b, sizeof b, "trunc.h5");
    size_t n;
    unsigned char *d = slurp(a, &n);
    REQUIRE(d && n > 4096);
    size_t cuts[] = {8, 100, 2048, n / 2, n - 200, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        FILE *f = fopen(b, "wb");
        fwrite(d, 1, cuts[i], f);
        fclose(f);
        cav_err err = {0};
        cav_reader *rd = cav_reader_open(b, &err);
        int code = 0;
        if (!rd) {
            code = err.code;
        } else { /* HDF5 may open it if the metadata survived; then rows must fail */
            cav_record r;
            cav_record_init(&r);
            int st;
            while ((st = cav_reader_next(rd, &r, &err)) == 1) {
            }
            cav_record_clear(&r);
            cav_reader_close(rd);
            code = st < 0 ? err.code : 0;
        }
        if (code != CAV_EXIT_INPUT || !strstr(err.msg, "trunc.h5"))
            fprintf(stderr, "  cut %zu: %d %s\n", cuts[i], code, err.msg);
        CHECK(code == CAV_EXIT_INPUT && strstr(err.msg, "trunc.h5"));
    }
    free(d);
}

static void filter_refuses_corrupt_chunks(void) {
    size_t n = 1000, bs = n;
    unsigned char *src = malloc(n);
    for (size_t i = 0; i < n; i++) src[i] = (unsigned char)(i * 7);
    void *buf = malloc(n);
    memcpy(buf, src, n);
    unsigned cd = 5;
    size_t c = cav_h5z_zstd_filter(0, 1, &cd, n, &bs, &buf);
    REQUIRE(c > 0 && c < n);
    unsigned char *good = malloc(c);
    memcpy(good, buf, c);
    size_t d = cav_h5z_zstd_filter(H5Z_FLAG_REVERSE, 1, &cd, c, &bs, &buf);
    CHECK(d == n && memcmp(buf, src, n) == 0);
    free(buf);
    /* flipped payload byte (checksum), truncated frame, garbage */
    buf = malloc(c);
    memcpy(buf, good, c);
    ((unsigned char *)buf)[c / 2] ^= 1;
    CHECK(cav_h5z_zstd_filter(H5Z_FLAG_REVERSE, 1, &cd, c, &bs, &buf) == 0);
    memcpy(buf, good, c);
    CHECK(cav_h5z_zstd_filter(H5Z_FLAG_REVERSE, 1, &cd, c - 3, &bs, &buf) == 0);
    memset(buf, 0xab, c);
    CHECK(cav_h5z_zstd_filter(H5Z_FLAG_REVERSE, 1, &cd, c, &bs, &buf) == 0);
    free(buf);
    /* a frame announcing more than an HDF5 chunk can hold (8 GiB) is refused without allocating it */
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_CCtx_setPledgedSrcSize(cc, UINT64_C(8) << 30);
    unsigned char out[256];
    ZSTD_outBuffer ob = {out, sizeof out, 0};
    ZSTD_inBuffer ib = {src, 10, 0};
    ZSTD_compressStream2(cc, &ob, &ib, ZSTD_e_flush);
    ZSTD_freeCCtx(cc);
    buf = malloc(ob.pos);
    memcpy(buf, out, ob.pos);
    CHECK(ZSTD_getFrameContentSize(out, ob.pos) == (UINT64_C(8) << 30));
    CHECK(cav_h5z_zstd_filter(H5Z_FLAG_REVERSE, 1, &cd, ob.pos, &bs, &buf) == 0);
    free(buf);
    free(good);
    free(src);
}

typedef struct {
    cav_shard *s;
    int seed, bad;
} thread_arg;
static void *reader_thread(void *p) {
    thread_arg *a = p;
    cav_record r, e;
    cav_record_init(&r);
    uint64_t st = (uint64_t)a->seed;
    cav_err err;
    for (int i = 0; i < 60; i++) {
        int row = (int)(lcg(&st) >> 33) % NROWS;
        if (cav_shard_read(a->s, row, &r, &err)) {
            a->bad++;
            continue;
        }
        make_row(&e, row);
        if (!cav_record_equal(&r, &e)) a->bad++;
        cav_record_clear(&e);
    }
    cav_record_clear(&r);
    return NULL;
}

static void shard_concurrent_readers(void) {
    char p[300];
    mkpath(p, sizeof p, "a.h5");
    cav_err err;
    cav_shard *s = cav_shard_open(p, &err);
    REQUIRE(s != NULL);
    pthread_t th[4];
    thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg){s, i + 1, 0};
        pthread_create(&th[i], NULL, reader_thread, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].bad == 0);
    }
    cav_shard_close(s);
}

static void sniffing_and_provenance(void) {
    CHECK(cav_format_for_path("x.h5") == CAV_FMT_SHARD);
    CHECK(cav_format_for_path("dir/x.hdf5") == CAV_FMT_SHARD);
    CHECK(cav_format_for_path("-") == CAV_FMT_STREAM);
    CHECK(cav_format_for_path("x.cavs") == CAV_FMT_STREAM);
    char p[300];
    mkpath(p, sizeof p, "junk.bin");
    FILE *f = fopen(p, "wb");
    fputs("hello, not a container", f);
    fclose(f);
    cav_err err;
    CHECK(cav_reader_open(p, &err) == NULL && err.code == CAV_EXIT_INPUT && strstr(err.msg, "junk.bin"));
    CHECK(cav_writer_open("-", CAV_FMT_SHARD, NULL, &err) == NULL);
    cav_attrs a;
    cav_attrs_init(&a);
    char *argv[] = {"shard-pack", "-o", "out-%03d.h5", "it's", NULL};
    CHECK(cav_attrs_provenance(&a, 4, argv) == 0);
    CHECK(cav_attrs_get(&a, "args") && strcmp(cav_attrs_get(&a, "args"), "-o out-%03d.h5 'it'\\''s'") == 0);
    CHECK(cav_attrs_provenance(&a, 1, argv) == 0);
    const char *h = cav_attrs_get(&a, "history");
    CHECK(h && strchr(h, '\n') && strstr(h, "'it'\\''s'"));
    cav_attrs_clear(&a);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_containers.XXXXXX");
    if (!mkdtemp(tmpdir)) return perror("mkdtemp"), 1;
    TEST(stream_round_trip);
    TEST(shard_round_trip);
    TEST(shard_to_stream);
    TEST(stream_truncated_everywhere);
    TEST(stream_hostile_headers);
    TEST(stream_duplicate_id);
    TEST(shard_truncated);
    TEST(filter_refuses_corrupt_chunks);
    TEST(shard_concurrent_readers);
    TEST(sniffing_and_provenance);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd)) return 1;
    return harness_exit();
}
