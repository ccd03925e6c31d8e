/* metrics.h: the evaluation metrics of the reference (cav-numerics(7) 3.4, 4): per-class average precision
 * (non-interpolated, as sklearn's average_precision_score) and ROC AUC (as roc_auc_score, ties counted
 * half), d' from the mean AUC, top-1 accuracy, and retrieval ranks R@1/5/10 and median rank. */
#ifndef CAV_METRICS_H
#define CAV_METRICS_H

#include <stdint.h>

/* scores, targets: [n] for one class; a target > 0.5 is a positive. NaN when the class has no positive
 * (AP) or no positive or no negative (AUC), as sklearn warns and cannot define them. */
double cav_average_precision(const float *scores, const float *targets, int64_t n, int64_t stride);
double cav_roc_auc(const float *scores, const float *targets, int64_t n, int64_t stride);
double cav_dprime(double auc); /* sqrt(2) * Phi^-1(auc) */
double cav_norm_ppf(double p);

typedef struct {
    double mAP, mAUC, dprime, acc;
    int classes_defined; /* classes with at least one positive (those the means run over) */
} cav_cls_stats;
/* logits/probabilities and targets: [n, k] row-major. acc = argmax(target) == argmax(score). */
cav_cls_stats cav_classification_stats(const float *scores, const float *targets, int64_t n, int64_t k);

typedef struct {
    double r1, r5, r10, mr;
    int64_t hits; /* the positions the means and the median run over (n without ties) */
} cav_recall_stats;
/* The reference's compute_metrics (cav-numerics(7) 4) on sim [n, n], row i = query i, the right item is
 * column i. It sorts each row descending and takes every position where the sorted row equals the diagonal
 * value (np.where): the rank, 0-based, is the number of columns with a strictly greater similarity, and a
 * diagonal tied with k other columns yields k + 1 hits, at rank .. rank + k; a NaN diagonal yields none.
 * R@k = fraction of hits < k, MR = median of the hits + 1 (NaN when there is no hit). */
cav_recall_stats cav_retrieval_stats(const float *sim, int64_t n);

/* Statistics from per-query ranks (items with a strictly greater similarity) and ties (items equal to the
 * ranked one, itself included; 0: no hit) over npos items (the positions a hit can take); ties NULL counts
 * one hit per query at its rank. lib/train/retrieval.h computes both at any scale. NaNs when memory runs out.
 */
cav_recall_stats cav_retrieval_stats_ranks(const int64_t *rank, const int64_t *ties, int64_t n, int64_t npos);

#endif
