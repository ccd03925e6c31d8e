/* tokens.c: the CPU reference of the token bookkeeping ops — masking gather, the decoder's un-shuffle,
 * concatenation, position/modality embedding, mean pooling — and of the patch layouts (im2col for the
 * patch-embedding convolutions, patchify for the MAE targets) and the sin-cos position table. */
#include <math.h>
#include <string.h>

#include "cpu.h"

/* -O2's "very cheap" vectorizer cost model leaves almost every elementwise loop here scalar; these loops are
 * memory-bound streams where vectors pay. Float reductions keep their order (no -fassociative-math), so
 * results do not change; errno and FP exception flags are never read by this project. */
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-math-errno", "no-trapping-math")

void cav_gather_tokens_forward(float *out, const float *inp, const int64_t *idx, int B, int N, int L, int C) {
#pragma omp parallel for collapse(2) if ((size_t)B * L * C > CAV_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int l = 0; l < L; l++)
            memcpy(out + ((size_t)b * L + l) * C, inp + ((size_t)b * N + idx[(size_t)b * L + l]) * C,
                   sizeof(float) * C);
}

void cav_gather_tokens_backward(float *dinp, const float *dout, const int64_t *idx, int B, int N, int L,
                                int C) {
    /* Indices within a sample may repeat in principle; one thread per sample keeps the += race-free. */
#pragma omp parallel for if ((size_t)B * L * C > CAV_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int l = 0; l < L; l++) {
            float *d = dinp + ((size_t)b * N + idx[(size_t)b * L + l]) * C;
            const float *s = dout + ((size_t)b * L + l) * C;
            for (int c = 0; c < C; c++) d[c] += s[c];
        }
}

void cav_mask_from_keep(float *mask, const int64_t *idx, int B, int N, int L) {
    for (size_t i = 0; i < (size_t)B * N; i++) mask[i] = 1;
    for (int b = 0; b < B; b++)
        for (int l = 0; l < L; l++) mask[(size_t)b * N + idx[(size_t)b * L + l]] = 0;
}

void cav_unshuffle_forward(float *out, const float *src, const int64_t *idx, const float *fill, int B, int N,
                           int L, int Ns, int off, int C) {
#pragma omp parallel for if ((size_t)B * N * C > CAV_PAR_MIN)
    for (int b = 0; b < B; b++) {
        for (int n = 0; n < N; n++) memcpy(out + ((size_t)b * N + n) * C, fill, sizeof(float) * C);
        for (int l = 0; l < L; l++)
            memcpy(out + ((size_t)b * N + idx[(size_t)b * L + l]) * C, src + ((size_t)b * Ns + off + l) * C,
                   sizeof(float) * C);
    }
}

void cav_unshuffle_backward(float *dsrc, float *dfill, const float *dout, const int64_t *idx, int B, int N,
                            int L, int Ns, int off, int C) {
    for (int b = 0; b < B; b++) {
        /* kept[n] marks the visible positions; the rest received the fill token. */
        unsigned char kept[N];
        memset(kept, 0, (size_t)N);
        for (int l = 0; l < L; l++) {
            int64_t n = idx[(size_t)b * L + l];
            kept[n] = 1;
            if (dsrc) {
                float *d = dsrc + ((size_t)b * Ns + off + l) * C;
                const float *s = dout + ((size_t)b * N + n) * C;
                for (int c = 0; c < C; c++) d[c] += s[c];
            }
        }
        if (dfill)
            for (int n = 0; n < N; n++)
                if (!kept[n]) {
                    const float *s = dout + ((size_t)b * N + n) * C;
                    for (int c = 0; c < C; c++) dfill[c] += s[c];
                }
    }
}

void cav_concat_forward(float *out, const float *a, const float *b, int B, int N1, int N2, int C) {
    for (int i = 0; i < B; i++) {
        memcpy(out + (size_t)i * (N1 + N2) * C, a + (size_t)i * N1 * C, sizeof(float) * N1 * C);
        memcpy(out + ((size_t)i * (N1 + N2) + N1) * C, b + (size_t)i * N2 * C, sizeof(float) * N2 * C);
    }
}

void cav_concat_backward(float *da, float *db, const float *dout, int B, int N1, int N2, int C) {
    for (int i = 0; i < B; i++) {
        if (da) cav_accumulate(da + (size_t)i * N1 * C, dout + (size_t)i * (N1 + N2) * C, (size_t)N1 * C);
        if (db)
            cav_accumulate(db + (size_t)i * N2 * C, dout + ((size_t)i * (N1 + N2) + N1) * C, (size_t)N2 * C);
    }
}

