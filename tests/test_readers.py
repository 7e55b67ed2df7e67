"""The research trainers' own readers, run on every kind of laionprep output: each record is read, none dropped.

The readers are re-stated here from what their public code does (not copied):

* FLIP (``input_pipeline_laion``): ``tf.io.gfile.glob(LAION_PATH/*.tfrecord)`` (its ``create_split`` takes the
  first file name, so an empty glob ends in ``StopIteration``), ``parse_single_example`` with ``FixedLenFeature``
  for ``txt``, ``jpg`` (string), ``height``, ``width`` (int64) and ``key`` (string), ``key`` cast with
  ``tf.strings.to_number(out_type=int64)``, the dataset under ``ignore_errors`` (a failing record vanishes);
* CLIPA (clipa_jax ``datasets/tfds.py``): ``tfds.builder_from_directory(data_dir)`` and ``as_dataset`` with the
  split name hard-coded to ``'full'``.

Counts are compared with the folders' own manifests / counts.json; the reshard keys with the download's.
"""
from __future__ import annotations

import json
import os

import pytest

from laionprep import cli
from laionprep.manifest import detail
from laionprep.sharding import ReshardConfig, reshard
from laionprep.tfds_builders.register import register
from laionprep.tfrecord import write_records

QUIET = {"log": lambda *a, **k: None}


@pytest.fixture(scope="module")
def tf():
    from laionprep._env import import_tf

    return import_tf()


def flip_read(tf, laion_path: str) -> list[int]:
    """FLIP's LAION reader: the int64 keys of the records it yields from ``laion_path``."""
    files = tf.io.gfile.glob(os.path.join(laion_path, "*.tfrecord"))
    first = next(iter(files))  # create_split: StopIteration when the glob finds nothing
    assert first
    spec = {"txt": tf.io.FixedLenFeature([], tf.string), "jpg": tf.io.FixedLenFeature([], tf.string),
            "height": tf.io.FixedLenFeature([], tf.int64), "width": tf.io.FixedLenFeature([], tf.int64),
            "key": tf.io.FixedLenFeature([], tf.string)}

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        ex["key"] = tf.strings.to_number(ex["key"], out_type=tf.int64)
        return ex

    ds = tf.data.TFRecordDataset(files).map(parse).ignore_errors()
    return [int(ex["key"]) for ex in ds.as_numpy_iterator()]


def clipa_count(data_dir: str) -> int:
    """CLIPA's reader: ``builder_from_directory(data_dir)``, split ``'full'``."""
    import tensorflow_datasets as tfds

    ds = tfds.builder_from_directory(data_dir).as_dataset(split="full", shuffle_files=False)
    return sum(1 for _ in ds.as_numpy_iterator())


def download_keys(download: str) -> list[int]:
    import glob

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pa.concat_tables([pq.read_table(p) for p in sorted(glob.glob(os.path.join(download, "tfrecord", "*.parquet")))],
                         promote_options="default")
    return sorted(int(k) for k in t.filter(pc.equal(t["status"], "success"))["key"].to_pylist())


def counts(out: str) -> dict:
    return json.load(open(os.path.join(out, "counts.json")))["splits"]


def test_flip_reader_is_faithful_it_drops_a_non_numeric_key(tf, tmp_path):
    """The reader above drops a record whose key does not cast (as FLIP does, silently) and finds nothing in a
    folder of the old reshard layout (NAME-train.tfrecord-00000-of-00001)."""
    ex = tf.train.Example(features=tf.train.Features(feature={
        "txt": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a cat"])),
        "jpg": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\xff\xd8"])),
        "height": tf.train.Feature(int64_list=tf.train.Int64List(value=[8])),
        "width": tf.train.Feature(int64_list=tf.train.Int64List(value=[8])),
        "key": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"000000001"]))}))
    other = tf.train.Example.FromString(ex.SerializeToString())
    other.features.feature["key"].bytes_list.value[0] = b"0_000000001"  # the old multi-source key
    write_records(str(tmp_path / "a.tfrecord"), [ex.SerializeToString(), other.SerializeToString()])
    assert flip_read(tf, str(tmp_path)) == [1]
    os.rename(tmp_path / "a.tfrecord", tmp_path / "x-train.tfrecord-00000-of-00001")
    with pytest.raises(StopIteration):
        flip_read(tf, str(tmp_path))


