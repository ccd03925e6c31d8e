#!/usr/bin/python3
"""test_tool_options.py: every tool's options come from one table, so --help and the parser cannot differ.
For each tool: every long option --help lists (and its short form) is accepted by the parser (never
"unrecognized option"), takes a value exactly when --help shows one (--name=ARG), and an option --help does
not list is refused as a usage error (exit 1); every option of --help is documented in the tool's man page,
and every option the man page's OPTIONS section names is in --help."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toolenv  # noqa: E402
from toolenv import report  # noqa: E402

TOOLS = ["av-extract", "fbank", "patchify", "shard-pack", "cav-embed", "cav-recall", "cav-ckpt", "cav-pretrain",
         "cav-finetune"]


def run(name, args):
    # stdin from /dev/null: a parser that let an option through to the work would read nothing
    return subprocess.run([toolenv.tool(name)] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)


def help_options(name):
    """{long name: (short letter or None, takes a value)} from the option lines of --help."""
    p = run(name, ["--help"])
    assert p.returncode == 0, (name, p.returncode, p.stderr)
    out = {}
    for line in p.stdout.splitlines():
        m = re.match(r"^  (?:-(\w), |    )--([\w-]+)(=\S+)?(.*)$", line)
        if not m:
            continue
        out[m.group(2)] = (m.group(1), m.group(3) is not None)
        for other in re.findall(r"^, --([\w-]+)", m.group(4)):  # "--help, --version"
            out[other] = (None, False)
    return out


def refused(p):
    return "unrecognized option" in p.stderr or "invalid option" in p.stderr


def check_parser(name, opts):
    """[(option, why)] for the options the parser treats otherwise than --help says."""
    bad = []
    for opt, (short, takes) in sorted(opts.items()):
        if opt in ("help", "version"):
            continue
        forms = [["--%s=1" % opt], ["-%s" % short, "1"]] if takes else [["--" + opt], ["-%s" % short]]
        for args in forms[:2 if short else 1]:
            # the option, then --help: parsed in that order, so a flag ends in the help (exit 0) and a value
            # either passes (exit 0) or is a usage error that names the option (exit 1)
            p = run(name, args + ["--help"])
            ok = not refused(p) and (p.returncode == 0 or (takes and p.returncode == 1 and "--" + opt in p.stderr))
            if not ok:
                bad.append((args, "rc %d: %s" % (p.returncode, p.stderr.strip()[:200])))
        if takes:  # the value is required, as --help shows
            p = run(name, ["--" + opt])
            if p.returncode != 1 or "requires an argument" not in p.stderr:
                bad.append((opt, "no value: rc %d: %s" % (p.returncode, p.stderr.strip()[:200])))
    return bad


def man_options(name):
    """(every option named in bold anywhere in the man page, those named in its OPTIONS section)."""
    text = open(os.path.join(toolenv.SRC, "man", "man1", name + ".1")).read()
    plain = re.sub(r"\\f[BIRP]", "", text).replace("\\-", "-")
    anywhere = set(re.findall(r"(?<![\w-])--([a-z][\w-]*)", plain))
    sec = plain.split(".SH OPTIONS", 1)[1].split("\n.SH ", 1)[0] if ".SH OPTIONS" in plain else ""
    return anywhere, set(re.findall(r"(?<![\w-])--([a-z][\w-]*)", sec))


def main():
    for name in TOOLS:
        if not os.path.exists(toolenv.tool(name)):
            print("SKIP options_%s: %s not built" % (name, toolenv.tool(name)))
            continue
        opts = help_options(name)
        report("help_lists_options_%s" % name, "help" in opts and "version" in opts, sorted(opts))
        bad = check_parser(name, opts)
        report("help_options_accepted_%s" % name, not bad, bad)
        p = run(name, ["--no-such-option", "--help"])
        report("unlisted_option_refused_%s" % name, p.returncode == 1 and refused(p), (p.returncode, p.stderr))
        anywhere, in_section = man_options(name)
        undocumented = sorted(set(opts) - anywhere)
        unknown = sorted(in_section - set(opts))
        report("man_page_agrees_%s" % name, not undocumented and not unknown,
               "in --help, not in %s.1: %s; in %s.1 OPTIONS, not in --help: %s" % (name, undocumented, name,
                                                                                     unknown))


main()
sys.exit(toolenv.status())
