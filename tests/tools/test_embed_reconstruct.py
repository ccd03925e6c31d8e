"""test_embed_reconstruct.py: cav-embed --reconstruct DIR against the PyTorch reference model (tests/ref/
cavmae_ref.py) on a micro CAV-MAE, with norm_pix_loss off and on.

The tool draws its masks (--mask-ratio, --seed) and writes, per clip, the masks and the decoder's
predictions (DIR/reconstruction.cavs) and the pictures (DIR/N-audio.png: input, masked, reconstruction
stacked; DIR/N-video.png: side by side). Checked: the masked fraction is the ratio asked for; the reference
model given the same kept patches (keep_a, keep_v) predicts the same tokens (1e-4); the image triptych
equals, within one level, what NumPy makes of the input frame and of those predictions (un-normalised per
patch with the target patch's mean and unbiased std under norm_pix_loss, visible patches pasted from the
input, masked patches grey in the middle picture); the spectrogram triptych has the input's geometry
(F rows, T columns per picture) and its masked picture is grey exactly on the masked patches; the same seed
gives the same masks and another seed others; a fine-tuned or decoder-less checkpoint is refused (exit 2)."""
import io
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toolenv  # noqa: E402
from toolenv import BIN, report  # noqa: E402
toolenv.use_ref()
import cavstream  # noqa: E402

TMP = tempfile.mkdtemp(prefix='cav-embed-recon-')


try:
    import torch
    from PIL import Image
    import cavmae_ref as R
    import st_io
except ImportError as e:
    print('SKIP reconstruct: %s' % e)
    sys.exit(0)

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
T, F, S = 64, 128, 32
g = np.random.default_rng(7)
recs, fbs, frs = [], [], []
for i in range(3):
    fb = (g.standard_normal((T, F)) * 3 - 5).astype(np.float32)
    fr = g.integers(0, 256, (10, S, S, 3), dtype=np.uint8)
    recs.append(('c%d' % i, {}, [('fbank', fb), ('frames', fr)]))
    fbs.append(fb)
    frs.append(fr[5])
clips = os.path.join(TMP, 'clips.cavs')
with open(clips, 'wb') as f:
    f.write(cavstream.encode(recs))


def patchify(x, c):  # x [c, H, W] -> [L, P*P*c], element (p*16+q)*c + ch (the reference's einsum)
    h, w = x.shape[1] // 16, x.shape[2] // 16
    return x.reshape(c, h, 16, w, 16).transpose(1, 3, 2, 4, 0).reshape(h * w, 256 * c)


def unpatchify(t, c, h, w):
    return t.reshape(h, w, 16, 16, c).transpose(4, 0, 2, 1, 3).reshape(c, h * 16, w * 16)


