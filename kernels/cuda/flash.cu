/* flash.cu: the fused (flash-style) attention core, kernels.h's attention_* contract for head dims up to 64
 * and any token count: tiles of q, k, v and dO in shared memory, the online softmax, and one log-sum-exp per
 * row as the whole saved state (lse[B,H,N] instead of the plain path's att[B,H,N,N]). The arithmetic, its
 * order and the tile sizes are flash.h's; its host drivers run the same tiles on the CPU in
 * tests/unit/test_cuda_arith.c. Head dims up to 64 (32 and 64 natively, smaller ones zero-padded).
 * Deterministic: every output row (of out, dk, dv, dq) belongs to one thread, which sums in a fixed order, so
 * no atomics. The backward makes three passes: D = rowsum(dO * O), dk and dv per key row over all queries, dq
 * per query row over all keys (recomputing p and dp instead of storing them). attention.cu's plain path stays
 * the oracle; backend.cu picks one (CAV_ATTENTION, cav-numerics(7)).
 *
 * Shared memory rows that one thread reads alone at the same d as its neighbours (its own q, dO, k, v) are
 * padded to HD + 1 floats so the 32 lanes of a warp fall in 32 banks; the streamed tiles are read by every
 * thread at the same address (a broadcast) and need no padding. */
#include <stdio.h>

#include "cuda_ops.h"
#include "flash.h"

/* the tile of rows [r0, r0 + rows) of one head into dst[rows][LD], zero-padded to HD columns (flash.h's
 * cav_fa_tile_at); the block's threads take its elements in turn */
template <int HD, int LD>
static __device__ inline void fa_load(float (*dst)[LD], const float *src, int ld, int r0, int rows, int n,
                                      int hd, int t, int threads) {
    for (int e = t; e < rows * HD; e += threads)
        dst[e / HD][e % HD] = cav_fa_tile_at(src, ld, r0, e / HD, e % HD, n, hd);
}

/* grid (ceil(N / BR), B H), BR threads: thread t owns query row i = blockIdx.x BR + t */
template <int HD>
static __global__ void __launch_bounds__(CAV_FA_BR)
    fa_forward_kernel(float *out, float *lse, const float *qkv, int N, int C, int H, int hd, float scale) {
    __shared__ float qs[CAV_FA_BR][HD + 1], ks[CAV_FA_BC][HD], vs[CAV_FA_BC][HD],
        ss[CAV_FA_BR][CAV_FA_BC + 1];
    int bh = blockIdx.y, b = bh / H, h = bh % H, t = threadIdx.x, i0 = blockIdx.x * CAV_FA_BR, i = i0 + t;
    int ld = 3 * C;
    const float *q = qkv + (size_t)b * N * ld + (size_t)h * hd, *k = q + C, *v = q + 2 * C;
    fa_load<HD, HD + 1>(qs, q, ld, i0, CAV_FA_BR, N, hd, t, CAV_FA_BR);
    float o[HD], m, l;
    cav_fa_fwd_init(o, &m, &l, HD);
    for (int j0 = 0; j0 < N; j0 += CAV_FA_BC) {
        int nk = N - j0 < CAV_FA_BC ? N - j0 : CAV_FA_BC;
        __syncthreads(); /* the previous tile is consumed (and, the first time, qs is written) */
        fa_load<HD, HD>(ks, k, ld, j0, CAV_FA_BC, N, hd, t, CAV_FA_BR);
        fa_load<HD, HD>(vs, v, ld, j0, CAV_FA_BC, N, hd, t, CAV_FA_BR);
        __syncthreads();
        if (i < N) cav_fa_fwd_tile(o, &m, &l, ss[t], qs[t], &ks[0][0], &vs[0][0], HD, nk, scale, HD);
    }
    if (i < N)
        lse[(size_t)bh * N + i] =
            cav_fa_fwd_finish(out + ((size_t)b * N + i) * C + (size_t)h * hd, o, m, l, HD, hd);
}

/* D[B,H,N] = rowsum(dO * O) per head, one thread per row */
static __global__ void fa_rowdot_kernel(float *D, const float *dout, const float *out, int B, int N, int C,
                                        int H, int hd) {
    CAV_FOR_EACH(r, (size_t)B * H * N) {
        size_t i = r % N, bh = r / N, b = bh / H, h = bh % H, o = (b * N + i) * C + h * hd;
        D[r] = cav_fa_dot(dout + o, out + o, hd);
    }
}

