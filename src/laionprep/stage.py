"""The stage runner every verb that writes a folder goes through (download, reshard, build-tfds).

``run(verb, folder, body, parameters=..., restart=...)`` holds the folder lock (``fs.exclusive_lock``), checks the
re-run rule (:func:`check_rerun`) before anything in the folder is touched, then calls ``body``, which does the
work and writes its manifest with :func:`write_manifest` (one schema, parameters + fingerprint, atomic; see
``manifest.py``), and returns a :class:`StageResult`, the one result type ``cli.py`` prints with
:func:`print_result`.

The re-run rule: a folder holds the output of ONE parameter record.  Running a stage again into a folder that holds
its manifest with the same fingerprint resumes (or finds the work done); anything else (other parameters, a
manifest without a fingerprint, another stage's manifest, files but no manifest) is refused with a
:class:`UsageError` (exit 2) naming what differs, before anything is written.  ``--restart`` moves the old outputs
to ``FOLDER/_previous/<UTC time>/`` (one rename per top-level entry, nothing deleted) and starts fresh.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Callable, Mapping, Sequence

from laionprep import fs as lfs
from laionprep import manifest as lmanifest
from laionprep.errors import UsageError
from laionprep.folders.kinds import PREVIOUS  # FOLDER/_previous/<UTC time>/: what --restart moved aside

Rows = Sequence[tuple[str, Any]]
LOCK_NAME = ".laionprep.lock"
_KEEP = (LOCK_NAME, PREVIOUS)  # stay where they are on --restart, and do not make a folder "non-empty"


@dataclasses.dataclass(frozen=True)
class Table:
    title: str
    rows: Rows
    columns: tuple[str, str] = ("", "")


@dataclasses.dataclass(frozen=True)
class StageResult:
    """What a stage hands back: its manifest, the tables the CLI prints, a closing note and the exit code."""

    manifest: dict
    tables: tuple[Table, ...]
    note: str = ""
    exit_code: int = 0
    detail: Any = None  # the stage's own result object (e.g. build-tfds's RegisterResult), for library callers


def locked(folder: str | None, verb: str):
    """The one lock path: ``folder/.laionprep.lock`` (local folders), or nothing when there is no folder."""
    if folder is None:
        return contextlib.nullcontext()
    return lfs.exclusive_lock(folder, f"laionprep {verb}")


def run(verb: str, folder: str | None, body: Callable[[], StageResult], *,
        parameters: Mapping[str, Any] | None = None, restart: bool = False, flag: str = "--output",
        replan: Replan | None = None) -> StageResult:
    """``body()`` under the folder lock, after :func:`check_rerun` (when ``parameters`` are given)."""
    with locked(folder, verb):
        if folder is not None and parameters is not None:
            check_rerun(verb, folder, parameters, restart=restart, flag=flag, replan=replan)
        return body()


# A stage's answer to "can this folder, made with other parameters, be re-planned so that the result equals a fresh
# run with the new ones?": called with (folder, old manifest, new parameters); a note to print when it can, else None.
Replan = Callable[[str, dict, Mapping[str, Any]], "str | None"]


# ------------------------------------------------------------------------------------------------------- re-runs
def check_rerun(verb: str, folder: str, parameters: Mapping[str, Any], *, restart: bool = False,
                flag: str = "--output", log: Callable[[str], None] = print, replan: Replan | None = None) -> str | None:
    """The re-run rule for stage ``verb`` writing ``folder`` with ``parameters`` (call it under the folder lock,
    before touching the folder).  Returns where ``restart`` moved the old outputs (None when nothing was moved);
    raises :class:`UsageError` when the folder holds something else and ``restart`` is not set."""
    entries = _entries(folder)
    if not entries:
        return None
    problem = _mismatch(verb, folder, entries, parameters)
    if restart:
        return move_to_previous(verb, folder, entries, log=log)
    if problem and replan is not None:
        old = _readable_manifest(folder)
        note = replan(folder, old, parameters) if old.get("stage") == verb and old.get("fingerprint") else None
        if note:
            log(f"laionprep {verb}: {note}")
            return None
    if problem:
        raise UsageError(problem, where=folder,
                         fix=f"write to another folder ({flag} elsewhere), or pass --restart to move the old outputs "
                             f"to {lfs.join(folder, PREVIOUS)}/<UTC time>/ and start over")
    return None


def _mismatch(verb: str, folder: str, entries: list[str], parameters: Mapping[str, Any]) -> str | None:
    """Why ``folder`` is not this run's own (resumable) output, or None when it is."""
    try:
        m = lmanifest.read(folder)
    except (ValueError, UnicodeDecodeError) as e:
        return f"{lmanifest.path_in(folder)} cannot be read ({e}): the folder's parameters are unknown"
    if not m:
        shown = ", ".join(entries[:8]) + (f" and {len(entries) - 8} more" if len(entries) > 8 else "")
        return f"the folder is not empty ({shown}) but has no {lmanifest.NAME}: it is not a `laionprep {verb}` output"
    if m.get("stage") != verb:
        return f"the folder holds the output of `laionprep {m.get('stage') or 'unknown'}`, not of `laionprep {verb}`"
    if not m.get("fingerprint"):
        return ("its manifest has no parameter fingerprint (written by an older laionprep): whether its outputs match "
                "these parameters is unknown")
    if m["fingerprint"] == lmanifest.fingerprint(parameters):
        return None
    lines = changed_parameters(m.get("parameters") or {}, parameters) or ["(the fingerprint differs)"]
    return (f"the folder holds a `laionprep {verb}` output made with other parameters:\n    "
            + "\n    ".join(lines))


