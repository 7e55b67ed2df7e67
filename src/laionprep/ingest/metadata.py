"""Metadata fetch: copy a dataset's parquet files into ``DIR/metadata/``, resumably.

Any fsspec URL is a source: a local folder or file, ``gs://``, ``http(s)://``, or the Hugging Face Hub as
``hf://datasets/ORG/REPO`` (huggingface_hub's filesystem, which reads ``HF_TOKEN`` for gated repositories).  A
file already present with the source's size is not fetched again; a file is fetched under a temporary name and
renamed when complete, so a killed fetch never leaves a truncated parquet under its final name.  A copy that
``laionprep remove`` scrubbed (``ingest.scrub``: its footer names the source's size) counts as present.
"""
from __future__ import annotations

import dataclasses
import posixpath
import re
from typing import Callable, Sequence

from laionprep import fs as lfs
from laionprep.errors import DataError, SourceError, UsageError
from laionprep.ingest import scrub

_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclasses.dataclass(frozen=True)
class SourceFile:
    url: str  # full fsspec URL of the source file
    name: str  # file name in DIR/metadata (unique, derived from the path below the source root)
    size: int | None


@dataclasses.dataclass
class FetchResult:
    files: list[str]  # local paths in DIR/metadata, in source order
    fetched: int = 0
    skipped: int = 0
    bytes_fetched: int = 0
    sources: list[str] = dataclasses.field(default_factory=list)
    rows: list[int] = dataclasses.field(default_factory=list)  # rows per file (parquet footers)
    columns: list[list[str]] = dataclasses.field(default_factory=list)  # column names per file (same footers)
    # per file: the version of the copy as fetched when `laionprep remove` scrubbed it since (ingest.scrub), else None
    versions: list[tuple | None] = dataclasses.field(default_factory=list)


_PARTS_FIX = "give a count (3) or indices and ranges (0,2,5-7 or 4-)"


def _part_items(spec: str) -> list[tuple[int, int | None]]:
    """The (low, high) items of an index list, high None for an open range (``4-``); checked without the file
    count, so a malformed ``--parts`` is refused before anything is fetched."""
    out: list[tuple[int, int | None]] = []
    for piece in spec.split(","):
        if not piece.strip():
            raise UsageError(f"--parts {spec!r}: an empty item", where="--parts", fix=_PARTS_FIX)
        m = re.fullmatch(r"\s*(\d+)\s*(?:(-)\s*(\d*)\s*)?", piece)
        if not m:
            what = "a negative index" if piece.strip().startswith("-") else "cannot read"
            raise UsageError(f"--parts {spec!r}: {what} {piece.strip()!r}", where="--parts", fix=_PARTS_FIX)
        lo = int(m.group(1))
        hi = (int(m.group(3)) if m.group(3) else None) if m.group(2) else lo
        if hi is not None and hi < lo:
            raise UsageError(f"--parts {spec!r}: the range {piece.strip()} is inverted ({lo} > {hi})",
                             where="--parts", fix=f"write it low-high: {hi}-{lo}")
        out.append((lo, hi))
    return out


def check_parts(spec: str | None) -> None:
    """Refuse a malformed ``--parts`` (UsageError) before the source is listed."""
    if spec is None or spec.strip() == "":
        return
    if spec.strip().isdigit():
        if int(spec) < 1:
            raise UsageError(f"--parts {spec}: must be at least 1", where="--parts",
                             fix="e.g. --parts 3 or --parts 0,2,5-7")
        return
    _part_items(spec.strip())


