"""test_layers.py: the source tree keeps its layers. lib/ is base < formats < media < model < train, with the
kernels (kernels/kernels.h, kernels/<backend>/) between media and model: a file may include headers of its own
layer and of the layers below it, never above, so there is no dependency cycle between layers. Also checks that
no file outside the model reaches into the model's memory (the device seam: model.c alone touches it) and that
nothing cites files outside the repository."""
import glob
import os
import re
import sys

src = os.environ.get("CAV_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
os.chdir(src)
ORDER = ["base", "formats", "media", "kernels", "model", "train"]


def layer(path):
    return "kernels" if path.startswith("kernels/") else path.split("/")[1]


def report(name, problems):
    if problems:
        print(f"FAIL {name}: " + "; ".join(problems[:10]) + (f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""))
    else:
        print(f"PASS {name}")
    return not problems


home = {}
for h in glob.glob("lib/*/*.h") + glob.glob("kernels/*.h") + glob.glob("kernels/*/*.h"):
    home[os.path.basename(h)] = layer(h)
files = sorted(glob.glob("lib/*/*.[ch]") + glob.glob("kernels/*.h") + glob.glob("kernels/*/*.[ch]")
               + glob.glob("kernels/*/*.cu") + glob.glob("kernels/*/*.cuh"))
ok = True
bad = []
for f in files:
    for inc in re.findall(r'#include "([^"]+)"', open(f, encoding="utf-8").read()):
        d = home.get(inc)
        if d is not None and ORDER.index(d) > ORDER.index(layer(f)):
            bad.append(f"{f} includes {inc} ({d} is above {layer(f)})")
ok &= report("layers_include_only_downwards", bad)

# Model memory (parameters, gradients, inputs, activations) is the backend's: outside model.c, code goes
# through the accessors of model.h.
bad = []
pat = re.compile(r"\b(m|fm|model)->\s*(params|grads|adam_m|adam_v|acts|in\.(audio|video|keep_a|keep_v|labels))\b")
for f in sorted(glob.glob("lib/*/*.c") + glob.glob("bin/*.c") + glob.glob("tests/unit/*.c") + glob.glob("tests/bench/*.c")):
    if f == "lib/model/model.c":
        continue
    for i, line in enumerate(open(f, encoding="utf-8"), 1):
        if pat.search(line):
            bad.append(f"{f}:{i}")
ok &= report("model_memory_only_in_model_c", bad)

bad = []
for f in sorted(glob.glob("**/*", recursive=True)):
    if f.startswith("build/") or not os.path.isfile(f) or f.endswith((".png", ".jpg", ".ogg", ".mp4", ".wav", ".h5")):
        continue
    if "/corpus/" in f or "/regress/" in f:
        continue
    try:
        text = open(f, encoding="utf-8").read()
    except (UnicodeDecodeError, OSError):
        continue
    if re.search(r"\.\./shared|cav-numerics(7)\.md|\bSPEC [0-9]", text):
        bad.append(f)
ok &= report("no_citation_outside_the_repository", bad)
sys.exit(0 if ok else 1)
