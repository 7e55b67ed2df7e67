"""The one place the files of a finished download shard are replaced (``laionprep remove``), atomically per shard.

``DIR/_removals/<id>/`` (one folder per list, ``id`` = the first 16 hex digits of its sha256) holds ``pending/``
(a shard's new files before their rename), ``shards/NNNNN.json`` (a shard's plan: written once every pending file
of that shard is complete; the commit point) and ``audit.json`` (the list, applied whole).  The pending files are
renamed over the shard's own in ``ORDER``, the stats file (the completion marker) last.  :func:`finish_pending`
completes what a killed run left half done (roll forward) and deletes pending files that never got a plan;
``remove`` and ``download`` call it before they look at the shards.

:func:`rewrite` replaces one shard without some of its rows (``remove``); :func:`settle` does the same for a shard
the download fetched again, whose tombstone rows (``folders.tombstone``: rows a list removed, refused by the
fetcher) it takes out exactly as ``remove`` did, so the shard equals the removed one.  A shard that already has a
plan is re-planned in two writes: the plan marked ``settling`` first (its pending files are then deleted, not
rolled forward, should the run die), then the plan itself once the pending files are complete.  It imports
nothing above ``folders``.
"""
from __future__ import annotations

import dataclasses
import datetime
import io
import os
import posixpath
import re
import signal

from laionprep import fs as lfs
from laionprep.errors import DataError
from laionprep.folders import tombstone

WORK = "_removals"
# renamed in this order: the stats file (img2dataset's and every stage's completion marker) last
ORDER = (".tfrecord", ".parquet", "_stats.json")
# in a shard parquet's key-value metadata: how many rows `laionprep remove` took out of it (all lists together);
# validate/consistency.py spells it too (validate does not import the replacement code)
REMOVED_KEY = b"laionprep.removed_by_list"
# tests only: "SHARD:STEP" makes the process SIGKILL itself at that point (steps in kill_point's callers)
KILL_ENV = "LAIONPREP_TEST_REMOVE_KILL_AT"


def removed_rows(schema) -> int:
    """The rows ``laionprep remove`` took out of the shard whose parquet has ``schema`` (0: none)."""
    return int((schema.metadata or {}).get(REMOVED_KEY, b"0"))


def kill_point(sid: int | str, step: str) -> None:
    if os.environ.get(KILL_ENV) == f"{sid}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        planned = {sid: p for sid, p in plans(w).items() if not p.get("settling")}  # settling: not committed
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


# ------------------------------------------------------------------------------------------------ one shard
def rewrite(w: Work, sid: int, table, mask, by: str) -> dict:
    """Replace shard ``sid`` (``table``: its parquet; ``mask``: the rows to remove) by its other rows: the new
    files in pending/, then the plan (the commit point), then the renames.  Returns the plan.  A shard that has a
    plan of this list already (a shard fetched again: :func:`settle`) keeps that plan's ``images`` and ``when``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from laionprep.tfrecord import Example, RecordWriter, read_records

    keys = [k for k, m in zip(table.column("key").to_pylist(), mask) if m]
    rows = [r for r, m in zip(table.select(["status", "error_message"]).to_pylist(), mask) if m]
    n_success = sum(r["status"] == "success" for r in rows)
    old = lfs.read_json(w.plan(sid)) if lfs.exists(w.plan(sid)) else None
    if old is not None:  # its pending files are not committed until the plan is written again
        lfs.write_json(w.plan(sid), {**old, "settling": True})
        kill_point(sid, "settling")
    lfs.makedirs(lfs.join(w.folder, "pending"))
    stats = lfs.read_json(w.final(sid, "_stats.json"))
    if n_success:  # the tfrecord only changes when a listed row is an image
        gone = set(keys)
        kept_records = dropped_records = 0
        with RecordWriter(w.pending(sid, ".tfrecord")) as out:
            for data in read_records(w.final(sid, ".tfrecord")):
                feat = Example.FromString(data).features.feature.get("key")
                key = feat.bytes_list.value[0].decode() if feat is not None and feat.bytes_list.value else None
                if key in gone:
                    dropped_records += 1
                    continue
                out.write(data)
                kept_records += 1
        if dropped_records != n_success or kept_records + dropped_records != int(stats.get("successes", 0)):
            raise DataError(f"shard {sid:05d}: its tfrecord ({kept_records + dropped_records} records, "
                            f"{dropped_records} of the {n_success} listed images) does not match its parquet and "
                            f"_stats.json ({stats.get('successes')} successes)", where=w.final(sid, ".tfrecord"),
                            fix="run `laionprep validate DIR --quarantine`, resume the download, then remove again")
    kept = table.filter(pa.array(~mask))
    meta = dict(table.schema.metadata or {})
    meta[REMOVED_KEY] = str(removed_rows(table.schema) + len(keys)).encode()
    kept = kept.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(kept, buf)
    lfs.atomic_write_bytes(w.pending(sid, ".parquet"), buf.getvalue())
    stats["successes"] = int(stats.get("successes", 0)) - n_success
    stats["count"] = int(stats.get("count", len(table))) - len(keys)
    counter = stats.get("status_dict") if isinstance(stats.get("status_dict"), dict) else {}
    for r in rows:  # img2dataset counts its failures under the status names, and each message in status_dict
        st = r["status"]
        if st != "success" and isinstance(stats.get(st), int):
            stats[st] -= 1
        name = "success" if st == "success" else r["error_message"]
        if isinstance(counter.get(name), int):
            counter[name] -= 1
            if counter[name] <= 0:
                del counter[name]
    stats["removed_by_list"] = int(stats.get("removed_by_list", 0)) + len(keys)
    lfs.write_json(w.pending(sid, "_stats.json"), stats)
    kill_point(sid, "pending")
    plan = {"shard": sid, "by": by, "keys": sorted(keys), "rows": len(keys), "images": n_success, "when": now()}
    if old is not None:
        plan.update(by=old.get("by", by), images=old.get("images", n_success), when=old.get("when", plan["when"]))
    lfs.write_json(w.plan(sid), plan)  # the commit point: from here on a re-run completes the renames
    kill_point(sid, "planned")
    for s in ORDER:
        if lfs.exists(w.pending(sid, s)):
            lfs.rename(w.pending(sid, s), w.final(sid, s))
        kill_point(sid, "renamed" + s)
    return plan


def settle(root: str, data: str, shard_ids) -> list[int]:
    """Take the tombstone rows out of the finished shards ``shard_ids`` (fetched again after a ``remove``; the
    download found rows refused as :data:`tombstone.REASON` in them), one :func:`rewrite` per list they belong to.
    Returns the shards rewritten."""
    import numpy as np
    import pyarrow.parquet as pq

    done = []
    for sid in sorted(shard_ids):
        path = lfs.join(data, f"{sid:05d}.parquet")
        while True:  # one list at a time: each rewrite shortens the shard
            with lfs.open_file(path) as f:
                table = pq.read_table(f)
            idents = np.array([tombstone.ident_of(u) for u in table["url"].to_pylist()], dtype=object)
            found = sorted({i for i in idents if i is not None})
            if not found:
                break
            rewrite(Work(root, data, found[0]), sid, table, idents == found[0], by="tombstone")
            done.append(sid)
    return sorted(set(done))
