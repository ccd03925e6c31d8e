/* dense.cu: the CUDA backend's dense ops, mirroring kernels/cpu/dense.c — Linear through cuBLASLt (fp32
 * compute, no TF32), LayerNorm, exact GELU, the elementwise adds, the fused forms (the residual add with the
 * next LayerNorm, outputs written in bf16) — and the deterministic column sums that the parameter gradients
 * (bias, LayerNorm, embeddings) use. Contracts in kernels.h.
 *
 * The Linear bias rides cuBLASLt's BIAS epilogue: D = fl(acc + b) per element, the acc being the finished
 * fp32 dot product. The CPU gives the bias to OpenBLAS as the C operand (beta = 1), which computes
 * fl(b + acc) as long as the K dimension is one OpenBLAS block, so the two differ only by the dot product's
 * summation order (a few ulp, the tolerance of tests/unit/test_kernels.c), not by where the bias enters.
 * The epilogue needs a 16-byte aligned bias, which the heuristic is not relied on to check: an unaligned
 * one (or no algorithm for the epilogue) gets the bias added after the GEMM, with the same single rounding.
 * The bias gradient does not use the BGRADB epilogue: it overwrites where the seam accumulates, and its order
 * is not documented; it is a column sum in reduce.h's order.
 *
 * The bf16 Linear (--precision bf16) is the same GEMM with bf16 A and B (CUDA_R_16BF), fp32 D and
 * CUBLAS_COMPUTE_32F: tensor cores, products exact in fp32, fp32 sums in cuBLASLt's order; the CPU's
 * emulation (kernels/cpu/dense.c) differs only by that order. Its bf16 bias is widened into an fp32 vector
 * for the BIAS epilogue (the epilogue's proven fp32 bias type; the values are the bf16 ones exactly), and
 * its bias gradient is the fp32 path's column sum of the fp32 dout. The cast fp32 -> bf16 is bf16.h's
 * rounding, the one the CPU uses. */
#include "bf16.h"
#include "cuda_ops.h"

/* D[:, j] += bias for each of the n columns of the column-major D[m,n] (a row-major out[n,m] += b[m]) */
static __global__ void add_rows_kernel(float *D, const float *bias, int m, int n, int ldd) {
    CAV_FOR_EACH(i, (size_t)m * n) D[(i / m) * ldd + i % m] += bias[i % m];
}
static void add_rows(float *D, const float *bias, int m, int n, int ldd) {
    add_rows_kernel<<<cav_grid((size_t)m * n, 256), 256>>>(D, bias, m, n, ldd);
    LAUNCHED();
}

/* ---- cuBLASLt GEMM, column-major: D[m,n] = op(A) op(B) (+ beta D) (+ bias[m] per row of D) ------------- */

/* What decides a GEMM's descriptors and algorithm: a step issues the same few dozen shapes hundreds of times,
 * so each is planned once (descriptors, heuristic query) and kept for the process's life. The heuristic is
 * asked once per key, so a shape always runs the same algorithm: the same bits on every step. */
struct lt_key {
    bool ta, tb, bias; /* bias: the BIAS epilogue wanted (a 16-byte aligned bias vector) */
    int m, n, k, lda, ldb, ldd;
    cudaDataType_t ab;
    uint32_t align[3]; /* A, B, D pointers' alignment told to the heuristic (bf16 only; 0 for fp32) */
};
struct lt_plan {
    lt_key key;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
    bool fused; /* the BIAS epilogue is in op (else a wanted bias is added after the GEMM) */
};
#define LT_PLANS 512 /* a base pretraining step has under 100 keys; past this the plans are not kept */
static lt_plan lt_plans[LT_PLANS];
static int lt_nplans;

static bool lt_same(const lt_key &a, const lt_key &b) {
    return a.ta == b.ta && a.tb == b.tb && a.bias == b.bias && a.m == b.m && a.n == b.n && a.k == b.k &&
           a.lda == b.lda && a.ldb == b.ldb && a.ldd == b.ldd && a.ab == b.ab && a.align[0] == b.align[0] &&
           a.align[1] == b.align[1] && a.align[2] == b.align[2];
}

/* the largest power of two up to 256 dividing the address */
static uint32_t alignment(const void *p) {
    uint32_t al = 256;
    while (al > 1 && (uintptr_t)p % al) al /= 2;
    return al;
}

