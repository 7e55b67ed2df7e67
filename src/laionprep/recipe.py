"""``laionprep recipe flip|clipa|big_vision|clippo DIR``: the config lines that point a research trainer at DIR.

It reads what the folder is (``folders.detect``: download, reshard output or TFDS registration) and its metadata,
and either prints the lines for that consumer or raises a :class:`DataError` whose fix names the laionprep command
and flags to re-run.  What each consumer reads (restated in tests/test_readers.py, which runs those readers):

* FLIP: raw TFRecords, ``glob(LAION_PATH/*.tfrecord)``; ``jpg``, ``txt``, ``height``, ``width``, ``key`` (cast to
  int64; a failing record is silently dropped);
* CLIPA: ``tfds.builder_from_directory(data_dir)``, split ``'full'``;
* big_vision (LiT) / CLIPPO: a TFDS folder (``from_data_dir``), features ``image`` (not decoded by the reader)
  and ``texts``.
"""
from __future__ import annotations

import dataclasses

from laionprep import feature_names, folders
from laionprep import fs as lfs
from laionprep.errors import DataError, UsageError

CONSUMERS = ("flip", "clipa", "big_vision", "clippo")


@dataclasses.dataclass
class Recipe:
    consumer: str
    folder: str
    kind: str
    lines: list[str]
    notes: list[str]


def _abs(path: str) -> str:
    return lfs.normalise(path) if lfs.is_local(path) else str(path).rstrip("/")


def _reshard_facts(f: folders.ReshardFolder) -> dict:
    counts, man = f.counts(), f.manifest()
    rs = (man.get("stages") or {}).get("reshard") or {}
    splits = counts.get("splits") or {}
    main = (man.get("parameters") or {}).get("split") or ("train" if "train" in splits else next(iter(splits), ""))
    tpl = (splits.get(main) or {}).get("filename_template", "")
    return {"splits": splits, "main": main, "template": tpl, "renamed": feature_names.of_manifest(man),
            "keys": str(rs.get("keys") or ""), "name": counts.get("name")}


def _flip(folder, root: str) -> tuple[list[str], list[str]]:
    if isinstance(folder, folders.TfdsFolder):
        from laionprep.tfds_builders.tfds_files import read_record

        src = (read_record(folder.root) or {}).get("source")
        if not src:
            raise DataError("FLIP reads raw TFRecords, not a TFDS registration, and this one names no source folder",
                            where=root, fix="pass the download or reshard folder that was registered")
        lines, notes = _flip(folders.detect(src, kinds=("resharded", "download")), src)
        return lines, [f"the registration's source: {src}"] + notes
    if isinstance(folder, folders.DownloadFolder):
        return [f"config.laion_path = '{_abs(folder.data)}'"], ["FLIP globs *.tfrecord there: every shard"]
    f = _reshard_facts(folder)
    bad = [o for o in ("jpg", "txt") if o in f["renamed"].values()]
    if bad:
        raise DataError(f"the records store {', '.join(bad)} under other names (reshard --feature-names); FLIP reads "
                        "jpg and txt", where=root, fix="re-run `laionprep reshard` without --feature-names")
    if "/" not in f["template"] or not f["template"].endswith(".tfrecord"):
        raise DataError("this reshard output has the flat layout (NAME-SPLIT.tfrecord-XXXXX-of-YYYYY): FLIP's "
                        "glob LAION_PATH/*.tfrecord finds none of its files", where=root,
                        fix="re-run the same `laionprep reshard` command with --restart (it writes "
                            "OUT/SPLIT/NAME-SPLIT-XXXXX-of-YYYYY.tfrecord)")
    if f["keys"].startswith("prefixed"):
        raise DataError("the keys are '<source>_<key>' strings: FLIP casts key to int64 and silently drops every "
                        "record", where=root, fix="re-run `laionprep reshard` with sources whose keys are numbers "
                                                  "(img2dataset downloads), or reshard each source on its own")
    split_dir = lfs.join(_abs(root), folders.template_folder(f["template"]))
    notes = [f"split {f['main']!r}: {f['splits'][f['main']]['num_examples']:,} records in "
             f"{f['splits'][f['main']]['num_shards']} shards"]
    notes += [f"split {s!r} is in its own folder (not globbed)" for s in f["splits"] if s != f["main"]]
    return [f"config.laion_path = '{split_dir}'"], notes


