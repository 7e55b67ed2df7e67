"""Key lists (``reshard --keep-keys/--drop-keys``, ``remove``): sets of up to billions of keys, looked up in
batches, in memory that does not grow with the list.

A list is held as a sorted array of 16-byte records (two native uint64: ``hi``, ``lo``; numpy's ``"u8,u8"``, the
dtype of DataComp's subset files) in a file on local disk, memory-mapped, so every worker process of a machine
shares one copy through the page cache; a batch of keys is looked up with one vectorised ``np.searchsorted``.

What a record holds depends on the list's *kind*:

* ``uid``: DataComp's 32-digit lower-case hex uids, stored exactly as their 128-bit value (first 16 digits =
  ``hi``), as DataComp's own tools write them;
* ``string``: any other key (img2dataset keys, URLs, sha256/md5 digests, ints written as decimal text) as the
  128-bit blake2b digest of its UTF-8 bytes.  Two different keys share a digest with probability ~2**-128, so a
  lookup of ``m`` keys in a list of ``n`` gives a false "present" with probability at most ~``n*m / 2**128``
  (1e-20 for a 12.8B-key list probed with 12.8B keys): nothing in practice, but not exactly zero.

``kind="auto"`` (the default) takes ``uid`` when every key of the list is a 32-digit lower-case hex string (or the
file is DataComp's ``.npy`` of ``u8,u8`` records), else ``string``.  Lookups digest their values the same way; in a
``uid`` list a value that is not a uid is simply absent.

Formats, chosen by the file name:

* ``.txt`` (or any other name): one key per line, blank lines ignored, surrounding white space stripped;
* ``.parquet``: the column ``column=`` or else the first of ``key``, ``uid``, ``url``, ``sha256``, ``md5`` present,
  or the only column; read by record batches;
* ``.npy``: DataComp's subset format (a 1-d structured array of two uint64 fields per uid), or an array of strings.

Building: a DataComp ``.npy`` that is already strictly sorted is memory-mapped as it is (no copy, no
conversion); anything else is digested, sorted and deduplicated once into ``CACHE/keylists/`` (``$LAIONPREP_CACHE_DIR``,
else ``$XDG_CACHE_HOME/laionprep``, else ``~/.cache/laionprep``), keyed by the list file's sha256 so that workers
and re-runs share it.  Lists larger than the memory budget are sorted externally (sorted runs on disk, then a
k-way merge in blocks), so building needs about ``memory_budget`` bytes whatever the list's length.  The sha256 of
a file (and whether a ``.npy`` is sorted) is remembered per (path, size, mtime), so a worker does not re-read a
22 GB list to find its cache entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Iterable, Iterator

import numpy as np

from laionprep import fs as lfs
from laionprep.errors import DataError

UID_DTYPE = np.dtype("u8,u8")  # (hi, lo): DataComp's uid records
KINDS = ("auto", "uid", "string")
COLUMNS = ("key", "uid", "url", "sha256", "md5")
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes for building a list (sorted runs); lookups need only their batch
CACHE_ENV = "LAIONPREP_CACHE_DIR"
_FORMAT = 1  # bump when the cache layout changes
_CHUNK_ROWS = 1 << 20  # rows read at a time from a list file

FIX = ("give a .txt (one key per line), .parquet (column key, uid, url, sha256 or md5, or a single column) or .npy "
       "(DataComp's two-uint64 uid records, or strings) file")

_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint8)
_SHIFTS = np.arange(60, -1, -4, dtype=np.uint64)  # nibble i of 16 -> bits


def _fail(url: str, what: str) -> DataError:
    return DataError(f"cannot read the key list: {what}", where=url, fix=FIX)


def cache_dir() -> str:
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "laionprep")
    return os.path.join(base, "keylists")


# -- digests ----------------------------------------------------------------------------------------------------
def _as_bytes(values) -> list:
    """``values`` as a list of bytes (None for a null); ints become their decimal text."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pa = None
    if pa is not None and isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = values.to_pylist()
    elif isinstance(values, np.ndarray):
        values = values.tolist()
    out = []
    for v in values:
        if v is None or isinstance(v, bytes):
            out.append(v)
        elif isinstance(v, str):
            out.append(v.encode("utf-8"))
        elif isinstance(v, (int, np.integer)):
            out.append(str(int(v)).encode())
        elif isinstance(v, (bytearray, memoryview)):
            out.append(bytes(v))
        else:
            raise TypeError(f"a key must be str, bytes or int, not {type(v).__name__}")
    return out


