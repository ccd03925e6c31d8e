"""gen_debug_states.py OUTDIR: writes the debug states the C model is checked against (the contract of
cav-pretrain(1) --check-debug-state), from the independent PyTorch model in cavmae_ref.py, in fp32 without
autocast.

Each OUTDIR/NAME.safetensors holds:
- metadata `format` = `cav-debug-state/1`, `config` = JSON of every constructor and forward knob (all keys
  written, so no default has to be guessed; extensions: `audio_length`, `img_size`, `modalities`, `batch`);
- every parameter under its reference name (pretraining: CAVMAE, or fine-tuning: CAVMAEFT when the config
  has `label_dim`);
- `in.audio` f32 [B, audio_length, 128], `in.video` f32 [B, 3, img_size, img_size]; pretraining adds
  `in.keep_a` / `in.keep_v` i64 (the reference's ids_shuffle[:, :len_keep]; absent for a modality a
  single-modality model does not use); fine-tuning adds `in.labels` f32 [B, label_dim];
- pretraining outputs `out.loss`, `out.loss_mae`, `out.loss_mae_a`, `out.loss_mae_v`, `out.loss_c`, `out.c_acc`
  (f32 [1]) and `out.pred_a` [B, La, 256] / `out.pred_v` [B, Lv, 768] when the decoder runs
  (mae_loss_weight != 0) for the modalities present; fine-tuning outputs `out.logits` and `out.loss`;
- `grad.<name>` for every trainable parameter: d out.loss / d param (zeros where the loss does not reach);
- metadata `no_grad`: JSON list of the trainable parameters the loss does not reach (PyTorch leaves their
  .grad None, and torch.optim.Adam then skips them: no update, not even weight decay);
- in FEAT_STATES also `out.feat_a` / `out.feat_v`, forward_feat of the inputs (no gradient).

Also OUTDIR/adam5_tiny.safetensors: the tiny start state, fixed inputs and masks, `out.losses` f32 [6] (the
loss before each of 5 torch.optim.Adam steps, lr in the config, weight_decay 5e-7, betas (0.95, 0.999),
eps 1e-8, and after the last) and `final.<name>` for every parameter after the 5 steps; the parameters in
`no_grad` keep their start values (Adam skips them).

Outputs and gradients are computed in float64 from the stored float32 parameters and inputs (a float64 copy
of the model), then rounded to float32: the file holds the exact answer for its inputs, so the C model's
float32 result is judged against the truth rather than against PyTorch's own float32 rounding, which on
gradients that are near-cancelled sums (e.g. grad.norm_a.bias at the base config, largest value ~1e-6) is
itself off by more than the 1e-4 tolerance. The Adam run (adam5_tiny) stays in float32, as training runs.

Parameters start from the reference initialisation and are then perturbed (every tensor but the position
tables gets N(0, 0.02) noise added) so that zero biases and unit LayerNorm weights cannot hide a missing
term. Inputs are N(0,1) audio (as normalised fbank) and video. All seeds are fixed.
"""

import copy
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cavmae_ref as R  # noqa: E402
import st_io  # noqa: E402

FORMAT = 'cav-debug-state/1'
# States that also hold forward_feat's outputs on their inputs (cav-numerics(7) 2.11: unmasked, blocks_u chained with
# the modality LayerNorms): `out.feat_a` [B, La, D] and `out.feat_v` [B, Lv, D]; joint2 has two joint layers,
# where the chained forward_feat and the pretraining loop's quirk differ.
FEAT_STATES = ('tiny_small_input', 'joint2')

# Tiny sizes: 192-dim, 3 heads, 2 modality-specific + 1 joint layer, decoder 128 x 2 with 4 heads.
TINY = dict(embed_dim=192, num_heads=3, depth=3, modality_specific_depth=2, decoder_embed_dim=128,
            decoder_depth=2, decoder_num_heads=4)
# Small inputs for the many variant states: 256 frames (8 x 16 audio grid), 96 x 96 image (6 x 6 grid).
SMALL_IN = dict(audio_length=256, img_size=96)


def pretrain_config(**kw):
    c = dict(R.PRETRAIN_DEFAULTS)
    c.update(R.FORWARD_DEFAULTS)
    c.update(kw)
    return c


