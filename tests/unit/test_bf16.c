/* test_bf16.c: kernels/cuda/bf16.h on the host against PyTorch (golden data of tests/ref/gen_bf16.py, under
 * $CAV_REF/gen_bf16): float -> bf16 rounding bit for bit (ties to even and to odd, either side of a tie,
 * subnormals, overflow to infinity, +-0, +-inf; a NaN must stay a NaN: torch's AVX2 path writes 0xFFFF where
 * c10::BFloat16, and bf16.h, write 0x7FC0), bf16 -> float for all 65536 patterns, and the emulated bf16
 * linear against torch's bf16 F.linear and its float32 matmul of the rounded inputs; and the CPU backend's
 * bf16 ops of the seam (kernels.h: cast_bf16, linear_forward_bf16, linear_backward_bf16) on the same cases
 * against the contract computed in float64 and against torch.autocast's own forward and autograd; and the
 * CPU's bf16 attention (attention_*_bf16) against the same contract in torch's ops
 * (tests/ref/gen_bf16_attention.py) and against the fp32 attention. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
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

/* ---- the bf16 attention (kernels.h's attention_*_bf16) of the CPU -----------------------------------------
 */

/* max |got - want| over max |want|, and the count of values off by more than bound * max |want| */
static double attn_diff(const char *what, const float *got, const float *want, size_t n, double bound,
                        long *over) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)want[i]));
    *over = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        d = fmax(d, e), *over += e > bound * m;
    }
    double r = m > 0 ? d / m : d;
    fprintf(stderr, "  %-34s rel %.3g, %ld of %zu over %g\n", what, r, *over, n, bound);
    return r;
}

/* Against torch (tests/ref/gen_bf16_attention.py: the contract's arithmetic in torch's own ops). Both sum
 * the same exact bf16 products in fp32, in OpenBLAS's order here and in torch's there, so they differ as
 * flash_bf16.h's host drivers and the CPU op do (tests/unit/test_cuda_arith.c's FB_*): fp32 rounding, except
 * where it moves the operand of a rounding of P or dS across a boundary, one bf16 ulp of that term. The same
 * checks: no value off by more than 2^-6 of the largest, at most a tenth over 1e-5 of it (a dropped rounding
 * point moves nearly all); lse, a sum of exps and a log on the same scores, within 1e-5 of its largest. */
static void attention_matches_torch(void) {
    char path[1200], line[256];
    FILE *idx = ref_path(path, sizeof path, "gen_bf16_attention", "index.txt") ? fopen(path, "r") : NULL;
    if (!idx) fprintf(stderr, "  cannot read $CAV_REF/gen_bf16_attention/index.txt (make refs)\n");
    REQUIRE(idx);
    int cases = 0;
    long over_all = 0;
    size_t n_all = 0;
    double worst = 0;
    while (fgets(line, sizeof line, idx)) {
        int B, N, C, H;
        if (sscanf(line, "attn %d %d %d %d", &B, &N, &C, &H) != 4) continue;
        size_t nx = (size_t)B * N * C, nl = (size_t)B * H * N;
        char name[64], f[160];
        snprintf(name, sizeof name, "attn_%d_%d_%d_%d", B, N, C, H);
        long nb[5];
        const char *suffix[] = {"qkv", "dout", "out", "lse", "dqkv"};
        size_t want_n[] = {3 * nx, nx, nx, nl, 3 * nx};
        float *t[5];
        for (int i = 0; i < 5; i++) {
            snprintf(f, sizeof f, "%s_%s.f32", name, suffix[i]);
            size_t got = 0;
            t[i] = ref_read("gen_bf16_attention", f, &got);
            nb[i] = (long)got;
            if (!t[i] || (size_t)nb[i] != 4 * want_n[i]) fprintf(stderr, "  cannot read %s\n", f);
            REQUIRE(t[i] && (size_t)nb[i] == 4 * want_n[i]);
        }
        float *out = calloc(nx, sizeof(float)), *lse = calloc(nl, sizeof(float)),
              *dqkv = calloc(3 * nx, sizeof(float)), *D = calloc(nl, sizeof(float));
        cav_attention_forward_bf16(out, lse, t[0], B, N, C, H);
        cav_attention_backward_bf16(dqkv, t[1], t[0], out, lse, D, B, N, C, H);
        long o1, o2, o3;
        char what[96];
        snprintf(what, sizeof what, "%s out", name);
        double r1 = attn_diff(what, out, t[2], nx, 1e-5, &o1);
        snprintf(what, sizeof what, "%s lse", name);
        double r2 = attn_diff(what, lse, t[3], nl, 1e-5, &o2);
        snprintf(what, sizeof what, "%s dqkv", name);
        double r3 = attn_diff(what, dqkv, t[4], 3 * nx, 1e-5, &o3);
        CHECK(r2 <= 1e-5);
        worst = fmax(worst, fmax(r1, r3)), over_all += o1 + o3, n_all += 4 * nx;
        for (int i = 0; i < 5; i++) free(t[i]);
        free(out), free(lse), free(dqkv), free(D);
        cases++;
    }
    fclose(idx);
    fprintf(stderr,
            "  bf16 attention against torch: %d cases, worst rel %.3g (at most %g), %ld of %zu over 1e-5\n",
            cases, worst, 1.0 / 64, over_all, n_all);
    CHECK(cases >= 4);
    CHECK(worst <= 1.0 / 64 && over_all <= 0.1 * (double)n_all);
}

