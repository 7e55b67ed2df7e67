"""Recognise what kind of dataset folder we were given and list its shards with what the metadata says about them.

Three kinds (see the formats section of the README):

* ``download``: ``DIR/manifest.json`` + ``DIR/tfrecord/NNNNN.{tfrecord,parquet}`` + ``NNNNN_stats.json`` (or an
  img2dataset TFRecord folder without a manifest, or ``DIR/tfrecord`` itself);
* ``resharded``: ``OUT/SPLIT/NAME-SPLIT-XXXXX-of-YYYYY.tfrecord`` (or the older flat
  ``OUT/NAME-SPLIT.tfrecord-XXXXX-of-YYYYY``, as counts.json's template says) + ``OUT/counts.json``
  (+ ``OUT/manifest.json``);
* ``tfds``: a folder with ``dataset_info.json`` (``ROOT/NAME/VERSION``), loadable with
  ``tfds.builder_from_directory``.  ``ROOT`` or ``ROOT/NAME`` are accepted when they hold exactly one version.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from laionprep import feature_names
from laionprep import fs as lfs
from laionprep import folders
from laionprep.datasets import SPECS, DatasetSpec, dataset_of
from laionprep.errors import UsageError
from laionprep.folders.shardscan import describe
from laionprep.validate import consistency
from laionprep.validate.problems import Problem
from laionprep.validate.shard_check import Checks, Unit

FLIP_KEYS = ("jpg", "txt", "key", "width", "height")


@dataclasses.dataclass
class Layout:
    kind: str  # download, resharded, tfds
    root: str  # the dataset folder (download: DIR, the one holding manifest.json when there is one)
    units: list[Unit]
    checks: Checks
    problems: list[Problem] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    manifest: dict = dataclasses.field(default_factory=dict)
    spec: DatasetSpec | None = None
    data_folder: str = ""  # download: the folder holding the shards
    expected_total: int | None = None  # records the metadata promises in all
    splits: dict = dataclasses.field(default_factory=dict)  # split -> {"num_examples", "num_shards"}
    tfds_dir: str | None = None
    expected_kinds: dict = dataclasses.field(default_factory=dict)  # key -> bytes/int64/float (dataset level)
    shard_files: dict = dataclasses.field(default_factory=dict)  # download: shard id -> [every file it has]


def _rel(path: str, root: str) -> str:
    p, r = lfs.normalise(path), lfs.normalise(root)
    return p[len(r) + 1:] if p.startswith(r + "/") else path


def _find_value(obj: Any, name: str, depth: int = 0):
    """The first value of a key ``name`` in a nested manifest (tolerant of where each stage puts it)."""
    if depth > 6:
        return None
    if isinstance(obj, dict):
        if name in obj and obj[name] is not None and not isinstance(obj[name], (dict, list)):
            return obj[name]
        for v in obj.values():
            found = _find_value(v, name, depth + 1)
            if found is not None:
                return found
    return None


def _spec_for(name: str | None, where: str) -> DatasetSpec | None:
    if name is None:
        return None
    if name not in SPECS:
        raise UsageError(f"unknown dataset {name!r}", where=where, fix="use one of: " + ", ".join(SPECS))
    return SPECS[name]


def detect(path: str) -> tuple[str, str]:
    """(kind, folder) for the folder given on the command line."""
    f = folders.detect(path)
    return f.kind, f.root


_COLUMN_KINDS = {"float": "float", "int": "int64", "str": "bytes", "json": "bytes"}
FLIP_KINDS = {"jpg": "bytes", "txt": "bytes", "key": "bytes", "width": "int64", "height": "int64"}


def _base_checks(spec: DatasetSpec | None, carried: dict[str, str] | None) -> tuple[tuple[str, ...], dict, list]:
    """Required keys: FLIP's plus the carried columns (the manifest's list, else the spec's), and their types."""
    notes = []
    if carried is None and spec is not None:
        carried = {c.name: c.kind for c in spec.extra_columns}
    if carried is None:
        notes.append("dataset unknown (no manifest naming it, no --dataset): only FLIP's keys "
                     f"{', '.join(FLIP_KEYS)} are required")
        carried = {}
    kinds = dict(FLIP_KINDS)
    for k, kind in carried.items():
        kinds.setdefault(k, _COLUMN_KINDS.get(kind, "bytes"))
    return FLIP_KEYS + tuple(k for k in carried if k not in FLIP_KEYS), kinds, notes


