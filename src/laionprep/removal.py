"""``laionprep remove DIR --list FILE [--by url|key|uid|sha256|md5]``: apply a removal (takedown, opt-out) list to a
download that is already on disk.

Only the shards holding a listed row are rewritten, each one atomically as seen by every reader:

1. the new ``NNNNN.tfrecord`` (the other records, byte for byte), ``NNNNN.parquet`` (the other rows; the count
   removed in its key-value metadata, which ``download.account`` reads) and ``NNNNN_stats.json`` (successes and
   counts lowered) are written to ``DIR/_removals/<list>/pending/``;
2. the shard's plan, ``DIR/_removals/<list>/shards/NNNNN.json`` (the keys removed), is written: the commit point;
3. the pending files are renamed over the shard's files, the stats file last (it is the shard's completion
   marker, and the only file img2dataset's resume looks at).

A run killed between 2 and 3 left a half-replaced shard (e.g. the new tfrecord next to the old parquet): every
``remove`` and every ``download`` first calls :func:`finish_pending`, which finds the plan whose pending files are
still there and completes the renames (roll forward; all pending files were complete before the plan existed).
Pending files without a plan are deleted (the shard was not touched).  Afterwards ``DIR/_shards.parquet`` (the
download's resume check of file sizes) gets the new sizes, the manifest is recounted from the shards exactly as
the download counts (``pipeline.download_accounting``: ``removed_by_list``) and ``DIR/_removals/<list>/audit.json``
(the list's name, its sha256, the keys removed, when) is written.  Nothing of a removed row stays in the tfrecord
or the shard parquet; the keys are in the audit file.  Re-running after a kill ends with the same folder as an
uninterrupted run; a second run with the same list changes nothing.

A registration made before (``build-tfds``) is reported ``outdated`` by ``build-tfds --check``
(:func:`removed_shards`) until it is registered again.
"""
from __future__ import annotations

import dataclasses
import datetime
import io
import os
import posixpath
import signal
from dataclasses import MISSING

from laionprep import fs as lfs
from laionprep import manifest as lmanifest
from laionprep import stage
from laionprep.errors import DataError, UsageError
from laionprep.folders.replace import ORDER, Work, finish_pending, plans
from laionprep.options import option

BY = ("url", "key", "uid", "sha256", "md5")
# tests only: "SHARD:STEP" makes the process SIGKILL itself at that point (steps in _kill_point's callers)
KILL_ENV = "LAIONPREP_TEST_REMOVE_KILL_AT"


@dataclasses.dataclass(frozen=True)
class RemoveConfig:
    folder: str = option("folder", None, "the download folder DIR", default=MISSING, metavar="DIR")
    list_file: str = option("--list", None, "the removal list: .txt (one value a line), .parquet (column key or "
                            "uid, or the only column) or .npy (strings, or DataComp's uint64 uid pairs)",
                            default=MISSING, required=True, metavar="FILE")
    by: str = option("--by", None, "the shard parquet column the list's values are matched against (default url)",
                     default="url", choices=BY)


# ------------------------------------------------------------------------------------------------ the list
def load_list(url: str):
    """The removal list at ``url``: ``laionprep.keylist`` (a sorted, memory-mapped array; ``contains`` per batch of
    a shard's column, ``sha256`` of the file for the audit)."""
    from laionprep import keylist

    return keylist.load(url, kind="auto")


# ------------------------------------------------------------------------------------------------ layout
def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _kill_point(sid: int, step: str) -> None:
    if os.environ.get(KILL_ENV) == f"{sid}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


