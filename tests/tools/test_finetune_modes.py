"""test_finetune_modes.py: cav-finetune's fusion modes of the paper's Table 2f, linear probing and the recipe
presets (cav-finetune(1) MODES, LINEAR PROBING, RECIPES) on small synthetic labelled shards with a micro model:
- --mode singlemodal and multimodal+singlemodal train and evaluate (result.csv, finite metrics; the
  singlemodal head takes 2 x embed_dim inputs), and their first step's loss equals a PyTorch forward of the
  same fusion built from the reference CAVMAEFT's modules (tests/ref; the reference has no such modes);
- --freeze-base: every base tensor of every saved model is bit-identical to the start point, the head moves,
  the training loss falls; two steps match PyTorch's linear probe (requires_grad False on the base, Adam on
  the head) to rel 1e-5; --max-steps + --resume ends byte-identical to the uninterrupted run;
- --recipe as20k|as2m|vggsound sets the values cav-finetune(1) lists (args.json and the model config), and an
  option on the command line overrides the recipe whether it stands before or after it."""
import functools
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ftfixture  # noqa: E402
import toolenv  # noqa: E402
from ftfixture import FINETUNE, jsonl, read, step_losses  # noqa: E402
from toolenv import SRC, report  # noqa: E402
toolenv.use_ref()
import torch  # noqa: E402
import cavmae_ref as R  # noqa: E402
import st_io  # noqa: E402

TMP = toolenv.scratch("cav-finetune-modes-")
K, D = 4, 32  # D: the micro model's embed_dim (toolenv.MICRO_FT)
MICRO = ftfixture.micro(K)
finetune = functools.partial(ftfixture.finetune, K)


def make_shard(path, rows, seed):
    return ftfixture.make_shard(path, rows, seed, K)


def model(run, name):
    return st_io.load(os.path.join(run, "models", name))[0]


train = os.path.join(TMP, "train.h5")
evals = os.path.join(TMP, "eval.h5")
make_shard(train, 32, seed=1)
make_shard(evals, 16, seed=2)
one = os.path.join(TMP, "one.h5")
data = make_shard(one, 8, seed=5)

# ---- the Table 2f fusions train and evaluate --------------------------------------------------------------
for mode in ("singlemodal", "multimodal+singlemodal"):
    run = os.path.join(TMP, mode)
    r = finetune(run, "--mode", mode, "-e", "2", "--eval", evals, train)
    csv = os.path.join(run, "result.csv")
    rows = [[float(v) for v in x.split(",")] for x in read(csv).decode().split()] if os.path.exists(csv) else []
    ok = r.returncode == 0 and len(rows) == 2 and all(np.isfinite(x).all() and 0 <= x[1] <= 1 for x in rows)
    if ok:
        m = model(run, "audio_model.2.safetensors")
        width = m["mlp_head.1.weight"].shape[1]
        ok = width == (2 * D if mode == "singlemodal" else D) and ('"mode": "%s"' % mode) in r.stderr
        print("  %s: result.csv %s, head input %d" % (mode, rows, width))
    report("mode_%s_trains_and_evaluates" % mode.replace("+", "_"), ok, r.stderr[-600:])

# ---- against PyTorch: the fusions' forward, and linear probing's steps ------------------------------------
A, V, Y = ftfixture.reference_batch(data, K)
EXACT = ["-e", "1", "--freqm", "0", "--timem", "0", "--no-noise", "--no-roll", "--frame", "5"]


def fused(ft, head, mode):
    """cav-numerics(7) 2.12: SM = head(cat(pooled a, pooled v)); MM+SM = head(MM pooled + (pooled a + pooled v)/2)."""
    xa, xv = ft.embed_a(A), ft.embed_v(V)
    for blk in ft.blocks_a:
        xa = blk(xa)
    for blk in ft.blocks_v:
        xv = blk(xv)
    pa, pv = ft._single(xa, "a"), ft._single(xv, "v")
    if mode == "singlemodal":
        return head(torch.cat((pa, pv), dim=1))
    u = torch.cat((xa, xv), dim=1)
    for blk in ft.blocks_u:
        u = blk(u)
    return head(ft.norm(u).mean(dim=1) + (pa + pv) / 2)


