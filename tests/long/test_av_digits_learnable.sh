#!/bin/bash
# test_av_digits_learnable.sh (long): builds (or reuses) the full AV-Digits dataset in build/data/av-digits and
# checks that its labels are learnable from each modality alone on the held-out split (unseen voices and
# images), with deliberately crude features and sklearn classifiers, far above chance (0.10):
#   audio: statistics of log-mel frames of the loudest quarter of the clip -> SVM (about 0.30)
#   video: the middle frame of second 5, ink contrast pooled to 28x28 -> SVM (about 0.70)
# and that each clip's scene (16 noises + quiet, chance 1/17) is predictable from each modality alone:
#   audio: per-band mean and spread of the log-mel frames of the quieter half of the clip (the noise) -> SVM
#   video: the median colour of that same frame (the background) -> SVM      (both 1.00 on SEED=1)
# A real model does much better (DATA-SOURCES.md); this guards against a broken pipeline (labels shuffled
# against content, silent audio, wrong frames, scenes not shared by both streams), which would give chance.
set -u
SRC=${CAV_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${CAV_BUILD:-$SRC/build}
OUT=$BUILD/data/av-digits
export CACHE=${CACHE:-$BUILD/cache/av-digits}
if ! "$SRC/pipelines/av-digits/build.sh" "$OUT" >"$BUILD/av-digits-long.log" 2>&1; then
    echo "FAIL av_digits_full_build: $(tail -5 "$BUILD/av-digits-long.log")"; exit 1
fi
echo "PASS av_digits_full_build ($(sed -n 1p "$OUT/manifest.txt"))"
/usr/bin/python3 - "$OUT" <<'PYEOF'
import json, subprocess, sys
from multiprocessing import Pool
import numpy as np
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
out = sys.argv[1]
plan = [json.loads(l) for l in open(out + '/provenance.jsonl')]
scenes = sorted({c['scene'] for c in plan})

def mel_fb(n_fft=400, n_mels=40, sr=16000):
    f = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel = lambda h: 2595 * np.log10(1 + h / 700.0)
    pts = 700 * (10 ** (np.linspace(mel(0), mel(sr / 2), n_mels + 2) / 2595.0) - 1)
    return np.stack([np.clip(np.minimum((f - l) / (c - l), (r - f) / (r - c)), 0, None)
                     for l, c, r in zip(pts, pts[1:], pts[2:])])
FB = mel_fb()

def features(c):
    p = out + '/' + c['file']
    pcm = subprocess.run(['ffmpeg', '-v', 'error', '-i', p, '-ac', '1', '-ar', '16000', '-f', 's16le', '-'],
                         capture_output=True).stdout
    x = np.frombuffer(pcm, '<i2').astype(np.float32)[:160000] / 32768
    fr = np.lib.stride_tricks.sliding_window_view(x, 400)[::160] * np.hanning(400)
    S = np.log(FB @ (np.abs(np.fft.rfft(fr, axis=1)) ** 2).T + 1e-8)      # (40 mels, T)
    e = S.mean(0)
    loud = e > np.percentile(e, 75)
    quiet = e <= np.median(e)
    # the scene: the spectrum of the quieter half of the frames, where the noise is heard alone (not
    # mean-normalised: the quiet scene is silence)
    sa = np.concatenate([S[:, quiet].mean(1), S[:, quiet].std(1)])
    S = S - S.mean(1, keepdims=True)
    a = np.concatenate([S[:, loud].mean(1), S[:, loud].std(1), np.diff(S, axis=1)[:, loud[1:]].std(1)])
    raw = subprocess.run(['ffmpeg', '-v', 'error', '-i', p, '-vf', 'select=eq(n\\,137)', '-vsync', '0',
                          '-frames:v', '1', '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-'], capture_output=True).stdout
    rgb = np.frombuffer(raw, np.uint8).reshape(224 * 224, 3).astype(np.float32)
    g = (rgb @ np.array([0.299, 0.587, 0.114], np.float32)).reshape(224, 224)
    g = np.abs(g - np.median(g)).reshape(28, 8, 28, 8).mean((1, 3))      # ink against any background
    return (a, (g / (g.max() + 1e-6)).ravel(), c['digits'][0], c['split'] == 'train', sa,
            np.median(rgb, axis=0), scenes.index(c['scene']))

with Pool(2) as pool:
    r = pool.map(features, plan, chunksize=20)
y = np.array([t[2] for t in r])
tr = np.array([t[3] for t in r])
ys = np.array([t[6] for t in r])
bad = 0
for name, X, yy, floor, chance in (
        ('audio', np.array([t[0] for t in r]), y, 0.2, 0.1), ('video', np.array([t[1] for t in r]), y, 0.5, 0.1),
        ('scene_audio', np.array([t[4] for t in r]), ys, 0.7, 1 / 17),
        ('scene_video', np.array([t[5] for t in r]), ys, 0.9, 1 / 17)):
    sc = StandardScaler().fit(X[tr])
    clf = SVC(C=10).fit(sc.transform(X[tr]), yy[tr])
    acc = clf.score(sc.transform(X[~tr]), yy[~tr])
    ok = acc >= floor
    bad += not ok
    print('%s av_digits_learnable_%s: held-out accuracy %.3f (%d train, %d test clips; floor %.2f, chance %.2f)'
          % ('PASS' if ok else 'FAIL', name, acc, tr.sum(), (~tr).sum(), floor, chance))
sys.exit(1 if bad else 0)
PYEOF
