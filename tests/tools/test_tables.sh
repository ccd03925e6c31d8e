#!/bin/bash
# test_tables.sh: one of the paper's tables end to end through pipelines/Makefile at mini scale (cav-tables(7)):
# Table 3's retrieval, CAV-MAE against AV-MAE and CAV, on a small AV-Digits set with the tiny model on the CPU
# (AV-Digits' clips are built once into build/tables-check/src and kept; every stage after them runs afresh).
# Checks: the table has a row per model with R@k and the median rank in range, the data coverage, the commit and
# the cost; a kill -9 in the middle of a pretraining stage is resumed from its checkpoint by the next make (not
# restarted); a second make after a finished one does nothing. The figures are printed beside chance, but two
# epochs on 80 clips are too few for the contrastive head to learn (it needs some 300 steps: pipelines/demo.sh),
# so the paper's qualitative result (CAV-MAE far above chance, AV-MAE near it) is checked by the long test
# tests/long/test_tables_mini.sh at the mini defaults, not here. Then Tables 2h and 2i from those pretraining runs
# (2 fine-tuning epochs): 2h's Middle and Aggregation are the final evaluation's frame-5 and aggregated scores of
# the same runs; tables.py's ensemble of a run with itself equals the mAP cav-finetune computed (an independent
# implementation: C against sklearn); a run without final_eval.json falls back to result.csv with a note. Another
# label version (LABELS_avd) prepares the data again from the decoded clips, and only once.
# The fine-tuning runs mix waveforms, as the reference: prepare.py's shards hold each clip's waveform, and no
# fine-tuning log has cav-finetune's warning that mixup mixes fbanks; a run whose log has it (one made on shards of
# an earlier prepare.py) is noted in the table and, once its shards hold waveforms, redone from the start.
# Environment: TABLES_CHECK_* below override the sizes (defaults: 80 + 24 clips, 2 epochs).
set -u
# a make of its own, not a sub-make of the one running the tests (whose jobserver it cannot use)
unset MAKEFLAGS MFLAGS MAKELEVEL
SRC=${CAV_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${CAV_BUILD:-$SRC/build}
W=$BUILD/tables-check
export CACHE=${CACHE:-$BUILD/cache/av-digits}
fails=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; fails=$((fails + 1)); }
rm -rf "$W/data" "$W/view" "$W/pt" "$W/ft" "$W/ret" "$W/tables"
mkdir -p "$W"
N_TRAIN=${TABLES_CHECK_TRAIN:-80} N_TEST=${TABLES_CHECK_TEST:-24} EPOCHS=${TABLES_CHECK_EPOCHS:-2}
# CAV-MAE and CAV at lambda_c 0.1 (the paper's rows that learn retrieval fastest), AV-MAE; AudioSet's column only.
mk=(make -s --no-print-directory -C "$SRC/pipelines" SCALE=mini W="$W" AVD_TRAIN="$N_TRAIN" AVD_TEST="$N_TEST"
    MINI_E12="$EPOCHS" THREADS=2 T3_DATA=as
    'T3_MODELS=CAV-MAE~lambda_c~0.1:$(PT_CAVMAE_C01) AV-MAE:$(PT_AVMAE) CAV~lambda_c~0.1:$(PT_CAV_C01)' table3)
log=$W/make.log
# The first make is killed (kill -9, the whole process group) once the first pretraining stage has written a
# checkpoint after its first epoch (result.csv has a row); the second resumes it.
setsid "${mk[@]}" >"$log" 2>&1 &
pid=$!
killed=""
for _ in $(seq 1 3000); do
    r=$(compgen -G "$W/pt/*_cav-mae_*/result.csv" | head -1)
    if [ -n "$r" ] && [ -s "$r" ] && compgen -G "${r%/result.csv}/checkpoints/*/COMPLETE" >/dev/null &&
        [ ! -e "${r%/result.csv}/done" ]; then
        kill -9 -- -"$pid" 2>/dev/null && killed=yes
        break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
done
wait "$pid" 2>/dev/null
[ -n "$killed" ] || { fail kill_midway "the first make ended before a checkpoint: $(tail -5 "$log")"; exit 1; }
t0=$(date +%s)
if ! "${mk[@]}" >>"$log" 2>&1; then
    fail make_table3 "$(tail -15 "$log")"; exit 1
