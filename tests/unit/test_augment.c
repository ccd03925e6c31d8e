/* test_augment.c: the loader's transforms against PyTorch (tests/ref/gen_augment.py: cut/pad, SpecAugment
 * masks, normalisation, torch.roll, ToTensor+Normalize), bit for bit; and the draws' ranges. */
#include "augment.h"
#include "harness.h"
#include "testdata.h"

#define GEN "gen_augment"

static float max_abs_diff(const float *a, const float *b, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (!(d <= m)) m = d; /* NaN propagates as a failure */
    }
    return m;
}

static int expect(const char *name, const float *got, size_t n) {
    size_t nb;
    float *want = ref_read(GEN, name, &nb);
    if (!want || nb != n * sizeof(float)) {
        fprintf(stderr, "  %s: golden file missing or of the wrong size\n", name);
        free(want);
        return 0;
    }
    float d = max_abs_diff(got, want, n);
    if (d != 0) fprintf(stderr, "  %s: max abs diff %g\n", name, d);
    free(want);
    return d == 0;
}

static void audio_transforms_match_torch(void) {
    char path[4096];
    REQUIRE(ref_path(path, sizeof path, GEN, "index.txt"));
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL);
    char name[64];
    int m, T, F, shift, ncases = 0;
    cav_specaug sa;
    while (fscanf(f, "%63s %d %d %d %d %d %d %d %d", name, &m, &T, &F, &sa.f0, &sa.fw, &sa.t0, &sa.tw,
                  &shift) == 9) {
        char fn[128];
        size_t nb;
        snprintf(fn, sizeof fn, "%s.in", name);
        float *in = ref_read(GEN, fn, &nb);
        REQUIRE(in && nb == (size_t)m * F * sizeof(float));
        float *a = malloc((size_t)T * F * sizeof *a), *b = malloc((size_t)T * F * sizeof *b);
        cav_fbank_fit(in, m, F, T, a);
        snprintf(fn, sizeof fn, "%s.fit", name);
        CHECK(expect(fn, a, (size_t)T * F));
        cav_specaug_apply(a, T, F, sa);
        snprintf(fn, sizeof fn, "%s.spec", name);
        CHECK(expect(fn, a, (size_t)T * F));
        cav_fbank_normalize(a, (int64_t)T * F, CAV_FBANK_MEAN, CAV_FBANK_STD);
        snprintf(fn, sizeof fn, "%s.norm", name);
        CHECK(expect(fn, a, (size_t)T * F));
        cav_roll_time(a, b, T, F, shift);
        snprintf(fn, sizeof fn, "%s.roll", name);
        CHECK(expect(fn, b, (size_t)T * F));
        free(in);
        free(a);
        free(b);
        ncases++;
    }
    fclose(f);
    CHECK(ncases == 4);
}

static void image_normalize_matches_torchvision(void) {
    size_t nb;
    uint8_t *img = ref_read(GEN, "image.in", &nb);
    REQUIRE(img && nb == 224 * 224 * 3);
    float *out = malloc(3 * 224 * 224 * sizeof *out);
    cav_image_normalize(img, 224, 224, cav_imagenet_mean, cav_imagenet_std, out);
    CHECK(expect("image.out", out, 3 * 224 * 224));
    free(img);
    free(out);
}

static void draws_stay_in_range(void) {
    cav_rng r;
    cav_rng_seed(&r, 7, CAV_RNG_SPECAUG, 0, 0);
    int seen_neg = 0, seen_pos = 0;
    for (int i = 0; i < 20000; i++) {
        cav_specaug s = cav_specaug_draw(&r, 1024, 128, 48, 192);
        CHECK(s.fw >= 0 && s.fw < 48 && s.f0 >= 0 && s.f0 + s.fw <= 128);
        CHECK(s.tw >= 0 && s.tw < 192 && s.t0 >= 0 && s.t0 + s.tw <= 1024);
        int sh = cav_roll_draw(&r, 1024);
        CHECK(sh >= -1024 && sh <= 1023);
        seen_neg |= sh == -1024;
        seen_pos |= sh == 1023;
        float sc = cav_noise_scale_draw(&r);
        CHECK(sc >= 0 && sc < 0.1f);
        if (harness_cur_failed) return;
    }
    CHECK(seen_neg && seen_pos); /* both ends of [-1024, 1023] occur in 20000 draws (p of missing ~ 1e-8) */
    cav_specaug none = cav_specaug_draw(&r, 1024, 128, 0, 0);
    CHECK(none.fw == 0 && none.tw == 0);
}

/* A mask wider than the axis (timem 192 on 64 frames) draws a negative start; torchaudio then masks
 * [0, start + width), and nothing outside the buffer is touched (ASan build). */
static void mask_wider_than_axis(void) {
    enum { T = 64, F = 8 };
    float fb[T * F];
    cav_rng r;
    cav_rng_seed(&r, 3, CAV_RNG_SPECAUG, 0, 0);
    int seen_neg = 0;
    for (int i = 0; i < 200; i++) {
        cav_specaug s = cav_specaug_draw(&r, T, F, 48, 192);
        for (int k = 0; k < T * F; k++) fb[k] = 1.0f;
        cav_specaug_apply(fb, T, F, s);
        seen_neg |= s.t0 < 0 || s.f0 < 0;
        for (int t = 0; t < T; t++)
            for (int f = 0; f < F; f++) {
                int masked = (f >= s.f0 && f < s.f0 + s.fw) || (t >= s.t0 && t < s.t0 + s.tw);
                CHECK(fb[t * F + f] == (masked ? 0.0f : 1.0f));
                if (harness_cur_failed) return;
            }
    }
    CHECK(seen_neg);
}

int main(void) {
    TEST(audio_transforms_match_torch);
    TEST(mask_wider_than_axis);
    TEST(image_normalize_matches_torchvision);
    TEST(draws_stay_in_range);
    return harness_exit();
}
