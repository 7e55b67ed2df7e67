"""The ``laionprep download`` stage: metadata -> prefilter -> img2dataset -> manifest.

Layout of ``DIR`` (the ``--output``)::

    DIR/metadata/*.parquet              fetched metadata (resumable)
    DIR/prefiltered/NNNNN.parquet       filtered, typed metadata + _prefilter_report.json
    DIR/tfrecord/NNNNN.tfrecord         img2dataset output: records, NNNNN.parquet (status per row),
                NNNNN_stats.json        the completion marker of each shard.  No other *.json here, ever.
    DIR/logs/img2dataset.log            the downloader's own output
    DIR/manifest.json                   parameters, versions, counts per stage
    DIR/_shards.parquet                 each finished shard's file sizes (the resume check, ingest/repair.py)
    DIR/_quarantine/<time>/             shards moved aside (resume check, validate --quarantine) + why.json

Every stage resumes: the fetch skips complete files, the prefilter is deterministic (and skipped when its
parameters are unchanged), and img2dataset's incremental mode skips shards with a stats file (after the resume
check has moved aside any finished shard that lost a file or whose file sizes changed, so it is fetched again).
Running the same command again after a crash therefore ends with the same accounting as an uninterrupted run.
``--dry-run`` stops after the prefilter (status ``dry-run``, an estimate of what would be downloaded); being
run-only, the same command without it resumes the folder from there.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import MISSING
import posixpath
import re
from typing import Sequence

import pyarrow.parquet as pq

from laionprep import fs as lfs
from laionprep import manifest, options, stage
import argparse

from laionprep.datasets import Column, DatasetSpec, FilterOverrides, Filters, active_filters, for_columns, get_spec
from laionprep.errors import DataError, NothingKept, UsageError
from laionprep.folders import replace
from laionprep.ingest import download as dl
from laionprep.ingest import metadata as md
from laionprep.ingest import prefilter as pf
from laionprep.options import option


@dataclasses.dataclass(frozen=True)
class IngestConfig(FilterOverrides):
    """``laionprep download``'s config; each field with a flag is the CLI option (``laionprep.options``)."""

    dataset: str = option("--dataset", None, "dataset spec name (see `laionprep datasets`)", default=MISSING,
                          required=True)
    output: str = option("--output", None, "output folder DIR (local or gs://)", default=MISSING, required=True,
                         output=False)
    metadata_source: str | None = option(  # default: the spec's Hub location
        "--metadata-source", None, "folder, file or fsspec URL of the metadata parquet (default: the Hub)")
    parts: str | None = option("--parts", None, "subset of metadata files: a count (3) or indices/ranges (0,2,5-7)")
    max_samples: int | None = option("--max-samples", int, "stop reading metadata after this many rows (a quick try)")
    columns: tuple[str, ...] | None = option(  # None: the spec's
        "--columns", None, "comma-separated columns to carry instead of the spec's (warns when that leaves out a "
        "column a check relies on, e.g. DataComp's sha256)", parse=lambda v: options.csv(v) or None)
    extra_columns: tuple[str, ...] | None = option(
        "--extra-columns", None, "comma-separated columns to carry in addition to the spec's (or --columns)",
        parse=lambda v: options.csv(v) or None)
    no_filters: bool = option("--no-filters", bool, "drop the dataset's default filters (flags still apply)",
                              default=False, group="filters")
    blur_faces: bool | None = option(  # None: the spec's default (on for DataComp, as its own download)
        "--blur-faces", None, "blur the faces in the dataset's face-box column before resizing (img2dataset's "
        "bbox_col; default: on for DataComp, which has face_bboxes; --no-blur-faces turns it off)",
        action=argparse.BooleanOptionalAction)
    restart: bool = option("--restart", bool, "move the outputs of an earlier run in DIR (other parameters, or a "
                           "clean redo) to DIR/_previous/<UTC time>/ and start fresh", default=False, output=False)
    dry_run: bool = option("--dry-run", bool, "fetch the metadata and prefilter only: print what would be downloaded "
                           "(rows per reason and shard, estimated images and bytes) and write the manifest with "
                           "status dry-run; the same command without --dry-run then downloads, reusing the "
                           "prefilter's output", default=False, output=False)
    memory_budget: int = option("--memory-budget", options.size, "memory the prefilter may use, all processes together "
                                "(e.g. 2GiB, 512MiB; default 2GiB): sizes its record batches and duplicate "
                                "partitions, never changes its output", default=pf.DEFAULT_MEMORY_BUDGET,
                                output=False, metavar="SIZE")
    prefilter_processes: int = option("--prefilter-processes", int, "prefilter processes (default: one per core; "
                                      "inputs under 200,000 rows run in one)", default=0, output=False)
    download: dl.DownloadOptions = dl.DownloadOptions()
    # the spec of the metadata's column set (datasets.for_columns; set by ``with_shape`` from the first file)
    shape: str | None = dataclasses.field(default=None, metadata=manifest.RUN_ONLY)

    def spec(self) -> DatasetSpec:
        return get_spec(self.shape or self.dataset)

    def blur_column(self) -> str | None:
        """The face-box column img2dataset blurs (``bbox_col``), None when blurring is off."""
        spec = self.spec()
        on = spec.blur_faces if self.blur_faces is None else self.blur_faces
        if on and not spec.bbox_column:
            raise UsageError(f"--blur-faces: dataset {spec.name!r} has no face-box column", where="--blur-faces",
                             fix="leave out --blur-faces (DataComp's specs have face_bboxes)")
        return spec.bbox_column if on else None

    def filters(self) -> Filters:
        spec = self.spec()
        return self.apply(Filters() if self.no_filters else spec.default_filters, spec)

    def check(self) -> None:
        """The usage errors found from the flags alone, raised before the folder is locked or anything fetched."""
        md.check_parts(self.parts)
        if self.memory_budget < pf.MIN_MEMORY_BUDGET:
            raise UsageError(f"--memory-budget {self.memory_budget} bytes is below the prefilter's minimum",
                             where="--memory-budget", fix=f"give at least {pf.MIN_MEMORY_BUDGET >> 20}MiB (e.g. 2GiB)")
        if self.prefilter_processes < 0:
            raise UsageError(f"--prefilter-processes must be >= 0, got {self.prefilter_processes}",
                             where="--prefilter-processes", fix="0 means one per core")
        spec, filters = self.spec(), self.filters()
        blur = self.blur_column()
        if self.columns is None:
            return
        carried = {n.lower() for n in (*self.columns, *(self.extra_columns or ()))}
        if blur and blur.lower() not in carried:
            raise UsageError(f"--columns leaves out {blur!r}, which face blurring reads", where="--columns",
                             fix=f"add {blur!r} to --columns, or pass --no-blur-faces")
        for kind, col in active_filters(filters, spec):
            if col.lower() not in carried:  # the filter would have no column to read
                raise UsageError(f"--columns leaves out {col!r}, which the {kind.field} filter reads",
                                 where="--columns", fix=f"add {col!r} to --columns, or turn the filter off with "
                                                        f"{kind.off}")

    def parameters(self) -> tuple[dict, dict]:
        """(parameters that decide the output, run-only settings) for the manifest."""
        params, settings = manifest.parameters_of(self)  # DownloadOptions' run-only fields go to settings
        params["filters_applied"] = self.filters().to_dict()
        # blurring is recorded only when on, so a folder made before the flag existed (never blurred) resumes
        del params["blur_faces"]
        if self.blur_column():
            params["blur_faces"] = {"bbox_column": self.blur_column()}
        return params, settings

    def with_shape(self, log=print) -> "IngestConfig":
        """This config with ``shape`` set from the first metadata file's columns (one listing and one parquet
        footer), for a spec that reads several column sets (``laion400m``, ``laion2b-en``); unchanged otherwise."""
        requested = get_spec(self.dataset)
        if not requested.shapes or self.shape:
            return self
        names = md.first_columns(self.metadata_source or requested.metadata_url, requested.file_pattern, self.parts)
        resolved = for_columns(requested, names)
        out = dataclasses.replace(self, shape=resolved.name)
        if resolved.name != requested.name:
            log(f"laionprep download: the {requested.name} metadata has the columns of {resolved.name} "
                f"({', '.join(names)}): read as {resolved.name}")
        return out


