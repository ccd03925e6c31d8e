"""cavstream.py: an independent Python reader/writer of the record stream, written from cav-stream(5)
(not from the C code), for the tool tests. Records are (id, attrs dict, [(name, numpy array)]). Also one
field of one row of a shard opened with h5py, from cav-shard(5)."""
import struct

import numpy as np
import zstandard

MAGIC = b"\x89CAV\r\n\x1a\n"
DTYPES = {1: np.uint8, 2: np.int16, 3: np.int32, 4: np.int64, 5: np.float16, 6: np.float32, 7: np.float64}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}


def _s(b):
    return struct.pack("<I", len(b)) + b


def _attrs(d):
    return struct.pack("<I", len(d)) + b"".join(_s(k.encode()) + _s(v.encode()) for k, v in d.items())


def frame(tag, payload, level=3):
    c = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True).compress(payload)
    return tag + struct.pack("<QQ", len(c), len(payload)) + c


def tensor_bytes(name, a):
    a = np.array(a, order="C", copy=False)  # (ascontiguousarray makes scalars 1-d)
    head = _s(name.encode()) + struct.pack("<BBH", CODES[a.dtype], a.ndim, 0)
    head += struct.pack("<%dQ" % a.ndim, *a.shape) + struct.pack("<Q", a.nbytes)
    return head + a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def record_payload(rid, attrs, tensors):
    p = _s(rid.encode()) + _attrs(attrs) + struct.pack("<I", len(tensors))
    return p + b"".join(tensor_bytes(n, a) for n, a in tensors)


def encode(records, dataset_attrs=None):
    # a list joined once: bytes += frame copies the whole stream each time (minutes at 20,000 records)
    out = [MAGIC + struct.pack("<II", 1, 0) + frame(b"HDR\0", _attrs(dataset_attrs or {}))]
    for rid, attrs, tensors in records:
        out.append(frame(b"REC\0", record_payload(rid, attrs, tensors)))
    return b"".join(out) + b"END\0" + struct.pack("<QQ", 0, len(records))


def decode(data):
    """Returns (dataset attrs, records); raises ValueError on anything malformed."""
    if data[:8] != MAGIC or struct.unpack_from("<II", data, 8) != (1, 0):
        raise ValueError("bad magic/version")
    pos, frames = 16, []
    while True:
        tag = data[pos:pos + 4]
        cs, us = struct.unpack_from("<QQ", data, pos + 4)
        pos += 20
        if tag == b"END\0":
            if pos != len(data) or us != len(frames) - 1:
                raise ValueError("bad end frame")
            break
        p = zstandard.ZstdDecompressor().decompress(data[pos:pos + cs])
        if len(p) != us:
            raise ValueError("size")
        frames.append(p)
        pos += cs

    def rd_str(p, o):
        n = struct.unpack_from("<I", p, o)[0]
        return p[o + 4:o + 4 + n].decode(), o + 4 + n

    def rd_attrs(p, o):
        n = struct.unpack_from("<I", p, o)[0]
        o += 4
        d = {}
        for _ in range(n):
            k, o = rd_str(p, o)
            v, o = rd_str(p, o)
            d[k] = v
        return d, o

    dattrs, _ = rd_attrs(frames[0], 0)
    recs = []
    for p in frames[1:]:
        rid, o = rd_str(p, 0)
        attrs, o = rd_attrs(p, o)
        nt = struct.unpack_from("<I", p, o)[0]
        o += 4
        ts = []
        for _ in range(nt):
            name, o = rd_str(p, o)
            dt, nd, _r = struct.unpack_from("<BBH", p, o)
            o += 4
            shape = struct.unpack_from("<%dQ" % nd, p, o)
            o += 8 * nd
            nb = struct.unpack_from("<Q", p, o)[0]
            o += 8
            a = np.frombuffer(p[o:o + nb], dtype=np.dtype(DTYPES[dt]).newbyteorder("<")).reshape(shape)
            o += nb
            ts.append((name, a))
        recs.append((rid, attrs, ts))
    return dattrs, recs


def h5_row(f, name, i):
    """Row i of a shard field (f: an open h5py.File): a plain dataset, or the variable-shape layout of
    cav-shard(5) (a group of offset, ndim, shape and data); None for a row without the field."""
    obj = f[name]
    if not hasattr(obj, "keys"):  # a dataset
        return obj[i]
    o, nd, s = obj["offset"][i], obj["ndim"][i], obj["shape"][i]
    if nd < 0:
        return None
    shape = tuple(int(x) for x in s[:nd])
    return obj["data"][o:o + int(np.prod(shape, dtype=np.int64))].reshape(shape)