def _string_digests(keys: list) -> np.ndarray:
    """blake2b-128 of each key (nulls as the digest of b''; callers mask them), big-endian halves -> (hi, lo)."""
    blake = hashlib.blake2b
    raw = b"".join([blake(k or b"", digest_size=16).digest() for k in keys])
    be = np.frombuffer(raw, dtype=">u8").reshape(-1, 2)
    out = np.empty(len(keys), UID_DTYPE)
    out["f0"], out["f1"] = be[:, 0], be[:, 1]
    return out


def _uid_digests(keys: list) -> tuple[np.ndarray, np.ndarray]:
    """(records, valid): the 128-bit value of each 32-digit lower-case hex uid; ``valid`` is False elsewhere."""
    n = len(keys)
    ok = np.fromiter((k is not None and len(k) == 32 for k in keys), bool, count=n)
    raw = b"".join([k if good else b"0" * 32 for k, good in zip(keys, ok)])
    nib = _HEX[np.frombuffer(raw, np.uint8)].reshape(n, 32)
    ok &= (nib != 255).all(axis=1)
    nib = np.where(nib == 255, 0, nib).astype(np.uint64)
    out = np.empty(n, UID_DTYPE)
    out["f0"] = (nib[:, :16] << _SHIFTS).sum(axis=1, dtype=np.uint64)
    out["f1"] = (nib[:, 16:] << _SHIFTS).sum(axis=1, dtype=np.uint64)
    return out, ok


def digest(values, *, kind: str = "string") -> np.ndarray:
    """The records (``UID_DTYPE``) a list of ``kind`` stores for ``values`` (str/bytes/int or a pyarrow array).
    ``kind="uid"`` raises ValueError for a value that is not a 32-digit lower-case hex uid."""
    keys = _as_bytes(values)
    if kind == "uid":
        out, ok = _uid_digests(keys)
        if not ok.all():
            raise ValueError(f"not a 32-digit lower-case hex uid: {keys[int(np.argmin(ok))]!r}")
        return out
    if kind != "string":
        raise ValueError(f"kind must be 'uid' or 'string', not {kind!r}")
    return _string_digests(keys)


# -- sorting ----------------------------------------------------------------------------------------------------
def _sort_unique(a: np.ndarray) -> np.ndarray:
    a = a[np.lexsort((a["f1"], a["f0"]))]
    if len(a) > 1:
        keep = np.ones(len(a), bool)
        keep[1:] = (a["f0"][1:] != a["f0"][:-1]) | (a["f1"][1:] != a["f1"][:-1])
        a = a[keep]
    return a


def _strictly_sorted(a: np.ndarray, chunk: int = _CHUNK_ROWS) -> bool:
    for s in range(0, max(len(a) - 1, 0), chunk):
        b = a[s:s + chunk + 1]
        hi, lo = b["f0"], b["f1"]
        if not ((hi[1:] > hi[:-1]) | ((hi[1:] == hi[:-1]) & (lo[1:] > lo[:-1]))).all():
            return False
    return True


def _open_records(path: str, count: int) -> np.ndarray:
    if count == 0:
        return np.empty(0, UID_DTYPE)
    return np.memmap(path, dtype=UID_DTYPE, mode="r", shape=(count,))


