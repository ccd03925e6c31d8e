/* test_record.c: in-memory records, the shape-overflow guard and the half-precision conversions. */
#include "harness.h"
#include "record.h"

#include <stdint.h>

static void record_add_find_remove(void) {
    cav_record r;
    cav_record_init(&r);
    int64_t shape[2] = {3, 4};
    cav_tensor *t = cav_record_add(&r, "fbank", CAV_F32, 2, shape);
    REQUIRE(t != NULL);
    CHECK(t->nbytes == 48);
    ((float *)t->data)[11] = 2.5f;
    CHECK(cav_record_find(&r, "fbank") == t);
    CHECK(cav_record_find(&r, "wave") == NULL);
    int64_t s1 = 5;
    CHECK(cav_record_put(&r, "wave", CAV_I16, 1, &s1, (int16_t[]){1, 2, 3, 4, 5}) != NULL);
    CHECK(cav_record_set_id(&r, "clip1") == 0);
    CHECK(cav_attrs_set(&r.attrs, "source", "a.mp4") == 0);
    cav_record c;
    cav_record_init(&c);
    REQUIRE(cav_record_copy(&c, &r) == 0);
    CHECK(cav_record_equal(&c, &r));
    ((int16_t *)cav_record_find(&c, "wave")->data)[4] = 6;
    CHECK(!cav_record_equal(&c, &r));
    CHECK(cav_record_remove(&r, "fbank") == 1);
    CHECK(cav_record_remove(&r, "fbank") == 0);
    CHECK(r.ntensors == 1 && cav_record_find(&r, "wave") != NULL);
    cav_record_clear(&r);
    cav_record_clear(&c);
    CHECK(r.ntensors == 0 && r.id == NULL);
}

static void shape_guard_refuses_overflow(void) {
    int64_t huge[3] = {INT64_C(1) << 30, INT64_C(1) << 30, 4};
    CHECK(cav_shape_count(3, huge, 4, UINT64_MAX) == -1);
    int64_t neg[2] = {3, -1};
    CHECK(cav_shape_count(2, neg, 1, 1000) == -1);
    int64_t ok[2] = {10, 10};
    CHECK(cav_shape_count(2, ok, 4, 400) == 100);
    CHECK(cav_shape_count(2, ok, 4, 399) == -1);
    int64_t zero[2] = {0, INT64_MAX};
    CHECK(cav_shape_count(2, zero, 8, 10) == 0);
    cav_record r;
    cav_record_init(&r);
    int64_t big[1] = {INT64_C(1) << 60};
    CHECK(cav_record_add(&r, "x", CAV_F32, 1, big) == NULL);
    CHECK(cav_record_add(&r, "", CAV_F32, 0, NULL) == NULL);
    CHECK(cav_record_add(&r, "s", CAV_F64, 0, NULL) != NULL); /* scalar */
    cav_record_clear(&r);
}

static void half_conversion(void) {
    /* exhaustive: every finite half converts to float and back unchanged */
    for (uint32_t h = 0; h < 65536; h++) {
        if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) continue; /* NaNs: payload not required */
        float f = cav_f16_to_f32((uint16_t)h);
        if (cav_f32_to_f16(f) != h) {
            CHECK(cav_f32_to_f16(f) == h);
            break;
        }
    }
    CHECK(cav_f32_to_f16(1.0f) == 0x3c00);
    CHECK(cav_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(cav_f32_to_f16(65520.0f) == 0x7c00);           /* rounds up to inf */
    CHECK(cav_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00); /* tie to even */
    CHECK(cav_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02);
    CHECK(cav_f32_to_f16(5.9604645e-08f) == 0x0001);
    CHECK(cav_f32_to_f16(2.9802322e-08f) == 0x0000); /* half of the smallest subnormal: ties to even 0 */
    CHECK(isnan(cav_f16_to_f32(cav_f32_to_f16(NAN))));
}

int main(void) {
    TEST(record_add_find_remove);
    TEST(shape_guard_refuses_overflow);
    TEST(half_conversion);
    return harness_exit();
}
