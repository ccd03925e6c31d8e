/* test_safetensors.c: safetensors round trip (C writes, C reads back value for value, with metadata and odd
 * shapes), the strict header checks on hostile files (each must fail with code 2, under ASan without a
 * leak), and reading a file Debian's torch wrote through tests/ref/st_io.py (gen_pth's
 * tiny_state.safetensors), compared with the raw dump gen_pth wrote beside it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "safetensors.h"
#include "rawdump.h"

static char tmpdir[256];

static void path_of(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", tmpdir, name);
}

static void write_raw(const char *path, const void *hdr, size_t hlen, uint64_t claimed, const void *data,
                      size_t dlen) {
    FILE *f = fopen(path, "wb");
    unsigned char l8[8];
    for (int i = 0; i < 8; i++) l8[i] = (unsigned char)(claimed >> (8 * i));
    fwrite(l8, 1, 8, f);
    if (hlen) fwrite(hdr, 1, hlen, f);
    if (dlen) fwrite(data, 1, dlen, f);
    fclose(f);
}

static void test_round_trip(void) {
    char p[512];
    path_of(p, sizeof p, "rt.safetensors");
    float a[6] = {1.5f, -2.25f, 3e-20f, 1e30f, 0.f, -0.f};
    int64_t b[3] = {-1, 0, INT64_MAX};
    uint8_t c[1] = {200};
    double d[2] = {1.0 / 3, -7};
    uint16_t h[3] = {0x3c00, 0xc000, 0x0001}; /* 1, -2, smallest subnormal */
    cav_st_entry e[] = {
        {"x.weight", CAV_F32, 2, {2, 3}, a}, {"ids", CAV_I64, 1, {3}, b}, {"scalar", CAV_U8, 0, {0}, c},
        {"empty", CAV_F32, 2, {0, 5}, a},    {"dbl", CAV_F64, 1, {2}, d}, {"half", CAV_F16, 1, {3}, h},
    };
    const char *mk[] = {"format", "config"},
               *mv[] = {"cav-debug-state/1", "{\"embed_dim\": 192, \"q\": \"\\\"\"}"};
    cav_err err = {0};
    REQUIRE(cav_st_write(p, e, 6, mk, mv, 2, &err) == 0);
    cav_safetensors st;
    REQUIRE(cav_st_open(&st, p, &err) == 0);
    CHECK(st.n == 6);
    CHECK(st.nmeta == 2);
    CHECK(cav_st_meta(&st, "format") && !strcmp(cav_st_meta(&st, "format"), "cav-debug-state/1"));
    CHECK(cav_st_meta(&st, "config") && !strcmp(cav_st_meta(&st, "config"), mv[1]));
    CHECK(cav_st_meta(&st, "nope") == NULL);
    const cav_st_tensor *t = cav_st_find(&st, "x.weight");
    REQUIRE(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->dtype == CAV_F32 &&
            t->numel == 6);
    CHECK(((uintptr_t)t->data - (uintptr_t)st.map) % 8 == 0);
    float got[6];
    REQUIRE(cav_st_copy_f32(&st, t, got, 6, &err) == 0);
    CHECK(memcmp(got, a, sizeof a) == 0);
    CHECK(cav_st_copy_f32(&st, t, got, 5, &err) == -1 && err.code == 2);
    t = cav_st_find(&st, "ids");
    int64_t gi[3];
    REQUIRE(t && cav_st_copy_i64(&st, t, gi, 3, &err) == 0);
    CHECK(gi[0] == -1 && gi[1] == 0 && gi[2] == INT64_MAX);
    CHECK(cav_st_copy_f32(&st, t, got, 3, &err) == -1 && err.code == 2);
    t = cav_st_find(&st, "scalar");
    REQUIRE(t && t->ndim == 0 && t->numel == 1 && ((const uint8_t *)t->data)[0] == 200);
    t = cav_st_find(&st, "empty");
    REQUIRE(t && t->numel == 0 && t->nbytes == 0);
    t = cav_st_find(&st, "dbl");
    REQUIRE(t && cav_st_copy_f32(&st, t, got, 2, &err) == 0);
    CHECK(got[0] == (float)(1.0 / 3) && got[1] == -7.f);
    t = cav_st_find(&st, "half");
    REQUIRE(t && cav_st_copy_f32(&st, t, got, 3, &err) == 0);
    CHECK(got[0] == 1.f && got[1] == -2.f && got[2] == 5.9604645e-08f);
    cav_st_close(&st);
    /* Duplicate names are refused by the writer. */
    cav_st_entry dup[] = {{"a", CAV_F32, 1, {1}, a}, {"a", CAV_F32, 1, {1}, a}};
    CHECK(cav_st_write(p, dup, 2, NULL, NULL, 0, &err) == -1);
}

/* Each hostile header must be refused with code 2. */
static int refuses(const char *hdr, size_t dlen, const char *why) {
    char p[512];
    path_of(p, sizeof p, "bad.safetensors");
    static unsigned char data[4096];
    write_raw(p, hdr, strlen(hdr), strlen(hdr), data, dlen);
    cav_safetensors st;
    cav_err err = {0};
    int rc = cav_st_open(&st, p, &err);
    if (rc == 0) {
        cav_st_close(&st);
        fprintf(stderr, "  accepted (%s)\n", why);
        return 0;
    }
    if (err.code != 2) fprintf(stderr, "  %s: code %d: %s\n", why, err.code, err.msg);
    return err.code == 2 && st.map == NULL && st.t == NULL;
}

