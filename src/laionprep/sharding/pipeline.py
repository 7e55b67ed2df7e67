"""``laionprep reshard``: filter img2dataset TFRecord folders and rewrite them as TFDS-named shards, with Beam.

Shape (linear cost, no shuffle of the data)::

    launcher:  scan sources (stats files) -> plan N output tasks -> Beam: Create(tasks) | Reshuffle | ParDo(write)
    worker:    stream the task's input records -> normalise -> filter -> split -> write shard(s) -> rename
    launcher:  read the N task results -> manifest.json -> counts.json (written last: marks OUT complete)

Output (the "Resharded folder" format)::

    OUT/NAME-SPLIT.tfrecord-XXXXX-of-YYYYY   records (TFDS file naming)
    OUT/manifest.json                         parameters, sources, rows in/out, drops per reason, versions
    OUT/counts.json                           exact record count of every shard, per split

Runners: ``DirectRunner`` (the default) runs Beam's portable Python runner (``FnApiRunner``) in multi-process mode
with one worker per core.  Beam's own ``DirectRunner`` would first try the Prism runner, which downloads a binary
from GitHub (no network here); the Python runner needs nothing.  Any other ``--runner`` (``DataflowRunner``,
``FlinkRunner``, ``BundleBasedDirectRunner``...) and all other Beam options pass through unchanged; for remote
runners the laionprep package is built as a wheel and shipped with ``--extra_package`` unless the options already
ship code (``--setup_file``, ``--extra_package``, ``--sdk_container_image``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Sequence

from laionprep import __version__
from laionprep import fs as lfs
from laionprep import manifest as lmanifest
from laionprep.datasets import Filters, get_spec
from laionprep.errors import DataError, UsageError
from laionprep.folders import names
from laionprep.sharding import plan as lplan
from laionprep.sharding import records as lrec
from laionprep.sharding import worker as lworker

COUNTS_NAME = "counts.json"
MANIFEST_NAME = "manifest.json"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_SHARD_RE = re.compile(r"^[a-z][a-z0-9_]*-[a-z][a-z0-9_]*\.tfrecord-\d{5}-of-\d{5}$")
LOCAL_RUNNERS = ("directrunner", "switchingdirectrunner", "fnapirunner")
_SHIPS_CODE = ("--setup_file", "--extra_package", "--extra_packages", "--sdk_container_image", "--worker_harness_container_image")


@dataclasses.dataclass(frozen=True)
class ReshardConfig:
    sources: tuple[str, ...]
    output: str
    name: str
    split: str = "train"
    num_shards: int | None = None  # None: from --shard-size-mb
    shard_size_mb: float = 1024.0  # target size of an output shard, computed from the INPUT bytes
    dataset: str | None = None  # spec name; None: from the sources' manifests
    default_filters: bool = False  # start from the dataset's default filters (the download already applied them)
    nsfw: tuple[str, ...] | None = None  # () keeps every tag
    min_similarity: float | None = None
    max_punsafe: float | None = None
    max_pwatermark: float | None = None
    min_side: int | None = None
    max_aspect: float | None = None
    min_caption_chars: int | None = None
    max_caption_chars: int | None = None
    keep_keys: str | None = None
    drop_keys: str | None = None
    keys_column: str | None = None  # None: uid when the records carry one, else key
    validation_fraction: float = 0.0
    validation_split: str = "validation"
    shuffle: bool = False
    seed: int = 0
    shuffle_buffer_mb: float = 256.0
    drop_columns: tuple[str, ...] = ()
    overwrite: bool = False
    beam_args: tuple[str, ...] = ()

    def filters(self, spec=None) -> Filters:
        base = spec.default_filters if (self.default_filters and spec is not None) else Filters()
        f = base.replace(nsfw=self.nsfw, min_similarity=self.min_similarity, max_punsafe=self.max_punsafe,
                         max_pwatermark=self.max_pwatermark)
        return dataclasses.replace(f, nsfw=None) if f.nsfw == () else f

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


# ------------------------------------------------------------------------------------------------ checking
def _check_config(cfg: ReshardConfig) -> None:
    if not cfg.sources:
        raise UsageError("no source folder given", where="SRC", fix="give one or more img2dataset TFRecord folders")
    for flag, v in (("--name", cfg.name), ("--split", cfg.split), ("--validation-split", cfg.validation_split)):
        if not _NAME_RE.match(v or ""):
            raise UsageError(f"{flag} {v!r} is not a valid TFDS name", where=flag,
                             fix="use lower-case letters, digits and underscores, starting with a letter (e.g. laion_demo)")
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
    if cfg.max_aspect is not None and cfg.max_aspect < 1.0:
        raise UsageError(f"--max-aspect must be >= 1 (long side / short side), got {cfg.max_aspect}", where="--max-aspect")
    if (cfg.min_caption_chars is not None and cfg.max_caption_chars is not None
            and cfg.min_caption_chars > cfg.max_caption_chars):
        raise UsageError("--min-caption-chars is larger than --max-caption-chars", where="--min-caption-chars")
    if cfg.keep_keys and cfg.drop_keys:
        raise UsageError("--keep-keys and --drop-keys together", where="--keep-keys",
                         fix="give one list; subtract the lists beforehand if you need both")
    bad = [c for c in cfg.drop_columns if c in lrec.REQUIRED]
    if bad:
        raise UsageError(f"--drop-columns cannot drop {bad}: readers need {list(lrec.REQUIRED)}", where="--drop-columns")
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

    if _runner_name(cfg.beam_args).lower() != "dataflowrunner":
        return
    if PipelineOptions(list(cfg.beam_args)).view_as(TestOptions).dry_run:  # nothing will run: plan-only check
        return
    local = [p for p in (*cfg.sources, cfg.output, cfg.keep_keys, cfg.drop_keys) if p and lfs.is_local(p)]
    if local:
        raise UsageError(f"DataflowRunner workers cannot read or write local paths: {local}", where="SRC/--output",
                         fix="put sources, output and key lists on gs:// (gsutil -m cp -r ...)")


def _runner_name(beam_args: Sequence[str]) -> str:
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    return PipelineOptions(list(beam_args)).view_as(StandardOptions).runner or "DirectRunner"


def is_local_runner(beam_args: Sequence[str]) -> bool:
    return _runner_name(beam_args).lower() in LOCAL_RUNNERS


def _has_flag(args: Sequence[str], *flags: str) -> bool:
    return any(a.split("=", 1)[0] in flags for a in args)


# ------------------------------------------------------------------------------------------------ planning
def prepare(cfg: ReshardConfig) -> Prepared:
    """Check the configuration, inspect the sources and plan the tasks (reads one record per source)."""
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
    if len(sources) > 1:
        width = len(str(len(sources) - 1))
        prefixes = tuple(f"{s.index:0{width}d}_".encode() for s in sources)
    else:
        prefixes = (b"",)
    n = lplan.num_output_shards(sources, cfg.num_shards, cfg.shard_size_mb)
    tasks = lplan.make_tasks(sources, n, shuffle=cfg.shuffle, seed=cfg.seed)
    job = lworker.Job(
        output=lfs.normalise(cfg.output) if lfs.is_local(cfg.output) else str(cfg.output).rstrip("/"),
        name=cfg.name, split=cfg.split,
        validation_split=cfg.validation_split if cfg.validation_fraction > 0 else None,
        validation_fraction=cfg.validation_fraction, num_shards=n, schema=tuple(schema.items()),
        drop_columns=tuple(c for c in cfg.drop_columns if c in schema), filters=rf, key_prefixes=prefixes,
        shuffle=cfg.shuffle, seed=cfg.seed, shuffle_buffer_bytes=int(cfg.shuffle_buffer_mb * (1 << 20)), plan_hash="",
    )
    job = dataclasses.replace(job, plan_hash=_plan_hash(job, tasks, sources))
    return Prepared(config=cfg, job=job, tasks=tasks, sources=sources, dataset=dataset, filters=filters,
                    warnings=warnings)


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
    d["key_prefixes"] = [p.decode() for p in job.key_prefixes]
    d["key_lists"] = [_file_identity(job.filters.keep_keys), _file_identity(job.filters.drop_keys)]
    d["tasks"] = [dataclasses.asdict(t) for t in tasks]
    d["sizes"] = [sorted(s.sizes.items()) for s in sources]
    d["laionprep"] = __version__
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------------------ Beam
def pipeline_options(beam_args: Sequence[str]):
    """Beam options from the pass-through arguments, with laionprep's local defaults.

    Returns ``(options, runner)`` where ``runner`` is a runner object for the local case (the portable Python
    runner, multi-process, one worker per core unless ``--direct_num_workers`` / ``--direct_running_mode`` say
    otherwise) and the runner's name otherwise.
    """
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, SetupOptions, StandardOptions

    args = list(beam_args)
    opts = PipelineOptions(args)
    name = opts.view_as(StandardOptions).runner or "DirectRunner"
    if name.lower() in LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        direct = opts.view_as(DirectOptions)
        if not _has_flag(args, "--direct_num_workers"):
            direct.direct_num_workers = os.cpu_count() or 1
        if not _has_flag(args, "--direct_running_mode"):
            direct.direct_running_mode = "multi_processing"
        opts.view_as(StandardOptions).runner = "DirectRunner"
        return opts, FnApiRunner()
    opts.view_as(SetupOptions).save_main_session = False  # the DoFn lives in an importable module
    return opts, name


def _repo_root() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))  # src/laionprep/sharding
    root = os.path.dirname(os.path.dirname(os.path.dirname(here)))
    return root if os.path.isfile(os.path.join(root, "pyproject.toml")) else None


def build_wheel(out_dir: str) -> str:
    """Build the laionprep wheel (no dependencies) from the source tree this module runs from; returns its path.

    The build runs on a copy of ``pyproject.toml`` + ``src/`` so the checkout gets no ``build/`` folder.
    """
    root = _repo_root()
    if root is None:
        raise UsageError("cannot ship laionprep to remote workers: not running from a source checkout",
                         where="--runner", fix="pass --extra_package PATH/TO/laionprep-*.whl (or --setup_file, or "
                         "--sdk_container_image with laionprep installed)")
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="laionprep-wheel-") as tmp:
        copy = os.path.join(tmp, "laionprep")
        os.makedirs(copy)
        for f in ("pyproject.toml", "README.md", "LICENSE"):
            if os.path.exists(os.path.join(root, f)):
                shutil.copy(os.path.join(root, f), copy)
        shutil.copytree(os.path.join(root, "src"), os.path.join(copy, "src"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
        # Offline first (the venv's setuptools); if that setuptools is too old for pyproject.toml, let pip
        # provide the build requirements in an isolated environment (needs the package index).
        for isolation in (["--no-build-isolation"], []):
            cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "--quiet", "-w", out_dir, copy]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode == 0:
                break
        if r.returncode != 0:
            raise UsageError(f"building the laionprep wheel failed: {r.stderr.strip()[-1500:]}", where=" ".join(cmd),
                             fix="pass --extra_package with a wheel you built, or --setup_file ./pyproject.toml")
    wheels = sorted(p for p in os.listdir(out_dir) if p.startswith("laionprep-") and p.endswith(".whl"))
    return os.path.join(out_dir, wheels[-1])


def build_pipeline(prep: Prepared, *, wheel_dir: str | None = None):
    """The Beam pipeline for a prepared job, NOT run: ``(pipeline, options)``.

    For remote runners without code-shipping options, builds the laionprep wheel into ``wheel_dir`` (default: a
    temporary folder) and adds it as ``--extra_package``.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import SetupOptions

    args = list(prep.config.beam_args)
    opts, runner = pipeline_options(args)
    if isinstance(runner, str) and not _has_flag(args, *_SHIPS_CODE) and runner.lower() not in (
            "bundlebaseddirectrunner", "interactiverunner"):
        wheel = build_wheel(wheel_dir or tempfile.mkdtemp(prefix="laionprep-ship-"))
        opts.view_as(SetupOptions).extra_packages = [wheel]
    p = beam.Pipeline(runner=runner, options=opts)
    (p
     | "Plan" >> beam.Create(prep.tasks, reshuffle=False)
     | "Distribute" >> beam.Reshuffle()
     | "WriteShards" >> beam.ParDo(lworker.WriteShardFn(prep.job)))
    return p, opts


