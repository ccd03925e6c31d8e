"""ftfixture.py: what cav-finetune's tool tests share: the tool's command line on toolenv's micro encoder
(MICRO_FT and --label-dim k), small labelled shards written through shard-pack, the batch the reference model
sees when cav-finetune does not augment, one process against two MPI ranks, and readers of a run's files.
make_shard's row r has class r % k: its fbank is noise plus a bright band of mel bins (learnable), its ten
frames noise; its sample weight (for --bal, which the as2m and vggsound recipes set) 1 + r % 3."""
import json
import os
import subprocess

import numpy as np

import cavstream
import toolenv

FINETUNE = toolenv.tool("cav-finetune")


def micro(k):
    """The micro model's options for k classes."""
    return toolenv.MICRO_FT + ["--label-dim", str(k)]


def finetune(k, out, *args, seed=3, batch=8, mask=16, log_every=True, check=False, pre=(), env=None):
    """Runs cav-finetune into out (None: args hold -o) for k classes with the tests' training options (lr 1e-3,
    head lr x10, SpecAugment masks of `mask` bins and frames, every step logged unless log_every is false, two
    loader threads), after pre (an mpirun prefix) and in env; returns the finished process, output as text."""
    cmd = list(pre) + [FINETUNE] + (["-o", out] if out is not None else []) + ["--seed", str(seed), "-b", str(batch)]
    cmd += (["--log-every", "1"] if log_every else []) + ["--lr", "1e-3", "--head-lr", "10", "--freqm", str(mask),
                                                          "--timem", str(mask), "--loader-threads", "2"]
    return subprocess.run(cmd + micro(k) + list(args), check=check, capture_output=True, text=True, env=env)


def one_and_two_ranks(mpi, one, two, args):
    """cav-finetune args run as one process into one and as two MPI ranks (the prefix mpi) into two, both in
    toolenv.mpi_env(); returns the two finished processes."""
    env = toolenv.mpi_env()
    r1 = subprocess.run([FINETUNE, "-o", one] + args, capture_output=True, text=True, env=env)
    r2 = subprocess.run(mpi + [FINETUNE, "-o", two] + args, capture_output=True, text=True, env=env)
    return r1, r2


def pack(path, recs):
    """Writes records [(id, attrs, [(field, array)])] as the shard path (through a .cavs stream next to it and
    shard-pack)."""
    stream = path + ".cavs"
    with open(stream, "wb") as f:
        f.write(cavstream.encode(recs))
    subprocess.run([toolenv.tool("shard-pack"), "-o", path, stream], check=True)
    os.unlink(stream)


def make_shard(path, rows, seed, k, img=32):
    """Writes the shard and returns the records' tensors [(fbank, frames, labels)] for reference computations."""
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
    pack(path, recs)
    return data


def reference_batch(data, k, frame=5):
    """make_shard's records as cav-finetune trains on them with --freqm 0 --timem 0 --no-noise --no-roll
    --frame `frame` and audio_length 64, as float32 tensors (audio, video, targets) for the reference model: each
    fbank cut or zero-padded (raw log-mel) to 64 frames, then normalised; the frame scaled to [0, 1] and
    normalised by ImageNet's mean and std, channels first; the labels smoothed by 0.1 (0.9 and 0.1 / k)."""
    import torch
    mean, std = -5.081, 4.4849
    imean, istd = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    a, v, y = [], [], []
    for fb, fr, lab in data:
        x = np.zeros((64, 128), np.float32)
        n = min(64, fb.shape[0])
        x[:n] = fb[:n]
        a.append((x - mean) / std)
        v.append(((fr[frame].astype(np.float64) / 255.0 - imean) / istd).transpose(2, 0, 1))
        y.append(np.where(lab > 0.5, 0.9, 0.1 / k))
    return tuple(torch.tensor(np.array(t), dtype=torch.float32) for t in (a, v, y))


def read(p):
    with open(p, "rb") as f:
        return f.read()


def _no_constant(name):
    raise ValueError("%s is not JSON" % name)


def jsonl(p):
    """The lines of a JSON-lines file, strictly: NaN and Infinity (Python's json takes them) are refused."""
    with open(p) as f:
        return [json.loads(line, parse_constant=_no_constant) for line in f if line.strip()]


def step_losses(run):
    """The step losses of a run's metrics.jsonl (the lines without an epoch's train_loss)."""
    return [x["loss"] for x in jsonl(os.path.join(run, "metrics.jsonl")) if "train_loss" not in x]
