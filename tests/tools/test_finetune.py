"""test_finetune.py: cav-finetune end to end on small synthetic labelled shards with a micro model: a run with
per-epoch evaluation completes and writes result.csv [acc, mAP, mAUC, lr] and metrics.jsonl; the training
loss falls on a learnable toy set (each class a bright mel band); --max-steps + --resume ends byte-identical
to an uninterrupted run; one training step's loss equals the PyTorch reference CAVMAEFT's (tests/ref) on the
same start weights and batch (no augmentation, label smoothing 0.1) to rel 1e-5 (mixup and --bal:
test_finetune_mixup.py); 2 MPI ranks equal one process, small buckets start during the backward, and a
final evaluation file rank 0 cannot write stops both ranks with its exit code."""
import os
import re
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ftfixture  # noqa: E402
import toolenv  # noqa: E402
from ftfixture import jsonl, read, step_losses  # noqa: E402
from toolenv import report  # noqa: E402

TMP = toolenv.scratch("cav-finetune-test-")
K = 4


def make_shard(path, rows, seed=0):
    """Row r has class r % K (tests/tools/ftfixture.py); returns the records' (fbank, frames, labels)."""
    return ftfixture.make_shard(path, rows, seed, K)


def finetune(out, *args, check=True):
    return ftfixture.finetune(K, out, *args, check=check)


train = os.path.join(TMP, "train.h5")
evals = os.path.join(TMP, "eval.h5")
make_shard(train, 32, seed=1)
make_shard(evals, 16, seed=2)

# A short run with evaluation; the toy set is learnable, so the loss falls. MultiStepLR from epoch 3: the
# rate of epoch e+1 is lr * 0.5^(milestones <= e), so epoch 4 is the first at half rate (cav-numerics(7) 3.1).
ref = os.path.join(TMP, "ref")
common = ["-e", "4", "--lr-decay-start", "3", "--save-every", "1", "--keep", "0", "--eval", evals, train]
r = finetune(ref, *common, check=False)
csv = os.path.join(ref, "result.csv")
lines = read(csv).decode().splitlines() if os.path.exists(csv) else []
ok = r.returncode == 0 and len(lines) == 4 and all(len(x.split(",")) == 4 for x in lines)
report("run_completes_result_csv", ok, r.stderr[-800:])
if ok:
    cols = [[float(v) for v in x.split(",")] for x in lines]
    lrs = [c[3] for c in cols]
    report("result_csv_lr_schedule", np.allclose(lrs, [1e-3, 1e-3, 1e-3, 5e-4]), str(lrs))
    report("result_csv_metrics_in_range", all(0 <= c[0] <= 1 and 0 <= c[1] <= 1 and 0 <= c[2] <= 1 for c in cols),
           str(cols))
    ep = [x for x in jsonl(os.path.join(ref, "metrics.jsonl")) if "train_loss" in x]
    first, last = ep[0]["train_loss"], ep[-1]["train_loss"]
    print("  train loss by epoch: %s; eval mAP %s" % ([round(x["train_loss"], 4) for x in ep],
                                                     [round(x["eval_mAP"], 3) for x in ep]))
    report("loss_decreases", len(ep) == 4 and last < 0.8 * first, "%g -> %g" % (first, last))
    report("models_written", all(os.path.exists(os.path.join(ref, "models", "audio_model.%d.safetensors" % e))
                                 for e in range(1, 5)) and
           os.path.exists(os.path.join(ref, "models", "best_audio_model.safetensors")))

# An evaluation set of one clip (class 0 of 4): no class has both positives and negatives, so mAUC and d' are
# NaN; metrics.jsonl must stay JSON (null, not nan) and the run must finish.
few = os.path.join(TMP, "eval1.h5")
make_shard(few, 1, seed=3)
nan_run = os.path.join(TMP, "nan")
r = ftfixture.finetune(K, nan_run, "-e", "1", "--eval", few, train, batch=1)
try:
    ep = [x for x in jsonl(os.path.join(nan_run, "metrics.jsonl")) if "train_loss" in x]
    ok, why = r.returncode == 0 and len(ep) == 1, "%d epoch lines: %s" % (len(ep), ep)
except (OSError, ValueError) as e:
    ok, why = False, "%s; %s" % (e, r.stderr[-400:])
