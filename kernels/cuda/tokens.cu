/* tokens.cu: the token bookkeeping and patch layouts on the GPU, mirroring kernels/cpu/tokens.c — masking
 * gather and its scatter, the MAE mask, the decoder's un-shuffle, concatenation, position/modality
 * embedding, mean pooling, patchify and im2col. Contracts in kernels.h; indices idx[B,L] are int64 in device
 * memory. Wherever several values meet in one output (a gather's backward with repeated indices, the
 * position table's gradient over the batch, the pooling) one thread owns the output and adds in the CPU's
 * order, so the bits are the CPU's and the same on every run; the sums over many rows (the modality
 * embedding, the mask token) are reduce.h's column sums. */
#include "cuda_ops.h"

static __global__ void gather_kernel(float *out, const float *inp, const int64_t *idx, int B, int N, int L,
                                     int C) {
    CAV_FOR_EACH(i, (size_t)B * L * C) {
        size_t bl = i / C, b = bl / L;
        out[i] = inp[((size_t)b * N + idx[bl]) * C + i % C];
    }
}
/* one thread per (b, c), the kept tokens in order: repeated indices add up as on the CPU */
static __global__ void gather_backward_kernel(float *dinp, const float *dout, const int64_t *idx, int B,
                                              int N, int L, int C) {
    CAV_FOR_EACH(i, (size_t)B * C) {
        size_t b = i / C, c = i % C;
        for (int l = 0; l < L; l++)
            dinp[((size_t)b * N + idx[b * L + l]) * C + c] += dout[((size_t)b * L + l) * C + c];
    }
}
void cav_cuda_gather_tokens_forward(float *out, const float *inp, const int64_t *idx, int B, int N, int L,
                                    int C) {
    if ((size_t)B * L * C == 0) return;
    gather_kernel<<<cav_grid((size_t)B * L * C, 256), 256>>>(out, inp, idx, B, N, L, C);
    LAUNCHED();
}
void cav_cuda_gather_tokens_backward(float *dinp, const float *dout, const int64_t *idx, int B, int N, int L,
                                     int C) {
    if ((size_t)B * L * C == 0) return;
    gather_backward_kernel<<<cav_grid((size_t)B * C, 128), 128>>>(dinp, dout, idx, B, N, L, C);
    LAUNCHED();
}

static __global__ void fill_kernel(float *x, float v, size_t n) {
    CAV_FOR_EACH(i, n) x[i] = v;
}
static __global__ void unmask_kernel(float *mask, const int64_t *idx, int B, int N, int L) {
    CAV_FOR_EACH(i, (size_t)B * L) mask[(i / L) * N + idx[i]] = 0; /* repeated indices store the same 0 */
}
void cav_cuda_mask_from_keep(float *mask, const int64_t *idx, int B, int N, int L) {
    if ((size_t)B * N == 0) return;
    fill_kernel<<<cav_grid((size_t)B * N, 256), 256>>>(mask, 1.0f, (size_t)B * N);
    LAUNCHED();
    if ((size_t)B * L == 0) return;
    unmask_kernel<<<cav_grid((size_t)B * L, 256), 256>>>(mask, idx, B, N, L);
    LAUNCHED();
}

