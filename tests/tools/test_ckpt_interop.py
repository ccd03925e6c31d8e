"""test_ckpt_interop.py: checkpoints move between PyTorch and the C readers/writers.

- .pth written by Debian's torch (zip, legacy, `module.` prefix, {"model": ...}) -> `cav-ckpt convert` (C
  .pth import and C safetensors writer) -> parsed in Python (tests/ref/st_io.py, standard library + torch)
  -> every tensor bit-equal to the original; loaded into the tests/ref model with
  load_state_dict(strict=True), whose outputs equal the original model's.
- safetensors written by Python -> `cav-ckpt convert` (C reader, C writer) -> the same tensors, dtypes and
  metadata back in Python.
- hostile .pth files -> exit status 2 with a message naming the file, also under the ASan/UBSan build.
"""

import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toolenv  # noqa: E402
from toolenv import ASAN_BIN, BIN, report  # noqa: E402
toolenv.use_ref()
import cavmae_ref as R  # noqa: E402
import gen_pth  # noqa: E402
import st_io  # noqa: E402

REF = os.path.join(toolenv.REF, 'gen_pth')


def ckpt(*args, asan=False):
    exe = os.path.join(ASAN_BIN if asan else BIN, 'cav-ckpt')
    return subprocess.run([exe] + list(args), capture_output=True, text=True)


def outputs(model):
    torch.manual_seed(3)
    a = torch.randn(2, 256, 128)
    v = torch.randn(2, 3, 96, 96)
    keep_a = R.draw_keep_unstructured(2, model.num_patches_a, 0.75)
    keep_v = R.draw_keep_unstructured(2, model.num_patches_v, 0.75)
    with torch.no_grad():
        r = model.forward_all(a, v, keep_a=keep_a, keep_v=keep_v)
    return torch.cat([r['loss'].reshape(1), r['pred_a'].flatten(), r['pred_v'].flatten()])


def tiny_empty():
    return R.CAVMAE(embed_dim=192, num_heads=3, depth=3, modality_specific_depth=2, decoder_embed_dim=128,
                    decoder_depth=2, decoder_num_heads=4, audio_length=256, img_size=96)


def test_pth_to_safetensors(tmp):
    ref_model = gen_pth.tiny_model()
    want = ref_model.state_dict()
    want_out = outputs(ref_model)
    for name in ('tiny_state.pth', 'tiny_state_legacy.pth', 'module_state.pth', 'wrapped_state.pth'):
        out = os.path.join(tmp, name + '.safetensors')
        r = ckpt('convert', os.path.join(REF, name), out)
        if r.returncode != 0:
            report('pth_to_safetensors_' + name, False, 'cav-ckpt exit %d: %s' % (r.returncode, r.stderr.strip()))
            continue
        got, meta = st_io.load(out)
        same = set(got) == set(want) and all(got[k].dtype == torch.float32 and torch.equal(got[k], want[k])
                                             for k in want)
        m = tiny_empty()
        try:
            m.load_state_dict(got, strict=True)
            same_out = torch.equal(outputs(m), want_out)
        except RuntimeError as e:
            same_out = False
            print('  load_state_dict: %s' % e)
        report('pth_to_safetensors_' + name, same and same_out and meta.get('source', '').endswith(name),
               'tensors equal %s, outputs equal %s, meta %s' % (same, same_out, meta))


def test_views(tmp):
    out = os.path.join(tmp, 'views.safetensors')
    r = ckpt('convert', os.path.join(REF, 'views_legacy.pth'), out)
    ok = r.returncode == 0
    if ok:
        got, _ = st_io.load(out)
        v = gen_pth.views()
        ok = set(got) == set(v) and all(torch.equal(got[k], v[k].float()) for k in v)
    report('pth_views_to_safetensors', ok, r.stderr.strip())


def test_safetensors_roundtrip(tmp):
    src = os.path.join(tmp, 'py.safetensors')
    t = {
        'a.weight': torch.randn(3, 4), 'ids': torch.arange(5, dtype=torch.int64) - 2,
        'h': torch.randn(6).half(), 'd': torch.randn(2, 2, dtype=torch.float64), 'u': torch.arange(3).to(torch.uint8),
        'i': torch.tensor([-7, 9], dtype=torch.int32), 's': torch.tensor(1.25), 'e': torch.zeros(0, 2),
        'b': torch.randn(3).to(torch.bfloat16),
    }
    meta = {'format': 'cav-debug-state/1', 'config': '{"embed_dim": 192, "note": "q\\"uote"}'}
    st_io.save(src, t, meta)
    dst = os.path.join(tmp, 'c.safetensors')
    r = ckpt('convert', src, dst)
    ok = r.returncode == 0
    why = r.stderr.strip()
    if ok:
        got, gmeta = st_io.load(dst)
        for k, x in t.items():
            want = x.float() if x.dtype == torch.bfloat16 else x
            if k not in got or got[k].dtype != want.dtype or not torch.equal(got[k], want):
                ok = False
                why += ' tensor %s differs' % k
        if gmeta != meta:
            ok = False
            why += ' metadata %r' % gmeta
        with open(dst, 'rb') as f:
            n = int.from_bytes(f.read(8), 'little')
        if n % 8:
            ok = False
            why += ' header length %d not a multiple of 8' % n
    report('safetensors_python_c_python', ok, why)


