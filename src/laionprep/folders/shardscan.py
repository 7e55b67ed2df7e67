"""The one scanner of an img2dataset TFRecord folder, and the batched small-file reads it rests on.

A shard ``NNNNN`` is complete when ``NNNNN_stats.json`` exists (img2dataset writes it last).  :func:`scan` lists
the folder once and reads every stats file — concurrently (a thread pool) on object stores, where each read is a
request of tens of milliseconds and LAION-400M has 41,455 shards; locally a plain loop is faster.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re

from laionprep import fs as lfs
from laionprep.errors import DataError

SHARD_FILE = re.compile(r"(?:^|/)(\d+)(_stats\.json|\.tfrecord|\.parquet)$")
STATS_FILE = re.compile(r"(\d+)_stats\.json$")
MANIFEST = "manifest.json"
THREADS = 64  # concurrent small-file reads on an object store


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
    missing_parquet: list[int] = dataclasses.field(default_factory=list)  # stats and tfrecord but no parquet
    files: dict[int, dict[str, str]] = dataclasses.field(default_factory=dict)  # id -> {suffix: path}, every file
    unreadable: dict[int, str] = dataclasses.field(default_factory=dict)  # id -> why its stats file cannot be read

    @property
    def total(self) -> int:
        return sum(s.count for s in self.shards)

    def require_readable(self) -> "ShardScan":
        """Self, or a DataError naming the first shard whose stats file cannot be read (a run killed while
        img2dataset wrote it, or a damaged file), for readers that take every complete shard."""
        if self.unreadable:
            sid, why = next(iter(sorted(self.unreadable.items())))
            more = f" (and {len(self.unreadable) - 1} more shards)" if len(self.unreadable) > 1 else ""
            raise DataError(f"shard {sid:05d}: _stats.json cannot be read ({why}){more}",
                            where=self.files[sid]["_stats.json"],
                            fix="set such shards aside with `laionprep validate DIR --quarantine` and run the same "
                                "download again to fetch them")
        return self


SUFFIXES = ("_stats.json", ".tfrecord", ".parquet")  # the files of a shard; the stats file moves first
_NAMES = {"_stats.json": "_stats.json", ".tfrecord": "tfrecord", ".parquet": "parquet"}


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def describe(sid: int, present, problem: str = "") -> str:
    """What a shard lacks and what it has, e.g. ``shard 00003: tfrecord missing (parquet and _stats.json
    present)``; with ``problem`` (every file there, one wrong): ``shard 00003: tfrecord has 0 bytes ...``."""
    if problem:
        return f"shard {sid:05d}: {problem}"
    have = [_NAMES[s] for s in (".tfrecord", ".parquet", "_stats.json") if s in present]
    lack = [_NAMES[s] for s in (".tfrecord", ".parquet", "_stats.json") if s not in present]
    tail = _and(have) + " present" if have else "no file present"
    if "_stats.json" not in present and have:
        tail += ": an unfinished shard; the next download redoes it"
    return f"shard {sid:05d}: {_and(lack)} missing ({tail})"


def local_path(url: str) -> str | None:
    """The OS path of a local URL (plain path or file://), None for other filesystems; no fsspec call."""
    url = str(url)
    if url.startswith("file://"):
        return url[len("file://"):]
    return None if "://" in url else url


def list_sizes(folder: str) -> dict[str, int]:
    """``{file name: size}`` of the files directly in ``folder`` (symlinks followed), one listing."""
    path = local_path(folder)
    out = {}
    if path is not None:
        with os.scandir(path) as it:
            for e in it:
                try:
                    if e.is_file():
                        out[e.name] = e.stat().st_size
                except FileNotFoundError:  # a dangling symlink or a file removed meanwhile
                    continue
        return out
    fsys, path = lfs.get_fs(folder)
    for d in fsys.ls(path.rstrip("/"), detail=True):
        if d.get("type") == "file":
            out[d["name"].rstrip("/").rsplit("/", 1)[-1]] = int(d.get("size") or 0)
    return out


def _read(url: str) -> bytes | Exception:
    try:
        with lfs.open_file(url, "rb") as f:
            return f.read()
    except OSError as e:
        return e


def read_many(urls: list[str], threads: int | None = None) -> dict[str, bytes | Exception]:
    """Contents of many small files (an exception in place of an unreadable one): a plain loop locally or with
    ``threads=1``, a thread pool of ``threads`` (default :data:`THREADS`) on object stores."""
    if not urls:
        return {}
    if threads is None:
        threads = 1 if local_path(urls[0]) is not None else THREADS
    if threads <= 1:
        return {u: _read(u) for u in urls}
    with concurrent.futures.ThreadPoolExecutor(min(threads, len(urls))) as pool:
        return dict(zip(urls, pool.map(_read, urls)))


def list_done(output_dir: str) -> dict[int, str]:
    """``{shard id: stats file URL}`` of the finished shards of an img2dataset output folder (one listing)."""
    if not lfs.exists(output_dir):
        return {}
    out = {}
    for p in lfs.glob(str(output_dir).rstrip("/") + "/*_stats.json"):
        m = STATS_FILE.search(p)
        if m:
            out[int(m.group(1))] = p
    return out


def group_files(paths) -> dict[int, dict[str, str]]:
    """``{shard id: {suffix: path}}`` of the shard files among ``paths``."""
    by_id: dict[int, dict[str, str]] = {}
    for p in paths:
        m = SHARD_FILE.search(p)
        if m:
            by_id.setdefault(int(m.group(1)), {})[m.group(2)] = p
    return by_id


def resolve_download_folder(path: str) -> str:
    """Accept either ``DIR`` (a ``laionprep download`` output) or ``DIR/tfrecord`` itself."""
    sub = lfs.join(path, "tfrecord")
    if lfs.exists(lfs.join(path, MANIFEST)) and lfs.exists(sub):
        return sub
    return path


def scan(folder: str, threads: int | None = None) -> ShardScan:
    """The complete shards of an img2dataset TFRecord folder (``DIR`` or ``DIR/tfrecord``), counts from the stats
    files; a shard whose stats file cannot be read or parsed is listed in ``unreadable``, not in ``shards``
    (``ShardScan.require_readable`` turns that into an error for readers that need every shard)."""
    folder = resolve_download_folder(folder)
    by_id = group_files(lfs.glob(str(folder).rstrip("/") + "/*"))
    stats_urls = [f["_stats.json"] for f in by_id.values() if "_stats.json" in f and ".tfrecord" in f]
    contents = read_many(stats_urls, threads)
    shards, orphans, missing, no_parquet = [], [], [], []
    unreadable: dict[int, str] = {}
    for sid in sorted(by_id):
        files = by_id[sid]
        if ".parquet" not in files and "_stats.json" in files and ".tfrecord" in files:
            no_parquet.append(sid)
        if "_stats.json" not in files:
            orphans.extend(sorted(files.values()))
            continue
        if ".tfrecord" not in files:
            missing.append(sid)
            continue
        raw = contents[files["_stats.json"]]
        try:
            if isinstance(raw, Exception):
                raise raw
            stats = json.loads(raw)
            count, rows = int(stats.get("successes", 0)), int(stats.get("count", 0))
        except (OSError, ValueError, AttributeError, TypeError) as e:  # JSONDecodeError is a ValueError
            unreadable[sid] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}" if str(e) else type(e).__name__
            continue
        shards.append(Shard(id=sid, tfrecord=files[".tfrecord"], parquet=files.get(".parquet", ""),
                            stats=files["_stats.json"], count=count, rows=rows))
    done = {s.id for s in shards} | set(missing) | set(unreadable)
    # a gap: no file at all below the highest finished shard (a shard with some files is an orphan or missing one)
    gaps = [i for i in range(max(done) + 1) if i not in by_id] if done else []
    return ShardScan(folder=folder, shards=shards, gaps=gaps, orphans=orphans, missing_tfrecord=missing,
                     missing_parquet=no_parquet, files=by_id, unreadable=unreadable)