static void test_hostile_headers(void) {
    /* control: the same file made valid is accepted */
    char p[512];
    path_of(p, sizeof p, "ok.safetensors");
    const char *okh = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    static const unsigned char zeros[8];
    write_raw(p, okh, strlen(okh), strlen(okh), zeros, 8);
    cav_safetensors st;
    cav_err err = {0};
    CHECK(cav_st_open(&st, p, &err) == 0);
    cav_st_close(&st);
    CHECK(refuses("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 7, "truncated data"));
    CHECK(refuses("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 9, "trailing byte"));
    CHECK(refuses("{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype"));
    CHECK(refuses("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "shape vs bytes"));
    CHECK(refuses("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "negative dim"));
    CHECK(refuses("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, "fractional dim"));
    CHECK(refuses("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "reversed offsets"));
    CHECK(refuses("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,9]}}", 8, "three offsets"));
    CHECK(refuses("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8,
                  "extra field"));
    CHECK(refuses("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "no offsets"));
    CHECK(refuses("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                  8, "overlap"));
    CHECK(refuses("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "hole"));
    CHECK(refuses("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}", 8,
                  "shape overflow"));
    CHECK(refuses("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
                  "too many dims"));
    CHECK(refuses("{\"__metadata__\":{\"k\":1}}", 0, "non-string metadata"));
    CHECK(refuses("{\"__metadata__\":[]}", 0, "metadata not an object"));
    CHECK(refuses("[1,2]", 0, "header not an object"));
    CHECK(refuses("{\"a\":", 0, "truncated JSON"));
    CHECK(refuses("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                  8, "duplicate name"));
    CHECK(refuses("{\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "empty name"));
    CHECK(refuses("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,1e300]}}", 8, "huge offset"));
}

static void test_bad_lengths(void) {
    char p[512];
    path_of(p, sizeof p, "len.safetensors");
    cav_safetensors st;
    cav_err err = {0};
    const char *hdr = "{}      ";
    write_raw(p, hdr, 8, 8, NULL, 0);
    CHECK(cav_st_open(&st, p, &err) == 0); /* an empty file with padding is valid */
    cav_st_close(&st);
    write_raw(p, hdr, 8, 9, NULL, 0); /* header length beyond the file */
    CHECK(cav_st_open(&st, p, &err) == -1 && err.code == 2);
    write_raw(p, hdr, 8, (uint64_t)1 << 62, NULL, 0); /* huge header length */
    CHECK(cav_st_open(&st, p, &err) == -1 && err.code == 2);
    write_raw(p, hdr, 0, 0, NULL, 0);
    CHECK(cav_st_open(&st, p, &err) == -1 && err.code == 2);
    FILE *f = fopen(p, "wb");
    fwrite("abc", 1, 3, f);
    fclose(f);
    CHECK(cav_st_open(&st, p, &err) == -1 && err.code == 2);
    path_of(p, sizeof p, "does-not-exist.safetensors");
    CHECK(cav_st_open(&st, p, &err) == -1 && err.code == 2 && strstr(err.msg, "does-not-exist"));
    CHECK(cav_st_open(&st, tmpdir, &err) == -1 && err.code == 2); /* a directory */
}

/* Files written by torch through tests/ref/st_io.py (gen_pth): every tensor equals the raw little-endian
 * dump of the same tensor that gen_pth wrote beside it. */
static void test_python_written(void) {
    const char *ref = getenv("CAV_REF");
    if (!ref) SKIP("CAV_REF not set (run through make check)");
    char p[512];
    snprintf(p, sizeof p, "%s/gen_pth/tiny_state.safetensors", ref);
    if (access(p, R_OK) != 0) SKIP("gen_pth golden data missing");
    cav_safetensors st;
    cav_err err = {0};
    REQUIRE(cav_st_open(&st, p, &err) == 0);
    CHECK(st.n > 50);
    CHECK(cav_st_meta(&st, "format") != NULL);
    char rp[512];
    snprintf(rp, sizeof rp, "%s/gen_pth/tiny_state.raw", ref);
    raw_dump want;
    REQUIRE(raw_load(&want, rp) == 0);
    int bad = 0;
    for (int i = 0; i < want.n; i++) {
        const raw_tensor *w = &want.t[i];
        const cav_st_tensor *t = cav_st_find(&st, w->name);
        float *got = malloc(w->numel * 4 + 4);
        int same = t && t->ndim == w->ndim &&
                   !memcmp(t->shape, w->shape, sizeof(int64_t) * (size_t)w->ndim) &&
                   cav_st_copy_f32(&st, t, got, w->numel, &err) == 0 && !memcmp(got, w->v, w->numel * 4);
        if (!same) fprintf(stderr, "  tensor %s differs or is missing\n", w->name), bad++;
        free(got);
    }
    CHECK(bad == 0);
    CHECK(want.n == st.n);
    raw_free(&want);
    cav_st_close(&st);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_safetensors.XXXXXX");
    if (!mkdtemp(tmpdir)) return 3;
    TEST(test_round_trip);
    TEST(test_hostile_headers);
    TEST(test_bad_lengths);
    TEST(test_python_written);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return harness_exit();
}
