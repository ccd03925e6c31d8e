"""test_grad_dtype.py: --grad-dtype bf16, the gradient exchange in bf16 payloads (cav-pretrain(1), Data
parallelism), through the MPI transport on the CPU with a micro model.

What is compared, and why it can be exact: each rank rounds its gradient to bf16, the sum over ranks is the
fp32 sum of the widened payloads in rank order, rounded once to bf16. One process rounds each contrast group's
gradient the same way (a group as a rank) and adds them in group order; so one process with G groups and G
ranks of one group each compute the same numbers bit for bit, as the fp32 exchange already does (the MPI
transport sums in rank order). That holds with 3 ranks and 2 ranks, with small buckets started during the
backward, and with ZeRO-1 (the reduce-scatter gives each rank the all-reduce's bf16 values). A bf16 run is
bit-identical run to run; it is not the fp32 run (the option does something), and its losses stay within 2%
of fp32's over the run (a sanity bound, not a derived one: each gradient moves by at most 2^-8 relative per
rounding, and Adam's first step is sign-like, lr g / (|g| + eps), almost blind to it). --max-steps then
--resume keeps the dtype (ends as the uninterrupted run) and a resume with the other dtype is refused; args.json
and state.json record it. cav-finetune takes the option too (2 ranks, run to run, recorded). The NCCL
transport's bf16 path is not run here (no GPU)."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ftfixture  # noqa: E402
import toolenv  # noqa: E402
from toolenv import BIN, MICRO, report  # noqa: E402

TMP = toolenv.scratch("cav-grad-dtype-test-")
mpirun = toolenv.mpirun
env = toolenv.mpi_env()
train = os.path.join(TMP, "train.h5")
ftfixture.make_shard(train, 24, 1, 4)


def read(p):
    with open(p, "rb") as f:
        return f.read()


last_ck, same_run = toolenv.last_checkpoint, toolenv.same_checkpoints


def pretrain(name, ranks, batch, groups, *extra):
    """cav-pretrain as `ranks` MPI ranks (1: one process), global batch `batch` in `groups` contrast groups,
    2 epochs (of 24 // batch steps); returns (run dir, finished process)."""
    out = os.path.join(TMP, name)
    cmd = (mpirun(ranks) if ranks > 1 else []) + [BIN + "/cav-pretrain", "-o", out, "--seed", "7", "-b", str(batch),
                                                  "--contrast-groups", str(groups), "--log-every", "1", "--lr", "1e-3",
                                                  "-e", "2", "--loader-threads", "1", "--weight-decay", "0.5"]
    r = subprocess.run(cmd + MICRO + list(extra) + [train], capture_output=True, text=True, env=env)
    return out, r


def losses(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(x)["loss"] for x in f if '"loss"' in x]


def check(name, runs, want=""):
    """runs: [(dir, process)] that must all succeed; then the comparison of the first two (want: '')"""
    failed = [r for _, r in runs if r.returncode]
    if failed:
        return report(name, False, failed[0].stderr[-800:])
    why = same_run(runs[0][0], runs[1][0])
    print("  %s: %s" % (name, why or "byte-identical checkpoints"))
    report(name, not why, why)


if not mpirun():
    report("grad_dtype_bf16_mpi", False, "mpirun not found (Debian openmpi-bin)")
    sys.exit(toolenv.status())

BF = ("--grad-dtype", "bf16")
# 3 groups of 4: one process against 3 ranks (one group each), plain, with buckets, with ZeRO-1 and both
one3 = pretrain("one3", 1, 12, 3, *BF)
three = pretrain("three", 3, 12, 3, *BF)
check("bf16_three_ranks_equal_one_process", [one3, three])
check("bf16_three_ranks_buckets_equal_one_process", [one3, pretrain("three_b", 3, 12, 3, *BF, "--bucket-mb", "0.01")])
three_zb = pretrain("three_zb", 3, 12, 3, *BF, "--zero", "1", "--bucket-mb", "0.01")
check("bf16_three_ranks_zero1_buckets_equal_one_process", [one3, three_zb])
early = [x for x in three_zb[1].stderr.splitlines() if "started during the backward" in x]
report("bf16_buckets_start_during_the_backward",
       bool(early) and not early[0].split("buckets, ")[1].startswith("0 "), early)
report("bf16_exchange_announced", "buckets of 0.01 MiB in bf16, ZeRO-1" in three_zb[1].stderr,
       three_zb[1].stderr[-600:])
check("bf16_three_ranks_zero1_buckets_bit_identical_run_to_run",
      [three_zb, pretrain("three_zb2", 3, 12, 3, *BF, "--zero", "1", "--bucket-mb", "0.01")])
# 2 groups of 6: one process against 2 ranks, and with ZeRO-1
one2 = pretrain("one2", 1, 12, 2, *BF)
check("bf16_two_ranks_equal_one_process", [one2, pretrain("two", 2, 12, 2, *BF)])
check("bf16_two_ranks_zero1_equal_one_process", [one2, pretrain("two_z", 2, 12, 2, *BF, "--zero", "1")])

# against fp32: different numbers, close losses
fp3 = pretrain("fp3", 3, 12, 3)
if fp3[1].returncode or three[1].returncode:
    report("bf16_differs_from_fp32_within_bound", False, fp3[1].stderr[-500:])
else:
    why = same_run(fp3[0], three[0])
    lb, lf = losses(three[0]), losses(fp3[0])
    rel = max(abs(a - b) / abs(b) for a, b in zip(lb, lf))
    print("  bf16 against fp32 exchange, 3 ranks, %d steps: %s; losses max rel %.2e" % (len(lb), why, rel))
    report("bf16_differs_from_fp32_within_bound", why != "" and len(lb) == len(lf) == 4 and rel < 0.02,
           "%s; rel %.3g" % (why or "identical", rel))

# resume keeps the dtype: 3 ranks stop after 1 step, then resume (also on one process) and end as one3
for name, ranks in (("resume_three_ranks", 3), ("resume_one_process", 1)):
    out, ra = pretrain(name, 3, 12, 3, *BF, "--max-steps", "1")
    _, rb = pretrain(name, ranks, 12, 3, *BF, "--resume")
    check("bf16_%s_equal_uninterrupted" % name, [one3, (out, ra if ra.returncode else rb)])
out, r = pretrain("resume_three_ranks", 3, 12, 3, "--resume")
report("resume_with_other_grad_dtype_refused", r.returncode == 1 and "--grad-dtype bf16" in r.stderr,
       "exit %d: %s" % (r.returncode, r.stderr[-400:]))
with open(os.path.join(one3[0], "args.json")) as f:
    args = json.load(f)
with open(os.path.join(last_ck(three[0]), "state.json")) as f:
    state = json.load(f)
report("grad_dtype_recorded", args.get("grad_dtype") == "bf16" and state.get("grad_dtype") == "bf16",
       "args %s, state %s" % (args.get("grad_dtype"), state.get("grad_dtype")))

# cav-finetune: 2 ranks in bf16, run to run, recorded
fts = []
for name in ("ft_a", "ft_b"):
    out = os.path.join(TMP, name)
    r = ftfixture.finetune(4, out, "-e", "1", "--grad-dtype", "bf16", "--bucket-mb", "0.01", train,
                           pre=mpirun(2), env=env)
    fts.append((out, r))
if any(r.returncode for _, r in fts):
    report("finetune_bf16_two_ranks_bit_identical_run_to_run", False, [r.stderr[-600:] for _, r in fts])
else:
    ma, mb = (read(os.path.join(o, "models", "audio_model.1.safetensors")) for o, _ in fts)
    with open(os.path.join(fts[0][0], "args.json")) as f:
        fa = json.load(f)
    report("finetune_bf16_two_ranks_bit_identical_run_to_run",
           ma == mb and fa.get("grad_dtype") == "bf16" and "in bf16" in fts[0][1].stderr, fa.get("grad_dtype"))

sys.exit(toolenv.status())