@dataclasses.dataclass(frozen=True)
class Layout:
    root: str

    @property
    def metadata(self) -> str:
        return lfs.join(self.root, "metadata")

    @property
    def prefiltered(self) -> str:
        return lfs.join(self.root, "prefiltered")

    @property
    def tfrecord(self) -> str:
        return lfs.join(self.root, "tfrecord")

    @property
    def log(self) -> str:
        return lfs.join(self.root, "logs", "img2dataset.log")

    @property
    def manifest(self) -> str:
        return lfs.join(self.root, "manifest.json")


def _columns(cfg: IngestConfig, spec: DatasetSpec, first_file: str | None) -> tuple[list[Column], list[str]]:
    """(the carried columns, warnings): the spec's or those of --columns, plus --extra-columns (kinds from the spec,
    or from the first metadata file).  Leaving out a column a check relies on is a warning (one a filter reads is
    refused by ``IngestConfig.check``)."""
    names = [*(c.name for c in spec.extra_columns)] if cfg.columns is None else list(cfg.columns)
    for n in cfg.extra_columns or ():
        if n.lower() not in {m.lower() for m in names}:
            names.append(n)
    flag = "--columns" if cfg.columns is not None else "--extra-columns"
    cols = []
    arrow_schema = None
    for name in names:
        known = spec.column(name)
        if known:
            cols.append(known)
            continue
        if arrow_schema is None and first_file:
            with lfs.open_file(first_file) as f:
                arrow_schema = pq.ParquetFile(f).schema_arrow
        field = next((f for f in arrow_schema or () if f.name.lower() == name.lower()), None)
        if field is None:
            raise UsageError(f"{flag}: no column {name!r} in the metadata",
                             where=first_file or flag,
                             fix="columns found: " + (", ".join(arrow_schema.names) if arrow_schema else "none"))
        cols.append(Column(name=field.name, kind=pf.kind_of(field.type)))
    reserved = [c.name for c in cols if c.name in dl.RESERVED and c.name != "sha256"]
    if reserved:
        raise UsageError(f"{flag}: {reserved} are names img2dataset reserves for its own columns",
                         where=flag, fix="leave them out; img2dataset writes them itself")
    carried = {c.name for c in cols}
    warnings = [f"--columns leaves out {c.name!r}: {c.check} is off" for c in spec.extra_columns
                if c.check and c.name not in carried]
    return cols, warnings


