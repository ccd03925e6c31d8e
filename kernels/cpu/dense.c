/* dense.c: the CPU reference of the transformer's dense ops — Linear on OpenBLAS sgemm (and its bf16
 * mixed-precision form: the cast to bf16 and the Linear on bf16 operands, emulated exactly by widening them
 * to float for the sgemm), LayerNorm, exact GELU (with their fused forms: the residual add before a
 * LayerNorm, outputs rounded to bf16), softmax and timm's multi-head attention — forward and backward
 * (contracts in kernels.h).
 * Every matmul, including attention's QK^T and att @ V per (batch, head), goes through cblas_sgemm with
 * leading dimensions that address q, k and v inside the qkv buffer, so no head is copied. OpenBLAS runs
 * single-threaded inside these kernels; the parallelism is OpenMP's (row bands, (batch, head) pairs). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "cuda/bf16.h" /* the one float <-> bf16 rounding, shared with the CUDA kernels */
#include "vecmath.h"

/* -O2's "very cheap" vectorizer cost model leaves almost every elementwise loop here scalar; these loops are
 * memory-bound streams where vectors pay. Float reductions keep their order (no -fassociative-math), so
 * results do not change; errno and FP exception flags are never read by this project. */
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-math-errno", "no-trapping-math")

/* One threading runtime: OpenBLAS is kept single-threaded while a kernel runs and the work is split over
 * OpenMP threads instead. Mixing the two (OpenBLAS's pthreads for the products, OpenMP for everything
 * around them) makes each pool's idle threads spin on the cores the other one needs; measured here that
 * was 2-4x slower per training step. */
static int blas_single_begin(void) {
    int n = openblas_get_num_threads();
    if (n > 1) openblas_set_num_threads(1);
    return n;
}
static void blas_single_end(int n) {
    if (n > 1) openblas_set_num_threads(n);
}

/* Row-major C[M,N] = alpha op(A) op(B) + beta C with the rows of C split into one band per OpenMP thread
 * (each band is an independent single-threaded sgemm; every element is computed as in one call). */
static void sgemm_par(enum CBLAS_TRANSPOSE ta, enum CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    int nb = blas_single_begin();
    int bands = (double)M * N * K < 4e6 ? 1 : omp_get_max_threads();
    int rows = ((M + bands - 1) / bands + 15) / 16 * 16;
#pragma omp parallel for if (bands > 1)
    for (int r0 = 0; r0 < M; r0 += rows) {
        int m = M - r0 < rows ? M - r0 : rows;
        const float *a = ta == CblasNoTrans ? A + (size_t)r0 * lda : A + r0;
        cblas_sgemm(CblasRowMajor, ta, tb, m, N, K, alpha, a, lda, B, ldb, beta, C + (size_t)r0 * ldc, ldc);
    }
    blas_single_end(nb);
}

void cav_linear_forward(float *out, const float *inp, const float *w, const float *b, int M, int IC, int OC) {
    /* torch's addmm: the bias is the C operand of the gemm (beta = 1). */
    if (b) {
#pragma omp parallel for if ((size_t)M * OC > CAV_PAR_MIN)
        for (int m = 0; m < M; m++) memcpy(out + (size_t)m * OC, b, sizeof(float) * OC);
    }
    sgemm_par(CblasNoTrans, CblasTrans, M, OC, IC, 1.0f, inp, IC, w, IC, b ? 1.0f : 0.0f, out, OC);
}

/* db[OC] += sum over the M rows of dout[M,OC], in double: the bias gradient of both Linears */
static void bias_grad(float *db, const float *dout, int M, int OC) {
    /* column sums over rows read contiguously: each thread owns a band of 256 columns */
#pragma omp parallel for if ((size_t)M * OC > CAV_PAR_MIN)
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

void cav_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                         const float *w, int M, int IC, int OC) {
    if (dinp) sgemm_par(CblasNoTrans, CblasNoTrans, M, IC, OC, 1.0f, dout, OC, w, IC, 1.0f, dinp, IC);
    if (dw) sgemm_par(CblasTrans, CblasNoTrans, OC, IC, M, 1.0f, dout, OC, inp, IC, 1.0f, dw, IC);
    if (db) bias_grad(db, dout, M, OC);
}

