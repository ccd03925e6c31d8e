"""test_recall.py: cav-recall against an independent numpy transcription of the reference's retrieval
(src/retrieval.py: get_sim_mat's dot / (norm * norm), compute_metrics with np.sort / np.where, the
directions 'video' then 'audio', np.savetxt(fmt='%s') of [dataset, direction, R1, R5, R10, MR]).

Cases: random embeddings (no ties); quantised embeddings with exact ties, where np.where gives a query
several hits (checked to happen); --ties first against first-position ranks; --ranks per query; the pipe
cav-embed | cav-recall on a micro model against the PyTorch reference model's embeddings; rows of
subnormals and rows near FLT_MAX (ties across magnitudes), also with --device cpu; bad input
(missing field, no records) exits 2 naming it; the ASan build on the tie case."""
import io
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from numpy import dot
from numpy.linalg import norm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toolenv  # noqa: E402
from toolenv import ASAN_BIN, BIN, report  # noqa: E402
toolenv.use_ref()
import cavstream  # noqa: E402

TMP = tempfile.mkdtemp(prefix='cav-recall-test-')


# ---- the reference, transcribed ----
def get_sim_mat(a, b):
    B = a.shape[0]
    sim_mat = np.empty([B, B])
    for i in range(B):
        for j in range(B):
            sim_mat[i, j] = dot(a[i, :], b[j, :]) / (norm(a[i, :]) * norm(b[j, :]))
    return sim_mat


def compute_metrics(x):
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)
    d = d[:, np.newaxis]
    ind = sx - d
    ind = np.where(ind == 0)
    ind = ind[1]
    return {'R1': float(np.sum(ind == 0)) / len(ind), 'R5': float(np.sum(ind < 5)) / len(ind),
            'R10': float(np.sum(ind < 10)) / len(ind), 'MR': np.median(ind) + 1, 'hits': len(ind)}


def first_ranks(x):
    """The first position of the diagonal value in each row sorted descending."""
    sx = np.sort(-x, axis=1)
    return np.array([int(np.where(sx[i] == -x[i, i])[0][0]) for i in range(len(x))])


def reference_csv(dataset, a, v):
    res, hits = [], {}
    for direction in ['video', 'audio']:
        sim = get_sim_mat(a, v) if direction == 'audio' else get_sim_mat(v, a)
        m = compute_metrics(sim)
        hits[direction] = m['hits']
        res.append([dataset, direction, m['R1'], m['R5'], m['R10'], m['MR']])
    f = io.BytesIO()
    np.savetxt(f, res, delimiter=',', fmt='%s')
    return f.getvalue().decode(), hits


def write(path, a, v, ids=None, drop=None):
    recs = []
    for i in range(len(a)):
        t = [('emb_a', a[i].astype(np.float32)), ('emb_v', v[i].astype(np.float32))]
        if drop == i:
            t = t[:1]
        recs.append((ids[i] if ids else 'clip%04d' % i, {}, t))
    with open(path, 'wb') as f:
        f.write(cavstream.encode(recs))


def recall(*args, stdin=None, asan=False):
    return subprocess.run([os.path.join(ASAN_BIN if asan else BIN, 'cav-recall')] + list(args), input=stdin,
                          capture_output=True)


g = np.random.default_rng(11)

# 1. random embeddings, normalised as cav-embed writes them; no ties
n = 120
a = g.standard_normal((n, 16)).astype(np.float32)
v = (a + 1.2 * g.standard_normal((n, 16))).astype(np.float32)
a /= np.linalg.norm(a, axis=1, keepdims=True)
v /= np.linalg.norm(v, axis=1, keepdims=True)
p = os.path.join(TMP, 'rand.cavs')
write(p, a, v)
want, hits = reference_csv('rand', a.astype(np.float64), v.astype(np.float64))
r = recall(p)
report('random_csv_equals_reference', r.returncode == 0 and r.stdout.decode() == want and hits['audio'] == n,
       'got %r want %r; %s' % (r.stdout.decode(), want, r.stderr.decode()[-300:]))
print('  random: ' + want.replace('\n', ' | '))

