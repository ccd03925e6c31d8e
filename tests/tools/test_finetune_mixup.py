"""test_finetune_mixup.py: cav-finetune --mixup and --bal end to end on small synthetic shards with a micro
model (the numerics are test_mixup's, against the reference's dataloader): a run with --mixup 0.5 --bal
stopped by --max-steps and resumed ends byte-identical to the uninterrupted run; mixup and --bal change the
training (the step losses differ from a run without them); shards holding only fbank give the warning that
mixup mixes fbanks, once per run, and shards of waveforms none; --bal on a shard without `weight` is refused
(exit 2) naming the shard and the field; --mixup outside [0, 1] is a usage error; two MPI ranks give the
one-process step losses; args.json records both."""
import functools
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ftfixture  # noqa: E402
import toolenv  # noqa: E402
from ftfixture import read, step_losses  # noqa: E402
from toolenv import report  # noqa: E402

TMP = toolenv.scratch("cav-finetune-mixup-test-")
K = 4
WARNING = "mixup mixes its fbank"
finetune = functools.partial(ftfixture.finetune, K, seed=4, check=True)


def make_shard(path, rows, seed, audio="wave", weight=True):
    """Row r has class r % K: a tone whose pitch depends on the class (`wave`, 16 kHz i16, 0.4-0.6 s), or
    its log-mel stand-in (`fbank`); random frames; weight 1 + r % 3."""
    g = np.random.default_rng(seed)
    recs = []
    for r in range(rows):
        c = r % K
        fields = []
        if audio == "wave":
            n = 6400 + 160 * (r % 13)
            t = np.arange(n) / 16000.0
            x = 6000 * np.sin(2 * np.pi * (300 + 900 * c) * t) + g.normal(0, 300, n)
            fields.append(("wave", x.astype(np.int16)))
        else:
            fb = (g.standard_normal((50 + r % 9, 128)) * 2 - 5).astype(np.float32)
            fb[:, 32 * c:32 * c + 32] += 4
            fields.append(("fbank", fb))
        lab = np.zeros(K, np.float32)
        lab[c] = 1
        fields += [("frames", g.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)), ("labels", lab)]
        if weight:
            fields.append(("weight", np.array(1 + r % 3, np.float32)))
        recs.append(("clip%03d" % r, {}, fields))
    ftfixture.pack(path, recs)


waves = os.path.join(TMP, "waves.h5")
fbanks = os.path.join(TMP, "fbanks.h5")
noweight = os.path.join(TMP, "noweight.h5")
make_shard(waves, 24, 1)
make_shard(fbanks, 16, 2, audio="fbank")
make_shard(noweight, 8, 3, weight=False)

# Uninterrupted against --max-steps 4, then --resume (epoch 2 of 3, mid-epoch), mixup and bal on.
common = ["-e", "3", "--mixup", "0.5", "--bal", "--save-every", "1", "--keep", "0", waves, fbanks]
ref = os.path.join(TMP, "ref")
r0 = finetune(ref, *common, check=False)
report("mixup_bal_run_completes", r0.returncode == 0, r0.stderr[-800:])
run = os.path.join(TMP, "resumed")
r1 = finetune(run, "--max-steps", "7", *common, check=False)
r2 = finetune(run, "--resume", *common, check=False)
final = os.path.join("models", "audio_model.3.safetensors")
same = r0.returncode == 0 and r1.returncode == 0 and r2.returncode == 0 and \
    os.path.exists(os.path.join(run, final)) and read(os.path.join(run, final)) == read(os.path.join(ref, final)) \
    and step_losses(run) == step_losses(ref)
report("mixup_bal_resume_bit_identical", same, (r1.stderr + r2.stderr)[-800:])

