#!/usr/bin/python3
"""labels.py: the label versions of an AV-Digits build. build.sh labels each clip with its digit(s); a clip's
scene (its noise recording and background hue, which both streams show) is in provenance.jsonl. This writes the
reference's data files and label CSV for one version, with the clips and paths of the build unchanged:

  digit        the build's own labels: /m/digit0../m/digit9 (one per clip, three with MULTI=1)
  scene        the scene alone: 17 classes /m/scene_NAME, one per clip (single-label, like VGGSound)
  digit+scene  both: 27 classes, the digit classes first (multi-label, like AudioSet)
  scene+tags   the scene and the tags of its sound (SCENE_TAGS): 17 + 11 classes, 2-5 per clip (multi-label)

The scene classes are all 17 scenes in sorted name order, after the digits. The tags play the part of
AudioSet's ontology, where a clip labelled with a sound is also labelled with its ancestors ("Rain" with
"Water" and "Natural sounds"): coarse classes that several scenes share. They come after the scenes, in
TAGS order. The scene is what contrastive pretraining can align at AV-Digits' small scales; the digit needs
far longer pretraining (tests/bench/RESULTS.md, fine-tuning on AV-Digits), so the scene versions are the ones
on which pretrained and random starts differ.

Usage: labels.py BUILD VERSION OUT [--first-train N] [--first-test N]
  writes OUT/train.json, OUT/test.json (the first N clips of each split when given) and
  OUT/class_labels_indices.csv. Exit status: 0 ok, 1 usage, 2 bad input.
"""
import argparse
import csv
import io
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
from avdigits import SCENES  # noqa: E402
from prepare import write_atomic  # noqa: E402

VERSIONS = ('digit', 'scene', 'digit+scene', 'scene+tags')
# The tags of each scene's sound: what an AudioSet annotator would add above the leaf. Kept here rather than in
# avdigits.py, whose digest keys the rendered clips: a new label version must not re-render anything.
TAGS = ('natural', 'rain', 'animal', 'water', 'boat', 'vehicle', 'rail', 'engine', 'aircraft', 'industrial',
        'silence')
SCENE_TAGS = {
    'rain_garden': ('natural', 'rain', 'water'),
    'frogs_storm': ('natural', 'rain', 'water', 'animal'),
    'train_slowing': ('vehicle', 'rail'),
    'car_engine': ('vehicle', 'engine'),
    'harbor1': ('water', 'boat', 'vehicle'),
    'harbor2': ('water', 'boat', 'vehicle'),
    'water': ('water',),
    'water_fill': ('water',),
    'railroad_train': ('vehicle', 'rail'),
    'helicopter': ('vehicle', 'engine', 'aircraft'),
    'quiet': ('silence',),
}
SCENE_TAGS.update({'factory_%02d' % i: ('industrial', 'engine') for i in range(1, 7)})
assert sorted(SCENE_TAGS) == sorted(SCENES) and all(t in TAGS for v in SCENE_TAGS.values() for t in v)


def die(code, msg):
    print('labels.py: ' + msg, file=sys.stderr)
    sys.exit(code)


def read_build(build):
    """(scene of each video id, class rows of the build's CSV)."""
    scene = {}
    path = os.path.join(build, 'provenance.jsonl')
    try:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                try:
                    c = json.loads(line)
                    scene[c['video_id']] = c['scene']
                except (ValueError, KeyError, TypeError) as e:
                    die(2, '%s: line %d: no video_id and scene (%s)' % (path, n, e))
        with open(os.path.join(build, 'class_labels_indices.csv'), newline='') as f:
            rows = list(csv.reader(f))
    except OSError as e:
        die(2, str(e))
    return scene, rows


def main(argv):
    ap = argparse.ArgumentParser(prog='labels.py', description=__doc__.split('\n\n')[0])
    ap.add_argument('build')
    ap.add_argument('version', choices=VERSIONS)
    ap.add_argument('out')
    ap.add_argument('--first-train', type=int)
    ap.add_argument('--first-test', type=int)
    try:
        a = ap.parse_args(argv)
    except SystemExit as e:
        sys.exit(1 if e.code else 0)
    scene, rows = read_build(a.build)
    scenes = sorted(SCENES)    # all of them, whichever a small build happens to hold
    header, digits = rows[0], rows[1:]
    classes = (digits if 'digit' in a.version else []) + \
        ([['/m/scene_' + s, 'scene ' + s] for s in scenes] if 'scene' in a.version else []) + \
        ([['/m/tag_' + t, 'tag ' + t] for t in TAGS] if 'tags' in a.version else [])
    classes = [[str(k)] + r[-2:] for k, r in enumerate(classes)]
    os.makedirs(a.out, exist_ok=True)
    for split, first in (('train', a.first_train), ('test', a.first_test)):
        path = os.path.join(a.build, split + '.json')
        try:
            with open(path) as f:
                data = json.load(f)['data']
        except (OSError, ValueError, KeyError, TypeError) as e:
            die(2, '%s: %s' % (path, e))
        if first is not None:
            if len(data) < first:
                die(2, '%s has %d clips, fewer than the %d asked for' % (path, len(data), first))
            data = data[:first]
        out = []
        for i, e in enumerate(data):
            if e.get('video_id') not in scene:
                die(2, '%s: entry %d: video_id %r is not in provenance.jsonl' % (path, i, e.get('video_id')))
            s = '/m/scene_' + scene[e['video_id']]
            tags = ','.join('/m/tag_' + t for t in SCENE_TAGS[scene[e['video_id']]])
            lab = {'digit': e['labels'], 'scene': s, 'digit+scene': e['labels'] + ',' + s,
                   'scene+tags': s + ',' + tags}[a.version]
            out.append(dict(e, labels=lab))
        write_atomic(os.path.join(a.out, split + '.json'), json.dumps({'data': out}, indent=1))
    text = io.StringIO()
    csv.writer(text, lineterminator='\n').writerows([header] + classes)
    write_atomic(os.path.join(a.out, 'class_labels_indices.csv'), text.getvalue())


if __name__ == '__main__':
    main(sys.argv[1:])
