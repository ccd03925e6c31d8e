/* test_dist.c: the distributed layer's arithmetic that needs no launcher (dist.h): the local rank from the
 * launcher's variables in their order of precedence, the device each rank of `--device cuda` gets (also
 * under srun --gpus-per-task=1, where each task sees one device), and the ranks' parts of the flat buffer
 * (contiguous, covering, near-equal, 64-aligned). The collectives themselves are tested through mpirun in
 * tests/tools/test_pretrain.py. */
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

int main(void) {
    TEST(local_rank_from_the_launcher);
    TEST(device_of_each_rank);
    TEST(parts_cover_the_buffer);
    return harness_exit();
}
