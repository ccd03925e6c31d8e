/* dense.c: the CPU reference of the transformer's dense ops — Linear on OpenBLAS sgemm, LayerNorm, exact
 * GELU, softmax and timm's multi-head attention — forward and backward (contracts in kernels.h).
 * Every matmul, including attention's QK^T and att @ V per (batch, head), goes through cblas_sgemm with
 * leading dimensions that address q, k and v inside the qkv buffer, so no head is copied. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

void cav_linear_forward(float *out, const float *inp, const float *w, const float *b, int M, int IC, int OC) {
    /* torch's addmm: the bias is the C operand of the gemm (beta = 1). */
    if (b) {
#pragma omp parallel for if((size_t)M * OC > CAV_PAR_MIN)
        for (int m = 0; m < M; m++) memcpy(out + (size_t)m * OC, b, sizeof(float) * OC);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, OC, IC, 1.0f, inp, IC, w, IC, b ? 1.0f : 0.0f, out,
                OC);
}

void cav_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                         int M, int IC, int OC) {
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, IC, OC, 1.0f, dout, OC, w, IC, 1.0f, dinp, IC);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, M, 1.0f, dout, OC, inp, IC, 1.0f, dw, IC);
    if (db) {
        /* column sums over rows read contiguously: each thread owns a band of 256 columns */
#pragma omp parallel for if((size_t)M * OC > CAV_PAR_MIN)
        for (int o0 = 0; o0 < OC; o0 += 256) {
            int n = OC - o0 < 256 ? OC - o0 : 256;
            double s[256] = {0};
            for (int m = 0; m < M; m++) {
                const float *r = dout + (size_t)m * OC + o0;
                for (int o = 0; o < n; o++) s[o] += r[o];
            }
            for (int o = 0; o < n; o++) db[o0 + o] += (float)s[o];
        }
    }
}

void cav_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                           const float *b, int M, int C) {
#pragma omp parallel for if((size_t)M * C > CAV_PAR_MIN)
    for (int m = 0; m < M; m++) {
        const float *x = inp + (size_t)m * C;
        float *y = out + (size_t)m * C;
        double s = 0, ss = 0;
        for (int c = 0; c < C; c++) s += x[c];
        double mu = s / C;
        for (int c = 0; c < C; c++) ss += (x[c] - mu) * (x[c] - mu);
        float mf = (float)mu, rs = (float)(1.0 / sqrt(ss / C + (double)CAV_LN_EPS));
        for (int c = 0; c < C; c++) y[c] = (x[c] - mf) * rs * w[c] + b[c];
        mean[m] = mf;
        rstd[m] = rs;
    }
}

void cav_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                            const float *w, const float *mean, const float *rstd, int M, int C) {
    if (dinp) {
#pragma omp parallel for if((size_t)M * C > CAV_PAR_MIN)
        for (int m = 0; m < M; m++) {
            const float *x = inp + (size_t)m * C, *dy = dout + (size_t)m * C;
            float *dx = dinp + (size_t)m * C;
            float mu = mean[m], rs = rstd[m];
            double a = 0, bsum = 0; /* mean(dy*w), mean(dy*w*xhat) */
            for (int c = 0; c < C; c++) {
                float g = dy[c] * w[c];
                a += g;
                bsum += g * ((x[c] - mu) * rs);
            }
            float ma = (float)(a / C), mb = (float)(bsum / C);
            for (int c = 0; c < C; c++) {
                float xh = (x[c] - mu) * rs;
                dx[c] += rs * (dy[c] * w[c] - ma - xh * mb);
            }
        }
    }
    if (dw || db) {
        /* Column sums: threads own disjoint column ranges, so no reduction races. */
#pragma omp parallel for if((size_t)M * C > CAV_PAR_MIN)
        for (int c0 = 0; c0 < C; c0 += 64) {
            int c1 = c0 + 64 < C ? c0 + 64 : C;
            double sw[64] = {0}, sb[64] = {0};
            for (int m = 0; m < M; m++) {
                const float *x = inp + (size_t)m * C, *dy = dout + (size_t)m * C;
                for (int c = c0; c < c1; c++) {
                    sw[c - c0] += dy[c] * ((x[c] - mean[m]) * rstd[m]);
                    sb[c - c0] += dy[c];
                }
            }
            for (int c = c0; c < c1; c++) {
                if (dw) dw[c] += (float)sw[c - c0];
                if (db) db[c] += (float)sb[c - c0];
            }
        }
    }
}

void cav_gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for if(n > CAV_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
    }
}

void cav_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    const float k = (float)(0.5 * M_2_SQRTPI * M_SQRT1_2); /* 1/sqrt(2 pi) */
#pragma omp parallel for if(n > CAV_PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float cdf = 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
        float pdf = k * expf(-0.5f * x * x);
        dinp[i] += dout[i] * (cdf + x * pdf);
    }
}

