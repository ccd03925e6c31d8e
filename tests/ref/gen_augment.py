"""gen_augment.py OUTDIR: golden data for lib/media/augment.c from PyTorch/torchaudio, applying the reference
loader's transforms (cav-numerics(7) 1.3 step 6, 1.4, 1.5) with explicit parameters. Writes raw little-endian files
and an index (one case per line: name m T F freqm-params...)."""
import os
import sys

import numpy as np
import torch

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
g = np.random.default_rng(1234)
lines = []


def save(name, arr):
    np.ascontiguousarray(arr).tofile(os.path.join(out, name))


# (m rows, target T, F, spec-augment (f0, fw, t0, tw), roll shift)
cases = [(998, 1024, 128, (10, 20, 100, 150), 300), (1100, 1024, 128, (120, 30, 1000, 100), -1024),
         (5, 16, 8, (0, 0, 0, 0), 7), (16, 16, 8, (3, 2, 15, 1), -1)]
for k, (m, T, F, (f0, fw, t0, tw), shift) in enumerate(cases):
    raw = (g.standard_normal((m, F)) * 3 - 5).astype(np.float32)
    save(f"case{k}.in", raw)
    fb = torch.from_numpy(raw)
    # cut / pad exactly as the reference's _wav2fbank
    p = T - m
    if p > 0:
        fb = torch.nn.ZeroPad2d((0, 0, 0, p))(fb)
    elif p < 0:
        fb = fb[0:T, :]
    save(f"case{k}.fit", fb.numpy())
    # SpecAugment on the [1, F, T] view: the masks of torchaudio's mask_along_axis for given start/width
    x = fb.clone().t().unsqueeze(0)
    x[:, f0:f0 + fw, :] = 0.0
    x[:, :, t0:t0 + tw] = 0.0
    fb = x.squeeze(0).t()
    save(f"case{k}.spec", fb.numpy())
    fb = (fb - (-5.081)) / 4.4849
    save(f"case{k}.norm", fb.numpy())
    fb = torch.roll(fb, shift, 0)
    save(f"case{k}.roll", fb.numpy())
    lines.append(f"case{k} {m} {T} {F} {f0} {fw} {t0} {tw} {shift}")

# Images: ToTensor + Normalize on a real-looking random frame (the transform is elementwise).
img = g.integers(0, 256, (224, 224, 3), dtype=np.uint8)
save("image.in", img)
import torchvision.transforms as Tv  # noqa: E402  (Debian python3-torchvision, if present)
t = Tv.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])(Tv.ToTensor()(img))
save("image.out", t.numpy())
with open(os.path.join(out, "index.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
