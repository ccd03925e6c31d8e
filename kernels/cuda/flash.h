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
 *   between threads (no atomics; the same bits on every run): dk and dv of key row j summing over the
 *   queries i in order (dk_j += ds q_i on one thread, dv_j += p dO_i on another, which recomputes p rather
 *   than hold both accumulators in one thread's registers), then dq of query row i summing over the keys j
 *   in order (dq_i += ds k_j). Tiles only decide what sits in shared memory: the backward's sums do not
 *   depend on them.
 * The kernels are built for HD = 32 and 64 and run any hd <= HD: shared memory holds the rows zero-padded to
 * HD, and a sum with exact zero terms added is the same float, so they compute what these functions do with
 * hd. Every sum runs in float, in index order: the CPU reference sums in OpenBLAS's order, so the two agree
 * to float rounding of sums of up to N terms (the bound is measured and stated in test_cuda_arith.c).
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
#define CAV_FA_BK 64 /* key rows of a dk/dv block (twice as many threads: one for dk, one for dv) */
/* the host drivers' row buffers are CAV_FA_BR long and hold a key block's rows too */
#ifdef __cplusplus
static_assert(CAV_FA_BK <= CAV_FA_BR, "a key block must fit the row buffers");
#else
_Static_assert(CAV_FA_BK <= CAV_FA_BR, "a key block must fit the row buffers");
#endif
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

/* one pair (i, j): the probability p = exp(s - lse_i) */
CAV_FA_HD float cav_fa_p(const float *q, const float *k, float lse, float scale, int hd) {
    return expf(cav_fa_dot(q, k, hd) * scale - lse);
}
/* and ds = p (dp - D_i) scale */
CAV_FA_HD float cav_fa_ds(const float *q, const float *k, const float *v, const float *dO, float lse, float D,
                          float scale, int hd) {
    float p = cav_fa_p(q, k, lse, scale, hd);
    return p * (cav_fa_dot(dO, v, hd) - D) * scale;
}

/* ---- tiles: what the kernels copy to shared memory ------------------------------------------------------
 */

/* the HD of the kernel that runs head dim hd (<= 64) */
CAV_FA_HD int cav_fa_hd_pad(int hd) {
    return hd > 32 ? 64 : 32;
}
/* element d of row r of the tile of rows [r0, r0 + rows) of a head (hd floats, rows ld apart in src): zero
 * past the n rows and past hd (a zero term leaves every sum as it is) */
CAV_FA_HD float cav_fa_tile_at(const float *src, int ld, int r0, int r, int d, int n, int hd) {
    return r0 + r < n && d < hd ? src[(size_t)(r0 + r) * ld + d] : 0.0f;
}

/* ---- host drivers: the kernels' blocks, tiles and threads, one after the other --------------------------
 */

#ifndef __CUDA_ARCH__
/* a tile into dst[rows][HD] (the kernels pad some rows to HD + 1 floats against bank conflicts: that changes
 * no value) */
static inline void cav_fa_load_host(float *dst, int HD, const float *src, int ld, int r0, int rows, int n,
                                    int hd) {
    for (int r = 0; r < rows; r++)
        for (int d = 0; d < HD; d++) dst[r * HD + d] = cav_fa_tile_at(src, ld, r0, r, d, n, hd);
}

/* flash.cu's fa_forward_kernel for head h of sample b: out[B,N,C], lse[B,H,N] from qkv[B,N,3C]; hd = C / H
 * <= 64 */
static inline void cav_fa_forward_host(float *out, float *lse, const float *qkv, int b, int h, int N, int C,
                                       int H) {
    int hd = C / H, HD = cav_fa_hd_pad(hd), ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hd);
    float qs[CAV_FA_BR * 64], ks[CAV_FA_BC * 64], vs[CAV_FA_BC * 64], ss[CAV_FA_BR][CAV_FA_BC];
    float o[CAV_FA_BR][64], m[CAV_FA_BR], l[CAV_FA_BR];
    const float *q = qkv + (size_t)b * N * ld + (size_t)h * hd, *k = q + C, *v = q + 2 * C;
    for (int i0 = 0; i0 < N; i0 += CAV_FA_BR) { /* a block */
        cav_fa_load_host(qs, HD, q, ld, i0, CAV_FA_BR, N, hd);
        for (int t = 0; t < CAV_FA_BR; t++) cav_fa_fwd_init(o[t], &m[t], &l[t], HD);
        for (int j0 = 0; j0 < N; j0 += CAV_FA_BC) {
            int nk = N - j0 < CAV_FA_BC ? N - j0 : CAV_FA_BC;
            cav_fa_load_host(ks, HD, k, ld, j0, CAV_FA_BC, N, hd);
            cav_fa_load_host(vs, HD, v, ld, j0, CAV_FA_BC, N, hd);
            for (int t = 0; t < CAV_FA_BR && i0 + t < N; t++)
                cav_fa_fwd_tile(o[t], &m[t], &l[t], ss[t], qs + t * HD, ks, vs, HD, nk, scale, HD);
        }
        for (int t = 0; t < CAV_FA_BR && i0 + t < N; t++)
            lse[((size_t)b * H + h) * N + i0 + t] = cav_fa_fwd_finish(
                out + ((size_t)b * N + i0 + t) * C + (size_t)h * hd, o[t], m[t], l[t], HD, hd);
    }
}