void cav_add_pos_forward(float *x, const float *pos, const float *mod, int B, int Ntot, int off, int N,
                         int C) {
#pragma omp parallel for collapse(2) if ((size_t)B * N * C > CAV_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int n = 0; n < N; n++) {
            float *r = x + ((size_t)b * Ntot + off + n) * C;
            const float *p = pos + (size_t)n * C;
            for (int c = 0; c < C; c++) {
                float t = r[c] + p[c];
                r[c] = t + mod[c];
            }
        }
}

void cav_add_pos_backward(float *dpos, float *dmod, const float *dx, int B, int Ntot, int off, int N, int C) {
    if (dpos)
#pragma omp parallel for if ((size_t)B * N * C > CAV_PAR_MIN)
        for (int n = 0; n < N; n++)
            for (int b = 0; b < B; b++) {
                const float *r = dx + ((size_t)b * Ntot + off + n) * C;
                for (int c = 0; c < C; c++) dpos[(size_t)n * C + c] += r[c];
            }
    if (dmod)
#pragma omp parallel for if ((size_t)B * N * C > CAV_PAR_MIN)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int b = 0; b < B; b++)
                for (int n = 0; n < N; n++) s += dx[((size_t)b * Ntot + off + n) * C + c];
            dmod[c] += (float)s;
        }
}

void cav_mean_tokens_forward(float *out, const float *inp, int B, int N, int C) {
#pragma omp parallel for if ((size_t)B * N * C > CAV_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int n = 0; n < N; n++) s += inp[((size_t)b * N + n) * C + c];
            out[(size_t)b * C + c] = (float)(s / N);
        }
}

void cav_mean_tokens_backward(float *dinp, const float *dout, int B, int N, int C) {
#pragma omp parallel for collapse(2) if ((size_t)B * N * C > CAV_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++) dinp[((size_t)b * N + n) * C + c] += dout[(size_t)b * C + c] / N;
}

void cav_patchify_audio(float *out, const float *a, int B, int T, int F) {
    int gf = F / 16, gt = T / 16, L = gf * gt;
#pragma omp parallel for collapse(2) if ((size_t)B * L * 256 > CAV_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int k = 0; k < L; k++) {
            int f = k / gt, t = k % gt;
            float *o = out + ((size_t)b * L + k) * 256;
            for (int p = 0; p < 16; p++)     /* frequency offset */
                for (int q = 0; q < 16; q++) /* time offset */
                    o[p * 16 + q] = a[((size_t)b * T + t * 16 + q) * F + f * 16 + p];
        }
}

void cav_patchify_video(float *out, const float *v, int B, int S) {
    int g = S / 16, L = g * g;
#pragma omp parallel for collapse(2) if ((size_t)B * L * 768 > CAV_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int k = 0; k < L; k++) {
            int r = k / g, c = k % g;
            float *o = out + ((size_t)b * L + k) * 768;
            for (int p = 0; p < 16; p++)
                for (int q = 0; q < 16; q++)
                    for (int ch = 0; ch < 3; ch++)
                        o[(p * 16 + q) * 3 + ch] =
                            v[(((size_t)b * 3 + ch) * S + r * 16 + p) * S + c * 16 + q];
        }
}

void cav_im2col_video(float *out, const float *v, int B, int S) {
    int g = S / 16, L = g * g;
#pragma omp parallel for collapse(2) if ((size_t)B * L * 768 > CAV_PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int k = 0; k < L; k++) {
            int r = k / g, c = k % g;
            float *o = out + ((size_t)b * L + k) * 768;
            for (int ch = 0; ch < 3; ch++)
                for (int p = 0; p < 16; p++)
                    memcpy(o + ch * 256 + p * 16, v + (((size_t)b * 3 + ch) * S + r * 16 + p) * S + c * 16,
                           sizeof(float) * 16);
        }
}

void cav_sincos_pos_2d(float *out, int D, int gh, int gw) {
    int q = D / 4; /* frequencies per sin/cos block */
    for (int i = 0; i < gh; i++)
        for (int j = 0; j < gw; j++) {
            float *o = out + ((size_t)i * gw + j) * D;
            for (int m = 0; m < q; m++) {
                /* numpy: omega = arange(q) / q; omega = 1 / 10000**omega; out = pos * omega */
                double om = 1.0 / pow(10000.0, (double)m / (double)q);
                double xj = (double)j * om, xi = (double)i * om;
                o[m] = (float)sin(xj);
                o[q + m] = (float)cos(xj);
                o[2 * q + m] = (float)sin(xi);
                o[3 * q + m] = (float)cos(xi);
            }
        }
}
