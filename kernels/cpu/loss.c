/* loss.c: the CPU reference of the losses — L2 normalisation and the contrastive loss (cav-numerics(7) 2.10),
 * the norm-pix target and masked MSE of the MAE (cav-numerics(7) 2.9), BCE-with-logits and soft-target
 * cross-entropy of fine-tuning — and torch.optim.Adam's update (cav-numerics(7) 3.1). Reductions accumulate
 * in double: these are small, and the extra precision keeps the result within an ulp or two of PyTorch's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* -O2's "very cheap" vectorizer cost model leaves almost every elementwise loop here scalar; these loops are
 * memory-bound streams where vectors pay. Float reductions keep their order (no -fassociative-math), so
 * results do not change; errno and FP exception flags are never read by this project. */
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-math-errno", "no-trapping-math")

void cav_l2norm_forward(float *out, float *norm, const float *inp, int B, int C) {
    for (int b = 0; b < B; b++) {
        double s = 0;
        for (int c = 0; c < C; c++) s += (double)inp[(size_t)b * C + c] * inp[(size_t)b * C + c];
        float n = (float)sqrt(s);
        norm[b] = n;
        float d = n > 1e-12f ? n : 1e-12f;
        for (int c = 0; c < C; c++) out[(size_t)b * C + c] = inp[(size_t)b * C + c] / d;
    }
}

void cav_l2norm_backward(float *dinp, const float *dout, const float *out, const float *norm, int B, int C) {
    for (int b = 0; b < B; b++) {
        const float *y = out + (size_t)b * C, *dy = dout + (size_t)b * C;
        if (norm[b] > 1e-12f) {
            double s = 0;
            for (int c = 0; c < C; c++) s += (double)y[c] * dy[c];
            for (int c = 0; c < C; c++) dinp[(size_t)b * C + c] += (float)((dy[c] - y[c] * s) / norm[b]);
        } else {
            for (int c = 0; c < C; c++) dinp[(size_t)b * C + c] += dy[c] / 1e-12f;
        }
    }
}

/* S[B,B] = a @ v^T / tau, in double from float inputs. */
static void similarity(double *S, const float *a, const float *v, int B, int C) {
    for (int i = 0; i < B; i++)
        for (int j = 0; j < B; j++) {
            float s; /* the fp32 mm result, then / 0.05 as the reference */
            double sd = 0;
            for (int c = 0; c < C; c++) sd += (double)a[(size_t)i * C + c] * v[(size_t)j * C + c];
            s = (float)sd;
            S[(size_t)i * B + j] = (double)(s / CAV_CONTRAST_TAU);
        }
}

/* For each column j: lse over rows i of S[i,j] (transpose = 0), or for each row over columns (1). */
static void col_lse(double *lse, const double *S, int B, int transpose) {
    for (int j = 0; j < B; j++) {
        double mx = -INFINITY, s = 0;
        for (int i = 0; i < B; i++) {
            double x = transpose ? S[(size_t)j * B + i] : S[(size_t)i * B + j];
            mx = x > mx ? x : mx;
        }
        for (int i = 0; i < B; i++) s += exp((transpose ? S[(size_t)j * B + i] : S[(size_t)i * B + j]) - mx);
        lse[j] = mx + log(s);
    }
}

size_t cav_contrastive_workspace(int B) {
    return 2 * (size_t)B * B + B;
}

float cav_contrastive_forward(float *acc, const float *a, const float *v, int B, int C, int bidirect,
                              double *work) {
    double *S = work, *lse = work + 2 * (size_t)B * B; /* S [B,B], lse [B] */
    double nce = 0, hits = 0;
    int dirs = bidirect ? 2 : 1;
    similarity(S, a, v, B, C);
    for (int t = 0; t < dirs; t++) {
        col_lse(lse, S, B, t);
        double n = 0;
        int hit = 0;
        for (int j = 0; j < B; j++) {
            n += S[(size_t)j * B + j] - lse[j];
            int best = 0; /* argmax, first of ties as torch */
            for (int i = 1; i < B; i++) {
                double x = t ? S[(size_t)j * B + i] : S[(size_t)i * B + j];
                double y = t ? S[(size_t)j * B + best] : S[(size_t)best * B + j];
                if (x > y) best = i;
            }
            hit += best == j;
        }
        nce += -n / B;
        hits += (double)hit / B;
    }
    if (acc) *acc = (float)(hits / dirs);
    return (float)(nce / dirs);
}

