"""test_bf16.py: --precision bf16 end to end, on $DEVICE (default cpu; make check-cuda's bf16 stage runs it on cuda):
  - bf16_state_<name>: cav-pretrain --check-debug-state on the bf16 debug states of tests/ref/gen_bf16_states.py
    (tiny pretraining, tiny fine-tuning): the first step's losses, outputs and gradients against PyTorch's
    float64 answer of the same bf16 arithmetic, and the losses against PyTorch's own torch.autocast on the
    Linears (tolerances and their grounds: lib/train/debugstate.h); a copy whose autocast.loss is moved by
    5e-3 must fail;
  - train_bf16_follows_fp32 (pretraining, tiny) and finetune_bf16_follows_fp32 (the micro encoder): 24 steps
    (10 in fine-tuning) of the same run in bf16 and in fp32, every logged loss within BOUND (BOUND_FT) of the
    step's total loss of each other, and not all equal (the bf16 path ran);
  - resume_bf16_bit_identical: bf16 to step 10, then --resume to the end (24): the final model and optimiser
    state byte-identical to the straight bf16 run's;
  - resume_other_precision_refused: resuming that bf16 run with --precision fp32 exits 1 naming bf16;
    args.json and state.json record the precision;
  - mpi_two_ranks_zero1_bf16_equal_one_process (DEVICE=cpu, where mpirun is): two ranks with ZeRO-1 in bf16
    write one process's checkpoints byte for byte;
  - finetune_bf16_final_eval: the fine-tuning runs' final evaluation in bf16 within 1e-2 mAP of fp32's.

The bound. bf16 rounds each Linear's operands to 8 significant bits: a relative error of up to 2^-9 per
operand, random in sign, which a loss (a mean over many elements) averages down: the first step's losses are
1e-5 to 8e-5 of the loss apart between bf16 and fp32 (the bf16 states' figures). In the following steps the two
runs' parameters differ by that noise through Adam, which does not accumulate in so few steps at these learning
rates: measured over 20 such steps (tiny, lr 1e-4) the largest difference of any logged loss was 1.9e-4 of the
step's total loss, and between two bf16 runs on different OpenBLAS kernel sets 3.8e-5: BOUND = 5e-4. The
fine-tuning loss (BCE over B x K = 40 values) averages far fewer elements than the MAE's thousands: its first
step differs by 2.4e-4, and over 20 steps at most 5.1e-4 (3.3e-4 between two kernel sets): BOUND_FT = 2e-3.
Weights that stay bf16-stale after an Adam step, a wrong weight slice, a dropped bias, or a model that trains
in fp32 (all equal) fail them."""
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ftfixture  # noqa: E402
import toolenv  # noqa: E402
from toolenv import report  # noqa: E402

DEVICE = os.environ.get("DEVICE", "cpu")
BOUND, BOUND_FT = 5e-4, 2e-3
KEYS = ("loss", "loss_mae_a", "loss_mae_v", "loss_c")
TMP = toolenv.scratch("cav-bf16-")
PRETRAIN = toolenv.tool("cav-pretrain")


def ran(name, r):
    if r.returncode == 0:
        return True
    report(name, False, "exit %d: %s" % (r.returncode, r.stderr[-600:].replace("\n", " | ")))
    return False


def step_lines(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if "samples_per_s" in r]


def follows(name, a, b, steps, bound):
    """Every key's |a - b| within bound of the step's total loss, and some difference."""
    if len(a) != steps or len(b) != steps:
        return report(name, False, "%d and %d steps logged, %d asked" % (len(a), len(b), steps))
    worst, where, differ = 0.0, "", False
    for x, y in zip(a, b):
        for k in KEYS:
            if k not in x:
                continue
            d = abs(x[k] - y[k]) / abs(x["loss"])
            differ |= x[k] != y[k]
            if not d <= worst:
                worst, where = d, "step %d %s: %.9g against %.9g" % (x["step"], k, x[k], y[k])
    print("  %s: worst |difference| / loss %.3g (bound %g) at %s" % (name, worst, bound, where))
    report(name, worst <= bound and differ, "identical: did bf16 run?" if not differ else where)


