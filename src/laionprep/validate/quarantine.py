"""``--quarantine``: move bad shards of a download out of the way, so a resumed download fetches them again.

A shard ``NNNNN`` of a download is its ``NNNNN_stats.json`` (moved first: without it, img2dataset's incremental
mode and every laionprep stage treat the shard as not done), ``NNNNN.tfrecord`` and ``NNNNN.parquet``.  They go to
``DIR/_quarantine/<UTC time>/`` (DIR = the download folder holding ``manifest.json``, never the image folder
itself, whose ``*.json`` img2dataset reads), with ``why.json`` saying which problems each shard had.  Nothing is
deleted: to undo, move the files back.
"""
from __future__ import annotations

import datetime as _dt

from laionprep import fs as lfs


def quarantine_root(lay) -> str:
    if lfs.exists(lfs.join(lay.root, "manifest.json")):
        return lfs.join(lay.root, "_quarantine")
    return lfs.join(lay.data_folder, "_quarantine")  # a foreign img2dataset folder: a subfolder is never globbed


def quarantine(lay, rep, bad_units: dict[int, set[str]]) -> list[dict]:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = lfs.join(quarantine_root(lay), stamp)
    lfs.makedirs(dest)
    fsys, _ = lfs.get_fs(dest)
    moved = []
    for ui in sorted(bad_units):
        unit = lay.units[ui]
        files = []
        for src in (unit.stats, unit.path, unit.parquet):  # stats first: the shard is "not done" from then on
            if src and lfs.exists(src):
                dst = lfs.join(dest, src.replace("\\", "/").rsplit("/", 1)[-1])
                fsys.mv(lfs.get_fs(src)[1], lfs.get_fs(dst)[1])
                files.append(dst)
        examples = [p.to_dict() for p in rep.problems if p.unit == ui][:20]
        moved.append({"shard": unit.shard_id, "file": unit.label, "kinds": sorted(bad_units[ui]),
                      "moved_to": files, "examples": examples})
    lfs.write_json(lfs.join(dest, "why.json"), {
        "validated": rep.folder,
        "note": "these shards failed `laionprep validate`; a resumed `laionprep download` (the same command) fetches "
                "them again. Nothing was deleted: move the files back into tfrecord/ to undo.",
        "shards": moved,
    })
    return moved
