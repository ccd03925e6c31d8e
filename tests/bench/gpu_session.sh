#!/usr/bin/env bash
# gpu_session.sh: the first thing to run when a GPU is lent (one prepared run of about 10 minutes), from the
# repository root. Writes everything to one log (argument 1, default build/gpu-session.log):
#   1. the machine: GPU, driver, nvcc, torch and whether torch sees the GPU;
#   2. the build: the CUDA backend (nvcc, sm_80 + sm_90), the tools and the programs this needs; the golden
#      data of the debug states (tests/ref/gen_debug_states.py, where stale: Debian's torch on the CPU);
#   3. make check-cuda, one stage at a time (tests/cuda/check_cuda.sh): every op of the CUDA backend against
#      the CPU's (tests/unit/test_kernels.c); the model's debug states on the GPU with the CPU's tolerances;
#      50 training steps of tiny and base following the CPU's losses, resume bit-exact on the GPU and across
#      devices (tests/cuda/test_cuda_train.py); compute-sanitizer memcheck and racecheck (test_sanitizer.py);
#      and cav-recall --device against the CPU on 20,000 clips (test_cuda_recall.py);
#   4. the training step (forward + backward + Adam, tests/bench/train_step.c) at the tiny and base configs,
#      samples/s on the GPU against the reference PyTorch model (tests/ref/cavmae_ref.py) on the same GPU in
#      fp32 (TF32 off), and the C model on the CPU for scale;
#   5. the op-by-op profile of the base step (CAV_PROFILE), issue 11's training benchmark (bench_gpu_train.sh)
#      and issue 14's retrieval benchmark (bench_recall.py: cav-recall on the host and on the device against
#      NumPy at N = 8,000, 30,000, 100,000).
# Each stage has its own time limit and a failure does not stop the later ones; the log ends with a summary
# line per stage and the samples/s of each step run; the logs of the check-cuda stages are under
# build/test-logs/cuda. Env: JOBS (default: the cores), B_TINY (16), B_BASE (8), STEPS_TINY (10), STEPS_BASE
# (5), DEVICE (cuda), PYTHON (/usr/bin/python3: a torch that sees the GPU), ONLY (shell patterns of the stages
# to run, the others skipped: a lent device runs at most 600 s a command, so one session is split into calls
# on the same warm machine, e.g. ONLY='machine build refs cuda-arith check-cuda*' then ONLY='step* profile* bench*',
# each with its own log argument; a pattern has no spaces: 'step?tiny*' for the stage "step tiny ..."; with a
# bundle the first call's patterns are 'machine bundle libraries refs cuda-arith check-cuda*').
# The device tool's machines have CUDA, PyTorch and NumPy but not the C libraries the tools link, and no
# network: run tests/bench/gpu_bundle.sh here first and carry .gpu-bundle; this script then unpacks the tools
# built here with their libraries (stage "bundle", instead of "build") and never calls make. PYTHON defaults to
# the first of /usr/bin/python3 and python3 that imports numpy and torch; it runs the Python tests too.
set -uo pipefail
cd "$(dirname "$0")/../.."
log=${1:-build/gpu-session.log}
mkdir -p "$(dirname "$log")"
exec > >(tee "$log") 2>&1
jobs=${JOBS:-$(nproc)}
b_tiny=${B_TINY:-16} b_base=${B_BASE:-8} steps_tiny=${STEPS_TINY:-10} steps_base=${STEPS_BASE:-5}
device=${DEVICE:-cuda} python=${PYTHON:-}
if [ -z "$python" ]; then
    for p in /usr/bin/python3 python3; do
        "$p" -c 'import numpy, torch' 2>/dev/null && python=$(command -v "$p") && break
    done
    python=${python:-/usr/bin/python3}
fi
export CAV_PYTHON=$python
bundle=
[ -f .gpu-bundle/build.tar.xz ] && bundle=1
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$jobs} OMP_WAIT_POLICY=passive
# stage NAME SECONDS CMD...: runs CMD under a time limit, notes its outcome for the summary
stage() {
    local name=$1 limit=$2 t0=$SECONDS pat
    shift 2
    if [ -n "${ONLY:-}" ]; then
        local pats hit=
        read -ra pats <<<"$ONLY" # read: the patterns are not expanded against the files here
        for pat in "${pats[@]}"; do
            # shellcheck disable=SC2053 # pat is a pattern
            [[ $name == $pat ]] && hit=1
        done
        if [ -z "$hit" ]; then
            : >"$results/out" # no output: the step rows below stay empty
            printf '%-28s skipped (ONLY)\n' "$name" >>"$results/summary"
            return 0
        fi
    fi
    echo
    echo "==== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$results/out"
    local rc=${PIPESTATUS[0]}
    printf '%-28s rc %3d  %4ds\n' "$name" "$rc" $((SECONDS - t0)) >>"$results/summary"
    return "$rc"
}

