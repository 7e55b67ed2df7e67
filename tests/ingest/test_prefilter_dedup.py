"""The bounded-memory prefilter (phases: per-file filter + spill, per-partition dedup, per-file finish): the same
result as one sequential pass whatever the memory budget (batches, partitions, chunks) and process count."""
from __future__ import annotations

import glob
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laionprep.datasets import get_spec
from laionprep.ingest import prefilter as pfm
from laionprep.ingest import url_dedup
from laionprep.ingest.prefilter import prefilter

SPEC = get_spec("laion400m")


def _files(tmp_path, n_files=4, rows=3000, seed=0):
    """Metadata with URLs repeated within and across files (ids from a small range), some failing the filters."""
    rng = np.random.default_rng(seed)
    paths = []
    for f in range(n_files):
        ids = rng.integers(0, rows, rows)
        t = pa.table({
            "SAMPLE_ID": np.arange(rows, dtype=np.int64) + f * rows,
            "URL": [f"https://x.example/{i}.jpg" if i % 97 else f"ftp://x/{i}" for i in ids],
            "TEXT": [f"file {f} row {r}" for r in range(rows)],
            "HEIGHT": np.full(rows, 64, np.int32), "WIDTH": np.full(rows, 64, np.int32),
            "LICENSE": ["?"] * rows, "NSFW": np.where(rng.random(rows) < 0.05, "NSFW", "UNLIKELY"),
            "similarity": rng.uniform(0.2, 0.5, rows),
        })
        p = str(tmp_path / f"part-{f:05d}.parquet")
        pq.write_table(t, p, row_group_size=700)  # several row groups per file
        paths.append(p)
    return paths


def _oracle(paths):
    """Captions a plain sequential scan keeps: the filters, then the first occurrence of each URL in file order."""
    seen, kept = set(), []
    for p in paths:
        for r in pq.read_table(p).to_pylist():
            if not r["URL"].startswith(("http://", "https://")) or r["NSFW"] != "UNLIKELY" or r["similarity"] < 0.3:
                continue
            if r["URL"] in seen:
                continue
            seen.add(r["URL"])
            kept.append(r["TEXT"])
    return kept


def _out(folder):
    return [pq.read_table(p) for p in sorted(glob.glob(os.path.join(folder, "*.parquet")))]


def test_tiny_budget_many_batches_and_partitions_equals_large_budget(tmp_path, monkeypatch):
    paths = _files(tmp_path)
    big = prefilter(SPEC, paths, str(tmp_path / "big"), SPEC.default_filters)
    seen = {}
    real_spill = url_dedup.Spill

    class CountingSpill(real_spill):
        def flush(self):
            seen["chunks"] = seen.get("chunks", 0) + bool(self.parts)
            seen["partitions"] = self.partitions
            super().flush()

    monkeypatch.setattr(url_dedup, "Spill", CountingSpill)
    small = prefilter(SPEC, paths, str(tmp_path / "small"), SPEC.default_filters, memory_budget=40_000)
    assert seen["partitions"] > 4 and seen["chunks"] > len(paths)  # many partitions, several chunks per file
    assert pfm._batch_rows(pq.ParquetFile(paths[0]).metadata, 3000, 40_000) < 3000  # and several batches per file
    assert small.to_dict() == big.to_dict()
    for a, b in zip(_out(tmp_path / "big"), _out(tmp_path / "small")):
        assert a.equals(b)
    assert big.dropped["duplicate_url"] > 1000
    captions = [c for t in _out(tmp_path / "big") for c in t.column("caption").to_pylist()]
    assert captions == _oracle(paths)  # first occurrence in file order, within and across files


def test_first_occurrence_in_file_order(tmp_path):
    def write(name, urls):
        n = len(urls)
        pq.write_table(pa.table({"URL": urls, "TEXT": [f"{name} {i}" for i in range(n)],
                                 "NSFW": ["UNLIKELY"] * n, "similarity": [0.9] * n}), str(tmp_path / name))
        return str(tmp_path / name)

    a = write("a.parquet", ["http://u/1", "http://u/2", "http://u/1"])
    b = write("b.parquet", ["http://u/3", "http://u/2", "http://u/3", "http://u/4"])
    c = write("c.parquet", ["http://u/4", "http://u/5"])
    for budget in (pfm.DEFAULT_MEMORY_BUDGET, 1):
        out = str(tmp_path / f"out-{budget}")
        rep = prefilter(SPEC, [a, b, c], out, SPEC.default_filters, memory_budget=budget)
        got = [t.column("caption").to_pylist() for t in _out(out)]
        assert got == [["a.parquet 0", "a.parquet 1"], ["b.parquet 0", "b.parquet 3"], ["c.parquet 1"]]
        assert [f["dropped"]["duplicate_url"] for f in rep.files] == [1, 2, 1]


def test_parallel_equals_serial(tmp_path, monkeypatch):
    paths = _files(tmp_path, n_files=3, rows=2000, seed=1)
    serial = prefilter(SPEC, paths, str(tmp_path / "serial"), SPEC.default_filters, memory_budget=200_000)
    monkeypatch.setattr(pfm, "SERIAL_BELOW_ROWS", 0)  # a pool even for these few rows
    parallel = prefilter(SPEC, paths, str(tmp_path / "parallel"), SPEC.default_filters, memory_budget=200_000,
                         processes=2)
    assert parallel.to_dict() == serial.to_dict()
    for n in sorted(os.listdir(tmp_path / "serial")):
        if n.endswith(".parquet"):
            assert (tmp_path / "serial" / n).read_bytes() == (tmp_path / "parallel" / n).read_bytes()
    assert not [n for n in os.listdir(tmp_path / "parallel") if n.startswith("_work")]  # scratch removed


def test_a_64_bit_collision_is_not_a_duplicate(tmp_path):
    """Equality is the 128-bit hash: two records sharing the first 64 bits but not the second are both kept."""
    spill = url_dedup.Spill(str(tmp_path), 0, 2, 100)
    h1 = np.array([7, 7, 7, 9], np.uint64)
    h2 = np.array([1, 2, 1, 3], np.uint64)
    spill.add(h1, h2, 0)
    assert spill.close() == 1
    counts = [url_dedup.resolve_partition(str(tmp_path), [1], p, str(tmp_path)) for p in range(2)]
    assert sum(c[0] for c in counts) == 1
    assert url_dedup.dup_rows(str(tmp_path), 2, 0).tolist() == [2]  # only the exact (h1, h2) repeat


@pytest.mark.parametrize("value,expected", [("2GiB", 2 << 30), ("512MiB", 512 << 20), ("1.5G", 3 << 29),
                                            ("3000000", 3_000_000)])
def test_size_flag_values(value, expected):
    from laionprep.options import size

    assert size(value) == expected


def test_one_file_read_in_many_batches(tmp_path):
    """Duplicates across the batches of one file (no other file to compare with) are found too."""
    paths = _files(tmp_path, n_files=1, rows=5000, seed=2)
    assert pfm._batch_rows(pq.ParquetFile(paths[0]).metadata, 5000, 100_000) < 2000
    small = prefilter(SPEC, paths, str(tmp_path / "small"), SPEC.default_filters, memory_budget=100_000)
    big = prefilter(SPEC, paths, str(tmp_path / "big"), SPEC.default_filters)
    assert small.to_dict() == big.to_dict()
    assert _out(tmp_path / "small")[0].column("caption").to_pylist() == _oracle(paths)
