"""ftfixture.py: small labelled shards for cav-finetune's tool tests, and their files' readers. Row r has class
r % k: its fbank is noise plus a bright band of mel bins (learnable), its ten frames noise; its sample weight
(for --bal, which the as2m and vggsound recipes set) 1 + r % 3."""
import json
import os
import subprocess

import numpy as np

import cavstream


def make_shard(path, rows, seed, k, shard_pack, img=32):
    """Writes the shard (through a .cavs stream next to it and shard-pack) and returns the records' tensors
    [(fbank, frames, labels)] for reference computations."""
    g = np.random.default_rng(seed)
    recs, data = [], []
    for r in range(rows):
        c = r % k
        fb = (g.standard_normal((60 + r % 9, 128)) * 2 - 5).astype(np.float32)
        fb[:, 32 * c:32 * c + 32] += 4
        fr = g.integers(0, 256, (10, img, img, 3), dtype=np.uint8)
        lab = np.zeros(k, np.float32)
        lab[c] = 1
        recs.append(("clip%03d" % r, {}, [("fbank", fb), ("frames", fr), ("labels", lab),
                                          ("weight", np.array(1 + r % 3, np.float32))]))
        data.append((fb, fr, lab))
    stream = path + ".cavs"
    with open(stream, "wb") as f:
        f.write(cavstream.encode(recs))
    subprocess.run([shard_pack, "-o", path, stream], check=True)
    os.unlink(stream)
    return data


def read(p):
    with open(p, "rb") as f:
        return f.read()


def jsonl(p):
    with open(p) as f:
        return [json.loads(line) for line in f if line.strip()]
