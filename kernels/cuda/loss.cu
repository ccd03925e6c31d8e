/* loss.cu: the losses on the GPU, mirroring kernels/cpu/loss.c — L2 normalisation, the contrastive loss with
 * its B x B similarity on the device, the norm-pix target, the masked MSE's sums, BCE-with-logits and the
 * soft-target cross-entropy. Contracts in kernels.h; a loss's value comes back to the host (the copy
 * synchronises). Sums are in double as the CPU's; the long ones (a row of C or P values, the rows of a
 * batch) in reduce.h's tree order, the short ones (the B x B similarity's log-sum-exps and the diagonal
 * sum, a row of soft CE) on one thread in the CPU's own order. No atomics: the same bits on every run. */
#include "cuda_ops.h"

/* ---- L2 normalisation: one block per row ------------------------------------------------------------------
 */

static __global__ void l2norm_kernel(float *out, float *norm, const float *inp, int C) {
    __shared__ double sh[CAV_RD_T];
    const float *x = inp + (size_t)blockIdx.x * C;
    double s = cav_block_sum(cav_rd_dot(x, x, C, threadIdx.x), sh);
    float n = (float)sqrt(s), d = n > 1e-12f ? n : 1e-12f;
    if (threadIdx.x == 0) norm[blockIdx.x] = n;
    for (int c = threadIdx.x; c < C; c += CAV_RD_T) out[(size_t)blockIdx.x * C + c] = x[c] / d;
}
static __global__ void l2norm_backward_kernel(float *dinp, const float *dout, const float *out,
                                              const float *norm, int C) {
    __shared__ double sh[CAV_RD_T];
    size_t o = (size_t)blockIdx.x * C;
    const float *y = out + o, *dy = dout + o;
    float nb = norm[blockIdx.x];
    if (nb > 1e-12f) {
        double s = cav_block_sum(cav_rd_dot(y, dy, C, threadIdx.x), sh);
        for (int c = threadIdx.x; c < C; c += CAV_RD_T) dinp[o + c] += (float)((dy[c] - y[c] * s) / nb);
    } else {
        for (int c = threadIdx.x; c < C; c += CAV_RD_T) dinp[o + c] += dy[c] / 1e-12f;
    }
}
void cav_cuda_l2norm_forward(float *out, float *norm, const float *inp, int B, int C) {
    if (B <= 0) return;
    l2norm_kernel<<<B, CAV_RD_T>>>(out, norm, inp, C);
    LAUNCHED();
}
void cav_cuda_l2norm_backward(float *dinp, const float *dout, const float *out, const float *norm, int B,
                              int C) {
    if (B <= 0) return;
    l2norm_backward_kernel<<<B, CAV_RD_T>>>(dinp, dout, out, norm, C);
    LAUNCHED();
}

/* ---- contrastive (cav-numerics(7) 2.10): work = S[B,B], dS[B,B], lse[B] in doubles, as the CPU's
 * ---------------------- */

/* S[i,j] = (float)(a_i . v_j) / tau: one block per (i, j) */
static __global__ void similarity_kernel(double *S, const float *a, const float *v, int B, int C) {
    __shared__ double sh[CAV_RD_T];
    int i = blockIdx.x / B, j = blockIdx.x % B;
    double dot = cav_block_sum(cav_rd_dot(a + (size_t)i * C, v + (size_t)j * C, C, threadIdx.x), sh);
    if (threadIdx.x == 0) S[blockIdx.x] = cav_con_sim(dot, CAV_CONTRAST_TAU);
}
static __global__ void con_lse_kernel(double *lse, const double *S, int B, int transpose) {
    CAV_FOR_EACH(j, B) lse[j] = cav_con_lse(S, B, (int)j, transpose);
}
/* one direction's diagonal sum and hits, one thread */
static __global__ void con_diag_kernel(double *res, const double *S, const double *lse, int B, int t) {
    int hit;
    cav_con_diag(S, lse, B, t, &res[2 * t], &hit);
    res[2 * t + 1] = hit;
}