# 2. quantised embeddings (values -1, 0, 1; some rows repeated): exact ties, several hits per query
n = 80
a = g.integers(-1, 2, (n, 3)).astype(np.float32)
v = g.integers(-1, 2, (n, 3)).astype(np.float32)
v[np.abs(v).sum(1) == 0] = 1
a[np.abs(a).sum(1) == 0] = 1
v[5] = a[5]
v[9] = a[9]
p = os.path.join(TMP, 'ties.cavs')
write(p, a, v, ids=['id,%d' % i if i == 3 else 'q%d' % i for i in range(n)])
want, hits = reference_csv('ties', a.astype(np.float64), v.astype(np.float64))
report('ties_present', hits['audio'] > n and hits['video'] > n, str(hits))
r = recall(p)
report('ties_csv_equals_reference', r.returncode == 0 and r.stdout.decode() == want,
       'got %r want %r; %s' % (r.stdout.decode(), want, r.stderr.decode()[-300:]))
print('  ties (%s hits): %s' % (hits, want.replace('\n', ' | ')))

# 3. --ties first and --ranks: one hit per query at the first position of its value
ranks = os.path.join(TMP, 'ranks.csv')
r = recall('--ties', 'first', '--dataset', 'x,y', '--ranks', ranks, '-o', os.path.join(TMP, 'out.csv'), p)
ok = r.returncode == 0
lines = open(os.path.join(TMP, 'out.csv')).read().splitlines() if ok else []
rows = open(ranks).read().splitlines() if ok else []
for k, direction in enumerate(['video', 'audio']):
    sim = get_sim_mat(a.astype(np.float64), v.astype(np.float64))
    sim = sim if direction == 'audio' else get_sim_mat(v.astype(np.float64), a.astype(np.float64))
    fr = first_ranks(sim)
    ties = np.array([int(np.sum(sim[i] == sim[i, i])) - 1 for i in range(n)])
    want_line = '"x,y",%s,%s,%s,%s,%s' % (direction, float(np.mean(fr == 0)), float(np.mean(fr < 5)),
                                          float(np.mean(fr < 10)), np.median(fr) + 1)
    ok_line = len(lines) == 2 and lines[k] == want_line
    report('ties_first_%s' % direction, ok_line, '%s vs %s' % (lines, want_line))
    want_rows = ['%s,%d,%s,%d,%d' % (direction, i, '"id,3"' if i == 3 else 'q%d' % i, fr[i], ties[i]) for i in range(n)]
    report('ranks_file_%s' % direction, rows[1 + k * n:1 + (k + 1) * n] == want_rows and rows[0] == 'direction,index,id,rank,ties',
           str(rows[:3]))

# 4. the pipe cav-embed | cav-recall on a micro model, against the PyTorch model's embeddings
try:
    import torch
    import torch.nn.functional as F
    import cavmae_ref as R
    import st_io
    torch.manual_seed(0)
    knobs = {'embed_dim': 32, 'num_heads': 2, 'depth': 3, 'modality_specific_depth': 2, 'audio_length': 64,
             'img_size': 32}
    model = R.CAVMAE(decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, **knobs).eval()
    with torch.no_grad():
        for prm in model.parameters():
            prm.add_(torch.randn(prm.shape) * 0.05)
    ck = os.path.join(TMP, 'm.safetensors')
    st_io.save(ck, model.state_dict(), {'format': 'cav-mae/1', 'config': json.dumps(dict(knobs, decoder_embed_dim=16,
               decoder_depth=1, decoder_num_heads=2))})
    recs, aa, vv = [], [], []
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    for i in range(24):
        fb = (g.standard_normal((64, 128)) * 3 - 5).astype(np.float32)
        fr_ = g.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
        recs.append(('c%02d' % i, {}, [('fbank', fb), ('frames', fr_)]))
        aa.append((torch.from_numpy(fb) + 5.081) / 4.4849)
        vv.append((torch.from_numpy(fr_[5]).permute(2, 0, 1).float() / 255 - mean) / std)
    with torch.no_grad():
        fa, fv = model.forward_feat(torch.stack(aa), torch.stack(vv))
    ea = F.normalize(fa.mean(1), dim=-1).numpy().astype(np.float64)
    ev = F.normalize(fv.mean(1), dim=-1).numpy().astype(np.float64)
    want, _ = reference_csv('stdin', ea, ev)
    cl = os.path.join(TMP, 'clips.cavs')
    with open(cl, 'wb') as f:
        f.write(cavstream.encode(recs))
    r = subprocess.run('"%s/cav-embed" --model "%s" - < "%s" | "%s/cav-recall" -' % (BIN, ck, cl, BIN), shell=True,
                       capture_output=True)
    report('embed_pipe_recall_equals_reference', r.returncode == 0 and r.stdout.decode() == want,
           'got %r want %r; %s' % (r.stdout.decode(), want, r.stderr.decode()[-300:]))
    print('  embed | recall: ' + r.stdout.decode().replace('\n', ' | '))
