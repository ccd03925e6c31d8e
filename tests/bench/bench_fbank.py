#!/usr/bin/python3
"""bench_fbank.py: clips/s of the fbank computation on one core, against torchaudio's kaldi fbank called as
the reference does (torch.set_num_threads(1)) and against the FFT floor (the same transforms fbank runs,
lib/media/rfft.c with pocketfft's arithmetic, over the same frames with nothing else; FFTW's floor, frame by frame
with an FFTW_ESTIMATE plan, is printed for comparison), all on the same 10 s clips of real speech (asterisk
prompts, 16 kHz), measured in one run as thread CPU time (the machine is shared), best of several passes.
Prints ratios and the load average; asserts nothing (not a test). Run by `make bench`; results go to
tests/bench/RESULTS.md by hand."""
import glob
import os
import resource
import subprocess
import sys
import tempfile
import time
import wave

import numpy as np
import torch
import torchaudio

torch.set_num_threads(1)
src = os.environ.get("CAV_SRC", ".")
build = os.environ.get("CAV_BUILD", os.path.join(src, "build"))
NCLIPS, REPS = 20, 5

tmp = tempfile.mkdtemp(prefix="bench_fbank.")
prompts = sorted(glob.glob("/usr/share/asterisk/sounds/en_US_f_Allison/*.g722"))
if not prompts:
    sys.exit("bench_fbank: no asterisk G.722 prompts (apt-get install asterisk-core-sounds-en-g722)")
speech = []
for p in prompts[:120]:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "g722", "-i", p, "-f", "s16le", "-ac", "1",
                          "-"], check=True, stdout=subprocess.PIPE).stdout
    speech.append(np.frombuffer(raw, dtype="<i2"))
speech = np.concatenate(speech)
clips = []
for i in range(NCLIPS):
    start = (i * 160000) % max(1, len(speech) - 160000)
    pcm = speech[start:start + 160000]
    path = os.path.join(tmp, f"clip{i:02d}.wav")
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.astype("<i2").tobytes())
    clips.append(path)

# torchaudio, exactly the reference's _wav2fbank after loading (mean subtraction, kaldi.fbank).
waves = [torchaudio.load(c)[0] for c in clips]
kw = dict(htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning", num_mel_bins=128,
          dither=0.0, frame_shift=10)
best_torch = 1e30
for _ in range(5):
    t = time.thread_time()
    for _ in range(REPS):
        for w in waves:
            x = w - w.mean()
            fb = torchaudio.compliance.kaldi.fbank(x, **kw)
    best_torch = min(best_torch, time.thread_time() - t)

# The C side: cav_fbank_compute and the FFT floor, built against the release libcav.
exe = os.path.join(tmp, "fbank_speed")
subprocess.run(["cc", "-std=c11", "-D_GNU_SOURCE", "-O2", "-march=x86-64-v2", "-fopenmp",
                *["-I" + os.path.join(src, "lib", d) for d in ("base", "formats", "media")], os.path.join(src, "tests/bench/fbank_speed.c"),
                os.path.join(build, "rel/libcav.a"), "-lfftw3f", "-lm", "-o", exe], check=True)
res = subprocess.run([exe, str(REPS)] + clips, check=True, stdout=subprocess.PIPE, text=True,
                     env=dict(os.environ, OMP_NUM_THREADS="1")).stdout
vals = dict(line.split()[:2] for line in res.splitlines())
n = REPS * NCLIPS
t_torch, t_fb, t_fft = best_torch / n, float(vals["fbank"]) / n, float(vals["fft"]) / n
t_fftw = float(vals["fftw"]) / n
print(f"clips: {NCLIPS} x 10 s real speech at 16 kHz, {REPS} passes, best of 5, thread CPU time")
print(f"torchaudio kaldi.fbank (1 thread): {t_torch * 1e3:.3f} ms/clip  {1 / t_torch:8.1f} clips/s")
print(f"libcav fbank:                      {t_fb * 1e3:.3f} ms/clip  {1 / t_fb:8.1f} clips/s")
print(f"FFT floor (998 rfft.c r2c 512):    {t_fft * 1e3:.3f} ms/clip  {1 / t_fft:8.1f} clips/s")
print(f"FFTW floor (998 FFTW r2c 512):     {t_fftw * 1e3:.3f} ms/clip  {1 / t_fftw:8.1f} clips/s")
print(f"ratio: fbank vs torchaudio {t_torch / t_fb:.2f}x faster (goal >= 2.5x); "
      f"fbank / FFT floor {t_fb / t_fft:.2f}x (goal <= 1.3x); fbank / FFTW floor {t_fb / t_fftw:.2f}x")
print(f"load average (1, 5, 15 min): {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

# The fbank tool end to end on a record stream of the same clips (decode the input stream, compute, zstd
# the output stream), as child CPU time.
sys.path.insert(0, os.path.join(src, "tests/tools"))
import cavstream  # noqa: E402

pcms = [np.frombuffer(wave.open(c).readframes(160000), "<i2") for c in clips]
stream = cavstream.encode([(f"c{r}_{i}", {"sample_rate": "16000"}, [("wave", p)])
                           for r in range(REPS) for i, p in enumerate(pcms)])
tool = os.path.join(os.environ.get("CAV_BIN", os.path.join(build, "bin")), "fbank")
for label, args in (("fbank tool, f32 output", []), ("fbank tool, -l -3", ["-l", "-3"]),
                    ("fbank tool, --half --drop-wave", ["--half", "--drop-wave"])):
    best = 1e30
    for _ in range(3):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([tool] + args, input=stream, stdout=subprocess.DEVNULL, check=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        best = min(best, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    print(f"{label + ':':35s}{best / n * 1e3:.3f} ms/clip  {n / best:8.1f} clips/s  "
          f"({t_torch / (best / n):.2f}x torchaudio's compute alone; stream in and out)")
for f in glob.glob(os.path.join(tmp, "*")):
    os.unlink(f)
os.rmdir(tmp)
