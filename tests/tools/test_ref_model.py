"""test_ref_model.py: the independent PyTorch reference (tests/ref/cavmae_ref.py) against the facts of
cav-numerics(7) section 2 that do not depend on it (parameter counts and shapes, position-table formula,
structured-mask geometry), and the debug states gen_debug_states.py wrote: each is complete (format, config
keys, parameters, inputs, outputs, a gradient for every trainable parameter) and self-contained (a fresh model
built from its config and loaded with its parameters, strict, reproduces its outputs and gradients: done for
one state of each family (RERUN), the others are checked for structure only, to keep this fast).

How a rerun is judged. The generator computes every output and gradient in float64 from the stored float32
parameters and inputs and stores the float64 result rounded to float32 (the exact answer for those inputs).
A rerun in float32 cannot be held to that: PyTorch's own float32 error depends on the BLAS kernels OpenBLAS
picks (OPENBLAS_CORETYPE, or the CPU model), and on gradients that are near-cancelled sums it is large.
Measured on variant_cav's grad.norm_a.bias (a gradient made only of the contrastive loss at batch 2), float32
PyTorch is off by 1.4e-5 of the tensor's largest value with the Haswell kernels and 9.8e-6 with Prescott's:
a fixed 1e-5 fails on one machine and passes on the other, and a tolerance scaled from float32's measured
spread would have to be as loose as that spread, blind to real errors of that size everywhere else.
So the rerun repeats what the generator did, in float64 (a float64 copy of the model fed float64 copies of
the inputs). Its own rounding error is about 1e-16 per operation, far below 1e-9 of a tensor's largest
value even for those cancelled gradients, whatever the kernel set; the stored value differs from the exact
one by at most half a float32 unit in the last place (2^-24 relative). Each element must satisfy
    |rerun - stored| <= 2^-23 * |stored| + 1e-9 * max|stored|
(twice the rounding, plus a floor for elements near zero); measured, the worst element of every rerun
state sits at 0.49 of this, the rounding alone, with every kernel set. An error of 1e-6 of a tensor's scale
fails it: the reference's temperature 0.05 changed by 1e-6 relative, or one stored gradient element moved by
1e-6 of its tensor's largest value, are both rejected (neither is seen by a float32 rerun), and
rerun_rejects_ln_eps_1e-6 below checks on every run that MAE's LayerNorm eps 1e-6 instead of 1e-5 fails.
The tests never set OPENBLAS_CORETYPE: run them by hand with it set to check a kernel set."""

import copy
import json
import math
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toolenv  # noqa: E402
from toolenv import report  # noqa: E402
toolenv.use_ref()
import cavmae_ref as R  # noqa: E402
import gen_debug_states as G  # noqa: E402
import st_io  # noqa: E402

REF = os.path.join(toolenv.REF, 'gen_debug_states')
# States rerun from their own contents (one of each family; a rerun costs seconds on a loaded 2-core
# machine); the others are checked for structure.
RERUN = {'tiny_small_input', 'variant_audio_mae', 'variant_cav', 'mask_tf', 'joint2', 'ft_missingaudioonly_ce'}


