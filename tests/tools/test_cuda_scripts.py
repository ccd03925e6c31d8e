"""test_cuda_scripts.py: the logic of make check-cuda's scripts (tests/cuda), cheaply and without a GPU, so that a
mistake in them shows before a GPU is lent: lossparity.py's bound (equal, within, over, NaN, misaligned and short
runs; c_acc ignored) and its bf16 bound (relative to the step's total loss); test_sanitizer.py's verdict on a
stand-in compute-sanitizer that reports 0 errors, then 2; check_cuda.sh's SKIPPED where the build has no CUDA
backend or the machine no GPU, and its FAIL where nvidia-smi sees a GPU that the backend does not open (stand-ins
for test_kernels and nvidia-smi)."""
import math
import os
import subprocess
import sys

import toolenv
from toolenv import report

sys.path.insert(0, os.path.join(toolenv.SRC, "tests", "cuda"))
import lossparity  # noqa: E402

TMP = toolenv.scratch("cav-cuda-scripts-")


def lines(n, scale=None):
    """n step lines with smooth losses; scale(step, key) multiplies one."""
    out = []
    for s in range(1, n + 1):
        r = {"epoch": 1, "step": s, "c_acc": 0.25 + 0.01 * s}
        for i, k in enumerate(lossparity.KEYS):
            r[k] = (2.0 + i) * math.exp(-0.01 * s)
            r[k] *= scale(s, k) if scale else 1.0
        out.append(r)
    return out


ref = lines(50)
cases = [
    ("equal", lines(50), True),
    ("first_step_within", lines(50, lambda s, k: 1 + 1e-4 if s == 1 else 1), True),  # bound 1.1e-4
    ("first_step_over", lines(50, lambda s, k: 1 + 1.3e-4 if s == 1 else 1), False),
    ("last_step_within", lines(50, lambda s, k: 1 + 5.9e-4 if s == 50 else 1), True),  # bound 6e-4
    ("last_step_over", lines(50, lambda s, k: 1 + 6.2e-4 if (s, k) == (50, "loss_c") else 1), False),
    ("nan", lines(50, lambda s, k: math.nan if s == 20 and k == "loss" else 1), False),
    ("short", lines(49), False),
    ("c_acc_ignored", [dict(r, c_acc=0.0) for r in lines(50)], True),
]
for name, got, want in cases:
    ok, worst, where = lossparity.compare(ref, got)
    report("lossparity_" + name, ok == want, "compare said %s (%g: %s)" % (ok, worst, where))
shifted = [dict(r, step=r["step"] + 1) for r in lines(50)]
report("lossparity_misaligned", not lossparity.compare(ref, shifted)[0])
report("lossparity_from_step", lossparity.compare(ref, lines(50, lambda s, k: 2 if s < 5 else 1), first_step=5)[0])

# the bf16 bound (PRECISION=bf16): relative to the step's total loss, 5e-4 * (1 + step / 100)
small_c = lambda s, k: 0.01 if k == "loss_c" else 1  # noqa: E731  (loss_c a small part of the total)
ref200 = lines(200, small_c)
bf16_cases = [
    ("first_step_within", lines(200, lambda s, k: small_c(s, k) * (1 + 5e-4 if (s, k) == (1, "loss") else 1)),
     True),
    ("first_step_over", lines(200, lambda s, k: small_c(s, k) * (1 + 5.2e-4 if s == 1 and k == "loss" else 1)),
     False),
    ("last_step_within", lines(200, lambda s, k: small_c(s, k) * (1 + 1.45e-3 if (s, k) == (200, "loss") else 1)),
     True),
    ("last_step_over", lines(200, lambda s, k: small_c(s, k) * (1 + 1.6e-3 if (s, k) == (200, "loss") else 1)),
     False),
    # loss_c 2% off itself but 1e-4 of the total loss: within (the fp32 bound, relative to itself, refuses it)
    ("small_part_against_total", lines(200, lambda s, k: small_c(s, k) * (1.02 if (s, k) == (100, "loss_c") else 1)),
     True),
    ("nan", lines(200, lambda s, k: math.nan if s == 20 and k == "loss_c" else small_c(s, k)), False),
]
for name, got, want in bf16_cases:
    ok, worst, where = lossparity.compare(ref200, got, bf16=True)
    report("lossparity_bf16_" + name, ok == want, "compare said %s (%g: %s)" % (ok, worst, where))