# ---- the bf16 debug states -----------------------------------------------------------------------------
sdir = os.path.join(toolenv.REF, "gen_bf16_states")
states = sorted(f for f in os.listdir(sdir) if f.endswith(".safetensors")) if os.path.isdir(sdir) else []
report("bf16_states_present", len(states) >= 2, "%d states in %s" % (len(states), sdir))
for f in states:
    name = "bf16_state_" + f[:-len(".safetensors")]
    r = subprocess.run([PRETRAIN, "--device", DEVICE, "--check-debug-state", os.path.join(sdir, f)],
                       capture_output=True, text=True)
    out = r.stdout + r.stderr
    last = out.strip().splitlines()[-1] if out.strip() else ""
    ac = out.count("autocast.")
    print("  %s: %s; %d autocast losses compared" % (name, last, ac))
    report(name, r.returncode == 0 and (" on %s" % DEVICE) in last and ac >= 1,
           "exit %d: %s" % (r.returncode, " | ".join(out.strip().splitlines()[-4:])))
if states:  # autocast.loss moved by 5e-3: outside its 2e-3
    src = os.path.join(sdir, "pretrain_tiny.safetensors")
    b = bytearray(open(src, "rb").read())
    n = struct.unpack("<Q", b[:8])[0]
    e = json.loads(b[8:8 + n])["autocast.loss"]
    o = 8 + n + e["data_offsets"][0]
    b[o:o + 4] = struct.pack("<f", struct.unpack("<f", b[o:o + 4])[0] * 1.005)
    bad = os.path.join(TMP, "bad.safetensors")
    open(bad, "wb").write(b)
    r = subprocess.run([PRETRAIN, "--device", DEVICE, "--check-debug-state", bad], capture_output=True, text=True)
    report("bf16_state_autocast_perturbed_fails", r.returncode == 2 and "bf16" in r.stderr,
           "exit %d: %s" % (r.returncode, r.stderr[-300:]))

# ---- pretraining: 20 steps bf16 against fp32, resume --------------------------------------------------------
g = np.random.default_rng(5)
recs = [("clip%03d" % r, {}, [("fbank", (g.standard_normal((60 + r % 9, 128)) * 3 - 5).astype(np.float32)),
                              ("frames", g.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8))]) for r in range(64)]
shard = os.path.join(TMP, "train.h5")
ftfixture.pack(shard, recs)


def pretrain(out, *args):
    cmd = [PRETRAIN, "-o", out, "--device", DEVICE, "--seed", "7", "-b", "8", "--log-every", "1", "--lr", "1e-4",
           "--loader-threads", "2", "--model", "tiny", "--set", "audio_length=64", "--set", "img_size=32",
           "--contrast-groups", "1", "-e", "3", "--keep", "1"] + list(args) + [shard]
    return subprocess.run(cmd, capture_output=True, text=True)


runs = {}
for p in ("fp32", "bf16"):  # three epochs of 8 steps
    out = os.path.join(TMP, "straight-" + p)
    if ran("train_bf16_follows_fp32", pretrain(out, "--precision", p)):
        runs[p] = out
if len(runs) == 2:
    follows("train_bf16_follows_fp32", step_lines(runs["fp32"]), step_lines(runs["bf16"]), 24, BOUND)

