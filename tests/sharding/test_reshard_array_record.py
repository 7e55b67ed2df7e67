"""``laionprep reshard --format array_record`` on the real demo download (real Beam runner): the same records as the
TFRecord reshard, in ArrayRecord files; its re-run rule; the TFDS registration ``tfds.data_source`` reads by index.
"""
from __future__ import annotations

import json
import os

import pytest

from laionprep import cli
from laionprep.manifest import detail
from laionprep.sharding import ReshardConfig, reshard
from laionprep.tfrecord import read_records

from reshard_helpers import array_records

QUIET = {"log": lambda *a, **k: None}
SPLITS = ("train", "validation")


@pytest.fixture(scope="module")
def both(demo_download, tmp_path_factory):
    """The same shuffled, split, column-dropping reshard written as TFRecord and as ArrayRecord."""
    root = tmp_path_factory.mktemp("formats")
    base = dict(sources=(demo_download,), name="demo_ar", num_shards=3, validation_fraction=0.25, shuffle=True,
                seed=5, drop_columns=("exif", "error_message", "status"))
    out = {}
    for fmt in ("tfrecord", "array_record"):
        cfg = ReshardConfig(output=str(root / fmt), file_format=fmt, **base)
        out[fmt] = (cfg, reshard(cfg, **QUIET))
    return out


def test_array_record_reshard_holds_the_tfrecord_reshards_records_in_order(both):
    (tcfg, tm), (acfg, am) = both["tfrecord"], both["array_record"]
    tcounts = json.load(open(os.path.join(tcfg.output, "counts.json")))
    acounts = json.load(open(os.path.join(acfg.output, "counts.json")))
    n = 0
    for split in SPLITS:
        ti, ai = tcounts["splits"][split], acounts["splits"][split]
        assert ai["filename_template"] == f"{split}/demo_ar-{split}-{{SHARD_X_OF_Y}}.array_record"
        assert ai["shard_lengths"] == ti["shard_lengths"] and ai["num_examples"] == ti["num_examples"]
        for i in range(3):
            tf_file = os.path.join(tcfg.output, split, f"demo_ar-{split}-{i:05d}-of-00003.tfrecord")
            ar_file = os.path.join(acfg.output, split, f"demo_ar-{split}-{i:05d}-of-00003.array_record")
            recs = list(read_records(tf_file))
            assert array_records(ar_file) == recs  # record for record, byte for byte
            assert len(recs) == ai["shard_lengths"][i]
            n += len(recs)
    assert n == detail(am)["rows_in"] == detail(tm)["rows_in"] > 0
    assert detail(am)["file_format"] == "array_record" and am["parameters"]["file_format"] == "array_record"
    # the default stays out of the parameters, so folders made before --format keep their fingerprint
    assert "file_format" not in tm["parameters"]
    assert detail(am)["plan"]["hash"] != detail(tm)["plan"]["hash"]


def test_array_record_rerun_is_a_noop_and_another_format_needs_restart(both, capfd):
    acfg, am = both["array_record"]
    again = reshard(acfg, **QUIET)
    assert again["fingerprint"] == am["fingerprint"]
    code = cli.main(["reshard", *acfg.sources, "--output", acfg.output, "--name", "demo_ar", "--num-shards", "3",
                     "--validation-fraction", "0.25", "--shuffle", "--seed", "5",
                     "--drop-columns", "exif,error_message,status"])
    err = capfd.readouterr().err
    assert code == 2 and "file_format: " in err and "array_record" in err  # the changed parameter, named
    assert "--restart" in err and "Traceback" not in err


def test_unknown_format_is_a_usage_error(demo_download, tmp_path, capfd):
    with pytest.raises(SystemExit) as e:  # argparse: exit 2 with the valid choices
        cli.main(["reshard", demo_download, "--output", str(tmp_path / "x"), "--name", "x", "--format", "parquet"])
    err = capfd.readouterr().err
    assert e.value.code == 2 and "--format" in err and "array_record" in err and "Traceback" not in err


def test_registration_gives_random_access_through_tfds_data_source(both, tmp_path):
    import tensorflow_datasets as tfds

    from laionprep.tfds_builders.register import register

    acfg, _ = both["array_record"]
    tcfg, _ = both["tfrecord"]
    root = str(tmp_path / "tfds")
    res = register(acfg.output, "demo_ar", root)
    assert res.layout == "symlinks" and res.splits["train"] > 0
    info = json.load(open(os.path.join(root, "demo_ar", "1.0.0", "dataset_info.json")))
    assert info["fileFormat"] == "array_record"
    expected = [r for i in range(3) for r in read_records(
        os.path.join(tcfg.output, "train", f"demo_ar-train-{i:05d}-of-00003.tfrecord"))]
    from laionprep.tfrecord import Example

    src = tfds.data_source("demo_ar", split="train", data_dir=root)
    assert len(src) == len(expected) == res.splits["train"]
    for i in (len(expected) - 1, 0, len(expected) // 2):  # out of order: random access by index
        got = src[i]
        want = Example.FromString(expected[i]).features.feature
        key = got["key"].decode() if isinstance(got["key"], bytes) else str(got["key"])
        assert key == want["key"].bytes_list.value[0].decode()
        assert got["jpg"].ndim == 3 and got["jpg"].shape[-1] == 3  # the JPEG, decoded by TFDS


def test_in_place_registration_of_an_array_record_reshard(both, tmp_path):
    import shutil

    import tensorflow_datasets as tfds

    from laionprep.tfds_builders.register import register

    acfg, _ = both["array_record"]
    root = tmp_path / "tfds"
    version_dir = root / "demo_ar" / "1.0.0"
    shutil.copytree(acfg.output, version_dir)  # a reshard written straight into ROOT/NAME/VERSION
    res = register(str(version_dir), "demo_ar", str(root))
    assert res.layout == "in_place"
    for split in SPLITS:
        src = tfds.data_source("demo_ar", split=split, data_dir=str(root))
        assert len(src) == res.splits[split] > 0
        assert src[len(src) - 1]["jpg"].shape[-1] == 3
