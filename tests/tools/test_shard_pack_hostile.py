"""test_shard_pack_hostile.py: shard-pack on hostile input. Each case must end with exit status 2 and a
message naming the file, the record and the field, for the release build under a 512 MB address-space
limit (a lying size must not turn into a huge allocation) and for the ASan+UBSan build (no memory error,
no leak). Cases: wrong magic, wrong version, truncated stream and shard, frames declaring 100 GB and 2^60
bytes, a shape whose element count overflows, a negative dimension, duplicated tensor names and ids, a
corrupt chunk inside a shard, a shard whose ragged index points outside its data."""
import os
import resource
import struct
import subprocess
import sys
import tempfile

import numpy as np
import zstandard

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cavstream  # noqa: E402

SRC = os.environ.get("CAV_SRC", os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
BIN = os.environ.get("CAV_BIN", os.path.join(SRC, "build/bin"))
ASAN_BIN = os.environ.get("CAV_ASAN_BIN", os.path.join(SRC, "build/asan/bin"))
os.environ.setdefault("HDF5_PLUGIN_PATH", os.path.join(SRC, "build/plugin"))
import h5py  # noqa: E402

TMP = tempfile.mkdtemp(prefix="test_shard_pack_hostile.")
failed = 0


def P(name):
    return os.path.join(TMP, name)


def limit_memory():
    lim = 512 << 20
    resource.setrlimit(resource.RLIMIT_AS, (lim, lim))


def expect_bad(name, args, words, data=None):
    """Runs both builds; both must exit 2 with every word in stderr, without sanitizer reports."""
    global failed
    why = None
    for label, exe, pre in (("rel", os.path.join(BIN, "shard-pack"), limit_memory),
                            ("asan", os.path.join(ASAN_BIN, "shard-pack"), None)):
        if not os.path.exists(exe):
            why = why or "%s build missing: %s" % (label, exe)
            continue
        p = subprocess.run([exe] + args, input=data, capture_output=True, preexec_fn=pre)
        err = p.stderr.decode(errors="replace")
        if p.returncode != 2:
            why = why or "%s: exit %d (want 2): %s" % (label, p.returncode, err[-300:])
        elif "Sanitizer" in err or "runtime error" in err:
            why = why or "%s: sanitizer report: %s" % (label, err[-300:])
        else:
            missing = [w for w in words if w not in err]
            if missing:
                why = why or "%s: message lacks %s: %s" % (label, missing, err.strip()[-300:])
    if why:
        failed += 1
        print("FAIL %s: %s" % (name, why.replace("\n", " ")))
    else:
        print("PASS %s" % name)
    sys.stdout.flush()


def s(b):
    return struct.pack("<I", len(b)) + b


def stream_with_payload(payload, us=None, cs=None, version=1):
    """A valid header, then one record frame holding payload, with optionally lying sizes."""
    c = zstandard.ZstdCompressor(level=3, write_checksum=True, write_content_size=True).compress(payload)
    rec = b"REC\0" + struct.pack("<QQ", len(c) if cs is None else cs, len(payload) if us is None else us) + c
    head = cavstream.MAGIC + struct.pack("<II", version, 0) + cavstream.frame(b"HDR\0", struct.pack("<I", 0))
    return head + rec + b"END\0" + struct.pack("<QQ", 0, 1)


def tensor(name, dtype, dims, nbytes, data):
    return (s(name) + struct.pack("<BBH", dtype, len(dims), 0) + b"".join(struct.pack("<Q", d & (2**64 - 1)) for d in dims)
            + struct.pack("<Q", nbytes) + data)


def record(rid, tensors):
    return s(rid) + struct.pack("<I", 0) + struct.pack("<I", len(tensors)) + b"".join(tensors)


def write(name, data):
    with open(P(name), "wb") as f:
        f.write(data)
    return P(name)


good_wave = tensor(b"wave", 2, [4], 8, b"\1" * 8)
# fbank rows of 64 KiB: one chunk per row
recs = [("clip%d" % i, {"source": "x"}, [("wave", np.arange(i + 3, dtype=np.int16)),
                                         ("fbank", np.full((128, 128), i, np.float32))]) for i in range(30)]
good = cavstream.encode(recs)
write("good.cavs", good)

bad = bytearray(good)
bad[3] = ord("X")
expect_bad("wrong_magic", [write("magic.cavs", bytes(bad))], ["magic.cavs", "magic"])
bad = bytearray(good)
bad[8] = 2
expect_bad("wrong_version", [write("version.cavs", bytes(bad))], ["version.cavs", "version"])
expect_bad("truncated_stream", [write("cut.cavs", good[:len(good) * 2 // 3])], ["cut.cavs", "record", "truncated"])
expect_bad("truncated_stream_at_frame_boundary", [write("cut2.cavs", good[:-20])], ["cut2.cavs", "record 30", "truncated"])
expect_bad("truncated_stdin", ["-"], ["stdin", "truncated"], data=good[:len(good) // 2])
payload = record(b"c0", [good_wave])
expect_bad("frame_of_100GB", [write("100g.cavs", stream_with_payload(payload, us=100 << 30))],
           ["100g.cavs", "record 0", "frame size"])
expect_bad("frame_of_2_60", [write("260.cavs", stream_with_payload(payload, us=1 << 60))],
           ["260.cavs", "record 0", "frame size"])
expect_bad("compressed_size_beyond_input", [write("cs.cavs", stream_with_payload(payload, cs=1 << 36))],
           ["cs.cavs", "record 0", "frame size"])
big = tensor(b"fbank", 7, [1 << 32, 1 << 32], 8, b"\0" * 8)
expect_bad("shape_product_overflow", [write("ovf.cavs", stream_with_payload(record(b"c0", [big])))],
           ["ovf.cavs", "record 0", "'c0'", "fbank", "overflow"])
huge = tensor(b"fbank", 6, [1 << 30, 1 << 20], (1 << 52), b"\0" * 8)
expect_bad("shape_larger_than_frame", [write("huge.cavs", stream_with_payload(record(b"c0", [huge])))],
           ["huge.cavs", "record 0", "fbank", "more bytes than the frame"])
neg = tensor(b"wave", 2, [-4], 8, b"\0" * 8)
expect_bad("negative_dimension", [write("neg.cavs", stream_with_payload(record(b"c0", [neg])))],
           ["neg.cavs", "record 0", "wave", "negative"])
expect_bad("duplicated_tensor_name", [write("dupt.cavs", stream_with_payload(record(b"c0", [good_wave, good_wave])))],
           ["dupt.cavs", "record 0", "wave", "duplicated"])
dup = cavstream.encode(recs[:3] + [recs[1]])
expect_bad("duplicated_id_in_stream", [write("dupid.cavs", dup)], ["dupid.cavs", "record 3", "clip1", "duplicated"])
expect_bad("duplicated_id_across_inputs", [P("good.cavs"), write("other.cavs", cavstream.encode(recs[5:6])),
                                           "-o", P("merged.h5")], ["other.cavs", "clip5", "duplicated"])
# output abandoned on error: no complete-looking merged.h5 and no temporary left behind
leftovers = [x for x in os.listdir(TMP) if x.startswith("merged")]
print(("PASS" if not leftovers else "FAIL") + " failed_output_removed" + ("" if not leftovers else ": %s" % leftovers))
failed += bool(leftovers)

# shards
subprocess.run([os.path.join(BIN, "shard-pack"), P("good.cavs"), "-o", P("good.h5")], check=True, stderr=subprocess.DEVNULL)
data = open(P("good.h5"), "rb").read()
expect_bad("truncated_shard", [write("cut.h5", data[:len(data) // 2])], ["cut.h5"])
expect_bad("truncated_shard_verify", ["--verify", P("cut.h5")], ["cut.h5"])
with h5py.File(P("good.h5"), "r") as f:
    info = f["fbank"].id.get_chunk_info_by_coord((7, 0, 0))
corrupt = bytearray(data)
corrupt[info.byte_offset + info.size // 2] ^= 0xFF
expect_bad("corrupt_chunk", ["--verify", write("corrupt.h5", bytes(corrupt))], ["corrupt.h5", "row 7", "clip7", "fbank"])
expect_bad("corrupt_chunk_convert", [P("corrupt.h5")], ["corrupt.h5", "row 7", "clip7", "fbank"])
subprocess.run(["cp", P("good.h5"), P("index.h5")], check=True)
with h5py.File(P("index.h5"), "r+") as f:
    off = f["wave/offset"][...]  # (a read loads the filter plugin; HDF5 loads plugins on read or create only)
    off[4] = 10**12
    f["wave/offset"][...] = off
expect_bad("ragged_offset_outside_data", [P("index.h5")], ["index.h5", "row 4", "clip4", "wave", "offset"])
subprocess.run(["cp", P("good.h5"), P("rows.h5")], check=True)
with h5py.File(P("rows.h5"), "r+") as f:
    f.attrs["cav_rows"] = np.int64(31)
expect_bad("row_count_mismatch", [P("rows.h5")], ["rows.h5", "31 rows"])
subprocess.run(["cp", P("good.h5"), P("schema.h5")], check=True)
with h5py.File(P("schema.h5"), "r+") as f:
    f.attrs["cav_schema_version"] = np.int64(9)
expect_bad("schema_version", [P("schema.h5")], ["schema.h5", "cav_schema_version"])
with h5py.File(P("sizes.h5"), "w") as f:  # a shard declaring a 2^60-element row
    f.attrs["cav_schema"] = "cav-shard"
    f.attrs["cav_schema_version"] = np.int64(1)
    f.attrs["cav_rows"] = np.int64(1)
    f.create_dataset("id", data=np.array(["a"], dtype=h5py.string_dtype()))
    g = f.create_group("wave")
    g.attrs["cav_layout"], g.attrs["cav_dtype"] = "ragged", "i16"
    g.create_dataset("data", data=np.zeros(4, np.int16))
    g.create_dataset("offset", data=np.zeros(1, np.int64))
    g.create_dataset("ndim", data=np.full(1, 2, np.int32))
    sh = np.zeros((1, 8), np.int64)
    sh[0, :2] = 1 << 30
    g.create_dataset("shape", data=sh)
expect_bad("shard_absurd_row_shape", [P("sizes.h5")], ["sizes.h5", "row 0", "wave", "shape"])
subprocess.run(["rm", "-rf", TMP])
sys.exit(1 if failed else 0)
