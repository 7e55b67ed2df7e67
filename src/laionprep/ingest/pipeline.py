"""The ``laionprep download`` stage: metadata -> prefilter -> img2dataset -> manifest.

Layout of ``DIR`` (the ``--output``)::

    DIR/metadata/*.parquet              fetched metadata (resumable)
    DIR/prefiltered/NNNNN.parquet       filtered, typed metadata + _prefilter_report.json
    DIR/tfrecord/NNNNN.tfrecord         img2dataset output: records, NNNNN.parquet (status per row),
                NNNNN_stats.json        the completion marker of each shard.  No other *.json here, ever.
    DIR/logs/img2dataset.log            the downloader's own output
    DIR/manifest.json                   parameters, versions, counts per stage

Every stage resumes: the fetch skips complete files, the prefilter is deterministic (and skipped when its
parameters are unchanged), and img2dataset's incremental mode skips shards with a stats file.  Running the same
command again after a crash therefore ends with the same accounting as an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import MISSING
import posixpath
from typing import Sequence

import pyarrow.parquet as pq

from laionprep import fs as lfs
from laionprep import manifest, options, stage
from laionprep.datasets import Column, DatasetSpec, FilterOverrides, Filters, get_spec
from laionprep.errors import DataError, UsageError
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
    extra_columns: tuple[str, ...] | None = option(  # None: the spec's
        "--extra-columns", None, "comma-separated columns to carry instead of the spec's",
        parse=lambda v: options.csv(v) or None)
    no_filters: bool = option("--no-filters", bool, "drop the dataset's default filters (flags still apply)",
                              default=False, group="filters")
    restart: bool = option("--restart", bool, "move the outputs of an earlier run in DIR (other parameters, or a "
                           "clean redo) to DIR/_previous/<UTC time>/ and start fresh", default=False, output=False)
    download: dl.DownloadOptions = dl.DownloadOptions()

    def spec(self) -> DatasetSpec:
        return get_spec(self.dataset)

    def filters(self) -> Filters:
        return self.apply(Filters() if self.no_filters else self.spec().default_filters)

    def parameters(self) -> tuple[dict, dict]:
        """(parameters that decide the output, run-only settings) for the manifest."""
        params, settings = manifest.parameters_of(self)  # DownloadOptions' run-only fields go to settings
        params["filters_applied"] = self.filters().to_dict()
        return params, settings


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


def _columns(cfg: IngestConfig, spec: DatasetSpec, first_file: str | None) -> list[Column]:
    """The carried columns: the spec's, or those named by --extra-columns (kinds from the spec or the data)."""
    if cfg.extra_columns is None:
        return list(spec.extra_columns)
    cols = []
    arrow_schema = None
    if first_file:
        with lfs.open_file(first_file) as f:
            arrow_schema = pq.ParquetFile(f).schema_arrow
    for name in cfg.extra_columns:
        known = spec.column(name)
        if known:
            cols.append(known)
            continue
        field = None
        if arrow_schema is not None:
            for f in arrow_schema:
                if f.name.lower() == name.lower():
                    field = f
        if field is None:
            raise UsageError(f"--extra-columns: no column {name!r} in the metadata",
                             where=first_file or "--extra-columns",
                             fix="columns found: " + (", ".join(arrow_schema.names) if arrow_schema else "none"))
        cols.append(Column(name=field.name, kind=pf.kind_of(field.type)))
    reserved = [c.name for c in cols if c.name in dl.RESERVED and c.name != "sha256"]
    if reserved:
        raise UsageError(f"--extra-columns: {reserved} are names img2dataset reserves for its own columns",
                         where="--extra-columns", fix="leave them out; img2dataset writes them itself")
    return cols


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
        title = f"laionprep download {cfg.dataset} -> {cfg.output}"
        return stage.StageResult(manifest=m, tables=(stage.Table(title, summary_rows(m), ("", "rows")),))

    dl.check_output_folder(Layout(cfg.output).tfrecord)  # read-only; names the foreign file before the re-run rule
    # the re-run rule (stage.check_rerun): same parameters resume, others are refused unless --restart
    return stage.run("download", cfg.output, body, parameters=cfg.parameters()[0], restart=cfg.restart)


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

    def write(status, stages, accounting=None):
        return stage.write_manifest(cfg.output, stage="download", dataset=spec.name, status=status,
                                    parameters=parameters, inputs={"metadata_source": source}, accounting=accounting,
                                    stages=stages)

    # 1. metadata.  First, once the flags are known good (the source listed, --parts resolved) and before any
    # output: the parameter record a re-run is checked against (stage.check_rerun), so a run killed at any point
    # leaves a folder the same command resumes and another command is refused
    fetched = md.fetch(source, spec.file_pattern, lay.metadata, parts=cfg.parts, max_samples=cfg.max_samples,
                       progress=progress, on_selected=lambda: write("fetching", {"download": run_detail}))
    meta_rows = sum(fetched.rows)
    columns = _columns(cfg, spec, fetched.files[0] if fetched.files else None)
    metadata_section = {"source": source, "files": [posixpath.basename(p) for p in fetched.files],
                        "fetched": fetched.fetched, "already_present": fetched.skipped, "rows": meta_rows}
    write("prefiltering", {"metadata": metadata_section, "download": run_detail})

    # 2. prefilter
    try:
        rep = pf.prefilter(spec, fetched.files, lay.prefiltered, filters, columns=columns,
                           max_samples=cfg.max_samples, progress=progress)
    except DataError as e:
        raise _name_source(e, fetched) from e
    not_read = meta_rows - rep.rows_in
    for w in rep.warnings:
        log(f"warning: {w}")
    repaired: dict[str, int] = {}
    for f in rep.files:
        for col, k in f.get("invalid_utf8_repaired", {}).items():
            repaired[col] = repaired.get(col, 0) + k
    prefilter_section = {"rows_in": rep.rows_in, "rows_out": rep.rows_out, "dropped": rep.dropped,
                         "columns": rep.columns, "filters": filters.to_dict(), "warnings": rep.warnings,
                         "invalid_utf8_repaired": repaired,
                         "long_captions": sum(f.get("long_captions", 0) for f in rep.files)}
    stages = {"metadata": metadata_section, "prefilter": prefilter_section, "download": run_detail}
    write("downloading", stages)

    # 3. download
    verify = any(c.name == "sha256" for c in columns)
    res = dl.run(lay.prefiltered, lay.tfrecord, [f["rows_out"] for f in rep.files], [c.name for c in columns],
                 cfg.download, verify_sha256=verify, log_path=lay.log, progress=progress)
    stages["download"] = {
        **run_detail, "rows_in": rep.rows_out, "success": res.success, "failed": res.failed,
        "failure_reasons": dict(list(res.failure_reasons.items())[:50]),
        "distinct_failure_reasons": len(res.failure_reasons),
        "shards_expected": res.shards_expected, "shards_done": res.shards_done,
        "incomplete_shards": res.incomplete_shards, "image_size": cfg.download.image_size,
        "resize_mode": cfg.download.resize_mode, "resize_only_if_bigger": cfg.download.resize_only_if_bigger,
        "seconds": res.seconds, "peak_worker_rss_mib": res.peak_worker_rss_mib,
    }
    complete = not res.incomplete_shards
    breakdown = {
        "metadata_rows": meta_rows,
        "not_read_max_samples": not_read,
        "dropped_by_prefilter": sum(rep.dropped.values()),
        "failed_download": sum(res.failed.values()),
        "downloaded_ok": res.success,
        "pending_in_incomplete_shards": rep.rows_out - res.rows,
    }
    not_kept = {k: breakdown[k] for k in ("not_read_max_samples", "dropped_by_prefilter", "failed_download",
                                          "pending_in_incomplete_shards")}
    accounting = manifest.accounting(meta_rows, res.success, not_kept, **breakdown)
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
    return data