def _check_blur_column(cfg: IngestConfig, fetched: md.FetchResult) -> None:
    """Face blurring on and a metadata file without the face-box column: an error, never unblurred images."""
    col = cfg.blur_column()
    for path, names in zip(fetched.sources, fetched.columns) if col else ():
        if col.lower() not in {n.lower() for n in names}:
            raise DataError(f"face blurring reads column {col!r}, which this metadata file does not have "
                            f"(columns: {', '.join(names)})", where=path,
                            fix="pass --no-blur-faces to download without blurring, or use metadata with "
                                f"{col!r}")


def check_paths(cfg: IngestConfig) -> None:
    """Refuse an output folder inside a local metadata source folder (outputs would be read back as inputs)."""
    src = cfg.metadata_source
    if not src or not lfs.is_local(src):
        return
    local = src.removeprefix("file://")
    m = md._GLOB_CHARS.search(local)
    src_dir = os.path.dirname(local[: m.start()]) if m else (local if os.path.isdir(local) else os.path.dirname(local))
    if lfs.is_inside(cfg.output, src_dir):
        raise UsageError(f"output folder {cfg.output} is inside the metadata source folder {src_dir}",
                         where="--output", fix="choose an output folder outside the input folder")


def run(cfg: IngestConfig, *, progress=None, log=print) -> dict:
    """Run the whole download stage; returns the manifest (also written to ``DIR/manifest.json``)."""
    return run_stage(cfg, progress=progress, log=log).manifest


def run_stage(cfg: IngestConfig, *, progress=None, log=print) -> stage.StageResult:
    def body():
        m = _run(cfg, progress=progress, log=log)
        if m.get("status") == DRY_RUN:
            return stage.StageResult(manifest=m, tables=(_dry_run_table(cfg, m),), note=(
                f"dry run: nothing downloaded. The same command without --dry-run downloads into {cfg.output}, "
                "reusing the metadata and the prefilter's output"))
        return stage.StageResult(manifest=m, tables=(_table(cfg, m), _applied_table(m)))

    md.check_parts(cfg.parts)
    get_spec(cfg.dataset)
    dl.check_output_folder(Layout(cfg.output).tfrecord)  # read-only; names the foreign file before the re-run rule
    cfg = cfg.with_shape(log)  # the filters and columns of the metadata's column set decide the parameters
    cfg.check()  # read-only; names the foreign file before the re-run rule
    # the re-run rule (stage.check_rerun): same parameters resume, others are refused unless --restart
    return stage.run("download", cfg.output, body, parameters=cfg.parameters()[0], restart=cfg.restart,
                     replan=_replan)