def test_flip_reads_every_record_of_a_download(tf, demo_download):
    m = json.load(open(os.path.join(demo_download, "manifest.json")))
    keys = flip_read(tf, os.path.join(demo_download, "tfrecord"))
    assert len(keys) == m["accounting"]["kept"] and sorted(keys) == download_keys(demo_download)


@pytest.fixture(scope="module")
def one_source(demo_download, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("readers") / "one")
    reshard(ReshardConfig(sources=(demo_download,), output=out, name="laion_one", num_shards=2,
                          validation_fraction=0.2), **QUIET)
    return out


def test_flip_reads_each_split_of_a_one_source_reshard_and_only_it(tf, one_source, demo_download):
    c = counts(one_source)
    train, val = flip_read(tf, os.path.join(one_source, "train")), flip_read(tf, os.path.join(one_source, "validation"))
    assert len(train) == c["train"]["num_examples"] and len(val) == c["validation"]["num_examples"] > 0
    assert sorted(train + val) == download_keys(demo_download)  # one source: the download's keys, unchanged
    assert not set(train) & set(val)  # FLIP pointed at OUT/train reads no validation record


def test_flip_reads_every_record_of_a_two_source_reshard(tf, demo_download, copy_download, tmp_path):
    out = str(tmp_path / "two")
    m = reshard(ReshardConfig(sources=(demo_download, copy_download()), output=out, name="laion_two", num_shards=3),
                **QUIET)
    keys = flip_read(tf, os.path.join(out, "train"))
    assert len(keys) == len(set(keys)) == counts(out)["train"]["num_examples"] == detail(m)["rows_in"]
    assert len(keys) == 2 * len(download_keys(demo_download))


def test_clipa_reads_split_full_of_a_registration_with_the_alias(one_source, tmp_path):
    import tensorflow_datasets as tfds

    c = counts(one_source)
    res = register(one_source, "laion_one", str(tmp_path / "tfds"), split_aliases=(("full", "train"),))
    assert res.layout == "symlinks"
    assert clipa_count(res.dataset_dir) == c["train"]["num_examples"]
    # the alias is the train split's very files: no link or copy was added for it
    links = [p for p in os.listdir(res.dataset_dir) if ".tfrecord" in p]
    assert len(links) == sum(s["num_shards"] for s in c.values())
    ds = tfds.load("laion_one", data_dir=str(tmp_path / "tfds"), split="full")
    assert sum(1 for _ in ds) == c["train"]["num_examples"]
    without = register(one_source, "laion_plain", str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="Unknown split 'full'"):  # what CLIPA meets without --split-alias
        clipa_count(without.dataset_dir)


def test_clipa_reads_an_in_place_registration_of_the_new_layout(demo_download, tmp_path):
    import tensorflow_datasets as tfds

    root = tmp_path / "bucket"
    out = str(root / "laion_ip" / "1.0.0")
    reshard(ReshardConfig(sources=(demo_download,), output=out, name="laion_ip", num_shards=2,
                          validation_fraction=0.2), **QUIET)
    c = counts(out)
    res = register(out, "laion_ip", str(root), split_aliases=(("full", "train"),))
    assert res.layout == "in_place"
    assert clipa_count(out) == c["train"]["num_examples"]
    for split in ("train", "validation"):  # TFDS follows the per-split folders of counts.json's templates
        ds = tfds.load("laion_ip", data_dir=str(root), split=split)
        assert sum(1 for _ in ds) == c[split]["num_examples"]
    from laionprep.validate import ValidateConfig, validate

    rep = validate(ValidateConfig(out, workers=1))  # the TFDS folder: the alias's files are checked once
    assert rep.ok and rep.kind == "tfds", rep.problem_rows()
    assert rep.totals["records"] == sum(s["num_examples"] for s in c.values())
    assert any("alias of split train" in n for n in rep.notes)


def test_build_tfds_split_alias_errors(one_source, tmp_path, capsys):
    base = ["build-tfds", "--source", one_source, "--name", "laion_err", "--data-dir", str(tmp_path / "t")]
    for alias, says in (("full", "ALIAS=SPLIT"), ("full=test", "no split 'test'"), ("train=validation", "exists")):
        assert cli.main(base + ["--split-alias", alias]) == 2
        err = capsys.readouterr().err
        assert "--split-alias" in err and says in err and "Traceback" not in err


