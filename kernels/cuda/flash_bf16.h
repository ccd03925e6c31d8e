/* flash_bf16.h: the arithmetic of the bf16 tensor-core attention of kernels/cuda/flash_bf16.cu (kernels.h's
 * attention_*_bf16), as small functions compiled both by nvcc (the kernels call them) and by the C compiler,
 * and host drivers that visit the kernels' blocks and tiles one after the other (tests/unit/test_cuda_arith.c
 * runs them against kernels/cpu's cav_attention_*_bf16), so that the rounding points, the masking of padded
 * rows and the recomputation from lse are checked on a machine without a GPU.
 *
 * One (batch, head) at a time, hd = C / H <= 64 zero-padded to HD = 32 or 64 (flash.h's cav_fa_hd_pad and
 * cav_fa_tile_at: a zero product leaves a sum as it is). Every tile a kernel copies to shared memory is
 * rounded to bf16 there (bf16.h), so each product on the tensor cores is of the contract's r(q), r(k), r(v),
 * r(dO), r(P), r(dS); scores leave the tensor cores as fp32 and everything between the products is fp32:
 * - forward, blocks of CAV_FB_BQ query rows (CAV_FB_WARPS warps of 16), keys streamed in tiles of CAV_FB_BT:
 *   pass 1 runs the online softmax's statistics over the tiles (cav_fb_stats_tile: the running max m and
 *   the sum l rescaled by exp(m - m') whenever m grows; only the tile's nk real keys, so padded keys count
 *   as -inf) and ends with lse = m + log l; pass 2 recomputes the scores tile by tile and adds r(P) r(v)
 *   with P = exp(S - lse) already normalised. Two passes over the keys (the scores computed twice) rather
 *   than flash-attention's one, so that the P rounded is the normalised probability, the same P the
 *   backward recomputes from lse: no running maximum of a tile order enters a rounding point.
 * - backward, from lse alone: D_i = rowsum(dout * out) (flash.cu's row-dot kernel), then two kernels whose
 *   every output row belongs to one warp (no atomics; the same bits on every run): blocks of CAV_FB_BK key
 *   rows summing dK = r(dS)^T r(q) and dV = r(P)^T r(dO) over the query tiles in order, and blocks of
 *   CAV_FB_BQ query rows summing dQ = r(dS) r(k) over the key tiles in order; P and dS recomputed in each.
 *   Padded query and key rows get P = 0 (and so dS = 0) explicitly, not only through their zero rows.
 * The tensor cores sum each 16-term chunk of a product in their own order (and an accumulator's chunks in
 * k order); the host drivers sum in index order. Both differ from the CPU's OpenBLAS order only in fp32
 * rounding, which test_cuda_arith.c bounds, with the bf16 roundings it can flip. */
#ifndef CAV_CUDA_FLASH_BF16_H
#define CAV_CUDA_FLASH_BF16_H

#include <math.h>
#include <stdint.h>

#include "bf16.h"
#include "flash.h"

#ifdef __CUDACC__
#define CAV_FB_HD static inline __host__ __device__
#else
#define CAV_FB_HD static inline
#endif

#define CAV_FB_WARPS 4                /* warps of a block, 16 rows (one mma tile's side) each */
#define CAV_FB_BQ (16 * CAV_FB_WARPS) /* query rows of a forward or dQ block */
#define CAV_FB_BK (16 * CAV_FB_WARPS) /* key rows of a dK/dV block */
#define CAV_FB_BT 32                  /* rows of a streamed tile: keys (forward, dQ) or queries (dK/dV) */

/* one row's online softmax statistics over a tile's scores s[nk] (the tile's real keys): the running max m
 * and the running sum l of exp(s - m), l rescaled when m grows (the first tile: m = -inf, l = 0, and the
 * rescale exp(-inf) = 0 leaves l at 0) */
CAV_FB_HD void cav_fb_stats_tile(float *m, float *l, const float *s, int nk) {
    float mt = *m, sum = 0;
    for (int j = 0; j < nk; j++) mt = s[j] > mt ? s[j] : mt;
    for (int j = 0; j < nk; j++) sum += expf(s[j] - mt);
    *l = *l * expf(*m - mt) + sum, *m = mt;
}
CAV_FB_HD float cav_fb_lse(float m, float l) {
    return m + logf(l);
}
/* the probability of a score s (the finished dot product times the scale) from its row's lse; 0 for a
 * padded row or column */
CAV_FB_HD float cav_fb_p(float s, float lse, int valid) {
    return valid ? expf(s - lse) : 0.0f;
}
/* dS = P (dP - D) scale, from the unrounded P */
CAV_FB_HD float cav_fb_ds(float p, float dp, float D, float scale) {
    return p * (dp - D) * scale;
}
/* element d of row r of a tile (flash.h's cav_fa_tile_at: zero past n rows and hd) as the bf16 bits a kernel
 * puts in shared memory */