def _tfds_info(folder: folders.TfdsFolder):
    import tensorflow_datasets as tfds

    return tfds.builder_from_directory(folder.root).info


def _register_cmd(root: str, extra: str) -> str:
    return f"laionprep build-tfds --source {root} --name NAME --data-dir ROOT{extra}"


def _clipa(folder, root: str) -> tuple[list[str], list[str]]:
    if not isinstance(folder, folders.TfdsFolder):
        raise DataError("CLIPA reads a TFDS folder (tfds.builder_from_directory) with split 'full'", where=root,
                        fix="register it: " + _register_cmd(root, " --split-alias full=train"))
    info = _tfds_info(folder)
    if "full" not in info.splits:
        raise DataError(f"CLIPA reads split 'full'; this registration has {sorted(info.splits)}", where=root,
                        fix="re-run `laionprep build-tfds` with the same flags plus --split-alias full=train "
                            "--restart (zero-copy: a second split name over the same files; --restart because "
                            "the registration's parameters change)")
    return ([f"data_dir = '{_abs(folder.root)}'   # tfds.builder_from_directory(data_dir)",
             "split = 'full'                 # hard-coded by CLIPA: registered here"],
            [f"split 'full': {info.splits['full'].num_examples:,} examples"])


def _big_vision(folder, root: str, consumer: str) -> tuple[list[str], list[str]]:
    if not isinstance(folder, folders.TfdsFolder):
        fix = ("register it: " + _register_cmd(root, "") if isinstance(folder, folders.ReshardFolder)
               and _reshard_facts(folder)["renamed"].get("image") == "jpg" else
               "reshard it with `laionprep reshard SRC --output OUT --name NAME --feature-names big_vision`, then "
               + _register_cmd("OUT", ""))
        raise DataError(f"{consumer} reads a TFDS folder with features 'image' and 'texts'", where=root, fix=fix)
    info = _tfds_info(folder)
    split = "train" if "train" in info.splits else next(iter(info.splits))
    lines = [f"config.input.data = dict(name='from_data_dir', data_dir='{_abs(folder.root)}', split='{split}')"]
    feats = set(info.features)
    if {"image", "texts"} <= feats:
        return lines, ["features 'image' (JPEG; skip_decode=('image',) is big_vision's default) and 'texts': the "
                       "bundled configs' pp strings read them unchanged"]
    if "jpg" in feats and "txt" in feats:
        raise DataError(f"{consumer}'s bundled configs read 'image' and 'texts'; this registration has 'jpg' and 'txt'",
                        where=root, fix="re-run `laionprep reshard` with --feature-names big_vision and register "
                                        "that output, or edit the config: skip_decode=('jpg',) in config.input.data "
                                        "and pp 'decode(inkey=\"jpg\", outkey=\"image\")|...' with inkey='txt' for "
                                        "the text ops")
    raise DataError(f"no image/text features big_vision knows in {sorted(feats)}", where=root,
                    fix="register a laionprep download or reshard output")


def recipe(consumer: str, path: str) -> Recipe:
    if consumer not in CONSUMERS:
        raise UsageError(f"unknown consumer {consumer!r}", where="CONSUMER", fix="one of: " + ", ".join(CONSUMERS))
    folder = folders.detect(path)
    if consumer == "flip":
        lines, notes = _flip(folder, path)
    elif consumer == "clipa":
        lines, notes = _clipa(folder, path)
    else:
        lines, notes = _big_vision(folder, path, consumer)
    return Recipe(consumer, path, folder.kind, lines, notes)