echo "gpu_session: $(git describe --tags --always --dirty 2>/dev/null) on $(hostname), $(nproc) cores"
stage machine 60 bash -c 'nvidia-smi; nvidia-smi -L; command -v nvcc || ls /usr/local/cuda/bin/nvcc;
    (nvcc --version || /usr/local/cuda/bin/nvcc --version) | tail -2;
    '"$python"' -c "import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda,
        \"available\", torch.cuda.is_available())"'

if [ -n "$bundle" ]; then
    # The tools built by gpu_bundle.sh, newer than the sources (nothing here is rebuilt), and their libraries
    # in build/gpu-lib, which their library paths name (not LD_LIBRARY_PATH: this machine's Python must keep
    # its own libssl, libffi...). CUDA's libraries are this machine's: the toolkit's (the tools' path names
    # /usr/local/cuda/lib64), else those of PyTorch's packages, through LD_LIBRARY_PATH.
    stage bundle 120 bash -c 'cat .gpu-bundle/MANIFEST && "$0" -m tarfile -e .gpu-bundle/build.tar.xz . &&
        rm -rf build/gpu-lib && "$0" -m tarfile -e .gpu-bundle/lib.tar.xz build/gpu-lib &&
        find build -type f -exec touch {} +' "$python"
    cudalib=$(find -H /usr/local/cuda/lib64 /usr/local/cuda*/lib64 /usr/lib/x86_64-linux-gnu /opt /usr/local/lib \
        \( -name 'libcublasLt.so.13' -o -name 'libnccl.so.2' \) 2>/dev/null | xargs -r -n1 dirname | awk '!s[$0]++' |
        tr '\n' ':')
    export LD_LIBRARY_PATH=$cudalib${LD_LIBRARY_PATH:-}
    echo "gpu_session: LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    stage libraries 30 bash -c 'ldd build/bin/cav-pretrain build/rel/tests/test_kernels | grep -E "not found|lib(cudart|cublas|nccl)";
        ! ldd build/bin/cav-pretrain build/rel/tests/test_kernels | grep -q "not found"'
    stage refs 150 bash -c 'for g in gen_debug_states gen_bf16_states; do
        [ -f build/ref/$g.stamp ] || { mkdir -p build/ref/$g && "$0" tests/ref/$g.py build/ref/$g && touch build/ref/$g.stamp; } || exit 1
        done' "$python"
    # make check-cuda's run without make, in make's test environment (Makefile: TEST_ENV, check-cuda)
    mkdir -p build/test-logs
    cc=(env PATH="$PWD/build/bin:$PATH" CAV_BIN="$PWD/build/bin" HDF5_PLUGIN_PATH="$PWD/build/plugin"
        CAV_REF="$PWD/build/ref" CAV_BUILD="$PWD/build" CAV_SRC="$PWD" CAV_BENCH_BIN="$PWD/build/bench"
        CAV_TEST_LOGS="$PWD/build/test-logs" OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive CAV_HAVE_CUDA_BUILD=1
        DEVICE="$device" tests/cuda/check_cuda.sh "$PWD/build/rel/tests/test_kernels")
else
    # Only what the later stages run: the tools, the unit test of the kernels and the step benchmark (a full
    # `make tests` builds the ASan tree too, minutes this session does not have).
    stage build 300 make -j"$jobs" all build/rel/tests/test_kernels build/rel/tests/test_cuda_arith build/bench/train_step
    grep -E '^(NVCC|CUDA_HOME|HAVE_CUBLAS)' build/config.mk || echo "gpu_session: build/config.mk has no CUDA: the backend was not built"
    stage refs 150 make -j"$jobs" build/ref/gen_debug_states.stamp build/ref/gen_bf16_states.stamp
    cc=(make check-cuda DEVICE="$device")
fi

