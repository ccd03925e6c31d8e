#!/usr/bin/env bash
# bench_gpu_train.sh: the training step on a GPU at the base config (issue 11's benchmark), every figure from
# the same GPU in the same run: pretraining and fine-tuning (multimodal, 527 classes) samples/s, peak device
# memory and MFU (train_step.c's FLOP count per sample, checked by tests/tools/test_bench_flops.py, against
# the GPU's dense bf16 peak: H100 SXM 989.4 TFLOPS, H100 PCIe 756, H200 989.4, A100 312; another GPU: "n/a"
# unless PEAK_TFLOPS is given) for
#   the C model (tests/bench/train_step.c) on the GPU in fp32, CAV_ATTENTION=plain and =fused, and in bf16
#   (--precision bf16: its Linears and its own tensor-core attention, CAV_BENCH_PRECISION=bf16);
#   the independent PyTorch model (tests/bench/train_step_torch.py over tests/ref/cavmae_ref.py) in fp32 (TF32
#   off), under torch.autocast(bfloat16), and under the reference's fp16 AMP (autocast(float16), GradScaler);
# at batch B and at the largest batch that fits (doubling from B then bisecting to 1/8, one-step probes), with
# ratios against the PyTorch baselines, the forward/backward/optimizer split and a block for RESULTS.md.
# A dry run on the CPU checks the logic end to end: DEVICE=cpu (tiny config, batch 2, one step, the search
# capped at MAXB_LIMIT 8; no fp16 AMP, which needs a GPU).
# Env: DEVICE (cuda; cuda:N; cpu), CONFIG (base; tiny when DEVICE=cpu), B (48), STEPS (10), MAXB (search;
# off; a batch to use as the large one), MAXB_LIMIT (4096), MEM_LIMIT_MIB (a probe whose peak passes it does
# not fit: exercises the search on the CPU), TASKS ("pretrain finetune"), IMPLS ("c-plain c-fused c-fused-bf16
# torch-fp32 torch-bf16 torch-fp16"), RUN_TIMEOUT (300 s a run), BUDGET_S (no batch search starts after this many
# seconds; 0: none), PEAK_TFLOPS, PYTHON (/usr/bin/python3: a torch >= 2.0 that sees the GPU).
# Without a GPU and without DEVICE=cpu it says so and exits 0 (make bench). Not a test: timings are never
# asserted.
set -euo pipefail
src=${CAV_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
if [ "${DEVICE:-cuda}" != cpu ] && ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    echo "bench_gpu_train: no GPU (nvidia-smi sees none): not measured; DEVICE=cpu runs the dry run"
    exit 0
fi
if [ -z "${CAV_BENCH_BIN:-}" ]; then # run by hand: the C program from this tree's build
    make -C "$src" -j"$(nproc)" --no-print-directory build/bench/train_step >&2
    export CAV_BENCH_BIN=$src/build/bench
fi
export CAV_SRC=$src OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} OMP_WAIT_POLICY=passive
exec "${PYTHON:-/usr/bin/python3}" "$src/tests/bench/gpu_train.py"