void cav_contrastive_backward(float *da, float *dv, float dloss, const float *a, const float *v, int B, int C,
                              int bidirect, double *work) {
    double *S = work, *dS = work + (size_t)B * B, *lse = work + 2 * (size_t)B * B; /* [B,B] [B,B] [B] */
    memset(dS, 0, sizeof(double) * B * B);
    int dirs = bidirect ? 2 : 1;
    similarity(S, a, v, B, C);
    for (int t = 0; t < dirs; t++) {
        col_lse(lse, S, B, t);
        /* d(-mean_j log_softmax)[i,j] = (P[i,j] - [i==j]) / B, P the softmax along the direction's axis */
        for (int i = 0; i < B; i++)
            for (int j = 0; j < B; j++) {
                double p = exp(S[(size_t)i * B + j] - lse[t ? i : j]);
                dS[(size_t)i * B + j] += (double)dloss / dirs * (p - (i == j)) / B;
            }
    }
    for (int i = 0; i < B; i++)
        for (int j = 0; j < B; j++) {
            double g = dS[(size_t)i * B + j] / CAV_CONTRAST_TAU;
            for (int c = 0; c < C; c++) {
                if (da) da[(size_t)i * C + c] += (float)(g * v[(size_t)j * C + c]);
                if (dv) dv[(size_t)j * C + c] += (float)(g * a[(size_t)i * C + c]);
            }
        }
}

void cav_normpix(float *t, int M, int P, float eps) {
#pragma omp parallel for if ((size_t)M * P > CAV_PAR_MIN)
    for (int m = 0; m < M; m++) {
        float *r = t + (size_t)m * P;
        double s = 0, ss = 0;
        for (int p = 0; p < P; p++) s += r[p];
        double mu = s / P;
        for (int p = 0; p < P; p++) ss += (r[p] - mu) * (r[p] - mu);
        float mf = (float)mu, sd = sqrtf((float)(ss / (P - 1)) + eps);
        for (int p = 0; p < P; p++) r[p] = (r[p] - mf) / sd;
    }
}

void cav_masked_mse_sums(const float *pred, const float *t, const float *mask, int M, int P, double *num,
                         double *den) {
    double nm = 0, dn = 0;
    for (int m = 0; m < M; m++) {
        dn += mask[m];
        if (mask[m] == 0) continue;
        double s = 0;
        for (int p = 0; p < P; p++) {
            float d = pred[(size_t)m * P + p] - t[(size_t)m * P + p];
            s += (double)d * d;
        }
        nm += (double)(float)(s / P) * mask[m];
    }
    *num = nm, *den = dn;
}

float cav_masked_mse_forward(const float *pred, const float *t, const float *mask, int M, int P) {
    double num, den;
    cav_masked_mse_sums(pred, t, mask, M, P, &num, &den);
    return (float)(num / den);
}

void cav_masked_mse_backward_den(float *dpred, float dloss, const float *pred, const float *t,
                                 const float *mask, int M, int P, double den) {
#pragma omp parallel for if ((size_t)M * P > CAV_PAR_MIN)
    for (int m = 0; m < M; m++) {
        if (mask[m] == 0) continue;
        float g = (float)((double)dloss * mask[m] / den * 2.0 / P);
        for (int p = 0; p < P; p++)
            dpred[(size_t)m * P + p] += g * (pred[(size_t)m * P + p] - t[(size_t)m * P + p]);
    }
}

void cav_masked_mse_backward(float *dpred, float dloss, const float *pred, const float *t, const float *mask,
                             int M, int P) {
    double den = 0;
    for (int m = 0; m < M; m++) den += mask[m];
    cav_masked_mse_backward_den(dpred, dloss, pred, t, mask, M, P, den);
}

float cav_bce_logits_forward(const float *x, const float *y, int B, int K) {
    double s = 0;
    for (size_t i = 0; i < (size_t)B * K; i++) {
        double xi = x[i];
        s += (xi > 0 ? xi : 0) - xi * y[i] + log1p(exp(-fabs(xi)));
    }
    return (float)(s / ((double)B * K));
}

