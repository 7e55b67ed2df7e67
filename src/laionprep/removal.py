"""``laionprep remove DIR --list FILE [--by url|key|uid|sha256|md5]``: apply a removal (takedown, opt-out) list to a
download that is already on disk, so that afterwards no file in DIR holds a removed row's URL, caption or image and
every later download of DIR keeps the removal.

1. **The input copies** (``ingest.scrub``): the prefiltered rows of the listed shard rows (located by their keys:
   img2dataset's plan, ``number_sample_per_shard`` rows per shard in prefiltered order) and the metadata rows with
   their URLs (or, when the metadata has the ``--by`` column, e.g. ``url``, a listed value: a listed row the
   prefilter dropped goes too) become tombstones in place (``folders.tombstone``), file by file, each rewritten in
   record batches to a temporary name and renamed over the file.  Rows keep their positions, so the plan, the
   prefilter's output and the download's fingerprint do not change; the footer records the rows tombstoned and the
   copy's version as fetched, so neither the metadata fetch nor the prefilter runs again.  The metadata goes
   first: its URLs are read from the prefiltered rows, which a run killed in between still has.
2. **The shards** holding a listed row, each atomically as seen by every reader (``folders.replace.rewrite``):
   the new ``NNNNN.tfrecord`` (the other records, byte for byte; only when a listed row is an image),
   ``NNNNN.parquet`` (the other rows; the count removed in its key-value metadata, which ``download.account``
   reads) and ``NNNNN_stats.json`` (counts lowered, ``removed_by_list`` raised) are written to
   ``DIR/_removals/<list>/pending/``; the shard's plan, ``DIR/_removals/<list>/shards/NNNNN.json`` (the keys
   removed), is written: the commit point; the pending files are renamed over the shard's files, the stats file
   last (the shard's completion marker, and the only file img2dataset's resume looks at).
3. ``DIR/_shards.parquet`` (the download's resume check of file sizes) gets the new sizes, the manifest is
   recounted from the shards exactly as the download counts (``pipeline.download_accounting``:
   ``removed_by_list``) and ``DIR/_removals/<list>/audit.json`` is written last: the list's path and sha256, the
   keys removed (img2dataset's keys, never a URL or caption: they identify nothing outside DIR), the rows
   tombstoned in the input copies, when.

A run killed between a shard's plan and its renames left a half-replaced shard: every ``remove`` and every
``download`` first calls ``replace.finish_pending``, which completes the renames (roll forward; all pending files
were complete before the plan existed); pending files without a plan are deleted.  A run killed anywhere else
repeats what is left: files already tombstoned and shards already rewritten match nothing any more.  Re-running
after a kill ends with the same folder as an uninterrupted run; a second run with the same list changes nothing.

**A shard fetched again later** (``validate --quarantine``, a lost file, the resume check) reads the tombstones
from DIR/prefiltered/: laionprep's fetcher refuses them before any request (reason ``removed by laionprep
remove``), and the download then takes them out of the shard exactly as step 2 did (``replace.settle``, the plan
rewritten in two steps so that a kill rolls back rather than forward), so the shard, its stats and the accounting
equal the removed one's.  A download that would have to fetch a metadata copy or prefilter again (a lost or changed
input copy) is refused: either would bring back the listed rows or a plan the shards were not made from.

A registration made before (``build-tfds``) is reported ``outdated`` by ``build-tfds --check``
(``replace.removed_shards``) until it is registered again.
"""
from __future__ import annotations

import dataclasses
import posixpath
from dataclasses import MISSING

import numpy as np
import pyarrow.parquet as pq

from laionprep import fs as lfs
from laionprep import manifest as lmanifest
from laionprep import stage
from laionprep.errors import DataError, UsageError
from laionprep.folders import tombstone
from laionprep.folders.replace import KILL_ENV, Work, finish_pending, kill_point, now, plans, rewrite
from laionprep.options import option

