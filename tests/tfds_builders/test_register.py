"""build-tfds register: real demo downloads and resharded folders registered zero-copy, read back through TFDS."""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from laionprep.errors import DataError, UsageError
from laionprep.tfds_builders.register import check_registration, describe, register

from .conftest import make_resharded, rewrite_shard, source_records, stats_total, tf, tfds_keys


def _decode_jpeg(data: bytes) -> np.ndarray:
    return tf.io.decode_jpeg(data, channels=3).numpy()


def test_register_download_reads_back_every_record(download_copy, tmp_path):
    root = str(tmp_path / "tfds")
    res = register(download_copy, "laion400m_tfrecord", root)
    src = source_records(download_copy)
    assert res.layout == "symlinks"
    assert res.splits == {"train": stats_total(download_copy)} == {"train": len(src)}
    assert res.features["jpg"] == "image" and res.features["similarity"] == "float"
    assert res.features["NSFW"] == "text" and res.features["width"] == "int"
    # nothing was written into img2dataset's folder
    assert sorted(os.listdir(os.path.join(download_copy, "tfrecord"))) == sorted(
        os.path.basename(p) for p in glob.glob(os.path.join(download_copy, "tfrecord", "*")))
    assert not [p for p in glob.glob(os.path.join(download_copy, "tfrecord", "*.json")) if "_stats" not in p]

    ds = tfds.load("laion400m_tfrecord", data_dir=root, split="train")
    seen = {}
    for ex in ds.as_numpy_iterator():
        seen[ex["key"].decode()] = ex
    assert set(seen) == set(src)
    for key in list(src)[:25]:
        want, got = src[key].features.feature, seen[key]
        assert got["jpg"].dtype == np.uint8 and got["jpg"].ndim == 3 and got["jpg"].shape[2] == 3
        assert got["jpg"].shape[:2] == (want["height"].int64_list.value[0], want["width"].int64_list.value[0])
        np.testing.assert_array_equal(got["jpg"], _decode_jpeg(want["jpg"].bytes_list.value[0]))
        assert got["txt"].decode() == want["txt"].bytes_list.value[0].decode()
        assert got["NSFW"].decode() in ("UNLIKELY", "UNSURE")
        assert got["similarity"] == pytest.approx(want["similarity"].float_list.value[0])

    rows = dict(describe(res.dataset_dir))
    assert rows["split train"].startswith(f"{len(src):,} examples, 4 shards")
    assert rows["feature jpg"].startswith("Image(shape=(None, None, 3), dtype=uint8")
    assert check_registration(res.dataset_dir).status == "ok"


def test_builder_from_directory_and_big_vision_style_read(download_copy, tmp_path):
    res = register(download_copy, "demo_laion", str(tmp_path / "tfds"))
    src = source_records(download_copy)
    b = tfds.builder_from_directory(res.dataset_dir)  # what CLIPA and big_vision's "from_data_dir" call
    assert b.info.splits["train"].num_examples == len(src)
    # big_vision's DataSource: tfds.even_splits per process, SkipDecoding of the image, tfds_id added.
    keys = []
    for part in tfds.even_splits("train", 2):
        ds = b.as_dataset(split=part, shuffle_files=False, decoders={"jpg": tfds.decode.SkipDecoding()},
                          read_config=tfds.ReadConfig(skip_prefetch=True, try_autocache=False, add_tfds_id=True))
        for ex in ds.as_numpy_iterator():
            assert ex["jpg"][:2] == b"\xff\xd8" and ex["tfds_id"]
            keys.append(ex["key"].decode())
    assert sorted(keys) == sorted(src)


def test_register_resharded_folder_symlinks_and_in_place(download_copy, tmp_path):
    out = str(tmp_path / "resharded")
    counts = make_resharded(download_copy, out)
    src = source_records(download_copy)
    res = register(out, "laion_demo_tfds", str(tmp_path / "tfds"))
    assert res.source_kind == "resharded" and res.layout == "symlinks"
    assert res.splits == {s: v["num_examples"] for s, v in counts["splits"].items()}
    assert res.shards == {"train": 3, "validation": 1}
    b = tfds.builder_from_directory(res.dataset_dir)
    keys = []
    for split in ("train", "validation"):
        split_keys = tfds_keys(b.as_dataset(split=split))
        assert len(split_keys) == counts["splits"][split]["num_examples"]
        keys += split_keys
    assert sorted(keys) == sorted(src)

    # in place: the resharded folder *is* ROOT/NAME/VERSION; TFDS uses its counts.json file names as they are
    root = tmp_path / "bucket"
    inplace = root / "laion_demo_x" / "1.0.0"
    make_resharded(download_copy, str(inplace), name="laion_demo")
    res2 = register(str(inplace), "laion_demo_x", str(root))
    assert res2.layout == "in_place"
    assert not [p for p in os.listdir(inplace) if os.path.islink(inplace / p)]
    ds = tfds.load("laion_demo_x", data_dir=str(root), split="train+validation")
    assert sorted(tfds_keys(ds)) == sorted(src)


