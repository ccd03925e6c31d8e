#!/usr/bin/python3
"""prepare.py: data preparation for the paper's tables (cav-tables(7)). From the reference's JSON data files,
its label CSV (and weight CSVs) and a directory of the user's videos, it builds one shard per split through the
tools (av-extract -j | fbank | shard-pack) and a coverage report: clips listed, found, decoded, broken (with
av-extract's reason), silent, and usable, overall and per class, written next to the shards (coverage.json,
coverage.md, coverage-clips.tsv) and printed.

The shards keep each clip's waveform (wave, int16 at 16 kHz) beside its fbank: the fine-tuning recipes' mixup
mixes waveforms before the fbank, as the reference does, and falls back to mixing fbanks (with a warning) only on
shards without them. Every split keeps it, the evaluation and retrieval splits too (no mixup reads them): the
parts are one decode cache for all splits, and at full scale those splits are a few percent of the clips (some 280
KB per 10 s clip: cav-tables(7), DATA PREPARATION). Parts decoded by an earlier prepare.py without the waveform (fbank --drop-wave; the index names no
wave_parts) are decoded again, and the run says how many.

Nothing is substituted for a missing or broken clip (the reference loads constant tensors in its place): such a
clip is left out of the shard and counted. A clip whose audio is digital silence decodes fine but carries no
sound (its fbank is the constant log floor); it is counted as silent and kept, or left out with --drop-silent.

Rerunning decodes only what is new or changed: every decode run writes one part shard (parts/part-NNNN.h5) and
the index (index.json) remembers, per clip, the file's size and modification time, its outcome and its part. A
clip decoded again (its file changed) is removed from its old part, so that ids stay unique. Parts are written
under a temporary name and renamed (shard-pack), the index is replaced atomically after the part, and a part the
index does not name (a crash between the two) is deleted at the next start: a kill at any point loses at most
the decode run in progress.

Usage: prepare.py --videos DIR --labels CSV --out DIR [--weights SPLIT=CSV]... [-j N] [--drop-silent]
                  SPLIT=DATA.json...
Exit status: 0 ok, 1 usage, 2 bad input (the message names the file, entry and field), 3 a tool failed.
"""
import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

VIDEO_EXT = ('.mp4', '.mkv', '.webm', '.avi', '.mov', '.flv', '.m4v', '.mpg', '.mpeg', '.ts', '.3gp', '.ogv')
LOG_FLOOR = -15.942385  # fbank of digital silence: log(FLT_EPSILON), fbank(1)


def die(code, msg):
    print('prepare: ' + msg, file=sys.stderr)
    sys.exit(code)


def load_json(path):
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        die(2, '%s: %s' % (path, e))
    if not isinstance(d, dict) or not isinstance(d.get('data'), list):
        die(2, '%s: no "data" list' % path)
    for i, e in enumerate(d['data']):
        for k in ('video_id', 'labels'):
            if not isinstance(e, dict) or not isinstance(e.get(k), str) or not e[k]:
                die(2, '%s: entry %d: field %s missing or not a string' % (path, i, k))
    return d['data']


def load_labels(path):
    try:
        with open(path, newline='') as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        die(2, '%s: %s' % (path, e))
    names = {}
    for i, r in enumerate(rows):
        if r.get('mid') is None or r.get('index') is None:
            die(2, '%s: row %d: needs the columns index,mid,display_name' % (path, i + 2))
        names[r['mid']] = (int(r['index']), r.get('display_name') or r['mid'])
    return names


def scan_videos(root):
    """Maps a file stem (the record id av-extract gives) to its path; the first in sorted order when several
    files share a stem, preferring video containers."""
    found = {}
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for fn in sorted(files):
            stem, ext = os.path.splitext(fn)
            if fn.startswith('.') or not ext:
                continue
            p = os.path.join(d, fn)
            old = found.get(stem)
            if old is None or (ext.lower() in VIDEO_EXT and os.path.splitext(old)[1].lower() not in VIDEO_EXT):
                found[stem] = p
    return found


def key_of(path):
    st = os.stat(path)
    return '%d:%d' % (st.st_size, st.st_mtime_ns)


