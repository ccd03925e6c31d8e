"""test_profile.py: CAV_PROFILE, the per-op profile of a run (kernels/profile.c), as a user reads it: off, a
tool prints nothing of it; CAV_PROFILE=1 appends the table to standard error, every line under the tool's name;
CAV_PROFILE=FILE writes it there. The table's counts follow the run (the model's ops are called the same number
of times each step, so 4 steps call them twice as often as 2), its shares
sum to 100%, its ops' time fits inside the wall time, Adam takes one call for each run of neighbouring parameters
(not one a tensor); and a profiled run trains to the same bytes as a plain one (the profile times the ops, it
changes none)."""
import os
import re
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toolenv  # noqa: E402
from toolenv import BIN, MICRO, report  # noqa: E402
import cavstream  # noqa: E402

TMP = toolenv.scratch("cav-profile-test-")
train = os.path.join(TMP, "train.h5")
g = np.random.default_rng(3)
recs = [("c%02d" % r, {}, [("fbank", (g.standard_normal((64, 128)) * 3 - 5).astype(np.float32)),
                           ("frames", g.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8))]) for r in range(16)]
with open(os.path.join(TMP, "s.cavs"), "wb") as f:
    f.write(cavstream.encode(recs))
subprocess.run([BIN + "/shard-pack", "-o", train, os.path.join(TMP, "s.cavs")], check=True, capture_output=True)


def pretrain(out, steps, profile=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("CAV_PROFILE", None)
    if profile is not None:
        env["CAV_PROFILE"] = profile
    cmd = [BIN + "/cav-pretrain", "-o", os.path.join(TMP, out), "--seed", "5", "-b", "4", "--contrast-groups", "1",
           "-e", "1", "--max-steps", str(steps), "--device", "cpu", train] + MICRO
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


ROW = re.compile(r"^(\w+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)%\s+([\d.]+)$")


def table(text):
    """op -> (calls, seconds, share) and the two totals, from a report (without the tool's prefix)."""
    ops, total, wall = {}, None, None
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            ops[m.group(1)] = (int(m.group(2)), float(m.group(3)), float(m.group(4)))
        elif line.startswith("all ops"):
            total = float(line.split()[2])
        elif line.startswith("wall since opened"):
            wall = float(line.split()[3])
    return ops, total, wall


plain = pretrain("plain", 4)
r2 = pretrain("p2", 2, os.path.join(TMP, "p2.txt"))
r4 = pretrain("p4", 4, os.path.join(TMP, "p4.txt"))
r1 = pretrain("stderr", 2, "1")


@toolenv.test
def off_prints_nothing():
    assert plain.returncode == 0, plain.stderr[-500:]
    assert "profile" not in plain.stderr and "linear_forward" not in plain.stderr, plain.stderr[-500:]


@toolenv.test
def file_table_counts_and_shares():
    assert r2.returncode == 0 and r4.returncode == 0, (r2.stderr + r4.stderr)[-500:]
    assert "linear_forward" not in r2.stderr, "a profile to a file also went to standard error"
    t2, t4 = (table(open(os.path.join(TMP, p)).read()) for p in ("p2.txt", "p4.txt"))
    ops2, ops4 = t2[0], t4[0]
    for op in ("linear_forward", "linear_backward", "attention_forward", "attention_backward",
               "layernorm_forward", "layernorm_backward", "adam_step", "masked_mse_forward", "contrastive_forward"):
        assert op in ops2 and op in ops4, "%s missing from the table: %s" % (op, sorted(ops2))
        c2, c4 = ops2[op][0], ops4[op][0]
        assert c2 > 0 and c4 == 2 * c2, "%s: %d calls in 2 steps, %d in 4" % (op, c2, c4)
    for ops, total, wall in (t2, t4):
        shares = sum(s for _, _, s in ops.values())
        assert abs(shares - 100) < 0.1 * len(ops), "shares sum to %.2f%%" % shares
        assert abs(sum(s for _, s, _ in ops.values()) - total) < 1e-3 * len(ops), "the ops do not sum to all ops"
        assert 0 < total <= wall, "all ops %.4f s, wall %.4f s" % (total, wall)


@toolenv.test
def adam_one_call_a_span():
    """The optimiser updates each run of neighbouring parameters with one call (one kernel on a GPU), not one a
    tensor: far fewer calls a step than the model has tensors."""
    calls = table(open(os.path.join(TMP, "p2.txt")).read())[0]["adam_step"][0] // 2
    tensors = len(toolenv.safetensors_f32(os.path.join(toolenv.last_checkpoint(os.path.join(TMP, "p2")),
                                                       "model.safetensors")))
    assert 0 < calls * 3 <= tensors, "%d Adam calls a step for %d tensors" % (calls, tensors)


@toolenv.test
def stderr_lines_carry_the_tool_name():
    assert r1.returncode == 0, r1.stderr[-500:]
    mine = [l[len("cav-pretrain: "):] for l in r1.stderr.splitlines() if l.startswith("cav-pretrain: ")]
    other = [l for l in r1.stderr.splitlines() if l and not l.startswith("cav-pretrain: ")]
    assert not other, "lines without the tool's name: %s" % other[:3]
    ops, total, wall = table("\n".join(mine))
    assert ops.get("linear_forward", (0,))[0] > 0 and total and wall, "no table on standard error"


@toolenv.test
def every_op_timed():
    """Every entry of the seam (kernels/kernels.h) but the host-side sizes and the wait itself has its timed
    copy in kernels/profile.c (an op added to the table without one would run untimed)."""
    h = open(os.path.join(toolenv.SRC, "kernels", "kernels.h")).read()
    body = h[h.index("struct cav_backend {"):h.index("};", h.index("struct cav_backend {"))]
    ops = set(re.findall(r"\(\*(\w+)\)\(", body)) - {"attention_state_size", "attention_workspace",
                                                       "attention_bf16_state_size", "attention_bf16_workspace",
                                                       "contrastive_workspace", "sync"}
    prof = open(os.path.join(toolenv.SRC, "kernels", "profile.c")).read()
    missing = sorted(op for op in ops
                     if "SET(%s)" % op not in prof or not re.search(r"TIME_[VR]\((\w+ ?\*?, )?%s," % op, prof))
    assert len(ops) > 50 and not missing, "%d ops, not timed: %s" % (len(ops), missing)


@toolenv.test
def profiled_run_same_bytes():
    d = toolenv.same_checkpoints(os.path.join(TMP, "plain"), os.path.join(TMP, "p4"))
    assert not d, d


sys.exit(toolenv.status())
