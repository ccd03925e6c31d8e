#!/usr/bin/python3
"""test_fbank_options.py: fbank's options are declared once (the table behind its parser, --help and the
settings echo): every option --help lists is documented in fbank(1) with the same short form and a default
the man page states, and every option of the man page is in --help; the `fbank` dataset attribute echoes
the settings actually used, in the format earlier versions wrote."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toolenv  # noqa: E402
from toolenv import BIN, test  # noqa: E402
import cavstream  # noqa: E402

REF = os.path.join(toolenv.REF, "gen_fbank")
MAN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "man", "man1", "fbank.1")


def fbank(args):
    p = subprocess.run([os.path.join(BIN, "fbank")] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout


def help_options():
    """{long name: (short letter or None, default or None)} from --help."""
    out = {}
    for line in fbank(["--help"]).decode().splitlines():
        m = re.match(r"^  (?:-(\w), |    )--([\w-]+)(?:=\S+)?(.*)$", line)
        if m:
            d = re.search(r"\(default ([^)]*)\)\s*$", m.group(3))
            out[m.group(2)] = (m.group(1), d.group(1) if d else None)
    return out


def man_paragraphs():
    """[(header, text)] of the OPTIONS section's .TP entries, troff escapes removed."""
    text = open(MAN).read()
    sec = text.split(".SH OPTIONS", 1)[1].split("\n.SH ", 1)[0]
    paras = []
    for chunk in sec.split(".TP\n")[1:]:
        lines = chunk.strip("\n").split("\n")
        clean = [re.sub(r"\\f[BIRP]", "", ln).replace("\\-", "-").replace('"', " ") for ln in lines]
        paras.append((clean[0], " ".join(clean)))
    return paras


def help_and_man_page_agree():
    opts = help_options()
    assert len(opts) >= 15 and "bins" in opts and "help" in opts, opts
    paras = man_paragraphs()
    man_names = set()
    for head, _ in paras:
        man_names |= set(re.findall(r"--([\w-]+)", head))
    assert set(opts) == man_names, f"--help only: {set(opts) - man_names}, man only: {man_names - set(opts)}"
    for name, (short, default) in opts.items():
        hits = [(h, t) for h, t in paras if re.search(r"--%s(?![\w-])" % re.escape(name), h)]
        assert len(hits) == 1, (name, hits)
        head, body = hits[0]
        if short:
            assert re.search(r"(?<![\w-])-%s(?!\w)" % short, head), (name, short, head)
        if default is not None:
            assert re.search(r"(?<![\w.])%s(?![\w.])" % re.escape(default), body), (name, default, body)
            assert "default" in body, (name, body)


def settings_echo():
    wav = os.path.join(REF, "speech16k.wav")
    attrs, _ = cavstream.decode(fbank(["--wav", wav]))
    # the text of earlier versions, written out by hand
    assert attrs["fbank"] == ("kaldi fbank: bins=128 frame_length_ms=25 frame_shift_ms=10 window=hanning low_freq=20 "
                              "high_freq=0 preemphasis=0.97 dither=0 target_length=1024 normalize=none:0,0 "
                              "dtype=f32"), attrs["fbank"]
    attrs, _ = cavstream.decode(fbank(["--wav", wav, "-b", "64", "--frame-length", "20", "--frame-shift", "12.5",
                                       "--window", "hann", "--low-freq", "30", "--high-freq", "-400",
                                       "--preemphasis", "0.5", "--dither", "0.25", "--seed", "9", "-t", "0",
                                       "--normalize", "-5.081,4.4849", "--half"]))
    assert attrs["fbank"] == ("kaldi fbank: bins=64 frame_length_ms=20 frame_shift_ms=12.5 window=hanning "
                              "low_freq=30 high_freq=-400 preemphasis=0.5 dither=0.25 target_length=0 "
                              "normalize=-5.081,4.4849 dtype=f16"), attrs["fbank"]


test(help_and_man_page_agree)
test(settings_echo)
sys.exit(toolenv.status())
