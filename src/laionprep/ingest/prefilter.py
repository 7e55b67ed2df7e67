"""Metadata prefilter: columnar (pyarrow.compute), never row-by-row Python.

For each metadata parquet, in order: resolve the spec's columns case-insensitively, rename them to canonical names
(``url``, ``caption``, each carried column's name), make every carried column one type with no nulls (the
sentinels in :data:`laionprep.datasets.SENTINELS`), then drop rows for the first reason that applies, in this
order:

``invalid_url``      URL null, empty, or not http(s)://
``empty_caption``    caption null or empty after stripping white space
``nsfw``             NSFW tag not in the kept set
``low_similarity``   similarity below the threshold, or null
``high_punsafe``     punsafe at or above the threshold, or null
``high_pwatermark``  pwatermark at or above the threshold, or null
``duplicate_url``    URL seen earlier in this or an earlier file (first occurrence kept)

URL, caption and text columns must be text (string, binary or all-null): another type is a DataError naming the
column and the file.  Bytes that are not UTF-8 are repaired (U+FFFD), counted per column and reported with their
rows; captions over :data:`LONG_CAPTION_CHARS` characters are kept whole and reported; an all-null URL or caption
column and a zero-row file are reported.  Nothing is dropped without a reason and a count.

Output: ``DIR/prefiltered/NNNNN.parquet`` (one per metadata file, possibly empty) and a report with rows in,
rows out and rows dropped per reason, per file and in total.  img2dataset stores a null as bytes and a list column
as an EMPTY tfrecord, so normalising here is what keeps every record parseable.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
from collections import Counter
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laionprep import fs as lfs
from laionprep.datasets import FILTER_KINDS, Column, DatasetSpec, Filters, active_filters, resolve_columns
from laionprep.errors import DataError
from laionprep.manifest import check_accounting

REASONS = ("invalid_url", "empty_caption", "nsfw", "low_similarity", "high_punsafe", "high_pwatermark", "duplicate_url")
REPORT_NAME = "_prefilter_report.json"
_UNREADABLE_FIX = "delete it and re-run to fetch it again, or replace it with a valid parquet file"


@dataclasses.dataclass
class PrefilterReport:
    rows_in: int
    rows_out: int
    dropped: dict[str, int]
    files: list[dict]
    columns: dict[str, str]  # canonical name -> kind actually written
    warnings: list[str]
    params_hash: str
    filters: dict = dataclasses.field(default_factory=dict)  # the filters applied (validate compares the manifest's)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def params_hash(spec: DatasetSpec, filters: Filters, columns: Sequence[Column], inputs: Sequence[str],
                max_samples: int | None, versions: Sequence[tuple | None] | None = None) -> str:
    """The prefilter's parameters and inputs; an input ``laionprep remove`` scrubbed counts as the copy it was
    (``versions``: ``metadata.FetchResult.versions``), so the prefilter's output stays the download's plan."""
    versions = list(versions or [])
    versions += [None] * (len(inputs) - len(versions))
    h = hashlib.sha256()
    h.update(json.dumps({
        "spec": spec.name, "filters": filters.to_dict(), "columns": [dataclasses.asdict(c) for c in columns],
        "inputs": [(posixpath.basename(p), *(v or lfs.version_key(p))) for p, v in zip(inputs, versions)],
        "max_samples": max_samples,
    }, sort_keys=True).encode())
    return h.hexdigest()[:16]


class FilterColumnMissing(DataError):
    """A filter's column is absent from a metadata file (the file itself is fine: its copy is kept)."""


def _filter_column_candidates(spec: DatasetSpec, name: str) -> tuple[str, ...]:
    c = spec.column(name)
    return c.all_candidates if c else (name,)


