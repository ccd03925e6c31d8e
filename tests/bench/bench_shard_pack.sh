#!/usr/bin/env bash
# bench_shard_pack.sh: shard-pack throughput on AudioSet-like records (fbank f32 [1024,128] with half-float
# precision, wave i16 [160000], labels f32 [527], weight), against a baseline measured in the same run:
# the zstd command-line tool compressing (-3, one thread) and decompressing the same raw tensor bytes.
# Prints CPU seconds and the ratio to the baseline for: stream -> shard, shard -> stream, --verify, and a
# shuffled read of the shard. Not a test: it asserts nothing. N records (default 300) via $BENCH_N.
set -euo pipefail
BIN=${CAV_BIN:-build/bin}
N=${BENCH_N:-300}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
/usr/bin/python3 - "$dir" "$N" <<'PY'
import sys, os
sys.path.insert(0, os.path.join(os.environ.get("CAV_SRC", "."), "tests/tools"))
import cavstream, numpy as np
d, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(1)
base = rng.standard_normal((1024, 128)).astype(np.float32)
recs, raw = [], open(os.path.join(d, "raw.bin"), "wb")
for i in range(n):
    fb = (base + 0.01 * i).astype(np.float16).astype(np.float32)
    w = (3000 * np.sin(np.arange(160000) * (0.01 + 0.001 * i)) + rng.integers(-50, 50, 160000)).astype(np.int16)
    lab = np.zeros(527, np.float32); lab[i % 527] = 1
    t = [("fbank", fb), ("wave", w), ("labels", lab), ("weight", np.array(1.5, np.float32))]
    for _, a in t: raw.write(a.tobytes())
    recs.append(("c%06d" % i, {"source": "/x/%d.mp4" % i}, t))
open(os.path.join(d, "in.cavs"), "wb").write(cavstream.encode(recs))
PY
cpu() { # cpu seconds (user+sys) of a command
    /usr/bin/time -f "%U %S" -o "$dir/t" "$@" >/dev/null 2>"$dir/err" || { cat "$dir/err"; exit 1; }
    awk '{printf "%.2f", $1+$2}' "$dir/t"
}
raw_mb=$(du -m "$dir/raw.bin" | cut -f1)
zc=$(cpu zstd -3 -T1 -q -f "$dir/raw.bin" -o "$dir/raw.zst")
zd=$(cpu zstd -d -T1 -q -f "$dir/raw.zst" -o "$dir/raw.out")
base=$(awk -v a="$zc" -v b="$zd" 'BEGIN{printf "%.2f", a+b}')
echo "records: $N, raw tensor bytes: ${raw_mb} MB"
echo "baseline zstd -3 compress + decompress of the raw bytes: ${base} s CPU (${zc} + ${zd})"
report() { awk -v n="$1" -v t="$2" -v b="$base" -v mb="$raw_mb" 'BEGIN{printf "%-34s %6.2f s CPU  %6.0f MB/s  ratio to baseline %.2f\n", n, t, mb/t, t/b}'; }
report "stream -> shard" "$(cpu "$BIN/shard-pack" "$dir/in.cavs" -o "$dir/s.h5")"
report "shard -> stream" "$(cpu "$BIN/shard-pack" "$dir/s.h5" -o "$dir/back.cavs")"
report "--verify shard" "$(cpu "$BIN/shard-pack" --verify "$dir/s.h5")"
report "shuffled shard -> stream" "$(cpu "$BIN/shard-pack" --shuffle 1 "$dir/s.h5" -o "$dir/shuf.cavs")"
report "stream -> stream" "$(cpu "$BIN/shard-pack" "$dir/in.cavs" -o "$dir/s2.cavs")"
echo "sizes: stream $(du -m "$dir/in.cavs" | cut -f1) MB, shard $(du -m "$dir/s.h5" | cut -f1) MB, zstd -3 $(du -m "$dir/raw.zst" | cut -f1) MB"
