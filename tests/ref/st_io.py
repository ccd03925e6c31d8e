"""st_io.py: safetensors read and write with Python's standard library and torch only (no safetensors
package). The format: an 8-byte little-endian header length N, N bytes of JSON (an object mapping each
tensor name to {"dtype", "shape", "data_offsets": [begin, end]} relative to the data area, plus an optional
"__metadata__" object of string values), then the raw little-endian data. The writer pads the header with
spaces to a multiple of 8 bytes, as the reference writer does, so every tensor starts 8-byte aligned."""

import json
import struct

import torch

DTYPES = {
    'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16,
    'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8, 'U8': torch.uint8,
    'BOOL': torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}


def save(path, tensors, metadata=None):
    """tensors: dict name -> torch tensor (any layout; written contiguous); metadata: dict str -> str."""
    header = {}
    blobs = []
    off = 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        raw = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        header[name] = {'dtype': NAMES[t.dtype], 'shape': list(t.shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        for k, v in metadata.items():
            if not isinstance(v, str):
                raise TypeError('safetensors metadata values are strings: %s' % k)
        header['__metadata__'] = dict(metadata)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load(path):
    """-> (dict name -> tensor, metadata dict). Checks the offsets cover the data area exactly."""
    with open(path, 'rb') as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError('%s: shorter than the 8-byte header length' % path)
    (n,) = struct.unpack('<Q', data[:8])
    if n > len(data) - 8:
        raise ValueError('%s: header length %d beyond the file' % (path, n))
    header = json.loads(data[8:8 + n].decode())
    meta = header.pop('__metadata__', {}) or {}
    body = memoryview(data)[8 + n:]
    out = {}
    spans = []
    for name, e in header.items():
        b, en = e['data_offsets']
        dt = DTYPES[e['dtype']]
        shape = e['shape']
        numel = 1
        for s in shape:
            numel *= s
        if not (0 <= b <= en <= len(body)) or en - b != numel * torch.empty(0, dtype=dt).element_size():
            raise ValueError('%s: tensor %s: bad data_offsets' % (path, name))
        spans.append((b, en))
        buf = bytearray(body[b:en])
        t = torch.frombuffer(buf, dtype=dt) if len(buf) else torch.empty(0, dtype=dt)
        out[name] = t.reshape(shape)
    spans.sort()
    pos = 0
    for b, en in spans:
        if b != pos:
            raise ValueError('%s: data area has holes or overlaps' % path)
        pos = en
    if pos != len(body):
        raise ValueError('%s: data area has trailing bytes' % path)
    return out, meta


def read_header(path):
    """-> (header dict without __metadata__, metadata dict), reading only the header."""
    with open(path, 'rb') as f:
        (n,) = struct.unpack('<Q', f.read(8))
        header = json.loads(f.read(n).decode())
    meta = header.pop('__metadata__', {}) or {}
    return header, meta
