/* test_schedule.c: the learning rates the reference's logs print (cav-numerics(7) 3.2, 3.3). */
#include "harness.h"
#include "schedule.h"

static void pretrain_base_schedule(void) {
    cav_schedule sc = {5e-5, 10, 5, 0.5, 0};
    for (int e = 1; e <= 10; e++) CHECK_NEAR(cav_schedule_lr(&sc, e, 0), 5e-5, 1e-18);
    for (int e = 11; e <= 15; e++) CHECK_NEAR(cav_schedule_lr(&sc, e, 0), 2.5e-5, 1e-18);
    for (int e = 16; e <= 20; e++) CHECK_NEAR(cav_schedule_lr(&sc, e, 0), 1.25e-5, 1e-18);
    for (int e = 21; e <= 25; e++) CHECK_NEAR(cav_schedule_lr(&sc, e, 0), 6.25e-6, 1e-18);
}

static void finetune_as20k_schedule(void) {
    /* 5e-5 for epochs 1-5, then halved each epoch: 2.44e-8 after epoch 15 (cav-numerics(7) 3.3) */
    cav_schedule sc = {5e-5, 5, 1, 0.5, 0};
    CHECK_NEAR(cav_schedule_lr(&sc, 5, 0), 5e-5, 1e-18);
    CHECK_NEAR(cav_schedule_lr(&sc, 6, 0), 2.5e-5, 1e-18);
    CHECK_NEAR(cav_schedule_lr(&sc, 16, 0), 5e-5 / 2048, 1e-18); /* the rate logged after epoch 15 */
    CHECK_NEAR(5e-5 / 2048, 2.44e-8, 1e-10);
}

static void warmup_is_linear_then_off(void) {
    cav_schedule sc = {1e-4, 10, 5, 0.5, 100};
    CHECK_NEAR(cav_schedule_lr(&sc, 1, 0), 1e-6, 1e-18);
    CHECK_NEAR(cav_schedule_lr(&sc, 1, 49), 5e-5, 1e-18);
    CHECK_NEAR(cav_schedule_lr(&sc, 1, 100), 1e-4, 1e-18);
}

int main(void) {
    TEST(pretrain_base_schedule);
    TEST(finetune_as20k_schedule);
    TEST(warmup_is_linear_then_off);
    return harness_exit();
}