def _size_settings(manifest: dict, cfg, notes: list) -> dict:
    """The download's image settings: a reshard manifest's ``images``, a download manifest's
    ``stages.download`` / ``parameters.download``, else the first such key anywhere in the manifest."""
    src = manifest
    for cand in (((manifest.get("stages") or {}).get("reshard") or {}).get("images"), manifest.get("images"),
                 (manifest.get("stages") or {}).get("download"),
                 (manifest.get("parameters") or {}).get("download")):
        if isinstance(cand, dict) and cand.get("image_size") is not None:
            src = cand
            break
    size = cfg.image_size if cfg.image_size is not None else _find_value(src, "image_size")
    mode = _find_value(src, "resize_mode") or "keep_ratio"
    only_bigger = bool(_find_value(src, "resize_only_if_bigger") or False)
    if size is None:
        notes.append("image size unknown (not in a manifest): image sizes are not checked; pass --image-size")
    return {"image_size": int(size) if size is not None else None, "resize_mode": mode,
            "resize_only_if_bigger": only_bigger}


def build(cfg) -> Layout:
    f = folders.detect(cfg.path)
    if isinstance(f, folders.DownloadFolder):
        return _download(f, cfg)
    if isinstance(f, folders.ReshardFolder):
        return _resharded(f.root, cfg)
    return _tfds(f.root, cfg)


def _checks(cfg, **kw) -> Checks:
    return Checks(decode_fraction=cfg.decode_fraction, sha256=cfg.sha256, max_examples=cfg.max_examples, **kw)


# ------------------------------------------------------------------------------------------------- download
def _download(folder: folders.DownloadFolder, cfg) -> Layout:
    root, data = folder.root, folder.data
    has_manifest = lfs.exists(folder.manifest_path)
    manifest = folder.manifest() if has_manifest else {}
    notes = [] if has_manifest else ["no manifest.json: totals are not compared with one"]
    spec = _spec_for(cfg.dataset, "--dataset") or _spec_for(dataset_of(manifest), lfs.join(root, "manifest.json"))
    carried = (manifest.get("stages", {}).get("prefilter", {}) or {}).get("columns") or None
    if cfg.dataset:
        carried = None
    required, kinds, n2 = _base_checks(spec, carried)
    notes += n2
    size = _size_settings(manifest, cfg, notes)
    scan = folder.scan()
    problems = []
    units = []
    for i, s in enumerate(scan.shards):
        units.append(Unit(index=i, path=s.tfrecord, label=_rel(s.tfrecord, root), expected=s.count,
                          expected_source="_stats.json", parquet=s.parquet, stats=s.stats, shard_id=s.id))
    def at(sid):
        return _rel(lfs.join(data, f"{sid:05d}.tfrecord"), root)

    for sid in scan.gaps:
        problems.append(Problem("missing_shard", f"shard {sid:05d}: missing (no tfrecord, parquet or _stats.json) "
                                                 "between finished shards", file=at(sid), shard=sid))
    expected_shards = _find_value(manifest.get("stages", {}).get("download", {}), "shards_expected")
    if isinstance(expected_shards, int):
        for sid in range(expected_shards):
            if sid not in scan.files and sid not in scan.gaps:
                problems.append(Problem("missing_shard", f"shard {sid:05d}: missing (no tfrecord, parquet or "
                                                         f"_stats.json): manifest.json expects {expected_shards} "
                                                         "shards", file=at(sid), shard=sid))
    for sid, why in sorted(scan.unreadable.items()):  # killed while img2dataset wrote it, or damaged since
        problems.append(Problem("bad_metadata", f"shard {sid:05d}: _stats.json cannot be read ({why}): the shard "
                                                "is not finished; --quarantine sets it aside for the download",
                                file=_rel(scan.files[sid]["_stats.json"], root), shard=sid))
    for sid in scan.missing_tfrecord:
        problems.append(Problem("missing_file", describe(sid, scan.files[sid]), file=at(sid),
                                shard=sid))
    for sid, files in sorted(folders.group_files(scan.orphans).items()):
        for p in sorted(files.values()):
            problems.append(Problem("incomplete_shard", describe(sid, files), file=_rel(p, root),
                                    shard=sid))
    problems += consistency.download(root, data, manifest, scan.shards)
    checks = _checks(cfg, required=required, **size)
    return Layout(kind="download", root=root, units=units, checks=checks, problems=problems, notes=notes,
                  manifest=manifest, spec=spec, data_folder=data, expected_total=scan.total, expected_kinds=kinds,
                  shard_files={sid: list(f.values()) for sid, f in scan.files.items()})


