"""``laionprep build-tfds --mode register|rewrite``: existing TFRecord shards -> a TFDS dataset, without rewriting a
record.

The result is the agreed "TFDS folder": ``ROOT/NAME/VERSION/dataset_info.json`` + ``features.json`` (+
``metadata.json`` holding the registration record), loadable with ``tfds.load(NAME, data_dir=ROOT)`` and
``tfds.builder_from_directory(ROOT/NAME/VERSION)``.  TFDS finds the data files of a split through a filename
template relative to ``ROOT/NAME/VERSION``; the layouts:

``symlinks`` (default for local folders)
    ``ROOT/NAME/VERSION/NAME-train.tfrecord-00000-of-00004`` -> ``DIR/tfrecord/00000.tfrecord`` (absolute links),
    numbered consecutively over the complete shards, so gaps in img2dataset's numbering need nothing special.
    Nothing is written into the source folder, so a later ``laionprep download`` resume of it is unaffected.
``in_place`` (when ``ROOT/NAME/VERSION`` *is* the source folder; the only zero-copy way on gs://)
    the metadata goes next to the data: in ``DIR`` (never ``DIR/tfrecord``, where img2dataset's resume reads every
    ``*.json`` as a shard marker) with the template ``tfrecord/{SHARD_INDEX}.tfrecord``, a gap being a shard of
    length 0 that TFDS never opens; or in a resharded folder with its own ``counts.json`` template.
``copy`` (``--mode rewrite``)
    the files are copied byte for byte under TFDS names into ``ROOT/NAME/VERSION`` (any filesystem to any other).

Counts come from ``_stats.json`` / ``counts.json`` only; ``verify`` re-counts a sample of shards (or all) by hopping
over record headers, and the features are checked against a sample of records (:mod:`features`).  Anything that
keeps a count from being established is refused, with the list, unless ``allow_incomplete`` (then those shards are
left out and listed in the registration record).  :func:`check_registration` tells whether the source changed
since (a resumed download, a re-downloaded shard).
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

from laionprep import feature_names
from laionprep import fs as lfs
from laionprep import folders
from laionprep import manifest as lmanifest
from laionprep import stage
from laionprep.datasets import DatasetSpec, get_spec
from laionprep.folders import replace
from laionprep.errors import DataError, UsageError
from laionprep.tfds_builders import features as feats
from laionprep.tfds_builders import sources
from laionprep.folders import names as lnames
from laionprep.tfds_builders.tfds_files import (DEFAULT_TEMPLATE, IN_PLACE_DOWNLOAD_TEMPLATE, NAME_RE, RECORD_KEY, _now,
                                                check_name, dataset_info, read_record, shard_file_name,
                                                shard_file_names, split_info, write_metadata_files)
from laionprep.arrayrecord import count_records, read_records



@dataclasses.dataclass(frozen=True)
class RegisterConfig:
    source: str
    name: str
    data_dir: str
    version: str = "1.0.0"
    mode: str = "register"  # register (zero-copy) | rewrite (copy the files under TFDS names)
    split: str = "train"  # split name for a download folder (a resharded folder names its own splits)
    dataset: str | None = None  # dataset spec; default: the source's manifest
    exclude: tuple[str, ...] = ()  # record keys to leave out of the features
    allow_incomplete: bool = False  # register the complete shards only, listing the rest
    verify: str = "sample"  # sample | all | none: re-count shards by hopping over record headers
    sample_shards: int = 8  # shards whose counts are verified (verify=sample) and whose records are type-checked
    sample_records: int = 64  # records type-checked per sampled shard
    check_read: bool = True  # read one record back through TFDS before publishing
    split_aliases: tuple[tuple[str, str], ...] = ()  # (alias, split): another split name over the same files
    restart: bool = False  # move an earlier registration with other parameters to VERSION/_previous/<UTC time>/

    @property
    def dataset_dir(self) -> str:
        return lfs.join(self.data_dir, self.name, self.version)


@dataclasses.dataclass
class RegisterResult:
    dataset_dir: str
    name: str
    version: str
    layout: str  # symlinks | in_place | copy
    source: str
    source_kind: str
    splits: dict[str, int]  # split -> examples
    shards: dict[str, int]  # split -> shards registered
    features: dict[str, str]  # key -> role
    left_out: list[str]
    notes: list[str]
    verified_shards: int
    changes: list[str]
    seconds: float

    def summary_rows(self) -> list[tuple[str, str | int]]:
        rows: list[tuple[str, str | int]] = [("dataset dir", self.dataset_dir), ("layout", self.layout)]
        for s, n in self.splits.items():
            rows.append((f"split {s}", f"{n:,} examples in {self.shards[s]:,} shards"))
        rows.append(("features", f"{len(self.features)} keys (image: "
                                 f"{', '.join(k for k, v in self.features.items() if v in ('image', 'png'))})"))
        rows.append(("counts verified", f"{self.verified_shards} shards re-counted"))
        rows += [("left out", m) for m in self.left_out[:10]]
        if len(self.left_out) > 10:
            rows.append(("left out", f"... and {len(self.left_out) - 10} more (see metadata.json)"))
        rows += [("changed", c) for c in self.changes]
        rows += [("note", n) for n in self.notes]
        rows.append(("seconds", f"{self.seconds:.2f}"))
        return rows


# --------------------------------------------------------------------------------------------------------- checks
def _sample(items: Sequence, k: int) -> list:
    """Up to ``k`` items spread evenly, always including the first and the last."""
    n = len(items)
    if n <= k:
        return list(items)
    if k <= 1:
        return [items[0]]
    idx = sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in idx]


def _fix_for(source: sources.Source) -> str:
    if source.kind == "download":
        return ("resume the download (re-run the same `laionprep download` command) so every shard completes, then "
                "register again; or pass --allow-incomplete to register only the complete shards (the others are "
                "listed in the registration)")
    return "re-run `laionprep reshard` to completion; or pass --allow-incomplete to register the shards present"


def verify_counts(shards: Iterable[sources.SourceShard], source: sources.Source, threads: int = 4) -> int:
    """Re-count ``shards`` by hopping over record headers; raise listing every shard whose count is wrong."""
    shards = list(shards)

    def one(s: sources.SourceShard):
        try:
            return s, count_records(s.url, s.size), None
        except DataError as e:
            return s, None, e.what

    with ThreadPoolExecutor(max_workers=threads) as ex:
        results = list(ex.map(one, shards))
    wrong = []
    for s, n, err in results:
        claimed = "its stats file" if source.kind == "download" else "counts.json"
        if err:
            wrong.append(f"{s.url}: {err}")
        elif n != s.count:
            wrong.append(f"{s.url}: {claimed} says {s.count} records, the file holds {n}")
    if wrong:
        fix = ("delete that shard's NNNNN_stats.json, .tfrecord and .parquet and re-run `laionprep download` to fetch "
               "it again (or check the folder with `laionprep validate`)" if source.kind == "download"
               else "re-run `laionprep reshard`: counts.json does not match its files")
        raise DataError(f"wrong record count in {len(wrong)} shard(s):\n    " + "\n    ".join(wrong[:20]),
                        where=wrong[0].split(":", 1)[0], fix=fix)
    return len(shards)


# ------------------------------------------------------------------------------------------------------ metadata
def _spec(cfg_dataset: str | None, source: sources.Source, notes: list[str]) -> DatasetSpec | None:
    name = cfg_dataset or source.dataset
    if name is None:
        notes.append("no dataset spec (no manifest and no --dataset): features typed from the records")
        return None
    return get_spec(name)


def _check_first_record(dataset_dir: str) -> None:
    import tensorflow_datasets as tfds

    b = tfds.builder_from_directory(dataset_dir)
    formats = {f.value for f in b.info.available_file_formats()}
    for split, si in b.info.splits.items():
        if si.num_examples:
            if "array_record" in formats:  # random access (tfds.data_source), the alternative format too
                tfds.builder_from_directory(dataset_dir).as_data_source(split=split)[0]  # noqa: B018 -- record 0
            if str(b.info.file_format.value) != "array_record":  # streamed (tfds.load / as_dataset)
                for _ in b.as_dataset(split=f"{split}[:1]").take(1):
                    pass
            return


# ------------------------------------------------------------------------------------------------------ register
# RegisterConfig fields that change how the registration runs or where it goes, not what it registers (the source
# is a parameter, as the absolute path of the folder sources.detect found: registering another source is another
# output)
_RUN_ONLY = ("source", "data_dir", "verify", "check_read", "restart")


def parameters(cfg: RegisterConfig, source: sources.Source) -> dict:
    """The registration's parameter record (the re-run rule compares it, the manifest holds it)."""
    params = {k: v for k, v in lmanifest.parameters_of(cfg)[0].items() if k not in _RUN_ONLY}
    return {**params, "source": _abs(source.root)}


