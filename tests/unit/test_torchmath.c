/* test_torchmath.c: lib/torchmath against PyTorch's own float32 results (tests/ref/gen_torch_f32.py), bit
 * for bit: cos on window arguments and a uniform sweep, log on mel-bank arguments and the whole float range,
 * and the cascade sum (and sum / n, torch.mean) for lengths from 1 to past 2^24, with and without a value
 * subtracted on load; plus the non-finite flag of the sum, which needs no reference data. */
#include "harness.h"
#include "torchmath.h"

#include <stdint.h>

static char refdir[1024];

static float *read_all(const char *name, long *count) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", refdir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *count = ftell(f) / 4;
    rewind(f);
    float *v = malloc(sizeof(float) * (*count + 1));
    if (v && fread(v, sizeof(float), *count, f) != (size_t)*count) {
        free(v);
        v = NULL;
    }
    fclose(f);
    return v;
}

static int same_bits(float a, float b) {
    return memcmp(&a, &b, 4) == 0 || (isnan(a) && isnan(b));
}

static void compare(const char *what, float (*fn)(float), float (*libm)(float)) {
    char in_name[64], out_name[64];
    snprintf(in_name, sizeof in_name, "%s_in.f32", what);
    snprintf(out_name, sizeof out_name, "%s_out.f32", what);
    long n = 0, n2 = 0;
    float *in = read_all(in_name, &n), *want = read_all(out_name, &n2);
    REQUIRE(in && want && n == n2 && n > 1000);
    long differ = 0, differ_libm = 0;
    for (long i = 0; i < n; i++) {
        differ += !same_bits(fn(in[i]), want[i]);
        differ_libm += !same_bits(libm(in[i]), want[i]);
    }
    printf("  %s: %ld of %ld values differ from torch (glibc's %sf: %ld)\n", what, differ, n, what,
           differ_libm);
    CHECK(differ == 0);
    free(in), free(want);
}

static void cos_matches_torch(void) {
    compare("cos", cav_torch_cosf, cosf);
    CHECK(isnan(cav_torch_cosf(125.0f)) && isnan(cav_torch_cosf(NAN)));
}

static void log_matches_torch(void) {
    compare("log", cav_torch_logf, logf);
}

/* gen_torch_f32.py's sum_input */
static void sum_input(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t h = (uint32_t)((uint64_t)i * 2654435761u);
        x[i] = (float)(h & 0xFFFF) / 32768.0f - 0.25f;
    }
}

static float from_bits(unsigned u) {
    float f;
    uint32_t v = u;
    memcpy(&f, &v, 4);
    return f;
}

static void sum_matches_torch(void) {
    char path[1200];
    snprintf(path, sizeof path, "%s/sum.txt", refdir);
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL);
    long long n;
    unsigned sb, sumb, meanb;
    int cases = 0, bad_sum = 0, bad_mean = 0;
    long long longest = 0;
    float *x = NULL;
    long long have = -1;
    while (fscanf(f, "%lld %x %x %x", &n, &sb, &sumb, &meanb) == 4) {
        if (n != have) {
            free(x);
            x = malloc(sizeof(float) * (size_t)n);
            REQUIRE(x);
            sum_input(x, n);
            have = n;
        }
        uint32_t bad = 1;
        float s = cav_torch_sum(x, n, from_bits(sb), &bad);
        float m = s / (float)n;
        if (!same_bits(s, from_bits(sumb))) {
            if (bad_sum++ < 5)
                printf("  n=%lld sub=%g: sum %.9g, torch %.9g\n", n, from_bits(sb), s, from_bits(sumb));
        }
        bad_mean += !same_bits(m, from_bits(meanb));
        CHECK(bad == 0);
        cases++;
        if (n > longest) longest = n;
    }
    fclose(f);
    free(x);
    printf("  sum: %d cases (lengths up to %lld): %d sums and %d means differ from torch\n", cases, longest,
           bad_sum, bad_mean);
    CHECK(cases >= 100 && bad_sum == 0 && bad_mean == 0 && longest > (1 << 24));
}

static void sum_flags_non_finite(void) {
    static const int lengths[] = {1, 5, 8, 13, 64, 400, 4099};
    for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
        int n = lengths[l];
        float *x = calloc(n, sizeof(float));
        REQUIRE(x);
        uint32_t bad = 1;
        cav_torch_sum(x, n, 0.0f, &bad);
        CHECK(bad == 0);
        for (int pos = 0; pos < n; pos += n / 3 + 1) {
            for (int k = 0; k < 3; k++) {
                x[pos] = k == 0 ? NAN : k == 1 ? INFINITY : -INFINITY;
                bad = 0;
                cav_torch_sum(x, n, 0.0f, &bad);
                CHECK(bad != 0);
            }
            x[pos] = 0.0f;
        }
        free(x);
    }
}

int main(void) {
    const char *base = getenv("CAV_REF");
    snprintf(refdir, sizeof refdir, "%s/gen_torch_f32", base ? base : "build/ref");
    TEST(cos_matches_torch);
    TEST(log_matches_torch);
    TEST(sum_matches_torch);
    TEST(sum_flags_non_finite);
    return harness_exit();
}
