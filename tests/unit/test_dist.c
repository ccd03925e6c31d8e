/* test_dist.c: the distributed layer's arithmetic that needs no launcher (dist.h): the local rank from the
 * launcher's variables in their order of precedence, the device each rank of `--device cuda` gets (also
 * under srun --gpus-per-task=1, where each task sees one device), and the ranks' parts of the flat buffer
 * (contiguous, covering, near-equal, 64-aligned), and the bf16 gradient exchange's sum (--grad-dtype bf16:
 * widened bf16 payloads added in fp32 in rank order, rounded once) against an exact computation written
 * independently of bf16.h (frexp and rint). The collectives themselves are tested through mpirun in
 * tests/tools/test_pretrain.py and test_grad_dtype.py. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "harness.h"

static void clear_env(void) {
    unsetenv("CAV_LOCAL_RANK");
    unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
    unsetenv("SLURM_LOCALID");
    unsetenv("CUDA_VISIBLE_DEVICES");
}

static void local_rank_from_the_launcher(void) {
    clear_env();
    CHECK(cav_dist_local_rank() == -1);
    setenv("SLURM_LOCALID", "3", 1);
    CHECK(cav_dist_local_rank() == 3);
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "5", 1); /* mpirun's wins over Slurm's */
    CHECK(cav_dist_local_rank() == 5);
    setenv("CAV_LOCAL_RANK", "1", 1); /* the user's override wins over both */
    CHECK(cav_dist_local_rank() == 1);
    setenv("CAV_LOCAL_RANK", "x1", 1); /* not a number: no local rank (MPI's node split then decides) */
    CHECK(cav_dist_local_rank() == -1);
    clear_env();
}

static void device_of_each_rank(void) {
    char out[64];
    clear_env();
    cav_dist_device("cuda", 8, 3, out, sizeof out);
    CHECK(strcmp(out, "cuda:3") == 0);
    cav_dist_device("cuda", 1, 3, out, sizeof out); /* one process: the backend's own default */
    CHECK(strcmp(out, "cuda") == 0);
    cav_dist_device("cuda:2", 8, 3, out, sizeof out); /* explicit: kept */
    CHECK(strcmp(out, "cuda:2") == 0);
    cav_dist_device("cpu", 8, 3, out, sizeof out);
    CHECK(strcmp(out, "cpu") == 0);
    cav_dist_device("cuda", 2, -1, out, sizeof out);
    CHECK(strcmp(out, "cuda:0") == 0);
    setenv("CUDA_VISIBLE_DEVICES", "5", 1); /* srun --gpus-per-task=1: every task's one device is cuda:0 */
    cav_dist_device("cuda", 8, 3, out, sizeof out);
    CHECK(strcmp(out, "cuda:0") == 0);
    setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3", 1); /* two nodes' worth of ranks on 4 listed devices */
    cav_dist_device("cuda", 8, 6, out, sizeof out);
    CHECK(strcmp(out, "cuda:2") == 0);
    clear_env();
}

static void parts_cover_the_buffer(void) {
    static const size_t ns[] = {0, 1, 63, 64, 65, 1000, 123457, 5000000};
    for (int world = 1; world <= 9; world++)
        for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
            cav_dist d = {0};
            d.world = world;
            size_t part[10], n = ns[k], most = 0, least = (size_t)-1;
            cav_dist_parts(&d, n, part);
            CHECK(part[0] == 0 && part[world] == n);
            for (int r = 0; r < world; r++) {
                size_t len = part[r + 1] - part[r];
                CHECK(part[r] <= part[r + 1]);
                CHECK(part[r] % 64 == 0 || part[r] == n);
                if (part[r + 1] < n) most = len > most ? len : most, least = len < least ? len : least;
            }
            CHECK(least == (size_t)-1 || most - least <= 64); /* near-equal: within one block */
        }
}

/* a bf16 pattern as a number, without bf16.h: sign, 8-bit exponent, 7-bit fraction (no NaN or infinity here)
 */
static double bf16_value(uint16_t h) {
    int e = (h >> 7) & 0xFF, f = h & 0x7F;
    double v =
        e ? ldexp(128 + f, e - 134) : ldexp(f, -133); /* normal: 1.f 2^(e-127); subnormal: 0.f 2^-126 */
    return h & 0x8000 ? -v : v;
}
/* x (a float's value, normal in bf16's range or zero) rounded to the nearest bf16, ties to even: the
 * significand scaled to 8 bits and rint'd in the default rounding mode (to nearest, ties to even) */
static double bf16_nearest(double x) {
    if (x == 0) return x;
    int e;
    double m = frexp(x, &e); /* x = m 2^e, 0.5 <= |m| < 1 */
    return ldexp(rint(ldexp(m, 8)), e - 8);
}

static void bf16_sum_is_exact(void) {
    /* hand cases: 1 + 2^-8 + 2^-8 is 1 + 2^-7 in fp32, a bf16 value; a bf16 accumulator would round the
     * first partial sum (a tie) down to 1 and end at 1. 1 + 2^-8 alone is a tie: to even, 1. 1 + 3 2^-8
     * is a tie between 1 + 2^-7 (odd) and 1 + 2^-6: 1 + 2^-6. Opposite payloads cancel to +0. */
    static const struct {
        int world;
        uint16_t in[3], want;
    } hand[] = {{3, {0x3F80, 0x3B80, 0x3B80}, 0x3F81},
                {2, {0x3F80, 0x3B80, 0}, 0x3F80},
                {2, {0x3F80, 0x3C40, 0}, 0x3F82},
                {2, {0x4049, 0xC049, 0}, 0x0000},
                {1, {0xC0A0, 0, 0}, 0xC0A0}};
    for (size_t k = 0; k < sizeof hand / sizeof *hand; k++) {
        uint16_t out = 1;
        cav_dist_sum_bf16(&out, hand[k].in, hand[k].world, 1);
        CHECK(out == hand[k].want);
    }
    /* random payloads of 1 to 5 ranks, gradient-like (normal values of mixed sign over 2^-30 .. 2^4): the
     * fp32 sum in rank order is each partial sum rounded to float (a double holds every sum of two floats
     * exactly enough to round once), then the bf16 of that */
    uint64_t s = 12345;
    for (int world = 1; world <= 5; world++) {
        size_t n = 20000;
        uint16_t *in = malloc((size_t)world * n * sizeof *in), *out = malloc(n * sizeof *out);
        for (size_t i = 0; i < (size_t)world * n; i++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            uint32_t r = (uint32_t)(s >> 33);
            in[i] = (uint16_t)((r & 0x8000) | ((97 + (r >> 16) % 35) << 7) | (r & 0x7F)); /* exp 2^-30..2^4 */
        }
        cav_dist_sum_bf16(out, in, world, n);
        int bad = 0;
        for (size_t i = 0; i < n; i++) {
            float acc = 0.0f;
            for (int r = 0; r < world; r++) acc = (float)((double)acc + bf16_value(in[(size_t)r * n + i]));
            bad += bf16_value(out[i]) != bf16_nearest(acc);
        }
        if (bad) fprintf(stderr, "  world %d: %d of %zu sums differ\n", world, bad, n);
        CHECK(bad == 0);
        free(in), free(out);
    }
}

int main(void) {
    TEST(local_rank_from_the_launcher);
    TEST(device_of_each_rank);
    TEST(parts_cover_the_buffer);
    TEST(bf16_sum_is_exact);
    return harness_exit();
}
