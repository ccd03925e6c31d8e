#!/usr/bin/python3
"""gen_avextract.py OUTDIR: test clips and the reference's own preprocessing of them, for av-extract.

Clips are assembled here with Debian's ffmpeg from real material: speech from espeak-ng (several voices, so
the channels of a stereo file differ), and camera pans over the two real photographs shipped with
python3-sklearn (china.jpg, flower.jpg). Then, for each clip, the reference's preprocessing is run exactly as
cav-numerics(7) 1.1/1.2 describe:
  audio:  `ffmpeg -i X -vn -ar 16000 inter.wav` then `sox inter.wav out.wav remix 1`  -> NAME.ref.s16
          (plus the channel mean of inter.wav, rounded, for --downmix)                 -> NAME.mix.s16
  frames: OpenCV VideoCapture, CAP_PROP_POS_FRAMES seek to int(i*total/10)-1 + read, BGR->RGB, then
          torchvision's Resize(224) (PIL bilinear, antialiased) and CenterCrop(224), ToTensor, save_image,
          with torchvision itself when installed (else a PIL reimplementation, checked equal) -> NAME.frames.u8
          the same frames through PIL's JPEG encoder at its defaults (save_image)     -> NAME.{0..9}.jpg
          and those JPEGs decoded back by PIL (as the training loader reads them)     -> NAME.jpgdec.u8
Writes cases.tsv: kind name file and, for video, fps / frame count / total / indices as OpenCV reports them.
Bad inputs for the tool tests are made here too (bad/).
"""
import json, os, shutil, subprocess, sys, tempfile
import numpy as np
import cv2
from PIL import Image
from sklearn.datasets import load_sample_images
try:  # the reference's own transforms when Debian's python3-torchvision is there
    import torch
    import torchvision.transforms as T
    from torchvision.utils import save_image
except ImportError:
    T = None

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for d in ("audio", "video", "bad"):
    os.makedirs(os.path.join(out, d), exist_ok=True)
tmp = tempfile.mkdtemp(prefix="gen_avextract.")


def run(cmd, **kw):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def ff(*args):
    run(["ffmpeg", "-nostdin", "-y", "-hide_banner", "-loglevel", "error", *args])