CAV_FB_HD uint16_t cav_fb_tile_at(const float *src, int ld, int r0, int r, int d, int n, int hd) {
    return cav_bf16_from_f32(cav_fa_tile_at(src, ld, r0, r, d, n, hd));
}

/* ---- host drivers: the kernels' blocks, warps and tiles in order ------------------------------------------
 * The products a kernel makes on tensor cores are index-order float sums here (cav_fa_dot; += over a tile's
 * rows), on floats holding the bf16 values. */

#ifndef __CUDA_ARCH__
/* a tile of rows [r0, r0 + rows) rounded to bf16 into dst[rows][HD] */
static inline void cav_fb_load_host(float *dst, int HD, const float *src, int ld, int r0, int rows, int n,
                                    int hd) {
    for (int r = 0; r < rows; r++)
        for (int d = 0; d < HD; d++)
            dst[r * HD + d] = cav_bf16_to_f32(cav_fb_tile_at(src, ld, r0, r, d, n, hd));
}

/* flash_bf16.cu's fb_forward_kernel for head h of sample b: out[B,N,C], lse[B,H,N] from qkv[B,N,3C] */
static inline void cav_fb_forward_host(float *out, float *lse, const float *qkv, int b, int h, int N, int C,
                                       int H) {
    int hd = C / H, HD = cav_fa_hd_pad(hd), ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hd);
    float qs[CAV_FB_BQ * 64], ks[CAV_FB_BT * 64], vs[CAV_FB_BT * 64], s[CAV_FB_BT];
    float m[CAV_FB_BQ], l[CAV_FB_BQ], L[CAV_FB_BQ], o[CAV_FB_BQ][64];
    const float *q = qkv + (size_t)b * N * ld + (size_t)h * hd, *k = q + C, *v = q + 2 * C;
    for (int i0 = 0; i0 < N; i0 += CAV_FB_BQ) { /* a block; row r is row r % 16 of warp r / 16 */
        cav_fb_load_host(qs, HD, q, ld, i0, CAV_FB_BQ, N, hd);
        for (int r = 0; r < CAV_FB_BQ; r++) m[r] = -INFINITY, l[r] = 0;
        for (int j0 = 0; j0 < N; j0 += CAV_FB_BT) { /* pass 1: the statistics */
            int nk = N - j0 < CAV_FB_BT ? N - j0 : CAV_FB_BT;
            cav_fb_load_host(ks, HD, k, ld, j0, CAV_FB_BT, N, hd);
            for (int r = 0; r < CAV_FB_BQ; r++) {
                for (int c = 0; c < CAV_FB_BT; c++) s[c] = cav_fa_dot(qs + r * HD, ks + c * HD, HD) * scale;
                cav_fb_stats_tile(&m[r], &l[r], s, nk);
            }
        }
        for (int r = 0; r < CAV_FB_BQ; r++) {
            L[r] = cav_fb_lse(m[r], l[r]);
            for (int d = 0; d < HD; d++) o[r][d] = 0;
        }
        for (int j0 = 0; j0 < N; j0 += CAV_FB_BT) { /* pass 2: out = r(P) r(v) */
            int nk = N - j0 < CAV_FB_BT ? N - j0 : CAV_FB_BT;
            cav_fb_load_host(ks, HD, k, ld, j0, CAV_FB_BT, N, hd);
            cav_fb_load_host(vs, HD, v, ld, j0, CAV_FB_BT, N, hd);
            for (int r = 0; r < CAV_FB_BQ; r++)
                for (int c = 0; c < CAV_FB_BT; c++) {
                    float sc = cav_fa_dot(qs + r * HD, ks + c * HD, HD) * scale;
                    float p16 = cav_bf16_round(cav_fb_p(sc, L[r], c < nk));
                    for (int d = 0; d < HD; d++) o[r][d] += p16 * vs[c * HD + d];
                }
        }
        for (int r = 0; r < CAV_FB_BQ && i0 + r < N; r++) {
            lse[((size_t)b * H + h) * N + i0 + r] = L[r];
            cav_fa_store(out + ((size_t)b * N + i0 + r) * C + (size_t)h * hd, o[r], HD, hd);
        }
    }
}

/* flash_bf16.cu's backward for head h of sample b: its slices of dqkv[B,N,3C] SET from dout[B,N,C], the
 * forward's out[B,N,C] and lse[B,H,N]; D[B,H,N] is the workspace */
