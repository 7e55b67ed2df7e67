"""``laionprep reshard``: filter img2dataset TFRecord folders and rewrite them as TFDS-named shards, with Beam.

Shape (linear cost, no shuffle of the data)::

    launcher:  scan sources (stats files) -> plan N output tasks -> Beam: Create(tasks) | Reshuffle | ParDo(write)
    worker:    stream the task's input records -> normalise -> filter -> split -> write shard(s) -> rename
    launcher:  read the N task results -> manifest.json -> counts.json (written last: marks OUT complete)

By concern: ``config`` (the options), ``preparation`` (checks, plan, plan hash), ``beam_job`` (Beam options, the
shipped wheel, the runner thread), ``output`` (OUT's state and the workers' results), this module (the stage under
the stage runner, and its manifest).

Output (the "Resharded folder" format)::

    OUT/SPLIT/NAME-SPLIT-XXXXX-of-YYYYY.tfrecord   records (one folder per split: FLIP globs OUT/train/*.tfrecord)
    OUT/manifest.json                               parameters, sources, rows in/out, drops per reason, versions
    OUT/counts.json                                 exact record count of every shard, per split, + file template

Runners: ``DirectRunner`` (the default) runs Beam's portable Python runner (``FnApiRunner``) in multi-process mode
with one worker per core.  Beam's own ``DirectRunner`` would first try the Prism runner, which downloads a binary
from GitHub (no network here); the Python runner needs nothing.  Any other ``--runner`` (``DataflowRunner``,
``FlinkRunner``, ``BundleBasedDirectRunner``...) and all other Beam options pass through unchanged; for remote
runners the laionprep package is built as a wheel and shipped with ``--extra_package`` unless the options already
ship code (``--setup_file``, ``--extra_package``, ``--sdk_container_image``).
"""
from __future__ import annotations

import time
from collections import Counter

from laionprep import feature_names
from laionprep import fs as lfs
from laionprep import manifest as lmanifest
from laionprep import stage
from laionprep.folders import names
from laionprep.errors import DataError, NothingKept
from laionprep.sharding import records as lrec
from laionprep.sharding.images import ShortSideResizer
from laionprep.sharding import worker as lworker
from laionprep.sharding.beam_job import (build_pipeline, build_wheel, error_summary, is_local_runner,
                                         pipeline_options, run_pipeline, runner_name)
from laionprep.sharding.config import ReshardConfig
from laionprep.sharding.output import (COUNTS_NAME, MANIFEST_NAME, complete_result, prepare_output, raise_task_errors,
                                       read_results, remove_tmp, shard_folders)
from laionprep.sharding.preparation import Prepared, prepare

__all__ = ["COUNTS_NAME", "MANIFEST_NAME", "Prepared", "ReshardConfig", "build_pipeline", "build_wheel",
           "is_local_runner", "pipeline_options", "prepare", "reshard", "run_stage", "summary_rows"]


def reshard(cfg: ReshardConfig, *, progress=None, log=print) -> dict:
    """Run the reshard stage; returns the manifest (also written to ``OUT/manifest.json``)."""
    return run_stage(cfg, progress=progress, log=log).manifest


def run_stage(cfg: ReshardConfig, *, progress=None, log=print) -> stage.StageResult:
    t0 = time.time()
    prep = prepare(cfg)  # checks everything before the lock creates OUT
    for w in prep.warnings:
        log(f"warning: {w}")

    def body():
        m = _reshard(prep, t0, progress=progress, log=log)
        return stage.StageResult(manifest=m, tables=(_table(cfg, m),))

    # the re-run rule (stage.check_rerun): same parameters resume, others are refused unless --restart
    return stage.run("reshard", prep.job.output, body, parameters=parameters(prep), restart=cfg.restart)


def parameters(prep: Prepared) -> dict:
    """The reshard's parameter record: its config minus the run-only fields, plus the filters it applies.
    ``file_format`` (when the default, tfrecord) and ``image_size`` (when not given) are left out, so outputs made
    before ``--format`` / ``--image-size`` existed keep their fingerprint (their re-run with the same flags resumes)."""
    params = lmanifest.parameters_of(prep.config)[0]
    if params.get("file_format") == "tfrecord":
        del params["file_format"]
    if params.get("image_size") is None:
        params.pop("image_size", None)
    return params | {"filters_applied": prep.job.filters.to_dict()}


def _table(cfg: ReshardConfig, m: dict) -> stage.Table:
    return stage.Table(f"laionprep reshard -> {cfg.output}", summary_rows(m), ("", "records"))