/* ---- bf16 mixed precision ----------------------------------------------------------------------------
 * The emulation of a bf16 tensor-core GEMM with fp32 accumulation: the bf16 operands are widened to float
 * (exact) and multiplied by the fp32 sgemm. Every product of two bf16 values has at most 16 significant bits
 * and is exact in float (with or without FMA), so the only rounding past the operands' is that of the float
 * sums, in OpenBLAS's order here and in cuBLASLt's on a GPU. */

void cav_cast_bf16(uint16_t *out, const float *inp, size_t n) {
#pragma omp parallel for if (n > CAV_PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = cav_bf16_from_f32(inp[i]);
}

void cav_widen_bf16(float *out, const uint16_t *inp, size_t n) {
#pragma omp parallel for if (n > CAV_PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = cav_bf16_to_f32(inp[i]);
}

/* n bf16 values widened into a new float array (NULL when out of memory) */
static float *widen(const uint16_t *x, size_t n) {
    float *f = malloc(sizeof(float) * (n ? n : 1));
    if (!f) return NULL;
    cav_widen_bf16(f, x, n);
    return f;
}
static void widen_oom(void) {
    fprintf(stderr, "cpu backend: out of memory widening bf16 operands\n");
    exit(3);
}

void cav_linear_forward_bf16(float *out, const uint16_t *inp, const uint16_t *w, const uint16_t *b, int M,
                             int IC, int OC) {
    float *x = widen(inp, (size_t)M * IC), *wf = widen(w, (size_t)OC * IC);
    if (!x || !wf) widen_oom();
    sgemm_par(CblasNoTrans, CblasTrans, M, OC, IC, 1.0f, x, IC, wf, IC, 0.0f, out, OC);
    free(x), free(wf);
    if (b) {
        /* the bias after the finished dot product, as cuBLASLt's BIAS epilogue and bf16.h's dot_bias */
#pragma omp parallel for if ((size_t)M * OC > CAV_PAR_MIN)
        for (int m = 0; m < M; m++)
            for (int o = 0; o < OC; o++) out[(size_t)m * OC + o] += cav_bf16_to_f32(b[o]);
    }
}

void cav_linear_backward_bf16(float *dinp, float *dw, float *db, const float *dout, const uint16_t *dout16,
                              const uint16_t *inp, const uint16_t *w, int M, int IC, int OC) {
    if (dinp || dw) {
        float *g = widen(dout16, (size_t)M * OC);
        if (!g) widen_oom();
        if (dinp) {
            float *wf = widen(w, (size_t)OC * IC);
            if (!wf) widen_oom();
            sgemm_par(CblasNoTrans, CblasNoTrans, M, IC, OC, 1.0f, g, OC, wf, IC, 1.0f, dinp, IC);
            free(wf);
        }
        if (dw) {
            float *x = widen(inp, (size_t)M * IC);
            if (!x) widen_oom();
            sgemm_par(CblasTrans, CblasNoTrans, OC, IC, M, 1.0f, g, OC, x, IC, 1.0f, dw, IC);
            free(x);
        }
        free(g);
    }
    if (db) bias_grad(db, dout, M, OC);
}

/* One row of LayerNorm: y[C] from x[C], its mean and 1/std. */
static void layernorm_row(float *y, float *mean, float *rstd, const float *x, const float *w, const float *b,
                          int C) {
    double s = 0, ss = 0;
    for (int c = 0; c < C; c++) s += x[c];
    double mu = s / C;
    for (int c = 0; c < C; c++) ss += (x[c] - mu) * (x[c] - mu);
    float mf = (float)mu, rs = (float)(1.0 / sqrt(ss / C + (double)CAV_LN_EPS));
    for (int c = 0; c < C; c++) y[c] = (x[c] - mf) * rs * w[c] + b[c];
    *mean = mf, *rstd = rs;
}

/* The LayerNorms of kernels.h, plain and fused: rows of a[M,C] (plus r[M,C] into sum when r is given) to
 * out, or to out16 through a row of fp32 (each thread its own) */
