"""Folder kinds — an img2dataset download, a reshard output, a TFDS version folder — and the one ``detect``.

* download: ``DIR/manifest.json`` + ``DIR/tfrecord/NNNNN.{tfrecord,parquet}`` + ``NNNNN_stats.json`` (or the
  TFRecord folder itself); a shard is complete when its stats file exists.
* reshard: ``OUT/SPLIT/NAME-SPLIT-XXXXX-of-YYYYY.tfrecord`` + ``OUT/counts.json`` (written last: the output is
  complete; its per-split ``filename_template`` names the files, so the older flat layout
  ``OUT/NAME-SPLIT.tfrecord-XXXXX-of-YYYYY`` reads the same way).
* tfds: ``ROOT/NAME/VERSION/dataset_info.json`` (``ROOT`` or ``ROOT/NAME`` are accepted when they hold one version).
Paths are URLs (local, gs://, memory://) handled through :mod:`laionprep.fs`.
"""
from __future__ import annotations

import dataclasses
import os
import posixpath
from typing import ClassVar

from laionprep import fs as lfs
from laionprep.errors import UsageError
from laionprep.folders import names
from laionprep.folders.shardscan import MANIFEST, ShardScan, scan

COUNTS = "counts.json"
DATASET_INFO = "dataset_info.json"
PREVIOUS = "_previous"  # stage.PREVIOUS: FOLDER/_previous/<time>/ holds what --restart moved aside


@dataclasses.dataclass(frozen=True)
class Folder:
    root: str
    kind: ClassVar[str] = ""

    @property
    def manifest_path(self) -> str:
        return lfs.join(self.root, MANIFEST)

    def manifest(self) -> dict:
        """The folder's manifest ({} when there is none)."""
        from laionprep import manifest

        return manifest.load(self.manifest_path)


@dataclasses.dataclass(frozen=True)
class DownloadFolder(Folder):
    data: str = ""  # DIR/tfrecord, or DIR itself for a bare img2dataset folder
    kind: ClassVar[str] = "download"

    def scan(self, threads: int | None = None) -> ShardScan:
        return scan(self.data, threads)


@dataclasses.dataclass(frozen=True)
class ReshardFolder(Folder):
    kind: ClassVar[str] = "resharded"

    @property
    def counts_path(self) -> str:
        return lfs.join(self.root, COUNTS)

    def counts(self) -> dict:
        return lfs.read_json(self.counts_path)

    def shard_path(self, name: str, split: str, index: int, num_shards: int) -> str:
        """Where the current layout puts a shard (readers take the template from counts.json instead)."""
        return lfs.join(self.root, names.shard_name(name, split, index, num_shards))

    def split_files(self, split: str, counts: dict | None = None, file_format: str | None = None) -> list[str]:
        """The shard files of ``split``, as counts.json's template names them (either layout); with
        ``file_format``, that format's copies (``reshard --format both``: ``alternative_templates``)."""
        info = (counts or self.counts())["splits"][split]
        templates = names.split_templates(info)
        template = templates.get(file_format, "") if file_format else info["filename_template"]
        return [lfs.join(self.root, names.format_template(template, i, int(info["num_shards"])))
                for i in range(int(info["num_shards"]))] if template else []

    def file_formats(self, split: str, counts: dict | None = None) -> list[str]:
        """The file formats ``split``'s shards are stored in, the primary first."""
        return list(names.split_templates((counts or self.counts())["splits"][split]))


@dataclasses.dataclass(frozen=True)
class TfdsFolder(Folder):
    kind: ClassVar[str] = "tfds"

    @property
    def info_path(self) -> str:
        return lfs.join(self.root, DATASET_INFO)


def _parent(path: str) -> str:
    return posixpath.dirname(path) if "://" in path else os.path.dirname(path)


def download_folder(path: str) -> DownloadFolder:
    """``DIR`` (data in ``DIR/tfrecord``) or the TFRecord folder itself (root: its parent when that has a
    manifest, else itself)."""
    path = str(path).rstrip("/") or "/"
    sub = lfs.join(path, "tfrecord")
    if lfs.exists(sub):
        return DownloadFolder(root=path, data=sub)
    parent = _parent(path)
    if posixpath.basename(path) == "tfrecord" and lfs.exists(lfs.join(parent, MANIFEST)):
        return DownloadFolder(root=parent, data=path)
    return DownloadFolder(root=path, data=path)


def detect(path: str, kinds: tuple[str, ...] = ("tfds", "resharded", "download")) -> Folder:
    """The kind of folder at ``path`` (one of ``kinds``); a :class:`UsageError` naming what it expected otherwise."""
    path = str(path).rstrip("/") or "/"
    if not lfs.exists(path):
        raise UsageError(f"no such folder: {path}", where="DIR", fix="pass a download, resharded or TFDS folder")
    j = lambda *p: lfs.join(path, *p)  # noqa: E731
    if "tfds" in kinds and lfs.exists(j(DATASET_INFO)):
        return TfdsFolder(root=path)
    if "resharded" in kinds and lfs.exists(j(COUNTS)):
        return ReshardFolder(root=path)
    if "download" in kinds:
        shard_globs = ("*_stats.json", "[0-9]*.tfrecord", "[0-9]*.parquet")
        if lfs.exists(j("tfrecord")) or any(lfs.glob(j(g)) for g in shard_globs):
            return download_folder(path)
    if "tfds" in kinds:
        infos = [i for i in lfs.glob(j("*", DATASET_INFO)) + lfs.glob(j("*", "*", DATASET_INFO))
                 if f"/{PREVIOUS}/" not in i]  # what `--restart` moved aside is never read back as input
        if len(infos) == 1:
            return TfdsFolder(root=infos[0].rsplit("/", 1)[0])
        if len(infos) > 1:
            raise UsageError(f"{path} holds {len(infos)} TFDS dataset versions", where="DIR",
                             fix="pass one of: " + ", ".join(i.rsplit("/", 1)[0] for i in infos[:10]))
    if "download" in kinds:
        _refuse_imageless_download(path)
    raise UsageError(f"{path} is not a dataset folder laionprep knows", where="DIR",
                     fix="pass a `laionprep download` folder (manifest.json + tfrecord/), an img2dataset TFRecord "
                         "folder (NNNNN.tfrecord + NNNNN_stats.json), a resharded folder (counts.json) or a TFDS "
                         "folder (dataset_info.json)")


def _refuse_imageless_download(path: str) -> None:
    """A download folder that holds no image yet (``download --dry-run``, or a run stopped before img2dataset):
    say so, rather than "not a dataset folder"."""
    try:
        m = lfs.read_json(lfs.join(path, MANIFEST))
    except (OSError, ValueError):
        return
    if not isinstance(m, dict) or m.get("stage") != "download":
        return
    status = m.get("status")
    if status == "dry-run":
        raise UsageError(f"{path} is a `laionprep download --dry-run` folder: the metadata is prefiltered "
                         "(manifest.json says what would be downloaded) but no image was downloaded yet",
                         where="DIR", fix="run the same `laionprep download` command without --dry-run (it reuses "
                                          "the prefilter's output), then validate the folder")
    raise UsageError(f"{path} is a `laionprep download` folder that holds no image yet (status {status!r})",
                     where="DIR", fix="run the same `laionprep download` command again to resume it")
