#!/bin/bash
# test_av_digits.sh: builds a tiny AV-Digits dataset (pipelines/av-digits/build.sh) and checks what a user of
# it relies on: counts, real 10 s clips with one audio and one video stream (ffprobe), audio and frames
# placed as the plan says, the reference's JSON data files and label CSV, labels in range, train/test voices
# and images disjoint (from the provenance file), each clip's scene shown by both modalities (its background
# hue in the decoded frames, its noise or silence in the decoded audio), balanced classes and scenes, same
# seed -> same bytes, the label versions (labels.py), the multi-label variant, and refusal of bad settings.
set -u
SRC=${CAV_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${CAV_BUILD:-$SRC/build}
export CACHE=${CACHE:-$BUILD/cache/av-digits}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/test_av_digits.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
B=$SRC/pipelines/av-digits/build.sh
PY=/usr/bin/python3
fails=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; fails=$((fails + 1)); }

if SEED=7 N_TRAIN=40 N_TEST=10 JOBS=2 "$B" "$TMP/a" >"$TMP/a.log" 2>&1; then
    pass "build_tiny ($(sed -n "s/^av-digits: done in \([^:]*\):.*/\1/p" "$TMP/a.log"))"
else
    fail build_tiny "build.sh exited $?: $(tail -5 "$TMP/a.log")"
    echo "FAIL: the remaining checks need the build"; exit 1
fi

