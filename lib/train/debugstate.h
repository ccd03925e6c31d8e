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
/* A bf16 state (metadata precision "bf16", tests/ref/gen_bf16_states.py) runs the model with
 * cav_model_set_precision(m, 1) against the float64 answer of the same bf16 arithmetic. bf16 rounding is a
 * step function: an fp32 value that differs from the float64 one by an ulp falls on the other side of a bf16
 * rounding boundary now and then, and the ulp-sized difference becomes a bf16-sized one (2^-8) that spreads.
 * Measured on the tiny states, PyTorch's own float32 run of the same bf16 arithmetic is 2.6e-3 (rel. L2) off
 * the float64 answer on pred_a, the C model 2.5e-3, and fp32 arithmetic without any bf16 4.0e-3: outputs and
 * gradients cannot tell bf16 from fp32 better than that, and are held to what a wrong weight copy, bias or
 * operand breaks (max rel 2e-2, rel L2 1e-2; measured up to 3.7e-3 for both). The losses, averages over many
 * elements, are where the arithmetic shows: C - truth measured at most 4.9e-5 on out.loss (1.1e-5 in
 * pretraining) and 1.2e-4 on the other losses (loss_c, a small value), fp32 arithmetic 2.5e-4 off on the
 * fine-tuning out.loss (8.3e-5 in pretraining, 4.2e-4 on loss_c): out.loss within 1.5e-4, the other losses
 * within 5e-4 (no tighter: another CPU's fp32 kernels move the boundary crossings). autocast.<loss>,
 * PyTorch's own autocast (each Linear's and attention product's output rounded to bf16 besides), within 2e-3
 * (measured up to 9.5e-4, on the fine-tuning out.loss). */
#define CAV_DEBUG_TOL_LOSS_BF16 1.5e-4
#define CAV_DEBUG_TOL_PARTS_BF16 5e-4
#define CAV_DEBUG_TOL_GRAD_BF16 2e-2
#define CAV_DEBUG_TOL_L2_BF16 1e-2
#define CAV_DEBUG_TOL_AUTOCAST 2e-3

typedef struct {
    double max_rel_loss, max_rel_out, max_rel_grad;
    double max_rel_final; /* Adam states: parameters after the steps (reported only) */
    double max_l2;        /* bf16 states: the largest ||C - reference|| / ||reference|| of a tensor */
    int tensors;          /* compared */
    int reach_mismatches; /* parameters with a gradient in one implementation and none in the other */
} cav_debug_report;

/* Runs the state on backend be (the tool's --device, with the CPU's tolerances on every backend). Prints one
 * line per compared tensor to out, then "max_rel_loss=<x> max_rel_grad=<y>". Returns 0 when
 * within tolerance, 2 when not (or when the file is bad: err then says why), 3 on resource failures. */
int cav_debug_state_check(cav_backend *be, const char *path, FILE *out, cav_debug_report *rep, cav_err *err);

#endif
