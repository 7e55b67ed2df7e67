"""Lost and damaged files of a finished download (docs/RELIABILITY.md, "Lost and damaged files").

A tiny real download (3 shards) is damaged in one way; then either the same `laionprep download` command runs
again (its resume check moves the shard aside and img2dataset fetches it again), or `validate --quarantine` moves
it first (exit 0), the download fetches it, and validate passes.  Each time the records (keys, captions, image
bytes) and the accounting equal a fresh run's.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess

import pytest

from . import lost_files_helpers as lh
from .crash_helpers import cli, env, run

pytestmark = pytest.mark.slow  # real img2dataset runs


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, demo_server):
    """(metadata source, a fresh finished download, its records, its manifest), shared read-only."""
    base = tmp_path_factory.mktemp("lost_files")
    source = lh.write_source(str(base / "source"), demo_server)
    out = str(base / "fresh")
    r, _ = run(lh.download_cmd(source, out))
    assert r.returncode == 0, r.stdout + r.stderr
    m = lh.manifest(out)
    assert m["status"] == "complete" and m["stages"]["download"]["shards_expected"] == 3
    recs = lh.records(out)
    assert len(recs) == m["accounting"]["downloaded_ok"] > 20
    return source, out, recs, m


def _copy(fresh, tmp_path) -> str:
    d = str(tmp_path / "laion")
    shutil.copytree(fresh[1], d)
    return d


def _assert_like_fresh(d, fresh):
    m = lh.manifest(d)
    assert m["status"] == "complete"
    assert m["accounting"] == fresh[3]["accounting"] and m["accounting"]["balanced"]
    assert m["stages"]["download"]["failed"] == fresh[3]["stages"]["download"]["failed"]
    assert lh.records(d) == fresh[2]
    r, _ = _validate(lh.validate_cmd(d))
    assert r.returncode == 0, r.stdout + r.stderr


WHY = {"tfrecord": "shard 00001: tfrecord missing (parquet and _stats.json present)",
       "parquet": "shard 00001: parquet missing (tfrecord and _stats.json present)",
       "truncate": "shard 00001: tfrecord has"}


@pytest.mark.parametrize("how", lh.DAMAGES)
def test_resume_fetches_a_shard_with_a_lost_or_truncated_file_again(fresh, tmp_path, how):
    """Old behaviour: the re-run exited 0 at once, counting the shard (stats file present) as finished."""
    d = _copy(fresh, tmp_path)
    lh.damage(d, 1, how)
    r, _ = run(lh.download_cmd(fresh[0], d))
    assert r.returncode == 0, r.stdout + r.stderr
    _assert_like_fresh(d, fresh)
    refetched = lh.manifest(d)["stages"]["download"]["refetched"]
    if how == "stats":  # no stats file: an unfinished shard, which img2dataset redoes by itself
        assert refetched == [] and not os.path.exists(os.path.join(d, "_quarantine"))
        return
    (e,) = refetched
    assert e["shard"] == 1 and e["why"].startswith(WHY[how]) and e["moved_by"] == "download (resume check)"
    assert "fetched again" in r.stdout and "00001" in r.stdout  # the summary says so too
    (qdir,) = glob.glob(os.path.join(d, "_quarantine", "*"))
    why = json.load(open(os.path.join(qdir, "why.json")))
    assert [s["shard"] for s in why["shards"]] == [1] and why["by"] == "laionprep download (resume check)"
    left = {"tfrecord": ["00001.parquet", "00001_stats.json"], "parquet": ["00001.tfrecord", "00001_stats.json"],
            "truncate": ["00001.parquet", "00001.tfrecord", "00001_stats.json"]}[how]
    assert sorted(os.listdir(qdir)) == sorted(left + ["why.json"])  # moved, nothing deleted


def test_an_empty_tfrecord_is_caught_without_the_size_record(fresh, tmp_path):
    """A folder downloaded before DIR/_shards.parquet existed: a 0-byte tfrecord of a shard with successes is still
    fetched again (the stats file's successes say it cannot be empty)."""
    d = _copy(fresh, tmp_path)
    os.remove(os.path.join(d, "_shards.parquet"))
    lh.damage(d, 2, "truncate", keep=0)
    r, _ = run(lh.download_cmd(fresh[0], d))
    assert r.returncode == 0, r.stdout + r.stderr
    (e,) = lh.manifest(d)["stages"]["download"]["refetched"]
    assert e["shard"] == 2 and "tfrecord has 0 bytes for the" in e["why"]
    _assert_like_fresh(d, fresh)
    assert os.path.exists(os.path.join(d, "_shards.parquet"))  # recorded again for the next resume


MESSAGES = {"tfrecord": "shard 00001: tfrecord missing (parquet and _stats.json present)",
            "parquet": "shard 00001: parquet missing (tfrecord and _stats.json present)",
            "stats": "shard 00001: _stats.json missing (tfrecord and parquet present: an unfinished shard; the next "
                     "download redoes it)",
            "truncate": "1 records in the tfrecord"}


@pytest.mark.parametrize("how", lh.DAMAGES)
def test_quarantine_exits_0_and_the_download_fetches_exactly_that_shard(fresh, tmp_path, how):
    """Old behaviour: --quarantine exited 1 after moving, and did not move a shard without its tfrecord (or
    without its stats file), which then could never be fetched again."""
    d = _copy(fresh, tmp_path)
    lh.damage(d, 1, how)
    before = {s: os.path.getmtime(lh.shard_file(d, s, "tfrecord")) for s in (0, 2)}
    r, _ = _validate(lh.validate_cmd(d))  # plain validate: exit 1, naming what exists and what is missing
    assert r.returncode == 1 and MESSAGES[how] in " ".join(r.stdout.split()), r.stdout

    r, _ = _validate(lh.validate_cmd(d, "--quarantine"))
    out = " ".join(r.stdout.split())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "quarantined shard 00001" in out and "left for the download: shards 00001" in out
    assert "OK after quarantine" in out and "Traceback" not in r.stdout + r.stderr
    (qdir,) = glob.glob(os.path.join(d, "_quarantine", "*"))
    present = {"tfrecord": ["parquet", "stats"], "parquet": ["tfrecord", "stats"], "stats": ["tfrecord", "parquet"],
               "truncate": ["tfrecord", "parquet", "stats"]}[how]
    assert sorted(os.listdir(qdir)) == sorted([os.path.basename(lh.shard_file(d, 1, w)) for w in present]
                                              + ["why.json"])
    assert not glob.glob(os.path.join(d, "tfrecord", "00001*"))
    m = lh.manifest(d)
    assert m["status"] == "incomplete" and [e["shard"] for e in m["stages"]["quarantine"]["shards"]] == [1]
    # nothing treats it as complete: plain validate says so (exit 1); --quarantine again moves nothing (exit 0)
    r, _ = _validate(lh.validate_cmd(d))
    assert r.returncode == 1 and "incomplete_download" in r.stdout
    r, _ = _validate(lh.validate_cmd(d, "--quarantine"))
    assert r.returncode == 0 and len(glob.glob(os.path.join(d, "_quarantine", "*"))) == 1

    r, _ = run(lh.download_cmd(fresh[0], d))
    assert r.returncode == 0, r.stdout + r.stderr
    (e,) = lh.manifest(d)["stages"]["download"]["refetched"]
    assert e["shard"] == 1 and e["moved_by"] == "validate --quarantine"
    assert lh.manifest(d)["stages"]["quarantine"]["shards"] == []
    for s, t in before.items():  # only the quarantined shard was fetched again
        assert os.path.getmtime(lh.shard_file(d, s, "tfrecord")) == t
    _assert_like_fresh(d, fresh)


def test_build_tfds_refuses_a_download_with_quarantined_shards(fresh, tmp_path):
    d = _copy(fresh, tmp_path)
    lh.damage(d, 0, "truncate")
    r, _ = _validate(lh.validate_cmd(d, "--quarantine"))
    assert r.returncode == 0, r.stdout + r.stderr
    r, _ = run(cli("build-tfds", "--name", "demo_q", "--data-dir", str(tmp_path / "tfds"), "--source", d,
                   "--no-progress"))
    assert r.returncode == 1, r.stdout + r.stderr
    err = " ".join(r.stderr.split())
    assert "status='incomplete'" in err and "re-run the same `laionprep download` command" in err
    assert "Traceback" not in r.stdout + r.stderr
    assert not os.path.exists(tmp_path / "tfds" / "demo_q")


def test_the_readme_line_quarantines_then_fetches_again(fresh, tmp_path):
    """README: `laionprep validate DIR --quarantine && laionprep download ...` (the download used to never run)."""
    d = _copy(fresh, tmp_path)
    path = lh.shard_file(d, 2, "tfrecord")
    with open(path, "r+b") as f:  # one flipped byte inside a record: only a full read (validate) finds it
        f.seek(40)
        b = f.read(1)
        f.seek(40)
        f.write(bytes([b[0] ^ 0x10]))
    line = " ".join(map(_quote, lh.validate_cmd(d, "--quarantine"))) + " && " + " ".join(
        map(_quote, lh.download_cmd(fresh[0], d)))
    r = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=600, env=env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "quarantined shard 00002" in " ".join(r.stdout.split())
    (e,) = lh.manifest(d)["stages"]["download"]["refetched"]
    assert e["shard"] == 2 and e["moved_by"] == "validate --quarantine"
    _assert_like_fresh(d, fresh)


def test_a_problem_that_is_not_one_shards_keeps_exit_1(fresh, tmp_path):
    """A manifest that disagrees with sound shards: nothing to move, exit 1 even with --quarantine."""
    d = _copy(fresh, tmp_path)
    m = lh.manifest(d)
    m["stages"]["download"]["success"] += 1
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(m, f)
    r, _ = _validate(lh.validate_cmd(d, "--quarantine"))
    assert r.returncode == 1, r.stdout
    out = " ".join(r.stdout.split())
    assert "problems left after the quarantine" in out and "manifest_mismatch" in out
    assert not os.path.exists(os.path.join(d, "_quarantine")) and lh.manifest(d)["status"] == "complete"


def _validate(cmd):
    return run(cmd, env=env(COLUMNS="400"))  # a wide table: messages on one line


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def test_a_parquet_corrupted_at_the_same_size_is_an_error_whose_fix_works(fresh, tmp_path):
    """The resume check reads no parquet (sizes only); the accounting read then finds the damage: a clear error
    naming the shard and the fix (it was a pyarrow traceback), and that fix ends like a fresh run."""
    d = _copy(fresh, tmp_path)
    path = lh.shard_file(d, 1, "parquet")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # parquet's footer length and end magic ("PAR1") overwritten, same size
        f.seek(size - 8)
        f.write(b"\0" * 8)
    r, _ = run(lh.download_cmd(fresh[0], d))
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
    assert "shard 00001: its parquet cannot be read" in r.stderr and "--quarantine" in r.stderr
    r, _ = _validate(lh.validate_cmd(d, "--quarantine"))
    assert r.returncode == 0, r.stdout + r.stderr
    r, _ = run(lh.download_cmd(fresh[0], d))
    assert r.returncode == 0, r.stdout + r.stderr
    _assert_like_fresh(d, fresh)


def test_a_truncated_stats_file_is_a_shard_problem_not_a_traceback(fresh, tmp_path):
    """Found by the randomized test (seed 52): validate's scan raised a JSONDecodeError on a _stats.json cut short
    (a run killed while img2dataset wrote it).  Now it is that shard's bad_metadata, which --quarantine moves."""
    d = _copy(fresh, tmp_path)
    stats = lh.shard_file(d, 1, "stats")
    os.truncate(stats, os.path.getsize(stats) // 2)
    r, _ = _validate(lh.validate_cmd(d))
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
    assert "shard 00001: _stats.json cannot be read" in r.stdout + r.stderr
    r, _ = _validate(lh.validate_cmd(d, "--quarantine"))
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert not os.path.exists(stats)
    r, _ = run(lh.download_cmd(fresh[0], d))
    assert r.returncode == 0, r.stdout + r.stderr
    _assert_like_fresh(d, fresh)
