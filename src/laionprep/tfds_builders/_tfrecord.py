"""Counting and sampling the records of a TFRecord file without TensorFlow and without reading the payloads.

A TFRecord file is a sequence of ``uint64 length | uint32 masked crc32c(length) | data | uint32 masked
crc32c(data)`` frames (little endian).  :func:`count_records` hops from header to header, verifying each length
checksum and that the last frame ends exactly at the end of the file, so a truncated or padded file is caught;
the payload bytes are seeked over, never parsed.  This is what ``build-tfds --verify`` uses to check the counts
that img2dataset's ``_stats.json`` or reshard's ``counts.json`` claim.
"""
from __future__ import annotations

import struct
from typing import Iterator

from laionprep import fs as lfs
from laionprep.errors import DataError

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


def _masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _open(url: str):
    if lfs.is_local(url):
        return open(lfs.get_fs(url)[1], "rb", buffering=1 << 16)
    fsys, path = lfs.get_fs(url)
    return fsys.open(path, "rb", block_size=8 << 20, cache_type="readahead")


def _frames(f, url: str) -> Iterator[tuple[int, int]]:
    """(index, payload length) of each frame, leaving ``f`` positioned at the payload."""
    i = 0
    while True:
        head = f.read(12)
        if not head:
            return
        if len(head) < 12:
            raise DataError(f"truncated TFRecord file: record {i} has a partial header", where=f"{url} record {i}",
                            fix="the file was cut short (a killed writer?): re-create it from its source")
        (length,) = _U64.unpack_from(head, 0)
        if _U32.unpack_from(head, 8)[0] != _masked_crc(head[:8]):
            raise DataError(f"corrupt TFRecord file: bad length checksum at record {i}", where=f"{url} record {i}",
                            fix="re-create the file from its source (re-download the shard or re-run reshard)")
        yield i, length
        i += 1


def count_records(url: str, size: int | None = None) -> int:
    """Number of records in ``url``; raises :class:`DataError` if the framing is broken or the file is cut short."""
    with _open(url) as f:
        if size is None:
            f.seek(0, 2)
            size = f.tell()
            f.seek(0)
        n = 0
        pos = 0
        for i, length in _frames(f, url):
            pos += 12 + length + 4
            if pos > size:
                raise DataError(f"truncated TFRecord file: record {i} is cut short", where=f"{url} record {i}",
                                fix="the file was cut short (a killed writer?): re-create it from its source")
            f.seek(pos)
            n += 1
        return n


def read_records(url: str, limit: int | None = None) -> Iterator[bytes]:
    """The first ``limit`` records (all with ``None``) of ``url``, payload checksums verified."""
    with _open(url) as f:
        for i, length in _frames(f, url):
            if limit is not None and i >= limit:
                return
            data = f.read(length)
            tail = f.read(4)
            if len(data) < length or len(tail) < 4:
                raise DataError(f"truncated TFRecord file: record {i} is cut short", where=f"{url} record {i}",
                                fix="the file was cut short (a killed writer?): re-create it from its source")
            if _U32.unpack(tail)[0] != _masked_crc(data):
                raise DataError(f"corrupt TFRecord file: bad data checksum at record {i}", where=f"{url} record {i}",
                                fix="re-create the file from its source (re-download the shard or re-run reshard)")
            yield data


def write_records(url: str, records) -> int:
    """Write ``records`` (bytes) as a TFRecord file; returns the count.  Used for image-folder datasets."""
    n = 0
    with lfs.open_file(url, "wb") as f:
        for data in records:
            head = _U64.pack(len(data))
            f.write(head)
            f.write(_U32.pack(_masked_crc(head)))
            f.write(data)
            f.write(_U32.pack(_masked_crc(data)))
            n += 1
    return n
