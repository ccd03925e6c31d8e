#!/usr/bin/env bash
# check_cuda.sh: make check-cuda, everything issue 10 asks of a GPU, each as PASS/FAIL/SKIP lines counted by
# tests/run.sh (logs under $CAV_TEST_LOGS/cuda):
#   1. test_kernels: every op of every backend in its list against the CPU's (the cuda entry required), the
#      fused fp32 attention against the plain one, and the bf16 tensor-core attention against the CPU's bf16 op;
#   2. tests/tools/test_debug_states.sh with DEVICE: the model's debug states with the CPU's tolerances;
#   3. tests/cuda/test_cuda_train.py: 50 steps of tiny and base following the CPU's losses; resume bit-exact
#      on the device; a checkpoint of one device resumed on the other, both ways;
#   4. tests/cuda/test_sanitizer.py: compute-sanitizer memcheck and racecheck clean on short runs;
#   5. bf16 (tests/cuda/test_cuda_bf16.sh): --precision bf16 on the device: its bf16 debug states, training
#      against fp32 and resume (tests/tools/test_bf16.py), and BF16_STEPS (200) steps of tiny and base against
#      the CPU's emulation of the same bf16 arithmetic (test_cuda_train.py with PRECISION=bf16).
#   6. tests/cuda/test_cuda_recall.py: cav-recall --device cuda against the CPU on 20,000 clips with exact
#      ties, every output byte-equal.
# Where this build has no CUDA backend or the machine no GPU, each stage prints SKIP and the run ends
# "SKIPPED check-cuda: <why>" with status 0; a GPU that nvidia-smi sees but the backend cannot open is a
# failure. DEVICE=cpu runs stages 2-6 on the CPU against the CPU (their own check where no GPU is at hand).
# STAGES (default "kernels debug_states train sanitizer bf16 recall") narrows the run
# (tests/bench/gpu_session.sh times each stage on its own).
# Usage: check_cuda.sh TEST_KERNELS_BINARY (run from the repository root with make's test environment)
set -u
kernels=$1
device=${DEVICE:-cuda}
logs=${CAV_TEST_LOGS:-build/test-logs}
want=" ${STAGES:-kernels debug_states train sanitizer bf16 recall} "
stages=()
[[ $want == *" debug_states "* ]] && stages+=(tests/tools/test_debug_states.sh)
[[ $want == *" train "* ]] && stages+=(tests/cuda/test_cuda_train.py)
[[ $want == *" sanitizer "* ]] && stages+=(tests/cuda/test_sanitizer.py)
[[ $want == *" bf16 "* ]] && stages+=(tests/cuda/test_cuda_bf16.sh)
[[ $want == *" recall "* ]] && stages+=(tests/cuda/test_cuda_recall.py)
mkdir -p "$logs"
# the CPU's side of the comparisons trains the base config: every core (make's test environment says 2), and
# up to an hour a script (a GPU machine's CPU does it in minutes; two cores take over 15)
export OMP_NUM_THREADS=$(nproc) CAV_TEST_TIMEOUT=${CAV_TEST_TIMEOUT:-3600}
skip_all() {
    local s
    [[ $want == *" kernels "* ]] && echo "SKIP test_kernels: $1"
    for s in "${stages[@]}"; do echo "SKIP $(basename "$s"): $1"; done
    echo "SKIPPED check-cuda: $1"
    exit 0
}
if [ "$device" != cpu ]; then
    [ "${CAV_HAVE_CUDA_BUILD:-0}" = 1 ] || skip_all "this build has no CUDA backend (nvcc or cuBLAS not found)"
    log=$logs/check-cuda-kernels.log
    "$kernels" >"$log" 2>&1
    if grep -q '^SKIP backend_cuda:' "$log"; then
        if nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
            echo "FAIL check-cuda: a GPU is present but the cuda backend did not open:" \
                "$(sed -n 's/^SKIP backend_cuda: //p' "$log")"
            exit 1
        fi
        skip_all "$(sed -n 's/^SKIP backend_cuda: //p' "$log")"
    fi
    [[ $want == *" kernels "* ]] && stages=("$kernels" "${stages[@]}")
fi
if [ ${#stages[@]} -eq 0 ]; then
    echo "FAIL check-cuda: STAGES names none of kernels debug_states train sanitizer bf16 recall"
    exit 1
fi
DEVICE=$device tests/run.sh cuda "${stages[@]}"
st=$?
[ $st -eq 0 ] && echo "PASS check-cuda (DEVICE=$device)" || echo "FAIL check-cuda (DEVICE=$device; logs: $logs/cuda)"
exit $st
