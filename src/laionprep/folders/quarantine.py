"""The one place a download's damaged shards are moved aside, so that a resumed download fetches them again.

``DIR/_quarantine/<UTC time>/`` (DIR = the download folder holding ``manifest.json``, never the image folder
itself, whose ``*.json`` img2dataset's incremental mode reads as finished-shard markers) receives the files of each
shard that exist, ``NNNNN_stats.json`` first (without it the shard is "not done" for img2dataset and every laionprep
stage), and ``why.json``: who moved them and, per shard, the problem kinds, a message and where each file went.
Nothing is deleted: to undo, move the files back.  ``validate --quarantine`` and the download's resume check both
write here, in this format.
"""
from __future__ import annotations

import datetime as _dt

from laionprep import fs as lfs
from laionprep.folders.shardscan import SUFFIXES

DIRNAME = "_quarantine"


def root_of(download_root: str) -> str:
    return lfs.join(download_root, DIRNAME)


def _order(path: str) -> int:
    return next((i for i, s in enumerate(SUFFIXES) if path.endswith(s)), len(SUFFIXES))


def move_aside(qroot: str, data_folder: str, shards: dict[int, dict], *, by: str, note: str) -> list[dict]:
    """Move the files of ``shards`` (``{shard id: {"files": [existing paths], "kinds": [...], "why": str}}``) to a
    new ``qroot/<UTC time>/``; returns one entry per shard (its fields + ``shard`` + ``moved_to``), as in why.json."""
    if not shards:
        return []
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = lfs.join(qroot, stamp)
    lfs.makedirs(dest)
    entries = []
    for sid in sorted(shards):
        info = dict(shards[sid])
        moved = []
        for src in sorted(info.pop("files"), key=_order):  # stats first: the shard is "not done" from then on
            dst = lfs.join(dest, src.replace("\\", "/").rsplit("/", 1)[-1])
            lfs.rename(src, dst)
            moved.append(dst)
        entries.append({"shard": sid, **info, "moved_to": moved})
    lfs.write_json(lfs.join(dest, "why.json"), {"by": by, "folder": data_folder, "note": note, "shards": entries})
    return entries
