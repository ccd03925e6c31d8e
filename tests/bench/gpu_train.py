"""gpu_train.py: the python side of bench_gpu_train.sh (read its header for what is measured and the environment it
takes; not named bench_*, which make bench runs by themselves). Runs each implementation's training step as its own
process, one at a time on one device: the C model (tests/bench/train_step.c, CAV_ATTENTION=plain and =fused in
fp32, and CAV_BENCH_PRECISION=bf16, whose attention is its own whatever CAV_ATTENTION says) and the independent PyTorch model (tests/bench/train_step_torch.py,
CAV_BENCH_PRECISION=fp32, bf16, fp16), for pretraining and fine-tuning, at batch B and at the largest batch that
fits (doubling from B, then bisecting, each probe one step). Peak memory of a run: on a GPU the most nvidia-smi saw
in use on the device during the run less what was in use before it (the process's whole footprint: CUDA context,
allocator caches); on the CPU the process's resident peak. MFU = samples/s x train_step.c's FLOP count per sample /
the GPU's dense bf16 peak. Prints the table, the per-phase split (forward, backward, optimizer) and a block for
tests/bench/RESULTS.md."""
import datetime
import os
import subprocess
import sys
import threading
import time

E = os.environ
SRC = E.get("CAV_SRC", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BENCH = E.get("CAV_BENCH_BIN", os.path.join(SRC, "build", "bench"))
PY = E.get("PYTHON", "/usr/bin/python3")
DEVICE = E.get("DEVICE", "cuda")
GPU = DEVICE.split(":")[1] if DEVICE.startswith("cuda:") else "0"
DRY = DEVICE == "cpu"
CONFIG = E.get("CONFIG", "tiny" if DRY else "base")
B0 = int(E.get("B", "2" if DRY else "48"))
STEPS = int(E.get("STEPS", "1" if DRY else "10"))
MAXB = E.get("MAXB", "search")  # search | off | a batch size to measure as the large one
MAXB_LIMIT = int(E.get("MAXB_LIMIT", "8" if DRY else "4096"))
MEM_LIMIT_MIB = float(E.get("MEM_LIMIT_MIB", "0"))  # > 0: a probe whose peak passes it counts as not fitting
RUN_TIMEOUT = float(E.get("RUN_TIMEOUT", "300"))
BUDGET_S = float(E.get("BUDGET_S", "0"))  # > 0: no run starts after this many seconds
TASKS = E.get("TASKS", "pretrain finetune").split()
IMPLS = E.get("IMPLS", "c-plain c-fused c-fused-bf16 torch-fp32 torch-bf16 torch-fp16").split()
PEAK_TFLOPS = E.get("PEAK_TFLOPS")  # overrides the table below

# Dense bf16 peaks (TFLOPS, no sparsity) by nvidia-smi's name: (words that must all be in it, words that must
# not, peak). H100 SXM is "NVIDIA H100 80GB HBM3"; H100 NVL and H200 NVL have lower peaks not listed: "n/a".
BF16_PEAKS = [(("H100", "PCIe"), (), 756.0), (("H100", "HBM3"), ("NVL",), 989.4), (("H100", "SXM"), ("NVL",), 989.4),
              (("H200",), ("NVL",), 989.4), (("A100",), (), 312.0)]

LABELS = {"c-plain": "C fp32, plain attention", "c-fused": "C fp32, fused attention",
          "c-fused-bf16": "C bf16, fused attention", "torch-fp32": "PyTorch fp32",
          "torch-bf16": "PyTorch autocast bf16", "torch-fp16": "PyTorch fp16 AMP"}
BASELINES = ("torch-bf16", "torch-fp16", "torch-fp32")
T_START = time.monotonic()


def sh(cmd):
    """stdout of a shell command, "" when it fails"""
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


def gpu_mem_used():
    """MiB in use on the benchmark's GPU now"""
    return float(sh(f"nvidia-smi -i {GPU} --query-gpu=memory.used --format=csv,noheader,nounits") or "nan")


class GpuPeak:
    """The most memory nvidia-smi reports in use on the GPU while it runs (sampled every 50 ms)."""

    def __enter__(self):
        self.peak = float("nan")
        self.p = subprocess.Popen(["nvidia-smi", "-i", GPU, "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                                   "-lms", "50"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.t = threading.Thread(target=self._read)
        self.t.start()
        return self

    def _read(self):
        for line in self.p.stdout:
            try:
                v = float(line)
            except ValueError:
                continue
            self.peak = v if self.peak != self.peak else max(self.peak, v)

    def __exit__(self, *exc):
        time.sleep(0.1)  # one more sample after the run's last step
        self.p.terminate()
        self.p.wait()
        self.t.join()


def command(impl, task, batch, steps):
    """argv and environment of one run"""
    env = dict(E, CAV_BENCH_DEVICE=DEVICE)
    if impl.startswith("c-"):  # c-ATTENTION[-bf16]: the attention path, and --precision bf16's Linears
        env["CAV_ATTENTION"] = impl.split("-")[1]
        env["CAV_BENCH_PRECISION"] = "bf16" if impl.endswith("-bf16") else "fp32"
        return [os.path.join(BENCH, "train_step"), "step" if task == "pretrain" else "ft", CONFIG, str(batch),
                str(steps)], env
    env["CAV_BENCH_PRECISION"] = impl[6:]
    argv = [PY, os.path.join(SRC, "tests", "bench", "train_step_torch.py"), CONFIG, str(batch), str(steps)]
    return argv + (["ft"] if task == "finetune" else []), env


def run(impl, task, batch, steps):
    """One run: a dict of its "key value" lines, with rc, oom (did not fit), why, wall_s and mem_mib."""
    argv, env = command(impl, task, batch, steps)
    t0 = time.monotonic()
    base = None if DRY else gpu_mem_used()
    out = {}
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    readers = [threading.Thread(target=lambda k, f: out.__setitem__(k, f.read()), args=(k, f))
               for k, f in (("stdout", p.stdout), ("stderr", p.stderr))]
    for t in readers:
        t.start()
    timer = threading.Timer(RUN_TIMEOUT, p.kill)
    timer.start()
    if DRY:
        _, status, ru = os.wait4(p.pid, 0)
        mem = ru.ru_maxrss / 1024  # KiB on Linux
    else:
        with GpuPeak() as g:
            _, status, ru = os.wait4(p.pid, 0)
        mem = g.peak - base
    p.returncode = os.waitstatus_to_exitcode(status)  # reaped here (wait4 for the rusage): Popen must not wait
    timer.cancel()
    for t in readers:
        t.join()
    r = {"rc": p.returncode, "wall_s": time.monotonic() - t0, "mem_mib": mem}
    for line in out["stdout"].splitlines():
        k, _, v = line.partition(" ")
        try:
            r[k] = float(v)
        except ValueError:
            r[k] = v
    err = out["stderr"].strip().splitlines()
    r["why"] = err[-1] if err else ""
    r["oom"] = p.returncode == 3 and any(s in out["stderr"] for s in ("out of memory", "ALLOC_FAILED"))
    if p.returncode == -9:
        r["why"] = f"killed after RUN_TIMEOUT={RUN_TIMEOUT:g}s"
    if p.returncode == 0 and MEM_LIMIT_MIB > 0 and mem > MEM_LIMIT_MIB:
        r["oom"], r["why"] = True, f"peak {mem:.0f} MiB over MEM_LIMIT_MIB={MEM_LIMIT_MIB:g}"
    state = "ok" if p.returncode == 0 and not r["oom"] else ("does not fit" if r["oom"] else f"rc {p.returncode}")
    print(f"  {impl:10s} {task:8s} B {batch:4d} x {steps:2d} steps: {state}, "
          f"{r.get('samples_per_s', float('nan')):.3f} samples/s, peak {mem:.0f} MiB, {r['wall_s']:.1f}s"
          + (f" ({r['why']})" if state != "ok" else ""), flush=True)
    return r


def spent():
    """why nothing more may start (BUDGET_S spent), or None"""
    if BUDGET_S > 0 and time.monotonic() - T_START > BUDGET_S:
        return f"not measured: BUDGET_S={BUDGET_S:g} spent"
    return None


def measure(impl, task, batch):
    """the timed run at a batch: STEPS steps at batch B, about as many samples at a larger one (at least 3 steps,
    or STEPS when fewer)"""
    if spent():
        print(f"  {impl:10s} {task:8s} B {batch:4d}: {spent()}")
        return {"rc": None, "why": spent()}
    return run(impl, task, batch, max(min(3, STEPS), round(STEPS * B0 / batch)) if batch > B0 else STEPS)


def round8(b):
    """a batch over 8 rounded down to a multiple of 8"""
    return b - b % 8 if b > 8 else b


def largest_batch(impl, task):
    """The largest batch (to within 1/8, multiples of 8 when over 8) whose step runs: doubling from B, then
    bisecting, one-step probes; (batch, None) or (None, why)."""
    lo, hi = None, None
    b = B0
    while b <= MAXB_LIMIT:
        if spent():
            return None, spent()
        r = run(impl, task, b, 1)
        if r["rc"] == 0 and not r["oom"]:
            lo = b
        elif r["oom"]:
            hi = b
            break
        else:
            return None, f"B {b}: rc {r['rc']} {r['why']}"
        b *= 2
    if lo is None:
        return None, f"B {B0} does not fit"
    if hi is None:
        return lo, None  # MAXB_LIMIT reached: the largest tried
    while hi - lo > max(1, lo // 8):
        mid = round8((lo + hi) // 2)
        if mid <= lo or spent():
            break  # the largest found so far
        r = run(impl, task, mid, 1)
        if r["rc"] == 0 and not r["oom"]:
            lo = mid
        elif r["oom"]:
            hi = mid
        else:
            return None, f"B {mid}: rc {r['rc']} {r['why']}"
    return lo, None


def peak_tflops(name):
    if PEAK_TFLOPS:
        return float(PEAK_TFLOPS)
    for need, avoid, peak in BF16_PEAKS:
        if all(w in name for w in need) and not any(w in name for w in avoid):
            return peak
    return None


def fmt(x, f):
    return "n/a" if x is None or x != x else f % x


def main():
    if DRY:
        name = "CPU: " + (sh("sed -n 's/^model name\\s*: //p' /proc/cpuinfo | head -1") or "unknown")
        mem_total = float("nan")
        note = "DRY RUN on the CPU (DEVICE=cpu): checks the script's logic; not GPU figures, not for RESULTS.md"
    else:
        q = sh(f"nvidia-smi -i {GPU} --query-gpu=name,driver_version,memory.total --format=csv,noheader,nounits")
        if not q:
            sys.exit("bench_gpu_train: nvidia-smi sees no GPU %s" % GPU)
        name, driver, mem_total = [s.strip() for s in q.split(",")]
        mem_total = float(mem_total)
        note = f"driver {driver}, {mem_total:.0f} MiB"
    peak = None if DRY else peak_tflops(name)
    torch_v = sh(f"{PY} -c 'import torch; print(torch.__version__, \"cuda\", torch.version.cuda)'")
    commit = sh(f"git -C {SRC} describe --tags --always --dirty") or "?"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"bench_gpu_train: {name} ({note}); torch {torch_v}; {commit}; {date}")
    print(f"config {CONFIG}, batch {B0} and the largest that fits (MAXB={MAXB}), {STEPS} timed steps after one "
          f"warm-up (at a larger batch as many samples, 3 steps at least); dense bf16 peak {fmt(peak, '%.1f')} "
          "TFLOPS" + ("" if peak or DRY else " (GPU not in the table)"))
    if DRY:
        print("(the CPU backend has one attention path: c-plain and c-fused run the same code here)")
    impls = [i for i in IMPLS if not (DRY and i == "torch-fp16")]
    if DRY and "torch-fp16" in IMPLS:
        print("(torch-fp16, the reference's fp16 AMP, needs a GPU: skipped on the CPU)")

    gflop = {}
    for task in TASKS:
        argv, env = command("c-plain", task, 1, 0)
        r = subprocess.run(argv, env=dict(env, CAV_BENCH_DEVICE="cpu"), capture_output=True, text=True)
        gflop[task] = float(r.stdout.split("gflop_per_sample ")[1].split()[0])
        print(f"{task}: {gflop[task]:.2f} GFLOP per sample (train_step.c's count, 3x the forward's products)")

    rows = []  # (task, impl, kind, batch, result)
    print("\n== batch %d" % B0)
    for task in TASKS:
        for impl in impls:
            rows.append((task, impl, "B", B0, measure(impl, task, B0)))
    if MAXB != "off":
        print("\n== the largest batch that fits" + (f" (MAXB={MAXB})" if MAXB != "search" else ""))
        for task in TASKS:
            for impl in impls:
                if MAXB != "search":
                    b, why = int(MAXB), None
                else:
                    b, why = largest_batch(impl, task)
                if b is None:
                    print(f"  {impl:10s} {task:8s} largest batch: {why}")
                    rows.append((task, impl, "max", None, {"rc": None, "why": why}))
                    continue
                r = measure(impl, task, b)
                for _ in range(2):  # a one-step probe fitted; more steps may not (allocator growth): step down
                    if not r.get("oom") or b <= B0:
                        break
                    b = max(B0, round8(b - max(1, b // 8)))
                    r = measure(impl, task, b)
                rows.append((task, impl, "max", b, r))

    rows.sort(key=lambda row: (TASKS.index(row[0]), row[2] == "max"))  # stable: implementations stay in order

    def sps(r):
        return r.get("samples_per_s") if r.get("rc") == 0 and not r.get("oom") else None

    def ratio(r, task, kind, base):
        for t, i, k, _, rb in rows:
            if (t, i, k) == (task, base, kind) and sps(rb) and sps(r):
                return sps(r) / sps(rb)
        return None

    head = ["task", "implementation", "batch", "samples/s", "TFLOP/s", "MFU", "peak MiB", "torch MiB",
            "x bf16", "x fp16 AMP", "x fp32"]
    table, notes = [], []
    for task, impl, kind, b, r in rows:
        s = sps(r)
        tf = s * gflop[task] / 1e3 if s else None
        mfu = fmt(100 * tf / peak if tf and peak else None, "%.1f%%")
        if s is None:  # why, under the table
            notes.append(r.get("why") or f"rc {r.get('rc')}")
            cells = [task, LABELS[impl], str(b) if b else "-", f"see ({len(notes)})"] + [""] * 7
        else:
            cells = [task, LABELS[impl], str(b), "%.2f" % s, fmt(tf, "%.2f"), mfu, fmt(r["mem_mib"], "%.0f"),
                     fmt(r.get("peak_mib") if impl.startswith("torch") and not DRY else None, "%.0f")]
            cells += [fmt(ratio(r, task, kind, base) if impl != base else None, "%.2fx") for base in BASELINES]
        table.append(cells)
    print("\n== results (peak MiB: " + ("the process's resident peak" if DRY else
                                        "device memory in use at the run's peak less before it") +
          "; torch MiB: torch.cuda.max_memory_allocated on a GPU; x NAME: samples/s over PyTorch NAME's at the same "
          "batch kind)")
    w = [max(len(c[i]) for c in table + [head]) for i in range(len(head))]
    for c in [head] + table:
        print("  ".join(x.ljust(w[i]) if i < 2 else x.rjust(w[i]) for i, x in enumerate(c)))
    for i, n in enumerate(notes):
        print(f"({i + 1}) {n}")

    print("\n== where the step's time goes (batch %d: forward, backward, optimizer as %% of the step)" % B0)
    for task, impl, kind, b, r in rows:
        if kind == "B" and sps(r):
            st = r["step_s"]
            print(f"  {task:8s} {LABELS[impl]:26s} step {st * 1e3:9.1f} ms: forward {100 * r['forward_s'] / st:5.1f}%"
                  f"  backward {100 * r['backward_s'] / st:5.1f}%  optimizer {100 * r['adam_s'] / st:5.1f}%")

    print("\n== for tests/bench/RESULTS.md" + (" (DRY RUN: do not paste)" if DRY else ""))
    print(f"### Training step on the GPU: {name}, {date[:10]} (tests/bench/bench_gpu_train.sh)\n")
    print(f"{note}; torch {torch_v}; {commit}; config {CONFIG}, {STEPS} timed steps at batch {B0} after one "
          "warm-up (as many samples at the largest). MFU against "
          f"the dense bf16 peak ({fmt(peak, '%.1f')} TFLOPS) with train_step.c's count: "
          + ", ".join(f"{t} {gflop[t]:.1f} GFLOP per sample" for t in TASKS)
          + ". The C model runs fp32 but for its bf16 row (--precision bf16: the Linears on bf16 operands, "
          "attention fp32); "
          "x NAME = samples/s over PyTorch NAME's at the same batch kind.\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|")
    for c in table:
        print("| " + " | ".join(c) + " |")
    if notes:
        print()
    for i, n in enumerate(notes):
        print(f"({i + 1}) {n}" + ("  " if i + 1 < len(notes) else ""))  # markdown's line break
    return 0


if __name__ == "__main__":
    sys.exit(main())