def write_manifest(cfg: RegisterConfig, params: dict, record: dict, examples: dict[str, int]) -> dict:
    """``ROOT/NAME/VERSION/manifest.json`` (the one schema, ``manifest.py``); the registration record (also in
    metadata.json["laionprep"]) is its ``stages["build-tfds"]``."""
    total = sum(examples.values())
    acc = lmanifest.check_accounting(total, total, {}, stage="build-tfds", **{f"examples_{s}": n
                                                                              for s, n in examples.items()})
    return stage.write_manifest(cfg.dataset_dir, stage="build-tfds", dataset=record.get("dataset"),
                                status="complete", parameters=params,
                                inputs={"source": record.get("source"), "source_kind": record.get("source_kind")},
                                accounting=acc, stages={"build-tfds": record})


def register(source: str, name: str, data_dir: str, version: str = "1.0.0", *, progress=None,
             **options) -> RegisterResult:
    """Register ``source`` (a download or resharded folder) as TFDS dataset ``name`` under ``data_dir``.

    ``options`` are :class:`RegisterConfig` fields (mode, split, dataset, exclude, allow_incomplete, verify, ...).
    """
    return run(RegisterConfig(source=source, name=name, data_dir=data_dir, version=version, **options),
               progress=progress)


def run(cfg: RegisterConfig, *, progress=None) -> RegisterResult:
    t0 = time.time()
    if cfg.mode not in ("register", "rewrite"):
        raise UsageError(f"unknown mode {cfg.mode!r}", where="--mode", fix="use register, rewrite or image-folder")
    if cfg.verify not in ("sample", "all", "none"):
        raise UsageError(f"unknown --verify {cfg.verify!r}", where="--verify", fix="use sample, all or none")
    check_name(cfg.name, cfg.version)
    lfs.check_tf_reaches_emulator(cfg.data_dir, "--data-dir")  # TFDS writes its metadata and reads with TensorFlow
    src_path = str(cfg.source).rstrip("/")
    lock_dir = src_path if (lfs.is_local(src_path) and lfs.exists(lfs.join(src_path, "manifest.json"))) else None
    if not (lock_dir and os.access(lfs.get_fs(lock_dir)[1], os.W_OK)):
        lock_dir = None
    # the source's folder lock, the one every stage takes: never register a download or reshard while it runs
    with stage.locked(lock_dir, "build-tfds"):
        return _run(cfg, t0, progress)


