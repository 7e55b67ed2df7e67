"""Shards of an img2dataset TFRecord folder, and the records in them — shared by validate, reshard and build-tfds.

A shard ``NNNNN`` is complete when ``NNNNN_stats.json`` exists (img2dataset writes it last).  :func:`scan`
returns the complete shards with their record counts (from the stats file, never by reading the records), the
shard numbers missing between them (gaps), and files of shards without a stats file (orphans of a killed run).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterator

from laionprep import fs as lfs

_SHARD_FILE = re.compile(r"(?:^|/)(\d+)(_stats\.json|\.tfrecord|\.parquet)$")


@dataclasses.dataclass(frozen=True)
class Shard:
    id: int
    tfrecord: str
    parquet: str
    stats: str
    count: int  # successes according to the stats file
    rows: int  # input rows of the shard (stats "count")


@dataclasses.dataclass
class ShardScan:
    folder: str
    shards: list[Shard]
    gaps: list[int]  # shard numbers below the highest complete one with no complete shard
    orphans: list[str]  # tfrecord/parquet files whose shard has no stats file
    missing_tfrecord: list[int]  # stats present but no tfrecord

    @property
    def total(self) -> int:
        return sum(s.count for s in self.shards)


def resolve_download_folder(path: str) -> str:
    """Accept either ``DIR`` (a ``laionprep download`` output) or ``DIR/tfrecord`` itself."""
    sub = lfs.join(path, "tfrecord")
    if lfs.exists(lfs.join(path, "manifest.json")) and lfs.exists(sub):
        return sub
    return path


def scan(folder: str) -> ShardScan:
    folder = resolve_download_folder(folder)
    by_id: dict[int, dict[str, str]] = {}
    for p in lfs.glob(str(folder).rstrip("/") + "/*"):
        m = _SHARD_FILE.search(p)
        if m:
            by_id.setdefault(int(m.group(1)), {})[m.group(2)] = p
    shards, orphans, missing = [], [], []
    for sid in sorted(by_id):
        files = by_id[sid]
        if "_stats.json" not in files:
            orphans.extend(sorted(files.values()))
            continue
        if ".tfrecord" not in files:
            missing.append(sid)
            continue
        stats = lfs.read_json(files["_stats.json"])
        shards.append(Shard(id=sid, tfrecord=files[".tfrecord"], parquet=files.get(".parquet", ""),
                            stats=files["_stats.json"], count=int(stats.get("successes", 0)),
                            rows=int(stats.get("count", 0))))
    done = {s.id for s in shards} | set(missing)
    gaps = [i for i in range(max(done) + 1) if i not in done] if done else []
    return ShardScan(folder=folder, shards=shards, gaps=gaps, orphans=orphans, missing_tfrecord=missing)


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
