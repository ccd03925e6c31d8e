#!/usr/bin/env bash
# bench_ft_eval.sh: the ten-frame final evaluation of cav-finetune (cav-numerics(7) 3.4), the whole model
# rerun for each frame against the audio branch once per clip (tests/bench/ft_eval_frames.c), at the tiny
# config (192-dim, 3 heads, 4+1 layers, batch 8) and the base config (768-dim, 12 heads, 11+1 layers,
# batch 2), multimodal with 527 classes, on 2 threads. Prints seconds per ten frames, the speed-up and the
# largest logit difference between the two (relative to the largest logit); not a test.
# Env: REPS (default 3; the best of REPS is kept).
set -euo pipefail
bench=${CAV_BENCH_BIN:-build/bench}
reps=${REPS:-3}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_WAIT_POLICY=passive
for cfg in "tiny 8" "base 2"; do
    set -- $cfg
    "$bench/ft_eval_frames" "$1" "$2" "$reps" | tr '\n' ' '
    echo
done
