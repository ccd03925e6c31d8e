/* test_bf16.c: kernels/cuda/bf16.h on the host against PyTorch (golden data of tests/ref/gen_bf16.py, under
 * $CAV_REF/gen_bf16): float -> bf16 rounding bit for bit (ties to even and to odd, either side of a tie,
 * subnormals, overflow to infinity, +-0, +-inf; a NaN must stay a NaN: torch's AVX2 path writes 0xFFFF where
 * c10::BFloat16, and bf16.h, write 0x7FC0), bf16 -> float for all 65536 patterns, and the emulated bf16
 * linear against torch's bf16 F.linear and its float32 matmul of the rounded inputs. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/bf16.h"
#include "harness.h"
#include "testdata.h"

#define GEN "gen_bf16"

/* ref_read, saying which file is missing */
static void *read_ref(const char *name, long *bytes) {
    size_t n = 0;
    void *p = ref_read(GEN, name, &n);
    if (!p) fprintf(stderr, "  cannot read $CAV_REF/%s/%s (make refs)\n", GEN, name);
    *bytes = (long)n;
    return p;
}

static int bf16_is_nan(uint16_t h) {
    return (h & 0x7F80) == 0x7F80 && (h & 0x7F) != 0;
}

static void rounding_matches_torch(void) {
    long nb, nb2;
    uint32_t *in = read_ref("round_in.u32", &nb);
    uint16_t *want = read_ref("round_out.u16", &nb2);
    REQUIRE(in && want && nb / 4 == nb2 / 2 && nb > 4000);
    long n = nb / 4, bad = 0, ties = 0, nans = 0;
    for (long i = 0; i < n; i++) {
        float x;
        memcpy(&x, &in[i], sizeof x);
        uint16_t got = cav_bf16_from_f32(x);
        int ok = isnan(x) ? bf16_is_nan(got) && bf16_is_nan(want[i]) : got == want[i];
        ties += (in[i] & 0xFFFF) == 0x8000, nans += isnan(x) != 0;
        if (!ok && bad++ < 5) fprintf(stderr, "  %08x: got %04x, torch %04x\n", in[i], got, want[i]);
    }
    fprintf(stderr, "  %ld roundings (%ld ties, %ld NaNs): %ld differ\n", n, ties, nans, bad);
    CHECK(bad == 0 && ties > 1000 && nans > 10);
    free(in), free(want);
}

static void widening_matches_torch(void) {
    long nb;
    uint32_t *want = read_ref("widen_out.u32", &nb);
    REQUIRE(want && nb == 65536 * 4);
    long bad = 0, trip = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float x = cav_bf16_to_f32((uint16_t)h);
        uint32_t u;
        memcpy(&u, &x, sizeof u);
        bad += u != want[h];
        /* and back: every bf16 but a NaN is its own rounding */
        trip += !bf16_is_nan((uint16_t)h) && cav_bf16_from_f32(x) != h;
    }
    fprintf(stderr, "  65536 widenings: %ld differ, %ld do not round back\n", bad, trip);
    CHECK(bad == 0 && trip == 0);
    free(want);
}

/* bf16 values as integers ordered like the values (negatives below positives), for ulp distances */
static int32_t bf16_order(uint16_t h) {
    return h & 0x8000 ? -(int32_t)(h & 0x7FFF) : (int32_t)h;
}

/* The emulated linear: (1) against torch's float32 matmul of the same bf16-rounded inputs, max |diff| over
 * max |torch| within LIN_TOL: the products are exact on both sides, so only the order of the K-term float
 * sums differs, a random-walk error of about sqrt(K) eps relative to the rms term, far below an input that
 * missed its rounding (2^-9 relative per term: ~1e-3 of the result); measured up to 4e-7, LIN_TOL 4e-6.
 * (2) against torch's bf16 F.linear (the float32 sum rounded to bf16): our float result rounded to bf16
 * within 1 bf16 ulp (the two float sums differ by a few float ulps, which flips the bf16 rounding only next
 * to a tie between two bf16 neighbours), and most of them equal. */
#define LIN_TOL 4e-6
static void linear_matches_torch(void) {
    char path[1200];
    FILE *idx = ref_path(path, sizeof path, GEN, "index.txt") ? fopen(path, "r") : NULL;
    REQUIRE(idx != NULL);
    char line[256];
    int cases = 0;
    while (fgets(line, sizeof line, idx)) {
        int M, K, N;
        if (sscanf(line, "linear %d %d %d", &M, &K, &N) != 3) continue;
        char name[5][96];
        static const char *suffix[5] = {"x.f32", "w.f32", "b.f32", "f32.f32", "bf16.u16"};
        void *d[5];
        long bytes[5];
        int ok = 1;
        for (int i = 0; i < 5; i++) {
            snprintf(name[i], sizeof name[i], "linear_%d_%d_%d_%s", M, K, N, suffix[i]);
            d[i] = read_ref(name[i], &bytes[i]);
            ok &= d[i] != NULL;
        }
        REQUIRE(ok && bytes[0] == 4L * M * K && bytes[1] == 4L * N * K && bytes[2] == 4L * N &&
                bytes[3] == 4L * M * N && bytes[4] == 2L * M * N);
        const float *x = d[0], *w = d[1], *b = d[2], *f32 = d[3];
        const uint16_t *b16 = d[4];
        float *y = malloc(sizeof(float) * M * N);
        cav_bf16_linear_host(y, x, w, b, M, K, N);
        double dmax = 0, ymax = 0;
        long far = 0, equal = 0;
        for (long i = 0; i < (long)M * N; i++) {
            dmax = fmax(dmax, fabs((double)y[i] - f32[i])), ymax = fmax(ymax, fabs((double)f32[i]));
            int32_t u = bf16_order(cav_bf16_from_f32(y[i])) - bf16_order(b16[i]);
            far += u > 1 || u < -1, equal += u == 0;
        }
        double r = ymax > 0 ? dmax / ymax : dmax;
        fprintf(stderr, "  linear %d x %d -> %d: fp32 rel %.3g; bf16: %ld of %d equal, %ld over 1 ulp\n", M,
                K, N, r, equal, M * N, far);
        CHECK(r <= LIN_TOL);
        CHECK(far == 0 && equal >= (long)M * N * 9 / 10);
        free(y);
        for (int i = 0; i < 5; i++) free(d[i]);
        cases++;
    }
    fclose(idx);
    CHECK(cases >= 4);
}

int main(void) {
    TEST(rounding_matches_torch);
    TEST(widening_matches_torch);
    TEST(linear_matches_torch);
    return harness_exit();
}