static void layernorm_rows(float *sum, float *out, uint16_t *out16, float *mean, float *rstd, const float *a,
                           const float *r, const float *w, const float *b, int M, int C) {
    int oom = 0;
#pragma omp parallel if ((size_t)M * C > CAV_PAR_MIN) reduction(| : oom)
    {
        float *tmp = out ? NULL : malloc(sizeof(float) * (size_t)C);
        oom = !out && !tmp;
#pragma omp for
        for (int m = 0; m < M; m++) {
            if (oom) continue;
            size_t o = (size_t)m * C;
            const float *x = a + o;
            if (r) {
                for (int c = 0; c < C; c++) sum[o + c] = a[o + c] + r[o + c];
                x = sum + o;
            }
            float *y = out ? out + o : tmp;
            layernorm_row(y, mean + m, rstd + m, x, w, b, C);
            if (out16)
                for (int c = 0; c < C; c++) out16[o + c] = cav_bf16_from_f32(y[c]);
        }
        free(tmp);
    }
    if (oom) {
        fprintf(stderr, "cpu backend: out of memory in LayerNorm\n");
        exit(3);
    }
}

void cav_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                           const float *b, int M, int C) {
    layernorm_rows(NULL, out, NULL, mean, rstd, inp, NULL, w, b, M, C);
}

void cav_layernorm_forward_bf16(uint16_t *out16, float *mean, float *rstd, const float *inp, const float *w,
                                const float *b, int M, int C) {
    layernorm_rows(NULL, NULL, out16, mean, rstd, inp, NULL, w, b, M, C);
}

void cav_add_layernorm_forward(float *sum, float *out, uint16_t *out16, float *mean, float *rstd,
                               const float *a, const float *r, const float *w, const float *b, int M, int C) {
    layernorm_rows(sum, out, out16, mean, rstd, a, r, w, b, M, C);
}

void cav_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                            const float *w, const float *mean, const float *rstd, int M, int C) {
    if (dinp) {
#pragma omp parallel for if ((size_t)M * C > CAV_PAR_MIN)
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
#pragma omp parallel for if ((size_t)M * C > CAV_PAR_MIN)
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

/* GELU on blocks of this many elements: each OpenMP chunk calls one vectorized block function. */
#define GELU_BLOCK 4096

CAV_VEC static void gelu_forward_block(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + cav_erf(x * (float)M_SQRT1_2));
    }
}

void cav_gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for if (n > CAV_PAR_MIN)
    for (size_t i = 0; i < n; i += GELU_BLOCK)
        gelu_forward_block(out + i, inp + i, n - i < GELU_BLOCK ? n - i : GELU_BLOCK);
}

void cav_gelu_forward_bf16(uint16_t *out16, const float *inp, size_t n) {
#pragma omp parallel for if (n > CAV_PAR_MIN)
    for (size_t i = 0; i < n; i += GELU_BLOCK) {
        float y[GELU_BLOCK];
        size_t k = n - i < GELU_BLOCK ? n - i : GELU_BLOCK;
        gelu_forward_block(y, inp + i, k);
        for (size_t j = 0; j < k; j++) out16[i + j] = cav_bf16_from_f32(y[j]);
    }
}

CAV_VEC static void gelu_backward_block(float *dinp, const float *inp, const float *dout, size_t n) {
    const float k = (float)(0.5 * M_2_SQRTPI * M_SQRT1_2); /* 1/sqrt(2 pi) */
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float cdf = 0.5f * (1.0f + cav_erf(x * (float)M_SQRT1_2));
        float pdf = k * cav_exp_neg(-0.5f * x * x);
        dinp[i] += dout[i] * (cdf + x * pdf);
    }
}

void cav_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
#pragma omp parallel for if (n > CAV_PAR_MIN)
    for (size_t i = 0; i < n; i += GELU_BLOCK)
        gelu_backward_block(dinp + i, inp + i, dout + i, n - i < GELU_BLOCK ? n - i : GELU_BLOCK);
}

/* y = softmax(x) over one row; in place is allowed. The max and the sum use 16 independent lanes (a fixed
 * order: the result does not depend on the machine's vector width beyond FMA contraction). */