BY = ("url", "key", "uid", "sha256", "md5")
__all__ = ["KILL_ENV", "RemoveConfig", "load_list", "run_stage"]


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
    from laionprep.folders.shardscan import list_done

    w = Work(folder.root, folder.data, keys.sha256[:16])
    completed = finish_pending(folder.root, folder.data)
    matched: dict[int, list[str]] = {}  # shard -> keys of its listed rows (not the rows: bounded by the matches)
    for sid in sorted(list_done(folder.data)):
        path = w.final(sid, ".parquet")
        with lfs.open_file(path) as f:
            pf = pq.ParquetFile(f)
            if cfg.by not in pf.schema_arrow.names:
                raise UsageError(f"--by {cfg.by}: the shard parquets have no column {cfg.by!r}", where=path,
                                 fix="match on one of: " + ", ".join(c for c in pf.schema_arrow.names if c in BY))
            t = pf.read(columns=[cfg.by, "key"])
            mask = keys.contains(t.column(cfg.by))
            if mask.any():
                matched[sid] = [k for k, m in zip(t.column("key").to_pylist(), mask) if m]
    # the input copies first: their URLs are read from the prefiltered rows, which the shards' keys locate
    removed_keys = [k for p in plans(w).values() for k in p["keys"]] + [k for ks in matched.values() for k in ks]
    scrubbed_now = _scrub_inputs(cfg, folder, keys, w.ident, removed_keys)
    rewritten: list[dict] = []
    for sid, listed in matched.items():
        with lfs.open_file(w.final(sid, ".parquet")) as f:
            table = pq.read_table(f)
        gone = set(listed)
        mask = np.array([k in gone for k in table.column("key").to_pylist()], dtype=bool)
        rewritten.append(rewrite(w, sid, table, mask, cfg.by))
    done = plans(w)
    if not rewritten and not completed and not scrubbed_now and lfs.exists(w.audit):
        audit = lfs.read_json(w.audit)
        return stage.StageResult(manifest=folder.manifest(), tables=(_table(cfg, audit, 0, w),),
                                 note=f"laionprep remove: nothing left to remove; this list was applied "
                                      f"{audit['when']} (audit: {w.audit})")
    _update_record(folder, sorted(set(done) | set(completed)))
    kill_point(-1, "recounted")
    m = _recount(folder)
    audit = {"list": cfg.list_file, "list_sha256": keys.sha256, "list_entries": len(keys), "by": cfg.by,
             "when": now(), "rows_removed": sum(p["rows"] for p in done.values()),
             "images_removed": sum(p["images"] for p in done.values()),
             "input_rows_tombstoned": _tombstoned(folder, w.ident),
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


def _inputs(folder) -> tuple[dict, list[str], list[str]]:
    """(the prefilter report, the prefiltered files, the metadata copies they were made from), in plan order."""
    from laionprep.ingest import prefilter

    report = lfs.read_json(lfs.join(folder.root, "prefiltered", prefilter.REPORT_NAME))
    return (report, [lfs.join(folder.root, "prefiltered", f["output"]) for f in report["files"]],
            [lfs.join(folder.root, "metadata", f["input"]) for f in report["files"]])


def _scrub_inputs(cfg: RemoveConfig, folder, keys, ident: str, removed_keys: list[str]) -> int:
    """Tombstone the removed rows in DIR/metadata/ and DIR/prefiltered/ (``ingest.scrub``); returns the rows
    tombstoned now.  The prefiltered rows are located by the keys (img2dataset's plan), their URLs read there
    first; the metadata rows are those with one of these URLs, or (a list of a column the metadata has, e.g.
    ``--by url``) a listed value, so a listed row the prefilter dropped goes too.  The metadata is scrubbed before
    the prefiltered files: a run killed in between still finds the URLs on the next try."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from laionprep.datasets import get_spec, resolve_columns
    from laionprep.ingest import download as dl
    from laionprep.ingest import scrub

    m = folder.manifest()
    report, prefiltered, metadata = _inputs(folder)
    per_shard = int(m["parameters"]["download"]["number_sample_per_shard"])
    starts = dl.shard_starts([f["rows_out"] for f in report["files"]], per_shard)
    rows: dict[int, list[int]] = {}
    for k in removed_keys:
        sid, row = dl.key_position(k, per_shard)
        fi, first = starts[sid]
        rows.setdefault(fi, []).append(first + row)
    rows_of = {fi: np.unique(np.array(r, dtype=np.int64)) for fi, r in rows.items()}
    urls = [u for fi, r in sorted(rows_of.items()) for u in scrub.values_at(prefiltered[fi], "url", r)
            if u is not None and not u.startswith(tombstone.PREFIX)]
    url_set = pa.array(sorted(set(urls)), type=pa.string())
    spec = get_spec(m.get("dataset") or m["parameters"]["dataset"])
    n = 0
    for path in metadata:
        if not lfs.exists(path):
            continue
        with lfs.open_file(path) as f:
            names = pq.ParquetFile(f).schema_arrow.names
        url_col = resolve_columns(spec, names, where=path, columns=())["url"]
        # a listed value of a metadata column (not img2dataset's key, which the metadata does not have)
        by_col = url_col if cfg.by == "url" else next((c for c in names if c.lower() == cfg.by != "key"), None)
        if not len(url_set) and by_col is None:
            continue

        def select(batch, start, url_col=url_col, by_col=by_col):
            u = batch.column(batch.schema.get_field_index(url_col))
            hit = np.asarray(pc.fill_null(pc.is_in(u, value_set=url_set), False), dtype=bool)
            if by_col is not None:
                hit |= keys.contains(batch.column(batch.schema.get_field_index(by_col)))
            return hit

        n += scrub.tombstone_rows(path, url_col, select, ident, sentinel=False,
                                  columns=[by_col] if by_col else None, step="metadata")
    for fi, r in sorted(rows_of.items()):
        n += scrub.tombstone_rows(prefiltered[fi], "url", scrub.positions_mask(r), ident, sentinel=True,
                                  step="prefiltered")
    return n


def _tombstoned(folder, ident: str) -> dict[str, int]:
    """Rows of the input copies tombstoned for list ``ident`` (their footers), by folder."""
    from laionprep.ingest import scrub

    _, prefiltered, metadata = _inputs(folder)
    return {name: sum(scrub.rows_scrubbed(p, ident) for p in paths if lfs.exists(p))
            for name, paths in (("metadata", metadata), ("prefiltered", prefiltered))}


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
