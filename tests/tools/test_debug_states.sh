#!/usr/bin/env bash
# test_debug_states.sh: the C model against every PyTorch debug state of tests/ref/gen_debug_states.py
# (cav-pretrain --check-debug-state: outputs, forward_feat, every gradient, the parameters PyTorch leaves
# without a gradient, 5 Adam steps), and a handful of small states again under ASan/UBSan.
# DEVICE=cuda (make check-cuda) runs the same states on that backend with the same tolerances; the ASan runs
# stay on the CPU (compute-sanitizer checks the GPU's memory: tests/cuda/test_sanitizer.sh).
set -u
dir=$CAV_REF/gen_debug_states
device=${DEVICE:-cpu}
n=0
for f in "$dir"/*.safetensors; do
    name=$(basename "$f" .safetensors)
    n=$((n + 1))
    if out=$("$CAV_BIN/cav-pretrain" --device "$device" --check-debug-state "$f" 2>&1); then
        last=$(tail -n 1 <<<"$out")
        case "$last" in # the state ran on the device asked for (cuda names itself cuda:N)
            *" on $device"*) echo "PASS state_$name: $last" ;;
            *) echo "FAIL state_$name: not run on $device: $last" ;;
        esac
    else
        echo "FAIL state_$name: $(grep -v 'max_rel=[0-9.]*e-0[5-9]' <<<"$out" | tail -n 5 | tr '\n' ' ')"
    fi
done
[ "$n" -ge 28 ] && echo "PASS all_states_present ($n)" || echo "FAIL all_states_present: $n states in $dir"
for name in tiny_small_input variant_audio_mae ft_missingvideoonly_ce mask_tf; do
    if [ "$device" != cpu ]; then
        echo "SKIP asan_state_$name: ASan runs the CPU backend (DEVICE=$device)"
        continue
    fi
    if out=$("$CAV_ASAN_BIN/cav-pretrain" --check-debug-state "$dir/$name.safetensors" 2>&1); then
        echo "PASS asan_state_$name"
    else
        echo "FAIL asan_state_$name: $(tail -n 5 <<<"$out" | tr '\n' ' ')"
    fi
done
# A state outside tolerance must fail: perturb one gradient of a copy and expect exit 2.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${CAV_PYTHON:-/usr/bin/python3}" - "$dir/tiny_small_input.safetensors" "$tmp/bad.safetensors" <<'PY'
import json, struct, sys
src, dst = sys.argv[1], sys.argv[2]
b = bytearray(open(src, 'rb').read())
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
e = h['grad.blocks_u.0.mlp.fc1.weight']
o = 8 + n + e['data_offsets'][0]
v = struct.unpack('<f', b[o:o + 4])[0]
b[o:o + 4] = struct.pack('<f', v + 1e-2)  # far above 1e-4 of the tensor's scale
open(dst, 'wb').write(b)
PY
"$CAV_BIN/cav-pretrain" --device "$device" --check-debug-state "$tmp/bad.safetensors" >"$tmp/out" 2>&1
rc=$?
if [ $rc -eq 2 ] && grep -q 'outside tolerance' "$tmp/out"; then echo "PASS perturbed_state_fails"; else echo "FAIL perturbed_state_fails: exit $rc"; fi
printf 'garbage' >"$tmp/junk.safetensors"
"$CAV_BIN/cav-pretrain" --device "$device" --check-debug-state "$tmp/junk.safetensors" >/dev/null 2>&1
rc=$?
[ $rc -eq 2 ] && echo "PASS junk_state_refused" || echo "FAIL junk_state_refused: exit $rc"
