#!/bin/bash
# pretrain.sh: the pretraining demonstration on AV-Digits, through the tools end to end:
#   build.sh (the clips) -> av-extract | fbank | shard-pack (train.h5, test.h5) -> cav-pretrain
# at the tiny config on the CPU: CAV-MAE and, for comparison, AV-MAE (lambda_c = 0), both evaluated on the
# held-out split every epoch (losses with masking, and the contrastive accuracy of CAV-MAE: chance is
# 1/BATCH). Prints one table per run from its result.csv.
#
# Usage: pipelines/av-digits/pretrain.sh [RUNDIR]      (default build/runs/av-digits-tiny)
# Environment (defaults):
#   DATA=build/data/av-digits  the dataset (built there by build.sh unless its manifest.txt exists)
#   EPOCHS=8 BATCH=12 LR=2e-4 CONTRAST_WEIGHT=0.01 SEED=1 THREADS=2
#   VARIANTS="cav-mae av-mae"  runs to make (any cav-pretrain --variant)
#   and build.sh's N_TRAIN, N_TEST, JOBS, SEED.
# Each run resumes where it stopped (cav-pretrain --resume), so the script can be interrupted and rerun.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUN=${1:-$ROOT/build/runs/av-digits-tiny}
DATA=${DATA:-$ROOT/build/data/av-digits}
EPOCHS=${EPOCHS:-8} BATCH=${BATCH:-12} LR=${LR:-2e-4} CONTRAST_WEIGHT=${CONTRAST_WEIGHT:-0.01}
THREADS=${THREADS:-2} VARIANTS=${VARIANTS:-cav-mae av-mae}
export SEED=${SEED:-1}
say() { echo "pretrain.sh: $*" >&2; }
for t in av-extract fbank shard-pack cav-pretrain; do
    command -v $t >/dev/null || { say "$t not on PATH (run make, then PATH=build/bin:\$PATH)"; exit 1; }
done
mkdir -p "$RUN"

[ -f "$DATA/manifest.txt" ] || "$HERE/build.sh" "$DATA"
for split in train test; do
    [ -f "$RUN/$split.h5" ] && continue
    say "extracting $split: av-extract | fbank | shard-pack -> $RUN/$split.h5"
    av-extract -j 2 "$DATA/$split"/* | fbank --drop-wave |
        shard-pack -j "$DATA/$split.json" -c "$DATA/class_labels_indices.csv" -o "$RUN/$split.tmp.h5" -
    mv "$RUN/$split.tmp.h5" "$RUN/$split.h5"
done

for v in $VARIANTS; do
    out=$RUN/$v
    resume=""
    [ -e "$out" ] && resume=--resume # a new run needs an empty --out; without a checkpoint --resume starts anew
    say "cav-pretrain --variant $v: $EPOCHS epochs, batch $BATCH, lr $LR -> $out"
    cw=()
    case $v in cav-mae | cav) cw=(--contrast-weight "$CONTRAST_WEIGHT") ;; esac
    OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=passive cav-pretrain $resume --variant "$v" --model tiny "${cw[@]}" \
        -b "$BATCH" --contrast-groups 1 -e "$EPOCHS" --lr "$LR" --seed "$SEED" --log-every 10 \
        --eval "$RUN/test.h5" -o "$out" "$RUN/train.h5"
done

for v in $VARIANTS; do
    echo "== $v (result.csv; eval on the held-out split; chance c_acc = 1/$BATCH)"
    printf '%5s %9s %9s %9s %9s %9s %9s %8s\n' epoch train_a train_v train_c eval_a eval_v eval_c eval_acc
    awk -F, '{printf "%5d %9.4f %9.4f %9.4f %9.4f %9.4f %9.4f %8.3f\n", NR, $1, $2, $3, $5, $6, $7, $9}' "$RUN/$v/result.csv"
done
