"""test_recall_scale.py: cav-recall's blocked retrieval against an independent NumPy implementation of the
reference's ranks (src/retrieval.py: sim = dot / (norm * norm) in double; a query's rank is the number of
items with a strictly greater similarity, its ties the items with an equal one), for N from 1 to 20,000 with
the block size forced small (--block, CAV_RECALL_BLOCK) so that block edges are crossed.

The embeddings mix planted matches (v = a + noise), rows of small integers with repeated rows (exact ties
that the float product cannot separate and that must be rechecked in double), a zero row and a row with
an infinity (NaN similarities: no hit). Checked: every rank and tie count in both directions (--ranks), the
CSV line, the top-k lists (--matches: similarity descending, then index), class-level retrieval (--class,
labels from --labels) and queries against another set (--gallery, own item found by id). Each case again
with --device cpu (the device path on the CPU backend: both sets uploaded, the next block's product issued
before the current one is scanned, two product buffers, downloads in two slots that the CPU backend copies
only when waited for): the same bytes in every output. With CAV_RECALL_OLD pointing at a build of the
previous, whole-matrix cav-recall, also byte-equality with it."""
import io
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toolenv  # noqa: E402
from toolenv import BIN, report  # noqa: E402
import cavstream  # noqa: E402
from recallfix import make, write  # noqa: E402

OLD = os.environ.get('CAV_RECALL_OLD', '')
TMP = tempfile.mkdtemp(prefix='cav-recall-scale-')


def norms(x):
    return np.sqrt(np.einsum('ij,ij->i', x, x))


def sim_rows(q, g, rows):
    """The reference's similarity for query rows (float64), NaN where a norm is 0 or not finite."""
    with np.errstate(all='ignore'):
        s = (q[rows] @ g.T) / (norms(q[rows])[:, None] * norms(g)[None, :])
        bad = ~np.isfinite(norms(q[rows]))[:, None] | ~np.isfinite(norms(g))[None, :]
        s[bad] = np.nan
    return s


def np_ranks(q, g, target=None, qlab=None, glab=None, k=0, block=1000):
    """rank, ties (and top-k indices, similarities) per query, in row blocks (never the n x n matrix)."""
    nq = len(q)
    rank, ties = np.zeros(nq, np.int64), np.zeros(nq, np.int64)
    top, tops = [], []
    for r0 in range(0, nq, block):
        rows = np.arange(r0, min(nq, r0 + block))
        s = sim_rows(q, g, rows)
        if qlab is not None:
            share = (qlab[rows] @ glab.T) > 0
            with np.errstate(all='ignore'):
                thr = np.where(share.any(1), np.nanmax(np.where(share, s, -np.inf), axis=1), np.nan)
            thr[np.isinf(thr)] = np.nan
        else:
            t = target[rows]
            thr = np.where(t >= 0, s[np.arange(len(rows)), np.maximum(t, 0)], np.nan)
        with np.errstate(invalid='ignore'):
            rank[rows] = np.sum(s > thr[:, None], axis=1)
            ties[rows] = np.sum(s == thr[:, None], axis=1)
        if k:
            for i in range(len(rows)):
                ok = ~np.isnan(s[i])
                idx = np.nonzero(ok)[0]
                order = np.lexsort((idx, -s[i, idx]))[:k]
                top.append(idx[order])
                tops.append(s[i, idx[order]])
    return rank, ties, top, tops


def np_csv(dataset, rank_ties, first=False):
    res = []
    for direction, (rank, ties) in rank_ties:
        if first:
            ind = rank
        else:
            ind = np.concatenate([np.arange(r, r + t) for r, t in zip(rank, ties) if t > 0] + [np.zeros(0, np.int64)])
        res.append([dataset, direction, float(np.sum(ind == 0)) / len(ind), float(np.sum(ind < 5)) / len(ind),
                    float(np.sum(ind < 10)) / len(ind), np.median(ind) + 1])
    f = io.BytesIO()
    np.savetxt(f, res, delimiter=',', fmt='%s')
    return f.getvalue().decode()


