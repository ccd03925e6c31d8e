"""test_pretrain.py: cav-pretrain end to end on a small synthetic shard with a micro model: a run killed with
SIGKILL at a random moment and resumed ends byte-identical to an uninterrupted run; --max-steps + --resume
likewise; two MPI ranks compute what one process computes on the same global batch and groups, also when a
contrast group is spread over ranks (embeddings gathered); three ranks, with and without ZeRO-1 and gradient
buckets, compute one process's checkpoints byte for byte, run to run, and resume across rank counts; --device
cuda gives each rank its local GPU; a diverging
run stops with the step named and its checkpoints intact; a failed checkpoint write (file size limit) exits
3 and leaves the previous checkpoints complete, and under 2 MPI ranks a checkpoint or epoch-end file rank 0
cannot write stops both ranks with exit 3; input without fbank is refused naming the shard; shards of
waveforms train exactly as the same shards after the fbank tool."""
import os
import random
import re
import shutil
import json
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toolenv  # noqa: E402
from toolenv import BIN, MICRO, report  # noqa: E402
import cavstream  # noqa: E402

TMP = tempfile.mkdtemp(prefix="cav-pretrain-test-")


def make_shard(path, rows, with_fbank=True, seed=0, scale=3.0, img=32, with_wave=False):
    g = np.random.default_rng(seed)
    recs = []
    for r in range(rows):
        t, attrs = [], {}
        if with_fbank:
            t.append(("fbank", (g.standard_normal((60 + r % 9, 128)) * scale - 5).astype(np.float32)))
        if with_wave:  # 16 kHz i16, 50 to 74 frames of 10 ms, as av-extract writes them
            n = 400 + (49 + 3 * (r % 9)) * 160
            w = 4000 * np.sin(np.arange(n) * 0.01 * (r + 1)) + g.normal(0, 800, n)
            t.append(("wave", np.clip(w, -32768, 32767).astype(np.int16)))
            attrs["sample_rate"] = "16000"
        t.append(("frames", g.integers(0, 256, (10, img, img, 3), dtype=np.uint8)))
        recs.append(("clip%03d" % r, attrs, t))
    stream = os.path.join(TMP, "in.cavs")
    with open(stream, "wb") as f:
        f.write(cavstream.encode(recs))
    subprocess.run([BIN + "/shard-pack", "-o", path, stream], check=True)


def pretrain(out, *args, check=True, **kw):
    cmd = [BIN + "/cav-pretrain", "-o", out, "--seed", "7", "-b", "8", "--contrast-groups", "2",
           "--log-every", "1", "--lr", "1e-3", "--loader-threads", "2"] + MICRO + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


tensors = toolenv.safetensors_f32


def read(p):
    with open(p, "rb") as f:
        return f.read()


train = os.path.join(TMP, "train.h5")
evals = os.path.join(TMP, "eval.h5")
make_shard(train, 40, seed=1)
make_shard(evals, 16, seed=2)
common = ["-e", "3", "--save-every", "1", "--keep", "0", "--eval", evals, train]

# Uninterrupted reference run.
ref = os.path.join(TMP, "ref")
t0 = time.time()
r = pretrain(ref, *common)
duration = time.time() - t0
final = os.path.join(ref, "models", "audio_model.3.safetensors")
report("uninterrupted_run_completes", os.path.exists(final) and len(read(os.path.join(ref, "result.csv")).splitlines()) == 3,
       r.stderr[-500:])