stage cuda-arith 60 build/rel/tests/test_cuda_arith
# check-cuda's stages, each under its own limit: a hung one does not take the benchmark's time
# (STAGES and the scripts' settings go through the environment, which make passes on)
stage "check-cuda kernels" 120 env STAGES=kernels "${cc[@]}"
stage "check-cuda debug states" 150 env STAGES=debug_states "${cc[@]}"
stage "check-cuda train" 360 env STAGES=train "${cc[@]}"
stage "check-cuda sanitizer" 150 env STAGES=sanitizer "${cc[@]}"
# bf16 (--precision bf16): the device's bf16 states and training, then tiny against the CPU's emulation; the
# 200 steps of make check-cuda's default (tiny and base) do not fit a session: BF16_STEPS (50) of tiny here
stage "check-cuda bf16" 400 env STAGES=bf16 BF16_STEPS="${BF16_STEPS:-50}" PARITY_CONFIGS=tiny "${cc[@]}"
stage "check-cuda recall" 200 env STAGES=recall "${cc[@]}"

# The step: C on the GPU, PyTorch on the GPU (strict fp32), C on the CPU, per config.
step() { # NAME CONFIG B STEPS DEVICE CMD...
    local name=$1 cfg=$2 b=$3 n=$4 dev=$5
    shift 5
    stage "$name" 100 env CAV_BENCH_DEVICE="$dev" "$@" "$cfg" "$b" "$n"
    local sps
    sps=$(sed -n 's/^samples_per_s //p' "$results/out")
    [ -n "$sps" ] && printf '  %-28s B %3s  %s samples/s\n' "$name" "$b" "$sps" >>"$results/samples"
}
for cfg in tiny base; do
    if [ $cfg = tiny ]; then b=$b_tiny n=$steps_tiny; else b=$b_base n=$steps_base; fi
    step "step $cfg C $device" $cfg "$b" "$n" "$device" build/bench/train_step step
    [ $cfg = tiny ] && sed -n 's/^last_loss //p' "$results/out" >"$results/tiny_loss"
    step "step $cfg PyTorch $device" $cfg "$b" "$n" "$device" "$python" tests/bench/train_step_torch.py
    step "step $cfg C cpu" $cfg "$b" 1 cpu build/bench/train_step step
done

# Determinism: the same tiny run again on the GPU must give the same loss to the last bit (no atomics in
# reductions; resume is bit-exact only if this holds).
if [ -s "$results/tiny_loss" ]; then
    stage "step tiny C $device again" 100 env CAV_BENCH_DEVICE="$device" build/bench/train_step step tiny "$b_tiny" \
        "$steps_tiny"
    again=$(sed -n 's/^last_loss //p' "$results/out")
    if [ "$again" = "$(cat "$results/tiny_loss")" ]; then verdict="same bits"; else verdict="DIFFERENT"; fi
    echo "determinism: last loss $(cat "$results/tiny_loss") then $again: $verdict" | tee -a "$results/summary"
fi

# Where the base step's time goes on the device, op by op (CAV_PROFILE: kernels/profile.c, each op waited for),
# in fp32 with the plain attention and in bf16 (its tensor-core attention); the tables are in this log.
stage "profile base $device fp32" 150 env CAV_BENCH_DEVICE="$device" CAV_PROFILE=1 build/bench/train_step step \
    base "$b_base" "$steps_base"
stage "profile base $device bf16 fused" 150 env CAV_BENCH_DEVICE="$device" CAV_BENCH_PRECISION=bf16 \
    CAV_ATTENTION=fused CAV_PROFILE=1 build/bench/train_step step base "$b_base" "$steps_base"

# Issue 11's benchmark (base config: samples/s, peak memory, MFU; C fp32 plain and fused attention against
# PyTorch fp32, autocast bf16 and fp16 AMP). BUDGET_S keeps it inside its stage; on a device whose commands
# are limited to 10 minutes, run it as a call of its own after this script's build.
stage bench-gpu-train 600 env DEVICE="$device" PYTHON="$python" BUDGET_S=${BENCH_BUDGET_S:-420} \
    CAV_BENCH_BIN="$PWD/build/bench" bash tests/bench/bench_gpu_train.sh

# Issue 14's retrieval benchmark: cav-recall on the host and with --device at N = 8,000, 30,000 and 100,000
# (D = 768) against NumPy, in one stage (BENCH_RECALL_N narrows it).
stage bench-recall 480 env BENCH_RECALL_DEVICE="$device" "$python" tests/bench/bench_recall.py

echo
echo "==== summary (rc 124: over its time limit)"
cat "$results/summary"
echo "training step, samples/s (fp32; the CPU row is the C model on this machine's $(nproc) cores):"
cat "$results/samples" 2>/dev/null || echo "  (no step ran)"
