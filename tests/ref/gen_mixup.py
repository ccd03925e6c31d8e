#!/usr/bin/python3
"""gen_mixup.py OUTDIR: golden data for the training loader's mixup and label smoothing (lib/train/loader.c,
cav-numerics(7) 1.7), reimplementing the reference dataloader's __getitem__ (AudiosetDataset with mixup) in
PyTorch/torchaudio for a given sample, partner, lambda and frames: _wav2fbank with a partner (both waveforms
mean-subtracted, the partner zero-padded or cut to the first's length, mixed, the mix's mean subtracted, then
torchaudio.compliance.kaldi.fbank with the reference's arguments and the cut/pad to 1024 frames), the
normalisation, get_image's ToTensor + Normalize on each clip's own frame mixed after normalisation, and the
two label paths (mixup: eps/K plus lambda(1-eps) and (1-lambda)(1-eps) added; no mixup: positives set to
1-eps). SpecAugment, noise and roll are off (their draws cannot be matched; augment.c has its own goldens).
It also writes the project's own fbank-only mixup (not the reference's: the two clips' raw fbanks mixed after
cut/pad, then normalised), from the same torchaudio fbanks.

Clips are real recordings (asterisk G.722 prompts, tuxpaint vorbis sounds, decoded by ffmpeg at 16 kHz). Files:
  CLIP.wav          16-bit mono WAV at 16 kHz (what the reference loads with torchaudio.load)
  CLIP.s16          the same samples, raw little-endian int16
  CLIP.fbank        torchaudio's fbank of the clip alone [frames, 128] f32 (what fbank(1) would store)
  CLIP.rgb          10 frames u8 [10, S, S, 3]
  CLIP.lab          labels f32 [K], 0/1
  CASE.audio        expected audio [1024, 128] f32, normalised
  CASE.image        expected image [3, S, S] f32
  CASE.label        expected training target [K] f32
index.txt: "clips K S EPS" then one line per case: NAME MODE FIRST PARTNER LAMBDA FRAME1 FRAME2, MODE one of
wave (the reference's mixup), fbank (the project's fbank-only mixup) or none (no mixup; PARTNER "-")."""
import os
import subprocess
import sys
import wave

os.environ["ATEN_CPU_CAPABILITY"] = "avx2"  # as gen_fbank.py: the same float32 sums on every AVX2 machine

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchaudio  # noqa: E402
import torchvision.transforms as Tv  # noqa: E402

torch.set_num_threads(1)
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
AST = "/usr/share/asterisk/sounds/en_US_f_Allison"
TUX = "/usr/share/tuxpaint/stamps"
K, S, EPS, TARGET, MEAN, STD = 10, 48, 0.1, 1024, -5.081, 4.4849
g = np.random.default_rng(20261207)


def decode(path, fmt=None):
    """ffmpeg decode to int16 mono at 16 kHz."""
    cmd = ["ffmpeg", "-v", "error", "-nostdin"] + (["-f", fmt] if fmt else []) + ["-i", path]
    cmd += ["-f", "s16le", "-ac", "1", "-ar", "16000", "-"]
    return np.frombuffer(subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout, dtype="<i2").copy()


def save(name, arr):
    np.ascontiguousarray(arr).tofile(os.path.join(out, name))


digits = np.concatenate([decode(f"{AST}/digits/{d}.g722", "g722") for d in range(10)] * 3)
clips = {
    "speech": decode(f"{AST}/all-circuits-busy-now.g722", "g722"),  # 1.8 s
    "digits": digits[:160000],  # 10 s: 998 frames, 26 padded
    "long": np.concatenate([digits, digits])[:176000],  # 11 s: cut to 1024 frames
    "badger": decode(f"{TUX}/animals/mammals/badger.ogg"),
    "heron": decode(f"{TUX}/animals/birds/heron_greatblue_flying.ogg"),
}


def kaldi(waveform):
    """The reference's _wav2fbank call (cav-numerics(7) 1.3) on a mean-subtracted waveform [1, n]."""
    return torchaudio.compliance.kaldi.fbank(waveform, htk_compat=True, sample_frequency=16000, use_energy=False,
                                             window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)


def fit(fbank):
    p = TARGET - fbank.shape[0]
    if p > 0:
        return torch.nn.ZeroPad2d((0, 0, 0, p))(fbank)
    return fbank[0:TARGET, :]


def load(name):
    waveform, sr = torchaudio.load(os.path.join(out, name + ".wav"))
    assert sr == 16000
    return waveform