def parse_parts(spec: str | None, n: int) -> list[int]:
    """``--parts`` selects files by index in the sorted listing: ``3`` (the first 3 files), ``0,2,5-7`` or ``4-``."""
    check_parts(spec)
    if spec is None or spec.strip() == "":
        return list(range(n))
    spec = spec.strip()
    if spec.isdigit():
        return list(range(min(int(spec), n)))
    out: list[int] = []
    for lo, hi in _part_items(spec):
        out.extend(range(lo, (max(lo, n - 1) if hi is None else hi) + 1))  # "9-" of 5 files selects 9: refused
    bad = [i for i in out if i >= n]
    if bad:
        raise UsageError(f"--parts {spec!r} selects file index {bad[0]} but the source has {n} files (0..{n - 1})",
                         where="--parts", fix="pick indices below the file count")
    return sorted(set(out))


def list_source(source: str, pattern: str) -> list[SourceFile]:
    """The parquet files of a source, sorted by path."""
    try:
        fsys, path = lfs.get_fs(source)
    except (ImportError, ValueError) as e:
        raise UsageError(f"cannot open metadata source {source!r}: {e}", where="--metadata-source",
                         fix="give a local path or an fsspec URL (gs://..., http://..., hf://datasets/ORG/REPO)") from e
    proto = fsys.protocol[0] if isinstance(fsys.protocol, (tuple, list)) else fsys.protocol
    try:
        if _GLOB_CHARS.search(path):
            paths = sorted(fsys.glob(path))
            root = path[: _GLOB_CHARS.search(path).start()].rsplit("/", 1)[0]
        elif fsys.isdir(path):
            paths = sorted(p for p in fsys.glob(posixpath.join(path.rstrip("/"), pattern)) if not fsys.isdir(p))
            root = path.rstrip("/")
        elif fsys.exists(path):
            paths = [path]
            root = posixpath.dirname(path)
        else:
            raise SourceError(f"metadata source not found: {source}", where="--metadata-source",
                              fix="check the path/URL; for the Hub check the repo name and that HF_TOKEN grants access")
        infos = [fsys.info(p) for p in paths]
    except SourceError:
        raise
    except PermissionError as e:
        raise SourceError(f"access denied listing {source}: {e}", where="--metadata-source",
                          fix="for gated Hub repos accept the terms on the dataset page and export HF_TOKEN") from e
    except Exception as e:  # network / auth errors of any fsspec backend
        raise SourceError(f"cannot list metadata source {source}: {type(e).__name__}: {e}", where="--metadata-source",
                          fix="check connectivity and credentials (HF_TOKEN, GOOGLE_APPLICATION_CREDENTIALS)") from e
    files = []
    for p, info in zip(paths, infos):
        rel = p[len(root):].lstrip("/") if p.startswith(root) else posixpath.basename(p)
        name = rel.replace("/", "__")
        url = p if proto in ("file", "local") else f"{proto}://{p}" if "://" not in p else p
        files.append(SourceFile(url=url, name=name, size=info.get("size")))
    if not files:
        raise SourceError(f"no files matching {pattern!r} in {source}", where="--metadata-source",
                          fix="point at the folder holding the dataset's .parquet files")
    return files


def first_columns(source: str, pattern: str, parts: str | None = None) -> list[str]:
    """The column names of the first selected file of ``source`` (its parquet footer: a few range reads)."""
    import pyarrow.parquet as pq

    files = list_source(source, pattern)
    first = files[parse_parts(parts, len(files))[0]]
    fsys, path = lfs.get_fs(first.url)
    try:
        with fsys.open(path, "rb") as f:
            return pq.ParquetFile(f).schema_arrow.names
    except Exception as e:
        raise DataError(f"unreadable parquet file: {type(e).__name__}: {e}", where=first.url,
                        fix="replace it with a complete, valid parquet file (or leave it out with --parts), "
                            "then re-run the same command") from e


