/* test_bf16.c: kernels/cuda/bf16.h on the host against PyTorch (golden data of tests/ref/gen_bf16.py, under
 * $CAV_REF/gen_bf16): float -> bf16 rounding bit for bit (ties to even and to odd, either side of a tie,
 * subnormals, overflow to infinity, +-0, +-inf; a NaN must stay a NaN: torch's AVX2 path writes 0xFFFF where
 * c10::BFloat16, and bf16.h, write 0x7FC0), bf16 -> float for all 65536 patterns, and the emulated bf16
 * linear against torch's bf16 F.linear and its float32 matmul of the rounded inputs; and the CPU backend's
 * bf16 ops of the seam (kernels.h: cast_bf16, linear_forward_bf16, linear_backward_bf16) on the same cases
 * against the contract computed in float64 and against torch.autocast's own forward and autograd. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/bf16.h"
#include "harness.h"
#include "kernels.h"
#include "testdata.h"

#define GEN "gen_bf16"

/* ref_read, saying which file is missing */
static void *read_ref(const char *name, long *bytes) {
    size_t n = 0;
    void *p = ref_read(GEN, name, &n);
    if (!p) fprintf(stderr, "  cannot read $CAV_REF/%s/%s (make refs)\n", GEN, name);
    *bytes = (long)n;
    return p;
}

static int bf16_is_nan(uint16_t h) {
    return (h & 0x7F80) == 0x7F80 && (h & 0x7F) != 0;
}

static void rounding_matches_torch(void) {
    long nb, nb2;
    uint32_t *in = read_ref("round_in.u32", &nb);
    uint16_t *want = read_ref("round_out.u16", &nb2);
    REQUIRE(in && want && nb / 4 == nb2 / 2 && nb > 4000);
    long n = nb / 4, bad = 0, ties = 0, nans = 0;
    for (long i = 0; i < n; i++) {
        float x;
        memcpy(&x, &in[i], sizeof x);
        uint16_t got = cav_bf16_from_f32(x);
        int ok = isnan(x) ? bf16_is_nan(got) && bf16_is_nan(want[i]) : got == want[i];
        ties += (in[i] & 0xFFFF) == 0x8000, nans += isnan(x) != 0;
        if (!ok && bad++ < 5) fprintf(stderr, "  %08x: got %04x, torch %04x\n", in[i], got, want[i]);
    }
    fprintf(stderr, "  %ld roundings (%ld ties, %ld NaNs): %ld differ\n", n, ties, nans, bad);
    CHECK(bad == 0 && ties > 1000 && nans > 10);
    free(in), free(want);
}

static void widening_matches_torch(void) {
    long nb;
    uint32_t *want = read_ref("widen_out.u32", &nb);
    REQUIRE(want && nb == 65536 * 4);
    long bad = 0, trip = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float x = cav_bf16_to_f32((uint16_t)h);
        uint32_t u;
        memcpy(&u, &x, sizeof u);
        bad += u != want[h];
        /* and back: every bf16 but a NaN is its own rounding */
        trip += !bf16_is_nan((uint16_t)h) && cav_bf16_from_f32(x) != h;
    }
    fprintf(stderr, "  65536 widenings: %ld differ, %ld do not round back\n", bad, trip);
    CHECK(bad == 0 && trip == 0);
    free(want);
}

/* gen_bf16's index.txt, and its next "linear M K N" case (0 at the end) */
static FILE *open_index(void) {
    char path[1200];
    return ref_path(path, sizeof path, GEN, "index.txt") ? fopen(path, "r") : NULL;
}
static int next_linear(FILE *idx, int *M, int *K, int *N) {
    char line[256];
    while (fgets(line, sizeof line, idx))
        if (sscanf(line, "linear %d %d %d", M, K, N) == 3) return 1;
    return 0;
}

/* bf16 values as integers ordered like the values (negatives below positives), for ulp distances */
static int32_t bf16_order(uint16_t h) {
    return h & 0x8000 ? -(int32_t)(h & 0x7FFF) : (int32_t)h;
}

/* The emulated linear: (1) against torch's float32 matmul of the same bf16-rounded inputs, max |diff| over
 * max |torch| within LIN_TOL: the products are exact on both sides, so only the order of the K-term float
 * sums differs, a random-walk error of about sqrt(K) eps relative to the rms term, far below an input that
 * missed its rounding (2^-9 relative per term: ~1e-3 of the result); measured up to 4e-7, LIN_TOL 4e-6.
 * (2) against torch's bf16 F.linear (the float32 sum rounded to bf16): our float result rounded to bf16
 * within 1 bf16 ulp (the two float sums differ by a few float ulps, which flips the bf16 rounding only next
 * to a tie between two bf16 neighbours), and most of them equal. */