def check_filter_columns(spec: DatasetSpec, filters: Filters, schemas: Sequence[tuple[str, Sequence[str]]]) -> None:
    """Refuse, before anything is filtered or downloaded, a filter whose column some file lacks: filling it with
    its sentinel would drop every row of that file (a missing URL or caption column is refused first).
    ``schemas``: (file, its column names) from the footers."""
    active = active_filters(filters, spec)
    missing: list[tuple[str, str, str]] = []  # (file, filter field, column)
    for where, names in schemas:
        resolve_columns(spec, names, where=where, columns=())  # no URL or caption column: that error first
        lower = {n.lower() for n in names}
        for kind, col in active:
            if not any(c.lower() in lower for c in _filter_column_candidates(spec, col)):
                missing.append((where, kind.field, col))
    if not missing:
        return
    where, field, col = missing[0]
    files = sorted({m[0] for m in missing if m[1] == field})
    more = f" ({len(files)} of {len(schemas)} files lack it)" if len(files) > 1 else ""
    fields = list(dict.fromkeys(m[1] for m in missing))  # every filter some file lacks the column of
    also = f"; the {', '.join(fields[1:])} filter(s) lack their columns too" if len(fields) > 1 else ""
    names = next(n for w, n in schemas if w == where)
    offs = " ".join(k.off for k in FILTER_KINDS if k.field in fields)
    raise FilterColumnMissing(
        f"the {field} filter reads column {col!r}, which this metadata file does not have{more}{also} "
        f"(columns: {', '.join(names)})", where=where,
        fix=f"turn {'these filters' if len(fields) > 1 else 'the filter'} off with {offs} (or every default filter "
            f"with --no-filters), or use metadata that has {col!r}")


def _footer_names(path: str) -> list[str]:
    try:
        with lfs.open_file(path) as f:
            return pq.ParquetFile(f).schema_arrow.names
    except Exception as e:
        raise DataError(f"unreadable parquet: {type(e).__name__}: {e}", where=path, fix=_UNREADABLE_FIX) from e


def _arrow_type(kind: str) -> pa.DataType:
    return {"float": pa.float64(), "int": pa.int64(), "str": pa.string(), "json": pa.string()}[kind]


def _normalise_column(arr: pa.ChunkedArray | None, col: Column, n: int, where: str,
                      bad_utf8: list[int] | None = None) -> tuple[pa.Array, int]:
    """Cast to the column's kind and replace nulls with its sentinel.  Returns (array, nulls replaced); rows whose
    text was not valid UTF-8 (repaired) are appended to ``bad_utf8``."""
    target = _arrow_type(col.kind)
    if arr is None:
        return pa.array([col.sentinel] * n, type=target), n
    if col.kind == "json":
        nulls = arr.null_count
        values = [col.sentinel if v is None else json.dumps(v, separators=(",", ":")) for v in arr.to_pylist()]
        return pa.array(values, type=target), nulls
    if col.kind == "str":
        arr, bad = as_text(arr, col.name, where)
        if bad_utf8 is not None:
            bad_utf8.extend(bad)
    try:
        if pa.types.is_floating(target) and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            raise pa.ArrowInvalid("string column where a number is expected")
        cast = pc.cast(arr, target) if arr.type != target else arr
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise DataError(
            f"column {col.name!r} has type {arr.type}, which cannot be read as {col.kind}: {e}",
            where=where, fix="fix the column's type in this file, or leave it out with --columns",
        ) from e
    nulls = cast.null_count
    if pa.types.is_floating(target):
        nan = int(pc.sum(pc.is_nan(cast)).as_py() or 0) if len(cast) else 0
        if nan:
            nulls += nan
            cast = pc.if_else(pc.is_nan(cast), pa.scalar(None, target), cast)
    return (pc.fill_null(cast, pa.scalar(col.sentinel, target)) if nulls else cast), nulls


LONG_CAPTION_CHARS = 4096  # captions longer than this are kept whole, and counted and reported


def _is_text_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or (
        pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)))