except ImportError as e:
    print('SKIP embed_pipe_recall: %s' % e)

# 5. magnitudes at the ends of float's range: cav_retr_set_init scales each row by a power of two into
# [1, 2) (rows of subnormals by more than 2^127: two steps; rows near FLT_MAX down by 2^-127), exactly, so
# the similarities (small integers: exact in any order) and their ties are the unscaled rows'; a copy of a row
# at another magnitude ties with it. Also through the device path.
n = 60
xa = g.integers(-2, 3, (n, 8)).astype(np.float64)
xv = g.integers(-2, 3, (n, 8)).astype(np.float64)
xa[np.abs(xa).sum(1) == 0, 0] = 1
xv[np.abs(xv).sum(1) == 0, 0] = 1
xv[::3] = xa[::3]
xa[50:], xv[50:] = xa[:10], xv[:10]         # the same rows again, scaled below
for rows, ea, ev in ((slice(0, 20), -147, 100), (slice(20, 35), 125, -140), (slice(35, 45), 126, 126),
                     (slice(50, 55), -140, 0)):
    xa[rows] *= 2.0 ** ea
    xv[rows] *= 2.0 ** ev
for x in (xa, xv):  # every value a float, exactly
    assert np.all(np.isfinite(x.astype(np.float32))) and np.all(x.astype(np.float32).astype(np.float64) == x)
p = os.path.join(TMP, 'range.cavs')
write(p, xa, xv)
want, hits = reference_csv('range', xa, xv)
report('range_ties_present', hits['audio'] > n and hits['video'] > n, str(hits))
for extra in ([], ['--device', 'cpu', '--block', '7']):
    r = recall(*extra, p)
    report('range_csv_equals_reference%s' % ('_device_cpu' if extra else ''), r.returncode == 0 and
           r.stdout.decode() == want, 'got %r want %r; %s' % (r.stdout.decode(), want, r.stderr.decode()[-300:]))

# 6. bad input
p = os.path.join(TMP, 'bad.cavs')
write(p, a[:5], v[:5], drop=2)
r = recall(p)
report('missing_field_exit_2', r.returncode == 2 and b'clip0002' in r.stderr and
       b'emb_v' in r.stderr and b'bad.cavs' in r.stderr, '%d %s' % (r.returncode, r.stderr.decode()))
r = recall(stdin=cavstream.encode([]))
report('no_records_exit_2', r.returncode == 2, '%d %s' % (r.returncode, r.stderr.decode()))
r = recall('--ties', 'some', p)
report('bad_option_exit_1', r.returncode == 1, str(r.returncode))

# 7. ASan/UBSan on the tie case
if ASAN_BIN and os.path.exists(os.path.join(ASAN_BIN, 'cav-recall')):
    p = os.path.join(TMP, 'ties.cavs')
    want, _ = reference_csv('ties', a.astype(np.float64), v.astype(np.float64))
    r = recall('--ranks', os.path.join(TMP, 'r2.csv'), p, asan=True)
    err = r.stderr.decode()
    report('asan_ties', r.returncode == 0 and r.stdout.decode() == want and 'Sanitizer' not in err and
           'runtime error' not in err, err[-500:])
else:
    print('SKIP asan: no ASan build of cav-recall (CAV_ASAN_BIN)')

sys.exit(toolenv.status())