def test_hostile():
    for asan in (False, True):
        if asan and not (ASAN_BIN and os.path.exists(os.path.join(ASAN_BIN, 'cav-ckpt'))):
            print('SKIP hostile_pth_asan: no ASan build of cav-ckpt (CAV_ASAN_BIN)')
            continue
        bad = []
        for name in ('bad_global.pth', 'bad_exec.pth', 'truncated.pth', 'truncated_legacy.pth', 'short_storage.pth',
                     'not_torch.pth'):
            path = os.path.join(REF, name)
            r = ckpt('ls', path, asan=asan)
            if r.returncode != 2 or path not in r.stderr or 'ERROR: AddressSanitizer' in r.stderr or \
                    'runtime error' in r.stderr:
                bad.append('%s: exit %d: %s' % (name, r.returncode, r.stderr.strip()[-300:]))
        report('hostile_pth' + ('_asan' if asan else ''), not bad, '; '.join(bad))
    r = ckpt('ls', os.path.join(REF, 'bad_exec.pth'))
    report('pickle_never_executes', not os.path.exists('/tmp/pwn') and 'os.system refused' in r.stderr, r.stderr)


def test_mae_fixture(tmp):
    """The MAE-shaped .pth reads in C as torch wrote it, and the expected CAV-MAE start state follows cav-numerics(7)
    3.5 statement by statement (checked here independently of cavmae_ref.adapt_mae_state)."""
    out = os.path.join(tmp, 'mae.safetensors')
    r = ckpt('convert', os.path.join(REF, 'mae_tiny.pth'), out)
    if r.returncode != 0:
        report('mae_fixture', False, r.stderr.strip())
        return
    mae, _ = st_io.load(out)
    want = torch.load(os.path.join(REF, 'mae_tiny.pth'))['model']
    same = set(mae) == set(want) and all(torch.equal(mae[k], want[k]) for k in want)
    cav, meta = st_io.load(os.path.join(REF, 'cavmae_from_mae_tiny.safetensors'))
    checks = {
        'patch_embed_a = channel sum': torch.equal(cav['patch_embed_a.proj.weight'],
                                                   mae['patch_embed.proj.weight'].sum(1, keepdim=True)),
        'patch_embed_v copied': torch.equal(cav['patch_embed_v.proj.weight'], mae['patch_embed.proj.weight']),
        'blocks 0..msd-1 to a and v': all(torch.equal(cav['blocks_%s.1.mlp.fc1.weight' % m],
                                                      mae['blocks.1.mlp.fc1.weight']) for m in 'av'),
        'last block to blocks_u.0': torch.equal(cav['blocks_u.0.attn.qkv.weight'], mae['blocks.2.attn.qkv.weight']),
        'joint norms copied to _a/_v': all(torch.equal(cav['blocks_u.0.norm%d_%s.bias' % (n, m)],
                                                       mae['blocks.2.norm%d.bias' % n]) for n in (1, 2) for m in 'av'),
        'norm to norm, norm_a, norm_v': all(torch.equal(cav[k + '.weight'], mae['norm.weight'])
                                            for k in ('norm', 'norm_a', 'norm_v')),
        'pos_embed_v without cls': torch.equal(cav['pos_embed_v'], mae['pos_embed'][:, 1:]),
        'decoder_pos_embed_v without cls': torch.equal(cav['decoder_pos_embed_v'], mae['decoder_pos_embed'][:, 1:]),
        'decoder_pred_a = first 256 rows': torch.equal(cav['decoder_pred_a.bias'], mae['decoder_pred.bias'][:256]),
        'decoder by name': torch.equal(cav['decoder_blocks.1.mlp.fc2.weight'], mae['decoder_blocks.1.mlp.fc2.weight'])
        and torch.equal(cav['mask_token'], mae['mask_token']),
        'audio pos table sin-cos': torch.equal(cav['pos_embed_a'][0], R.sincos_2d(192, 8, 16)),
    }
    bad = [k for k, v in checks.items() if not v]
    report('mae_fixture', same and not bad, 'C read equal %s; cav-numerics(7) 3.5 violations %s' % (same, bad))


def main():
    if not os.path.exists(os.path.join(REF, 'tiny_state.pth')):
        print('FAIL ckpt_interop: golden data %s missing (make refs)' % REF)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        test_pth_to_safetensors(tmp)
        test_views(tmp)
        test_safetensors_roundtrip(tmp)
        test_mae_fixture(tmp)
        test_hostile()
    return toolenv.status()


if __name__ == '__main__':
    sys.exit(main())