# what the metadata copies in DIR/metadata/ depend on; every other parameter only acts from the prefilter on
_METADATA_PARAMETERS = ("dataset", "metadata_source", "parts", "max_samples")


def _replan(folder: str, old: dict, parameters: dict) -> str | None:
    """A download that has fetched no image yet (stopped during the metadata fetch or the prefilter, or whose
    prefilter kept nothing) takes other filters, columns or download settings as a fresh run would: its metadata
    copies do not depend on them, the prefilter runs again when its parameters change, and DIR/tfrecord/ is empty.
    Anything else made with other parameters is refused by the re-run rule."""
    before = old.get("parameters") or {}
    if any(before.get(k) != parameters.get(k) for k in _METADATA_PARAMETERS):
        return None
    if old.get("status") not in ("fetching", "prefiltering", "empty", DRY_RUN):
        return None
    fsys, images = lfs.get_fs(Layout(folder).tfrecord)
    if fsys.exists(images) and fsys.ls(images):
        return None  # images were fetched (a resume stopped early, or every URL failed): not a fresh run's state
    changed = stage.changed_parameters(before, parameters)
    return ("the earlier run in this folder fetched no image: re-planning with the new parameters ("
            + "; ".join(changed) + ")")


DRY_RUN = "dry-run"  # the manifest status of `download --dry-run`: metadata and prefilter done, nothing fetched
# Bytes per stored pixel of img2dataset's JPEG (quality 95): LAION-400M at 256 px is about 10 TB for ~400M images
# (img2dataset's documentation), 10e12 / 400e6 / 256^2 ~ 0.38
_BYTES_PER_PIXEL = 0.4
_RECORD_OVERHEAD = 1024  # caption, url, carried columns and TFRecord framing per record, roughly
# stored pixels per image as a multiple of image_size^2 (keep_ratio: short side = size, a 4:3 photo on average)
_PIXELS = {"keep_ratio": 4 / 3, "center_crop": 1.0, "border": 1.0, "keep_ratio_largest": 3 / 4}


def dry_run_estimate(rep: pf.PrefilterReport, opts: dl.DownloadOptions) -> dict:
    """What a download of the prefilter's output would produce: shards (img2dataset's numbering) and an upper
    bound on images and bytes (every kept URL succeeding; LAION-scale downloads see 10-20% fail)."""
    shards = dl.expected_shards([f["rows_out"] for f in rep.files], opts.number_sample_per_shard)
    sizes: dict[int, int] = {}
    for rows in shards.values():
        sizes[rows] = sizes.get(rows, 0) + 1
    px = _PIXELS.get(opts.resize_mode)
    per_image = None if px is None else int(px * opts.image_size ** 2 * _BYTES_PER_PIXEL + _RECORD_OVERHEAD)
    how = (f"kept rows x ({px:.2f} x {opts.image_size}^2 pixels ({opts.resize_mode}) x {_BYTES_PER_PIXEL} bytes per "
           f"pixel (JPEG q95) + {_RECORD_OVERHEAD} bytes per record), assuming every URL downloads (expect "
           "10-20% fewer at LAION scale)") if px else "not estimated: --resize-mode no keeps the original sizes"
    return {"dry_run": True, "rows_in": rep.rows_out, "success": 0, "failed": {}, "shards_expected": len(shards),
            "shards_done": 0, "rows_per_shard": {str(k): v for k, v in sorted(sizes.items(), reverse=True)},
            "image_size": opts.image_size, "resize_mode": opts.resize_mode,
            "estimate": {"images": rep.rows_out, "bytes": None if per_image is None else per_image * rep.rows_out,
                         "bytes_per_image": per_image, "how": how}}


def _dry_run_table(cfg: IngestConfig, m: dict) -> stage.Table:
    st = m["stages"]
    rows: list[tuple[str, int | str]] = [("metadata rows", st["metadata"]["rows"])]
    if m["accounting"].get("not_read_max_samples"):
        rows.append(("  not read (--max-samples)", m["accounting"]["not_read_max_samples"]))
    rows.append(("kept by prefilter (to download)", st["prefilter"]["rows_out"]))
    rows += [(f"  dropped: {k}", v) for k, v in st["prefilter"]["dropped"].items() if v]
    d = st["download"]
    rows.append(("shards", d["shards_expected"]))
    rows += [(f"  shards of {k} rows", v) for k, v in d["rows_per_shard"].items()]
    est = d["estimate"]
    rows.append(("estimated images (at most)", est["images"]))
    if est["bytes"] is not None:
        rows.append((f"estimated bytes at --image-size {d['image_size']}", f"{est['bytes']:,} "
                     f"({est['bytes'] / 2**30:,.1f} GiB)"))
    rows.append(("  estimate", est["how"]))
    return stage.Table(f"laionprep download --dry-run {cfg.dataset} -> {cfg.output}", rows, ("", "rows"))