fi
secs=$(($(date +%s) - t0))
run=$(ls -d "$W"/pt/*_cav-mae_*/ | head -1)
run=${run%/}
if grep -q "cav-pretrain: resuming $run" "$log" && [ "$(wc -l <"$run/result.csv")" = "$EPOCHS" ]; then
    pass "kill9_resumes_stage (resumed from $(grep -o 'e[0-9]*-s[0-9]*' "$run.log" | head -1 || echo ?), $EPOCHS epochs in result.csv)"
else
    fail kill9_resumes_stage "no resume of $run in the log, or result.csv has $(wc -l <"$run/result.csv") rows"
fi
T=$W/tables/table3.md
[ -f "$T" ] || { fail table3_written "no $T"; exit 1; }
sed 's/^/  /' "$T"
/usr/bin/python3 - "$T" "$N_TEST" <<'EOF' || fails=$((fails + 1))
import re, sys
text = open(sys.argv[1]).read()
n = int(sys.argv[2])
rows = {}
for line in text.splitlines():
    m = re.match(r'\| (.+?) \| ([\d.]+) ([\d.]+) ([\d.]+) \(MR ([\d.]+)\) \(', line)
    if m:
        rows[m.group(1)] = [float(x) for x in m.group(2, 3, 4, 5)]
bad = 0
def check(name, ok, why):
    global bad
    print(('PASS %s (%s)' if ok else 'FAIL %s: %s') % (name, why))
    bad += not ok
want = ['CAV-MAE lambda_c 0.1', 'AV-MAE', 'CAV lambda_c 0.1']
check('table3_rows', sorted(rows) == sorted(want) and all(0 <= r1 <= r5 <= r10 <= 100 and 1 <= mr <= n
                                                          for r1, r5, r10, mr in rows.values()), str(rows))
chance = 100.0 / n
print('  figures (V->A R@1 R@5 R@10 in %%, MR; chance R@1 %.1f%%, R@5 %.1f%%, MR about %g): %s'
      % (chance, 5 * chance, n / 2, '; '.join('%s %s' % (k, v) for k, v in rows.items())))
check('table3_coverage', re.search(r'avd (train|eval): \d+ of \d+ listed clips used', text) is not None, 'coverage section')
check('table3_commit', 'Commit ' in text and 'Cost at full scale: about' in text, 'commit and cost lines')
sys.exit(1 if bad else 0)
EOF
m0=$(stat -c %Y "$T")
out=$("${mk[@]}" 2>&1)
if [ -z "$out" ] && [ "$(stat -c %Y "$T")" = "$m0" ]; then
    pass "second_make_does_nothing (no output, table untouched; the finished run took ${secs} s)"
else
    fail second_make_does_nothing "output: $out"
fi
# An upgrade of the data scripts (make -W: as if prepare.py and labels.py were new) prepares the data again,
# decoding nothing, and reruns no stage: the prepared data did not change, so neither does data/avd/ready.
r0=$(stat -c %Y.%y "$W/data/avd/ready")
out=$("${mk[@]}" -W "$SRC/pipelines/prepare.py" -W "$SRC/pipelines/av-digits/labels.py" 2>&1)
if grep -q "0 to decode" <<<"$out" && ! grep -q "stage:" <<<"$out" && [ "$(stat -c %Y "$T")" = "$m0" ] &&
    [ "$(stat -c %Y.%y "$W/data/avd/ready")" = "$r0" ]; then
    pass "new_data_scripts_rerun_no_stage (prepared again, nothing decoded, no stage, ready and table untouched)"
else
    fail new_data_scripts_rerun_no_stage "output: $(tail -5 <<<"$out")"
fi

# Fine-tuning tables from the same pretraining runs: Table 2h (Middle = frame 5 of the final evaluation, Aggregation =
# the ten frames' mean, from the same two runs) and Table 2i (linear probes; SM Ensemble = the mean of an audio-only
# and a video-only probe's --predictions), the models mapped onto the runs above, 2 fine-tuning epochs.
ft=("${mk[@]:0:${#mk[@]}-1}" MINI_FT_E=2 'PT_SCALE=$(PT_CAVMAE_C01)' 'PT_AUDIOMAE=$(PT_AVMAE)' 'PT_VISUALMAE=$(PT_AVMAE)'
    'PT_CAVMAE=$(PT_CAVMAE_C01)' table2h table2i)
if ! "${ft[@]}" >>"$log" 2>&1; then
    fail make_table2h_2i "$(tail -15 "$log")"; exit 1
