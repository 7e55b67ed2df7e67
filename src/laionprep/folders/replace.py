"""The one place the files of a finished download shard are replaced (``laionprep remove``), atomically per shard.

``DIR/_removals/<id>/`` (one folder per list, ``id`` = the first 16 hex digits of its sha256) holds ``pending/``
(a shard's new files before their rename), ``shards/NNNNN.json`` (a shard's plan: written once every pending file
of that shard is complete; the commit point) and ``audit.json`` (the list, applied whole).  The pending files are
renamed over the shard's own in ``ORDER``, the stats file (the completion marker) last.  :func:`finish_pending`
completes what a killed run left half done (roll forward) and deletes pending files that never got a plan;
``remove`` and ``download`` call it before they look at the shards.  It imports nothing above ``folders``.
"""
from __future__ import annotations

import dataclasses
import posixpath
import re

from laionprep import fs as lfs

WORK = "_removals"
# renamed in this order: the stats file (img2dataset's and every stage's completion marker) last
ORDER = (".tfrecord", ".parquet", "_stats.json")


@dataclasses.dataclass(frozen=True)
class Work:
    """``DIR/_removals/<id>/``: pending/ (new shard files before their rename), shards/ (one plan per shard),
    audit.json (the finished list)."""

    root: str  # DIR
    data: str  # DIR/tfrecord
    ident: str

    @property
    def folder(self) -> str:
        return lfs.join(self.root, WORK, self.ident)

    def pending(self, sid: int, suffix: str) -> str:
        return lfs.join(self.folder, "pending", f"{sid:05d}{suffix}")

    def plan(self, sid: int) -> str:
        return lfs.join(self.folder, "shards", f"{sid:05d}.json")

    @property
    def audit(self) -> str:
        return lfs.join(self.folder, "audit.json")

    def final(self, sid: int, suffix: str) -> str:
        return lfs.join(self.data, f"{sid:05d}{suffix}")


def works(root: str, data: str) -> list[Work]:
    """The lists applied (or being applied) to download folder ``root`` (data: ``root``/tfrecord)."""
    base = lfs.join(root, WORK)
    return [Work(root, data, n) for n in sorted(lfs.listdir(base))] if lfs.exists(base) else []


def plans(w: Work) -> dict[int, dict]:
    d = lfs.join(w.folder, "shards")
    """``{shard: plan}`` of the shards list ``w`` rewrote (or is rewriting)."""
    out = {}
    for n in lfs.listdir(d) if lfs.exists(d) else []:
        if n.endswith(".json") and lfs.TMP_MARK not in n:
            out[int(n.split(".")[0])] = lfs.read_json(lfs.join(d, n))
    return out


def finish_pending(root: str, data: str) -> list[int]:
    """Complete the shard replacements a killed ``remove`` left half done (their plan exists: roll forward), and
    delete pending files without a plan.  Returns the shards completed.  Called by ``remove`` and ``download``
    before they look at the shards."""
    done = []
    for w in works(root, data):
        pend = lfs.join(w.folder, "pending")
        if not lfs.exists(pend):
            continue
        planned = plans(w)
        for n in sorted(lfs.listdir(pend)):
            if lfs.TMP_MARK in n or int(re.match(r"\d+", n).group()) not in planned:
                lfs.remove(lfs.join(pend, n))
        for sid in sorted(planned):
            left = [s for s in ORDER if lfs.exists(w.pending(sid, s))]
            for s in left:
                lfs.rename(w.pending(sid, s), w.final(sid, s))
            if left:
                done.append(sid)
    return done


def removed_shards(root: str) -> dict[int, list[str]]:
    """``{shard: [list names]}`` of every shard of download folder ``root`` a ``remove`` rewrote."""
    out: dict[int, list[str]] = {}
    for w in works(root, ""):
        name = list_name(w)
        for sid in plans(w):
            out.setdefault(sid, []).append(name)
    return out


def list_name(w: Work) -> str:
    """The list's file name (from its audit; its id until the audit is written)."""
    try:
        return posixpath.basename(lfs.read_json(w.audit)["list"])
    except (OSError, ValueError, KeyError):
        return w.ident


