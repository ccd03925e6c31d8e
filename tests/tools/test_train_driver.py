"""test_train_driver.py: what the one training driver (lib/train/train.c) promises a user of cav-pretrain
and cav-finetune, beyond the trainers' own tests: a resume after a stop between an epoch's result.csv row
and its checkpoint rewrites result.csv from the checkpoint's record (no row twice); a new run into a
non-empty directory is refused unless --resume or --force; a mask ratio of 0 with the reconstruction loss
on is refused at option checking; --device takes only cpu; the newest checkpoint and model are named by
the same epoch; without an evaluation set no eval figures are printed; every line the tools print starts
with their name; args.json is the option tables' echo."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toolenv  # noqa: E402
from toolenv import BIN, MICRO, report  # noqa: E402
import cavstream  # noqa: E402

TMP = tempfile.mkdtemp(prefix="cav-driver-test-")


def shard(path, rows, seed, labels=0):
    g = np.random.default_rng(seed)
    recs = []
    for r in range(rows):
        t = [("fbank", (g.standard_normal((64, 128)) * 3 - 5).astype(np.float32)),
             ("frames", g.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8))]
        if labels:
            t.append(("labels", (np.arange(labels) == r % labels).astype(np.float32)))
        recs.append(("c%03d" % r, {}, t))
    stream = os.path.join(TMP, "s.cavs")
    with open(stream, "wb") as f:
        f.write(cavstream.encode(recs))
    subprocess.run([BIN + "/shard-pack", "-o", path, stream], check=True)


def tool(name, out, *args):
    cmd = [BIN + "/" + name, "-o", out, "--seed", "5", "-b", "8", "--lr", "1e-3", "--loader-threads", "2"]
    if name == "cav-pretrain":
        cmd += ["--contrast-groups", "2"]
    return subprocess.run(cmd + MICRO + list(args), capture_output=True, text=True)


def read(p):
    with open(p, "rb") as f:
        return f.read()


def unprefixed(text, name):
    return [l for l in text.splitlines() if l and not l.startswith(name + ": ")]


train = os.path.join(TMP, "train.h5")
evals = os.path.join(TMP, "eval.h5")
shard(train, 24, 1)
shard(evals, 8, 2)
common = ["-e", "3", "--save-every", "2", "--keep", "0", "--eval", evals, train]

ref = os.path.join(TMP, "ref")
r = tool("cav-pretrain", ref, *common)
rows = read(os.path.join(ref, "result.csv")).decode().splitlines() if r.returncode == 0 else []
report("reference_run", r.returncode == 0 and len(rows) == 3, r.stderr[-500:])

# The run stopped after writing epoch 3's row but before its checkpoint was complete: the newest checkpoint
# is then a mid-epoch one of epoch 3 (or epoch 2's end). The resumed run must not list epoch 3 twice.
run = os.path.join(TMP, "cut")
shutil.copytree(ref, run)
ck = os.path.join(run, "checkpoints")
newest = sorted(d for d in os.listdir(ck) if d.startswith("e"))[-1]
os.remove(os.path.join(ck, newest, "COMPLETE"))
r = tool("cav-pretrain", run, "--resume", *common)
got = read(os.path.join(run, "result.csv")).decode().splitlines() if r.returncode == 0 else []
report("resume_rebuilds_result_csv", r.returncode == 0 and got == rows,
       "exit %d, %d rows vs %d: %s" % (r.returncode, len(got), len(rows), r.stderr[-300:]))
report("resume_after_cut_bit_identical", r.returncode == 0 and
       read(os.path.join(run, "models", "audio_model.3.safetensors")) ==
       read(os.path.join(ref, "models", "audio_model.3.safetensors")))

# The newest checkpoint of a finished run is named by the epoch of the newest model.
names = sorted(d for d in os.listdir(os.path.join(ref, "checkpoints")) if d.startswith("e"))
report("newest_checkpoint_named_like_newest_model", names and names[-1].startswith("e0003-") and
       os.path.exists(os.path.join(ref, "models", "audio_model.3.safetensors")), str(names))

# A new run into a non-empty directory: refused (exit 1, nothing touched); --force starts anew.
before = read(os.path.join(ref, "result.csv"))
r = tool("cav-pretrain", ref, "-e", "1", "--max-steps", "1", train)
report("nonempty_dir_refused", r.returncode == 1 and "--resume" in r.stderr and "--force" in r.stderr and
       read(os.path.join(ref, "result.csv")) == before, "exit %d: %s" % (r.returncode, r.stderr[-300:]))
forced = os.path.join(TMP, "forced")
shutil.copytree(ref, forced)
r = tool("cav-pretrain", forced, "--force", "-e", "1", train)
ck = sorted(os.listdir(os.path.join(forced, "checkpoints")))
report("force_replaces_run", r.returncode == 0 and len(read(os.path.join(forced, "result.csv")).splitlines()) == 1
       and not os.path.exists(os.path.join(forced, "models", "audio_model.3.safetensors")) and
       all(d.startswith("e0001-") for d in ck), "exit %d %s: %s" % (r.returncode, ck, r.stderr[-300:]))
r = tool("cav-finetune", ref, "-e", "1", "--label-dim", "4", train)
report("finetune_nonempty_dir_refused", r.returncode == 1 and "not empty" in r.stderr, r.stderr[-300:])

# A mask ratio of 0 with the reconstruction loss on: 0/0 in the reference; refused before any work.
for opt in ("--mask-ratio-a", "--mask-ratio-v"):
    r = tool("cav-pretrain", os.path.join(TMP, "mr" + opt[-1]), opt, "0", "-e", "1", train)
    report("mask_ratio_0_refused" + opt[-2:].replace("-", "_"), r.returncode == 1 and opt in r.stderr and
           not os.path.exists(os.path.join(TMP, "mr" + opt[-1], "checkpoints")),
           "exit %d: %s" % (r.returncode, r.stderr[-300:]))
r = tool("cav-pretrain", os.path.join(TMP, "mr0"), "--variant", "cav", "--mask-ratio-a", "0", "--mask-ratio-v", "0",
         "-e", "1", "--max-steps", "1", train)
report("mask_ratio_0_without_mae_runs", r.returncode == 0, r.stderr[-300:])

# --device: cpu only in this build; another name is a usage error.
r = tool("cav-pretrain", os.path.join(TMP, "dev"), "--device", "cuda", "-e", "1", train)
report("device_other_than_cpu_refused", r.returncode == 1 and "--device" in r.stderr, r.stderr[-300:])

# Without an evaluation set: no eval figures of 0.0000; every line of stderr starts with the tool's name;
# args.json is the echo of the option tables.
noev = os.path.join(TMP, "noeval")
r = tool("cav-pretrain", noev, "--device", "cpu", "-e", "1", train)
ep = [l for l in r.stderr.splitlines() if "epoch 1:" in l]
report("no_eval_set_no_eval_figures", r.returncode == 0 and ep and "no eval set" in ep[0] and "eval loss" not in ep[0],
       r.stderr[-300:])
bad = unprefixed(r.stderr, "cav-pretrain") + unprefixed(r.stdout, "cav-pretrain")
report("pretrain_lines_start_with_tool_name", r.returncode == 0 and not bad, repr(bad[:3]))
args = json.loads(read(os.path.join(noev, "args.json"))) if r.returncode == 0 else {}
report("args_json_from_option_tables", args.get("batch_size") == 8 and args.get("contrast_groups") == 2 and
       args.get("device") == "cpu" and "embed_dim=32" in args.get("knobs", "") and args.get("train") == train,
       repr(args)[:300])
ft = os.path.join(TMP, "ft")
shard(os.path.join(TMP, "lab.h5"), 16, 3, labels=4)
r = tool("cav-finetune", ft, "-e", "1", "--label-dim", "4", "--init", os.path.join(noev, "models",
         "audio_model.1.safetensors"), os.path.join(TMP, "lab.h5"))
ep = [l for l in r.stderr.splitlines() if "epoch 1:" in l]
bad = unprefixed(r.stderr, "cav-finetune") + unprefixed(r.stdout, "cav-finetune")
report("finetune_no_eval_lines_prefixed", r.returncode == 0 and ep and "no eval set" in ep[0] and "mAP" not in ep[0]
       and not bad, repr(bad[:3]) + r.stderr[-300:])
r = subprocess.run([BIN + "/cav-pretrain", "--check-debug-state",
                    os.path.join(os.environ["CAV_REF"], "gen_debug_states", "tiny_small_input.safetensors")],
                   capture_output=True, text=True)
bad = unprefixed(r.stdout, "cav-pretrain") + unprefixed(r.stderr, "cav-pretrain")
report("debug_state_lines_prefixed", r.returncode == 0 and not bad, repr(bad[:3]))

shutil.rmtree(TMP)
sys.exit(toolenv.status())