/* Descriptors and algorithm for key into pl; the BIAS epilogue when the key wants it and an algorithm has it
 * (asked with this call's bias pointer set, as cuBLASLt may check the descriptor's pointers). */
static void lt_plan_make(lt_plan *pl, const lt_key &key, const float *bias) {
    pl->key = key;
    cublasOperation_t opa = key.ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = key.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    int m = key.m, n = key.n, k = key.k;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&pl->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl->la, key.ab, key.ta ? k : m, key.ta ? m : k, key.lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl->lb, key.ab, key.tb ? n : k, key.tb ? k : n, key.ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&pl->ld, CUDA_R_32F, m, n, key.ldd));
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                      &cav_cuda.lt_work_bytes,
                                                      sizeof cav_cuda.lt_work_bytes));
    if (key.ab != CUDA_R_32F) {
        /* The heuristic assumes 256-byte aligned operands unless told; a bf16 weight's slice of the flat bf16
         * copy, or a decoder row block, may be less aligned: give it each pointer's true alignment (C is D).
         * (The fp32 path keeps its algorithm choice as it was.) */
        const cublasLtMatmulPreferenceAttributes_t attr[4] = {
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
        const uint32_t al[4] = {key.align[0], key.align[1], key.align[2], key.align[2]};
        for (int i = 0; i < 4; i++)
            CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr[i], &al[i], sizeof al[i]));
    }
    cublasLtMatmulHeuristicResult_t h;
    int found = 0;
    pl->fused = false;
    if (key.bias) {
        cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
        CUBLAS_CHECK(
            cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        if (cublasLtMatmulAlgoGetHeuristic(cav_cuda.lt, pl->op, pl->la, pl->lb, pl->ld, pl->ld, pref, 1, &h,
                                           &found) == CUBLAS_STATUS_SUCCESS &&
            found > 0)
            pl->fused = true;
        else {
            cublasLtEpilogue_t none = CUBLASLT_EPILOGUE_DEFAULT;
            CUBLAS_CHECK(
                cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &none, sizeof none));
        }
    }
    if (!pl->fused) {
        CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(cav_cuda.lt, pl->op, pl->la, pl->lb, pl->ld, pl->ld, pref,
                                                    1, &h, &found));
        if (found == 0)
            cav_cuda_die("cublasLtMatmulAlgoGetHeuristic", __FILE__, __LINE__,
                         key.ab == CUDA_R_32F ? "no fp32 algorithm" : "no bf16 algorithm");
    }
    pl->algo = h.algo;
    cublasLtMatmulPreferenceDestroy(pref);
}

static void lt_plan_free(lt_plan *pl) {
    cublasLtMatrixLayoutDestroy(pl->la), cublasLtMatrixLayoutDestroy(pl->lb),
        cublasLtMatrixLayoutDestroy(pl->ld);
    cublasLtMatmulDescDestroy(pl->op);
}