def ft_config(**kw):
    c = dict(R.FT_DEFAULTS)
    c.update(dict(mode='multimodal', loss='bce'))
    c.update(kw)
    return c


def variant_config(name, base):
    v = R.VARIANTS[name]
    msd = base['depth'] - 1 if v['msd'] == 'full' else v['msd']
    c = dict(base)
    c.update(modality_specific_depth=msd, modalities=v['modalities'], mae_loss_weight=v['mae_loss_weight'],
             contrast_loss_weight=v['contrast_loss_weight'])
    return c


def states():
    """name -> config (with `batch`)."""
    S = {}
    tiny = pretrain_config(**TINY, batch=4)
    S['tiny'] = tiny
    S['base_b2'] = pretrain_config(batch=2, norm_pix_loss=True)
    small = dict(tiny, **SMALL_IN)
    S['tiny_small_input'] = small
    for v in R.VARIANTS:
        S['variant_' + v] = variant_config(v, small)
    for mode in ('time', 'freq', 'tf'):
        S['mask_' + mode] = dict(small, mask_mode=mode)
    S['normpix'] = dict(small, norm_pix_loss=True)
    S['bidirect'] = dict(small, bidirect_contrast=True)
    # Two joint layers: exercises the reference's contrastive-stream loop (cav-numerics(7) 2.7 step 5).
    S['joint2'] = dict(small, depth=4, modality_specific_depth=2)
    S['weights'] = dict(small, mae_loss_weight=0.7, contrast_loss_weight=0.3, mask_ratio_a=0.5,
                        mask_ratio_v=0.6)
    ft_tiny = {k: TINY[k] for k in ('embed_dim', 'num_heads', 'depth', 'modality_specific_depth')}
    for mode in R.FT_MODES:
        for loss in ('bce', 'ce'):
            S['ft_%s_%s' % (mode, loss)] = ft_config(**ft_tiny, **SMALL_IN, label_dim=7, mode=mode, loss=loss,
                                                     batch=3)
    S['ft_tiny_full_input'] = ft_config(**ft_tiny, label_dim=7, mode='multimodal', loss='bce', batch=2)
    # The reference's 4-GPU semantics (cav-numerics(7) 2.10): DataParallel gives each replica a quarter of the batch,
    # each computes its own contrastive loss over its quarter, and the four losses are summed (c_acc averaged).
    S['groups4'] = dict(small, batch=8, contrast_groups=4, contrast_loss_weight=0.5)
    return S


def perturb(model, gen):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if 'pos_embed' in n:
                continue
            p.add_(0.02 * torch.randn(p.shape, generator=gen))