size_t cav_cuda_contrastive_workspace(int B) {
    return 2 * (size_t)B * B + B;
}

float cav_cuda_contrastive_forward(float *acc, const float *a, const float *v, int B, int C, int bidirect,
                                   double *work) {
    double *S = work, *lse = work + 2 * (size_t)B * B, r[4];
    double *res = (double *)cav_cuda_scratch(1, sizeof r);
    int dirs = bidirect ? 2 : 1;
    similarity_kernel<<<B * B, CAV_RD_T>>>(S, a, v, B, C);
    LAUNCHED();
    for (int t = 0; t < dirs; t++) {
        con_lse_kernel<<<cav_grid(B, 128), 128>>>(lse, S, B, t);
        LAUNCHED();
        con_diag_kernel<<<1, 1>>>(res, S, lse, B, t);
        LAUNCHED();
    }
    CUDA_CHECK(cudaMemcpy(r, res, sizeof(double) * 2 * dirs, cudaMemcpyDeviceToHost));
    double nce = 0, hits = 0;
    for (int t = 0; t < dirs; t++) nce += -r[2 * t] / B, hits += r[2 * t + 1] / B;
    if (acc) *acc = (float)(hits / dirs);
    return (float)(nce / dirs);
}

/* dS[i,j] += scale * (P[i,j] - [i == j]), P the softmax along the direction's axis */
static __global__ void con_ds_kernel(double *dS, const double *S, const double *lse, int B, int t,
                                     double scale) {
    CAV_FOR_EACH(k, (size_t)B * B) {
        int i = (int)(k / B), j = (int)(k % B);
        double p = exp(S[k] - lse[t ? i : j]);
        dS[k] += scale * (p - (i == j)) / B;
    }
}
/* da[i,c] += (float)(dS[i,j] / tau * v[j,c]) over j in order (transpose 0); dv[j,c] likewise over i (1) */
static __global__ void con_grad_kernel(float *d, const double *dS, const float *x, int B, int C,
                                       int transpose) {
    CAV_FOR_EACH(k, (size_t)B * C) {
        int r = (int)(k / C), c = (int)(k % C);
        for (int o = 0; o < B; o++) {
            double g = (transpose ? dS[(size_t)o * B + r] : dS[(size_t)r * B + o]) / CAV_CONTRAST_TAU;
            d[k] += (float)(g * x[(size_t)o * C + c]);
        }
    }
}

void cav_cuda_contrastive_backward(float *da, float *dv, float dloss, const float *a, const float *v, int B,
                                   int C, int bidirect, double *work) {
    double *S = work, *dS = work + (size_t)B * B, *lse = work + 2 * (size_t)B * B;
    int dirs = bidirect ? 2 : 1;
    CUDA_CHECK(cudaMemsetAsync(dS, 0, sizeof(double) * B * B, 0));
    similarity_kernel<<<B * B, CAV_RD_T>>>(S, a, v, B, C);
    LAUNCHED();
    for (int t = 0; t < dirs; t++) {
        con_lse_kernel<<<cav_grid(B, 128), 128>>>(lse, S, B, t);
        LAUNCHED();
        con_ds_kernel<<<cav_grid((size_t)B * B, 256), 256>>>(dS, S, lse, B, t, (double)dloss / dirs);
        LAUNCHED();
    }
    if (da) con_grad_kernel<<<cav_grid((size_t)B * C, 128), 128>>>(da, dS, v, B, C, 0);
    if (dv) con_grad_kernel<<<cav_grid((size_t)B * C, 128), 128>>>(dv, dS, a, B, C, 1);
    LAUNCHED();
}

/* ---- norm-pix target and masked MSE (cav-numerics(7) 2.9)
 * -------------------------------------------------------------- */

