/* attention.cu: timm's multi-head attention core on the GPU (kernels.h's attention_*), mirroring
 * cav_attention_forward/backward of kernels/cpu/dense.c: cuBLAS strided-batched fp32 GEMMs over the heads of
 * one sample (q, k and v addressed inside qkv[B,N,3C] by their leading dimension, no copies) and a softmax
 * kernel per row in reduce.h's order. The saved state is the probabilities att[B,H,N,N], as the CPU's; this
 * plain path stays as the oracle of the fused kernel that will keep only a log-sum-exp per row.
 *
 * cuBLAS is column-major: a row-major X[r,c] with leading dimension ld is the column-major X^T, so each
 * row-major product below is written as its transpose. */
#include "cuda_ops.h"

/* Column-major C[m,n] = alpha op(A) op(B) + beta C for `batch` matrices strideA/B/C floats apart. */
static void gemm_batched(bool ta, bool tb, int m, int n, int k, float alpha, const float *A, int lda,
                         long long sa, const float *B, int ldb, long long sb, float beta, float *C, int ldc,
                         long long sc, int batch) {
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(cav_cuda.blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                            tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, A, CUDA_R_32F,
                                            lda, sa, B, CUDA_R_32F, ldb, sb, &beta, C, CUDA_R_32F, ldc, sc,
                                            batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* rows of a[rows, N] to their softmax, in place: one block per row */
static __global__ void softmax_rows_kernel(float *a, int N) {
    __shared__ float sh[CAV_RD_T];
    int l = threadIdx.x;
    float *y = a + (size_t)blockIdx.x * N;
    float mx = cav_block_max(cav_rd_max(y, N, l), sh);
    float s = cav_block_sum_f(cav_rd_exp_sum(y, y, N, mx, l), sh);
    for (int i = l; i < N; i += CAV_RD_T) y[i] /= s;
}

/* g = y * (g - sum(g * y)) * scale per row of g[rows, N], y[rows, N]: through the softmax and the scale */
static __global__ void softmax_rows_backward_kernel(float *g, const float *y, int N, float scale) {
    __shared__ float sh[CAV_RD_T];
    int l = threadIdx.x;
    size_t o = (size_t)blockIdx.x * N;
    float s = cav_block_sum_f(cav_rd_dot_f(g + o, y + o, N, l), sh);
    for (int i = l; i < N; i += CAV_RD_T) g[o + i] = y[o + i] * (g[o + i] - s) * scale;
}

size_t cav_cuda_attention_state_size(int B, int H, int N) {
    return (size_t)B * H * N * N;
}
/* d att of one sample's heads at a time */
size_t cav_cuda_attention_workspace(int B, int H, int N) {
    (void)B;
    return (size_t)H * N * N;
}

void cav_cuda_attention_forward(float *out, float *att, const float *qkv, int B, int N, int C, int H) {
    if (B <= 0 || N <= 0) return;
    int hd = C / H;
    long long nn = (long long)N * N;
    float scale = 1.0f / sqrtf((float)hd); /* as the CPU's: alpha scales the finished dot product */
    for (int b = 0; b < B; b++) {
        const float *q = qkv + (size_t)b * N * 3 * C, *k = q + C;
        /* att^T[j,i] = k[j] . q[i] */
        gemm_batched(true, false, N, N, hd, scale, k, 3 * C, hd, q, 3 * C, hd, 0.0f, att + (size_t)b * H * nn,
                     N, nn, H);
    }
    softmax_rows_kernel<<<(unsigned)((size_t)B * H * N), CAV_RD_T>>>(att, N);
    LAUNCHED();
    for (int b = 0; b < B; b++) {
        const float *v = qkv + (size_t)b * N * 3 * C + 2 * C;
        /* out^T[hd,N] = v^T att^T, heads side by side in out[b] */
        gemm_batched(false, false, hd, N, N, 1.0f, v, 3 * C, hd, att + (size_t)b * H * nn, N, nn, 0.0f,
                     out + (size_t)b * N * C, C, hd, H);
    }
}

void cav_cuda_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                                 const float *att, float *work, int B, int N, int C, int H) {
    (void)out; /* the probabilities are kept: no need of the output */
    if (B <= 0 || N <= 0) return;
    int hd = C / H;
    long long nn = (long long)N * N;
    float scale = 1.0f / sqrtf((float)hd);
    for (int b = 0; b < B; b++) {
        size_t o = (size_t)b * N * 3 * C;
        const float *q = qkv + o, *k = q + C, *v = q + 2 * C, *a = att + (size_t)b * H * nn;
        const float *dO = dout + (size_t)b * N * C;
        float *dq = dqkv + o, *dk = dq + C, *dv = dq + 2 * C;
        /* g = dO v^T (g^T = v dO^T); dv = att^T dO (dv^T = dO^T att), SET */
        gemm_batched(true, false, N, N, hd, 1.0f, v, 3 * C, hd, dO, C, hd, 0.0f, work, N, nn, H);
        gemm_batched(false, true, hd, N, N, 1.0f, dO, C, hd, a, N, nn, 0.0f, dv, 3 * C, hd, H);
        softmax_rows_backward_kernel<<<(unsigned)((size_t)H * N), CAV_RD_T>>>(work, a, N, scale);
        LAUNCHED();
        /* dq = g k (dq^T = k^T g^T); dk = g^T q (dk^T = q^T g) */
        gemm_batched(false, false, hd, N, N, 1.0f, k, 3 * C, hd, work, N, nn, 0.0f, dq, 3 * C, hd, H);
        gemm_batched(false, true, hd, N, N, 1.0f, q, 3 * C, hd, work, N, nn, 0.0f, dk, 3 * C, hd, H);
    }
}