# ------------------------------------------------------------------------------------------------- resharded
def _resharded(root: str, cfg) -> Layout:
    counts_path = lfs.join(root, "counts.json")
    problems, notes = [], []
    try:
        counts = lfs.read_json(counts_path)
        splits = counts["splits"]
        name = counts.get("name", "")
    except Exception as e:
        raise UsageError(f"counts.json is unreadable or lacks 'splits': {type(e).__name__}: {e}", where=counts_path,
                         fix="re-run `laionprep reshard` (counts.json is written last, when the output is complete)")
    manifest = lfs.read_json(lfs.join(root, "manifest.json")) if lfs.exists(lfs.join(root, "manifest.json")) else {}
    if not manifest:
        notes.append("no manifest.json next to counts.json")
    ds_name = cfg.dataset or dataset_of(manifest) or _find_value(manifest.get("parameters", {}), "dataset")
    spec = _spec_for(ds_name, "--dataset") if (cfg.dataset or ds_name in SPECS) else None
    # the records' schema: stages.reshard.schema (manifest.py), top-level in manifests written before it
    schema = ((manifest.get("stages") or {}).get("reshard") or {}).get("schema") or manifest.get("schema")
    name_of = feature_names.renamer(feature_names.of_manifest(manifest))  # reshard --feature-names
    flip_keys = tuple(name_of(k) for k in FLIP_KEYS)
    if isinstance(schema, dict) and schema and not cfg.dataset:
        # the reshard manifest's output schema: every record holds exactly these keys with these types
        kinds = {k: v for k, v in schema.items() if v in ("bytes", "int64", "float")}
        required = flip_keys + tuple(k for k in kinds if k not in flip_keys)
        kinds = {**{name_of(k): v for k, v in FLIP_KINDS.items()}, **kinds}
    else:
        required, kinds, n2 = _base_checks(spec, None)
        notes += n2
    size = _size_settings(manifest, cfg, notes)
    units = []
    listed = set()
    subfolders = {""}
    info = {}
    for split, s in splits.items():
        try:
            n = int(s["num_shards"])
            lengths = [int(x) for x in s["shard_lengths"]]
            template = s.get("filename_template") or folders.reshard_template(name, split)
        except Exception as e:
            problems.append(Problem("bad_metadata", f"split {split!r}: {type(e).__name__}: {e}", file="counts.json"))
            continue
        info[split] = {"num_examples": s.get("num_examples"), "num_shards": n}
        subfolders.add(folders.template_folder(template))
        if len(lengths) != n:
            problems.append(Problem("count_mismatch", f"split {split}: num_shards {n} but {len(lengths)} shard "
                                                      "lengths", file="counts.json"))
        if s.get("num_examples") is not None and int(s["num_examples"]) != sum(lengths):
            problems.append(Problem("count_mismatch", f"split {split}: num_examples {s['num_examples']} != "
                                                      f"sum of shard_lengths {sum(lengths)}", file="counts.json"))
        for i in range(n):
            fname = folders.format_template(template, i, n, dataset=name, split=split)
            path = lfs.join(root, fname)
            listed.add(lfs.normalise(path))
            expected = lengths[i] if i < len(lengths) else None
            if not lfs.exists(path):
                problems.append(Problem("missing_shard", f"split {split}: shard {i} of {n} is missing", file=fname,
                                        count=1))
                continue
            units.append(Unit(index=len(units), path=path, label=fname, expected=expected,
                              expected_source="counts.json", split=split))
        for fmt, alt in folders.names.split_templates(s).items():
            if alt != template:
                problems += _alternative_files(root, name, split, template, alt, lengths, listed)
    # a trainer globs OUT (old layout) or a split's folder OUT/SPLIT (current): every file there must be listed
    globbed = {lfs.join(root, *([d] if d else []), pat) for d in subfolders
               for pat in ("*.tfrecord*", "*.array_record*")}
    for p in sorted({p for g in globbed for p in lfs.glob(g)}):
        if lfs.normalise(p) not in listed and lfs.TMP_MARK not in p:
            problems.append(Problem("unexpected_file", "a shard file counts.json does not list (a trainer that "
                                                       "globs the folder would read it)", file=_rel(p, root)))
    _compare_manifest_splits(manifest, info, problems)
    problems += consistency.reshard(manifest, counts)
    checks = _checks(cfg, required=required, image_key=name_of("jpg"), caption_key=name_of("txt"), **size)
    total = sum(u.expected or 0 for u in units)
    return Layout(kind="resharded", root=root, units=units, checks=checks, problems=problems, notes=notes,
                  manifest=manifest, spec=spec, expected_total=total, splits=info, expected_kinds=kinds)