static __global__ void normpix_kernel(float *t, int P, float eps) {
    __shared__ double sh[CAV_RD_T];
    float *r = t + (size_t)blockIdx.x * P;
    double mu = cav_block_sum(cav_rd_sum(r, P, threadIdx.x), sh) / P;
    double ss = cav_block_sum(cav_rd_sqdev(r, P, mu, threadIdx.x), sh);
    float mf = (float)mu, sd = sqrtf((float)(ss / (P - 1)) + eps);
    for (int p = threadIdx.x; p < P; p += CAV_RD_T) r[p] = (r[p] - mf) / sd;
}
void cav_cuda_normpix(float *t, int M, int P, float eps) {
    if (M <= 0) return;
    normpix_kernel<<<M, CAV_RD_T>>>(t, P, eps);
    LAUNCHED();
}

/* row[m] = (double)(float)(mean_p (pred - t)^2) * mask[m]: one block per row */
static __global__ void mse_rows_kernel(double *row, const float *pred, const float *t, const float *mask,
                                       int P) {
    __shared__ double sh[CAV_RD_T];
    size_t m = blockIdx.x;
    if (mask[m] == 0) { /* the whole block leaves together: no barrier is skipped by part of it */
        if (threadIdx.x == 0) row[m] = 0;
        return;
    }
    double s = cav_block_sum(cav_rd_sqdiff(pred + m * P, t + m * P, P, threadIdx.x), sh);
    if (threadIdx.x == 0) row[m] = (double)(float)(s / P) * mask[m];
}
/* res[0] = sum of row[M], res[1] = sum of mask[M]: one block */
static __global__ void mse_total_kernel(double *res, const double *row, const float *mask, int M) {
    __shared__ double sh[CAV_RD_T];
    double num = cav_block_sum(cav_rd_sum_d(row, M, threadIdx.x), sh);
    double den = cav_block_sum(cav_rd_sum(mask, M, threadIdx.x), sh);
    if (threadIdx.x == 0) res[0] = num, res[1] = den;
}
void cav_cuda_masked_mse_sums(const float *pred, const float *t, const float *mask, int M, int P, double *num,
                              double *den) {
    double r[2] = {0, 0};
    if (M > 0) {
        double *row = (double *)cav_cuda_scratch(0, sizeof(double) * M),
               *res = (double *)cav_cuda_scratch(1, sizeof r);
        mse_rows_kernel<<<M, CAV_RD_T>>>(row, pred, t, mask, P);
        LAUNCHED();
        mse_total_kernel<<<1, CAV_RD_T>>>(res, row, mask, M);
        LAUNCHED();
        CUDA_CHECK(cudaMemcpy(r, res, sizeof r, cudaMemcpyDeviceToHost));
    }
    *num = r[0], *den = r[1];
}
float cav_cuda_masked_mse_forward(const float *pred, const float *t, const float *mask, int M, int P) {
    double num, den;
    cav_cuda_masked_mse_sums(pred, t, mask, M, P, &num, &den);
    return (float)(num / den);
}
static __global__ void mse_backward_kernel(float *dpred, float dloss, const float *pred, const float *t,
                                           const float *mask, int M, int P, double den) {
    CAV_FOR_EACH(i, (size_t)M * P) {
        float mk = mask[i / P];
        if (mk == 0) continue;
        float g = (float)((double)dloss * mk / den * 2.0 / P);
        dpred[i] += g * (pred[i] - t[i]);
    }
}
void cav_cuda_masked_mse_backward_den(float *dpred, float dloss, const float *pred, const float *t,
                                      const float *mask, int M, int P, double den) {
    if ((size_t)M * P == 0) return;
    mse_backward_kernel<<<cav_grid((size_t)M * P, 256), 256>>>(dpred, dloss, pred, t, mask, M, P, den);
    LAUNCHED();
}
void cav_cuda_masked_mse_backward(float *dpred, float dloss, const float *pred, const float *t,
                                  const float *mask, int M, int P) {
    double num, den;
    cav_cuda_masked_mse_sums(pred, t, mask, M, P, &num, &den);
    cav_cuda_masked_mse_backward_den(dpred, dloss, pred, t, mask, M, P, den);
}