def read_wav_s16(path):
    """Minimal RIFF reader (ffmpeg writes WAVE_FORMAT_EXTENSIBLE for >2 channels, which `wave` refuses)."""
    b = open(path, "rb").read()
    assert b[:4] == b"RIFF" and b[8:12] == b"WAVE"
    pos, ch, data = 12, None, None
    while pos + 8 <= len(b):
        cid, size = b[pos:pos + 4], int.from_bytes(b[pos + 4:pos + 8], "little")
        body = b[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            ch = int.from_bytes(body[2:4], "little")
            assert int.from_bytes(body[14:16], "little") == 16
        elif cid == b"data":
            data = body
        pos += 8 + size + (size & 1)
    return np.frombuffer(data, dtype="<i2").reshape(-1, ch)


# ---- real speech: espeak-ng voices, 22.05 kHz mono
texts = [("en-us", "one two three four five six seven eight nine ten, the quick brown fox jumps over the lazy dog"),
         ("de", "eins zwei drei vier fuenf sechs sieben acht neun zehn, guten Morgen und auf Wiedersehen"),
         ("fr", "un deux trois quatre cinq six sept huit neuf dix, bonjour et merci beaucoup"),
         ("es", "uno dos tres cuatro cinco seis siete ocho nueve diez, buenos dias amigos"),
         ("it", "uno due tre quattro cinque sei sette otto nove dieci, buongiorno a tutti"),
         ("en-gb", "zero one two three four five six seven eight nine, good evening everybody")]
voices = []
for k, (v, t) in enumerate(texts):
    p = os.path.join(tmp, "v%d.wav" % k)
    run(["espeak-ng", "-v", v, "-s", "150", "-w", p, t])
    voices.append(p)


def speech(rate, channels, seconds, name):
    """A real-speech file: channel c is voice c (looped to `seconds`), resampled by ffmpeg to `rate`."""
    args = []
    for c in range(channels):
        args += ["-stream_loop", "-1", "-i", voices[c % len(voices)]]
    chains = ["[%d:a]atrim=0:%g,asetpts=N/SR/TB,aresample=%d,aformat=channel_layouts=mono" % (c, seconds, rate)
              for c in range(channels)]
    if channels == 1:
        fc = chains[0] + "[out]"
    else:
        fc = ";".join(ch + "[a%d]" % c for c, ch in enumerate(chains)) + ";" + \
            "".join("[a%d]" % c for c in range(channels)) + "amerge=inputs=%d[out]" % channels
    p = os.path.join(tmp, name + ".wav")
    ff(*args, "-filter_complex", fc, "-map", "[out]", "-c:a", "pcm_s16le", p)
    return p


cases = []
# ---- audio parity: several codecs, rates and channel counts
audio_cases = [
    ("wav_s16_44k_st", 44100, 2, ["-c:a", "pcm_s16le"], "wav"),
    ("wav_s16_8k_mono", 8000, 1, ["-c:a", "pcm_s16le"], "wav"),
    ("wav_s16_16k_st", 16000, 2, ["-c:a", "pcm_s16le"], "wav"),
    ("wav_f32_48k_st", 48000, 2, ["-c:a", "pcm_f32le"], "wav"),
    ("flac_22k_st", 22050, 2, ["-c:a", "flac"], "flac"),
    ("flac_48k_6ch", 48000, 6, ["-c:a", "flac"], "flac"),
    ("vorbis_44k_st", 44100, 2, ["-c:a", "libvorbis", "-q:a", "4"], "ogg"),
    ("vorbis_11k_mono", 11025, 1, ["-c:a", "libvorbis"], "ogg"),
    ("aac_44k_st", 44100, 2, ["-c:a", "aac", "-b:a", "128k"], "m4a"),
    ("aac_32k_mono", 32000, 1, ["-c:a", "aac"], "m4a"),
    ("opus_48k_st", 48000, 2, ["-c:a", "libopus", "-b:a", "64k"], "opus"),
    ("opus_24k_mono", 24000, 1, ["-c:a", "libopus"], "ogg"),
]


def audio_ref(src, name):
    inter = os.path.join(tmp, name + "_intermediate.wav")
    ff("-i", src, "-vn", "-ar", "16000", inter)           # cav-numerics(7) 1.1 step 1
    one = os.path.join(tmp, name + ".wav")
    run(["sox", inter, one, "remix", "1"])                 # cav-numerics(7) 1.1 step 2
    x = read_wav_s16(inter)
    y = read_wav_s16(one)[:, 0]
    assert np.array_equal(y, x[:, 0]), "sox remix 1 is not channel 1"
    y.astype("<i2").tofile(os.path.join(out, "audio", name + ".ref.s16"))
    mix = np.floor(x.astype(np.float64).mean(axis=1) + 0.5).clip(-32768, 32767).astype("<i2")
    mix.tofile(os.path.join(out, "audio", name + ".mix.s16"))
    return x.shape


for name, rate, ch, codec, ext in audio_cases:
    src = speech(rate, ch, 7.3, name)
    dst = os.path.join(out, "audio", name + "." + ext)
    ff("-i", src, *codec, dst)
    shape = audio_ref(dst, name)
    cases.append(["audio", name, "audio/" + name + "." + ext, str(rate), str(ch), str(shape[0])])

# ---- video: camera pans over real photographs, muxed with real speech
photos = [np.asarray(im) for im in load_sample_images().images]  # 427x640 RGB each


def pan_frames(w, h, n, photo):
    """n frames of w x h: a window of the photo's aspect sliding and zooming over it."""
    ph, pw = photo.shape[:2]
    ar = w / h
    for t in range(n):
        s = 0.55 + 0.35 * (t / max(n - 1, 1))
        ch_ = int(ph * s)
        cw = int(ch_ * ar)
        if cw > pw:
            cw, ch_ = pw, int(pw / ar)
        x0 = int((pw - cw) * (0.5 + 0.5 * np.sin(t * 0.05)))
        y0 = int((ph - ch_) * (0.5 + 0.5 * np.cos(t * 0.07)))
        im = Image.fromarray(photo[y0:y0 + ch_, x0:x0 + cw]).resize((w, h), Image.BICUBIC)
        yield np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


video_cases = [
    # name, w, h, fps, seconds, container, video codec args, audio codec args, photo
    ("h264_25_640x360", 640, 360, "25", 12, "mp4", ["-c:v", "libx264", "-preset", "fast"], ["-c:a", "aac"], 0),
    ("h264_30_360x640_portrait", 360, 640, "30", 11, "mp4", ["-c:v", "libx264", "-g", "30"], ["-c:a", "aac"], 1),
    ("h264_2997_320x240", 320, 240, "30000/1001", 12, "mkv", ["-c:v", "libx264", "-bf", "0"], ["-c:a", "flac"], 0),
    ("h264_25_short_4s", 400, 300, "25", 4, "mp4", ["-c:v", "libx264", "-g", "12"], ["-c:a", "aac"], 1),
    ("vp9_24_480x270", 480, 270, "24", 11, "webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k"], ["-c:a", "libopus"], 1),
    ("vp9_15_300x500_portrait", 300, 500, "15", 10.5, "webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "15"], ["-c:a", "libopus"], 0),
    ("mpeg4_20_500x320", 500, 320, "20", 12, "mkv", ["-c:v", "mpeg4", "-q:v", "4"], ["-c:a", "libvorbis"], 0),
    ("h264_50_224x224", 224, 224, "50", 10.5, "mp4", ["-c:v", "libx264", "-preset", "veryfast"], ["-c:a", "aac"], 1),
    # keyframes denser than the wanted frames: whole GOPs between them can be dropped
    ("dense_h264_30_640x360", 640, 360, "30", 11, "mp4", ["-c:v", "libx264", "-g", "5", "-bf", "2"], ["-c:a", "aac"], 0),
    ("dense_h264_24_480x270", 480, 270, "24", 11, "mkv", ["-c:v", "libx264", "-g", "6"], ["-c:a", "flac"], 1),
    ("dense_vp9_25_320x240", 320, 240, "25", 11, "webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "4"], ["-c:a", "libopus"], 0),
]


def tv_resize_crop(im):
    """torchvision 0.14 Resize(224) + CenterCrop(224) on a PIL image (functional_pil / _compute_resized_output_size)."""
    w, h = im.size
    short, long_ = (w, h) if w <= h else (h, w)
    if short != 224:
        new_short, new_long = 224, int(224 * long_ / short)
        nw, nh = (new_short, new_long) if w <= h else (new_long, new_short)
        im = im.resize((nw, nh), Image.BILINEAR)
    w, h = im.size
    top, left = int(round((h - 224) / 2.0)), int(round((w - 224) / 2.0))
    return im.crop((left, top, left + 224, top + 224))


def frame_ref(path, name):
    vidcap = cv2.VideoCapture(path)                        # cav-numerics(7) 1.2, as extract_video_frame.py
    fps = vidcap.get(cv2.CAP_PROP_FPS)
    count = int(vidcap.get(cv2.CAP_PROP_FRAME_COUNT))
    total = min(count, int(fps * 10))
    idx = []
    frames = np.zeros((10, 224, 224, 3), np.uint8)
    jdec = np.zeros((10, 224, 224, 3), np.uint8)
    for i in range(10):
        frame_idx = int(i * (total / 10))
        idx.append(frame_idx)
        vidcap.set(cv2.CAP_PROP_POS_FRAMES, frame_idx - 1)
        ok, fr = vidcap.read()
        assert ok, (path, i)
        im = Image.fromarray(cv2.cvtColor(fr, cv2.COLOR_BGR2RGB))
        jp = os.path.join(out, "video", "%s.%d.jpg" % (name, i))
        mine = np.asarray(tv_resize_crop(im))
        if T is not None:  # extract_video_frame.py's transform and save, verbatim in substance
            x = T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor()])(im)
            save_image(x, jp)
            frames[i] = (x * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
            assert np.array_equal(frames[i], mine), "PIL reimplementation of Resize/CenterCrop disagrees"
        else:
            frames[i] = mine
            # save_image: uint8(clamp(x*255+0.5)) of ToTensor(x)=u8/255 gives the u8 back; PIL JPEG defaults.
            x = (mine.astype(np.float32) / 255.0) * 255.0 + 0.5
            Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).save(jp)
        jdec[i] = np.asarray(Image.open(jp).convert("RGB"))  # what the training loader's PIL decode gives
    frames.tofile(os.path.join(out, "video", name + ".frames.u8"))
    jdec.tofile(os.path.join(out, "video", name + ".jpgdec.u8"))
    return fps, count, total, idx