static void lt_gemm(bool ta, bool tb, int m, int n, int k, const void *A, int lda, const void *B, int ldb,
                    float beta, float *D, int ldd, const float *bias, cudaDataType_t ab = CUDA_R_32F) {
    if (m == 0 || n == 0) return;
    lt_key key = {ta, tb, bias && (uintptr_t)bias % 16 == 0, m, n, k, lda, ldb, ldd, ab, {0, 0, 0}};
    if (ab != CUDA_R_32F)
        key.align[0] = alignment(A), key.align[1] = alignment(B), key.align[2] = alignment(D);
    lt_plan *pl = NULL, once;
    for (int i = 0; i < lt_nplans && !pl; i++)
        if (lt_same(lt_plans[i].key, key)) pl = &lt_plans[i];
    if (!pl) {
        pl = lt_nplans < LT_PLANS ? &lt_plans[lt_nplans++] : &once;
        lt_plan_make(pl, key, bias);
    }
    if (pl->fused)
        CUBLAS_CHECK(
            cublasLtMatmulDescSetAttribute(pl->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    const float one = 1.0f;
    CUBLAS_CHECK(cublasLtMatmul(cav_cuda.lt, pl->op, &one, A, pl->la, B, pl->lb, &beta, D, pl->ld, D, pl->ld,
                                &pl->algo, cav_cuda.lt_work, cav_cuda.lt_work_bytes, 0));
    bool fused = pl->fused;
    if (pl == &once) lt_plan_free(pl);
    if (bias && !fused) add_rows(D, bias, m, n, ldd);
}

/* Row-major out[M,OC] is column-major out^T[OC,M]: out^T = w @ inp^T with w^T[IC,OC] transposed back. */
void cav_cuda_linear_forward(float *out, const float *inp, const float *w, const float *b, int M, int IC,
                             int OC) {
    lt_gemm(true, false, OC, M, IC, w, IC, inp, IC, 0.0f, out, OC, b);
}

void cav_cuda_linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                              const float *w, int M, int IC, int OC) {
    if (dinp)
        lt_gemm(false, false, IC, M, OC, w, IC, dout, OC, 1.0f, dinp, IC, NULL);    /* dinp^T += w^T dout^T */
    if (dw) lt_gemm(false, true, IC, OC, M, inp, IC, dout, OC, 1.0f, dw, IC, NULL); /* dw^T += inp^T dout */
    if (db) cav_cuda_colsum(db, dout, NULL, M, OC, M, M, 0);
}

/* ---- bf16 mixed precision ---------------------------------------------------------------------------- */

static __global__ void cast_bf16_kernel(uint16_t *out, const float *inp, size_t n) {
    CAV_FOR_EACH(i, n) out[i] = cav_bf16_from_f32(inp[i]);
}
static __global__ void widen_bf16_kernel(float *out, const uint16_t *inp, size_t n) {
    CAV_FOR_EACH(i, n) out[i] = cav_bf16_to_f32(inp[i]);
}

void cav_cuda_cast_bf16(uint16_t *out, const float *inp, size_t n) {
    if (!n) return;
    cast_bf16_kernel<<<cav_grid(n, 256), 256>>>(out, inp, n);
    LAUNCHED();
}

void cav_cuda_widen_bf16(float *out, const uint16_t *inp, size_t n) {
    if (!n) return;
    widen_bf16_kernel<<<cav_grid(n, 256), 256>>>(out, inp, n);
    LAUNCHED();
}

void cav_cuda_linear_forward_bf16(float *out, const uint16_t *inp, const uint16_t *w, const uint16_t *b,
                                  int M, int IC, int OC) {
    float *bias = NULL;
    if (b) { /* the bf16 bias as the fp32 vector the epilogue takes (slot 1: no column sum runs here) */
        bias = (float *)cav_cuda_scratch(1, sizeof(float) * OC);
        widen_bf16_kernel<<<cav_grid(OC, 256), 256>>>(bias, b, OC);
        LAUNCHED();
    }
    lt_gemm(true, false, OC, M, IC, w, IC, inp, IC, 0.0f, out, OC, bias, CUDA_R_16BF);
}

void cav_cuda_linear_backward_bf16(float *dinp, float *dw, float *db, const float *dout,
                                   const uint16_t *dout16, const uint16_t *inp, const uint16_t *w, int M,
                                   int IC, int OC) {
    if (dinp) lt_gemm(false, false, IC, M, OC, w, IC, dout16, OC, 1.0f, dinp, IC, NULL, CUDA_R_16BF);
    if (dw) lt_gemm(false, true, IC, OC, M, inp, IC, dout16, OC, 1.0f, dw, IC, NULL, CUDA_R_16BF);
    if (db) cav_cuda_colsum(db, dout, NULL, M, OC, M, M, 0);
}

/* ---- column sums in reduce.h's chunk order ----------------------------------------------------------------
 */

static __global__ void colsum_part_kernel(double *part, const float *x, const float *keep, int rows, int C,
                                          int n, int ntot, int off, int chunks) {
    CAV_FOR_EACH(i, (size_t)chunks * C)
    part[i] = cav_col_chunk(x, keep, rows, C, n, ntot, off, (int)(i % C), (int)(i / C));
}
static __global__ void colsum_ln_part_kernel(double *part, const float *dy, const float *x, const float *mean,
                                             const float *rstd, int rows, int C, int chunks) {
    CAV_FOR_EACH(i, (size_t)chunks * C)
    part[i] = cav_col_chunk_ln(dy, x, mean, rstd, rows, C, (int)(i % C), (int)(i / C));
}
static __global__ void colsum_total_kernel(float *out, const double *part, int chunks, int C) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x)
        out[c] += (float)cav_col_total(part, chunks, C, c);
}