def _layout(cfg: RegisterConfig, source: sources.Source) -> str:
    dataset_dir = cfg.dataset_dir
    in_place = lfs.normalise(dataset_dir) == lfs.normalise(source.root)
    if source.kind == "download" and lfs.is_inside(dataset_dir, source.data_folder):
        raise UsageError(f"the TFDS folder {dataset_dir} would be inside img2dataset's output folder "
                         f"{source.data_folder}", where="--data-dir",
                         fix="choose a --data-dir outside DIR/tfrecord (e.g. DIR/tfds or a separate folder)")
    if cfg.mode == "rewrite":
        if in_place:
            raise UsageError("--mode rewrite copies the files: the TFDS folder cannot be the source folder",
                             where="--data-dir", fix="choose another --data-dir")
        return "copy"
    if in_place:
        return "in_place"
    if lfs.is_local(dataset_dir) and lfs.is_local(source.data_folder):
        return "symlinks"
    holder = "gs:// and other object stores" if not lfs.is_local(dataset_dir) else \
        "a local folder pointing at an object store"
    raise UsageError(
        f"zero-copy registration of {source.root} into {dataset_dir} needs symbolic links, which {holder} "
        f"cannot hold", where="--data-dir",
        fix=f"register in place (--data-dir such that DATA_DIR/{cfg.name}/{cfg.version} is the source folder, i.e. "
            f"download or reshard into gs://BUCKET/tfds/{cfg.name}/{cfg.version}), or copy the files with --mode "
            f"rewrite, or register on a local mount of the bucket (gcsfuse)")


