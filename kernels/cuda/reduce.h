/* reduce.h: the order of every reduction of the CUDA backend whose order differs from kernels/cpu's, as small
 * functions compiled both by nvcc (for the kernels of kernels/cuda, which call them) and by the C
 * compiler (tests/unit/test_cuda_arith.c runs the same arithmetic on the host against the CPU ops, so an
 * algorithmic error shows on a machine without a GPU).
 *
 * Two fixed orders, both deterministic (no atomics; the same bits on every run and every GPU):
 * - a row reduction of n values runs on CAV_RD_T lanes: lane l takes values l, l + T, l + 2T, ... in turn,
 *   then the T partials are summed by a halving tree (sh[l] += sh[l + s] for s = T/2, ..., 1);
 * - a column sum over many rows (bias and LayerNorm parameter gradients, position/modality embeddings, the
 *   mask token) adds chunks of CAV_COL_ROWS consecutive rows in turn, then the chunk partials in order.
 * Sums are in double where the CPU reference's are (so the results stay within an ulp or two of it), in
 * float where it is (softmax). The *_host functions drive the lanes and the tree exactly as one CUDA block
 * does, one lane after the other. */
#ifndef CAV_CUDA_REDUCE_H
#define CAV_CUDA_REDUCE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define CAV_HD static inline __host__ __device__
#else
#define CAV_HD static inline
#endif

#define CAV_RD_T 256    /* threads of a row block: the lanes of every tree reduction */
#define CAV_COL_ROWS 64 /* rows per partial of a column sum */

/* ---- the tree over the T lane partials -------------------------------------------------------------- */

CAV_HD void cav_rd_step(double *sh, int lane, int s) {
    if (lane < s) sh[lane] += sh[lane + s];
}
CAV_HD void cav_rd_step_f(float *sh, int lane, int s) {
    if (lane < s) sh[lane] += sh[lane + s];
}
CAV_HD void cav_rd_step_max(float *sh, int lane, int s) {
    if (lane < s && sh[lane + s] > sh[lane]) sh[lane] = sh[lane + s];
}

/* ---- lane partials: lane l of n values (l, l + T, ...) ------------------------------------------------- */

CAV_HD double cav_rd_sum(const float *x, int n, int lane) {
    double s = 0;
    for (int i = lane; i < n; i += CAV_RD_T) s += x[i];
    return s;
}
CAV_HD double cav_rd_sum_d(const double *x, int n, int lane) {
    double s = 0;
    for (int i = lane; i < n; i += CAV_RD_T) s += x[i];
    return s;
}
/* sum (x - mu)^2 in double, as the CPU's LayerNorm and norm-pix */
CAV_HD double cav_rd_sqdev(const float *x, int n, double mu, int lane) {
    double s = 0;
    for (int i = lane; i < n; i += CAV_RD_T) s += (x[i] - mu) * (x[i] - mu);
    return s;
}
/* sum x * y in double (L2 norm, its backward, the similarity's dot products) */
CAV_HD double cav_rd_dot(const float *x, const float *y, int n, int lane) {
    double s = 0;
    for (int i = lane; i < n; i += CAV_RD_T) s += (double)x[i] * y[i];
    return s;
}
/* LayerNorm backward's two row sums: a = sum dy*w, b = sum dy*w*xhat (float products, double sums) */
CAV_HD void cav_rd_ln_bwd(const float *x, const float *dy, const float *w, float mu, float rs, int n,
                          int lane, double *a, double *b) {
    double sa = 0, sb = 0;
    for (int i = lane; i < n; i += CAV_RD_T) {
        float g = dy[i] * w[i];
        sa += g;
        sb += g * ((x[i] - mu) * rs);
    }
    *a = sa, *b = sb;
}
/* masked MSE: sum over one row of (pred - t)^2, the difference in float, the square in double */
CAV_HD double cav_rd_sqdiff(const float *p, const float *t, int n, int lane) {
    double s = 0;
    for (int i = lane; i < n; i += CAV_RD_T) {
        float d = p[i] - t[i];
        s += (double)d * d;
    }
    return s;
}
/* softmax: the max, then exp(x - max) written to y (in place allowed) and its sum, in float as the CPU's */
CAV_HD float cav_rd_max(const float *x, int n, int lane) {
    float m = -INFINITY;
    for (int i = lane; i < n; i += CAV_RD_T) m = x[i] > m ? x[i] : m;
    return m;
}
CAV_HD float cav_rd_exp_sum(float *y, const float *x, int n, float mx, int lane) {
    float s = 0;
    for (int i = lane; i < n; i += CAV_RD_T) {
        y[i] = expf(x[i] - mx);
        s += y[i];
    }
    return s;
}
CAV_HD float cav_rd_dot_f(const float *x, const float *y, int n, int lane) {
    float s = 0;
    for (int i = lane; i < n; i += CAV_RD_T) s += x[i] * y[i];
    return s;
}
/* BCE-with-logits, one element, in double as the CPU's */
CAV_HD double cav_bce_term(float x, float y) {
    double xi = x;
    return (xi > 0 ? xi : 0) - xi * y + log1p(exp(-fabs(xi)));
}
CAV_HD double cav_rd_bce(const float *x, const float *y, size_t n, int lane) {
    double s = 0;
    for (size_t i = lane; i < n; i += CAV_RD_T) s += cav_bce_term(x[i], y[i]);
    return s;
}
/* log-sum-exp of one row of K logits, in the CPU's sequential order (soft CE runs one thread per row) */
CAV_HD double cav_row_lse(const float *x, int K) {
    double mx = -INFINITY, s = 0;
    for (int k = 0; k < K; k++) mx = x[k] > mx ? x[k] : mx;
    for (int k = 0; k < K; k++) s += exp(x[k] - mx);
    return mx + log(s);
}
/* soft CE: -sum_k y (x - lse) over one row */
CAV_HD double cav_soft_ce_row(const float *x, const float *y, int K) {
    double l = cav_row_lse(x, K), s = 0;
    for (int k = 0; k < K; k++) s -= y[k] * (x[k] - l);
    return s;
}
/* contrastive: log-sum-exp of column j of S[B,B] (transpose 0) or of row j (1), the CPU's sequential order */
CAV_HD double cav_con_lse(const double *S, int B, int j, int transpose) {
    double mx = -INFINITY, s = 0;
    for (int i = 0; i < B; i++) {
        double x = transpose ? S[(size_t)j * B + i] : S[(size_t)i * B + j];
        mx = x > mx ? x : mx;
    }
    for (int i = 0; i < B; i++) s += exp((transpose ? S[(size_t)j * B + i] : S[(size_t)i * B + j]) - mx);
    return mx + log(s);
}
/* one direction's sum over j of the log-probability S[j,j] - lse[j], and its hits (the argmax along the
 * direction's axis, the first of ties as torch's, equal to j), in the CPU's sequential order */