def download_accounting(res: dl.DownloadResult, *, metadata_rows: int, not_read: int, dropped_by_prefilter: int,
                        rows_out: int) -> tuple[dict, dict]:
    """(the download's figures for ``stages.download``, the manifest's accounting) from img2dataset's shards as
    they are now (``dl.account``); also used by ``laionprep remove`` after rewriting shards, so a removal and a
    later resume of the download count the same way.  Rows removed by a list count as ``removed_by_list``."""
    figures = {
        "rows_in": rows_out - res.removed, "success": res.success, "failed": res.failed,
        "failure_reasons": dict(list(res.failure_reasons.items())[:50]),
        "distinct_failure_reasons": len(res.failure_reasons),
        "shards_expected": res.shards_expected, "shards_done": res.shards_done,
        "incomplete_shards": res.incomplete_shards,
    }
    breakdown = {
        "metadata_rows": metadata_rows,
        "not_read_max_samples": not_read,
        "dropped_by_prefilter": dropped_by_prefilter,
        "failed_download": sum(res.failed.values()),
        "downloaded_ok": res.success,
        "pending_in_incomplete_shards": rows_out - res.rows - res.removed,
    }
    if res.removed:  # only then: the accounting of a folder no list touched stays as it always was
        figures["removed_by_list"] = breakdown["removed_by_list"] = res.removed
    not_kept = {k: breakdown[k] for k in ("not_read_max_samples", "dropped_by_prefilter", "failed_download",
                                          "pending_in_incomplete_shards", "removed_by_list") if k in breakdown}
    return figures, manifest.accounting(metadata_rows, res.success, not_kept, **breakdown)


def _applied_table(m: dict) -> stage.Table:
    return stage.Table("applied", applied_rows(m), ("", ""))


def _table(cfg: IngestConfig, m: dict) -> stage.Table:
    return stage.Table(f"laionprep download {cfg.dataset} -> {cfg.output}", summary_rows(m), ("", "rows"))


