/* test_avdecode.c: lib/avdecode against the reference's own preprocessing of the clips made by
 * tests/ref/gen_avextract.py ($CAV_REF/gen_avextract): audio sample for sample against ffmpeg -ar 16000 +
 * sox remix 1 (and the channel mean for --downmix), frames against OpenCV seek+read + PIL/torchvision
 * Resize(224)+CenterCrop(224), JPEG bytes against PIL's encoder, plus the frame-index arithmetic, the
 * from-memory path and the error reasons. Measured differences are printed to stderr (the test log). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "avdecode.h"
#include "harness.h"
#include "jpeg.h"

static char refdir[4096];

static void *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = malloc(len > 0 ? (size_t)len : 1);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) free(b), b = NULL;
    fclose(f);
    *n = (size_t)len;
    return b;
}

static char *refpath(const char *rel) {
    static char p[2][8192];
    static int k;
    k ^= 1;
    snprintf(p[k], sizeof p[k], "%s/%s", refdir, rel);
    return p[k];
}

typedef struct {
    char kind[16], name[128], file[256], a[64], b[64], c[64], d[256];
} tcase;

static int load_cases(tcase *cs, int max) {
    FILE *f = fopen(refpath("cases.tsv"), "r");
    if (!f) return -1;
    int n = 0;
    char line[1024];
    while (n < max && fgets(line, sizeof line, f)) {
        tcase *c = &cs[n];
        memset(c, 0, sizeof *c);
        if (sscanf(line, "%15[^\t]\t%127[^\t]\t%255[^\t]\t%63[^\t]\t%63[^\t\n]\t%63[^\t\n]\t%255[^\n]",
                   c->kind, c->name, c->file, c->a, c->b, c->c, c->d) >= 6)
            n++;
    }
    fclose(f);
    return n;
}

static tcase cases[64];
static int ncases;

static void test_frame_indices(void) {
    int idx[10];
    cav_av_frame_indices(25.0, 250, idx); /* cav-numerics(7) 1.2's example */
    for (int i = 0; i < 10; i++) CHECK(idx[i] == 25 * i);
    cav_av_frame_indices(29.97002997002997, 360, idx); /* int(299.7) = 299 */
    CHECK(idx[1] == 29 && idx[9] == 269);
    cav_av_frame_indices(25.0, 7, idx); /* fewer frames than 10 */
    CHECK(idx[0] == 0 && idx[1] == 0 && idx[2] == 1 && idx[9] == 6);
}

/* Audio: every sample, for every codec/rate/channel case, both channel 1 and the channel mean. */
static void test_audio_parity(void) {
    if (ncases <= 0) SKIP("no golden data (run make refs)");
    int tested = 0;
    for (int i = 0; i < ncases; i++) {
        for (int mix = 0; mix < 2; mix++) {
            cav_av_opts o;
            cav_av_opts_default(&o);
            o.video = !strcmp(cases[i].kind, "video"); /* clips: the audio of the full, frame-skipping pass */
            o.downmix = mix;
            cav_av_clip c;
            cav_err err = {0};
            cav_av_reason r = cav_av_decode_file(refpath(cases[i].file), &o, &c, &err);
            if (r) fprintf(stderr, "  %s: %s\n", cases[i].name, err.msg);
            REQUIRE(r == CAV_AV_OK);
            size_t nb;
            char p2[600];
            snprintf(p2, sizeof p2, "audio/%s.%s.s16", cases[i].name, mix ? "mix" : "ref");
            int16_t *ref = slurp(refpath(p2), &nb);
            REQUIRE(ref != NULL);
            int64_t n = (int64_t)(nb / 2), maxd = 0, ndiff = 0;
            for (int64_t k = 0; k < n && k < c.nsamples; k++) {
                int d = abs(ref[k] - c.wave[k]);
                if (d > maxd) maxd = d;
                ndiff += d != 0;
            }
            fprintf(stderr,
                    "  audio %-26s %s: %lld samples (ref %lld) from %d Hz x %d (%s), max |diff| %lld LSB, "
                    "%lld differ\n",
                    cases[i].name, mix ? "downmix" : "channel1", (long long)c.nsamples, (long long)n,
                    c.src_sample_rate, c.src_channels, c.audio_codec, (long long)maxd, (long long)ndiff);
            CHECK(c.nsamples == n);
            CHECK(maxd <= 1);
            CHECK(c.src_sample_rate > 0 && c.src_channels > 0);
            free(ref);
            cav_av_clip_free(&c);
            tested++;
        }
    }
    CHECK(tested >= 20);
}

