"""test_recall_gallery.py: cav-recall --html DIR, the gallery page, opened in headless Chromium.

Clips with frames (raw u8 and JPEG) and fbank, embeddings with planted matches; the page must show
--html-queries queries per direction with --topk items each, every <img> must load (naturalWidth > 0,
checked by a script run in Chromium on a copy of the page), the own items must be marked where the
top-k lists (--matches) hold them, the frame PNG must equal the record's middle frame pixel for pixel
(decoded by PIL) and the spectrogram PNG must be T wide and F high with its loudest column brightest.
A screenshot is kept under $CAV_TEST_LOGS (recall-gallery.png). SKIP without chromium or PIL."""
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toolenv  # noqa: E402
from toolenv import BIN, LOGS, report  # noqa: E402
import cavstream  # noqa: E402

TMP = tempfile.mkdtemp(prefix='cav-recall-gallery-')


try:
    from PIL import Image
except ImportError as e:
    print('SKIP gallery: %s' % e)
    sys.exit(0)
chromium = shutil.which('chromium') or shutil.which('chromium-browser')

g = np.random.default_rng(3)
n, D, T, F, S = 30, 16, 96, 128, 48
ids = ['clip <%02d> & "x"' % i if i == 4 else 'clip%02d' % i for i in range(n)]
clips = []
for i in range(n):
    frames = g.integers(0, 256, (10, S, S, 3), dtype=np.uint8)
    fb = (g.standard_normal((T, F)) - 4).astype(np.float32)
    fb[i % T, :] += 8  # a loud frame: the brightest column of the picture
    t = [('fbank', fb)]
    if i % 2:
        t.append(('frames', frames))
    else:
        blobs = []
        for k in range(10):
            b = io.BytesIO()
            Image.fromarray(frames[k]).save(b, 'JPEG')
            blobs.append(b.getvalue())
        off = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        t += [('frames_jpeg', np.frombuffer(b''.join(blobs), np.uint8)), ('frames_jpeg_offsets', off)]
    clips.append((ids[i], {}, t))
pc = os.path.join(TMP, 'clips.cavs')
with open(pc, 'wb') as f:
    f.write(cavstream.encode(clips))
a = g.standard_normal((n, D)).astype(np.float32)
v = (a + 0.8 * g.standard_normal((n, D))).astype(np.float32)
pe = os.path.join(TMP, 'emb.cavs')
with open(pe, 'wb') as f:
    f.write(cavstream.encode([(ids[i], {}, [('emb_a', a[i]), ('emb_v', v[i])]) for i in range(n)]))

html = os.path.join(TMP, 'gallery')
nq, k = 6, 4
matches = os.path.join(TMP, 'm.csv')
r = subprocess.run([os.path.join(BIN, 'cav-recall'), '--html', html, '--media', pc, '--html-queries', str(nq),
                    '--topk', str(k), '--matches', matches, '-o', os.path.join(TMP, 'out.csv'), pe],
                   capture_output=True)
report('html_exit_0', r.returncode == 0 and os.path.exists(os.path.join(html, 'index.html')), r.stderr.decode()[-400:])
if r.returncode:
    sys.exit(1)
page = open(os.path.join(html, 'index.html')).read()
report('html_escapes_ids', 'clip &lt;04&gt; &amp; &quot;x&quot;' in page and 'clip <04>' not in page, 'id not escaped')

# the pictures themselves
frames5 = {c[0]: c[2] for c in clips}
ok_specs, checked = True, 0
for name in sorted(os.listdir(os.path.join(html, 'img'))):
    if name.endswith('-spec.png'):
        checked += 1
        ok_specs &= np.asarray(Image.open(os.path.join(html, 'img', name)).convert('RGB')).shape == (F, T, 3)
# pixel checks for the first query of the page (clip00: JPEG frames) and one raw-frames clip
for i in (0, 1):
    pos = page.find('<b>%s</b>' % ids[i])
    cell = page[page.rfind('<td class="query">', 0, pos):pos]
    fsrc = cell.split('src="')[1].split('"')[0]
    ssrc = cell.split('src="')[2].split('"')[0]
    im = np.asarray(Image.open(os.path.join(html, fsrc)).convert('RGB'))
    t = dict(frames5[ids[i]])
    if 'frames' in t:
        want = t['frames'][5]
    else:
        off = t['frames_jpeg_offsets']
        want = np.asarray(Image.open(io.BytesIO(t['frames_jpeg'][off[5]:off[6]].tobytes())).convert('RGB'))
    diff = np.abs(im.astype(int) - want.astype(int)).max()
    report('frame_png_is_middle_frame_%s' % ('raw' if 'frames' in t else 'jpeg'), im.shape == want.shape and
           diff <= (0 if 'frames' in t else 2), 'shape %s, max diff %s' % (im.shape, diff))
    sp = np.asarray(Image.open(os.path.join(html, ssrc)).convert('RGB')).astype(int)
    report('spectrogram_png_%d' % i, sp.shape == (F, T, 3) and int(np.argmax(sp.sum(axis=(0, 2)))) == i % T,
           'shape %s, brightest column %d' % (sp.shape, int(np.argmax(sp.sum(axis=(0, 2))))))
report('spectrogram_pngs_T_by_F', ok_specs and checked > 0, '%d pictures' % checked)

# own items marked where the top-k lists hold them
rows = [line.split(',') for line in open(matches).read().splitlines()[1:]]
own_want = sum(1 for f in rows if f[-1] == '1' and int(f[1]) < nq)
report('html_marks_own_items', page.count('class="match own"') == own_want and own_want > 0,
       '%d marked, %d in the lists' % (page.count('class="match own"'), own_want))

if not chromium:
    print('SKIP gallery_in_chromium: no chromium (Debian package chromium)')
    sys.exit(toolenv.status())
check = os.path.join(html, 'check.html')
probe = '''<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const r = {images: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
             rows: document.querySelectorAll('tr.result').length, matches: document.querySelectorAll('td.match').length};
  const p = document.createElement('pre'); p.id = 'cav-check'; p.textContent = JSON.stringify(r);
  document.body.appendChild(p);
});</script>'''
with open(check, 'w') as f:
    f.write(page.replace('</body>', probe + '</body>'))
base = [chromium, '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
        '--user-data-dir=' + os.path.join(TMP, 'profile'), '--allow-file-access-from-files']
r = subprocess.run(base + ['--virtual-time-budget=10000', '--dump-dom', 'file://' + check], capture_output=True,
                   timeout=120)
dom = r.stdout.decode(errors='replace')
res = None
if 'id="cav-check">' in dom:
    res = json.loads(dom.split('id="cav-check">')[1].split('</pre>')[0])
report('chromium_all_images_loaded', res is not None and res['images'] == res['loaded'] and
       res['images'] == 2 * nq * (2 + k), '%s; %s' % (res, r.stderr.decode()[-300:]))
report('chromium_results_shown', res is not None and res['rows'] == 2 * nq and res['matches'] == 2 * nq * k, str(res))
os.makedirs(LOGS, exist_ok=True)
shot = os.path.join(LOGS, 'recall-gallery.png')
if os.path.exists(shot):
    os.unlink(shot)
r = subprocess.run(base + ['--window-size=1400,1800', '--screenshot=' + shot, 'file://' + os.path.join(html, 'index.html')],
                   capture_output=True, timeout=120)
report('chromium_screenshot', os.path.exists(shot) and os.path.getsize(shot) > 10000, r.stderr.decode()[-300:])
print('  screenshot: %s' % shot)
sys.exit(toolenv.status())