def build(cfg, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    if 'label_dim' in cfg:
        keys = ('img_size', 'audio_length', 'patch_size', 'in_chans', 'embed_dim', 'modality_specific_depth',
                'num_heads', 'mlp_ratio', 'norm_pix_loss', 'tr_pos', 'depth')
        model = R.CAVMAEFT(cfg['label_dim'], **{k: cfg[k] for k in keys})
    else:
        keys = ('img_size', 'audio_length', 'patch_size', 'in_chans', 'embed_dim', 'modality_specific_depth',
                'num_heads', 'decoder_embed_dim', 'decoder_depth', 'decoder_num_heads', 'mlp_ratio',
                'norm_pix_loss', 'tr_pos', 'depth', 'modalities')
        model = R.CAVMAE(**{k: cfg[k] for k in keys})
    perturb(model, gen)
    return model, gen


def inputs(cfg, model, gen):
    B = cfg['batch']
    ins = {
        'in.audio': torch.randn(B, cfg['audio_length'], 128, generator=gen),
        'in.video': torch.randn(B, 3, cfg['img_size'], cfg['img_size'], generator=gen),
    }
    if 'label_dim' in cfg:
        K = cfg['label_dim']
        if cfg['loss'] == 'ce':  # soft targets, as smoothed and mixed labels: rows sum to 1
            lab = torch.rand(B, K, generator=gen) ** 4
            ins['in.labels'] = lab / lab.sum(dim=1, keepdim=True)
        else:  # smoothed multi-hot, as the fine-tuning loader makes them (eps 0.1)
            hot = (torch.rand(B, K, generator=gen) < 0.3).float()
            ins['in.labels'] = hot * (1 - 0.1) + (1 - hot) * (0.1 / K)
        return ins
    # Masks drawn the reference's way (unstructured, or structured for audio), then injected.
    import random
    rng = random.Random(int(torch.randint(0, 2 ** 31, (1,), generator=gen)))
    if 'a' in cfg['modalities']:
        if cfg['mask_mode'] == 'unstructured':
            ins['in.keep_a'] = R.draw_keep_unstructured(B, model.num_patches_a, cfg['mask_ratio_a'], gen)
        else:
            ins['in.keep_a'] = R.draw_keep_structured(B, model.f_a, model.t_a, cfg['mask_ratio_a'],
                                                      cfg['mask_mode'], gen, rng)
    if 'v' in cfg['modalities']:
        ins['in.keep_v'] = R.draw_keep_unstructured(B, model.num_patches_v, cfg['mask_ratio_v'], gen)
    return ins


def run(cfg, model, ins):
    """Forward and backward; returns the outputs dict (out.*) and grads dict (grad.*)."""
    model.zero_grad(set_to_none=True)
    outs = {}
    if 'label_dim' in cfg:
        logits = model(ins['in.audio'], ins['in.video'], cfg['mode'])
        loss = R.ft_loss(logits, ins['in.labels'], cfg['loss'])
        outs['out.logits'] = logits
    else:
        r = model.forward_all(ins['in.audio'], ins['in.video'], cfg['mask_ratio_a'], cfg['mask_ratio_v'],
                              cfg['mae_loss_weight'], cfg['contrast_loss_weight'], cfg['mask_mode'],
                              cfg['bidirect_contrast'], ins.get('in.keep_a'), ins.get('in.keep_v'))
        loss = r['loss']
        for k in ('loss_mae', 'loss_mae_a', 'loss_mae_v', 'loss_c', 'c_acc'):
            outs['out.' + k] = r[k].detach().float().reshape(1)
        for k in ('pred_a', 'pred_v'):
            if r[k] is not None:
                outs['out.' + k] = r[k]
    outs['out.loss'] = loss.detach().reshape(1)
    if loss.requires_grad:
        loss.backward()
    grads = {}
    for n, p in model.named_parameters():
        if p.requires_grad:
            grads['grad.' + n] = p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
    return {k: v.detach() for k, v in outs.items()}, grads


def run_groups(cfg, model, ins):
    """As run(), for a batch split into cfg['contrast_groups'] replicas whose losses are summed."""
    G, B = cfg['contrast_groups'], cfg['batch']
    q = B // G
    model.zero_grad(set_to_none=True)
    total, sums, preds = 0, {}, {'pred_a': [], 'pred_v': []}
    for g in range(G):
        sl = slice(g * q, (g + 1) * q)
        r = model.forward_all(ins['in.audio'][sl], ins['in.video'][sl], cfg['mask_ratio_a'], cfg['mask_ratio_v'],
                              cfg['mae_loss_weight'], cfg['contrast_loss_weight'], cfg['mask_mode'],
                              cfg['bidirect_contrast'], ins['in.keep_a'][sl], ins['in.keep_v'][sl])
        total = total + r['loss']
        for k in ('loss_mae', 'loss_mae_a', 'loss_mae_v', 'loss_c'):
            sums[k] = sums.get(k, 0) + r[k].detach()
        sums['c_acc'] = sums.get('c_acc', 0) + r['c_acc'].detach() / G
        for k in preds:
            preds[k].append(r[k].detach())
    total.backward()
    outs = {'out.' + k: v.float().reshape(1) for k, v in sums.items()}
    outs['out.loss'] = total.detach().reshape(1)
    for k, v in preds.items():
        outs['out.' + k] = torch.cat(v)
    grads = {'grad.' + n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
             for n, p in model.named_parameters() if p.requires_grad}
    return outs, grads


def no_grad_names(model):
    """Trainable parameters the loss does not reach (p.grad is None after backward): torch.optim.Adam skips
    them entirely, so not even the coupled weight decay moves them (e.g. the modality LayerNorms of
    blocks_a/blocks_v/decoder_blocks, the whole decoder when mae_loss_weight is 0)."""
    return [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]


def write_state(path, cfg, model, ins, outs, grads, extra=None):
    tensors = {n: p.detach() for n, p in model.named_parameters()}
    tensors.update(ins)
    tensors.update(outs)
    tensors.update(grads)
    if extra:
        tensors.update(extra)
    st_io.save(path, tensors, {'format': FORMAT, 'config': json.dumps(cfg, sort_keys=True),
                               'no_grad': json.dumps(no_grad_names(model))})


def adam5(outdir):
    cfg = pretrain_config(**TINY, batch=4, norm_pix_loss=True)
    cfg.update(adam_lr=1e-3, adam_betas=[0.95, 0.999], adam_eps=1e-8, adam_weight_decay=5e-7, adam_steps=5)
    model, gen = build(cfg, 1234)
    ins = inputs(cfg, model, gen)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg['adam_lr'],
                           betas=tuple(cfg['adam_betas']), eps=cfg['adam_eps'],
                           weight_decay=cfg['adam_weight_decay'])
    # The step-0 outputs and gradients are float64 truths, as in every other state; the steps run in float32.
    m64 = copy.deepcopy(model).double()
    outs0, grads0 = run(cfg, m64, {k: v.double() if v.is_floating_point() else v for k, v in ins.items()})
    outs0 = {k: v.float() for k, v in outs0.items()}
    grads0 = {k: v.float() for k, v in grads0.items()}
    del m64
    losses = []
    for step in range(cfg['adam_steps'] + 1):
        outs, grads = run(cfg, model, ins)
        if step == 0:
            no_grad = no_grad_names(model)
        losses.append(float(outs['out.loss']))
        if step < cfg['adam_steps']:
            opt.step()
    final = {'final.' + n: p.detach().clone() for n, p in model.named_parameters()}
    tensors = dict(start)
    tensors.update(ins)
    tensors.update(outs0)
    tensors.update(grads0)
    tensors.update(final)
    tensors['out.losses'] = torch.tensor(losses, dtype=torch.float32)
    st_io.save(os.path.join(outdir, 'adam5_tiny.safetensors'), tensors,
               {'format': FORMAT, 'config': json.dumps(cfg, sort_keys=True), 'no_grad': json.dumps(no_grad)})
    return losses


