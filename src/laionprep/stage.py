"""The stage runner every verb that writes a folder goes through (download, reshard, build-tfds).

``run(verb, folder, body)`` holds the folder lock (``fs.exclusive_lock``) around ``body``, which does the work and
writes its manifest with :func:`write_manifest` (one schema, parameters + fingerprint, atomic; see ``manifest.py``),
and returns a :class:`StageResult`, the one result type ``cli.py`` prints with :func:`print_result`.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Mapping, Sequence

from laionprep import fs as lfs
from laionprep import manifest as lmanifest

Rows = Sequence[tuple[str, Any]]


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


def run(verb: str, folder: str | None, body: Callable[[], StageResult]) -> StageResult:
    with locked(folder, verb):
        return body()


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