def test_validate_checks_the_split_folders_of_the_new_layout(one_source, tmp_path):
    import shutil

    from laionprep.validate import ValidateConfig, validate

    rep = validate(ValidateConfig(one_source, workers=1))
    assert rep.ok, rep.problem_rows()
    assert rep.totals["records"] == sum(s["num_examples"] for s in counts(one_source).values())
    copy = str(tmp_path / "copy")
    shutil.copytree(one_source, copy)
    shutil.copy(os.path.join(copy, "validation", "laion_one-validation-00000-of-00002.tfrecord"),
                os.path.join(copy, "train", "stray.tfrecord"))  # FLIP's glob of OUT/train would read it
    rep = validate(ValidateConfig(copy, workers=1))
    assert [p.file for p in rep.by_kind("unexpected_file")] == ["train/stray.tfrecord"]


def big_vision_read(data_dir: str, split: str) -> list[tuple[bytes, bytes]]:
    """big_vision's DataSource + its bundled LiT/CLIPPO configs: ``builder_from_directory``, one part per process
    (``tfds.even_splits``), ``skip_decode=('image',)`` (its default), then ``image`` and ``texts`` are read."""
    import tensorflow_datasets as tfds

    b = tfds.builder_from_directory(data_dir)
    out = []
    for part in tfds.even_splits(split, 2):
        ds = b.as_dataset(split=part, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()},
                          read_config=tfds.ReadConfig(skip_prefetch=True, try_autocache=False, add_tfds_id=True))
        out += [(ex["image"], ex["texts"]) for ex in ds.as_numpy_iterator()]
    return out


def test_big_vision_reads_image_and_texts_of_a_renamed_reshard(tf, demo_download, one_source, tmp_path):
    from laionprep.validate import ValidateConfig, validate

    import tensorflow_datasets as tfds

    plain = register(one_source, "laion_plain_bv", str(tmp_path / "tfds"))
    assert "image" not in tfds.builder_from_directory(plain.dataset_dir).info.features  # what big_vision meets
    out = str(tmp_path / "bv")
    m = reshard(ReshardConfig(sources=(demo_download,), output=out, name="laion_bv", num_shards=2,
                              validation_fraction=0.2, feature_names=(("image", "jpg"), ("texts", "txt"))), **QUIET)
    assert detail(m)["feature_names"] == {"image": "jpg", "texts": "txt"}
    assert {"image", "texts"} <= set(detail(m)["schema"]) and not {"jpg", "txt"} & set(detail(m)["schema"])
    res = register(out, "laion_bv", str(tmp_path / "tfds"))
    assert res.features["image"] == "image" and res.features["texts"] == "text"
    c = counts(out)
    for split in ("train", "validation"):
        rows = big_vision_read(res.dataset_dir, split)
        assert len(rows) == c[split]["num_examples"] > 0
        assert all(img[:2] == b"\xff\xd8" and txt for img, txt in rows)
    assert tf.io.decode_jpeg(rows[0][0]).shape[-1] == 3  # big_vision's pp `decode` op
    rep = validate(ValidateConfig(out, workers=1, decode_fraction=1.0))  # image / caption checks follow the names
    assert rep.ok, rep.problem_rows()
    assert flip_read(tf, os.path.join(out, "train")) == []  # FLIP reads jpg/txt: a renamed output is not for it
    from laionprep.errors import UsageError
    from laionprep.train_ref.input_pipeline import resolve_source

    with pytest.raises(UsageError, match="feature-names"):  # nor for laionprep's own trainer: said, not crashed
        resolve_source(out)


def test_reshard_feature_names_errors(demo_download, tmp_path, capsys):
    base = ["reshard", demo_download, "--output", str(tmp_path / "o"), "--name", "x", "--no-progress"]
    for value, says in (("image", "NEW=OLD"), ("image=nope", "no key 'nope'"), ("k=key", "keeps its name"),
                        ("url=jpg", "already have a key 'url'")):
        assert cli.main(base + ["--feature-names", value]) == 2
        err = capsys.readouterr().err
        assert "--feature-names" in err and says in err and "Traceback" not in err