static double mad(const uint8_t *a, const uint8_t *b, size_t n, int *maxd) {
    double s = 0;
    *maxd = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs(a[i] - b[i]);
        s += d;
        if (d > *maxd) *maxd = d;
    }
    return s / (double)n;
}

/* Frames: OpenCV + PIL reference, per frame mean absolute difference <= 2/255; JPEG bytes as PIL's. */
static void test_frames_parity(void) {
    if (ncases <= 0) SKIP("no golden data (run make refs)");
    int tested = 0;
    for (int i = 0; i < ncases; i++) {
        if (strcmp(cases[i].kind, "video")) continue;
        for (int skip = 1; skip >= 0; skip--) {
            cav_av_opts o;
            cav_av_opts_default(&o);
            o.skip_unneeded = skip;
            cav_av_clip c;
            cav_err err = {0};
            cav_av_reason r = cav_av_decode_file(refpath(cases[i].file), &o, &c, &err);
            if (r) fprintf(stderr, "  %s: %s\n", cases[i].name, err.msg);
            REQUIRE(r == CAV_AV_OK);
            size_t nb;
            char rel[512];
            snprintf(rel, sizeof rel, "video/%s.frames.u8", cases[i].name);
            uint8_t *ref = slurp(refpath(rel), &nb);
            REQUIRE(ref && nb == (size_t)10 * 224 * 224 * 3);
            CHECK_NEAR(c.fps, atof(cases[i].a), 1e-9);
            CHECK(c.frame_count == atoll(cases[i].b));
            char idx[256] = "";
            for (int k = 0; k < 10; k++)
                snprintf(idx + strlen(idx), sizeof idx - strlen(idx), "%s%d", k ? "," : "", c.frame_index[k]);
            CHECK(!strcmp(idx, cases[i].d));
            double worst = 0;
            int worstmax = 0, jpeg_same = 0;
            for (int k = 0; k < 10; k++) {
                int md;
                double m = mad(c.frames + (size_t)k * 224 * 224 * 3, ref + (size_t)k * 224 * 224 * 3,
                               224 * 224 * 3, &md);
                if (m > worst) worst = m;
                if (md > worstmax) worstmax = md;
                if (skip) {
                    uint8_t *jb;
                    size_t jn, rn;
                    snprintf(rel, sizeof rel, "video/%s.%d.jpg", cases[i].name, k);
                    uint8_t *rj = slurp(refpath(rel), &rn);
                    /* PIL's encoder on the reference's pixels vs ours on the same pixels */
                    CHECK(cav_jpeg_encode(ref + (size_t)k * 224 * 224 * 3, 224, 224, 75, &jb, &jn, NULL) ==
                          0);
                    jpeg_same += rj && jn == rn && !memcmp(jb, rj, rn);
                    free(jb);
                    free(rj);
                }
            }
            fprintf(
                stderr,
                "  frames %-26s %dx%d %s/%s fps %.4f count %lld skip=%d: worst frame MAD %.4f (%.3f/255), "
                "max %d; "
                "%lld video packets read, %lld dropped unseen%s\n",
                cases[i].name, c.width, c.height, c.container, c.video_codec, c.fps, (long long)c.frame_count,
                skip, worst / 255.0, worst, worstmax, (long long)c.video_packets, (long long)c.video_skipped,
                skip ? (jpeg_same == 10 ? "; JPEG bytes == PIL's" : "; JPEG bytes DIFFER from PIL's") : "");
            CHECK(worst <= 2.0);
            if (skip) CHECK(jpeg_same == 10);
            if (!strncmp(cases[i].name, "dense_", 6))
                CHECK(skip ? c.video_skipped > 0 : c.video_skipped == 0);
            free(ref);
            cav_av_clip_free(&c);
            tested++;
        }
    }
    CHECK(tested >= 12);
}

/* The same clip from memory through the custom AVIOContext gives the same result. */
static void test_from_memory(void) {
    if (ncases <= 0) SKIP("no golden data (run make refs)");
    size_t n;
    uint8_t *data = slurp(refpath("video/vp9_24_480x270.webm"), &n);
    REQUIRE(data);
    cav_av_opts o;
    cav_av_opts_default(&o);
    cav_av_clip a, b;
    cav_err err = {0};
    REQUIRE(cav_av_decode_file(refpath("video/vp9_24_480x270.webm"), &o, &a, &err) == CAV_AV_OK);
    CHECK(cav_av_decode_mem(data, n, &o, &b, &err) == CAV_AV_OK);
    CHECK(a.nsamples == b.nsamples && b.wave && !memcmp(a.wave, b.wave, (size_t)a.nsamples * 2));
    CHECK(b.frames && !memcmp(a.frames, b.frames, (size_t)10 * 224 * 224 * 3));
    cav_av_clip_free(&a);
    cav_av_clip_free(&b);
    free(data);
}

