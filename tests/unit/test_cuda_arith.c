/* test_cuda_arith.c: the CUDA backend's reduction orders (kernels/cuda/reduce.h), run on the host one lane
 * after the other exactly as a CUDA block runs them, against the CPU reference ops of kernels/cpu on random
 * inputs: LayerNorm, softmax, the column sums of the parameter gradients, L2 normalisation, the contrastive
 * loss and its gradient, norm-pix, masked MSE, BCE and soft CE. An error in the GPU's summation order or in
 * the arithmetic around it shows here, on a machine without a GPU. The sums are in double on both sides
 * (float for softmax, as the CPU's), so the results agree to rel 1e-6 (measured: ~1e-7 at worst).
 * And the fused attention (kernels/cuda/flash.h's host drivers, the kernels' tiles one thread after the
 * other) against the CPU's attention at the models' shapes, forward and all of dqkv (FA_TOL below); and the
 * bf16 tensor-core attention (kernels/cuda/flash_bf16.h's host drivers) against the CPU's bf16 op
 * (FB_* below). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "cuda/flash.h"
#include "cuda/flash_bf16.h"
#include "cuda/reduce.h"
#include "harness.h"

#define TOL 1e-6

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float urand(void) { /* [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
}
static float *rnd(size_t n, float scale) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = scale * urand();
    return x;
}
static float *zeros(size_t n) {
    return calloc(n ? n : 1, sizeof(float));
}

/* max |got - want| relative to max |want|, reported on stderr */
static double rel(const char *what, const float *got, const float *want, size_t n) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++)
        d = fmax(d, fabs((double)got[i] - want[i])), m = fmax(m, fabs((double)want[i]));
    double r = m > 0 ? d / m : d;
    fprintf(stderr, "  %-28s rel %.3g\n", what, r);
    return r;
}
static double rel1(const char *what, double got, double want) {
    float g = (float)got, w = (float)want;
    return rel(what, &g, &w, 1);
}

/* the lanes of one block, then its tree */
#define TREE(expr)                                                                                           \
    do {                                                                                                     \
        for (int l = 0; l < CAV_RD_T; l++) sh[l] = (expr);                                                   \
    } while (0)

/* column sum into out[C] as dense.cu's two kernels: chunk partials, then their ordered total */
static void colsum_host(float *out, const float *x, const float *keep, int rows, int C, int n, int ntot,
                        int off) {
    int k = cav_col_chunks(rows);
    double *part = malloc(sizeof(double) * k * C);
    for (int j = 0; j < k; j++)
        for (int c = 0; c < C; c++)
            part[(size_t)j * C + c] = cav_col_chunk(x, keep, rows, C, n, ntot, off, c, j);
    for (int c = 0; c < C; c++) out[c] += (float)cav_col_total(part, k, C, c);
    free(part);
}

