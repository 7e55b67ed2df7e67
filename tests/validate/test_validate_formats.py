"""The other two folder kinds: a resharded folder (counts.json) and a TFDS folder (dataset_info.json)."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import validate_helpers as vh

from laionprep.errors import UsageError
from laionprep.validate import ValidateConfig, validate


def run(path, **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("decode_fraction", 1.0)
    return validate(ValidateConfig(str(path), **kw))


# --------------------------------------------------------------------------------------------- resharded
def test_resharded_folder_is_valid(resharded, cli):
    rep = run(resharded, image_size=480)
    assert rep.ok, rep.problem_rows()
    assert rep.kind == "resharded" and rep.totals["records"] == 190 == rep.totals["expected_records"]
    assert {"NSFW", "similarity", "LICENSE"} <= set(rep.config["checks"]["required"])  # dataset from the manifest
    assert cli(resharded, "--image-size", 480) == 0


def test_resharded_without_an_image_size_says_sizes_are_not_checked(resharded):
    rep = run(resharded, decode_fraction=0)
    assert rep.ok and any("image sizes are not checked" in n for n in rep.notes)


def test_resharded_wrong_count_missing_and_stray_files(resharded, tmp_path, cli):
    d = str(tmp_path / "rs")
    shutil.copytree(resharded, d)
    counts = json.load(open(os.path.join(d, "counts.json")))
    counts["splits"]["train"]["shard_lengths"][2] += 1
    counts["splits"]["train"]["num_examples"] += 1
    json.dump(counts, open(os.path.join(d, "counts.json"), "w"))
    rep = run(d, decode_fraction=0)
    (pr,) = rep.by_kind("count_mismatch")
    assert pr.file == "demo_rs-train.tfrecord-00002-of-00004" and "counts.json gives 59" in pr.message
    assert rep.by_kind("manifest_mismatch")  # the manifest's rows_out no longer equals counts.json's total
    assert cli(d, "--decode-fraction", 0) == 1

    os.remove(os.path.join(d, "demo_rs-train.tfrecord-00001-of-00004"))
    shutil.copy(os.path.join(d, "demo_rs-train.tfrecord-00000-of-00004"),
                os.path.join(d, "demo_rs-train.tfrecord-00000-of-00002"))
    rep = run(d, decode_fraction=0)
    assert [p.file for p in rep.by_kind("missing_shard")] == ["demo_rs-train.tfrecord-00001-of-00004"]
    assert [p.file for p in rep.by_kind("unexpected_file")] == ["demo_rs-train.tfrecord-00000-of-00002"]
    # the stray copy is not read, so its keys do not count as duplicates
    assert "duplicate_key" not in rep.counts


def test_resharded_null_typed_column(resharded, tmp_path):
    d = str(tmp_path / "rs")
    shutil.copytree(resharded, d)
    vh.edit_record(os.path.join(d, "demo_rs-train.tfrecord-00003-of-00004"), 0,
                   lambda ex: vh.set_bytes(ex, "similarity", b""))
    (pr,) = run(d, decode_fraction=0).by_kind("mixed_type")
    assert (pr.file, pr.record) == ("demo_rs-train.tfrecord-00003-of-00004", 0)


def test_resharded_manifest_schema_and_image_settings(demo_download, tmp_path):
    """`laionprep reshard`'s manifest names the output schema and the downloads' image settings: both are used."""
    rec = vh.record_features(os.path.join(demo_download, "tfrecord", "00000.tfrecord"), 0)
    kinds = {int: "int64", float: "float", bytes: "bytes"}
    schema = {k: kinds[type(v[0])] for k, v in rec.items()}
    d = str(tmp_path / "rs")
    vh.make_resharded(demo_download, d, manifest={
        "dataset": "demo", "schema": schema, "rows_out": {"train": 190},
        "images": {"image_size": 480, "resize_mode": "keep_ratio", "resize_only_if_bigger": False}})
    rep = run(d, decode_fraction=0)
    assert rep.ok and rep.config["checks"]["image_size"] == 480
    assert set(rep.config["checks"]["required"]) == set(schema)  # url, exif, status ... too
    vh.edit_record(os.path.join(d, "demo_rs-train.tfrecord-00002-of-00004"), 8,
                   lambda ex: ex.features.feature.pop("url"))
    (pr,) = run(d, decode_fraction=0).by_kind("missing_key")
    assert (pr.file, pr.record) == ("demo_rs-train.tfrecord-00002-of-00004", 8) and "url" in pr.message


def test_resharded_column_of_the_wrong_type_everywhere(resharded, tmp_path):
    """Not mixed (every record agrees), but not the dataset's type for the column either."""
    d = str(tmp_path / "rs")
    shutil.copytree(resharded, d)
    for f in sorted(os.listdir(d)):
        if ".tfrecord-" in f:
            vh.edit_all(os.path.join(d, f), lambda ex: vh.set_bytes(
                ex, "similarity", str(ex.features.feature["similarity"].float_list.value[0]).encode()))
    rep = run(d, decode_fraction=0)
    (pr,) = rep.by_kind("wrong_type")
    assert pr.count == 190 and "'similarity' is bytes in 190 records, float expected" in pr.message
    assert (pr.file, pr.record) == ("demo_rs-train.tfrecord-00000-of-00004", 0)
    assert set(rep.counts) == {"wrong_type"}


