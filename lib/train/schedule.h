/* schedule.h: learning-rate schedules of the reference (cav-numerics(7) 3.1): MultiStepLR stepped once per
 * epoch with milestones range(start, 1000, step), plus an optional linear warmup over the first steps (the
 * reference has none: its --warmup flag is never read). */
#ifndef CAV_SCHEDULE_H
#define CAV_SCHEDULE_H

#include <stdint.h>

typedef struct {
    double lr;            /* base rate */
    int decay_start;      /* first milestone (epochs) */
    int decay_step;       /* milestone spacing */
    double decay;         /* gamma */
    int64_t warmup_steps; /* 0 = none */
} cav_schedule;

/* Rate for 1-indexed epoch e at global step s (0-indexed, counted over the whole run). */
double cav_schedule_lr(const cav_schedule *sc, int epoch, int64_t step);

#endif