CAV_VEC static void softmax_row(float *y, const float *x, int N) {
    enum { LANES = 16 };
    float m16[LANES], s16[LANES] = {0};
    int j = 0, full = N / LANES * LANES;
    for (int k = 0; k < LANES; k++) m16[k] = x[0];
    for (; j < full; j += LANES)
        for (int k = 0; k < LANES; k++) m16[k] = x[j + k] > m16[k] ? x[j + k] : m16[k];
    float mx = m16[0];
    for (int k = 1; k < LANES; k++) mx = m16[k] > mx ? m16[k] : mx;
    for (; j < N; j++) mx = x[j] > mx ? x[j] : mx;
    for (j = 0; j < N; j++) y[j] = cav_exp_neg(x[j] - mx);
    for (j = 0; j < full; j += LANES)
        for (int k = 0; k < LANES; k++) s16[k] += y[j + k];
    float s = 0;
    for (int k = 0; k < LANES; k++) s += s16[k];
    for (; j < N; j++) s += y[j];
    for (j = 0; j < N; j++) y[j] /= s;
}

/* g = y * (g - sum(g * y)) * scale over one row, in place: the softmax's backward with attention's scale. */
CAV_VEC static void softmax_row_backward(float *g, const float *y, int N, float scale) {
    enum { LANES = 16 };
    float s16[LANES] = {0}, s = 0;
    int j = 0, full = N / LANES * LANES;
    for (; j < full; j += LANES)
        for (int k = 0; k < LANES; k++) s16[k] += g[j + k] * y[j + k];
    for (int k = 0; k < LANES; k++) s += s16[k];
    for (; j < N; j++) s += g[j] * y[j];
    for (int j = 0; j < N; j++) g[j] = y[j] * (g[j] - s) * scale;
}

void cav_softmax_forward(float *out, const float *inp, int M, int N) {
#pragma omp parallel for if ((size_t)M * N > CAV_PAR_MIN)
    for (int m = 0; m < M; m++) softmax_row(out + (size_t)m * N, inp + (size_t)m * N, N);
}

void cav_softmax_backward(float *dinp, const float *dout, const float *out, int M, int N) {
#pragma omp parallel for if ((size_t)M * N > CAV_PAR_MIN)
    for (int m = 0; m < M; m++) {
        const float *y = out + (size_t)m * N, *dy = dout + (size_t)m * N;
        float *dx = dinp + (size_t)m * N;
        float s = 0;
        for (int j = 0; j < N; j++) s += dy[j] * y[j];
        for (int j = 0; j < N; j++) dx[j] += y[j] * (dy[j] - s);
    }
}

void cav_add_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for if (n > CAV_PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void cav_accumulate(float *dst, const float *src, size_t n) {
#pragma omp parallel for if (n > CAV_PAR_MIN)
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

void cav_average_forward(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = (a[i] + b[i]) / 2;
}

void cav_average_backward(float *da, const float *dout, size_t n) {
    for (size_t i = 0; i < n; i++) da[i] = dout[i] / 2;
}

/* Attention works per (batch, head) on small matrices (N x C/H): the (batch, head) pairs are spread over
 * OpenMP threads, each calling a single-threaded sgemm (see sgemm_par for why). */
void cav_attention_forward(float *out, float *att, const float *qkv, int B, int N, int C, int H) {
    int hd = C / H, nb = blas_single_begin();
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(2) schedule(dynamic) if ((size_t)B * H * N * N > CAV_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *q = qkv + (size_t)b * N * 3 * C + (size_t)h * hd, *k = q + C, *v = q + 2 * C;
            float *a = att + ((size_t)b * H + h) * N * N;
            /* alpha = scale multiplies the finished dot product: the scale applies after QK^T, as timm. */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, hd, scale, q, 3 * C, k, 3 * C, 0.0f, a,
                        N);
            for (int i = 0; i < N; i++) softmax_row(a + (size_t)i * N, a + (size_t)i * N, N);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, hd, N, 1.0f, a, N, v, 3 * C, 0.0f,
                        out + (size_t)b * N * C + (size_t)h * hd, C);
        }
    blas_single_end(nb);
}

size_t cav_attention_workspace(int N) {
    return (size_t)omp_get_max_threads() * N * N;
}

