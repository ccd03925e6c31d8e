#!/usr/bin/python3
"""tables.py: writes one of the paper's tables (cav-tables(7)) from the stage outputs of pipelines/Makefile: our
numbers beside the paper's (pipelines/paper-numbers.tsv), the data coverage of every dataset the table read
(prepare.py's coverage.json), the commit and tool versions, the settings that differ from the paper's recipe, and
the table's cost at full scale in GPU-hours. Also `tables.py cost` for all tables.

  tables.py table ID --out FILE --w W --scale SCALE [--coverage DIR]... [--note TEXT]... CELL...
      CELL = ROW|COLUMN|PATH: a fine-tuning run (PATH its done file; COLUMN DATA-A, DATA-V or DATA-AV) or a
      retrieval result (PATH the .csv; COLUMN the dataset). ~ in ROW stands for a space. A cell whose PATH is
      "-" is not computable with the tools of this version; the note says why. A fine-tuning cell scores the
      run's final evaluation; PATH@frameF takes frame F's score of it, PATH@agg the 10-frame aggregate, and
      PATH1&PATH2 the ensemble of two runs (the mean of their --predictions).
  tables.py cost TABLE='STAGE...'...
"""
import csv
import json
import math
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# GPU-hours per epoch at full scale, from the reference's training logs (4 GPUs, Titan X Pascal / RTX A5000
# class): AS-2M pretraining 77,500 s per epoch at batch 48; AS-2M fine-tuning 86,100 s, AS-20K 450 s, VGGSound
# 2,000 s per epoch; VGGSound pretraining 1,400 s; retrieval embeddings (a forward pass over ~1,700 clips) ~0.05 h.
GPU_H_PT = {'as2m': 4 * 77500 / 3600, 'vgg': 4 * 1400 / 3600}
GPU_H_FT = {'as20k': 4 * 450 / 3600, 'as2m': 4 * 86100 / 3600, 'vgg': 4 * 2000 / 3600}
GPU_H_RET = 0.05
TITLES = {
    '1': 'Table 1: audio-visual classification (A: audio only, V: visual only, AV: both), fine-tuned per dataset',
    '2a': 'Table 2a: pretraining contrastive weight lambda_c (AS-20K A-V mAP)',
    '2b': 'Table 2b: pretraining epochs of CAV-MAE Scale+ (AS-20K A-V mAP)',
    '2c': 'Table 2c: pretraining batch size (AS-20K A-V mAP)',
    '2d': 'Table 2d: pretraining target normalisation (AS-20K A-V mAP)',
    '2e': 'Table 2e: pretraining dataset (VGGSound A-V accuracy)',
    '2f': 'Table 2f: fine-tuning strategy (AS-20K A-V mAP)',
    '2g': 'Table 2g: single-modal experiments: missing modality against single-modal fine-tuning (AS-20K mAP)',
    '2h': 'Table 2h: inference frames (AS-20K mAP)',
    '2i': 'Table 2i: linear probe (AS-20K A-V mAP)',
    '3': 'Table 3: visual -> audio retrieval, pretrained models (no labels), R@1 / R@5 / R@10 in %',
    '5': 'Table 5: audio -> visual retrieval, pretrained models (no labels), R@1 / R@5 / R@10 in %',
}
DIFFS_FT = ('Fine-tuning follows the reference\'s scripts (cav-finetune --recipe: mixup 0.5, balanced sampling for '
            'AS-2M and VGGSound, the weight average of an epoch range, the mean of 10 frames); a cell is the final '
            'evaluation of the run (its final_eval.json). The shards keep each clip\'s waveform beside its fbank '
            '(prepare.py), so mixup mixes waveforms before the fbank, as the reference does; a run that mixed fbanks '
            'instead (its log has cav-finetune\'s warning: shards without waveforms) is named in the notes.')
# cav-finetune's warning (lib/train/loader.c) when a shard it mixes holds no waveform
FBANK_MIXUP = 'holds no wave: mixup mixes its fbank'