def as_text(arr: pa.ChunkedArray, name: str, where: str, expected: str = "text") -> tuple[pa.ChunkedArray, list[int]]:
    """``arr`` as a UTF-8 string column, and the rows (0-based, in the file) whose bytes were not valid UTF-8.

    Text, binary and all-null columns are accepted; anything else (numbers, lists...) is a :class:`DataError` naming
    the column, its type and the file.  Invalid UTF-8 (a binary column, or a string column written by a tool that
    does not check) is repaired, not dropped: each invalid byte sequence becomes U+FFFD and the rows are returned so
    that the caller counts and reports them.
    """
    t = arr.type
    if not (_is_text_type(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_null(t)):
        raise DataError(f"column {name!r} has type {t}, expected {expected}", where=where,
                        fix=f"write {name!r} as a string column in this file (or check that this is the right "
                            "dataset's metadata: `laionprep datasets -v`)")
    if pa.types.is_dictionary(t):
        arr = pc.cast(arr, t.value_type)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        try:
            arr.validate(full=True)
            return arr, []
        except pa.ArrowInvalid:
            pass  # strings with invalid UTF-8 bytes: repaired below
    elif pa.types.is_null(arr.type):
        return pc.cast(arr, pa.string()), []
    else:
        try:
            return pc.cast(arr, pa.string()), []
        except pa.ArrowInvalid:
            pass  # binary that is not UTF-8: repaired below
    raw = pc.cast(arr, pa.large_binary()) if not pa.types.is_binary(arr.type) else arr
    values, bad = [], []
    for i, v in enumerate(raw.to_pylist()):  # row by row only on this rare, broken-input path
        if v is not None:
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                v = v.decode("utf-8", "replace")
                bad.append(i)
        values.append(v)
    return pa.chunked_array([pa.array(values, type=pa.string())]), bad


def _why(reason: str, active, null_cols: Sequence[str]) -> str:
    """The likely cause and fix of ``reason`` taking every row: ': column C is null in all rows: turn ...'."""
    for kind, col in active:
        if kind.reason == reason:
            cause = f"the {col!r} column is null in all rows: " if col in null_cols else ""
            return f" ({kind.field} filter): {cause}turn the filter off with {kind.off}"
    return {"invalid_url": ": no http(s) URL in the URL column (is this the dataset's metadata? `laionprep datasets`)",
            "empty_caption": ": every caption is empty (is this the dataset's metadata? `laionprep datasets`)",
            }.get(reason, "")


def nothing_kept(report: PrefilterReport, spec: DatasetSpec, filters: Filters) -> tuple[str, str]:
    """(what, fix) when the prefilter kept nothing of a non-empty input: the reasons and their likely fixes."""
    active = active_filters(filters, spec)
    reasons = sorted(((r, k) for r, k in report.dropped.items() if k), key=lambda rk: -rk[1])
    what = f"the prefilter kept none of the {report.rows_in} rows: " + ", ".join(f"{r} {k}" for r, k in reasons)
    fixes = []
    for r, _ in reasons:
        files = [f["input"] for f in report.files if f.get("all_dropped_by") == r]
        nulls = sorted({c for f in report.files for c in f.get("null_filter_columns", ())})
        kind = next((k for k, _ in active if k.reason == r), None)
        if kind is not None:
            col = kind.column_of(spec)
            cause = ""
            if col in nulls:
                null_files = [f["input"] for f in report.files if col in f.get("null_filter_columns", ())]
                cause = f"the {col!r} column is null in all rows of {', '.join(null_files[:3])}: "
            fixes.append(f"every row was dropped by {kind.field}" if len(reasons) == 1 else f"{r}: {kind.field}")
            fixes[-1] += f": {cause}turn the filter off with {kind.off}" + ("" if cause else " or loosen it")
        else:
            fixes.append(f"{r}{_why(r, active, ()) or ''}" + (f" ({', '.join(files[:3])})" if files else ""))
    return what, "; ".join(fixes)


def _rows(rows: Sequence[int], k: int = 5, total: int | None = None) -> str:
    """The first ``k`` rows, and how many in all (``total``: when only the first rows were kept)."""
    total = len(rows) if total is None else total
    return ", ".join(str(r) for r in rows[:k]) + (f" ... ({total} in all)" if total > k else "")


def kind_of(arrow_type: pa.DataType) -> str:
    """The column kind img2dataset can store for an arrow type (lists and structs become JSON text)."""
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "float"
    if pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type):
        return "int"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_binary(arrow_type):
        return "str"
    return "json"


# ------------------------------------------------------------------------------------------- the three phases
DEFAULT_MEMORY_BUDGET = 2 << 30
MIN_MEMORY_BUDGET = 64 << 20  # the flag's floor (the library takes less, for tests of many batches and partitions)
SERIAL_BELOW_ROWS = 200_000  # fewer rows in all: one process (a worker pool's start costs more than it saves)
_WORK_FACTOR = 6  # working bytes per row of a batch: decoded columns, normalised copies, masks, the output


