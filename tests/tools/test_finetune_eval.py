"""test_finetune_eval.py: cav-finetune's final evaluation (cav-finetune(1) "Final evaluation") on a micro model
and small synthetic shards: the weight-averaged model equals NumPy's mean of the epoch models; the ten-frame
evaluation (audio branch once per clip) gives per frame the probabilities of ten --eval-only runs with one
fixed frame each (the whole model rerun) and their mean as the aggregate, to rel 1e-6; mul_frame_res.csv
holds the ten per-frame values and the aggregated one; per-class AP and mAP equal sklearn's on the exported
predictions; --eval-only on the WA model repeats the training run's final figures; existing outputs are
refused without --force; an audio-only model runs one pass on frame 5 and writes no mul_frame_res.csv; the
best model is evaluated without WA; --force clears an old run's final files; two MPI ranks evaluate as one
process; bad option combinations are usage errors."""
import functools
import json
import os
import sys

import numpy as np
from sklearn.metrics import average_precision_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ftfixture  # noqa: E402
import toolenv  # noqa: E402
from toolenv import report  # noqa: E402
toolenv.use_ref()
import st_io  # noqa: E402

TMP = toolenv.scratch("cav-finetune-eval-test-")
K = 5
finetune = functools.partial(ftfixture.finetune, K, None, seed=5, batch=6, mask=8, log_every=False)  # -o in args


def shard(path, rows, seed):
    """Clip r: class r % K as a bright mel band (and a second label on every third clip); ten distinct noise
    frames, so that the frames' predictions differ. Returns ids and labels [rows, K]."""
    g = np.random.default_rng(seed)
    recs, labels = [], np.zeros((rows, K), np.float32)
    for r in range(rows):
        fb = (g.standard_normal((50 + r % 7, 128)) * 2 - 5).astype(np.float32)
        fb[:, 25 * (r % K):25 * (r % K) + 25] += 4
        labels[r, r % K] = 1
        if r % 3 == 0:
            labels[r, (r + 2) % K] = 1
        frames = g.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
        recs.append(("id,%02d" % r if r == 4 else "v%03d" % r, {},
                     [("fbank", fb), ("frames", frames), ("labels", labels[r])]))
    ftfixture.pack(path, recs)
    return [x[0] for x in recs], labels


def predictions(path):
    """(ids, probabilities [n, K]) of a predictions CSV (header id,0..K-1; ids may be quoted)."""
    import csv
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    ok = rows[0] == ["id"] + [str(k) for k in range(K)]
    return [r[0] for r in rows[1:]], np.array([[float(v) for v in r[1:]] for r in rows[1:]], np.float64), ok


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


train = os.path.join(TMP, "train.h5")
evals = os.path.join(TMP, "eval.h5")
shard(train, 24, 1)
ids, y = shard(evals, 15, 2)  # 15 rows, batch 6: the last batch is partial and must be scored too

# A run with WA over epochs 2..4 and predictions.
run = os.path.join(TMP, "run")
r = finetune("-o", run, "-e", "4", "--wa-start", "2", "--wa-end", "4", "--predictions", "--eval", evals, train)
report("run_with_wa_completes", r.returncode == 0, r.stderr[-1200:])
print("  " + "\n  ".join(x for x in r.stderr.splitlines() if "frame" in x or "weight average" in x))
wa_path = os.path.join(run, "models", "audio_model_wa.safetensors")

# The WA model is the mean of every tensor of the three epoch models.
if os.path.exists(wa_path):
    wa = st_io.load(wa_path)[0]
    eps = [st_io.load(os.path.join(run, "models", "audio_model.%d.safetensors" % e))[0] for e in (2, 3, 4)]
    worst = max(rel(wa[k].numpy(), np.mean([e[k].numpy() for e in eps], axis=0)) for k in eps[0])
    same_keys = set(wa) == set(eps[0])
    print("  WA vs numpy mean of models 2..4: %d tensors, max rel %.3g" % (len(wa), worst))
    report("wa_equals_numpy_mean", same_keys and worst <= 1e-6, "keys %s, rel %g" % (same_keys, worst))
else:
    report("wa_equals_numpy_mean", False, "no %s" % wa_path)