def _run(cfg: IngestConfig, *, progress, log) -> dict:
    spec = cfg.spec()
    source = cfg.metadata_source or spec.metadata_url
    if not source:
        raise UsageError(f"dataset {spec.name!r} has no default metadata location", where="--metadata-source",
                         fix="pass --metadata-source (a folder, file or fsspec URL of parquet files)")
    if cfg.max_samples is not None and cfg.max_samples < 1:
        raise UsageError("--max-samples must be >= 1", where="--max-samples")
    cfg.download.validate()
    check_paths(cfg)
    lfs.check_tf_reaches_emulator(cfg.output, "--output")  # img2dataset writes its TFRecords with TensorFlow
    lay = Layout(cfg.output)
    filters = cfg.filters()
    lfs.makedirs(cfg.output)
    md.remove_stale_tmp(lay.metadata)

    parameters, settings = cfg.parameters()
    # run-only settings and the layout are the download's detail from the start (stages.download)
    run_detail = {"layout": _layout_dict(lay), "settings": settings}
    quarantined = _quarantined(lay.manifest)  # shards `validate --quarantine` moved: this run fetches them again

    def write(status, stages, accounting=None):
        return stage.write_manifest(cfg.output, stage="download", dataset=spec.name, status=status,
                                    parameters=parameters, inputs={"metadata_source": source}, accounting=accounting,
                                    stages=stages)

    # 1. metadata.  First, once the flags are known good (the source listed, --parts resolved) and before any
    # output: the parameter record a re-run is checked against (stage.check_rerun), so a run killed at any point
    # leaves a folder the same command resumes and another command is refused
    # after `laionprep remove`, the input copies hold tombstones: never fetched or prefiltered again (ingest.scrub)
    lists = replace.works(cfg.output, lay.tfrecord)
    frozen = f"`laionprep remove` applied {len(lists)} list(s) to this folder" if lists else None
    fetched = md.fetch(source, spec.file_pattern, lay.metadata, parts=cfg.parts, max_samples=cfg.max_samples,
                       progress=progress, on_selected=lambda: write("fetching", {"download": run_detail}),
                       frozen=frozen)
    meta_rows = sum(fetched.rows)
    columns, column_warnings = _columns(cfg, spec, fetched.files[0] if fetched.files else None)
    _check_blur_column(cfg, fetched)
    metadata_section = {"source": source, "files": [posixpath.basename(p) for p in fetched.files],
                        "fetched": fetched.fetched, "already_present": fetched.skipped, "rows": meta_rows}
    write("prefiltering", {"metadata": metadata_section, "download": run_detail})

    # 2. prefilter
    try:
        rep = pf.prefilter(spec, fetched.files, lay.prefiltered, filters, columns=columns,
                           max_samples=cfg.max_samples, schemas=fetched.columns, progress=progress,
                           memory_budget=cfg.memory_budget, processes=cfg.prefilter_processes,
                           versions=fetched.versions, frozen=frozen)
    except DataError as e:
        # a missing filter column is not a broken file: its copy stays (the fix is a flag, not a new file)
        raise _name_source(e, fetched, remove=not isinstance(e, pf.FilterColumnMissing)) from e
    not_read = meta_rows - rep.rows_in
    for w in column_warnings + rep.warnings:
        log(f"warning: {w}")
    repaired: dict[str, int] = {}
    for f in rep.files:
        for col, k in f.get("invalid_utf8_repaired", {}).items():
            repaired[col] = repaired.get(col, 0) + k
    prefilter_section = {"rows_in": rep.rows_in, "rows_out": rep.rows_out, "dropped": rep.dropped,
                         "columns": rep.columns, "filters": filters.to_dict(),
                         "warnings": column_warnings + rep.warnings,
                         "invalid_utf8_repaired": repaired,
                         "long_captions": sum(f.get("long_captions", 0) for f in rep.files),
                         # files whose every row one reason dropped (a warning each; the likely mistake)
                         "files_dropped_whole": {f["input"]: {"reason": f["all_dropped_by"], "rows": f["rows_in"]}
                                                 for f in rep.files if f.get("all_dropped_by")}}
    stages = {"metadata": metadata_section, "prefilter": prefilter_section, "download": run_detail}
    if rep.rows_in and not rep.rows_out:  # nothing to download: the numbers go on disk, then exit 1
        stages["download"] = {**run_detail, "rows_in": 0, "success": 0, "failed": {}, "failure_reasons": {},
                              "distinct_failure_reasons": 0, "shards_expected": 0, "shards_done": 0,
                              "incomplete_shards": []}
        not_kept = {"not_read_max_samples": not_read, "dropped_by_prefilter": rep.rows_in,
                    "failed_download": 0, "pending_in_incomplete_shards": 0}
        data = write("empty", stages, manifest.accounting(meta_rows, 0, not_kept, metadata_rows=meta_rows,
                                                           downloaded_ok=0, **not_kept))
        what, fix = pf.nothing_kept(rep, spec, filters)
        raise NothingKept(what, where=lay.manifest, fix=fix, tables=(_table(cfg, data), _applied_table(data)))
    if cfg.dry_run:
        stages["download"] = {**run_detail, **dry_run_estimate(rep, cfg.download)}
        not_kept = {"not_read_max_samples": not_read, "dropped_by_prefilter": rep.rows_in - rep.rows_out,
                    "failed_download": 0, "pending_in_incomplete_shards": rep.rows_out}
        return write(DRY_RUN, stages, manifest.accounting(meta_rows, 0, not_kept, metadata_rows=meta_rows,
                                                          downloaded_ok=0, **not_kept))
    write("downloading", stages)

    # 3. download
    verify = any(c.name == "sha256" for c in columns)
    res = dl.run(lay.prefiltered, lay.tfrecord, [f["rows_out"] for f in rep.files], [c.name for c in columns],
                 cfg.download, verify_sha256=verify, bbox_column=cfg.blur_column(), log_path=lay.log,
                 progress=progress)
    figures, accounting = download_accounting(res, metadata_rows=meta_rows, not_read=not_read,
                                              dropped_by_prefilter=sum(rep.dropped.values()), rows_out=rep.rows_out)
    stages["download"] = {
        **run_detail, **figures, "image_size": cfg.download.image_size,
        "resize_mode": cfg.download.resize_mode, "resize_only_if_bigger": cfg.download.resize_only_if_bigger,
        "seconds": res.seconds, "peak_worker_rss_mib": res.peak_worker_rss_mib,
        "refetched": _refetched(res, quarantined),
    }
    if quarantined:  # what validate moved and this run did not fetch yet stays listed (stages are merged)
        stages["quarantine"] = {**quarantined, "shards": [e for e in quarantined.get("shards", [])
                                                          if e["shard"] in res.incomplete_shards],
                                "missing": [s for s in quarantined.get("missing", []) if s in res.incomplete_shards]}
    complete = not res.incomplete_shards
    stale = _unscrubbed(lists, lay, rep) if stages["download"]["refetched"] else []
    if stale:  # a list applied before laionprep scrubbed the input copies: the fresh copy holds its rows again
        log(f"warning: {len(stages['download']['refetched'])} shard(s) were fetched again, and {len(stale)} "
            "removal list(s) applied here by an older laionprep left their rows in DIR/prefiltered/: run the same "
            "`laionprep remove` command(s) again (audit: " + ", ".join(w.audit for w in stale) + ")")
    data = write("complete" if complete else "incomplete", stages, accounting)
    if not accounting["balanced"]:  # written first: the manifest shows the numbers that do not add up
        raise DataError(f"accounting does not balance: {accounting}", where=lay.manifest,
                        fix="this is a bug in laionprep; please report it with the manifest")
    if not complete:
        raise DataError(
            f"{len(res.incomplete_shards)} of {res.shards_expected} shards did not finish "
            f"(e.g. {res.incomplete_shards[:5]})", where=lay.log,
            fix="re-run the same command to resume; finished shards are not downloaded again",
        )
    if rep.rows_out and not res.success:
        data = write("empty", stages, accounting)
        what, fix = _nothing_downloaded(res)
        raise NothingKept(what, where=lay.tfrecord, fix=fix, tables=(_table(cfg, data), _applied_table(data)))
    return data


