"""TFRecord files and ``tf.train.Example`` records without importing TensorFlow.

Beam workers only move records from file to file; importing TensorFlow costs ~10 s per worker process and a lot
of memory, so the workers use this module instead:

* the TFRecord framing (``uint64 length | masked crc32c(length) | data | masked crc32c(data)``, little endian),
  read and written through fsspec (local, gs://, memory://), with both checksums verified on read.  Skipping
  records (``start``) seeks over them without reading their data;
* an ``Example`` message class built at run time from a descriptor that is wire-compatible with TensorFlow's
  ``tensorflow/core/example/{example,feature}.proto`` (same field numbers and types), in a private descriptor
  pool so that it never clashes with TensorFlow's own classes when both are loaded.

Files written here are byte-identical to ``tf.io.TFRecordWriter``'s for the same records (tested).
"""
from __future__ import annotations

import struct
from typing import Iterator

import google_crc32c
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from laionprep import fs as lfs
from laionprep.errors import DataError

_MASK_DELTA = 0xA282EAD8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
READ_BLOCK = 8 << 20  # fsspec block size for remote reads (sequential, so large blocks)


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _open_read(url: str):
    fsys, path = lfs.get_fs(url)
    if lfs.is_local(url):
        return open(path, "rb", buffering=1 << 20)
    return fsys.open(path, "rb", block_size=READ_BLOCK, cache_type="readahead")


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
                                fix="the file was cut short (a killed writer?): re-create it from its source")
            (length,) = _U64.unpack_from(head, 0)
            if verify and _U32.unpack_from(head, 8)[0] != masked_crc(head[:8]):
                raise DataError("corrupt TFRecord file: bad length checksum", where=f"{url} record {i}",
                                fix="re-create the file from its source (re-run the download for this shard)")
            if i < start:
                f.seek(length + 4, 1)
                i += 1
                continue
            data = f.read(length)
            tail = f.read(4)
            if len(data) < length or len(tail) < 4:
                raise DataError(f"truncated TFRecord file: record {i} is cut short", where=f"{url} record {i}",
                                fix="the file was cut short (a killed writer?): re-create it from its source")
            if verify and _U32.unpack(tail)[0] != masked_crc(data):
                raise DataError("corrupt TFRecord file: bad data checksum", where=f"{url} record {i}",
                                fix="re-create the file from its source (re-run the download for this shard)")
            yield data
            i += 1


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
    fdp = descriptor_pb2.FileDescriptorProto(name="laionprep/sharding/example.proto", package="laionprep_tf",
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
