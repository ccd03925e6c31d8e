#!/usr/bin/python3
"""gen_bf16_states.py OUTDIR: debug states in bf16 mixed precision (cav-pretrain(1) --precision bf16), from the
independent PyTorch model in cavmae_ref.py, for `cav-pretrain --check-debug-state` (tests/tools/test_bf16.py).

Each OUTDIR/NAME.safetensors is a debug state of gen_debug_states.py's format (same configs, parameters and
inputs as its states of the same config: tiny pretraining on small inputs, and the tiny multimodal BCE
fine-tuning) with metadata `precision` = `bf16`, and:
- `out.*` and `grad.*`: the exact answer of the bf16 arithmetic the C model specifies, computed in float64:
  every nn.Linear and the patch embeddings' nn.Conv2d multiply their input and weight rounded to bf16 (ties
  to even, from the float32 value as the C model rounds its fp32 activations) and add their bias rounded to
  bf16 after the product; in the backward the output gradient is rounded to bf16 for the products giving the
  input and weight gradients, and the bias gradient is the sum of the unrounded output gradient. Everything
  else (LayerNorm, softmax, GELU, the losses) is exact arithmetic: the float64 stand-in for the C model's fp32.
  Attention's two products take bf16 operands too (kernels/kernels.h's attention_forward_bf16): S = r(q) r(k)^T
  times the scale, P = softmax(S), out = r(P) r(v); in the backward the output gradient is rounded for dV and
  dP, and dS (the gradient of the unscaled product, the scale included) for dQ and dK.
- `autocast.loss` (and the other scalar outputs `autocast.<name>`): the same state's forward in float32 with
  torch.autocast('cpu', dtype=torch.bfloat16) over the nn.Linear and nn.Conv2d modules and attention's two
  matmuls (the softmax in float32, as autocast runs it): PyTorch's own mixed precision, which in addition
  rounds each product's output to bf16.
"""
import copy
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_debug_states as G  # noqa: E402
import st_io  # noqa: E402

SCALARS = ('loss', 'loss_mae', 'loss_mae_a', 'loss_mae_v', 'loss_c', 'c_acc')


def bf(t):
    """t rounded to bf16 from its float32 value, in t's dtype"""
    return t.float().bfloat16().to(t.dtype)


class RoundFwd(torch.autograd.Function):
    """forward: rounded to bf16; backward: the gradient passes unchanged (the operand is a copy)"""
    @staticmethod
    def forward(ctx, t):
        return bf(t)

    @staticmethod
    def backward(ctx, g):
        return g


class RoundBwd(torch.autograd.Function):
    """forward: unchanged; backward: the gradient rounded to bf16 (the product's output gradient)"""
    @staticmethod
    def forward(ctx, t):
        return t.clone()

    @staticmethod
    def backward(ctx, g):
        return bf(g)


def linear_bf16(self, x):
    y = RoundBwd.apply(F.linear(RoundFwd.apply(x), RoundFwd.apply(self.weight)))
    return y if self.bias is None else y + RoundFwd.apply(self.bias)


def conv_bf16(self, x):
    y = RoundBwd.apply(F.conv2d(RoundFwd.apply(x), RoundFwd.apply(self.weight), None, self.stride, self.padding))
    return y if self.bias is None else y + RoundFwd.apply(self.bias).view(1, -1, 1, 1)


def heads(self, x):
    """q, k, v [B, H, N, C/H] of timm's attention, as cavmae_ref.Attention splits them"""
    B, N, C = x.shape
    qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2]