def _run_pipeline(pipeline, local: bool, on_poll) -> None:
    """Run and wait, calling ``on_poll()`` about every second from this thread; re-raises the job's error."""
    box: dict = {}

    def target():
        try:
            res = pipeline.run()
            res.wait_until_finish()
            state = str(getattr(res, "state", "DONE"))
            if "DONE" not in state.upper():
                box["error"] = RuntimeError(f"the Beam job ended in state {state}")
        except BaseException as e:  # noqa: BLE001 - handed to the launcher thread
            box["error"] = e

    beam_logger = logging.getLogger("apache_beam")
    old_level = beam_logger.level
    if local:  # the local job service relays every worker log line (start-up warnings, tracebacks that the
        # error raised below carries anyway): noise for a user
        beam_logger.setLevel(logging.CRITICAL)
    try:
        t = threading.Thread(target=target, name="laionprep-reshard-beam", daemon=True)
        t.start()
        while t.is_alive():
            t.join(1.0 if local else 5.0)
            on_poll()
    finally:
        beam_logger.setLevel(old_level)
    if "error" in box:
        raise box["error"]


# ------------------------------------------------------------------------------------------------ output state
def _outputs(job: lworker.Job) -> list[str]:
    return [job.shard_url(s, i) for s in job.splits for i in range(job.num_shards)]


