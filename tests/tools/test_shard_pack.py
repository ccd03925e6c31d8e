"""test_shard_pack.py: shard-pack end to end against independent readers. Streams are made by
tests/tools/cavstream.py (written from cav-stream(5)); shards are read back with Debian's h5py through our
filter plugin (HDF5_PLUGIN_PATH), chunks are checked to be plain zstd frames (python3-zstandard), and a
shard whose chunks another zstd encoder wrote is read by shard-pack. Covers: stream -> shards -> stream bit-identical for every dtype,
scalars, 0-length and 8-dim tensors, variable shapes; chunking and the filter seen by h5dump; select,
shuffle, size limits, --verify; the reference's JSON + label CSV import with labels and weights computed
here from the reference formula."""
import csv
import io
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import toolenv  # noqa: E402
from toolenv import BIN, SRC, test  # noqa: E402
import cavstream  # noqa: E402

os.environ.setdefault("HDF5_PLUGIN_PATH", os.path.join(SRC, "build/plugin"))
import h5py  # noqa: E402  (after HDF5_PLUGIN_PATH is set)

PACK = os.path.join(BIN, "shard-pack")
TMP = tempfile.mkdtemp(prefix="test_shard_pack.")


def run(args, data=None, ok=True, env=None):
    p = subprocess.run([PACK] + args, input=data, capture_output=True, env=env)
    if ok and p.returncode != 0:
        raise AssertionError("shard-pack %s: exit %d: %s" % (" ".join(args), p.returncode, p.stderr.decode()))
    return p


def P(name):
    return os.path.join(TMP, name)


rng = np.random.default_rng(20240605)


def make_records(n, start=0):
    recs = []
    for i in range(start, start + n):
        t = [
            ("fbank", rng.standard_normal((128, 128)).astype(np.float32)),  # 64 KiB: one chunk per sample
            ("wave", rng.integers(-32768, 32767, size=int(rng.integers(50, 400)), dtype=np.int16)),
            ("frames", rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)),
            ("half", rng.standard_normal((3, 5)).astype(np.float16)),
            ("f64", rng.standard_normal(7)),
            ("i32", rng.integers(-2**31, 2**31 - 1, (4, 2), dtype=np.int32)),
            ("i64", rng.integers(-2**62, 2**62, (3,), dtype=np.int64)),
            ("weight", np.array(rng.random(), dtype=np.float32)),
            ("eight", rng.integers(0, 256, (1, 2, 1, 2, 1, 2, 1, 2), dtype=np.uint8)),
            ("empty", np.zeros((0, 4), np.float32)),
        ]
        attrs = {"source": "/data/%d.mp4" % i, "sample_rate": "16000"}
        if i % 5 == 0:
            attrs["note"] = "odd, \"quoted\"\nline"
        recs.append(("clip%04d" % i, attrs, t))
    return recs


RECS = make_records(150)
DATTRS = {"sample_rate": "16000", "fbank_bins": "128"}


def same_records(got, want):
    if len(got) != len(want):
        raise AssertionError("%d records, expected %d" % (len(got), len(want)))
    for (gi, ga, gt), (wi, wa, wt) in zip(got, want):
        if gi != wi or ga != wa:
            raise AssertionError("record %s/%s: id or attrs differ: %r vs %r" % (gi, wi, ga, wa))
        gd = {n: a for n, a in gt}
        if set(gd) != {n for n, _ in wt}:
            raise AssertionError("record %s: fields %s vs %s" % (gi, sorted(gd), [n for n, _ in wt]))
        for n, a in wt:
            b = gd[n]
            if b.dtype != a.dtype or b.shape != a.shape or b.tobytes() != a.tobytes():
                raise AssertionError("record %s field %s: %s%s vs %s%s" % (gi, n, b.dtype, b.shape, a.dtype, a.shape))


h5_row = cavstream.h5_row


def h5_records(paths):
    out = []
    for p in paths:
        with h5py.File(p, "r") as f:
            n = int(f.attrs["cav_rows"])
            fields = [k for k in f.keys() if k not in ("id", "attrs", "attrs_set")]
            for i in range(n):
                rid = f["id"][i].decode()
                attrs = {}
                for k in f.get("attrs", {}):
                    if "attrs_set" in f and k in f["attrs_set"] and not f["attrs_set"][k][i]:
                        continue
                    attrs[k] = f["attrs"][k][i].decode()
                ts = [(n_, h5_row(f, n_, i)) for n_ in fields]
                out.append((rid, attrs, [(a, b) for a, b in ts if b is not None]))
    return out