def test_counts():
    m = R.CAVMAE()
    total, trainable = R.count_params(m)
    report('base_pretrain_params', (total, trainable) == (191036160, 190129920), '%d / %d' % (total, trainable))
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    want = {'patch_embed_a.proj.weight': (768, 1, 16, 16), 'patch_embed_v.proj.weight': (768, 3, 16, 16),
            'pos_embed_a': (1, 512, 768), 'decoder_pos_embed_v': (1, 196, 512), 'blocks_u.0.norm1_a.weight': (768,),
            'blocks_a.10.attn.qkv.weight': (2304, 768), 'decoder_blocks.7.mlp.fc2.weight': (512, 2048),
            'decoder_pred_a.weight': (256, 512), 'decoder_pred_v.bias': (768,), 'mask_token': (1, 1, 512)}
    bad = [k for k, s in want.items() if shapes.get(k) != s]
    bad += [k for k in ('blocks_u.1.attn.qkv.weight', 'blocks_a.11.norm1.weight', 'decoder_blocks.8.norm1.weight')
            if k in shapes]
    frozen = sorted(n for n, p in m.named_parameters() if not p.requires_grad)
    ok = not bad and frozen == ['decoder_pos_embed_a', 'decoder_pos_embed_v', 'pos_embed_a', 'pos_embed_v']
    blk768 = sum(p.numel() for p in m.blocks_u[0].parameters())
    blk512 = sum(p.numel() for p in m.decoder_blocks[0].parameters())
    report('base_pretrain_names_shapes', ok and blk768 == 7094016 and blk512 == 3156480,
           'bad %s frozen %s blocks %d %d' % (bad, frozen, blk768, blk512))
    del m
    for k, want_total, want_head in ((527, 164907023, 406799), (309, 164739381, 239157)):
        f = R.CAVMAEFT(k)
        total, trainable = R.count_params(f)
        head = sum(p.numel() for n, p in f.named_parameters() if n.startswith('mlp_head.'))
        report('base_ft_params_%d' % k, total == trainable == want_total and head == want_head,
               '%d / %d, head %d' % (total, trainable, head))


def test_pos_table():
    pe = R.sincos_2d(768, 8, 64)
    bad = 0
    for (i, j, c) in ((0, 0, 0), (3, 17, 5), (7, 63, 191), (7, 63, 192), (5, 2, 384), (5, 2, 600), (1, 40, 767)):
        k = i * 64 + j
        half, quarter = c // 384, (c % 384)
        pos = j if half == 0 else i
        m = quarter % 192
        w = 1.0 / 10000 ** (m / 192.0)
        val = math.sin(pos * w) if quarter < 192 else math.cos(pos * w)
        if pe[k, c].item() != torch.tensor(val, dtype=torch.float64).float().item():
            bad += 1
    report('sincos_position_table', bad == 0, '%d entries differ from the formula of cav-numerics(7) 2.4' % bad)


