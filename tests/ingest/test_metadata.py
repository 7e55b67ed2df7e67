"""Metadata fetch from a local folder and from a real HTTP server on 127.0.0.1 (fsspec's http filesystem)."""
from __future__ import annotations

import functools
import http.server
import os
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laionprep.errors import SourceError, UsageError
from laionprep.ingest import metadata as md
from laionprep.testing.server import LocalHTTPServer


def make_source(folder, n_files=4, rows=10):
    os.makedirs(folder, exist_ok=True)
    for k in range(n_files):
        t = pa.table({"URL": [f"http://x/{k}/{i}.jpg" for i in range(rows)], "TEXT": ["t"] * rows})
        pq.write_table(t, os.path.join(folder, f"part-{k:05d}.parquet"))
    return str(folder)


@pytest.fixture
def http_folder(tmp_path):
    root = tmp_path / "served"
    make_source(root / "meta")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    srv = LocalHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/meta/"
    srv.shutdown()
    srv.server_close()


def test_parse_parts():
    assert md.parse_parts(None, 5) == [0, 1, 2, 3, 4]
    assert md.parse_parts("2", 5) == [0, 1]
    assert md.parse_parts("0,3-4", 5) == [0, 3, 4]
    assert md.parse_parts("3-", 5) == [3, 4]
    with pytest.raises(UsageError, match="index 9"):
        md.parse_parts("1,9", 5)
    with pytest.raises(UsageError):
        md.parse_parts("x", 5)
    with pytest.raises(UsageError, match="index 7"):
        md.parse_parts("7-", 5)  # an open range past the end selects nothing: refused, not an empty selection
    # malformed without the file count (checked before the source is listed)
    for spec, msg in (("5-2", "the range 5-2 is inverted"), ("-1", "a negative index"), ("1,,2", "an empty item"),
                      ("0", "at least 1"), ("2-x", "cannot read")):
        with pytest.raises(UsageError, match=msg):
            md.check_parts(spec)
    md.check_parts("0,2,5-7,9-")


def test_local_fetch_is_resumable(tmp_path):
    src = make_source(tmp_path / "src")
    dest = str(tmp_path / "dest")
    r1 = md.fetch(src, "*.parquet", dest, parts="0,2")
    assert [os.path.basename(p) for p in r1.files] == ["part-00000.parquet", "part-00002.parquet"]
    assert (r1.fetched, r1.skipped) == (2, 0)
    mtime = os.stat(r1.files[0]).st_mtime_ns
    r2 = md.fetch(src, "*.parquet", dest)
    assert (r2.fetched, r2.skipped) == (2, 2) and os.stat(r1.files[0]).st_mtime_ns == mtime
    # a truncated file (a killed fetch that renamed? never: but a hand-damaged one) has the wrong size: fetched again
    with open(r1.files[0], "r+b") as f:
        f.truncate(10)
    r3 = md.fetch(src, "*.parquet", dest)
    assert (r3.fetched, r3.skipped) == (1, 3)
    assert pq.read_table(r3.files[0]).num_rows == 10


def test_max_samples_stops_fetching(tmp_path):
    src = make_source(tmp_path / "src", n_files=4, rows=10)
    r = md.fetch(src, "*.parquet", str(tmp_path / "dest"), max_samples=15)
    assert len(r.files) == 2


def test_http_source(http_folder, tmp_path):
    r = md.fetch(http_folder, "*.parquet", str(tmp_path / "dest"))
    assert len(r.files) == 4 and r.fetched == 4
    assert pq.read_table(r.files[3]).column("URL")[0].as_py() == "http://x/3/0.jpg"
    r2 = md.fetch(http_folder, "*.parquet", str(tmp_path / "dest"))
    assert r2.skipped == 4


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError) as e:
        md.fetch(str(tmp_path / "nope"), "*.parquet", str(tmp_path / "dest"))
    assert "nope" in e.value.render() and e.value.fix
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no files matching"):
        md.fetch(str(empty), "*.parquet", str(tmp_path / "dest"))