/* Without trapping-math, the compare in the clamp below is a blend and the loop vectorizes (no exception
 * flags are ever read in this project). */
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")

/* exp for the softmax's arguments (x <= 0 after the max is subtracted), written so the compiler vectorizes
 * it: x = n ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2), exp(r) by Cephes' expf polynomial, 2^n
 * through the exponent bits. Within 2 ulp of expf; arguments below -87.3 (results under FLT_MIN) give
 * exp(-87.3), which a softmax cannot tell from 0 next to its maximum's 1. */
static inline float softmax_exp(float x) {
    x = x < -87.3f ? -87.3f : x;
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float z = r * r;
    float p = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
               1.6666665459e-1f) * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static void softmax_row(float *y, const float *x, int N) {
    float mx = x[0];
    for (int j = 1; j < N; j++) mx = x[j] > mx ? x[j] : mx;
#pragma omp simd
    for (int j = 0; j < N; j++) y[j] = softmax_exp(x[j] - mx);
    float s4[4] = {0, 0, 0, 0}, s;
    int j = 0;
    for (; j + 4 <= N; j += 4)
        for (int k = 0; k < 4; k++) s4[k] += y[j + k];
    s = (s4[0] + s4[1]) + (s4[2] + s4[3]);
    for (; j < N; j++) s += y[j];
    for (j = 0; j < N; j++) y[j] /= s;
}
#pragma GCC pop_options

void cav_softmax_forward(float *out, const float *inp, int M, int N) {
#pragma omp parallel for if((size_t)M * N > CAV_PAR_MIN)
    for (int m = 0; m < M; m++) softmax_row(out + (size_t)m * N, inp + (size_t)m * N, N);
}

void cav_softmax_backward(float *dinp, const float *dout, const float *out, int M, int N) {
#pragma omp parallel for if((size_t)M * N > CAV_PAR_MIN)
    for (int m = 0; m < M; m++) {
        const float *y = out + (size_t)m * N, *dy = dout + (size_t)m * N;
        float *dx = dinp + (size_t)m * N;
        float s = 0;
        for (int j = 0; j < N; j++) s += dy[j] * y[j];
        for (int j = 0; j < N; j++) dx[j] += y[j] * (dy[j] - s);
    }
}

void cav_add_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for if(n > CAV_PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void cav_accumulate(float *dst, const float *src, size_t n) {
#pragma omp parallel for if(n > CAV_PAR_MIN)
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

void cav_attention_forward(float *out, float *att, const float *qkv, int B, int N, int C, int H) {
    int hd = C / H;
    float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *q = qkv + (size_t)b * N * 3 * C + (size_t)h * hd, *k = q + C, *v = q + 2 * C;
            float *a = att + ((size_t)b * H + h) * N * N;
            /* alpha = scale multiplies the finished dot product: the scale applies after QK^T, as timm. */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, hd, scale, q, 3 * C, k, 3 * C, 0.0f, a, N);
            cav_softmax_forward(a, a, N, N);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, hd, N, 1.0f, a, N, v, 3 * C, 0.0f,
                        out + (size_t)b * N * C + (size_t)h * hd, C);
        }
}

void cav_attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv, const float *att,
                            int B, int N, int C, int H) {
    int hd = C / H;
    float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            size_t o = (size_t)b * N * 3 * C + (size_t)h * hd;
            const float *q = qkv + o, *k = q + C, *v = q + 2 * C;
            float *dq = dqkv + o, *dk = dq + C, *dv = dq + 2 * C;
            const float *a = att + ((size_t)b * H + h) * N * N;
            const float *dO = dout + (size_t)b * N * C + (size_t)h * hd;
            /* datt = dO @ v^T; dv = att^T @ dO */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, hd, 1.0f, dO, C, v, 3 * C, 0.0f, scratch, N);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, hd, N, 1.0f, a, N, dO, C, 0.0f, dv, 3 * C);
            /* through the softmax and the scale, in place */
#pragma omp parallel for if((size_t)N * N > CAV_PAR_MIN)
            for (int i = 0; i < N; i++) {
                float *g = scratch + (size_t)i * N;
                const float *y = a + (size_t)i * N;
                float s = 0;
                for (int j = 0; j < N; j++) s += g[j] * y[j];
                for (int j = 0; j < N; j++) g[j] = y[j] * (g[j] - s) * scale;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, hd, N, 1.0f, scratch, N, k, 3 * C, 0.0f, dq,
                        3 * C);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, hd, N, 1.0f, scratch, N, q, 3 * C, 0.0f, dk,
                        3 * C);
        }
}