def _unscrubbed(lists: list, lay: Layout, rep: pf.PrefilterReport) -> list:
    """The removal lists that took rows out of shards but tombstoned none in the prefiltered files (applied by a
    laionprep from before ``ingest.scrub``; a few footer reads)."""
    from laionprep.ingest import scrub

    done: set[str] = set()
    for f in rep.files:
        with lfs.open_file(lfs.join(lay.prefiltered, f["output"])) as fh:
            done |= set(((scrub.record(pq.ParquetFile(fh).schema_arrow) or {}).get("lists") or {}))
    return [w for w in lists if replace.plans(w) and w.ident not in done]


_ADDRESS_REFUSED = re.compile(r"refused: [a-z-]+ address$")


def _nothing_downloaded(res: dl.DownloadResult) -> tuple[str, str]:
    """(what, fix) when every row the prefilter kept failed to download."""
    total = sum(res.failed.values())
    refused = sum(k for r, k in res.failure_reasons.items() if _ADDRESS_REFUSED.search(r))
    allow = ("for a server you run yourself pass --allow-private-addresses, or --allow-network CIDR for one "
             "private network")
    if refused == total:
        return (f"every URL ({total}) was refused by the address policy (loopback, private and other non-public "
                "addresses are refused by default)", allow + _AGAIN)
    top = sorted(res.failure_reasons.items(), key=lambda kv: -kv[1])[:3]
    what = f"none of the {total} rows downloaded: " + "; ".join(f"{r} ({k})" for r, k in top)
    fix = ("check that the URLs are reachable from this machine (error_message in DIR/tfrecord/NNNNN.parquet "
           "has the details); --timeout and --retries for slow servers")
    return what, fix + (f"; {refused} were refused by the address policy: {allow}" if refused else "") + _AGAIN


# the folder now holds the failed shards, which img2dataset would keep: other flags there need --restart
_AGAIN = "; then re-run in the same folder with --restart (the empty run's files move to DIR/_previous/)"


def _quarantined(manifest_path: str) -> dict:
    """``stages.quarantine`` of the folder's download manifest (written by ``validate --quarantine``), or {}."""
    m = manifest.read(manifest_path)
    q = (m.get("stages") or {}).get("quarantine") if m.get("stage") == "download" else None
    return q if isinstance(q, dict) and (q.get("shards") or q.get("missing")) else {}