if "bf16" in runs:
    straight, split = runs["bf16"], os.path.join(TMP, "split-bf16")
    name = "resume_bf16_bit_identical"
    if ran(name, pretrain(split, "--precision", "bf16", "--max-steps", "10")) and \
            ran(name, pretrain(split, "--precision", "bf16", "--resume")):
        last = "checkpoints/e0003-s0000000024"
        same = [p for p in ("model.safetensors", "optim.safetensors")
                if os.path.exists(os.path.join(split, last, p)) and
                ftfixture.read(os.path.join(split, last, p)) == ftfixture.read(os.path.join(straight, last, p))]
        report(name, len(same) == 2, "the resumed run's %s differs from the straight run's" % last)
    name = "resume_other_precision_refused"
    r = pretrain(straight, "--precision", "fp32", "-e", "4", "--resume")
    args = json.load(open(os.path.join(straight, "args.json")))
    state = json.load(open(os.path.join(straight, "checkpoints/e0003-s0000000024/state.json")))
    report(name, r.returncode == 1 and "--precision bf16" in r.stderr and args.get("precision") == "bf16" and
           state.get("precision") == "bf16",
           "exit %d: %s; args.json %s, state.json %s" % (r.returncode, r.stderr.strip()[-200:], args.get("precision"),
                                                          state.get("precision")))

# ---- data parallel in bf16: two ranks with ZeRO-1 (each rank's Adam on its shard, the parameters all-gathered,
# then the bf16 copy remade) compute one process's checkpoints byte for byte (micro model, 2 groups of 4) ------
mpirun = toolenv.mpirun(2)
if DEVICE != "cpu" or not mpirun:
    print("SKIP mpi_two_ranks_zero1_bf16_equal_one_process: %s" % ("DEVICE=" + DEVICE if mpirun else "no mpirun"))
else:
    name, outs = "mpi_two_ranks_zero1_bf16_equal_one_process", []
    for pre, extra in (([], []), (mpirun, ["--zero", "1"])):
        out = os.path.join(TMP, "dp%d" % len(outs))
        r = subprocess.run(pre + [PRETRAIN, "-o", out, "--seed", "7", "-b", "8", "--contrast-groups", "2", "-e", "2",
                                  "--lr", "1e-3", "--loader-threads", "1", "--precision", "bf16"] + toolenv.MICRO +
                           extra + [shard], capture_output=True, text=True, env=toolenv.mpi_env())
        if ran(name, r):
            outs.append(out)
    if len(outs) == 2:
        last = "checkpoints/e0002-s0000000016"
        bad = [f for f in ("model.safetensors", "optim.safetensors", "state.json")
               if not os.path.exists(os.path.join(outs[0], last, f)) or
               ftfixture.read(os.path.join(outs[0], last, f)) != ftfixture.read(os.path.join(outs[1], last, f))]
        report(name, not bad, "%s differ" % bad)

# ---- fine-tuning: 10 steps bf16 against fp32 ------------------------------------------------------------------
K = 5
ftshard = os.path.join(TMP, "ft.h5")
ftfixture.make_shard(ftshard, 40, 9, K)
ft = {}
for p in ("fp32", "bf16"):
    out = os.path.join(TMP, "ft-" + p)
    r = ftfixture.finetune(K, out, "--device", DEVICE, "--precision", p, "--lr", "1e-4", "-e", "2", "--eval",
                           ftshard, ftshard)
    if ran("finetune_bf16_follows_fp32", r):
        ft[p] = out
if len(ft) == 2:
    follows("finetune_bf16_follows_fp32", step_lines(ft["fp32"]), step_lines(ft["bf16"]), 10, BOUND_FT)
    # the per-epoch and the final evaluation (a model of their own, in the run's precision) complete in bf16,
    # their mAP within 1e-2 of fp32's (a score of ranks: only near-ties among the 40 clips' logits can swap)
    fe = [json.load(open(os.path.join(ft[p], "final_eval.json"))) for p in ("fp32", "bf16")]
    m = [f.get("mAP", f.get("map")) for f in fe]
    report("finetune_bf16_final_eval", None not in m and abs(m[0] - m[1]) <= 1e-2,
           "final mAP fp32 %s, bf16 %s" % tuple(m))

shutil.rmtree(TMP, ignore_errors=True)
sys.exit(toolenv.status())