report("lossparity_fp32_refuses_small_part", not lossparity.compare(ref200, bf16_cases[4][1])[0])

# test_sanitizer.py against a stand-in: it drops the sanitizer's options, runs the tool, prints the summary.
fake = os.path.join(TMP, "compute-sanitizer")
with open(fake, "w") as f:
    f.write('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift 2; done\n"$@"; rc=$?\n'
            'echo "========= ERROR SUMMARY: $FAKE_ERRORS errors"\n[ "$FAKE_ERRORS" = 0 ] && exit $rc || exit 97\n')
os.chmod(fake, 0o755)
script = os.path.join(toolenv.SRC, "tests", "cuda", "test_sanitizer.py")
for errors, want in (("0", "PASS"), ("2", "FAIL")):
    env = dict(os.environ, DEVICE="cpu", COMPUTE_SANITIZER=fake, FAKE_ERRORS=errors)
    r = subprocess.run([sys.executable, script], capture_output=True, text=True, env=env)
    verdicts = [ln.split()[0] for ln in r.stdout.splitlines() if ln.startswith(("PASS ", "FAIL ", "SKIP "))]
    good = len(verdicts) == 4 and set(verdicts) == {want} and (r.returncode == 0) == (want == "PASS")
    report("sanitizer_verdict_%s_errors" % errors, good, "exit %d, %s: %s" % (r.returncode, verdicts,
                                                                           r.stderr[-400:]))

# check_cuda.sh's decisions, with stand-ins for test_kernels and nvidia-smi.
kernels = os.path.join(TMP, "test_kernels")
with open(kernels, "w") as f:
    f.write('#!/bin/sh\necho "SKIP backend_cuda: --device cuda: no CUDA device: stand-in"\n')
os.chmod(kernels, 0o755)
bindir = os.path.join(TMP, "bin")
os.mkdir(bindir)
with open(os.path.join(bindir, "nvidia-smi"), "w") as f:
    f.write('#!/bin/sh\necho "GPU 0: stand-in (UUID: GPU-0)"\n')
os.chmod(os.path.join(bindir, "nvidia-smi"), 0o755)
driver = os.path.join(toolenv.SRC, "tests", "cuda", "check_cuda.sh")
nogpu_path = ":".join(p for p in os.environ["PATH"].split(":") if not os.path.exists(os.path.join(p, "nvidia-smi")))
for name, built, path, rc, last in (
        ("check_cuda_skipped_without_cuda_build", "0", nogpu_path, 0, "SKIPPED check-cuda: this build has no CUDA"),
        ("check_cuda_skipped_without_gpu", "1", nogpu_path, 0, "SKIPPED check-cuda: --device cuda: no CUDA device"),
        ("check_cuda_fails_gpu_not_opened", "1", bindir + ":" + nogpu_path, 1, "FAIL check-cuda: a GPU is present")):
    env = dict(os.environ, DEVICE="cuda", CAV_HAVE_CUDA_BUILD=built, PATH=path, CAV_TEST_LOGS=TMP)
    r = subprocess.run(["bash", driver, kernels], capture_output=True, text=True, env=env, cwd=toolenv.SRC)
    out = r.stdout.strip().splitlines()
    skips = sum(ln.startswith("SKIP ") for ln in out)
    good = r.returncode == rc and out and out[-1].startswith(last) and (rc or skips == 6)  # 6 stages
    report(name, good, "exit %d: %s" % (r.returncode, (r.stdout + r.stderr)[-400:]))

sys.exit(toolenv.status())