def _run(cfg: RegisterConfig, t0: float, progress) -> RegisterResult:
    source = sources.detect(cfg.source)
    layout = _layout(cfg, source)
    params = parameters(cfg, source)
    if layout != "in_place":  # in place, the folder is the source: its own stage's manifest and re-run rule apply
        stage.check_rerun("build-tfds", cfg.dataset_dir, params, restart=cfg.restart, flag="--data-dir")
    notes: list[str] = []
    left_out: list[str] = []
    if source.problems:
        if not cfg.allow_incomplete:
            shown = [p.message for p in source.problems[:12]]
            more = len(source.problems) - len(shown)
            raise DataError(
                f"{len(source.problems)} problem(s) keep the record counts of {source.root} from being established:"
                "\n    " + "\n    ".join(shown) + (f"\n    ... and {more} more" if more else ""),
                where=source.data_folder, fix=_fix_for(source))
        left_out = [p.message for p in source.problems]
    splits = {(cfg.split if source.kind == "download" else s): shards for s, shards in source.splits.items() if shards}
    if not splits:
        raise DataError("no complete shard to register", where=source.data_folder, fix=_fix_for(source))
    for s in splits:
        if not re.match(r"^[A-Za-z0-9_]+$", s):
            raise UsageError(f"invalid split name {s!r}", where="--split", fix="use letters, digits and underscores")
    check_aliases(cfg, splits)
    spec = _spec(cfg.dataset, source, notes)
    all_shards = [sh for shards in splits.values() for sh in shards]
    file_format = _file_format(all_shards, source)
    nonempty = [sh for sh in all_shards if sh.count > 0]
    typed = _sample(nonempty, cfg.sample_shards)
    to_verify = {"all": all_shards, "sample": _sample(all_shards, cfg.sample_shards), "none": []}[cfg.verify]
    alternatives = _alternatives(source, splits)  # reshard --format both: {format: {split: shards}}
    picked = {(sh.split, sh.number) for sh in to_verify}  # the same shards in each format
    to_verify = to_verify + [sh for alt in alternatives.values() for shards in alt.values() for sh in shards
                             if (sh.split, sh.number) in picked]

    task = progress.add_task("verify", total=len(to_verify)) if progress is not None and to_verify else None
    verified = verify_counts(to_verify, source)
    if task is not None:
        progress.update(task, completed=len(to_verify))

    def samples():
        for sh in typed:
            for i, data in enumerate(read_records(sh.url, stop=cfg.sample_records)):
                yield data, f"{sh.url} record {i}"

    renamed = feature_names.of_manifest(source.manifest) if source.kind == "resharded" else {}
    choice = feats.check(feats.survey(samples()), spec, cfg.exclude, source=source.data_folder, renamed=renamed)
    notes += choice.notes
    features = feats.features_dict(choice.roles, spec, renamed)

    dataset_dir = cfg.dataset_dir
    previous = read_record(dataset_dir)
    record = {
        "tool": "laionprep build-tfds", "created": _now(), "source": _abs(source.root), "source_kind": source.kind,
        "data_folder": _abs(source.data_folder), "layout": layout, "dataset": spec.name if spec else None,
        "verify": {"mode": cfg.verify, "shards": verified},
        "splits": {s: [[sh.number, _base(sh.url), sh.count, sh.size] for sh in shards] for s, shards in splits.items()},
        "left_out": left_out, "features": choice.roles, "notes": notes,
        "split_aliases": {a: t for a, t in cfg.split_aliases},
        "alternative_file_formats": sorted(alternatives),
    }
    description = (spec.description if spec else f"TFRecord shards from {source.root}") + (
        f"\n\nRegistered by `laionprep build-tfds` from {source.root} ({layout}"
        f"{', zero-copy' if layout != 'copy' else ''}).")
    common = dict(name=cfg.name, version=cfg.version, features=features, description=description,
                  file_format=file_format, alternative_file_formats=sorted(alternatives),
                  homepage=spec.homepage if spec else None, citation=spec.citation if spec else None,
                  metadata={RECORD_KEY: record})

    if layout == "in_place":
        infos = with_aliases(_in_place_split_infos(cfg, source, splits, dataset_dir, file_format, alternatives),
                             cfg, dataset_dir)
        info = dataset_info(dataset_dir=dataset_dir, split_infos=infos, **common)
        write_metadata_files(info, dataset_dir)
        if cfg.check_read:
            try:
                _check_first_record(dataset_dir)
            except Exception:  # never leave a dataset_info.json that TFDS cannot read
                fsys, p = lfs.get_fs(lfs.join(dataset_dir, "dataset_info.json"))
                fsys.rm(p)
                raise
    elif layout == "symlinks" or lfs.is_local(dataset_dir):
        _publish_local(cfg, splits, layout, common, progress, alternatives)
    else:
        _publish_remote_copy(cfg, splits, common, progress, alternatives)

    if layout != "in_place":  # in place, the folder's manifest.json is the reshard's own
        write_manifest(cfg, params, record, {s: sum(x.count for x in v) for s, v in splits.items()})
    changes = _diff(previous, record) if previous else []
    return RegisterResult(
        dataset_dir=dataset_dir, name=cfg.name, version=cfg.version, layout=layout, source=source.root,
        source_kind=source.kind, splits={s: sum(x.count for x in v) for s, v in splits.items()},
        shards={s: len(v) for s, v in splits.items()}, features=choice.roles, left_out=left_out, notes=notes,
        verified_shards=verified, changes=changes, seconds=time.time() - t0)


