/* test_rfft.c: lib/media/rfft.c against torch.fft.rfft (pocketfft, float32) on the signals of
 * tests/ref/gen_torch_f32.py, bit for bit, for every length there (2 to 4096), through the eight-lane
 * transform (each lane a different signal) and the single-signal call; plus the plan's refusals and an
 * independent check of the transform's values against a float64 DFT, which needs no reference data. */
#include "harness.h"
#include "testdata.h"
#include "rfft.h"

#include <stdint.h>

static char refdir[1024];

static void plans_only_for_powers_of_two(void) {
    static const int bad[] = {-4, 0, 1, 3, 6, 12, 400, 1000};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) CHECK(cav_rfft_new(bad[i]) == NULL);
    for (int n = 2; n <= 1 << 16; n *= 2) {
        cav_rfft *p = cav_rfft_new(n);
        CHECK(p != NULL && cav_rfft_size(p) == n);
        cav_rfft_free(p);
    }
    cav_rfft_free(NULL);
}

/* Needs no torch: the transform of a few signals against a float64 DFT, relative to the signal's norm. */
static void matches_dft(void) {
    for (int n = 2; n <= 1024; n *= 2) {
        cav_rfft *p = cav_rfft_new(n);
        REQUIRE(p);
        float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * (n + 2));
        uint64_t s = 12345 + n;
        double norm = 0, worst = 0;
        for (int j = 0; j < n; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            x[j] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
            norm += (double)x[j] * x[j];
        }
        REQUIRE(cav_rfft_forward(p, x, y) == 0);
        for (int k = 0; k <= n / 2; k++) {
            double re = 0, im = 0;
            for (int j = 0; j < n; j++) {
                double a = -2 * M_PI * (double)((int64_t)j * k % n) / n;
                re += x[j] * cos(a), im += x[j] * sin(a);
            }
            double d = hypot(y[2 * k] - re, y[2 * k + 1] - im);
            if (d > worst) worst = d;
        }
        CHECK(worst <= 1e-6 * sqrt(norm) * log2(n + 1.0));
        free(x), free(y);
        cav_rfft_free(p);
    }
}

static void bit_identical_to_torch(void) {
    char path[1200];
    snprintf(path, sizeof path, "%s/index.txt", refdir);
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL);
    int n, rows, lengths = 0;
    char line[256], kind[16];
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%15s %d %d", kind, &n, &rows) != 3 || strcmp(kind, "rfft")) continue;
        lengths++;
        snprintf(path, sizeof path, "%s/rfft_in_%d.f32", refdir, n);
        float *in = read_f32(path, (size_t)rows * n);
        snprintf(path, sizeof path, "%s/rfft_out_%d.f32", refdir, n);
        float *want = read_f32(path, (size_t)rows * (n + 2));
        cav_rfft *p = cav_rfft_new(n);
        float *x = aligned_alloc(32, sizeof(float) * 16 * n), *one = malloc(sizeof(float) * (n + 2));
        REQUIRE(in && want && p && x && one);
        long differ = 0, differ_one = 0;
        for (int r0 = 0; r0 < rows; r0 += 8) {
            for (int j = 0; j < n; j++)
                for (int l = 0; l < 8; l++)
                    x[j * 8 + l] = r0 + l < rows ? in[(size_t)(r0 + l) * n + j] : 0.0f;
            const float *h = cav_rfft_forward8(p, x, x + 8 * n);
            for (int l = 0; l < 8 && r0 + l < rows; l++) {
                const float *w = want + (size_t)(r0 + l) * (n + 2);
                /* half-complex r0, r1, i1, ..., r(n/2) against (re, im) pairs; the zero imaginary parts too
                 */
                float got[2] = {h[l], 0.0f};
                differ += memcmp(got, w, 8) != 0;
                for (int k = 1; k < n / 2; k++) {
                    got[0] = h[(2 * k - 1) * 8 + l], got[1] = h[2 * k * 8 + l];
                    differ += memcmp(got, w + 2 * k, 8) != 0;
                }
                got[0] = h[(n - 1) * 8 + l], got[1] = 0.0f;
                differ += memcmp(got, w + n, 8) != 0;
            }
        }
        for (int r = 0; r < rows; r++) {
            REQUIRE(cav_rfft_forward(p, in + (size_t)r * n, one) == 0);
            differ_one += memcmp(one, want + (size_t)r * (n + 2), sizeof(float) * (n + 2)) != 0;
        }
        printf(
            "  N=%d: %d signals, %ld of %d bins differ from torch.fft.rfft (8-lane), %ld signals (single)\n",
            n, rows, differ, rows * (n / 2 + 1), differ_one);
        CHECK(differ == 0 && differ_one == 0);
        free(in), free(want), free(x), free(one);
        cav_rfft_free(p);
    }
    fclose(f);
    CHECK(lengths >= 8);
}

int main(void) {
    const char *base = getenv("CAV_REF");
    snprintf(refdir, sizeof refdir, "%s/gen_torch_f32", base ? base : "build/ref");
    TEST(plans_only_for_powers_of_two);
    TEST(matches_dft);
    TEST(bit_identical_to_torch);
    return harness_exit();
}
