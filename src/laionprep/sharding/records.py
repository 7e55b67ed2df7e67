"""What reshard does to one record: normalise its types, apply the filters, pick its split.

The output schema is fixed on the launcher (:func:`output_schema`) and applied to every record by
:class:`RecordProcessor`, so every key has ONE feature type across the output and no record lacks a key:

* the keys img2dataset writes have fixed kinds (:data:`IMG2DATASET_KINDS`);
* carried columns take the kind their dataset spec (or the download manifest's prefilter report) gives them;
* any other key takes the kind seen in the first record of its source.

A value of the wrong type is converted (an int where a float is expected, text that parses as a number) and
counted as ``cast``; a null (img2dataset writes nulls as bytes ``b''``; an empty feature; NaN) becomes the
sentinel of :data:`laionprep.datasets.SENTINELS` and is counted as ``null``; a missing key is added with the
sentinel (``missing``); text that cannot be read as the expected number becomes the sentinel (``invalid``).

Filters drop a record for the FIRST reason that applies, in :data:`REASONS` order.  The four shared with the
download prefilter keep its semantics exactly: ``nsfw`` (tag, compared upper-case, not in the kept set),
``low_similarity`` (< threshold, or the -1.0 sentinel), ``high_punsafe`` / ``high_pwatermark`` (>= threshold, or
the sentinel).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import struct
from collections import Counter
from typing import Iterable, Mapping

from laionprep.datasets import SENTINELS
from laionprep.keylist import KeyList
from laionprep.sharding.keys import KeyRule
from laionprep.tfrecord import KIND_FIELD, Example

# Reasons a record is dropped, in the order they are tested (the first that applies is counted).
REASONS = (
    "empty_image",      # no image bytes (a broken record)
    "key_not_kept",     # --keep-keys: key/uid not in the list
    "key_dropped",      # --drop-keys: key/uid in the list
    "nsfw",             # NSFW tag not in --nsfw
    "low_similarity",   # similarity < --min-similarity, or null
    "high_punsafe",     # punsafe >= --max-punsafe, or null
    "high_pwatermark",  # pwatermark >= --max-pwatermark, or null
    "small_side",       # short side < --min-side (original image size)
    "aspect",           # long side / short side > --max-aspect
    "short_caption",    # caption (stripped) shorter than --min-caption-chars
    "long_caption",     # caption (stripped) longer than --max-caption-chars
)

IMG2DATASET_KINDS = {
    "jpg": "bytes", "png": "bytes", "webp": "bytes", "txt": "bytes", "key": "bytes",
    "width": "int64", "height": "int64", "original_width": "int64", "original_height": "int64",
    "url": "bytes", "caption": "bytes", "status": "bytes", "error_message": "bytes", "exif": "bytes",
    "sha256": "bytes", "md5": "bytes", "sha512": "bytes",
}
REQUIRED = ("jpg", "txt", "key", "width", "height")  # what FLIP's raw reader and the TFDS builder need
COLUMN_KINDS = {"float": "float", "int": "int64", "str": "bytes", "json": "bytes"}  # datasets.Column.kind -> feature
SENTINEL = {"float": float(SENTINELS["float"]), "int64": int(SENTINELS["int"]), "bytes": SENTINELS["str"].encode()}
SPLIT_PERSON = b"laionprep-split"  # blake2b personalisation of the split hash


def split_hash(key: bytes) -> int:
    """The 64-bit hash that picks a record's split: validation iff ``split_hash(key) < fraction * 2**64``."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8, person=SPLIT_PERSON).digest(), "big")


