"""Key / uid lists for ``--keep-keys`` and ``--drop-keys`` (DataComp-style subset files).

Accepted formats, chosen by the file name:

* ``.txt`` (or any other name): one key per line, blank lines ignored;
* ``.parquet``: the column ``key`` or ``uid`` (or the only column), as text;
* ``.npy``: an array of strings, or DataComp's subset format, a structured array of two uint64 fields per uid,
  read as the 32-digit lower-case hex uid (first field = the high 64 bits).

Lists are held in memory as a ``frozenset`` of bytes, once per worker process (~100 bytes per key).
"""
from __future__ import annotations

import io

from laionprep import fs as lfs
from laionprep.errors import DataError

_CACHE: dict[str, frozenset] = {}


def _fail(url: str, what: str) -> DataError:
    return DataError(f"cannot read the key list: {what}", where=url,
                     fix="give a .txt (one key per line), .parquet (column key or uid) or .npy (strings, or "
                         "DataComp's two-uint64 uid records) file")


def read_key_list(url: str) -> frozenset:
    try:
        with lfs.open_file(url, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError("key list not found", where=url,
                        fix="check the path given to --keep-keys/--drop-keys") from None
    name = url.lower()
    if name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(io.BytesIO(raw))
        except Exception as e:
            raise _fail(url, f"{type(e).__name__}: {e}") from e
        cols = ([c for c in ("key", "uid") if c in table.column_names]
                or (table.column_names if table.num_columns == 1 else []))
        if not cols:
            raise _fail(url, f"no column 'key' or 'uid' among {table.column_names}")
        col = table.column(cols[0])
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            col = pc.cast(col, pa.string())
        return frozenset(v.encode() for v in col.to_pylist() if v is not None)
    if name.endswith(".npy"):
        import numpy as np

        try:
            arr = np.load(io.BytesIO(raw), allow_pickle=False)
        except Exception as e:
            raise _fail(url, f"{type(e).__name__}: {e}") from e
        if arr.dtype.names and len(arr.dtype.names) == 2 and all(arr.dtype[n] == np.uint64 for n in arr.dtype.names):
            hi, lo = arr[arr.dtype.names[0]], arr[arr.dtype.names[1]]
            return frozenset(f"{int(a):016x}{int(b):016x}".encode() for a, b in zip(hi, lo))
        if arr.dtype.kind == "U":
            return frozenset(str(v).encode() for v in arr.ravel())
        if arr.dtype.kind == "S":
            return frozenset(bytes(v) for v in arr.ravel())
        raise _fail(url, f"unsupported array dtype {arr.dtype}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _fail(url, "not UTF-8 text") from e
    return frozenset(line.strip().encode() for line in text.splitlines() if line.strip())


def key_list(url: str | None) -> frozenset | None:
    """The list at ``url`` (cached per process), or None."""
    if not url:
        return None
    if url not in _CACHE:
        _CACHE[url] = read_key_list(url)
    return _CACHE[url]