def _refetched(res: dl.DownloadResult, quarantined: dict) -> list[dict]:
    """The shards this run fetched again and why: moved aside by its resume check, or by validate --quarantine."""
    def entry(e, by):
        moved = e.get("moved_to") or []
        return {"shard": e["shard"], "why": e.get("why") or ", ".join(e.get("kinds", [])), "moved_by": by,
                "moved_to": moved[0].rsplit("/", 1)[0] if moved else None}

    out = {e["shard"]: entry(e, "download (resume check)") for e in res.repaired}
    for e in quarantined.get("shards", []):
        out.setdefault(e["shard"], entry(e, "validate --quarantine"))
    return [e for sid, e in sorted(out.items()) if sid not in res.incomplete_shards]


def _name_source(e: DataError, fetched: md.FetchResult, remove: bool = True) -> DataError:
    """An error about a fetched copy, re-worded to name the source file; the copy is removed (``remove``) so that
    the next run fetches the (fixed) source file again even when its size did not change."""
    for local, src in zip(fetched.files, fetched.sources):
        if e.where == local:
            if remove and os.path.exists(local):
                os.remove(local)
            copy = f"{src} (fetched to {local}{', now removed' if remove else ''})"
            return type(e)(e.what, where=src if src == local else copy,
                           fix=e.fix)
    return e


def _layout_dict(lay: Layout) -> dict:
    return {"metadata": "metadata/", "prefiltered": "prefiltered/", "tfrecord": "tfrecord/",
            "log": "logs/img2dataset.log"}


def applied_rows(m: dict) -> list[tuple[str, str]]:
    """What applied to a download (its own small table: long values would squeeze the summary's labels): the spec
    the metadata's columns were read with, the filters, the columns carried, face blurring."""
    st = m.get("stages") or {}
    params = m.get("parameters") or {}
    rows: list[tuple[str, str]] = []
    if params.get("dataset") and m.get("dataset") != params["dataset"]:
        rows.append((f"{params['dataset']} read as", f"{m.get('dataset')} (by its columns)"))
    if params.get("filters_applied"):
        rows.append(("filters", Filters(**{k: tuple(v) if isinstance(v, list) else v for k, v in
                                           params["filters_applied"].items()}).describe()))
    if st.get("prefilter", {}).get("columns") is not None:
        rows.append(("columns carried", ", ".join(st["prefilter"]["columns"]) or "none"))
    if params.get("blur_faces"):
        rows.append(("faces blurred", f"boxes of {params['blur_faces']['bbox_column']}"))
    return rows


def summary_rows(m: dict, max_reasons: int = 12) -> list[tuple[str, int | str]]:
    """Rows for the summary table printed by the CLI and the demo: each failed status with its reasons."""
    st = m["stages"]
    rows: list[tuple[str, int | str]] = [("metadata rows", st["metadata"]["rows"])]
    if m["accounting"].get("not_read_max_samples"):
        rows.append(("  not read (--max-samples)", m["accounting"]["not_read_max_samples"]))
    rows.append(("kept by prefilter", st["prefilter"]["rows_out"]))
    rows += [(f"  dropped: {k}", v) for k, v in st["prefilter"]["dropped"].items() if v]
    whole = st["prefilter"].get("files_dropped_whole", {})
    rows += [(f"  warning: all rows of {name}: {w['reason']}", w["rows"]) for name, w in
             list(whole.items())[:max_reasons]]
    rows.append(("downloaded OK", st["download"]["success"]))
    reasons = st["download"].get("failure_reasons", {})
    for status, n in st["download"]["failed"].items():
        if not n:
            continue
        rows.append((f"  failed: {status}", n))
        mine = sorted(((k.split(": ", 1)[1], v) for k, v in reasons.items() if k.startswith(status + ": ")),
                      key=lambda kv: -kv[1])
        rows += [(f"    {k}", v) for k, v in mine[:max_reasons]]
        if len(mine) > max_reasons:
            rows.append((f"    ({len(mine) - max_reasons} more reasons in the manifest)",
                         sum(v for _, v in mine[max_reasons:])))
    rows.append(("shards", f'{st["download"]["shards_done"]}/{st["download"]["shards_expected"]}'))
    refetched = st["download"].get("refetched") or []
    if refetched:
        rows.append(("  fetched again (lost or damaged files)", len(refetched)))
        rows += [(f"    {e['shard']:05d} ({e['moved_by']})", e["why"]) for e in refetched[:max_reasons]]
    return rows


__all__: Sequence[str] = ["IngestConfig", "Layout", "run", "summary_rows"]
