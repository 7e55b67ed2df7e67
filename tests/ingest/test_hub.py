"""`--metadata-source hf://datasets/ORG/REPO` through the real huggingface_hub client against a local Hub stand-in
(HF_ENDPOINT on 127.0.0.1), including a gated repo that needs HF_TOKEN."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from laionprep.testing import synth

_spec = importlib.util.spec_from_file_location("hub_server", os.path.join(os.path.dirname(__file__), "hub_server.py"))
hub_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hub_server)


@pytest.fixture
def hub(tmp_path, demo_server):
    root = tmp_path / "repo"
    synth.write_metadata(str(tmp_path / "gen" / "data"), 40, demo_server.base_url, seed=5, files=2)
    shutil.copytree(tmp_path / "gen" / "data", root / "data")  # the repo holds the metadata parquet only
    h = hub_server.Hub(str(root), token="secret-token")
    yield h
    h.stop()


def download(hub, out, token):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_TELEMETRY="1")
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "laionprep.cli", "download", "--dataset", "demo", "--metadata-source",
         "hf://datasets/laion/fake", "--output", str(out), "--processes", "1", "--threads", "4", "--no-progress",
         "--allow-private-addresses"],
        capture_output=True, text=True, env=env, timeout=300)


def test_gated_hub_repo_needs_token_then_downloads(hub, tmp_path):
    r = download(hub, tmp_path / "out", token=None)
    assert r.returncode == 1 and "HF_TOKEN" in r.stderr and "Traceback" not in r.stderr
    r = download(hub, tmp_path / "out", token="secret-token")
    assert r.returncode == 0, r.stderr
    m = json.load(open(tmp_path / "out" / "manifest.json"))
    assert m["stages"]["metadata"]["source"] == "hf://datasets/laion/fake"
    assert m["stages"]["metadata"]["files"] == ["data__part-00000.parquet", "data__part-00001.parquet"]
    assert m["stages"]["metadata"]["rows"] == 40 and m["status"] == "complete" and m["accounting"]["balanced"]
    assert m["stages"]["download"]["success"] > 20
    # resumable: a second run fetches nothing again
    n = sum(1 for c, p in hub.requests if "/resolve/" in p)
    r = download(hub, tmp_path / "out", token="secret-token")
    assert r.returncode == 0 and sum(1 for c, p in hub.requests if "/resolve/" in p) == n
    assert json.load(open(tmp_path / "out" / "manifest.json"))["stages"]["metadata"]["already_present"] == 2