class AttentionCore(torch.autograd.Function):
    """attention_forward_bf16 / attention_backward_bf16 of kernels/kernels.h on q, k, v [B, H, N, C/H], written
    out (autograd's softmax backward would form D from the rounded products, the contract from dout and out)"""
    @staticmethod
    def forward(ctx, q, k, v, scale):
        q16, k16, v16 = bf(q), bf(k), bf(v)
        p = ((q16 @ k16.transpose(-2, -1)) * scale).softmax(dim=-1)
        p16 = bf(p)
        out = p16 @ v16
        ctx.save_for_backward(q16, k16, v16, p, p16, out)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q16, k16, v16, p, p16, out = ctx.saved_tensors
        do16 = bf(dout)
        dv = p16.transpose(-2, -1) @ do16
        dp = do16 @ v16.transpose(-2, -1)
        d = (dout * out).sum(dim=-1, keepdim=True)
        ds16 = bf((p * (dp - d)) * ctx.scale)
        return ds16 @ k16, ds16.transpose(-2, -1) @ q16, dv, None


def attention_bf16(self, x):
    B, N, C = x.shape
    q, k, v = heads(self, x)
    o = AttentionCore.apply(q, k, v, self.scale)
    return self.proj(o.transpose(1, 2).reshape(B, N, C))


def attention_autocast(self, x):
    B, N, C = x.shape
    q, k, v = heads(self, x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        s = (q @ k.transpose(-2, -1)) * self.scale
        o = s.float().softmax(dim=-1) @ v
    assert o.dtype == torch.bfloat16
    return self.proj(o.float().transpose(1, 2).reshape(B, N, C))


def linear_autocast(self, x):
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = F.linear(x, self.weight, self.bias)
    assert y.dtype == torch.bfloat16
    return y.float()


def conv_autocast(self, x):
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
    assert y.dtype == torch.bfloat16
    return y.float()


def main():
    if len(sys.argv) != 2:
        sys.exit('usage: gen_bf16_states.py OUTDIR')
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(2)
    S = G.states()
    plain = (nn.Linear.forward, nn.Conv2d.forward, G.R.Attention.forward)
    for i, (name, src) in enumerate((('pretrain_tiny', 'tiny_small_input'), ('ft_tiny', 'ft_multimodal_bce'))):
        t0 = time.time()
        cfg = S[src]
        model, gen = G.build(cfg, 5000 + i)
        ins = G.inputs(cfg, model, gen)
        # the contract, in float64
        nn.Linear.forward, nn.Conv2d.forward, G.R.Attention.forward = linear_bf16, conv_bf16, attention_bf16
        m64 = copy.deepcopy(model).double()
        ins64 = {k: v.double() if v.is_floating_point() else v for k, v in ins.items()}
        outs, grads = G.run(cfg, m64, ins64)
        outs = {k: v.float() for k, v in outs.items()}
        grads = {k: v.float() for k, v in grads.items()}
        # no_grad_names() reads the float32 model's .grad
        for p, p64 in zip(model.parameters(), m64.parameters()):
            if p64.grad is not None:
                p.grad = p64.grad.float()
        no_grad = G.no_grad_names(model)
        # PyTorch's autocast on the Linears and the patch convolutions, float32 elsewhere
        nn.Linear.forward, nn.Conv2d.forward, G.R.Attention.forward = (linear_autocast, conv_autocast,
                                                                       attention_autocast)
        with torch.no_grad():
            ac, _ = G.run(cfg, copy.deepcopy(model).requires_grad_(False), ins)
        nn.Linear.forward, nn.Conv2d.forward, G.R.Attention.forward = plain
        extra = {'autocast.' + k[4:]: v.float().reshape(1) for k, v in ac.items() if k[4:] in SCALARS}
        tensors = {n: p.detach() for n, p in model.named_parameters()}
        for d in (ins, outs, grads, extra):
            tensors.update(d)
        st_io.save(os.path.join(outdir, name + '.safetensors'), tensors,
                   {'format': G.FORMAT, 'config': json.dumps(cfg, sort_keys=True), 'no_grad': json.dumps(no_grad),
                    'precision': 'bf16'})
        print('gen_bf16_states: %-16s loss %.6f (autocast %.6f)  %.2f s'
              % (name, float(outs['out.loss']), float(extra['autocast.loss']), time.time() - t0), flush=True)


if __name__ == '__main__':
    main()