def test_structured_masks():
    gen = torch.Generator().manual_seed(5)
    rng = random.Random(5)
    ok = True
    why = ''
    for mode in ('time', 'freq', 'tf'):
        keep = R.draw_keep_structured(3, 8, 64, 0.75, mode, gen, rng)
        if keep.shape != (3, 128):
            ok, why = False, '%s: shape %s' % (mode, tuple(keep.shape))
            continue
        for b in range(3):
            ks = set(keep[b].tolist())
            rows = {k // 64 for k in ks}
            cols = {k % 64 for k in ks}
            if mode == 'time' and not (len(cols) == 16 and all(r * 64 + c in ks for r in range(8) for c in cols)):
                ok, why = False, 'time: kept tokens are not 16 whole time columns'
            if mode == 'freq' and not (len(rows) == 2 and all(r * 64 + c in ks for r in rows for c in range(64))):
                ok, why = False, 'freq: kept tokens are not 2 whole frequency rows'
            if mode == 'tf':
                # 33 columns and 4 rows forced out leave 31 x 4 = 124 free tokens, all kept, plus 4 forced ones
                from collections import Counter
                cc = Counter(k % 64 for k in ks)
                rc = Counter(k // 64 for k in ks)
                full_cols = [c for c, n in cc.items() if n >= 4]
                if len(full_cols) < 31 or sum(1 for r, n in rc.items() if n >= 31) < 4:
                    ok, why = False, 'tf: kept tokens do not cover the 31 x 4 free block'
    _, ids_restore, mask = R.masking_from_keep(torch.tensor([[5, 0, 7], [1, 2, 3]]), 8)
    ok = ok and mask.tolist() == [[0, 1, 1, 1, 1, 0, 1, 0], [1, 0, 0, 0, 1, 1, 1, 1]]
    ok = ok and ids_restore[0].tolist() == [1, 3, 4, 5, 6, 0, 7, 2]
    report('structured_masks_and_keep', ok, why or 'mask/ids_restore from keep')


def excess(ref, v):
    """How far v is from the stored ref, in units of the rerun tolerance (see the header): <= 1 passes."""
    ref64, v64 = ref.double(), v.double()
    scale = max(ref64.abs().max().item(), 1e-30)
    tol = 2.0 ** -23 * ref64.abs() + 1e-9 * scale
    return ((v64 - ref64).abs() / tol).max().item()


def rerun64(cfg, model, ins, feat, ln_eps=None):
    """The generator's computation again: a float64 copy of the model on the float64 inputs; outputs
    (with forward_feat's for feat states) and gradients. ln_eps replaces every LayerNorm's eps (the
    negative control)."""
    m64 = copy.deepcopy(model).double()
    if ln_eps is not None:
        for m in m64.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.eps = ln_eps
    ins64 = {k: v.double() if v.is_floating_point() else v for k, v in ins.items()}
    outs, grads = (G.run_groups if cfg.get('contrast_groups', 1) > 1 else G.run)(cfg, m64, ins64)
    if feat:
        with torch.no_grad():
            outs['out.feat_a'], outs['out.feat_v'] = m64.forward_feat(ins64['in.audio'], ins64['in.video'])
    return outs, grads


def load_state(path):
    tensors, meta = st_io.load(path)
    cfg = json.loads(meta['config'])
    model, _ = G.build(cfg, 0)
    params = {n: tensors[n] for n, _ in model.named_parameters() if n in tensors}
    model.load_state_dict(params, strict=True)
    ins = {k: v for k, v in tensors.items() if k.startswith('in.')}
    return tensors, meta, cfg, model, ins


def check_state(path, rerun=True):
    try:
        tensors, meta, cfg, model, ins = load_state(path)
    except RuntimeError as e:
        return ['load_state_dict: %s' % str(e)[:300]]
    why = []
    if meta.get('format') != G.FORMAT:
        why.append('format %r' % meta.get('format'))
    ft = 'label_dim' in cfg
    keys = ['embed_dim', 'modality_specific_depth', 'num_heads', 'mlp_ratio', 'tr_pos', 'depth']
    keys += ['label_dim', 'mode', 'loss'] if ft else [
        'decoder_embed_dim', 'decoder_depth', 'decoder_num_heads', 'norm_pix_loss', 'mask_ratio_a', 'mask_ratio_v',
        'mae_loss_weight', 'contrast_loss_weight', 'mask_mode', 'bidirect_contrast']
    why += ['config lacks %s' % k for k in keys if k not in cfg]
    B = cfg['batch']
    if ins['in.audio'].shape != (B, cfg['audio_length'], 128) or ins['in.audio'].dtype != torch.float32:
        why.append('in.audio shape')
    if ins['in.video'].shape != (B, 3, cfg['img_size'], cfg['img_size']):
        why.append('in.video shape')
    name = os.path.basename(path)[:-len('.safetensors')]
    if not rerun:  # structure only: the names a rerun would produce
        outs = {k: tensors[k] for k in tensors if k.startswith('out.')}
        grads = {'grad.' + n: tensors.get('grad.' + n, torch.empty(0)) for n, p in model.named_parameters()
                 if p.requires_grad}
    else:
        outs, grads = rerun64(cfg, model, ins, name in G.FEAT_STATES)
    worst = (0.0, '')
    for k, v in list(outs.items()) + list(grads.items()):
        if k not in tensors:
            why.append('%s missing' % k)
            continue
        ref = tensors[k]
        if ref.shape != v.shape or ref.dtype != torch.float32:
            why.append('%s shape or type' % k)
            continue
        if rerun:
            e = excess(ref, v)
            worst = max(worst, (e, k))
            if e > 1:
                why.append('%s differs on rerun (%.3g x the tolerance)' % (k, e))
    if rerun and not why:
        print('rerun %s: worst %s at %.3g x the tolerance' % (name, worst[1], worst[0]))
    extra = [k for k in tensors if k.startswith('grad.') and k not in grads]
    why += ['unexpected %s' % k for k in extra]
    want_grads = {'grad.' + n for n, p in model.named_parameters() if p.requires_grad}
    if not want_grads <= set(tensors):
        why.append('gradients missing')
    if not ft and 'a' in cfg.get('modalities', 'av') and 'in.keep_a' not in tensors:
        why.append('in.keep_a missing')
    ng = json.loads(meta.get('no_grad', 'null') or 'null')
    if ng is None:
        why.append('no_grad metadata missing')
    else:
        why += ['%s in no_grad but its gradient is not zero' % n for n in ng if tensors['grad.' + n].abs().max() != 0]
        if not ft and cfg['depth'] > cfg['modality_specific_depth'] and cfg['modality_specific_depth'] > 0 and \
                'blocks_a.0.norm1_a.weight' not in ng:
            why.append('blocks_a.0.norm1_a (unused, cav-numerics(7) 2.2) not in no_grad')
    if 'joint2' in path and tensors['grad.blocks_u.0.norm1_a.weight'].abs().max() != 0:
        why.append('the contrastive loop quirk (cav-numerics(7) 2.7 step 5) should leave blocks_u.0.norm1_a '
                   'without gradient')
    return why


def test_debug_states():
    if not os.path.isdir(REF):
        report('debug_states', False, '%s missing (make refs)' % REF)
        return
    names = sorted(f for f in os.listdir(REF) if f.endswith('.safetensors'))
    want = set(n + '.safetensors' for n in G.states()) | {'adam5_tiny.safetensors'}
    report('debug_states_present', want <= set(names), 'missing %s' % sorted(want - set(names)))
    torch.set_num_threads(2)
    for f in names:
        path = os.path.join(REF, f)
        if f == 'base_b2.safetensors':  # 1.5 GB: header only here
            header, meta = st_io.read_header(path)
            cfg = json.loads(meta['config'])
            n = sum(math.prod(e['shape']) for k, e in header.items() if not k.startswith(('in.', 'out.', 'grad.')))
            g = sum(math.prod(e['shape']) for k, e in header.items() if k.startswith('grad.'))
            report('debug_state_base_b2_header', n == 191036160 and g == 190129920 and cfg['batch'] == 2,
                   'params %d grads %d' % (n, g))
            continue
        if f == 'adam5_tiny.safetensors':
            tensors, meta = st_io.load(path)
            cfg = json.loads(meta['config'])
            losses = tensors['out.losses']
            ok = losses.shape == (cfg['adam_steps'] + 1,) and bool((losses[1:] < losses[:-1]).all())
            ok = ok and all('final.' + n in tensors for n in tensors if n in tensors and not n.startswith(
                ('in.', 'out.', 'grad.', 'final.')))
            ng = json.loads(meta['no_grad'])
            ok = ok and len(ng) > 0 and all(torch.equal(tensors['final.' + n], tensors[n]) for n in ng)
            report('debug_state_adam5', ok, 'losses %s' % losses.tolist())
            continue
        why = check_state(path, rerun=f[:-len('.safetensors')] in RERUN)
        report('debug_state_' + f[:-len('.safetensors')], not why, '; '.join(why))


def test_tolerance_sees_small_errors():
    """The judgement must not be loose: a model whose LayerNorms use MAE's eps 1e-6 instead of 1e-5 changes
    outputs and gradients by about 1e-6 of their scale, and the rerun must reject it."""
    path = os.path.join(REF, 'tiny_small_input.safetensors')
    if not os.path.exists(path):
        report('rerun_rejects_ln_eps_1e-6', False, '%s missing (make refs)' % path)
        return
    tensors, _, cfg, model, ins = load_state(path)
    outs, grads = rerun64(cfg, model, ins, False, ln_eps=1e-6)
    e = {k: excess(tensors[k], v) for k, v in list(outs.items()) + list(grads.items())}
    caught = sorted(k for k, x in e.items() if x > 1)
    report('rerun_rejects_ln_eps_1e-6', len(caught) > 0.5 * len(e),
           'only %d of %d tensors outside the tolerance: %s' % (len(caught), len(e), caught[:5]))


def main():
    test_counts()
    test_pos_table()
    test_structured_masks()
    test_debug_states()
    test_tolerance_sees_small_errors()
    return toolenv.status()


if __name__ == '__main__':
    sys.exit(main())