def check_aliases(cfg: RegisterConfig, splits) -> None:
    seen = set(splits)
    for alias, target in cfg.split_aliases:
        if not NAME_RE.match(alias):
            raise UsageError(f"--split-alias: {alias!r} is not a valid split name", where="--split-alias",
                             fix="use lower-case letters, digits and underscores, starting with a letter")
        if target not in splits:
            raise UsageError(f"--split-alias {alias}={target}: the source has no split {target!r}",
                             where="--split-alias", fix="splits found: " + ", ".join(sorted(splits)))
        if alias in seen:
            raise UsageError(f"--split-alias {alias}={target}: a split named {alias!r} exists already",
                             where="--split-alias", fix="choose another alias")
        seen.add(alias)


def with_aliases(infos: list, cfg: RegisterConfig, dataset_dir: str) -> list:
    """``infos`` plus one SplitInfo per alias over its split's very files: its template has the split's name
    written in (no ``{SPLIT}`` left), so TFDS opens the same shards whatever the alias is called.  Zero-copy."""
    by_name = {i.name: i for i in infos}
    out = list(infos)
    for alias, target in cfg.split_aliases:
        si = by_name[target]
        tpl = lnames.fix_split(si.filename_template.template, target)
        out.append(split_info(alias, cfg.name, tpl, dataset_dir, list(si.shard_lengths), int(si.num_bytes),
                              si.filename_template.filetype_suffix))
    return out


def _file_format(shards, source: sources.Source) -> str:
    """The record format of the shards (from their names): one per registration, as TFDS has one per dataset."""
    found = sorted({lnames.file_format_of(sh.url) for sh in shards})
    if len(found) > 1:
        raise DataError(f"the shards of {source.root} mix file formats ({', '.join(found)})", where=source.data_folder,
                        fix="reshard into one --format (laionprep reshard --restart)")
    return found[0]