def _alternative_files(root: str, name: str, split: str, template: str, alt: str, lengths: list[int],
                       listed: set) -> list[Problem]:
    """``reshard --format both``: each shard's copy in the other format must exist, hold counts.json's record count
    (read from its index, not record by record: the primary files get the full checks) and start with the same
    record as the primary file (the copies are written from one pass, record for record)."""
    from laionprep.arrayrecord import count_records, read_records
    from laionprep.errors import DataError

    problems = []
    n = len(lengths)
    for i, expected in enumerate(lengths):
        fname = folders.format_template(alt, i, n, dataset=name, split=split)
        path = lfs.join(root, fname)
        listed.add(lfs.normalise(path))
        if not lfs.exists(path):
            problems.append(Problem("missing_shard", f"split {split}: shard {i} of {n} has no {fname} (its copy in "
                                                     "the other file format)", file=fname, count=1))
            continue
        try:
            got = count_records(path)
            first = next(read_records(path, 0, 1), None)
            primary = lfs.join(root, folders.format_template(template, i, n, dataset=name, split=split))
            want = next(read_records(primary, 0, 1), None) if lfs.exists(primary) else first
        except DataError as e:
            problems.append(Problem("unreadable_file", f"split {split}: {e.what}", file=fname))
            continue
        if got != expected:
            problems.append(Problem("count_mismatch", f"split {split}: {got} records, counts.json says {expected}",
                                    file=fname))
        elif first != want:
            problems.append(Problem("format_mismatch", f"split {split}: its first record differs from that of "
                                                       f"{folders.format_template(template, i, n)}", file=fname))
    return problems


def _compare_manifest_splits(manifest: dict, info: dict, problems: list) -> None:
    """If the reshard manifest gives rows out per split, they must equal counts.json's num_examples."""
    rows_out = _find_dict(manifest, "rows_out")
    if not isinstance(rows_out, dict):
        return
    for split, v in info.items():
        got = rows_out.get(split)
        if isinstance(got, dict):
            got = got.get("rows", got.get("num_examples"))
        if isinstance(got, int) and v.get("num_examples") is not None and got != int(v["num_examples"]):
            problems.append(Problem("manifest_mismatch", f"split {split}: manifest.json rows_out {got} != "
                                                         f"counts.json num_examples {v['num_examples']}",
                                    file="manifest.json"))


def _find_dict(obj: Any, name: str, depth: int = 0):
    if depth > 6 or not isinstance(obj, dict):
        return None
    if isinstance(obj.get(name), dict):
        return obj[name]
    for v in obj.values():
        found = _find_dict(v, name, depth + 1)
        if found is not None:
            return found
    return None


# ------------------------------------------------------------------------------------------------- tfds
def _serialized_kinds(features) -> dict[str, str]:
    """``{flat key: bytes|int64|float}`` as the records must hold them, from TFDS's serialized info."""
    import numpy as np

    out = {}

    def walk(info, prefix):
        if isinstance(info, dict):
            for k, v in info.items():
                walk(v, f"{prefix}/{k}" if prefix else k)
            return
        dt = np.dtype(info.np_dtype)
        if dt.kind in "OSU":
            out[prefix] = "bytes"
        elif dt.kind == "f":
            out[prefix] = "float"
        else:  # ints and bools are int64 features
            out[prefix] = "int64"

    walk(features.get_serialized_info(), "")
    return out