/* grid (ceil(N / BK), B H), 2 BK threads: key row j = blockIdx.x BK + t % BK has two, one summing its dk
 * (t < BK) and one its dv (warp-uniform roles); the queries stream through in tiles of BT. One thread holding
 * both (2 HD accumulators beside its k and v rows) spilled registers at HD = 64. */
template <int HD>
static __global__ void __launch_bounds__(2 * CAV_FA_BK)
    fa_dkdv_kernel(float *dqkv, const float *dout, const float *qkv, const float *lse, const float *D, int N,
                   int C, int H, int hd, float scale) {
    __shared__ float ks[CAV_FA_BK][HD + 1], vs[CAV_FA_BK][HD + 1], qs[CAV_FA_BT][HD], dos[CAV_FA_BT][HD];
    __shared__ float ls[CAV_FA_BT], Ds[CAV_FA_BT];
    int bh = blockIdx.y, b = bh / H, h = bh % H, t = threadIdx.x, r0 = t % CAV_FA_BK, is_dv = t >= CAV_FA_BK;
    int j0 = blockIdx.x * CAV_FA_BK, j = j0 + r0, ld = 3 * C;
    size_t off = (size_t)b * N * ld + (size_t)h * hd;
    const float *q = qkv + off, *dO = dout + (size_t)b * N * C + (size_t)h * hd;
    fa_load<HD, HD + 1>(ks, q + C, ld, j0, CAV_FA_BK, N, hd, t, 2 * CAV_FA_BK);
    fa_load<HD, HD + 1>(vs, q + 2 * C, ld, j0, CAV_FA_BK, N, hd, t, 2 * CAV_FA_BK);
    float acc[HD];
    for (int d = 0; d < HD; d++) acc[d] = 0;
    for (int i0 = 0; i0 < N; i0 += CAV_FA_BT) {
        int nq = N - i0 < CAV_FA_BT ? N - i0 : CAV_FA_BT;
        __syncthreads();
        fa_load<HD, HD>(qs, q, ld, i0, CAV_FA_BT, N, hd, t, 2 * CAV_FA_BK);
        fa_load<HD, HD>(dos, dO, C, i0, CAV_FA_BT, N, hd, t, 2 * CAV_FA_BK);
        if (t < nq) ls[t] = lse[(size_t)bh * N + i0 + t], Ds[t] = D[(size_t)bh * N + i0 + t];
        __syncthreads();
        if (j < N && is_dv)
            for (int r = 0; r < nq; r++)
                cav_fa_axpy(acc, cav_fa_p(qs[r], ks[r0], ls[r], scale, HD), dos[r], HD);
        else if (j < N)
            for (int r = 0; r < nq; r++)
                cav_fa_axpy(acc, cav_fa_ds(qs[r], ks[r0], vs[r0], dos[r], ls[r], Ds[r], scale, HD), qs[r],
                            HD);
    }
    if (j < N) cav_fa_store(dqkv + off + (size_t)(1 + is_dv) * C + (size_t)j * ld, acc, HD, hd);
}

/* grid (ceil(N / BR), B H), BR threads: thread t owns query row i = blockIdx.x BR + t and its dq; the keys
 * stream through in tiles of BT */