CAV_HD void cav_con_diag(const double *S, const double *lse, int B, int transpose, double *n, int *hits) {
    double s = 0;
    int hit = 0;
    for (int j = 0; j < B; j++) {
        s += S[(size_t)j * B + j] - lse[j];
        int best = 0;
        for (int i = 1; i < B; i++) {
            double x = transpose ? S[(size_t)j * B + i] : S[(size_t)i * B + j];
            double y = transpose ? S[(size_t)j * B + best] : S[(size_t)best * B + j];
            if (x > y) best = i;
        }
        hit += best == j;
    }
    *n = s, *hits = hit;
}
/* the similarity S[i,j] from its double dot product: the fp32 mm result, then / tau in float */
CAV_HD double cav_con_sim(double dot, float tau) {
    return (double)((float)dot / tau);
}

/* ---- column sums: out[c] += sum over rows r of x[row(r), c] ---------------------------------------------
 */

/* Row r of a column sum is memory row (r / n) * ntot + off + r % n: the tokens [off, off + n) of every sample
 * of x[B,ntot,C]; a plain matrix has n = ntot = rows, off = 0. */
CAV_HD size_t cav_col_row(int r, int n, int ntot, int off) {
    return (size_t)(r / n) * ntot + off + r % n;
}
/* chunk k's partial of column c; rows with keep[r] == 0 are left out (keep may be NULL) */
CAV_HD double cav_col_chunk(const float *x, const float *keep, int rows, int C, int n, int ntot, int off,
                            int c, int k) {
    double s = 0;
    int r1 = (k + 1) * CAV_COL_ROWS < rows ? (k + 1) * CAV_COL_ROWS : rows;
    for (int r = k * CAV_COL_ROWS; r < r1; r++)
        if (!keep || keep[r] != 0) s += x[cav_col_row(r, n, ntot, off) * C + c];
    return s;
}
/* LayerNorm's dw column partial: dy * xhat with xhat = (x - mean) * rstd, float products as the CPU's */
CAV_HD double cav_col_chunk_ln(const float *dy, const float *x, const float *mean, const float *rstd,
                               int rows, int C, int c, int k) {
    double s = 0;
    int r1 = (k + 1) * CAV_COL_ROWS < rows ? (k + 1) * CAV_COL_ROWS : rows;
    for (int r = k * CAV_COL_ROWS; r < r1; r++)
        s += dy[(size_t)r * C + c] * ((x[(size_t)r * C + c] - mean[r]) * rstd[r]);
    return s;
}
CAV_HD int cav_col_chunks(int rows) {
    return (rows + CAV_COL_ROWS - 1) / CAV_COL_ROWS;
}
/* the chunk partials part[k * C + c] of column c, in order */
CAV_HD double cav_col_total(const double *part, int chunks, int C, int c) {
    double s = 0;
    for (int k = 0; k < chunks; k++) s += part[(size_t)k * C + c];
    return s;
}

/* ---- host drivers: one CUDA block's lanes and tree, run one lane after the other ------------------------
 */

#ifndef __CUDA_ARCH__
static inline double cav_rd_tree_host(double *sh) {
    for (int s = CAV_RD_T / 2; s > 0; s >>= 1)
        for (int l = 0; l < s; l++) cav_rd_step(sh, l, s);
    return sh[0];
}
static inline float cav_rd_tree_host_f(float *sh) {
    for (int s = CAV_RD_T / 2; s > 0; s >>= 1)
        for (int l = 0; l < s; l++) cav_rd_step_f(sh, l, s);
    return sh[0];
}
static inline float cav_rd_tree_host_max(float *sh) {
    for (int s = CAV_RD_T / 2; s > 0; s >>= 1)
        for (int l = 0; l < s; l++) cav_rd_step_max(sh, l, s);
    return sh[0];
}
#endif

#endif
