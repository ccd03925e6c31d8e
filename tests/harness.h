/* harness.h: the project's small C test harness. A test program is a list of TEST(fn) calls in main; each
 * function uses CHECK (continue on failure) or REQUIRE (stop this test), or SKIP with a reason. Every test
 * prints one line, "PASS name", "FAIL name: why" or "SKIP name: why", which tests/run.sh counts; main
 * returns harness_exit(), non-zero when anything failed. */
#ifndef CAV_HARNESS_H
#define CAV_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int harness_failed_tests, harness_cur_failed, harness_cur_skipped;
static char harness_first[512];

static void harness_note(const char *file, int line, const char *what) {
    if (!harness_cur_failed) snprintf(harness_first, sizeof harness_first, "%s:%d: %s", file, line, what);
    fprintf(stderr, "  %s:%d: check failed: %s\n", file, line, what);
    harness_cur_failed = 1;
}

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) harness_note(__FILE__, __LINE__, #cond);                                                \
    } while (0)
#define REQUIRE(cond)                                                                                        \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            harness_note(__FILE__, __LINE__, #cond);                                                         \
            return;                                                                                          \
        }                                                                                                    \
    } while (0)
/* |a-b| <= tol, reporting the values. */
#define CHECK_NEAR(a, b, tol)                                                                                \
    do {                                                                                                     \
        double ha_ = (double)(a), hb_ = (double)(b);                                                         \
        if (!(fabs(ha_ - hb_) <= (double)(tol))) {                                                           \
            char hm_[256];                                                                                   \
            snprintf(hm_, sizeof hm_, "%s = %.9g vs %s = %.9g (tol %g)", #a, ha_, #b, hb_, (double)(tol));   \
            harness_note(__FILE__, __LINE__, hm_);                                                           \
        }                                                                                                    \
    } while (0)
#define SKIP(reason)                                                                                         \
    do {                                                                                                     \
        snprintf(harness_first, sizeof harness_first, "%s", reason);                                         \
        harness_cur_skipped = 1;                                                                             \
        return;                                                                                              \
    } while (0)

#define TEST(fn)                                                                                             \
    do {                                                                                                     \
        harness_cur_failed = harness_cur_skipped = 0;                                                        \
        harness_first[0] = 0;                                                                                \
        fn();                                                                                                \
        if (harness_cur_failed) {                                                                            \
            harness_failed_tests++;                                                                          \
            printf("FAIL %s: %s\n", #fn, harness_first);                                                     \
        } else if (harness_cur_skipped) {                                                                    \
            printf("SKIP %s: %s\n", #fn, harness_first);                                                     \
        } else {                                                                                             \
            printf("PASS %s\n", #fn);                                                                        \
        }                                                                                                    \
        fflush(stdout);                                                                                      \
    } while (0)

static inline int harness_exit(void) {
    return harness_failed_tests ? 1 : 0;
}

#endif