def _alternatives(source: sources.Source, splits: dict) -> dict[str, dict[str, list]]:
    """The registered splits' shards in the source's other file formats (``reshard --format both``), each in
    TFDS's alternative_file_formats: tfds.load streams ``file_format``'s files, tfds.data_source picks ArrayRecord."""
    return {fmt: {s: alt[s] for s in splits} for fmt, alt in source.alternatives.items()}


def _format_template(template: str, file_format: str, alternatives: dict, source, split: str) -> str:
    """The split's template with ``{FILEFORMAT}`` for the suffix when the folder holds other formats too: TFDS
    names one template per split and fills in the suffix of the format it reads."""
    if not alternatives:
        return template
    generic = template[:-len(file_format)] + "{FILEFORMAT}" if template.endswith("." + file_format) else ""
    for fmt in alternatives:
        if not generic or generic.replace("{FILEFORMAT}", fmt) != source.alternative_templates[fmt][split]:
            raise DataError(f"split {split}: the {fmt} files are not named as the {file_format} files with another "
                            "suffix, which an in-place registration of both formats needs", where=source.root,
                            fix="register with symbolic links (a local --data-dir elsewhere) or --mode rewrite")
    return generic


def _in_place_split_infos(cfg, source, splits, dataset_dir, file_format="tfrecord", alternatives=None):
    alternatives = alternatives or {}
    infos = []
    for split, shards in splits.items():
        if source.kind == "download":
            template = IN_PLACE_DOWNLOAD_TEMPLATE
            n = max(sh.number for sh in shards) + 1
        else:
            template = _format_template(source.templates[split], file_format, alternatives, source, split)
            n = source.num_shards[split]
        lengths = [0] * n
        for sh in shards:
            lengths[sh.number] = sh.count
        checked = [(sh, file_format) for sh in shards] + [(sh, fmt) for fmt, alt in alternatives.items()
                                                          for sh in alt[split]]
        for sh, fmt in checked:  # TFDS formats the shard number itself: it must name the very file
            expect = shard_file_name(split, cfg.name, template, sh.number, n, fmt)
            rel = sh.url[len(source.root):].lstrip("/")
            if expect != rel:
                raise DataError(f"TFDS would look for {expect} but the shard is {rel}", where=sh.url,
                                fix="register with symbolic links (a local --data-dir elsewhere) or --mode rewrite")
        infos.append(split_info(split, cfg.name, template, dataset_dir, lengths, sum(sh.size for sh in shards),
                                file_format))
    return infos


def _by_format(splits, common: dict, alternatives: dict | None):
    """``(file format, its shards per split)``, the registration's own format first."""
    return [(common["file_format"], splits)] + sorted((alternatives or {}).items())


