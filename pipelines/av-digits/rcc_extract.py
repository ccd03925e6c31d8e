#!/usr/bin/python3
"""Lists or unpacks the files inside a Qt resource bundle (.rcc, "qres" format versions 1-3).

Used by build.sh to reach the real background-noise recordings (rain, factory, train...) that
gcompris-qt-data ships only inside .rcc bundles. The layout (all integers big-endian):
  header: "qres", u32 version, u32 tree offset, u32 data offset, u32 names offset, [u32 flags if v>=3]
  tree node (14 bytes, 22 from v2 on): u32 name offset, u16 flags, then for a directory u32 child count and
  u32 first child index, for a file u16 country, u16 language, u32 data offset; v2+ appends u64 mtime.
  name: u16 length (UTF-16 code units), u32 hash, UTF-16BE text.
  data: u32 size, bytes; flag 1 = zlib (qCompress: u32 uncompressed size, then a zlib stream),
  flag 4 = zstd (refused here: not needed for the bundles we read).
Usage: rcc_extract.py list FILE.rcc | rcc_extract.py extract FILE.rcc OUTDIR [SUBSTRING...]
"""
import os
import struct
import sys
import zlib

FLAG_COMPRESSED, FLAG_DIRECTORY, FLAG_ZSTD = 1, 2, 4


def entries(path):
    """Yields (relative path, bytes) for every file in the bundle."""
    buf = open(path, 'rb').read()
    if buf[:4] != b'qres':
        raise ValueError('%s: not a Qt rcc bundle (magic %r)' % (path, buf[:4]))
    version, tree, data, names = struct.unpack('>IIII', buf[4:20])
    if version not in (1, 2, 3):
        raise ValueError('%s: unsupported rcc version %d' % (path, version))
    node_size = 14 if version == 1 else 22

    def name_at(off):
        (n,) = struct.unpack('>H', buf[names + off:names + off + 2])
        return buf[names + off + 6:names + off + 6 + 2 * n].decode('utf-16-be')

    def walk(index, prefix):
        base = tree + index * node_size
        name_off, flags = struct.unpack('>IH', buf[base:base + 6])
        name = '' if index == 0 else name_at(name_off)
        rel = prefix + '/' + name if prefix else name
        if flags & FLAG_DIRECTORY:
            count, first = struct.unpack('>II', buf[base + 6:base + 14])
            for child in range(first, first + count):
                yield from walk(child, rel)
            return
        (doff,) = struct.unpack('>I', buf[base + 10:base + 14])
        (size,) = struct.unpack('>I', buf[data + doff:data + doff + 4])
        blob = buf[data + doff + 4:data + doff + 4 + size]
        if flags & FLAG_ZSTD:
            raise ValueError('%s: %s is zstd-compressed, not supported' % (path, rel))
        if flags & FLAG_COMPRESSED:
            (expect,) = struct.unpack('>I', blob[:4])
            blob = zlib.decompress(blob[4:])
            if len(blob) != expect:
                raise ValueError('%s: %s inflates to %d bytes, header says %d' % (path, rel, len(blob), expect))
        yield rel, blob

    yield from walk(0, '')


def main(argv):
    if len(argv) < 3 or argv[1] not in ('list', 'extract') or (argv[1] == 'extract' and len(argv) < 4):
        sys.stderr.write(__doc__.split('Usage: ')[1])
        return 1
    try:
        if argv[1] == 'list':
            for rel, blob in entries(argv[2]):
                print('%d\t%s' % (len(blob), rel))
            return 0
        out, wanted = argv[3], argv[4:]
        for rel, blob in entries(argv[2]):
            if wanted and not any(w in rel for w in wanted):
                continue
            dst = os.path.join(out, rel.lstrip('/'))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(dst + '.tmp', 'wb') as f:
                f.write(blob)
            os.replace(dst + '.tmp', dst)
            print(dst)
        return 0
    except (ValueError, OSError, zlib.error, struct.error) as e:
        sys.stderr.write('rcc_extract: %s\n' % e)
        return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv))