void cav_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, float *work,
                            int B, int N, int C, int H) {
    int hd = C / H, nb = blas_single_begin();
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel if ((size_t)B * H * N * N > CAV_PAR_MIN)
    {
        float *g = work + (size_t)omp_get_thread_num() * N * N; /* d att of one (batch, head) */
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                size_t o = (size_t)b * N * 3 * C + (size_t)h * hd;
                const float *q = qkv + o, *k = q + C, *v = q + 2 * C;
                float *dq = dqkv + o, *dk = dq + C, *dv = dq + 2 * C;
                const float *a = att + ((size_t)b * H + h) * N * N;
                const float *dO = dout + (size_t)b * N * C + (size_t)h * hd;
                /* datt = dO @ v^T; dv = att^T @ dO */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, hd, 1.0f, dO, C, v, 3 * C, 0.0f, g,
                            N);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, hd, N, 1.0f, a, N, dO, C, 0.0f, dv,
                            3 * C);
                /* through the softmax and the scale, in place */
                for (int i = 0; i < N; i++)
                    softmax_row_backward(g + (size_t)i * N, a + (size_t)i * N, N, scale);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, hd, N, 1.0f, g, N, k, 3 * C, 0.0f,
                            dq, 3 * C);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, hd, N, 1.0f, g, N, q, 3 * C, 0.0f, dk,
                            3 * C);
            }
    }
    blas_single_end(nb);
}

/* ---- bf16 attention (kernels.h's attention_*_bf16) ------------------------------------------------------
 * The contract's arithmetic written out on float buffers that hold bf16 values: q, k, v, dO, P and dS are
 * rounded into copies (bf16.h's rounding) and multiplied by the fp32 sgemm, whose products of two bf16
 * values are exact, so only its order of sums is OpenBLAS's. The state is lse[B,H,N] as a GPU keeps it; the
 * backward recomputes P from it with the forward's own code, so on the CPU both see the same P. Per (batch,
 * head) scratch (an N x N pair and the rounded rows) is allocated here, as the bf16 Linear widens its
 * operands: the contract gives the forward no workspace. */

/* head rows src[N, hd] (ld apart) rounded to bf16 into dst[N, hd] */
static void round_rows_bf16(float *dst, const float *src, int N, int ld, int hd) {
    for (int i = 0; i < N; i++)
        for (int d = 0; d < hd; d++) dst[(size_t)i * hd + d] = cav_bf16_round(src[(size_t)i * ld + d]);
}

/* one head's q, k, v rows (q at its place in qkv[N,3C]) rounded into q16, k16, v16 [N,hd] */
static void round_qkv_bf16(float *q16, float *k16, float *v16, const float *q, int N, int C, int hd) {
    round_rows_bf16(q16, q, N, 3 * C, hd), round_rows_bf16(k16, q + C, N, 3 * C, hd);
    round_rows_bf16(v16, q + 2 * C, N, 3 * C, hd);
}

/* S[N,N] = (q16 k16^T) scale: alpha multiplies each finished dot product */
static void scores_bf16(float *S, const float *q16, const float *k16, int N, int hd, float scale) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, hd, scale, q16, hd, k16, hd, 0.0f, S, N);
}
/* lse[N] of the rows of S[N,N]: m + log(sum exp(S - m)), m the row's max, j in order */
static void lse_rows(float *lse, const float *S, int N) {
    for (int i = 0; i < N; i++) {
        const float *s = S + (size_t)i * N;
        float m = s[0], l = 0;
        for (int j = 1; j < N; j++) m = s[j] > m ? s[j] : m;
        for (int j = 0; j < N; j++) l += expf(s[j] - m);
        lse[i] = m + logf(l);
    }
}
/* S[N,N] to P = exp(S - lse), in place */
static void probs_from_lse(float *S, const float *lse, int N) {
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) S[(size_t)i * N + j] = expf(S[(size_t)i * N + j] - lse[i]);
}

static void round_inplace_bf16(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = cav_bf16_round(x[i]);
}

/* per thread: two N x N matrices and four sets of rounded head rows */
static float *attention_bf16_scratch(int N, int hd, size_t *per) {
    *per = 2 * (size_t)N * N + 4 * (size_t)N * hd;
    float *w = malloc(sizeof(float) * *per * omp_get_max_threads());
    if (!w) {
        fprintf(stderr, "cpu backend: out of memory for the bf16 attention's scratch\n");
        exit(3);
    }
    return w;
}

