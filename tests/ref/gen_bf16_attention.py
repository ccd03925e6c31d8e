#!/usr/bin/python3
"""gen_bf16_attention.py OUTDIR: golden results of the bf16 attention (kernels.h's attention_*_bf16) from
Debian's python3-torch (CPU, float32), for tests/unit/test_bf16.c. The contract's arithmetic written again with
torch's own ops, independent of kernels/cpu/dense.c: r(x) = x.to(torch.bfloat16).float() (round to nearest
even); per (sample, head) S = (r(q) @ r(k)^T) * scale, lse = logsumexp(S), P = exp(S - lse), out = r(P) @ r(v);
backward dV = r(P)^T r(dO), dP = r(dO) r(v)^T, D = rowsum(dout * out) of the fp32 values, dS = P (dP - D)
scale, dQ = r(dS) r(k), dK = r(dS)^T r(q). scale = 1 / sqrt(hd) in float32, as the C code's 1.0f / sqrtf(hd).
All files are raw little-endian float32:

  attn_B_N_C_H_qkv.f32    random qkv[B,N,3C] (uniform in [-1, 1), q and k times a spread), and
  attn_B_N_C_H_dout.f32   a random dout[B,N,C];
  attn_B_N_C_H_out.f32    out[B,N,C],
  attn_B_N_C_H_lse.f32    lse[B,H,N] (the state) and
  attn_B_N_C_H_dqkv.f32   dqkv[B,N,3C] = [dQ | dK | dV], heads side by side as in qkv.
  index.txt               one "attn B N C H" per case.
"""
import os
import sys

os.environ["ATEN_CPU_CAPABILITY"] = "avx2"

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
rng = np.random.default_rng(20261211)
index = []


def save(name, a):
    np.ascontiguousarray(a, dtype="<f4").tofile(os.path.join(out_dir, name))


def r(x):
    return x.to(torch.bfloat16).to(torch.float32)


# tiny's joint layer (hd 64, peaked scores), the tiny decoder (hd 32, all 708 tokens), base video (hd 64),
# a key tile and one past it with head dim 16
for (B, N, C, H, spread) in ((2, 49, 192, 3, 4.0), (1, 708, 128, 4, 1.0), (1, 196, 768, 12, 1.0),
                             (2, 33, 48, 3, 2.0)):
    hd = C // H
    scale = torch.tensor(1.0, dtype=torch.float32) / torch.sqrt(torch.tensor(float(hd), dtype=torch.float32))
    qkv = rng.uniform(-1, 1, (B, N, 3 * C)).astype(np.float32)
    qkv[:, :, :2 * C] *= np.float32(spread)
    dout = rng.uniform(-1, 1, (B, N, C)).astype(np.float32)
    t = torch.from_numpy(qkv).reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)  # [3,B,H,N,hd]
    q16, k16, v16 = r(t[0]), r(t[1]), r(t[2])
    S = (q16 @ k16.transpose(-1, -2)) * scale
    lse = torch.logsumexp(S, dim=-1)
    P = torch.exp(S - lse[..., None])
    o = r(P) @ v16  # [B,H,N,hd]
    out = o.transpose(1, 2).reshape(B, N, C)
    td = torch.from_numpy(dout)
    dO = td.reshape(B, N, H, hd).transpose(1, 2)
    do16 = r(dO)
    D = (td * out).reshape(B, N, H, hd).sum(-1).transpose(1, 2)  # [B,H,N]
    dP = do16 @ v16.transpose(-1, -2)
    ds16 = r(P * (dP - D[..., None]) * scale)
    dV = r(P).transpose(-1, -2) @ do16
    dQ = ds16 @ k16
    dK = ds16.transpose(-1, -2) @ q16
    dqkv = torch.stack((dQ, dK, dV)).permute(1, 3, 0, 2, 4).reshape(B, N, 3 * C)
    name = f"attn_{B}_{N}_{C}_{H}"
    save(name + "_qkv.f32", qkv)
    save(name + "_dout.f32", dout)
    save(name + "_out.f32", out.numpy())
    save(name + "_lse.f32", lse.numpy())
    save(name + "_dqkv.f32", dqkv.numpy())
    index.append(f"attn {B} {N} {C} {H}")

with open(os.path.join(out_dir, "index.txt"), "w") as f:
    f.write("\n".join(index) + "\n")
print(f"gen_bf16_attention: {len(index)} cases")
