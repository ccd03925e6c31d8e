#!/bin/bash
# test_launch.sh: the paper-table pipelines (pipelines/Makefile, stage.sh; cav-tables(7)) start the training
# tools under LAUNCH and pass DEVICE as --device, as the man page's multi-GPU lines (LAUNCH="mpirun -np 8"
# DEVICE=cuda) need. LAUNCH is a wrapper script that records its argv and stands in for the training (it
# writes the model file the next stage reads), so no tool runs: a pretraining stage and the fine-tuning stage
# on it, through make at mini scale, on stand-in data (empty shards made up to date for make). Seconds.
set -u
unset MAKEFLAGS MFLAGS MAKELEVEL
SRC=${CAV_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${CAV_BUILD:-$SRC/build}
W=$(mktemp -d "${TMPDIR:-/tmp}/cav-launch-test-XXXXXX")
trap 'rm -rf "$W"' EXIT
fails=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; fails=$((fails + 1)); }

# the launcher: one line per start (its argv), then what the tool would leave (-o DIR, and for cav-pretrain
# the model of its last epoch -e E)
cat >"$W/launch" <<'EOF'
#!/bin/bash
echo "$*" >>"$LAUNCH_LOG"
while [ $# -gt 0 ]; do
    case $1 in cav-*) tool=$1 ;; -o) out=$2 ;; -e) e=$2 ;; esac
    shift
done
mkdir -p "$out/models"
[ "$tool" = cav-pretrain ] && : >"$out/models/audio_model.$e.safetensors"
exit 0
EOF
chmod +x "$W/launch"
export LAUNCH_LOG=$W/launch.log

# stand-in data older than nothing make would rebuild it from: the AV-Digits source, its shards, the views
for v in as2m as20k; do
    mkdir -p "$W/src/avd" "$W/data/avd" "$W/view/$v"
    touch -d '-3 sec' "$W/src/avd/manifest.txt"
    echo 'digit+scene' >"$W/src/avd/label-version" # the default LABELS_avd (pipelines/Makefile)
    touch -d '-3 sec' "$W/src/avd/label-version"
    touch -d '-2 sec' "$W/data/avd/ready"
    for s in train eval ret; do : >"$W/view/$v/$s.h5"; done
    echo 4 >"$W/view/$v/label-dim"
    touch -d '-1 sec' "$W/view/$v/ready"
done
mk=(make -s --no-print-directory -C "$SRC/pipelines" SCALE=mini W="$W" BIN="$BUILD/bin")
pt=$("${mk[@]}" --eval 'print-%: ; @echo $($*)' print-PT_AVMAE)
ft=$("${mk[@]}" --eval 'FTX = $(call ft,$(PT_AVMAE),as20k,as20k,multimodal)' --eval 'print-%: ; @echo $($*)' \
    print-FTX)
if ! out=$("${mk[@]}" LAUNCH="$W/launch -np 2 --bind-to none" DEVICE=cuda "$ft" 2>&1); then
    fail launch_stages "make $ft: $out"
    exit 1
fi
mapfile -t starts <"$LAUNCH_LOG"
echo "  launched: ${#starts[@]} starts; first: ${starts[0]:0:110}..."
check() { # check NAME LINE TOOL: LINE starts with LAUNCH's words then TOOL, and passes --device cuda
    case $2 in
    "-np 2 --bind-to none $3 "*"--device cuda "*"-o $4") pass "$1" ;;
    *) fail "$1" "argv: $2" ;;
    esac
}
[ "${#starts[@]}" = 2 ] && pass launch_two_starts || fail launch_two_starts "${#starts[@]} starts: ${starts[*]}"
check launch_pretrain_under_launch_with_device "${starts[0]:-}" cav-pretrain "$W/pt/$pt"
check launch_finetune_under_launch_with_device "${starts[1]:-}" cav-finetune "${ft%/done}"
[ -f "$ft" ] && [ -f "$W/pt/$pt/done" ] && pass launch_stages_done || fail launch_stages_done "no done files"
exit $((fails > 0))