/* flash.cu's backward kernels for head h of sample b: its slices of dqkv[B,N,3C] SET from dout[B,N,C], the
 * forward's out[B,N,C] and lse[B,H,N]; D[B,H,N] is the kernels' workspace */
static inline void cav_fa_backward_host(float *dqkv, const float *dout, const float *qkv, const float *out,
                                        const float *lse, float *D, int b, int h, int N, int C, int H) {
    int hd = C / H, HD = cav_fa_hd_pad(hd), ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hd);
    float rows1[CAV_FA_BR * 64], rows2[CAV_FA_BR * 64], t1[CAV_FA_BT * 64], t2[CAV_FA_BT * 64];
    float acc[CAV_FA_BR][64], acc2[CAV_FA_BR][64];
    size_t off = (size_t)b * N * ld + (size_t)h * hd, bh = (size_t)b * H + h;
    const float *q = qkv + off, *dO = dout + (size_t)b * N * C + (size_t)h * hd;
    const float *L = lse + bh * N, *Dr = D + bh * N;
    for (int i = 0; i < N; i++) { /* fa_rowdot_kernel */
        size_t r = ((size_t)b * N + i) * C + (size_t)h * hd;
        D[bh * N + i] = cav_fa_dot(dout + r, out + r, hd);
    }
    for (int j0 = 0; j0 < N;
         j0 += CAV_FA_BK) { /* fa_dkdv_kernel: a block of key rows, dk's threads then dv's */
        cav_fa_load_host(rows1, HD, q + C, ld, j0, CAV_FA_BK, N, hd);
        cav_fa_load_host(rows2, HD, q + 2 * C, ld, j0, CAV_FA_BK, N, hd);
        for (int t = 0; t < CAV_FA_BK; t++)
            for (int d = 0; d < HD; d++) acc[t][d] = acc2[t][d] = 0;
        for (int i0 = 0; i0 < N; i0 += CAV_FA_BT) {
            int nq = N - i0 < CAV_FA_BT ? N - i0 : CAV_FA_BT;
            cav_fa_load_host(t1, HD, q, ld, i0, CAV_FA_BT, N, hd);
            cav_fa_load_host(t2, HD, dO, C, i0, CAV_FA_BT, N, hd);
            for (int t = 0; t < CAV_FA_BK && j0 + t < N; t++)
                for (int r = 0; r < nq; r++) {
                    float ds = cav_fa_ds(t1 + r * HD, rows1 + t * HD, rows2 + t * HD, t2 + r * HD, L[i0 + r],
                                         Dr[i0 + r], scale, HD);
                    cav_fa_axpy(acc[t], ds, t1 + r * HD, HD);
                }
            for (int t = 0; t < CAV_FA_BK && j0 + t < N; t++)
                for (int r = 0; r < nq; r++)
                    cav_fa_axpy(acc2[t], cav_fa_p(t1 + r * HD, rows1 + t * HD, L[i0 + r], scale, HD),
                                t2 + r * HD, HD);
        }
        for (int t = 0; t < CAV_FA_BK && j0 + t < N; t++) {
            float *dk_row = dqkv + off + C + (size_t)(j0 + t) * ld;
            cav_fa_store(dk_row, acc[t], HD, hd), cav_fa_store(dk_row + C, acc2[t], HD, hd);
        }
    }
    for (int i0 = 0; i0 < N; i0 += CAV_FA_BR) { /* fa_dq_kernel: a block of query rows */
        cav_fa_load_host(rows1, HD, q, ld, i0, CAV_FA_BR, N, hd);
        cav_fa_load_host(rows2, HD, dO, C, i0, CAV_FA_BR, N, hd);
        for (int t = 0; t < CAV_FA_BR; t++)
            for (int d = 0; d < HD; d++) acc[t][d] = 0;
        for (int j0 = 0; j0 < N; j0 += CAV_FA_BT) {
            int nk = N - j0 < CAV_FA_BT ? N - j0 : CAV_FA_BT;
            cav_fa_load_host(t1, HD, q + C, ld, j0, CAV_FA_BT, N, hd);
            cav_fa_load_host(t2, HD, q + 2 * C, ld, j0, CAV_FA_BT, N, hd);
            for (int t = 0; t < CAV_FA_BR && i0 + t < N; t++)
                for (int r = 0; r < nk; r++)
                    cav_fa_axpy(acc[t],
                                cav_fa_ds(rows1 + t * HD, t1 + r * HD, t2 + r * HD, rows2 + t * HD, L[i0 + t],
                                          Dr[i0 + t], scale, HD),
                                t1 + r * HD, HD);
        }
        for (int t = 0; t < CAV_FA_BR && i0 + t < N; t++)
            cav_fa_store(dqkv + off + (size_t)(i0 + t) * ld, acc[t], HD, hd);
    }
}
#endif

#endif
