"""ingest/scrub.py: tombstones written in place, batch by batch, across row-group and batch boundaries."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from laionprep import fs as lfs
from laionprep.folders import tombstone
from laionprep.ingest import scrub


def _file(path: str, n: int) -> None:
    t = pa.table({"url": [f"http://h/{i}.jpg" for i in range(n)], "caption": [f"caption {i}" for i in range(n)],
                  "similarity": np.arange(n, dtype=np.float64), "uid": pa.array(range(n), type=pa.int64())})
    pq.write_table(t, path, row_group_size=700)


def test_positions_across_batches_are_tombstoned_in_place_once(tmp_path, monkeypatch):
    monkeypatch.setattr(scrub, "BATCH_ROWS", 256)  # several batches per row group and row groups per batch edge
    path = str(tmp_path / "00000.parquet")
    _file(path, 3000)
    version, size = lfs.version_key(path), lfs.size(path)
    rows = np.array([0, 255, 256, 699, 700, 2999], dtype=np.int64)
    assert scrub.values_at(path, "url", rows) == [f"http://h/{i}.jpg" for i in rows]
    n = scrub.tombstone_rows(path, "url", scrub.positions_mask(rows), "abc", sentinel=True)
    assert n == len(rows)
    t = pq.read_table(path).to_pylist()
    assert len(t) == 3000
    for i, r in enumerate(t):
        if i in set(rows.tolist()):
            assert r == {"url": tombstone.url("abc"), "caption": "", "similarity": -1.0, "uid": -1}
        else:
            assert r == {"url": f"http://h/{i}.jpg", "caption": f"caption {i}", "similarity": float(i), "uid": i}
    rec = scrub.record(pq.ParquetFile(path).schema_arrow)
    assert rec == {"lists": {"abc": 6}, "size": size, "version": list(version)}
    assert scrub.original_version(pq.ParquetFile(path).schema_arrow) == tuple(version)
    assert scrub.source_size(path) == size and scrub.rows_scrubbed(path, "abc") == 6
    # again: nothing left to do, the file is not rewritten
    before = lfs.version_key(path)
    assert scrub.tombstone_rows(path, "url", scrub.positions_mask(rows), "abc", sentinel=True) == 0
    assert lfs.version_key(path) == before
    # a second list: its rows added, the first version kept
    assert scrub.tombstone_rows(path, "url", scrub.positions_mask(np.array([5])), "def", sentinel=False) == 1
    rec = scrub.record(pq.ParquetFile(path).schema_arrow)
    assert rec["lists"] == {"abc": 6, "def": 1} and rec["version"] == list(version)
    assert pq.read_table(path).slice(5, 1).to_pylist() == [{"url": tombstone.url("def"), "caption": None,
                                                          "similarity": None, "uid": None}]
    assert not [n for n in (tmp_path).iterdir() if lfs.TMP_MARK in n.name]


def test_a_never_scrubbed_file_has_no_record(tmp_path):
    path = str(tmp_path / "m.parquet")
    _file(path, 10)
    assert scrub.source_size(path) is None and scrub.original_version(pq.ParquetFile(path).schema_arrow) is None
    assert scrub.source_size(str(tmp_path / "missing.parquet")) is None
