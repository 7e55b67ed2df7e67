"""Planning a reshard on the launcher: check the config, inspect the sources, plan the output tasks (``Prepared``)
and hash the plan (an output made from another plan is never reused).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re

from laionprep import __version__
from laionprep import feature_names
from laionprep import fs as lfs
from laionprep import options
from laionprep.datasets import Filters, for_columns, get_spec
from laionprep.errors import DataError, UsageError
from laionprep.sharding import beam_options
from laionprep.sharding import keys as lkeys
from laionprep.sharding import plan as lplan
from laionprep.sharding import records as lrec
from laionprep.sharding import worker as lworker
from laionprep.sharding.beam_job import runner_name
from laionprep.sharding.config import ReshardConfig

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass
class Prepared:
    """The plan, before anything runs: what :func:`build_pipeline` and :func:`reshard` work from."""

    config: ReshardConfig
    job: lworker.Job
    tasks: list[lplan.Task]
    sources: list[lplan.SourceInfo]
    dataset: str | None
    filters: Filters
    warnings: list[str]
    keys: lkeys.KeyPlan


def _check_config(cfg: ReshardConfig) -> None:
    if not cfg.sources:
        raise UsageError("no source folder given", where="SRC", fix="give one or more img2dataset TFRecord folders")
    for flag, v in (("--name", cfg.name), ("--split", cfg.split), ("--validation-split", cfg.validation_split)):
        if not _NAME_RE.match(v or ""):
            raise UsageError(f"{flag} {v!r} is not a valid TFDS name", where=flag,
                             fix="use lower-case letters, digits and underscores, starting with a letter "
                                 "(e.g. laion_demo)")
    if cfg.validation_fraction and cfg.validation_split == cfg.split:
        raise UsageError("the validation split has the same name as the main split", where="--validation-split")
    if cfg.num_shards is not None and cfg.num_shards < 1:
        raise UsageError(f"--num-shards must be >= 1, got {cfg.num_shards}", where="--num-shards")
    if cfg.shard_size_mb <= 0:
        raise UsageError(f"--shard-size-mb must be > 0, got {cfg.shard_size_mb}", where="--shard-size-mb")
    if not 0.0 <= cfg.validation_fraction < 1.0:
        raise UsageError(f"--validation-fraction must be in [0, 1), got {cfg.validation_fraction}",
                         where="--validation-fraction")
    if cfg.shuffle_buffer_mb <= 0:
        raise UsageError("--shuffle-buffer-mb must be > 0", where="--shuffle-buffer-mb")
    for flag, v in (("--min-side", cfg.min_side), ("--min-caption-chars", cfg.min_caption_chars),
                    ("--max-caption-chars", cfg.max_caption_chars)):
        if v is not None and v < 0:
            raise UsageError(f"{flag} must be >= 0, got {v}", where=flag)
    if cfg.image_size is not None and cfg.image_size < 1:
        raise UsageError(f"--image-size must be >= 1 (the short side in pixels), got {cfg.image_size}",
                         where="--image-size", fix="e.g. --image-size 160 for a copy that 84-112 px stages read")
    if cfg.max_aspect is not None and cfg.max_aspect < 1.0:
        raise UsageError(f"--max-aspect must be >= 1 (long side / short side), got {cfg.max_aspect}",
                         where="--max-aspect")
    if (cfg.min_caption_chars is not None and cfg.max_caption_chars is not None
            and cfg.min_caption_chars > cfg.max_caption_chars):
        raise UsageError("--min-caption-chars is larger than --max-caption-chars", where="--min-caption-chars")
    if cfg.keep_keys and cfg.drop_keys:
        raise UsageError("--keep-keys and --drop-keys together", where="--keep-keys",
                         fix="give one list; subtract the lists beforehand if you need both")
    bad = [c for c in cfg.drop_columns if c in lrec.REQUIRED]
    if bad:
        raise UsageError(f"--drop-columns cannot drop {bad}: readers need {list(lrec.REQUIRED)}",
                         where="--drop-columns")
    _check_remote_paths(cfg)
    seen = {}
    for s in cfg.sources:
        folder = lfs.normalise(lfs.join(s, "tfrecord") if lfs.exists(lfs.join(s, "manifest.json")) and
                               lfs.exists(lfs.join(s, "tfrecord")) else s)
        if folder in seen:
            raise UsageError(f"the same source is given twice: {seen[folder]} and {s}", where="SRC",
                             fix="give each img2dataset folder once")
        seen[folder] = s
        if lfs.is_inside(cfg.output, s) or lfs.is_inside(s, cfg.output):
            raise UsageError(f"output folder {cfg.output} and source {s} contain one another", where="--output",
                             fix="write the output to a folder outside every source folder")


def _check_remote_paths(cfg: ReshardConfig) -> None:
    """Dataflow workers cannot read this machine's files: refuse local paths before a job is launched."""
    from apache_beam.options.pipeline_options import PipelineOptions, TestOptions

    if runner_name(cfg.beam_args).lower() != "dataflowrunner":
        return
    if PipelineOptions(list(cfg.beam_args)).view_as(TestOptions).dry_run:  # nothing will run: plan-only check
        return
    local = [p for p in (*cfg.sources, cfg.output, cfg.keep_keys, cfg.drop_keys) if p and lfs.is_local(p)]
    if local:
        raise UsageError(f"DataflowRunner workers cannot read or write local paths: {local}", where="SRC/--output",
                         fix="put sources, output and key lists on gs:// (gsutil -m cp -r ...)")


