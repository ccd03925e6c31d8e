/* test_metrics.c: AP, AUC, d' and accuracy against sklearn/scipy, retrieval R@k/MR against the
 * reference's compute_metrics (tests/ref/gen_metrics.py). */
#include "harness.h"
#include "metrics.h"
#include "testdata.h"

#define GEN "gen_metrics"

static void classification_matches_sklearn(void) {
    for (int c = 0; c < 3; c++) {
        char path[4096], name[64];
        snprintf(name, sizeof name, "cls%d.txt", c);
        REQUIRE(ref_path(path, sizeof path, GEN, name));
        FILE *f = fopen(path, "r");
        REQUIRE(f != NULL);
        long long n, k;
        double mAP, mAUC, dp, acc;
        REQUIRE(fscanf(f, "%lld %lld %lf %lf %lf %lf", &n, &k, &mAP, &mAUC, &dp, &acc) == 6);
        double *ap = malloc(k * sizeof *ap), *auc = malloc(k * sizeof *auc);
        for (long long j = 0; j < k; j++) REQUIRE(fscanf(f, "%lf", &ap[j]) == 1);
        for (long long j = 0; j < k; j++) REQUIRE(fscanf(f, "%lf", &auc[j]) == 1);
        fclose(f);
        size_t nb;
        snprintf(name, sizeof name, "cls%d.scores", c);
        float *s = ref_read(GEN, name, &nb);
        snprintf(name, sizeof name, "cls%d.targets", c);
        float *t = ref_read(GEN, name, &nb);
        REQUIRE(s && t);
        for (long long j = 0; j < k; j++) {
            CHECK_NEAR(cav_average_precision(s + j, t + j, n, k), ap[j], 1e-12);
            CHECK_NEAR(cav_roc_auc(s + j, t + j, n, k), auc[j], 1e-12);
        }
        cav_cls_stats st = cav_classification_stats(s, t, n, k);
        CHECK_NEAR(st.mAP, mAP, 1e-12);
        CHECK_NEAR(st.mAUC, mAUC, 1e-12);
        CHECK_NEAR(st.dprime, dp, 1e-9);
        CHECK_NEAR(st.acc, acc, 1e-15);
        CHECK(st.classes_defined == k);
        free(s), free(t), free(ap), free(auc);
    }
}

static void retrieval_matches_reference(void) {
    for (int c = 0; c < 2; c++) {
        char path[4096], name[64];
        snprintf(name, sizeof name, "ret%d.txt", c);
        REQUIRE(ref_path(path, sizeof path, GEN, name));
        FILE *f = fopen(path, "r");
        REQUIRE(f != NULL);
        long long n;
        double r1, r5, r10, mr;
        REQUIRE(fscanf(f, "%lld %lf %lf %lf %lf", &n, &r1, &r5, &r10, &mr) == 5);
        fclose(f);
        snprintf(name, sizeof name, "ret%d.sim", c);
        size_t nb;
        float *sim = ref_read(GEN, name, &nb);
        REQUIRE(sim && nb == (size_t)(n * n) * sizeof(float));
        cav_recall_stats st = cav_retrieval_stats(sim, n);
        CHECK_NEAR(st.r1, r1, 1e-15);
        CHECK_NEAR(st.r5, r5, 1e-15);
        CHECK_NEAR(st.r10, r10, 1e-15);
        CHECK_NEAR(st.mr, mr, 1e-15);
        free(sim);
    }
}

static void undefined_classes_are_nan(void) {
    float s[4] = {0.1f, 0.4f, 0.35f, 0.8f}, none[4] = {0, 0, 0, 0}, all[4] = {1, 1, 1, 1};
    CHECK(isnan(cav_average_precision(s, none, 4, 1)));
    CHECK(isnan(cav_roc_auc(s, all, 4, 1)));
    CHECK_NEAR(cav_norm_ppf(0.975), 1.959963984540054, 1e-12);
}

int main(void) {
    TEST(classification_matches_sklearn);
    TEST(retrieval_matches_reference);
    TEST(undefined_classes_are_nan);
    return harness_exit();
}