#define LIN_TOL 4e-6
static void linear_matches_torch(void) {
    FILE *idx = open_index();
    REQUIRE(idx != NULL);
    int cases = 0, M, K, N;
    while (next_linear(idx, &M, &K, &N)) {
        char name[5][96];
        static const char *suffix[5] = {"x.f32", "w.f32", "b.f32", "f32.f32", "bf16.u16"};
        void *d[5];
        long bytes[5];
        int ok = 1;
        for (int i = 0; i < 5; i++) {
            snprintf(name[i], sizeof name[i], "linear_%d_%d_%d_%s", M, K, N, suffix[i]);
            d[i] = read_ref(name[i], &bytes[i]);
            ok &= d[i] != NULL;
        }
        REQUIRE(ok && bytes[0] == 4L * M * K && bytes[1] == 4L * N * K && bytes[2] == 4L * N &&
                bytes[3] == 4L * M * N && bytes[4] == 2L * M * N);
        const float *x = d[0], *w = d[1], *b = d[2], *f32 = d[3];
        const uint16_t *b16 = d[4];
        float *y = malloc(sizeof(float) * M * N);
        cav_bf16_linear_host(y, x, w, b, M, K, N);
        double dmax = 0, ymax = 0;
        long far = 0, equal = 0;
        for (long i = 0; i < (long)M * N; i++) {
            dmax = fmax(dmax, fabs((double)y[i] - f32[i])), ymax = fmax(ymax, fabs((double)f32[i]));
            int32_t u = bf16_order(cav_bf16_from_f32(y[i])) - bf16_order(b16[i]);
            far += u > 1 || u < -1, equal += u == 0;
        }
        double r = ymax > 0 ? dmax / ymax : dmax;
        fprintf(stderr, "  linear %d x %d -> %d: fp32 rel %.3g; bf16: %ld of %d equal, %ld over 1 ulp\n", M,
                K, N, r, equal, M * N, far);
        CHECK(r <= LIN_TOL);
        CHECK(far == 0 && equal >= (long)M * N * 9 / 10);
        free(y);
        for (int i = 0; i < 5; i++) free(d[i]);
        cases++;
    }
    fclose(idx);
    CHECK(cases >= 4);
}

/* max |a - ref| over max |ref| */
static double rel_err(const float *a, const double *ref, long n) {
    double d = 0, r = 0;
    for (long i = 0; i < n; i++) d = fmax(d, fabs(a[i] - ref[i])), r = fmax(r, fabs(ref[i]));
    return r > 0 ? d / r : d;
}
/* values rounded to bf16 against torch's bf16 results: how many differ by more than 1 ulp, and are equal */
static void ulps(const float *a, const uint16_t *t, long n, long *far, long *equal) {
    *far = *equal = 0;
    for (long i = 0; i < n; i++) {
        int32_t u = bf16_order(cav_bf16_from_f32(a[i])) - bf16_order(t[i]);
        *far += u > 1 || u < -1, *equal += u == 0;
    }
}

/* The seam's bf16 Linear (CPU backend), forward and backward, on gen_bf16's cases. The operands go through
 * the seam's cast_bf16 (the weights as the model's bf16 copy, the input and the output gradient as the model
 * casts them). Judged (1) against the contract in float64 (exact products and sums of the bf16-rounded
 * operands): max |diff| over max |ref| within LIN_TOL, the products being exact in fp32 and only the fp32
 * sums' order and rounding left (a K-term sum: about sqrt(K) float ulps of the largest terms; an operand that
 * missed its rounding, e.g. the output gradient left in fp32, moves a result by ~2^-9 of its terms, ~1e-3);
 * db is the column sum of the fp32 dy, in double, within 1 float ulp; (2) against torch.autocast's forward
 * and its autograd on fp32 master weights (the same fp32 sums rounded to bf16): within 1 bf16 ulp once
 * rounded, and at least 90% equal, as the forward above, except the backward of the 5 x 7 -> 3 case: for so
 * small a product torch's CPU bf16 matmul backward rounds its partial sums to bf16 (measured: up to 2% off
 * the float64 contract per element, where the seam is at 0), not the fp32 accumulation the seam specifies;
 * the contract alone judges it there. Gradients accumulate (+=): a second backward into
 * the same buffers doubles them exactly. */
