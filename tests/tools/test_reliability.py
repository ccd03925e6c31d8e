"""test_reliability.py: nothing lost, nothing crashes (issue 16). Every output is written under a temporary
name and renamed into place only when complete, so a failure at any write leaves the previous output
intact, exit status 3 and no NAME.tmp.PID behind. Cases:
  - a full disk (a 1 MB tmpfs, when this test may mount one; else SKIP: the fault injection covers it);
  - write faults injected (build/faultinj.so, LD_PRELOAD) at every counted call (write, pwrite, fwrite,
    fputs, fflush, fclose, fsync, rename) of shard-pack (.h5, .cavs), fbank -o .h5, patchify and
    cav-ckpt convert: exit 3 with the old output byte for byte and no temporary file, or exit 0 with the
    complete output (a fault HDF5 retried later), never a crash;
  - an output that is also an input (same name, ./name, a symlink, stdin) is refused with exit 1;
  - cav-ckpt: not over /dev/full, a symlink's target replaced and the link kept, ls -, ls > /dev/full;
  - fbank: a header-only WAV and an empty int16 wave exit 2 with a reason, every time;
  - a 33 KB stream declaring a 1 GiB record is refused under a 512 MB address-space limit;
  - shard-pack --verify reports a flipped byte that breaks an id's or an attribute's UTF-8;
  - kill -9 of shard-pack, fbank -o and av-extract -o at random moments leaves the old output or the
    complete new one under the final name, never a half-written file."""
import glob
import os
import random
import resource
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cavstream  # noqa: E402