def mixed_fbanks(done):
    """The remark for a fine-tuning run whose log says that its mixup mixed fbanks, else None."""
    d = os.path.dirname(done)
    # a missing-modality stage evaluates the model of the multimodal run of its name (pipelines/stage.sh)
    d = re.sub(r'_missing(audio|video)only$', '_multimodal', d)
    log = d + '.log'
    if os.path.exists(log) and FBANK_MIXUP in open(log, errors='replace').read():
        return ('%s: mixup mixed fbanks, not waveforms (its shards held none: prepared before prepare.py kept them; '
                'rerun the stage)' % d)
    return None


def paper_numbers():
    out = {}
    for line in open(os.path.join(HERE, 'paper-numbers.tsv')):
        if line.startswith('#') or not line.strip():
            continue
        t, row, col, v = line.rstrip('\n').split('\t')
        out[(t, row, col)] = v
    return out


def ft_score(done, col, which=''):
    """The score of a fine-tuning run in % (mAP, or accuracy for VGGSound) and a remark (None if none): its final
    evaluation (final_eval.json: the weight-averaged or best model on the mean of 10 frames, or on one frame for a
    model that sees no video); WHICH 'frameF' is frame F's score of that evaluation, 'agg' the 10-frame aggregate.
    A run without final_eval.json (an older cav-finetune, or one stopped before its end) falls back to result.csv's
    last epoch (middle frame) with a remark; WHICH cannot."""
    d = os.path.dirname(done)
    p = os.path.join(d, 'final_eval.json')
    metric = 'acc' if col.startswith('vgg') else 'mAP'
    if not os.path.exists(p):
        if which:
            return None, '%s: no final_eval.json, so no %s score (rerun the stage with this cav-finetune)' % (d, which)
        rows = [r for r in csv.reader(open(os.path.join(d, 'result.csv'))) if r]
        v = float(rows[-1][0]) if metric == 'acc' else float(rows[-1][1])
        return 100 * v, ('%s: no final_eval.json; the score is result.csv\'s last epoch (epoch %d) on the middle '
                         'frame, not the final evaluation' % (d, len(rows)))
    ev = json.load(open(p))
    if not which:
        return 100 * ev[metric], None
    if ev['metric'] != metric:
        raise ValueError('%s: scored by %s, the column %s wants %s' % (p, ev['metric'], col, metric))
    frames, res = ev['frames'], ev['frame_res']
    if which == 'agg':
        if not ev['aggregated']:
            return None, '%s: evaluated without frame aggregation, so no aggregate' % p
        return 100 * ev[metric], None  # frame_res holds the frames' scores; the aggregate is the final one
    f = int(which[len('frame'):])
    if f not in frames:
        return None, '%s: frame %d not evaluated (frames %s)' % (p, f, frames)
    return 100 * res[frames.index(f)], None


def predictions(done):
    """A run's per-clip class probabilities of its final evaluation (ids, [N, K]): the 10-frame mean
    (predictions_agg.csv), or the one frame's of a model evaluated on one (audio only)."""
    import glob
    import numpy as np
    d = os.path.dirname(done)
    p = os.path.join(d, 'predictions_agg.csv')
    if not os.path.exists(p):
        one = sorted(glob.glob(os.path.join(d, 'predictions_frame*.csv')))
        if len(one) != 1:
            raise ValueError('%s: no predictions_agg.csv and %d predictions_frame*.csv (run with --predictions)'
                             % (d, len(one)))
        p = one[0]
    rows = list(csv.reader(open(p)))[1:]
    return [r[0] for r in rows], np.array([[float(x) for x in r[1:]] for r in rows])


def ensemble_score(dones, col, eval_shard):
    """The paper's ensemble of single-modal models: the mean of the runs' probabilities per clip, scored against the
    labels of the evaluation split (mAP over the classes with positives, as cav-finetune, or accuracy), in %."""
    import h5py
    import numpy as np
    from sklearn.metrics import average_precision_score
    ids, probs = None, []
    for done in dones:
        i, p = predictions(done)
        if ids is not None and i != ids:
            raise ValueError('%s: predictions of other clips than %s' % (done, dones[0]))
        ids = i
        probs.append(p)
    prob = np.mean(probs, axis=0)
    with h5py.File(eval_shard, 'r') as f:
        sid = [x.decode() if isinstance(x, bytes) else x for x in f['id'][:]]
        lab = np.asarray(f['labels'][:], dtype=np.float64)
    at = {v: k for k, v in enumerate(sid)}
    missing = [v for v in ids if v not in at]
    if missing:
        raise ValueError('%s: no clip %s of the predictions' % (eval_shard, missing[0]))
    y = lab[[at[v] for v in ids]]
    if col.startswith('vgg'):
        return 100 * float(np.mean(np.argmax(y, 1) == np.argmax(prob, 1)))
    ap = [average_precision_score(y[:, k], prob[:, k]) for k in range(y.shape[1]) if y[:, k].any()]
    return 100 * float(np.mean(ap))