static void test_layernorm(void) {
    static const int shapes[][2] = {{3, 5}, {7, 768}, {130, 1000}, {200, 64}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], C = shapes[s][1];
        size_t n = (size_t)M * C;
        float *x = rnd(n, 2), *w = rnd(C, 1), *b = rnd(C, 0.5f), *dy = rnd(n, 1);
        for (size_t i = 0; i < n; i++) x[i] += 0.7f; /* a mean away from 0 */
        float *ro = zeros(n), *rm = zeros(M), *rr = zeros(M), *ho = zeros(n), *hm = zeros(M), *hr = zeros(M);
        cav_layernorm_forward(ro, rm, rr, x, w, b, M, C);
        double sh[CAV_RD_T];
        for (int m = 0; m < M; m++) { /* layernorm_forward_kernel */
            const float *xr = x + (size_t)m * C;
            TREE(cav_rd_sum(xr, C, l));
            double mu = cav_rd_tree_host(sh) / C;
            TREE(cav_rd_sqdev(xr, C, mu, l));
            double ss = cav_rd_tree_host(sh);
            float mf = (float)mu, rs = (float)(1.0 / sqrt(ss / C + (double)CAV_LN_EPS));
            for (int c = 0; c < C; c++) ho[(size_t)m * C + c] = (xr[c] - mf) * rs * w[c] + b[c];
            hm[m] = mf, hr[m] = rs;
        }
        CHECK(rel("layernorm out", ho, ro, n) <= TOL);
        CHECK(rel("layernorm mean", hm, rm, M) <= TOL && rel("layernorm rstd", hr, rr, M) <= TOL);
        float *rdx = zeros(n), *rdw = zeros(C), *rdb = zeros(C), *hdx = zeros(n), *hdw = zeros(C),
              *hdb = zeros(C);
        cav_layernorm_backward(rdx, rdw, rdb, dy, x, w, rm, rr, M, C);
        for (int m = 0; m < M; m++) { /* layernorm_backward_kernel */
            size_t o = (size_t)m * C;
            double a[CAV_RD_T], bs[CAV_RD_T];
            for (int l = 0; l < CAV_RD_T; l++)
                cav_rd_ln_bwd(x + o, dy + o, w, rm[m], rr[m], C, l, &a[l], &bs[l]);
            float ma = (float)(cav_rd_tree_host(a) / C), mb = (float)(cav_rd_tree_host(bs) / C);
            for (int c = 0; c < C; c++) {
                float xh = (x[o + c] - rm[m]) * rr[m];
                hdx[o + c] += rr[m] * (dy[o + c] * w[c] - ma - xh * mb);
            }
        }
        int k = cav_col_chunks(M); /* cav_cuda_colsum_ln */
        double *part = malloc(sizeof(double) * k * C);
        for (int j = 0; j < k; j++)
            for (int c = 0; c < C; c++) part[(size_t)j * C + c] = cav_col_chunk_ln(dy, x, rm, rr, M, C, c, j);
        for (int c = 0; c < C; c++) hdw[c] += (float)cav_col_total(part, k, C, c);
        free(part);
        colsum_host(hdb, dy, NULL, M, C, M, M, 0);
        CHECK(rel("layernorm dinp", hdx, rdx, n) <= TOL);
        CHECK(rel("layernorm dw", hdw, rdw, C) <= TOL && rel("layernorm db", hdb, rdb, C) <= TOL);
        void *f[] = {x, w, b, dy, ro, rm, rr, ho, hm, hr, rdx, rdw, rdb, hdx, hdw, hdb};
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) free(f[i]);
    }
}

static void test_softmax(void) {
    static const int shapes[][2] = {{4, 3}, {9, 257}, {5, 700}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int M = shapes[s][0], N = shapes[s][1];
        size_t n = (size_t)M * N;
        float *x = rnd(n, 6), *dy = rnd(n, 1), *ry = zeros(n), *hy = zeros(n), *rdx = zeros(n),
              *hdx = zeros(n);
        cav_softmax_forward(ry, x, M, N);
        memcpy(hy, x, sizeof(float) * n);
        float sh[CAV_RD_T];
        for (int m = 0; m < M; m++) { /* attention.cu's softmax_rows_kernel, in place */
            float *y = hy + (size_t)m * N;
            TREE(cav_rd_max(y, N, l));
            float mx = cav_rd_tree_host_max(sh);
            TREE(cav_rd_exp_sum(y, y, N, mx, l));
            float sum = cav_rd_tree_host_f(sh);
            for (int i = 0; i < N; i++) y[i] /= sum;
        }
        CHECK(rel("softmax", hy, ry, n) <= TOL);
        /* the backward with scale 1 against the CPU's softmax backward (which accumulates into zeros) */
        cav_softmax_backward(rdx, dy, ry, M, N);
        memcpy(hdx, dy, sizeof(float) * n);
        for (int m = 0; m < M; m++) { /* softmax_rows_backward_kernel */
            float *g = hdx + (size_t)m * N;
            const float *y = ry + (size_t)m * N;
            TREE(cav_rd_dot_f(g, y, N, l));
            float d = cav_rd_tree_host_f(sh);
            for (int i = 0; i < N; i++) g[i] = y[i] * (g[i] - d) * 1.0f;
        }
        CHECK(rel("softmax backward", hdx, rdx, n) <= TOL);
        free(x), free(dy), free(ry), free(hy), free(rdx), free(hdx);
    }
}

