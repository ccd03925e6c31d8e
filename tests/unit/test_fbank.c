/* test_fbank.c: fbank properties that need no reference data: the vectorised log against the C library,
 * frame counts and sizes from the options, refusals (options, non-finite, empty, short input), cut/pad,
 * dither reproducibility, normalisation, thread-safe construction, and the WAV parser on good and
 * malformed bytes. The comparison with torchaudio is test_fbank_ref.c. */
#include "augment.h"
#include "fbank.h"
#include "harness.h"
#include "wav.h"

#include <float.h>
#include <pthread.h>
#include <stdint.h>

static void fast_log_is_accurate(void) {
    /* Every float from FLT_EPSILON (the fbank floor) to 2^40 in a dense sweep. */
    enum { N = 1 << 16 };
    static float x[N], y[N];
    double worst = 0;
    for (double lo = FLT_EPSILON; lo < 1e12; lo *= 2) {
        for (int i = 0; i < N; i++) x[i] = (float)(lo * (1.0 + (double)i / N));
        cav_logf_vec(x, y, N);
        for (int i = 0; i < N; i++) {
            double d = fabs((double)y[i] - log((double)x[i]));
            if (d > worst) worst = d;
        }
    }
    printf("  fast log: max abs error %.3g over [eps, 1e12]\n", worst);
    CHECK(worst <= 2.5e-6); /* 2 ulp of |log| <= 28 */
    float one = 1.0f, r;
    cav_logf_vec(&one, &r, 1);
    CHECK(r == 0.0f);
}

static void sizes_follow_kaldi(void) {
    cav_fbank_opts o;
    cav_fbank_opts_default(&o);
    cav_err err;
    cav_fbank *fb = cav_fbank_new(&o, &err);
    REQUIRE(fb);
    CHECK(cav_fbank_window_size(fb) == 400 && cav_fbank_window_shift(fb) == 160 &&
          cav_fbank_fft_size(fb) == 512);
    CHECK(cav_fbank_num_frames(fb, 160000) == 998);
    CHECK(cav_fbank_num_frames(fb, 399) == 0 && cav_fbank_num_frames(fb, 400) == 1);
    CHECK(cav_fbank_num_frames(fb, 559) == 1 && cav_fbank_num_frames(fb, 560) == 2);
    CHECK(cav_fbank_out_frames(fb, 160000) == 1024);
    /* cav-numerics(7) 1.3: at 16 kHz mel band 3 holds no FFT bin, so its weights are all zero. */
    float *wts = malloc(sizeof(float) * 128 * 257);
    cav_fbank_mel_weights(fb, wts);
    int empty3 = 1;
    for (int k = 0; k < 257; k++) empty3 &= wts[3 * 257 + k] == 0.0f;
    CHECK(empty3);
    free(wts);
    cav_fbank_free(fb);
    o.sample_rate = 44100; /* 1102-sample window (int(1102.5)), 441 shift, 2048-point FFT */
    fb = cav_fbank_new(&o, &err);
    REQUIRE(fb);
    CHECK(cav_fbank_window_size(fb) == 1102 && cav_fbank_window_shift(fb) == 441 &&
          cav_fbank_fft_size(fb) == 2048);
    cav_fbank_free(fb);
}

static void bad_options_are_refused(void) {
    cav_fbank_opts o;
    cav_err err;
    cav_fbank_opts_default(&o);
    o.sample_rate = 30; /* Nyquist 15 Hz is below the 20 Hz low edge */
    CHECK(cav_fbank_new(&o, &err) == NULL && err.code == 2);
    cav_fbank_opts_default(&o);
    o.high_freq = 9000; /* above Nyquist */
    CHECK(cav_fbank_new(&o, &err) == NULL && err.code == 2);
    cav_fbank_opts_default(&o);
    o.num_mel_bins = 3;
    CHECK(cav_fbank_new(&o, &err) == NULL && err.code == 2);
    cav_fbank_opts_default(&o);
    o.frame_length_ms = 0.05;
    CHECK(cav_fbank_new(&o, &err) == NULL && err.code == 2);
    cav_fbank_opts_default(&o);
    o.high_freq = -400; /* Kaldi: Nyquist - 400 */
    cav_fbank *fb = cav_fbank_new(&o, &err);
    CHECK(fb != NULL);
    cav_fbank_free(fb);
    CHECK(cav_window_parse("hann") == CAV_WIN_HANNING && cav_window_parse("povey") == CAV_WIN_POVEY);
    CHECK(cav_window_parse("kaiser") == -1);
}

