"""The download's resume check: a shard counted as finished must still have its files, at the sizes it had.

img2dataset's incremental mode skips every shard with a ``NNNNN_stats.json`` (it globs ``*.json`` in the image
folder and looks at nothing else), so a finished shard whose tfrecord or parquet was deleted or truncated since
would never be fetched again, and the run would exit 0 over a folder that lacks it.  Before img2dataset runs,
:func:`check` lists the image folder once (names and sizes, :func:`folders.list_sizes`), reads the stats files (a
thread pool on object stores) and moves aside every finished shard that

* has an unreadable stats file (a run killed while writing it),
* lacks its tfrecord or its parquet,
* has a tfrecord too small for its stats' successes (0 bytes, or under 16 bytes of framing per record), or
* has a tfrecord or parquet whose size differs from the one recorded when the download accounted for the shard
  (``DIR/_shards.parquet``, one row per shard keyed by the stats file's sha256, so a record of an older copy of a
  shard is never applied to a newer one).

Its files go to ``DIR/_quarantine/<time>/`` with a why.json (:mod:`laionprep.folders.quarantine`, the format
``validate --quarantine`` writes); img2dataset then fetches the shard again under the same id.  Nothing is read in
full: the check costs one listing and one small read per shard.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json

from laionprep import fs as lfs
from laionprep.folders import quarantine as q
from laionprep.folders.shardscan import SUFFIXES, describe, group_files, list_sizes, read_many

RECORD = "_shards.parquet"  # in DIR, never in DIR/tfrecord/ (img2dataset reads every *.json there; keep it clean)
MIN_RECORD_BYTES = 16  # framing of one TFRecord record: 8-byte length, 4-byte CRC, 4-byte data CRC
MIN_PARQUET_BYTES = 12  # "PAR1" + footer length + "PAR1"
BY = "laionprep download (resume check)"
NOTE = ("these finished shards lacked a file or had a file of the wrong size when the download resumed; it fetched "
        "them again under the same shard ids. Nothing was deleted.")


@dataclasses.dataclass
class Check:
    repaired: list[dict]  # why.json entries of the shards moved aside
    stats: dict[int, bytes]  # the stats files read (finished shards left in place): reused by record()


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _listing(folder: str) -> dict[str, int]:
    try:
        return list_sizes(folder)
    except FileNotFoundError:
        return {}


def read_record(path: str) -> dict[int, tuple[str, int, int]]:
    """``{shard: (stats sha256, tfrecord bytes, parquet bytes)}`` from ``DIR/_shards.parquet`` ({} if none)."""
    import pyarrow.parquet as pq

    if not lfs.exists(path):
        return {}
    with lfs.open_file(path) as f:
        t = pq.read_table(f).to_pydict()
    return {int(s): (d, int(a), int(b)) for s, d, a, b in
            zip(t["shard"], t["stats_sha256"], t["tfrecord_bytes"], t["parquet_bytes"])}


def _problem(sid: int, files: dict[str, str], sizes: dict[str, int], raw, recorded) -> tuple[str, str] | None:
    """(kind, message) of what is wrong with finished shard ``sid``, None when it passes."""
    if isinstance(raw, Exception):
        return "bad_metadata", describe(sid, files, f"_stats.json unreadable ({raw})")
    try:
        successes = int(json.loads(raw).get("successes", 0))
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        return "bad_metadata", describe(sid, files, f"_stats.json unreadable, a run killed while writing it? ({e})")
    if ".tfrecord" not in files or ".parquet" not in files:
        return "missing_file", describe(sid, files)
    tf_bytes, pq_bytes = sizes[files[".tfrecord"]], sizes[files[".parquet"]]
    if tf_bytes < successes * MIN_RECORD_BYTES:
        return "truncated", describe(sid, files, f"tfrecord has {tf_bytes} bytes for the {successes} records its "
                                                 "_stats.json counts")
    if pq_bytes < MIN_PARQUET_BYTES:
        return "truncated", describe(sid, files, f"parquet has {pq_bytes} bytes")
    if recorded is not None and recorded[0] == _digest(raw):
        for name, now, then in (("tfrecord", tf_bytes, recorded[1]), ("parquet", pq_bytes, recorded[2])):
            if now != then:
                return "truncated", describe(sid, files, f"{name} has {now} bytes, {then} when the download "
                                                         "accounted for the shard (truncated or replaced since)")
    return None


def check(data_folder: str, root: str) -> Check:
    """Move aside the finished shards of ``data_folder`` (``DIR/tfrecord``) that fail the check; ``root`` = DIR."""
    sizes = _listing(data_folder)
    by_id = group_files(sizes)
    stats_names = {sid: f["_stats.json"] for sid, f in by_id.items() if "_stats.json" in f}
    contents = read_many([lfs.join(data_folder, n) for n in stats_names.values()])
    recorded = read_record(lfs.join(root, RECORD))
    bad: dict[int, dict] = {}
    stats: dict[int, bytes] = {}
    for sid, name in sorted(stats_names.items()):
        raw = contents[lfs.join(data_folder, name)]
        found = _problem(sid, by_id[sid], sizes, raw, recorded.get(sid))
        if found is None:
            stats[sid] = raw
            continue
        files = [lfs.join(data_folder, by_id[sid][s]) for s in SUFFIXES if s in by_id[sid]]
        bad[sid] = {"files": files, "kinds": [found[0]], "why": found[1]}
    repaired = q.move_aside(q.root_of(root), data_folder, bad, by=BY, note=NOTE)
    return Check(repaired=repaired, stats=stats)


def update_record(data_folder: str, root: str, shard_ids) -> None:
    """Record the current sizes and stats sha256 of ``shard_ids`` in ``DIR/_shards.parquet`` (the other rows
    unchanged): used by ``laionprep remove`` after it rewrote those shards."""
    shard_ids = set(shard_ids)
    if not shard_ids:
        return
    sizes = _listing(data_folder)
    by_id = group_files(sizes)
    stats = read_many([lfs.join(data_folder, by_id[s]["_stats.json"]) for s in shard_ids if s in by_id])
    rows = read_record(lfs.join(root, RECORD))
    for sid in shard_ids:
        raw = stats.get(lfs.join(data_folder, by_id.get(sid, {}).get("_stats.json", "")))
        if isinstance(raw, bytes) and all(s in by_id[sid] for s in SUFFIXES):
            rows[sid] = (_digest(raw), sizes[by_id[sid][".tfrecord"]], sizes[by_id[sid][".parquet"]])
    _write_record(root, rows)


def _write_record(root: str, rows: dict[int, tuple[str, int, int]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"shard": [], "stats_sha256": [], "tfrecord_bytes": [], "parquet_bytes": []}
    for sid in sorted(rows):
        for name, v in zip(cols, (sid, *rows[sid])):
            cols[name].append(v)
    buf = io.BytesIO()
    pq.write_table(pa.table(cols, schema=pa.schema([("shard", pa.int64()), ("stats_sha256", pa.string()),
                                                    ("tfrecord_bytes", pa.int64()),
                                                    ("parquet_bytes", pa.int64())])), buf)
    lfs.atomic_write_bytes(lfs.join(root, RECORD), buf.getvalue())


def record(data_folder: str, root: str, known: dict[int, bytes]) -> None:
    """Write ``DIR/_shards.parquet``: the file sizes of every finished shard, keyed by its stats file's sha256 (one
    listing; only stats files not in ``known``, i.e. finished by this run, are read)."""
    sizes = _listing(data_folder)
    by_id = {sid: f for sid, f in group_files(sizes).items() if all(s in f for s in SUFFIXES)}
    new = [lfs.join(data_folder, f["_stats.json"]) for sid, f in by_id.items() if sid not in known]
    contents = read_many(new)
    rows: dict[int, tuple[str, int, int]] = {}
    for sid in sorted(by_id):
        raw = known.get(sid)
        if raw is None:
            raw = contents[lfs.join(data_folder, by_id[sid]["_stats.json"])]
            if isinstance(raw, Exception):
                continue
        rows[sid] = (_digest(raw), sizes[by_id[sid][".tfrecord"]], sizes[by_id[sid][".parquet"]])
    _write_record(root, rows)