for name, w, h, fps, secs, cont, vc, ac, ph in video_cases:
    a = speech(44100 if ac[1] != "libopus" else 48000, 2, secs, "a_" + name)
    dst = os.path.join(out, "video", name + "." + cont)
    p = subprocess.Popen(["ffmpeg", "-nostdin", "-y", "-hide_banner", "-loglevel", "error",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "%dx%d" % (w, h), "-r", fps, "-i", "-",
                          "-i", a, *vc, "-pix_fmt", "yuv420p", *ac, "-shortest", dst], stdin=subprocess.PIPE)
    fr = eval(fps.replace("/", "/1.0/")) if "/" in fps else float(fps)
    for f in pan_frames(w, h, int(round(fr * secs)), photos[ph]):
        p.stdin.write(f.tobytes())
    p.stdin.close()
    assert p.wait() == 0, name
    audio_ref(dst, name)
    vfps, count, total, idx = frame_ref(dst, name)
    cases.append(["video", name, "video/%s.%s" % (name, cont), repr(vfps), str(count), str(total),
                  ",".join(map(str, idx))])

# ---- bad inputs for the tool tests
good = os.path.join(out, "video", "h264_25_640x360.mp4")
ff("-i", good, "-an", "-c", "copy", os.path.join(out, "bad", "no_audio.mp4"))
ff("-i", good, "-vn", "-c", "copy", os.path.join(out, "bad", "no_video.m4a"))
b = open(os.path.join(out, "video", "mpeg4_20_500x320.mkv"), "rb").read()
open(os.path.join(out, "bad", "truncated.mkv"), "wb").write(b[:len(b) // 3])
b = open(good, "rb").read()
open(os.path.join(out, "bad", "truncated_head.mp4"), "wb").write(b[:4096])
rng = np.random.default_rng(7)
open(os.path.join(out, "bad", "garbage.mp4"), "wb").write(rng.integers(0, 256, 50000, dtype=np.uint8).tobytes())
open(os.path.join(out, "bad", "empty.mp4"), "wb").close()

with open(os.path.join(out, "cases.tsv"), "w") as f:
    for c in cases:
        f.write("\t".join(c) + "\n")
shutil.rmtree(tmp)
print("gen_avextract: %d cases in %s" % (len(cases), out))
