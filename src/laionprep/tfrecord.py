"""TFRecord files and ``tf.train.Example`` records without importing TensorFlow — shared by reshard, build-tfds
and validate.

Worker processes (Beam's, validate's) only move or check records; importing TensorFlow costs ~10 s per process and
a lot of memory, so they use this module instead:

* the TFRecord framing (``uint64 length | masked crc32c(length) | data | masked crc32c(data)``, little endian),
  read and written through fsspec (local, gs://, memory://), with both checksums verified on read.  Skipping
  records (``start``) seeks over them without reading their data;
* :func:`read_frames` reads on past a damaged record where the framing allows it and reports each damage with its
  record index and byte offset (what ``validate`` needs; TensorFlow's reader stops at the first bad frame with an
  error that names neither);
* :func:`count_records` hops from header to header (payloads seeked over, never read), checking that the last
  frame ends exactly at the end of the file;
* an ``Example`` message class built at run time from a descriptor that is wire-compatible with TensorFlow's
  ``tensorflow/core/example/{example,feature}.proto`` (same field numbers and types), in a private descriptor
  pool so that it never clashes with TensorFlow's own classes when both are loaded.

Files written here are byte-identical to ``tf.io.TFRecordWriter``'s for the same records (tested).
"""
from __future__ import annotations

import dataclasses
import struct
from typing import BinaryIO, Iterator, Union

import google_crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from laionprep import fs as lfs
from laionprep.errors import DataError

_MASK_DELTA = 0xA282EAD8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_HEADER = struct.Struct("<QI")
READ_BLOCK = 8 << 20  # fsspec block size for remote reads (sequential, so large blocks)
_FIX_CORRUPT = "re-create the file from its source (re-download the shard, or re-run reshard)"
_FIX_TRUNCATED = "the file was cut short (a killed writer?): re-create it from its source"


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _open_read(url: str):
    fsys, path = lfs.get_fs(url)
    if lfs.is_local(url):
        return open(path, "rb", buffering=1 << 20)
    return lfs.open_file(url, "rb", block_size=READ_BLOCK, cache_type="readahead")


def read_records(url: str, start: int = 0, stop: int | None = None, verify: bool = True) -> Iterator[bytes]:
    """Records ``start <= i < stop`` of the TFRecord file ``url`` (``stop=None``: to the end).

    Records before ``start`` are skipped by seeking over them (their length checksum is still verified).  A
    truncated file or a checksum mismatch raises :class:`DataError` naming the file and record index.
    """
    with _open_read(url) as f:
        i = 0
        while stop is None or i < stop:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise DataError(f"truncated TFRecord file: record {i} has a partial header", where=f"{url} record {i}",
                                fix=_FIX_TRUNCATED)
            (length,) = _U64.unpack_from(head, 0)
            if verify and _U32.unpack_from(head, 8)[0] != masked_crc(head[:8]):
                raise DataError(f"corrupt TFRecord file: bad length checksum at record {i}", where=f"{url} record {i}",
                                fix=_FIX_CORRUPT)
            if i < start:
                f.seek(length + 4, 1)
                i += 1
                continue
            data = f.read(length)
            tail = f.read(4)
            if len(data) < length or len(tail) < 4:
                raise DataError(f"truncated TFRecord file: record {i} is cut short", where=f"{url} record {i}",
                                fix=_FIX_TRUNCATED)
            if verify and _U32.unpack(tail)[0] != masked_crc(data):
                raise DataError(f"corrupt TFRecord file: bad data checksum at record {i}", where=f"{url} record {i}",
                                fix=_FIX_CORRUPT)
            yield data
            i += 1


def frame(data: bytes) -> bytes:
    """One TFRecord frame holding ``data`` (the exact bytes ``tf.io.TFRecordWriter`` writes)."""
    head = _U64.pack(len(data))
    return head + _U32.pack(masked_crc(head)) + data + _U32.pack(masked_crc(data))


@dataclasses.dataclass(frozen=True)
class Damage:
    """A frame that could not be read.  ``kind``: truncated, bad_length_crc or bad_data_crc."""

    kind: str
    index: int  # record index (0-based) of the damaged frame within the file
    offset: int  # byte offset of the frame's start
    message: str
    data: bytes | None = None  # the (unverified) record bytes of a bad_data_crc frame, for naming its key
    unchecked_bytes: int = 0  # bytes after the damage that could not be checked


Frame = tuple  # (index, offset, data)


