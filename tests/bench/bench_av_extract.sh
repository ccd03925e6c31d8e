#!/usr/bin/env bash
# bench_av_extract.sh: av-extract per clip against (a) the reference's two-step preprocessing of the same
# clips (ffmpeg -vn -ar 16000 + sox remix 1 per clip, as extract_audio.py; OpenCV seeks + torchvision resize +
# save_image JPEG, as extract_video_frame.py, in tests/bench/ref_extract_frames.py) and (b) the in-process
# decode floor (`av-extract --decode-only`: the same demuxing and decoding, nothing converted or written),
# all measured in this run. Also -j 2 against -j 1. Times are CPU seconds (user+sys, children included) as
# the primary "one core" measure, which a shared machine disturbs least, and wall seconds beside them; each
# is the best of $REPS runs. A benchmark, not a test: it prints ratios and asserts nothing.
set -euo pipefail
bin=${CAV_BIN:-build/bin}
src=${CAV_REF:-build/ref}/gen_avextract/video
here=$(cd "$(dirname "$0")" && pwd)
REPS=${REPS:-3}
clips=("$src"/*.mp4 "$src"/*.mkv "$src"/*.webm)
n=${#clips[@]}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# best CMD...: runs CMD $REPS times; prints "cpu wall" of the run with the least CPU time.
best() {
    local b="" 
    for _ in $(seq "$REPS"); do
        /usr/bin/time -f "%U %S %e" -o "$tmp/t" "$@" >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err" >&2; return 1; }
        read -r u s e <"$tmp/t"
        local cpu; cpu=$(echo "$u + $s" | bc -l)
        if [ -z "$b" ] || [ "$(echo "$cpu < ${b% *}" | bc -l)" = 1 ]; then b="$cpu $e"; fi
    done
    echo "$b"
}

ref_audio() { # extract_audio.py, per clip: two processes and an intermediate file
    for c in "${clips[@]}"; do
        id=$(basename "${c%.*}")
        ffmpeg -nostdin -y -loglevel error -i "$c" -vn -ar 16000 "$tmp/${id}_intermediate.wav"
        sox "$tmp/${id}_intermediate.wav" "$tmp/$id.wav" remix 1
        rm "$tmp/${id}_intermediate.wav"
    done
}
export -f ref_audio
ref_frames_best() { # the script times its own loop (imports excluded); best of $REPS
    local b=""
    for _ in $(seq "$REPS"); do
        read -r cpu wall < <(/usr/bin/python3 "$here/ref_extract_frames.py" "$tmp/frames" "${clips[@]}")
        if [ -z "$b" ] || [ "$(echo "$cpu < ${b% *}" | bc -l)" = 1 ]; then b="$cpu $wall"; fi
    done
    echo "$b"
}

echo "clips: $n ($(for c in "${clips[@]}"; do basename "$c"; done | tr '\n' ' '))"
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
read -r ra_cpu ra_wall < <(best bash -c "$(declare -p clips tmp); $(declare -f ref_audio); ref_audio")
read -r rf_cpu rf_wall < <(ref_frames_best)
read -r ours_cpu ours_wall < <(best "$bin/av-extract" -j 1 "${clips[@]}" -o "$tmp/o.cavs")
read -r raw_cpu raw_wall < <(best "$bin/av-extract" -j 1 --raw "${clips[@]}" -o "$tmp/o.cavs")
read -r floor_cpu floor_wall < <(best "$bin/av-extract" -j 1 --decode-only "${clips[@]}" -o /dev/null)
read -r all_cpu all_wall < <(best "$bin/av-extract" -j 1 --decode-only --decode-all "${clips[@]}" -o /dev/null)

ms() { echo "scale=1; 1000 * $1 / $n" | bc -l; }
ratio() { echo "scale=2; $1 / $2" | bc -l; }
ref_cpu=$(echo "$ra_cpu + $rf_cpu" | bc -l)
ref_wall=$(echo "$ra_wall + $rf_wall" | bc -l)
printf '%-58s %9s %9s\n' "per clip" "CPU ms" "wall ms"
printf '%-58s %9s %9s\n' "reference audio: ffmpeg -ar 16000 + sox remix 1" "$(ms "$ra_cpu")" "$(ms "$ra_wall")"
printf '%-58s %9s %9s\n' "reference frames: OpenCV seeks + Resize/CenterCrop + JPEG" "$(ms "$rf_cpu")" "$(ms "$rf_wall")"
printf '%-58s %9s %9s\n' "reference total" "$(ms "$ref_cpu")" "$(ms "$ref_wall")"
printf '%-58s %9s %9s\n' "av-extract -j 1 (JPEG q75 frames, stream)" "$(ms "$ours_cpu")" "$(ms "$ours_wall")"
printf '%-58s %9s %9s\n' "av-extract -j 1 --raw" "$(ms "$raw_cpu")" "$(ms "$raw_wall")"
printf '%-58s %9s %9s\n' "floor: av-extract --decode-only (what is needed)" "$(ms "$floor_cpu")" "$(ms "$floor_wall")"
printf '%-58s %9s %9s\n' "for scale: --decode-only --decode-all (no frame skipping)" "$(ms "$all_cpu")" "$(ms "$all_wall")"
echo "speed-up over the reference (CPU): $(ratio "$ref_cpu" "$ours_cpu")x  (wall: $(ratio "$ref_wall" "$ours_wall")x; goal >= 3x)"
echo "av-extract / decode floor (CPU):   $(ratio "$ours_cpu" "$floor_cpu")x  (wall: $(ratio "$ours_wall" "$floor_wall")x; goal <= 1.2x)"

# -j 2 against -j 1 on 3 copies of the clips (wall time: parallelism is what is measured)
big=()
for _ in 1 2 3; do big+=("${clips[@]}"); done
load=$(cut -d' ' -f1 /proc/loadavg)
read -r j1_cpu j1_wall < <(best "$bin/av-extract" -j 1 "${big[@]}" -o /dev/null)
read -r j2_cpu j2_wall < <(best "$bin/av-extract" -j 2 "${big[@]}" -o /dev/null)
echo "-j 2 vs -j 1 on ${#big[@]} clips (wall): $j1_wall s -> $j2_wall s, scaling $(ratio "$j1_wall" "$j2_wall")x (goal >= 1.8x;" \
     "load average $load on $(nproc) cores: the wall ratio is only meaningful on otherwise idle cores)"
echo "-j 2 vs -j 1 CPU per clip: $(ms "$j1_cpu" | awk -v k=3 '{print $1/k}') ms -> $(ms "$j2_cpu" | awk -v k=3 '{print $1/k}') ms" \
     "(equal CPU means no parallel overhead: the wall scaling on free cores is then bounded only by them)"