def _name_source(e: DataError, fetched: md.FetchResult) -> DataError:
    """An error about a fetched copy, re-worded to name the source file; the copy is removed so that the next run
    fetches the (fixed) source file again even when its size did not change."""
    for local, src in zip(fetched.files, fetched.sources):
        if e.where == local:
            if os.path.exists(local):
                os.remove(local)
            return type(e)(e.what, where=src if src == local else f"{src} (fetched to {local}, now removed)",
                           fix=e.fix)
    return e


def _layout_dict(lay: Layout) -> dict:
    return {"metadata": "metadata/", "prefiltered": "prefiltered/", "tfrecord": "tfrecord/",
            "log": "logs/img2dataset.log"}


def summary_rows(m: dict, max_reasons: int = 12) -> list[tuple[str, int | str]]:
    """Rows for the summary table printed by the CLI and the demo: each failed status with its reasons."""
    st = m["stages"]
    rows: list[tuple[str, int | str]] = [("metadata rows", st["metadata"]["rows"])]
    if m["accounting"].get("not_read_max_samples"):
        rows.append(("  not read (--max-samples)", m["accounting"]["not_read_max_samples"]))
    rows.append(("kept by prefilter", st["prefilter"]["rows_out"]))
    rows += [(f"  dropped: {k}", v) for k, v in st["prefilter"]["dropped"].items() if v]
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
    return rows


__all__: Sequence[str] = ["IngestConfig", "Layout", "run", "summary_rows"]