def prepare(cfg: ReshardConfig) -> Prepared:
    """Check the configuration, inspect the sources and plan the tasks (reads one record per source)."""
    beam_options.check(cfg.beam_args, options.flags(ReshardConfig))  # only options Beam defines: no ignored typo
    _check_config(cfg)
    warnings: list[str] = []
    # absolute local paths: workers may run elsewhere (another cwd), and the plan hash must not depend on spelling
    sources = [lplan.inspect_source(i, lfs.normalise(s) if lfs.is_local(s) else s) for i, s in enumerate(cfg.sources)]
    for s in sources:
        warnings += s.warnings
    datasets = sorted({s.dataset for s in sources if s.dataset})
    dataset = cfg.dataset
    if dataset is None:
        if len(datasets) > 1:
            raise UsageError(f"the sources are downloads of different datasets: {datasets}", where="SRC",
                             fix="pass --dataset to say which spec's column types and filters apply")
        dataset = datasets[0] if datasets else None
    spec = get_spec(dataset) if dataset else None
    if spec is not None and spec.shapes:  # e.g. laion2b-en: the column set the records carry decides the spec
        spec = for_columns(spec, sorted({k for s in sources for k in (*s.peeked, *s.column_kinds)}))
        dataset = spec.name
    if spec is None and cfg.default_filters:
        raise UsageError("--default-filters needs a dataset: no source has a manifest naming one", where="--dataset",
                         fix="pass --dataset NAME (see `laionprep datasets`)")
    filters = cfg.filters(spec)
    column_kinds: dict[str, str] = {}
    if spec is not None:
        column_kinds.update({c.name: c.kind for c in spec.extra_columns})
    for s in sources:
        column_kinds.update(s.column_kinds)
    try:
        schema = lrec.output_schema([s.peeked for s in sources], column_kinds)
    except ValueError as e:
        raise DataError(str(e), where=", ".join(cfg.sources),
                        fix="drop that column with --drop-columns, or reshard the sources separately") from e
    if any(s.records for s in sources):
        missing = [k for k in lrec.REQUIRED if k not in schema and not (k == "jpg" and {"png", "webp"} & set(schema))]
        if missing:
            raise DataError(f"the records lack {missing}, which readers need", where=sources[0].folder,
                            fix="give img2dataset TFRecord folders (output_format tfrecord)")
    unknown = [c for c in cfg.drop_columns if c not in schema]
    if unknown and any(s.records for s in sources):
        raise UsageError(f"--drop-columns: no column {unknown} in the records", where="--drop-columns",
                         fix="columns found: " + ", ".join(schema))
    if cfg.image_size is not None and any(s.records for s in sources) and "jpg" not in schema:
        stored = sorted({"png", "webp"} & set(schema))
        raise UsageError(f"--image-size re-encodes JPEGs, and these records store {stored}",
                         where="--image-size", fix="reshard without --image-size, or download with encode_format jpg")
    kept_schema = {k: v for k, v in schema.items() if k not in cfg.drop_columns}
    feature_names.check(cfg.feature_names, kept_schema if any(s.records for s in sources) else {})
    keys_column = cfg.keys_column or ("uid" if "uid" in schema else "key")
    rf = lrec.RecordFilters(
        nsfw=filters.nsfw, min_similarity=filters.min_similarity,
        similarity_column=(spec.similarity_column if spec and spec.similarity_column else "similarity"),
        max_punsafe=filters.max_punsafe, max_pwatermark=filters.max_pwatermark, min_side=cfg.min_side,
        max_aspect=cfg.max_aspect, min_caption_chars=cfg.min_caption_chars, max_caption_chars=cfg.max_caption_chars,
        keep_keys=cfg.keep_keys, drop_keys=cfg.drop_keys, keys_column=keys_column,
    )
    if any(s.records for s in sources):
        for col, flag in rf.columns_needed().items():
            if col not in schema or (flag.startswith("--keep") or flag.startswith("--drop")) and schema[col] != "bytes":
                raise UsageError(f"{flag} needs the column {col!r}, which the records do not carry (or not as text)",
                                 where=flag, fix="columns found: " + ", ".join(schema))
    for flag, url in (("--keep-keys", cfg.keep_keys), ("--drop-keys", cfg.drop_keys)):
        if url and not lfs.exists(url):
            raise UsageError("key list not found", where=f"{flag} {url}", fix="check the path")
    try:
        key_plan = lkeys.plan([s.first_key for s in sources])
    except OverflowError as e:
        raise UsageError(str(e), where="SRC", fix="reshard fewer sources at once (the keys of a single source are "
                                                  "kept as they are)") from None
    warnings += key_plan.warnings
    n = lplan.num_output_shards(sources, cfg.num_shards, cfg.shard_size_mb)
    tasks = lplan.make_tasks(sources, n, shuffle=cfg.shuffle, seed=cfg.seed)
    job = lworker.Job(
        output=lfs.normalise(cfg.output) if lfs.is_local(cfg.output) else str(cfg.output).rstrip("/"),
        name=cfg.name, split=cfg.split,
        validation_split=cfg.validation_split if cfg.validation_fraction > 0 else None,
        validation_fraction=cfg.validation_fraction, num_shards=n, schema=tuple(schema.items()),
        drop_columns=tuple(c for c in cfg.drop_columns if c in schema), filters=rf, key_rules=key_plan.rules,
        feature_names=cfg.feature_names,
        shuffle=cfg.shuffle, seed=cfg.seed, shuffle_buffer_bytes=int(cfg.shuffle_buffer_mb * (1 << 20)), plan_hash="",
        file_format=cfg.file_format,
        image_size=cfg.image_size,
    )
    job = dataclasses.replace(job, plan_hash=_plan_hash(job, tasks, sources))
    return Prepared(config=cfg, job=job, tasks=tasks, sources=sources, dataset=dataset, filters=filters,
                    warnings=warnings, keys=key_plan)


def _file_identity(url: str | None):
    if not url:
        return None
    try:
        fsys, path = lfs.get_fs(url)
        info = fsys.info(path)
        return [url, info.get("size"), str(info.get("mtime") or info.get("updated") or info.get("etag") or "")]
    except Exception:
        return [url]


def _plan_hash(job: lworker.Job, tasks: list[lplan.Task], sources: list[lplan.SourceInfo]) -> str:
    d = dataclasses.asdict(job)
    d.pop("plan_hash")
    d.pop("output")  # where OUT is does not change its shards: a copied or moved output is still this plan's
    if d["file_format"] == "tfrecord":  # the default: plans made before the field existed keep their hash
        d.pop("file_format")
    if d["image_size"] is None:  # absent before --image-size existed: older outputs keep their plan hash
        d.pop("image_size")
    d["key_rules"] = [[r.prefix.decode(), r.length, r.width] for r in job.key_rules]
    d["key_lists"] = [_file_identity(job.filters.keep_keys), _file_identity(job.filters.drop_keys)]
    d["tasks"] = [dataclasses.asdict(t) for t in tasks]
    d["sizes"] = [sorted(s.sizes.items()) for s in sources]
    d["laionprep"] = __version__
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:20]