def test_register_in_place_download_folder(download_copy, tmp_path):
    """DIR = ROOT/NAME/VERSION: metadata next to manifest.json, data read as tfrecord/NNNNN.tfrecord (gs:// way)."""
    root = tmp_path / "root"
    dest = root / "demo_inplace" / "1.0.0"
    dest.parent.mkdir(parents=True)
    os.rename(download_copy, dest)
    src = source_records(str(dest))
    res = register(str(dest), "demo_inplace", str(root))
    assert res.layout == "in_place"
    assert (dest / "dataset_info.json").exists() and (dest / "features.json").exists()
    info = json.loads((dest / "dataset_info.json").read_text())
    assert info["splits"][0]["filepathTemplate"] == "tfrecord/{SHARD_INDEX}.tfrecord"
    assert sorted(p.name for p in (dest / "tfrecord").glob("*.json")) == [f"{i:05d}_stats.json" for i in range(4)]
    assert sorted(tfds_keys(tfds.load("demo_inplace", data_dir=str(root), split="train"))) == sorted(src)


def test_gap_refused_then_handled(download_copy, tmp_path):
    tf_dir = os.path.join(download_copy, "tfrecord")
    gone = json.load(open(os.path.join(tf_dir, "00001_stats.json")))["successes"]
    for suffix in ("_stats.json", ".tfrecord", ".parquet"):
        os.remove(os.path.join(tf_dir, f"00001{suffix}"))
    with pytest.raises(DataError) as e:
        register(download_copy, "demo_gap", str(tmp_path / "tfds"))
    assert "shard 00001: no files at all (a gap" in e.value.what and "--allow-incomplete" in e.value.fix

    res = register(download_copy, "demo_gap", str(tmp_path / "tfds"), allow_incomplete=True)
    src = source_records(download_copy)
    assert res.splits["train"] == len(src) == stats_total(download_copy)
    assert res.shards["train"] == 3 and any("00001" in m for m in res.left_out)
    assert sorted(tfds_keys(tfds.load("demo_gap", data_dir=str(tmp_path / "tfds"), split="train"))) == sorted(src)
    assert gone > 0

    # the same gap in place: a shard of length 0 that TFDS never opens
    root = tmp_path / "root"
    dest = root / "demo_gap_inplace" / "1.0.0"
    dest.parent.mkdir(parents=True)
    os.rename(download_copy, dest)
    res = register(str(dest), "demo_gap_inplace", str(root), allow_incomplete=True)
    info = json.loads((dest / "dataset_info.json").read_text())
    assert [int(x) for x in info["splits"][0]["shardLengths"]][1] == 0
    ds = tfds.load("demo_gap_inplace", data_dir=str(root), split="train")
    assert sorted(tfds_keys(ds)) == sorted(src)


def test_shard_without_stats_is_reported_not_guessed(download_copy, tmp_path):
    os.remove(os.path.join(download_copy, "tfrecord", "00002_stats.json"))
    with pytest.raises(DataError) as e:
        register(download_copy, "demo_nostats", str(tmp_path / "tfds"))
    assert "shard 00002" in e.value.what and "count cannot be established" in e.value.what


def test_wrong_count_refused(download_copy, tmp_path):
    p = os.path.join(download_copy, "tfrecord", "00002_stats.json")
    st = json.load(open(p))
    st["successes"] -= 1
    json.dump(st, open(p, "w"))
    with pytest.raises(DataError) as e:
        register(download_copy, "demo_wrong", str(tmp_path / "tfds"))
    assert "wrong record count" in e.value.what
    assert f"says {st['successes']} records, the file holds {st['successes'] + 1}" in e.value.what

    # a resharded folder whose counts.json lies is refused the same way
    out = str(tmp_path / "resharded")
    counts = make_resharded(download_copy, out)
    counts["splits"]["train"]["shard_lengths"][1] += 1
    counts["splits"]["train"]["num_examples"] += 1
    json.dump(counts, open(os.path.join(out, "counts.json"), "w"))
    with pytest.raises(DataError) as e:
        register(out, "demo_wrong2", str(tmp_path / "tfds"))
    assert "counts.json says" in e.value.what and "laionprep reshard" in e.value.fix