@dataclasses.dataclass(frozen=True)
class _Job:
    """Phase 1 of one metadata file (picklable: runs in a worker process)."""

    index: int
    path: str
    limit: int  # rows to read (--max-samples)
    batch_rows: int
    spec: DatasetSpec
    filters: Filters
    columns: tuple[Column, ...]
    output: str  # local phase-1 output
    spill_dir: str | None  # None: no spill (one file read in one batch: its duplicates are all found in phase 1)
    partitions: int
    chunk_rows: int


@dataclasses.dataclass
class _FileResult:
    index: int
    rows_in: int
    kept: int  # after phase 1 (duplicates within a batch removed)
    dropped: Counter
    nulls: dict
    repaired: dict
    long_rows: list  # the first rows (for the warning) and the count
    long_count: int
    longest: int
    kinds: dict  # json columns whose source type is not a list: the kind written instead
    head_warnings: list  # in the order of the old single-pass prefilter
    null_cols: list
    chunks: int


def _batches(pf: pq.ParquetFile, cols: list[str], limit: int, batch_rows: int, path: str):
    """Record batches of at most ``batch_rows`` rows, ``limit`` rows in all; one empty batch for an empty file."""
    left = limit
    try:
        if limit <= batch_rows:  # the file fits the budget: one batch (its duplicates are all found in phase 1)
            t = pf.read(columns=cols)
            yield t.slice(0, limit) if t.num_rows > limit else t
            return
        for b in pf.iter_batches(batch_size=batch_rows, columns=cols, use_threads=True):
            if left <= 0:
                break
            if b.num_rows > left:
                b = b.slice(0, left)
            left -= b.num_rows
            yield pa.Table.from_batches([b])
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"unreadable parquet: {type(e).__name__}: {e}", where=path, fix=_UNREADABLE_FIX) from e
    if left == limit:
        yield pf.schema_arrow.empty_table().select(cols)


def _filter_file(job: _Job) -> _FileResult:
    """Phase 1: normalise and filter one file batch by batch; write the kept rows (duplicates within a batch
    removed) to ``job.output`` and spill their URL hashes."""
    from laionprep.ingest import url_dedup

    path, spec, filters, columns = job.path, job.spec, job.filters, list(job.columns)
    try:
        pf = pq.ParquetFile(lfs.open_file(path) if not lfs.is_local(path) else path)
        names = pf.schema_arrow.names
    except Exception as e:
        raise DataError(f"unreadable parquet: {type(e).__name__}: {e}", where=path, fix=_UNREADABLE_FIX) from e
    mapping = resolve_columns(spec, names, where=path, columns=columns)
    wanted = list(dict.fromkeys([mapping["url"], mapping["caption"]]
                                + [mapping[c.name] for c in columns if mapping.get(c.name)]))
    base = os.path.basename(path)
    res = _FileResult(index=job.index, rows_in=0, kept=0, dropped=Counter(), nulls={}, repaired={}, long_rows=[],
                      long_count=0, longest=0, kinds={}, head_warnings=[], null_cols=[], chunks=0)
    bad_rows: dict[str, list[int]] = {}  # column -> rows (in the file) whose UTF-8 was repaired
    text_nulls = {"url": 0, "caption": 0}
    active = active_filters(filters, spec)
    spill = url_dedup.Spill(job.spill_dir, job.index, job.partitions, job.chunk_rows) if job.spill_dir else None
    writer = None
    try:
        for table in _batches(pf, wanted, job.limit, job.batch_rows, path):
            start, n = res.rows_in, table.num_rows
            out, alive = _filter_batch(table, mapping, columns, spec, filters, active, path, start, res, bad_rows,
                                       text_nulls)
            res.rows_in += n
            # duplicates within the batch (first occurrence kept); across batches and files: phase 2, from the
            # spilled hashes.  Both compare the 128-bit hash (url_dedup)
            idx = np.flatnonzero(alive)
            if len(idx):
                h1, h2 = url_dedup.url_hashes(out["url"].take(pa.array(idx)))
                dup = ~url_dedup.first_distinct(h1, h2)
                res.dropped["duplicate_url"] += int(dup.sum())
                alive[idx[dup]] = False
                if spill is not None:
                    spill.add(h1[~dup], h2[~dup], res.kept)
            kept_table = pa.table(out).filter(pa.array(alive))
            res.kept += kept_table.num_rows
            if writer is None:
                writer = pq.ParquetWriter(job.output, kept_table.schema)
            writer.write_table(kept_table)
    finally:
        if writer is not None:
            writer.close()
    if spill is not None:
        res.chunks = spill.close()
    n = res.rows_in
    # the warnings of this file, in the order the single-pass prefilter gave them
    w = res.head_warnings
    for c in columns:
        if mapping.get(c.name) is None:
            w.append(f"{base}: column {c.name!r} missing; filled with sentinel {c.sentinel!r}")

    def note_utf8(name):
        bad = bad_rows.get(name)
        if bad:
            res.repaired[name] = len(bad)
            w.append(f"{base}: {len(bad)} value(s) of column {name!r} are not valid UTF-8 (rows "
                     f"{_rows(bad)}): kept, with each invalid byte sequence replaced by U+FFFD")

    for key, role in (("url", "URL"), ("caption", "caption")):
        note_utf8(mapping[key])
        if n and text_nulls[key] == n:
            w.append(f"{base}: column {mapping[key]!r} ({role}) is null in all {n} rows")
    for c in columns:
        note_utf8(mapping.get(c.name) or c.name)
    if n == 0:
        w.append(f"{base}: the file has no rows")
    if res.long_count:
        w.append(f"{base}: {res.long_count} caption(s) longer than {LONG_CAPTION_CHARS} characters (rows "
                 f"{_rows(res.long_rows, total=res.long_count)}; longest {res.longest:,}) are kept whole: `laionprep "
                 "reshard --max-caption-chars` drops them, the trainer's tokenizer truncates them")
    res.null_cols = [col for _, col in active if n and res.nulls.get(col) == n]
    return res


