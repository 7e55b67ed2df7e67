"""kill -9 of the whole ``laionprep reshard`` process group (launcher + Beam SDK worker processes) at a random
moment of its run, for several seeds; the same command again must produce byte-identical output shards, the same
counts.json and the same accounting, with every record exactly once.

(tests/sharding/test_reshard.py injects one worker failure inside a task; this kills the whole job anywhere in
[5%, 95%] of its measured run time: planning, Beam start-up, mid-shard writes, renames, the manifest.)
"""
from __future__ import annotations

import glob
import json
import os
import shutil

import pytest

from laionprep.manifest import detail

from .crash_helpers import SEEDS, cli, keys_of_files, kill_at, run, temp_files

from reshard_helpers import shard_bytes  # noqa: E402  (tests/sharding/reshard_helpers.py)


def reshard_cmd(source: str, out: str) -> list[str]:
    return cli("reshard", source, "--output", out, "--name", "demo_crash", "--num-shards", "3",
               "--validation-fraction", "0.25", "--shuffle", "--seed", "5", "--no-progress")


def output_keys(out: str):
    return keys_of_files(sorted(glob.glob(os.path.join(out, "*", "demo_crash-*-of-*.tfrecord"))))


pytestmark = pytest.mark.slow  # real img2dataset / Beam / training runs, killed and run again


@pytest.fixture(scope="module")
def reference(tmp_path_factory, demo_download):
    """An uninterrupted CLI reshard of the session's download: (output, manifest, shard bytes, keys, seconds)."""
    out = str(tmp_path_factory.mktemp("crash_reshard") / "reference")
    r, seconds = run(reshard_cmd(demo_download, out))
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.load(open(os.path.join(out, "manifest.json")))
    keys = output_keys(out)
    assert m["accounting"]["balanced"] and sum(keys.values()) == m["accounting"]["kept"] == len(keys) > 0
    return out, m, shard_bytes(out), keys, seconds


@pytest.mark.parametrize("seed", SEEDS)
def test_reshard_killed_at_a_random_moment_resumes_to_identical_bytes(tmp_path, demo_download, reference, seed):
    ref_out, ref, ref_bytes, ref_keys, seconds = reference
    out = str(tmp_path / "out")
    delay = kill_at(reshard_cmd(demo_download, out), seed, seconds, reset=lambda: shutil.rmtree(out))

    r, _ = run(reshard_cmd(demo_download, out))  # the same command again
    assert r.returncode == 0, f"killed after {delay:.2f}s\n" + r.stdout + r.stderr
    got = shard_bytes(out)
    assert sorted(got) == sorted(ref_bytes)
    for name in ref_bytes:
        assert got[name] == ref_bytes[name], f"{name} differs from the uninterrupted run"
    counts = [open(os.path.join(d, "counts.json"), "rb").read() for d in (out, ref_out)]
    assert counts[0] == counts[1]
    m = json.load(open(os.path.join(out, "manifest.json")))
    assert m["accounting"] == ref["accounting"]
    for k in ("rows_in", "rows_out", "dropped", "shards", "schema"):
        assert detail(m)[k] == detail(ref)[k], k
    keys = output_keys(out)
    assert not {k: n for k, n in keys.items() if n > 1}, "duplicate records"
    assert keys == ref_keys
    assert temp_files(out) == [] and not os.path.exists(os.path.join(out, "_reshard"))
    print(f"seed {seed}: killed at {delay:.2f}s (reference {seconds:.2f}s); resumed shards "
          f"{detail(m)['resumed_shards']}; "
          f"{sum(keys.values())} records, 0 lost, 0 duplicated")
