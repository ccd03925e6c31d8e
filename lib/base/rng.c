/* rng.c: xoshiro256** seeded through splitmix64 from a key tuple, and the distributions the training
 * transforms need (uniform, integers without modulo bias, normal, gamma/beta for mixup, permutations). */
#include "rng.h"

#include <math.h>

uint64_t cav_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void cav_rng_seed(cav_rng *r, uint64_t seed, uint64_t stream, uint64_t a, uint64_t b) {
    /* Fold the key through splitmix so that nearby keys give unrelated states. */
    uint64_t x = seed;
    uint64_t h = cav_splitmix64(&x);
    x = h ^ stream;
    h = cav_splitmix64(&x);
    x = h ^ a;
    h = cav_splitmix64(&x);
    x = h ^ b;
    for (int i = 0; i < 4; i++) r->s[i] = cav_splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t cav_rng_u64(cav_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

float cav_rng_float(cav_rng *r) {
    return (float)(cav_rng_u64(r) >> 40) * 0x1.0p-24f;
}
double cav_rng_double(cav_rng *r) {
    return (double)(cav_rng_u64(r) >> 11) * 0x1.0p-53;
}

int64_t cav_rng_int(cav_rng *r, int64_t lo, int64_t hi) {
    uint64_t range = (uint64_t)hi - (uint64_t)lo + 1;
    if (range == 0) return (int64_t)cav_rng_u64(r); /* the whole 64-bit range */
    uint64_t limit = UINT64_MAX - UINT64_MAX % range, v;
    do v = cav_rng_u64(r);
    while (v >= limit);
    return (int64_t)((uint64_t)lo + v % range);
}

double cav_rng_normal(cav_rng *r) {
    double u1;
    do u1 = cav_rng_double(r);
    while (u1 <= 0.0);
    double u2 = cav_rng_double(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* Marsaglia and Tsang's method; shape < 1 boosted by U^(1/shape). */
double cav_rng_gamma(cav_rng *r, double shape) {
    if (shape < 1.0) {
        double u;
        do u = cav_rng_double(r);
        while (u <= 0.0);
        return cav_rng_gamma(r, shape + 1.0) * pow(u, 1.0 / shape);
    }
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = cav_rng_normal(r);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = cav_rng_double(r);
        if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
        if (u > 0.0 && log(u) < 0.5 * x * x + d * (1.0 - v + log(v))) return d * v;
    }
}

double cav_rng_beta(cav_rng *r, double a, double b) {
    double x = cav_rng_gamma(r, a), y = cav_rng_gamma(r, b);
    return x / (x + y);
}

void cav_rng_permutation(cav_rng *r, int64_t *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = cav_rng_int(r, 0, i), t = out[i];
        out[i] = out[j];
        out[j] = t;
    }
}