def run(*args, env=None, binary=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([binary or os.path.join(BIN, 'cav-recall')] + list(args), capture_output=True, env=e)


def same_file(a, b):
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        return fa.read() == fb.read()


def parse_ranks(path):
    out = {}
    for r in open(path).read().splitlines()[1:]:
        f = r.split(',')
        out.setdefault(f[0], []).append((int(f[-2]), int(f[-1]) + 1))
    return {d: (np.array([x[0] for x in v]), np.array([x[1] for x in v])) for d, v in out.items()}


def parse_matches(path, nq, k):
    top = {d: [[] for _ in range(nq)] for d in ('video', 'audio')}
    sims = {d: [[] for _ in range(nq)] for d in ('video', 'audio')}
    for r in open(path).read().splitlines()[1:]:
        f = r.split(',')
        top[f[0]][int(f[1])].append(int(f[4]))
        sims[f[0]][int(f[1])].append(float(f[6]))
    return top, sims


g = np.random.default_rng(5)
cases = [(1, 8, 1), (2, 8, 1), (3, 5, 2), (17, 6, 4), (64, 16, 7), (257, 12, 64), (1000, 24, 100),
         (4099, 16, 1000), (20000, 16, 3000)]
for n, D, block in cases:
    a, v = make(n, D, g)
    ids = ['c%05d' % i for i in range(n)]
    p = os.path.join(TMP, 'e%d.cavs' % n)
    write(p, a, v, ids)
    a64, v64 = a.astype(np.float64), v.astype(np.float64)
    ident = np.arange(n)
    k = 3 if n <= 4099 else 0
    want = {'video': np_ranks(v64, a64, ident, k=k), 'audio': np_ranks(a64, v64, ident, k=k)}
    ranks = os.path.join(TMP, 'r%d.csv' % n)
    matches = os.path.join(TMP, 'm%d.csv' % n)
    extra = ['--topk', str(k), '--matches', matches] if k else []
    r = run('--dataset', 'scale', '--ranks', ranks, *extra, p, env={'CAV_RECALL_BLOCK': str(block)})
    if r.returncode != 0:
        report('scale_n%d' % n, False, r.stderr.decode()[-400:])
        continue
    got = parse_ranks(ranks)
    for d in ('video', 'audio'):
        okr = np.array_equal(got[d][0], want[d][0]) and np.array_equal(got[d][1], want[d][1])
        bad = np.nonzero((got[d][0] != want[d][0]) | (got[d][1] != want[d][1]))[0][:5]
        report('scale_n%d_block%d_ranks_%s' % (n, block, d), okr,
               'queries %s: got %s want %s' % (bad, [(got[d][0][i], got[d][1][i]) for i in bad],
                                              [(want[d][0][i], want[d][1][i]) for i in bad]))
    if n > 10:  # the zero row and the row with an infinity are named, and no other
        warned = [ln for ln in r.stderr.decode().splitlines() if 'zero or non-finite' in ln]
        report('scale_n%d_warns_invalid_rows' % n, len(warned) == 2 and 'record 7 (c00007)' in warned[0] and
               'record 9 (c00009)' in warned[1], str(warned))
    if n > 1:
        multi = sum(int(np.sum(want[d][1] > 1)) for d in want)
        if n >= 64:
            report('scale_n%d_has_ties' % n, multi > 0, 'no query with tied items')
        csv = np_csv('scale', [(d, want[d][:2]) for d in ('video', 'audio')])
        report('scale_n%d_csv' % n, r.stdout.decode() == csv, 'got %r want %r' % (r.stdout.decode(), csv))
    if k:
        top, sims = parse_matches(matches, n, k)
        okt = all(list(top[d][i]) == list(want[d][2][i]) and np.allclose(sims[d][i], want[d][3][i], rtol=0, atol=1e-15)
                  for d in ('video', 'audio') for i in range(n))
        report('scale_n%d_topk' % n, okt, 'top-k lists differ')
    # the device path (--device cpu: uploads, two product buffers, downloads in two slots) on the same blocks:
    # the same bytes in every output
    rd = run('--dataset', 'scale', '--ranks', ranks + '.dev', *(['--topk', str(k), '--matches', matches + '.dev']
             if k else []), '--device', 'cpu', p, env={'CAV_RECALL_BLOCK': str(block)})
    same_dev = rd.returncode == 0 and rd.stdout == r.stdout and same_file(ranks, ranks + '.dev') and \
        (not k or same_file(matches, matches + '.dev'))
    report('scale_n%d_block%d_device_cpu_same' % (n, block), same_dev, 'exit %d, CSV %s: %s' % (
        rd.returncode, 'same' if rd.stdout == r.stdout else 'differs', rd.stderr.decode()[-300:]))
    if OLD:
        ro = run('--dataset', 'scale', '--ranks', ranks + '.old', p, binary=OLD)
        report('scale_n%d_equals_previous_cav_recall' % n, ro.returncode == 0 and ro.stdout == r.stdout and
               open(ranks + '.old').read() == open(ranks).read(), ro.stderr.decode()[-300:])
    print('  n=%d D=%d block=%d: %s' % (n, D, block, r.stderr.decode().strip().splitlines()[-3]))

# --ties first on the tie-rich case, against first-position ranks
n, D = 1000, 8
a, v = make(n, D, g)
ids = ['c%05d' % i for i in range(n)]
p = os.path.join(TMP, 'first.cavs')
write(p, a, v, ids)
a64, v64 = a.astype(np.float64), v.astype(np.float64)
want = [(d, np_ranks(q, gg, np.arange(n))[:2]) for d, q, gg in (('video', v64, a64), ('audio', a64, v64))]
r = run('--ties', 'first', '--block', '33', p, '--dataset', 'f')
csv = np_csv('f', want, first=True)
report('scale_ties_first_csv', r.returncode == 0 and r.stdout.decode() == csv, 'got %r want %r' % (r.stdout, csv))
rd = run('--ties', 'first', '--block', '33', p, '--dataset', 'f', '--device', 'cpu')
report('scale_ties_first_device_cpu_same', rd.returncode == 0 and rd.stdout == r.stdout, rd.stderr.decode()[-300:])

# class-level: labels from another file, joined by id
n, D, K = 3000, 12, 70
a, v = make(n, D, g)
ids = ['c%05d' % i for i in range(n)]
lab = np.zeros((n, K))
lab[np.arange(n), g.integers(0, K, n)] = 1
lab[np.arange(0, n, 4), g.integers(0, K, (n + 3) // 4)] = 1     # some clips carry two labels
lab[5] = 0                                                       # and one none
p, pl = os.path.join(TMP, 'cls.cavs'), os.path.join(TMP, 'cls-labels.cavs')
write(p, a, v, ids)
with open(pl, 'wb') as f:
    f.write(cavstream.encode([(ids[i], {}, [('labels', lab[i].astype(np.float32))]) for i in range(n)][::-1]))
a64, v64 = a.astype(np.float64), v.astype(np.float64)
ranks = os.path.join(TMP, 'cls-ranks.csv')
r = run('--class', '--labels', pl, '--ranks', ranks, '--block', '500', p, '--dataset', 'cls')
if r.returncode == 0:
    got = parse_ranks(ranks)
    want = {'video': np_ranks(v64, a64, qlab=lab, glab=lab), 'audio': np_ranks(a64, v64, qlab=lab, glab=lab)}
    for d in ('video', 'audio'):
        report('class_ranks_%s' % d, np.array_equal(got[d][0], want[d][0]) and np.array_equal(got[d][1], want[d][1]),
               'differ')
    csv = np_csv('cls', [(d, want[d][:2]) for d in ('video', 'audio')])
    report('class_csv', r.stdout.decode() == csv, 'got %r want %r' % (r.stdout, csv))
    # two passes over the blocks on the device path (the class maxima, then the counts)
    rd = run('--class', '--labels', pl, '--ranks', ranks + '.dev', '--block', '500', p, '--dataset', 'cls',
             '--device', 'cpu')
    report('class_device_cpu_same', rd.returncode == 0 and rd.stdout == r.stdout and same_file(ranks, ranks + '.dev'),
           rd.stderr.decode()[-300:])
else:
    report('class_ranks', False, r.stderr.decode()[-300:])

# two sets: the queries are a shuffled subset (and some strangers), the gallery another file
ng, nq = 2500, 300
a, v = make(ng, 16, g)
gids = ['g%05d' % i for i in range(ng)]
pg = os.path.join(TMP, 'gallery.cavs')
write(pg, a, v, gids)
pick = g.permutation(ng)[:nq]
qa, qv = a[pick].copy(), v[pick].copy()
qids = [gids[j] for j in pick]
qa[:20] = g.standard_normal((20, 16))
qids[:20] = ['stranger%d' % i for i in range(20)]
pq = os.path.join(TMP, 'queries.cavs')
write(pq, qa, qv, qids)
target = np.array([-1] * 20 + list(pick[20:]))
ranks, matches = os.path.join(TMP, 'x-ranks.csv'), os.path.join(TMP, 'x-matches.csv')
r = run('--gallery', pg, '--ranks', ranks, '--topk', '4', '--matches', matches, '--block', '128', pq, '--dataset', 'x')
if r.returncode == 0:
    got = parse_ranks(ranks)
    top, sims = parse_matches(matches, nq, 4)
    want = {'video': np_ranks(qv.astype(np.float64), a.astype(np.float64), target, k=4),
            'audio': np_ranks(qa.astype(np.float64), v.astype(np.float64), target, k=4)}
    for d in ('video', 'audio'):
        report('gallery_ranks_%s' % d, np.array_equal(got[d][0], want[d][0]) and np.array_equal(got[d][1], want[d][1]),
               'differ')
        report('gallery_topk_%s' % d, all(top[d][i] == list(want[d][2][i]) for i in range(nq)), 'differ')
    csv = np_csv('x', [(d, want[d][:2]) for d in ('video', 'audio')])
    report('gallery_csv', r.stdout.decode() == csv, 'got %r want %r' % (r.stdout, csv))
    # two sets on the device path, one direction at a time (each its own uploads)
    rd = run('--gallery', pg, '--ranks', ranks + '.dev', '--topk', '4', '--matches', matches + '.dev', '--block', '128',
             pq, '--dataset', 'x', '--device', 'cpu')
    report('gallery_device_cpu_same', rd.returncode == 0 and rd.stdout == r.stdout and same_file(ranks, ranks + '.dev')
           and same_file(matches, matches + '.dev'), rd.stderr.decode()[-300:])
else:
    report('gallery_ranks', False, r.stderr.decode()[-300:])

# the ASan/UBSan build through every path (blocks of 7: edges everywhere; class, top-k, two sets)
ASAN = os.environ.get('CAV_ASAN_BIN', '')
if ASAN and os.path.exists(os.path.join(ASAN, 'cav-recall')):
    outs = []
    for extra in (['--class', '--labels', pl, p], ['--gallery', pg, pq], [pq], ['--device', 'cpu', '--class', '--labels',
                  pl, p], ['--device', 'cpu', '--gallery', pg, pq], ['--device', 'cpu', pq]):
        args = ['--block', '7', '--topk', '3', '--matches', os.path.join(TMP, 'am.csv'), '--ranks',
                os.path.join(TMP, 'ar.csv')] + extra
        ra = run(*args, binary=os.path.join(ASAN, 'cav-recall'))
        rr = run(*args)
        e = ra.stderr.decode()
        outs.append(ra.returncode == 0 and ra.stdout == rr.stdout and 'Sanitizer' not in e and 'runtime error' not in e)
    report('asan_class_gallery_topk', all(outs), str(outs))
else:
    print('SKIP asan: no ASan build of cav-recall (CAV_ASAN_BIN)')

r = run('--block', '0', pq)
report('bad_block_exit_1', r.returncode == 1, str(r.returncode))
r = run('--device', 'tpu', pq)
report('bad_device_exit_1', r.returncode == 1 and b'--device tpu' in r.stderr, r.stderr.decode()[-300:])
sys.exit(toolenv.status())
