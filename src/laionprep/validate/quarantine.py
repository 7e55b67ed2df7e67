"""``--quarantine``: move every download shard with a problem out of the way and mark the download incomplete, so
that the same ``laionprep download`` command fetches exactly those shards again.

A shard ``NNNNN`` is whatever of ``NNNNN_stats.json`` (moved first), ``NNNNN.tfrecord`` and ``NNNNN.parquet``
exists; the files go to ``DIR/_quarantine/<UTC time>/`` with ``why.json`` (:mod:`laionprep.folders.quarantine`,
the format the download's resume check writes too).  The manifest gets status ``incomplete`` and
``stages.quarantine`` (the moved shards and the missing ones), so build-tfds refuses the folder and reshard reads
only its complete shards until the download has fetched them.  Nothing is deleted: to undo, move the files back.
"""
from __future__ import annotations

from laionprep import fs as lfs
from laionprep import manifest as lmanifest
from laionprep.folders import quarantine as fq

BY = "laionprep validate --quarantine"
NOTE = ("these shards failed `laionprep validate`; the same `laionprep download` command fetches them again. Nothing "
        "was deleted: move the files back into tfrecord/ to undo.")


def quarantine_root(lay) -> str:
    if lfs.exists(lfs.join(lay.root, "manifest.json")):
        return fq.root_of(lay.root)
    return lfs.join(lay.data_folder, fq.DIRNAME)  # a foreign img2dataset folder: a subfolder is never globbed


def quarantine(lay, problems, bad: dict[int, set[str]]) -> list[dict]:
    """Move the shards ``bad`` (``{shard id: problem kinds}``); returns the why.json entries."""
    shards = {}
    for sid in sorted(bad):
        mine = [p for p in problems if p.shard == sid]
        shards[sid] = {"file": mine[0].file if mine else f"{sid:05d}", "files": lay.shard_files.get(sid, []),
                       "kinds": sorted(bad[sid]), "why": mine[0].message if mine else ", ".join(sorted(bad[sid])),
                       "examples": [p.to_dict() for p in mine[:20]]}
    return fq.move_aside(quarantine_root(lay), lay.data_folder, shards, by=BY, note=NOTE)


def mark_manifest(lay, moved: list[dict], missing: list[int]) -> bool:
    """Status ``incomplete`` and ``stages.quarantine`` in the download's manifest (shards listed before are kept);
    False when the folder has no download manifest."""
    path = lfs.join(lay.root, "manifest.json")
    m = lmanifest.read(path) if lfs.exists(path) else {}
    if m.get("stage") != "download":
        return False
    old = (m.get("stages") or {}).get("quarantine") or {}
    entries = {e["shard"]: e for e in old.get("shards", [])}
    for e in moved:
        entries[e["shard"]] = {k: e[k] for k in ("shard", "kinds", "why", "moved_to")}
    missing = sorted(set(old.get("missing", [])) | set(missing))
    status = "incomplete" if m.get("status") == "complete" else m.get("status")
    lmanifest.write(path, stage="download", dataset=m.get("dataset"), status=status,
                    parameters=m.get("parameters") or {}, inputs=m.get("inputs"), accounting=m.get("accounting"),
                    stages={"quarantine": {"by": BY, "shards": [entries[s] for s in sorted(entries)],
                                           "missing": missing}})
    return True
