"""Helpers for the build-tfds tests: real records from the session's demo download, rearranged on disk."""
from __future__ import annotations

import glob
import json
import os

import pytest

from laionprep._env import import_tf
from laionprep.tfrecord import read_records, write_records

tf = import_tf()


def source_records(download: str) -> dict[str, tf.train.Example]:
    """``{key: Example}`` of every record of a download folder, read directly (not through TFDS)."""
    out = {}
    for path in sorted(glob.glob(os.path.join(download, "tfrecord", "*.tfrecord"))):
        for data in read_records(path):
            ex = tf.train.Example.FromString(data)
            out[ex.features.feature["key"].bytes_list.value[0].decode()] = ex
    return out


def stats_total(download: str) -> int:
    return sum(json.load(open(p))["successes"] for p in glob.glob(os.path.join(download, "tfrecord", "*_stats.json")))


def rewrite_shard(path: str, change) -> int:
    """Rewrite a TFRecord file with ``change(index, Example)`` applied to each record (in place); returns count."""
    exs = [tf.train.Example.FromString(d) for d in read_records(path)]
    for i, ex in enumerate(exs):
        change(i, ex)
    return write_records(path, [ex.SerializeToString() for ex in exs])


def make_resharded(download: str, out: str, name: str = "laion_demo", shards: dict[str, int] | None = None) -> dict:
    """A resharded folder in the agreed format, made from the download's records: ``NAME-SPLIT.tfrecord-0000i-of-0000N``
    files and ``counts.json``.  Returns the counts dict."""
    shards = shards or {"train": 3, "validation": 1}
    records = []
    for path in sorted(glob.glob(os.path.join(download, "tfrecord", "*.tfrecord"))):
        records += list(read_records(path))
    os.makedirs(out, exist_ok=True)
    n_val = len(records) // 5
    per_split = {"validation": records[:n_val], "train": records[n_val:]} if "validation" in shards else {
        "train": records}
    counts = {"name": name, "splits": {}}
    for split, recs in per_split.items():
        n = shards[split]
        tpl = f"{name}-{split}.tfrecord-{{SHARD_INDEX}}-of-{{NUM_SHARDS}}"
        lengths = []
        for i in range(n):
            chunk = recs[i * len(recs) // n:(i + 1) * len(recs) // n]
            name = tpl.replace("{SHARD_INDEX}", f"{i:05d}").replace("{NUM_SHARDS}", f"{n:05d}")
            write_records(os.path.join(out, name), chunk)
            lengths.append(len(chunk))
        counts["splits"][split] = {"filename_template": tpl, "num_shards": n, "shard_lengths": lengths,
                                   "num_examples": sum(lengths)}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"dataset": "demo", "stage": "reshard (made by the tfds tests)"}, f)
    with open(os.path.join(out, "counts.json"), "w") as f:
        json.dump(counts, f)
    return counts


def tfds_keys(ds) -> list[str]:
    return [k.decode() for k in ds.map(lambda ex: ex["key"]).as_numpy_iterator()]


@pytest.fixture
def download_copy(copy_download):
    return copy_download()


def pytest_collection_modifyitems(config, items):
    """tf.test.TestCase.test_session is TF's deprecated helper, not a test (it skips itself when collected):
    leave it out of this folder's DatasetBuilderTestCase classes rather than report three skips."""
    here = os.path.dirname(os.path.abspath(__file__))
    drop = [i for i in items if i.name == "test_session" and str(i.path).startswith(here)]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [i for i in items if i not in drop]