def _complete_result(job: lworker.Job) -> dict | None:
    """The existing manifest when OUT already holds this exact job, complete and intact."""
    counts_url = lfs.join(job.output, COUNTS_NAME)
    man_url = lfs.join(job.output, MANIFEST_NAME)
    if not (lfs.exists(counts_url) and lfs.exists(man_url)):
        return None
    try:
        man = lfs.read_json(man_url)
    except Exception:
        return None
    if man.get("plan", {}).get("hash") != job.plan_hash:
        return None
    fsys, _ = lfs.get_fs(job.output)
    for split, shards in man.get("shards", {}).items():
        for sh in shards:
            path = lfs.get_fs(lfs.join(job.output, sh["file"]))[1]
            if not fsys.exists(path) or fsys.size(path) != sh["bytes"]:
                return None
    return man


def _prepare_output(job: lworker.Job, overwrite: bool) -> None:
    """Make OUT ready for this job: refuse to clobber another complete output, clear stale and temporary files."""
    fsys, root = lfs.get_fs(job.output)
    counts_url = lfs.join(job.output, COUNTS_NAME)
    if lfs.exists(counts_url):
        try:
            same_plan = lfs.read_json(lfs.join(job.output, MANIFEST_NAME))["plan"]["hash"] == job.plan_hash
        except Exception:
            same_plan = False
        if not (overwrite or same_plan):  # same plan: the output was damaged since; repair it
            raise UsageError("the output folder already holds a complete reshard made with other parameters or inputs",
                             where=job.output, fix="pass --overwrite to replace it, or choose another --output")
        fsys.rm(lfs.get_fs(counts_url)[1])
    lfs.makedirs(job.output)
    lfs.makedirs(lfs.join(job.output, lworker.WORK_DIR))
    wanted = {os.path.basename(u) for u in _outputs(job)}
    for entry in _ls(fsys, root):
        base = os.path.basename(entry.rstrip("/"))
        if lfs.TMP_MARK in base or (_SHARD_RE.match(base) and base not in wanted):
            fsys.rm(entry)
    work = lfs.get_fs(lfs.join(job.output, lworker.WORK_DIR))[1]
    for entry in _ls(fsys, work):
        base = os.path.basename(entry)
        if lfs.TMP_MARK in base or base.startswith("error-"):  # errors of an earlier attempt are re-found
            fsys.rm(entry)
            continue
        try:
            stale = json.loads(fsys.cat(entry)).get("plan_hash") != job.plan_hash
        except Exception:
            stale = True
        if stale:
            fsys.rm(entry)