# The options act: without mixup, or without bal, the step losses differ.
plain = os.path.join(TMP, "plain")
nobal = os.path.join(TMP, "nobal")
rp = finetune(plain, "-e", "1", waves, fbanks, check=False)
rb = finetune(nobal, "-e", "1", "--mixup", "0.5", waves, fbanks, check=False)
ok = rp.returncode == 0 and rb.returncode == 0 and r0.returncode == 0
if ok:
    lp, lb, lm = step_losses(plain), step_losses(nobal), step_losses(ref)[:5]
    ok = len(lp) == len(lb) == len(lm) == 5 and lp != lb and lb != lm
    print("  first steps' losses: plain %s, mixup %s, mixup+bal %s" % (
        [round(x, 4) for x in lp[:3]], [round(x, 4) for x in lb[:3]], [round(x, 4) for x in lm[:3]]))
report("mixup_and_bal_change_training", ok, (rp.stderr + rb.stderr)[-800:])

# The warning: once per run (three epochs), naming the fbank-only shard; none for waveforms, none without
# mixup.
n_ref = r0.stderr.count(WARNING)
named = fbanks in r0.stderr
rw = finetune(os.path.join(TMP, "waves-only"), "-e", "2", "--mixup", "0.5", waves, check=False)
report("fbank_only_warning_once", n_ref == 1 and named and rw.returncode == 0 and WARNING not in rw.stderr and
       WARNING not in rp.stderr, "warnings: %d (named %s); waves run rc %d: %s" % (n_ref, named, rw.returncode,
                                                                                 rw.stderr[-400:]))

# --bal on a shard without `weight`: exit 2, naming the shard and the field.
r = finetune(os.path.join(TMP, "bad"), "--bal", waves, noweight, check=False)
report("bal_without_weight_refused", r.returncode == 2 and noweight in r.stderr and "weight" in r.stderr,
       "rc %d: %s" % (r.returncode, r.stderr[-400:]))
r = finetune(os.path.join(TMP, "bad2"), "--mixup", "1.5", waves, check=False)
report("mixup_out_of_range_usage_error", r.returncode == 1 and "mixup" in r.stderr,
       "rc %d: %s" % (r.returncode, r.stderr[-400:]))

# Two MPI ranks against one process, --mixup 0.5 --bal: every rank draws the same rows, partners and lambdas
# for its slice of the global batch, so the step losses (the whole batch's, summed over ranks) agree to
# rounding (rel 1e-5, as test_finetune.py's check without mixup).
mpi = toolenv.mpirun(2)
if not mpi:
    report("mpi_two_ranks_mixup_bal_equal_one_process", False, "mpirun not found (Debian openmpi-bin)")
else:
    base = ["--seed", "4", "-b", "8", "--log-every", "1", "--lr", "1e-3", "--head-lr", "10", "-e", "1",
            "--max-steps", "2", "--loader-threads", "1", "--mixup", "0.5", "--bal"] + ftfixture.micro(K) + \
        [waves, fbanks]
    one, two = os.path.join(TMP, "mpi_one"), os.path.join(TMP, "mpi_two")
    r1, r2 = ftfixture.one_and_two_ranks(mpi, one, two, base)
    ok = r1.returncode == 0 and r2.returncode == 0
    if ok:
        la, lb = step_losses(one), step_losses(two)
        print("  losses one process %s, two ranks %s" % (la, lb))
        ok = len(la) == len(lb) == 2 and all(abs(p - q) <= 1e-5 * abs(p) for p, q in zip(la, lb))
    report("mpi_two_ranks_mixup_bal_equal_one_process", ok, r1.stderr[-300:] + r2.stdout[-300:] + r2.stderr[-600:])

try:
    with open(os.path.join(ref, "args.json")) as f:
        args = json.load(f)
    ok = args.get("mixup") in (0.5, "0.5") and args.get("bal") in (1, True, "1", "true")
    why = "mixup %r bal %r" % (args.get("mixup"), args.get("bal"))
except (OSError, ValueError) as e:
    ok, why = False, str(e)
report("args_json_records_mixup_and_bal", ok, why)

if not toolenv.failures():
    subprocess.run(["rm", "-rf", TMP])
sys.exit(toolenv.status())
