/* flash_bf16.cu: the bf16 attention on tensor cores, kernels.h's attention_*_bf16 contract for head dims up
 * to 64 (32 and 64 natively, smaller ones zero-padded) and any token count: nvcuda::wmma 16x16x16 products of
 * bf16 tiles with fp32 accumulators, the softmax's statistics in fp32, one log-sum-exp per row as the whole
 * saved state. The arithmetic between the products, its rounding points and the tile order are
 * flash_bf16.h's, whose host drivers run the same tiles on the CPU in tests/unit/test_cuda_arith.c; the CUDA
 * backend's bf16 ops are checked against the CPU's in tests/unit/test_kernels.c (make check-cuda).
 *
 * A block is CAV_FB_WARPS warps of 16 rows each (queries in the forward and dQ kernels, keys in the dK/dV
 * kernel); a warp keeps its own rows as matrix_a fragments for the whole kernel and streams the other side in
 * tiles of CAV_FB_BT rows through shared memory, rounded to bf16 as they are copied in. The fragments'
 * element layout is unspecified, so the elementwise work (scale, softmax, dS) goes through shared memory: a
 * warp stores its scores there, each lane works on elements lane, lane + 32, ..., and the rounded P or dS is
 * loaded back as a matrix_a fragment. Deterministic: every output row belongs to one warp, which adds its
 * tiles in a fixed order, so no atomics. Shared memory rows are padded (8 bf16, 4 floats) off a multiple of
 * 128 bytes against bank conflicts; every fragment's address stays a multiple of 32 bytes, as wmma needs. */
#include <cuda_bf16.h>
#include <mma.h>
#include <stdio.h>

#include "cuda_ops.h"
#include "flash_bf16.h"

using namespace nvcuda;

#define FB_THREADS (32 * CAV_FB_WARPS)
#define FB_LDS (CAV_FB_BT + 4) /* floats of a row of a warp's scores */
#define FB_LDP (CAV_FB_BT + 8) /* bf16 of a row of a warp's r(P) or r(dS) */

typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb_b;
/* a row-major tile read as the transpose: element (d, j) of the fragment is tile[j][d] */
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb_bt;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> fb_c;

/* A warp's shared memory: the current tile's scores and what follows from them, or its own rows on their way
 * into fragments (at the start), or its result rows on their way out (at the end). */
template <int HD> union __align__(32) fb_scratch {
    struct {
        float s[16][FB_LDS];    /* the scores (q k^T) scale */
        float g[16][FB_LDS];    /* dP */
        uint16_t p[16][FB_LDP]; /* r(P) */
        uint16_t d[16][FB_LDP]; /* r(dS) */
    } t;
    uint16_t rows[2][16][HD + 8];
    float o[16][HD + 4];
};

static __device__ inline const __nv_bfloat16 *fb_bf(const uint16_t *p) {
    return reinterpret_cast<const __nv_bfloat16 *>(p);
}

/* rows [r0, r0 + rows) of a head into dst[rows][HD + 8] as bf16 bits (flash_bf16.h's cav_fb_tile_at: zero
 * past n rows and hd); threads t of `threads` take its elements in turn */
template <int HD>
static __device__ inline void fb_load(uint16_t (*dst)[HD + 8], const float *src, int ld, int r0, int rows,
                                      int n, int hd, int t, int threads) {
    for (int e = t; e < rows * HD; e += threads)
        dst[e / HD][e % HD] = cav_fb_tile_at(src, ld, r0, e / HD, e % HD, n, hd);
}

/* the warp's 16 rows from r0 as matrix_a fragments f[HD/16], through stage */
template <int HD>
static __device__ inline void fb_own_rows(fb_a *f, uint16_t (*stage)[HD + 8], const float *src, int ld,
                                          int r0, int n, int hd, int lane) {
    fb_load<HD>(stage, src, ld, r0, 16, n, hd, lane, 32);
    __syncwarp();
#pragma unroll
    for (int c = 0; c < HD / 16; c++) wmma::load_matrix_sync(f[c], fb_bf(&stage[0][c * 16]), HD + 8);
}