/* the column sums: the Linear bias gradient, the modality embedding's, the mask token's */
static void test_column_sums(void) {
    int M = 301, OC = 37, IC = 3;
    float *dout = rnd((size_t)M * OC, 1), *x = rnd((size_t)M * IC, 1), *w = rnd((size_t)OC * IC, 1);
    float *rdb = rnd(OC, 1), *hdb = malloc(sizeof(float) * OC); /* accumulate onto a nonzero start */
    memcpy(hdb, rdb, sizeof(float) * OC);
    cav_linear_backward(NULL, NULL, rdb, dout, x, w, M, IC, OC);
    colsum_host(hdb, dout, NULL, M, OC, M, M, 0);
    CHECK(rel("linear db", hdb, rdb, OC) <= TOL);
    int B = 5, Ntot = 90, off = 7, N = 71, C = 24;
    float *dx = rnd((size_t)B * Ntot * C, 1), *rdm = zeros(C), *hdm = zeros(C);
    cav_add_pos_backward(NULL, rdm, dx, B, Ntot, off, N, C);
    colsum_host(hdm, dx, NULL, B * N, C, N, Ntot, off);
    CHECK(rel("add_pos dmod", hdm, rdm, C) <= TOL);
    int L = 20, Ns = 30, uo = 4;
    int64_t *idx = malloc(sizeof(int64_t) * B * L);
    for (int b = 0; b < B; b++)
        for (int l = 0; l < L; l++)
            idx[b * L + l] = (l * 7 + b) % Ntot; /* distinct per sample: 7 and 90 coprime */
    float *rdf = zeros(C), *hdf = zeros(C), *mask = zeros((size_t)B * Ntot);
    cav_unshuffle_backward(NULL, rdf, dx, idx, B, Ntot, L, Ns, uo, C);
    cav_mask_from_keep(mask, idx, B, Ntot, L); /* tokens.cu: the fill sits where the mask is 1 */
    colsum_host(hdf, dx, mask, B * Ntot, C, B * Ntot, B * Ntot, 0);
    CHECK(rel("unshuffle dfill", hdf, rdf, C) <= TOL);
    free(dout), free(x), free(w), free(rdb), free(hdb), free(dx), free(rdm), free(hdm), free(idx), free(rdf);
    free(hdf), free(mask);
}