# the flag behind each reason a reshard filter drops a record (its likely fix when it drops everything)
_REASON_FLAGS = {"key_not_kept": "--keep-keys", "key_dropped": "--drop-keys", "nsfw": "--nsfw",
                 "low_similarity": "--min-similarity", "high_punsafe": "--max-punsafe",
                 "high_pwatermark": "--max-pwatermark", "small_side": "--min-side", "aspect": "--max-aspect",
                 "short_caption": "--min-caption-chars", "long_caption": "--max-caption-chars"}


def _nothing_kept(rows_in: int, dropped: dict[str, int]) -> tuple[str, str]:
    reasons = sorted(((r, k) for r, k in dropped.items() if k), key=lambda rk: -rk[1])
    what = f"the filters kept none of the {rows_in} records: " + ", ".join(f"{r} {k}" for r, k in reasons)
    flags = [_REASON_FLAGS[r] for r, _ in reasons if r in _REASON_FLAGS]
    fix = ("loosen or leave out " + ", ".join(flags) if flags else "the input records are broken: check the sources "
           "with `laionprep validate`")
    if {"nsfw", "low_similarity", "high_punsafe", "high_pwatermark"} & {r for r, _ in reasons}:
        fix += " (--nsfw all, --min-similarity none... turn one shared filter off; --default-filters adds them all)"
    return what, fix + "; then re-run with --restart (the empty output moves to OUT/_previous/)"


def _reshard(prep: Prepared, t0: float, *, progress, log) -> dict:
    cfg, job = prep.config, prep.job
    done = complete_result(job)
    if done is not None:
        log(f"reshard: {job.output} already holds this output (plan {job.plan_hash}); nothing to do")
        return done
    if lmanifest.read(job.output).get("stage") != "reshard":  # the parameter record, before anything else in OUT
        stage.write_manifest(job.output, stage="reshard", dataset=prep.dataset, status="running",
                             parameters=parameters(prep), inputs=[s.describe() for s in prep.sources],
                             accounting=None, stages={})
    prepare_output(job)
    local = is_local_runner(cfg.beam_args)
    pipeline, _ = build_pipeline(prep)
    task = progress.add_task("reshard", total=job.num_shards) if progress else None
    work_glob = lfs.join(job.output, lworker.WORK_DIR, "part-*.json")

    def on_poll():
        if progress is not None:
            try:
                progress.update(task, completed=len(lfs.glob(work_glob)))
            except Exception:  # progress is best effort
                pass

    t_run = time.time()
    try:
        run_pipeline(pipeline, local, on_poll)
    except Exception as e:
        raise DataError(f"the Beam job failed: {error_summary(e)}", where=f"runner {runner_name(cfg.beam_args)}",
                        fix="fix the cause, then re-run the same command: finished output shards are reused "
                            "(--debug shows the full error)") from e
    t_end = time.time()
    raise_task_errors(job)
    results = read_results(job)
    on_poll()
    return _finish(prep, results, seconds=time.time() - t0, runner=runner_name(cfg.beam_args),
                   timing=_timing(results, t_run, t_end))


def _timing(results: list[dict], t_run: float, t_end: float) -> dict:
    """Where the job's time went: runner start-up, the span of the shard tasks, runner shutdown (local clocks)."""
    ran = [r for r in results if not r.get("resumed") and "started" in r]
    out = {"job_s": round(t_end - t_run, 3), "task_s": [r["seconds"] for r in results]}
    if ran:
        first = min(r["started"] for r in ran)
        last = max(r["started"] + r["seconds"] for r in ran)
        out.update(startup_s=round(first - t_run, 3), tasks_span_s=round(last - first, 3),
                   shutdown_s=round(t_end - last, 3), workers=len({r.get("worker_pid") for r in ran}))
    return out