def write_atomic(path, text):
    tmp = path + '.tmp.%d' % os.getpid()
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_pipe(cmds, stderr_of_first):
    """Runs cmds as a pipeline; the first command's stderr goes to the file stderr_of_first. Returns the exit
    statuses."""
    procs = []
    prev = None
    with open(stderr_of_first, 'w') as err:
        for i, c in enumerate(cmds):
            p = subprocess.Popen(c, stdin=prev, stdout=subprocess.PIPE if i < len(cmds) - 1 else None,
                                 stderr=err if i == 0 else None)
            if prev is not None:
                prev.close()
            prev = p.stdout
            procs.append(p)
        return [p.wait() for p in procs]


def silent_ids(part):
    """Ids of the records of a part shard whose fbank is the log floor everywhere (padding rows aside)."""
    import h5py
    import numpy as np
    out = []
    with h5py.File(part, 'r') as f:
        ids = [x.decode() if isinstance(x, bytes) else x for x in f['id'][:]]
        fb = f['fbank']
        for i, rid in enumerate(ids):
            v = fb[i] if isinstance(fb, h5py.Dataset) else None
            if v is None:
                g = fb
                n = int(np.prod(g['shape'][i][:g['ndim'][i]]))
                v = g['data'][g['offset'][i]:g['offset'][i] + n].reshape(-1, 128)
            v = v[np.any(v != 0, axis=1)]
            if v.size == 0 or (abs(float(v.max()) - LOG_FLOOR) < 1e-5 and abs(float(v.min()) - LOG_FLOOR) < 1e-5):
                out.append(rid)
    return out


def wave_rows(shard):
    """The number of records of a shard that hold a waveform (a fixed field: all; a ragged one: ndim >= 0)."""
    import h5py
    import numpy as np
    with h5py.File(shard, 'r') as f:
        if 'wave' not in f:
            return 0
        w = f['wave']
        return len(w) if isinstance(w, h5py.Dataset) else int(np.sum(w['ndim'][:] >= 0))


class Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 1, as every tool of the project
        self.print_usage(sys.stderr)
        die(1, message)