fi
sed 's/^/  /' "$W/tables/table2h.md" "$W/tables/table2i.md"
WARN='holds no wave: mixup mixes its fbank'
/usr/bin/python3 - "$W" "$SRC/pipelines/tables.py" "$WARN" <<'EOF' || fails=$((fails + 1))
import glob, json, os, re, shutil, subprocess, sys
import h5py
import numpy as np
w, tables, warn = sys.argv[1:4]
bad = 0
def check(name, ok, why):
    global bad
    print(('PASS %s (%s)' if ok else 'FAIL %s: %s') % (name, why))
    bad += not ok
def cells(path):
    out = {}
    for line in open(path):
        m = re.match(r'\| (.+?) \| (.+) \|$', line.strip())
        if m and m.group(1) != 'model' and not m.group(1).startswith('-'):
            out[m.group(1)] = [c.split(' (')[0] for c in m.group(2).split(' | ')]
    return out
def run(mode):
    return glob.glob(os.path.join(w, 'ft', '*_cav-mae_c0.1_*', 'ep*_as20k_as20k_%s' % mode))[0]
for t in ('table2h', 'table2i'):
    if not os.path.exists(os.path.join(w, 'tables', t + '.md')):
        print('FAIL %s_written: no %s.md' % (t, t))
        sys.exit(1)
t2h = cells(os.path.join(w, 'tables', 'table2h.md'))
want, got = {}, {}
for i, mode in enumerate(('videoonly', 'multimodal')):
    ev = json.load(open(os.path.join(run(mode), 'final_eval.json')))
    want[('Middle', i)] = '%.1f' % (100 * ev['frame_res'][ev['frames'].index(5)])
    want[('Aggregation', i)] = '%.1f' % (100 * ev['mAP'])
    for r in ('Middle', 'Aggregation'):
        got[(r, i)] = t2h.get(r, ['?', '?'])[i]
check('table2h_final_eval', ev['aggregated'] and ev['frames'] == list(range(10)) and got == want,
      'V, AV: Middle %s, %s; Aggregation %s, %s (from final_eval.json: %s)'
      % (got[('Middle', 0)], got[('Middle', 1)], got[('Aggregation', 0)], got[('Aggregation', 1)], want == got))
t2i = cells(os.path.join(w, 'tables', 'table2i.md'))
check('table2i_ensemble', 'SM Ensemble' in t2i and all(re.match(r'\d+\.\d$', v[0]) for v in t2i.values()), str(t2i))
# tables.py's mAP of the ensemble of a run with itself is that run's final mAP computed by cav-finetune (C), for a
# run evaluated on ten frames (predictions_agg.csv) and one evaluated on one (predictions_frame5.csv)
out = os.path.join(w, 'tables', 'self.md')
for mode in ('audioonly-lp', 'videoonly-lp'):
    r = glob.glob(os.path.join(w, 'ft', '*', 'ep*_as20k_as20k_%s' % mode))[0]
    d = os.path.join(r, 'done')
    subprocess.run([tables, 'table', 'x', '--out', out, '--w', w, '--scale', 'mini', 'a|as20k-AV|%s&%s' % (d, d)],
                   check=True, stdout=subprocess.DEVNULL)
    ens = float(cells(out)['a'][0])
    fin = 100 * json.load(open(os.path.join(r, 'final_eval.json')))['mAP']
    check('ensemble_self_%s' % mode, abs(ens - fin) <= 0.051, 'tables.py %.1f, cav-finetune %.3f' % (ens, fin))
# a run without final_eval.json: result.csv's last epoch, and a note that says so; no frame score
old = os.path.join(w, 'ft', 'old')
shutil.rmtree(old, ignore_errors=True)
shutil.copytree(run('multimodal'), old)
os.unlink(os.path.join(old, 'final_eval.json'))
subprocess.run([tables, 'table', 'x', '--out', out, '--w', w, '--scale', 'mini', 'a|as20k-AV|%s/done' % old,
                'b|as20k-AV|%s/done@frame5' % old], check=True, stdout=subprocess.DEVNULL)
text, c = open(out).read(), cells(out)
last = open(os.path.join(old, 'result.csv')).read().split()[-1].split(',')
check('no_final_eval_fallback', c['a'][0] == '%.1f' % (100 * float(last[1])) and c['b'][0] == 'n/a'
      and "no final_eval.json; the score is result.csv's last epoch" in text and 'no frame5 score' in text, str(c))
shutil.rmtree(old)
# Mixup mixes waveforms: the shards hold them in every row, the runs had mixup > 0 and none logged the warning that it
# mixes fbanks (lib/train/loader.c)
rows = {}
for split in ('train', 'eval'):
    with h5py.File(os.path.join(w, 'data', 'avd', split + '.h5'), 'r') as f:
        g = f['wave'] if 'wave' in f else None
        n = len(f['id'])
        have = 0 if g is None else n if isinstance(g, h5py.Dataset) else int(np.sum(g['ndim'][:] >= 0))
        rows[split] = (have, n)
