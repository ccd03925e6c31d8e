/* test_patchify.c: patch tokens against tests/ref/gen_patchify.py (the reference's einsum patchify, the
 * PatchEmbed conv order, unfold for overlapping patches, norm_pix targets, ImageNet normalisation), and
 * round trips patchify -> unpatchify. */
#include "harness.h"
#include "augment.h"
#include "cpu.h"
#include "patchify.h"

#include <stdint.h>

static char refdir[1024];

static void *load(const char *name, size_t bytes) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", refdir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    void *v = malloc(bytes);
    size_t got = fread(v, 1, bytes, f);
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != bytes || extra) {
        free(v);
        return NULL;
    }
    return v;
}

/* Number of elements that differ by more than tol; the exact order tests use tol = 0. */
static int64_t ndiff(const float *a, const float *b, int64_t n, double tol) {
    int64_t d = 0;
    for (int64_t i = 0; i < n; i++) d += !(fabs((double)a[i] - b[i]) <= tol);
    return d;
}

static void audio_tokens_match_reference(void) {
    float *fb = load("fbank.f32", 4 * 1024 * 128), *ref = load("audio_tokens.f32", 4 * 512 * 256);
    float *conv = load("audio_conv.f32", 4 * 512 * 256);
    REQUIRE(fb && ref && conv);
    cav_plane pl = cav_plane_fbank(1024, 128);
    int ntok, dim;
    REQUIRE(cav_patch_shape(&pl, 16, 16, &ntok, &dim));
    CHECK(ntok == 512 && dim == 256);
    float *tok = malloc(4 * 512 * 256), *back = malloc(4 * 1024 * 128);
    cav_patchify_f32(&pl, fb, 16, 16, tok);
    CHECK(ndiff(tok, ref, 512 * 256, 0) == 0);
    CHECK(ndiff(tok, conv, 512 * 256, 0) == 0); /* c = 1: conv order and einsum order coincide */
    /* token k = f*64 + t covers bins 16f.. and frames 16t..; element p*16+q = bin offset p, frame q */
    CHECK(tok[(3 * 64 + 5) * 256 + 2 * 16 + 7] == fb[(5 * 16 + 7) * 128 + 3 * 16 + 2]);
    CHECK(cav_unpatchify_f32(&pl, tok, 16, 16, back) == 0);
    CHECK(memcmp(back, fb, 4 * 1024 * 128) == 0);
    free(fb), free(ref), free(conv), free(tok), free(back);
}

static void video_tokens_match_reference(void) {
    uint8_t *frame = load("frame.u8", 224 * 224 * 3);
    float *norm = load("frame_norm.f32", 4 * 224 * 224 * 3), *ref = load("video_tokens.f32", 4 * 196 * 768);
    float *conv = load("video_conv.f32", 4 * 196 * 768);
    REQUIRE(frame && norm && ref && conv);
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    float *x = malloc(4 * 224 * 224 * 3), *tok = malloc(4 * 196 * 768), *back = malloc(4 * 224 * 224 * 3);
    /* augment.h's normalisation gives CHW; patchify reads it through a CHW plane */
    cav_image_normalize(frame, 224, 224, mean, std, x);
    cav_plane chw = cav_plane_chw(3, 224, 224);
    int ntok, dim;
    REQUIRE(cav_patch_shape(&chw, 16, 16, &ntok, &dim));
    CHECK(ntok == 196 && dim == 768);
    cav_patchify_f32(&chw, x, 16, 16, tok);
    int64_t nd = ndiff(tok, ref, 196 * 768, 0);
    printf("  tokens of the normalised u8 frame: %lld of %d differ from the reference's (tol 1e-6)\n",
           (long long)nd, 196 * 768);
    CHECK(ndiff(tok, ref, 196 * 768, 1e-6) == 0);
    cav_plane pl = cav_plane_hwc(224, 224, 3);
    cav_patchify_f32(&pl, norm, 16, 16, tok);
    CHECK(ndiff(tok, ref, 196 * 768, 0) == 0);
    /* PatchEmbed sees the same pixels per token in (c, p, q) order: element (p*16+q)*3+c = conv c*256+p*16+q
     */
    int perm_ok = 1;
    for (int k = 0; k < 196; k++)
        for (int e = 0; e < 768; e++) {
            int c = e % 3, pq = e / 3;
            if (tok[k * 768 + e] != conv[k * 768 + c * 256 + pq]) perm_ok = 0;
        }
    CHECK(perm_ok);
    CHECK(cav_unpatchify_f32(&pl, tok, 16, 16, back) == 0);
    CHECK(memcmp(back, norm, 4 * 224 * 224 * 3) == 0);
    /* The u8 path gives the raw pixel values. */
    cav_patchify_u8(&pl, frame, 16, 16, tok);
    CHECK(tok[(2 * 14 + 9) * 768 + (4 * 16 + 11) * 3 + 1] ==
          frame[((2 * 16 + 4) * 224 + 9 * 16 + 11) * 3 + 1]);
    free(frame), free(norm), free(ref), free(conv), free(x), free(tok), free(back);
}