def _tfds(folder: str, cfg) -> Layout:
    from laionprep._env import import_tf

    import_tf()
    import tensorflow_datasets as tfds

    problems, notes = [], []
    info_path = lfs.join(folder, "dataset_info.json")
    try:
        builder = tfds.builder_from_directory(folder)
        info = builder.info
    except Exception as e:
        raise UsageError(f"TFDS cannot open this folder: {type(e).__name__}: {e}", where=info_path,
                         fix="check dataset_info.json and features.json (re-run `laionprep build-tfds`)") from e
    kinds = _serialized_kinds(info.features)
    image_key, image_format = None, None
    for k, feat in info.features.items():
        if isinstance(feat, tfds.features.Image):
            image_key = k
            image_format = getattr(feat, "_encoding_format", None) or None
            break
    if image_key is None and "jpg" in kinds:
        image_key, image_format = "jpg", "jpeg"
    # provenance: `laionprep build-tfds` writes metadata.json {"laionprep": {"source": DIR, "dataset": ...}}; the
    # source's manifest.json has the download's image settings
    manifest, prov = {}, {}
    meta_path = lfs.join(folder, "metadata.json")
    if lfs.exists(meta_path):
        try:
            prov = (lfs.read_json(meta_path) or {}).get("laionprep") or {}
        except Exception:  # not ours, or unreadable: no provenance
            prov = {}
    for cand in ([lfs.join(prov["source"], "manifest.json")] if isinstance(prov.get("source"), str) else []) + [
            lfs.join(folder, "manifest.json")]:
        if lfs.exists(cand):
            manifest = lfs.read_json(cand)
            notes.append(f"image settings from {cand}")
            break
    ds_name = cfg.dataset or prov.get("dataset")
    spec = _spec_for(ds_name, "--dataset") if (cfg.dataset or ds_name in SPECS) else None
    size = _size_settings(manifest, cfg, notes)
    units = []
    split_info = {}
    seen_files: dict[tuple, str] = {}
    for split_name, si in info.splits.items():
        lengths = list(si.shard_lengths)
        try:
            paths = [str(p) for p in si.filepaths]
        except Exception as e:
            problems.append(Problem("tfds_unreadable", f"split {split_name}: cannot list its files: {e}",
                                    file="dataset_info.json"))
            continue
        same = seen_files.get(tuple(paths))
        if same is not None:  # build-tfds --split-alias: another name over the same files, checked once
            notes.append(f"split {split_name} is an alias of split {same} (the same files): checked once")
            continue
        seen_files[tuple(paths)] = split_name
        split_info[split_name] = {"num_examples": si.num_examples, "num_shards": len(paths)}
        if len(paths) != len(lengths):
            problems.append(Problem("tfds_shard_length", f"split {split_name}: {len(paths)} files but "
                                                         f"{len(lengths)} shard lengths", file="dataset_info.json"))
        for i, p in enumerate(paths):
            label = _rel(p, folder)
            if not lfs.exists(p):
                problems.append(Problem("missing_shard", f"split {split_name}: shard {i} listed in "
                                                         "dataset_info.json does not exist", file=label))
                continue
            units.append(Unit(index=len(units), path=p, label=label, split=split_name,
                              expected=lengths[i] if i < len(lengths) else None, expected_source="dataset_info.json"))
    required = tuple(kinds)
    if spec is not None:
        required += tuple(c.name for c in spec.extra_columns if c.name not in kinds)
    checks = _checks(cfg, required=required, declared=tuple(sorted(kinds.items())), image_key=image_key,
                     image_format=image_format, caption_key="txt" if "txt" in kinds else None,
                     key_key="key" if "key" in kinds else None,
                     category_keys=tuple(k for k in ("NSFW",) if k in kinds), **size)
    return Layout(kind="tfds", root=folder, units=units, checks=checks, problems=problems, notes=notes,
                  manifest=manifest, spec=spec, expected_total=sum(v["num_examples"] for v in split_info.values()),
                  splits=split_info, tfds_dir=folder)

