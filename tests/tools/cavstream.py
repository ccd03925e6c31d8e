"""cavstream.py: an independent Python reader/writer of the record stream, written from cav-stream(5)
(not from the C code), for the tool tests. Records are (id, attrs dict, [(name, numpy array)]). Also one
field of one row of a shard opened with h5py, from cav-shard(5). zstd through the zstandard module, or
through libzstd with ctypes where that module is missing (a GPU machine's Python, tests/bench/gpu_session.sh)."""
import ctypes
import ctypes.util
import struct

import numpy as np

try:
    import zstandard
except ImportError:
    zstandard = None

MAGIC = b"\x89CAV\r\n\x1a\n"
DTYPES = {1: np.uint8, 2: np.int16, 3: np.int32, 4: np.int64, 5: np.float16, 6: np.float32, 7: np.float64}
CODES = {np.dtype(v): k for k, v in DTYPES.items()}


def _s(b):
    return struct.pack("<I", len(b)) + b


def _attrs(d):
    return struct.pack("<I", len(d)) + b"".join(_s(k.encode()) + _s(v.encode()) for k, v in d.items())


_lib = None


def _libzstd():
    global _lib
    if _lib is None:
        lib = ctypes.CDLL(ctypes.util.find_library("zstd") or "libzstd.so.1")
        lib.ZSTD_compressBound.restype = ctypes.c_size_t
        lib.ZSTD_createCCtx.restype = ctypes.c_void_p
        lib.ZSTD_CCtx_setParameter.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.ZSTD_CCtx_setParameter.restype = ctypes.c_size_t
        lib.ZSTD_compress2.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                       ctypes.c_size_t]
        lib.ZSTD_compress2.restype = ctypes.c_size_t
        lib.ZSTD_freeCCtx.argtypes = [ctypes.c_void_p]
        lib.ZSTD_getFrameContentSize.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        lib.ZSTD_getFrameContentSize.restype = ctypes.c_ulonglong
        lib.ZSTD_decompress.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
        lib.ZSTD_decompress.restype = ctypes.c_size_t
        lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
        _lib = lib
    return _lib


def compress(payload, level=3):
    """One zstd frame with its checksum and content size."""
    if zstandard:
        return zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True).compress(payload)
    lib = _libzstd()
    cap = lib.ZSTD_compressBound(ctypes.c_size_t(len(payload)))
    out = ctypes.create_string_buffer(cap)
    cctx = lib.ZSTD_createCCtx()
    try:
        # ZSTD_c_compressionLevel 100, ZSTD_c_contentSizeFlag 200, ZSTD_c_checksumFlag 201 (zstd.h)
        for k, v in ((100, level), (200, 1), (201, 1)):
            if lib.ZSTD_isError(lib.ZSTD_CCtx_setParameter(cctx, k, v)):
                raise ValueError("zstd parameter %d" % k)
        n = lib.ZSTD_compress2(cctx, out, cap, payload, len(payload))
    finally:
        lib.ZSTD_freeCCtx(cctx)
    if lib.ZSTD_isError(n):
        raise ValueError("zstd compression failed")
    return out.raw[:n]


def decompress(c):
    """A whole zstd frame that records its content size, as the stream's frames do."""
    if zstandard:
        return zstandard.ZstdDecompressor().decompress(c)
    lib = _libzstd()
    c = bytes(c)
    n = lib.ZSTD_getFrameContentSize(c, len(c))
    if n >= 2**64 - 2:  # ZSTD_CONTENTSIZE_UNKNOWN / _ERROR
        raise ValueError("zstd frame without a content size")
    out = ctypes.create_string_buffer(max(n, 1))
    got = lib.ZSTD_decompress(out, n, c, len(c))
    if lib.ZSTD_isError(got) or got != n:
        raise ValueError("zstd frame corrupt")
    return out.raw[:n]


def frame(tag, payload, level=3):
    c = compress(payload, level)
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
        p = decompress(data[pos:pos + cs])
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