def f32(x: float) -> float:
    """``x`` rounded to float32, the precision float columns have in the records: thresholds are compared there,
    so a similarity stored as float32(0.3) passes ``--min-similarity 0.3``."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def validation_threshold(fraction: float) -> int:
    return min(int(fraction * 2.0 ** 64), 2 ** 64)


@dataclasses.dataclass(frozen=True)
class RecordFilters:
    """Record-level filters (all optional); the first four are :class:`laionprep.datasets.Filters`."""

    nsfw: tuple[str, ...] | None = None
    min_similarity: float | None = None
    similarity_column: str = "similarity"
    max_punsafe: float | None = None
    max_pwatermark: float | None = None
    min_side: int | None = None
    max_aspect: float | None = None
    min_caption_chars: int | None = None
    max_caption_chars: int | None = None
    keep_keys: str | None = None  # URL of a key list
    drop_keys: str | None = None
    keys_column: str = "key"

    def columns_needed(self) -> dict[str, str]:
        """Columns the requested filters read -> the flag that needs it."""
        need = {}
        if self.nsfw is not None:
            need["NSFW"] = "--nsfw"
        if self.min_similarity is not None:
            need[self.similarity_column] = "--min-similarity"
        if self.max_punsafe is not None:
            need["punsafe"] = "--max-punsafe"
        if self.max_pwatermark is not None:
            need["pwatermark"] = "--max-pwatermark"
        if self.keep_keys or self.drop_keys:
            need[self.keys_column] = "--keep-keys" if self.keep_keys else "--drop-keys"
        return need

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["nsfw"] is not None:
            d["nsfw"] = list(d["nsfw"])
        return d


def output_schema(peeked: Iterable[Mapping[str, str | None]], column_kinds: Mapping[str, str],
                  drop_columns: Iterable[str] = ()) -> dict[str, str]:
    """The kind of every key in the output (sorted by key), before ``drop_columns`` are removed.

    ``peeked``: the feature kinds of one record per source; ``column_kinds``: kinds known from dataset specs or
    download manifests (``datasets.Column.kind`` names).  Conflicting kinds of an unknown key across sources
    raise ``ValueError`` (the caller turns it into a DataError naming the key).
    """
    keys: dict[str, set] = {}
    for kinds in peeked:
        for k, kind in kinds.items():
            keys.setdefault(k, set()).add(kind)
    schema = {}
    for k in sorted(keys):
        if k in IMG2DATASET_KINDS:
            schema[k] = IMG2DATASET_KINDS[k]
        elif k in column_kinds:
            schema[k] = COLUMN_KINDS[column_kinds[k]]
        else:
            seen = {x for x in keys[k] if x is not None}
            if seen == {"int64", "float"}:
                schema[k] = "float"
            elif len(seen) > 1:
                raise ValueError(f"key {k!r} has different types in different sources: {sorted(seen)}")
            else:
                schema[k] = seen.pop() if seen else "bytes"
    return schema


def _to_number(raw: bytes, kind: str):
    text = raw.decode("utf-8", "replace").strip()
    if kind == "float":
        v = float(text)
        if math.isnan(v):
            raise ValueError("nan")
        return v
    return int(text)


def _numbers_from_bytes(values, kind: str, sentinel):
    """Parse bytes values as ``kind`` numbers: b'' (img2dataset's null) -> sentinel ("null"), unparsable ->
    sentinel ("invalid"), else "cast".  Returns (what happened, values)."""
    what, out = "cast", []
    for v in values:
        if v.strip() == b"":
            what = "null"
            out.append(sentinel)
            continue
        try:
            out.append(_to_number(v, kind))
        except ValueError:
            what = "invalid"
            out.append(sentinel)
    return what, out


class RecordProcessor:
    """Normalises, filters and routes records of one job (built once per worker; not thread-safe)."""

    def __init__(self, schema: Mapping[str, str], drop_columns: Iterable[str], filters: RecordFilters,
                 keep: KeyList | None, drop: KeyList | None, validation_fraction: float,
                 renames: Iterable[tuple[str, str]] = (), resize=None):
        self.schema = dict(schema)
        self.resize = resize  # sharding.images.ShortSideResizer (--image-size) or None
        self.renames = tuple(renames)  # (new, old), applied last: filters and the split see img2dataset's names
        self.drop_columns = tuple(c for c in drop_columns if c in self.schema)
        self.items = [(k, kind, KIND_FIELD[kind], SENTINEL[kind]) for k, kind in self.schema.items()]
        self.out_len = len(self.schema) - len(self.drop_columns)
        self.f = filters
        self.keep = keep
        self.drop = drop
        self.nsfw = frozenset(t.upper() for t in filters.nsfw) if filters.nsfw is not None else None
        self.threshold = validation_threshold(validation_fraction) if validation_fraction > 0 else 0
        self.min_sim = f32(filters.min_similarity) if filters.min_similarity is not None else None
        self.max_punsafe = f32(filters.max_punsafe) if filters.max_punsafe is not None else None
        self.max_pwatermark = f32(filters.max_pwatermark) if filters.max_pwatermark is not None else None
        self.image_key = next((k for k in ("jpg", "png", "webp") if k in self.schema), "jpg")
        self.dropped: Counter = Counter()
        self.normalised: Counter = Counter()  # (key, what) -> count; what in null/cast/missing/invalid/extra

    # -- normalisation --------------------------------------------------------------------------------------
    def _fix(self, feats, k: str, kind: str, field: str, sentinel) -> None:
        f = feats.get(k)
        if f is None:
            what, value = "missing", sentinel
        else:
            which = f.WhichOneof("kind")
            values = list(getattr(f, which).value) if which else []
            if not values:
                what, value = "null", sentinel
            elif kind == "float":
                if which == "int64_list":
                    what, value = "cast", [float(v) for v in values]
                elif which == "float_list":  # NaN
                    what, value = "null", [sentinel if v != v else v for v in values]
                else:
                    what, value = _numbers_from_bytes(values, "float", sentinel)
            elif kind == "int64":
                if which == "float_list":
                    what = "cast"
                    value = [int(round(v)) if math.isfinite(v) else sentinel for v in values]
                else:
                    what, value = _numbers_from_bytes(values, "int64", sentinel)
            else:  # bytes from a number
                what, value = "cast", [repr(v).encode() if isinstance(v, float) else str(v).encode() for v in values]
        if not isinstance(value, list):
            value = [value]
        f = feats[k]
        f.Clear()
        getattr(f, field).value.extend(value)
        self.normalised[(k, what)] += 1

    def normalise(self, ex) -> tuple[bool, dict]:
        """Bring one parsed Example to the schema in place: ``(changed, {key: Feature})``."""
        feats = ex.features.feature
        d = dict(feats.items())  # one pass over the map; dict lookups are far cheaper than map lookups
        changed = False
        for k, kind, field, sentinel in self.items:
            f = d.get(k)
            if f is not None and f.WhichOneof("kind") == field:
                v = getattr(f, field).value
                if kind == "float":
                    if len(v) and all(x == x for x in v):
                        continue
                elif len(v):
                    continue
            self._fix(feats, k, kind, field, sentinel)
            d[k] = feats[k]
            changed = True
        if len(d) > len(self.items):
            for k in [k for k in d if k not in self.schema]:
                del feats[k]
                del d[k]
                self.normalised[(k, "extra")] += 1
            changed = True
        return changed, d

    # -- filters ------------------------------------------------------------------------------------------
    def reason(self, d: dict, listed: tuple[bool, bool] | None = None) -> str | None:
        """The first drop reason that applies to a normalised record (``{key: Feature}``), or None to keep it.
        ``listed``: (in the keep list, in the drop list), looked up for a whole batch (:meth:`process_batch`)."""
        f = self.f
        if not d[self.image_key].bytes_list.value[0]:
            return "empty_image"
        if self.keep is not None or self.drop is not None:
            if listed is None:
                listed = self._listed([d])[0]
            if self.keep is not None and not listed[0]:
                return "key_not_kept"
            if self.drop is not None and listed[1]:
                return "key_dropped"
        if self.nsfw is not None and d["NSFW"].bytes_list.value[0].decode("utf-8", "replace").upper() not in self.nsfw:
            return "nsfw"
        if self.min_sim is not None:
            s = d[f.similarity_column].float_list.value[0]
            if s < self.min_sim or s == -1.0:
                return "low_similarity"
        if self.max_punsafe is not None:
            v = d["punsafe"].float_list.value[0]
            if v >= self.max_punsafe or v == -1.0:
                return "high_punsafe"
        if self.max_pwatermark is not None:
            v = d["pwatermark"].float_list.value[0]
            if v >= self.max_pwatermark or v == -1.0:
                return "high_pwatermark"
        if f.min_side is not None or f.max_aspect is not None:
            w, h = self._dims(d)
            lo, hi = min(w, h), max(w, h)
            if f.min_side is not None and lo < f.min_side:
                return "small_side"
            if f.max_aspect is not None and (lo <= 0 or hi / lo > f.max_aspect):
                return "aspect"
        if f.min_caption_chars is not None or f.max_caption_chars is not None:
            n = len(d["txt"].bytes_list.value[0].decode("utf-8", "replace").strip())
            if f.min_caption_chars is not None and n < f.min_caption_chars:
                return "short_caption"
            if f.max_caption_chars is not None and n > f.max_caption_chars:
                return "long_caption"
        return None

    @staticmethod
    def _dims(feats) -> tuple[int, int]:
        """The original image size when recorded (> 0), else the stored image's."""
        ow, oh = feats.get("original_width"), feats.get("original_height")
        if ow is not None and oh is not None:
            w, h = ow.int64_list.value[0], oh.int64_list.value[0]
            if w > 0 and h > 0:
                return w, h
        return feats["width"].int64_list.value[0], feats["height"].int64_list.value[0]

    # -- records ------------------------------------------------------------------------------------------
    def _listed(self, ds: list) -> list[tuple[bool, bool]]:
        """(in keep, in drop) for each normalised record: one vectorised lookup per list for the batch."""
        keys = [d[self.f.keys_column].bytes_list.value[0] for d in ds]
        keep = self.keep.contains(keys) if self.keep is not None else [True] * len(keys)
        drop = self.drop.contains(keys) if self.drop is not None else [False] * len(keys)
        return list(zip(keep, drop))

    def process(self, data: bytes, key_rule: KeyRule | None = None) -> tuple[bool, bytes]:
        """``(is_validation, output bytes)`` for a kept record, or ``(None, reason)`` for a dropped one; the key
        is rewritten by ``key_rule`` (:mod:`laionprep.sharding.keys`; raises ``KeyFormatError``)."""
        return self.process_batch([data], key_rule)[0]

    def process_batch(self, datas: list[bytes], key_rule: KeyRule | None = None) -> list[tuple[bool, bytes]]:
        """:meth:`process` for each record of ``datas`` (key lists are looked up once for the batch).  When a
        record raises (DecodeError, KeyFormatError), ``self.failed_at`` is its index in ``datas``."""
        self.failed_at = 0
        parsed = []
        for i, data in enumerate(datas):
            self.failed_at = i
            ex = Example.FromString(data)
            parsed.append((ex, *self.normalise(ex)))
        listed = self._listed([d for _, _, d in parsed]) if self.keep is not None or self.drop is not None else None
        out = []
        for i, (data, (ex, changed, d)) in enumerate(zip(datas, parsed)):
            self.failed_at = i
            out.append(self._finish(data, ex, changed, d, key_rule, listed[i] if listed else None))
        return out

    def _finish(self, data: bytes, ex, changed: bool, d: dict, key_rule: KeyRule | None, listed):
        reason = self.reason(d, listed)
        if reason is not None:
            self.dropped[reason] += 1
            return None, reason
        if self.drop_columns:
            feats = ex.features.feature
            for c in self.drop_columns:
                del feats[c]
            changed = True
        if self.resize is not None:  # after the filters: a dropped record's image is never decoded
            small = self.resize(d[self.image_key].bytes_list.value[0])
            if small is not None:
                data_, w, h = small
                d[self.image_key].bytes_list.value[0] = data_
                d["width"].int64_list.value[0] = w
                d["height"].int64_list.value[0] = h
                changed = True
        key_f = d["key"].bytes_list.value
        if key_rule is not None and key_rule.prefix:
            key_f[0] = key_rule.apply(key_f[0])
            changed = True
        is_val = self.threshold > 0 and split_hash(key_f[0]) < self.threshold
        if self.renames:
            feats = ex.features.feature
            for new, old in self.renames:
                feats[new].CopyFrom(feats[old])
                del feats[old]
            changed = True
        return is_val, (ex.SerializeToString(deterministic=True) if changed else data)

    def normalised_dict(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (k, what), n in sorted(self.normalised.items()):
            out.setdefault(k, {})[what] = n
        return out
