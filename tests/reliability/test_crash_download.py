"""kill -9 of the whole ``laionprep download`` process group (launcher + img2dataset workers) at a random moment of
its run, for several seeds; the same command again must end exactly like an uninterrupted run: the same manifest
accounting, the same records by key, none duplicated, none missing, nothing left under a temporary name.

(tests/ingest/test_resume.py kills at one fixed moment, right after the first shard completes; this kills anywhere
in [5%, 95%] of the measured run time: metadata fetch, prefilter, img2dataset start-up, mid-shard, manifest writes.)
"""
from __future__ import annotations

import json
import os
import shutil

import pytest

from laionprep import shards
from laionprep.testing import synth

from .crash_helpers import SEEDS, download_cmd, download_keys, kill_at, run, temp_files


pytestmark = pytest.mark.slow  # real img2dataset / Beam / training runs, killed and run again


@pytest.fixture(scope="module")
def reference(tmp_path_factory, demo_server, demo_download):
    """The session's uninterrupted download (conftest's ``demo_download``) and the same metadata written again for
    the CLI runs: (metadata source, shard size, manifest, keys, duration).  The duration is the reference run's
    measured download time plus a launcher start-up allowance, so kill moments spread over the whole command."""
    ref = json.load(open(os.path.join(demo_download, "manifest.json")))
    source = str(tmp_path_factory.mktemp("crash_download") / "source")
    synth.write_metadata(source, ref["stages"]["metadata"]["rows"], demo_server.base_url, seed=0, files=2)
    keys = download_keys(demo_download)
    assert ref["status"] == "complete" and ref["accounting"]["balanced"]
    assert len(keys) == ref["accounting"]["downloaded_ok"] > 0 and set(keys.values()) == {1}
    seconds = ref["stages"]["download"]["seconds"] + 3.0
    return source, ref["parameters"]["download"]["number_sample_per_shard"], ref, keys, seconds


@pytest.mark.parametrize("seed", SEEDS)
def test_download_killed_at_a_random_moment_resumes_to_the_same_result(tmp_path, reference, seed):
    source, shard, ref, ref_keys, seconds = reference
    out = str(tmp_path / "laion")
    delay = kill_at(download_cmd(source, out, shard), seed, seconds, reset=lambda: shutil.rmtree(out))

    r, _ = run(download_cmd(source, out, shard))  # the same command again
    assert r.returncode == 0, f"killed after {delay:.2f}s\n" + r.stdout + r.stderr
    m = json.load(open(os.path.join(out, "manifest.json")))
    assert m["status"] == "complete"
    assert m["accounting"] == ref["accounting"]
    for stage in ("metadata", "prefilter", "download"):
        for k in ("rows", "rows_in", "rows_out", "dropped", "success", "failed", "shards_expected", "shards_done"):
            assert m["stages"][stage].get(k) == ref["stages"][stage].get(k), (stage, k)
    keys = download_keys(out)
    dupes = {k: n for k, n in keys.items() if n > 1}
    assert not dupes, f"duplicate records: {dupes}"
    assert set(keys) == set(ref_keys), (sorted(set(ref_keys) - set(keys)), sorted(set(keys) - set(ref_keys)))
    scan = shards.scan(out)
    assert not scan.orphans and not scan.gaps and not scan.missing_tfrecord
    assert temp_files(out) == []
    print(f"seed {seed}: killed at {delay:.2f}s (reference {seconds:.2f}s); {sum(keys.values())} records, 0 lost, "
          "0 duplicated")