def _ls(fsys, path: str) -> list[str]:
    """Names in a folder; none when it does not exist (object stores have no empty folders)."""
    try:
        return [e for e in fsys.ls(path, detail=False) if e.rstrip("/") != path.rstrip("/")]
    except FileNotFoundError:
        return []


def _remove_tmp(fsys, folder: str) -> None:
    """Remove the temporary files (``lfs.TMP_MARK``) directly in ``folder``."""
    for entry in _ls(fsys, folder):
        if lfs.TMP_MARK in os.path.basename(entry):
            fsys.rm(entry)


def _raise_task_errors(job: lworker.Job) -> None:
    """Raise the first problem a worker reported (a damaged input file...), with the number of output shards that
    failed; temporary files of the failed tasks are removed (re-running resumes from the finished shards)."""
    from laionprep import errors

    fsys, root = lfs.get_fs(job.output)
    work = lfs.get_fs(lfs.join(job.output, lworker.WORK_DIR))[1]
    found = sorted(e for e in _ls(fsys, work) if os.path.basename(e).startswith("error-"))
    reports = [r for r in (json.loads(fsys.cat(e)) for e in found) if r.get("plan_hash") == job.plan_hash]
    if not reports:
        return
    _remove_tmp(fsys, root)
    first = reports[0]
    cls = getattr(errors, first.get("type", ""), None)
    cls = cls if isinstance(cls, type) and issubclass(cls, errors.LaionprepError) else DataError
    others = (f" ({len(reports)} of {job.num_shards} output shards stopped on problems like this one; the other "
              "output shards are finished)") if len(reports) > 1 else ""
    raise cls(first["what"] + others, where=first.get("where"), fix=first.get("fix"))


