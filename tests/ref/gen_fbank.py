#!/usr/bin/python3
"""gen_fbank.py OUTDIR: golden log-mel filterbanks from torchaudio.compliance.kaldi.fbank (Debian
python3-torchaudio), called exactly as the reference's AudiosetDataset._wav2fbank (cav-numerics(7) 1.3), on real
recordings (asterisk G.722 prompts, tuxpaint vorbis animal sounds, decoded by ffmpeg to 16-bit WAV) and edge
cases, plus a few non-default option sets. For each case it writes:
  NAME.wav          the input, 16-bit PCM WAV (what the reference loads with torchaudio.load)
  NAME.out.f32      torchaudio's output [frames, bins], raw little-endian float32, before the cut/pad
  NAME.out64.f64    the same call on the waveform in float64 (exact arithmetic), little-endian float64
and a line in index.txt:
  NAME RATE CHANNELS SAMPLES FRAMES BINS WINDOW FRAME_MS SHIFT_MS LOW HIGH STATUS
STATUS is "ok" or "error" (torchaudio refused the input). melbank_RATE.f32 holds get_mel_banks' weights
[128, nfft/2] for the reference arguments at each rate used.

PyTorch's kernels are pinned to its AVX2 set (ATEN_CPU_CAPABILITY=avx2, torch 1.13's default on x86 CPUs
with AVX2, AVX-512 ones included): with its AVX-512 kernels torch sums in 16 lanes instead of 8, and its
own float32 result for digits16k_10s moves by up to 6.8e-4 in the weakest cells (2.4e-4 with its scalar
kernels, which use the C library's cos); pinned, the golden data is the same on every AVX2 machine.
"""
import os
import subprocess
import sys
import wave

os.environ["ATEN_CPU_CAPABILITY"] = "avx2"

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchaudio  # noqa: E402

torch.set_num_threads(1)
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
AST = "/usr/share/asterisk/sounds/en_US_f_Allison"
TUX = "/usr/share/tuxpaint/stamps/animals"


def decode(path, fmt=None, rate=None, channels=1):
    """ffmpeg decode to int16 [channels, n]."""
    cmd = ["ffmpeg", "-v", "error", "-nostdin"] + (["-f", fmt] if fmt else []) + ["-i", path]
    cmd += ["-f", "s16le", "-ac", str(channels)] + (["-ar", str(rate)] if rate else []) + ["-"]
    raw = subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout
    return np.frombuffer(raw, dtype="<i2").reshape(-1, channels).T.copy()


def write_wav(path, pcm, rate):
    with wave.open(path, "wb") as w:
        w.setnchannels(pcm.shape[0])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(pcm.T).astype("<i2").tobytes())


index = []


def case(name, pcm, rate, window="hanning", bins=128, frame_ms=25.0, shift_ms=10.0, low=20.0, high=0.0):
    path = os.path.join(out, name + ".wav")
    write_wav(path, pcm, rate)
    waveform, sr = torchaudio.load(path)
    assert sr == rate
    # The reference: one scalar mean over the whole clip, then kaldi.fbank with its fixed arguments.
    waveform = waveform - waveform.mean()
    status, frames = "ok", 0
    try:
        fb = torchaudio.compliance.kaldi.fbank(
            waveform, htk_compat=True, sample_frequency=sr, use_energy=False, window_type=window,
            num_mel_bins=bins, dither=0.0, frame_shift=shift_ms, frame_length=frame_ms, low_freq=low,
            high_freq=high)
        frames = fb.shape[0]
        fb.numpy().astype("<f4").tofile(os.path.join(out, name + ".out.f32"))
        # The same call in float64: the exact arithmetic that float32 implementations approximate.
        fb64 = torchaudio.compliance.kaldi.fbank(
            waveform.double(), htk_compat=True, sample_frequency=sr, use_energy=False, window_type=window,
            num_mel_bins=bins, dither=0.0, frame_shift=shift_ms, frame_length=frame_ms, low_freq=low,
            high_freq=high)
        fb64.numpy().astype("<f8").tofile(os.path.join(out, name + ".out64.f64"))
    except (AssertionError, RuntimeError):
        status = "error"
    index.append(f"{name} {rate} {pcm.shape[0]} {pcm.shape[1]} {frames} {bins} {window} {frame_ms} "
                 f"{shift_ms} {low} {high} {status}")
    print(f"gen_fbank: {name}: {pcm.shape[0]}x{pcm.shape[1]} at {rate} Hz -> {frames} frames ({status})")


def g722(name):
    return decode(f"{AST}/{name}.g722", fmt="g722")


speech = g722("all-circuits-busy-now")
case("speech16k", speech, 16000)
# Ten seconds exactly (160000 samples -> 998 frames, 26 padded rows), digits spoken back to back.
digits = np.concatenate([g722(f"digits/{d}") for d in range(10)] * 3, axis=1)
case("digits16k_10s", digits[:, :160000], 16000)
# Longer than 1024 frames: 12 s.
long = np.concatenate([digits] * 2, axis=1)[:, :192000]
case("long16k_12s", long, 16000)
case("badger44k", decode(f"{TUX}/mammals/badger.ogg"), 44100)
case("heron22k", decode(f"{TUX}/birds/heron_greatblue_flying.ogg"), 22050)
case("speech8k", decode(f"{AST}/all-circuits-busy-now.g722", fmt="g722", rate=8000), 8000)
# Stereo: the reference takes one mean over both channels, then kaldi.fbank analyses channel 0.
case("stereo44k", decode("/usr/share/tuxpaint/stamps/household/Washing-machine.ogg", channels=2), 44100)
case("stereo48k", decode("/usr/share/tuxpaint/stamps/symbols/math/1_it.ogg", channels=2), 48000)
case("silence16k", np.zeros((1, 48000), dtype=np.int16), 16000)
# Full-scale clipping: speech driven 20 dB over full scale, clipped to the int16 range.
clipped = np.clip(speech.astype(np.int64) * 10, -32768, 32767).astype(np.int16)
case("clipped16k", clipped, 16000)
case("short16k", speech[:, 4000:4300], 16000)  # shorter than one 400-sample window: torchaudio refuses
case("onewindow16k", speech[:, 4000:4400], 16000)  # exactly one frame
# Option sets users change (not the reference's): other windows, bins, mel range, frame sizes.
case("povey40_16k", speech, 16000, window="povey", bins=40, low=60.0, high=-400.0)
case("hamming64_16k", speech, 16000, window="hamming", bins=64, high=7000.0)
case("blackman80_8k", decode(f"{AST}/all-circuits-busy-now.g722", fmt="g722", rate=8000), 8000,
     window="blackman", bins=80, frame_ms=50.0, shift_ms=20.0)
case("rect23_16k", speech, 16000, window="rectangular", bins=23, low=100.0)

for rate, nfft in ((16000, 512), (8000, 256), (22050, 1024), (44100, 2048)):
    bank, _ = torchaudio.compliance.kaldi.get_mel_banks(128, nfft, float(rate), 20.0, 0.0, 100.0, -500.0, 1.0)
    bank.numpy().astype("<f4").tofile(os.path.join(out, f"melbank_{rate}.f32"))

with open(os.path.join(out, "index.txt"), "w") as f:
    f.write("\n".join(index) + "\n")
