/* test_clip.c: the clip schema's accessors (clip.h): what the writers put the readers get back with the
 * standard types and shapes, and malformed fields are refused with a message naming the field. */
#include <stdint.h>

#include "clip.h"
#include "harness.h"

static void wave_and_rate(void) {
    cav_record r;
    cav_record_init(&r);
    cav_clip_wave w;
    cav_err e = {0};
    CHECK(cav_clip_get_wave(&r, &w, &e) == 0);
    int16_t s[6] = {1, -2, 3, -4, 5, -6};
    REQUIRE(cav_clip_put_wave(&r, CAV_I16, 2, 3, s) == 0);
    CHECK(cav_clip_get_wave(&r, &w, &e) == 1 && w.i16 && !w.f32 && w.channels == 2 && w.n == 3 &&
          w.i16[5] == -6);
    REQUIRE(cav_clip_put_wave(&r, CAV_F32, 1, 2, (float[]){0.5f, -0.25f}) == 0);
    CHECK(cav_clip_get_wave(&r, &w, &e) == 1 && w.f32 && w.channels == 1 && w.n == 2 && w.f32[1] == -0.25f);
    REQUIRE(cav_clip_put_wave(&r, CAV_F16, 1, 2, (uint16_t[]){0, 0}) == 0);
    CHECK(cav_clip_get_wave(&r, &w, &e) == -1 && e.code == 2 && strstr(e.msg, "field wave") &&
          strstr(e.msg, "f16"));
    double rate;
    CHECK(cav_clip_rate(&r, 16000, &rate, &e) == 0 && rate == 16000);
    cav_attrs_set(&r.attrs, CAV_ATTR_SAMPLE_RATE, "22050");
    CHECK(cav_clip_rate(&r, 16000, &rate, &e) == 0 && rate == 22050);
    cav_attrs_set(&r.attrs, CAV_ATTR_SAMPLE_RATE, "fast");
    CHECK(cav_clip_rate(&r, 16000, &rate, &e) == -1 && strstr(e.msg, "sample_rate") && strstr(e.msg, "fast"));
    CHECK(cav_clip_parse_rate("0", &rate) == -1 && cav_clip_parse_rate("1e8", &rate) == -1);
    cav_record_clear(&r);
}

static void fbank_f32_and_f16(void) {
    cav_record r;
    cav_record_init(&r);
    float x[6] = {1, 2, 3, -1.5f, 0.25f, 65504};
    cav_clip_fbank f;
    cav_err e = {0};
    REQUIRE(cav_clip_put_fbank(&r, 0, 3, 2, x) == 0);
    CHECK(cav_clip_get_fbank(&r, 2, &f, &e) == 1 && f.f32 && f.frames == 3 && f.bins == 2);
    CHECK(cav_clip_get_fbank(&r, 128, &f, &e) == -1 && strstr(e.msg, "field fbank") && strstr(e.msg, "128"));
    REQUIRE(cav_clip_put_fbank(&r, 1, 3, 2, x) == 0);
    CHECK(cav_clip_get_fbank(&r, 0, &f, &e) == 1 && f.f16 && !f.f32);
    float back[6] = {0};
    cav_clip_fbank_rows(&f, 2, back);
    CHECK(back[0] == 1 && back[3] == -1.5f && back[4] == 0 && back[5] == 0);
    cav_clip_fbank_rows(&f, 3, back);
    CHECK(back[4] == 0.25f && back[5] == 65504);
    int64_t sh[1] = {6};
    cav_record_put(&r, CAV_FIELD_FBANK, CAV_F32, 1, sh, x);
    CHECK(cav_clip_get_fbank(&r, 0, &f, &e) == -1 && strstr(e.msg, "field fbank"));
    cav_record_put(&r, CAV_FIELD_FBANK, CAV_F64, 1, sh, (double[6]){0});
    CHECK(cav_clip_get_fbank(&r, 0, &f, &e) == -1 && strstr(e.msg, "f64"));
    cav_record_clear(&r);
}