def test_truncated_shard_refused(download_copy, tmp_path):
    p = os.path.join(download_copy, "tfrecord", "00003.tfrecord")
    data = open(p, "rb").read()
    open(p, "wb").write(data[:-100])
    with pytest.raises(DataError) as e:
        register(download_copy, "demo_trunc", str(tmp_path / "tfds"))
    assert "truncated" in e.value.what


def test_null_typed_column_refused_with_pointer_to_reshard(download_copy, tmp_path):
    def null_similarity(i, ex):
        if i in (1, 3):
            f = ex.features.feature["similarity"]
            f.Clear()
            f.bytes_list.value.append(b"")  # what img2dataset writes for a null

    rewrite_shard(os.path.join(download_copy, "tfrecord", "00001.tfrecord"), null_similarity)
    with pytest.raises(DataError) as e:
        register(download_copy, "demo_null", str(tmp_path / "tfds"))
    assert "similarity: type varies across records" in e.value.what and "bytes in 2" in e.value.what
    assert "laionprep reshard" in e.value.fix and "--exclude similarity" in e.value.fix
    assert "00001.tfrecord record 1" in e.value.where

    res = register(download_copy, "demo_null", str(tmp_path / "tfds"), exclude=("similarity",))
    ds = tfds.load("demo_null", data_dir=str(tmp_path / "tfds"), split="train")
    assert "similarity" not in ds.element_spec and len(tfds_keys(ds)) == res.splits["train"]


def test_names_and_places_refused(download_copy, tmp_path):
    with pytest.raises(UsageError, match="TFDS catalog"):
        register(download_copy, "laion400m", str(tmp_path / "tfds"))
    with pytest.raises(UsageError, match="invalid dataset name"):
        register(download_copy, "Laion-Demo", str(tmp_path / "tfds"))
    with pytest.raises(UsageError, match="invalid version"):
        register(download_copy, "demo_ok", str(tmp_path / "tfds"), version="1.0")
    with pytest.raises(UsageError, match="inside img2dataset's output folder"):
        register(download_copy, "demo_ok", os.path.join(download_copy, "tfrecord", "tfds"))
    with pytest.raises(UsageError, match="symbolic links"):
        register(download_copy, "demo_ok", "memory://bucket/tfds")
    with pytest.raises(DataError, match="not a download folder"):
        register(str(tmp_path), "demo_ok", str(tmp_path / "tfds"))
    from laionprep import fs as lfs

    with lfs.exclusive_lock(download_copy, "laionprep download"):  # a download running on the folder
        with pytest.raises(UsageError, match="is running on this folder"):
            register(download_copy, "demo_ok", str(tmp_path / "tfds"))


def test_rewrite_mode_copies_files(download_copy, tmp_path):
    res = register(download_copy, "demo_copy", str(tmp_path / "tfds"), mode="rewrite", verify="all")
    files = [p for p in os.listdir(res.dataset_dir) if ".tfrecord-" in p]
    assert res.layout == "copy" and len(files) == 4 and not any(os.path.islink(os.path.join(res.dataset_dir, f))
                                                                  for f in files)
    assert res.verified_shards == 4
    assert sorted(tfds_keys(tfds.load("demo_copy", data_dir=str(tmp_path / "tfds"), split="train"))) == sorted(
        source_records(download_copy))


