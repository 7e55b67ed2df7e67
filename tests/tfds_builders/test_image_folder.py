"""build-tfds --mode image-folder: an ImageNet-style folder of the demo's objects -> TFDS image/label dataset."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from laionprep.testing import synth
from laionprep.errors import DataError, UsageError
from laionprep.tfds_builders.image_folder import build_image_folder, class_names


@pytest.fixture(scope="module")
def eval_folder(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("eval") / "eval_images")
    synth.write_eval_folder(out, per_class=3, splits=("train", "val"))
    return out


def test_labels_round_trip(eval_folder, tmp_path):
    root = str(tmp_path / "tfds")
    res = build_image_folder(eval_folder, "demo_objects", root)
    folders = sorted(os.listdir(os.path.join(eval_folder, "val")))
    assert res.classes == folders and len(folders) == len(synth.class_names())
    assert res.splits == {"train": 3 * len(folders), "val": 3 * len(folders)}
    b = tfds.builder("demo_objects", data_dir=root)
    assert b.info.features["label"].names == folders
    assert b.info.supervised_keys == ("image", "label")
    for split in ("train", "val"):
        seen = set()
        for ex in tfds.load("demo_objects", data_dir=root, split=split).as_numpy_iterator():
            folder, fname = ex["file_name"].decode().split("/")
            assert folders[ex["label"]] == folder  # the label is the image's folder
            assert ex["image"].dtype == np.uint8 and ex["image"].ndim == 3 and ex["image"].shape[2] == 3
            with Image.open(os.path.join(eval_folder, split, folder, fname)) as im:
                assert ex["image"].shape[:2] == (im.height, im.width)
            seen.add((folder, fname))
        assert len(seen) == res.splits[split]
    # prompts: the demo's class_names.txt ("red circle", ...) matched to the sorted folders by name
    prompts = class_names("demo_objects", root)
    assert prompts == [f.replace("_", " ") for f in folders]
    assert sorted(prompts) == sorted(synth.class_names())
    with open(os.path.join(res.dataset_dir, "class_names.txt")) as f:
        assert f.read().split("\n")[:-1] == prompts


def test_mapping_files_and_reencoding(eval_folder, tmp_path):
    import shutil

    src = str(tmp_path / "imgs")
    shutil.copytree(os.path.join(eval_folder, "val"), os.path.join(src, "val"))
    folders = sorted(os.listdir(os.path.join(src, "val")))
    # a PNG among the JPEGs is re-encoded so TFDS decodes every image to 3 channels
    png = os.path.join(src, "val", folders[0], "extra.png")
    Image.new("RGBA", (20, 10), (255, 0, 0, 128)).save(png)
    mapping = {f: f"a {f.split('_')[1]} coloured {f.split('_')[0]}" for f in folders}
    mp = str(tmp_path / "names.json")
    json.dump(mapping, open(mp, "w"))
    res = build_image_folder(src, "demo_mapped", str(tmp_path / "tfds"), class_names_file=mp)
    assert res.reencoded == 1 and res.splits["val"] == 3 * len(folders) + 1
    assert class_names("demo_mapped", str(tmp_path / "tfds")) == [mapping[f] for f in folders]
    ex = [e for e in tfds.load("demo_mapped", data_dir=str(tmp_path / "tfds"), split="val").as_numpy_iterator()
          if e["file_name"].decode().endswith("extra.png")][0]
    assert ex["image"].shape == (10, 20, 3) and ex["label"] == 0

    # positional .txt names (e.g. ImageNet's "tench" for n01440764) must have one line per class
    bad = str(tmp_path / "bad.txt")
    open(bad, "w").write("one\ntwo\n")
    with pytest.raises(DataError, match="2 names for 30 class folders"):
        build_image_folder(src, "demo_bad", str(tmp_path / "tfds"), class_names_file=bad)
    # a folder of class folders (no split level) needs --split
    with pytest.raises(UsageError, match="--split"):
        build_image_folder(os.path.join(src, "val"), "demo_nosplit", str(tmp_path / "tfds"))
    res = build_image_folder(os.path.join(src, "val"), "demo_onesplit", str(tmp_path / "tfds"), split="test")
    assert list(res.splits) == ["test"]
    assert class_names("demo_onesplit", str(tmp_path / "tfds"))[0] == folders[0].replace("_", " ")