static void test_l2norm_contrastive(void) {
    static const int shapes[][2] = {{1, 8}, {6, 768}, {33, 300}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int B = shapes[s][0], C = shapes[s][1];
        size_t n = (size_t)B * C;
        float *x = rnd(n, 1), *v0 = rnd(n, 1), *dy = rnd(n, 1);
        float *ra = zeros(n), *rn = zeros(B), *ha = zeros(n), *hn = zeros(B), *rv = zeros(n), *rvn = zeros(B);
        for (size_t i = 0; i < n; i++) v0[i] = x[i] + 0.8f * v0[i]; /* some hits */
        cav_l2norm_forward(ra, rn, x, B, C);
        cav_l2norm_forward(rv, rvn, v0, B, C);
        double sh[CAV_RD_T];
        for (int b = 0; b < B; b++) { /* loss.cu's l2norm_kernel */
            const float *xr = x + (size_t)b * C;
            TREE(cav_rd_dot(xr, xr, C, l));
            float nb = (float)sqrt(cav_rd_tree_host(sh)), d = nb > 1e-12f ? nb : 1e-12f;
            hn[b] = nb;
            for (int c = 0; c < C; c++) ha[(size_t)b * C + c] = xr[c] / d;
        }
        CHECK(rel("l2norm", ha, ra, n) <= TOL && rel("l2norm norm", hn, rn, B) <= TOL);
        float *rdx = zeros(n), *hdx = zeros(n);
        cav_l2norm_backward(rdx, dy, ra, rn, B, C);
        for (int b = 0; b < B; b++) { /* l2norm_backward_kernel */
            const float *y = ra + (size_t)b * C, *g = dy + (size_t)b * C;
            TREE(cav_rd_dot(y, g, C, l));
            double d = cav_rd_tree_host(sh);
            for (int c = 0; c < C; c++) hdx[(size_t)b * C + c] += (float)((g[c] - y[c] * d) / rn[b]);
        }
        CHECK(rel("l2norm backward", hdx, rdx, n) <= TOL);
        /* contrastive, both directions, on the normalised rows */
        double *work = malloc(sizeof(double) * cav_contrastive_workspace(B));
        double *S = malloc(sizeof(double) * B * B), *dS = calloc((size_t)B * B, sizeof(double));
        double *lse = malloc(sizeof(double) * B);
        for (int i = 0; i < B; i++) /* similarity_kernel */
            for (int j = 0; j < B; j++) {
                TREE(cav_rd_dot(ra + (size_t)i * C, rv + (size_t)j * C, C, l));
                S[(size_t)i * B + j] = cav_con_sim(cav_rd_tree_host(sh), CAV_CONTRAST_TAU);
            }
        for (int bidir = 0; bidir < 2; bidir++) {
            float racc = 0, ref = cav_contrastive_forward(&racc, ra, rv, B, C, bidir, work);
            int dirs = bidir ? 2 : 1;
            double nce = 0, hits = 0;
            for (int t = 0; t < dirs; t++) { /* con_lse_kernel, con_diag_kernel */
                double nd;
                int hit;
                for (int j = 0; j < B; j++) lse[j] = cav_con_lse(S, B, j, t);
                cav_con_diag(S, lse, B, t, &nd, &hit);
                nce += -nd / B, hits += (double)hit / B;
            }
            CHECK(rel1(bidir ? "contrastive (bidirectional)" : "contrastive", nce / dirs, ref) <= TOL);
            CHECK((float)(hits / dirs) == racc);
            /* the gradient */
            float *rda = zeros(n), *rdv = zeros(n), *hda = zeros(n), *hdv = zeros(n);
            cav_contrastive_backward(rda, rdv, 0.7f, ra, rv, B, C, bidir, work);
            memset(dS, 0, sizeof(double) * B * B);
            for (int t = 0; t < dirs; t++) { /* con_ds_kernel */
                for (int j = 0; j < B; j++) lse[j] = cav_con_lse(S, B, j, t);
                for (int i = 0; i < B; i++)
                    for (int j = 0; j < B; j++) {
                        double p = exp(S[(size_t)i * B + j] - lse[t ? i : j]);
                        dS[(size_t)i * B + j] += (double)0.7f / dirs * (p - (i == j)) / B;
                    }
            }
            for (int r = 0; r < B; r++) /* con_grad_kernel, both ways */
                for (int c = 0; c < C; c++)
                    for (int o = 0; o < B; o++) {
                        hda[(size_t)r * C + c] +=
                            (float)(dS[(size_t)r * B + o] / CAV_CONTRAST_TAU * rv[(size_t)o * C + c]);
                        hdv[(size_t)r * C + c] +=
                            (float)(dS[(size_t)o * B + r] / CAV_CONTRAST_TAU * ra[(size_t)o * C + c]);
                    }
            CHECK(rel("contrastive da", hda, rda, n) <= TOL && rel("contrastive dv", hdv, rdv, n) <= TOL);
            free(rda), free(rdv), free(hda), free(hdv);
        }
        free(work), free(S), free(dS), free(lse);
        free(x), free(v0), free(dy), free(ra), free(rn), free(ha), free(hn), free(rv), free(rvn), free(rdx),
            free(hdx);
    }
}

