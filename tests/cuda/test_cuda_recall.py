"""test_cuda_recall.py (make check-cuda, stage recall): cav-recall --device $DEVICE (default cuda) against the
CPU on N = $RECALL_N (20,000) random embeddings with planted matches and exact ties (tests/tools/recallfix.py):
the same bytes in every output (the CSV, --ranks, --matches), which holds only if the double rechecks absorb
the device's sgemm rounding (cav_retr_margin) and the double buffer hands the host the right block each time.
  - recall_<device>_d768: D = 768, the default block (2048: a partial last block), every query's top-5 list;
  - recall_<device>_d100_class: D = 100 (device rows padded to 128 floats), --block 777, class-level (two
    passes over the blocks), labels in the records.
The CPU side is the host path (no --device) and --device cpu. DEVICE=cpu runs the comparison of those two
(the script's own check where no GPU is at hand). A device that does not open (exit 1, "no CUDA device") is
a SKIP: check_cuda.sh decides beforehand whether a GPU that should open is there."""
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))
import toolenv  # noqa: E402
from recallfix import make, write  # noqa: E402
from toolenv import report  # noqa: E402

DEVICE = os.environ.get("DEVICE", "cuda")
N = int(os.environ.get("RECALL_N", "20000"))
TMP = toolenv.scratch("cav-cuda-recall-")


def recall(tag, device, args):
    """runs cav-recall with --ranks and --matches into files named after tag; (result, {output: bytes})"""
    files = {"ranks": os.path.join(TMP, tag + "-ranks.csv"), "matches": os.path.join(TMP, tag + "-matches.csv")}
    cmd = [toolenv.tool("cav-recall"), "--dataset", "r", "--ranks", files["ranks"], "--matches", files["matches"]]
    cmd += (["--device", device] if device else []) + args
    r = subprocess.run(cmd, capture_output=True)
    outs = {"csv": r.stdout}
    for k, p in files.items():
        outs[k] = open(p, "rb").read() if os.path.exists(p) else b""
    timing = [ln for ln in r.stderr.decode().splitlines() if "ranked in" in ln]
    print("  %s %s: exit %d, %s" % (tag, device or "host", r.returncode, timing[-1] if timing else "-"))
    return r, outs


def compare(name, args):
    ref, ref_out = recall(name + "-host", None, args)
    if ref.returncode:
        report(name, False, "host path: exit %d: %s" % (ref.returncode, ref.stderr.decode()[-400:]))
        return
    lines = ref_out["matches"].count(b"\n") - 1
    for device in dict.fromkeys(["cpu", DEVICE]):  # DEVICE=cpu: once
        r, out = recall(name + "-" + device, device, args)
        if r.returncode == 1 and b"no CUDA device" in r.stderr:
            print("SKIP %s_%s: %s" % (name, device, r.stderr.decode().strip().splitlines()[-1]))
            continue
        differ = [k for k in ref_out if out[k] != ref_out[k]]
        report("%s_%s_same_as_host" % (name, device.replace(":", "")), r.returncode == 0 and not differ,
               "exit %d, %s differ (%d top-k lines): %s" % (r.returncode, differ, lines, r.stderr.decode()[-400:]))


g = np.random.default_rng(20)
a, v = make(N, 768, g)
p = os.path.join(TMP, "d768.cavs")
write(p, a, v, ["c%06d" % i for i in range(N)])
compare("recall_d768", ["--topk", "5", p])

a, v = make(N, 100, g)
K = 50
lab = np.zeros((N, K), np.float32)
lab[np.arange(N), g.integers(0, K, N)] = 1
lab[::3, 7] = 1  # some clips carry two labels
p = os.path.join(TMP, "d100.cavs")
write(p, a, v, ["c%06d" % i for i in range(N)], labels=lab)
compare("recall_d100_class", ["--block", "777", "--class", "--topk", "3", p])
shutil.rmtree(TMP)  # 120 MB of embeddings and lists
sys.exit(toolenv.status())
