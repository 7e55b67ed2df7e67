"""ArrayRecord shards (``reshard --format array_record``): the same serialized ``tf.train.Example`` records as the
TFRecord shards, in Google's random-access container (``array_record``, what ``tfds.data_source`` and Grain read).

Written with ``group_size:1`` (one record per chunk), the option TFDS itself writes ArrayRecord files with
(``tensorflow_datasets/core/file_adapters.py``): reading record ``i`` then reads one record, which is what a
globally shuffled loader does for every example.  And ``uncompressed``, unlike TFDS (zstd, ArrayRecord's default):
the records are JPEG bytes, which zstd shrinks by ~1%, while decompressing costs a random read 2.6x the CPU
(68 against 26 us per 78 KiB record, measured here).  Readers need no option: a file records how it was written.
The C++ reader and writer take local paths; a remote output is written to a local temporary file and uploaded on
``close``.

``read_records`` / ``count_records`` dispatch on the file name, so a reader that takes either format (build-tfds,
validate) calls them instead of :mod:`laionprep.tfrecord`'s.
"""
from __future__ import annotations

import os
import tempfile
from typing import Iterator

from laionprep import fs as lfs
from laionprep import tfrecord
from laionprep.errors import DataError
from laionprep.folders.names import file_format_of

WRITER_OPTIONS = "group_size:1,uncompressed"
_BATCH = 256  # records per read call: one call per record costs ~2 us of Python each


def _module():
    from array_record.python import array_record_module  # a C++ extension: loaded by the readers that need it

    return array_record_module


def _local(url: str, what: str) -> str:
    if not lfs.is_local(url):
        raise DataError(f"ArrayRecord files are read from local disk only ({what})", where=url,
                        fix="copy the folder to local disk (gsutil -m cp -r), or reshard to TFRecord")
    return lfs.get_fs(url)[1]


_DAMAGED_FIX = "write it again (re-run the reshard: damaged or missing output shards are redone)"


def _open(url: str, what: str):
    """An open reader; a file that is not a whole ArrayRecord file (truncated, another format) is a DataError: the
    C++ reader does not raise, it reports ``ok() == False`` and zero records."""
    path = _local(url, what)
    if not os.path.exists(path):
        raise DataError("shard file missing", where=url, fix=_DAMAGED_FIX)
    try:
        r = _module().ArrayRecordReader(path)
        ok = r.ok()
    except Exception as e:  # noqa: BLE001 -- the C++ binding's errors have no common class
        ok, r = False, None
        detail = f" ({e})"
    else:
        detail = ""
    if not ok:
        if r is not None:
            try:
                r.close()
            except Exception as e:  # noqa: BLE001 -- close reports why the file did not open (riegeli's message)
                detail = f" ({e})"
        raise DataError(f"not a readable ArrayRecord file (truncated or another format){detail}", where=url,
                        fix=_DAMAGED_FIX)
    return r


class ArrayRecordFileWriter:
    """:class:`laionprep.tfrecord.RecordWriter`'s interface for an ArrayRecord file; ``bytes_written`` is the file's
    size once closed (the container's own chunking decides it)."""

    def __init__(self, url: str):
        self.url = url
        self._remote = not lfs.is_local(url)
        if self._remote:
            fd, self._path = tempfile.mkstemp(suffix=".array_record")
            os.close(fd)
        else:
            self._path = lfs.get_fs(url)[1]
        self._w = _module().ArrayRecordWriter(self._path, WRITER_OPTIONS)
        self.records = 0
        self.bytes_written = 0
        self._closed = False

    def write(self, data: bytes) -> None:
        self._w.write(data)
        self.records += 1

    def flush(self) -> None:
        pass  # the container has no partial flush; a killed writer leaves a temporary file the stage removes

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._w.close()
        self.bytes_written = os.path.getsize(self._path)
        if self._remote:
            try:
                fsys, path = lfs.get_fs(self.url)
                fsys.put_file(self._path, path)
            finally:
                os.remove(self._path)


def writer(url: str, file_format: str):
    """The record writer of ``file_format`` (``tfrecord`` or ``array_record``) for ``url``."""
    return ArrayRecordFileWriter(url) if file_format == "array_record" else tfrecord.RecordWriter(url)


def count(url: str) -> int:
    """The number of records in an ArrayRecord file (from its footer index: no record is read)."""
    r = _open(url, "count")
    try:
        return int(r.num_records())
    finally:
        r.close()


def iter_array_records(url: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
    r = _open(url, "read")
    try:
        n = int(r.num_records())
        stop = n if stop is None else min(stop, n)
        for lo in range(start, stop, _BATCH):
            hi = min(stop, lo + _BATCH)
            try:
                batch = r.read(list(range(lo, hi)))
            except Exception as e:
                raise DataError(f"ArrayRecord file damaged near record {lo} ({e})", where=f"{url} record {lo}",
                                fix=_DAMAGED_FIX) from None
            yield from batch
    finally:
        r.close()


def read_records(url: str, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
    """Records ``start``..``stop`` of a shard of either format (chosen by the file name)."""
    if file_format_of(url) == "array_record":
        return iter_array_records(url, start, stop)
    return tfrecord.read_records(url, start, stop)


def count_records(url: str, size: int | None = None) -> int:
    """The record count of a shard of either format (TFRecord: from the frame headers)."""
    if file_format_of(url) == "array_record":
        return count(url)
    return tfrecord.count_records(url, size)


def read_frames(url: str) -> Iterator[tuple | tfrecord.Damage]:
    """validate's view of an ArrayRecord file, as :func:`laionprep.tfrecord.read_frames` gives a TFRecord's:
    ``(index, offset, data)`` per record (``offset`` is the record index: the container has no byte offsets per
    record), or one ``Damage`` (``truncated``) where the file cannot be opened whole or a chunk fails to decode
    (riegeli checks every chunk's hash)."""
    try:
        r = _open(url, "validate")
    except DataError as e:
        yield tfrecord.Damage("truncated", 0, 0, e.what)
        return
    try:
        n = int(r.num_records())
        for lo in range(0, n, _BATCH):
            idx = list(range(lo, min(n, lo + _BATCH)))
            try:
                batch = r.read(idx)
            except Exception as e:  # noqa: BLE001 -- the C++ binding's errors have no common class
                yield tfrecord.Damage("truncated", lo, lo, f"records {lo}.. cannot be decoded ({e})")
                return
            for i, data in zip(idx, batch):
                yield i, i, data
    finally:
        r.close()