def _finish(prep: Prepared, results: list[dict], *, seconds: float, runner: str, timing: dict) -> dict:
    job = prep.job
    rows_in = sum(r["rows_in"] for r in results)
    expected = sum(r["expected"] for r in results)
    dropped = Counter()
    normalised: dict[str, Counter] = {}
    for r in results:
        dropped.update(r["dropped"])
        for k, d in r["normalised"].items():
            normalised.setdefault(k, Counter()).update(d)
    dropped = {reason: dropped.get(reason, 0) for reason in lrec.REASONS}
    rows_out = {s: sum(r["splits"][s]["records"] for r in results) for s in job.splits}
    accounting = lmanifest.check_accounting(rows_in, sum(rows_out.values()), dropped, stage="reshard")
    warnings = list(prep.warnings)
    if rows_in != expected:
        warnings.append(f"read {rows_in} records where the stats files announce {expected}: a stats file does not "
                        "match its shard (`laionprep validate` checks this)")
    shards = {s: [{k: r["splits"][s][k] for k in ("file", "records", "bytes", "alternatives") if k in r["splits"][s]}
                  for r in results] for s in job.splits}
    primary, *others = job.formats
    counts = {"name": job.name, "splits": {
        s: {"filename_template": names.reshard_template(job.name, s, primary), "num_shards": job.num_shards,
            "shard_lengths": [sh["records"] for sh in shards[s]], "num_examples": rows_out[s]}
        | ({"alternative_templates": {f: names.reshard_template(job.name, s, f) for f in others}} if others else {})
        for s in job.splits}}
    cfg = prep.config
    rename = feature_names.renamer(dict(job.feature_names))
    schema = dict(sorted((rename(k), v) for k, v in job.schema if k not in job.drop_columns))
    settings = lmanifest.parameters_of(cfg)[1]
    images = prep.sources[0].images if all(s.images == prep.sources[0].images for s in prep.sources) else {}
    detail = {
        "name": job.name,
        "settings": settings,
        "keys": prep.keys.description,
        "feature_names": dict(job.feature_names),  # {new: old}: keys stored under another name
        "split_rule": (f"{job.validation_split} iff blake2b(key, digest_size=8, person={lrec.SPLIT_PERSON!r}) "
                       f"< {job.validation_fraction} * 2**64" if job.validation_split else "single split"),
        "file_format": job.file_format,
        "plan": {"hash": job.plan_hash, "num_shards": job.num_shards, "runner": runner,
                 "records_expected": expected, "shuffle": job.shuffle, "seed": job.seed},
        "schema": schema,
        # the downloads' image settings, when every source agrees, or the re-encoded copy's (--image-size); validate
        # checks image sizes against them
        "images": (ShortSideResizer(job.image_size).settings(images) if job.image_size else images),
        "columns_dropped": list(job.drop_columns),
        "rows_in": rows_in,
        "rows_out": rows_out,
        "dropped": dropped,
        "normalised": {k: dict(v) for k, v in sorted(normalised.items())},
        "nulls_normalised": sum(v.get("null", 0) + v.get("missing", 0) for v in normalised.values()),
        "shards": shards,
        "warnings": warnings,
        "seconds": round(seconds, 2),
        "timing": timing,
        "resumed_shards": sum(1 for r in results if r.get("resumed")),
    }
    empty = rows_in > 0 and not sum(rows_out.values())
    man = stage.write_manifest(
        job.output, stage="reshard", dataset=prep.dataset, status="empty" if empty else "complete",
        parameters=parameters(prep),
        inputs=[s.describe() for s in prep.sources], accounting=accounting, stages={"reshard": detail})
    fsys, _ = lfs.get_fs(job.output)
    work = lfs.get_fs(lfs.join(job.output, lworker.WORK_DIR))[1]
    if fsys.exists(work):
        fsys.rm(work, recursive=True)
    for folder in shard_folders(job):  # temporary files of failed attempts
        remove_tmp(fsys, folder)
    if empty:  # no counts.json: nothing downstream takes an empty output for a dataset
        what, fix = _nothing_kept(rows_in, dropped)
        raise NothingKept(what, where=lfs.join(job.output, MANIFEST_NAME), fix=fix, tables=(_table(cfg, man),))
    lfs.write_json(lfs.join(job.output, COUNTS_NAME), counts)  # last: marks the output complete
    return man


def summary_rows(m: dict) -> list[tuple[str, int | str]]:
    """Rows for the summary table the CLI prints."""
    d = lmanifest.detail(m, "reshard")
    rows: list[tuple[str, int | str]] = [("records in", d["rows_in"])]
    rows += [(f"  dropped: {k}", v) for k, v in d["dropped"].items() if v]
    for s, n in d["rows_out"].items():
        rows.append((f"records out: {s}", n))
    rows.append(("shards per split", d["plan"]["num_shards"]))
    if d.get("nulls_normalised"):
        rows.append(("nulls replaced by sentinels", d["nulls_normalised"]))
    casts = sum(v.get("cast", 0) + v.get("invalid", 0) for v in d.get("normalised", {}).values())
    if casts:
        rows.append(("values retyped", casts))
    if d.get("resumed_shards"):
        rows.append(("shards reused from an earlier run", d["resumed_shards"]))
    rows.append(("seconds", f'{d["seconds"]:.1f}'))
    return rows
