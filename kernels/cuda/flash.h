/* flash.h: the arithmetic of the fused (flash-style) attention of kernels/cuda/flash.cu, as small functions
 * compiled both by nvcc (the kernels call them) and by the C compiler (tests/unit/test_cuda_arith.c runs the
 * host drivers below, which visit the tiles exactly as the kernels do, against kernels/cpu's attention), so
 * an error in the online softmax or the backward's order shows on a machine without a GPU.
 *
 * One (batch, head) at a time, on q, k, v rows of hd floats inside qkv[B,N,3C] (row stride 3C), scale =
 * hd^-0.5 applied to the finished dot product as timm's:
 * - forward: one thread per query row i; the keys come in tiles of CAV_FA_BC rows. Per tile: s_j = (q_i .
 *   k_j) * scale, the running max m' = max(m, max_j s_j), the rescale a = exp(m - m') of the running sum l
 *   and of the output accumulator o[hd], then p_j = exp(s_j - m') added in key order: l = l a + sum p_j,
 *   o = o a + sum p_j v_j. At the end out_i = o / l and the one saved value per row, lse_i = m + log l.
 * - backward, from lse alone (no N x N matrix): D_i = rowsum(dO_i * O_i) first, then for a pair (i, j)
 *   p = exp(s - lse_i), dp = dO_i . v_j, ds = p (dp - D_i) scale. Two passes, so that no gradient is shared
 *   between threads (no atomics; the same bits on every run): dk, dv per key row j summing over the queries
 *   i in order (dv_j += p dO_i, dk_j += ds q_i), and dq per query row i summing over the keys j in order
 *   (dq_i += ds k_j). Tiles only decide what sits in shared memory, so in the backward the sums' order does
 *   not depend on them.
 * The kernels are built for HD = 32 and 64 and run any hd <= HD: shared memory holds the rows zero-padded
 * to HD, and a sum with exact zero terms added is the same float, so they compute what these functions do
 * with hd. Every sum runs in float, in index order: the CPU reference sums in OpenBLAS's order, so the two
 * agree to float rounding of sums of up to N terms (the bound is measured and stated in test_cuda_arith.c).
 */
#ifndef CAV_CUDA_FLASH_H
#define CAV_CUDA_FLASH_H

#include <math.h>
#include <stddef.h>

#ifdef __CUDACC__
#define CAV_FA_HD static inline __host__ __device__
#else
#define CAV_FA_HD static inline
#endif
/* the device pass unrolls the loops over hd (a compile-time constant there), so the accumulators stay in
 * registers; the host compiler would warn of the pragma */
#ifdef __CUDA_ARCH__
#define CAV_FA_UNROLL _Pragma("unroll")
#else
#define CAV_FA_UNROLL
#endif

/* Tile sizes: shared memory stays under the 48 KiB of a static allocation at hd = 64 (about 41 KiB each) */
#define CAV_FA_BR 64 /* query rows of a forward or dq block (its threads) */
#define CAV_FA_BC 32 /* key rows of a forward tile in shared memory */
#define CAV_FA_BK 64 /* key rows of a dk/dv block (its threads) */
#define CAV_FA_BT 16 /* rows of a backward pass's streamed tile: queries for dk/dv, keys for dq */

/* q . k in float, in index order */
CAV_FA_HD float cav_fa_dot(const float *a, const float *b, int hd) {
    float s = 0;
    CAV_FA_UNROLL
    for (int d = 0; d < hd; d++) s += a[d] * b[d];
    return s;
}
/* acc[hd] += a x */
CAV_FA_HD void cav_fa_axpy(float *acc, float a, const float *x, int hd) {
    CAV_FA_UNROLL
    for (int d = 0; d < hd; d++) acc[d] += a * x[d];
}

/* ---- forward: one query row's running state (m, l, o[hd]) over one tile of nk keys ----------------------
 */

/* before the first tile */
CAV_FA_HD void cav_fa_fwd_init(float *o, float *m, float *l, int hd) {
    CAV_FA_UNROLL
    for (int d = 0; d < hd; d++) o[d] = 0;
    *m = -INFINITY, *l = 0;
}
/* s[nk]: scratch for the tile's scores (the kernel's row of shared memory); k, v: the tile's first key row,
 * rows ld floats apart */
CAV_FA_HD void cav_fa_fwd_tile(float *o, float *m, float *l, float *s, const float *q, const float *k,
                               const float *v, int ld, int nk, float scale, int hd) {
    float mt = *m;
    for (int j = 0; j < nk; j++) {
        s[j] = cav_fa_dot(q, k + (size_t)j * ld, hd) * scale;
        mt = s[j] > mt ? s[j] : mt;
    }
    /* the first tile: m = -inf, l = o = 0 and a = exp(-inf) = 0 leaves them at 0 */
    float a = expf(*m - mt), sum = 0;
    CAV_FA_UNROLL
    for (int d = 0; d < hd; d++) o[d] *= a;
    for (int j = 0; j < nk; j++) {
        float p = expf(s[j] - mt);
        sum += p;
        cav_fa_axpy(o, p, v + (size_t)j * ld, hd);
    }
    *l = *l * a + sum, *m = mt;
}
/* after the last tile: out[hd] = o / l, and the row's log-sum-exp; n >= hd is o's length (the kernels' HD,
 * a compile-time constant, so that o can stay in registers) */