static void test_mae_losses(void) {
    int M = 70, P = 768;
    size_t n = (size_t)M * P;
    float *t = rnd(n, 3), *h = malloc(sizeof(float) * n), *pred = rnd(n, 1), *mask = zeros(M);
    memcpy(h, t, sizeof(float) * n);
    cav_normpix(t, M, P, 1e-6f);
    double sh[CAV_RD_T];
    for (int m = 0; m < M; m++) { /* loss.cu's normpix_kernel */
        float *r = h + (size_t)m * P;
        TREE(cav_rd_sum(r, P, l));
        double mu = cav_rd_tree_host(sh) / P;
        TREE(cav_rd_sqdev(r, P, mu, l));
        double ss = cav_rd_tree_host(sh);
        float mf = (float)mu, sd = sqrtf((float)(ss / (P - 1)) + 1e-6f);
        for (int p = 0; p < P; p++) r[p] = (r[p] - mf) / sd;
    }
    CHECK(rel("normpix", h, t, n) <= TOL);
    for (int m = 0; m < M; m++) mask[m] = (m * 5 + 1) % 4 != 0; /* three quarters masked */
    double rnum, rden, row[70];
    cav_masked_mse_sums(pred, t, mask, M, P, &rnum, &rden);
    for (int m = 0; m < M; m++) { /* mse_rows_kernel */
        if (mask[m] == 0) {
            row[m] = 0;
            continue;
        }
        TREE(cav_rd_sqdiff(pred + (size_t)m * P, t + (size_t)m * P, P, l));
        row[m] = (double)(float)(cav_rd_tree_host(sh) / P) * mask[m];
    }
    TREE(cav_rd_sum_d(row, M, l)); /* mse_total_kernel */
    double num = cav_rd_tree_host(sh);
    TREE(cav_rd_sum(mask, M, l));
    double den = cav_rd_tree_host(sh);
    CHECK(rel1("masked mse num", num, rnum) <= TOL && den == rden);
    free(t), free(h), free(pred), free(mask);
}

static void test_classification_losses(void) {
    int B = 13, K = 527;
    size_t n = (size_t)B * K;
    float *x = rnd(n, 4), *y = rnd(n, 0.5f);
    for (size_t i = 0; i < n; i++) y[i] = y[i] + 0.5f; /* targets in [0, 1] */
    double sh[CAV_RD_T];
    TREE(cav_rd_bce(x, y, n, l)); /* bce_kernel */
    CHECK(rel1("bce", (float)(cav_rd_tree_host(sh) / ((double)B * K)), cav_bce_logits_forward(x, y, B, K)) <=
          TOL);
    double *row = malloc(sizeof(double) * B);
    for (int b = 0; b < B; b++) row[b] = cav_soft_ce_row(x + (size_t)b * K, y + (size_t)b * K, K);
    TREE(cav_rd_sum_d(row, B, l)); /* soft_ce_rows_kernel, sum_kernel */
    CHECK(rel1("soft ce", (float)(cav_rd_tree_host(sh) / B), cav_soft_ce_forward(x, y, B, K)) <= TOL);
    free(x), free(y), free(row);
}

/* ---- the fused attention (flash.h's host drivers) against the CPU's, at the models' shapes --------------
 */

/* The fused attention sums in float in index order, with the online softmax's rescales (one per key tile:
 * up to 23 at N = 708), where the CPU sums in OpenBLAS's blocked order after one max: each side's rounding is
 * about sqrt(N) float ulps of the sum of |terms|, and an output that is an average of cancelling values is
 * smaller than that sum, so relative to the largest output the difference can be ten times more. Measured
 * 2.1e-6 at worst (out of the base decoder, N = 708, hd 32); a dropped rescale or a missing term gives 1e-2
 * or more. */
#define FA_TOL 1e-5