def _publish_local(cfg: RegisterConfig, splits, layout: str, common: dict, progress, alternatives=None) -> None:
    """Build the version folder under a temporary name next to it, check it, then swap it into place."""
    parent = lfs.get_fs(lfs.join(cfg.data_dir, cfg.name))[1]
    final = os.path.join(parent, cfg.version)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{cfg.version}.tmp-{uuid.uuid4().hex[:10]}")
    os.makedirs(tmp)
    try:
        infos = []
        formats = _by_format(splits, common, alternatives)
        total = sum(len(v) for _, by_split in formats for v in by_split.values())
        task = progress.add_task("link" if layout == "symlinks" else "copy", total=total) if progress else None
        done = 0
        for fmt, by_split in formats:
            for split, shards in by_split.items():
                names = shard_file_names(split, cfg.name, DEFAULT_TEMPLATE, len(shards), fmt)
                for i, sh in enumerate(shards):
                    dst = os.path.join(tmp, names[i])
                    if layout == "symlinks":
                        os.symlink(os.path.abspath(folders.local_path(sh.url)), dst)
                    else:
                        _copy(sh.url, dst)
                    done += 1
                    if task is not None and (done % 512 == 0 or done == total):
                        progress.update(task, completed=done)
        for split, shards in splits.items():
            infos.append(split_info(split, cfg.name, DEFAULT_TEMPLATE, final, [sh.count for sh in shards],
                                    sum(sh.size for sh in shards), common["file_format"]))
        info = dataset_info(dataset_dir=final, split_infos=with_aliases(infos, cfg, final), **common)
        info.write_to_directory(tmp)
        if cfg.check_read:
            _check_first_record(tmp)
        kept = os.path.join(final, stage.PREVIOUS)  # what --restart moved aside stays with the version folder
        if os.path.isdir(kept) and not os.path.islink(kept):
            os.rename(kept, os.path.join(tmp, stage.PREVIOUS))
        lfs.replace_local_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _publish_remote_copy(cfg: RegisterConfig, splits, common: dict, progress, alternatives=None) -> None:
    final = cfg.dataset_dir
    fsys, fpath = lfs.get_fs(final)
    info_path = lfs.join(final, "dataset_info.json")
    if lfs.exists(info_path):  # readers must never see the old metadata over new files
        fsys.rm(lfs.get_fs(info_path)[1])
    fsys.makedirs(fpath, exist_ok=True)
    infos = []
    for fmt, by_split in _by_format(splits, common, alternatives):
        for split, shards in by_split.items():
            names = shard_file_names(split, cfg.name, DEFAULT_TEMPLATE, len(shards), fmt)
            for i, sh in enumerate(shards):
                _copy(sh.url, lfs.join(final, names[i]))
    for split, shards in splits.items():
        infos.append(split_info(split, cfg.name, DEFAULT_TEMPLATE, final, [sh.count for sh in shards],
                                sum(sh.size for sh in shards), common["file_format"]))
    write_metadata_files(dataset_info(dataset_dir=final, split_infos=with_aliases(infos, cfg, final), **common),
                         final)
    if cfg.check_read:
        _check_first_record(final)


def _copy(src: str, dst: str) -> None:
    sfs, sp = lfs.get_fs(src)
    dfs, dp = lfs.get_fs(dst)
    if lfs.is_local(src) and lfs.is_local(dst):
        shutil.copyfile(sp, dp)
    elif type(sfs) is type(dfs):
        sfs.copy(sp, dp)  # server-side on object stores
    else:
        with sfs.open(sp, "rb") as fi, dfs.open(dp, "wb") as fo:
            shutil.copyfileobj(fi, fo, 8 << 20)


def _diff(previous: dict, record: dict) -> list[str]:
    def index(rec):
        return {(s, r[0]): (r[2], r[3]) for s, rows in (rec.get("splits") or {}).items() for r in rows}

    a, b = index(previous), index(record)
    added = [k for k in b if k not in a]
    removed = [k for k in a if k not in b]
    changed = [k for k in b if k in a and a[k] != b[k]]
    out = []
    if added:
        out.append(f"{len(added)} shard(s) added since the previous registration ({previous.get('created')})")
    if removed:
        out.append(f"{len(removed)} shard(s) no longer registered")
    if changed:
        out.append(f"{len(changed)} shard(s) changed (count or size), e.g. shard {changed[0][1]}")
    if previous.get("features") != record.get("features"):
        out.append("features changed")
    return out


# --------------------------------------------------------------------------------------------------------- check
@dataclasses.dataclass
class CheckResult:
    dataset_dir: str
    status: str  # ok | outdated (loads; the source has more) | stale (files changed or gone) | unknown
    messages: list[str]

    def summary_rows(self):
        return [("dataset dir", self.dataset_dir), ("status", self.status)] + [("", m) for m in self.messages]


