#!/usr/bin/env bash
# bench_train_step.sh: the training step (forward + backward + Adam) of the C model against the independent
# PyTorch reference model (tests/ref/cavmae_ref.py, torch.optim.Adam), both on 2 threads and random inputs,
# at the tiny config (192-dim, 3 heads, 4+1 layers, decoder 128 x 2 with 4 heads, batch 16) and the base
# config (batch 4); PyTorch also under jemalloc. Each side's GFLOP/s is set against the sgemm peak of the
# same OpenBLAS measured in the same run. Every figure is taken under each BLAS setting in turn:
#   as-set   the environment this script was started with;
#   unset    OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed (run only when as-set has either);
#   SkylakeX / Haswell   OPENBLAS_CORETYPE forced to the widest kernels this CPU runs, which the training
#            tools choose by themselves when OpenBLAS would fall back to older ones (kernels/cpu/blas.c).
# Env: STEPS_TINY (default 5), STEPS_BASE (default 2), SETTINGS (default: as described).
# Prints samples/s, C/PyTorch ratios and % of the sgemm peak; not a test (timings are never asserted).
set -euo pipefail
bench=${CAV_BENCH_BIN:-build/bench}
src=${CAV_SRC:-.}
threads=${OMP_NUM_THREADS:-2}
steps_tiny=${STEPS_TINY:-5}
steps_base=${STEPS_BASE:-2}
jemalloc=$(ls /usr/lib/*/libjemalloc.so.2 2>/dev/null | head -1 || true)
export OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=passive

wide=""
grep -q avx512bw /proc/cpuinfo && grep -q avx512vl /proc/cpuinfo && wide=SkylakeX
[ -z "$wide" ] && grep -q avx2 /proc/cpuinfo && grep -q fma /proc/cpuinfo && wide=Haswell
if [ -z "${SETTINGS:-}" ]; then
    SETTINGS=as-set
    if [ -n "${OPENBLAS_CORETYPE:-}${OPENBLAS_L2_SIZE:-}" ]; then SETTINGS="$SETTINGS unset"; fi
    if [ -n "$wide" ] && [ "${OPENBLAS_CORETYPE:-}" != "$wide" ]; then SETTINGS="$SETTINGS $wide"; fi
fi

# run SETTING CMD...: CMD under the BLAS setting
run() {
    local s=$1; shift
    case $s in
    as-set) "$@" ;;
    unset) env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$@" ;;
    *) env OPENBLAS_CORETYPE="$s" "$@" ;;
    esac
}
val() { sed -n "s/^$1 //p"; }

echo "machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $threads threads," \
    "load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "environment: OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-<unset>} OPENBLAS_L2_SIZE=${OPENBLAS_L2_SIZE-<unset>};" \
    "torch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)' 2>/dev/null)"
for s in $SETTINGS; do
    core=$(run "$s" env OPENBLAS_VERBOSE=2 "$bench/train_step" sgemm 2>&1 | sed -n 's/^Core: //p' | head -1)
    peak=$(run "$s" "$bench/train_step" sgemm | val sgemm_gflops)
    echo
    echo "== setting $s: OpenBLAS kernels $core, sgemm peak $peak GFLOP/s ($threads threads, best of 4 model shapes)"
    printf '%-6s %-22s %10s %9s %8s %10s\n' config implementation samples/s GFLOP/s "% peak" "C / this"
    for cfg in tiny base; do
        if [ $cfg = tiny ]; then B=16 n=$steps_tiny; else B=4 n=$steps_base; fi
        out=$(run "$s" "$bench/train_step" step $cfg $B "$n")
        c=$(echo "$out" | val samples_per_s) gf=$(echo "$out" | val gflop_per_sample)
        [ $cfg = tiny ] && gf_tiny=$gf
        line() { # NAME SAMPLES_PER_S
            /usr/bin/python3 -c 'import sys
n, r, c, gf, peak, cfg = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
print("%-6s %-22s %10.3f %9.1f %7.1f%% %9.2fx" % (cfg, n, r, r * gf, 100 * r * gf / peak, c / r))' "$1" "$2" "$c" "$gf" "$peak" "$cfg"
        }
        line "C (libcav)" "$c"
        t=$(run "$s" /usr/bin/python3 "$src/tests/bench/train_step_torch.py" $cfg $B "$n" 2>/dev/null | val samples_per_s)
        line "PyTorch" "$t"
        if [ -n "$jemalloc" ]; then
            t=$(run "$s" env LD_PRELOAD="$jemalloc" /usr/bin/python3 "$src/tests/bench/train_step_torch.py" $cfg $B "$n" 2>/dev/null | val samples_per_s)
            line "PyTorch + jemalloc" "$t"
        fi
    done
    echo "(GFLOP per training sample as counted by train_step.c: tiny $gf_tiny, base $gf;" \
        "goals: C >= 1.5x PyTorch at tiny, >= 60% of the sgemm peak at base)"
done
