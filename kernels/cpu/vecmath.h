/* vecmath.h: branch-free float exp and erf that the compiler vectorizes, for the elementwise kernels
 * (softmax, GELU), and CAV_VEC, which compiles a hot loop once per instruction set (AVX-512, AVX2+FMA, the
 * build's baseline) and picks the version at load time. The project is built for x86-64-v2 so that one
 * binary runs everywhere; without the clones its loops run 4 floats wide on machines that do 16.
 * Both functions stay within a few ulp of libm (the unit tests measure it against double precision): the
 * training step's results are compared with PyTorch to tolerances, never bit for bit. */
#ifndef CAV_VECMATH_H
#define CAV_VECMATH_H

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define CAV_VEC __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CAV_VEC
#endif

/* exp(x) for x <= 0 (a softmax's arguments after the max is subtracted; GELU's -x^2/2): x = n ln2 + r with
 * |r| <= ln2/2 (Cody-Waite split of ln2), exp(r) by Cephes' expf polynomial, 2^n through the exponent bits.
 * Within 2 ulp of expf; arguments below -87.3 (results under FLT_MIN) give exp(-87.3), which neither a
 * softmax next to its maximum's 1 nor GELU's x * pdf can tell from 0. */
static inline __attribute__((always_inline)) float cav_exp_neg(float x) {
    x = x < -87.3f ? -87.3f : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float z = r * r;
    float p =
        ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
         1.6666665459e-1f) *
            r +
        5.0000001201e-1f;
    p = p * z + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* erf(x) as x P(x^2) / Q(x^2), a rational minimax fit on [-4, 4] (the one of Eigen and XLA); outside that
 * range erf is +-1 in float, which the clamp gives. */
static inline __attribute__((always_inline)) float cav_erf(float x) {
    x = x > 4.0f ? 4.0f : x < -4.0f ? -4.0f : x;
    float x2 = x * x;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 + -2.10102402082508e-06f;
    p = p * x2 + -5.69250639462346e-05f;
    p = p * x2 + -7.34990630326855e-04f;
    p = p * x2 + -2.95459980854025e-03f;
    p = p * x2 + -1.60960333262415e-02f;
    float q = -1.45660718464996e-05f;
    q = q * x2 + -2.13374055278905e-04f;
    q = q * x2 + -1.68282697438203e-03f;
    q = q * x2 + -7.37332916720468e-03f;
    q = q * x2 + -1.42647390514189e-02f;
    return x * p / q;
}

#endif