def wav2fbank(name, name2=None, mix_lambda=-1):
    """AudiosetDataset._wav2fbank, as the reference writes it."""
    if name2 is None:
        waveform = load(name)
        waveform = waveform - waveform.mean()
    else:
        waveform1, waveform2 = load(name), load(name2)
        waveform1 = waveform1 - waveform1.mean()
        waveform2 = waveform2 - waveform2.mean()
        if waveform1.shape[1] != waveform2.shape[1]:
            if waveform1.shape[1] > waveform2.shape[1]:
                temp_wav = torch.zeros(1, waveform1.shape[1])  # padding
                temp_wav[0, 0:waveform2.shape[1]] = waveform2
                waveform2 = temp_wav
            else:
                waveform2 = waveform2[0, 0:waveform1.shape[1]]  # cutting
        mix_waveform = mix_lambda * waveform1 + (1 - mix_lambda) * waveform2
        waveform = mix_waveform - mix_waveform.mean()
    return fit(kaldi(waveform))


frames, labels = {}, {}
norm = Tv.Compose([Tv.ToTensor(), Tv.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
for name, pcm in clips.items():
    with wave.open(os.path.join(out, name + ".wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.astype("<i2").tobytes())
    save(name + ".s16", pcm.astype("<i2"))
    save(name + ".fbank", kaldi(load(name) - load(name).mean()).numpy().astype("<f4"))
    frames[name] = g.integers(0, 256, (10, S, S, 3), dtype=np.uint8)
    save(name + ".rgb", frames[name])
    lab = np.zeros(K, np.float32)
    lab[g.choice(K, size=int(g.integers(1, 4)), replace=False)] = 1
    labels[name] = lab
    save(name + ".lab", lab)
# Overlapping classes, so that one class gets both additions of the mixup path.
labels["speech"][:] = 0
labels["speech"][[1, 4]] = 1
labels["digits"][:] = 0
labels["digits"][[4, 7, 8]] = 1
save("speech.lab", labels["speech"])
save("digits.lab", labels["digits"])


def get_image(name, frame, name2=None, frame2=None, mix_lambda=1):
    """get_image: the stored frames are S x S already, so Resize/CenterCrop are the identity."""
    if name2 is None:
        return norm(frames[name][frame])
    return mix_lambda * norm(frames[name][frame]) + (1 - mix_lambda) * norm(frames[name2][frame2])


def label_vector(name, name2=None, mix_lambda=None):
    label_indices = np.zeros(K) + (EPS / K)
    if name2 is None:
        for i in np.flatnonzero(labels[name]):
            label_indices[i] = 1.0 - EPS
    else:
        for i in np.flatnonzero(labels[name]):
            label_indices[i] += mix_lambda * (1.0 - EPS)
        for i in np.flatnonzero(labels[name2]):
            label_indices[i] += (1.0 - mix_lambda) * (1.0 - EPS)
    return torch.FloatTensor(label_indices)


lams = [float(x) for x in np.random.default_rng(7).beta(10, 10, size=4)]
cases = [("pad", "wave", "digits", "speech", lams[0], 3, 8),  # partner shorter: zero-padded
         ("cut", "wave", "speech", "long", lams[1], 0, 9),  # partner longer: cut
         ("animals", "wave", "badger", "heron", lams[2], 5, 2),
         ("self", "wave", "heron", "heron", 0.25, 7, 1),
         ("longfirst", "wave", "long", "badger", lams[3], 9, 4),  # first cut to 1024 frames after the mix
         ("fbankonly", "fbank", "digits", "speech", lams[0], 3, 8),
         ("plain", "none", "speech", "-", 1.0, 6, 6)]
lines = [f"clips {K} {S} {EPS!r}"]
for name, mode, a, b, lam, f1, f2 in cases:
    if mode == "wave":
        fb = wav2fbank(a, b, lam)
    elif mode == "fbank":  # the project's fbank-only mixup: raw log-mel mixed after cut/pad
        fb = lam * wav2fbank(a) + (1 - lam) * wav2fbank(b)
    else:
        fb = wav2fbank(a)
    fb = (fb - MEAN) / STD
    save(name + ".audio", fb.numpy().astype("<f4"))
    if mode == "none":
        img, lab = get_image(a, f1), label_vector(a)
    else:
        img, lab = get_image(a, f1, b, f2, lam), label_vector(a, b, lam)
    save(name + ".image", img.numpy().astype("<f4"))
    save(name + ".label", lab.numpy().astype("<f4"))
    lines.append(f"{name} {mode} {a} {b} {lam!r} {f1} {f2}")
    print(f"gen_mixup: {name}: {mode} {a} + {b}, lambda {lam:.6f}")
with open(os.path.join(out, "index.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