def test_registration_survives_download_resume(demo_server, demo_download, tmp_path):
    """Register inside DIR (DIR/tfds), then resume `laionprep download` on DIR: after a shard is deleted and after
    more metadata rows.  The download must run, and the registration must load or be reported stale."""
    from tests.conftest import DEMO_ROWS, relocate_download, run_demo_download

    import shutil

    work = str(tmp_path / "work")
    os.makedirs(work)
    dl = os.path.join(work, "laion")
    shutil.copytree(demo_download, dl)
    shutil.copytree(os.path.join(os.path.dirname(demo_download), "source"), os.path.join(work, "source"))
    relocate_download(dl, os.path.join(work, "source", "metadata"))  # the demo of `work` resumes it
    root = os.path.join(dl, "tfds")
    res = register(dl, "demo_resume", root)
    before = sorted(source_records(dl))

    # 1. a shard disappears: the check says stale, names the shard
    for suffix in ("_stats.json", ".tfrecord", ".parquet"):
        os.remove(os.path.join(dl, "tfrecord", f"00002{suffix}"))
    chk = check_registration(res.dataset_dir)
    assert chk.status == "stale" and any("shard 2" in m for m in chk.messages)

    # 2. the download resumes over the registered folder and fetches the shard again
    m = run_demo_download(work, demo_server)
    assert m["status"] == "complete"
    assert sorted(source_records(dl)) == before
    chk = check_registration(res.dataset_dir)
    assert chk.status == "ok", chk.messages
    assert sorted(tfds_keys(tfds.load("demo_resume", data_dir=root, split="train"))) == before

    # 3. more metadata rows: new shards appear; the registration still loads what it registered
    m = run_demo_download(work, demo_server, rows=DEMO_ROWS + 120)
    assert m["status"] == "complete"
    chk = check_registration(res.dataset_dir)
    assert chk.status == "outdated" and "not registered" in chk.messages[0]
    assert sorted(tfds_keys(tfds.load("demo_resume", data_dir=root, split="train"))) == before
    res2 = register(dl, "demo_resume", root)
    assert res2.splits["train"] == stats_total(dl) > len(before)
    assert any("added" in c for c in res2.changes)
    assert len(tfds_keys(tfds.load("demo_resume", data_dir=root, split="train"))) == res2.splits["train"]


def test_register_real_reshard_output(download_copy, tmp_path):
    """The resharded folder made by `laionprep reshard` itself (not by this test's helper)."""
    from laionprep.cli import main

    out = str(tmp_path / "resharded")
    assert main(["reshard", download_copy, "--output", out, "--name", "laion_demo", "--num-shards", "2",
                 "--validation-fraction", "0.2", "--no-progress"]) == 0
    counts = json.load(open(os.path.join(out, "counts.json")))
    res = register(out, "laion_demo_resharded", str(tmp_path / "tfds"))
    assert res.splits == {s: v["num_examples"] for s, v in counts["splits"].items()}
    keys = []
    for split, n in res.splits.items():
        split_keys = tfds_keys(tfds.load("laion_demo_resharded", data_dir=str(tmp_path / "tfds"), split=split))
        assert len(split_keys) == n
        keys += split_keys
    assert sorted(keys) == sorted(source_records(download_copy))


def test_object_store_in_place_and_copy(download_copy, tmp_path):
    """On an fsspec object store (memory://, standing in for gs://: no links), register in place and --mode rewrite;
    TF cannot read memory://, so the written folders are mirrored to disk and loaded from there."""
    import uuid

    import fsspec

    mem = fsspec.filesystem("memory")
    bucket = f"/b-{uuid.uuid4().hex[:8]}"
    for path in glob.glob(os.path.join(download_copy, "**"), recursive=True):
        rel = os.path.relpath(path, download_copy)
        if os.path.isfile(path) and (rel.startswith("tfrecord/") or rel == "manifest.json"):
            mem.pipe(f"{bucket}/tfds/demo_obj/1.0.0/{rel}", open(path, "rb").read())
    src = sorted(source_records(download_copy))

    def mirror(prefix: str, dest) -> None:
        for p in mem.find(prefix):
            out = dest / os.path.relpath(p, prefix)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(mem.cat(p))

    res = register(f"memory://{bucket}/tfds/demo_obj/1.0.0", "demo_obj", f"memory://{bucket}/tfds", check_read=False)
    assert res.layout == "in_place" and res.verified_shards == 4
    assert check_registration(f"memory://{bucket}/tfds/demo_obj/1.0.0").status == "ok"
    mirror(f"{bucket}/tfds", tmp_path / "mirror1")
    assert sorted(tfds_keys(tfds.load("demo_obj", data_dir=str(tmp_path / "mirror1"), split="train"))) == src

    res = register(download_copy, "demo_obj_copy", f"memory://{bucket}/copy", mode="rewrite", check_read=False)
    assert res.layout == "copy"
    mirror(f"{bucket}/copy", tmp_path / "mirror2")
    assert sorted(tfds_keys(tfds.load("demo_obj_copy", data_dir=str(tmp_path / "mirror2"), split="train"))) == src
    mem.rm(bucket, recursive=True)