static void bad_input_is_refused(void) {
    cav_fbank_opts o;
    cav_fbank_opts_default(&o);
    cav_err err;
    cav_fbank *fb = cav_fbank_new(&o, &err);
    REQUIRE(fb);
    float *x = calloc(16000, sizeof(float)), *out = malloc(sizeof(float) * 1024 * 128);
    x[1234] = NAN;
    CHECK(cav_fbank_compute(fb, x, 1, 16000, out, NULL, &err) == -1 && err.code == 2 &&
          strstr(err.msg, "1234"));
    x[1234] = INFINITY;
    CHECK(cav_fbank_compute(fb, x, 1, 16000, out, NULL, &err) == -1 && err.code == 2);
    x[1234] = 0;
    CHECK(cav_fbank_compute(fb, x, 1, 0, out, NULL, &err) == -1 && err.code == 2);
    CHECK(cav_fbank_compute(fb, x, 1, 399, out, NULL, &err) == -1 && err.code == 2);
    int64_t m = -1;
    CHECK(cav_fbank_compute(fb, x, 1, 16000, out, &m, &err) == 0 && m == 98);
    /* Digital silence: every cell is log(FLT_EPSILON), padding rows are 0. */
    int ok = 1;
    for (int i = 0; i < 98 * 128; i++) ok &= out[i] == logf(FLT_EPSILON);
    for (int i = 98 * 128; i < 1024 * 128; i++) ok &= out[i] == 0.0f;
    CHECK(ok);
    free(x);
    free(out);
    cav_fbank_free(fb);
}

static void cut_keeps_the_first_frames(void) {
    cav_fbank_opts o;
    cav_fbank_opts_default(&o);
    cav_err err;
    int n = 16000 * 12;
    float *x = malloc(sizeof(float) * n);
    for (int i = 0; i < n; i++) x[i] = 0.3f * sinf(0.01f * i * (1.0f + i / 40000.0f));
    o.target_length = 0;
    cav_fbank *full = cav_fbank_new(&o, &err);
    o.target_length = 1024;
    cav_fbank *cut = cav_fbank_new(&o, &err);
    REQUIRE(full && cut);
    float *a = malloc(sizeof(float) * 1198 * 128), *b = malloc(sizeof(float) * 1024 * 128);
    int64_t m;
    CHECK(cav_fbank_compute(full, x, 1, n, a, &m, &err) == 0 && m == 1198);
    CHECK(cav_fbank_compute(cut, x, 1, n, b, &m, &err) == 0 && m == 1198);
    CHECK(memcmp(a, b, sizeof(float) * 1024 * 128) == 0);
    /* Reuse of one object gives the same bits again. */
    CHECK(cav_fbank_compute(cut, x, 1, n, a, &m, &err) == 0 && memcmp(a, b, sizeof(float) * 1024 * 128) == 0);
    free(a), free(b), free(x);
    cav_fbank_free(full);
    cav_fbank_free(cut);
}

static void dither_is_seeded(void) {
    cav_fbank_opts o;
    cav_fbank_opts_default(&o);
    o.dither = 1e-3;
    o.dither_seed = 7;
    cav_err err;
    cav_fbank *fb = cav_fbank_new(&o, &err);
    REQUIRE(fb);
    float *x = calloc(16000, sizeof(float));
    float *a = malloc(sizeof(float) * 1024 * 128), *b = malloc(sizeof(float) * 1024 * 128);
    CHECK(cav_fbank_compute(fb, x, 1, 16000, a, NULL, &err) == 0);
    cav_fbank_reseed(fb, 7);
    CHECK(cav_fbank_compute(fb, x, 1, 16000, b, NULL, &err) == 0);
    CHECK(memcmp(a, b, sizeof(float) * 98 * 128) == 0);
    /* Statistically like torchaudio's dither: on silence with dither 1e-3, torchaudio's band 64 averages
     * -9.47 over frames (per-frame std 1.0); 98 frames put our mean within about 0.3 of that. */
    double mean64 = 0;
    for (int t = 0; t < 98; t++) mean64 += a[t * 128 + 64] / 98.0;
    printf("  dithered silence, band 64 mean over 98 frames: %.3f\n", mean64);
    CHECK(mean64 > -10.1 && mean64 < -8.8);
    cav_fbank_reseed(fb, 8);
    CHECK(cav_fbank_compute(fb, x, 1, 16000, b, NULL, &err) == 0);
    CHECK(memcmp(a, b, sizeof(float) * 98 * 128) != 0);
    free(x), free(a), free(b);
    cav_fbank_free(fb);
}

static void normalize_is_reference_formula(void) {
    float v[3] = {-5.081f, 0.0f, -15.942385f};
    cav_fbank_normalize(v, 3, -5.081f, 4.4849f);
    CHECK(v[0] == 0.0f);
    CHECK_NEAR(v[1], 1.1329127, 1e-6); /* cav-numerics(7) 1.3: padding zeros become +1.1329 */
    CHECK_NEAR(v[2], -2.421768, 1e-5); /* cav-numerics(7) 1.3: the floor becomes -2.421768 */
}