report("metrics_jsonl_json_with_nan_scores", ok, why)

# --max-steps, then --resume twice, ends where the uninterrupted run does (4 steps per epoch).
run = os.path.join(TMP, "steps")
finetune(run, "--max-steps", "3", *common)
finetune(run, "--resume", "--max-steps", "6", *common)
r = finetune(run, "--resume", *common, check=False)
final = os.path.join("models", "audio_model.4.safetensors")
same = r.returncode == 0 and os.path.exists(os.path.join(run, final)) and \
    read(os.path.join(run, final)) == read(os.path.join(ref, final)) and \
    read(os.path.join(run, "result.csv")) == read(os.path.join(ref, "result.csv"))
report("max_steps_then_resume_bit_identical", same, r.stderr[-800:])

# An init file that is not a CAV-MAE encoder of this size is refused (exit 2).
bad = os.path.join(TMP, "bad.safetensors")
toolenv.use_ref()
import torch  # noqa: E402
import cavmae_ref as R  # noqa: E402
import st_io  # noqa: E402
st_io.save(bad, {"mlp_head.0.weight": torch.ones(32)})
r = finetune(os.path.join(TMP, "bad"), "--init", bad, "-e", "1", train, check=False)
report("init_without_encoder_refused", r.returncode == 2 and "encoder" in r.stderr, "rc %d: %s" % (r.returncode, r.stderr[-300:]))

# One step against the PyTorch reference: the same start weights (all of them, head included, from a
# safetensors file) and the same batch (all 8 rows of a shard, frame 5, no SpecAugment, noise or roll).
torch.manual_seed(0)
ft = R.CAVMAEFT(K, img_size=32, audio_length=64, embed_dim=32, modality_specific_depth=1, num_heads=2, depth=2)
init = os.path.join(TMP, "init.safetensors")
st_io.save(init, {k: v.float() for k, v in ft.state_dict().items()})
one = os.path.join(TMP, "one.h5")
data = make_shard(one, 8, seed=5)
r = finetune(os.path.join(TMP, "parity"), "--init", init, "-e", "1", "--freqm", "0", "--timem", "0", "--no-noise",
             "--no-roll", "--frame", "5", one, check=False)
c_loss = step_losses(os.path.join(TMP, "parity")) if r.returncode == 0 else []
A, V, Y = ftfixture.reference_batch(data, K)
with torch.no_grad():
    logits = ft(A, V, "multimodal")
    t_loss = R.ft_loss(logits, Y, "bce").item()
ok = len(c_loss) == 1 and abs(c_loss[0] - t_loss) <= 1e-5 * abs(t_loss)
print("  one step: C %s, PyTorch %.9g" % (c_loss, t_loss))
report("one_step_loss_equals_pytorch", ok, r.stderr[-800:])

# Two MPI ranks against one process on the same global batch, 2 steps: each rank's mean loss and gradients
# weighted by its half of the batch and summed are the whole batch's. The step losses within rel 1e-5, the
# parameters within 1e-5 in relative L2 norm; the attention key biases are left out (softmax is blind to
# them: their true gradient is 0 and Adam turns the rounding noise into steps of about lr, as in
# test_pretrain.py). Adam alone is blind to a common gradient scale; the coupled weight decay is not.
mpi = toolenv.mpirun(2)
if not mpi:
    report("mpi_two_ranks_equal_one_process", False, "mpirun not found (Debian openmpi-bin)")
