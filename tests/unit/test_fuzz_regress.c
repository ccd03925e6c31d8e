/* test_fuzz_regress.c: replays the fuzz targets' seed corpora (tests/fuzz/corpus/NAME/) and every input a
 * fuzzing run once crashed on (tests/fuzz/regress/NAME/), through the same entry points, without
 * libFuzzer: a crash, a sanitizer report (this test also runs in the ASan+UBSan build) or a broken
 * invariant (an error without a message) fails it. `make fuzz` runs the targets themselves. */
#define CAV_FUZZ_NO_MAIN
#include <dirent.h>
#include <sys/stat.h>

#include "harness.h"

#include "fuzz/fuzz_json.c"
#include "fuzz/fuzz_manifest.c"
#include "fuzz/fuzz_pth.c"
#include "fuzz/fuzz_records.c"
#include "fuzz/fuzz_safetensors.c"
#include "fuzz/fuzz_wav.c"

typedef int (*entry)(const uint8_t *, size_t);
static const struct {
    const char *name;
    entry fn;
} targets[] = {{"json", cav_fuzz_json},       {"manifest", cav_fuzz_manifest},       {"pth", cav_fuzz_pth},
               {"records", cav_fuzz_records}, {"safetensors", cav_fuzz_safetensors}, {"wav", cav_fuzz_wav}};

/* Runs fn over every file of dir; returns how many (-1: no such directory). */
static int replay(const char *dir, entry fn) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        FILE *f = fopen(p, "rb");
        if (!f) continue;
        struct stat st;
        size_t len = fstat(fileno(f), &st) == 0 ? (size_t)st.st_size : 0;
        uint8_t *buf = malloc(len + 1);
        if (buf && fread(buf, 1, len, f) == len) fn(buf, len), n++;
        free(buf);
        fclose(f);
    }
    closedir(d);
    return n;
}

static const char *src_dir(void) {
    const char *s = getenv("CAV_SRC");
    return s ? s : ".";
}

static void test_corpora(void) {
    for (size_t i = 0; i < sizeof targets / sizeof *targets; i++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/%s", src_dir(), targets[i].name);
        int n = replay(dir, targets[i].fn);
        CHECK(n > 0); /* every target has a seed corpus in the tree */
    }
}

static void test_regressions(void) {
    int total = 0;
    for (size_t i = 0; i < sizeof targets / sizeof *targets; i++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/tests/fuzz/regress/%s", src_dir(), targets[i].name);
        int n = replay(dir, targets[i].fn);
        if (n > 0) total += n;
    }
    printf("# fuzz regression inputs replayed: %d\n", total);
}

int main(void) {
    TEST(test_corpora);
    TEST(test_regressions);
    return harness_exit();
}