void cav_cuda_colsum(float *out, const float *x, const float *keep, int rows, int C, int n, int ntot,
                     int off) {
    if (rows <= 0 || C <= 0) return;
    int chunks = cav_col_chunks(rows);
    double *part = (double *)cav_cuda_scratch(0, sizeof(double) * chunks * C);
    colsum_part_kernel<<<cav_grid((size_t)chunks * C, 256), 256>>>(part, x, keep, rows, C, n, ntot, off,
                                                                   chunks);
    LAUNCHED();
    colsum_total_kernel<<<cav_grid(C, 256), 256>>>(out, part, chunks, C);
    LAUNCHED();
}

void cav_cuda_colsum_ln(float *dw, const float *dy, const float *x, const float *mean, const float *rstd,
                        int rows, int C) {
    if (rows <= 0 || C <= 0) return;
    int chunks = cav_col_chunks(rows);
    double *part = (double *)cav_cuda_scratch(0, sizeof(double) * chunks * C);
    colsum_ln_part_kernel<<<cav_grid((size_t)chunks * C, 256), 256>>>(part, dy, x, mean, rstd, rows, C,
                                                                      chunks);
    LAUNCHED();
    colsum_total_kernel<<<cav_grid(C, 256), 256>>>(dw, part, chunks, C);
    LAUNCHED();
}

/* ---- LayerNorm: one block of CAV_RD_T threads per row
 * ------------------------------------------------------ */

/* The row's LayerNorm output, stored as the op asks: fp32, or rounded to bf16 (cast_bf16's rounding) */
static __device__ inline void ln_store(float *y, size_t i, float v) {
    y[i] = v;
}
static __device__ inline void ln_store(uint16_t *y, size_t i, float v) {
    y[i] = cav_bf16_from_f32(v);
}

/* One row per block: with r, the row of sum = a + r first (written, then read back by the whole block: the
 * barrier makes the block's global writes visible to it), then LayerNorm of the row into out. */
template <typename T>
static __global__ void layernorm_forward_kernel(float *sum, T *out, float *mean, float *rstd, const float *a,
                                                const float *r, const float *w, const float *b, int C) {
    __shared__ double sh[CAV_RD_T];
    int l = threadIdx.x;
    size_t o = (size_t)blockIdx.x * C;
    const float *x = a + o;
    if (r) {
        for (int c = l; c < C; c += CAV_RD_T) sum[o + c] = a[o + c] + r[o + c];
        __syncthreads();
        x = sum + o;
    }
    double mu = cav_block_sum(cav_rd_sum(x, C, l), sh) / C;
    double ss = cav_block_sum(cav_rd_sqdev(x, C, mu, l), sh);
    float mf = (float)mu, rs = (float)(1.0 / sqrt(ss / C + (double)CAV_LN_EPS));
    for (int c = l; c < C; c += CAV_RD_T) ln_store(out, o + c, (x[c] - mf) * rs * w[c] + b[c]);
    if (l == 0) mean[blockIdx.x] = mf, rstd[blockIdx.x] = rs;
}

void cav_cuda_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                                const float *b, int M, int C) {
    if (M <= 0) return;
    layernorm_forward_kernel<float><<<M, CAV_RD_T>>>(NULL, out, mean, rstd, inp, NULL, w, b, C);
    LAUNCHED();
}

void cav_cuda_layernorm_forward_bf16(uint16_t *out16, float *mean, float *rstd, const float *inp,
                                     const float *w, const float *b, int M, int C) {
    if (M <= 0) return;
    layernorm_forward_kernel<uint16_t><<<M, CAV_RD_T>>>(NULL, out16, mean, rstd, inp, NULL, w, b, C);
    LAUNCHED();
}

void cav_cuda_add_layernorm_forward(float *sum, float *out, uint16_t *out16, float *mean, float *rstd,
                                    const float *a, const float *r, const float *w, const float *b, int M,
                                    int C) {
    if (M <= 0) return;
    if (out16)
        layernorm_forward_kernel<uint16_t><<<M, CAV_RD_T>>>(sum, out16, mean, rstd, a, r, w, b, C);
    else
        layernorm_forward_kernel<float><<<M, CAV_RD_T>>>(sum, out, mean, rstd, a, r, w, b, C);
    LAUNCHED();
}

