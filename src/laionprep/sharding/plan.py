"""Planning on the launcher: which input records go to which output shard.

Nothing here reads more than ONE record per source: record counts come from img2dataset's ``NNNNN_stats.json``
(via :func:`laionprep.folders.scan`), sizes from one directory listing per source.

The input shards of all sources are concatenated in order (source order as given, shard number within a source;
with ``--shuffle``, permuted by the seed) and the concatenation is cut into ``N`` contiguous ranges of equal
record counts: output shard ``i`` gets records ``[i*T//N, (i+1)*T//N)``.  An input shard that straddles a cut is
read by two workers, each taking its own record range (the second seeks over the first part without reading
it).  The last piece of every input shard reads to the end of the file, so records beyond the stats count (a
stale stats file) are still read, once, and counted.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random

from laionprep import fs as lfs
from laionprep import folders as lshards
from laionprep.datasets import dataset_of
from laionprep.errors import DataError


@dataclasses.dataclass(frozen=True)
class Piece:
    source: int
    shard: int
    path: str
    start: int
    stop: int | None  # None: to the end of the file
    expected: int  # records expected from the stats counts


@dataclasses.dataclass(frozen=True)
class Task:
    index: int
    pieces: tuple[Piece, ...]

    @property
    def expected(self) -> int:
        return sum(p.expected for p in self.pieces)


@dataclasses.dataclass
class SourceInfo:
    index: int
    given: str
    folder: str  # the tfrecord folder
    dataset: str | None  # from DIR/manifest.json, when there is one
    manifest_status: str | None
    column_kinds: dict[str, str]  # carried column -> datasets.Column.kind (download manifest's prefilter report)
    shards: list[lshards.Shard]
    sizes: dict[int, int]  # shard id -> tfrecord bytes
    peeked: dict[str, str | None]  # feature kinds of the first record
    warnings: list[str]
    first_key: bytes | None = None  # the first record's key (picks the output key rule, sharding.keys)
    images: dict = dataclasses.field(default_factory=dict)  # the download's image_size / resize_mode / ...

    @property
    def records(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def bytes(self) -> int:
        return sum(self.sizes.values())

    def describe(self) -> dict:
        return {"index": self.index, "path": self.given, "tfrecord_folder": self.folder, "dataset": self.dataset,
                "download_status": self.manifest_status, "shards": len(self.shards), "records": self.records,
                "bytes": self.bytes}


def _download_manifest(given: str, folder: str) -> dict:
    for cand in (lfs.join(given, "manifest.json"), lfs.join(folder.rstrip("/").rsplit("/", 1)[0], "manifest.json")):
        try:
            if lfs.exists(cand):
                return lfs.read_json(cand)
        except Exception:  # an unreadable manifest only loses the dataset name: the records still say the rest
            pass
    return {}


def inspect_source(index: int, given: str) -> SourceInfo:
    from laionprep.tfrecord import Example, feature_kinds, read_records

    if not lfs.exists(given):
        raise DataError("source folder not found", where=given, fix="give an img2dataset TFRecord folder (a "
                        "`laionprep download` DIR or DIR/tfrecord); if this is the value of a Beam option, write "
                        "the option as --option=value or after the sources")
    sc = lshards.scan(given).require_readable()
    warnings = []
    if sc.missing_tfrecord:
        raise DataError(f"{len(sc.missing_tfrecord)} shard(s) have a stats file but no .tfrecord: "
                        f"{sc.missing_tfrecord[:10]}", where=sc.folder,
                        fix="re-run the download for this folder (`laionprep validate` lists the damage)")
    if not sc.shards:
        raise DataError("no complete shards (NNNNN.tfrecord with NNNNN_stats.json) in the source", where=sc.folder,
                        fix="give an img2dataset TFRecord folder; a shard without its _stats.json is incomplete")
    if sc.orphans:
        warnings.append(f"source {index}: {len(sc.orphans)} file(s) of incomplete shards skipped "
                        f"(no _stats.json), e.g. {os.path.basename(sc.orphans[0])}")
    if sc.gaps:
        warnings.append(f"source {index}: shard numbers missing: {sc.gaps[:10]}")
    m = _download_manifest(given, sc.folder)
    status = m.get("status")
    if status and status != "complete":
        warnings.append(f"source {index}: the download's status is {status!r}; only its complete shards are read")
    kinds = dict(((m.get("stages") or {}).get("prefilter") or {}).get("columns") or {})
    fsys, path = lfs.get_fs(sc.folder)
    sizes_by_name = {}
    for e in fsys.ls(path, detail=True):
        sizes_by_name[os.path.basename(e["name"])] = int(e.get("size") or 0)
    sizes = {s.id: sizes_by_name.get(os.path.basename(s.tfrecord), 0) for s in sc.shards}
    peeked: dict[str, str | None] = {}
    first_key = None
    for s in sc.shards:
        if s.count > 0 or sizes[s.id] > 0:
            first = next(read_records(s.tfrecord, 0, 1), None)
            if first is not None:
                peeked = feature_kinds(first)
                key = Example.FromString(first).features.feature.get("key")
                first_key = bytes(key.bytes_list.value[0]) if key is not None and key.bytes_list.value else b""
                break
    if not peeked:
        warnings.append(f"source {index}: no records at all")
    dl = (m.get("parameters") or {}).get("download") or {}
    images = {k: dl[k] for k in ("image_size", "resize_mode", "resize_only_if_bigger") if k in dl}
    return SourceInfo(index=index, given=given, folder=sc.folder, dataset=dataset_of(m), manifest_status=status,
                      column_kinds=kinds, shards=sc.shards, sizes=sizes, peeked=peeked, warnings=warnings,
                      images=images, first_key=first_key)


def num_output_shards(sources: list[SourceInfo], num_shards: int | None, shard_size_mb: float) -> int:
    total = sum(s.records for s in sources)
    if num_shards is None:
        nbytes = sum(s.bytes for s in sources)
        num_shards = max(1, math.ceil(nbytes / (shard_size_mb * (1 << 20))))
    return max(1, min(num_shards, total)) if total else 1


def make_tasks(sources: list[SourceInfo], num_shards: int, *, shuffle: bool = False, seed: int = 0) -> list[Task]:
    """Cut the concatenated input shards into ``num_shards`` contiguous, equally counted ranges."""
    order = [(src.index, sh) for src in sources for sh in src.shards]
    if shuffle:
        random.Random(f"laionprep-reshard-plan:{seed}").shuffle(order)
    total = sum(sh.count for _, sh in order)
    bounds = [(i * total) // num_shards for i in range(num_shards + 1)]
    pieces: list[list[Piece]] = [[] for _ in range(num_shards)]
    pos = 0
    out = 0
    for src, sh in order:
        lo, hi = pos, pos + sh.count
        if sh.count == 0:  # an empty (or stale-stats) shard: read once, by the output that holds its position
            while out < num_shards - 1 and bounds[out + 1] <= lo:
                out += 1
            pieces[out].append(Piece(src, sh.id, sh.tfrecord, 0, None, 0))
            continue
        while out < num_shards - 1 and bounds[out + 1] <= lo:
            out += 1
        o = out
        while True:
            a, b = max(lo, bounds[o]), min(hi, bounds[o + 1])
            last = b >= hi or o == num_shards - 1
            pieces[o].append(Piece(src, sh.id, sh.tfrecord, a - lo, None if last else b - lo, (hi if last else b) - a))
            if last:
                break
            o += 1
        pos = hi
    return [Task(i, tuple(p)) for i, p in enumerate(pieces)]