static void expect_reason(const char *rel, int audio, int video, cav_av_reason want) {
    cav_av_opts o;
    cav_av_opts_default(&o);
    o.audio = audio;
    o.video = video;
    cav_av_clip c;
    cav_err err = {0};
    cav_av_reason r = cav_av_decode_file(refpath(rel), &o, &c, &err);
    fprintf(stderr, "  %s: %s: %s\n", rel, cav_av_reason_name(r), r ? err.msg : "");
    CHECK(r == want);
    CHECK(c.wave == NULL && c.frames == NULL);
    if (r) CHECK(err.msg[0] != 0);
    cav_av_clip_free(&c);
}

static void test_bad_inputs(void) {
    if (ncases <= 0) SKIP("no golden data (run make refs)");
    expect_reason("bad/does-not-exist.mp4", 1, 1, CAV_AV_ERR_OPEN);
    expect_reason("bad/no_audio.mp4", 1, 1, CAV_AV_ERR_NO_AUDIO);
    expect_reason("bad/no_video.m4a", 1, 1, CAV_AV_ERR_NO_VIDEO);
    expect_reason("bad/truncated.mkv", 1, 1, CAV_AV_ERR_CORRUPT);
    expect_reason("bad/truncated_head.mp4", 1, 1, CAV_AV_ERR_CORRUPT);
    expect_reason("bad/garbage.mp4", 1, 1, CAV_AV_ERR_CORRUPT);
    expect_reason("bad/empty.mp4", 1, 1, CAV_AV_ERR_CORRUPT);
}

/* JPEG decoder: PIL's decode of PIL's JPEGs, bit for bit; strict on truncated and corrupted data. */
static void test_jpeg(void) {
    if (ncases <= 0) SKIP("no golden data (run make refs)");
    size_t n, jn;
    uint8_t *ref = slurp(refpath("video/h264_25_640x360.jpgdec.u8"), &n);
    REQUIRE(ref && n == (size_t)10 * 224 * 224 * 3);
    uint8_t *out = malloc(224 * 224 * 3);
    int w, h, md;
    cav_err err = {0};
    for (int k = 0; k < 10; k++) {
        char rel[256];
        snprintf(rel, sizeof rel, "video/h264_25_640x360.%d.jpg", k);
        uint8_t *jb = slurp(refpath(rel), &jn);
        REQUIRE(jb);
        REQUIRE(cav_jpeg_decode(jb, jn, out, 224 * 224 * 3, &w, &h, &err) == 0);
        CHECK(w == 224 && h == 224);
        double m = mad(out, ref + (size_t)k * 224 * 224 * 3, 224 * 224 * 3, &md);
        if (k == 0) fprintf(stderr, "  jpeg decode vs PIL: MAD %.3f, max %d\n", m, md);
        CHECK(md == 0);
        CHECK(cav_jpeg_size(jb, jn, &w, &h, &err) == 0 && w == 224 && h == 224);
        if (k == 0) {
            CHECK(cav_jpeg_decode(jb, jn / 2, out, 224 * 224 * 3, &w, &h, &err) == -1); /* truncated */
            fprintf(stderr, "  truncated: %s\n", err.msg);
            uint8_t *bad = malloc(jn);
            memcpy(bad, jb, jn);
            for (size_t i = jn / 2; i < jn / 2 + 64; i++) bad[i] = 0xFF; /* markers inside entropy data */
            CHECK(cav_jpeg_decode(bad, jn, out, 224 * 224 * 3, &w, &h, &err) == -1);
            fprintf(stderr, "  corrupted: %s\n", err.msg);
            CHECK(cav_jpeg_decode(jb, jn, out, 100, &w, &h, &err) == -1); /* buffer too small */
            CHECK(cav_jpeg_decode((const uint8_t *)"garbage!", 8, out, 224 * 224 * 3, &w, &h, &err) == -1);
            free(bad);
        }
        free(jb);
    }
    free(out);
    free(ref);
}

int main(void) {
    const char *r = getenv("CAV_REF");
    snprintf(refdir, sizeof refdir, "%s/gen_avextract", r ? r : "build/ref");
    ncases = load_cases(cases, 64);
    TEST(test_frame_indices);
    TEST(test_audio_parity);
    TEST(test_frames_parity);
    TEST(test_from_memory);
    TEST(test_bad_inputs);
    TEST(test_jpeg);
    return harness_exit();
}
