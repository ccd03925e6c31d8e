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
  else (attention's products, LayerNorm, softmax, GELU, the losses) is exact arithmetic: the float64 stand-in
  for the C model's fp32.
- `autocast.loss` (and the other scalar outputs `autocast.<name>`): the same state's forward in float32 with
  torch.autocast('cpu', dtype=torch.bfloat16) restricted to the nn.Linear and nn.Conv2d modules (attention's
  matmuls, which autocast would also take, stay float32): PyTorch's own mixed precision, which in addition
  rounds each Linear's output to bf16.
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
    plain = (nn.Linear.forward, nn.Conv2d.forward)
    for i, (name, src) in enumerate((('pretrain_tiny', 'tiny_small_input'), ('ft_tiny', 'ft_multimodal_bce'))):
        t0 = time.time()
        cfg = S[src]
        model, gen = G.build(cfg, 5000 + i)
        ins = G.inputs(cfg, model, gen)
        # the contract, in float64
        nn.Linear.forward, nn.Conv2d.forward = linear_bf16, conv_bf16
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
        nn.Linear.forward, nn.Conv2d.forward = linear_autocast, conv_autocast
        with torch.no_grad():
            ac, _ = G.run(cfg, copy.deepcopy(model).requires_grad_(False), ins)
        nn.Linear.forward, nn.Conv2d.forward = plain
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
