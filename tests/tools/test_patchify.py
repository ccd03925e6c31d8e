#!/usr/bin/python3
"""test_patchify.py: the patchify tool end to end: tokens against the PyTorch reimplementation of the
reference's patchify (tests/ref/gen_patchify.py), norm_pix targets, JPEG frames against PIL's decode, frame
selection, round trips through --inverse (also with overlapping patches), and refusals with exit 2 naming
the record, under the plain and sanitizer builds."""
import io
import os
import subprocess
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toolenv  # noqa: E402
from toolenv import ASAN_BIN, BIN, test  # noqa: E402
import cavstream  # noqa: E402

ASAN = ASAN_BIN
REF = os.path.join(toolenv.REF, "gen_patchify")


def run(args, data, code=0, binary=None):
    p = subprocess.run([os.path.join(binary or BIN, "patchify")] + args, input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if p.returncode != code:
        raise AssertionError(f"patchify {' '.join(args)}: exit {p.returncode}, wanted {code}: "
                             f"{p.stderr.decode(errors='replace')[-400:]}")
    return p.stdout, p.stderr.decode(errors="replace")


def ref(name, shape, dtype="<f4"):
    return np.fromfile(os.path.join(REF, name), dtype).reshape(shape)


def records(data):
    return {rid: dict(t) for rid, _, t in cavstream.decode(data)[1]}


FBANK = ref("fbank.f32", (1024, 128))
FRAME = ref("frame.u8", (224, 224, 3), "u1")
rng = np.random.default_rng(3)
FRAMES = np.concatenate([FRAME[None], rng.integers(0, 256, (9, 224, 224, 3), dtype=np.uint8)])


def base_stream():
    return cavstream.encode([("clip", {"sample_rate": "16000"}, [("fbank", FBANK), ("frames", FRAMES)])])


def tokens_match_reference():
    for b in [BIN] + ([ASAN] if ASAN else []):
        t = records(run([], base_stream(), binary=b)[0])["clip"]
        assert np.array_equal(t["audio_patches"], ref("audio_tokens.f32", (512, 256)))
        vp = t["video_patches"]
        assert vp.shape == (10, 196, 768), vp.shape
        d = np.abs(vp[0] - ref("video_tokens.f32", (196, 768))).max()
        assert d <= 1e-6, d
        assert np.array_equal(t["fbank"], FBANK) and np.array_equal(t["frames"], FRAMES)  # inputs kept


def norm_pix_matches_reference():
    t = records(run(["--norm-pix"], base_stream())[0])["clip"]
    da = np.abs(t["audio_patches"] - ref("audio_normpix.f32", (512, 256))).max()
    dv = np.abs(t["video_patches"][0] - ref("video_normpix.f32", (196, 768))).max()
    print(f"  norm_pix max abs diff: audio {da:.3g}, video {dv:.3g}")
    assert da <= 1e-5 and dv <= 1e-5


def frame_selection_and_raw_pixels():
    t = records(run(["--frame", "5", "--video-only", "--image-norm", "none"], base_stream())[0])["clip"]
    assert "audio_patches" not in t
    vp = t["video_patches"]
    assert vp.shape == (196, 768)
    f = FRAMES[5]
    # token (row 3, col 7), element (p=2, q=9, c=1)
    assert vp[3 * 14 + 7, (2 * 16 + 9) * 3 + 1] == f[3 * 16 + 2, 7 * 16 + 9, 1]
    run(["--frame", "10"], base_stream(), code=2)


def jpeg_frames_match_pil():
    blobs = []
    for k in range(3):
        b = io.BytesIO()
        Image.fromarray(FRAMES[k]).save(b, "JPEG")  # PIL defaults, as the reference stores frames
        blobs.append(b.getvalue())
    offs = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    data = cavstream.encode([("j", {}, [("frames_jpeg", np.frombuffer(b"".join(blobs), np.uint8)),
                                        ("frames_jpeg_offsets", offs)])])
    t = records(run(["--image-norm", "none", "--drop-input"], data)[0])["j"]
    assert "frames_jpeg" not in t and "frames_jpeg_offsets" not in t
    vp = t["video_patches"]
    assert vp.shape == (3, 196, 768)
    for k in range(3):
        pil = np.asarray(Image.open(io.BytesIO(blobs[k])).convert("RGB"))
        want = pil.reshape(14, 16, 14, 16, 3).transpose(0, 2, 1, 3, 4).reshape(196, 768)
        d = np.abs(vp[k] - want)
        print(f"  jpeg frame {k}: vs PIL decode max abs diff {d.max():.0f}, mean {d.mean():.3f}")
        assert d.max() <= 2 and d.mean() <= 0.05
    bad = cavstream.encode([("broken", {}, [("frames_jpeg", np.frombuffer(blobs[0][:200], np.uint8)),
                                             ("frames_jpeg_offsets", np.array([0, 200], np.int64))])])
    _, err = run([], bad, code=2)
    assert "'broken'" in err and "frames_jpeg" in err, err


def inverse_round_trips():
    for args in ([], ["-p", "16", "-s", "8"], ["-p", "8"]):
        fwd = run(args + ["--drop-input"], base_stream())[0]
        t = records(fwd)["clip"]
        assert "fbank" not in t and "frames" not in t
        back = records(run(args + ["--inverse", "--drop-input"], fwd)[0])["clip"]
        assert set(back) == {"fbank", "frames"}, set(back)
        if args == [] or args == ["-p", "8"]:
            assert np.array_equal(back["fbank"], FBANK)
        else:  # overlaps are averaged: equal values, up to the rounding of their mean
            assert np.allclose(back["fbank"], FBANK, rtol=1e-6, atol=0)
        assert np.array_equal(back["frames"], FRAMES), np.abs(back["frames"].astype(int) - FRAMES).max()


def refusals_name_the_record():
    data = cavstream.encode([("good", {}, [("fbank", FBANK)]), ("empty", {}, [("labels", np.zeros(3, np.float32))])])
    _, err = run([], data, code=2)
    assert "'empty'" in err and "record 1" in err, err
    data = cavstream.encode([("f16", {}, [("frames", np.zeros((2, 224, 224, 3), np.float32))])])
    _, err = run([], data, code=2)
    assert "frames" in err and "'f16'" in err, err
    data = cavstream.encode([("small", {}, [("fbank", np.zeros((10, 128), np.float32))])])
    run([], data, code=2)
    run(["--patch", "0"], b"", code=1)


test(tokens_match_reference)
test(norm_pix_matches_reference)
test(frame_selection_and_raw_pixels)
test(jpeg_frames_match_pil)
test(inverse_round_trips)
test(refusals_name_the_record)
sys.exit(toolenv.status())
