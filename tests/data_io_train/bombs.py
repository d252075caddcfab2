"""Hostile files for the loaders' tests: deflate streams that expand a thousandfold, built in
milliseconds (each 1 MiB of zeros compresses to the same ~1 KB block after a full flush, so
the block is repeated instead of compressing the whole expansion), and the zip and gzip
containers around them; and the check that a loader refuses such a file cheaply."""

import struct
import time
import tracemalloc
import zlib

import pytest

MIB = 1 << 20


def deflated(prefix: bytes, n_mib: int) -> tuple[bytes, int, int]:
    """A raw deflate stream of ``prefix`` followed by zeros, ``n_mib`` MiB in all:
    ``(stream, crc32, size)`` of the expanded content."""
    zeros = bytes(MIB)
    first = prefix + zeros[len(prefix):]
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(first) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(first)
    for _ in range(n_mib - 1):
        crc = zlib.crc32(zeros, crc)
    return head + block * (n_mib - 1) + c.flush(), crc, n_mib * MIB


def gzip_of(stream: bytes, crc: int, size: int) -> bytes:
    """A gzip file around a raw deflate ``stream`` of ``size`` bytes with checksum ``crc``."""
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + stream
            + struct.pack("<II", crc, size & 0xFFFFFFFF))


def zip_of(members: list[tuple[str, bytes, int, int, bool]]) -> bytes:
    """A zip archive of ``(name, data, crc32, size, deflated)`` members whose data is given
    as stored in the archive (raw deflate when ``deflated``), no zip64."""
    out, directory = bytearray(), bytearray()
    for name, data, crc, size, is_deflated in members:
        method, raw_name, offset = (8 if is_deflated else 0), name.encode(), len(out)
        fields = struct.pack("<HHHHHIIIHH", 20, 0, method, 0, 0x21, crc, len(data), size,
                             len(raw_name), 0)
        out += b"PK\x03\x04" + fields + raw_name + data
        directory += (b"PK\x01\x02" + struct.pack("<H", 20) + fields
                      + struct.pack("<HHHII", 0, 0, 0, 0, offset) + raw_name)
    end = struct.pack("<HHHHIIH", 0, 0, len(members), len(members), len(directory), len(out), 0)
    return bytes(out + directory + b"PK\x05\x06" + end)


def assert_refused_cheaply(load, path, error, match=None):
    """``load(path)`` raises ``error`` naming the file within 1 s and 50 MB over the file's
    size (generous margins: each crafted file here is refused in milliseconds and kilobytes)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error, match=match) as err:
            load(path)
    finally:
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert str(path) in str(err.value)
    assert seconds < 1.0 and peak < 50 * MIB + path.stat().st_size, (seconds, peak)