def ret_scores(path, direction):
    for r in csv.reader(open(path)):
        if len(r) >= 6 and r[1] == direction:
            return [100 * float(x) for x in r[2:5]], float(r[5])
    raise ValueError('%s: no %s line' % (path, direction))


def run_name(path, w):
    rel = os.path.relpath(path, w)
    return rel[:-len('/done')] if rel.endswith('/done') else rel


def fmt(x):
    return '-' if x is None else ('%.1f' % x if not isinstance(x, str) else x)


def coverage_lines(dirs):
    s = []
    for d in dirs:
        p = os.path.join(d, 'coverage.json')
        if not os.path.exists(p):
            s.append('- %s: no coverage report' % d)
            continue
        rep = json.load(open(p))
        for name, c in rep['splits'].items():
            br = ', '.join('%s %d' % kv for kv in sorted(c['broken_reasons'].items()))
            s.append('- %s %s: %d of %d listed clips used (%.1f%%): %d missing, %d broken%s, %d silent; '
                     'worst class %.1f%% used' % (rep['dataset'], name, c['usable'], c['listed'], 100 * c['fraction'],
                                                  c['missing'], c['broken'], ' (%s)' % br if br else '', c['silent'],
                                                  100 * c['class_fraction_min']))
    return s


def version_line():
    try:
        commit = subprocess.run(['git', '-C', HERE, 'describe', '--always', '--dirty'], capture_output=True,
                                text=True).stdout.strip() or 'unknown'
    except OSError:
        commit = 'unknown'
    try:
        tool = subprocess.run(['cav-pretrain', '--version'], capture_output=True, text=True).stdout.strip()
    except OSError:
        tool = 'cav-pretrain not found'
    return 'Commit %s; %s.' % (commit, tool.splitlines()[0] if tool else 'unknown')


def stage_cost(stage):
    """Full-scale GPU-hours of one fine-tuning, retrieval or pretraining stage, from its path."""
    if '/ft/' in stage:
        pt, ft = stage.split('/ft/')[1].split('/')[:2]
        _, data, _, mode = ft.split('_')
        epochs = {'as20k': 15, 'as2m': 10, 'vgg': 10}[data]
        return (1 if mode.startswith('missing') else epochs) * GPU_H_FT[data]
    if '/ret/' in stage:
        return GPU_H_RET
    f = stage.split('/pt/')[1].split('/')[0].split('_')
    return int(f[7][1:]) * GPU_H_PT[f[0].split('+')[-1]]


def table_cost(stages):
    """GPU-hours of a table: its distinct fine-tuning and retrieval stages and the pretraining runs they need."""
    total, pts = 0.0, {}
    for s in stages:
        if '/ft/' in s or '/ret/' in s:
            total += stage_cost(s)
            pt = s.split('/ft/' if '/ft/' in s else '/ret/')[1].split('/')[0]
            pts[pt] = pt
        elif '/pt/' in s:
            pts[s.split('/pt/')[1].split('/')[0]] = 1
    for pt in pts:
        total += stage_cost('/pt/' + pt)
        if '+' in pt.split('_')[0]:  # continued from the Scale+ AS-2M run (25 epochs)
            total += 25 * GPU_H_PT['as2m']
    return total


