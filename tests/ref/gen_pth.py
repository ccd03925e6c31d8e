"""gen_pth.py OUTDIR: .pth and safetensors files written by Debian's torch, for the C readers' tests
(tests/unit/test_pth.c, test_safetensors.c) and the interop test (tests/tools/test_ckpt_interop.py).

Each NAME.raw beside a file is the expected content, independent of any pickle or zip: for every tensor in
sorted name order, u32 name length, the name, u32 ndim, ndim x u32 sizes, then the values as contiguous
little-endian f32 (the tensor converted with .float()).

Written:
- tiny_state.pth (zip), tiny_state_legacy.pth (_use_new_zipfile_serialization=False),
  tiny_state.safetensors (tests/ref/st_io.py) and tiny_state.raw: the state dict of the tiny CAVMAE;
- module_state.pth: the same under DataParallel's `module.` prefix (nn.DataParallel(model).state_dict());
- wrapped_state.pth: {"model": state_dict, "epoch": 3}, as MAE checkpoints are saved;
- views.pth / views_legacy.pth / views.raw: transposed, sliced (storage offset), shared-storage and
  expanded (stride 0) views, f64/f16/bf16/int64/int32/uint8 tensors, a 0-d scalar and an empty tensor;
- mae_tiny.pth: {"model": MAE ViT state dict} with MAE's names and shapes at tiny sizes (192-dim, 3 blocks,
  3 heads, decoder 128 x 2, 96 x 96 images), and cavmae_from_mae_tiny.safetensors: the CAV-MAE start state
  the reference's mapping (cav-numerics(7) 3.5, cavmae_ref.adapt_mae_state) builds from it for CAVMAE(embed_dim 192,
  depth 3, modality_specific_depth 2, num_heads 3, decoder 128 x 2 with 4 heads, audio_length 256,
  img_size 96); metadata `config` (those arguments) and `random_init` (JSON list of the tensors that come
  from the model's own random initialisation, not from MAE: compare them by shape only);
- hostile files, each must be refused with exit code 2: bad_global.pth (argparse.Namespace in the dict),
  bad_exec.pth (a hand-made data.pkl calling os.system, which must never run), truncated.pth (the zip cut
  in half), truncated_legacy.pth, short_storage.pth (one storage entry 4 bytes short), not_torch.pth.
"""

import argparse
import collections
import io
import json
import os
import struct
import sys
import zipfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cavmae_ref as R  # noqa: E402
import st_io  # noqa: E402


def write_raw(path, sd):
    with open(path, 'wb') as f:
        for name in sorted(sd):
            t = sd[name].detach().float().contiguous()
            nb = name.encode()
            f.write(struct.pack('<I', len(nb)) + nb + struct.pack('<I', t.dim()))
            for s in t.shape:
                f.write(struct.pack('<I', s))
            f.write(t.numpy().astype('<f4').tobytes())


def tiny_model():
    torch.manual_seed(7)
    m = R.CAVMAE(embed_dim=192, num_heads=3, depth=3, modality_specific_depth=2, decoder_embed_dim=128,
                 decoder_depth=2, decoder_num_heads=4, audio_length=256, img_size=96)
    with torch.no_grad():
        for n, p in m.named_parameters():
            p.add_(0.02 * torch.randn(p.shape))
    return m


def views():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6) * 0.5 - 3
    sd = collections.OrderedDict()
    sd['transposed'] = base.t()  # strides (1, 6)
    sd['sliced'] = base[1:3, 2:5]  # offset 8, strides (6, 1)
    sd['shared_full'] = base  # the same storage as the two views above
    sd['expanded'] = torch.tensor([1.5, -2.0, 3.25]).reshape(3, 1).expand(3, 4)  # stride 0
    sd['f64'] = torch.linspace(-1, 1, 7, dtype=torch.float64) / 3
    sd['f16'] = torch.tensor([0.5, -1e-5, 65504.0, 1e-7], dtype=torch.float16)
    sd['bf16'] = torch.tensor([1.0, -3.140625, 1e30], dtype=torch.bfloat16)
    sd['i64'] = torch.tensor([[-5, 7], [2 ** 40, 0]], dtype=torch.int64)
    sd['i32'] = torch.tensor([-3, 4], dtype=torch.int32)
    sd['u8'] = torch.tensor([0, 255, 7], dtype=torch.uint8)
    sd['scalar'] = torch.tensor(2.75)
    sd['empty'] = torch.zeros(0, 3)
    sd['step4'] = torch.arange(20.0)[1::4]  # offset 1, stride 4
    return sd


