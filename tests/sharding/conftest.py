"""Fixtures for the reshard tests: full reads of an output folder with TensorFlow itself (the reference reader)."""
from __future__ import annotations

import glob
import json
import os
import sys

import pytest

from laionprep.folders import shard_names

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # reshard_helpers


@pytest.fixture(scope="session")
def tf():
    from laionprep._env import import_tf

    return import_tf()


@pytest.fixture(scope="session")
def read_out(tf):
    """``read_out(OUT, split)`` -> list of (file name, tf.train.Example) in shard order, read with tf.data."""
    def _read(out: str, split: str):
        counts = json.load(open(os.path.join(out, "counts.json")))
        name = counts["name"]
        # the current layout: each split in its own folder, names ending in .tfrecord (FLIP's glob)
        files = sorted(glob.glob(os.path.join(out, split, f"{name}-{split}-*-of-*.tfrecord")))
        assert [os.path.join(out, f) for f in shard_names(name, split, len(files))] == files
        rows = []
        for f in files:
            for r in tf.data.TFRecordDataset([f]).as_numpy_iterator():
                rows.append((os.path.basename(f), tf.train.Example.FromString(r)))
        return rows
    return _read