/* s[16][BT] = (a tile^T) scale: the warp's rows (fragments a) against the tile's BT rows, each finished dot
 * product times scale (1 for dP) */
template <int HD>
static __device__ inline void fb_scores(float (*s)[FB_LDS], const fb_a *a, const uint16_t (*tile)[HD + 8],
                                        float scale) {
#pragma unroll
    for (int c = 0; c < CAV_FB_BT / 16; c++) {
        fb_c acc;
        wmma::fill_fragment(acc, 0.0f);
#pragma unroll
        for (int k = 0; k < HD / 16; k++) {
            fb_bt b;
            wmma::load_matrix_sync(b, fb_bf(&tile[c * 16][k * 16]), HD + 8);
            wmma::mma_sync(acc, a[k], b, acc);
        }
        for (int e = 0; e < acc.num_elements; e++) acc.x[e] *= scale;
        wmma::store_matrix_sync(&s[0][c * 16], acc, FB_LDS, wmma::mem_row_major);
    }
}

/* acc[HD/16] (16 x HD) += a[16][BT] tile[BT][HD]: a warp's r(P) or r(dS) times the tile's rows */
template <int HD>
static __device__ inline void fb_accumulate(fb_c *acc, const uint16_t (*a)[FB_LDP],
                                            const uint16_t (*tile)[HD + 8]) {
#pragma unroll
    for (int k = 0; k < CAV_FB_BT / 16; k++) {
        fb_a af;
        wmma::load_matrix_sync(af, fb_bf(&a[0][k * 16]), FB_LDP);
#pragma unroll
        for (int c = 0; c < HD / 16; c++) {
            fb_b b;
            wmma::load_matrix_sync(b, fb_bf(&tile[k * 16][c * 16]), HD + 8);
            wmma::mma_sync(acc[c], af, b, acc[c]);
        }
    }
}

/* the warp's 16 x HD result acc to rows r0.. (those < n, their first hd columns) of dst, rows ld apart,
 * through o */
template <int HD>
static __device__ inline void fb_store(float *dst, int ld, int r0, int n, int hd, const fb_c *acc,
                                       float (*o)[HD + 4], int lane) {
    __syncwarp(); /* the warp is done with what o overlays */
#pragma unroll
    for (int c = 0; c < HD / 16; c++)
        wmma::store_matrix_sync(&o[0][c * 16], acc[c], HD + 4, wmma::mem_row_major);
    __syncwarp();
    for (int e = lane; e < 16 * HD; e += 32) {
        int r = e / HD, d = e % HD;
        if (r0 + r < n && d < hd) dst[(size_t)(r0 + r) * ld + d] = o[r][d];
    }
    __syncwarp();
}

/* grid (ceil(N / BQ), B H), FB_THREADS threads: warp w owns query rows r0 = blockIdx.x BQ + 16 w .. + 16;
 * lane r < 16 keeps row r's statistics. Pass 1: lse; pass 2: out = r(P) r(v). */