def fetch(source: str, pattern: str, dest_dir: str, *, parts: str | None = None, max_samples: int | None = None,
          progress=None, on_selected: Callable[[], None] | None = None, frozen: str | None = None) -> FetchResult:
    """Fetch the selected parquet files of ``source`` into ``dest_dir``.

    With ``max_samples``, files are taken in order only until their row counts (read from the parquet footers)
    reach it.  ``progress`` is a :class:`laionprep.progress.Progress`-like object or None.  ``on_selected`` is
    called once the source is listed and ``parts`` is resolved, before anything is written.  ``frozen`` (why the
    copies may not be fetched again: ``laionprep remove`` scrubbed them) makes a missing or changed copy an error.
    """
    import pyarrow.parquet as pq

    files = list_source(source, pattern)
    chosen = [files[i] for i in parse_parts(parts, len(files))]
    if on_selected is not None:
        on_selected()
    lfs.makedirs(dest_dir)
    result = FetchResult(files=[])
    rows_seen = 0
    task = progress.add_task("metadata", total=sum(f.size or 0 for f in chosen) or None) if progress else None
    for sf in chosen:
        dest = lfs.join(dest_dir, sf.name)
        # a copy `laionprep remove` scrubbed is the source's, with its listed rows tombstoned: never fetched again
        done = lfs.exists(dest) and (sf.size is None or lfs.size(dest) == sf.size
                                     or scrub.source_size(dest) == sf.size)
        if done:
            result.skipped += 1
        elif frozen:
            raise DataError(f"the metadata copy {dest} is missing or no longer matches its source, and {frozen}: "
                            "fetching it again would bring back the rows the list(s) removed", where=dest,
                            fix="restore the copy from a backup, or start over with --restart and apply the "
                                "removal list(s) again with `laionprep remove`")
        else:
            result.bytes_fetched += _copy(sf, dest, progress, task)
            result.fetched += 1
        if progress and done:
            progress.advance(task, sf.size or 0)
        try:
            with lfs.open_file(dest) as f:
                footer = pq.ParquetFile(f)
                rows, names = footer.metadata.num_rows, footer.schema_arrow.names
                version = scrub.original_version(footer.schema_arrow)
        except Exception as e:  # truncated, garbage, empty: not kept, so a fixed source file is fetched again
            lfs.remove(dest)
            raise DataError(f"unreadable parquet file: {type(e).__name__}: {e}", where=sf.url,
                            fix="replace it with a complete, valid parquet file (or leave it out with --parts), "
                                "then re-run the same command") from e
        result.files.append(dest)
        result.sources.append(sf.url)
        result.rows.append(rows)
        result.columns.append(names)
        result.versions.append(version)
        if max_samples is not None:
            rows_seen += rows
            if rows_seen >= max_samples:
                break
    return result


def _copy(sf: SourceFile, dest: str, progress, task) -> int:
    """Copy ``sf`` to ``dest`` through a temporary name; -> the bytes copied."""
    fsys, path = lfs.get_fs(sf.url)
    tmp = lfs.tmp_name(dest)
    try:
        got = 0
        with fsys.open(path, "rb") as src, lfs.open_file(tmp, "wb") as out:
            while True:
                chunk = src.read(8 << 20)
                if not chunk:
                    break
                out.write(chunk)
                got += len(chunk)
                if progress:
                    progress.advance(task, len(chunk))
        if sf.size is not None and got != sf.size:
            raise SourceError(f"short read: got {got} of {sf.size} bytes", where=sf.url,
                              fix="re-run the same command; the fetch resumes with this file")
        lfs.rename(tmp, dest)
        return got
    except SourceError:
        raise
    except Exception as e:
        raise SourceError(f"cannot fetch {sf.url}: {type(e).__name__}: {e}", where=sf.url,
                          fix="check connectivity/credentials and re-run; finished files are not fetched again") from e
    finally:
        if lfs.exists(tmp):
            lfs.remove(tmp)


def remove_stale_tmp(folder: str) -> None:
    """Remove temporary files a killed fetch left behind (they never carry a final name)."""
    for n in lfs.listdir(folder):
        if lfs.TMP_MARK in n:
            lfs.remove(lfs.join(folder, n))


__all__: Sequence[str] = ["check_parts", "fetch", "first_columns", "list_source", "parse_parts", "FetchResult"]