for mode in ("singlemodal", "multimodal+singlemodal"):
    torch.manual_seed(0)
    ft = R.CAVMAEFT(K, img_size=32, audio_length=64, embed_dim=D, modality_specific_depth=1, num_heads=2, depth=2)
    w = 2 * D if mode == "singlemodal" else D
    head = torch.nn.Sequential(torch.nn.LayerNorm(w), torch.nn.Linear(w, K))
    with torch.no_grad():  # away from LayerNorm's (1, 0) so that the head's norm counts
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    sd = {k: t.float() for k, t in ft.state_dict().items() if not k.startswith("mlp_head")}
    sd.update({"mlp_head." + k: t.float() for k, t in head.state_dict().items()})
    init = os.path.join(TMP, "init_%s.safetensors" % mode)
    st_io.save(init, sd)
    r = finetune(os.path.join(TMP, "parity_" + mode), "--mode", mode, "--init", init, *EXACT, one)
    c_loss = step_losses(os.path.join(TMP, "parity_" + mode)) if r.returncode == 0 else []
    with torch.no_grad():
        t_loss = R.ft_loss(fused(ft, head, mode), Y, "bce").item()
    print("  %s first step: C %s, PyTorch %.9g" % (mode, c_loss, t_loss))
    report("mode_%s_loss_equals_pytorch" % mode.replace("+", "_"),
           len(c_loss) == 1 and abs(c_loss[0] - t_loss) <= 1e-5 * abs(t_loss), r.stderr[-600:])

# Linear probing, 3 steps on one batch of 8: PyTorch's Adam over the head alone (the reference's two groups,
# the head's at lr x head_lr; weight decay 5e-7, betas 0.95, 0.999), the base requires_grad False.
torch.manual_seed(1)
ft = R.CAVMAEFT(K, img_size=32, audio_length=64, embed_dim=D, modality_specific_depth=1, num_heads=2, depth=2)
init = os.path.join(TMP, "init_lp.safetensors")
st_io.save(init, {k: t.float() for k, t in ft.state_dict().items()})
lp = os.path.join(TMP, "lp_parity")
r = finetune(lp, "--freeze-base", "--init", init, *EXACT[2:], "-e", "3", one)
c_loss = step_losses(lp) if r.returncode == 0 else []
for n_, p in ft.named_parameters():
    p.requires_grad = n_.startswith("mlp_head")
opt = torch.optim.Adam([p for p in ft.parameters() if p.requires_grad], lr=1e-3 * 10, weight_decay=5e-7,
                       betas=(0.95, 0.999))
t_loss = []
for _ in range(3):
    opt.zero_grad()
    loss = R.ft_loss(ft(A, V, "multimodal"), Y, "bce")
    loss.backward()
    opt.step()
    t_loss.append(loss.item())
print("  linear probe steps: C %s, PyTorch %s" % (c_loss, t_loss))
report("freeze_base_steps_equal_pytorch", len(c_loss) == 3 and
       all(abs(p - q) <= 1e-5 * abs(q) for p, q in zip(c_loss, t_loss)), r.stderr[-600:])

# ---- linear probing on the toy set: base bit-identical, head moved, loss down, resume exact --------------
start = os.path.join(TMP, "start")
r = finetune(start, "-e", "1", train)
report("start_point_written", r.returncode == 0, r.stderr[-400:])
init = os.path.join(start, "models", "audio_model.1.safetensors")
common = ["--freeze-base", "--init", init, "-e", "4", "--lr-decay-start", "2", "--save-every", "1", "--keep", "0", "--eval", evals, train]
ref = os.path.join(TMP, "lp")
r = finetune(ref, *common)
ok = r.returncode == 0
if ok:
    s0 = st_io.load(init)[0]
    base_same, head_moved = True, True
    for e in range(1, 5):
        m = model(ref, "audio_model.%d.safetensors" % e)
        for k in s0:
            same = torch.equal(s0[k], m[k])
            if k.startswith("mlp_head"):
                head_moved &= not same
            else:
                base_same &= same
    ep = [x for x in jsonl(os.path.join(ref, "metrics.jsonl")) if "train_loss" in x]
    losses = [x["train_loss"] for x in ep]
    print("  linear probe train loss by epoch: %s; eval mAP %s" % ([round(x, 4) for x in losses],
                                                                  [round(x["eval_mAP"], 3) for x in ep]))
    report("freeze_base_keeps_base_bit_identical", base_same and "linear probing" in r.stderr,
           "a base tensor changed")
    report("freeze_base_moves_head", head_moved)
    # a frozen base plateaus after an epoch or two (augmentation moves the epoch means a little)
    report("freeze_base_loss_decreases", len(losses) == 4 and min(losses[1:]) < 0.9 * losses[0] and
           losses[-1] < losses[0], str(losses))
    trainable = re.search(r"parameters (\d+) \((\d+) trainable\)", r.stderr)
    report("freeze_base_trainable_is_head", trainable is not None and
           int(trainable.group(2)) == 2 * D + K * D + K, trainable.group(0) if trainable else r.stderr[-300:])
else:
    report("freeze_base_run", False, r.stderr[-600:])