def _filter_batch(table: pa.Table, mapping: dict, columns: list[Column], spec: DatasetSpec, filters: Filters,
                  active, where: str, start: int, res: _FileResult, bad_rows: dict, text_nulls: dict):
    """Normalise one batch and apply the drop reasons (first that applies wins); returns (columns, alive mask)."""
    n = table.num_rows

    def text(key, role):
        col_name = mapping[key]
        arr, bad = as_text(table.column(col_name), col_name, where, expected=f"text (the {role})")
        if bad:
            bad_rows.setdefault(col_name, []).extend(start + b for b in bad)
        text_nulls[key] += arr.null_count
        return pc.fill_null(arr, "") if arr.null_count else arr  # no copy when there is nothing to fill

    out_cols = {"url": text("url", "URL"), "caption": text("caption", "caption")}
    for c in columns:
        src = table.column(mapping[c.name]) if mapping.get(c.name) else None
        if c.kind == "json" and src is not None and kind_of(src.type) != "json":
            c = dataclasses.replace(c, kind=kind_of(src.type))
            res.kinds[c.name] = c.kind
        bad: list[int] = []
        out_cols[c.name], nulls = _normalise_column(src, c, n, where, bad)
        res.nulls[c.name] = res.nulls.get(c.name, 0) + nulls
        if bad:
            bad_rows.setdefault(mapping.get(c.name) or c.name, []).extend(start + b for b in bad)
    # characters <= bytes: count characters only when some caption has more bytes than the limit (rare)
    if n and pc.max(pc.binary_length(out_cols["caption"])).as_py() > LONG_CAPTION_CHARS:
        cap_len = pc.utf8_length(out_cols["caption"])
        long_rows = np.flatnonzero(np.asarray(pc.greater(cap_len, LONG_CAPTION_CHARS).to_numpy(
            zero_copy_only=False), dtype=bool))
        if len(long_rows):
            res.long_count += len(long_rows)
            if len(res.long_rows) < 5:  # only the first few are named
                res.long_rows.extend((start + long_rows[:5]).tolist())
            res.longest = max(res.longest, int(pc.max(cap_len).as_py()))
    fails = []
    u = out_cols["url"]
    scheme = pc.ascii_lower(pc.utf8_slice_codeunits(u, 0, 8))  # 2x faster than case-blind starts_with on u
    fails.append(("invalid_url", pc.invert(pc.or_(pc.starts_with(scheme, "http://"),
                                                  pc.starts_with(scheme, "https://")))))
    c = out_cols["caption"]
    fails.append(("empty_caption", pc.or_(pc.equal(pc.binary_length(c), 0), pc.utf8_is_space(c))))
    for kind, col in active:
        v = out_cols[col]
        if kind.field == "nsfw":
            keep = pa.array(list(filters.nsfw), type=pa.string())
            mask = pc.invert(pc.is_in(pc.utf8_upper(v), value_set=pc.utf8_upper(keep)))
        elif kind.field == "min_similarity":
            mask = pc.or_(pc.less(v, filters.min_similarity), pc.equal(v, -1.0))
        else:  # a maximum: at or above it fails
            mask = pc.or_(pc.greater_equal(v, getattr(filters, kind.field)), pc.equal(v, -1.0))
        fails.append((kind.reason, mask))
    alive = np.ones(n, dtype=bool)
    for reason, mask in fails:
        m = np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool) & alive
        res.dropped[reason] += int(m.sum())
        alive &= ~m
    return out_cols, alive