def check_registration(dataset_dir: str) -> CheckResult:
    """Compare a registration with its source as it is now (cheap: a listing and the stats files)."""
    rec = read_record(dataset_dir)
    if rec is None:
        if not lfs.exists(lfs.join(dataset_dir, "dataset_info.json")):
            raise DataError("no TFDS dataset here (no dataset_info.json)", where=dataset_dir,
                            fix="pass ROOT/NAME/VERSION of a dataset made by `laionprep build-tfds`")
        return CheckResult(dataset_dir, "unknown", ["not registered by laionprep build-tfds: nothing to compare"])
    if rec.get("source_kind") == "image_folder":
        return CheckResult(dataset_dir, "ok", ["image-folder dataset: its records were written, not linked"])
    msgs_stale: list[str] = []
    msgs_new: list[str] = []
    try:
        now = sources.detect(rec["source"])
    except DataError as e:
        return CheckResult(dataset_dir, "stale", [f"source unreadable: {e.what}"])
    current = {}
    for s, shards in now.splits.items():
        for sh in shards:
            current[(sh.number, _base(sh.url))] = (sh.count, sh.size)
    registered = set()
    # shards `laionprep remove` rewrote since: the registration is outdated (its counts, and with copied files its
    # content, still include the removed rows), not broken
    removed = replace.removed_shards(rec["source"]) if rec.get("source_kind") == "download" else {}
    for split, rows in rec["splits"].items():
        for number, base, count, size in rows:
            registered.add((number, base))
            cur = current.get((number, base))
            if cur is None:
                msgs_stale.append(f"{split} shard {number}: {base} is gone or no longer complete in the source")
            elif cur != (count, size) and number in removed and cur[0] <= count:
                msgs_new.append(f"{split} shard {number}: {count - cur[0]} record(s) removed by `laionprep remove` "
                                f"({', '.join(removed[number])}) since registration"
                                + ("; the registration's copy still holds them" if rec.get("layout") == "copy"
                                   else ""))
            elif cur != (count, size):
                msgs_stale.append(f"{split} shard {number}: {base} changed since registration "
                                  f"(records {count} -> {cur[0]}, bytes {size} -> {cur[1]})")
    if rec.get("layout") == "symlinks" and lfs.is_local(dataset_dir):
        path = lfs.get_fs(dataset_dir)[1]
        dangling = [n for n in os.listdir(path) if os.path.islink(os.path.join(path, n))
                    and not os.path.exists(os.path.join(path, n))]
        if dangling:
            msgs_stale.append(f"{len(dangling)} link(s) point at missing files, e.g. {dangling[0]}")
    new = [k for k in current if k not in registered]
    if new:
        n_rec = sum(current[k][0] for k in new)
        msgs_new.append(f"{len(new)} complete shard(s) ({n_rec:,} records) in the source are not registered")
    status = "stale" if msgs_stale else ("outdated" if msgs_new else "ok")
    fix = ["re-run `laionprep build-tfds` with the same arguments to register the source as it is now"] \
        if status != "ok" else []
    return CheckResult(dataset_dir, status, msgs_stale[:20] + msgs_new + fix)


def describe(dataset_dir: str) -> list[tuple[str, str]]:
    """The dataset as TFDS sees it (splits, counts, features): rows for a summary table."""
    import tensorflow_datasets as tfds

    b = tfds.builder_from_directory(dataset_dir)
    rows = [("TFDS name", f"{b.info.name}:{b.info.version}"), ("dataset dir", str(dataset_dir))]
    for s, si in b.info.splits.items():
        rows.append((f"split {s}", f"{si.num_examples:,} examples, {si.num_shards:,} shards, "
                                   f"{tfds.core.units.Size(si.num_bytes)}"))
    for k, f in sorted(b.info.features.items()):
        rows.append((f"feature {k}", _feature_txt(f)))
    return rows


def _feature_txt(f) -> str:
    import numpy as np
    import tensorflow_datasets as tfds

    if isinstance(f, tfds.features.ClassLabel):
        return f"ClassLabel({f.num_classes} classes)"
    if isinstance(f, tfds.features.Image):
        return f"Image(shape={f.shape}, dtype={np.dtype(f.np_dtype).name}, {f.encoding_format})"
    if isinstance(f, tfds.features.Text):
        return "Text"
    return f"{type(f).__name__}(shape={f.shape}, dtype={np.dtype(f.np_dtype).name})"



def _abs(url: str) -> str:
    return url if "://" in str(url) else os.path.abspath(url)


def _base(url: str) -> str:
    return str(url).rstrip("/").rsplit("/", 1)[-1]
