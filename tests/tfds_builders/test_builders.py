"""The ``tfds build`` builders: TFDS's own DatasetBuilderTestCase (Beam, in-process runner, dummy_data/), the
null -> sentinel rewrite, the runner choice, the `tfds build` command line on a real demo download."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import tensorflow_datasets as tfds

import laionprep.tfds_builders  # noqa: F401  (registers the builders)
from laionprep.datasets import SENTINELS, get_spec
from laionprep.tfds_builders import _builder_base
from laionprep.tfds_builders.datacomp_tfrecord import datacomp_tfrecord_dataset_builder as datacomp
from laionprep.tfds_builders.laion2b_en_tfrecord import laion2b_en_tfrecord_dataset_builder as laion2b
from laionprep.tfds_builders.laion400m_tfrecord import laion400m_tfrecord_dataset_builder as laion400m
from laionprep.tfds_builders.register import register

from .conftest import source_records, tf


class Laion400mTFRecordTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = laion400m.Builder
    SPLITS = {"train": 5}


class Laion2bEnTFRecordTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = laion2b.Builder
    SPLITS = {"train": 5}


class DatacompTFRecordTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = datacomp.Builder
    SPLITS = {"train": 5}


FAMILIES = [(laion400m.Builder, "laion400m", "similarity"), (laion2b.Builder, "laion2b-en", "similarity"),
            (datacomp.Builder, "datacomp_small", "clip_b32_similarity_score")]


@pytest.mark.parametrize("cls,spec,null_col", FAMILIES)
def test_builder_rewrites_records_with_one_type_per_key(cls, spec, null_col, tmp_path):
    """The dummy data holds img2dataset's null (b'' in a float column): the builder writes the sentinel."""
    manual = cls.code_path.parent / "dummy_data"
    src = source_records(str(manual))
    b = cls(data_dir=str(tmp_path))
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    got = {ex["key"].decode(): ex for ex in b.as_dataset(split="train").as_numpy_iterator()}
    assert set(got) == set(src)
    expected_keys = {"jpg", "txt", "key", "url", "width", "height", "original_width", "original_height"} | {
        c.name for c in get_spec(spec).extra_columns}
    assert set(b.info.features) == expected_keys
    nulls = 0
    for key, ex in src.items():
        f = ex.features.feature
        assert got[key]["jpg"].shape == (f["height"].int64_list.value[0], f["width"].int64_list.value[0], 3)
        assert got[key]["txt"].decode() == f["txt"].bytes_list.value[0].decode()
        if f[null_col].WhichOneof("kind") == "bytes_list":
            assert got[key][null_col] == SENTINELS["float"]
            nulls += 1
        else:
            assert got[key][null_col] == pytest.approx(f[null_col].float_list.value[0])
    assert nulls == 1
    assert open(cls.code_path.parent / "CITATIONS.bib").read().strip() == get_spec(spec).citation.strip()
    assert b.info.citation.strip() == get_spec(spec).citation.strip()


def test_local_runner_only_when_none_is_asked_for():
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    cfg = _builder_base.local_runner_if_unset(tfds.download.DownloadConfig())
    assert isinstance(cfg.beam_runner, FnApiRunner)
    opts = PipelineOptions(flags=["--direct_num_workers=2"])
    cfg = _builder_base.local_runner_if_unset(tfds.download.DownloadConfig(beam_options=opts))
    assert isinstance(cfg.beam_runner, FnApiRunner) and cfg.beam_options is opts
    opts = PipelineOptions(flags=["--runner=DataflowRunner", "--project=p"])
    cfg = _builder_base.local_runner_if_unset(tfds.download.DownloadConfig(beam_options=opts))
    assert cfg.beam_runner is None and cfg.beam_options is opts


def test_registered_folder_loads_through_the_builder_class(copy_download, tmp_path):
    """With laionprep.tfds_builders imported, tfds.load('laion400m_tfrecord') uses the builder class; on a
    registered folder it takes the registered features (which include keys the builder would not write)."""
    dl = copy_download()
    root = str(tmp_path / "tfds")
    res = register(dl, "laion400m_tfrecord", root)
    b = tfds.builder("laion400m_tfrecord", data_dir=root)
    assert isinstance(b, laion400m.Builder)
    assert "caption" in b.info.features and "status" in b.info.features
    keys = [ex["key"] for ex in tfds.load("laion400m_tfrecord", data_dir=root, split="train").as_numpy_iterator()]
    assert len(keys) == res.splits["train"] == len(source_records(dl))


def test_tfds_build_cli_on_a_demo_download(copy_download, tmp_path):
    """`tfds build <builder folder> --manual_dir DIR` (the TFDS command line) with Beam options, then tfds.load."""
    dl = copy_download()
    root = str(tmp_path / "built")
    tfds_cli = os.path.join(os.path.dirname(sys.executable), "tfds")
    proc = subprocess.run(
        [tfds_cli, "build", str(laion400m.Builder.code_path.parent), "--manual_dir", dl, "--data_dir", root,
         "--beam_pipeline_options=direct_num_workers=1"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    src = source_records(dl)
    ds = tfds.load("laion400m_tfrecord", data_dir=root, split="train")
    got = {ex["key"].decode(): ex for ex in ds.as_numpy_iterator()}
    assert set(got) == set(src)
    k = sorted(src)[0]
    assert got[k]["similarity"] == pytest.approx(src[k].features.feature["similarity"].float_list.value[0])
    img = tf.io.decode_jpeg(src[k].features.feature["jpg"].bytes_list.value[0], channels=3).numpy()
    assert (got[k]["jpg"] == img).all()