def main():
    ap = Parser(description='Shards and a coverage report from the reference\'s data files '
                                 'and a directory of videos (cav-tables(7)).')
    ap.add_argument('splits', nargs='+', metavar='SPLIT=DATA.json')
    ap.add_argument('--videos', required=True, help='directory of the videos (searched recursively; a clip is '
                    'the file whose name without extension is its video_id)')
    ap.add_argument('--labels', required=True, help='the label CSV (index,mid,display_name)')
    ap.add_argument('--weights', action='append', default=[], metavar='SPLIT=CSV',
                    help='the reference\'s weight CSV of a split: checked against the shard\'s weights')
    ap.add_argument('--out', required=True)
    ap.add_argument('-j', '--jobs', type=int, default=2)
    ap.add_argument('--drop-silent', action='store_true', help='leave clips with silent audio out of the shards')
    ap.add_argument('--name', default=None, help='dataset name in the report (default: the --out directory name)')
    a = ap.parse_args()
    splits = []
    for s in a.splits:
        m = re.match(r'^([A-Za-z0-9_.-]+)=(.+)$', s)
        if not m:
            die(1, 'expected SPLIT=DATA.json, got %r' % s)
        splits.append((m.group(1), m.group(2)))
    weights = {}
    for s in a.weights:
        k, _, v = s.partition('=')
        if not v or k not in dict(splits):
            die(1, '--weights %r: expected SPLIT=CSV for one of the splits' % s)
        weights[k] = v
    if not os.path.isdir(a.videos):
        die(2, '%s: not a directory' % a.videos)
    for t in ('av-extract', 'fbank', 'shard-pack'):
        if not shutil.which(t):
            die(1, '%s not on PATH' % t)
    mids = load_labels(a.labels)
    data = {name: load_json(path) for name, path in splits}
    for name, path in splits:
        for i, e in enumerate(data[name]):
            for m in e['labels'].split(','):
                if m not in mids:
                    die(2, '%s: entry %d (%s): field labels: mid %s not in %s' % (path, i, e['video_id'], m,
                                                                               a.labels))
    out = a.out
    parts_dir = os.path.join(out, 'parts')
    os.makedirs(parts_dir, exist_ok=True)
    index_path = os.path.join(out, 'index.json')
    index = json.load(open(index_path)) if os.path.exists(index_path) else {'parts': [], 'clips': {}}
    # The parts that hold the waveform; an index without the key was written by a prepare.py that dropped it.
    wave_parts = index.setdefault('wave_parts', [])
    # A part the index does not name is the output of an interrupted run; temporary files likewise.
    for fn in os.listdir(parts_dir):
        if fn not in index['parts']:
            os.unlink(os.path.join(parts_dir, fn))

    videos = scan_videos(a.videos)
    wanted = []
    for name, _ in splits:
        for e in data[name]:
            if e['video_id'] in videos:
                wanted.append(e['video_id'])
    wanted = list(dict.fromkeys(wanted))
    todo = []
    nowave = 0
    for vid in wanted:
        p = videos[vid]
        c = index['clips'].get(vid)
        if c is None or c['key'] != key_of(p) or c['path'] != os.path.abspath(p):
            todo.append(vid)
        elif c['status'] != 'broken' and c.get('part') not in wave_parts:
            todo.append(vid)
            nowave += 1
    if nowave:
        print('prepare: %d clips were decoded by an earlier prepare.py without their waveform (fbank --drop-wave); '
              'fine-tuning\'s mixup mixes waveforms (cav-tables(7)): decoding them again' % nowave, file=sys.stderr)
    print('prepare: %d entries listed in %d data files, %d distinct clips found, %d to decode (new, changed or '
          'without waveform), %d decoded before'
          % (sum(len(v) for v in data.values()), len(data), len(wanted), len(todo), len(wanted) - len(todo)),
          file=sys.stderr)

    if todo:
        n = 1 + max([int(re.findall(r'\d+', p)[0]) for p in index['parts']] or [-1])
        part = 'part-%04d.h5' % n
        tmpdir = tempfile.mkdtemp(prefix='prepare.', dir=out)
        lst = os.path.join(tmpdir, 'list')
        keys = {vid: key_of(videos[vid]) for vid in todo}
        with open(lst, 'w') as f:
            f.writelines(os.path.abspath(videos[v]) + '\n' for v in todo)
        err = os.path.join(tmpdir, 'av-extract.err')
        st = run_pipe([['av-extract', '-j', str(a.jobs), '-l', lst],
                       ['fbank'],
                       ['shard-pack', '-o', os.path.join(parts_dir, part), '-']], err)
        msgs = open(err).read().splitlines()
        sys.stderr.write(''.join(m + '\n' for m in msgs[-1:]))
        # av-extract exits 2 when nothing could be extracted: every clip is then broken, and that is data.
        if st[0] not in (0, 2) or st[1] != 0 or st[2] != 0:
            die(3, 'decoding failed (av-extract %d, fbank %d, shard-pack %d): %s'
                % (st[0], st[1], st[2], ' | '.join(msgs[-3:])))
        reasons = {}
        for vid in todo:
            pre = 'av-extract: %s: ' % os.path.abspath(videos[vid])
            for m in msgs:
                if m.startswith(pre):
                    r, _, detail = m[len(pre):].partition(': ')
                    reasons[vid] = (r, detail)
        made = os.path.exists(os.path.join(parts_dir, part))
        silent = set(silent_ids(os.path.join(parts_dir, part))) if made else set()
        # Clips decoded again leave their old part: rewrite each affected part without them.
        for old in list(index['parts']):
            keep = [v for v, c in index['clips'].items() if c.get('part') == old and v not in keys]
            gone = [v for v in todo if index['clips'].get(v, {}).get('part') == old]
            if not gone:
                continue
            op = os.path.join(parts_dir, old)
            if keep:
                with open(os.path.join(tmpdir, 'keep'), 'w') as f:
                    f.writelines(v + '\n' for v in keep)
                r = subprocess.run(['shard-pack', '-s', os.path.join(tmpdir, 'keep'), '-o',
                                    os.path.join(tmpdir, old), op])
                if r.returncode:
                    die(3, 'rewriting %s without the re-decoded clips failed' % op)
                os.replace(os.path.join(tmpdir, old), op)
            else:
                index['parts'].remove(old)
                if old in wave_parts:
                    wave_parts.remove(old)
                os.unlink(op)
        for vid in todo:
            c = {'path': os.path.abspath(videos[vid]), 'key': keys[vid]}
            if vid in reasons:
                c.update(status='broken', reason=reasons[vid][0], detail=reasons[vid][1])
            else:
                c.update(status='silent' if vid in silent else 'ok', part=part)
            index['clips'][vid] = c
        if made:
            index['parts'].append(part)
            wave_parts.append(part)
        write_atomic(index_path, json.dumps(index, indent=0, sort_keys=True))
        shutil.rmtree(tmpdir)

    # One shard per split, rebuilt when its clips, data file or label CSV changed.
    report = {'dataset': a.name or os.path.basename(os.path.abspath(out)), 'videos': os.path.abspath(a.videos),
              'splits': {}}
    rows = []
    for name, path in splits:
        entries = data[name]
        usable = []
        cnt = {'listed': len(entries), 'found': 0, 'missing': 0, 'decoded': 0, 'broken': 0, 'silent': 0,
               'usable': 0, 'broken_reasons': {}}
        per_class = {}
        for e in entries:
            vid = e['video_id']
            c = index['clips'].get(vid) if vid in videos else None
            if vid not in videos:
                st, why = 'missing', 'no file named %s.* under %s' % (vid, a.videos)
            else:
                cnt['found'] += 1
                st, why = c['status'], c.get('reason', '')
                if st == 'broken':
                    why = '%s: %s' % (c['reason'], c.get('detail', ''))
            if st in ('ok', 'silent'):
                cnt['decoded'] += 1
            if st == 'silent':
                cnt['silent'] += 1
            if st == 'missing':
                cnt['missing'] += 1
            if st == 'broken':
                cnt['broken'] += 1
                cnt['broken_reasons'][c['reason']] = cnt['broken_reasons'].get(c['reason'], 0) + 1
            use = st == 'ok' or (st == 'silent' and not a.drop_silent)
            if use:
                usable.append(vid)
                cnt['usable'] += 1
            for m in e['labels'].split(','):
                pc = per_class.setdefault(m, [0, 0])
                pc[0] += 1
                pc[1] += use
            if st != 'ok':
                rows.append((vid, name, st, why, videos.get(vid, '')))
        cnt['fraction'] = cnt['usable'] / max(1, cnt['listed'])
        cnt['per_class'] = {m: {'name': mids[m][1], 'index': mids[m][0], 'listed': v[0], 'usable': v[1],
                                'fraction': v[1] / v[0]} for m, v in sorted(per_class.items(),
                                                                            key=lambda t: mids[t[0]][0])}
        fr = [v['fraction'] for v in cnt['per_class'].values()]
        cnt['class_fraction_min'] = min(fr) if fr else 0.0
        shard = os.path.join(out, name + '.h5')
        h = hashlib.sha256()
        for f in (path, a.labels):
            h.update(open(f, 'rb').read())
        h.update(b'fbank and wave\n')  # what the records hold: a shard of an earlier prepare.py lacks the wave
        for v in usable:
            h.update(('%s %s %s\n' % (v, index['clips'][v]['key'], index['clips'][v]['part'])).encode())
        digest = h.hexdigest()
        stamp = shard + '.key'
        if not usable:
            print('prepare: split %s: no usable clip, no shard written' % name, file=sys.stderr)
            for f in (shard, stamp):
                if os.path.exists(f):
                    os.unlink(f)
        elif not (os.path.exists(shard) and os.path.exists(stamp) and open(stamp).read().strip() == digest):
            sel = os.path.join(out, '.%s.ids' % name)
            with open(sel, 'w') as f:
                f.writelines(v + '\n' for v in usable)
            # The whole data file goes to shard-pack -j: it wants an entry per record (not a record per entry)
            # and computes the sample weights over all the entries, as the reference's weight CSV does.
            parts = sorted({index['clips'][v]['part'] for v in usable})
            r = subprocess.run(['shard-pack', '-s', sel, '-o', '-'] + [os.path.join(parts_dir, p) for p in parts],
                               stdout=subprocess.PIPE)
            if r.returncode:
                die(3, 'selecting the clips of %s failed' % name)
            r2 = subprocess.run(['shard-pack', '-j', path, '-c', a.labels, '-o', shard, '-'], input=r.stdout)
            if r2.returncode:
                die(3 if r2.returncode == 3 else 2, 'labelling the clips of %s with %s failed' % (name, path))
            write_atomic(stamp, digest + '\n')
            os.unlink(sel)
        cnt['shard'] = shard if usable else None
        cnt['wave_rows'] = wave_rows(shard) if usable else 0
        if name in weights and usable:
            cnt['weights_check'] = check_weights(weights[name], entries, shard)
        report['splits'][name] = cnt

    write_atomic(os.path.join(out, 'label-dim'), '%d\n' % len(mids))
    write_atomic(os.path.join(out, 'coverage.json'), json.dumps(report, indent=1, sort_keys=True) + '\n')
    with open(os.path.join(out, 'coverage-clips.tsv.tmp'), 'w') as f:
        f.write('video_id\tsplit\tstatus\treason\tpath\n')
        f.writelines('\t'.join(r) + '\n' for r in rows)
    os.replace(os.path.join(out, 'coverage-clips.tsv.tmp'), os.path.join(out, 'coverage-clips.tsv'))
    md = coverage_md(report)
    write_atomic(os.path.join(out, 'coverage.md'), md)
    sys.stdout.write(md)