else:
    base = ["--seed", "3", "-b", "8", "--log-every", "1", "--lr", "1e-3", "--head-lr", "10", "-e", "1",
            "--weight-decay", "0.05",  # coupled L2 makes Adam see a wrong gradient scale
            "--max-steps", "2", "--loader-threads", "1"] + ftfixture.micro(K) + [train]
    one, two = os.path.join(TMP, "mpi_one"), os.path.join(TMP, "mpi_two")
    r1, r2 = ftfixture.one_and_two_ranks(mpi, one, two, base)
    if r1.returncode or r2.returncode:
        report("mpi_two_ranks_equal_one_process", False, r1.stderr[-300:] + r2.stdout[-300:] + r2.stderr[-800:])
    else:
        def newest(run):
            d = os.path.join(run, "checkpoints")
            return st_io.load(os.path.join(d, sorted(x for x in os.listdir(d) if x.startswith("e"))[-1],
                                           "model.safetensors"))[0]
        la = [x["loss"] for x in jsonl(os.path.join(one, "metrics.jsonl"))]
        lb = [x["loss"] for x in jsonl(os.path.join(two, "metrics.jsonl"))]
        a, b = newest(one), newest(two)
        num = den = 0.0
        for k in a:
            x, y = a[k].double().flatten(), b[k].double().flatten()
            if k.endswith("attn.qkv.bias"):
                c = x.shape[0] // 3
                x, y = torch.cat([x[:c], x[2 * c:]]), torch.cat([y[:c], y[2 * c:]])
            num += float(((x - y) ** 2).sum())
            den += float((x ** 2).sum())
        rel = (num / den) ** 0.5
        print("  losses one %s, two ranks %s; parameters rel L2 %.3g" % (la, lb, rel))
        ok = len(la) == 2 and len(lb) == 2 and all(abs(p - q) <= 1e-5 * abs(p) for p, q in zip(la, lb)) and rel <= 1e-5
        report("mpi_two_ranks_equal_one_process", ok, "")

        # ZeRO-1 (Adam's state sharded over the ranks) in small gradient buckets: the same two-rank run, byte for
        # byte (model, optimiser state gathered from the shards, step state)
        zero = os.path.join(TMP, "mpi_two_zero")
        rz = subprocess.run(mpi + [ftfixture.FINETUNE, "-o", zero, "--zero", "1", "--bucket-mb", "0.01"] + base,
                            capture_output=True, text=True, env=toolenv.mpi_env())
        def last_dir(run):
            d = os.path.join(run, "checkpoints")
            return os.path.join(d, sorted(x for x in os.listdir(d) if x.startswith("e"))[-1])
        bad = rz.returncode and ["exit %d: %s" % (rz.returncode, rz.stderr[-500:])] or \
            [f for f in ("model.safetensors", "optim.safetensors", "state.json")
             if open(os.path.join(last_dir(two), f), "rb").read() != open(os.path.join(last_dir(zero), f), "rb").read()]
        report("mpi_two_ranks_zero1_buckets_equal_two_ranks", not bad and "ZeRO-1" in rz.stderr, "differ: %s" % bad)
        # The final evaluation's files are rank 0's: one it cannot write (a directory holds final_eval.json's
        # name: the writer refuses to replace it, exit 1) stops both ranks with rank 0's exit code, the other
        # saying so (it used to exit 0). Each rank's exit code is printed (toolenv.each_rank).
        fe = os.path.join(TMP, "mpi_final_eval_unwritable")
        os.makedirs(os.path.join(fe, "final_eval.json"))
        i = base.index("--max-steps")
        try:
            rf = subprocess.run(mpi + toolenv.each_rank([ftfixture.FINETUNE, "-o", fe, "--force", "--eval", evals] +
                                                        base[:i] + base[i + 2:]),
                                capture_output=True, text=True, timeout=60, env=toolenv.mpi_env_all_exit())
            codes = toolenv.rank_exits(rf.stderr)
            print("  final evaluation unwritable on rank 0, 2 ranks: exit codes %s" % codes)
            report("mpi_failed_final_eval_stops_every_rank", len(codes) == 2 and codes[0] == codes[1] != 0 and
                   "rank 0 could not write the final evaluation's files" in rf.stderr and
                   "final_eval.json" in rf.stderr, "exit codes %s: %s" % (codes, rf.stderr[-500:]))
        except subprocess.TimeoutExpired:
            report("mpi_failed_final_eval_stops_every_rank", False, "the ranks still ran 60 s after")

        # the rank's share of the batch is in the backward's dloss (no scaling after it), so small buckets
        # start while the backward still runs; the results above stay byte for byte those of 2 ranks
        early = re.search(r"gradient exchange: (\d+) buckets?, (\d+) started during the backward", rz.stderr)
        print("  %s" % (early.group(0) if early else "no exchange line"))
        report("mpi_buckets_start_during_backward", early and 0 < int(early.group(2)) < int(early.group(1)),
               rz.stderr[-300:])

sys.exit(toolenv.status())
