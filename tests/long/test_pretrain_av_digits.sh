#!/bin/bash
# test_pretrain_av_digits.sh (long): the pretraining demonstration as a test. pipelines/av-digits/pretrain.sh builds
# AV-Digits (or reuses build/data/av-digits), extracts it through av-extract | fbank | shard-pack, and
# pretrains a tiny CAV-MAE and an AV-MAE on the CPU with evaluation on the held-out split each epoch. Checks:
# both runs' reconstruction losses (train and eval, audio and visual) fall from the first epoch to the last,
# and CAV-MAE's held-out contrastive accuracy ends far above chance (1/12: at least 3x chance). About 25
# minutes on 2 cores for the two runs (23 measured with the clips prebuilt), plus the data build (12 minutes
# for the 1,500 clips when not cached).
set -u
SRC=${CAV_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${CAV_BUILD:-$SRC/build}
RUN=$BUILD/runs/av-digits-tiny-test
export CACHE=${CACHE:-$BUILD/cache/av-digits} DATA=${DATA:-$BUILD/data/av-digits} EPOCHS=${EPOCHS:-10}
rm -rf "$RUN"
if ! "$SRC/pipelines/av-digits/pretrain.sh" "$RUN" >"$BUILD/pretrain-av-digits-long.log" 2>&1; then
    echo "FAIL pretrain_av_digits_runs: $(tail -5 "$BUILD/pretrain-av-digits-long.log")"; exit 1
fi
sed -n '/^== /,$p' "$BUILD/pretrain-av-digits-long.log" | sed 's/^/  /'
st=0
for v in cav-mae av-mae; do
    # result.csv: train a, train v, train c, train total, eval a, eval v, eval c, eval total, eval c_acc, lr
    if awk -F, 'NR==1 {for (i = 1; i <= 6; i++) f[i] = $i} {for (i = 1; i <= 6; i++) l[i] = $i}
        END {exit !(l[1] < f[1] && l[2] < f[2] && l[5] < f[5] && l[6] < f[6])}' "$RUN/$v/result.csv"; then
        echo "PASS ${v}_reconstruction_falls"
    else
        echo "FAIL ${v}_reconstruction_falls"; st=1
    fi
done
acc=$(tail -1 "$RUN/cav-mae/result.csv" | cut -d, -f9)
if awk -v a="$acc" 'BEGIN {exit !(a >= 3.0 / 12)}'; then
    echo "PASS cav_mae_heldout_contrastive_accuracy ($acc, chance 0.083)"
else
    echo "FAIL cav_mae_heldout_contrastive_accuracy ($acc, chance 0.083)"; st=1
fi
exit $st
