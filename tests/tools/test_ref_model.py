"""test_ref_model.py: the independent PyTorch reference (tests/ref/cavmae_ref.py) against the facts of SPEC
section 2 that do not depend on it (parameter counts and shapes, position-table formula, structured-mask
geometry), and the debug states gen_debug_states.py wrote: each is complete (format, config keys,
parameters, inputs, outputs, a gradient for every trainable parameter) and self-contained (a fresh model
built from its config and loaded with its parameters, strict, reproduces its outputs and gradients: done
for one state of each family (RERUN), the others are checked for structure only, to keep this fast)."""

import json
import math
import os
import random
import sys

import torch

SRC = os.environ.get('CAV_SRC', os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(SRC, 'tests', 'ref'))
import cavmae_ref as R  # noqa: E402
import gen_debug_states as G  # noqa: E402
import st_io  # noqa: E402

REF = os.path.join(os.environ.get('CAV_REF', os.path.join(SRC, 'build', 'ref')), 'gen_debug_states')
failed = 0
# States rerun from their own contents (one of each family; a rerun costs seconds on a loaded 2-core
# machine); the others are checked for structure.
RERUN = {'tiny_small_input', 'variant_audio_mae', 'variant_cav', 'mask_tf', 'joint2', 'ft_missingaudioonly_ce'}


def report(name, ok, why=''):
    global failed
    if ok:
        print('PASS %s' % name)
    else:
        failed += 1
        print('FAIL %s: %s' % (name, why))
    sys.stdout.flush()


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
    report('sincos_position_table', bad == 0, '%d entries differ from the SPEC 2.4 formula' % bad)


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


def check_state(path, rerun=True):
    tensors, meta = st_io.load(path)
    why = []
    if meta.get('format') != G.FORMAT:
        why.append('format %r' % meta.get('format'))
    cfg = json.loads(meta['config'])
    ft = 'label_dim' in cfg
    keys = ['embed_dim', 'modality_specific_depth', 'num_heads', 'mlp_ratio', 'tr_pos', 'depth']
    keys += ['label_dim', 'mode', 'loss'] if ft else [
        'decoder_embed_dim', 'decoder_depth', 'decoder_num_heads', 'norm_pix_loss', 'mask_ratio_a', 'mask_ratio_v',
        'mae_loss_weight', 'contrast_loss_weight', 'mask_mode', 'bidirect_contrast']
    why += ['config lacks %s' % k for k in keys if k not in cfg]
    model, _ = G.build(cfg, 0)
    params = {n: tensors[n] for n, _ in model.named_parameters() if n in tensors}
    try:
        model.load_state_dict(params, strict=True)
    except RuntimeError as e:
        return ['load_state_dict: %s' % str(e)[:300]]
    ins = {k: v for k, v in tensors.items() if k.startswith('in.')}
    B = cfg['batch']
    if ins['in.audio'].shape != (B, cfg['audio_length'], 128) or ins['in.audio'].dtype != torch.float32:
        why.append('in.audio shape')
    if ins['in.video'].shape != (B, 3, cfg['img_size'], cfg['img_size']):
        why.append('in.video shape')
    if not rerun:  # structure only: the names a rerun would produce
        outs = {k: tensors[k] for k in tensors if k.startswith('out.')}
        grads = {'grad.' + n: tensors.get('grad.' + n, torch.empty(0)) for n, p in model.named_parameters()
                 if p.requires_grad}
    else:
        outs, grads = G.run(cfg, model, ins)
    for k, v in list(outs.items()) + list(grads.items()):
        if k not in tensors:
            why.append('%s missing' % k)
            continue
        ref = tensors[k]
        scale = max(ref.abs().max().item(), 1e-30)
        if ref.shape != v.shape or ref.dtype != torch.float32 or (ref - v).abs().max().item() > 1e-5 * scale:
            why.append('%s differs on rerun' % k)
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
            why.append('blocks_a.0.norm1_a (unused, SPEC 2.2) not in no_grad')
    if 'joint2' in path and tensors['grad.blocks_u.0.norm1_a.weight'].abs().max() != 0:
        why.append('the contrastive loop quirk (SPEC 2.7.5) should leave blocks_u.0.norm1_a without gradient')
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


def main():
    test_counts()
    test_pos_table()
    test_structured_masks()
    test_debug_states()
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