template <int HD>
static __global__ void __launch_bounds__(CAV_FA_BR)
    fa_dq_kernel(float *dqkv, const float *dout, const float *qkv, const float *lse, const float *D, int N,
                 int C, int H, int hd, float scale) {
    __shared__ float qs[CAV_FA_BR][HD + 1], dos[CAV_FA_BR][HD + 1], ks[CAV_FA_BT][HD], vs[CAV_FA_BT][HD];
    int bh = blockIdx.y, b = bh / H, h = bh % H, t = threadIdx.x, i0 = blockIdx.x * CAV_FA_BR, i = i0 + t;
    int ld = 3 * C;
    size_t off = (size_t)b * N * ld + (size_t)h * hd;
    const float *q = qkv + off, *dO = dout + (size_t)b * N * C + (size_t)h * hd;
    fa_load<HD, HD + 1>(qs, q, ld, i0, CAV_FA_BR, N, hd, t, CAV_FA_BR);
    fa_load<HD, HD + 1>(dos, dO, C, i0, CAV_FA_BR, N, hd, t, CAV_FA_BR);
    float L = i < N ? lse[(size_t)bh * N + i] : 0.0f, Dv = i < N ? D[(size_t)bh * N + i] : 0.0f, dq[HD];
    for (int d = 0; d < HD; d++) dq[d] = 0;
    for (int j0 = 0; j0 < N; j0 += CAV_FA_BT) {
        int nk = N - j0 < CAV_FA_BT ? N - j0 : CAV_FA_BT;
        __syncthreads();
        fa_load<HD, HD>(ks, q + C, ld, j0, CAV_FA_BT, N, hd, t, CAV_FA_BR);
        fa_load<HD, HD>(vs, q + 2 * C, ld, j0, CAV_FA_BT, N, hd, t, CAV_FA_BR);
        __syncthreads();
        if (i < N)
            for (int r = 0; r < nk; r++) {
                cav_fa_axpy(dq, cav_fa_ds(qs[t], ks[r], vs[r], dos[t], L, Dv, scale, HD), ks[r], HD);
            }
    }
    if (i < N) cav_fa_store(dqkv + off + (size_t)i * ld, dq, HD, hd);
}

void cav_cuda_attention_rowdot(float *D, const float *dout, const float *out, int B, int N, int C, int H) {
    fa_rowdot_kernel<<<cav_grid((size_t)B * H * N, 256), 256>>>(D, dout, out, B, N, C, H, C / H);
    LAUNCHED();
}

size_t cav_cuda_flash_state_size(int B, int H, int N) {
    return (size_t)B * H * N;
}
size_t cav_cuda_flash_workspace(int B, int H, int N) {
    return (size_t)B * H * N;
}

/* the head dims the kernels are built for: HD = 32 or 64, the models' (64 in the encoders, 32 in the
 * decoders), and any smaller one zero-padded (flash.h) */
static int fa_head_dim(int C, int H) {
    int hd = C / H;
    if (hd > 64) {
        fprintf(stderr,
                "cuda backend: CAV_ATTENTION=fused: head dim %d (C %d, H %d) is over 64; use "
                "CAV_ATTENTION=plain\n",
                hd, C, H);
        exit(3);
    }
    return hd;
}

void cav_cuda_flash_forward(float *out, float *lse, const float *qkv, int B, int N, int C, int H) {
    if (B <= 0 || N <= 0) return;
    int hd = fa_head_dim(C, H);
    float scale = 1.0f / sqrtf((float)hd);
    dim3 grid((unsigned)((N + CAV_FA_BR - 1) / CAV_FA_BR), (unsigned)(B * H));
    if (cav_fa_hd_pad(hd) == 64)
        fa_forward_kernel<64><<<grid, CAV_FA_BR>>>(out, lse, qkv, N, C, H, hd, scale);
    else
        fa_forward_kernel<32><<<grid, CAV_FA_BR>>>(out, lse, qkv, N, C, H, hd, scale);
    LAUNCHED();
}

void cav_cuda_flash_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                             const float *lse, float *D, int B, int N, int C, int H) {
    if (B <= 0 || N <= 0) return;
    int hd = fa_head_dim(C, H);
    float scale = 1.0f / sqrtf((float)hd);
    dim3 gk((unsigned)((N + CAV_FA_BK - 1) / CAV_FA_BK), (unsigned)(B * H));
    dim3 gq((unsigned)((N + CAV_FA_BR - 1) / CAV_FA_BR), (unsigned)(B * H));
    cav_cuda_attention_rowdot(D, dout, out, B, N, C, H);
    if (cav_fa_hd_pad(hd) == 64) {
        fa_dkdv_kernel<64><<<gk, 2 * CAV_FA_BK>>>(dqkv, dout, qkv, lse, D, N, C, H, hd, scale);
        LAUNCHED();
        fa_dq_kernel<64><<<gq, CAV_FA_BR>>>(dqkv, dout, qkv, lse, D, N, C, H, hd, scale);
    } else {
        fa_dkdv_kernel<32><<<gk, 2 * CAV_FA_BK>>>(dqkv, dout, qkv, lse, D, N, C, H, hd, scale);
        LAUNCHED();
        fa_dq_kernel<32><<<gq, CAV_FA_BR>>>(dqkv, dout, qkv, lse, D, N, C, H, hd, scale);
    }
    LAUNCHED();
}