size_t cav_attention_bf16_state_size(int B, int H, int N) {
    return (size_t)B * H * N;
}
size_t cav_attention_bf16_workspace(int B, int H, int N) {
    return (size_t)B * H * N;
}

void cav_attention_forward_bf16(float *out, float *lse, const float *qkv, int B, int N, int C, int H) {
    if (B <= 0 || N <= 0) return;
    int hd = C / H, nb = blas_single_begin();
    float scale = 1.0f / sqrtf((float)hd);
    size_t per;
    float *scratch = attention_bf16_scratch(N, hd, &per);
#pragma omp parallel if ((size_t)B * H * N * N > CAV_PAR_MIN)
    {
        float *S = scratch + per * omp_get_thread_num(), *q16 = S + 2 * (size_t)N * N,
              *k16 = q16 + (size_t)N * hd, *v16 = k16 + (size_t)N * hd;
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                const float *q = qkv + (size_t)b * N * 3 * C + (size_t)h * hd;
                round_qkv_bf16(q16, k16, v16, q, N, C, hd);
                float *L = lse + ((size_t)b * H + h) * N;
                scores_bf16(S, q16, k16, N, hd, scale);
                lse_rows(L, S, N);
                probs_from_lse(S, L, N);
                round_inplace_bf16(S, (size_t)N * N);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, hd, N, 1.0f, S, N, v16, hd, 0.0f,
                            out + (size_t)b * N * C + (size_t)h * hd, C);
            }
    }
    free(scratch);
    blas_single_end(nb);
}

void cav_attention_backward_bf16(float *dqkv, const float *dout, const float *qkv, const float *out,
                                 const float *lse, float *D, int B, int N, int C, int H) {
    if (B <= 0 || N <= 0) return;
    int hd = C / H, nb = blas_single_begin();
    float scale = 1.0f / sqrtf((float)hd);
    size_t per;
    float *scratch = attention_bf16_scratch(N, hd, &per);
#pragma omp parallel if ((size_t)B * H * N * N > CAV_PAR_MIN)
    {
        float *P = scratch + per * omp_get_thread_num(), *G = P + (size_t)N * N, *q16 = G + (size_t)N * N,
              *k16 = q16 + (size_t)N * hd, *v16 = k16 + (size_t)N * hd, *do16 = v16 + (size_t)N * hd;
#pragma omp for collapse(2) schedule(dynamic)
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++) {
                size_t o = (size_t)b * N * 3 * C + (size_t)h * hd, bh = (size_t)b * H + h;
                const float *q = qkv + o, *dO = dout + (size_t)b * N * C + (size_t)h * hd;
                const float *O = out + (size_t)b * N * C + (size_t)h * hd, *L = lse + bh * N;
                float *dq = dqkv + o, *dk = dq + C, *dv = dq + 2 * C, *Dr = D + bh * N;
                round_qkv_bf16(q16, k16, v16, q, N, C, hd), round_rows_bf16(do16, dO, N, C, hd);
                for (int i = 0; i < N; i++) {
                    float s = 0;
                    for (int d = 0; d < hd; d++) s += dO[(size_t)i * C + d] * O[(size_t)i * C + d];
                    Dr[i] = s;
                }
                scores_bf16(P, q16, k16, N, hd, scale);
                probs_from_lse(P, L, N);
                /* G = dP = dO16 v16^T, then dS = P (dP - D) scale, rounded */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, hd, 1.0f, do16, hd, v16, hd, 0.0f,
                            G, N);
                for (int i = 0; i < N; i++)
                    for (int j = 0; j < N; j++) {
                        size_t e = (size_t)i * N + j;
                        G[e] = cav_bf16_round(P[e] * (G[e] - Dr[i]) * scale);
                    }
                round_inplace_bf16(P, (size_t)N * N);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, hd, N, 1.0f, P, N, do16, hd, 0.0f, dv,
                            3 * C);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, hd, N, 1.0f, G, N, k16, hd, 0.0f,
                            dq, 3 * C);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, hd, N, 1.0f, G, N, q16, hd, 0.0f, dk,
                            3 * C);
            }
    }
    free(scratch);
    blas_single_end(nb);
}
