"""Feature names per consumer: ``reshard --feature-names NEW=OLD,...`` (or a preset) renames keys of the records.

A zero-copy registration cannot rename: TFDS parses each ``tf.train.Example`` by the stored key names.  So reshard
writes the renamed keys, records ``{new: old}`` in its manifest (``stages.reshard.feature_names``), and the readers
that know a key by its img2dataset name (validate's image/caption checks, build-tfds' feature roles) look the
original name up here.  big_vision's bundled configs (LiT, CLIPPO) read ``image`` and ``texts`` and, by default,
skip decoding ``image``: the ``big_vision`` preset gives them exactly that.
"""
from __future__ import annotations

import re

from laionprep.errors import UsageError

PRESETS = {"big_vision": (("image", "jpg"), ("texts", "txt"))}
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
FIXED = ("key",)  # the split hash, duplicate checks and FLIP's key cast need it under its own name


def parse(value: str | None) -> tuple[tuple[str, str], ...]:
    """``big_vision`` or ``image=jpg,texts=txt`` -> (("image", "jpg"), ("texts", "txt")) (new, old)."""
    if not value:
        return ()
    if value.strip() in PRESETS:
        return PRESETS[value.strip()]
    out = []
    for item in (x.strip() for x in value.split(",") if x.strip()):
        new, eq, old = (x.strip() for x in item.partition("="))
        if not (eq and new and old):
            raise UsageError(f"--feature-names {item!r} is not NEW=OLD", where="--feature-names",
                             fix="write e.g. --feature-names image=jpg,texts=txt, or a preset: " + ", ".join(PRESETS))
        out.append((new, old))
    return tuple(out)


def check(pairs, schema) -> None:
    """Refuse a renaming that would lose or merge keys (``schema``: the record keys before renaming)."""
    news, olds = [n for n, _ in pairs], [o for _, o in pairs]
    for new, old in pairs:
        if not NAME_RE.match(new):
            raise UsageError(f"--feature-names: {new!r} is not a valid feature name", where="--feature-names",
                             fix="use lower-case letters, digits and underscores, starting with a letter")
        if old in FIXED:
            raise UsageError(f"--feature-names: {old!r} keeps its name (the split rule and FLIP's reader use it)",
                             where="--feature-names", fix="rename other keys only")
        if schema and old not in schema:
            raise UsageError(f"--feature-names {new}={old}: the records have no key {old!r}", where="--feature-names",
                             fix="keys found: " + ", ".join(schema))
    if len(set(news)) != len(news) or len(set(olds)) != len(olds):
        raise UsageError("--feature-names names a key twice", where="--feature-names")
    clash = [n for n in news if n in (schema or ()) and n not in olds]
    if clash:
        raise UsageError(f"--feature-names: the records already have a key {clash[0]!r}", where="--feature-names",
                         fix=f"drop it with --drop-columns {clash[0]}, or choose another name")


def of_manifest(manifest: dict | None) -> dict[str, str]:
    """``{new: old}`` of a reshard output's renamed keys ({} when none were renamed)."""
    rs = ((manifest or {}).get("stages") or {}).get("reshard") or {}
    return dict(rs.get("feature_names") or {})


def renamer(mapping: dict[str, str]):
    """``name(img2dataset key) -> the key it is stored under``."""
    back = {old: new for new, old in mapping.items()}
    return lambda key: back.get(key, key)
