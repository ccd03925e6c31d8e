/* torchmath.h: float32 functions computed the way PyTorch (1.13, CPU, AVX2 kernels) computes them, to the
 * bit, for the places where fbank must reproduce torch's values exactly (fbank.c):
 *  - cos and log: torch's vectorised cos_ and log run SLEEF's 1-ulp functions (Sleef_cosf8_u10,
 *    Sleef_logf8_u10, the FMA variants on AVX2), which round differently from glibc's cosf and logf in
 *    about one value in 30; here the same double-float algorithms with the same fused multiply-adds (C's
 *    fmaf), scalar: they serve tables built once (windows, mel banks), not hot loops;
 *  - sum: ATen's cascade sum of a contiguous float32 row (what torch.sum and torch.mean run), in its exact
 *    order of additions with 8-lane vectors; inline, for fbank's per-frame loop.
 * With AVX-512 kernels torch sums in 16 lanes (another order); its golden data is generated with the AVX2
 * kernels pinned (tests/ref/gen_fbank.py). */
#ifndef CAV_TORCHMATH_H
#define CAV_TORCHMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* cos(x) as torch.cos on float32, for |x| < 125 (SLEEF's fast range reduction; beyond it SLEEF switches to
 * Payne-Hanek reduction, not reproduced here: NaN is returned so a caller cannot silently differ). */
float cav_torch_cosf(float x);
/* log(x) as torch.log on float32, every input (subnormals, 0 -> -inf, negative -> NaN, inf). */
float cav_torch_logf(float x);

typedef float cav_v8f __attribute__((vector_size(32), aligned(4)));
typedef int cav_v8i __attribute__((vector_size(32), aligned(4)));

/* torch.sum of the float32 values x[i] - sub, i < n (sub is folded into each load, as fbank subtracts the
 * clip mean from each sample as it reads it), in ATen's order (SumKernel.cpp, cascade_sum over a
 * contiguous row, Vectorized<float> of 8 lanes):
 *  - n < 8: four running sums over x[4i + k], the leftovers added to the first, then the four in order;
 *  - otherwise, lane-wise over the nv = n/8 vectors V_v = x[8v .. 8v+7]: four accumulators take V_(4i+k)
 *    for i < nv/4 through a cascade of four levels (after every 2^p rows, p = max(4, ceil(log2(nv/4))/4),
 *    a level is added into the next and cleared, going up while the row count is a multiple of the next
 *    level's span); the levels are added, the leftover vectors added to the first accumulator, the four
 *    added in order; then a scalar from 0 takes the n - 8 nv leftover elements and the 8 lanes in order.
 * If bad is not NULL it receives non-zero when some x[i] is not finite (same pass).
 * (kaldi.fbank's frame means take this path except for frames under 8 samples shifted by 1 sample, which
 * torch sums across frames in another order: measured 4.8e-6 off on the log-mel for 7-sample frames.) */
static inline __attribute__((always_inline)) float cav_torch_sum(const float *restrict x, int64_t n,
                                                                 float sub, uint32_t *bad) {
    uint32_t nonfinite = 0;
    float res;
    if (n < 8) {
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        int64_t i = 0;
        for (; i + 4 <= n; i += 4)
            for (int k = 0; k < 4; k++) acc[k] += x[i + k] - sub;
        for (; i < n; i++) acc[0] += x[i] - sub;
        for (int k = 1; k < 4; k++) acc[0] += acc[k];
        for (int64_t j = 0; j < n; j++) nonfinite |= !isfinite(x[j]);
        res = 0.0f + acc[0];
    } else {
        const cav_v8f vsub = {sub, sub, sub, sub, sub, sub, sub, sub};
        const cav_v8i expo = {0x7F800000, 0x7F800000, 0x7F800000, 0x7F800000,
                              0x7F800000, 0x7F800000, 0x7F800000, 0x7F800000};
        cav_v8i vbad = {0, 0, 0, 0, 0, 0, 0, 0};
#define CAV_TS_LOAD(v, idx)                                                                                  \
    cav_v8f v;                                                                                               \
    memcpy(&v, x + 8 * (idx), 32);                                                                           \
    {                                                                                                        \
        cav_v8i u_;                                                                                          \
        memcpy(&u_, &v, 32);                                                                                 \
        vbad |= (u_ & expo) == expo;                                                                         \
    }                                                                                                        \
    v -= vsub
#define CAV_TS_ROW(i)                                                                                        \
    do {                                                                                                     \
        CAV_TS_LOAD(a0_, 4 * (i));                                                                           \
        CAV_TS_LOAD(a1_, 4 * (i) + 1);                                                                       \
        CAV_TS_LOAD(a2_, 4 * (i) + 2);                                                                       \
        CAV_TS_LOAD(a3_, 4 * (i) + 3);                                                                       \
        s0 += a0_, s1 += a1_, s2 += a2_, s3 += a3_;                                                          \
    } while (0)
        const int64_t nv = n / 8, rows = nv / 4;
        const int cl = rows <= 2 ? 1 : 64 - __builtin_clzll((unsigned long long)(rows - 1)); /* ceil(log2) */
        const int lp = cl / 4 > 4 ? cl / 4 : 4;
        const int64_t step = (int64_t)1 << lp, lmask = step - 1;
        /* level 0 in registers (s0..s3); levels 1-3 only exist once rows >= step (n >= 512 at least) */
        cav_v8f s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
        int64_t i = 0;
        if (rows >= step) {
            cav_v8f up[3][4];
            memset(up, 0, sizeof up);
            while (i + step <= rows) {
                for (int64_t j = 0; j < step; j++, i++) CAV_TS_ROW(i);
                up[0][0] += s0, up[0][1] += s1, up[0][2] += s2, up[0][3] += s3;
                s0 = s1 = s2 = s3 = (cav_v8f){0};
                for (int l = 1; l < 3 && !(i & (lmask << (l * lp))); l++)
                    for (int k = 0; k < 4; k++) {
                        up[l][k] += up[l - 1][k];
                        up[l - 1][k] = (cav_v8f){0};
                    }
            }
            for (; i < rows; i++) CAV_TS_ROW(i);
            /* level 0 plus levels 1, 2, 3 in turn */
            for (int l = 0; l < 3; l++) s0 += up[l][0], s1 += up[l][1], s2 += up[l][2], s3 += up[l][3];
        } else /* no cascade: adding the empty levels (+0) changes nothing, so they are skipped */
            for (; i < rows; i++) CAV_TS_ROW(i);
        cav_v8f p = s0;
        for (int64_t v = rows * 4; v < nv; v++) {
            CAV_TS_LOAD(a, v);
            p += a;
        }
#undef CAV_TS_ROW
#undef CAV_TS_LOAD
        p += s1;
        p += s2;
        p += s3;
        float fin = 0.0f;
        for (int64_t t = nv * 8; t < n; t++) {
            nonfinite |= !isfinite(x[t]);
            fin += x[t] - sub;
        }
        for (int l = 0; l < 8; l++) fin += p[l];
        for (int l = 0; l < 8; l++) nonfinite |= (uint32_t)vbad[l];
        res = 0.0f + fin;
    }
    if (bad) *bad = nonfinite;
    return res;
}

#endif