void cav_bce_logits_backward(float *dx, float dloss, const float *x, const float *y, int B, int K) {
    double sc = (double)dloss / ((double)B * K);
    for (size_t i = 0; i < (size_t)B * K; i++)
        dx[i] += (float)(sc * (1.0 / (1.0 + exp(-(double)x[i])) - y[i]));
}

static double row_lse(const float *x, int K) {
    double mx = -INFINITY, s = 0;
    for (int k = 0; k < K; k++) mx = x[k] > mx ? x[k] : mx;
    for (int k = 0; k < K; k++) s += exp(x[k] - mx);
    return mx + log(s);
}

float cav_soft_ce_forward(const float *x, const float *y, int B, int K) {
    double s = 0;
    for (int b = 0; b < B; b++) {
        double l = row_lse(x + (size_t)b * K, K);
        for (int k = 0; k < K; k++) s -= y[(size_t)b * K + k] * (x[(size_t)b * K + k] - l);
    }
    return (float)(s / B);
}

void cav_soft_ce_backward(float *dx, float dloss, const float *x, const float *y, int B, int K) {
    for (int b = 0; b < B; b++) {
        const float *xr = x + (size_t)b * K, *yr = y + (size_t)b * K;
        double l = row_lse(xr, K), ys = 0;
        for (int k = 0; k < K; k++) ys += yr[k];
        for (int k = 0; k < K; k++)
            dx[(size_t)b * K + k] += (float)((double)dloss / B * (exp(xr[k] - l) * ys - yr[k]));
    }
}

void cav_adam_step(float *p, const float *grad, float *m, float *v, size_t n, double lr, double beta1,
                   double beta2, double eps, double wd, int t) {
    /* Scalars are formed in double as Python does (1 - 0.95 is not 1 - 0.95f), then rounded to float as
     * torch's CPU kernels take them. */
    double bc1 = 1.0 - pow(beta1, t), bc2 = 1.0 - pow(beta2, t);
    float step = (float)(-(lr / bc1)), bc2s = (float)sqrt(bc2);
    float c1 = (float)(1.0 - beta1), c2 = (float)(1.0 - beta2);
    float b1 = (float)beta1, b2 = (float)beta2, epsf = (float)eps, wdf = (float)wd;
    size_t n4 = 0;
#ifdef __SSE2__
    /* The same operations in the same order, four at a time: sqrtf's errno check keeps the compiler from
     * vectorizing the loop itself, and this stream over four arrays is the optimiser's whole cost. */
    n4 = n / 4 * 4;
    const __m128 vb1 = _mm_set1_ps(b1), vc1 = _mm_set1_ps(c1), vb2 = _mm_set1_ps(b2), vc2 = _mm_set1_ps(c2);
    const __m128 vwd = _mm_set1_ps(wdf), vbc = _mm_set1_ps(bc2s), veps = _mm_set1_ps(epsf),
                 vst = _mm_set1_ps(step);
#pragma omp parallel for if (n > CAV_PAR_MIN)
    for (size_t i = 0; i < n4; i += 4) {
        __m128 pp = _mm_loadu_ps(p + i);
        __m128 g = _mm_add_ps(_mm_loadu_ps(grad + i), _mm_mul_ps(vwd, pp));
        __m128 mm = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(m + i), vb1), _mm_mul_ps(vc1, g));
        __m128 vv = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(v + i), vb2), _mm_mul_ps(_mm_mul_ps(vc2, g), g));
        __m128 denom = _mm_add_ps(_mm_div_ps(_mm_sqrt_ps(vv), vbc), veps);
        _mm_storeu_ps(m + i, mm);
        _mm_storeu_ps(v + i, vv);
        _mm_storeu_ps(p + i, _mm_add_ps(pp, _mm_div_ps(_mm_mul_ps(vst, mm), denom)));
    }
#endif
    for (size_t i = n4; i < n; i++) {
        float g = grad[i] + wdf * p[i];
        m[i] = m[i] * b1 + c1 * g;
        v[i] = v[i] * b2 + c2 * g * g;
        float denom = sqrtf(v[i]) / bc2s + epsf;
        p[i] = p[i] + step * m[i] / denom;
    }
}

int cav_all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}