def main():
    if len(sys.argv) != 2:
        sys.exit('usage: gen_debug_states.py OUTDIR')
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(2)
    only = set(os.environ.get('CAV_DEBUG_STATES', '').split(',')) - {''}
    t_all = time.time()
    for i, (name, cfg) in enumerate(states().items()):
        if only and name not in only:
            continue
        t0 = time.time()
        model, gen = build(cfg, 1000 + i)
        ins = inputs(cfg, model, gen)
        m64 = copy.deepcopy(model).double()
        ins64 = {k: v.double() if v.is_floating_point() else v for k, v in ins.items()}
        outs, grads = (run_groups if cfg.get('contrast_groups', 1) > 1 else run)(cfg, m64, ins64)
        if name in FEAT_STATES:
            with torch.no_grad():
                outs['out.feat_a'], outs['out.feat_v'] = m64.forward_feat(ins64['in.audio'], ins64['in.video'])
        outs = {k: v.float() for k, v in outs.items()}
        grads = {k: v.float() for k, v in grads.items()}
        model.zero_grad(set_to_none=True)
        for (n, p), (n64, p64) in zip(model.named_parameters(), m64.named_parameters()):
            if p64.grad is not None:  # no_grad_names() reads the float32 model
                p.grad = p64.grad.float()
        del m64, ins64
        write_state(os.path.join(outdir, name + '.safetensors'), cfg, model, ins, outs, grads)
        print('gen_debug_states: %-28s loss %.6f  %.2f s' % (name, float(outs['out.loss']), time.time() - t0),
              flush=True)
        del model, outs, grads, ins
    if not only or 'adam5_tiny' in only:
        t0 = time.time()
        losses = adam5(outdir)
        print('gen_debug_states: %-28s losses %s  %.2f s' % ('adam5_tiny', ' '.join('%.6f' % x for x in losses),
                                                              time.time() - t0))
    print('gen_debug_states: total %.1f s' % (time.time() - t_all))


if __name__ == '__main__':
    main()
