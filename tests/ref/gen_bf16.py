#!/usr/bin/python3
"""gen_bf16.py OUTDIR: golden bfloat16 results from Debian's python3-torch (CPU), for kernels/cuda/bf16.h's
rounding and its emulated bf16 linear (tests/unit/test_bf16.c). All files are raw little-endian.

  round_in.u32, round_out.u16   float32 bit patterns and torch's x.to(torch.bfloat16) of them: ties to even
      and to odd (the low 16 bits 0x8000 under an even and an odd bf16), one bit either side of a tie,
      subnormals (ties among them too), the largest float and the values that round up to infinity, +-0,
      +-inf, NaNs of several payloads and signs, and random bit patterns over the whole range.
  widen_out.u32                 torch's bfloat16 -> float32 of all 65536 bf16 bit patterns in order.
  linear_M_K_N_{x,w,b}.f32      random float32 inputs x[M,K], weight w[N,K], bias b[N] (Gaussian, of a few
      scales) and
  linear_M_K_N_bf16.u16         F.linear(x.bf16, w.bf16, b.bf16): CPU torch's bf16 linear (fp32
      accumulation, the output rounded to bf16), and
  linear_M_K_N_f32.f32          F.linear on the bf16-rounded inputs widened to float32: the fp32 matmul of
      the same values.
  The backward of each linear case, for the seam's bf16 Linear (kernels.h linear_backward_bf16):
  linear_M_K_N_dy.f32           a random output gradient dy[M,N], and
  linear_M_K_N_d{x,w,b}.f64     the seam's contract computed in float64 (exact products and sums of the
      bf16-rounded operands): dx = bf16(dy) @ bf16(w), dw = bf16(dy)^T @ bf16(x), db = the column sum of the
      fp32 dy;
  linear_M_K_N_d{x,w}_bf16.u16  torch's own: autograd through F.linear under torch.autocast('cpu', bfloat16)
      on fp32 leaves (master weights), backward from dy in bf16: each gradient a bf16 matmul (fp32
      accumulation, rounded to bf16) of the same operands.
  index.txt                     "round COUNT", then one "linear M K N" per linear case.
"""
import os
import sys

os.environ["ATEN_CPU_CAPABILITY"] = "avx2"

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(1)
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(20261207)
index = []


def save(name, a, dtype):
    np.ascontiguousarray(a, dtype=dtype).tofile(os.path.join(out, name))


def to_bf16_bits(x32):
    """float32 array -> torch's bfloat16 bit patterns (uint16)"""
    return torch.from_numpy(x32).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


# --- float32 -> bfloat16
bits = []
for hi in (0x0001, 0x0002, 0x3F80, 0x3F81, 0x4049, 0x7F7E, 0x7F7F, 0x0080, 0x0081, 0x007F, 0x0000):
    for lo in (0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF):
        for sign in (0, 0x80000000):
            bits.append(sign | hi << 16 | lo)
bits += [0x7F800000, 0xFF800000,  # +-inf
         0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FA00000, 0x7F80FFFF,
         0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F8000, 0x7F7F7FFF,  # the largest floats: to inf, or not
         0x00000001, 0x80000001, 0x00008000, 0x00018000, 0x00007FFF]  # the smallest subnormals
bits += list(rng.integers(0, 2**32, 20000, dtype=np.uint64))
bits += list(rng.integers(0, 2**16, 2000, dtype=np.uint64) << 16 | 0x8000)  # ties across the range
b = np.array(bits, dtype=np.uint64).astype(np.uint32)
x = b.view(np.float32)
y = to_bf16_bits(x)
# every element converts alone as in a batch (the vectorised and the scalar paths agree)
for i in range(0, b.size, 997):
    assert to_bf16_bits(x[i:i + 1])[0] == y[i], hex(b[i])
save("round_in.u32", b, "<u4")
save("round_out.u16", y, "<u2")
index.append(f"round {b.size}")

# --- bfloat16 -> float32, every pattern
allb = np.arange(65536, dtype=np.uint32).astype(np.uint16)
w = torch.from_numpy(allb.view(np.int16)).view(torch.bfloat16).to(torch.float32).numpy().view(np.uint32)
save("widen_out.u32", w, "<u4")

# --- the linear: the models' widths (192 tiny, 768 base, 3072 the base MLP's hidden)
for (M, K, N, scale) in ((37, 192, 64, 1.0), (64, 768, 96, 0.5), (16, 3072, 48, 0.05), (5, 7, 3, 100.0)):
    xs = (rng.standard_normal((M, K)) * scale).astype(np.float32)
    ws = (rng.standard_normal((N, K)) / np.sqrt(K)).astype(np.float32)
    bs = (rng.standard_normal(N) * 0.1).astype(np.float32)
    tx, tw, tb = (torch.from_numpy(a) for a in (xs, ws, bs))
    yb = F.linear(tx.bfloat16(), tw.bfloat16(), tb.bfloat16())
    assert yb.dtype == torch.bfloat16
    yf = F.linear(tx.bfloat16().float(), tw.bfloat16().float(), tb.bfloat16().float())
    name = f"linear_{M}_{K}_{N}"
    save(name + "_x.f32", xs, "<f4")
    save(name + "_w.f32", ws, "<f4")
    save(name + "_b.f32", bs, "<f4")
    save(name + "_bf16.u16", yb.view(torch.int16).numpy().view(np.uint16), "<u2")
    save(name + "_f32.f32", yf.numpy(), "<f4")
    # the backward: the contract in float64, and torch.autocast's autograd on fp32 master weights
    dys = (rng.standard_normal((M, N)) * 0.1).astype(np.float32)
    tdy = torch.from_numpy(dys)
    x64, w64, dy64 = (t.bfloat16().double() for t in (tx, tw, tdy))
    save(name + "_dy.f32", dys, "<f4")
    save(name + "_dx.f64", (dy64 @ w64).numpy(), "<f8")
    save(name + "_dw.f64", (dy64.T @ x64).numpy(), "<f8")
    save(name + "_db.f64", tdy.double().sum(0).numpy(), "<f8")
    lx, lw, lb = (t.clone().requires_grad_() for t in (tx, tw, tb))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya = F.linear(lx, lw, lb)
    assert ya.dtype == torch.bfloat16
    ya.backward(tdy.bfloat16())
    for g, nm in ((lx.grad, "dx"), (lw.grad, "dw")):
        assert g.dtype == torch.float32 and torch.equal(g.bfloat16().float(), g)  # bf16 values, widened
        save(name + "_" + nm + "_bf16.u16", g.bfloat16().view(torch.int16).numpy().view(np.uint16), "<u2")
    index.append(f"linear {M} {K} {N}")

with open(os.path.join(out, "index.txt"), "w") as f:
    f.write("\n".join(index) + "\n")
print(f"gen_bf16: {b.size} roundings, 65536 widenings, {len(index) - 1} linears")