for norm_pix in (False, True):
    tag = 'normpix' if norm_pix else 'plain'
    torch.manual_seed(1)
    knobs = {'embed_dim': 32, 'num_heads': 2, 'depth': 3, 'modality_specific_depth': 2, 'audio_length': T,
             'img_size': S}
    dec = {'decoder_embed_dim': 16, 'decoder_depth': 1, 'decoder_num_heads': 2}
    model = R.CAVMAE(norm_pix_loss=norm_pix, **knobs, **dec).eval()
    with torch.no_grad():
        for prm in model.parameters():
            prm.add_(torch.randn(prm.shape) * 0.05)
    ck = os.path.join(TMP, '%s.safetensors' % tag)
    st_io.save(ck, model.state_dict(), {'format': 'cav-mae/1', 'config': json.dumps(dict(knobs, **dec,
               norm_pix_loss=norm_pix))})
    out = os.path.join(TMP, tag)
    r = subprocess.run([os.path.join(BIN, 'cav-embed'), '--model', ck, '--reconstruct', out, '--mask-ratio', '0.625',
                        '--seed', '3', '--clips', '2', clips], capture_output=True)
    if r.returncode:
        report('reconstruct_%s_exit_0' % tag, False, r.stderr.decode()[-500:])
        continue
    _, got = cavstream.decode(open(os.path.join(out, 'reconstruction.cavs'), 'rb').read())
    report('reconstruct_%s_two_clips' % tag, [x[0] for x in got] == ['c0', 'c1'], str([x[0] for x in got]))
    for i, (rid, _, tensors) in enumerate(got):
        t = dict(tensors)
        ma, mv = t['mask_a'], t['mask_v']
        La, Lv = len(ma), len(mv)
        report('mask_ratio_%s_%d' % (tag, i), ma.sum() == La - int(La * (1 - 0.625)) and
               mv.sum() == Lv - int(Lv * (1 - 0.625)), '%d/%d %d/%d' % (ma.sum(), La, mv.sum(), Lv))
        a = torch.from_numpy((fbs[i] + 5.081) / 4.4849)[None]
        v = torch.from_numpy(((frs[i].astype(np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1).copy())[None]
        keep_a = torch.from_numpy(np.nonzero(ma == 0)[0])[None]
        keep_v = torch.from_numpy(np.nonzero(mv == 0)[0])[None]
        with torch.no_grad():
            pa, pv, _, _, _, _ = model.forward_inpaint(a, v, 0.625, 0.625, keep_a=keep_a, keep_v=keep_v)
        da = np.abs(pa[0].numpy() - t['pred_a']).max()
        dv = np.abs(pv[0].numpy() - t['pred_v']).max()
        report('pred_equals_reference_%s_%d' % (tag, i), da < 1e-4 and dv < 1e-4, 'max diff audio %g video %g' % (da, dv))
        # the image triptych from the input and the predictions, in NumPy
        x = v[0].numpy()
        tok = patchify(x, 3)
        p = t['pred_v'].astype(np.float64)
        if norm_pix:
            mu, var = tok.mean(1, keepdims=True), tok.var(1, ddof=1, keepdims=True)
            p = p * np.sqrt(var + 1e-6) + mu
        rec = np.where(mv[:, None] > 0.5, p, tok)
        masked = np.where(mv[:, None] > 0.5, np.nan, tok)
        h = S // 16

        def rgb(img):
            u = (img.transpose(1, 2, 0) * STD + MEAN) * 255
            return np.where(np.isnan(u), 128, np.clip(np.round(u), 0, 255))

        want = [rgb(x), rgb(unpatchify(masked, 3, h, h)), rgb(unpatchify(rec, 3, h, h))]
        pic = np.asarray(Image.open(os.path.join(out, '%d-video.png' % i)).convert('RGB')).astype(float)
        ok = pic.shape == (S, 3 * S + 8, 3)
        diffs = [np.abs(pic[:, k * (S + 4):k * (S + 4) + S] - want[k]).max() if ok else -1 for k in range(3)]
        report('video_png_%s_%d' % (tag, i), ok and max(diffs) <= 1 and np.abs(want[0] - frs[i]).max() <= 1,
               'shape %s, max diffs %s' % (pic.shape, diffs))
        sp = np.asarray(Image.open(os.path.join(out, '%d-audio.png' % i)).convert('RGB')).astype(int)
        ok = sp.shape == (3 * F + 8, T, 3)
        grey = np.all(sp[F + 4:2 * F + 4] == 128, axis=2)[::-1]  # [F, T], row 0 = lowest mel
        want_grey = np.repeat(np.repeat(ma.reshape(F // 16, T // 16) > 0.5, 16, 0), 16, 1)
        report('audio_png_%s_%d' % (tag, i), ok and np.array_equal(grey, want_grey) and
               not np.all(sp[2 * F + 8:] == sp[:F]),
               'shape %s, grey %d want %d' % (sp.shape, grey.sum() if ok else -1, want_grey.sum()))
        # visible patches of the reconstruction show the input
        vis = ~np.repeat(np.repeat(ma.reshape(F // 16, T // 16) > 0.5, 16, 0), 16, 1)[::-1]
        report('audio_png_visible_pasted_%s_%d' % (tag, i), ok and np.array_equal(sp[2 * F + 8:][vis], sp[:F][vis]),
               'visible patches differ')
    if not norm_pix:
        r2 = subprocess.run([os.path.join(BIN, 'cav-embed'), '--model', ck, '--reconstruct', out + '-b', '--mask-ratio',
                             '0.625', '--seed', '4', '--clips', '1', clips], capture_output=True)
        _, got2 = cavstream.decode(open(os.path.join(out + '-b', 'reconstruction.cavs'), 'rb').read())
        r3 = subprocess.run([os.path.join(BIN, 'cav-embed'), '--model', ck, '--reconstruct', out + '-c', '--mask-ratio',
                             '0.625', '--seed', '3', '--clips', '1', clips], capture_output=True)
        _, got3 = cavstream.decode(open(os.path.join(out + '-c', 'reconstruction.cavs'), 'rb').read())
        m0 = dict(got[0][2])['mask_v']
        report('seed_decides_masks', r2.returncode == 0 and r3.returncode == 0 and
               np.array_equal(dict(got3[0][2])['mask_v'], m0) and not np.array_equal(dict(got2[0][2])['mask_v'], m0),
               'same seed differs or another seed equal')
        # a checkpoint without the decoder is refused
        sd = {k: v for k, v in model.state_dict().items() if not k.startswith('decoder_') and k != 'mask_token'}
        ck2 = os.path.join(TMP, 'nodec.safetensors')
        st_io.save(ck2, sd, {'format': 'cav-mae/1', 'config': json.dumps(dict(knobs, **dec))})
        r = subprocess.run([os.path.join(BIN, 'cav-embed'), '--model', ck2, '--reconstruct', out + '-d', clips],
                           capture_output=True)
        report('no_decoder_exit_2', r.returncode == 2 and b'decoder' in r.stderr, '%d %s' % (r.returncode, r.stderr))
sys.exit(toolenv.status())