/* the [.., hd] slices of head h of every token of x[B,N,ld] (at offset off), side by side in dst */
static void head_slice(float *dst, const float *x, int B, int N, int ld, int off, int h, int hd) {
    for (size_t r = 0; r < (size_t)B * N; r++)
        memcpy(dst + r * hd, x + r * ld + off + (size_t)h * hd, sizeof(float) * hd);
}

/* B samples of N tokens, C channels, H heads; the heads listed (all when nh is 0) are run on the host and
 * compared; spread scales q and k (the spread of the scores). Returns the worst relative difference. */
static double flash_case(int B, int N, int C, int H, float spread, const int *heads, int nh) {
    int hd = C / H;
    size_t nx = (size_t)B * N * C;
    float *qkv = rnd(3 * nx, 1), *dO = rnd(nx, 1), *ro = zeros(nx), *att = zeros((size_t)B * H * N * N);
    for (size_t r = 0; r < (size_t)B * N; r++)
        for (int c = 0; c < 2 * C; c++) qkv[r * 3 * C + c] *= spread;
    float *rdq = zeros(3 * nx), *work = zeros(cav_attention_workspace(N));
    cav_attention_forward(ro, att, qkv, B, N, C, H);
    cav_attention_backward(rdq, dO, qkv, att, work, B, N, C, H);
    float *ho = zeros(nx), *hdq = zeros(3 * nx), *lse = zeros((size_t)B * H * N),
          *D = zeros((size_t)B * H * N);
    size_t ns = (size_t)B * N * hd;
    float *a = zeros(ns), *r = zeros(ns);
    double worst = 0;
    char what[64];
    for (int k = 0; k < (nh ? nh : H); k++) {
        int h = nh ? heads[k] : k;
        for (int b = 0; b < B; b++) cav_fa_forward_host(ho, lse, qkv, b, h, N, C, H);
        for (int b = 0; b < B; b++) cav_fa_backward_host(hdq, dO, qkv, ho, lse, D, b, h, N, C, H);
        static const char *names[] = {"out", "dq", "dk", "dv"};
        for (int q = 0; q < 4; q++) {
            const float *got = q ? hdq : ho, *want = q ? rdq : ro;
            int ld = q ? 3 * C : C, off = q ? (q - 1) * C : 0;
            head_slice(a, got, B, N, ld, off, h, hd), head_slice(r, want, B, N, ld, off, h, hd);
            snprintf(what, sizeof what, "flash %d %d %d %d h%d %s", B, N, C, H, h, names[q]);
            worst = fmax(worst, rel(what, a, r, ns));
        }
    }
    free(qkv), free(dO), free(ro), free(att), free(rdq), free(work), free(ho), free(hdq), free(lse), free(D);
    free(a), free(r);
    return worst;
}

static void test_flash_attention(void) {
    static const int two[] = {0, -1}; /* the first and the last head */
    struct {
        int B, N, C, H, nh;
        float spread;
    } cases[] = {
        {2, 177, 192, 3, 0, 1},  /* tiny encoder, joint layer of pretraining (128 audio + 49 video kept) */
        {2, 49, 192, 3, 0, 4},   /* tiny, the kept video tokens; peaked scores */
        {1, 708, 128, 4, 2, 1},  /* tiny decoder (hd 32), all tokens */
        {1, 708, 768, 12, 2, 1}, /* base encoder, fine-tuning's joint layer */
        {1, 512, 768, 12, 2, 3}, /* base, audio alone, peaked */
        {2, 196, 768, 12, 2, 1}, /* base, video alone */
        {1, 708, 512, 16, 2, 1}, /* base decoder (hd 32) */
        {3, 1, 192, 3, 0, 1},    /* one token */
        {1, 33, 128, 4, 0, 2},   /* one past a key tile */
        {1, 65, 192, 3, 0, 2},   /* one past a query block */
        {2, 100, 48, 3, 0, 1},   /* head dim 16: the 32-wide kernel, zero-padded */
        {1, 130, 120, 3, 0, 1},  /* head dim 40: the 64-wide kernel, zero-padded */
        {2, 5, 12, 3, 0, 1},     /* head dim 4 */
    };
    double worst = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int heads[2] = {two[0], cases[i].H - 1};
        worst = fmax(worst, flash_case(cases[i].B, cases[i].N, cases[i].C, cases[i].H, cases[i].spread, heads,
                                       cases[i].nh));
    }
    fprintf(stderr, "  flash attention: worst rel %.3g (tolerance %g)\n", worst, FA_TOL);
    CHECK(worst <= FA_TOL);
}