static inline void cav_fb_backward_host(float *dqkv, const float *dout, const float *qkv, const float *out,
                                        const float *lse, float *D, int b, int h, int N, int C, int H) {
    int hd = C / H, HD = cav_fa_hd_pad(hd), ld = 3 * C;
    float scale = 1.0f / sqrtf((float)hd);
    float rows1[CAV_FB_BQ * 64], rows2[CAV_FB_BQ * 64], t1[CAV_FB_BT * 64], t2[CAV_FB_BT * 64];
    float ls[CAV_FB_BQ], Ds[CAV_FB_BQ], acc[CAV_FB_BQ][64], acc2[CAV_FB_BQ][64];
    size_t off = (size_t)b * N * ld + (size_t)h * hd, bh = (size_t)b * H + h;
    const float *q = qkv + off, *dO = dout + (size_t)b * N * C + (size_t)h * hd;
    const float *L = lse + bh * N, *Dr = D + bh * N;
    for (int i = 0; i < N; i++) { /* flash.cu's row-dot kernel */
        size_t r = ((size_t)b * N + i) * C + (size_t)h * hd;
        D[bh * N + i] = cav_fa_dot(dout + r, out + r, hd);
    }
    for (int j0 = 0; j0 < N; j0 += CAV_FB_BK) { /* fb_dkdv_kernel: a block of key rows */
        cav_fb_load_host(rows1, HD, q + C, ld, j0, CAV_FB_BK, N, hd);
        cav_fb_load_host(rows2, HD, q + 2 * C, ld, j0, CAV_FB_BK, N, hd);
        for (int t = 0; t < CAV_FB_BK; t++)
            for (int d = 0; d < HD; d++) acc[t][d] = acc2[t][d] = 0;
        for (int i0 = 0; i0 < N; i0 += CAV_FB_BT) {
            cav_fb_load_host(t1, HD, q, ld, i0, CAV_FB_BT, N, hd);
            cav_fb_load_host(t2, HD, dO, C, i0, CAV_FB_BT, N, hd);
            for (int c = 0; c < CAV_FB_BT; c++) /* a padded query's lse and D are 0 */
                ls[c] = i0 + c < N ? L[i0 + c] : 0.0f, Ds[c] = i0 + c < N ? Dr[i0 + c] : 0.0f;
            for (int t = 0; t < CAV_FB_BK; t++)
                for (int c = 0; c < CAV_FB_BT; c++) {
                    float p =
                        cav_fb_p(cav_fa_dot(rows1 + t * HD, t1 + c * HD, HD) * scale, ls[c], i0 + c < N);
                    float ds = cav_fb_ds(p, cav_fa_dot(rows2 + t * HD, t2 + c * HD, HD), Ds[c], scale);
                    float p16 = cav_bf16_round(p), ds16 = cav_bf16_round(ds);
                    for (int d = 0; d < HD; d++)
                        acc[t][d] += ds16 * t1[c * HD + d], acc2[t][d] += p16 * t2[c * HD + d];
                }
        }
        for (int t = 0; t < CAV_FB_BK && j0 + t < N; t++) {
            float *dk_row = dqkv + off + C + (size_t)(j0 + t) * ld;
            cav_fa_store(dk_row, acc[t], HD, hd), cav_fa_store(dk_row + C, acc2[t], HD, hd);
        }
    }
    for (int i0 = 0; i0 < N; i0 += CAV_FB_BQ) { /* fb_dq_kernel: a block of query rows */
        cav_fb_load_host(rows1, HD, q, ld, i0, CAV_FB_BQ, N, hd);
        cav_fb_load_host(rows2, HD, dO, C, i0, CAV_FB_BQ, N, hd);
        for (int r = 0; r < CAV_FB_BQ; r++) {
            ls[r] = i0 + r < N ? L[i0 + r] : 0.0f, Ds[r] = i0 + r < N ? Dr[i0 + r] : 0.0f;
            for (int d = 0; d < HD; d++) acc[r][d] = 0;
        }
        for (int j0 = 0; j0 < N; j0 += CAV_FB_BT) {
            cav_fb_load_host(t1, HD, q + C, ld, j0, CAV_FB_BT, N, hd);
            cav_fb_load_host(t2, HD, q + 2 * C, ld, j0, CAV_FB_BT, N, hd);
            for (int r = 0; r < CAV_FB_BQ; r++)
                for (int c = 0; c < CAV_FB_BT; c++) {
                    float p =
                        cav_fb_p(cav_fa_dot(rows1 + r * HD, t1 + c * HD, HD) * scale, ls[r], j0 + c < N);
                    float ds16 = cav_bf16_round(
                        cav_fb_ds(p, cav_fa_dot(rows2 + r * HD, t2 + c * HD, HD), Ds[r], scale));
                    for (int d = 0; d < HD; d++) acc[r][d] += ds16 * t1[c * HD + d];
                }
        }
        for (int r = 0; r < CAV_FB_BQ && i0 + r < N; r++)
            cav_fa_store(dqkv + off + (size_t)(i0 + r) * ld, acc[r], HD, hd);
    }
}
#endif

#endif
