#!/usr/bin/python3
"""test_fbank.py: the fbank tool end to end: WAV files and record streams in, streams and shards out,
values against torchaudio's golden outputs (tests/ref/gen_fbank.py), options (--normalize, --half,
--target-length, --bins, --drop-wave), other fields kept, and refusals with exit 2 naming the record
(non-finite samples, empty audio, unsupported rate, missing wave) under the plain and sanitizer builds."""
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toolenv  # noqa: E402
from toolenv import ASAN_BIN, BIN, test  # noqa: E402
import cavstream  # noqa: E402

os.environ.setdefault("HDF5_PLUGIN_PATH", os.path.join(os.environ.get("CAV_BUILD", "build"), "plugin"))
import h5py  # noqa: E402  (after HDF5_PLUGIN_PATH is set)

ASAN = ASAN_BIN
REF = os.path.join(toolenv.REF, "gen_fbank")
tmp = tempfile.mkdtemp(prefix="test_fbank.")


def run(args, data=None, code=0, binary=None):
    exe = os.path.join(binary or BIN, "fbank")
    p = subprocess.run([exe] + args, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != code:
        raise AssertionError(f"fbank {' '.join(args)}: exit {p.returncode}, wanted {code}: "
                             f"{p.stderr.decode(errors='replace')[-400:]}")
    return p.stdout, p.stderr.decode(errors="replace")


def index():
    cases = {}
    for line in open(os.path.join(REF, "index.txt")):
        f = line.split()
        cases[f[0]] = dict(rate=int(f[1]), ch=int(f[2]), n=int(f[3]), frames=int(f[4]), bins=int(f[5]),
                           window=f[6], flen=f[7], fshift=f[8], low=f[9], high=f[10], ok=f[11] == "ok")
    return cases


h5_row = cavstream.h5_row


def records(data):
    return {rid: (attrs, dict(t)) for rid, attrs, t in cavstream.decode(data)[1]}


def wav_input_matches_torchaudio():
    """Every case torchaudio computes, through the tool: within 1e-4 of it in every cell (the limit
    fbank(1) promises; measured: about 1e-6, one float ulp of the log)."""
    cases = index()
    names = [name for name, c in cases.items() if c["ok"]]
    assert len(names) >= 12, names
    worst = 0.0
    for name in names:
        c = cases[name]
        args = ["--wav", os.path.join(REF, name + ".wav"), "--bins", str(c["bins"]), "--window", c["window"],
                "--frame-length", c["flen"], "--frame-shift", c["fshift"], "--low-freq", c["low"],
                "--high-freq", c["high"]]
        out, _ = run(args)
        attrs, t = records(out)[name]
        fb = t["fbank"]
        assert fb.dtype == np.float32 and fb.shape == (1024, c["bins"]), fb.shape
        assert attrs["sample_rate"] == str(c["rate"])
        assert t["wave"].shape == ((c["ch"], c["n"]) if c["ch"] > 1 else (c["n"],))
        ref = np.fromfile(os.path.join(REF, name + ".out.f32"), "<f4").reshape(c["frames"], c["bins"])
        m = min(1024, c["frames"])
        d = np.abs(fb[:m] - ref[:m])
        print(f"  {name}: {c['frames']} frames, max abs diff {d.max():.3g}, mean {d.mean():.3g}")
        assert d.max() <= 1e-4, f"{name}: max abs diff {d.max():.3g} over 1e-4"
        assert not fb[m:].any(), "padding rows are not zero"
        worst = max(worst, float(d.max()))
    print(f"  all {len(names)} cases: max abs diff {worst:.3g}")


def audio_files_through_ffmpeg():
    # FLAC is lossless and already 16 kHz mono: --audio (FFmpeg, as av-extract) must give the same values
    # as --wav on the original.
    wav = os.path.join(REF, "speech16k.wav")
    flac = os.path.join(tmp, "speech16k.flac")
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", wav, flac], check=True)
    a = records(run(["--wav", wav])[0])["speech16k"][1]
    b = records(run(["--audio", flac])[0])["speech16k"][1]
    assert np.array_equal(a["wave"], b["wave"]) and np.array_equal(a["fbank"], b["fbank"])
    _, err = run(["--audio", "/etc/hostname"], code=2)
    assert "/etc/hostname" in err, err


def stream_in_shard_out_keeps_fields():
    rng = np.random.default_rng(5)
    wave16 = (rng.standard_normal(20000) * 3000).astype(np.int16)
    wavef = (rng.standard_normal((2, 9000)) * 0.1).astype(np.float32)
    data = cavstream.encode([
        ("a", {"sample_rate": "16000", "source": "a.mp4"}, [("wave", wave16), ("labels", np.arange(3, dtype=np.float32))]),
        ("b", {"sample_rate": "22050"}, [("wave", wavef)]),
    ], {"dataset": "unit"})
    shard = os.path.join(tmp, "out.h5")
    run(["-o", shard, "--drop-wave", "-"], data)
    with h5py.File(shard, "r") as f:
        ids = [x.decode() if isinstance(x, bytes) else x for x in f["id"][:]]
        assert ids == ["a", "b"], ids
        assert "wave" not in f, list(f)
        assert f["fbank"].shape[1:] == (1024, 128)
        assert np.array_equal(h5_row(f, "labels", 0), np.arange(3, dtype=np.float32))
        assert h5_row(f, "labels", 1) is None
        fb_a = f["fbank"][0]
    # The same record through a stream gives the same values, and the wave is kept without --drop-wave.
    out, _ = run([], data)
    recs = records(out)
    assert np.array_equal(recs["a"][1]["fbank"], fb_a)
    assert np.array_equal(recs["a"][1]["wave"], wave16) and recs["a"][0]["source"] == "a.mp4"
    # Natural frame counts: 1 + (20000-400)//160 = 123 at 16 kHz; at 22.05 kHz 551/220 -> 1 + (9000-551)//220.
    n_a = 1 + (20000 - 400) // 160
    n_b = 1 + (9000 - 551) // 220
    assert recs["a"][1]["fbank"][n_a - 1].any() and not recs["a"][1]["fbank"][n_a:].any()
    assert recs["b"][1]["fbank"][n_b - 1].any() and not recs["b"][1]["fbank"][n_b:].any()


def options_normalize_half_length():
    wav = os.path.join(REF, "speech16k.wav")
    raw = records(run(["--wav", wav])[0])["speech16k"][1]["fbank"]
    norm = records(run(["--wav", wav, "--normalize", "-5.081,4.4849"])[0])["speech16k"][1]["fbank"]
    want = ((raw - np.float32(-5.081)) / np.float32(4.4849)).astype(np.float32)
    assert np.array_equal(norm, want), np.abs(norm - want).max()
    assert abs(norm[-1, 0] - 1.1329127) < 1e-6  # padding rows: raw 0 -> +1.1329 (cav-numerics(7) 1.3)
    half = records(run(["--wav", wav, "--half"])[0])["speech16k"][1]["fbank"]
    assert half.dtype == np.float16 and np.array_equal(half, raw.astype(np.float16))
    full = records(run(["--wav", wav, "-t", "0", "--bins", "64"])[0])["speech16k"][1]["fbank"]
    assert full.shape == (178, 64), full.shape


def bad_input_exits_2_naming_the_record():
    def one(rid, attrs, wave, needle):
        data = cavstream.encode([("ok", {"sample_rate": "16000"}, [("wave", np.zeros(800, np.int16))]),
                                 (rid, attrs, [] if wave is None else [("wave", wave)])])
        for b in [BIN] + ([ASAN] if ASAN else []):
            _, err = run([], data, code=2, binary=b)
            assert f"'{rid}'" in err and needle in err and "record 1" in err, err
    w = np.zeros(16000, np.float32)
    w[77] = np.nan
    one("nan", {"sample_rate": "16000"}, w, "not finite")
    one("empty", {"sample_rate": "16000"}, np.zeros(0, np.int16), "no audio")
    one("slow", {"sample_rate": "30"}, np.zeros(800, np.int16), "unsupported rate")
    one("nowave", {"sample_rate": "16000"}, None, "no 'wave'")
    one("short", {"sample_rate": "16000"}, np.zeros(100, np.int16), "shorter than one")
    run(["--window", "kaiser"], b"", code=1)
    run(["--wav", "/nonexistent.wav"], code=2)


def sanitizer_build_agrees():
    if not ASAN:
        raise AssertionError("CAV_ASAN_BIN not set")
    wav = os.path.join(REF, "stereo44k.wav")
    a = records(run(["--wav", wav])[0])["stereo44k"][1]["fbank"]
    b = records(run(["--wav", wav], binary=ASAN)[0])["stereo44k"][1]["fbank"]
    # The sanitizer build runs the baseline (non-AVX2) code path: every operation is the same float32 rounding
    # (no FMA contraction, the same summation orders), so the bits are the same.
    assert np.array_equal(a, b), np.abs(a - b).max()


test(wav_input_matches_torchaudio)
test(audio_files_through_ffmpeg)
test(stream_in_shard_out_keeps_fields)
test(options_normalize_half_length)
test(bad_input_exits_2_naming_the_record)
test(sanitizer_build_agrees)
for f in os.listdir(tmp):
    os.unlink(os.path.join(tmp, f))
os.rmdir(tmp)
sys.exit(toolenv.status())
