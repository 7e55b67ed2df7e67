"""TFDS features for img2dataset / reshard records: chosen from the dataset spec, checked against the records.

Registration writes no record, so the features must describe exactly what the records already hold: ``jpg`` is a
``tfds.features.Image(encoding_format='jpeg')``, text columns (``txt``, ``key``, ``url``, ``NSFW``, ...) are
``Text``, sizes are int64 scalars and scores (``similarity``, ``punsafe``, ...) float32 scalars.  The role of each
key comes from :data:`KNOWN_ROLES` and the dataset spec's columns; a key neither knows is typed from the records.

:func:`check` surveys a sample of records and refuses a key whose protobuf type varies across records (img2dataset
writes a null as ``bytes b''`` even in a float column), is missing from some records, holds lists, or contradicts
the spec -- TFDS would fail (or silently mis-parse) on such records at training time.  ``laionprep reshard``
normalises them (one type per key, nulls replaced by ``datasets.SENTINELS``).

The ``tfds build`` builders rewrite records, so they use a fixed feature set per family
(:func:`builder_features`) and :func:`normalise` to turn img2dataset nulls into sentinels.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, Mapping

from laionprep.datasets import SENTINELS, DatasetSpec
from laionprep.errors import DataError

# role -> protobuf kind it must be stored as
ROLE_KIND = {"image": "bytes", "png": "bytes", "text": "bytes", "int": "int64", "float": "float"}
KNOWN_ROLES = {
    "jpg": "image", "png": "png",
    "txt": "text", "key": "text", "url": "text", "caption": "text", "status": "text", "error_message": "text",
    "exif": "text", "sha256": "text",
    "width": "int", "height": "int", "original_width": "int", "original_height": "int",
}
DESCRIPTIONS = {
    "jpg": "the image, JPEG-encoded (decoded by TFDS to uint8 HxWx3; skip decoding with tfds.decode.SkipDecoding())",
    "png": "the image, PNG-encoded",
    "txt": "the caption (alt text)",
    "key": "img2dataset key: shard number + index within the shard (unique within one download)",
    "url": "the image URL",
    "caption": "the caption as given in the metadata",
    "status": "img2dataset download status",
    "error_message": "img2dataset error message (empty on success)",
    "exif": "EXIF of the original image, JSON text",
    "sha256": "hex sha256 of the original downloaded bytes",
    "width": "width of the stored image", "height": "height of the stored image",
    "original_width": "width of the original image", "original_height": "height of the original image",
}
# the keys a `tfds build` builder writes for every family (plus the spec's columns)
BUILDER_BASE_KEYS = ("jpg", "txt", "key", "url", "width", "height", "original_width", "original_height")
_KIND_OF_COLUMN = {"float": "float", "int": "int", "str": "text", "json": "text"}


def roles_for(spec: DatasetSpec | None) -> dict[str, str]:
    roles = dict(KNOWN_ROLES)
    if spec is not None:
        for c in spec.extra_columns:
            roles[c.name] = _KIND_OF_COLUMN[c.kind]
    return roles


def descriptions_for(spec: DatasetSpec | None) -> dict[str, str]:
    d = dict(DESCRIPTIONS)
    if spec is not None:
        for c in spec.extra_columns:
            if c.description:
                d[c.name] = c.description
    return d


def connector(role: str, doc: str | None = None):
    import numpy as np
    import tensorflow_datasets as tfds

    if role == "image":
        return tfds.features.Image(encoding_format="jpeg", doc=doc)
    if role == "png":
        return tfds.features.Image(encoding_format="png", doc=doc)
    if role == "text":
        return tfds.features.Text(doc=doc)
    if role == "int":
        return tfds.features.Scalar(dtype=np.int64, doc=doc)
    if role == "float":
        return tfds.features.Scalar(dtype=np.float32, doc=doc)
    raise ValueError(f"unknown role {role!r}")


def features_dict(roles: Mapping[str, str], spec: DatasetSpec | None = None, renamed: Mapping[str, str] | None = None):
    import tensorflow_datasets as tfds

    docs = descriptions_for(spec)
    docs.update({new: docs[old] for new, old in (renamed or {}).items() if old in docs})
    return tfds.features.FeaturesDict({k: connector(r, docs.get(k)) for k, r in sorted(roles.items())})


# ------------------------------------------------------------------------------------------------ survey / check
def parse(data: bytes) -> dict[str, tuple[str | None, list]]:
    """``{key: (kind, values)}``; kind is ``bytes``/``int64``/``float`` or None for an empty feature."""
    from laionprep._env import import_tf

    tf = import_tf()
    ex = tf.train.Example.FromString(data)
    out = {}
    for k, f in ex.features.feature.items():
        which = f.WhichOneof("kind")
        if which == "bytes_list":
            out[k] = ("bytes", list(f.bytes_list.value))
        elif which == "int64_list":
            out[k] = ("int64", list(f.int64_list.value))
        elif which == "float_list":
            out[k] = ("float", list(f.float_list.value))
        else:
            out[k] = (None, [])
    return out


@dataclasses.dataclass
class KeySurvey:
    kinds: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # kind -> records
    lengths: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    present: int = 0
    empty_bytes: int = 0  # b'' values (img2dataset's null)
    first_seen: dict = dataclasses.field(default_factory=dict)  # kind -> "file record i"


@dataclasses.dataclass
class Survey:
    records: int = 0
    keys: dict = dataclasses.field(default_factory=dict)  # key -> KeySurvey

    def add(self, data: bytes, where: str) -> None:
        self.records += 1
        for k, (kind, values) in parse(data).items():
            s = self.keys.setdefault(k, KeySurvey())
            s.present += 1
            s.kinds[kind] += 1
            s.lengths[len(values)] += 1
            s.first_seen.setdefault(kind, where)
            if kind == "bytes" and values == [b""]:
                s.empty_bytes += 1


def survey(samples: Iterable[tuple[bytes, str]]) -> Survey:
    sv = Survey()
    for data, where in samples:
        sv.add(data, where)
    return sv


@dataclasses.dataclass
class Choice:
    roles: dict[str, str]  # key -> role, the registered features
    notes: list[str]


def check(sv: Survey, spec: DatasetSpec | None, exclude: Iterable[str] = (), *, source: str = "",
          renamed: Mapping[str, str] | None = None) -> Choice:
    """Pick the features for the surveyed records; raise :class:`DataError` listing every key TFDS could not read.
    ``renamed``: ``{stored name: img2dataset name}`` of keys a reshard renamed (``--feature-names``)."""
    exclude = set(exclude)
    known = roles_for(spec)
    known.update({new: known[old] for new, old in (renamed or {}).items() if old in known})
    roles: dict[str, str] = {}
    problems: list[str] = []
    wheres: list[str] = []
    notes: list[str] = []
    if sv.records == 0:
        raise DataError("no records to check the features against: every sampled shard is empty", where=source,
                        fix="register a folder that holds records")
    for key in sorted(sv.keys):
        if key in exclude:
            continue
        s: KeySurvey = sv.keys[key]
        role = known.get(key)
        if role is None:
            real = [k for k in s.kinds if k is not None]
            if len(real) == 1:
                role = {"bytes": "text", "int64": "int", "float": "float"}[real[0]]
                notes.append(f"{key}: not in the dataset spec, typed from the records as {role}")
        kinds_txt = ", ".join(f"{k or 'empty'} in {n}" for k, n in s.kinds.most_common())
        if role is None:
            problems.append(f"{key}: type varies across records ({kinds_txt} of {sv.records} sampled)")
            wheres.append(next(iter(s.first_seen.values())))
            continue
        want = ROLE_KIND[role]
        bad = {k: n for k, n in s.kinds.items() if k != want}
        if bad:
            null_hint = (f" ({s.empty_bytes} of them b'': img2dataset writes a null as bytes b'')"
                         if "bytes" in bad and want != "bytes" else "")
            if s.kinds.get(want):
                problems.append(f"{key}: type varies across records: {kinds_txt} of {sv.records} sampled, "
                                f"expected {want}{null_hint}")
            else:
                problems.append(f"{key}: holds {kinds_txt} of {sv.records} sampled where {want} is expected "
                                f"({'dataset spec' if key in known else 'records'}){null_hint}")
            wheres.append(s.first_seen[next(iter(bad))])
            continue
        if s.present < sv.records:
            problems.append(f"{key}: missing from {sv.records - s.present} of {sv.records} sampled records")
            continue
        if set(s.lengths) != {1}:
            problems.append(f"{key}: holds lists (lengths {dict(s.lengths)}), not single values")
            wheres.append(s.first_seen[want])
            continue
        roles[key] = role
    if problems:
        raise DataError(
            "records cannot be registered as they are: TFDS reads one fixed type per key\n    "
            + "\n    ".join(problems),
            where=wheres[0] if wheres else source,
            fix="run `laionprep reshard` on this folder (it writes one type per key and replaces nulls by sentinels) "
                "and register its output, or leave the key(s) out with --exclude "
                + ",".join(p.split(":", 1)[0] for p in problems),
        )
    images = [k for k, r in roles.items() if r in ("image", "png")]
    if not images:
        raise DataError(f"no image key (jpg or png) in the records; keys found: {sorted(sv.keys)}", where=source,
                        fix="register img2dataset output written with encode_format jpg (laionprep's default)")
    if spec is not None:
        absent = [c.name for c in spec.extra_columns if c.name not in sv.keys and c.name not in exclude]
        if absent:
            notes.append(f"spec {spec.name} columns not in the records: {', '.join(absent)}")
    return Choice(roles=roles, notes=notes)


# ------------------------------------------------------------------------------------------------ builders
def builder_roles(spec: DatasetSpec) -> dict[str, str]:
    known = roles_for(spec)
    keys = list(BUILDER_BASE_KEYS) + [c.name for c in spec.extra_columns]
    return {k: known[k] for k in keys}


def normalise(parsed: Mapping[str, tuple[str | None, list]], roles: Mapping[str, str], *, where: str) -> dict:
    """One record's values for ``roles``: nulls (b'', empty or absent) become ``datasets.SENTINELS``."""
    out = {}
    for key, role in roles.items():
        kind, values = parsed.get(key, (None, []))
        v = values[0] if values else None
        if role in ("image", "png"):
            if not isinstance(v, bytes) or not v:
                raise DataError(f"record has no image bytes under {key!r}", where=where,
                                fix="re-download this shard, or check the folder with `laionprep validate`")
            out[key] = v
        elif role == "text":
            if v is None:
                out[key] = SENTINELS["str"]
            elif isinstance(v, bytes):
                out[key] = v.decode("utf-8", "replace")
            else:
                out[key] = str(v)
        else:
            sentinel = SENTINELS["int" if role == "int" else "float"]
            if v is None or v == b"":
                out[key] = sentinel
            elif isinstance(v, bytes):
                try:
                    out[key] = (int if role == "int" else float)(v.decode())
                except ValueError:
                    raise DataError(f"{key}: cannot read {v[:40]!r} as a {role}", where=where,
                                    fix="check the column's type in the metadata") from None
            else:
                out[key] = int(v) if role == "int" else float(v)
    return out
