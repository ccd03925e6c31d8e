/* test_pth.c: the .pth importer against files Debian's torch wrote (tests/ref/gen_pth.py): the tiny CAV-MAE
 * state dict in the zip and legacy formats, with DataParallel's `module.` prefix and inside {"model": ...},
 * and a file of views (transposed, sliced, shared, expanded) and other dtypes; every tensor is compared
 * bit for bit with the raw dump gen_pth wrote from torch's own .float().contiguous(). Then the hostile
 * files (unknown global, a pickle calling os.system, truncated zip and legacy stream, a short storage,
 * junk), each refused with code 2, and hand-made pickles for the machine's own checks. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "pth.h"
#include "rawdump.h"

static char dir[512];

static int have_ref(void) {
    const char *ref = getenv("CAV_REF");
    if (!ref) return 0;
    snprintf(dir, sizeof dir, "%s/gen_pth", ref);
    char p[600];
    snprintf(p, sizeof p, "%s/tiny_state.raw", dir);
    return access(p, R_OK) == 0;
}

/* Loads pth file `name` and compares with raw dump `raw`: same names, shapes and bits. */
static int matches(const char *name, const char *raw) {
    char p[600], r[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    snprintf(r, sizeof r, "%s/%s", dir, raw);
    raw_dump want;
    if (raw_load(&want, r)) {
        fprintf(stderr, "  cannot read %s\n", r);
        return 0;
    }
    cav_pth got;
    cav_err err = {0};
    if (cav_pth_load(&got, p, &err)) {
        fprintf(stderr, "  %s\n", err.msg);
        raw_free(&want);
        return 0;
    }
    int ok = got.n == want.n;
    if (!ok) fprintf(stderr, "  %s: %d tensors, expected %d\n", name, got.n, want.n);
    for (int i = 0; i < want.n; i++) {
        const raw_tensor *w = &want.t[i];
        const cav_pth_tensor *t = cav_pth_find(&got, w->name);
        if (!t || t->ndim != w->ndim || memcmp(t->shape, w->shape, sizeof(int64_t) * (size_t)w->ndim) ||
            t->numel != w->numel || memcmp(t->data, w->v, w->numel * 4)) {
            fprintf(stderr, "  %s: tensor %s missing or different\n", name, w->name);
            ok = 0;
        }
    }
    cav_pth_free(&got);
    raw_free(&want);
    return ok;
}

static void test_zip_state_dict(void) {
    if (!have_ref()) SKIP("gen_pth golden data missing (run through make check)");
    CHECK(matches("tiny_state.pth", "tiny_state.raw"));
}

static void test_legacy_state_dict(void) {
    if (!have_ref()) SKIP("gen_pth golden data missing (run through make check)");
    CHECK(matches("tiny_state_legacy.pth", "tiny_state.raw"));
}

static void test_module_prefix_and_wrapper(void) {
    if (!have_ref()) SKIP("gen_pth golden data missing (run through make check)");
    CHECK(matches("module_state.pth", "tiny_state.raw"));
    CHECK(matches("wrapped_state.pth", "tiny_state.raw"));
}

static void test_views_and_dtypes(void) {
    if (!have_ref()) SKIP("gen_pth golden data missing (run through make check)");
    CHECK(matches("views.pth", "views.raw"));
    CHECK(matches("views_legacy.pth", "views.raw"));
    char p[600];
    snprintf(p, sizeof p, "%s/views.pth", dir);
    cav_pth got;
    cav_err err = {0};
    REQUIRE(cav_pth_load(&got, p, &err) == 0);
    const cav_pth_tensor *t = cav_pth_find(&got, "f16");
    CHECK(t && !strcmp(t->src_dtype, "Half"));
    t = cav_pth_find(&got, "scalar");
    CHECK(t && t->ndim == 0 && t->numel == 1 && t->data[0] == 2.75f);
    t = cav_pth_find(&got, "transposed");
    CHECK(t && t->ndim == 2 && t->shape[0] == 6 && t->shape[1] == 4 && t->data[1] == 0.0f &&
          t->data[4] == -2.5f);
    cav_pth_free(&got);
}

static int refused(const char *name, const char *expect) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    cav_pth got;
    cav_err err = {0};
    int rc = cav_pth_load(&got, p, &err);
    if (rc == 0) {
        cav_pth_free(&got);
        fprintf(stderr, "  %s accepted\n", name);
        return 0;
    }
    if (err.code != 2 || (expect && !strstr(err.msg, expect))) {
        fprintf(stderr, "  %s: code %d: %s\n", name, err.code, err.msg);
        return 0;
    }
    return got.n == 0 && got.t == NULL;
}