def main():
    if sys.argv[1] == 'cost':
        stages = [a.partition('=') for a in sys.argv[2:]]
        print('GPU-hours per table at full scale (4-GPU runs of the reference\'s logs, Titan X Pascal / A5000;'
              ' a stage shared by several tables is counted in each):')
        for t, _, st in stages:
            print('  %-8s %8.0f GPU-h' % (t, table_cost(st.split())))
        print('  %-8s %8.0f GPU-h' % ('all', table_cost(sorted({s for _, _, st in stages for s in st.split()}))))
        return
    if sys.argv[1] == 'cost-one':
        print('Cost at full scale: about %.0f GPU-hours (reference\'s logs, 4 GPUs of the Titan X Pascal / A5000 '
              'class; pretraining runs shared with other tables included; `make -C pipelines cost`).'
              % table_cost(sys.argv[2].split()))
        return
    assert sys.argv[1] == 'table'
    tid = sys.argv[2]
    args = sys.argv[3:]
    out = w = scale = None
    covs, notes, cells = [], [], []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ('--out', '--w', '--scale', '--coverage', '--note'):
            v = args[i + 1]
            i += 2
            if a == '--out':
                out = v
            elif a == '--w':
                w = v
            elif a == '--scale':
                scale = v
            elif a == '--coverage':
                covs.append(v)
            else:
                notes.append(v)
            continue
        row, col, path = a.split('|')
        cells.append((row.replace('~', ' '), col, path))
        i += 1
    paper = paper_numbers()
    retrieval = tid in ('3', '5')
    rows = list(dict.fromkeys(r for r, _, _ in cells))
    cols = list(dict.fromkeys(c for _, c, _ in cells))
    got, runs = {}, []
    for row, col, path in cells:
        if path == '-':
            got[(row, col)] = 'n/a'
            continue
        if retrieval:
            rk, mr = ret_scores(path, 'video' if tid == '3' else 'audio')
            got[(row, col)] = ' '.join('%.1f' % x for x in rk) + ' (MR %g)' % mr
        elif '&' in path:
            dones = path.split('&')
            # the evaluation split the runs read: their stage's view (W/view/DATA/eval.h5)
            data = os.path.basename(os.path.dirname(dones[0])).split('_')[1]
            got[(row, col)] = ensemble_score(dones, col, os.path.join(w, 'view', data, 'eval.h5'))
            runs += [(row, col, run_name(d, w)) for d in dones]
            notes += ['%s / %s: %s' % (row, col, m) for m in map(mixed_fbanks, dones) if m]
            continue
        else:
            path, _, which = path.partition('@')
            v, remark = ft_score(path, col, which)
            got[(row, col)] = v if v is not None else 'n/a'
            for m in (remark, mixed_fbanks(path)):
                if m:
                    notes.append('%s / %s: %s' % (row, col, m))
        runs.append((row, col, run_name(path, w)))
    s = ['# %s' % TITLES.get(tid, 'Table ' + tid), '']
    s.append('Scale: **%s**. Ours beside the paper\'s (in parentheses). %s' % (scale, version_line()))
    s.append('')
    s.append('| model | ' + ' | '.join(cols) + ' |')
    s.append('|---|' + '---|' * len(cols))
    for r in rows:
        line = [r]
        for c in cols:
            p = paper.get((tid, r, c))
            line.append('%s (%s)' % (fmt(got.get((r, c))), p or '-') if (r, c) in got else '(%s)' % (p or '-'))
        s.append('| ' + ' | '.join(line) + ' |')
    s += ['', '## Data coverage', '']
    s += coverage_lines(covs)
    if retrieval:
        s += ['', 'Chance for R@k on N clips is k/N (in %: 100k/N); MR is the median rank (chance about N/2).']
        for d in covs:
            p = os.path.join(d, 'coverage.json')
            if os.path.exists(p):
                c = json.load(open(p))['splits']
                for name in ('ret', 'eval', 'test'):
                    if name in c:
                        n = c[name]['usable']
                        s.append('- %s %s: N = %d, chance R@1 %.1f%%, R@10 %.1f%%'
                                 % (json.load(open(p))['dataset'], name, n, 100 / n, min(100, 1000 / n)))
                        break
    else:
        s += ['', DIFFS_FT]
    s += ['', '## Notes', ''] + ['- ' + n for n in notes]
    s += ['', '## Runs', ''] + ['- %s / %s: `%s`' % r for r in runs]
    tmp = out + '.tmp'
    with open(tmp, 'w') as f:
        f.write('\n'.join(s) + '\n')
    os.replace(tmp, out)
    print('\n'.join(s[:len(rows) + 6]))


if __name__ == '__main__':
    main()