def shard_paths():
    return sorted(P(x) for x in os.listdir(TMP) if x.startswith("s-") and x.endswith(".h5"))


def stream_to_shards_read_by_h5py():
    with open(P("in.cavs"), "wb") as f:
        f.write(cavstream.encode(RECS, DATTRS))
    run([P("in.cavs"), "-o", P("s-%02d.h5"), "-n", "40"])
    paths = shard_paths()
    assert len(paths) == 4, paths
    same_records(h5_records(paths), RECS)
    with h5py.File(paths[0], "r") as f:
        assert f.attrs["cav_schema"] == "cav-shard" and int(f.attrs["cav_schema_version"]) == 1
        assert int(f.attrs["cav_rows"]) == 40
        assert f.attrs["sample_rate"] == "16000" and f.attrs["tool"] == "shard-pack"
        assert f["fbank"].shape == (40, 128, 128) and f["fbank"].chunks == (1, 128, 128), f["fbank"].chunks
        assert f["half"].dtype == np.float16 and f["fbank"].attrs["cav_layout"] == "fixed"
        assert isinstance(f["wave"], h5py.Group) and f["wave"].attrs["cav_layout"] == "ragged"


def h5dump_shows_filter():
    out = subprocess.run(["h5dump", "-p", "-H", "-d", "fbank", shard_paths()[0]], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "FILTER_ID 32015" in out.stdout, out.stdout[:500]
    out = subprocess.run(["h5dump", "-d", "fbank", "-s", "3,5,7", "-c", "1,1,1", shard_paths()[0]],
                         capture_output=True, text=True)
    want = RECS[3][2][0][1][5, 7]
    assert out.returncode == 0 and ("%g" % want)[:6] in out.stdout.replace(" ", ""), (want, out.stdout[-300:])


def shards_back_to_stream_identical():
    p = run(shard_paths())
    dattrs, recs = cavstream.decode(p.stdout)
    same_records(recs, RECS)
    assert dattrs["fbank_bins"] == "128" and len(dattrs["history"].split("\n")) == 2, dattrs
    # stream -> stream through shard-pack is also the identity on records
    p = run(["-"], data=cavstream.encode(RECS, DATTRS))
    same_records(cavstream.decode(p.stdout)[1], RECS)


# Debian ships hdf5plugin without compiled filters, so interoperability with other zstd implementations
# is checked at the chunk level: our chunks must be plain zstd frames (what hdf5plugin's and the HDF
# Group's filter 32015 read and write), and chunks made by another zstd encoder must read back through us.
def chunks_are_plain_zstd_frames():
    import zstandard
    with h5py.File(shard_paths()[1], "r") as f:
        d = f["fbank"]
        plist = d.id.get_create_plist()
        filt = [plist.get_filter(k) for k in range(plist.get_nfilters())]
        assert [x[0] for x in filt] == [32015] and tuple(filt[0][2]) == (3,), filt
        for i in (0, 17, 39):
            mask, raw = d.id.read_direct_chunk((i, 0, 0))
            assert mask == 0
            params = zstandard.get_frame_parameters(raw)
            assert params.content_size == 128 * 128 * 4 and params.has_checksum
            x = np.frombuffer(zstandard.ZstdDecompressor().decompress(raw), np.float32).reshape(128, 128)
            assert x.tobytes() == RECS[40 + i][2][0][1].tobytes()


FOREIGN_WRITE = r"""
import sys, h5py, numpy as np, zstandard
rng = np.random.default_rng(7)
x = rng.standard_normal((5, 32, 16)).astype(np.float32)
with h5py.File(sys.argv[1], "w") as f:
    f.attrs["cav_schema"] = "cav-shard"
    f.attrs["cav_schema_version"] = np.int64(1)
    f.attrs["cav_rows"] = np.int64(5)
    f.attrs["made_by"] = "h5py"
    f.create_dataset("id", data=np.array(["a%d" % i for i in range(5)], dtype=h5py.string_dtype()))
    d = f.create_dataset("fbank", shape=x.shape, dtype=np.float32, chunks=(1, 32, 16), compression=32015,
                         compression_opts=(9,), allow_unknown_filter=True)
    for i in range(5):  # half the frames without content size, as streaming encoders write them
        z = zstandard.ZstdCompressor(level=9, write_content_size=bool(i % 2))
        if i % 2:
            raw = z.compress(x[i].tobytes())
        else:
            co = z.compressobj()
            raw = co.compress(x[i].tobytes()) + co.flush()
        has_size = zstandard.get_frame_parameters(raw).content_size == x[i].nbytes
        assert has_size == bool(i % 2), (i, zstandard.get_frame_parameters(raw).content_size)
        d.id.write_direct_chunk((i, 0, 0), raw)
    d.attrs["cav_layout"] = "fixed"
    d.attrs["cav_dtype"] = "f32"
np.save(sys.argv[2], x)
"""


def we_read_chunks_of_other_zstd_writers():
    out = subprocess.run(["/usr/bin/python3", "-c", FOREIGN_WRITE, P("theirs.h5"), P("theirs.npy")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-500:]
    x = np.load(P("theirs.npy"))
    dattrs, recs = cavstream.decode(run([P("theirs.h5")]).stdout)
    assert dattrs["made_by"] == "h5py"
    same_records(recs, [("a%d" % i, {}, [("fbank", x[i])]) for i in range(5)])
    v = run(["--verify", P("theirs.h5")])
    assert b"5 records, 0 problems" in v.stdout, v.stdout


def select_by_ids():
    want = ["clip0100", "clip0003", "clip0077", "clip0041"]
    with open(P("ids.txt"), "w") as f:
        f.write("\n".join(want) + "\n\n")
    recs = cavstream.decode(run(["--select", P("ids.txt")] + shard_paths()).stdout)[1]
    assert [r[0] for r in recs] == sorted(want), [r[0] for r in recs]  # input order
    same_records(recs, [r for r in RECS if r[0] in want])
    with open(P("ids2.txt"), "w") as f:
        f.write("clip0003\nnot-there\n")
    p = run(["--select", P("ids2.txt"), P("in.cavs")], ok=False)
    assert p.returncode == 2 and b"not-there" in p.stderr, p.stderr


def shuffle_with_seed():
    a = cavstream.decode(run(["--shuffle", "3"] + shard_paths()).stdout)[1]
    b = cavstream.decode(run(["--shuffle", "3", P("in.cavs")]).stdout)[1]  # spooled stream: same positions
    c = cavstream.decode(run(["--shuffle", "4"] + shard_paths()).stdout)[1]
    ids = [r[0] for r in a]
    assert ids == [r[0] for r in b], "same seed, same positions, different order"
    assert ids != [r[0] for r in RECS] and ids != [r[0] for r in c]
    assert sorted(ids) == [r[0] for r in RECS]
    same_records(sorted(a, key=lambda r: r[0]), RECS)


def size_limit_splits():
    run([P("in.cavs"), "-o", P("b-%d.h5"), "--max-bytes", "2M"])
    paths = sorted((P(x) for x in os.listdir(TMP) if x.startswith("b-")), key=lambda s: int(s[len(P("b-")):-3]))
    assert len(paths) >= 4, paths  # 150 x 64 KiB of incompressible floats is about 10 MB
    same_records(h5_records(paths), RECS)
    for p in paths[:-1]:
        assert os.path.getsize(p) < 4 << 20, (p, os.path.getsize(p))


def verify_reports():
    v = run(["--verify"] + shard_paths())
    assert b"total: 4 inputs, 150 records, 0 problems" in v.stdout, v.stdout
    assert b"wave                 i16  [variable] in 40/40" in v.stdout, v.stdout
    recs = make_records(6, 1000)
    recs[3] = (recs[3][0], recs[3][1], [t for t in recs[3][2] if t[0] != "fbank"])
    run(["-", "-o", P("missing.h5")], data=cavstream.encode(recs))
    v = run(["--verify", P("missing.h5"), shard_paths()[0]], ok=False)
    assert v.returncode == 2, v.returncode
    assert b"field 'fbank': missing in 1 of 6 records" in v.stderr, v.stderr
    same_records(h5_records([P("missing.h5")]), recs)  # and the absent row reads back absent


def reference_manifest_import():
    classes = [(0, "/m/09x0r", "Speech"), (1, "/m/05zppz", "Male speech, man speaking"),
               (2, "/m/0ytgt", 'Child "kid" speech'), (3, "/m/0bt9lr", "Dog")]
    with open(P("labels.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "mid", "display_name"])
        for row in [classes[2], classes[0], classes[3], classes[1]]:  # any row order
            w.writerow(row)
    items = [("vid%d" % i, labs) for i, labs in enumerate(
        ["/m/09x0r", "/m/09x0r,/m/05zppz", "/m/0bt9lr", "/m/0ytgt,/m/09x0r", "/m/0bt9lr,/m/0ytgt,/m/05zppz",
         "/m/09x0r"])]
    data = {"data": [{"video_id": v, "wav": "/audio/%s.flac" % v, "video_path": "/frames", "labels": l}
                     for v, l in items]}
    with open(P("data.json"), "w") as f:
        json.dump(data, f)
    # the reference's gen_weight_file.py, computed here
    index = {mid: i for i, mid, _ in classes}
    count = np.zeros(4)
    for _, l in items:
        for m in l.split(","):
            count[index[m]] += 1
    label_weight = 1000.0 / (count + 0.01)
    weights = [sum(label_weight[index[m]] for m in l.split(",")) for _, l in items]
    multihot = np.zeros((len(items), 4), np.float32)
    for r, (_, l) in enumerate(items):
        for m in l.split(","):
            multihot[r, index[m]] = 1.0
    run(["-j", P("data.json"), "-c", P("labels.csv"), "-o", P("labels.h5")])
    with h5py.File(P("labels.h5"), "r") as f:
        assert [x.decode() for x in f["id"][...]] == [v for v, _ in items]
        assert np.array_equal(f["labels"][...], multihot), f["labels"][...]
        assert np.array_equal(f["weight"][...], np.array(weights, np.float32)), (f["weight"][...], weights)
        assert f["attrs/wav"][2].decode() == "/audio/vid2.flac" and f["attrs/video_path"][0].decode() == "/frames"
        assert f.attrs["label_names"] == "\n".join(c[2] for c in classes), f.attrs["label_names"]
        assert f.attrs["label_mids"] == "\n".join(c[1] for c in classes) and f.attrs["label_count"] == "4"
    # join: records from a stream get their labels by id
    recs = [("vid4", {}, [("wave", np.arange(5, dtype=np.int16))]), ("vid1", {}, [("wave", np.arange(3, dtype=np.int16))])]
    d, got = cavstream.decode(run(["-j", P("data.json"), "-c", P("labels.csv"), "-"], data=cavstream.encode(recs)).stdout)
    g = {n: a for n, a in got[0][2]}
    assert np.array_equal(g["labels"], multihot[4]) and g["weight"] == np.float32(weights[4]) and g["weight"].shape == ()
    assert got[1][1]["wav"] == "/audio/vid1.flac" and d["label_count"] == "4"
    bad = [("nobody", {}, [("wave", np.arange(3, dtype=np.int16))])]
    p = run(["-j", P("data.json"), "-c", P("labels.csv"), "-"], data=cavstream.encode(bad), ok=False)
    assert p.returncode == 2 and b"'nobody'" in p.stderr and b"record 0" in p.stderr, p.stderr
    data["data"][2]["labels"] = "/m/09x0r,/m/unknown"
    with open(P("bad.json"), "w") as f:
        json.dump(data, f)
    p = run(["-j", P("bad.json"), "-c", P("labels.csv")], ok=False)
    assert p.returncode == 2 and b"data[2]" in p.stderr and b"vid2" in p.stderr and b"/m/unknown" in p.stderr, p.stderr


def usage_errors():
    for args in (["-n", "5", "-o", P("x.h5")], ["-o", P("%d-%d.h5")], ["--level", "99"], ["-j", P("data.json")],
                 ["--bogus"]):
        p = run(args, ok=False, data=b"")
        assert p.returncode == 1, (args, p.returncode, p.stderr)
    p = run(["--help"])
    assert b"Usage: shard-pack" in p.stdout
    p = run(["-o", "-"], data=open(shard_paths()[0], "rb").read(), ok=False)
    assert p.returncode == 2 and b"seekable" in p.stderr, p.stderr


for t in (stream_to_shards_read_by_h5py, h5dump_shows_filter, shards_back_to_stream_identical,
          chunks_are_plain_zstd_frames, we_read_chunks_of_other_zstd_writers, select_by_ids, shuffle_with_seed,
          size_limit_splits, verify_reports, reference_manifest_import, usage_errors):
    test(t)
subprocess.run(["rm", "-rf", TMP])
sys.exit(toolenv.status())