static void test_hostile_files(void) {
    if (!have_ref()) SKIP("gen_pth golden data missing (run through make check)");
    CHECK(refused("bad_global.pth", "argparse.Namespace refused"));
    CHECK(refused("bad_exec.pth", "os.system refused"));
    CHECK(access("/tmp/pwn", F_OK) != 0);
    CHECK(refused("truncated.pth", NULL));
    CHECK(refused("truncated_legacy.pth", NULL));
    CHECK(refused("short_storage.pth", "storage"));
    CHECK(refused("not_torch.pth", NULL));
    CHECK(refused("does_not_exist.pth", "does_not_exist"));
}

/* Hand-made pickles (zip-less legacy path is not needed: a zip with just data.pkl is enough). */
static void write_zip_pkl(const char *path, const unsigned char *pkl, size_t n) {
    /* A minimal stored zip: one local header, the central directory, the end record. */
    FILE *f = fopen(path, "wb");
    const char *name = "a/data.pkl";
    uint16_t nl = (uint16_t)strlen(name);
    unsigned char lh[30] = {0x50, 0x4b, 0x03, 0x04, 20, 0};
    uint32_t sz = (uint32_t)n;
    memcpy(lh + 18, &sz, 4);
    memcpy(lh + 22, &sz, 4);
    memcpy(lh + 26, &nl, 2);
    fwrite(lh, 1, 30, f);
    fwrite(name, 1, nl, f);
    fwrite(pkl, 1, n, f);
    uint32_t cdoff = 30 + nl + sz;
    unsigned char cd[46] = {0x50, 0x4b, 0x01, 0x02, 20, 0, 20, 0};
    memcpy(cd + 20, &sz, 4);
    memcpy(cd + 24, &sz, 4);
    memcpy(cd + 28, &nl, 2);
    fwrite(cd, 1, 46, f);
    fwrite(name, 1, nl, f);
    unsigned char eo[22] = {0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0, 1, 0, 1, 0};
    uint32_t cds = 46 + nl;
    memcpy(eo + 12, &cds, 4);
    memcpy(eo + 16, &cdoff, 4);
    fwrite(eo, 1, 22, f);
    fclose(f);
}

static int pkl_code(const char *pkl, size_t n, const char *expect) {
    char p[] = "/tmp/test_pth_XXXXXX";
    int fd = mkstemp(p);
    if (fd < 0) return 0;
    close(fd);
    write_zip_pkl(p, (const unsigned char *)pkl, n);
    cav_pth got;
    cav_err err = {0};
    int rc = cav_pth_load(&got, p, &err);
    unlink(p);
    if (rc == 0) {
        int n_ = got.n;
        cav_pth_free(&got);
        return expect ? 0 : n_ + 100; /* accepted: 100 + tensor count */
    }
    if (!expect || !strstr(err.msg, expect)) fprintf(stderr, "  code %d: %s\n", err.code, err.msg);
    return err.code == 2 && expect && strstr(err.msg, expect) ? 2 : -1;
}

static void test_pickle_machine(void) {
    /* An empty dict is a valid, empty state dict. */
    CHECK(pkl_code("\x80\x02}.", 4, NULL) == 100);
    CHECK(pkl_code("\x80\x02\x63__builtin__\neval\n.", 20, "__builtin__.eval refused") == 2);
    CHECK(pkl_code("\x80\x02\x8c\x08"
                   "builtins\x8c\x04"
                   "exec\x93.",
                   20, "builtins.exec refused") == 2);
    CHECK(pkl_code("\x80\x02}", 3, "truncated") == 2);
    CHECK(pkl_code("\x80\x02.", 3, "underflow") == 2);
    CHECK(pkl_code("\x80\x02h\x05.", 5, "memo") == 2);
    CHECK(pkl_code("\x80\x02(u.", 5, "SETITEMS") == 2);
    CHECK(pkl_code("\x80\x02\xff.", 4, "opcode 0xff") == 2);
    CHECK(pkl_code("\x80\x02X\xff\xff\xff\x7f.", 8, "truncated") == 2);
    CHECK(pkl_code("\x80\x02]N\x85Q.", 6, "persistent id") == 2);
    /* A tensor whose storage entry is missing from the zip. */
    const char t[] = "\x80\x02}X\x01\x00\x00\x00w"
                     "ctorch._utils\n_rebuild_tensor_v2\n"
                     "((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00"
                     "0X\x03\x00\x00\x00"
                     "cpuK\x02tQ"
                     "K\x00K\x02\x85K\x01\x85\x89)tRs.";
    CHECK(pkl_code(t, sizeof t - 1, "not in the file") == 2);
}

int main(void) {
    TEST(test_zip_state_dict);
    TEST(test_legacy_state_dict);
    TEST(test_module_prefix_and_wrapper);
    TEST(test_views_and_dtypes);
    TEST(test_hostile_files);
    TEST(test_pickle_machine);
    return harness_exit();
}
