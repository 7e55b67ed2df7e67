"""Options declared once: a config dataclass field carries its command-line flag, and the CLI follows from it.

``option("--min-side", int, "keep images whose short side >= this")`` is a dataclass field whose metadata holds
the flag, its argparse settings, an optional ``parse`` (command-line text -> the field's value) and whether the
field decides the output (``output=False``: run-only, see ``manifest.parameters_of``).  ``add_arguments`` adds the
flags of a config class to a parser (argument groups and mutually exclusive groups named in the metadata),
``from_args`` builds the config from the parsed namespace, ``flag_of`` names a field's flag in error messages.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

_MISSING = dataclasses.MISSING


def option(flag: str, type: Callable | None = None, help: str = "", *, default: Any = None, cli_default: Any = _MISSING,
           parse: Callable[[Any], Any] | None = None, group: str | None = None, exclusive: str | None = None,
           output: bool = True, **argparse_kw: Any):
    """A dataclass field with its flag (or positional name). ``cli_default``: the flag's default when it differs
    from the field's; ``default=dataclasses.MISSING``: a required field."""
    if cli_default is _MISSING:
        cli_default = None if default is _MISSING else default
    meta = {"flag": flag, "type": type, "help": help, "parse": parse, "group": group, "exclusive": exclusive,
            "output": output, "cli_default": cli_default, "argparse": argparse_kw}
    return dataclasses.field(default=default, metadata=meta)  # default MISSING: a required field


def _flagged(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "flag" in f.metadata]


def add_arguments(parser: argparse.ArgumentParser, cls, *, groups: dict[str, str] | None = None,
                  exclude: tuple[str, ...] = ()) -> None:
    """Add the flags of ``cls``; ``groups`` maps a field's group name to its title (created in that order)."""
    made: dict[str, Any] = {name: parser.add_argument_group(title) for name, title in (groups or {}).items()}
    exclusive: dict[tuple, Any] = {}
    for f in _flagged(cls):
        if f.name in exclude:
            continue
        m = f.metadata
        target = made[m["group"]] if m["group"] else parser
        if m["exclusive"]:
            key = (m["group"], m["exclusive"])
            if key not in exclusive:
                exclusive[key] = target.add_mutually_exclusive_group()
            target = exclusive[key]
        kw = dict(m["argparse"])
        if m["type"] is bool:
            kw.setdefault("action", "store_true")
        elif m["type"] is not None:
            kw["type"] = m["type"]
        if m["flag"].startswith("-"):
            kw.update(dest=f.name, default=m["cli_default"])
        target.add_argument(m["flag"], help=m["help"], **kw)  # a positional's name is its field's


def from_args(cls, args: argparse.Namespace, **given: Any):
    """``cls`` from the parsed flags of its fields (each through its ``parse``), plus ``given`` fields."""
    values = {}
    for f in _flagged(cls):
        if f.name in given or not hasattr(args, f.name):
            continue
        v = getattr(args, f.name)
        values[f.name] = f.metadata["parse"](v) if f.metadata["parse"] else v
    return cls(**values, **given)


def flags(cls) -> list[str]:
    """The command-line flags (not positionals) of ``cls``."""
    return [f.metadata["flag"] for f in _flagged(cls) if f.metadata["flag"].startswith("-")]


def flag_of(cls, name: str) -> str:
    return next(f.metadata["flag"] for f in _flagged(cls) if f.name == name)


def csv(value: str | None) -> tuple[str, ...]:
    """``a, b,c`` -> ("a", "b", "c"); empty or None -> ()."""
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1000, "KIB": 1 << 10, "M": 1 << 20, "MB": 10**6, "MIB": 1 << 20,
          "G": 1 << 30, "GB": 10**9, "GIB": 1 << 30, "T": 1 << 40, "TB": 10**12, "TIB": 1 << 40}


def size(value) -> int:
    """A byte count: ``2GiB``, ``512MiB``, ``1.5G``, ``3000000`` (an int passes through)."""
    import re

    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
    unit = m and m.group(2).upper()
    if not m or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {value!r} (e.g. 2GiB, 512MiB, 3000000)")
    return int(float(m.group(1)) * _UNITS[unit])


def did_you_mean(flag: str, known) -> str | None:
    """The known flag closest to a mistyped ``flag`` (``-`` and ``_`` count alike), or None."""
    import difflib

    norm = {k.replace("_", "-"): k for k in known if k.startswith("--")}
    flag = flag.replace("_", "-")
    longer = [k for k in norm if k.startswith(flag) and len(flag) > 3]  # an abbreviation (refused: allow_abbrev)
    match = longer or difflib.get_close_matches(flag, list(norm), n=1, cutoff=0.75)
    return norm[match[0]] if match else None