static __global__ void fill_rows_kernel(float *out, const float *fill, size_t rows, int C) {
    CAV_FOR_EACH(i, rows * C) out[i] = fill[i % C];
}
/* one thread per (b, c), the visible tokens in order: a repeated index keeps the last, as the CPU's memcpy */
static __global__ void unshuffle_kernel(float *out, const float *src, const int64_t *idx, int B, int N, int L,
                                        int Ns, int off, int C) {
    CAV_FOR_EACH(i, (size_t)B * C) {
        size_t b = i / C, c = i % C;
        for (int l = 0; l < L; l++) out[(b * N + idx[b * L + l]) * C + c] = src[(b * Ns + off + l) * C + c];
    }
}
static __global__ void unshuffle_backward_kernel(float *dsrc, const float *dout, const int64_t *idx, int B,
                                                 int N, int L, int Ns, int off, int C) {
    CAV_FOR_EACH(i, (size_t)B * L * C) {
        size_t bl = i / C, b = bl / L, l = bl % L, c = i % C;
        dsrc[(b * Ns + off + l) * C + c] += dout[(b * N + idx[bl]) * C + c];
    }
}
void cav_cuda_unshuffle_forward(float *out, const float *src, const int64_t *idx, const float *fill, int B,
                                int N, int L, int Ns, int off, int C) {
    if ((size_t)B * N * C == 0) return;
    fill_rows_kernel<<<cav_grid((size_t)B * N * C, 256), 256>>>(out, fill, (size_t)B * N, C);
    LAUNCHED();
    if (L == 0) return;
    unshuffle_kernel<<<cav_grid((size_t)B * C, 128), 128>>>(out, src, idx, B, N, L, Ns, off, C);
    LAUNCHED();
}
void cav_cuda_unshuffle_backward(float *dsrc, float *dfill, const float *dout, const int64_t *idx, int B,
                                 int N, int L, int Ns, int off, int C) {
    if ((size_t)B * N * C == 0) return;
    if (dsrc && L > 0) {
        unshuffle_backward_kernel<<<cav_grid((size_t)B * L * C, 256), 256>>>(dsrc, dout, idx, B, N, L, Ns,
                                                                             off, C);
        LAUNCHED();
    }
    if (dfill) {
        /* the fill token sits where the MAE mask is 1 */
        float *mask = (float *)cav_cuda_scratch(1, sizeof(float) * B * N);
        cav_cuda_mask_from_keep(mask, idx, B, N, L);
        cav_cuda_colsum(dfill, dout, mask, B * N, C, B * N, B * N, 0);
    }
}

static __global__ void concat_kernel(float *out, const float *a, const float *b, int B, int N1, int N2,
                                     int C) {
    size_t row = (size_t)(N1 + N2) * C;
    CAV_FOR_EACH(i, (size_t)B * row) {
        size_t s = i / row, j = i % row;
        out[i] = j < (size_t)N1 * C ? a[s * N1 * C + j] : b[s * N2 * C + j - (size_t)N1 * C];
    }
}
static __global__ void concat_backward_kernel(float *da, float *db, const float *dout, int B, int N1, int N2,
                                              int C) {
    size_t row = (size_t)(N1 + N2) * C;
    CAV_FOR_EACH(i, (size_t)B * row) {
        size_t s = i / row, j = i % row;
        if (j < (size_t)N1 * C) {
            if (da) da[s * N1 * C + j] += dout[i];
        } else if (db)
            db[s * N2 * C + j - (size_t)N1 * C] += dout[i];
    }
}
void cav_cuda_concat_forward(float *out, const float *a, const float *b, int B, int N1, int N2, int C) {
    if ((size_t)B * (N1 + N2) * C == 0) return;
    concat_kernel<<<cav_grid((size_t)B * (N1 + N2) * C, 256), 256>>>(out, a, b, B, N1, N2, C);
    LAUNCHED();
}
void cav_cuda_concat_backward(float *da, float *db, const float *dout, int B, int N1, int N2, int C) {
    if ((size_t)B * (N1 + N2) * C == 0 || (!da && !db)) return;
    concat_backward_kernel<<<cav_grid((size_t)B * (N1 + N2) * C, 256), 256>>>(da, db, dout, B, N1, N2, C);
    LAUNCHED();
}

static __global__ void add_pos_kernel(float *x, const float *pos, const float *mod, int B, int Ntot, int off,
                                      int N, int C) {
    CAV_FOR_EACH(i, (size_t)B * N * C) {
        size_t bn = i / C, b = bn / N, n = bn % N, c = i % C;
        float *r = x + (b * Ntot + off + n) * C + c;
        float t = *r + pos[n * C + c]; /* the position table first, then the modality, as PyTorch */
        *r = t + mod[c];
    }
}
/* dpos[n,c] += dx[b, off+n, c] for b in order: one thread per (n, c), float adds as the CPU's */
static __global__ void add_pos_backward_kernel(float *dpos, const float *dx, int B, int Ntot, int off, int N,
                                               int C) {
    CAV_FOR_EACH(i, (size_t)N * C) {
        size_t n = i / C, c = i % C;
        for (int b = 0; b < B; b++) dpos[i] += dx[((size_t)b * Ntot + off + n) * C + c];
    }
}
void cav_cuda_add_pos_forward(float *x, const float *pos, const float *mod, int B, int Ntot, int off, int N,
                              int C) {
    if ((size_t)B * N * C == 0) return;
    add_pos_kernel<<<cav_grid((size_t)B * N * C, 256), 256>>>(x, pos, mod, B, Ntot, off, N, C);
    LAUNCHED();
}
void cav_cuda_add_pos_backward(float *dpos, float *dmod, const float *dx, int B, int Ntot, int off, int N,
                               int C) {
    if ((size_t)B * N * C == 0) return;
    if (dpos) {
        add_pos_backward_kernel<<<cav_grid((size_t)N * C, 256), 256>>>(dpos, dx, B, Ntot, off, N, C);
        LAUNCHED();
    }
    if (dmod) cav_cuda_colsum(dmod, dx, NULL, B * N, C, N, Ntot, off);
}