static void norm_pix_matches_reference(void) {
    float *a = load("audio_tokens.f32", 4 * 512 * 256), *an = load("audio_normpix.f32", 4 * 512 * 256);
    float *v = load("video_tokens.f32", 4 * 196 * 768), *vn = load("video_normpix.f32", 4 * 196 * 768);
    REQUIRE(a && an && v && vn);
    cav_norm_pix(a, 512, 256, 1e-6f);
    cav_norm_pix(v, 196, 768, 1e-6f);
    double ma = 0, mv = 0;
    for (int i = 0; i < 512 * 256; i++) ma = fmax(ma, fabs(a[i] - an[i]));
    for (int i = 0; i < 196 * 768; i++) mv = fmax(mv, fabs(v[i] - vn[i]));
    printf("  norm_pix max abs diff: audio %.3g, video %.3g\n", ma, mv);
    CHECK(ma <= 1e-5 && mv <= 1e-5);
    free(a), free(an), free(v), free(vn);
}

static void overlapping_patches_match_unfold(void) {
    char path[1200];
    snprintf(path, sizeof path, "%s/index.txt", refdir);
    FILE *f = fopen(path, "r");
    REQUIRE(f);
    int L = 0;
    CHECK(fscanf(f, "audio_unfold_p16_s10 %d", &L) == 1);
    fclose(f);
    float *fb = load("fbank.f32", 4 * 1024 * 128),
          *ref = load("audio_unfold_p16_s10.f32", (size_t)4 * L * 256);
    REQUIRE(fb && ref);
    cav_plane pl = cav_plane_fbank(1024, 128);
    int ntok, dim;
    REQUIRE(cav_patch_shape(&pl, 16, 10, &ntok, &dim));
    CHECK(ntok == L && dim == 256);
    float *tok = malloc((size_t)4 * ntok * dim), *back = malloc(4 * 1024 * 128);
    cav_patchify_f32(&pl, fb, 16, 10, tok);
    CHECK(ndiff(tok, ref, (int64_t)ntok * dim, 0) == 0);
    /* Inverse averages overlaps: every covered pixel comes back (mean of equal values), border pixels the
     * grid leaves out ((1024-16) % 10 = 8 frames, (128-16) % 10 = 2 bins) are reported and zeroed. */
    int64_t unc = cav_unpatchify_f32(&pl, tok, 16, 10, back);
    CHECK(unc == 1024 * 128 - (int64_t)(12 * 10 + 6) * (101 * 10 + 6));
    int64_t bad = 0;
    for (int t = 0; t < 1024; t++)
        for (int b = 0; b < 128; b++) {
            int covered = t < 101 * 10 + 6 && b < 12 * 10 + 6;
            float want = covered ? fb[t * 128 + b] : 0.0f;
            bad += fabsf(back[t * 128 + b] - want) > 1e-6f * fabsf(want) + 1e-30f;
        }
    CHECK(bad == 0);
    free(fb), free(ref), free(tok), free(back);
}