# mul_frame_res.csv: ten per-frame values and the aggregated one, as final_eval.json has them.
try:
    with open(os.path.join(run, "final_eval.json")) as f:
        fin = json.load(f)
    mul = np.loadtxt(os.path.join(run, "mul_frame_res.csv"), delimiter=",")
    ok = mul.shape == (11,) and fin["frames"] == list(range(10)) and np.allclose(mul[:10], fin["frame_res"], rtol=1e-12) \
        and abs(mul[10] - fin["mAP"]) <= 1e-12 and fin["model"] == wa_path and fin["rows"] == 15
    report("mul_frame_res_layout", ok, "%s %s" % (mul, fin))
except (OSError, ValueError, KeyError) as e:
    fin = None
    report("mul_frame_res_layout", False, str(e))

# The aggregate is the mean of the ten frames' probabilities; per-class AP and mAP as sklearn computes them.
agg_ids, agg, header_ok = predictions(os.path.join(run, "predictions_agg.csv"))
per = [predictions(os.path.join(run, "predictions_frame%d.csv" % f))[1] for f in range(10)]
report("predictions_ids_and_header", header_ok and agg_ids == ids and agg.shape == (15, K), str(agg_ids))
report("agg_is_mean_of_frames", rel(agg, np.mean(per, axis=0)) <= 1e-6, "rel %g" % rel(agg, np.mean(per, axis=0)))
report("frames_differ", max(rel(per[0], p) for p in per[1:]) > 1e-4, "the frames give the same predictions")
ap = [average_precision_score(y[:, k], agg[:, k]) for k in range(K)]
ok = fin is not None and np.allclose(fin["class_ap"], ap, rtol=1e-6, atol=1e-9) and abs(np.mean(ap) - fin["mAP"]) <= 1e-6
print("  per-class AP C %s, sklearn %s" % (fin and [round(x, 6) for x in fin["class_ap"]], [round(x, 6) for x in ap]))
report("class_ap_equals_sklearn", ok, "")

# Ten --eval-only runs of the WA model, each on one fixed frame with the whole model rerun, give the ten-frame
# evaluation's per-frame probabilities (and so its aggregate).
single, bad = [], ""
for f in range(10):
    d = os.path.join(TMP, "frame%d" % f)
    r = finetune("--eval-only", "--init", wa_path, "--eval", evals, "-o", d, "--no-frame-agg", "--frame", str(f),
                 "--predictions")
    p = os.path.join(d, "predictions_frame%d.csv" % f)
    if r.returncode or not os.path.exists(p) or os.path.exists(os.path.join(d, "mul_frame_res.csv")):
        bad = r.stderr[-800:]
        break
    single.append(predictions(p)[1])
if len(single) == 10:
    worst = max(rel(a, b) for a, b in zip(per, single))
    worst_agg = rel(agg, np.mean(single, axis=0))
    print("  ten frames (audio once) vs ten full runs: max rel %.3g; aggregate %.3g" % (worst, worst_agg))
    report("frames_equal_ten_full_runs", worst <= 1e-6 and worst_agg <= 1e-6, "rel %g %g" % (worst, worst_agg))
else:
    report("frames_equal_ten_full_runs", False, bad)

# --eval-only on the WA model repeats the run's final figures.
alone = os.path.join(TMP, "alone")
r = finetune("--eval-only", "--init", wa_path, "--eval", evals, "-o", alone)
try:
    with open(os.path.join(alone, "final_eval.json")) as f:
        a = json.load(f)
    keys = ["frame_res", "acc", "mAP", "mAUC", "dprime", "class_ap"]
    ok = r.returncode == 0 and fin is not None and all(np.allclose(a[k], fin[k], rtol=1e-9) for k in keys) and \
        np.array_equal(np.loadtxt(os.path.join(alone, "mul_frame_res.csv")), mul)
    report("eval_only_equals_run_final", ok, r.stderr[-600:])
except (OSError, ValueError, KeyError) as e:
    report("eval_only_equals_run_final", False, "%s %s" % (e, r.stderr[-600:]))

# Outputs already there are refused (exit 1, unchanged) unless --force.
before = open(os.path.join(alone, "mul_frame_res.csv"), "rb").read()
r = finetune("--eval-only", "--init", wa_path, "--eval", evals, "-o", alone)
r2 = finetune("--eval-only", "--init", os.path.join(run, "models", "audio_model.1.safetensors"), "--eval", evals,
              "-o", alone, "--force")