template <int HD>
static __global__ void __launch_bounds__(FB_THREADS)
    fb_forward_kernel(float *out, float *lse, const float *qkv, int N, int C, int H, int hd, float scale) {
    __shared__ __align__(32) uint16_t ks[CAV_FB_BT][HD + 8], vs[CAV_FB_BT][HD + 8];
    __shared__ fb_scratch<HD> ws[CAV_FB_WARPS];
    __shared__ float ls[CAV_FB_BQ];
    int bh = blockIdx.y, b = bh / H, h = bh % H, t = threadIdx.x, w = t / 32, lane = t % 32, ld = 3 * C;
    int r0 = blockIdx.x * CAV_FB_BQ + 16 * w;
    const float *q = qkv + (size_t)b * N * ld + (size_t)h * hd, *k = q + C, *v = q + 2 * C;
    fb_scratch<HD> &my = ws[w];
    fb_a qf[HD / 16];
    fb_own_rows<HD>(qf, my.rows[0], q, ld, r0, N, hd, lane);
    float m = -INFINITY, l = 0;
    for (int j0 = 0; j0 < N; j0 += CAV_FB_BT) {
        int nk = N - j0 < CAV_FB_BT ? N - j0 : CAV_FB_BT;
        __syncthreads(); /* the previous tile is consumed (the first time: every warp has its fragments) */
        fb_load<HD>(ks, k, ld, j0, CAV_FB_BT, N, hd, t, FB_THREADS);
        __syncthreads();
        fb_scores<HD>(my.t.s, qf, ks, scale);
        __syncwarp();
        if (lane < 16) cav_fb_stats_tile(&m, &l, my.t.s[lane], nk);
    }
    if (lane < 16) ls[16 * w + lane] = cav_fb_lse(m, l);
    fb_c of[HD / 16];
#pragma unroll
    for (int c = 0; c < HD / 16; c++) wmma::fill_fragment(of[c], 0.0f);
    for (int j0 = 0; j0 < N; j0 += CAV_FB_BT) {
        int nk = N - j0 < CAV_FB_BT ? N - j0 : CAV_FB_BT;
        __syncthreads();
        fb_load<HD>(ks, k, ld, j0, CAV_FB_BT, N, hd, t, FB_THREADS);
        fb_load<HD>(vs, v, ld, j0, CAV_FB_BT, N, hd, t, FB_THREADS);
        __syncthreads();
        fb_scores<HD>(my.t.s, qf, ks, scale);
        __syncwarp();
        for (int e = lane; e < 16 * CAV_FB_BT; e += 32) {
            int r = e / CAV_FB_BT, c = e % CAV_FB_BT;
            my.t.p[r][c] = cav_bf16_from_f32(cav_fb_p(my.t.s[r][c], ls[16 * w + r], c < nk));
        }
        __syncwarp();
        fb_accumulate<HD>(of, my.t.p, vs);
    }
    if (lane < 16 && r0 + lane < N) lse[(size_t)bh * N + r0 + lane] = ls[16 * w + lane];
    fb_store<HD>(out + (size_t)b * N * C + (size_t)h * hd, C, r0, N, hd, of, my.o, lane);
}

/* grid (ceil(N / BK), B H), FB_THREADS threads: warp w owns key rows j0 = blockIdx.x BK + 16 w .. + 16 and
 * their dK and dV; the queries stream through in tiles of BT, in order. */
