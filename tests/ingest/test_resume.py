"""kill -9 in the middle of a real download, then the same command again: same accounting, same records."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from laionprep import shards
from laionprep.testing import synth



def cli(*args):
    return [sys.executable, "-m", "laionprep.cli", *args]


def download_args(source, out, shard_size=60):
    return cli("download", "--dataset", "demo", "--metadata-source", source, "--output", out, "--processes", "2",
               "--threads", "4", "--number-sample-per-shard", str(shard_size), "--no-progress",
               "--allow-private-addresses")


def key_set(download_dir):
    out = {}
    for s in shards.scan(download_dir).shards:
        for r in shards.iter_records(s.tfrecord):
            ex = shards.parse_example(r)
            out[ex["key"][1][0]] = ex["url"][1][0]
    return out


def test_killed_download_resumes_to_the_same_result(tmp_path, demo_server, demo_download):
    reference = json.load(open(os.path.join(demo_download, "manifest.json")))
    shard_size = reference["parameters"]["download"]["number_sample_per_shard"]
    source = str(tmp_path / "source" / "metadata")
    # the same rows as the session's uninterrupted demo_download, served by the same server
    synth.write_metadata(source, reference["stages"]["metadata"]["rows"], demo_server.base_url, seed=0, files=2)
    out = str(tmp_path / "laion")
    tf_dir = os.path.join(out, "tfrecord")
    proc = subprocess.Popen(download_args(source, out, shard_size), start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        done = [n for n in os.listdir(tf_dir)] if os.path.isdir(tf_dir) else []
        if any(n.endswith("_stats.json") for n in done):
            break
        time.sleep(0.05)
    assert proc.poll() is None, ("the download finished before it could be killed: "
                                 + proc.stdout.read().decode()[-2000:])
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = [n for n in os.listdir(tf_dir) if n.endswith("_stats.json")]
    assert 1 <= len(finished) < 4, finished
    m = json.load(open(os.path.join(out, "manifest.json")))
    assert m["status"] == "downloading"  # the manifest says the run did not finish

    r = subprocess.run(download_args(source, out, shard_size), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    resumed = json.load(open(os.path.join(out, "manifest.json")))
    assert resumed["status"] == "complete"
    assert resumed["accounting"] == reference["accounting"]
    assert resumed["stages"]["prefilter"]["dropped"] == reference["stages"]["prefilter"]["dropped"]
    assert resumed["stages"]["download"]["failed"] == reference["stages"]["download"]["failed"]
    # the finished shards were not downloaded again: their stats files are untouched
    for n in finished:
        assert os.path.exists(os.path.join(tf_dir, n))
    # same records by key (and each key maps to the same URL), none duplicated, none missing
    assert key_set(out) == key_set(demo_download)
    assert not shards.scan(out).orphans


def test_second_concurrent_run_is_refused(tmp_path, demo_server):
    from laionprep import fs as lfs

    out = str(tmp_path / "laion")
    with lfs.exclusive_lock(out, "laionprep download"):
        r = subprocess.run(download_args(str(tmp_path / "nothing"), out), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "another laionprep download is running" in r.stderr