def _finish_file(args) -> None:
    """Phase 3: the file's final output: its phase-1 output without the duplicates phase 2 found (or moved as is)."""
    from laionprep.ingest import url_dedup

    src, dst, dup_dir, partitions, index, batch_rows = args
    rows = url_dedup.dup_rows(dup_dir, partitions, index) if dup_dir else np.empty(0, np.int64)
    tmp = lfs.tmp_name(dst)
    if not len(rows):
        if lfs.is_local(dst):
            os.replace(src, tmp)
        else:
            with open(src, "rb") as f, lfs.open_file(tmp, "wb") as g:
                shutil.copyfileobj(f, g, 1 << 22)
        lfs.rename(tmp, dst)
        return
    pfile = pq.ParquetFile(src)
    start = 0
    with lfs.open_file(tmp, "wb") as f:
        writer = None
        for b in pfile.iter_batches(batch_size=batch_rows) if pfile.metadata.num_rows else ():
            t = pa.Table.from_batches([b], schema=pfile.schema_arrow)
            keep = np.ones(t.num_rows, dtype=bool)
            a, z = np.searchsorted(rows, start), np.searchsorted(rows, start + t.num_rows)
            keep[rows[a:z] - start] = False
            start += t.num_rows
            t = t.filter(pa.array(keep))
            if writer is None:
                writer = pq.ParquetWriter(f, t.schema)
            writer.write_table(t)
        if writer is not None:
            writer.close()
    os.remove(src)
    lfs.rename(tmp, dst)