# ------------------------------------------------------------------------------------- laionprep recipe
def recipe_lines(capsys, consumer: str, folder: str) -> tuple[int, str, str]:
    rc = cli.main(["recipe", consumer, folder])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_recipe_flip_lines_are_what_flip_reads(tf, demo_download, one_source, capsys):
    """The printed laion_path, given to FLIP's reader, reads every record of the main split."""
    for folder, want in ((demo_download, json.load(open(os.path.join(demo_download, "manifest.json")))[
            "accounting"]["kept"]), (one_source, counts(one_source)["train"]["num_examples"])):
        rc, out, err = recipe_lines(capsys, "flip", folder)
        assert rc == 0, err
        line = next(x for x in out.splitlines() if x.startswith("config.laion_path = "))
        path = line.split("=", 1)[1].strip().strip("'")
        assert len(flip_read(tf, path)) == want


def test_recipe_clipa_and_big_vision_say_what_to_rerun(demo_download, one_source, tmp_path, capsys):
    import tensorflow_datasets as tfds

    plain = register(one_source, "laion_rp", str(tmp_path / "tfds"))
    rc, _, err = recipe_lines(capsys, "clipa", plain.dataset_dir)
    assert rc == 1 and "--split-alias full=train" in err and "Traceback" not in err
    rc, _, err = recipe_lines(capsys, "clipa", one_source)  # not registered: the build-tfds command
    assert rc == 1 and "laionprep build-tfds --source" in err and "--split-alias full=train" in err
    aliased = register(one_source, "laion_rp_full", str(tmp_path / "tfds"), split_aliases=(("full", "train"),))
    rc, out, err = recipe_lines(capsys, "clipa", aliased.dataset_dir)
    assert rc == 0, err
    data_dir = next(x for x in out.splitlines() if x.startswith("data_dir = ")).split("'")[1]
    assert clipa_count(data_dir) == counts(one_source)["train"]["num_examples"]
    for consumer in ("big_vision", "clippo"):
        rc, _, err = recipe_lines(capsys, consumer, plain.dataset_dir)
        assert rc == 1 and "--feature-names big_vision" in err and "Traceback" not in err
    out_bv = str(tmp_path / "bv")
    reshard(ReshardConfig(sources=(demo_download,), output=out_bv, name="laion_rp_bv", num_shards=2,
                          feature_names=(("image", "jpg"), ("texts", "txt"))), **QUIET)
    rc, _, err = recipe_lines(capsys, "flip", out_bv)
    assert rc == 1 and "without --feature-names" in err
    reg = register(out_bv, "laion_rp_bv", str(tmp_path / "tfds"))
    rc, out, err = recipe_lines(capsys, "big_vision", reg.dataset_dir)
    assert rc == 0, err
    line = next(x for x in out.splitlines() if x.startswith("config.input.data = "))
    assert f"data_dir='{reg.dataset_dir}'" in line and "split='train'" in line
    assert len(big_vision_read(reg.dataset_dir, "train")) == tfds.builder_from_directory(
        reg.dataset_dir).info.splits["train"].num_examples


def test_recipe_refuses_a_flat_layout_reshard_for_flip(tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "counts.json").write_text(json.dumps({"name": "x", "splits": {"train": {
        "filename_template": "x-train.tfrecord-{SHARD_INDEX}-of-{NUM_SHARDS}", "num_shards": 1,
        "shard_lengths": [0], "num_examples": 0}}}))
    rc, _, err = recipe_lines(capsys, "flip", str(out))
    assert rc == 1 and "flat layout" in err and "--restart" in err and "Traceback" not in err


def test_a_key_of_another_width_stops_a_multi_source_reshard(demo_download, copy_download, tmp_path, capsys):
    """Keys must stay one-to-one: a source whose keys are not all of its width is refused, naming the record."""
    import glob

    from laionprep.tfrecord import Example, read_records

    second = copy_download()
    shard = sorted(glob.glob(os.path.join(second, "tfrecord", "*.tfrecord")))[-1]
    recs = list(read_records(shard))
    ex = Example.FromString(recs[2])
    ex.features.feature["key"].bytes_list.value[0] = b"42"  # '42' and '000000042' would both become 42
    write_records(shard, recs[:2] + [ex.SerializeToString()] + recs[3:])
    rc = cli.main(["reshard", demo_download, second, "--output", str(tmp_path / "o"), "--name", "x",
                   "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and f"{shard} record 2" in err and "-digit number" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "o" / "counts.json")
