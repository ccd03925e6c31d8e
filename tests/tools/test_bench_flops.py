"""test_bench_flops.py: the FLOP count per training sample that the benchmarks divide by (train_step.c's
step_flops and ft_step_flops, written from the config: MFU in bench_gpu_train.sh) against an independent count
of what the reference model (tests/ref/cavmae_ref.py) executes: every matrix product and convolution its
forward dispatches to ATen (mm, addmm, bmm, baddbmm: 2 M N K; convolution: 2 x output elements x the kernel's
inputs per output), seen through a TorchDispatchMode, at batch 1, times 3 (the backward's two products per
forward one, the convention of the MFU literature and of train_step.c). Pretraining (CAVMAE, masks 0.75) and
fine-tuning (CAVMAEFT, multimodal, 527 classes) at the tiny benchmark config and at the base config.
The two counts agree to 1e-4 relative: the only product train_step.c leaves out is the contrastive loss's
similarity matrix (B x D by D x B, 2 D FLOPs at batch 1, under 1e-7 of the total); anything that changes a
product's shape or count (a block, a head, the token counts, the decoder's width) moves the total by more."""
import os
import subprocess
import sys

import toolenv

sys.path.insert(0, toolenv.REF_PY)
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import cavmae_ref  # noqa: E402

BENCH = os.environ.get('CAV_BENCH_BIN', os.path.join(toolenv.SRC, 'build', 'bench'))
aten = torch.ops.aten


class MatmulFlops(TorchDispatchMode):
    """Sums the FLOPs of the matrix products and convolutions dispatched while it is active."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        p = func.overloadpacket
        if p in (aten.mm, aten.bmm):
            a, b = args[0], args[1]
            self.flops += 2 * a.numel() * b.shape[-1]
        elif p in (aten.addmm, aten.baddbmm):
            a, b = args[1], args[2]
            self.flops += 2 * a.numel() * b.shape[-1]
        elif p == aten.convolution:
            w = args[1]  # (Cout, Cin / groups, kh, kw)
            self.flops += 2 * out.numel() * w[0].numel()
        return out


def reference_gflop(task, cfg):
    torch.manual_seed(0)
    kw = dict(norm_pix_loss=True)
    if cfg == 'tiny':  # train_step.c's and train_step_torch.py's tiny config
        kw.update(embed_dim=192, num_heads=3, modality_specific_depth=4, depth=5)
        if task == 'step':
            kw.update(decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4)
    model = cavmae_ref.CAVMAE(**kw) if task == 'step' else cavmae_ref.CAVMAEFT(527, **kw)
    a, v = torch.randn(1, 1024, 128), torch.randn(1, 3, 224, 224)
    count = MatmulFlops()
    with torch.no_grad(), count:
        if task == 'step':
            model(a, v, 0.75, 0.75, 1.0, 0.01)
        else:
            model(a, v, 'multimodal')
    return 3 * count.flops / 1e9


def c_gflop(task, cfg):
    out = subprocess.run([os.path.join(BENCH, 'train_step'), task, cfg, '1', '0'], capture_output=True, text=True)
    if out.returncode:
        return None, out.stderr.strip()
    return float(out.stdout.split('gflop_per_sample ')[1].split()[0]), ''


torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '2')))
for task in ('step', 'ft'):
    for cfg in ('tiny', 'base'):
        name = 'flops_%s_%s' % ('pretrain' if task == 'step' else 'finetune', cfg)
        c, why = c_gflop(task, cfg)
        if c is None:
            toolenv.report(name, False, 'train_step %s %s 1 0: %s' % (task, cfg, why))
            continue
        r = reference_gflop(task, cfg)
        print('%s: train_step.c %.4f GFLOP per sample, reference dispatch count %.4f (relative %.2e)' %
              (name, c, r, abs(c - r) / r))
        toolenv.report(name, abs(c - r) <= 1e-4 * r, 'C %.4f, reference %.4f GFLOP' % (c, r))
sys.exit(toolenv.status())