run = os.path.join(TMP, "lp_steps")
finetune(run, "--max-steps", "3", *common)
finetune(run, "--resume", "--max-steps", "6", *common)
r = finetune(run, "--resume", *common)
final = os.path.join("models", "audio_model.4.safetensors")
report("freeze_base_resume_bit_identical", r.returncode == 0 and os.path.exists(os.path.join(run, final)) and
       read(os.path.join(run, final)) == read(os.path.join(ref, final)) and
       read(os.path.join(run, "result.csv")) == read(os.path.join(ref, "result.csv")), r.stderr[-600:])

# ---- recipes --------------------------------------------------------------------------------------------
# The man page's RECIPES lists each recipe as a line of options; args.json keys are the options' with '_'.
man = read(os.path.join(SRC, "man", "man1", "cav-finetune.1")).decode()
listed = {k: v.replace("\\-", "-") for k, v in re.findall(r"^\.B (as20k|as2m|vggsound)\n(\\-\\-.*)$", man, re.M)}
report("man_lists_three_recipes", sorted(listed) == ["as20k", "as2m", "vggsound"], str(sorted(listed)))
KNOBS = {"loss", "label-dim"}  # model knobs: in the config, not args.json's own keys


def run_recipe(name, *args):
    out = os.path.join(TMP, "recipe_" + name + "_" + str(abs(hash(args))))
    r = subprocess.run([FINETUNE, "-o", out, *MICRO, *args, "--max-steps", "1", "-b", "8",
                        train], capture_output=True, text=True)
    if r.returncode:
        return None, r.stderr
    with open(os.path.join(out, "args.json")) as f:
        return json.load(f), r.stderr


def same_value(got, want):
    try:
        return np.float32(got) == np.float32(want)  # float options are echoed at float precision
    except (TypeError, ValueError):
        return str(got) == want


for name, line in sorted(listed.items()):
    words, opts = line.split(), []  # "--opt value" pairs, and flags ("--opt" alone: value 1 in args.json)
    for i, w in enumerate(words):
        if w.startswith("--"):
            nxt = words[i + 1] if i + 1 < len(words) else "--"
            opts.append((w[2:], "1" if nxt.startswith("--") else nxt))
    args, err = run_recipe(name, "--recipe", name)
    bad = []
    for opt, val in opts:
        if opt in ("batch-size", "epochs"):  # overridden to keep the run short: checked below
            continue
        if opt in KNOBS:
            key = {"loss": "loss", "label-dim": "label_dim"}[opt]
            cfg = re.search(r"config (\{.*\})", err)
            got = json.loads(cfg.group(1))[key] if cfg else None
            if key == "label_dim":  # MICRO's --label-dim stands on the command line: it overrides
                val = str(K)
        else:
            got = args.get(opt.replace("-", "_")) if args else None
        if not same_value(got, val):
            bad.append("%s: %s, listed %s" % (opt, got, val))
    report("recipe_%s_sets_listed_values" % name, args is not None and len(opts) >= 12 and not bad,
           "; ".join(bad) if args else err[-400:])

# Order does not matter: an option before or after --recipe overrides it; the rest stays the recipe's.
b, _ = run_recipe("before", "--lr", "2e-4", "--metric", "acc", "--recipe", "as2m")
c, _ = run_recipe("after", "--recipe", "as2m", "--lr", "2e-4", "--metric", "acc")
d, _ = run_recipe("none", "--lr", "2e-4")
ok = b is not None and c is not None and d is not None
if ok:
    for x in (b, c):
        ok &= x["lr"] == 2e-4 and x["metric"] == "acc" and x["head_lr"] == 50 and x["lr_decay_start"] == 2 and \
            x["recipe"] == "as2m" and x["batch_size"] == 8
    ok &= d["recipe"] == "" and d["head_lr"] == 100  # no recipe: the tool's defaults
report("recipe_overridden_in_either_order", ok, "%s | %s" % (b, c))
# A recipe's flag is undone by its --no- option, before or after the recipe.
nb = [run_recipe("nobal" + str(i), *a)[0] for i, a in enumerate((("--recipe", "as2m", "--no-bal"),
                                                                  ("--no-bal", "--recipe", "vggsound")))]
report("recipe_bal_undone_by_no_bal", all(x is not None and x["bal"] == 0 and x["mixup"] == 0.5 for x in nb),
       str(nb))
r = subprocess.run([FINETUNE, "-o", os.path.join(TMP, "bad"), "--recipe", "audioset", train],
                   capture_output=True, text=True)
report("recipe_unknown_is_usage_error", r.returncode == 1 and "--recipe" in r.stderr, r.stderr[-300:])

if not toolenv.failures():  # kept for a look when something failed
    shutil.rmtree(TMP, ignore_errors=True)
sys.exit(toolenv.status())
