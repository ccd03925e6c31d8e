/* test_rng.c: the keyed generator is deterministic per key and its distributions have the right moments
 * (statistical checks with bounds many standard errors wide, on fixed seeds). */
#include "harness.h"
#include "rng.h"

static void keyed_streams_are_reproducible_and_distinct(void) {
    cav_rng a, b, c;
    cav_rng_seed(&a, 42, CAV_RNG_NOISE, 3, 17);
    cav_rng_seed(&b, 42, CAV_RNG_NOISE, 3, 17);
    cav_rng_seed(&c, 42, CAV_RNG_NOISE, 3, 18);
    int same = 1, differ = 0;
    for (int i = 0; i < 100; i++) {
        uint64_t x = cav_rng_u64(&a), y = cav_rng_u64(&b), z = cav_rng_u64(&c);
        same &= x == y;
        differ += x != z;
    }
    CHECK(same);
    CHECK(differ == 100);
}

static void uniform_int_normal_beta_moments(void) {
    cav_rng r;
    cav_rng_seed(&r, 1, 2, 3, 4);
    const int n = 200000;
    double s = 0, s2 = 0, sn = 0, sn2 = 0, sb = 0;
    long counts[10] = {0};
    for (int i = 0; i < n; i++) {
        float u = cav_rng_float(&r);
        CHECK(u >= 0.0f && u < 1.0f);
        s += u;
        s2 += (double)u * u;
        int64_t k = cav_rng_int(&r, 0, 9);
        CHECK(k >= 0 && k <= 9);
        counts[k]++;
        double g = cav_rng_normal(&r);
        sn += g;
        sn2 += g * g;
        sb += cav_rng_beta(&r, 10, 10);
        if (harness_cur_failed) return;
    }
    CHECK_NEAR(s / n, 0.5, 0.005);
    CHECK_NEAR(s2 / n - (s / n) * (s / n), 1.0 / 12, 0.002);
    CHECK_NEAR(sn / n, 0.0, 0.015);
    CHECK_NEAR(sn2 / n, 1.0, 0.02);
    CHECK_NEAR(sb / n, 0.5, 0.005);
    for (int k = 0; k < 10; k++) CHECK_NEAR(counts[k] / (double)n, 0.1, 0.005);
}

static void permutation_is_a_permutation(void) {
    cav_rng r;
    cav_rng_seed(&r, 9, CAV_RNG_SHUFFLE, 0, 0);
    int64_t p[1000];
    int seen[1000] = {0};
    cav_rng_permutation(&r, p, 1000);
    int fixed = 0;
    for (int i = 0; i < 1000; i++) {
        REQUIRE(p[i] >= 0 && p[i] < 1000);
        seen[p[i]]++;
        fixed += p[i] == i;
    }
    for (int i = 0; i < 1000; i++) CHECK(seen[i] == 1);
    CHECK(fixed < 10); /* a uniform permutation has ~1 fixed point */
}

int main(void) {
    TEST(keyed_streams_are_reproducible_and_distinct);
    TEST(uniform_int_normal_beta_moments);
    TEST(permutation_is_a_permutation);
    return harness_exit();
}