/* ---- the bf16 attention (flash_bf16.h's host drivers) against the CPU's bf16 op, at the models' shapes ----
 */

/* got against want over n values: the largest |diff| relative to max |want|, and the count of values whose
 * |diff| is over bound * max |want| */
typedef struct {
    double rel;
    long over;
    size_t n;
} fb_diff;
static fb_diff fb_compare(const float *got, const float *want, size_t n, double bound) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)want[i]));
    fb_diff r = {0, 0, n};
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        d = fmax(d, e);
        r.over += e > bound * m;
    }
    r.rel = m > 0 ? d / m : d;
    return r;
}

/* Tolerances of the bf16 attention. Its products are of bf16 values, exact in fp32, so the host drivers and
 * the CPU op differ in the order of their fp32 sums (index order and the online softmax's rescaled lse here,
 * OpenBLAS's blocks there), as the fp32 fused attention's do (FA_TOL) -- and where that moves an operand of a
 * bf16 rounding (P, dS) across a rounding boundary: that P or dS then differs by one bf16 ulp (up to 2^-7 of
 * it), and every value summed from it (a row of out or dV, a row of dQ or dK) by up to 2^-7 of that term.
 * A flip needs the operand within its fp32 difference (a few 2^-24) of a boundary, a chance of about 2^-16
 * per rounding, so few values move: measured at these shapes, 1.5 to 2.5% of each tensor's values over
 * FB_BOUND (5.8% at worst in one head), the largest 8.3e-4 of the tensor's largest value. The checks:
 * - FB_FRACTION: at most a tenth of the values over FB_BOUND, the fp32 agreement of the fused attention.
 *   A dropped rounding point moves every value: measured 80 to 98% over it (P unrounded in out or in dV,
 *   dS unrounded in dQ, q unrounded);
 * - FB_GROSS: no value off by more than 2^-6 of the largest, two bf16 ulps of a term as large as the
 *   largest output (a flipped P of about 1 in a peaked row); a misplaced term, a padded key in the
 *   softmax's sum or a missing rescale is off by O(1) (measured: 0.98 and more). */
#define FB_BOUND 1e-5
#define FB_FRACTION 0.1
#define FB_GROSS (1.0 / 64)

/* B samples of N tokens, C channels, H heads, the heads listed (all when nh is 0) run on the host; spread
 * scales q and k. Folds each tensor's worst into worst[4] (out, dq, dk, dv) and its count over FB_BOUND
 * into over[4], n[4]. */
