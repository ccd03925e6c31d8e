/* metrics.h: the evaluation metrics of the reference (SPEC 3.4, 4): per-class average precision
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
} cav_recall_stats;
/* sim: [n, n], row i = query i, the right item is column i. rank = number of columns with a strictly
 * greater similarity (0-based), R@k = fraction rank < k, MR = median(rank) + 1. */
cav_recall_stats cav_retrieval_stats(const float *sim, int64_t n);

#endif
