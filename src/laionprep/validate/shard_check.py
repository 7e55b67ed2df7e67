"""Check one TFRecord file (a shard): the unit of work of a worker process.

Everything here is plain Python + numpy + Pillow + protobuf: no TensorFlow, so a worker starts in well under a
second.  A shard is read once, front to back; each record is framed and CRC-checked (:mod:`.tfrecord`), parsed,
and checked against :class:`Checks`; a deterministic sample (``decode_fraction``) is also decoded.  The result is
a :class:`ShardResult` that the parent merges: counts, the first few problems of each kind with their exact
location, the (key, type) signatures seen, the keys (for uniqueness across the dataset) and histograms for the
report.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import io
import os
import re
import time
from typing import Any

import numpy as np

from laionprep.validate.problems import Problem
from laionprep import arrayrecord
from laionprep.folders.names import file_format_of
from laionprep.tfrecord import Damage, Example, read_frames

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_HEX64 = re.compile(rb"[0-9a-fA-F]{64}")
KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "empty"}
INT_HIST_CAP = {"width": 8192, "height": 8192, "caption_chars": 2048}
FLOAT_EDGES = np.linspace(-1.0, 1.0, 201)  # 0.01 wide bins; values outside go to under/over
MAX_KEY_BYTES = 40


@dataclasses.dataclass(frozen=True)
class Checks:
    """What to check in every record (the same for every shard of a dataset)."""

    required: tuple[str, ...] = ("jpg", "txt", "key", "width", "height")
    declared: tuple[tuple[str, str], ...] = ()  # (key, kind) a features.json declares; kind bytes/int64/float
    image_key: str | None = "jpg"
    image_format: str | None = "jpeg"  # jpeg, png, or None (anything Pillow decodes)
    caption_key: str | None = "txt"
    key_key: str | None = "key"
    width_key: str = "width"
    height_key: str = "height"
    image_size: int | None = None  # None: the size is not checked
    resize_mode: str = "keep_ratio"
    resize_only_if_bigger: bool = False
    decode_fraction: float = 0.01
    sha256: str = "auto"  # auto, stored, off
    category_keys: tuple[str, ...] = ("NSFW",)
    max_examples: int = 20  # problems kept with full detail, per kind and shard


@dataclasses.dataclass(frozen=True)
class Unit:
    """One TFRecord file to check, with what its metadata says about it."""

    index: int
    path: str
    label: str  # path relative to the validated folder, for messages
    expected: int | None = None  # record count the metadata gives
    expected_source: str = ""  # which metadata: '_stats.json', 'counts.json', 'dataset_info.json'
    parquet: str | None = None  # img2dataset's per-row status table
    stats: str | None = None  # img2dataset's _stats.json
    shard_id: int | None = None
    split: str | None = None


@dataclasses.dataclass
class FloatStats:
    n: int = 0
    sum: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")
    sentinel: int = 0  # values == -1.0: the null sentinel
    nan: int = 0
    under: int = 0
    over: int = 0
    hist: Any = None  # counts over FLOAT_EDGES

    @classmethod
    def of(cls, values: list[float]) -> "FloatStats":
        a = np.asarray(values, dtype=np.float64)
        nan = np.isnan(a)
        s = cls(nan=int(nan.sum()))
        a = a[~nan]
        s.sentinel = int((a == -1.0).sum())
        a = a[a != -1.0]
        s.n = int(a.size)
        if a.size:
            s.sum, s.min, s.max = float(a.sum()), float(a.min()), float(a.max())
        s.under = int((a < FLOAT_EDGES[0]).sum())
        s.over = int((a > FLOAT_EDGES[-1]).sum())
        s.hist = np.histogram(a, bins=FLOAT_EDGES)[0].astype(np.int64)
        return s

    def merge(self, o: "FloatStats") -> None:
        self.n += o.n
        self.sum += o.sum
        self.min = min(self.min, o.min)
        self.max = max(self.max, o.max)
        self.sentinel += o.sentinel
        self.nan += o.nan
        self.under += o.under
        self.over += o.over
        self.hist = o.hist.copy() if self.hist is None else self.hist + o.hist


@dataclasses.dataclass
class ShardResult:
    unit: int
    label: str
    frames: int = 0  # frames found (good or with a bad data CRC)
    records: int = 0  # records that parsed
    bytes: int = 0
    decoded: int = 0
    damaged: bool = False  # framing lost (truncated / bad length CRC): the record count is unknown
    problems: list = dataclasses.field(default_factory=list)
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    signatures: dict = dataclasses.field(default_factory=dict)  # frozenset((key, kind)) -> [count, first index]
    keys: Any = None  # np.ndarray of keys (bytes, see key_token)
    key_records: Any = None  # np.ndarray int32: record index of each key
    floats: dict = dataclasses.field(default_factory=dict)  # key -> FloatStats
    ints: dict = dataclasses.field(default_factory=dict)  # name -> bincount
    categories: dict = dataclasses.field(default_factory=dict)  # key -> Counter
    sha: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    sha_differs: list = dataclasses.field(default_factory=list)  # Problem candidates (auto mode decides)
    parquet: dict | None = None
    stats: dict | None = None
    kept: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    cpu_seconds: float = 0.0  # CPU time this shard took in its worker
    pid: int = 0
    process_cpu: float = 0.0  # the worker's CPU time so far (its start-up included)

    def add(self, max_examples: int, kind: str, message: str, *, record=None, offset=None, key=None, count=1):
        self.counts[kind] += count
        if self.kept[kind] < max_examples:
            self.kept[kind] += 1
            self.problems.append(Problem(kind, message, file=self.label, record=record, offset=offset,
                                         key=key, count=count, unit=self.unit))


def key_token(key: bytes) -> bytes:
    """The form a key takes in the uniqueness check: itself, or a digest when long or NUL-terminated."""
    if len(key) <= MAX_KEY_BYTES and not key.endswith(b"\x00") and not key.startswith(b"\x01"):
        return key
    return b"\x01" + hashlib.blake2b(key, digest_size=16).hexdigest().encode()


def _text(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def _expected_size(c: Checks, w: int, h: int, ow: int | None, oh: int | None) -> str | None:
    """None when (w, h) follows the resize settings; otherwise what was expected."""
    size, mode = c.image_size, c.resize_mode
    if size is None or mode == "no":
        return None
    if mode in ("keep_ratio", "center_crop"):
        grow_ok = c.resize_only_if_bigger
        if grow_ok and ow and oh and min(ow, oh) <= size:
            return None if (w, h) == (ow, oh) else f"{ow}x{oh} (the original size: smaller than {size}, not resized)"
        if grow_ok and not (ow and oh) and min(w, h) < size:
            return None
        if mode == "keep_ratio":
            return None if min(w, h) == size else f"short side {size}"
        return None if (w, h) == (size, size) else f"{size}x{size}"
    if mode in ("border", "keep_ratio_largest"):
        if c.resize_only_if_bigger and ow and oh and max(ow, oh) <= size:
            return None if (w, h) == (ow, oh) else f"{ow}x{oh} (the original size: smaller than {size}, not resized)"
        if mode == "keep_ratio_largest":
            return None if max(w, h) == size else f"long side {size}"
        return None if (w, h) == (size, size) else f"{size}x{size}"
    return None


def _one(feats, kinds, name, kind):
    """The single value of feature ``name`` if it has kind ``kind`` and exactly one value, else ``None``/``...``."""
    if kinds.get(name) != kind:
        return None
    f = feats[name]
    vals = f.bytes_list.value if kind == "bytes_list" else (f.int64_list.value if kind == "int64_list"
                                                            else f.float_list.value)
    if len(vals) != 1:
        return ...
    return vals[0]


def check_shard(unit: Unit, c: Checks) -> ShardResult:
    """Read and check every record of ``unit``; never raises for bad data (it becomes a problem)."""
    cpu0 = time.process_time()
    r = ShardResult(unit=unit.index, label=unit.label)
    mx = c.max_examples
    try:
        _check_records(unit, c, r)
    except OSError as e:
        r.damaged = True
        r.add(mx, "unreadable_file", f"cannot read: {type(e).__name__}: {e}")
    _check_metadata(unit, c, r)
    r.cpu_seconds = time.process_time() - cpu0
    r.pid, r.process_cpu = os.getpid(), time.process_time()
    return r


def _open(path: str):
    if "://" not in path or path.startswith("file://"):
        p = path.removeprefix("file://")
        return open(p, "rb", buffering=1 << 20), os.path.getsize(p)
    from laionprep import fs as lfs

    fsys, p = lfs.get_fs(path)
    return fsys.open(p, "rb", block_size=8 << 20), fsys.size(p)


def _check_records(unit: Unit, c: Checks, r: ShardResult) -> None:  # noqa: C901 (one tight loop, on purpose)
    mx = c.max_examples
    add = r.add
    required = set(c.required)
    declared = dict(c.declared)
    sig_missing: dict = {}  # signature -> (missing required keys, wrong declared types)
    sig_counts = r.signatures
    keys: list[bytes] = []
    key_recs: list[int] = []
    floats: dict[str, list[float]] = collections.defaultdict(list)
    widths: list[int] = []
    heights: list[int] = []
    cap_chars: list[int] = []
    cats: dict[str, collections.Counter] = {k: collections.Counter() for k in c.category_keys}
    frac = max(0.0, min(1.0, c.decode_fraction))
    acc = 1.0 - 1e-9  # the first record of every shard is in the decode sample
    img_key, cap_key, key_key, wk, hk = c.image_key, c.caption_key, c.key_key, c.width_key, c.height_key
    magic = JPEG_MAGIC if c.image_format == "jpeg" else (PNG_MAGIC if c.image_format == "png" else None)
    img_word = "JPEG" if c.image_format == "jpeg" else (c.image_format or "image").upper()
    bad_img_kind = "not_jpeg" if c.image_format == "jpeg" else "undecodable_image"
    sha_mode = c.sha256
    if file_format_of(unit.path) == "array_record":  # reshard --format array_record
        f, frames = contextlib.nullcontext(), arrayrecord.read_frames(unit.path)
    else:
        f, size = _open(unit.path)
        frames = read_frames(f, size)
    with f:
        for item in frames:
            if type(item) is Damage:
                key = None
                if item.kind == "bad_data_crc":
                    r.frames += 1
                    try:  # name the record if its (unverified) bytes still parse
                        ex = Example.FromString(item.data)
                        kv = ex.features.feature[key_key].bytes_list.value if key_key in ex.features.feature else []
                        key = _text(kv[0]) + " (unverified)" if kv else None
                    except Exception:
                        pass
                else:
                    r.damaged = True
                add(mx, item.kind, item.message, record=item.index, offset=item.offset, key=key)
                continue
            index, offset, data = item
            r.frames += 1
            r.bytes += len(data) + 16
            try:
                ex = Example.FromString(data)
            except Exception as e:
                add(mx, "unparsable_record", f"not a tf.train.Example: {type(e).__name__}: {e}",
                    record=index, offset=offset)
                continue
            r.records += 1
            fmap = ex.features.feature
            feats, kinds = {}, {}  # plain dicts: a protobuf map lookup costs ~1 us, a dict lookup ~30 ns
            for k in fmap:
                v = fmap[k]
                feats[k] = v
                kinds[k] = v.WhichOneof("kind")
            sig = frozenset(kinds.items())
            sc = sig_counts.get(sig)
            if sc is None:
                missing = tuple(sorted(required - kinds.keys()))
                wrong = tuple(sorted((k, KIND_NAMES[kinds[k]], want) for k, want in declared.items()
                                     if k in kinds and KIND_NAMES[kinds[k]] != want))
                sig_missing[sig] = (missing, wrong)
                sig_counts[sig] = [1, index]
            else:
                sc[0] += 1
                missing, wrong = sig_missing[sig]
            key = None
            if key_key:
                kv = _one(feats, kinds, key_key, "bytes_list")
                if kv is None or kv is ... or not kv:
                    if key_key in kinds:
                        add(mx, "bad_value", f"'{key_key}' must be one non-empty bytes value", record=index,
                            offset=offset)
                else:
                    key = _text(kv)
                    keys.append(key_token(kv))
                    key_recs.append(index)
            if missing:
                add(mx, "missing_key", "required key(s) absent: " + ", ".join(missing), record=index,
                    offset=offset, key=key)
            for k, got, want in wrong:
                add(mx, "wrong_type", f"'{k}' is {got}, features.json declares {want}", record=index,
                    offset=offset, key=key)
            # caption
            if cap_key and cap_key in kinds:
                cv = _one(feats, kinds, cap_key, "bytes_list")
                if cv is None or cv is ...:
                    add(mx, "bad_value", f"'{cap_key}' must be one bytes value", record=index, offset=offset,
                        key=key)
                else:
                    try:
                        text = cv.decode("utf-8")
                    except UnicodeDecodeError as e:
                        add(mx, "bad_caption", f"caption is not valid UTF-8 ({e.reason} at byte {e.start})",
                            record=index, offset=offset, key=key)
                    else:
                        cap_chars.append(len(text))
                        if not text.strip():
                            add(mx, "empty_caption", f"caption is empty ({cv!r})", record=index, offset=offset,
                                key=key)
            # sizes
            w = _one(feats, kinds, wk, "int64_list")
            h = _one(feats, kinds, hk, "int64_list")
            if w is ... or h is ... or (w is not None and w <= 0) or (h is not None and h <= 0):
                add(mx, "bad_value", f"'{wk}'/'{hk}' must be one positive int64 each", record=index,
                    offset=offset, key=key)
                w = h = None
            if w is not None:
                widths.append(w)
            if h is not None:
                heights.append(h)
            # carried numbers and categories
            for k, kd in kinds.items():
                if kd == "float_list":
                    vals = feats[k].float_list.value
                    if len(vals) == 1:
                        floats[k].append(vals[0])
            for k, cnt in cats.items():
                v = _one(feats, kinds, k, "bytes_list")
                if v is not None and v is not ...:
                    cnt[_text(v)] += 1
            sha = _one(feats, kinds, "sha256", "bytes_list") if sha_mode != "off" else None
            if sha is ...:
                sha = None
            if sha and not _HEX64.fullmatch(sha):
                add(mx, "sha256_malformed", f"sha256 is not 64 hex digits: {_text(sha[:80])!r}", record=index,
                    offset=offset, key=key)
                sha = None
            # image
            if not img_key or img_key not in kinds:
                continue
            img = _one(feats, kinds, img_key, "bytes_list")
            if img is None or img is ...:
                add(mx, "bad_value", f"'{img_key}' must be one bytes value", record=index, offset=offset, key=key)
                continue
            if magic is not None and not img.startswith(magic):
                add(mx, bad_img_kind, f"'{img_key}' is not {img_word} ({len(img):,} bytes starting "
                                      f"{img[:8].hex(' ')})", record=index, offset=offset, key=key)
                continue
            acc += frac
            if acc >= 1.0:
                acc -= 1.0
                r.decoded += 1
                dw, dh, err = _decode(img, c.image_format)
                if err:
                    add(mx, bad_img_kind, f"'{img_key}' does not decode as {img_word}: {err}", record=index,
                        offset=offset, key=key)
                    continue
                if w is not None and h is not None and (dw, dh) != (w, h):
                    add(mx, "size_mismatch", f"features say {w}x{h}, the image decodes to {dw}x{dh}",
                        record=index, offset=offset, key=key)
                w, h = dw, dh
                if sha:
                    r.sha["checked"] += 1
                    if hashlib.sha256(img).hexdigest().encode() == sha.lower():
                        r.sha["verified"] += 1
                    else:
                        r.sha["differs"] += 1
                        if len(r.sha_differs) < mx:
                            r.sha_differs.append(Problem(
                                "sha256_mismatch", f"sha256 {_text(sha[:16])}… does not match the stored image "
                                                   f"bytes ({hashlib.sha256(img).hexdigest()[:16]}…)",
                                file=r.label, record=index, offset=offset, key=key, unit=r.unit))
            if c.image_size is not None and w is not None and h is not None:
                ow = _one(feats, kinds, "original_width", "int64_list")
                oh = _one(feats, kinds, "original_height", "int64_list")
                ow = ow if isinstance(ow, int) else None
                oh = oh if isinstance(oh, int) else None
                want = _expected_size(c, w, h, ow, oh)
                if want:
                    kind = "wrong_short_side" if c.resize_mode == "keep_ratio" else "wrong_image_size"
                    add(mx, kind, f"image is {w}x{h}, expected {want} (image_size {c.image_size}, "
                                  f"{c.resize_mode}{', only if bigger' if c.resize_only_if_bigger else ''})",
                        record=index, offset=offset, key=key)
    r.keys = np.array(keys, dtype=np.bytes_) if keys else np.array([], dtype="S1")
    r.key_records = np.asarray(key_recs, dtype=np.int64)
    r.floats = {k: FloatStats.of(v) for k, v in floats.items()}
    for name, vals in (("width", widths), ("height", heights), ("caption_chars", cap_chars)):
        cap = INT_HIST_CAP[name]
        r.ints[name] = np.bincount(np.minimum(np.asarray(vals, dtype=np.int64), cap), minlength=cap + 1)
    r.categories = {k: v for k, v in cats.items() if v}


def _decode(img: bytes, fmt: str | None) -> tuple[int, int, str | None]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(img)) as im:
            got = im.format
            im.load()
            w, h = im.size
    except Exception as e:  # Pillow raises many types for bad data
        return 0, 0, f"{type(e).__name__}: {e}"
    if fmt == "jpeg" and got != "JPEG":
        return w, h, f"it is {got}, not JPEG"
    if fmt == "png" and got != "PNG":
        return w, h, f"it is {got}, not PNG"
    return w, h, None


def _check_metadata(unit: Unit, c: Checks, r: ShardResult) -> None:
    """Accounting of one shard: records vs _stats.json vs the parquet (download), or vs the expected count."""
    mx = c.max_examples
    success_keys = None
    if unit.stats:
        try:
            from laionprep import fs as lfs

            r.stats = lfs.read_json(unit.stats)
        except Exception as e:
            r.add(mx, "bad_metadata", f"unreadable _stats.json: {type(e).__name__}: {e}")
    if unit.parquet is not None:
        success_keys = _read_parquet(unit, r, mx)
    if r.damaged:
        return  # the count is unknown; the damage itself is the problem
    if unit.stats and r.stats is not None:
        succ = r.stats.get("successes")
        count = r.stats.get("count")
        parts = [f"{r.frames} records in the tfrecord", f"{succ} successes in _stats.json"]
        ok = succ == r.frames
        if r.parquet is not None:
            ps = r.parquet["status"].get("success", 0)
            parts.append(f"{ps} 'success' rows in the parquet")
            ok = ok and ps == r.frames
            if count is not None and count != r.parquet["rows"]:
                ok = False
                parts.append(f"(_stats.json count {count} vs {r.parquet['rows']} parquet rows)")
        if not ok:
            r.add(mx, "count_mismatch", ", ".join(parts))
    elif unit.expected is not None and unit.expected != r.frames:
        kind = "tfds_shard_length" if unit.expected_source == "dataset_info.json" else "count_mismatch"
        r.add(mx, kind, f"{unit.expected_source} gives {unit.expected} records, the file holds {r.frames}")
    if success_keys is not None and c.key_key and r.keys is not None:
        rec_keys = {}
        for k, i in zip(r.keys.tolist(), r.key_records.tolist()):
            rec_keys.setdefault(k, i)
        extra = [k for k in rec_keys if k not in success_keys]
        missing = [k for k in success_keys if k not in rec_keys]
        for k in extra:
            r.add(mx, "parquet_mismatch", "record's key is not a 'success' row of the shard parquet",
                  record=rec_keys[k], key=_text(k))
        unkeyed = r.frames - len(r.keys)  # records whose key could not be read (bad CRC, unparsable): reported
        if len(missing) > unkeyed:
            r.add(mx, "parquet_mismatch", f"{len(missing)} 'success' row(s) of the parquet have no record, e.g. key "
                                          f"{_text(sorted(missing)[0])}", count=len(missing))


def _read_parquet(unit: Unit, r: ShardResult, mx: int):
    import pyarrow.parquet as pq

    from laionprep import fs as lfs

    if not unit.parquet:
        r.add(mx, "missing_file", f"shard {unit.shard_id:05d}: parquet missing (tfrecord and _stats.json present)"
              if unit.shard_id is not None else "the shard has no parquet (img2dataset's per-row status table)")
        return None
    try:
        with lfs.open_file(unit.parquet) as fh:
            pf = pq.ParquetFile(fh)
            cols = [c for c in ("key", "status", "error_message") if c in pf.schema_arrow.names]
            t = pf.read(columns=cols).to_pydict()
    except Exception as e:
        r.add(mx, "bad_metadata", f"unreadable parquet {os.path.basename(unit.parquet)}: {type(e).__name__}: {e}")
        return None
    from laionprep.ingest.download import normalise_error

    status = t.get("status") or []
    errors = collections.Counter()  # by reason (the download's): URLs and per-row details dropped, so few
    for st, msg in zip(status, t.get("error_message") or [None] * len(status)):
        if st != "success":
            errors[f"{st}: {normalise_error(msg)}" if msg else str(st)] += 1
    r.parquet = {"rows": len(status), "status": collections.Counter(status), "errors": errors}
    if "key" not in t:
        return None
    return {key_token(str(k).encode()) for k, st in zip(t["key"], status) if st == "success" and k is not None}


def result_summary(r: ShardResult) -> dict:
    """The per-shard row of report.json."""
    return {"file": r.label, "records": r.frames, "parsed": r.records, "bytes": r.bytes, "decoded": r.decoded,
            "damaged": r.damaged, "problems": dict(r.counts),
            "stats_successes": (r.stats or {}).get("successes"),
            "parquet_success": (r.parquet or {}).get("status", {}).get("success") if r.parquet else None}


__all__ = ["Checks", "Unit", "ShardResult", "FloatStats", "check_shard", "key_token", "result_summary"]