check('shards_hold_waves', all(h == n > 0 for h, n in rows.values()),
      ', '.join('%s: wave in %d of %d rows' % (k, h, n) for k, (h, n) in rows.items()))
runs = sorted(d for d in glob.glob(os.path.join(w, 'ft', '*', '*')) if os.path.exists(os.path.join(d, 'args.json')))
mix = [d for d in runs if float(json.load(open(os.path.join(d, 'args.json'))).get('mixup', 0)) > 0]
warned = [d for d in runs if warn in open(d + '.log', errors='replace').read()]
check('finetune_mixes_waves', len(mix) == len(runs) > 0 and not warned,
      '%d fine-tuning runs, %d with mixup > 0, %d logged "%s": %s' % (len(runs), len(mix), len(warned), warn, warned))
text = ''.join(open(os.path.join(w, 'tables', t + '.md')).read() for t in ('table2h', 'table2i'))
check('tables_no_fbank_mixup_note', 'mixup mixed fbanks' not in text and 'mixup mixes waveforms' in text,
      'table2h and 2i say mixup mixes waveforms, note no run that mixed fbanks')
sys.exit(1 if bad else 0)
EOF
# A run with cav-finetune's warning that it mixed fbanks in its log is noted by tables.py and redone by the next make
# (its shards hold waves), the old log kept beside.
run=$(ls -d "$W"/ft/*/ep*_as20k_as20k_audioonly-lp | head -1)
echo "warning: $W/data/avd/train.h5 $WARN after cut/pad, before SpecAugment (injected)" >>"$run.log"
"$SRC/pipelines/tables.py" table x --out "$W/tables/self.md" --w "$W" --scale mini "a|as20k-A|$run/done" >/dev/null
if grep -q "a / as20k-A: $run: mixup mixed fbanks" "$W/tables/self.md"; then
    pass "tables_note_fbank_mixup (a run whose log has the warning is named in the notes)"
else
    fail tables_note_fbank_mixup "$(grep -A3 '## Notes' "$W/tables/self.md")"
fi
# (the table too: Make remakes a missing stage, an intermediate file, only for a target it must remake)
rm -f "$run/done" "$W/tables/table2i.md"
if "${ft[@]}" >>"$log" 2>&1 && grep -q "cav-finetune: $run mixed fbanks (its shards had no waveform); starting afresh" "$log" &&
    [ -f "$run/done" ] && [ -f "$run.fbank-mixup.log" ] && ! grep -q "$WARN" "$run.log" &&
    ! grep -q 'mixup mixed fbanks' "$W/tables/table2i.md"; then
    pass "fbank_mixup_run_redone (${run##*/}: started afresh, old log kept as ${run##*/}.fbank-mixup.log)"
else
    fail fbank_mixup_run_redone "$(tail -5 "$log")"
fi
# Another label version (LABELS_avd) prepares the dataset again, the decoded clips reused; the same version again
# does nothing; back to the default, the shards carry its classes again.
lv=(make -s --no-print-directory -C "$SRC/pipelines" SCALE=mini W="$W" AVD_TRAIN="$N_TRAIN" AVD_TEST="$N_TEST")
ready=$W/data/avd/ready
t_old=$(stat -c %Y.%y "$ready")
out1=$("${lv[@]}" LABELS_avd=scene "$ready" 2>&1) && k1=$(cat "$W/data/avd/label-dim")
out2=$("${lv[@]}" LABELS_avd=scene "$ready" 2>&1)
t_mid=$(stat -c %Y.%y "$ready")
out3=$("${lv[@]}" "$ready" 2>&1) && k3=$(cat "$W/data/avd/label-dim")
out4=$("${lv[@]}" "$ready" 2>&1)
if [ "${k1:-}" = 17 ] && [ "${k3:-}" = 27 ] && [ -z "$out2" ] && [ -z "$out4" ] && [ "$t_mid" != "$t_old" ] &&
    grep -q "0 to decode" <<<"$out1" && grep -q "0 to decode" <<<"$out3"; then
    pass "label_version_switch (scene: $k1 classes, default: $k3; no clip decoded again; the same version twice: nothing)"
else
    fail label_version_switch "label-dim ${k1:-?} / ${k3:-?} (want 17 / 27); second makes printed '$out2' '$out4'; $(tail -3 <<<"$out1")"
fi
exit $((fails > 0))