/* Against the fp32 attention (cav_attention_*): the bf16 roundings are the only difference. Each of q, k, v,
 * dO is off by up to 2^-9 of itself, so a score by up to 2^-8 of the sum of its |q_d k_d| times the scale
 * (about 2^-8 sqrt(hd) / 4 at spread 1, and spread^2 times that: the scores grow with q and k), which moves
 * P by as much relatively; r(P) and r(dS) add 2^-9 each. Sums over many tokens average most of it out:
 * measured at spread 1 at most 3.0e-3 of the largest value, at spread 4 1.7e-2 (out of a peaked softmax).
 * The bound, 1e-2 times max(1, spread^2 / 4), keeps a margin of 2.4 or more; and the fp32 attention is
 * within 1e-5 of float64 (test_kernels.c), so this says the bf16 op computes attention and its gradient:
 * a missing term or a wrong index is off by O(1). */
static void attention_near_fp32(void) {
    static const struct {
        int B, N, C, H;
        float spread;
    } cases[] = {{2, 49, 192, 3, 4},
                 {2, 177, 192, 3, 1},
                 {1, 708, 128, 4, 1},
                 {1, 196, 768, 12, 1},
                 {2, 17, 48, 3, 1}};
    uint64_t st = 0x853c49e6748fea9bull;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int B = cases[c].B, N = cases[c].N, C = cases[c].C, H = cases[c].H;
        size_t nx = (size_t)B * N * C;
        float *qkv = malloc(sizeof(float) * 3 * nx), *dout = malloc(sizeof(float) * nx);
        for (size_t i = 0; i < 3 * nx + nx; i++) {
            st ^= st << 13, st ^= st >> 7, st ^= st << 17;
            float u = (float)((st >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
            if (i < 3 * nx)
                qkv[i] = (i % (3 * C) < (size_t)2 * C ? cases[c].spread : 1.0f) * u;
            else
                dout[i - 3 * nx] = u;
        }
        float *o16 = calloc(nx, sizeof(float)), *lse = calloc((size_t)B * H * N, sizeof(float)),
              *d16 = calloc(3 * nx, sizeof(float)), *D = calloc((size_t)B * H * N, sizeof(float));
        float *o32 = calloc(nx, sizeof(float)), *att = calloc((size_t)B * H * N * N, sizeof(float)),
              *d32 = calloc(3 * nx, sizeof(float)), *work = calloc(cav_attention_workspace(N), sizeof(float));
        cav_attention_forward_bf16(o16, lse, qkv, B, N, C, H);
        cav_attention_backward_bf16(d16, dout, qkv, o16, lse, D, B, N, C, H);
        cav_attention_forward(o32, att, qkv, B, N, C, H);
        cav_attention_backward(d32, dout, qkv, att, work, B, N, C, H);
        long over;
        char what[96];
        snprintf(what, sizeof what, "bf16 vs fp32 %d %d %d %d out", B, N, C, H);
        double tol = 1e-2 * fmax(1, cases[c].spread * cases[c].spread / 4);
        CHECK(attn_diff(what, o16, o32, nx, tol, &over) <= tol);
        snprintf(what, sizeof what, "bf16 vs fp32 %d %d %d %d dqkv", B, N, C, H);
        CHECK(attn_diff(what, d16, d32, 3 * nx, tol, &over) <= tol);
        free(qkv), free(dout), free(o16), free(lse), free(d16), free(D), free(o32), free(att), free(d32),
            free(work);
    }
}

int main(void) {
    TEST(rounding_matches_torch);
    TEST(widening_matches_torch);
    TEST(linear_matches_torch);
    TEST(seam_linear_matches_torch);
    TEST(attention_matches_torch);
    TEST(attention_near_fp32);
    return harness_exit();
}
