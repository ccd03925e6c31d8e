#!/usr/bin/python3
"""bench_recall.py: cav-recall at N = 8,000, 30,000 and 100,000 clips of D = 768 embeddings (both directions,
every rank exact) against the NumPy baseline in the same run: one float32 matrix product and a count of the
items above each query's own similarity, per row (video) and per column (audio), in row blocks of 2,000 when
the whole N x N matrix would not fit (it is 40 GB at 100,000). The tool's time includes reading the record
stream; its own line "ranked in" is the ranking alone. Memory: peak resident size of each (the tool's from
wait4, NumPy's from the growth of this process's peak). Embeddings: unit vectors with a planted partner
(v = a + noise at cosine ~0.1, so ranks spread over the gallery). BENCH_RECALL_DEVICE=cuda (or cuda:N; what
tests/bench/gpu_session.sh sets) adds a row per N for cav-recall --device on the same stream, and says
whether its CSV is the host path's, byte for byte; where that device does not open, the line says why.
Asserts nothing (not a test); BENCH_RECALL_N="8000 30000" picks the sizes. Results go to
tests/bench/RESULTS.md by hand."""
import os
import re
import resource
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

src = os.environ.get("CAV_SRC", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(src, "tests", "tools"))
import cavstream  # noqa: E402

BIN = os.environ.get("CAV_BIN", os.path.join(src, "build", "bin"))
SIZES = [int(x) for x in os.environ.get("BENCH_RECALL_N", "8000 30000 100000").split()]
DEVICE = os.environ.get("BENCH_RECALL_DEVICE", "")
D = 768
tmp = tempfile.mkdtemp(prefix="bench_recall.")


def embeddings(n, seed):
    g = np.random.default_rng(seed)
    a = g.standard_normal((n, D), dtype=np.float32)
    v = a + np.float32(10) * g.standard_normal((n, D), dtype=np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return a, v


def write_stream(path, a, v):
    """cav-stream(5) frame by frame (cavstream.encode holds all in memory)"""
    with open(path, "wb") as f:
        f.write(cavstream.MAGIC + struct.pack("<II", 1, 0) + cavstream.frame(b"HDR\0", cavstream._attrs({})))
        for i in range(len(a)):
            f.write(cavstream.frame(b"REC\0", cavstream.record_payload("c%06d" % i, {}, [("emb_a", a[i]),
                                                                                        ("emb_v", v[i])]), level=1))
        f.write(b"END\0" + struct.pack("<QQ", 0, len(a)))


def numpy_baseline(a, v, block=2000):
    """ranks of both directions: float32 products, counting what lies above the diagonal"""
    n = len(a)
    da = np.einsum("ij,ij->i", v, a)  # the diagonal
    rv = np.zeros(n, np.int64)
    ra = np.zeros(n, np.int64)
    if n * n * 4 <= 4e9:
        s = v @ a.T
        rv = (s > da[:, None]).sum(1)
        ra = (s > da[None, :]).sum(0)
    else:
        for r0 in range(0, n, block):
            s = v[r0:r0 + block] @ a.T
            rv[r0:r0 + block] = (s > da[r0:r0 + block, None]).sum(1)
            ra += (s > da[None, :]).sum(0)
    return rv, ra


def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


print("bench_recall: %s, %d CPUs, OMP_NUM_THREADS=%s, load %s" % (cpu(), os.cpu_count(),
      os.environ.get("OMP_NUM_THREADS", "-"), " ".join("%.1f" % x for x in os.getloadavg())))
def cav_recall(path, *extra):
    """(wall s, ranking s, CPU s, peak MB, rechecked, stdout, exit status, stderr) of one run"""
    r = subprocess.run(["/usr/bin/time", "-f", "TIME %e %U %S %M", os.path.join(BIN, "cav-recall"), "--dataset",
                        "bench", *extra, path], capture_output=True)
    err = r.stderr.decode()
    t = re.search(r"TIME (\S+) (\S+) (\S+) (\S+)", err)
    wall, ut, st, kb = (float(x) for x in t.groups()) if t else (float("nan"),) * 4
    m = re.search(r"ranked in ([0-9.]+) s on [^(]*\((\d+) entries", err)
    ranking = float(m.group(1)) if m else float("nan")
    return wall, ranking, ut + st, kb / 1024, m.group(2) if m else "?", r.stdout, r.returncode, err


print("| N | path | cav-recall wall s (ranking s) | CPU s | peak MB | NumPy wall s | CPU s | peak MB | ratio NumPy/cav-recall |")
print("|---|---|---|---|---|---|---|---|---|")
device_note = "GPU: not measured (BENCH_RECALL_DEVICE unset)"
for n in SIZES:
    a, v = embeddings(n, n)
    path = os.path.join(tmp, "e%d.cavs" % n)
    write_stream(path, a, v)
    wall, ranking, cpu_tool, rss_tool, rech, out, rc, err = cav_recall(path)
    dev = cav_recall(path, "--device", DEVICE) if DEVICE else None
    os.unlink(path)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    c0, t0 = time.process_time(), time.time()
    numpy_baseline(a, v)
    np_wall, np_cpu = time.time() - t0, time.process_time() - c0
    rss_np = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    numpy_cols = "%.2f | %.2f | %.0f (+%.0f over the data)" % (np_wall, np_cpu, rss_np, rss_np - rss0)
    print("| %d | host | %.2f (%.2f) | %.2f | %.0f | %s | %.2f |" % (
        n, wall, ranking, cpu_tool, rss_tool, numpy_cols, np_wall / wall), flush=True)
    if rc:
        print("cav-recall failed: %s" % err[-500:])
    print("  cav-recall: %s; rechecked in double: %s" % (out.decode().strip().replace("\n", " | "), rech), flush=True)
    if dev and dev[6] == 0:
        print("| %d | --device %s | %.2f (%.2f) | %.2f | %.0f | %s | %.2f |" % (
            n, DEVICE, dev[0], dev[1], dev[2], dev[3], numpy_cols, np_wall / dev[0]), flush=True)
        print("  --device %s: CSV %s the host path's" % (DEVICE, "equal to" if dev[5] == out else "DIFFERENT from"),
              flush=True)
        device_note = "device rows: --device %s, ranked on %s" % (DEVICE, re.search(r"on (\S+) \(", dev[7]).group(1))
    elif dev:
        why = [ln for ln in dev[7].splitlines() if ln.startswith("cav-recall:")]
        device_note = "GPU: not measured: --device %s: exit %d: %s" % (DEVICE, dev[6], why[-1] if why else "?")
        print("  " + device_note, flush=True)
print(device_note)