static void jpeg_frames_and_raw_frames(void) {
    cav_record r;
    cav_record_init(&r);
    uint8_t a[3] = {1, 2, 3}, b[2] = {9, 8};
    uint8_t *bytes[2] = {a, b};
    size_t lens[2] = {3, 2};
    const uint8_t *d;
    size_t len;
    cav_err e = {0};
    CHECK(cav_clip_jpeg_frame(&r, 0, &d, &len, &e) == 0);
    REQUIRE(cav_clip_put_jpeg_frames(&r, 2, bytes, lens) == 0);
    CHECK(cav_clip_jpeg_frame(&r, 1, &d, &len, &e) == 2 && len == 2 && d[0] == 9 && d[1] == 8);
    CHECK(cav_clip_jpeg_frame(&r, 0, &d, &len, &e) == 2 && len == 3 && d[2] == 3);
    CHECK(cav_clip_jpeg_frame(&r, 2, &d, &len, &e) == -1 && strstr(e.msg, "no frame 2 of 2"));
    int64_t off[3] = {0, 4, 3}, n3 = 3;
    cav_record_put(&r, CAV_FIELD_FRAMES_JPEG_OFFSETS, CAV_I64, 1, &n3, off);
    CHECK(cav_clip_jpeg_frame(&r, 1, &d, &len, &e) == -1 && strstr(e.msg, "frames_jpeg_offsets"));
    cav_record_remove(&r, CAV_FIELD_FRAMES_JPEG_OFFSETS);
    CHECK(cav_clip_jpeg_frame(&r, 0, &d, &len, &e) == -1 && strstr(e.msg, "field frames_jpeg"));
    int64_t fs[4] = {2, 4, 5, 3};
    cav_record_add(&r, CAV_FIELD_FRAMES, CAV_U8, 4, fs);
    cav_clip_frames fr;
    CHECK(cav_clip_get_frames(&r, &fr, &e) == 1 && fr.n == 2 && fr.h == 4 && fr.w == 5 && !fr.single);
    cav_record_add(&r, CAV_FIELD_FRAMES, CAV_U8, 3, fs + 1);
    CHECK(cav_clip_get_frames(&r, &fr, &e) == 1 && fr.n == 1 && fr.single);
    cav_record_add(&r, CAV_FIELD_FRAMES, CAV_F32, 4, fs);
    CHECK(cav_clip_get_frames(&r, &fr, &e) == -1 && strstr(e.msg, "field frames") && strstr(e.msg, "f32"));
    cav_clip_drop_frames(&r);
    CHECK(r.ntensors == 0);
    cav_record_clear(&r);
}

static void labels_and_weight(void) {
    cav_record r;
    cav_record_init(&r);
    const float *l;
    int k = 0;
    cav_err e = {0};
    CHECK(cav_clip_get_labels(&r, 3, &l, &k, &e) == 0);
    REQUIRE(cav_clip_put_labels(&r, (float[]){0, 1, 1}, 3, 2.5f) == 0);
    CHECK(cav_clip_get_labels(&r, 0, &l, &k, &e) == 1 && k == 3 && l[1] == 1 && l[0] == 0);
    CHECK(cav_clip_get_labels(&r, 4, &l, &k, &e) == -1 && strstr(e.msg, "field labels") &&
          strstr(e.msg, "[4]"));
    const cav_tensor *w = cav_record_find(&r, CAV_FIELD_WEIGHT);
    CHECK(w && w->ndim == 0 && w->dtype == CAV_F32 && *(float *)w->data == 2.5f);
    cav_record_clear(&r);
}

int main(void) {
    TEST(wave_and_rate);
    TEST(fbank_f32_and_f16);
    TEST(jpeg_frames_and_raw_frames);
    TEST(labels_and_weight);
    return harness_exit();
}