# Every check on one build, in Python: prints PASS/FAIL lines itself.
check() {  # check DIR N_TRAIN N_TEST MULTI
"$PY" - "$@" <<'EOF'
import colorsys, csv, json, os, re, subprocess, sys
import numpy as np
out, n_train, n_test, multi = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == '1'
tag = 'multi_' if multi else ''
bad = 0
def ok(name, cond, why=''):
    global bad
    if cond:
        print('PASS %s%s' % (tag, name))
    else:
        print('FAIL %s%s: %s' % (tag, name, why)); bad += 1

plan = [json.loads(l) for l in open(os.path.join(out, 'provenance.jsonl'))]
by_split = {s: [c for c in plan if c['split'] == s] for s in ('train', 'test')}
files = {s: sorted(os.listdir(os.path.join(out, s))) for s in ('train', 'test')}
ok('counts', len(by_split['train']) == n_train and len(by_split['test']) == n_test
   and len(files['train']) == n_train and len(files['test']) == n_test,
   'plan %d/%d, files %d/%d' % (len(by_split['train']), len(by_split['test']), len(files['train']), len(files['test'])))

# label CSV: the reference's header, 10 rows, indices 0..9
rows = list(csv.reader(open(os.path.join(out, 'class_labels_indices.csv'))))
mids = {r[1]: int(r[0]) for r in rows[1:]}
ok('label_csv', rows[0] == ['index', 'mid', 'display_name'] and [int(r[0]) for r in rows[1:]] == list(range(10))
   and len(mids) == 10 and all(r[2] for r in rows[1:]), 'rows %r' % rows[:3])

# JSON data files: the reference's keys, paths that exist, labels that are CSV mids matching the plan
errs = []
for s in ('train', 'test'):
    data = json.load(open(os.path.join(out, s + '.json')))['data']
    if len(data) != len(by_split[s]):
        errs.append('%s.json has %d entries' % (s, len(data)))
    for e, c in zip(data, by_split[s]):
        if set(e) != {'video_id', 'wav', 'video_path', 'labels'}:
            errs.append('keys %r' % sorted(e))
        elif not (os.path.isabs(e['wav']) and os.path.isfile(e['wav']) and os.path.isfile(e['video_path'])):
            errs.append('%s: missing file %s' % (e['video_id'], e['wav']))
        elif os.path.splitext(os.path.basename(e['wav']))[0] != e['video_id'] or e['video_id'] != c['video_id']:
            errs.append('%s: id does not match file %s' % (e['video_id'], e['wav']))
        labs = e['labels'].split(',')
        if any(l not in mids for l in labs) or [mids[l] for l in labs] != c['digits']:
            errs.append('%s: labels %s vs plan %s' % (e['video_id'], e['labels'], c['digits']))
ok('json_data_files', not errs, '; '.join(errs[:3]))

errs = []
for c in plan:
    d = c['digits']
    if multi:
        if len(d) != 3 or len(set(d)) != 3:
            errs.append('%s: digits %s' % (c['video_id'], d))
        # contiguous segments in label order, each at least 2 s
        runs = [c['second_digit'][0]] + [b for a, b in zip(c['second_digit'], c['second_digit'][1:]) if a != b]
        if runs != d or min(c['second_digit'].count(x) for x in d) < 2:
            errs.append('%s: seconds %s' % (c['video_id'], c['second_digit']))
        if {c['second_digit'][s['slot']] for s in c['speech']} != set(d):
            errs.append('%s: not every digit spoken' % c['video_id'])
    elif len(d) != 1 or c['second_digit'] != d * 10:
        errs.append('%s: digits %s' % (c['video_id'], d))
    if not all(0 <= x <= 9 for x in d):
        errs.append('%s: label out of range %s' % (c['video_id'], d))
    slots = [s['slot'] for s in c['speech']]
    if not 3 <= len(slots) <= 6 or len(set(slots)) != len(slots):
        errs.append('%s: slots %s' % (c['video_id'], slots))
    if any(s['digit'] != c['second_digit'][s['slot']] for s in c['speech']):
        errs.append('%s: a spoken digit differs from the digit shown' % c['video_id'])
    imgs = [f['image'] for f in c['frames']]
    if len(imgs) != 10 or len(set(imgs)) != 10 or any(int(f['image'].split('/')[0]) != c['second_digit'][t]
                                                      for t, f in enumerate(c['frames'])):
        errs.append('%s: images %s' % (c['video_id'], imgs))
    if c['noise'] and not 5 <= c['noise']['snr_db'] <= 30:
        errs.append('%s: snr %s' % (c['video_id'], c['noise']))
ok('labels_slots_images', not errs, '; '.join(errs[:3]))
if not multi:
    classes = sorted({c['digits'][0] for c in by_split['train']})
    ok('all_classes_in_train', classes == list(range(10)), str(classes))
ok('noise_in_most_clips', sum(c['noise'] is not None for c in plan) >= 0.6 * len(plan),
   '%d of %d' % (sum(c['noise'] is not None for c in plan), len(plan)))
if not multi:
    errs = ['%s: %s' % (s, np.bincount([c['digits'][0] for c in by_split[s]], minlength=10))
            for s, n in (('train', n_train), ('test', n_test))
            if list(np.bincount([c['digits'][0] for c in by_split[s]], minlength=10)) != [n // 10] * 10]
    ok('classes_balanced', not errs, '; '.join(errs))

# scenes in the plan: the noise is the scene's recording (none for 'quiet'), one hue per scene, 16 distinct
# hues on a 1/16 grid, every frame's background of the scene's hue (within the 1/64 jitter) or grey
def hue_dist(a, b):
    d = abs(a - b) % 1.0
    return min(d, 1.0 - d)
def hsv(rgb):
    return colorsys.rgb_to_hsv(*(np.asarray(rgb, dtype=np.float64) / 255.0))
errs = []
hue_of = {}
for c in plan:
    sc, hue = c['scene'], c['scene_hue']
    if hue_of.setdefault(sc, hue) != hue:
        errs.append('%s: scene %s has hues %s and %s' % (c['video_id'], sc, hue_of[sc], hue))
    if (sc == 'quiet') != (hue is None) or (sc == 'quiet') != (c['noise'] is None) \
            or (c['noise'] and c['noise']['name'] != sc):
        errs.append('%s: scene %s, hue %s, noise %s' % (c['video_id'], sc, hue, c['noise']))
        continue
    for f in c['frames']:
        h, s_, v = hsv(f['bg'])
        if (hue is None and s_ > 0) or (hue is not None and (hue_dist(h, hue) > 1 / 64 + 0.004 or s_ < 0.45)):
            errs.append('%s: scene %s (hue %s), planned background %s (hsv %.3f %.2f %.2f)'
                        % (c['video_id'], sc, hue, f['bg'], h, s_, v))
            break
hues = [h for h in hue_of.values() if h is not None]
if len(set(hues)) != len(hues) or any(abs(h * 16 - round(h * 16)) > 1e-9 for h in hues):
    errs.append('scene hues not distinct multiples of 1/16: %s' % hue_of)
ok('scenes_in_plan', not errs and len(hue_of) >= 5, '; '.join(errs[:3]) or 'only %d scenes' % len(hue_of))
# manifest: 17 scenes per split, counts as in the plan, balanced to within one clip
man = open(os.path.join(out, 'manifest.txt')).read()
errs = []
for s, n in (('train', n_train), ('test', n_test)):
    m = re.search(r'^%s clips per scene: (.*)$' % s, man, re.M)
    counts = dict((a, int(b)) for a, b in re.findall(r'(\S+) (\d+)', m.group(1))) if m else {}
    want = {}
    for c in by_split[s]:
        want[c['scene']] = want.get(c['scene'], 0) + 1
    if len(counts) != 17 or 'quiet' not in counts or sum(counts.values()) != n \
            or any(counts[k] != want.get(k, 0) for k in counts) or set(want) - set(counts) \
            or max(counts.values()) - min(counts.values()) > 1:
        errs.append('%s: manifest %s, plan %s' % (s, counts, want))
ok('scenes_balanced_manifest', not errs, '; '.join(errs))

# held-out: no voice group, voice, source recording or image of a test clip occurs in training
def used(s, key):
    return {x for c in by_split[s] for x in (
        [sp[key] for sp in c['speech']] if key != 'image' else [f['image'] for f in c['frames']])}
for key in ('group', 'voice', 'source', 'image'):
    both = used('train', key) & used('test', key)
    ok('disjoint_%s' % key, not both and used('test', key), 'shared: %s' % sorted(both)[:5])
sp = json.load(open(os.path.join(out, 'splits.json')))
ok('disjoint_split_lists', not set(sp['voice_groups']['train']) & set(sp['voice_groups']['test'])
   and not set(sp['voices']['train']) & set(sp['voices']['test']), 'splits.json lists overlap')
fams = {g.split('-')[0] for c in plan for s in c['speech'] for g in [s['group']]}
ok('voice_families', fams == {'tux', 'ast', 'espeak', 'flite'},
   'families used: %s' % sorted(fams))

# ffprobe: one video stream 224x224 at 25 fps with 250 frames, one audio stream, 10 s
errs = []
kinds = set()
for c in plan:
    path = os.path.join(out, c['file'])
    r = subprocess.run(['ffprobe', '-v', 'error', '-count_frames', '-print_format', 'json', '-show_streams',
                        '-show_format', path], capture_output=True, text=True)
    if r.returncode:
        errs.append('%s: ffprobe: %s' % (path, r.stderr.strip()[:200])); continue
    info = json.loads(r.stdout)
    v = [s for s in info['streams'] if s['codec_type'] == 'video']
    a = [s for s in info['streams'] if s['codec_type'] == 'audio']
    dur = float(info['format']['duration'])
    kinds.add((os.path.splitext(path)[1], v[0]['codec_name'] if v else None, a[0]['codec_name'] if a else None))
    if len(v) != 1 or len(a) != 1:
        errs.append('%s: %d video, %d audio streams' % (path, len(v), len(a)))
    elif (v[0]['width'], v[0]['height']) != (224, 224) or v[0]['avg_frame_rate'] != '25/1' \
            or int(v[0]['nb_read_frames']) != 250:
        errs.append('%s: video %sx%s %s %s frames' % (path, v[0]['width'], v[0]['height'],
                                                      v[0]['avg_frame_rate'], v[0]['nb_read_frames']))
    elif int(a[0]['sample_rate']) != c['audio_rate'] or int(a[0]['channels']) != c['channels']:
        errs.append('%s: audio %s Hz %s ch' % (path, a[0]['sample_rate'], a[0]['channels']))
    elif not 9.95 <= dur <= 10.1:
        errs.append('%s: duration %.3f' % (path, dur))
ok('ffprobe_streams_durations', not errs, '; '.join(errs[:3]))
expect = {('.mp4', 'h264', 'aac'), ('.webm', 'vp9', 'opus'), ('.mkv', 'h264', 'flac')}
ok('containers_codecs', kinds <= expect and ('.mp4', 'h264', 'aac') in kinds, str(sorted(kinds)))

# decoded content follows the plan: the background colour of each second's image, and louder audio in the
# seconds that hold a spoken digit than in the others
errs = []
for c in plan[:12] + by_split['test'][:4]:
    path = os.path.join(out, c['file'])
    vid = subprocess.run(['ffmpeg', '-v', 'error', '-i', path, '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-'],
                         capture_output=True).stdout
    fr = np.frombuffer(vid, np.uint8).reshape(-1, 224, 224, 3)[12::25]    # the middle frame of each second
    if len(fr) != 10:
        errs.append('%s: %d frames at 1 fps' % (path, len(fr))); continue
    for t in range(10):
        got = fr[t, 2:6, 2:6].reshape(-1, 3).mean(axis=0)
        if np.abs(got - np.array(c['frames'][t]['bg'])).max() > 20:
            errs.append('%s second %d: corner %s, planned background %s' % (path, t, got.round(), c['frames'][t]['bg']))
            break
    pcm = subprocess.run(['ffmpeg', '-v', 'error', '-i', path, '-ac', '1', '-ar', '16000', '-f', 's16le', '-'],
                         capture_output=True).stdout
    x = np.frombuffer(pcm, '<i2').astype(np.float64)[:160000]
    if len(x) < 159000:
        errs.append('%s: %d audio samples' % (path, len(x))); continue
    x = np.pad(x, (0, 160000 - len(x)))
    rms = np.sqrt((x.reshape(10, 16000) ** 2).mean(axis=1))
    spoken = sorted(s['slot'] for s in c['speech'])
    quiet = [t for t in range(10) if t not in spoken]
    if rms[spoken].mean() <= rms[quiet].mean() * 1.2:
        errs.append('%s: rms spoken %.0f vs others %.0f' % (path, rms[spoken].mean(), rms[quiet].mean()))
ok('decoded_content_follows_plan', not errs, '; '.join(errs[:3]))

# decoded scenes: in every clip, the background (the median of each middle frame's 2-pixel border; the digit
# never reaches it) has the scene's hue, averaged over the 10 seconds within 1/48 of the wheel (the hues are
# 1/16 apart) and each second within 1/32 (jitter 1/64 plus the codec), or is grey for the quiet scene; and
# the seconds without speech hold the scene's noise, or silence for the quiet scene
errs = []
lvl = {True: [], False: []}
border = np.zeros((224, 224), bool)
border[:2] = border[-2:] = True
border[:, :2] = border[:, -2:] = True
for c in plan:
    path = os.path.join(out, c['file'])
    vid = subprocess.run(['ffmpeg', '-v', 'error', '-i', path, '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-'],
                         capture_output=True).stdout
    fr = np.frombuffer(vid, np.uint8).reshape(-1, 224, 224, 3)[12::25]
    if len(fr) != 10:
        errs.append('%s: %d frames at 1 fps' % (path, len(fr))); continue
    bgs = [hsv(np.median(f[border], axis=0)) for f in fr]
    hue = c['scene_hue']
    if hue is None:
        if max(b[1] for b in bgs) > 0.06:
            errs.append('%s: quiet scene, background saturation up to %.3f' % (path, max(b[1] for b in bgs)))
    else:
        ang = np.array([b[0] for b in bgs]) * 2 * np.pi
        mean = (np.arctan2(np.sin(ang).mean(), np.cos(ang).mean()) / (2 * np.pi)) % 1.0
        worst = max(hue_dist(b[0], hue) for b in bgs)
        if hue_dist(mean, hue) > 1 / 48 or worst > 1 / 32 or min(b[1] for b in bgs) < 0.4:
            errs.append('%s: scene %s hue %.4f, decoded mean hue %.4f (worst second off by %.4f, saturation '
                        'down to %.2f)' % (path, c['scene'], hue, mean, worst, min(b[1] for b in bgs)))
    pcm = subprocess.run(['ffmpeg', '-v', 'error', '-i', path, '-ac', '1', '-ar', '16000', '-f', 's16le', '-'],
                         capture_output=True).stdout
    x = np.pad(np.frombuffer(pcm, '<i2').astype(np.float64)[:160000], (0, 160000))[:160000]
    rms = np.sqrt((x.reshape(10, 16000) ** 2).mean(axis=1))
    spoken = {s['slot'] for s in c['speech']}
    lvl[c['noise'] is None].append(float(np.median([rms[t] for t in range(10) if t not in spoken])))
quiet, noisy = lvl[True], lvl[False]
# silence is digital silence up to the codec (below -70 dBFS); the noise is at most 30 dB under the speech
if quiet and max(quiet) >= 10:
    errs.append('quiet scene: unspoken seconds at RMS %s (of 32768)' % np.round(quiet))
if min(noisy) < 10:
    errs.append('noisy scenes: an unspoken second at RMS %.1f' % min(noisy))
ok('decoded_scenes (%d clips, %d quiet: silence RMS <= %.1f, noise RMS >= %.1f)'
   % (len(plan), len(quiet), max(quiet, default=0), min(noisy)), not errs, '; '.join(errs[:3]))
sys.exit(1 if bad else 0)
EOF
}
check "$TMP/a" 40 10 0 || fails=$((fails + 1))

# the label versions (labels.py): each clip's labels are its digit and/or its scene from provenance.jsonl, every
# mid is a row of the version's CSV, the indices run 0..K-1; --first-train cuts the split; scene+tags adds the
# scene's tags (labels.py's SCENE_TAGS) after it
for v in digit scene digit+scene scene+tags; do
    if "$PY" "$SRC/pipelines/av-digits/labels.py" "$TMP/a" "$v" "$TMP/lab-$v" --first-train 30 >"$TMP/lab.log" 2>&1 &&
        out=$("$PY" - "$TMP/a" "$TMP/lab-$v" "$v" "$SRC/pipelines/av-digits" <<'EOF'
import csv, json, sys
build, out, v, here = sys.argv[1:]
sys.path[:0] = [here, here + '/..']
from labels import SCENE_TAGS
prov = {c['video_id']: c for c in map(json.loads, open(build + '/provenance.jsonl'))}
rows = list(csv.DictReader(open(out + '/class_labels_indices.csv')))
mids = [r['mid'] for r in rows]
want_k = {'digit': 10, 'scene': 17, 'digit+scene': 27, 'scene+tags': 28}[v]
errs = []
if len(rows) != want_k or [int(r['index']) for r in rows] != list(range(want_k)) or len(set(mids)) != want_k:
    errs.append('%d classes, indices %s' % (len(rows), [r['index'] for r in rows][:5]))
for split, n in (('train', 30), ('test', 10)):
    d = json.load(open('%s/%s.json' % (out, split)))['data']
    orig = json.load(open('%s/%s.json' % (build, split)))['data'][:n]
    if [e['video_id'] for e in d] != [e['video_id'] for e in orig] or \
            [e['video_path'] for e in d] != [e['video_path'] for e in orig]:
        errs.append('%s: %d clips, not the first %d of the build' % (split, len(d), n))
    for e in d:
        digit = ['/m/digit%d' % x for x in prov[e['video_id']]['digits']]
        scene = ['/m/scene_' + prov[e['video_id']]['scene']]
        tags = ['/m/tag_' + t for t in SCENE_TAGS[prov[e['video_id']]['scene']]]
        want = {'digit': digit, 'scene': scene, 'digit+scene': digit + scene, 'scene+tags': scene + tags}[v]
        if e['labels'].split(',') != want or any(m not in mids for m in want):
            errs.append('%s %s: labels %s, want %s' % (split, e['video_id'], e['labels'], want))
print('; '.join(errs[:3]) if errs else '%d classes' % len(rows))
sys.exit(1 if errs else 0)
EOF
); then
        pass "label_version_$v ($out)"
    else
        fail "label_version_$v" "${out:-$(cat "$TMP/lab.log")}"
    fi
done
if "$PY" "$SRC/pipelines/av-digits/labels.py" "$TMP/a" scene "$TMP/lab-x" --first-train 41 >"$TMP/lab.log" 2>&1; then
    fail label_version_too_few "labels.py accepted --first-train 41 on 40 clips"
elif [[ $? == 2 ]] && grep -q "train.json has 40 clips, fewer than the 41" "$TMP/lab.log"; then
    pass label_version_too_few
else
    fail label_version_too_few "wrong exit or message: $(cat "$TMP/lab.log")"
fi

# reproducible: the same seed gives the same plan, and rendering it again gives the same bytes, also from
# voice segments made afresh (a new voice cache) and with other clips rendered in another order
mkdir -p "$TMP/b" "$TMP/cache_b"
cp -r "$CACHE/mnist.npz" "$CACHE/noise" "$TMP/cache_b/"
picks=$("$PY" -c "
import json, sys
plan = [json.loads(l) for l in open(sys.argv[1])]
odd = [i for i, c in enumerate(plan) if c['container'] != 'mp4' or c['channels'] == 2]
print(' '.join(str(i) for i in sorted(set(odd[:6] + [0, 41, len(plan) - 1]), reverse=True)))" "$TMP/a/provenance.jsonl")
if SEED=7 N_TRAIN=40 N_TEST=10 "$PY" "$SRC/pipelines/av-digits/avdigits.py" plan "$TMP/b" "$TMP/cache_b" >/dev/null \
   && "$PY" "$SRC/pipelines/av-digits/avdigits.py" render "$TMP/b" "$TMP/cache_b" $picks; then
    diffs=$(cd "$TMP/b" && for f in provenance.jsonl splits.json train/* test/*; do
        cmp -s "$f" "$TMP/a/$f" || echo "$f"; done)
    n=$(ls "$TMP/b/train" "$TMP/b/test" | grep -c '^avd-')
    if [[ -z $diffs && $n == $(wc -w <<<"$picks") ]]; then pass "same_seed_same_bytes ($n clips)"
    else fail same_seed_same_bytes "differ: $(echo $diffs | head -c 300) ($n clips)"; fi
else
    fail same_seed_same_bytes "planning or rendering again failed"
fi
# another seed: another plan (checked on the plan alone, which is what decides the clips)
mkdir -p "$TMP/c"
if SEED=8 N_TRAIN=40 N_TEST=10 "$PY" "$SRC/pipelines/av-digits/avdigits.py" plan "$TMP/c" "$CACHE" >/dev/null \
   && ! cmp -s "$TMP/a/provenance.jsonl" "$TMP/c/provenance.jsonl"; then
    pass other_seed_other_plan
else
    fail other_seed_other_plan "seed 8 planned the same clips as seed 7 (or planning failed)"
fi

# the multi-label variant
if MULTI=1 SEED=3 N_TRAIN=15 N_TEST=5 "$B" "$TMP/m" >"$TMP/m.log" 2>&1; then
    check "$TMP/m" 15 5 1 || fails=$((fails + 1))
else
    fail multi_build "build.sh MULTI=1 exited $?: $(tail -3 "$TMP/m.log")"
fi

# bad settings are refused with a message, before anything is built
for bad in "N_TRAIN=abc" "JOBS=0" "MULTI=2"; do
    if env $bad "$B" "$TMP/bad" >"$TMP/bad.log" 2>&1; then
        fail "refuses_${bad%%=*}" "build.sh accepted $bad"
    elif [[ $? == 1 ]] && grep -q "^av-digits: ${bad%%=*}\|^av-digits: need JOBS" "$TMP/bad.log" && [[ ! -e $TMP/bad/train ]]; then
        pass "refuses_${bad%%=*}"
    else
        fail "refuses_${bad%%=*}" "wrong exit or message: $(cat "$TMP/bad.log")"
    fi
done
exit $(( fails > 0 ))