CAV_FA_HD float cav_fa_fwd_finish(float *out, const float *o, float m, float l, int n, int hd) {
    CAV_FA_UNROLL
    for (int d = 0; d < n; d++)
        if (d < hd) out[d] = o[d] / l;
    return m + logf(l);
}
/* the end of a backward pass: row[hd] = acc (n as above) */
CAV_FA_HD void cav_fa_store(float *row, const float *acc, int n, int hd) {
    CAV_FA_UNROLL
    for (int d = 0; d < n; d++)
        if (d < hd) row[d] = acc[d];
}

/* ---- backward ------------------------------------------------------------------------------------------ */

/* one pair (i, j): ds = p (dp - D_i) scale, with p = exp(s - lse_i) returned in *p */
CAV_FA_HD float cav_fa_ds(float *p, const float *q, const float *k, const float *v, const float *dO,
                          float lse, float D, float scale, int hd) {
    float pp = expf(cav_fa_dot(q, k, hd) * scale - lse);
    float dp = cav_fa_dot(dO, v, hd);
    *p = pp;
    return pp * (dp - D) * scale;
}

/* ---- host drivers: the kernels' threads and tiles, one after the other ---------------------------------
 */

#ifndef __CUDA_ARCH__
/* flash.cu's forward for head h of sample b: out[B,N,C], lse[B,H,N] from qkv[B,N,3C]; hd = C / H <= 64 */
static inline void cav_fa_forward_host(float *out, float *lse, const float *qkv, int b, int h, int N, int C,
                                       int H) {
    int hd = C / H, ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hd), o[64], s[CAV_FA_BC], m, l;
    const float *q = qkv + (size_t)b * N * ld + (size_t)h * hd, *k = q + C, *v = q + 2 * C;
    for (int i = 0; i < N; i++) { /* the thread of row i (block i / CAV_FA_BR) */
        cav_fa_fwd_init(o, &m, &l, hd);
        for (int j0 = 0; j0 < N; j0 += CAV_FA_BC) {
            int nk = N - j0 < CAV_FA_BC ? N - j0 : CAV_FA_BC;
            cav_fa_fwd_tile(o, &m, &l, s, q + (size_t)i * ld, k + (size_t)j0 * ld, v + (size_t)j0 * ld, ld,
                            nk, scale, hd);
        }
        lse[((size_t)b * H + h) * N + i] =
            cav_fa_fwd_finish(out + ((size_t)b * N + i) * C + (size_t)h * hd, o, m, l, hd, hd);
    }
}
/* flash.cu's backward for head h of sample b: its slices of dqkv[B,N,3C] SET from dout[B,N,C], the forward's
 * out[B,N,C] and lse[B,H,N]; D[B,H,N] is the kernels' workspace */
static inline void cav_fa_backward_host(float *dqkv, const float *dout, const float *qkv, const float *out,
                                        const float *lse, float *D, int b, int h, int N, int C, int H) {
    int hd = C / H, ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hd), acc[64], acc2[64], p;
    size_t o = (size_t)b * N * ld + (size_t)h * hd, bh = (size_t)b * H + h;
    const float *q = qkv + o, *k = q + C, *v = q + 2 * C, *dO = dout + (size_t)b * N * C + (size_t)h * hd;
    const float *L = lse + bh * N, *Dr = D + bh * N;
    float *dq = dqkv + o, *dk = dq + C, *dv = dq + 2 * C;
    for (int i = 0; i < N; i++) { /* fa_rowdot_kernel */
        size_t r = ((size_t)b * N + i) * C + (size_t)h * hd;
        D[bh * N + i] = cav_fa_dot(dout + r, out + r, hd);
    }
    for (int j = 0; j < N; j++) { /* fa_dkdv_kernel: the thread of key row j */
        for (int d = 0; d < hd; d++) acc[d] = acc2[d] = 0;
        for (int i = 0; i < N; i++) {
            float ds = cav_fa_ds(&p, q + (size_t)i * ld, k + (size_t)j * ld, v + (size_t)j * ld,
                                 dO + (size_t)i * C, L[i], Dr[i], scale, hd);
            cav_fa_axpy(acc2, p, dO + (size_t)i * C, hd);
            cav_fa_axpy(acc, ds, q + (size_t)i * ld, hd);
        }
        cav_fa_store(dk + (size_t)j * ld, acc, hd, hd), cav_fa_store(dv + (size_t)j * ld, acc2, hd, hd);
    }
    for (int i = 0; i < N; i++) { /* fa_dq_kernel: the thread of query row i */
        for (int d = 0; d < hd; d++) acc[d] = 0;
        for (int j = 0; j < N; j++) {
            float ds = cav_fa_ds(&p, q + (size_t)i * ld, k + (size_t)j * ld, v + (size_t)j * ld,
                                 dO + (size_t)i * C, L[i], Dr[i], scale, hd);
            cav_fa_axpy(acc, ds, k + (size_t)j * ld, hd);
        }
        cav_fa_store(dq + (size_t)i * ld, acc, hd, hd);
    }
}
#endif

#endif
