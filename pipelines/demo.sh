#!/bin/bash
# demo.sh: what `make demo` runs. From nothing to retrieval on real material, on the CPU, in minutes:
# builds a small AV-Digits set (packaged recordings and images muxed into mp4/webm/mkv, pipelines/av-digits),
# extracts it with av-extract | fbank | shard-pack, pretrains a tiny CAV-MAE with cav-pretrain (held-out
# losses and contrastive accuracy per epoch), then embeds the held-out clips with cav-embed and scores
# audio<->visual retrieval with cav-recall, and ends with pictures: a gallery page of retrieved clips
# (cav-recall --html) and the model's reconstructions of masked clips (cav-embed --reconstruct).
# Usage: pipelines/demo.sh [OUTDIR]   (default build/demo; rerunning reuses what is there)
# Environment: N_TRAIN=600 N_TEST=100 EPOCHS=6 SEED=1, and the tools on PATH (make demo sets it).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
OUT=${1:-$ROOT/build/demo}
export N_TRAIN=${N_TRAIN:-600} N_TEST=${N_TEST:-100} EPOCHS=${EPOCHS:-6} SEED=${SEED:-1}
export DATA=$OUT/av-digits CACHE=${CACHE:-$ROOT/build/cache/av-digits} VARIANTS=cav-mae
t0=$(date +%s)
"$HERE/av-digits/pretrain.sh" "$OUT/run"
model=$(ls "$OUT/run/cav-mae/models"/audio_model.*.safetensors | sort -t. -k2 -n | tail -1)
echo "== retrieval on the $N_TEST held-out clips with $(basename "$model") (chance R@1 = 1/$N_TEST)"
cav-embed --model "$model" -o "$OUT/test-emb.h5" "$OUT/run/test.h5"
cav-recall --dataset av-digits-test "$OUT/test-emb.h5"
echo "== the gallery: the first 8 held-out queries of each direction and their 5 best matches"
cav-recall --dataset av-digits-test --html "$OUT/gallery" --media "$OUT/run/test.h5" --topk 5 --html-queries 8 \
  -o /dev/null "$OUT/test-emb.h5"
echo "== what the model sees: 75 % of the patches masked, and its reconstruction (2 held-out clips)"
cav-embed --model "$model" --reconstruct "$OUT/reconstruct" --mask-ratio 0.75 --seed 1 --clips 2 "$OUT/run/test.h5"
echo "demo: done in $(( $(date +%s) - t0 )) s; outputs in $OUT (run/cav-mae/result.csv, test-emb.h5)"
echo "demo: gallery: $OUT/gallery/index.html"
echo "demo: reconstructions: $OUT/reconstruct/0-audio.png $OUT/reconstruct/0-video.png (input, masked, reconstructed)"
