"""Helpers shared by the reshard tests (imported as a plain module: pytest puts this folder on sys.path)."""
from __future__ import annotations

import glob
import os


def kinds_of(ex) -> dict:
    return {k: f.WhichOneof("kind") for k, f in ex.features.feature.items()}


def value(ex, k):
    f = ex.features.feature[k]
    return list(getattr(f, f.WhichOneof("kind")).value)


def shard_bytes(out: str) -> dict[str, bytes]:
    """``{SPLIT/file: bytes}`` of every shard of a reshard output (one folder per split)."""
    return {os.path.relpath(p, out): open(p, "rb").read()
            for p in sorted(glob.glob(os.path.join(out, "*", "*.tfrecord")))}


def array_records(path: str) -> list[bytes]:
    """Every record of an ArrayRecord file, read with the library's own reader (not laionprep's)."""
    from array_record.python import array_record_module

    r = array_record_module.ArrayRecordReader(path)
    try:
        return r.read_all()
    finally:
        r.close()