SRC = os.environ.get("CAV_SRC", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
BIN = os.environ.get("CAV_BIN", os.path.join(SRC, "build/bin"))
REF = os.environ.get("CAV_REF", os.path.join(SRC, "build/ref"))
FAULTINJ = os.environ.get("CAV_FAULTINJ", os.path.join(SRC, "build/faultinj.so"))
TMP = tempfile.mkdtemp(prefix="test_reliability.")
failed = 0


def P(*names):
    return os.path.join(TMP, *names)


def result(name, why):
    global failed
    if why:
        failed += 1
        print("FAIL %s: %s" % (name, why.replace("\n", " ")[:600]))
    else:
        print("PASS %s" % name)
    sys.stdout.flush()


def run(args, env=None, stdin=None, pre=None, cwd=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([os.path.join(BIN, args[0])] + args[1:], env=e, stdin=stdin, capture_output=True,
                       preexec_fn=pre, cwd=cwd)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def read(path):
    with open(path, "rb") as f:
        return f.read()


def temps(d):
    return sorted(glob.glob(os.path.join(d, "*.tmp.*")))


def export(path):
    """A shard's records as a stream (the bytes compared between runs with the same arguments)."""
    rc, out, err = run(["shard-pack", path])
    return out if rc == 0 else None


# ---------------------------------------------------------------------------------------- inputs
rng = np.random.default_rng(16)
records = [("c%03d" % i, {"k": "v%d" % i}, [("x", rng.integers(0, 255, 10000, dtype=np.uint8))]) for i in range(60)]
with open(P("s.cavs"), "wb") as f:
    f.write(cavstream.encode(records))
waves = [("w%02d" % i, {"sample_rate": "16000"}, [("wave", rng.integers(-3000, 3000, 16000, dtype=np.int16))])
         for i in range(12)]
with open(P("w.cavs"), "wb") as f:
    f.write(cavstream.encode(waves))
OLD = b"previous output, must survive\n"


def fresh_dir(name):
    d = P(name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


# ------------------------------------------------------------------------------------ full disk
def full_disk():
    mnt = fresh_dir("full")
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt],
                                           capture_output=True).returncode:
        print("SKIP full_disk: cannot mount a tmpfs here (the fault injection below covers the same paths)")
        return
    try:
        big = [("b%03d" % i, {}, [("x", rng.integers(0, 255, 20000, dtype=np.uint8))]) for i in range(80)]
        with open(P("big.cavs"), "wb") as f:
            f.write(cavstream.encode(big))
        bigw = [("w%02d" % i, {}, [("wave", rng.integers(-3000, 3000, 160000, dtype=np.int16))]) for i in range(8)]
        with open(P("bigw.cavs"), "wb") as f:
            f.write(cavstream.encode(bigw))
        cases = [("shard_pack_h5", ["shard-pack", P("big.cavs"), "-o", "b.h5"], "b.h5"),
                 ("shard_pack_stream", ["shard-pack", P("big.cavs"), "-o", "b.cavs"], "b.cavs"),
                 ("fbank_h5", ["fbank", P("bigw.cavs"), "-o", "f.h5"], "f.h5"),
                 ("fbank_stream", ["fbank", P("bigw.cavs"), "-o", "f.cavs"], "f.cavs")]
        for name, args, out in cases:
            for f in os.listdir(mnt):
                os.unlink(os.path.join(mnt, f))
            with open(os.path.join(mnt, out), "wb") as f:
                f.write(OLD)
            rc, _, err = run(args[:-1] + [os.path.join(mnt, out)])
            why = None
            if rc != 3:
                why = "exit %d (want 3): %s" % (rc, err[-300:])
            elif read(os.path.join(mnt, out)) != OLD:
                why = "the previous output was changed"
            elif temps(mnt):
                why = "temporary files left: %s" % temps(mnt)
            elif "infinite loop" in err:
                why = "HDF5's raw exit text: %s" % err[-200:]
            result("full_disk_%s" % name, why)
    finally:
        subprocess.run(["umount", mnt])


# ------------------------------------------------------------------------------ fault injection
def sweep(name, args, out, compare, max_runs=60, earlier_file=False):
    """Runs args once to count the output calls, then once per call index with that call failing.
    earlier_file: out is not the last file of a split output, so a failure in a later file may follow its
    complete commit (then it must equal the run without faults)."""
    d = fresh_dir("fi_" + name)
    args = [a.replace("@", d) for a in args]
    path = os.path.join(d, out)
    rc, _, err = run(args, cwd=d)
    if rc != 0:
        return result("faults_%s" % name, "the run without faults failed: exit %d: %s" % (rc, err[-300:]))
    good = compare(path)
    os.unlink(path)
    cnt = os.path.join(d, "count")
    rc, _, err = run(args, env={"LD_PRELOAD": FAULTINJ, "FAULT_COUNT": cnt}, cwd=d)
    n = int(open(cnt).read())
    step = max(1, n // max_runs)
    why, tally = None, {0: 0, 3: 0}
    for i in list(range(1, n + 1, step)) + [n]:
        with open(path, "wb") as f:
            f.write(OLD)
        rc, _, err = run(args, env={"LD_PRELOAD": FAULTINJ, "FAULT_AT": str(i)}, cwd=d)
        left = temps(d)
        if rc == 3:
            if read(path) != OLD and not (earlier_file and compare(path) == good):
                why = why or "call %d: exit 3 but the previous output was changed" % i
        elif rc == 0:
            if compare(path) != good:
                why = why or "call %d: exit 0 but the output differs from the run without faults: %s" % (i, err[-200:])
        else:
            why = why or "call %d: exit %d (want 3, or 0 with a complete output): %s" % (i, rc, err[-300:])
        if left:
            why = why or "call %d: temporary files left: %s" % (i, left)
            for t in left:
                os.unlink(t)
        tally[rc] = tally.get(rc, 0) + 1
    print("# faults_%s: %d calls counted, exit 3 at %d, exit 0 at %d" % (name, n, tally.get(3, 0), tally.get(0, 0)))
    result("faults_%s" % name, why)


def injection():
    if not os.path.exists(FAULTINJ):
        return result("faults", "the injector is not built: %s" % FAULTINJ)
    pth = os.path.join(REF, "gen_pth", "tiny_state.pth")
    sweep("shard_pack_h5", ["shard-pack", P("s.cavs"), "-o", "@/o.h5"], "o.h5", export)
    sweep("shard_pack_stream", ["shard-pack", P("s.cavs"), "-o", "@/o.cavs"], "o.cavs", read)
    sweep("shard_pack_split", ["shard-pack", P("s.cavs"), "-n", "25", "-o", "@/o-%d.h5"], "o-1.h5", export,
          earlier_file=True)
    sweep("fbank_h5", ["fbank", P("w.cavs"), "-o", "@/f.h5"], "f.h5", export)
    rc, _, err = run(["fbank", P("w.cavs"), "-o", P("fb.cavs")])
    if rc:
        return result("faults_patchify_stream", "fbank for its input failed: %s" % err[-200:])
    sweep("patchify_stream", ["patchify", P("fb.cavs"), "--audio-only", "-o", "@/p.cavs"], "p.cavs", read)
    if os.path.exists(pth):
        sweep("cav_ckpt_convert", ["cav-ckpt", "convert", pth, "@/c.safetensors"], "c.safetensors", read)
    else:
        print("SKIP faults_cav_ckpt_convert: %s missing (make refs)" % pth)


# --------------------------------------------------------------------------- output = input
def same_file():
    d = fresh_dir("same")
    shutil.copy(P("w.cavs"), os.path.join(d, "x.cavs"))
    os.symlink("x.cavs", os.path.join(d, "link.cavs"))
    before = read(os.path.join(d, "x.cavs"))
    cases = [("patchify", ["patchify", "x.cavs", "-o", "x.cavs"], None),
             ("fbank", ["fbank", "x.cavs", "-o", "x.cavs"], None),
             ("shard_pack_dot", ["shard-pack", "x.cavs", "-o", "./x.cavs"], None),
             ("shard_pack_symlink", ["shard-pack", "link.cavs", "-o", "x.cavs"], None),
             ("shard_pack_output_symlink", ["shard-pack", "x.cavs", "-o", "link.cavs"], None),
             ("shard_pack_stdin", ["shard-pack", "-", "-o", "x.cavs"], "x.cavs")]
    for name, args, stdin in cases:
        fin = open(os.path.join(d, stdin), "rb") if stdin else None
        rc, _, err = run(args, stdin=fin, cwd=d)
        if fin:
            fin.close()
        why = None
        if rc != 1 or "also an input" not in err:
            why = "exit %d (want 1, 'also an input'): %s" % (rc, err[-300:])
        elif read(os.path.join(d, "x.cavs")) != before:
            why = "the input was changed"
        elif temps(d):
            why = "temporary files left: %s" % temps(d)
        result("same_file_%s" % name, why)


# --------------------------------------------------------------------------------------- cav-ckpt
def ckpt():
    pth = os.path.join(REF, "gen_pth", "tiny_state.pth")
    if not os.path.exists(pth):
        return print("SKIP cav_ckpt: %s missing (make refs)" % pth)
    d = fresh_dir("ckpt")
    rc, out, err = run(["cav-ckpt", "ls", pth])
    with open(pth, "rb") as f:
        rc2, out2, err2 = run(["cav-ckpt", "ls", "-"], stdin=f)
    result("cav_ckpt_ls_stdin", None if rc == 0 and rc2 == 0 and out == out2 and out
           else "exit %d/%d, same output %s: %s" % (rc, rc2, out == out2, err2[-200:]))
    with open("/dev/full", "wb") as full:
        p = subprocess.run([os.path.join(BIN, "cav-ckpt"), "ls", pth], stdout=full, capture_output=False,
                           stderr=subprocess.PIPE)
    result("cav_ckpt_ls_dev_full", None if p.returncode == 3 else "exit %d (want 3)" % p.returncode)
    # a private copy of /dev/full: a broken build must not replace the machine's own
    full = os.path.join(d, "full")
    try:
        os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    except OSError as e:
        print("SKIP cav_ckpt_convert_dev_full: cannot make a device node here: %s" % e)
    else:
        rc, _, err = run(["cav-ckpt", "convert", pth, full])
        st = os.stat(full)
        result("cav_ckpt_convert_dev_full", None if rc == 3 and stat.S_ISCHR(st.st_mode)
               else "exit %d (want 3), mode %o (want a character device): %s" % (rc, st.st_mode, err[-200:]))
    os.makedirs(os.path.join(d, "real"))
    target = os.path.join(d, "real", "t.safetensors")
    with open(target, "wb") as f:
        f.write(OLD)
    os.symlink(target, os.path.join(d, "link.safetensors"))
    rc, _, err = run(["cav-ckpt", "convert", pth, os.path.join(d, "link.safetensors")])
    why = None
    if rc != 0:
        why = "exit %d: %s" % (rc, err[-200:])
    elif not os.path.islink(os.path.join(d, "link.safetensors")):
        why = "the symlink was replaced"
    elif read(target) == OLD:
        why = "the symlink's target was not written"
    result("cav_ckpt_convert_symlink", why)
    rc, _, err = run(["cav-ckpt", "convert", target, os.path.join(d, "link.safetensors")])
    result("cav_ckpt_convert_onto_input", None if rc == 1 and "also an input" in err else "exit %d: %s" % (rc, err[-200:]))
    rc, _, err = run(["cav-ckpt", "convert", pth, d])
    result("cav_ckpt_convert_directory", None if rc == 1 and os.path.isdir(d) else "exit %d: %s" % (rc, err[-200:]))


# ------------------------------------------------------------------------------------ fbank waves
def fbank_empty():
    d = fresh_dir("fbank")
    wav = os.path.join(d, "hdronly.wav")
    with open(wav, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
                + b"data" + struct.pack("<I", 0))
    with open(os.path.join(d, "empty.cavs"), "wb") as f:
        f.write(cavstream.encode([("e", {}, [("wave", np.zeros(0, np.int16))])]))
    for name, args in (("header_only_wav", ["fbank", "--wav", wav]), ("empty_wave", ["fbank", os.path.join(d, "empty.cavs")])):
        why = None
        for _ in range(5):
            rc, _, err = run(args)
            if rc != 2 or "no audio samples" not in err:
                why = why or "exit %d (want 2, 'no audio samples'): %s" % (rc, err[-200:])
        result("fbank_%s" % name, why)


# ----------------------------------------------------------------------------------- huge record
def huge_record():
    import zstandard
    n_payload = 1 << 30
    head = cavstream._s(b"big") + cavstream._attrs({}) + struct.pack("<I", 1)
    n = n_payload - len(head) - 25
    th = cavstream._s(b"x") + struct.pack("<BBHQQ", 1, 1, 0, n, n)
    c = zstandard.ZstdCompressor(level=19, write_checksum=True).compressobj(size=n_payload)
    z, out = bytes(1 << 24), c.compress(head + th)
    for _ in range(n // len(z)):
        out += c.compress(z)
    out += c.compress(bytes(n % len(z))) + c.flush()
    data = (cavstream.MAGIC + struct.pack("<II", 1, 0) + cavstream.frame(b"HDR\0", cavstream._attrs({})) + b"REC\0"
            + struct.pack("<QQ", len(out), n_payload) + out + b"END\0" + struct.pack("<QQ", 0, 1))
    path = P("huge.cavs")
    with open(path, "wb") as f:
        f.write(data)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))
    rc, _, err = run(["shard-pack", path, "-o", P("huge-out.cavs")], pre=limit)
    why = None
    if len(data) > 40000:
        why = "the test stream is %d bytes, not about 33 KB" % len(data)
    elif rc != 2 or "CAV_MAX_RECORD_BYTES" not in err:
        why = "exit %d (want 2 naming CAV_MAX_RECORD_BYTES): %s" % (rc, err[-300:])
    elif os.path.exists(P("huge-out.cavs")):
        why = "an output was left"
    result("huge_record_refused", why)


# ------------------------------------------------------------------------------------------ verify
def verify_text():
    d = fresh_dir("verify")
    recs = [("idQQQQ0", {"note": "attrZZZZvalue"}, [("x", np.arange(4, dtype=np.uint8))]),
            ("id1", {"note": "fine"}, [("x", np.arange(4, dtype=np.uint8))])]
    with open(os.path.join(d, "v.cavs"), "wb") as f:
        f.write(cavstream.encode(recs))
    rc, _, err = run(["shard-pack", os.path.join(d, "v.cavs"), "-o", os.path.join(d, "v.h5")])
    rc0, out0, _ = run(["shard-pack", "--verify", os.path.join(d, "v.h5")])
    raw = read(os.path.join(d, "v.h5"))
    for name, needle, word in (("attribute", b"attrZZZZvalue", "attribute 'note'"), ("id", b"idQQQQ0", "id:")):
        if raw.count(needle) != 1:
            result("verify_flipped_%s" % name, "the string is not stored once, raw, in the shard (%d)" % raw.count(needle))
            continue
        bad = raw.replace(needle, needle[:4] + b"\xff" + needle[5:])
        path = os.path.join(d, "bad_%s.h5" % name)
        with open(path, "wb") as f:
            f.write(bad)
        rc, out, err = run(["shard-pack", "--verify", path])
        why = None
        if rc0 != 0:
            why = "the intact shard does not verify"
        elif rc != 2 or word not in err or b" 0 problems" in out.split(b"\n")[0]:
            why = "exit %d (want 2 naming %s): %s %s" % (rc, word, out[-200:], err[-200:])
        result("verify_flipped_%s" % name, why)


# ------------------------------------------------------------------------------------------ kill -9
def kill_tests():
    media = sorted(glob.glob(os.path.join(REF, "gen_avextract", "video", "*.mp4")))
    bigw = [("w%02d" % i, {}, [("wave", rng.integers(-3000, 3000, 160000, dtype=np.int16))]) for i in range(40)]
    with open(P("killw.cavs"), "wb") as f:
        f.write(cavstream.encode(bigw))
    many = [("m%04d" % i, {}, [("x", rng.integers(0, 255, 30000, dtype=np.uint8))]) for i in range(1000)]
    with open(P("kill.cavs"), "wb") as f:
        f.write(cavstream.encode(many))
    cases = [("shard_pack", ["shard-pack", P("kill.cavs"), "-o", "@"], "k.h5", export),
             ("shard_pack_stream", ["shard-pack", P("kill.cavs"), "-o", "@"], "k.cavs", read),
             ("fbank", ["fbank", P("killw.cavs"), "-o", "@"], "k.h5", export)]
    if media:
        cases.append(("av_extract", ["av-extract", "-j", "1"] + media[:3] + ["-o", "@"], "k.h5", export))
    else:
        print("SKIP kill_av_extract: no clips in %s (make refs)" % REF)
    r = random.Random(16)
    for name, args, out, compare in cases:
        d = fresh_dir("kill_" + name)
        path = os.path.join(d, out)
        argv = [a.replace("@", path) for a in args]
        t0 = time.time()
        rc, _, err = run(argv)
        dur = time.time() - t0
        if rc:
            result("kill_%s" % name, "the run without a kill failed: exit %d: %s" % (rc, err[-200:]))
            continue
        good = compare(path)
        why, outcomes = None, {"old": 0, "new": 0}
        for k in range(12):
            if os.path.exists(path):
                os.unlink(path)
            with open(path, "wb") as f:
                f.write(OLD)
            p = subprocess.Popen([os.path.join(BIN, argv[0])] + argv[1:], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            time.sleep(r.uniform(0, dur * 1.1))
            p.send_signal(signal.SIGKILL)
            p.wait()
            now = read(path)
            if now == OLD:
                outcomes["old"] += 1
            elif compare(path) == good:
                outcomes["new"] += 1
            else:
                why = why or "kill %d at some point: a file under the final name is neither old nor complete" % k
            for t in temps(d):  # kill -9 cannot clean up; the next run must not mind
                os.unlink(t)
        print("# kill_%s: run %.2f s, 12 kills: %d old output, %d complete new" % (name, dur, outcomes["old"], outcomes["new"]))
        result("kill_%s" % name, why)


full_disk()
injection()
same_file()
ckpt()
fbank_empty()
huge_record()
verify_text()
kill_tests()
shutil.rmtree(TMP, ignore_errors=True)
sys.exit(1 if failed else 0)
