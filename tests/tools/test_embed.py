"""test_embed.py: cav-embed against the PyTorch reference model (tests/ref/cavmae_ref.py).

A micro CAV-MAE with perturbed random weights is saved as safetensors with its config as metadata (as
cav-pretrain writes it), and a micro CAVMAEFT as a .pth with the `module.` prefix of DataParallel and no
config (sizes given with --set). The same clips are fed to both sides: the reference's inputs are computed
here from the records (fbank cut/padded to the model's length, (x + 5.081) / 4.4849; frame 5, /255,
ImageNet normalisation), then forward_feat, mean over all tokens, F.normalize, as src/retrieval.py.
Checked: emb_a / emb_v within 1e-5 relative (shard input, stream on stdin, several batch sizes), --tokens
shapes and values, the fine-tuned .pth, a bad record reported by id and field while the others are still
written (exit 2), a checkpoint of the wrong size refused naming the tensor, and the ASan build on one case."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toolenv  # noqa: E402
from toolenv import ASAN_BIN, BIN, report  # noqa: E402
toolenv.use_ref()
import cavmae_ref as R  # noqa: E402
import cavstream  # noqa: E402
import st_io  # noqa: E402

TMP = tempfile.mkdtemp(prefix='cav-embed-test-')
T, S = 64, 32  # audio_length, img_size of the micro models
KNOBS = {'embed_dim': 32, 'num_heads': 2, 'depth': 3, 'modality_specific_depth': 2, 'audio_length': T, 'img_size': S}


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def perturb(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # LayerNorms off (1, 0), biases off 0: every parameter matters
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def make_records(n, seed, bad_at=None):
    g = np.random.default_rng(seed)
    recs = []
    for r in range(n):
        t = [('fbank', (g.standard_normal((T - 6 + r % 13, 128)) * 3 - 5).astype(np.float32)),
             ('frames', g.integers(0, 256, (10, S, S, 3), dtype=np.uint8))]
        if r == bad_at:
            t = t[:1]  # no frames
        recs.append(('clip%03d' % r, {}, t))
    return recs


def ref_inputs(recs):
    a, v = [], []
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    for _, _, t in recs:
        d = dict(t)
        fb = torch.from_numpy(d['fbank'])
        fb = fb[:T] if fb.shape[0] >= T else torch.cat([fb, torch.zeros(T - fb.shape[0], 128)])
        a.append((fb - (-5.081)) / 4.4849)
        img = torch.from_numpy(d['frames'][5]).permute(2, 0, 1).float() / 255
        v.append((img - mean) / std)
    return torch.stack(a), torch.stack(v)


def ref_embed(model, recs):
    a, v = ref_inputs(recs)
    with torch.no_grad():
        fa, fv = model.forward_feat(a, v)
        return (F.normalize(fa.mean(dim=1), dim=-1).numpy(), F.normalize(fv.mean(dim=1), dim=-1).numpy(),
                fa.numpy(), fv.numpy())


def write_stream(path, recs):
    with open(path, 'wb') as f:
        f.write(cavstream.encode(recs))


def embed(*args, stdin=None, asan=False):
    exe = os.path.join(ASAN_BIN if asan else BIN, 'cav-embed')
    r = subprocess.run([exe] + list(args), input=stdin, capture_output=True)
    recs = None
    if r.stdout:
        try:
            recs = cavstream.decode(r.stdout)[1]
        except Exception as e:  # noqa: BLE001
            recs = 'undecodable: %s' % e
    return r, recs


def check_embs(name, recs_out, ids, want_a, want_v):
    if not isinstance(recs_out, list):
        return report(name, False, 'no output records (%s)' % recs_out)
    got_ids = [rid for rid, _, _ in recs_out]
    if got_ids != ids:
        return report(name, False, 'ids %s' % got_ids)
    ga = np.stack([dict(t)['emb_a'] for _, _, t in recs_out])
    gv = np.stack([dict(t)['emb_v'] for _, _, t in recs_out])
    ok = ga.dtype == np.float32 and ga.shape == want_a.shape and gv.shape == want_v.shape
    ea, ev = (rel(ga, want_a), rel(gv, want_v)) if ok else (np.inf, np.inf)
    norms = np.linalg.norm(ga.astype(np.float64), axis=1)
    report(name, ok and ea < 1e-5 and ev < 1e-5 and np.allclose(norms, 1, atol=1e-6),
           'shapes %s %s, rel a %.3g v %.3g' % (ga.shape, gv.shape, ea, ev))
    print('  %s: rel diff emb_a %.2e, emb_v %.2e' % (name, ea, ev))


# -- pretraining model with its config as metadata, on a shard and on stdin --
torch.manual_seed(0)
pre = perturb(R.CAVMAE(decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, **KNOBS), 1)
cfg = dict(KNOBS, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mlp_ratio=4.0, modalities='av')
ckpt = os.path.join(TMP, 'pre.safetensors')
st_io.save(ckpt, pre.state_dict(), {'format': 'cav-mae/1', 'config': __import__('json').dumps(cfg)})
recs = make_records(11, 5)
ids = [r[0] for r in recs]
want_a, want_v, want_fa, want_fv = ref_embed(pre, recs)
stream = os.path.join(TMP, 'clips.cavs')
shard = os.path.join(TMP, 'clips.h5')
write_stream(stream, recs)
subprocess.run([BIN + '/shard-pack', '-o', shard, stream], check=True, capture_output=True)

r, out = embed('--model', ckpt, '-b', '4', shard)
report('shard_exit_0', r.returncode == 0, r.stderr.decode()[-400:])
check_embs('shard_equals_reference', out, ids, want_a, want_v)

with open(stream, 'rb') as f:
    data = f.read()
r, out = embed('--model', ckpt, '-b', '3', '-', stdin=data)
report('stdin_exit_0', r.returncode == 0, r.stderr.decode()[-400:])
check_embs('stdin_stream_equals_reference', out, ids, want_a, want_v)

outfile = os.path.join(TMP, 'emb.cavs')
r, _ = embed('--model', ckpt, '-b', '16', '--tokens', stream, '-o', outfile)
try:
    with open(outfile, 'rb') as f:
        out = cavstream.decode(f.read())[1]
except Exception as e:  # noqa: BLE001
    out = 'no file: %s' % e
check_embs('batch_larger_than_input', out, ids, want_a, want_v)
if isinstance(out, list):
    fa = np.stack([dict(t)['feat_a'] for _, _, t in out])
    fv = np.stack([dict(t)['feat_v'] for _, _, t in out])
    report('tokens_shapes', fa.shape == (11, 32, 32) and fv.shape == (11, 4, 32), '%s %s' % (fa.shape, fv.shape))
    ok = fa.shape == want_fa.shape and fv.shape == want_fv.shape
    report('tokens_equal_reference', ok and rel(fa, want_fa) < 1e-5 and rel(fv, want_fv) < 1e-5,
           'rel %s' % (str((rel(fa, want_fa), rel(fv, want_fv))) if ok else 'shape'))

# -- a fine-tuned model as a DataParallel .pth without config: sizes from --set --
ft = perturb(R.CAVMAEFT(label_dim=5, **KNOBS), 2)
pth = os.path.join(TMP, 'ft.pth')
torch.save({'module.' + k: v for k, v in ft.state_dict().items()}, pth)
sets = []
for k, v in KNOBS.items():
    sets += ['--set', '%s=%s' % (k, v)]
fa_, fv_, _, _ = ref_embed(ft, recs)
r, out = embed('--model', pth, '--model-type', 'finetune', *sets, '-b', '5', shard)
report('finetune_pth_exit_0', r.returncode == 0, r.stderr.decode()[-400:])
check_embs('finetune_pth_equals_reference', out, ids, fa_, fv_)
r, _ = embed('--model', pth, '--model-type', 'pretrain', *sets, shard)
report('finetune_pth_as_pretrain_refused', r.returncode == 2 and b'mlp_head' in r.stderr, r.stderr.decode()[-300:])
r, _ = embed('--model', pth, shard)  # base sizes: the shapes differ
report('wrong_size_refused', r.returncode == 2 and b'shape' in r.stderr and b'ft.pth' in r.stderr,
       '%d %s' % (r.returncode, r.stderr.decode()[-300:]))

# -- a bad record: reported by id and field, skipped, the others written, exit 2 --
bad = make_records(6, 9, bad_at=3)
wa, wv, _, _ = ref_embed(pre, [x for i, x in enumerate(bad) if i != 3])
bs = os.path.join(TMP, 'bad.cavs')
write_stream(bs, bad)
r, out = embed('--model', ckpt, '-b', '2', bs)
err = r.stderr.decode()
report('bad_record_exit_2', r.returncode == 2 and 'clip003' in err and 'frames' in err and 'bad.cavs' in err,
       '%d %s' % (r.returncode, err[-400:]))
check_embs('bad_record_others_written', out, [x[0] for i, x in enumerate(bad) if i != 3], wa, wv)

# -- usage errors --
r, _ = embed(shard)
report('no_model_is_usage_error', r.returncode == 1, str(r.returncode))
r, _ = embed('--model', ckpt, '--batch-size', '0', shard)
report('bad_batch_is_usage_error', r.returncode == 1, str(r.returncode))
r, _ = embed('--model', os.path.join(TMP, 'missing.safetensors'), shard)
report('missing_checkpoint_exit_2', r.returncode == 2 and b'missing.safetensors' in r.stderr, r.stderr.decode()[-300:])

# -- the ASan/UBSan build on one case (bad record included) --
if ASAN_BIN and os.path.exists(os.path.join(ASAN_BIN, 'cav-embed')):
    r, out = embed('--model', ckpt, '-b', '2', '--tokens', bs, asan=True)
    err = r.stderr.decode()
    report('asan_clean', r.returncode == 2 and 'ERROR: AddressSanitizer' not in err and 'runtime error' not in err
           and 'LeakSanitizer' not in err, '%d %s' % (r.returncode, err[-600:]))
    check_embs('asan_equals_reference', out, [x[0] for i, x in enumerate(bad) if i != 3], wa, wv)
else:
    print('SKIP asan: no ASan build of cav-embed (CAV_ASAN_BIN)')

sys.exit(toolenv.status())