static void seam_linear_matches_torch(void) {
    cav_backend *be = cav_backend_cpu();
    FILE *idx = open_index();
    REQUIRE(idx != NULL);
    int cases = 0, M, K, N;
    while (next_linear(idx, &M, &K, &N)) {
        enum { X, W, BIAS, F32, B16, DY, DX, DW, DB, DX16, DW16, NF };
        static const char *suffix[NF] = {"x.f32",  "w.f32",  "b.f32",  "f32.f32",     "bf16.u16",   "dy.f32",
                                         "dx.f64", "dw.f64", "db.f64", "dx_bf16.u16", "dw_bf16.u16"};
        const long want[NF] = {4L * M * K, 4L * N * K, 4L * N, 4L * M * N, 2L * M * N, 4L * M * N,
                               8L * M * K, 8L * N * K, 8L * N, 2L * M * K, 2L * N * K};
        void *d[NF];
        int ok = 1;
        for (int i = 0; i < NF; i++) {
            char name[96];
            long bytes;
            snprintf(name, sizeof name, "linear_%d_%d_%d_%s", M, K, N, suffix[i]);
            d[i] = read_ref(name, &bytes);
            ok &= d[i] != NULL && bytes == want[i];
        }
        REQUIRE(ok);
        uint16_t *x16 = malloc(2L * M * K), *w16 = malloc(2L * N * K), *b16 = malloc(2L * N),
                 *dy16 = malloc(2L * M * N);
        float *y = malloc(4L * M * N), *dx = calloc((size_t)M * K, 4), *dw = calloc((size_t)N * K, 4),
              *db = calloc((size_t)N, 4);
        REQUIRE(x16 && w16 && b16 && dy16 && y && dx && dw && db);
        be->cast_bf16(x16, d[X], (size_t)M * K), be->cast_bf16(w16, d[W], (size_t)N * K);
        be->cast_bf16(b16, d[BIAS], (size_t)N), be->cast_bf16(dy16, d[DY], (size_t)M * N);
        be->linear_forward_bf16(y, x16, w16, b16, M, K, N);
        double *yref = malloc(8L * M * N);
        REQUIRE(yref);
        for (long i = 0; i < (long)M * N; i++) yref[i] = ((float *)d[F32])[i];
        double ry = rel_err(y, yref, (long)M * N);
        free(yref);
        long far_y, eq_y, far_x, eq_x, far_w, eq_w;
        ulps(y, d[B16], (long)M * N, &far_y, &eq_y);
        be->linear_backward_bf16(dx, dw, db, d[DY], dy16, x16, w16, M, K, N);
        double rx = rel_err(dx, d[DX], (long)M * K), rw = rel_err(dw, d[DW], (long)N * K),
               rb = rel_err(db, d[DB], N);
        ulps(dx, d[DX16], (long)M * K, &far_x, &eq_x);
        ulps(dw, d[DW16], (long)N * K, &far_w, &eq_w);
        /* accumulation: the same backward again adds the same values */
        float *dx1 = malloc(4L * M * K), *dw1 = malloc(4L * N * K), *db1 = malloc(4L * N);
        REQUIRE(dx1 && dw1 && db1);
        memcpy(dx1, dx, 4L * M * K), memcpy(dw1, dw, 4L * N * K), memcpy(db1, db, 4L * N);
        be->linear_backward_bf16(dx, dw, db, d[DY], dy16, x16, w16, M, K, N);
        long twice = 0;
        for (long i = 0; i < (long)M * K; i++) twice += dx[i] != 2 * dx1[i];
        for (long i = 0; i < (long)N * K; i++) twice += dw[i] != 2 * dw1[i];
        for (long i = 0; i < N; i++) twice += db[i] != 2 * db1[i];
        fprintf(
            stderr,
            "  seam %d x %d -> %d: rel fwd %.2g dx %.2g dw %.2g db %.2g; vs autocast, over 1 ulp / equal: "
            "y %ld/%ld dx %ld/%ld dw %ld/%ld of %d %d %d; not accumulated %ld\n",
            M, K, N, ry, rx, rw, rb, far_y, eq_y, far_x, eq_x, far_w, eq_w, M * N, M * K, N * K, twice);
        CHECK(ry <= LIN_TOL && rx <= LIN_TOL && rw <= LIN_TOL && rb <= 1.2e-7);
        CHECK(far_y == 0 && eq_y >= (long)M * N * 9 / 10);
        if (M >= 16 && K >= 16 && N >= 16) /* not the tiny case (above) */
            CHECK(far_x == 0 && far_w == 0 && eq_x >= (long)M * K * 9 / 10 && eq_w >= (long)N * K * 9 / 10);
        CHECK(twice == 0);
        /* without the input gradient and the weight gradient, dy16 and x16 are not read */
        float *db2 = calloc((size_t)N, 4);
        REQUIRE(db2);
        be->linear_backward_bf16(NULL, NULL, db2, d[DY], NULL, NULL, w16, M, K, N);
        CHECK(memcmp(db2, db1, 4L * N) == 0);
        free(db2), free(dx1), free(dw1), free(db1);
        free(x16), free(w16), free(b16), free(dy16), free(y), free(dx), free(dw), free(db);
        for (int i = 0; i < NF; i++) free(d[i]);
        cases++;
    }
    fclose(idx);
    CHECK(cases >= 4);
}

int main(void) {
    TEST(rounding_matches_torch);
    TEST(widening_matches_torch);
    TEST(linear_matches_torch);
    TEST(seam_linear_matches_torch);
    return harness_exit();
}
