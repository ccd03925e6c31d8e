"""recallfix.py: the embeddings cav-recall's tests rank (test_recall_scale.py, tests/cuda/test_cuda_recall.py):
planted matches (v = a + noise) and, in the first third, rows of small integers with repeated rows (exact
ties that a float product cannot separate: the double rechecks must), a zero row and a row with an infinity
(NaN similarities: no hit); and their record stream."""
import numpy as np

import cavstream


def make(n, D, g):
    """planted matches, integer rows with repeats (exact ties), a zero row and an inf row"""
    a = g.standard_normal((n, D)).astype(np.float32)
    v = (a + 1.5 * g.standard_normal((n, D))).astype(np.float32)
    nq = n // 3
    if nq:
        ai = g.integers(-2, 3, (nq, D)).astype(np.float32)
        vi = g.integers(-2, 3, (nq, D)).astype(np.float32)
        ai[np.abs(ai).sum(1) == 0, 0] = 1
        vi[np.abs(vi).sum(1) == 0, 0] = 1
        vi[::2] = ai[::2]                      # exact own matches
        vi[1::5] = vi[0]                       # repeated rows: many exact ties
        if nq > 3:
            ai[3::7] = ai[1]
        a[:nq], v[:nq] = ai, vi * np.float32(2.0 ** g.integers(-3, 4))  # a power of two keeps ties exact
    if n > 10:
        a[7] = 0                               # zero: NaN similarities
        v[9, 1] = np.inf                       # non-finite
    return a, v


def write(path, a, v, ids, labels=None):
    recs = []
    for i in range(len(a)):
        t = [('emb_a', a[i]), ('emb_v', v[i])]
        if labels is not None:
            t.append(('labels', labels[i].astype(np.float32)))
        recs.append((ids[i], {}, t))
    with open(path, 'wb') as f:
        f.write(cavstream.encode(recs))