# ------------------------------------------------------------------------------------------------ one shard
def _rewrite(w: Work, sid: int, table, mask, by: str) -> dict:
    """Write the new files of shard ``sid`` (``table``: its parquet; ``mask``: the rows to remove) to pending/,
    then its plan.  Returns the plan."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from laionprep.ingest.download import REMOVED_KEY, removed_rows
    from laionprep.tfrecord import Example, RecordWriter, read_records

    keys = [k for k, m in zip(table.column("key").to_pylist(), mask) if m]
    statuses = [s for s, m in zip(table.column("status").to_pylist(), mask) if m]
    gone = set(keys)
    lfs.makedirs(lfs.join(w.folder, "pending"))
    kept_records = dropped_records = 0
    with RecordWriter(w.pending(sid, ".tfrecord")) as out:
        for data in read_records(w.final(sid, ".tfrecord")):
            feat = Example.FromString(data).features.feature.get("key")
            key = feat.bytes_list.value[0].decode() if feat is not None and feat.bytes_list.value else None
            if key in gone:
                dropped_records += 1
                continue
            out.write(data)
            kept_records += 1
    n_success = sum(s == "success" for s in statuses)
    stats = lfs.read_json(w.final(sid, "_stats.json"))
    if dropped_records != n_success or kept_records + dropped_records != int(stats.get("successes", 0)):
        raise DataError(f"shard {sid:05d}: its tfrecord ({kept_records + dropped_records} records, {dropped_records} "
                        f"of the {n_success} listed images) does not match its parquet and _stats.json "
                        f"({stats.get('successes')} successes)", where=w.final(sid, ".tfrecord"),
                        fix="run `laionprep validate DIR --quarantine`, resume the download, then remove again")
    kept = table.filter(pa.array(~mask))
    meta = dict(table.schema.metadata or {})
    meta[REMOVED_KEY] = str(removed_rows(table.schema) + len(keys)).encode()
    kept = kept.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(kept, buf)
    lfs.atomic_write_bytes(w.pending(sid, ".parquet"), buf.getvalue())
    stats["successes"] = kept_records
    stats["count"] = int(stats.get("count", len(table))) - len(keys)
    for st in statuses:  # img2dataset counts its failures under the status names
        if st != "success" and isinstance(stats.get(st), int):
            stats[st] -= 1
    stats["removed_by_list"] = int(stats.get("removed_by_list", 0)) + len(keys)
    lfs.write_json(w.pending(sid, "_stats.json"), stats)
    _kill_point(sid, "pending")
    plan = {"shard": sid, "by": by, "keys": keys, "rows": len(keys), "images": n_success, "when": _now()}
    lfs.write_json(w.plan(sid), plan)  # the commit point: from here on a re-run completes the renames
    _kill_point(sid, "planned")
    for s in ORDER:
        lfs.rename(w.pending(sid, s), w.final(sid, s))
        _kill_point(sid, "renamed" + s)
    return plan


# ------------------------------------------------------------------------------------------------ the verb
def run_stage(cfg: RemoveConfig) -> stage.StageResult:
    from laionprep.folders import kinds

    if not lfs.exists(cfg.list_file):
        raise UsageError("removal list not found", where=f"--list {cfg.list_file}", fix="check the path")
    folder = kinds.detect(cfg.folder)
    if not isinstance(folder, kinds.DownloadFolder):
        raise UsageError(f"{cfg.folder} is a {folder.kind} folder; `laionprep remove` rewrites download folders",
                         where=cfg.folder, fix="remove the list from the download folder the reshard was made "
                                               "from, then run the same reshard with --restart")
    m = folder.manifest()
    if m.get("stage") != "download":
        raise UsageError(f"{cfg.folder} has no download manifest", where=folder.manifest_path,
                         fix="pass a folder written by `laionprep download`")
    if m.get("status") != "complete":
        raise UsageError(f"the download in {cfg.folder} is {m.get('status')!r}, not complete", where=cfg.folder,
                         fix="finish it first (run the same `laionprep download` command again), then remove: "
                             "shards fetched later would hold the listed rows again")
    keys = load_list(cfg.list_file)
    with lfs.exclusive_lock(folder.root, "laionprep remove"):
        return _run(cfg, folder, keys)


def _run(cfg: RemoveConfig, folder, keys) -> stage.StageResult:
    import pyarrow.parquet as pq

    from laionprep.folders.shardscan import list_done

    w = Work(folder.root, folder.data, keys.sha256[:16])
    completed = finish_pending(folder.root, folder.data)
    rewritten: list[dict] = []
    for sid in sorted(list_done(folder.data)):
        path = w.final(sid, ".parquet")
        with lfs.open_file(path) as f:
            pf = pq.ParquetFile(f)
            if cfg.by not in pf.schema_arrow.names:
                raise UsageError(f"--by {cfg.by}: the shard parquets have no column {cfg.by!r}", where=path,
                                 fix="match on one of: " + ", ".join(c for c in pf.schema_arrow.names if c in BY))
            mask = keys.contains(pf.read(columns=[cfg.by]).column(cfg.by))
            if mask.any():  # only then is the whole shard read
                rewritten.append(_rewrite(w, sid, pf.read(), mask, cfg.by))
    done = plans(w)
    if not rewritten and not completed and lfs.exists(w.audit):
        audit = lfs.read_json(w.audit)
        return stage.StageResult(manifest=folder.manifest(), tables=(_table(cfg, audit, 0, w),),
                                 note=f"laionprep remove: nothing left to remove; this list was applied "
                                      f"{audit['when']} (audit: {w.audit})")
    _update_record(folder, sorted(set(done) | set(completed)))
    _kill_point(-1, "recounted")
    m = _recount(folder)
    audit = {"list": cfg.list_file, "list_sha256": keys.sha256, "list_entries": len(keys), "by": cfg.by,
             "when": _now(), "rows_removed": sum(p["rows"] for p in done.values()),
             "images_removed": sum(p["images"] for p in done.values()),
             "shards": sorted(done), "keys": [k for sid in sorted(done) for k in done[sid]["keys"]]}
    entry = {k: audit[k] for k in ("list", "list_sha256", "by", "when", "rows_removed", "images_removed")}
    entry["audit"] = posixpath.relpath(w.audit, folder.root) if lfs.is_local(w.audit) else w.audit
    lists = [e for e in (m.get("stages", {}).get("remove", {}).get("lists") or [])
             if e.get("list_sha256") != keys.sha256] + [entry]
    m = lmanifest.write(folder.manifest_path, stage="download", dataset=m.get("dataset"), status=m["status"],
                        parameters=m["parameters"], inputs=m.get("inputs"), accounting=m["accounting"],
                        stages={**m["stages"], "remove": {"lists": lists}})
    lfs.write_json(w.audit, audit)  # last: an audit file means the list was applied whole
    return stage.StageResult(manifest=m, tables=(_table(cfg, audit, len(rewritten), w),),
                             note="a TFDS registration of this folder is outdated until registered again "
                                  "(`laionprep build-tfds --check` says so); a reshard of it must be run again")


def _update_record(folder, shard_ids: list[int]) -> None:
    """The download's size record (``DIR/_shards.parquet``) of the rewritten shards: their new stats sha256 and
    sizes, so the resume check does not take a shard a list shortened for a damaged one."""
    from laionprep.ingest import repair

    repair.update_record(folder.data, folder.root, shard_ids)


def _recount(folder) -> dict:
    """The manifest with the download's figures and accounting recounted from the shards as they are now."""
    from laionprep.ingest import download as dl
    from laionprep.ingest import pipeline, prefilter

    m = folder.manifest()
    st = m["stages"]
    report = lfs.read_json(lfs.join(folder.root, "prefiltered", prefilter.REPORT_NAME))
    expected = dl.expected_shards([f["rows_out"] for f in report["files"]],
                                  int(m["parameters"]["download"]["number_sample_per_shard"]))
    res = dl.account(folder.data, expected)
    acc = m["accounting"]
    figures, accounting = pipeline.download_accounting(
        res, metadata_rows=st["metadata"]["rows"], not_read=acc.get("not_read_max_samples", 0),
        dropped_by_prefilter=acc.get("dropped_by_prefilter", 0), rows_out=st["prefilter"]["rows_out"])
    if not accounting["balanced"]:
        raise DataError(f"accounting does not balance after the removal: {accounting}", where=folder.manifest_path,
                        fix="this is a bug in laionprep; please report it with the manifest")
    return {**m, "accounting": accounting, "stages": {**st, "download": {**st["download"], **figures}}}


def _table(cfg: RemoveConfig, audit: dict, rewritten_now: int, w: Work) -> stage.Table:
    rows = [("list", f"{cfg.list_file} (sha256 {audit['list_sha256'][:16]}..., {audit['list_entries']:,} entries)"),
            ("matched by", audit["by"]), ("rows removed", audit["rows_removed"]),
            ("  of them images", audit["images_removed"]), ("shards rewritten", len(audit["shards"])),
            ("  by this run", rewritten_now), ("audit", w.audit)]
    return stage.Table(f"laionprep remove {cfg.folder}", rows, ("", ""))


__all__ = ["RemoveConfig", "load_list", "run_stage"]
