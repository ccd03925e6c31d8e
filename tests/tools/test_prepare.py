"""test_prepare.py: pipelines/prepare.py (data preparation for the tables, cav-tables(7)) on a deliberately damaged
copy of a small dataset made here with ffmpeg: 12 clips listed in the reference's JSON format, of which 2 are
missing, 1 truncated, 1 without audio, 1 not a media file, 1 with digital silence as its audio, 6 good.
Checks: the coverage report counts each (listed, found, missing, broken by reason, silent, usable, per-class
fractions), nothing crashes, the shard holds exactly the usable clips with their labels (nothing substituted for a
bad one), the weight CSV is checked against the shard's weights, a rerun decodes nothing and leaves the shard
alone, a changed and a new clip are the only ones decoded again (ids stay unique), a repaired clip joins, a kill -9
of the whole run in the middle of decoding is recovered by the next run, --drop-silent leaves the silent clip
out, and bad input exits 2 naming the entry and field. The shards keep each clip's waveform beside its fbank (the
fine-tuning recipes' mixup mixes waveforms), the very waveform the fbank was computed from: cav-finetune with
mixup on the prepared shard trains bit for bit as on its records without the fbank (all audio from the waveform, as
the reference), without the warning that it mixes fbanks, which an fbank-only copy gives; data prepared
without it (an earlier prepare.py's fbank --drop-wave) is decoded again by the next run, which says so."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cavstream  # noqa: E402
import ftfixture  # noqa: E402
import toolenv  # noqa: E402
from toolenv import BIN, SRC, report  # noqa: E402
os.environ['PATH'] = BIN + ':' + os.environ['PATH']
os.environ.setdefault('HDF5_PLUGIN_PATH', os.path.join(SRC, 'build', 'plugin'))
import h5py  # noqa: E402  (after HDF5_PLUGIN_PATH is set)

PREP = [sys.executable, os.path.join(SRC, 'pipelines', 'prepare.py')]
TMP = tempfile.mkdtemp(prefix='cav-prepare-test-')


def ffmpeg(out, hue, audio='sine', seconds=3):
    """A short clip: a coloured test pattern and a tone (or silence, or no audio track)."""
    a = []
    if audio == 'sine':
        a = ['-f', 'lavfi', '-i', 'sine=frequency=%d:sample_rate=22050:duration=%d' % (300 + 40 * hue, seconds)]
    elif audio == 'silent':
        a = ['-f', 'lavfi', '-i', 'anullsrc=r=22050:cl=mono', '-t', str(seconds)]
    v = ['-f', 'lavfi', '-i', 'testsrc=size=160x120:rate=10:duration=%d,hue=h=%d' % (seconds, 20 * hue)]
    subprocess.run(['ffmpeg', '-v', 'error', '-y'] + v + a + ['-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-g', '10'] +
                   (['-c:a', 'aac', '-shortest'] if a else ['-an']) + [out], check=True)


def prepare(*args, check=False):
    return subprocess.run(PREP + list(args), capture_output=True, text=True, check=check)


def shard_ids(path):
    with h5py.File(path, 'r') as f:
        return [x.decode() if isinstance(x, bytes) else x for x in f['id'][:]]


def waves(path):
    """{id: the record's wave (int16 [n]) or None}, the shard's rows in order."""
    out = {}
    with h5py.File(path, 'r') as f:
        ids = [x.decode() if isinstance(x, bytes) else x for x in f['id'][:]]
        g = f['wave'] if 'wave' in f else None
        for i, rid in enumerate(ids):
            if g is None:
                out[rid] = None
            elif isinstance(g, h5py.Dataset):
                out[rid] = g[i]
            elif g['ndim'][i] < 0:
                out[rid] = None
            else:
                o, n, sh = g['offset'][i], g['ndim'][i], g['shape'][i]
                out[rid] = g['data'][o:o + int(np.prod(sh[:n]))].reshape(sh[:n])
    return out


def check_waves(name, shard, why=''):
    """Every record of the shard holds an int16 16 kHz waveform whose length gives its fbank's frame count (1 + (n -
    400) // 160, cut to 1024: the fbank was computed from it)."""
    w = waves(shard)
    with h5py.File(shard, 'r') as f:
        ids = [x.decode() if isinstance(x, bytes) else x for x in f['id'][:]]
        frames = {i: int(np.sum(np.any(f['fbank'][k] != 0, axis=1))) for k, i in enumerate(ids)}
    lacking = sorted(i for i, v in w.items() if v is None)
    bad = {i: (v.dtype.str, v.shape, frames[i]) for i, v in w.items() if v is not None and
           (v.dtype != np.int16 or v.ndim != 1 or min(1024, 1 + (len(v) - 400) // 160) != frames[i])}
    # the silent clip's fbank is the log floor, not zero: its rows all count
    report(name, not lacking and not bad and len(w) > 0,
           '%d records, without wave: %s, wave and fbank disagree: %s%s' % (len(w), lacking, bad, why))


def loader_takes_wave(shard):
    """cav-finetune (micro model, --mixup 0.5, SpecAugment, evaluation each epoch) on the prepared shard (fbank and
    wave: mixed samples from the waveforms, the others from the stored fbank) gives the step losses and scores of
    the same records without their fbank (every sample's fbank computed from its waveform, the reference's way),
    bit for bit, and no warning; the records without their wave (fbank --drop-wave) give other losses and the
    warning that mixup mixes fbanks."""
    d = os.path.join(TMP, 'ft')
    os.makedirs(d)
    _, recs = cavstream.decode(subprocess.run(['shard-pack', '-o', '-', shard], check=True, capture_output=True).stdout)
    ftfixture.pack(os.path.join(d, 'wave.h5'), [(i, a, [t for t in ts if t[0] != 'fbank']) for i, a, ts in recs])
    r = subprocess.run(['fbank', '--drop-wave', '-o', os.path.join(d, 'fbank.h5'), shard], capture_output=True,
                       text=True)
    if r.returncode:
        report('finetune_mixup_reads_wave', False, 'the prepared shard holds no waveform: %s' % r.stderr.strip())
        return
    runs = {}
    for name, data in (('prepared', shard), ('wave', os.path.join(d, 'wave.h5')),
                       ('fbank', os.path.join(d, 'fbank.h5'))):
        # the micro encoder at the frames' 224 x 224 (av-extract's; the micro model's 32 would not hold them)
        r = ftfixture.finetune(3, os.path.join(d, name), '-e', '2', '--mixup', '0.5', '--set', 'img_size=224',
                               '--eval', data, data, batch=2, check=False)
        res = open(os.path.join(d, name, 'result.csv')).read() if r.returncode == 0 else r.stderr[-300:]
        # (the step lines alone: an epoch line's d' is not JSON when a class of the 3 has no clip)
        steps = [json.loads(x)['loss'] for x in open(os.path.join(d, name, 'metrics.jsonl'))
                 if '"train_loss"' not in x] if r.returncode == 0 else []
        runs[name] = (r.returncode, steps, res,
                      'mixup mixes its fbank' in r.stderr)
    p, w, f = runs['prepared'], runs['wave'], runs['fbank']
    report('finetune_mixup_reads_wave', p[0] == w[0] == f[0] == 0 and p[1] == w[1] and p[2] == w[2] and len(p[1]) == 6
           and not p[3] and not w[3] and f[3] and f[1] != p[1],
           'prepared shard against its records from the waveform alone: %d step losses equal %s, results equal %s, '
           'warnings %s %s; from the fbank alone: losses differ %s, warning %s%s'
           % (len(p[1]), p[1] == w[1], p[2] == w[2], p[3], w[3], f[1] != p[1], f[3],
              ''.join('; %s: exit %d: %s' % (k, v[0], v[2].splitlines()[-1]) for k, v in runs.items() if v[0])))


def main():
    vid = os.path.join(TMP, 'videos')
    os.makedirs(vid)
    classes = ['/m/a', '/m/b', '/m/c']
    with open(os.path.join(TMP, 'labels.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['index', 'mid', 'display_name'])
        for i, m in enumerate(classes):
            w.writerow([i, m, 'class %s' % m[-1]])
    entries = []
    kinds = {}
    for i in range(12):
        name = 'clip%02d' % i
        # class a: 0-3, b: 4-7, c: 8-11; the damage falls on classes b and c
        labels = classes[i // 4] + (',' + classes[0] if i == 5 else '')
        entries.append({'video_id': name, 'wav': '/data/audio/%s.flac' % name, 'video_path': '/data/frames/',
                        'labels': labels})
        kind = {4: 'missing', 9: 'missing', 5: 'truncated', 6: 'noaudio', 7: 'garbage', 10: 'silent'}.get(i, 'good')
        kinds[name] = kind
        p = os.path.join(vid, name + '.mp4')
        if kind == 'good':
            ffmpeg(p, i)
        elif kind == 'silent':
            ffmpeg(p, i, audio='silent')
        elif kind == 'noaudio':
            ffmpeg(p, i, audio=None)
        elif kind == 'truncated':
            ffmpeg(p, i)
            data = open(p, 'rb').read()
            open(p, 'wb').write(data[:len(data) // 3])
        elif kind == 'garbage':
            open(p, 'w').write('this is not a video\n' * 100)
    # a stray file of another dataset in the directory is ignored
    open(os.path.join(vid, 'README.txt'), 'w').write('not listed\n')
    js = os.path.join(TMP, 'train.json')
    json.dump({'data': entries}, open(js, 'w'))
    # the reference's weight CSV: label_weight[c] = 1000 / (count_c + 0.01), a clip's weight the sum over its labels
    count = {m: sum(m in e['labels'].split(',') for e in entries) for m in classes}
    wcsv = os.path.join(TMP, 'weights.csv')
    with open(wcsv, 'w') as f:
        for e in entries:
            f.write('%.17g\n' % sum(1000 / (count[m] + 0.01) for m in e['labels'].split(',')))
    out = os.path.join(TMP, 'out')
    good = sorted(n for n, k in kinds.items() if k in ('good', 'silent'))

    r = prepare('--videos', vid, '--labels', os.path.join(TMP, 'labels.csv'), '--out', out, '--weights',
                'train=' + wcsv, 'train=' + js)
    report('damaged_copy_runs', r.returncode == 0, 'exit %d: %s' % (r.returncode, r.stderr[-800:]))
    if r.returncode:
        return
    cov = json.load(open(os.path.join(out, 'coverage.json')))['splits']['train']
    want = {'listed': 12, 'found': 10, 'missing': 2, 'decoded': 7, 'broken': 3, 'silent': 1, 'usable': 7}
    got = {k: cov[k] for k in want}
    report('coverage_counts', got == want, 'got %s, want %s' % (got, want))
    reasons = cov['broken_reasons']
    report('coverage_broken_reasons', reasons == {'corrupt': 2, 'no-audio': 1}, str(reasons))
    pc = {v['name']: (v['usable'], v['listed']) for v in cov['per_class'].values()}
    # class a: clips 0-3 + clip 5 (truncated) -> 4 of 5; b: 4-7 -> none usable; c: 8-11 (9 missing, 10 silent) -> 3/4
    report('coverage_per_class', pc == {'class a': (4, 5), 'class b': (0, 4), 'class c': (3, 4)}, str(pc))
    report('coverage_worst_class', cov['class_fraction_min'] == 0.0, str(cov['class_fraction_min']))
    md = r.stdout
    report('coverage_printed', '| train | 12 | 10 | 7 | 3 (corrupt 2, no-audio 1) | 1 | 7 | 0.583 | class b 0.000 |' in md,
           md[:600])
    rows = list(csv.DictReader(open(os.path.join(out, 'coverage-clips.tsv')), delimiter='\t'))
    st = {r['video_id']: (r['status'], r['reason'].split(':')[0]) for r in rows}
    want_st = {'clip04': ('missing', 'no file named clip04.* under %s' % vid), 'clip09': ('missing', st.get(
        'clip09', ('', ''))[1]), 'clip05': ('broken', 'corrupt'), 'clip06': ('broken', 'no-audio'),
        'clip07': ('broken', 'corrupt'), 'clip10': ('silent', '')}
    report('coverage_clip_list', st == want_st and st['clip09'][1].startswith('no file named clip09'), str(st))
    shard = os.path.join(out, 'train.h5')
    ids = shard_ids(shard)
    report('shard_holds_usable_only', sorted(ids) == good, 'ids %s, want %s' % (sorted(ids), good))
    with h5py.File(shard, 'r') as f:
        lab = {i: tuple(np.nonzero(f['labels'][k])[0]) for k, i in enumerate(ids)}
        fb = {i: f['fbank'][k] for k, i in enumerate(ids)}
    report('shard_labels', all(lab[n] == (int(n[4:]) // 4,) for n in ids), str(lab))
    # the silent clip is kept as what it is (the log floor), the others carry sound
    report('silent_clip_flagged_not_replaced', float(np.ptp(fb['clip10'][:200])) == 0.0 and
           all(float(np.ptp(fb[n][:200])) > 1 for n in ids if n != 'clip10'), 'ptp %s' % {
               n: float(np.ptp(v[:200])) for n, v in fb.items()})
    report('weight_csv_checked', cov.get('weights_check', '').endswith('(agree)'), cov.get('weights_check'))
    check_waves('shard_keeps_wave', shard, '; coverage.json wave_rows %s of %s' % (cov.get('wave_rows'), cov['usable']))
    loader_takes_wave(shard)

    # rerun: nothing decoded, the shard untouched
    m0 = os.stat(shard).st_mtime_ns
    r = prepare('--videos', vid, '--labels', os.path.join(TMP, 'labels.csv'), '--out', out, 'train=' + js)
    report('rerun_decodes_nothing', r.returncode == 0 and ', 0 to decode' in r.stderr and
           os.stat(shard).st_mtime_ns == m0, r.stderr[-400:])

    # a changed clip, a repaired clip and a new one: only those three are decoded
    time.sleep(0.01)
    ffmpeg(os.path.join(vid, 'clip01.mp4'), 7, seconds=4)
    ffmpeg(os.path.join(vid, 'clip05.mp4'), 5)
    ffmpeg(os.path.join(vid, 'clip12.mp4'), 12)
    entries.append({'video_id': 'clip12', 'wav': '', 'video_path': '', 'labels': '/m/c'})
    json.dump({'data': entries}, open(js, 'w'))
    r = prepare('--videos', vid, '--labels', os.path.join(TMP, 'labels.csv'), '--out', out, 'train=' + js)
    ids = shard_ids(shard)
    report('changed_new_repaired_only', r.returncode == 0 and ', 3 to decode' in r.stderr and
           sorted(ids) == sorted(good + ['clip05', 'clip12']) and len(ids) == len(set(ids)),
           '%s; ids %s' % (r.stderr[-300:], ids))
    with h5py.File(shard, 'r') as f:
        k = ids.index('clip01')
        n_frames = int(np.sum(np.any(f['fbank'][k] != 0, axis=1)))
    # 4 s of audio (AAC priming adds a few frames to the 398 of exactly 4 s) where the old clip had 3 s
    report('changed_clip_redecoded', 398 <= n_frames <= 410, '%d fbank frames, want 398-410 (4 s)' % n_frames)
    parts = sorted(os.listdir(os.path.join(out, 'parts')))
    allids = sum((shard_ids(os.path.join(out, 'parts', p)) for p in parts), [])
    report('parts_ids_unique', len(allids) == len(set(allids)), str(sorted(allids)))

    # kill -9 of the whole run in the middle of decoding, then a rerun
    for i in range(13, 21):
        ffmpeg(os.path.join(vid, 'clip%02d.mp4' % i), i)
        entries.append({'video_id': 'clip%02d' % i, 'wav': '', 'video_path': '', 'labels': '/m/a'})
    json.dump({'data': entries}, open(js, 'w'))
    p = subprocess.Popen(PREP + ['-j', '1', '--videos', vid, '--labels', os.path.join(TMP, 'labels.csv'), '--out',
                                 out, 'train=' + js], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True, text=True)
    line = p.stderr.readline()  # "prepare: ... to decode": the decode is about to start
    # Killed once shard-pack has opened its part (decoding is under way, nothing committed), not after a fixed
    # sleep: on a fast machine the 8 clips are done within a few tenths of a second.
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < 60 and \
            not [f for f in os.listdir(os.path.join(out, 'parts')) if '.tmp' in f]:
        time.sleep(0.001)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    idx = json.load(open(os.path.join(out, 'index.json')))['clips']
    killed_midway = not any('clip%02d' % i in idx for i in range(13, 21))
    r = prepare('--videos', vid, '--labels', os.path.join(TMP, 'labels.csv'), '--out', out, 'train=' + js)
    ids = shard_ids(shard)
    cov = json.load(open(os.path.join(out, 'coverage.json')))['splits']['train']
    report('kill9_then_rerun', killed_midway and r.returncode == 0 and ', 8 to decode' in line and len(ids) == 17 == cov['usable'] and
           len(ids) == len(set(ids)) and not [f for f in os.listdir(os.path.join(out, 'parts')) if '.tmp' in f],
           '%s | %s; %d ids' % (line.strip(), r.stderr[-300:], len(ids)))
    ids_before_old = ids

    # Data prepared by an earlier prepare.py: its parts and shard without the waveform (fbank --drop-wave, which
    # recomputes the fbank from the wave and drops it), its index without wave_parts. The next run decodes every
    # clip again (a part without waves cannot give a mixup its waveform) and says why; then nothing.
    for fn in sorted(os.listdir(os.path.join(out, 'parts'))) + ['../train.h5']:
        pp = os.path.join(out, 'parts', fn)
        fb = subprocess.run(['fbank', '--drop-wave', '-o', pp + '.old.h5', pp], capture_output=True, text=True)
        if fb.returncode:
            report('old_prepared_data', False, 'fbank --drop-wave %s: %s' % (pp, fb.stderr))
            return
        os.replace(pp + '.old.h5', pp)
    ix = json.load(open(os.path.join(out, 'index.json')))
    del ix['wave_parts']
    json.dump(ix, open(os.path.join(out, 'index.json'), 'w'))
    old_lacks = all(v is None for v in waves(shard).values())
    r = prepare('--videos', vid, '--labels', os.path.join(TMP, 'labels.csv'), '--out', out, 'train=' + js)
    ids = shard_ids(shard)
    report('old_prepared_data_redecoded', old_lacks and r.returncode == 0 and
           '17 clips were decoded by an earlier prepare.py without their waveform' in r.stderr and
           ', 17 to decode' in r.stderr and sorted(ids) == sorted(ids_before_old) and
           json.load(open(os.path.join(out, 'coverage.json')))['splits']['train']['wave_rows'] == 17,
           '%s; %d ids' % (r.stderr[-500:], len(ids)))
    check_waves('old_prepared_data_gets_waves', shard)
    r = prepare('--videos', vid, '--labels', os.path.join(TMP, 'labels.csv'), '--out', out, 'train=' + js)
    report('old_prepared_data_then_nothing', r.returncode == 0 and ', 0 to decode' in r.stderr, r.stderr[-300:])

    r = prepare('--drop-silent', '--videos', vid, '--labels', os.path.join(TMP, 'labels.csv'), '--out', out,
                'train=' + js)
    ids = shard_ids(shard)
    report('drop_silent', r.returncode == 0 and 'clip10' not in ids and len(ids) == 16, str(len(ids)))

    bad = os.path.join(TMP, 'bad.json')
    json.dump({'data': entries[:3] + [{'video_id': 'x', 'labels': '/m/nope'}]}, open(bad, 'w'))
    r = prepare('--videos', vid, '--labels', os.path.join(TMP, 'labels.csv'), '--out', out, 'train=' + bad)
    report('bad_label_exit2', r.returncode == 2 and 'entry 3 (x): field labels: mid /m/nope' in r.stderr, r.stderr)
    json.dump({'data': [{'video_id': 'x'}]}, open(bad, 'w'))
    r = prepare('--videos', vid, '--labels', os.path.join(TMP, 'labels.csv'), '--out', out, 'train=' + bad)
    report('missing_field_exit2', r.returncode == 2 and 'entry 0: field labels' in r.stderr, r.stderr)
    r = prepare('--videos', vid, '--labels', os.path.join(TMP, 'labels.csv'), '--out', out, 'train.json')
    report('usage_exit1', r.returncode == 1, '%d %s' % (r.returncode, r.stderr))


try:
    main()
finally:
    shutil.rmtree(TMP, ignore_errors=True)
sys.exit(toolenv.status())
