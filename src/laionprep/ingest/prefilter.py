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
                max_samples: int | None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({
        "spec": spec.name, "filters": filters.to_dict(), "columns": [dataclasses.asdict(c) for c in columns],
        "inputs": [(posixpath.basename(p), *lfs.version_key(p)) for p in inputs], "max_samples": max_samples,
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


def _rows(rows: Sequence[int], k: int = 5) -> str:
    return ", ".join(str(r) for r in rows[:k]) + (f" ... ({len(rows)} in all)" if len(rows) > k else "")


def kind_of(arrow_type: pa.DataType) -> str:
    """The column kind img2dataset can store for an arrow type (lists and structs become JSON text)."""
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "float"
    if pa.types.is_integer(arrow_type) or pa.types.is_boolean(arrow_type):
        return "int"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_binary(arrow_type):
        return "str"
    return "json"


def _duplicates(urls: pa.Array, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate mask, hashes of the URLs kept) for ``urls`` given the hashes of URLs kept from earlier files.

    URLs are compared by a 64-bit hash (polars' vectorised string hash, read straight from the Arrow buffers; about
    30x cheaper than hashing Python strings).  A row is a duplicate if an earlier row of this file or an earlier file
    has its hash.  Collisions over 2B URLs: ~0.1 expected (such a pair would count as a duplicate).
    """
    import polars as pl

    h = pl.from_arrow(urls).hash(seed=0)
    dup = ~h.is_first_distinct().to_numpy()
    if len(seen):
        dup |= h.is_in(pl.Series(seen).implode()).to_numpy()
    return dup, h.to_numpy()[~dup]


def prefilter(spec: DatasetSpec, inputs: Sequence[str], out_dir: str, filters: Filters, *,
              columns: Sequence[Column] | None = None, max_samples: int | None = None,
              schemas: Sequence[Sequence[str]] | None = None, progress=None) -> PrefilterReport:
    """Filter ``inputs`` (local parquet paths) into ``out_dir``; returns the report (also written to out_dir).

    ``schemas``: each input's column names when the caller already read the footers (else they are read here);
    every file is checked for the filters' columns before anything is written (:func:`check_filter_columns`).
    Re-running with the same inputs and parameters finds the report and returns it without rewriting (the
    output is deterministic either way, which is what img2dataset's resume relies on).
    """
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
    phash = params_hash(spec, filters, columns, inputs, max_samples)
    report_path = lfs.join(out_dir, REPORT_NAME)
    if lfs.exists(report_path):
        old = lfs.read_json(report_path)
        if old.get("params_hash") == phash and all(lfs.exists(lfs.join(out_dir, f["output"])) for f in old["files"]):
            return PrefilterReport(**old)
    lfs.makedirs(out_dir)
    for n in lfs.listdir(out_dir):  # outputs of an earlier run with other parameters or a killed run
        if n.endswith(".parquet") or lfs.TMP_MARK in n:
            lfs.remove(lfs.join(out_dir, n))

    seen = np.empty(0, dtype=np.uint64)
    total_in = 0
    dropped: Counter = Counter()
    files_report = []
    warnings: list[str] = []
    kinds = {c.name: c.kind for c in columns}
    task = progress.add_task("prefilter", total=len(inputs)) if progress else None
    for i, path in enumerate(inputs):
        if max_samples is not None and total_in >= max_samples:
            break
        try:
            pf = pq.ParquetFile(lfs.open_file(path) if not lfs.is_local(path) else path)
            names = pf.schema_arrow.names
        except Exception as e:
            raise DataError(f"unreadable parquet: {type(e).__name__}: {e}", where=path, fix=_UNREADABLE_FIX) from e
        mapping = resolve_columns(spec, names, where=path, columns=columns)
        wanted = [mapping["url"], mapping["caption"]] + [mapping[c.name] for c in columns if mapping.get(c.name)]
        try:
            table = pf.read(columns=list(dict.fromkeys(wanted)))
        except Exception as e:
            raise DataError(f"unreadable parquet: {type(e).__name__}: {e}", where=path, fix=_UNREADABLE_FIX) from e
        if max_samples is not None and total_in + table.num_rows > max_samples:
            table = table.slice(0, max_samples - total_in)
        n = table.num_rows
        total_in += n
        where = path
        for c in columns:
            if mapping.get(c.name) is None:
                msg = f"{os.path.basename(path)}: column {c.name!r} missing; filled with sentinel {c.sentinel!r}"
                warnings.append(msg)

        repaired: dict[str, int] = {}
        base = os.path.basename(path)

        def note_utf8(name, bad):
            if bad:
                repaired[name] = len(bad)
                warnings.append(f"{base}: {len(bad)} value(s) of column {name!r} are not valid UTF-8 (rows "
                                f"{_rows(bad)}): kept, with each invalid byte sequence replaced by U+FFFD")

        def text(col_name, role):
            arr, bad = as_text(table.column(col_name), col_name, where, expected=f"text (the {role})")
            note_utf8(col_name, bad)
            if n and arr.null_count == n:
                warnings.append(f"{base}: column {col_name!r} ({role}) is null in all {n} rows")
            return pc.fill_null(arr, "") if arr.null_count else arr  # no copy when there is nothing to fill

        out_cols = {"url": text(mapping["url"], "URL"), "caption": text(mapping["caption"], "caption")}
        nulls = {}
        for c in columns:
            src = table.column(mapping[c.name]) if mapping.get(c.name) else None
            if c.kind == "json" and src is not None and kind_of(src.type) != "json":
                c = dataclasses.replace(c, kind=kind_of(src.type))
                kinds[c.name] = c.kind
            bad: list[int] = []
            out_cols[c.name], nulls[c.name] = _normalise_column(src, c, n, where, bad)
            note_utf8(mapping.get(c.name) or c.name, bad)
        if n == 0:
            warnings.append(f"{base}: the file has no rows")
        long_rows = np.empty(0, dtype=np.int64)
        # characters <= bytes: count characters only when some caption has more bytes than the limit (rare)
        if n and pc.max(pc.binary_length(out_cols["caption"])).as_py() > LONG_CAPTION_CHARS:
            cap_len = pc.utf8_length(out_cols["caption"])
            long_rows = np.flatnonzero(np.asarray(pc.greater(cap_len, LONG_CAPTION_CHARS).to_numpy(
                zero_copy_only=False), dtype=bool))
        if len(long_rows):
            longest = int(pc.max(cap_len).as_py())
            warnings.append(f"{base}: {len(long_rows)} caption(s) longer than {LONG_CAPTION_CHARS} characters (rows "
                            f"{_rows(long_rows.tolist())}; longest {longest:,}) are kept whole: `laionprep reshard "
                            "--max-caption-chars` drops them, the trainer's tokenizer truncates them")

        # drop reasons, first that applies wins
        fails = []
        u = out_cols["url"]
        scheme = pc.ascii_lower(pc.utf8_slice_codeunits(u, 0, 8))  # 2x faster than case-blind starts_with on u
        fails.append(("invalid_url", pc.invert(pc.or_(pc.starts_with(scheme, "http://"),
                                                      pc.starts_with(scheme, "https://")))))
        c = out_cols["caption"]
        fails.append(("empty_caption", pc.or_(pc.equal(pc.binary_length(c), 0), pc.utf8_is_space(c))))
        active = active_filters(filters, spec)
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
        file_dropped: Counter = Counter()
        for reason, mask in fails:
            m = np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool) & alive
            file_dropped[reason] += int(m.sum())
            alive &= ~m
        # duplicates: within the file (first occurrence kept) and against URLs kept from earlier files
        idx = np.flatnonzero(alive)
        if len(idx):
            dup, new_hashes = _duplicates(out_cols["url"].take(pa.array(idx)), seen)
            file_dropped["duplicate_url"] += int(dup.sum())
            alive[idx[dup]] = False
            seen = np.concatenate([seen, new_hashes])
        kept = int(alive.sum())
        check_accounting(n, kept, file_dropped, stage=f"prefilter {path}")
        null_cols = [col for _, col in active if n and nulls.get(col) == n]
        all_by = next((r for r, k in file_dropped.items() if n and k == n), None)
        if all_by:
            warnings.append(f"{base}: every row ({n}) was dropped as {all_by}{_why(all_by, active, null_cols)}")
        out = pa.table(out_cols).filter(pa.array(alive))
        out_name = f"{i:05d}.parquet"
        tmp = lfs.tmp_name(lfs.join(out_dir, out_name))
        with lfs.open_file(tmp, "wb") as f:
            pq.write_table(out, f)
        lfs.rename(tmp, lfs.join(out_dir, out_name))
        dropped.update(file_dropped)
        files_report.append({
            "input": posixpath.basename(path), "output": out_name, "rows_in": n, "rows_out": kept,
            "dropped": {r: file_dropped.get(r, 0) for r in REASONS},
            "nulls_replaced": {k: v for k, v in nulls.items() if v},
            "invalid_utf8_repaired": repaired, "long_captions": int(len(long_rows)),
            "all_dropped_by": all_by, "null_filter_columns": null_cols,
        })
        if progress:
            progress.advance(task, 1)

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