static void *build_many(void *arg) {
    (void)arg;
    cav_fbank_opts o;
    cav_fbank_opts_default(&o);
    cav_err err;
    for (int i = 0; i < 20; i++) {
        o.sample_rate = i % 2 ? 16000 : 22050;
        cav_fbank *fb = cav_fbank_new(&o, &err);
        if (!fb) return (void *)1;
        cav_fbank_free(fb);
    }
    return NULL;
}

static void construction_is_thread_safe(void) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++) REQUIRE(pthread_create(&t[i], NULL, build_many, NULL) == 0);
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        ok &= r == NULL;
    }
    CHECK(ok);
}

static size_t put_wav(uint8_t *b, int fmt, int ch, int rate, int bits, const void *data, uint32_t nbytes,
                      uint32_t claimed) {
    size_t p = 0;
#define U32(v)                                                                                               \
    (b[p] = (v)&255, b[p + 1] = ((v) >> 8) & 255, b[p + 2] = ((v) >> 16) & 255, b[p + 3] = (v) >> 24, p += 4)
#define U16(v) (b[p] = (v)&255, b[p + 1] = ((v) >> 8) & 255, p += 2)
    memcpy(b, "RIFF", 4), p = 4, U32(36 + nbytes), memcpy(b + p, "WAVE", 4), p += 4;
    memcpy(b + p, "LIST", 4), p += 4, U32(3), memcpy(b + p, "abc\0", 4), p += 4; /* odd chunk, padded */
    memcpy(b + p, "fmt ", 4), p += 4, U32(16), U16(fmt), U16(ch), U32(rate), U32(rate * ch * bits / 8),
        U16(ch * bits / 8), U16(bits);
    memcpy(b + p, "data", 4), p += 4, U32(claimed);
    memcpy(b + p, data, nbytes);
    return p + nbytes;
#undef U32
#undef U16
}

static void wav_parser(void) {
    uint8_t buf[256];
    int16_t pcm[6] = {1, -2, 3, -4, 32767, -32768}; /* 3 stereo frames */
    cav_wav w;
    cav_err err;
    size_t len = put_wav(buf, 1, 2, 8000, 16, pcm, 12, 12);
    REQUIRE(cav_wav_parse(buf, len, "t.wav", &w, &err) == 0);
    CHECK(w.rate == 8000 && w.channels == 2 && w.frames == 3 && w.dtype == CAV_I16);
    int16_t *d = w.data; /* planar: channel 0 then channel 1 */
    CHECK(d[0] == 1 && d[1] == 3 && d[2] == 32767 && d[3] == -2 && d[4] == -4 && d[5] == -32768);
    cav_wav_free(&w);
    /* A streamed writer's huge data size is read to the end of the bytes present. */
    len = put_wav(buf, 1, 1, 16000, 16, pcm, 12, 0xFFFFFFFFu);
    REQUIRE(cav_wav_parse(buf, len, "s.wav", &w, &err) == 0);
    CHECK(w.frames == 6);
    cav_wav_free(&w);
    float f[2] = {0.5f, -0.25f};
    len = put_wav(buf, 3, 1, 16000, 32, f, 8, 8);
    REQUIRE(cav_wav_parse(buf, len, "f.wav", &w, &err) == 0);
    CHECK(w.dtype == CAV_F32 && w.frames == 2 && ((float *)w.data)[1] == -0.25f);
    cav_wav_free(&w);
    len = put_wav(buf, 1, 1, 16000, 24, pcm, 12, 12);
    CHECK(cav_wav_parse(buf, len, "p24.wav", &w, &err) == -1 && err.code == 2 && strstr(err.msg, "p24.wav"));
    CHECK(cav_wav_parse(buf, 30, "cut.wav", &w, &err) == -1 && err.code == 2);
    CHECK(cav_wav_parse((const uint8_t *)"RIFX....WAVE", 12, "x.wav", &w, &err) == -1);
    CHECK(cav_wav_read("/nonexistent/x.wav", &w, &err) == -1 && err.code == 2);
}

int main(void) {
    TEST(fast_log_is_accurate);
    TEST(sizes_follow_kaldi);
    TEST(bad_options_are_refused);
    TEST(bad_input_is_refused);
    TEST(cut_keeps_the_first_frames);
    TEST(dither_is_seeded);
    TEST(normalize_is_reference_formula);
    TEST(construction_is_thread_safe);
    TEST(wav_parser);
    return harness_exit();
}
