"""gen_metrics.py OUTDIR: golden metrics from sklearn/scipy/numpy as the reference computes them (cav-numerics(7) 3.4:
calculate_stats; cav-numerics(7) 4: compute_metrics of retrieval.py), on random scores with and without ties."""
import os
import sys

import numpy as np
from scipy import stats as sst
from sklearn import metrics

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
g = np.random.default_rng(7)
rows = []
for case, (n, k, tie) in enumerate([(200, 12, False), (150, 7, True), (64, 3, True)]):
    scores = g.standard_normal((n, k)).astype(np.float32)
    if tie:  # coarse quantisation makes many equal scores inside each class
        scores = (np.round(scores * 2) / 2).astype(np.float32)
    targets = (g.random((n, k)) < 0.3).astype(np.float32)
    targets[0, :] = 1.0  # every class has a positive
    targets[1, :] = 0.0  # and a negative
    aps = [metrics.average_precision_score(targets[:, c], scores[:, c], average=None) for c in range(k)]
    aucs = [metrics.roc_auc_score(targets[:, c], scores[:, c], average=None) for c in range(k)]
    acc = metrics.accuracy_score(np.argmax(targets, 1), np.argmax(scores, 1))
    mauc = float(np.mean(aucs))
    dprime = float(sst.norm().ppf(mauc) * np.sqrt(2.0))
    scores.tofile(os.path.join(out, f"cls{case}.scores"))
    targets.tofile(os.path.join(out, f"cls{case}.targets"))
    with open(os.path.join(out, f"cls{case}.txt"), "w") as f:
        f.write(f"{n} {k} {np.mean(aps):.17g} {mauc:.17g} {dprime:.17g} {acc:.17g}\n")
        f.write(" ".join(f"{a:.17g}" for a in aps) + "\n")
        f.write(" ".join(f"{a:.17g}" for a in aucs) + "\n")

# Retrieval: the reference's compute_metrics on a similarity matrix without ties.
for case, n in enumerate([50, 101]):
    a = g.standard_normal((n, 16))
    v = a + g.standard_normal((n, 16)) * 1.5
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    x = (a @ v.T).astype(np.float32)
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)[:, np.newaxis]
    ind = np.where(sx - d == 0)[1]
    assert len(ind) == n
    x.tofile(os.path.join(out, f"ret{case}.sim"))
    with open(os.path.join(out, f"ret{case}.txt"), "w") as f:
        f.write(f"{n} {np.sum(ind == 0) / n:.17g} {np.sum(ind < 5) / n:.17g} {np.sum(ind < 10) / n:.17g} "
                f"{np.median(ind) + 1:.17g}\n")