# --------------------------------------------------------------------------------------------- TFDS
def test_tfds_folder_is_valid(tfds_folder, cli):
    rep = run(tfds_folder, image_size=480)
    assert rep.ok, rep.problem_rows()
    assert rep.kind == "tfds" and rep.totals["records"] == 190
    assert (rep.config["checks"]["image_key"], rep.config["checks"]["image_format"]) == ("jpg", "jpeg")
    assert set(rep.config["checks"]["required"]) == {"jpg", "txt", "key", "width", "height", "similarity", "NSFW",
                                                     "LICENSE"}
    # ROOT and ROOT/NAME with one version are recognised too
    assert run(os.path.dirname(os.path.dirname(tfds_folder)), decode_fraction=0).folder == tfds_folder
    assert cli(tfds_folder, "--decode-fraction", 0) == 0


def test_tfds_wrong_shard_length(tfds_folder, tmp_path, cli):
    d = str(tmp_path / "demo_tfds" / "1.0.0")
    shutil.copytree(tfds_folder, d)
    info_path = os.path.join(d, "dataset_info.json")
    info = json.load(open(info_path))
    lengths = info["splits"][0]["shardLengths"]
    true = int(lengths[1])
    lengths[1] = str(true + 2)
    json.dump(info, open(info_path, "w"))
    rep = run(d, decode_fraction=0)
    (pr,) = rep.by_kind("tfds_shard_length")
    assert pr.file == "demo_tfds-train.tfrecord-00001-of-00004"
    assert f"dataset_info.json gives {true + 2} records, the file holds {true}" in pr.message
    assert set(rep.counts) == {"tfds_shard_length"}
    assert cli(d, "--decode-fraction", 0) == 1


def test_tfds_record_whose_type_differs_from_features_json(tfds_folder, tmp_path):
    d = str(tmp_path / "demo_tfds" / "1.0.0")
    shutil.copytree(tfds_folder, d)
    vh.edit_record(os.path.join(d, "demo_tfds-train.tfrecord-00000-of-00004"), 0,
                   lambda ex: vh.set_bytes(ex, "similarity", b""))
    rep = run(d, decode_fraction=0)
    (pr,) = rep.by_kind("wrong_type")
    assert (pr.file, pr.record) == ("demo_tfds-train.tfrecord-00000-of-00004", 0)
    assert "'similarity' is bytes, features.json declares float" in pr.message
    # and TFDS's own reader fails on that record, which validate also reports
    assert rep.by_kind("tfds_unreadable")


# --------------------------------------------------------------------------------------------- usage errors
def test_usage_errors(tmp_path, demo_download, resharded, cli, capsys):
    with pytest.raises(UsageError, match="not a dataset folder"):
        run(tmp_path)
    with pytest.raises(UsageError, match="--quarantine applies to download folders"):
        run(resharded, quarantine=True)
    with pytest.raises(UsageError, match="unknown dataset"):
        run(demo_download, dataset="laion9b")
    with pytest.raises(UsageError, match="decode-fraction"):
        run(demo_download, decode_fraction=2)
    assert cli(tmp_path / "nope") == 2
    assert cli(demo_download, "--report", os.path.join(demo_download, "tfrecord", "r")) == 2
    assert "img2dataset's resume" in capsys.readouterr().err
