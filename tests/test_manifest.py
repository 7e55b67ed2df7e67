"""One manifest schema: the outputs of download, reshard and build-tfds, from real runs, read by one reader."""
from __future__ import annotations

import os

import pytest

from laionprep import manifest
from laionprep.sharding import ReshardConfig, reshard
from laionprep.tfds_builders.register import register


@pytest.fixture(scope="module")
def three_manifests(demo_download, tmp_path_factory):
    work = tmp_path_factory.mktemp("manifests")
    out = str(work / "rs")
    reshard(ReshardConfig(sources=(demo_download,), output=out, name="demo_mf", num_shards=2,
                          beam_args=("--direct_num_workers=2",)), log=lambda *a: None)
    res = register(out, "demo_mf", str(work / "tfds"))
    return {"download": demo_download, "reshard": out, "build-tfds": res.dataset_dir}


def test_every_stage_writes_the_same_top_level_fields(three_manifests):
    for stage, folder in three_manifests.items():
        m = manifest.read(folder)
        assert m == manifest.read(os.path.join(folder, manifest.NAME))
        assert tuple(m) == manifest.FIELDS, stage
        assert m["format"] == manifest.FORMAT and m["stage"] == stage and m["status"] == "complete"
        assert m["dataset"] == "demo"  # the spec travels from the download to every later stage
        assert m["fingerprint"] == manifest.fingerprint(m["parameters"])
        acc = m["accounting"]
        assert acc["balanced"] and acc["rows_in"] == acc["kept"] + acc["dropped"] and acc["kept"] > 0
        assert manifest.detail(m) and m["versions"]["laionprep"]


def test_run_only_settings_are_not_parameters(three_manifests):
    dl = manifest.read(three_manifests["download"])
    assert "output" not in dl["parameters"] and "processes" not in dl["parameters"]["download"]
    assert dl["stages"]["download"]["settings"]["download"]["processes"] == 2
    rs = manifest.read(three_manifests["reshard"])
    assert "beam_args" not in rs["parameters"] and rs["parameters"]["num_shards"] == 2
    assert manifest.detail(rs)["settings"]["beam_args"] == ["--direct_num_workers=2"]
    kept = manifest.read(three_manifests["build-tfds"])["accounting"]["kept"]
    assert kept == rs["accounting"]["kept"] == sum(manifest.detail(rs)["rows_out"].values())


def test_fingerprint_is_canonical():
    assert manifest.fingerprint({"a": (1, 2), "b": None}) == manifest.fingerprint({"b": None, "a": [1, 2]})
    assert manifest.fingerprint({"a": 1}) != manifest.fingerprint({"a": 2})
