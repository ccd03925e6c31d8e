/* debugstate.h: checks the C model against a debug state written by the PyTorch reference
 * (tests/ref/gen_debug_states.py; the contract is in issue 4 and cav-pretrain(1)): loads the config,
 * parameters and inputs by name, runs forward and backward in fp32, and compares every output and gradient.
 * Used by `cav-pretrain --check-debug-state`; the groups run through the trainer's own group loop (train.h).
 */
#ifndef CAV_DEBUGSTATE_H
#define CAV_DEBUGSTATE_H

#include <stdio.h>

#include "kernels.h"
#include "record.h"

/* Tolerances of the contract: losses relative 1e-5; outputs and gradients 1e-4 of each tensor's max
 * magnitude. */
#define CAV_DEBUG_TOL_LOSS 1e-5
#define CAV_DEBUG_TOL_GRAD 1e-4

typedef struct {
    double max_rel_loss, max_rel_out, max_rel_grad;
    double max_rel_final; /* Adam states: parameters after the steps (reported only) */
    int tensors;          /* compared */
    int reach_mismatches; /* parameters with a gradient in one implementation and none in the other */
} cav_debug_report;

/* Runs the state on backend be (the tool's --device, with the CPU's tolerances on every backend). Prints one
 * line per compared tensor to out, then "max_rel_loss=<x> max_rel_grad=<y>". Returns 0 when
 * within tolerance, 2 when not (or when the file is bad: err then says why), 3 on resource failures. */
int cav_debug_state_check(cav_backend *be, const char *path, FILE *out, cav_debug_report *rep, cav_err *err);

#endif
