#!/usr/bin/env bash
# test_cuda_bf16.sh: make check-cuda's bf16 stage (tests/cuda/check_cuda.sh) on $DEVICE: tests/tools/test_bf16.py
# there (the bf16 debug states with bf16's tolerances, bf16 training against fp32, resume byte-identical, a
# resume in another precision refused), then tests/cuda/test_cuda_train.py with PRECISION=bf16 and
# PARITY_STEPS=$BF16_STEPS (200): tiny and base on the device against the CPU's exact emulation of the same
# bf16 arithmetic, within lossparity.py's bf16 bound, and resume on and across devices in bf16. Its PASS/FAIL
# lines are both programs'; the exit status is 1 when either failed. DEVICE=cpu runs it CPU against CPU.
set -u
here=$(dirname "$0")
st=0
DEVICE=${DEVICE:-cuda} "${CAV_PYTHON:-/usr/bin/python3}" "$here/../tools/test_bf16.py" || st=1
DEVICE=${DEVICE:-cuda} PRECISION=bf16 PARITY_STEPS=${BF16_STEPS:-200} "${CAV_PYTHON:-/usr/bin/python3}" \
    "$here/test_cuda_train.py" || st=1
exit $st
