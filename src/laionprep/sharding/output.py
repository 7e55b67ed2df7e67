"""The state of a reshard's output folder OUT: is this exact job already there, make OUT ready for it (refuse to
clobber another complete output, clear stale files), and read what the workers reported.
"""
from __future__ import annotations

import json
import os

from laionprep import fs as lfs
from laionprep import manifest as lmanifest
from laionprep.errors import DataError, UsageError
from laionprep.folders import names
from laionprep.sharding import worker as lworker

COUNTS_NAME = "counts.json"
MANIFEST_NAME = "manifest.json"


def _outputs(job: lworker.Job) -> list[str]:
    return [job.shard_url(s, i, f) for s in job.splits for i in range(job.num_shards) for f in job.formats]


def complete_result(job: lworker.Job) -> dict | None:
    """The existing manifest when OUT already holds this exact job, complete and intact."""
    counts_url = lfs.join(job.output, COUNTS_NAME)
    man_url = lfs.join(job.output, MANIFEST_NAME)
    if not (lfs.exists(counts_url) and lfs.exists(man_url)):
        return None
    try:
        man = lfs.read_json(man_url)
    except Exception:
        return None
    rs = lmanifest.detail(man, "reshard")
    if rs.get("plan", {}).get("hash") != job.plan_hash:
        return None
    fsys, _ = lfs.get_fs(job.output)
    if not all(lworker.entry_intact(fsys, job.output, sh) for shards in rs.get("shards", {}).values()
               for sh in shards):
        return None
    return man


def prepare_output(job: lworker.Job) -> None:
    """Make OUT ready for this job: refuse to clobber another complete output, clear stale and temporary files."""
    fsys, root = lfs.get_fs(job.output)
    counts_url = lfs.join(job.output, COUNTS_NAME)
    if lfs.exists(counts_url):
        try:
            man = lfs.read_json(lfs.join(job.output, MANIFEST_NAME))
            same_plan = lmanifest.detail(man, "reshard")["plan"]["hash"] == job.plan_hash
        except Exception:
            same_plan = False
        if not same_plan:  # same plan: the output was damaged since; repair it.  Other parameters never get here
            # (stage.check_rerun refused them); the same parameters over changed inputs (a resumed download) do
            raise UsageError("the output folder already holds a complete reshard with the same parameters but of "
                             "other input shards (the sources changed since) or by another laionprep version",
                             where=job.output,
                             fix="pass --restart to move it to OUT/_previous/<UTC time>/ and reshard again, or "
                                 "choose another --output")
        fsys.rm(lfs.get_fs(counts_url)[1])
    lfs.makedirs(job.output)
    lfs.makedirs(lfs.join(job.output, lworker.WORK_DIR))
    wanted = {lfs.get_fs(u)[1] for u in _outputs(job)}
    own = {lfs.get_fs(job.split_folder(s))[1] for s in job.splits}
    # OUT (the old flat layout's shards), each split's folder and the split folders of an earlier output
    for folder in shard_folders(job, fsys.isdir):
        for entry in _ls(fsys, folder):
            base = os.path.basename(entry.rstrip("/"))
            if lfs.TMP_MARK in base or (names.RESHARD_FILE_RE.match(base) and entry.rstrip("/") not in wanted):
                fsys.rm(entry)
        if folder != root and folder not in own and lfs.is_local(job.output) and not _ls(fsys, folder):
            os.rmdir(folder)  # a split of an earlier output that this job does not write
    for s in job.splits:
        lfs.makedirs(job.split_folder(s))
    work = lfs.get_fs(lfs.join(job.output, lworker.WORK_DIR))[1]
    for entry in _ls(fsys, work):
        base = os.path.basename(entry)
        if lfs.TMP_MARK in base or base.startswith("error-"):  # errors of an earlier attempt are re-found
            fsys.rm(entry)
            continue
        try:
            stale = json.loads(fsys.cat(entry)).get("plan_hash") != job.plan_hash
        except Exception:
            stale = True
        if stale:
            fsys.rm(entry)


def shard_folders(job: lworker.Job, isdir=None) -> list[str]:
    """Filesystem paths of the folders that hold a reshard's shard files: OUT and its split folders (with
    ``isdir``, also every other sub-folder of OUT but the work folder: an earlier output's splits)."""
    fsys, root = lfs.get_fs(job.output)
    subs = {lfs.get_fs(job.split_folder(s))[1] for s in job.splits}
    if isdir is not None:
        work = lfs.get_fs(lfs.join(job.output, lworker.WORK_DIR))[1]
        subs |= {e.rstrip("/") for e in _ls(fsys, root) if e.rstrip("/") != work and isdir(e)}
    return [root] + sorted(subs - {root})


def _ls(fsys, path: str) -> list[str]:
    """Names in a folder; none when it does not exist (object stores have no empty folders)."""
    try:
        return [e for e in fsys.ls(path, detail=False) if e.rstrip("/") != path.rstrip("/")]
    except FileNotFoundError:
        return []


def remove_tmp(fsys, folder: str) -> None:
    """Remove the temporary files (``lfs.TMP_MARK``) directly in ``folder``."""
    for entry in _ls(fsys, folder):
        if lfs.TMP_MARK in os.path.basename(entry):
            fsys.rm(entry)


def raise_task_errors(job: lworker.Job) -> None:
    """Raise the first problem a worker reported (a damaged input file...), with the number of output shards that
    failed; temporary files of the failed tasks are removed (re-running resumes from the finished shards)."""
    from laionprep import errors

    fsys, root = lfs.get_fs(job.output)
    work = lfs.get_fs(lfs.join(job.output, lworker.WORK_DIR))[1]
    found = sorted(e for e in _ls(fsys, work) if os.path.basename(e).startswith("error-"))
    reports = [r for r in (json.loads(fsys.cat(e)) for e in found) if r.get("plan_hash") == job.plan_hash]
    if not reports:
        return
    for folder in shard_folders(job):
        remove_tmp(fsys, folder)
    first = reports[0]
    cls = getattr(errors, first.get("type", ""), None)
    cls = cls if isinstance(cls, type) and issubclass(cls, errors.LaionprepError) else DataError
    others = (f" ({len(reports)} of {job.num_shards} output shards stopped on problems like this one; the other "
              "output shards are finished)") if len(reports) > 1 else ""
    raise cls(first["what"] + others, where=first.get("where"), fix=first.get("fix"))


def read_results(job: lworker.Job) -> list[dict]:
    fsys, _ = lfs.get_fs(job.output)
    paths = [lfs.get_fs(job.part_url(i))[1] for i in range(job.num_shards)]
    found = [p for p in paths if fsys.exists(p)]
    missing = [i for i, p in enumerate(paths) if p not in set(found)]
    if missing:
        raise DataError(f"the Beam job finished but {len(missing)} of {job.num_shards} output shards have no result "
                        f"(e.g. {missing[:5]})", where=lfs.join(job.output, lworker.WORK_DIR),
                        fix="re-run the same command: finished shards are reused")
    blobs = fsys.cat(found)
    results = [json.loads(blobs[p]) for p in found]
    for i, r in enumerate(results):
        if r.get("index") != i or r.get("plan_hash") != job.plan_hash:
            raise DataError(f"result of output shard {i} belongs to another job", where=job.part_url(i),
                            fix="another reshard is writing to the same output folder? run one at a time")
    return results