/* one thread per (b, c), the tokens in order, in double as the CPU's */
static __global__ void mean_tokens_kernel(float *out, const float *inp, int B, int N, int C) {
    CAV_FOR_EACH(i, (size_t)B * C) {
        size_t b = i / C, c = i % C;
        double s = 0;
        for (int n = 0; n < N; n++) s += inp[(b * N + n) * C + c];
        out[i] = (float)(s / N);
    }
}
static __global__ void mean_tokens_backward_kernel(float *dinp, const float *dout, int B, int N, int C) {
    CAV_FOR_EACH(i, (size_t)B * N * C) dinp[i] += dout[(i / ((size_t)N * C)) * C + i % C] / N;
}
void cav_cuda_mean_tokens_forward(float *out, const float *inp, int B, int N, int C) {
    if ((size_t)B * C == 0) return;
    mean_tokens_kernel<<<cav_grid((size_t)B * C, 128), 128>>>(out, inp, B, N, C);
    LAUNCHED();
}
void cav_cuda_mean_tokens_backward(float *dinp, const float *dout, int B, int N, int C) {
    if ((size_t)B * N * C == 0) return;
    mean_tokens_backward_kernel<<<cav_grid((size_t)B * N * C, 256), 256>>>(dinp, dout, B, N, C);
    LAUNCHED();
}

/* Patch layouts (kernels/cpu/cpu.h): one thread per output element. */
static __global__ void patchify_audio_kernel(float *out, const float *a, int B, int T, int F) {
    int gt = T / 16, L = (F / 16) * gt;
    CAV_FOR_EACH(i, (size_t)B * L * 256) {
        size_t bk = i / 256, b = bk / L;
        int k = (int)(bk % L), f = k / gt, t = k % gt, p = (int)(i % 256) / 16, q = (int)(i % 16);
        out[i] = a[(b * T + t * 16 + q) * F + f * 16 + p];
    }
}
static __global__ void patchify_video_kernel(float *out, const float *v, int B, int S, int conv) {
    int g = S / 16, L = g * g;
    CAV_FOR_EACH(i, (size_t)B * L * 768) {
        size_t bk = i / 768, b = bk / L;
        int k = (int)(bk % L), r = k / g, c = k % g, e = (int)(i % 768), ch, p, q;
        if (conv) /* im2col: ch*256 + p*16 + q */
            ch = e / 256, p = e % 256 / 16, q = e % 16;
        else /* MAE target: (p*16 + q)*3 + ch */
            ch = e % 3, p = e / 3 / 16, q = e / 3 % 16;
        out[i] = v[((b * 3 + ch) * S + r * 16 + p) * S + c * 16 + q];
    }
}
void cav_cuda_patchify_audio(float *out, const float *a, int B, int T, int F) {
    size_t n = (size_t)B * (F / 16) * (T / 16) * 256;
    if (!n) return;
    patchify_audio_kernel<<<cav_grid(n, 256), 256>>>(out, a, B, T, F);
    LAUNCHED();
}
void cav_cuda_patchify_video(float *out, const float *v, int B, int S) {
    size_t n = (size_t)B * (S / 16) * (S / 16) * 768;
    if (!n) return;
    patchify_video_kernel<<<cav_grid(n, 256), 256>>>(out, v, B, S, 0);
    LAUNCHED();
}
void cav_cuda_im2col_video(float *out, const float *v, int B, int S) {
    size_t n = (size_t)B * (S / 16) * (S / 16) * 768;
    if (!n) return;
    patchify_video_kernel<<<cav_grid(n, 256), 256>>>(out, v, B, S, 1);
    LAUNCHED();
}
