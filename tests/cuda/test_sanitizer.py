"""test_sanitizer.py (make check-cuda): NVIDIA's compute-sanitizer on short runs of the micro model on $DEVICE
(default cuda): memcheck (out-of-bounds and misaligned device accesses, failed CUDA calls) over an epoch of
4 steps of cav-pretrain, 2 steps of cav-finetune and a cav-embed pass, which between them run every kernel of
the backend; racecheck (shared-memory hazards: the block reductions of LayerNorm, softmax and the losses) over 1 step of
cav-pretrain. A run passes when it exits 0 and the sanitizer reports "ERROR SUMMARY: 0 errors". SKIP where
compute-sanitizer is not installed ($COMPUTE_SANITIZER, $CUDA_HOME/bin, /usr/local/cuda/bin or PATH).
DEVICE=cpu runs the same commands on the CPU without the sanitizer, or under $COMPUTE_SANITIZER when set (a
stand-in that prints the sanitizer's summary: the script's own check where no GPU is at hand)."""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))
import ftfixture  # noqa: E402
import toolenv  # noqa: E402
from toolenv import report  # noqa: E402

DEVICE = os.environ.get("DEVICE", "cuda")
TMP = toolenv.scratch("cav-cuda-sanitizer-")


def sanitizer():
    if os.environ.get("COMPUTE_SANITIZER"):
        return os.environ["COMPUTE_SANITIZER"]
    for d in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if d and os.access(os.path.join(d, "bin", "compute-sanitizer"), os.X_OK):
            return os.path.join(d, "bin", "compute-sanitizer")
    return shutil.which("compute-sanitizer")


SAN = sanitizer()
shard = os.path.join(TMP, "train.h5")
ftfixture.make_shard(shard, 16, seed=5, k=3)
common = ["--device", DEVICE, "--seed", "3", "-b", "4", "--loader-threads", "1", "-e", "1"]  # 4 steps
runs = [
    ("memcheck_pretrain", "memcheck", ["cav-pretrain", "-o", os.path.join(TMP, "pre")] + common +
     ["--contrast-groups", "2"] + toolenv.MICRO + [shard]),
    ("memcheck_finetune", "memcheck", ["cav-finetune", "-o", os.path.join(TMP, "ft"), "--max-steps", "2"] +
     common + ftfixture.micro(3) + [shard]),
    ("memcheck_embed", "memcheck", ["cav-embed", "--device", DEVICE, "--model",
                                    os.path.join(TMP, "pre", "models", "audio_model.1.safetensors"),
                                    "-o", os.path.join(TMP, "emb.cavs"), shard]),
    ("racecheck_pretrain_step", "racecheck", ["cav-pretrain", "-o", os.path.join(TMP, "race"), "--max-steps",
                                              "1"] + common + ["--contrast-groups", "1"] + toolenv.MICRO + [shard]),
]
for name, tool, cmd in runs:
    cmd = [toolenv.tool(cmd[0])] + cmd[1:]
    if DEVICE == "cpu" and not os.environ.get("COMPUTE_SANITIZER"):
        r = subprocess.run(cmd, capture_output=True, text=True)
        report(name, r.returncode == 0, "exit %d: %s" % (r.returncode, r.stderr[-600:]))
        continue
    if not SAN:
        print("SKIP %s: compute-sanitizer not found (CUDA_HOME/bin, /usr/local/cuda/bin, PATH)" % name)
        continue
    # --error-exitcode: a finding fails the run even where the tool itself would have exited 0
    r = subprocess.run([SAN, "--tool", tool, "--error-exitcode", "97", "--print-limit", "20"] + cmd,
                       capture_output=True, text=True)
    out = r.stdout + r.stderr
    clean = r.returncode == 0 and "ERROR SUMMARY: 0 errors" in out
    print("  %s: %s" % (name, next((l for l in out.splitlines() if "ERROR SUMMARY" in l), "no summary")))
    report(name, clean, "exit %d: %s" % (r.returncode, out[-1500:].replace("\n", " | ")))

shutil.rmtree(TMP, ignore_errors=True)
sys.exit(toolenv.status())