def hand_zip(path, entries):
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as z:
        for name, data in entries:
            z.writestr(name, data)


def main():
    if len(sys.argv) != 2:
        sys.exit('usage: gen_pth.py OUTDIR')
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    P = lambda n: os.path.join(out, n)  # noqa: E731
    m = tiny_model()
    sd = m.state_dict()
    torch.save(sd, P('tiny_state.pth'))
    torch.save(sd, P('tiny_state_legacy.pth'), _use_new_zipfile_serialization=False)
    st_io.save(P('tiny_state.safetensors'), dict(sd), {'format': 'cav-checkpoint/1', 'source': 'gen_pth.py'})
    write_raw(P('tiny_state.raw'), sd)
    torch.save(torch.nn.DataParallel(m).state_dict(), P('module_state.pth'))
    torch.save({'model': sd, 'epoch': 3}, P('wrapped_state.pth'))

    v = views()
    torch.save(v, P('views.pth'))
    torch.save(v, P('views_legacy.pth'), _use_new_zipfile_serialization=False)
    write_raw(P('views.raw'), v)

    gm = torch.Generator().manual_seed(11)
    mae = R.mae_like_state(192, 3, 3, 128, 2, img_size=96, generator=gm)
    torch.save({'model': mae}, P('mae_tiny.pth'))
    cfg = dict(embed_dim=192, depth=3, modality_specific_depth=2, num_heads=3, decoder_embed_dim=128,
               decoder_depth=2, decoder_num_heads=4, audio_length=256, img_size=96)
    torch.manual_seed(12)
    cav = R.CAVMAE(**cfg)
    adapted = R.adapt_mae_state(mae, cav)
    cav.load_state_dict(adapted, strict=True)
    rnd = ['modality_a', 'modality_v', 'decoder_modality_a', 'decoder_modality_v']
    st_io.save(P('cavmae_from_mae_tiny.safetensors'), adapted,
               {'format': 'cav-checkpoint/1', 'config': json.dumps(cfg, sort_keys=True), 'random_init': json.dumps(rnd)})

    # Hostile files.
    small = collections.OrderedDict(w=torch.arange(6.0).reshape(2, 3), b=torch.ones(3))
    torch.save({'w': small['w'], 'args': argparse.Namespace(lr=1)}, P('bad_global.pth'))
    evil = b'\x80\x02cos\nsystem\nq\x00X\x0e\x00\x00\x00touch /tmp/pwnq\x01\x85q\x02Rq\x03.'
    hand_zip(P('bad_exec.pth'), [('archive/data.pkl', evil), ('archive/version', b'3\n')])
    good = open(P('tiny_state.pth'), 'rb').read()
    open(P('truncated.pth'), 'wb').write(good[:len(good) // 2])
    leg = open(P('tiny_state_legacy.pth'), 'rb').read()
    open(P('truncated_legacy.pth'), 'wb').write(leg[:len(leg) - 100])
    buf = io.BytesIO()
    torch.save(small, buf)
    zin = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    ents = []
    for info in zin.infolist():
        data = zin.read(info.filename)
        if info.filename.endswith('/data/0'):
            data = data[:-4]
        ents.append((info.filename, data))
    hand_zip(P('short_storage.pth'), ents)
    open(P('not_torch.pth'), 'wb').write(b'hello, this is not a checkpoint\n')
    print('gen_pth: wrote %d files to %s' % (len(os.listdir(out)), out))


if __name__ == '__main__':
    main()
