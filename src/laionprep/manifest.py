"""``manifest.json``: what a stage was asked to do, with which library versions, and what it counted.

The manifest is read-modify-written by each stage of a run (one section per stage) and always written atomically.
Counts follow one invariant, checked by :func:`check_accounting`: rows in = rows kept + rows dropped per named
reason, at every stage.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
from typing import Any, Mapping

from laionprep import fs

_LIBRARIES = (
    "laionprep", "img2dataset", "tensorflow", "tensorflow-datasets", "apache-beam", "pyarrow", "jax", "flax",
    "optax", "orbax-checkpoint",
)


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def load(path: str) -> dict:
    return fs.read_json(path) if fs.exists(path) else {}


def update(path: str, **sections: Any) -> dict:
    """Merge top-level sections into the manifest at ``path`` and write it atomically."""
    data = load(path)
    data.update(sections)
    data["updated"] = now()
    data["versions"] = library_versions()
    fs.write_json(path, data)
    return data


def check_accounting(rows_in: int, kept: int, dropped: Mapping[str, int], *, stage: str) -> None:
    """Raise if rows in != kept + sum(dropped): a stage that loses rows silently is a bug, never a warning."""
    total = kept + sum(dropped.values())
    if total != rows_in:
        raise AssertionError(
            f"{stage}: accounting broken: {rows_in} rows in, {kept} kept + {sum(dropped.values())} dropped "
            f"({dict(dropped)}) = {total}"
        )