template <int HD>
static __global__ void __launch_bounds__(FB_THREADS)
    fb_dkdv_kernel(float *dqkv, const float *dout, const float *qkv, const float *lse, const float *D, int N,
                   int C, int H, int hd, float scale) {
    __shared__ __align__(32) uint16_t qs[CAV_FB_BT][HD + 8], dos[CAV_FB_BT][HD + 8];
    __shared__ fb_scratch<HD> ws[CAV_FB_WARPS];
    __shared__ float ls[CAV_FB_BT], Ds[CAV_FB_BT];
    int bh = blockIdx.y, b = bh / H, h = bh % H, t = threadIdx.x, w = t / 32, lane = t % 32, ld = 3 * C;
    int j0 = blockIdx.x * CAV_FB_BK + 16 * w;
    size_t off = (size_t)b * N * ld + (size_t)h * hd;
    const float *q = qkv + off, *dO = dout + (size_t)b * N * C + (size_t)h * hd;
    fb_scratch<HD> &my = ws[w];
    fb_a kf[HD / 16], vf[HD / 16];
    fb_own_rows<HD>(kf, my.rows[0], q + C, ld, j0, N, hd, lane);
    fb_own_rows<HD>(vf, my.rows[1], q + 2 * C, ld, j0, N, hd, lane);
    fb_c dk[HD / 16], dv[HD / 16];
#pragma unroll
    for (int c = 0; c < HD / 16; c++) wmma::fill_fragment(dk[c], 0.0f), wmma::fill_fragment(dv[c], 0.0f);
    for (int i0 = 0; i0 < N; i0 += CAV_FB_BT) {
        __syncthreads();
        fb_load<HD>(qs, q, ld, i0, CAV_FB_BT, N, hd, t, FB_THREADS);
        fb_load<HD>(dos, dO, C, i0, CAV_FB_BT, N, hd, t, FB_THREADS);
        if (t < CAV_FB_BT) { /* a padded query's lse and D are 0 (its P is masked) */
            int i = i0 + t;
            ls[t] = i < N ? lse[(size_t)bh * N + i] : 0.0f, Ds[t] = i < N ? D[(size_t)bh * N + i] : 0.0f;
        }
        __syncthreads();
        fb_scores<HD>(my.t.s, kf, qs, scale); /* S^T: the warp's keys against the tile's queries */
        fb_scores<HD>(my.t.g, vf, dos, 1.0f); /* dP^T */
        __syncwarp();
        for (int e = lane; e < 16 * CAV_FB_BT; e += 32) {
            int r = e / CAV_FB_BT, c = e % CAV_FB_BT;
            float p = cav_fb_p(my.t.s[r][c], ls[c], i0 + c < N);
            my.t.p[r][c] = cav_bf16_from_f32(p);
            my.t.d[r][c] = cav_bf16_from_f32(cav_fb_ds(p, my.t.g[r][c], Ds[c], scale));
        }
        __syncwarp();
        fb_accumulate<HD>(dv, my.t.p, dos);
        fb_accumulate<HD>(dk, my.t.d, qs);
    }
    fb_store<HD>(dqkv + off + C, ld, j0, N, hd, dk, my.o, lane);
    fb_store<HD>(dqkv + off + 2 * C, ld, j0, N, hd, dv, my.o, lane);
}

/* grid (ceil(N / BQ), B H), FB_THREADS threads: warp w owns query rows r0 = blockIdx.x BQ + 16 w .. + 16 and
 * their dQ; the keys stream through in tiles of BT, in order. */
template <int HD>
static __global__ void __launch_bounds__(FB_THREADS)
    fb_dq_kernel(float *dqkv, const float *dout, const float *qkv, const float *lse, const float *D, int N,
                 int C, int H, int hd, float scale) {
    __shared__ __align__(32) uint16_t ks[CAV_FB_BT][HD + 8], vs[CAV_FB_BT][HD + 8];
    __shared__ fb_scratch<HD> ws[CAV_FB_WARPS];
    __shared__ float ls[CAV_FB_BQ], Ds[CAV_FB_BQ];
    int bh = blockIdx.y, b = bh / H, h = bh % H, t = threadIdx.x, w = t / 32, lane = t % 32, ld = 3 * C;
    int r0 = blockIdx.x * CAV_FB_BQ + 16 * w;
    size_t off = (size_t)b * N * ld + (size_t)h * hd;
    const float *q = qkv + off, *dO = dout + (size_t)b * N * C + (size_t)h * hd;
    fb_scratch<HD> &my = ws[w];
    fb_a qf[HD / 16], df[HD / 16];
    fb_own_rows<HD>(qf, my.rows[0], q, ld, r0, N, hd, lane);
    fb_own_rows<HD>(df, my.rows[1], dO, C, r0, N, hd, lane);
    if (t < CAV_FB_BQ) { /* a padded query's: 0, its dQ is not stored */
        int i = blockIdx.x * CAV_FB_BQ + t;
        ls[t] = i < N ? lse[(size_t)bh * N + i] : 0.0f, Ds[t] = i < N ? D[(size_t)bh * N + i] : 0.0f;
    }
    fb_c dq[HD / 16];
#pragma unroll
    for (int c = 0; c < HD / 16; c++) wmma::fill_fragment(dq[c], 0.0f);
    for (int j0 = 0; j0 < N; j0 += CAV_FB_BT) {
        __syncthreads();
        fb_load<HD>(ks, q + C, ld, j0, CAV_FB_BT, N, hd, t, FB_THREADS);
        fb_load<HD>(vs, q + 2 * C, ld, j0, CAV_FB_BT, N, hd, t, FB_THREADS);
        __syncthreads();
        fb_scores<HD>(my.t.s, qf, ks, scale);
        fb_scores<HD>(my.t.g, df, vs, 1.0f);
        __syncwarp();
        for (int e = lane; e < 16 * CAV_FB_BT; e += 32) {
            int r = e / CAV_FB_BT, c = e % CAV_FB_BT;
            float p = cav_fb_p(my.t.s[r][c], ls[16 * w + r], j0 + c < N);
            my.t.d[r][c] = cav_bf16_from_f32(cav_fb_ds(p, my.t.g[r][c], Ds[16 * w + r], scale));
        }
        __syncwarp();
        fb_accumulate<HD>(dq, my.t.d, ks);
    }
    fb_store<HD>(dqkv + off, ld, r0, N, hd, dq, my.o, lane);
}