static void round_trips_are_identity(void) {
    /* Odd sizes, several channels and strides: patchify then unpatchify returns every covered pixel. */
    const int sizes[][3] = {{32, 48, 1}, {64, 64, 3}, {48, 32, 2}};
    const int ps[][2] = {{16, 16}, {8, 8}, {8, 4}, {4, 2}};
    for (int s = 0; s < 3; s++)
        for (int k = 0; k < 4; k++) {
            cav_plane pl = cav_plane_hwc(sizes[s][0], sizes[s][1], sizes[s][2]);
            int n = sizes[s][0] * sizes[s][1] * sizes[s][2], ntok, dim;
            REQUIRE(cav_patch_shape(&pl, ps[k][0], ps[k][1], &ntok, &dim));
            float *x = malloc(4 * n), *tok = malloc((size_t)4 * ntok * dim), *y = malloc(4 * n);
            for (int i = 0; i < n; i++) x[i] = (float)((i * 37) % 101) - 50.0f;
            cav_patchify_f32(&pl, x, ps[k][0], ps[k][1], tok);
            CHECK(cav_unpatchify_f32(&pl, tok, ps[k][0], ps[k][1], y) == 0);
            CHECK(memcmp(x, y, 4 * n) == 0);
            free(x), free(tok), free(y);
        }
    cav_plane pl = cav_plane_hwc(10, 10, 1);
    int ntok, dim;
    CHECK(!cav_patch_shape(&pl, 16, 16, &ntok, &dim)); /* patch larger than the plane */
    CHECK(!cav_patch_shape(&pl, 4, 0, &ntok, &dim));
}

/* The model's patch kernels (kernels.h, used for the MAE targets inside training) and this module (used by
 * the patchify tool) must agree exactly, or tokens written by the tool would not be what the model sees. */
static void agrees_with_model_kernels(void) {
    float *a = malloc(4 * 1024 * 128), *v = malloc(4 * 3 * 224 * 224);
    float *mine = malloc(4 * 512 * 256), *theirs = malloc(4 * 512 * 256);
    float *vm = malloc(4 * 196 * 768), *vt = malloc(4 * 196 * 768);
    REQUIRE(a && v && mine && theirs && vm && vt);
    for (int i = 0; i < 1024 * 128; i++) a[i] = (float)(((int64_t)i * 7919) % 1000) * 0.01f - 5.0f;
    for (int i = 0; i < 3 * 224 * 224; i++) v[i] = (float)(((int64_t)i * 104729) % 997) * 0.003f - 1.5f;
    cav_plane pa = cav_plane_fbank(1024, 128), pv = cav_plane_chw(3, 224, 224);
    cav_patchify_f32(&pa, a, 16, 16, mine);
    cav_patchify_audio(theirs, a, 1, 1024, 128);
    CHECK(memcmp(mine, theirs, 4 * 512 * 256) == 0);
    cav_patchify_f32(&pv, v, 16, 16, vm);
    cav_patchify_video(vt, v, 1, 224);
    CHECK(memcmp(vm, vt, 4 * 196 * 768) == 0);
    free(a), free(v), free(mine), free(theirs), free(vm), free(vt);
}

int main(void) {
    const char *base = getenv("CAV_REF");
    snprintf(refdir, sizeof refdir, "%s/gen_patchify", base ? base : "build/ref");
    TEST(audio_tokens_match_reference);
    TEST(video_tokens_match_reference);
    TEST(norm_pix_matches_reference);
    TEST(overlapping_patches_match_unfold);
    TEST(round_trips_are_identity);
    TEST(agrees_with_model_kernels);
    return harness_exit();
}
