"""``laionprep build-tfds`` as a stage: its options (``BuildTfdsConfig``), ``run_stage`` around ``register`` /
``build_image_folder`` / ``check_registration`` (``cli.py`` only parses, prints and maps errors; the build-tfds
manifest is written by ``register``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING

from laionprep import fs as lfs
from laionprep import manifest as lmanifest
from laionprep import options, stage
from laionprep.errors import UsageError
from laionprep.options import option


def split_aliases(value: str | None) -> tuple[tuple[str, str], ...]:
    """``full=train,all=train`` -> (("full", "train"), ("all", "train"))."""
    out = []
    for item in options.csv(value):
        alias, eq, target = (x.strip() for x in item.partition("="))
        if not (eq and alias and target):
            raise UsageError(f"--split-alias {item!r} is not ALIAS=SPLIT", where="--split-alias",
                             fix="write e.g. --split-alias full=train (CLIPA reads split 'full')")
        out.append((alias, target))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class BuildTfdsConfig:
    """``laionprep build-tfds``'s options, declared once (``laionprep.options``); ``register.RegisterConfig`` and
    ``image_folder`` take them from here."""

    name: str = option("--name", None, "TFDS dataset name, e.g. laion400m_tfrecord", default=MISSING, required=True)
    data_dir: str = option("--data-dir", None, "TFDS data dir ROOT: the dataset goes to ROOT/NAME/VERSION",
                           default=MISSING, required=True)
    source: str | None = option(
        "--source", None, "a download folder DIR, a resharded folder, or (image-folder) SPLIT/CLASS/*.jpg")
    version: str = option("--version", None, "dataset version (default 1.0.0)", default="1.0.0")
    mode: str = option("--mode", None, "register: zero-copy (symlinks; in place when ROOT/NAME/VERSION is the "
                       "source); rewrite: copy the files under TFDS names; image-folder: labelled images -> "
                       "image/label dataset", default="register", choices=["register", "rewrite", "image-folder"])
    split: str | None = option("--split", None, "split name of a download folder (default train); image-folder: "
                               "treat SOURCE itself as this one split")
    split_alias: tuple[tuple[str, str], ...] = option(
        "--split-alias", None, "comma-separated ALIAS=SPLIT: register another split name over the same files, "
        "zero-copy (e.g. full=train for CLIPA, which reads split 'full')", default=(), cli_default=None,
        parse=split_aliases)
    dataset: str | None = option("--dataset", None,
                                 "dataset spec for features and citation (default: the source's manifest)")
    exclude: tuple[str, ...] = option("--exclude", None, "comma-separated record keys to leave out of the features",
                                      default=(), cli_default=None, parse=options.csv)
    allow_incomplete: bool = option(
        "--allow-incomplete", bool, "register the shards whose counts are established, listing the others "
        "(default: refuse)", default=False)
    verify: str = option("--verify", None, "re-count records of a sample of shards (default), of every shard, or "
                         "none", default="sample", choices=["sample", "all", "none"])
    class_names: str | None = option(
        "--class-names", None, "image-folder: prompt names, .txt (one per line, label order) or .json "
        "{folder: name} (default: SOURCE/class_names.txt when present)")
    restart: bool = option(
        "--restart", bool, "move an earlier registration in ROOT/NAME/VERSION (other parameters or source, or a clean "
        "redo) to ROOT/NAME/VERSION/_previous/<UTC time>/ and register fresh", default=False, output=False)
    check: bool = option("--check", bool, "only check that an existing registration still matches its source "
                         "(exit 1 if not)", default=False)


def run_stage(cfg: BuildTfdsConfig, *, progress=None) -> stage.StageResult:
    # imported here: cli.py builds every verb's flags from BuildTfdsConfig, and register loads TFDS (~1.8 s)
    from laionprep.tfds_builders import register as reg
    from laionprep.tfds_builders.image_folder import build_image_folder

    dataset_dir = lfs.join(cfg.data_dir, cfg.name, cfg.version)
    if cfg.check:
        res = reg.check_registration(dataset_dir)
        table = stage.Table(f"laionprep build-tfds --check {cfg.name}", res.summary_rows())
        return stage.StageResult(manifest=lmanifest.read(dataset_dir), tables=(table,),
                                 exit_code=0 if res.status == "ok" else 1, detail=res)
    if not cfg.source:
        raise UsageError("--source is required (or pass --check)", where="--source",
                         fix="pass the download, resharded or image folder to register")
    if cfg.mode == "image-folder":
        res = build_image_folder(cfg.source, cfg.name, cfg.data_dir, cfg.version,
                                 class_names_file=cfg.class_names, split=cfg.split, progress=progress)
    else:
        if cfg.class_names:
            raise UsageError("--class-names applies to --mode image-folder only", where="--class-names")
        res = reg.register(cfg.source, cfg.name, cfg.data_dir, cfg.version, mode=cfg.mode,
                           split=cfg.split or "train", dataset=cfg.dataset, exclude=cfg.exclude,
                           allow_incomplete=cfg.allow_incomplete, verify=cfg.verify, split_aliases=cfg.split_alias,
                           restart=cfg.restart,
                           progress=progress)
    tables = (stage.Table(f"laionprep build-tfds {cfg.name} ({cfg.mode})", res.summary_rows()),
              stage.Table("as TFDS sees it", reg.describe(res.dataset_dir)))
    note = (f"load it:  tfds.load({cfg.name!r}, data_dir={cfg.data_dir!r}, split=...)\n"
            f"     or:  tfds.builder_from_directory({res.dataset_dir!r})")
    return stage.StageResult(manifest=lmanifest.read(res.dataset_dir), tables=tables, note=note, detail=res)


__all__ = ["BuildTfdsConfig", "run_stage", "split_aliases"]
