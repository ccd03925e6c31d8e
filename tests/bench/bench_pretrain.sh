#!/usr/bin/env bash
# bench_pretrain.sh: pretraining throughput on real clips (a small AV-Digits build through av-extract | fbank
# | shard-pack), at the tiny and base configs, and the data loader alone against the tiny training step
# (goal: the loader at least 3x faster than the step consumes). Prints samples/s and the ratio; not a test.
set -euo pipefail
B=${CAV_BUILD:-build}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
N_TRAIN=40 N_TEST=0 JOBS=2 SEED=3 "$CAV_SRC/pipelines/av-digits/build.sh" "$work/avd" >/dev/null 2>&1
av-extract -j 2 "$work"/avd/train/* 2>/dev/null | fbank --drop-wave 2>/dev/null | shard-pack -o "$work/train.h5" 2>/dev/null
rate() { # samples/s over the metrics lines after the first (warm-up) step
    /usr/bin/python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][1:]; print("%.3f" % (sum(x["samples_per_s"] for x in r)/len(r)))' "$1"
}
threads=${OMP_NUM_THREADS:-2}
echo "machine: $(nproc) cores, OMP_NUM_THREADS=$threads; load: $(cut -d' ' -f1-3 /proc/loadavg)"
loader=$(cav-pretrain --loader-only --model tiny -b 8 --contrast-groups 1 --loader-threads 2 "$work/train.h5" | sed -n 's/.*: \([0-9.]*\) samples\/s.*/\1/p')
cav-pretrain --model tiny -b 8 --contrast-groups 1 -e 1 --max-steps 4 --log-every 1 -o "$work/tiny" "$work/train.h5" 2>/dev/null
tiny=$(rate "$work/tiny/metrics.jsonl")
cav-pretrain -b 4 --contrast-groups 1 -e 1 --max-steps 3 --log-every 1 -o "$work/base" "$work/train.h5" 2>/dev/null
base=$(rate "$work/base/metrics.jsonl")
echo "loader alone (2 threads):        $loader samples/s"
echo "tiny training step (batch 8):    $tiny samples/s"
echo "base training step (batch 4):    $base samples/s"
/usr/bin/python3 -c 'import sys; l,t=map(float,sys.argv[1:]); print("loader / tiny step: %.1fx (goal >= 3x)" % (l/t))' "$loader" "$tiny"
