/* metrics.c: see metrics.h. AP and AUC sort each class's scores once (descending) and walk tied groups
 * together, which is how sklearn's curves treat equal scores. */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    float s;
    int pos;
} scored;

static int by_score_desc(const void *a, const void *b) {
    float x = ((const scored *)a)->s, y = ((const scored *)b)->s;
    return (x < y) - (x > y);
}

static scored *sorted_class(const float *scores, const float *targets, int64_t n, int64_t stride,
                            int64_t *npos) {
    scored *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    if (!v) return NULL;
    *npos = 0;
    for (int64_t i = 0; i < n; i++) {
        v[i].s = scores[i * stride];
        v[i].pos = targets[i * stride] > 0.5f;
        *npos += v[i].pos;
    }
    qsort(v, (size_t)n, sizeof *v, by_score_desc);
    return v;
}

double cav_average_precision(const float *scores, const float *targets, int64_t n, int64_t stride) {
    int64_t P;
    scored *v = sorted_class(scores, targets, n, stride, &P);
    if (!v) return NAN;
    if (P == 0) return free(v), NAN;
    double ap = 0, prev_recall = 0;
    int64_t tp = 0, seen = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        while (j < n && v[j].s == v[i].s) tp += v[j++].pos; /* one threshold per distinct score */
        seen = j;
        double recall = (double)tp / (double)P, precision = (double)tp / (double)seen;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
        i = j;
    }
    free(v);
    return ap;
}

double cav_roc_auc(const float *scores, const float *targets, int64_t n, int64_t stride) {
    int64_t P;
    scored *v = sorted_class(scores, targets, n, stride, &P);
    if (!v) return NAN;
    int64_t N = n - P;
    if (P == 0 || N == 0) return free(v), NAN;
    /* Count, for each positive, the negatives scored below it (ties count half). */
    double wins = 0;
    int64_t neg_above = 0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i, p = 0, q = 0;
        while (j < n && v[j].s == v[i].s) {
            if (v[j].pos)
                p++;
            else
                q++;
            j++;
        }
        int64_t neg_below = N - neg_above - q;
        wins += (double)p * ((double)neg_below + 0.5 * (double)q);
        neg_above += q;
        i = j;
    }
    free(v);
    return wins / ((double)P * (double)N);
}

/* Acklam's rational approximation refined by one Halley step on erfc. */
double cav_norm_ppf(double p) {
    if (!(p > 0 && p < 1)) return p == 0 ? -INFINITY : p == 1 ? INFINITY : NAN;
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,  -2.759285104469687e+02,
                               1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                               6.680131188771972e+01, -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                               -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                               3.754408661907416e+00};
    double x, q, r;
    if (p < 0.02425) {
        q = sqrt(-2 * log(p));
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else if (p > 1 - 0.02425) {
        q = sqrt(-2 * log(1 - p));
        x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    } else {
        q = p - 0.5;
        r = q * q;
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
    }
    double e = 0.5 * erfc(-x / sqrt(2)) - p, u = e * sqrt(2 * M_PI) * exp(x * x / 2);
    return x - u / (1 + x * u / 2);
}

double cav_dprime(double auc) {
    return sqrt(2.0) * cav_norm_ppf(auc);
}

static int64_t argmax(const float *x, int64_t k) {
    int64_t m = 0;
    for (int64_t j = 1; j < k; j++)
        if (x[j] > x[m]) m = j; /* first maximum, as numpy's argmax */
    return m;
}

cav_cls_stats cav_classification_stats(const float *scores, const float *targets, int64_t n, int64_t k) {
    cav_cls_stats st = {0, 0, 0, 0, 0};
    double sap = 0, sauc = 0;
    int nauc = 0;
    for (int64_t c = 0; c < k; c++) {
        double ap = cav_average_precision(scores + c, targets + c, n, k);
        double auc = cav_roc_auc(scores + c, targets + c, n, k);
        if (!isnan(ap)) sap += ap, st.classes_defined++;
        if (!isnan(auc)) sauc += auc, nauc++;
    }
    st.mAP = st.classes_defined ? sap / st.classes_defined : NAN;
    st.mAUC = nauc ? sauc / nauc : NAN;
    st.dprime = cav_dprime(st.mAUC);
    int64_t right = 0;
    for (int64_t i = 0; i < n; i++) right += argmax(scores + i * k, k) == argmax(targets + i * k, k);
    st.acc = n ? (double)right / (double)n : NAN;
    return st;
}

/* The hits as a histogram over positions 0..npos-1 (a difference array: hits of query i cover
 * [rank, rank + ties)), so that all-equal rows cost O(n) memory rather than n^2 hits. */
cav_recall_stats cav_retrieval_stats_ranks(const int64_t *rank, const int64_t *ties, int64_t n,
                                           int64_t npos) {
    cav_recall_stats st = {NAN, NAN, NAN, NAN, 0};
    if (n <= 0 || npos <= 0) return st;
    int64_t *cnt = calloc((size_t)npos + 1, sizeof *cnt);
    if (!cnt) return st;
    for (int64_t i = 0; i < n; i++) {
        int64_t t = ties ? ties[i] : 1;
        if (t <= 0 || rank[i] < 0 || rank[i] + t > npos) continue;
        cnt[rank[i]]++, cnt[rank[i] + t]--;
    }
    int64_t h = 0, h1 = 0, h5 = 0, h10 = 0;
    for (int64_t p = 0; p < npos; p++) {
        if (p) cnt[p] += cnt[p - 1];
        h += cnt[p];
        if (p < 1) h1 += cnt[p];
        if (p < 5) h5 += cnt[p];
        if (p < 10) h10 += cnt[p];
    }
    st.hits = h;
    if (h) {
        /* np.median: the middle hit, or the mean of the two middle ones */
        int64_t lo = (h - 1) / 2, hi = h / 2, seen = 0, vlo = -1, vhi = -1;
        for (int64_t p = 0; p < npos && vhi < 0; p++) {
            seen += cnt[p];
            if (vlo < 0 && seen > lo) vlo = p;
            if (seen > hi) vhi = p;
        }
        st.r1 = (double)h1 / (double)h, st.r5 = (double)h5 / (double)h, st.r10 = (double)h10 / (double)h;
        st.mr = 0.5 * (double)(vlo + vhi) + 1;
    }
    free(cnt);
    return st;
}

cav_recall_stats cav_retrieval_stats(const float *sim, int64_t n) {
    cav_recall_stats st = {NAN, NAN, NAN, NAN, 0};
    if (n <= 0) return st;
    int64_t *rank = malloc((size_t)n * sizeof *rank), *ties = malloc((size_t)n * sizeof *ties);
    if (rank && ties) {
        for (int64_t i = 0; i < n; i++) {
            const float *row = sim + i * n, d = row[i];
            int64_t r = 0, t = 0;
            for (int64_t j = 0; j < n; j++) r += row[j] > d, t += row[j] == d;
            rank[i] = r, ties[i] = t;
        }
        st = cav_retrieval_stats_ranks(rank, ties, n, n);
    }
    free(rank), free(ties);
    return st;
}