# SIGKILL at a random moment, then --resume.
rng = random.Random(int(os.environ.get("CAV_TEST_SEED", "0")) or None)
killed_at = None
for attempt in range(6):
    run = os.path.join(TMP, "killed%d" % attempt)
    p = subprocess.Popen([BIN + "/cav-pretrain", "-o", run, "--seed", "7", "-b", "8", "--contrast-groups", "2",
                          "--log-every", "1", "--lr", "1e-3", "--loader-threads", "2"] + MICRO + common,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(duration * rng.uniform(0.25, 0.8) / (attempt + 1))
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
        p.wait()
        ck = os.path.join(run, "checkpoints")
        killed_at = sorted(os.listdir(ck)) if os.path.isdir(ck) else []
        break
if killed_at is None:
    report("sigkill_then_resume_bit_identical", False, "the run always finished before the kill")
else:
    r = pretrain(run, "--resume", *common, check=False)
    same = r.returncode == 0 and os.path.exists(os.path.join(run, "models", "audio_model.3.safetensors")) and \
        read(os.path.join(run, "models", "audio_model.3.safetensors")) == read(final)
    last = sorted(d for d in os.listdir(os.path.join(ref, "checkpoints")) if d.startswith("e"))[-1]
    same = same and read(os.path.join(run, "checkpoints", last, "optim.safetensors")) == \
        read(os.path.join(ref, "checkpoints", last, "optim.safetensors"))
    print("  killed with checkpoints %s; resumed: %s" % (killed_at, r.stderr.strip().splitlines()[:1]))
    report("sigkill_then_resume_bit_identical", same, r.stderr[-800:])

# --max-steps then --resume.
run = os.path.join(TMP, "steps")
pretrain(run, "--max-steps", "4", *common)
pretrain(run, "--resume", "--max-steps", "3", *common)
pretrain(run, "--resume", *common)
report("max_steps_then_resume_bit_identical",
       read(os.path.join(run, "models", "audio_model.3.safetensors")) == read(final))

# Two MPI ranks against one process: same global batch (8) and groups (2), 4 steps.
mpirun = shutil.which("mpirun")
if not mpirun:
    report("mpi_two_ranks_equal_one_process", False, "mpirun not found (Debian openmpi-bin)")
else:
    one = os.path.join(TMP, "one")
    two = os.path.join(TMP, "two")
    pretrain(one, "-e", "1", "--max-steps", "4", train)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    cmd = [mpirun, "-np", "2", "--oversubscribe", "--bind-to", "none", BIN + "/cav-pretrain", "-o", two, "--seed",
           "7", "-b", "8", "--contrast-groups", "2", "--log-every", "1", "--lr", "1e-3", "-e", "1", "--max-steps", "4",
           "--loader-threads", "1"] + MICRO + [train]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    def newest(run):
        d = os.path.join(run, "checkpoints")
        return os.path.join(d, sorted(x for x in os.listdir(d) if x.startswith("e"))[-1], "model.safetensors")

    if r.returncode != 0:
        report("mpi_two_ranks_equal_one_process", False, r.stdout[-300:] + r.stderr[-800:])
    else:
        a, b = tensors(newest(one)), tensors(newest(two))
        diff = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
        print("  max |one process - two ranks| over all parameters after 4 steps: %.3g" % diff)
        report("mpi_two_ranks_equal_one_process", a.keys() == b.keys() and diff <= 1e-6)

    # Fewer contrast groups than ranks: each group is spread over ranks, its contrastive embeddings and MAE
    # sums are gathered, and every rank backpropagates the group's losses through its own rows. Against one
    # process on the same global batch and groups, 2 steps: the loss terms of the checkpoint's epoch meters
    # (sums over the steps, 17 digits) within rel 1e-5, and the parameters within 1e-5 in relative L2 norm.
    # Adam is blind to a common scale of the gradient, but a wrong factor on one loss term (the contrastive
    # part, the MAE denominators) changes these parameters by about 1e-3. The attention key biases are left
    # out of the comparison: softmax is blind to them, so their true gradient is zero and what they get is
    # rounding noise, which Adam normalises into steps of about lr whose signs depend on the order of the
    # sums (measured: 1e-4 in relative L2 over all parameters with OpenBLAS's AVX-512 kernels); their
    # largest difference is printed. The elementwise maximum elsewhere is printed, not bounded tighter.
    def split_case(name, groups, np_, extra):
        one, many = os.path.join(TMP, name + "_one"), os.path.join(TMP, name + "_mpi")
        base = ["--seed", "7", "-b", "8", "--contrast-groups", str(groups), "--log-every", "1", "--lr", "1e-3",
                "-e", "1", "--max-steps", "2", "--loader-threads", "1"] + MICRO + extra + [train]
        r1 = subprocess.run([BIN + "/cav-pretrain", "-o", one] + base, capture_output=True, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
        r2 = subprocess.run([mpirun, "-np", str(np_), "--oversubscribe", "--bind-to", "none", BIN + "/cav-pretrain",
                             "-o", many] + base, capture_output=True, text=True, env=env)
        if r1.returncode or r2.returncode:
            return report(name, False, r1.stderr[-300:] + r2.stdout[-300:] + r2.stderr[-800:])
        gathered = "embeddings gathered" in r2.stderr
        a, b = tensors(newest(one)), tensors(newest(many))
        worst_all = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
        for t in (a, b):  # the key biases: softmax ignores them, their true gradient is 0 (see above)
            for k in t:
                if k.endswith("attn.qkv.bias"):
                    c = t[k].shape[0] // 3
                    t[k] = np.concatenate([t[k][:c], t[k][2 * c:]])
        num = sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in a)
        den = sum(float(np.sum(a[k].astype(np.float64) ** 2)) for k in a)
        rel = (num / den) ** 0.5
        worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
        sa = json.loads(read(os.path.join(os.path.dirname(newest(one)), "state.json")))
        sb = json.loads(read(os.path.join(os.path.dirname(newest(many)), "state.json")))
        keys = ("train_total", "train_mae_a", "train_mae_v", "train_c", "train_acc")
        lrel = max(abs(sa[k] - sb[k]) / max(abs(sa[k]), 1e-30) for k in keys)
        print("  %s: %d ranks vs 1 process: losses rel %.3g (total %.17g vs %.17g, c_acc sum %g vs %g); "
              "parameters but the key biases: rel L2 %.3g, max abs %.3g (key biases included: max abs %.3g)"
              % (name, np_, lrel, sa["train_total"], sb["train_total"], sa["train_acc"], sb["train_acc"], rel, worst,
                 worst_all))
        report(name, gathered and a.keys() == b.keys() and sa["step"] == sb["step"] == 2 and lrel <= 1e-5 and
               rel <= 1e-5, "gathered=%s losses rel %.3g params rel %.3g" % (gathered, lrel, rel))

    split_case("mpi_one_group_over_two_ranks", 1, 2, [])
    split_case("mpi_one_group_over_two_ranks_mean", 1, 2, ["--group-reduce", "mean"])
    # the same with small gradient buckets started during the backward, and the Adam state sharded
    split_case("mpi_one_group_over_two_ranks_buckets_zero1", 1, 2, ["--bucket-mb", "0.01", "--zero", "1"])
    # a strong contrastive term and weight decay comparable to the gradients make any factor visible
    split_case("mpi_one_group_over_two_ranks_strong_contrast", 1, 2,
               ["--contrast-weight", "0.5", "--weight-decay", "0.5"])
    # two groups, each over two of four ranks: group indices, masks keyed by group, per-block gathers; the
    # mean of the groups (a factor Adam would not see without the weight decay)
    split_case("mpi_two_groups_over_four_ranks_mean", 2, 4, ["--bidirect-contrast", "--mask-mode", "tf",
                                                            "--group-reduce", "mean", "--weight-decay", "0.5"])
    # groups that neither divide nor are a multiple of the ranks are refused as a usage error
    r = subprocess.run([mpirun, "-np", "2", "--oversubscribe", "--bind-to", "none", BIN + "/cav-pretrain", "-o",
                        os.path.join(TMP, "g3"), "-b", "12", "--contrast-groups", "3"] + MICRO + [train],
                       capture_output=True, text=True, env=env)
    report("mpi_groups_not_dividing_ranks_refused", r.returncode == 1 and "contrast groups" in r.stderr,
           "exit %d: %s" % (r.returncode, r.stderr[-300:]))

    # The distributed layer's MPI transport sums in rank order from 0, as one process adds its groups'
    # gradients: with one whole group a rank, 3 ranks (and ZeRO-1, and gradient buckets) compute one process's
    # numbers bit for bit. Global batch 12, 3 groups of 4, 2 epochs of 3 steps; the last checkpoint's model,
    # optimiser state (ZeRO gathers its moments from the shards) and loss sums are compared whole.
    def dp_run(name, ranks, *extra, resume=False):
        out = os.path.join(TMP, name)
        base = ["-o", out, "--seed", "7", "-b", "12", "--contrast-groups", "3", "--log-every", "1", "--lr",
                "1e-3", "-e", "2", "--loader-threads", "1", "--weight-decay", "0.5"] + MICRO + list(extra) + \
            (["--resume"] if resume else []) + [train]
        pre = [mpirun, "-np", str(ranks), "--oversubscribe", "--bind-to", "none"] if ranks > 1 else []
        r = subprocess.run(pre + [BIN + "/cav-pretrain"] + base, capture_output=True, text=True, env=env)
        return out, r

    last_ck, same_run = toolenv.last_checkpoint, toolenv.same_checkpoints

    one3, r1 = dp_run("dp_one", 1)
    runs = {"three_ranks": dp_run("dp_three", 3),
            "three_ranks_zero1": dp_run("dp_three_zero", 3, "--zero", "1"),
            "three_ranks_zero1_buckets": dp_run("dp_three_zero_b", 3, "--zero", "1", "--bucket-mb", "0.01"),
            "three_ranks_buckets": dp_run("dp_three_b", 3, "--bucket-mb", "0.01")}
    for name, (out, r) in runs.items():
        if r1.returncode or r.returncode:
            report("mpi_%s_equal_one_process" % name, False, r1.stderr[-300:] + r.stderr[-800:])
            continue
        why = same_run(one3, out)
        # with small buckets, some start while the backward still runs (the model's final-gradient hook)
        early = re.search(r"gradient exchange: (\d+) buckets?, (\d+) started during the backward", r.stderr)
        overlap = early and int(early.group(2)) > 0 and int(early.group(2)) < int(early.group(1))
        print("  %s vs 1 process, 6 steps: %s; %s" % (name, why or "byte-identical checkpoints",
                                                       early.group(0) if early else "no exchange line"))
        report("mpi_%s_equal_one_process" % name, not why and ("ZeRO-1" in r.stderr) == ("zero" in name) and
               (overlap or "buckets" not in name), why or "exchange: %s" % (early.group(0) if early else None))
    # run to run: the bucketed ZeRO run again
    again, r = dp_run("dp_three_zero_b2", 3, "--zero", "1", "--bucket-mb", "0.01")
    why = r.returncode and r.stderr[-500:] or same_run(runs["three_ranks_zero1_buckets"][0], again)
    report("mpi_buckets_zero1_bit_identical_run_to_run", not why, why)

    # 2 ranks with ZeRO-1 against one process and against 2 ranks without it (global batch 8, 2 groups)
    two_z = os.path.join(TMP, "two_zero")
    r = subprocess.run(cmd[:cmd.index(two)] + [two_z] + cmd[cmd.index(two) + 1:] + ["--zero", "1"],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        report("mpi_two_ranks_zero1_equal_one_process", False, r.stderr[-800:])
    else:
        why = same_run(one, two_z)
        report("mpi_two_ranks_zero1_equal_one_process", not why and "ZeRO-1" in r.stderr, why)
        why = same_run(two, two_z)
        report("mpi_two_ranks_zero1_equal_two_ranks", not why, why)

    # Resume on another number of ranks: 3 ranks with ZeRO-1 stop after 2 steps (the checkpoint's moments
    # gathered from the shards); one process resumes; and the other way round (one process's checkpoint,
    # its moments scattered to the shards of 3 ZeRO ranks). Both end with the uninterrupted run's bytes.
    for name, first, then in (("zero1_three_ranks_then_one_process", (3, "--zero", "1"), (1,)),
                              ("one_process_then_zero1_three_ranks", (1,), (3, "--zero", "1"))):
        out, ra = dp_run("dp_" + name, first[0], *first[1:], "--max-steps", "2")
        _, rb = dp_run("dp_" + name, then[0], *then[1:], resume=True)
        why = (ra.returncode or rb.returncode) and (ra.stderr[-300:] + rb.stderr[-500:]) or same_run(one3, out)
        report("mpi_resume_%s" % name, not why, why)

    # A checkpoint rank 0 cannot write (a file size limit on rank 0 alone: EFBIG) stops every rank with exit 3
    # (the others say so) instead of leaving them waiting for rank 0 in the next step; with ZeRO-1 too, whose
    # checkpoint gathers the moments from every rank first. TCP between the ranks: the shared-memory transport's
    # backing file would meet the limit too.
    limited = "trap '' XFSZ; ulimit -f 8; "  # rank 0's file size limit: 8 blocks
    for name, extra in (("mpi_failed_checkpoint_stops_every_rank", []),
                        ("mpi_failed_checkpoint_stops_every_rank_zero1", ["--zero", "1"])):
        args = [BIN + "/cav-pretrain", "-o", os.path.join(TMP, name), "-b", "8", "--contrast-groups", "2", "-e", "1",
                "--save-every", "2", "--loader-threads", "1"] + MICRO + extra + [train]
        try:
            r = subprocess.run([mpirun, "--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,tcp", "-np", "1"] +
                               toolenv.each_rank(args, limited) + [":", "-np", "1"] + toolenv.each_rank(args),
                               capture_output=True, text=True, env=toolenv.mpi_env_all_exit(env), timeout=120)
            codes = toolenv.rank_exits(r.stderr)
            report(name, codes == [3, 3] and "rank 0 could not write the checkpoint" in r.stderr,
                   "exit codes %s: %s" % (codes, r.stderr[-400:]))
        except subprocess.TimeoutExpired:
            report(name, False, "the ranks still ran 120 s after rank 0's failed checkpoint")

    # Rank 0's files at an epoch's end (result.csv, metrics.jsonl, the epoch's model, the best model): one it
    # cannot write stops every rank with rank 0's exit code, 3 (the others say so), instead of leaving them
    # waiting for it in the next step. Epoch 1 by one process; 2 ranks resume for epoch 2, rank 0 under the
    # file size limit above, which its model file meets (result.csv and metrics.jsonl stay below it). Epoch
    # 1's model, result.csv row and checkpoint are left as they were.
    name = "mpi_failed_epoch_files_stop_every_rank"
    out = os.path.join(TMP, name)
    pretrain(out, "-e", "1", "--save-every", "0", train)
    kept_files = ["result.csv", os.path.join("models", "audio_model.1.safetensors")]
    ck_before = last_ck(out)
    kept_files.append(os.path.join(os.path.relpath(ck_before, out), "model.safetensors"))
    before = [read(os.path.join(out, f)) for f in kept_files]
    args = [BIN + "/cav-pretrain", "-o", out, "--resume", "--seed", "7", "-b", "8", "--contrast-groups", "2", "--lr",
            "1e-3", "-e", "2", "--loader-threads", "1"] + MICRO + [train]
    t0 = time.time()
    try:
        r = subprocess.run([mpirun, "--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,tcp", "-np", "1"] +
                           toolenv.each_rank(args, limited) + [":", "-np", "1"] + toolenv.each_rank(args),
                           capture_output=True, text=True, env=toolenv.mpi_env_all_exit(env), timeout=60)
        codes = toolenv.rank_exits(r.stderr)
        now = [read(os.path.join(out, f)) for f in kept_files]
        # result.csv may have gained epoch 2's row (written before the model); its first row is unchanged
        kept = now[0].startswith(before[0]) and now[1:] == before[1:] and last_ck(out) == ck_before
        print("  failed epoch-end write, 2 ranks: exit codes %s after %.1f s" % (codes, time.time() - t0))
        report(name, codes == [3, 3] and "rank 0 could not write the epoch's results" in r.stderr and kept and
               "audio_model.2.safetensors" in r.stderr, "exit codes %s, earlier results kept: %s: %s" %
               (codes, kept, r.stderr[-600:]))
    except subprocess.TimeoutExpired:
        report(name, False, "the ranks still ran 60 s after rank 0's failed epoch-end write")

    # --device cuda over several ranks: rank r asks for cuda:LOCAL_RANK (mpirun's OMPI_COMM_WORLD_LOCAL_RANK,
    # or the user's CAV_LOCAL_RANK). No device is visible here (CUDA_VISIBLE_DEVICES empty, or no CUDA in the
    # build): every rank stops with a usage error naming the device it was given.
    novis = dict(env, CUDA_VISIBLE_DEVICES="")
    dev = [mpirun, "-np", "2", "--oversubscribe", "--bind-to", "none"] + toolenv.each_rank(
        [BIN + "/cav-pretrain", "-o", os.path.join(TMP, "dev"), "-b", "8", "--device", "cuda"] + MICRO + [train])
    r = subprocess.run(dev, capture_output=True, text=True, env=toolenv.mpi_env_all_exit(novis))
    codes = toolenv.rank_exits(r.stderr)
    report("mpi_device_cuda_is_local_rank", codes == [1, 1] and "--device cuda:0" in r.stderr and
           "--device cuda:1" in r.stderr, "exit codes %s: %s" % (codes, r.stderr[-600:]))
    r = subprocess.run(dev, capture_output=True, text=True,
                       env=toolenv.mpi_env_all_exit(dict(novis, CAV_LOCAL_RANK="5")))
    codes = toolenv.rank_exits(r.stderr)
    report("mpi_device_cuda_local_rank_override", codes == [1, 1] and r.stderr.count("--device cuda:5") == 2,
           "exit codes %s: %s" % (codes, r.stderr[-600:]))

    # A gradient exchange that fails on one rank alone (tests/faultinj/mpifail.c: rank 1's second bucket never
    # starts) leaves the other rank waiting inside it, where no agreement reaches it: the failing rank ends
    # the whole job (MPI_Abort, exit 3) with its message, instead of leaving rank 0 in the step for ever.
    name = "mpi_failed_exchange_ends_the_job"
    fail_env = toolenv.mpi_env_all_exit(dict(env, MPIFAIL_RANK="1", MPIFAIL_AT="2"))
    args = [BIN + "/cav-pretrain", "-o", os.path.join(TMP, name), "-b", "8", "--contrast-groups", "2", "-e", "1",
            "--bucket-mb", "0.01", "--loader-threads", "1"] + MICRO + [train]
    t0 = time.time()
    try:
        r = subprocess.run([mpirun, "-np", "2", "--oversubscribe", "--bind-to", "none"] +
                           toolenv.each_rank(args, "export LD_PRELOAD=%s; " % toolenv.MPIFAIL),
                           capture_output=True, text=True, env=fail_env, timeout=60)
        print("  exchange failed on rank 1: mpirun exit %d after %.1f s" % (r.returncode, time.time() - t0))
        report(name, r.returncode == 3 and "rank 1: MPI_Ialltoallv failed" in r.stderr,
               "exit %d: %s" % (r.returncode, r.stderr[-600:]))
    except subprocess.TimeoutExpired:
        report(name, False, "the ranks still ran 60 s after rank 1's failed exchange")

# Finite but absurd inputs (fbank values of 1e37, raw reconstruction targets) overflow the loss: the run
# stops at a named step.
huge = os.path.join(TMP, "huge.h5")
make_shard(huge, 16, seed=3, scale=1e37)
run = os.path.join(TMP, "diverge")
r = pretrain(run, "-e", "3", "--save-every", "1", "--no-norm-pix-loss", huge, check=False)
report("nonfinite_loss_stops_with_step", r.returncode == 3 and "non-finite" in r.stderr and "step" in r.stderr
       and "last good checkpoint" in r.stderr, "exit %d: %s" % (r.returncode, r.stderr[-400:]))

# A checkpoint that cannot be written (file size limit: EFBIG) exits 3; the earlier ones stay complete.
run = os.path.join(TMP, "full")
shutil.copytree(ref, run)
before = sorted(os.listdir(os.path.join(run, "checkpoints")))
os.remove(os.path.join(run, "checkpoints", before[-1], "COMPLETE"))  # resume from the one before
cmd = "trap '' XFSZ; ulimit -f 8; exec \"$@\""
args = [BIN + "/cav-pretrain", "-o", run, "--seed", "7", "-b", "8", "--contrast-groups", "2", "--lr", "1e-3",
        "--resume", "--save-every", "1", "--keep", "0"] + MICRO + common
r = subprocess.run(["bash", "-c", cmd, "bash"] + args, capture_output=True, text=True)
after = sorted(os.listdir(os.path.join(run, "checkpoints")))
complete = all(os.path.exists(os.path.join(run, "checkpoints", d, "COMPLETE")) for d in before[:-1])
report("failed_checkpoint_write_keeps_previous", r.returncode == 3 and complete and
       not any(d.startswith(".tmp") for d in after), "exit %d %s %s" % (r.returncode, after, r.stderr[-300:]))

# Model knobs apply after --variant and --model whatever their order on the command line.
for order in (["--contrast-weight", "0.3", "--variant", "cav-mae"], ["--variant", "cav-mae", "--contrast-weight", "0.3"]):
    r = pretrain(os.path.join(TMP, "order"), "-e", "1", "--max-steps", "1", *order, train, check=False)
    shutil.rmtree(os.path.join(TMP, "order"), ignore_errors=True)
    report("knob_after_variant_" + order[0].strip("-"), r.returncode == 0 and
           '"contrast_loss_weight": 0.2999' in r.stderr and '"embed_dim": 32' in r.stderr, r.stderr[-300:])

# Input without fbank: refused at start-up, naming the shard and the field.
bad = os.path.join(TMP, "nofbank.h5")
make_shard(bad, 8, with_fbank=False)
r = pretrain(os.path.join(TMP, "bad"), bad, check=False)
report("missing_field_refused", r.returncode == 2 and bad in r.stderr and "fbank" in r.stderr, r.stderr[-300:])

# Shards of waveforms (av-extract's `wave`, no fbank): the loader computes fbank on its threads, as the
# fbank tool does by default. --loader-only runs on them; 2 steps of training on them end with the model of
# 2 steps on the same shard after `fbank --drop-wave`, byte for byte.
waves = os.path.join(TMP, "waves.h5")
make_shard(waves, 16, with_fbank=False, with_wave=True, seed=5)
fbanked = os.path.join(TMP, "waves_fbank.h5")
r0 = subprocess.run([BIN + "/fbank", "--drop-wave", "-o", fbanked, waves], capture_output=True, text=True)
r = pretrain(os.path.join(TMP, "wl"), "--loader-only", waves, check=False)
report("loader_only_on_waveforms", r0.returncode == 0 and r.returncode == 0 and "loader: 16 samples" in r.stdout,
       r0.stderr[-300:] + r.stdout[-200:] + r.stderr[-300:])
runs = []
for name, shard in (("w_wave", waves), ("w_fbank", fbanked)):
    r = pretrain(os.path.join(TMP, name), "-e", "1", "--max-steps", "2", shard, check=False)
    runs.append(r)
if any(x.returncode for x in runs):
    report("training_on_waveforms_equals_fbank_tool", False, " | ".join(x.stderr[-300:] for x in runs))
else:
    ck = [os.path.join(TMP, n, "checkpoints") for n in ("w_wave", "w_fbank")]
    last = [os.path.join(c, sorted(os.listdir(c))[-1], "model.safetensors") for c in ck]
    report("training_on_waveforms_equals_fbank_tool", read(last[0]) == read(last[1]))

# --init-from-mae: the paper's mapping (cav-numerics(7) 3.5) of a MAE-shaped checkpoint (tests/ref/gen_pth.py, tiny
# sizes) against the start state tests/ref/cavmae_ref.py's adapt_mae_state builds. A step at lr 0 leaves the
# parameters as initialised and writes them into a checkpoint.
ref_pth = os.path.join(os.environ["CAV_REF"], "gen_pth")
img96 = os.path.join(TMP, "img96.h5")
make_shard(img96, 8, seed=4, img=96)
run = os.path.join(TMP, "mae")
args = ["-o", run, "-b", "8", "--contrast-groups", "2", "--lr", "0", "-e", "1", "--max-steps", "1",
        "--init-from-mae", os.path.join(ref_pth, "mae_tiny.pth")]
for kv in ("embed_dim=192", "depth=3", "modality_specific_depth=2", "num_heads=3", "decoder_embed_dim=128",
           "decoder_depth=2", "decoder_num_heads=4", "audio_length=256", "img_size=96"):
    args += ["--set", kv]
r = subprocess.run([BIN + "/cav-pretrain"] + args + [img96], capture_output=True, text=True)
if r.returncode != 0:
    report("init_from_mae_matches_reference_mapping", False, r.stderr[-500:])
else:
    ck = os.path.join(run, "checkpoints")
    got = tensors(os.path.join(ck, sorted(os.listdir(ck))[-1], "model.safetensors"))
    want = tensors(os.path.join(ref_pth, "cavmae_from_mae_tiny.safetensors"))
    random_init = {"modality_a", "modality_v", "decoder_modality_a", "decoder_modality_v"}
    bad = [k for k in want if k not in random_init and (k not in got or not np.array_equal(got[k], want[k]))]
    report("init_from_mae_matches_reference_mapping", not bad and got.keys() == want.keys(), "differ: %s" % bad[:8])

# OpenBLAS kernels (kernels/cpu/blas.c): OPENBLAS_VERBOSE=2 makes OpenBLAS print "Core: NAME" each time it loads.
# Unset, a pre-AVX2 choice on a CPU with AVX2+FMA or AVX-512 must be followed by exactly one restart with the
# wider kernels (and the note); any other choice must be kept. A value the user sets is never changed.
flags = open("/proc/cpuinfo").read().split("\nflags")[1].split("\n")[0].split() if os.path.exists("/proc/cpuinfo") else []
wide = "SkylakeX" if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= set(flags) else \
    "Haswell" if {"avx2", "fma"} <= set(flags) else None
old_cores = {"prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "sandybridge", "katmai", "coppermine",
             "northwood", "banias", "unknown", "opteron", "barcelona", "bobcat", "athlon", "opteron_sse3"}
env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "CAV_BLAS_REEXEC")}
r = subprocess.run([BIN + "/cav-pretrain", "--version"], capture_output=True, text=True,
                   env=dict(env, OPENBLAS_VERBOSE="2"))
cores = [l.split(":", 1)[1].strip() for l in (r.stdout + r.stderr).splitlines() if l.startswith("Core:")]
noted = "OPENBLAS_CORETYPE=" in r.stderr
if cores and cores[0].lower() in old_cores and wide:
    ok = cores == [cores[0], wide] and noted and r.returncode == 0
else:
    ok = len(cores) == 1 and not noted and r.returncode == 0
print("  OpenBLAS cores loaded: %s; CPU's widest: %s; note: %s" % (cores, wide, noted))
report("openblas_kernels_fit_cpu", ok, r.stderr[-400:])
r = subprocess.run([BIN + "/cav-pretrain", "--version"], capture_output=True, text=True,
                   env=dict(env, OPENBLAS_VERBOSE="2", OPENBLAS_CORETYPE="Prescott"))
cores = [l for l in (r.stdout + r.stderr).splitlines() if l.startswith("Core:")]
report("openblas_user_choice_kept", cores == ["Core: Prescott"] and "OPENBLAS_CORETYPE=" not in r.stderr,
       repr(cores))

shutil.rmtree(TMP)
sys.exit(toolenv.status())
