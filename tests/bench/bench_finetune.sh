#!/usr/bin/env bash
# bench_finetune.sh: the fine-tuning step (forward + backward + Adam, as cav-finetune runs it: CAVMAEFT on every
# token, mlp_head, BCE with logits on 527 classes, the head's rate x 100) of the C model against the
# independent PyTorch reference model (tests/ref/cavmae_ref.py's CAVMAEFT, torch.optim.Adam with the same two
# parameter groups), both on 2 threads and random inputs in the same run, at the tiny config (192-dim,
# 3 heads, 4+1 layers; batch 12, the mini recipe's) and the base config (768-dim, 12 heads, 11+1 layers;
# batch 4), multimodal. The C side is train_step.c's `ft` command, the PyTorch side train_step_torch.py's
# `ft`; the sgemm peak of the same OpenBLAS is measured in the same run. The BLAS kernels are those
# cav-finetune runs: the environment's OPENBLAS_CORETYPE, or when unset the kernels the training tools choose
# for themselves (kernels/cpu/blas.c), which train_step reports and PyTorch (whose BLAS is the same OpenBLAS on
# Debian) is then given too; bench_train_step.sh compares the settings.
# Env: STEPS_TINY (default 5), STEPS_BASE (default 2), B_TINY (12), B_BASE (4), CONFIGS ("tiny base"),
# MODES (multimodal; any of multimodal audioonly videoonly).
# Prints samples/s, GFLOP/s, % of the sgemm peak and the C/PyTorch ratio; not a test (timings are never
# asserted).
set -euo pipefail
bench=${CAV_BENCH_BIN:-build/bench}
src=${CAV_SRC:-.}
threads=${OMP_NUM_THREADS:-2}
steps_tiny=${STEPS_TINY:-5} steps_base=${STEPS_BASE:-2} b_tiny=${B_TINY:-12} b_base=${B_BASE:-4}
modes=${MODES:-multimodal}
export OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=passive
val() { sed -n "s/^$1 //p"; }

echo "machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $threads threads," \
    "load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "environment: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-<unset>} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE-<unset>};" \
    "torch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)' 2>/dev/null)"
core=$("$bench/train_step" ft tiny 1 1 videoonly 2>/dev/null | val blas_core)
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-$core}
peak=$("$bench/train_step" sgemm | val sgemm_gflops)
echo "fine-tuning step (forward + backward + Adam), 527 classes; OpenBLAS kernels $core, sgemm peak $peak GFLOP/s"
printf '%-6s %-10s %3s %-12s %10s %9s %8s %10s\n' config mode B implementation samples/s GFLOP/s "% peak" "C / this"
for cfg in ${CONFIGS:-tiny base}; do
    if [ $cfg = tiny ]; then B=$b_tiny n=$steps_tiny; else B=$b_base n=$steps_base; fi
    for mode in $modes; do
        out=$("$bench/train_step" ft $cfg "$B" "$n" "$mode")
        c=$(echo "$out" | val samples_per_s) gf=$(echo "$out" | val gflop_per_sample)
        t=$(/usr/bin/python3 "$src/tests/bench/train_step_torch.py" $cfg "$B" "$n" ft "$mode" 2>/dev/null |
            val samples_per_s)
        for side in C PyTorch; do
            r=$([ $side = C ] && echo "$c" || echo "$t")
            /usr/bin/python3 -c 'import sys
cfg, mode, B, n, r, c, gf, peak = sys.argv[1:9]
r, c, gf, peak = float(r), float(c), float(gf), float(peak)
print("%-6s %-10s %3s %-12s %10.3f %9.1f %7.1f%% %9.2fx" % (cfg, mode, B, n, r, r * gf, 100 * r * gf / peak, c / r))' \
                $cfg "$mode" "$B" "$([ $side = C ] && echo "C (libcav)" || echo PyTorch)" "$r" "$c" "$gf" "$peak"
        done
        echo "       (GFLOP per fine-tuning sample as counted by train_step.c: $gf)"
    done
done
