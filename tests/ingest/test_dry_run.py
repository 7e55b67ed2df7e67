"""`laionprep download --dry-run`: metadata + prefilter only, a summary of what would be downloaded, status
dry-run; the same command without --dry-run then downloads into the folder without prefiltering again."""
from __future__ import annotations

import glob
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laionprep import cli
from laionprep.testing import synth

from tests.test_rerun import download, records

ROWS = 40


@pytest.fixture(scope="module")
def dry_metadata(tmp_path_factory, demo_server) -> str:
    md = tmp_path_factory.mktemp("md") / "dry"
    md.mkdir()
    rows = [{"SAMPLE_ID": i, "URL": f"{demo_server.base_url}/img/0/{i % 30}.{synth.sample(0, i % 30).fmt}",
             "TEXT": f"d {i}", "HEIGHT": 64, "WIDTH": 64, "LICENSE": "?", "NSFW": "UNLIKELY",
             "similarity": 0.2 if i % 7 == 0 else 0.5} for i in range(ROWS)]
    pq.write_table(pa.Table.from_pylist(rows), str(md / "part-00000.parquet"))
    return str(md)


def _stat(folder):
    return {p: (os.stat(p).st_ino, os.stat(p).st_mtime_ns)
            for p in glob.glob(os.path.join(folder, "prefiltered", "*")) + glob.glob(os.path.join(folder, "metadata",
                                                                                                   "*"))}


def test_dry_run_then_real_run_equals_plain_run(dry_metadata, tmp_path, capsys):
    out = str(tmp_path / "dry")
    assert cli.main(download(dry_metadata, out, "--dry-run")) == 0
    text = capsys.readouterr().out
    m = json.load(open(os.path.join(out, "manifest.json")))
    assert m["status"] == "dry-run" and m["accounting"]["balanced"]
    kept = m["stages"]["prefilter"]["rows_out"]
    assert kept == len({i % 30 for i in range(ROWS) if i % 7})  # low similarity dropped, then duplicates
    assert m["stages"]["prefilter"]["dropped"]["duplicate_url"] > 0
    est = m["stages"]["download"]["estimate"]
    assert est["images"] == kept and est["bytes"] == kept * est["bytes_per_image"]
    assert m["stages"]["download"]["shards_expected"] == 3  # 10 rows per shard
    for needle in ("dry run: nothing downloaded", "dropped: duplicate_url", "shards of 10 rows",
                   "estimated images", "estimated bytes at --image-size 480", "bytes per pixel", "pixels"):
        assert needle in text, needle
    assert not glob.glob(os.path.join(out, "tfrecord", "*"))
    before = _stat(out)
    assert any("prefiltered" in p for p in before)

    # validate says it is a dry run (a usage error, not a crash)
    assert cli.main(["validate", out]) == 2
    err = capsys.readouterr().err
    assert "--dry-run" in err and "without --dry-run" in err and "Traceback" not in err

    assert cli.main(download(dry_metadata, out)) == 0
    assert _stat(out) == before  # neither the metadata copy nor the prefilter's output was rewritten
    real = json.load(open(os.path.join(out, "manifest.json")))
    assert real["status"] == "complete"

    plain = str(tmp_path / "plain")
    assert cli.main(download(dry_metadata, plain)) == 0
    ref = json.load(open(os.path.join(plain, "manifest.json")))
    assert real["accounting"] == ref["accounting"] and real["parameters"] == ref["parameters"]
    assert real["stages"]["prefilter"] == ref["stages"]["prefilter"]
    assert records(out) == records(plain) and len(records(out)) == real["accounting"]["kept"] > 0


def test_memory_budget_flag_refused_below_minimum(dry_metadata, tmp_path, capsys):
    assert cli.main(download(dry_metadata, str(tmp_path / "o"), "--dry-run", "--memory-budget", "1MiB")) == 2
    err = capsys.readouterr().err
    assert "--memory-budget" in err and "fix:" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "o" / "manifest.json")