after = open(os.path.join(alone, "mul_frame_res.csv"), "rb").read()
report("existing_outputs_refused_without_force", r.returncode == 1 and "exists" in r.stderr and r2.returncode == 0
       and after != before, "rc %d %d: %s" % (r.returncode, r2.returncode, r.stderr[-300:] + r2.stderr[-300:]))

# An audio-only model: frame aggregation off by default (one pass, frame 5, no mul_frame_res.csv); without WA
# the best model is the one evaluated.
ao = os.path.join(TMP, "audioonly")
r = finetune("-o", ao, "-e", "2", "--mode", "audioonly", "--predictions", "--eval", evals, train)
try:
    with open(os.path.join(ao, "final_eval.json")) as f:
        a = json.load(f)
    ok = r.returncode == 0 and a["frames"] == [5] and not a["aggregated"] and \
        not os.path.exists(os.path.join(ao, "mul_frame_res.csv")) and \
        a["model"].endswith("models/best_audio_model.safetensors") and \
        os.path.exists(os.path.join(ao, "predictions_frame5.csv")) and \
        not os.path.exists(os.path.join(ao, "predictions_agg.csv"))
    report("audioonly_one_frame_best_model", ok, r.stderr[-600:])
except (OSError, ValueError, KeyError) as e:
    report("audioonly_one_frame_best_model", False, "%s %s" % (e, r.stderr[-600:]))

# --force: a new run in that directory leaves none of the old run's final files behind.
r = finetune("-o", ao, "-e", "1", "--force", train)
left = [x for x in ("final_eval.json", "predictions_frame5.csv") if os.path.exists(os.path.join(ao, x))]
report("force_clears_final_outputs", r.returncode == 0 and not left, "%s %s" % (left, r.stderr[-300:]))

# Two MPI ranks: the weight average written by rank 0, every rank's slice of each batch gathered (the last
# batch of 3 rows is all rank 0's); the same predictions as --eval-only of that WA model in one process.
mpi = toolenv.mpirun(2)
if not mpi:
    report("mpi_final_eval_equals_one_process", False, "mpirun not found (Debian openmpi-bin)")
else:
    two = os.path.join(TMP, "mpi")
    r = finetune("-o", two, "-e", "2", "--wa-start", "1", "--wa-end", "2", "--predictions", "--eval", evals, train,
                 pre=mpi, env=toolenv.mpi_env())
    one = os.path.join(TMP, "mpi_alone")
    r1 = finetune("--eval-only", "--init", os.path.join(two, "models", "audio_model_wa.safetensors"), "--eval", evals,
                  "-o", one, "--predictions")
    try:
        i2, p2, _ = predictions(os.path.join(two, "predictions_agg.csv"))
        i1, p1, _ = predictions(os.path.join(one, "predictions_agg.csv"))
        print("  two ranks vs one process: predictions max rel %.3g" % rel(p2, p1))
        report("mpi_final_eval_equals_one_process", i1 == i2 == ids and rel(p2, p1) <= 1e-6, "rel %g" % rel(p2, p1))
    except (OSError, ValueError, IndexError) as e:
        report("mpi_final_eval_equals_one_process", False, "%s: %s %s" % (e, r.stderr[-600:], r1.stderr[-300:]))

# Usage errors: --eval-only without --init, with training shards or with WA; a WA range past the epochs.
u = [finetune("--eval-only", "--eval", evals, "-o", os.path.join(TMP, "u1")),
     finetune("--eval-only", "--init", wa_path, "--eval", evals, "-o", os.path.join(TMP, "u2"), train),
     finetune("--eval-only", "--init", wa_path, "--eval", evals, "-o", os.path.join(TMP, "u3"), "--wa-start", "1",
              "--wa-end", "2"),
     finetune("-o", os.path.join(TMP, "u4"), "-e", "2", "--wa-start", "1", "--wa-end", "3", train)]
report("usage_errors", all(x.returncode == 1 for x in u) and not os.path.exists(os.path.join(TMP, "u4")),
       " | ".join("%d %s" % (x.returncode, x.stderr.strip()[-120:]) for x in u))

sys.exit(toolenv.status())