def _read_results(job: lworker.Job) -> list[dict]:
    fsys, _ = lfs.get_fs(job.output)
    paths = [lfs.get_fs(job.part_url(i))[1] for i in range(job.num_shards)]
    found = [p for p in paths if fsys.exists(p)]
    missing = [i for i, p in enumerate(paths) if p not in set(found)]
    if missing:
        raise DataError(f"the Beam job finished but {len(missing)} of {job.num_shards} output shards have no result "
                        f"(e.g. {missing[:5]})", where=lfs.join(job.output, lworker.WORK_DIR),
                        fix="re-run the same command: finished shards are reused")
    blobs = fsys.cat(found)
    results = [json.loads(blobs[p]) for p in found]
    for i, r in enumerate(results):
        if r.get("index") != i or r.get("plan_hash") != job.plan_hash:
            raise DataError(f"result of output shard {i} belongs to another job", where=job.part_url(i),
                            fix="another reshard is writing to the same output folder? run one at a time")
    return results


# ------------------------------------------------------------------------------------------------ the stage
def reshard(cfg: ReshardConfig, *, progress=None, log=print) -> dict:
    """Run the reshard stage; returns the manifest (also written to ``OUT/manifest.json``)."""
    t0 = time.time()
    prep = prepare(cfg)
    job = prep.job
    for w in prep.warnings:
        log(f"warning: {w}")
    done = _complete_result(job)
    if done is not None:
        log(f"reshard: {job.output} already holds this output (plan {job.plan_hash}); nothing to do")
        return done
    _prepare_output(job, cfg.overwrite)
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
        _run_pipeline(pipeline, local, on_poll)
    except Exception as e:
        raise DataError(f"the Beam job failed: {_error_summary(e)}", where=f"runner {_runner_name(cfg.beam_args)}",
                        fix="fix the cause, then re-run the same command: finished output shards are reused "
                            "(--debug shows the full error)") from e
    t_end = time.time()
    _raise_task_errors(job)
    results = _read_results(job)
    on_poll()
    return _finish(prep, results, seconds=time.time() - t0, runner=_runner_name(cfg.beam_args),
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


def _error_summary(e: BaseException) -> str:
    text = str(e)
    for pat in (r"(laionprep\.errors\.\w+Error: .*?)(?:\n\n|\Z)", r"(DataError: .*?)(?:\n\n|\Z)"):
        m = re.findall(pat, text, flags=re.S)
        if m:
            return m[-1].strip()[:2000]
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(e).__name__)[:2000]


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
    lmanifest.check_accounting(rows_in, sum(rows_out.values()), dropped, stage="reshard")
    warnings = list(prep.warnings)
    if rows_in != expected:
        warnings.append(f"read {rows_in} records where the stats files announce {expected}: a stats file does not "
                        "match its shard (`laionprep validate` checks this)")
    shards = {s: [{"file": r["splits"][s]["file"], "records": r["splits"][s]["records"],
                   "bytes": r["splits"][s]["bytes"]} for r in results] for s in job.splits}
    counts = {"name": job.name, "splits": {
        s: {"filename_template": names.reshard_template(job.name, s), "num_shards": job.num_shards,
            "shard_lengths": [sh["records"] for sh in shards[s]], "num_examples": rows_out[s]}
        for s in job.splits}}
    cfg = prep.config
    schema = {k: v for k, v in job.schema if k not in job.drop_columns}
    man = {
        "stage": "reshard",
        "name": job.name,
        "status": "complete",
        "dataset": prep.dataset,
        "parameters": cfg.to_dict() | {"filters_applied": job.filters.to_dict()},
        "sources": [s.describe() for s in prep.sources],
        "keys": ("unchanged (one source)" if len(prep.sources) == 1 else
                 "prefixed with the source index: " + ", ".join(f"{p.decode()}<key> = source {i}"
                                                                for i, p in enumerate(job.key_prefixes))),
        "split_rule": (f"{job.validation_split} iff blake2b(key, digest_size=8, person={lrec.SPLIT_PERSON!r}) "
                       f"< {job.validation_fraction} * 2**64" if job.validation_split else "single split"),
        "plan": {"hash": job.plan_hash, "num_shards": job.num_shards, "runner": runner,
                 "records_expected": expected, "shuffle": job.shuffle, "seed": job.seed},
        "schema": schema,
        # the downloads' image settings, when every source agrees (validate checks image sizes against them)
        "images": (prep.sources[0].images if all(s.images == prep.sources[0].images for s in prep.sources) else {}),
        "columns_dropped": list(job.drop_columns),
        "rows_in": rows_in,
        "rows_out": rows_out,
        "dropped": dropped,
        "normalised": {k: dict(v) for k, v in sorted(normalised.items())},
        "nulls_normalised": sum(v.get("null", 0) + v.get("missing", 0) for v in normalised.values()),
        "accounting": {"rows_in": rows_in, "kept": sum(rows_out.values()), "dropped": sum(dropped.values()),
                       "balanced": True},
        "shards": shards,
        "warnings": warnings,
        "seconds": round(seconds, 2),
        "timing": timing,
        "resumed_shards": sum(1 for r in results if r.get("resumed")),
        "updated": lmanifest.now(),
        "versions": lmanifest.library_versions(),
    }
    lfs.write_json(lfs.join(job.output, MANIFEST_NAME), man)
    fsys, _ = lfs.get_fs(job.output)
    work = lfs.get_fs(lfs.join(job.output, lworker.WORK_DIR))[1]
    if fsys.exists(work):
        fsys.rm(work, recursive=True)
    _remove_tmp(fsys, lfs.get_fs(job.output)[1])  # temporary files of failed attempts
    lfs.write_json(lfs.join(job.output, COUNTS_NAME), counts)  # last: marks the output complete
    return man


def summary_rows(m: dict) -> list[tuple[str, int | str]]:
    """Rows for the summary table the CLI prints."""
    rows: list[tuple[str, int | str]] = [("records in", m["rows_in"])]
    rows += [(f"  dropped: {k}", v) for k, v in m["dropped"].items() if v]
    for s, n in m["rows_out"].items():
        rows.append((f"records out: {s}", n))
    rows.append(("shards per split", m["plan"]["num_shards"]))
    if m.get("nulls_normalised"):
        rows.append(("nulls replaced by sentinels", m["nulls_normalised"]))
    casts = sum(v.get("cast", 0) + v.get("invalid", 0) for v in m.get("normalised", {}).values())
    if casts:
        rows.append(("values retyped", casts))
    if m.get("resumed_shards"):
        rows.append(("shards reused from an earlier run", m["resumed_shards"]))
    rows.append(("seconds", f'{m["seconds"]:.1f}'))
    return rows
