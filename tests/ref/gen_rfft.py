#!/usr/bin/python3
"""gen_rfft.py OUTDIR: golden real FFTs from torch.fft.rfft (Debian python3-torch, a CPU build without MKL,
so the transform is pocketfft's in float32), for lib/rfft.c, which must reproduce them bit for bit
(tests/unit/test_rfft.c). For each length N in LENGTHS it writes:
  in_N.f32   [ROWS, N] float32 signals: Gaussian noise over eight decades of scale, half of the rows zero
             past 3N/4 (as fbank's zero-padded frames), rows of windowed speech-like sums of sinusoids,
             a constant row, a single impulse, and one row of the largest and smallest normal floats;
  out_N.f32  [ROWS, N/2+1, 2] torch.fft.rfft of in_N, (re, im) interleaved;
all raw little-endian, and index.txt with one line "N ROWS" per length. The rows are transformed as one
[ROWS, N] batch, as kaldi.fbank calls it; the script checks that row-by-row calls give the same bits.
"""
import os
import sys

import numpy as np
import torch

torch.set_num_threads(1)
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
LENGTHS = [2, 4, 8, 16, 64, 128, 256, 512, 1024, 2048, 4096]
ROWS = 96
rng = np.random.default_rng(20240611)
index = []
for n in LENGTHS:
    x = rng.standard_normal((ROWS, n)) * 10.0 ** rng.uniform(-5, 3, (ROWS, 1))
    x[: ROWS // 2, (3 * n) // 4:] = 0.0
    t = np.arange(n)
    for r in range(ROWS - 16, ROWS - 4):  # sums of sinusoids under a Hann window
        f = rng.uniform(0, n / 2, 6)
        a = 10.0 ** rng.uniform(-3, 0, 6)
        ph = rng.uniform(0, 2 * np.pi, 6)
        x[r] = (a[None, :] * np.cos(2 * np.pi * f[None, :] * t[:, None] / n + ph[None, :])).sum(1)
        x[r] *= 0.5 - 0.5 * np.cos(2 * np.pi * t / max(n - 1, 1))
    x[ROWS - 4] = 0.25
    x[ROWS - 3] = 0.0
    x[ROWS - 3, n // 3] = 1.0
    x[ROWS - 2] = np.where(t % 2 == 0, 1e30, -1e-30)
    x[ROWS - 1] = rng.integers(-32768, 32768, n) / 32768.0
    x = x.astype(np.float32)
    y = torch.view_as_real(torch.fft.rfft(torch.from_numpy(x))).numpy()
    for r in (0, ROWS // 2, ROWS - 1):
        y1 = torch.view_as_real(torch.fft.rfft(torch.from_numpy(x[r]))).numpy()
        assert np.array_equal(y1.view(np.uint32), y[r].view(np.uint32)), (n, r)
    x.astype("<f4").tofile(os.path.join(out, f"in_{n}.f32"))
    y.astype("<f4").tofile(os.path.join(out, f"out_{n}.f32"))
    index.append(f"{n} {ROWS}")
    print(f"gen_rfft: N={n}: {ROWS} rows")
with open(os.path.join(out, "index.txt"), "w") as f:
    f.write("\n".join(index) + "\n")
