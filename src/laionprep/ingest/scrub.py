"""The download's input copies after ``laionprep remove``: a removed row's fields in ``DIR/metadata/`` and
``DIR/prefiltered/`` replaced in place by a tombstone (``folders.tombstone``), so no file holds its URL or caption
while every row keeps its position (img2dataset's plan: ``number_sample_per_shard`` rows per shard, in the order of
the prefiltered files).

A prefiltered row becomes the tombstone URL with every other column at its null sentinel (``""``, ``-1``, ``-1.0``:
the prefilter's types), a metadata row the tombstone URL with every other column null.  Each file is rewritten in
record batches (bounded memory) to a temporary name and renamed over the file: a kill leaves the old file or the
new one, and the temporary file is deleted by the next download (``metadata.remove_stale_tmp``) or overwritten by
the next remove.  The file's footer records what was done (:data:`SCRUB_KEY`: rows tombstoned per list and, the
first time, the size and version of the copy as fetched): the metadata fetch takes a scrubbed copy for a complete
one and the prefilter hashes it as the copy it was, so neither the plan nor the download's fingerprint changes; a
prefilter that would have to run again over scrubbed copies is refused (its tombstones would not be filtered as
the rows they replace were).  It imports only shared modules (``fs``, ``folders``).
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laionprep import fs as lfs
from laionprep.folders import tombstone
from laionprep.folders.replace import kill_point

SCRUB_KEY = b"laionprep.scrubbed"
BATCH_ROWS = 65536


def record(schema) -> dict | None:
    """The scrub record of a parquet file's ``schema`` (None: never scrubbed)."""
    raw = (schema.metadata or {}).get(SCRUB_KEY)
    return json.loads(raw) if raw else None


def original_version(schema) -> tuple | None:
    """``fs.version_key`` of the copy before its first scrub (None: never scrubbed)."""
    r = record(schema)
    return tuple(r["version"]) if r else None


def source_size(path: str) -> int | None:
    """The size of the copy ``path`` was before ``laionprep remove`` scrubbed it (its footer), None otherwise."""
    try:
        with lfs.open_file(path) as f:
            r = record(pq.ParquetFile(f).schema_arrow)
    except Exception:  # noqa: BLE001  (unreadable: not a scrubbed copy; the fetch replaces it)
        return None
    return r.get("size") if r else None


def rows_scrubbed(path: str, ident: str) -> int:
    """Rows of ``path`` tombstoned for list ``ident``."""
    with lfs.open_file(path) as f:
        r = record(pq.ParquetFile(f).schema_arrow)
    return int((r or {}).get("lists", {}).get(ident, 0))


def _blank(arr: pa.Array, mask: pa.Array, sentinel: bool) -> pa.Array:
    t = arr.type
    if not sentinel:
        value = pa.scalar(None, type=t)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        value = pa.scalar("", type=t)
    elif pa.types.is_floating(t):
        value = pa.scalar(-1.0, type=t)
    elif pa.types.is_integer(t):
        value = pa.scalar(-1, type=t)
    else:
        value = pa.scalar(None, type=t)
    return pc.if_else(mask, value, arr)


def tombstone_rows(path: str, url_col: str, select, ident: str, *, sentinel: bool, columns=None,
                   step: str = "scrub") -> int:
    """Replace the rows of parquet file ``path`` that ``select(batch, first_row) -> bool array`` picks (batches
    of ``columns``, default ``[url_col]``) by tombstones of list ``ident``; rows already tombstoned are left.
    Returns the rows replaced now (0: the file is untouched)."""
    cols = list(dict.fromkeys([url_col, *(columns or [])]))

    def masks(pf, read_cols):
        start = 0
        for b in pf.iter_batches(batch_size=BATCH_ROWS, columns=read_cols):
            urls = b.column(b.schema.get_field_index(url_col))
            m = np.asarray(select(b, start), dtype=bool)
            m &= ~np.asarray(pc.fill_null(pc.starts_with(urls, tombstone.PREFIX), False), dtype=bool)
            start += b.num_rows
            yield b, m

    with lfs.open_file(path) as f:
        pf = pq.ParquetFile(f)
        schema = pf.schema_arrow
        count = sum(int(m.sum()) for _, m in masks(pf, cols))
    if not count:
        return 0
    rec = record(schema) or {"size": lfs.size(path), "version": list(lfs.version_key(path)), "lists": {}}
    rec["lists"][ident] = int(rec["lists"].get(ident, 0)) + count
    meta = {**(schema.metadata or {}), SCRUB_KEY: json.dumps(rec, sort_keys=True).encode()}
    out_schema = pa.schema([fld.with_nullable(True) for fld in schema], metadata=meta)
    stone = pa.scalar(tombstone.url(ident), type=schema.field(url_col).type)
    tmp = lfs.tmp_name(path)
    with lfs.open_file(path) as f, lfs.open_file(tmp, "wb") as g:
        writer = pq.ParquetWriter(g, out_schema)
        for b, m in masks(pq.ParquetFile(f), None):
            mask = pa.array(m)
            arrays = [pc.if_else(mask, stone, a) if name == url_col else _blank(a, mask, sentinel)
                      for name, a in zip(b.schema.names, b.columns)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=out_schema))
        writer.close()
    kill_point(step, "written")
    lfs.rename(tmp, path)
    return count


def values_at(path: str, column: str, rows: np.ndarray) -> list:
    """The values of ``column`` at the sorted row positions ``rows`` of parquet file ``path`` (batch by batch)."""
    out: list = []
    start = 0
    with lfs.open_file(path) as f:
        for b in pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS, columns=[column]):
            a, z = np.searchsorted(rows, start), np.searchsorted(rows, start + b.num_rows)
            if z > a:
                out.extend(b.column(0).take(pa.array(rows[a:z] - start)).to_pylist())
            start += b.num_rows
    return out


def positions_mask(rows: np.ndarray):
    """A ``select`` for :func:`tombstone_rows`: the sorted row positions ``rows``."""
    def select(batch, start):
        m = np.zeros(batch.num_rows, dtype=bool)
        a, z = np.searchsorted(rows, start), np.searchsorted(rows, start + batch.num_rows)
        m[rows[a:z] - start] = True
        return m
    return select


__all__ = ["SCRUB_KEY", "original_version", "positions_mask", "record", "rows_scrubbed", "source_size",
           "tombstone_rows", "values_at"]
