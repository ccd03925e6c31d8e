/* bf16.h: bfloat16 arithmetic as small functions compiled both by nvcc (for the kernels) and by the C
 * compiler (tests/unit/test_bf16.c checks them against PyTorch on the host, tests/ref/gen_bf16.py):
 * float -> bf16 rounding to nearest, ties to even (c10::BFloat16's round_to_nearest_even: every float
 * rounds as torch's x.to(torch.bfloat16), subnormals and overflow to infinity included; a NaN becomes the
 * quiet NaN 0x7FC0), bf16 -> float (exact: the 16 bits on top of a float), and the emulated bf16 linear
 * that a mixed-precision matmul computes: inputs and weights rounded to bf16, products and sums in float.
 *
 * A product of two bf16 values (8-bit significands) has at most 16 significant bits, so it is exact in
 * float: the only rounding of the emulated linear, past the inputs', is the order of its float sum, k in
 * increasing order here (a tensor-core GEMM sums in its own order; test_bf16.c states the bound). */
#ifndef CAV_CUDA_BF16_H
#define CAV_CUDA_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define CAV_BF_HD static inline __host__ __device__
#else
#define CAV_BF_HD static inline
#endif

#define CAV_BF16_NAN 0x7FC0 /* the quiet NaN every NaN rounds to (c10::BFloat16) */

CAV_BF_HD uint16_t cav_bf16_from_f32(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return CAV_BF16_NAN;
    /* add half an ulp of bf16, less one when the kept part is even: a tie goes to the even neighbour; a
     * carry out of the significand moves the exponent up (to infinity from the largest floats) */
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
CAV_BF_HD float cav_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
/* x rounded to the nearest bf16, as a float */
CAV_BF_HD float cav_bf16_round(float x) {
    return cav_bf16_to_f32(cav_bf16_from_f32(x));
}

/* one output of the emulated bf16 linear: sum_k bf16(x_k) bf16(w_k) in float, k in order, then + bf16(b) as
 * torch's addmm adds its bias operand to the finished product */
CAV_BF_HD float cav_bf16_dot_bias(const float *x, const float *w, int K, float b) {
    float s = 0;
    for (int k = 0; k < K; k++) s += cav_bf16_round(x[k]) * cav_bf16_round(w[k]);
    return s + cav_bf16_round(b);
}

#ifndef __CUDA_ARCH__
/* The emulated bf16 torch.nn.Linear on the host: out[M,OC] = bf16(inp[M,IC]) @ bf16(w[OC,IC])^T + bf16(b[OC])
 * in float (b may be NULL) */
static inline void cav_bf16_linear_host(float *out, const float *inp, const float *w, const float *b, int M,
                                        int IC, int OC) {
    for (int m = 0; m < M; m++)
        for (int o = 0; o < OC; o++)
            out[(size_t)m * OC + o] =
                cav_bf16_dot_bias(inp + (size_t)m * IC, w + (size_t)o * IC, IC, b ? b[o] : 0.0f);
}
#endif

#endif
