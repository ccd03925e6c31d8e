"""test_cuda_train.py (make check-cuda): cav-pretrain on $DEVICE (default cuda) against the CPU, end to end on
a synthetic shard at the model's full input size (1024 x 128 fbank, 224 x 224 frames):
  - train_follows_cpu_<config>: $PARITY_STEPS (50) steps (one epoch) of the tiny and the base config (batch
    $PARITY_B_TINY 4, $PARITY_B_BASE 4; same data, seed and masks) whose per-step losses follow the CPU's
    within lossparity.py's bound;
  - resume_bit_identical_<device>: 10 steps of tiny straight against --max-steps 5 then --resume on the
    device: the final model and the optimiser state byte-identical (deterministic reductions);
  - resume_<a>_to_<b>: a run checkpointed on one device resumes on the other (the checkpoints are the same
    files), both ways, and its remaining steps follow the straight run of the device it resumed on.
DEVICE=cpu runs every comparison cpu against cpu (then everything must be exact): the script's own check where
no GPU is at hand. PARITY_CONFIGS ("tiny base") narrows the configs. PRECISION=bf16 (check_cuda.sh's bf16 stage,
with PARITY_STEPS 200) runs every run with --precision bf16, names each check with a _bf16 suffix, and holds
the losses to lossparity.py's bf16 bound: the device's bf16 against the CPU's exact emulation of it."""
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))
sys.path.insert(0, HERE)
import ftfixture  # noqa: E402
import lossparity  # noqa: E402
import toolenv  # noqa: E402
from toolenv import report  # noqa: E402

DEVICE = os.environ.get("DEVICE", "cuda")
STEPS = int(os.environ.get("PARITY_STEPS", "50"))
BATCH = {"tiny": int(os.environ.get("PARITY_B_TINY", "4")), "base": int(os.environ.get("PARITY_B_BASE", "4"))}
CONFIGS = os.environ.get("PARITY_CONFIGS", "tiny base").split()
PRECISION = os.environ.get("PRECISION", "fp32")
BF16 = PRECISION == "bf16"
SUFFIX = "_bf16" if BF16 else ""
STEPS_PER_EPOCH = 10
TMP = toolenv.scratch("cav-cuda-train-")


def make_shard(path, rows, seed):
    """rows clips: a full 1024 x 128 fbank of noise around -5 (the loader's normalisation brings it near 0) and
    one 224 x 224 frame of noise; the same bytes on every run."""
    g = np.random.default_rng(seed)
    recs = [("clip%04d" % r, {}, [("fbank", (g.standard_normal((1024, 128)) * 3 - 5).astype(np.float32)),
                                  ("frames", g.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8))])
            for r in range(rows)]
    ftfixture.pack(path, recs)


def pretrain(out, device, config, *args):
    cmd = [toolenv.tool("cav-pretrain"), "-o", out, "--device", device, "--model", config, "--seed", "7",
           "-b", str(BATCH[config]), "--contrast-groups", "1", "--log-every", "1", "--loader-threads", "2",
           "--keep", "1", "--precision", PRECISION] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True)


def read(p):
    with open(p, "rb") as f:
        return f.read()


def ran(name, r):
    """True when the run succeeded; otherwise reports name as failed with the tool's last words."""
    if r.returncode == 0:
        return True
    report(name, False, "exit %d: %s" % (r.returncode, r.stderr[-600:].replace("\n", " | ")))
    return False


def follows(name, ref, got, first_step=1):
    ok, worst, where = lossparity.compare(ref, got, first_step, bf16=BF16)
    print("  %s: worst |difference| / bound %.3g at %s" % (name, worst, where))
    report(name, ok, where)


# ---- 50 steps on the device against the CPU: one epoch (an epoch's end saves the model and a checkpoint,
# 3 GB at the base config) -------------------------------------------------------------------------------------
for config in CONFIGS:
    name = "train_follows_cpu_%s%s" % (config, SUFFIX)
    shard = os.path.join(TMP, "steps-%s.h5" % config)
    make_shard(shard, STEPS * BATCH[config], seed=11)
    runs = {}
    for role, dev in (("ref", "cpu"), ("dev", DEVICE)):
        out = os.path.join(TMP, "%s-%s" % (name, role))
        r = pretrain(out, dev, config, "-e", "1", shard)
        if not ran(name, r):
            break
        runs[role] = lossparity.step_lines(out)
        shutil.rmtree(out, ignore_errors=True)
    else:
        if len(runs["ref"]) != STEPS:
            report(name, False, "%d steps logged, %d asked" % (len(runs["ref"]), STEPS))
        else:
            follows(name, runs["ref"], runs["dev"])

# ---- resume on the device, and from one device to the other (tiny) ---------------------------------------
config, half = "tiny", STEPS_PER_EPOCH // 2
shard = os.path.join(TMP, "resume.h5")
make_shard(shard, STEPS_PER_EPOCH * BATCH[config], seed=12)
common = ["-e", "1", "--save-every", "1", shard]
straight = {}
for dev in sorted({"cpu", DEVICE}):
    out = os.path.join(TMP, "straight-" + dev)
    if ran("resume_straight_" + dev + SUFFIX, pretrain(out, dev, config, *common)):
        straight[dev] = out

if DEVICE in straight:
    name = "resume_bit_identical_" + DEVICE.replace(":", "") + SUFFIX
    out = os.path.join(TMP, "split-" + DEVICE)
    if ran(name, pretrain(out, DEVICE, config, "--max-steps", str(half), *common)) and \
            ran(name, pretrain(out, DEVICE, config, "--resume", *common)):
        model = os.path.join("models", "audio_model.1.safetensors")
        ck = os.path.join(out, "checkpoints")
        last = sorted(d for d in os.listdir(ck) if d.startswith("e"))[-1]
        optim = os.path.join("checkpoints", last, "optim.safetensors")
        same = all(os.path.exists(os.path.join(out, p)) and
                   read(os.path.join(out, p)) == read(os.path.join(straight[DEVICE], p)) for p in (model, optim))
        report(name, same, "the resumed run's %s or %s differs from the straight run's" % (model, optim))

for a, b in sorted({(DEVICE, "cpu"), ("cpu", DEVICE)}):  # one pair when DEVICE=cpu
    name = "resume_%s_to_%s%s" % (a.replace(":", ""), b.replace(":", ""), SUFFIX)
    if b not in straight:
        report(name, False, "no straight run on %s to compare with" % b)
        continue
    out = os.path.join(TMP, name)
    if not (ran(name, pretrain(out, a, config, "--max-steps", str(half), *common)) and
            ran(name, pretrain(out, b, config, "--resume", *common))):
        continue
    got = lossparity.step_lines(out)
    if [r["step"] for r in got] != list(range(1, STEPS_PER_EPOCH + 1)):
        report(name, False, "steps logged: %s" % [r["step"] for r in got])
        continue
    # the steps after the resume, on b, from a's checkpoint: they follow b's straight run within the bound
    follows(name, lossparity.step_lines(straight[b]), got, first_step=half + 1)

shutil.rmtree(TMP, ignore_errors=True)
sys.exit(toolenv.status())