size_t cav_cuda_flash_bf16_state_size(int B, int H, int N) {
    return (size_t)B * H * N;
}
size_t cav_cuda_flash_bf16_workspace(int B, int H, int N) {
    return (size_t)B * H * N;
}

/* the head dims the kernels are built for: HD = 32 or 64, and any smaller one zero-padded */
static int fb_head_dim(int C, int H) {
    int hd = C / H;
    if (hd > 64) {
        fprintf(stderr,
                "cuda backend: bf16 attention: head dim %d (C %d, H %d) is over 64, the kernels' most\n", hd,
                C, H);
        exit(3);
    }
    return hd;
}

void cav_cuda_flash_forward_bf16(float *out, float *lse, const float *qkv, int B, int N, int C, int H) {
    if (B <= 0 || N <= 0) return;
    int hd = fb_head_dim(C, H);
    float scale = 1.0f / sqrtf((float)hd);
    dim3 grid((unsigned)((N + CAV_FB_BQ - 1) / CAV_FB_BQ), (unsigned)(B * H));
    if (cav_fa_hd_pad(hd) == 64)
        fb_forward_kernel<64><<<grid, FB_THREADS>>>(out, lse, qkv, N, C, H, hd, scale);
    else
        fb_forward_kernel<32><<<grid, FB_THREADS>>>(out, lse, qkv, N, C, H, hd, scale);
    LAUNCHED();
}

void cav_cuda_flash_backward_bf16(float *dqkv, const float *dout, const float *qkv, const float *out,
                                  const float *lse, float *D, int B, int N, int C, int H) {
    if (B <= 0 || N <= 0) return;
    int hd = fb_head_dim(C, H);
    float scale = 1.0f / sqrtf((float)hd);
    dim3 gk((unsigned)((N + CAV_FB_BK - 1) / CAV_FB_BK), (unsigned)(B * H));
    dim3 gq((unsigned)((N + CAV_FB_BQ - 1) / CAV_FB_BQ), (unsigned)(B * H));
    cav_cuda_attention_rowdot(D, dout, out, B, N, C, H);
    if (cav_fa_hd_pad(hd) == 64) {
        fb_dkdv_kernel<64><<<gk, FB_THREADS>>>(dqkv, dout, qkv, lse, D, N, C, H, hd, scale);
        LAUNCHED();
        fb_dq_kernel<64><<<gq, FB_THREADS>>>(dqkv, dout, qkv, lse, D, N, C, H, hd, scale);
    } else {
        fb_dkdv_kernel<32><<<gk, FB_THREADS>>>(dqkv, dout, qkv, lse, D, N, C, H, hd, scale);
        LAUNCHED();
        fb_dq_kernel<32><<<gq, FB_THREADS>>>(dqkv, dout, qkv, lse, D, N, C, H, hd, scale);
    }
    LAUNCHED();
}
