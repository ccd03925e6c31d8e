/* schedule.c: see schedule.h. */
#include "schedule.h"

#include <math.h>

double cav_schedule_lr(const cav_schedule *sc, int epoch, int64_t step) {
    /* MultiStepLR has stepped epoch-1 times when epoch starts: count milestones m <= epoch-1. */
    int n = 0;
    if (sc->decay_step > 0)
        for (int m = sc->decay_start; m < 1000 && m <= epoch - 1; m += sc->decay_step) n++;
    double lr = sc->lr * pow(sc->decay, n);
    if (sc->warmup_steps > 0 && step < sc->warmup_steps) lr *= (double)(step + 1) / (double)sc->warmup_steps;
    return lr;
}