def _readable_manifest(folder: str) -> dict:
    try:
        return lmanifest.read(folder)
    except (ValueError, UnicodeDecodeError):
        return {}


def changed_parameters(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``dotted.path: old -> new`` for each parameter that differs; ``(not set: the default)`` for one left out
    (some parameters are omitted at their default so that folders made before they existed keep their fingerprint)."""
    old, new = lmanifest.plain(old), lmanifest.plain(new)
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k, _ABSENT), new.get(k, _ABSENT)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_parameters(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {_show(a)} -> {_show(b)}")
    return out


_ABSENT = object()


def _show(v: Any) -> str:
    return "(not set: the default)" if v is _ABSENT else lmanifest.canonical_json(v)


def _entries(folder: str) -> list[str]:
    """Top-level names in ``folder`` except the lock file and ``_previous/`` (none when it does not exist)."""
    fsys, path = lfs.get_fs(folder)
    try:
        found = fsys.ls(path, detail=False)
    except FileNotFoundError:
        return []
    names = {p.rstrip("/").rsplit("/", 1)[-1] for p in found if p.rstrip("/") != path.rstrip("/")}
    return sorted(n for n in names if n and n not in _KEEP)


def move_to_previous(verb: str, folder: str, entries: list[str] | None = None, *,
                     log: Callable[[str], None] = print) -> str | None:
    """Move the top-level entries of ``folder`` (all but the lock file and ``_previous/``) into
    ``folder/_previous/<UTC time, e.g. 20261202T171502Z>/``, one rename each; returns that folder."""
    entries = _entries(folder) if entries is None else entries
    if not entries:
        return None
    fsys, path = lfs.get_fs(folder)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest, n = f"{path.rstrip('/')}/{PREVIOUS}/{stamp}", 1
    while fsys.exists(dest):  # two restarts within one second
        n += 1
        dest = f"{path.rstrip('/')}/{PREVIOUS}/{stamp}-{n}"
    fsys.makedirs(dest, exist_ok=True)
    for name in entries:
        src = f"{path.rstrip('/')}/{name}"
        fsys.mv(src, f"{dest}/{name}", recursive=fsys.isdir(src))
    shown = dest if lfs.is_local(folder) else lfs.join(folder, PREVIOUS, dest.rsplit("/", 1)[-1])
    log(f"laionprep {verb}: --restart: moved the old outputs ({len(entries)} entries) to {shown}/")
    return shown


# ------------------------------------------------------------------------------------------------------ manifest
def write_manifest(folder: str, *, stage: str, dataset: str | None, status: str, parameters: Mapping[str, Any],
                   inputs: Any, accounting: Mapping[str, Any] | None, stages: Mapping[str, Any]) -> dict:
    return lmanifest.write(lmanifest.path_in(folder), stage=stage, dataset=dataset, status=status,
                           parameters=parameters, inputs=inputs, accounting=accounting, stages=stages)


def print_result(res: StageResult) -> int:
    from laionprep.progress import print_table

    for t in res.tables:
        print_table(t.title, list(t.rows), list(t.columns))
    if res.note:
        print(res.note)
    return res.exit_code
