"""validate on ArrayRecord folders (``reshard --format array_record``, and its TFDS registration): integrity,
schema and counts are checked as for TFRecord shards."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from laionprep.sharding import ReshardConfig, reshard
from laionprep.validate import ValidateConfig, validate


def run(path, **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("decode_fraction", 1.0)
    return validate(ValidateConfig(str(path), **kw))


@pytest.fixture(scope="module")
def ar_out(demo_download, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ar") / "out")
    reshard(ReshardConfig(sources=(demo_download,), output=out, name="demo_ar", num_shards=2,
                          file_format="array_record",
                          drop_columns=("exif", "error_message", "status")), log=lambda *a, **k: None)
    return out


def test_array_record_reshard_is_valid_and_every_record_is_read(ar_out, cli):
    counts = json.load(open(os.path.join(ar_out, "counts.json")))
    rep = run(ar_out)
    assert rep.ok, rep.problem_rows()
    assert rep.kind == "resharded"
    assert rep.totals["records"] == counts["splits"]["train"]["num_examples"] == rep.totals["expected_records"] > 0
    assert cli(ar_out) == 0


def test_array_record_damage_counts_and_stray_files_are_found(ar_out, tmp_path, cli):
    d = str(tmp_path / "ar")
    shutil.copytree(ar_out, d)
    shard = os.path.join(d, "train", "demo_ar-train-00001-of-00002.array_record")
    with open(shard, "r+b") as f:  # cut the file: its footer index is gone
        f.truncate(os.path.getsize(shard) // 2)
    counts_path = os.path.join(d, "counts.json")
    counts = json.load(open(counts_path))
    counts["splits"]["train"]["shard_lengths"][0] += 1
    counts["splits"]["train"]["num_examples"] += 1
    json.dump(counts, open(counts_path, "w"))
    shutil.copy(os.path.join(d, "train", "demo_ar-train-00000-of-00002.array_record"),
                os.path.join(d, "train", "demo_ar-train-00000-of-00003.array_record"))
    rep = run(d, decode_fraction=0)
    assert not rep.ok
    assert [p.file for p in rep.by_kind("truncated")] == ["train/demo_ar-train-00001-of-00002.array_record"]
    mism = rep.by_kind("count_mismatch")
    assert any(p.file == "train/demo_ar-train-00000-of-00002.array_record" for p in mism), rep.problem_rows()
    assert [p.file for p in rep.by_kind("unexpected_file")] == ["train/demo_ar-train-00000-of-00003.array_record"]
    assert cli(d, "--decode-fraction", 0) == 1


def test_array_record_tfds_registration_is_valid(ar_out, tmp_path):
    from laionprep.tfds_builders.register import register

    res = register(ar_out, "demo_ar", str(tmp_path / "tfds"))
    rep = run(res.dataset_dir)
    assert rep.ok, rep.problem_rows()
    assert rep.kind == "tfds" and rep.totals["records"] == res.splits["train"] == rep.totals["expected_records"]
