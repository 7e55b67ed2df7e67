"""``manifest.json``: ONE schema for every stage's output folder (download, reshard, build-tfds).

Top-level fields, the same for every stage (``FIELDS``)::

    format       "laionprep.manifest/1" (not "schema": reshard's record schema is stages.reshard.schema)
    stage        "download" | "reshard" | "build-tfds"
    dataset      dataset spec name, or null
    status       "complete", or where an unfinished run stopped ("fetching", "prefiltering", "running", ...)
    parameters   the parameters that decide the output (nothing that only changes speed or display)
    fingerprint  sha256 of the canonical JSON of ``parameters``: a re-run with another fingerprint is another output,
                 refused by ``stage.check_rerun`` unless ``--restart``
    inputs       what the stage read (metadata source, source folders...)
    versions     library versions
    accounting   rows_in = kept + dropped, plus the stage's own breakdown; ``balanced`` always present
    created      first write (kept across the rewrites of one run and across resumes)
    updated      last write
    stages       the stage-specific detail, one key per (sub-)stage: download writes metadata/prefilter/download,
                 reshard writes ``reshard``, build-tfds writes ``build-tfds``

Always written atomically (``fs.write_json``: temporary name + rename).  Accounting follows one invariant, checked
by :func:`check_accounting`: rows in = rows kept + rows dropped per named reason, at every stage.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import json
import platform
from typing import Any, Mapping

from laionprep import fs

FORMAT = "laionprep.manifest/1"
NAME = "manifest.json"
FIELDS = ("format", "stage", "dataset", "status", "parameters", "fingerprint", "inputs", "versions", "accounting",
          "created", "updated", "stages")

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


def canonical_json(obj: Any) -> str:
    """The one spelling of a value that its fingerprint hashes: sorted keys, no spaces, tuples as lists."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def fingerprint(parameters: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(parameters).encode()).hexdigest()


def path_in(folder: str) -> str:
    return fs.join(folder, NAME)


def read(path: str) -> dict:
    """The manifest at ``path`` (a manifest.json, or the folder holding one); ``{}`` when there is none."""
    if not str(path).endswith(".json"):
        path = path_in(path)
    return fs.read_json(path) if fs.exists(path) else {}


load = read  # the name readers used before the schema


def write(path: str, *, stage: str, dataset: str | None, status: str, parameters: Mapping[str, Any],
          inputs: Any, accounting: Mapping[str, Any] | None, stages: Mapping[str, Any]) -> dict:
    """Write the manifest of ``stage`` at ``path`` atomically; returns it.

    A rewrite by the same stage (a download updates its manifest after each sub-stage, a resume rewrites it) keeps
    ``created`` and merges ``stages``; a manifest of another stage at ``path`` is replaced.
    """
    old = read(path)
    same = old.get("stage") == stage and old.get("format") == FORMAT
    params = dict(parameters)
    data = {
        "format": FORMAT, "stage": stage, "dataset": dataset, "status": status, "parameters": params,
        "fingerprint": fingerprint(params), "inputs": inputs, "versions": library_versions(),
        "accounting": dict(accounting) if accounting is not None else {"balanced": None},
        "created": old.get("created") if same and old.get("created") else now(), "updated": now(),
        "stages": {**((old.get("stages") or {}) if same else {}), **stages},
    }
    fs.write_json(path, data)
    return data


def detail(m: Mapping[str, Any], stage: str | None = None) -> dict:
    """The stage-specific detail of manifest ``m`` (``m["stages"][stage]``, default its own stage)."""
    return (m.get("stages") or {}).get(stage or m.get("stage") or "", {})


def accounting(rows_in: int, kept: int, dropped: Mapping[str, int], **breakdown: int) -> dict:
    """The accounting record every manifest carries: ``rows_in``, ``kept``, ``dropped`` (their sum over reasons),
    the stage's own ``breakdown`` fields, and ``balanced`` (rows_in == kept + dropped)."""
    n_dropped = sum(dropped.values())
    return {**breakdown, "rows_in": rows_in, "kept": kept, "dropped": n_dropped,
            "balanced": rows_in == kept + n_dropped}


def check_accounting(rows_in: int, kept: int, dropped: Mapping[str, int], *, stage: str, **breakdown: int) -> dict:
    """Raise if rows in != kept + sum(dropped): a stage that loses rows silently is a bug, never a warning.
    Returns :func:`accounting`'s record for the manifest."""
    acc = accounting(rows_in, kept, dropped, **breakdown)
    if not acc["balanced"]:
        raise AssertionError(
            f"{stage}: accounting broken: {rows_in} rows in, {kept} kept + {acc['dropped']} dropped "
            f"({dict(dropped)}) = {kept + acc['dropped']}"
        )
    return acc


# Field metadata of a config dataclass: RUN_ONLY fields change how a stage runs (processes, runner, where the output
# goes), never what it writes; they are left out of ``parameters`` and its fingerprint.
RUN_ONLY = {"output": False}


def parameters_of(cfg: Any) -> tuple[dict, dict]:
    """(parameters, settings) of a config dataclass: the fields that decide the output, and the RUN_ONLY rest
    (nested dataclasses are split the same way, under their field's name)."""
    params: dict = {}
    settings: dict = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            p, s = parameters_of(value)
            params[f.name] = p
            if s:
                settings[f.name] = s
        elif f.metadata.get("output", True):
            params[f.name] = plain(value)
        else:
            settings[f.name] = plain(value)
    return params, settings


def plain(value: Any) -> Any:
    """``value`` as the manifest reads it back (tuples -> lists, keys as strings)."""
    return json.loads(canonical_json(value))