static void fb_case(int B, int N, int C, int H, float spread, const int *heads, int nh, double *worst,
                    long *over, size_t *cnt) {
    int hd = C / H;
    size_t nx = (size_t)B * N * C, nl = (size_t)B * H * N;
    float *qkv = rnd(3 * nx, 1), *dO = rnd(nx, 1), *ro = zeros(nx), *rl = zeros(nl), *rdq = zeros(3 * nx);
    float *rD = zeros(nl);
    for (size_t r = 0; r < (size_t)B * N; r++)
        for (int c = 0; c < 2 * C; c++) qkv[r * 3 * C + c] *= spread;
    cav_attention_forward_bf16(ro, rl, qkv, B, N, C, H);
    cav_attention_backward_bf16(rdq, dO, qkv, ro, rl, rD, B, N, C, H);
    float *ho = zeros(nx), *hdq = zeros(3 * nx), *lse = zeros(nl), *D = zeros(nl);
    size_t ns = (size_t)B * N * hd;
    float *a = zeros(ns), *r = zeros(ns);
    char what[64];
    for (int k = 0; k < (nh ? nh : H); k++) {
        int h = nh ? heads[k] : k;
        for (int b = 0; b < B; b++) cav_fb_forward_host(ho, lse, qkv, b, h, N, C, H);
        for (int b = 0; b < B; b++) cav_fb_backward_host(hdq, dO, qkv, ho, lse, D, b, h, N, C, H);
        static const char *names[] = {"out", "dq", "dk", "dv"};
        for (int q = 0; q < 4; q++) {
            const float *got = q ? hdq : ho, *want = q ? rdq : ro;
            int ld = q ? 3 * C : C, off = q ? (q - 1) * C : 0;
            head_slice(a, got, B, N, ld, off, h, hd), head_slice(r, want, B, N, ld, off, h, hd);
            fb_diff f = fb_compare(a, r, ns, FB_BOUND);
            snprintf(what, sizeof what, "bf16 %d %d %d %d h%d %s", B, N, C, H, h, names[q]);
            fprintf(stderr, "  %-28s rel %.3g, %ld of %zu over %g\n", what, f.rel, f.over, f.n, FB_BOUND);
            worst[q] = fmax(worst[q], f.rel), over[q] += f.over, cnt[q] += f.n;
        }
    }
    free(qkv), free(dO), free(ro), free(rl), free(rdq), free(rD), free(ho), free(hdq), free(lse), free(D);
    free(a), free(r);
}

static void test_flash_bf16_attention(void) {
    static const int two[] = {0, -1}; /* the first and the last head */
    struct {
        int B, N, C, H, nh;
        float spread;
    } cases[] = {
        {3, 1, 192, 3, 0, 1},    /* one token */
        {2, 17, 128, 4, 0, 1},   /* hd 32, under one tile */
        {2, 49, 192, 3, 0, 4},   /* tiny, the kept video tokens; peaked scores */
        {2, 128, 512, 16, 2, 1}, /* base decoder heads (hd 32), the kept audio tokens */
        {2, 177, 192, 3, 0, 1},  /* tiny encoder's joint layer */
        {1, 708, 128, 4, 2, 1},  /* tiny decoder (hd 32), all tokens */
        {1, 708, 768, 12, 2, 1}, /* base encoder, fine-tuning's joint layer */
        {1, 512, 768, 12, 2, 3}, /* base, audio alone, peaked */
        {2, 196, 768, 12, 2, 1}, /* base, video alone */
        {1, 65, 192, 3, 0, 2},   /* one past a block */
        {1, 100, 48, 3, 0, 1},   /* head dim 16: the 32-wide kernel, zero-padded */
        {2, 5, 12, 3, 0, 1},     /* head dim 4 */
    };
    double worst[4] = {0};
    long over[4] = {0};
    size_t cnt[4] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int heads[2] = {two[0], cases[i].H - 1};
        fb_case(cases[i].B, cases[i].N, cases[i].C, cases[i].H, cases[i].spread, heads, cases[i].nh, worst,
                over, cnt);
    }
    static const char *names[] = {"out", "dq", "dk", "dv"};
    for (int q = 0; q < 4; q++) {
        fprintf(stderr,
                "  bf16 attention %s: worst rel %.3g (tolerance %g), %ld of %zu over %g (at most %g)\n",
                names[q], worst[q], FB_GROSS, over[q], cnt[q], FB_BOUND, FB_FRACTION);
        CHECK(worst[q] <= FB_GROSS);
        CHECK(over[q] <= FB_FRACTION * (double)cnt[q]);
    }
}

int main(void) {
    TEST(test_layernorm);
    TEST(test_softmax);
    TEST(test_column_sums);
    TEST(test_l2norm_contrastive);
    TEST(test_mae_losses);
    TEST(test_classification_losses);
    TEST(test_flash_attention);
    TEST(test_flash_bf16_attention);
    return harness_exit();
}