static __global__ void layernorm_backward_kernel(float *dinp, const float *dout, const float *inp,
                                                 const float *w, const float *mean, const float *rstd,
                                                 int C) {
    __shared__ double sh[CAV_RD_T];
    int l = threadIdx.x;
    size_t o = (size_t)blockIdx.x * C;
    const float *x = inp + o, *dy = dout + o;
    float *dx = dinp + o;
    float mu = mean[blockIdx.x], rs = rstd[blockIdx.x];
    double a, bs;
    cav_rd_ln_bwd(x, dy, w, mu, rs, C, l, &a, &bs);
    a = cav_block_sum(a, sh);
    bs = cav_block_sum(bs, sh);
    float ma = (float)(a / C), mb = (float)(bs / C);
    for (int c = l; c < C; c += CAV_RD_T) {
        float xh = (x[c] - mu) * rs;
        dx[c] += rs * (dy[c] * w[c] - ma - xh * mb);
    }
}

void cav_cuda_layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                 const float *w, const float *mean, const float *rstd, int M, int C) {
    if (M <= 0) return;
    if (dinp) {
        layernorm_backward_kernel<<<M, CAV_RD_T>>>(dinp, dout, inp, w, mean, rstd, C);
        LAUNCHED();
    }
    if (dw) cav_cuda_colsum_ln(dw, dout, inp, mean, rstd, M, C);
    if (db) cav_cuda_colsum(db, dout, NULL, M, C, M, M, 0);
}

/* ---- elementwise
 * ------------------------------------------------------------------------------------------- */

static __device__ inline float gelu(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}
static __global__ void gelu_forward_kernel(float *out, const float *inp, size_t n) {
    CAV_FOR_EACH(i, n) out[i] = gelu(inp[i]);
}
static __global__ void gelu_forward_bf16_kernel(uint16_t *out, const float *inp, size_t n) {
    CAV_FOR_EACH(i, n) out[i] = cav_bf16_from_f32(gelu(inp[i]));
}
static __global__ void gelu_backward_kernel(float *dinp, const float *inp, const float *dout, size_t n) {
    const float k = 0.39894228040143268f; /* 1/sqrt(2 pi) */
    CAV_FOR_EACH(i, n) {
        float x = inp[i];
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        float pdf = k * expf(-0.5f * x * x);
        dinp[i] += dout[i] * (cdf + x * pdf);
    }
}
static __global__ void add_kernel(float *out, const float *a, const float *b, size_t n) {
    CAV_FOR_EACH(i, n) out[i] = a[i] + b[i];
}
static __global__ void accumulate_kernel(float *dst, const float *src, size_t n) {
    CAV_FOR_EACH(i, n) dst[i] += src[i];
}
static __global__ void average_kernel(float *out, const float *a, const float *b, size_t n) {
    CAV_FOR_EACH(i, n) out[i] = (a[i] + b[i]) / 2;
}
static __global__ void half_kernel(float *da, const float *dout, size_t n) {
    CAV_FOR_EACH(i, n) da[i] = dout[i] / 2;
}

void cav_cuda_gelu_forward(float *out, const float *inp, size_t n) {
    if (!n) return;
    gelu_forward_kernel<<<cav_grid(n, 256), 256>>>(out, inp, n);
    LAUNCHED();
}
void cav_cuda_gelu_forward_bf16(uint16_t *out16, const float *inp, size_t n) {
    if (!n) return;
    gelu_forward_bf16_kernel<<<cav_grid(n, 256), 256>>>(out16, inp, n);
    LAUNCHED();
}
void cav_cuda_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    if (!n) return;
    gelu_backward_kernel<<<cav_grid(n, 256), 256>>>(dinp, inp, dout, n);
    LAUNCHED();
}
void cav_cuda_add_forward(float *out, const float *a, const float *b, size_t n) {
    if (!n) return;
    add_kernel<<<cav_grid(n, 256), 256>>>(out, a, b, n);
    LAUNCHED();
}
void cav_cuda_accumulate(float *dst, const float *src, size_t n) {
    if (!n) return;
    accumulate_kernel<<<cav_grid(n, 256), 256>>>(dst, src, n);
    LAUNCHED();
}
void cav_cuda_average_forward(float *out, const float *a, const float *b, size_t n) {
    if (!n) return;
    average_kernel<<<cav_grid(n, 256), 256>>>(out, a, b, n);
    LAUNCHED();
}
void cav_cuda_average_backward(float *da, const float *dout, size_t n) {
    if (!n) return;
    half_kernel<<<cav_grid(n, 256), 256>>>(da, dout, n);
    LAUNCHED();
}