def read_frames(f: BinaryIO, size: int | None = None) -> Iterator[Union[tuple, Damage]]:
    """Yield ``(index, offset, data)`` for each good record of the open file ``f``, and :class:`Damage` for a bad one.

    ``size`` (the file size, when known) lets a damage report say how many bytes were left unchecked.
    """
    read = f.read
    unpack_header = _HEADER.unpack
    unpack_footer = _U32.unpack
    crc = google_crc32c.value
    pos = 0
    index = 0
    while True:
        header = read(12)
        if not header:
            return
        if len(header) < 12:
            yield Damage("truncated", index, pos, f"file ends inside the header of record {index} "
                                                  f"({len(header)} of 12 header bytes present)")
            return
        length, length_crc = unpack_header(header)
        c = crc(header[:8])
        if ((((c >> 15) | (c << 17)) + _MASK_DELTA) & 0xFFFFFFFF) != length_crc:
            left = (size - pos - 12) if size is not None else 0
            yield Damage("bad_length_crc", index, pos,
                         f"length field of record {index} fails its CRC: the framing is lost, the remaining "
                         + (f"{left:,} bytes" if size is not None else "bytes") + " of the file cannot be checked",
                         unchecked_bytes=max(left, 0))
            return
        data = read(length)
        if len(data) < length:
            yield Damage("truncated", index, pos, f"file ends inside record {index}: {len(data):,} of {length:,} "
                                                  f"data bytes present")
            return
        footer = read(4)
        if len(footer) < 4:
            yield Damage("truncated", index, pos, f"file ends inside the data CRC of record {index}")
            return
        c = crc(data)
        if ((((c >> 15) | (c << 17)) + _MASK_DELTA) & 0xFFFFFFFF) != unpack_footer(footer)[0]:
            yield Damage("bad_data_crc", index, pos, f"record {index} ({length:,} bytes) fails its data CRC: "
                                                     "its bytes were changed after it was written", data=data)
        else:
            yield index, pos, data
        pos += 16 + length
        index += 1


def count_records(url: str, size: int | None = None) -> int:
    """Number of records in ``url``, reading only the 12-byte frame headers (length checksums verified).

    Raises :class:`DataError` if the framing is broken or the last frame does not end exactly at the file's end.
    """
    with _open_read(url) as f:
        if size is None:
            f.seek(0, 2)
            size = f.tell()
            f.seek(0)
        n = pos = 0
        while pos < size:
            head = f.read(12)
            if len(head) < 12:
                raise DataError(f"truncated TFRecord file: record {n} has a partial header", where=f"{url} record {n}",
                                fix=_FIX_TRUNCATED)
            if _U32.unpack_from(head, 8)[0] != masked_crc(head[:8]):
                raise DataError(f"corrupt TFRecord file: bad length checksum at record {n}",
                                where=f"{url} record {n}", fix=_FIX_CORRUPT)
            pos += 16 + _U64.unpack_from(head, 0)[0]
            if pos > size:
                raise DataError(f"truncated TFRecord file: record {n} is cut short", where=f"{url} record {n}",
                                fix=_FIX_TRUNCATED)
            f.seek(pos)
            n += 1
        return n


def write_records(url: str, records) -> int:
    """Write ``records`` (bytes) as one TFRecord file; returns the count."""
    with RecordWriter(url) as w:
        for data in records:
            w.write(data)
        return w.records


class RecordWriter:
    """Writes TFRecord framing to an fsspec URL; ``bytes_written`` counts the file size so far."""

    def __init__(self, url: str):
        self.url = url
        if lfs.is_local(url):
            self._f = open(lfs.get_fs(url)[1], "wb", buffering=1 << 20)
        else:
            fsys, path = lfs.get_fs(url)
            self._f = fsys.open(path, "wb")
        self.records = 0
        self.bytes_written = 0

    def write(self, data: bytes) -> None:
        head = _U64.pack(len(data))
        w = self._f.write
        w(head)
        w(_U32.pack(masked_crc(head)))
        w(data)
        w(_U32.pack(masked_crc(data)))
        self.records += 1
        self.bytes_written += len(data) + 16

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _example_classes():
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="laionprep/example.proto", package="laionprep_tf",
                                             syntax="proto3")

    def message(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name, packed in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if packed:
                f.options.packed = True
        return m

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", [("value", 1, F.TYPE_BYTES, rep, None, False)])
    message("FloatList", [("value", 1, F.TYPE_FLOAT, rep, None, True)])
    message("Int64List", [("value", 1, F.TYPE_INT64, rep, None, True)])
    feature = message("Feature", [("bytes_list", 1, F.TYPE_MESSAGE, opt, ".laionprep_tf.BytesList", False),
                                  ("float_list", 2, F.TYPE_MESSAGE, opt, ".laionprep_tf.FloatList", False),
                                  ("int64_list", 3, F.TYPE_MESSAGE, opt, ".laionprep_tf.Int64List", False)])
    feature.oneof_decl.add(name="kind")
    for f in feature.field:
        f.oneof_index = 0
    features = message("Features", [("feature", 1, F.TYPE_MESSAGE, rep, ".laionprep_tf.Features.FeatureEntry", False)])
    entry = features.nested_type.add(name="FeatureEntry")
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=opt, type_name=".laionprep_tf.Feature")
    entry.options.map_entry = True
    message("Example", [("features", 1, F.TYPE_MESSAGE, opt, ".laionprep_tf.Features", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("laionprep_tf.Example")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("laionprep_tf.Feature")))


Example, Feature = _example_classes()

# Feature kinds as the Example's oneof names them, and the short names used in schemas and manifests.
KIND_FIELD = {"bytes": "bytes_list", "int64": "int64_list", "float": "float_list"}
FIELD_KIND = {v: k for k, v in KIND_FIELD.items()}


def feature_kinds(data: bytes) -> dict[str, str | None]:
    """``{key: 'bytes' | 'int64' | 'float' | None}`` of one serialized Example (None: an empty feature)."""
    ex = Example.FromString(data)
    return {k: FIELD_KIND.get(f.WhichOneof("kind")) for k, f in ex.features.feature.items()}
