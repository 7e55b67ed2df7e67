"""Records of an img2dataset TFRecord folder; its shards are scanned by :mod:`laionprep.folders` (re-exported here
for the callers that read both).
"""
from __future__ import annotations

from typing import Iterator

from laionprep.folders.shardscan import Shard, ShardScan, resolve_download_folder, scan

__all__ = ["Shard", "ShardScan", "resolve_download_folder", "scan", "iter_records", "parse_example"]


def iter_records(path: str) -> Iterator[bytes]:
    """Serialized records of one TFRecord file (local or gs://), both checksums verified."""
    from laionprep.tfrecord import read_records

    return read_records(path)


def parse_example(data: bytes) -> dict[str, tuple[str | None, list]]:
    """``{key: (kind, values)}`` with kind one of ``bytes``, ``int64``, ``float`` (``None`` for an empty feature)."""
    from laionprep.tfrecord import FIELD_KIND, Example

    out = {}
    for k, f in Example.FromString(data).features.feature.items():
        which = f.WhichOneof("kind")
        out[k] = (FIELD_KIND[which], list(getattr(f, which).value)) if which else (None, [])
    return out