/* ---- fine-tuning losses on logits x[B,K], targets y[B,K]
 * ---------------------------------------------------- */

static __global__ void bce_kernel(double *res, const float *x, const float *y, size_t n) {
    __shared__ double sh[CAV_RD_T];
    double s = cav_block_sum(cav_rd_bce(x, y, n, threadIdx.x), sh);
    if (threadIdx.x == 0) res[0] = s;
}
float cav_cuda_bce_logits_forward(const float *x, const float *y, int B, int K) {
    double s = 0, *res = (double *)cav_cuda_scratch(1, sizeof s);
    bce_kernel<<<1, CAV_RD_T>>>(res, x, y, (size_t)B * K);
    LAUNCHED();
    CUDA_CHECK(cudaMemcpy(&s, res, sizeof s, cudaMemcpyDeviceToHost));
    return (float)(s / ((double)B * K));
}
static __global__ void bce_backward_kernel(float *dx, double sc, const float *x, const float *y, size_t n) {
    CAV_FOR_EACH(i, n) dx[i] += (float)(sc * (1.0 / (1.0 + exp(-(double)x[i])) - y[i]));
}
void cav_cuda_bce_logits_backward(float *dx, float dloss, const float *x, const float *y, int B, int K) {
    size_t n = (size_t)B * K;
    if (!n) return;
    bce_backward_kernel<<<cav_grid(n, 256), 256>>>(dx, (double)dloss / ((double)B * K), x, y, n);
    LAUNCHED();
}

/* row[b] = -sum_k y (x - lse): one thread per row, the CPU's order within the row */
static __global__ void soft_ce_rows_kernel(double *row, const float *x, const float *y, int B, int K) {
    CAV_FOR_EACH(b, B) row[b] = cav_soft_ce_row(x + b * K, y + b * K, K);
}
static __global__ void sum_kernel(double *res, const double *row, int n) {
    __shared__ double sh[CAV_RD_T];
    double s = cav_block_sum(cav_rd_sum_d(row, n, threadIdx.x), sh);
    if (threadIdx.x == 0) res[0] = s;
}
float cav_cuda_soft_ce_forward(const float *x, const float *y, int B, int K) {
    double s = 0;
    if (B > 0) {
        double *row = (double *)cav_cuda_scratch(0, sizeof(double) * B),
               *res = (double *)cav_cuda_scratch(1, sizeof s);
        soft_ce_rows_kernel<<<cav_grid(B, 128), 128>>>(row, x, y, B, K);
        LAUNCHED();
        sum_kernel<<<1, CAV_RD_T>>>(res, row, B);
        LAUNCHED();
        CUDA_CHECK(cudaMemcpy(&s, res, sizeof s, cudaMemcpyDeviceToHost));
    }
    return (float)(s / B);
}
static __global__ void soft_ce_backward_kernel(float *dx, float dloss, const float *x, const float *y, int B,
                                               int K) {
    CAV_FOR_EACH(b, B) {
        const float *xr = x + b * K, *yr = y + b * K;
        double l = cav_row_lse(xr, K), ys = 0;
        for (int k = 0; k < K; k++) ys += yr[k];
        for (int k = 0; k < K; k++)
            dx[b * K + k] += (float)((double)dloss / B * (exp(xr[k] - l) * ys - yr[k]));
    }
}
void cav_cuda_soft_ce_backward(float *dx, float dloss, const float *x, const float *y, int B, int K) {
    if (B <= 0) return;
    soft_ce_backward_kernel<<<cav_grid(B, 128), 128>>>(dx, dloss, x, y, B, K);
    LAUNCHED();
}