def _batch_rows(md, limit: int, budget: int) -> int:
    """Rows per batch so that a batch's working set stays within ``budget`` bytes (from the footer's sizes, read
    once per file by the caller: on an object store each footer read is a request)."""
    size = sum(md.row_group(g).total_byte_size for g in range(md.num_row_groups))
    per_row = max(64, size // max(md.num_rows, 1))
    return int(max(1024, min(max(limit, 1), budget // (per_row * _WORK_FACTOR))))


def _pool(processes: int):
    import concurrent.futures
    import multiprocessing

    return concurrent.futures.ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))


def prefilter(spec: DatasetSpec, inputs: Sequence[str], out_dir: str, filters: Filters, *,
              columns: Sequence[Column] | None = None, max_samples: int | None = None,
              schemas: Sequence[Sequence[str]] | None = None, progress=None,
              memory_budget: int = DEFAULT_MEMORY_BUDGET, processes: int = 1,
              work_dir: str | None = None, versions: Sequence[tuple | None] | None = None,
              frozen: str | None = None) -> PrefilterReport:
    """Filter ``inputs`` (local parquet paths) into ``out_dir``; returns the report (also written to out_dir).

    ``schemas``: each input's column names when the caller already read the footers (else they are read here);
    every file is checked for the filters' columns before anything is written (:func:`check_filter_columns`).
    Re-running with the same inputs and parameters finds the report and returns it without rewriting (the
    output is deterministic either way, which is what img2dataset's resume relies on).

    ``memory_budget`` (bytes, all processes together) sizes the record batches and the duplicate partitions;
    ``processes`` (0: one per core) runs phase 1 (per file), 2 (per partition) and 3 (per file) in parallel.
    Neither changes the output.  ``work_dir``: local scratch (default: inside ``out_dir`` when it is local).
    ``versions``: ``metadata.FetchResult.versions`` (a scrubbed copy is hashed as the copy it was); ``frozen``: why
    the output may not be made again (``laionprep remove`` tombstoned rows in it), which makes a re-run an error.
    """
    from laionprep.ingest import url_dedup

    columns = list(spec.extra_columns if columns is None else columns)
    carried = {c.name for c in columns}
    for kind, col in active_filters(filters, spec):
        if col not in carried:
            raise DataError(f"the {kind.field} filter reads column {col!r}, which is not among the carried columns "
                            f"{sorted(carried)}", where="--columns",
                            fix=f"carry {col!r} too, or turn the filter off with {kind.off}")
    if schemas is None:
        schemas = [_footer_names(p) for p in inputs]
    check_filter_columns(spec, filters, list(zip(inputs, schemas)))
    phash = params_hash(spec, filters, columns, inputs, max_samples, versions)
    report_path = lfs.join(out_dir, REPORT_NAME)
    if lfs.exists(report_path):
        old = lfs.read_json(report_path)
        if old.get("params_hash") == phash and all(lfs.exists(lfs.join(out_dir, f["output"])) for f in old["files"]):
            return PrefilterReport(**old)
    scrubbed = [p for p, v in zip(inputs, versions or ()) if v]
    if scrubbed or frozen:  # tombstones are not filtered as the rows they replace were, the source has the rows
        why = frozen or f"`laionprep remove` scrubbed {len(scrubbed)} of its input copies (e.g. {scrubbed[0]})"
        raise DataError(f"the prefilter would have to run again ({out_dir} is missing a file or its report, or an "
                        f"input changed), but {why}: a new prefilter output would not be the one the finished "
                        "shards were planned from and removed from", where=out_dir,
                        fix="restore the prefiltered folder from a backup, or start over with --restart and apply "
                            "the removal list(s) again with `laionprep remove`")
    lfs.makedirs(out_dir)
    for n in lfs.listdir(out_dir):  # outputs of an earlier run with other parameters or a killed run
        if n.endswith(".parquet") or lfs.TMP_MARK in n:
            p = lfs.join(out_dir, n)
            if lfs.is_local(p) and os.path.isdir(p):
                shutil.rmtree(p)
            else:
                lfs.remove(p)

    # which files and how many rows of each (--max-samples stops at a row count: known from the footers)
    limits: list[int] = []
    footers = []
    total = 0
    for path in inputs:
        if max_samples is not None and total >= max_samples:
            break
        try:
            if lfs.is_local(path):  # pyarrow would read gs:// with its own client, which knows no emulator/auth
                footer = pq.ParquetFile(path).metadata
            else:
                with lfs.open_file(path) as f:
                    footer = pq.ParquetFile(f).metadata
        except Exception as e:
            raise DataError(f"unreadable parquet: {type(e).__name__}: {e}", where=path, fix=_UNREADABLE_FIX) from e
        footers.append(footer)
        rows = footer.num_rows
        rows = rows if max_samples is None else min(rows, max_samples - total)
        limits.append(rows)
        total += rows
    procs = processes or os.cpu_count() or 1
    procs = max(1, min(procs, len(limits))) if total >= SERIAL_BELOW_ROWS else 1
    per_proc = max(memory_budget // procs, 1)
    batch = [_batch_rows(md, lim, per_proc) for md, lim in zip(footers, limits)]
    # one file read in one batch: its duplicates are all found in phase 1, nothing to spill
    spilling = len(limits) > 1 or any(lim > b for lim, b in zip(limits, batch))
    partitions = url_dedup.partitions_for(total, per_proc) if spilling else 1
    local_out = lfs.is_local(out_dir)
    work = work_dir or (lfs.tmp_name(os.path.join(out_dir.removeprefix("file://"), "_work")) if local_out else None)
    work = tempfile.mkdtemp(prefix="laionprep-prefilter-", dir=work_dir) if work is None or work_dir else work
    os.makedirs(work, exist_ok=True)
    spill_dir, dup_dir = os.path.join(work, "spill"), os.path.join(work, "dups")
    os.makedirs(spill_dir)
    os.makedirs(dup_dir)
    jobs = [_Job(index=i, path=p, limit=lim, batch_rows=b, spec=spec, filters=filters, columns=tuple(columns),
                 output=os.path.join(work, f"{i:05d}.parquet"), spill_dir=spill_dir if spilling else None,
                 partitions=partitions, chunk_rows=max(1024, per_proc // (4 * url_dedup.RECORD.itemsize)))
            for i, (p, lim, b) in enumerate(zip(inputs, limits, batch))]
    task = progress.add_task("prefilter", total=len(inputs)) if progress else None
    pool = _pool(procs) if procs > 1 else None
    try:
        results: list[_FileResult] = []
        for r in (pool.map(_filter_file, jobs) if pool else map(_filter_file, jobs)):
            results.append(r)
            if progress:
                progress.advance(task, 1)
        dup_counts = np.zeros(len(jobs), dtype=np.int64)
        if spilling:
            chunks = [r.chunks for r in results]
            args = [(spill_dir, chunks, p, dup_dir) for p in range(partitions)]
            it = pool.map(_resolve, args) if pool else map(_resolve, args)
            for counts in it:
                dup_counts += counts
            shutil.rmtree(spill_dir)
        finish = [(j.output, lfs.join(out_dir, f"{j.index:05d}.parquet"), dup_dir if dup_counts[j.index] else None,
                   partitions, j.index, j.batch_rows) for j in jobs]
        list(pool.map(_finish_file, finish) if pool else map(_finish_file, finish))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
        shutil.rmtree(work, ignore_errors=True)

    total_in = 0
    dropped: Counter = Counter()
    files_report = []
    warnings: list[str] = []
    kinds = {c.name: c.kind for c in columns}
    for r, job in zip(results, jobs):
        n, base = r.rows_in, os.path.basename(job.path)
        total_in += n
        r.dropped["duplicate_url"] += int(dup_counts[r.index])
        kept = r.kept - int(dup_counts[r.index])
        file_dropped = r.dropped
        check_accounting(n, kept, file_dropped, stage=f"prefilter {job.path}")
        kinds.update(r.kinds)
        warnings.extend(r.head_warnings)
        active = active_filters(filters, spec)
        all_by = next((reason for reason, k in file_dropped.items() if n and k == n), None)
        if all_by:
            warnings.append(f"{base}: every row ({n}) was dropped as {all_by}{_why(all_by, active, r.null_cols)}")
        dropped.update(file_dropped)
        files_report.append({
            "input": posixpath.basename(job.path), "output": f"{job.index:05d}.parquet", "rows_in": n,
            "rows_out": kept, "dropped": {reason: file_dropped.get(reason, 0) for reason in REASONS},
            "nulls_replaced": {k: v for k, v in r.nulls.items() if v},
            "invalid_utf8_repaired": r.repaired, "long_captions": r.long_count,
            "all_dropped_by": all_by, "null_filter_columns": r.null_cols,
        })

    rows_out = sum(f["rows_out"] for f in files_report)
    dropped_all = {r: dropped.get(r, 0) for r in REASONS}
    check_accounting(total_in, rows_out, dropped_all, stage="prefilter")
    for c, k in kinds.items():
        if k == "json":
            warnings.append(f"column {c!r} is a list/struct column: stored as JSON text "
                            "(img2dataset cannot store lists)")
    report = PrefilterReport(rows_in=total_in, rows_out=rows_out, dropped=dropped_all, files=files_report,
                             columns=kinds, warnings=warnings, params_hash=phash, filters=filters.to_dict())
    lfs.write_json(report_path, report.to_dict())
    return report


def _resolve(args) -> np.ndarray:
    from laionprep.ingest import url_dedup

    return url_dedup.resolve_partition(*args)