def check_weights(csv_path, entries, shard):
    """The reference's weight CSV (one weight per data-file entry, in order) against the weights shard-pack
    computed for the usable clips."""
    import h5py
    import numpy as np
    w = [float(l.strip()) for l in open(csv_path) if l.strip()]
    if len(w) != len(entries):
        return 'weight CSV has %d rows for %d entries: not this data file' % (len(w), len(entries))
    ref = {e['video_id']: x for e, x in zip(entries, w)}
    with h5py.File(shard, 'r') as f:
        ids = [x.decode() if isinstance(x, bytes) else x for x in f['id'][:]]
        got = np.asarray(f['weight'][:], dtype=np.float64).reshape(-1)
    want = np.array([ref[i] for i in ids])
    rel = float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1e-12))) if len(ids) else 0.0
    return 'max relative difference %.2g over %d clips (%s)' % (rel, len(ids), 'agree' if rel < 1e-4 else 'DIFFER')


def coverage_md(rep):
    s = ['# Data coverage: %s\n' % rep['dataset'], '',
         'Videos from `%s`. Missing and broken clips are left out, never replaced. The shards keep each clip\'s '
         'waveform beside its fbank (records with a waveform: %s), so that fine-tuning\'s mixup mixes waveforms, as '
         'the reference does.' % (rep['videos'], ', '.join('%s %d of %d' % (n, c['wave_rows'], c['usable'])
                                                           for n, c in rep['splits'].items())), '',
         '| split | listed | found | decoded | broken | silent | usable | fraction | worst class |',
         '|---|---|---|---|---|---|---|---|---|']
    for name, c in rep['splits'].items():
        br = ', '.join('%s %d' % kv for kv in sorted(c['broken_reasons'].items()))
        worst = min(c['per_class'].values(), key=lambda v: v['fraction']) if c['per_class'] else None
        s.append('| %s | %d | %d | %d | %d%s | %d | %d | %.3f | %s |' % (
            name, c['listed'], c['found'], c['decoded'], c['broken'], ' (%s)' % br if br else '', c['silent'],
            c['usable'], c['fraction'], '%s %.3f' % (worst['name'], worst['fraction']) if worst else '-'))
    for name, c in rep['splits'].items():
        s += ['', '## %s: per class (usable / listed)' % name, '']
        s.append(', '.join('%s %d/%d' % (v['name'], v['usable'], v['listed']) for v in c['per_class'].values()))
        if 'weights_check' in c:
            s += ['', 'Weight CSV against the shard\'s weights: ' + c['weights_check']]
    return '\n'.join(s) + '\n'


if __name__ == '__main__':
    main()