def _merge(runs: list[str], counts: list[int], out, budget: int) -> int:
    """k-way merge of sorted unique runs into ``out`` (a binary file), dropping duplicates; returns the count.
    Each round takes a block from every run and emits everything up to the smallest block end (which exhausts at
    least one block), so memory is ~``budget`` whatever the runs' lengths."""
    arrays = [_open_records(p, c) for p, c in zip(runs, counts)]
    pos = [0] * len(arrays)
    block = max(256, budget // (48 * len(arrays)))
    last, n = None, 0
    while True:
        blocks = [(i, a[pos[i]:pos[i] + block]) for i, a in enumerate(arrays) if pos[i] < len(a)]
        if not blocks:
            return n
        bound = min((b[-1] for _, b in blocks), key=lambda r: (int(r["f0"]), int(r["f1"])))
        bound = np.array([bound], UID_DTYPE)
        parts = []
        for i, b in blocks:
            j = int(np.searchsorted(b, bound, side="right")[0])
            parts.append(np.asarray(b[:j]))
            pos[i] += j
        a = _sort_unique(np.concatenate(parts))
        if last is not None and len(a) and a[0]["f0"] == last["f0"] and a[0]["f1"] == last["f1"]:
            a = a[1:]
        if len(a):
            out.write(a.tobytes())
            last = a[-1].copy()
            n += len(a)


def build_sorted(chunks: Iterable[np.ndarray], out_path: str, *, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """Sort and deduplicate the records of ``chunks`` into the raw file ``out_path`` (written under a temporary
    name, then renamed); sorted runs spill to disk when more than ``memory_budget`` bytes' worth arrive.
    Returns the number of distinct records."""
    run_rows = max(1024, memory_budget // 48)  # a record, its copy and lexsort's index
    folder = os.path.dirname(out_path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = out_path + f".tmp-{os.getpid()}"
    with tempfile.TemporaryDirectory(dir=folder, prefix="runs-") as work:
        runs, counts, buf, nbuf = [], [], [], 0

        def spill():
            nonlocal buf, nbuf
            a = _sort_unique(np.concatenate(buf))
            buf, nbuf = [], 0
            p = os.path.join(work, f"run-{len(runs):06d}")
            a.tofile(p)
            runs.append(p)
            counts.append(len(a))

        for c in chunks:
            while len(c):
                take = c[:run_rows - nbuf]
                c = c[len(take):]
                buf.append(np.asarray(take, UID_DTYPE))
                nbuf += len(take)
                if nbuf >= run_rows:
                    spill()
        if buf and not runs:  # fits the budget: one sort, no merge
            a = _sort_unique(np.concatenate(buf))
            a.tofile(tmp)
            n = len(a)
        else:
            if buf:
                spill()
            with open(tmp, "wb") as out:
                n = _merge(runs, counts, out, memory_budget) if runs else 0
    os.replace(tmp, out_path)
    return n


# -- list files -------------------------------------------------------------------------------------------------
def _file_identity(url: str) -> str:
    fsys, path = lfs.get_fs(url)
    info = fsys.info(path)
    stamp = info.get("mtime") or info.get("updated") or info.get("etag") or info.get("ETag") or ""
    if lfs.is_local(url):
        st = os.stat(path)
        path, stamp = os.path.realpath(path), st.st_mtime_ns
    return hashlib.blake2b(json.dumps([path, info.get("size"), str(stamp)]).encode(), digest_size=16).hexdigest()


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_json(path: str, obj) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _local_copy(url: str, cache: str) -> tuple[str, dict]:
    """(a local path holding the list file, its memo {sha256, ...}): local files are read in place; a remote one is
    copied into the cache once (named by its sha256)."""
    memo_path = os.path.join(cache, "memo", _file_identity(url) + ".json")
    memo = _read_json(memo_path) or {}
    local = lfs.is_local(url)
    if local:
        path = lfs.get_fs(url)[1]
    else:
        suffix = os.path.splitext(url.rstrip("/"))[1].lower()
        path = os.path.join(cache, "files", f"{memo.get('sha256', '')}{suffix}")
    if "sha256" not in memo or not os.path.exists(path):
        if local:
            memo = {"sha256": _sha256_file(path)}
        else:
            os.makedirs(os.path.join(cache, "files"), exist_ok=True)
            tmp = os.path.join(cache, "files", f"download-{os.getpid()}{suffix}")
            h = hashlib.sha256()
            with lfs.open_file(url, "rb") as src, open(tmp, "wb") as dst:
                for block in iter(lambda: src.read(1 << 24), b""):
                    h.update(block)
                    dst.write(block)
            memo = {"sha256": h.hexdigest()}
            path = os.path.join(cache, "files", f"{memo['sha256']}{suffix}")
            os.replace(tmp, path)
        os.makedirs(os.path.dirname(memo_path), exist_ok=True)
        _atomic_json(memo_path, memo)
    memo["_memo_path"] = memo_path
    return path, memo


def _pick_column(url: str, names: list[str], column: str | None) -> str:
    if column is not None:
        if column not in names:
            raise DataError(f"the key list has no column {column!r} (columns: {names})", where=url,
                            fix="name one of its columns")
        return column
    for c in COLUMNS:
        if c in names:
            return c
    if len(names) == 1:
        return names[0]
    raise _fail(url, f"no column 'key' or 'uid' (or url, sha256, md5) among {names}")


def _key_chunks(url: str, path: str, column: str | None) -> Iterator[list]:
    """The keys of the list file, in chunks of bytes (None for a null)."""
    name = url.lower()
    if name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
            col = _pick_column(url, pf.schema_arrow.names, column)
            for batch in pf.iter_batches(batch_size=_CHUNK_ROWS, columns=[col]):
                arr = batch.column(0)
                if pa.types.is_floating(arr.type):
                    raise _fail(url, f"column {col!r} holds floats ({arr.type}), not keys")
                yield [k for k in _as_bytes(arr) if k is not None]
        except (DataError, TypeError) as e:
            if isinstance(e, DataError):
                raise
            raise _fail(url, str(e)) from e
        except Exception as e:
            raise _fail(url, f"{type(e).__name__}: {e}") from e
        return
    if name.endswith(".npy"):
        arr = _load_npy(url, path)
        if arr.dtype.kind not in "US":
            raise _fail(url, f"unsupported array dtype {arr.dtype}")
        arr = arr.reshape(-1)
        for s in range(0, len(arr), _CHUNK_ROWS):
            yield [k for k in _as_bytes(arr[s:s + _CHUNK_ROWS]) if k]
        return
    with open(path, "rb") as f:
        while True:
            lines = f.readlines(64 << 20)
            if not lines:
                return
            try:
                keys = [k.encode() for k in (ln.decode("utf-8").strip() for ln in lines) if k]
            except UnicodeDecodeError as e:
                raise _fail(url, "not UTF-8 text") from e
            yield keys


def _load_npy(url: str, path: str) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:
        raise _fail(url, f"{type(e).__name__}: {e}") from e


def _uid_records_view(arr: np.ndarray) -> np.ndarray | None:
    """``arr`` viewed as ``UID_DTYPE`` when it is DataComp's format (two native uint64 fields at offsets 0 and 8),
    None when it is not two-uint64 records at all; a byte-swapped file comes back converted (a copy)."""
    names = arr.dtype.names
    if not names or len(names) != 2 or arr.ndim != 1 or arr.dtype.itemsize != 16:
        return None
    fields = [arr.dtype.fields[n] for n in names]
    if not all(f[0].kind == "u" and f[0].itemsize == 8 for f in fields) or [f[1] for f in fields] != [0, 8]:
        return None
    if all(f[0].isnative for f in fields):
        return arr.view(UID_DTYPE)
    out = np.empty(len(arr), UID_DTYPE)
    out["f0"], out["f1"] = arr[names[0]], arr[names[1]]
    return out


class _NotUids(Exception):
    pass


def _digest_chunks(url: str, chunks: Iterator[list], kind: str) -> Iterator[np.ndarray]:
    for keys in chunks:
        if kind == "string":
            yield _string_digests(keys)
            continue
        recs, ok = _uid_digests(keys)
        if not ok.all():
            bad = keys[int(np.argmin(ok))]
            if kind == "auto":
                raise _NotUids()
            raise DataError(f"--kind uid: {bad!r} is not a 32-digit lower-case hex uid", where=url,
                            fix="give DataComp uids, or read the list as plain keys (kind string)")
        yield recs


# -- the list ---------------------------------------------------------------------------------------------------
class KeyList:
    """A sorted, memory-mapped set of keys (see the module's docstring); build with :func:`load`."""

    def __init__(self, records: np.ndarray, kind: str, source: str, sha256: str):
        self.records = records  # UID_DTYPE, strictly sorted; usually a read-only memory map
        self.kind = kind  # "uid" or "string"
        self.source = source
        self.sha256 = sha256

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"KeyList({self.source!r}, kind={self.kind}, {len(self)} keys)"

    def contains_records(self, q: np.ndarray) -> np.ndarray:
        """Membership of digests (``UID_DTYPE``) already computed with :func:`digest`."""
        recs, n = self.records, len(self.records)
        if n == 0 or len(q) == 0:
            return np.zeros(len(q), bool)
        i = np.minimum(np.searchsorted(recs, q), n - 1)
        hit = recs[i]
        return (hit["f0"] == q["f0"]) & (hit["f1"] == q["f1"])

    def contains(self, values) -> np.ndarray:
        """A bool per value (str/bytes/int, or a pyarrow Array/ChunkedArray); nulls are never contained."""
        keys = _as_bytes(values)
        present = np.fromiter((k is not None for k in keys), bool, count=len(keys))
        if self.kind == "uid":
            q, ok = _uid_digests(keys)
            present &= ok
        else:
            q = _string_digests(keys)
        return present & self.contains_records(q)

    def __contains__(self, value) -> bool:
        return bool(self.contains([value])[0])


_LOADED: dict[tuple, KeyList] = {}


def load(url: str, *, kind: str = "auto", column: str | None = None,
         memory_budget: int = DEFAULT_MEMORY_BUDGET) -> KeyList:
    """The key list at ``url`` (cached per process); builds its sorted cache file on first use."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    ident = (str(url), kind, column)
    if ident not in _LOADED:
        _LOADED[ident] = _load(str(url), kind, column, memory_budget)
    return _LOADED[ident]


def _load(url: str, kind: str, column: str | None, memory_budget: int) -> KeyList:
    cache = cache_dir()
    try:
        path, memo = _local_copy(url, cache)
    except FileNotFoundError:
        raise DataError("key list not found", where=url,
                        fix="check the list's path") from None
    except OSError as e:
        raise DataError(f"cannot read the key list: {e}", where=url, fix="check the path and its permissions") from e
    sha = memo["sha256"]
    name = url.lower()
    if name.endswith(".npy") and kind != "string":
        arr = _load_npy(url, path)
        recs = _uid_records_view(arr)
        if recs is None and kind == "uid" and arr.dtype.kind not in "US":
            raise _fail(url, f"unsupported array dtype {arr.dtype}")
        if recs is not None:
            if recs.base is not None and isinstance(arr, np.memmap) and memo.get("sorted") is None:
                memo["sorted"] = _strictly_sorted(recs)
                _atomic_json(memo.pop("_memo_path"), memo)
            if memo.get("sorted") and recs.dtype == UID_DTYPE and isinstance(arr, np.memmap):
                return KeyList(recs, "uid", url, sha)  # DataComp's file as it is
            return _cached(url, sha, "uid", "npy", memory_budget, lambda: _chunked(recs))
    elif name.endswith(".npy"):
        arr = _load_npy(url, path)
        recs = _uid_records_view(arr)
        if recs is not None:
            raise _fail(url, "a file of uid records cannot be read as string keys")
    tag = f"{column or ''}"
    if kind == "auto":
        try:
            return _cached(url, sha, "uid", tag, memory_budget,
                           lambda: _digest_chunks(url, _key_chunks(url, path, column), "auto"), probe=True)
        except _NotUids:
            kind = "string"
    return _cached(url, sha, kind, tag, memory_budget,
                   lambda: _digest_chunks(url, _key_chunks(url, path, column), kind))


def _chunked(recs: np.ndarray) -> Iterator[np.ndarray]:
    for s in range(0, len(recs), _CHUNK_ROWS):
        yield np.asarray(recs[s:s + _CHUNK_ROWS])


def _cached(url: str, sha: str, kind: str, tag: str, memory_budget: int, chunks, probe: bool = False) -> KeyList:
    """The cache entry ``sha-kind-tag`` (built from ``chunks()`` when missing).  ``probe``: an ``auto`` list tried
    as uids; a recorded "not uids" answer raises :class:`_NotUids` at once."""
    cache = cache_dir()
    os.makedirs(cache, exist_ok=True)
    stem = os.path.join(cache, f"v{_FORMAT}-{sha}-{kind}-{hashlib.sha1(tag.encode()).hexdigest()[:8]}")
    meta = _read_json(stem + ".json")
    if meta is not None and probe and meta.get("not_uids"):
        raise _NotUids()
    if meta is None or not os.path.exists(stem + ".keys"):
        try:
            n = build_sorted(chunks(), stem + ".keys", memory_budget=memory_budget)
        except _NotUids:
            _atomic_json(stem + ".json", {"not_uids": True, "source": url})
            raise
        meta = {"kind": kind, "count": n, "source": url, "sha256": sha}
        _atomic_json(stem + ".json", meta)
    return KeyList(_open_records(stem + ".keys", meta["count"]), kind, url, sha)
