"""laionprep's TF-free shard writer (what img2dataset's download workers write TFRecord shards with) against
img2dataset's own TFRecordSampleWriter: the same samples give the same records, and no TensorFlow is imported."""
from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest
from img2dataset.writer import TFRecordSampleWriter as Img2datasetWriter

from laionprep import tfrecord
from laionprep._env import import_tf
from laionprep.ingest.sample_writer import TFRecordSampleWriter

tf = import_tf()
SCHEMA = pa.schema([("url", pa.string()), ("caption", pa.string()), ("key", pa.string()), ("status", pa.string()),
                    ("error_message", pa.string()), ("width", pa.int64()), ("similarity", pa.float64()),
                    ("NSFW", pa.string()), ("flag", pa.bool_()), ("ids", pa.list_(pa.int64())),
                    ("scores", pa.list_(pa.float64())), ("tags", pa.list_(pa.string()))])


def _samples():
    """(img_str, key, caption, meta): successes with every value type img2dataset types, a failure (no image), a
    null caption, nulls in string columns, a float64 that float32 cannot hold exactly (img2dataset's writer fails on a
    null inside a list of strings; laionprep never hands it lists: the prefilter stores them as JSON text)."""
    out = []
    for i in range(7):
        ok = i != 3
        meta = {"url": f"http://127.0.0.1/{i}.jpg", "caption": None if i == 2 else f"caption {i} \u00e9",
                "key": f"0000{i:05d}", "status": "success" if ok else "failed_to_download",
                "error_message": None if ok else "HTTP Error 404: Not Found", "width": 480 + i,
                "similarity": 0.1 * i + 1e-9, "NSFW": None if i == 4 else "UNLIKELY", "flag": i % 2 == 0,
                "ids": [i, -i, 2 ** 40], "scores": [0.5, 1 / 3], "tags": ["a", "\u00fc"]}
        out.append((bytes([0xFF, 0xD8, i]) * (100 + i) if ok else None, meta["key"], meta["caption"], meta))
    return out


@pytest.mark.parametrize("save_caption,encode_format", [(True, "jpg"), (False, "webp")])
def test_same_bytes_as_img2datasets_writer(tmp_path, save_caption, encode_format):
    for name, cls in (("theirs", Img2datasetWriter), ("ours", TFRecordSampleWriter)):
        folder = tmp_path / name
        folder.mkdir()
        w = cls(12, str(folder), save_caption, 5, SCHEMA, encode_format)
        for img, key, caption, meta in _samples():
            w.write(img, key, caption, dict(meta))
        w.close()
    theirs, ours = ((tmp_path / n / "00012.parquet").read_bytes() for n in ("theirs", "ours"))
    assert len(ours) > 200 and ours == theirs
    theirs, ours = (list(tfrecord.read_records(str(tmp_path / n / "00012.tfrecord"))) for n in ("theirs", "ours"))
    assert len(ours) == 6
    # protobuf writes a map in a per-process hash order: theirs in that order, ours sorted by key, else the same
    assert ours == [tfrecord.Example.FromString(r).SerializeToString(deterministic=True) for r in theirs]
    first = tf.train.Example.FromString(ours[0])  # TensorFlow's own class reads the same values and types
    assert first == tf.train.Example.FromString(theirs[0])
    assert first.features.feature["jpg" if encode_format == "jpg" else "webp"].bytes_list.value[0][:2] == b"\xff\xd8"
    assert first.features.feature["flag"].int64_list.value == [1]
    assert list(first.features.feature["scores"].float_list.value) == pytest.approx([0.5, 1 / 3])
    assert ("txt" in first.features.feature) is save_caption


def test_records_are_the_same_bytes_in_every_process(tmp_path):
    """The feature map in key order: two interpreters (two workers, two runs) write the same file."""
    code = (
        "import sys, pyarrow as pa\n"
        "from laionprep.ingest.sample_writer import TFRecordSampleWriter\n"
        "names = [f'col{i}' for i in range(12)]\n"
        "w = TFRecordSampleWriter(0, sys.argv[1], True, 5, pa.schema([(n, pa.string()) for n in names]), 'jpg')\n"
        "w.write(b'\\xff\\xd8 image', '000000000', 'a caption', {n: n for n in names})\n"
        "w.close()\n")
    for run in ("a", "b", "c"):
        (tmp_path / run).mkdir()
        subprocess.run([sys.executable, "-c", code, str(tmp_path / run)], check=True)
    files = [(tmp_path / run / "00000.tfrecord").read_bytes() for run in ("a", "b", "c")]
    assert len(files[0]) > 100 and files[0] == files[1] == files[2]


def test_workers_do_not_import_tensorflow(tmp_path):
    """A fresh interpreter (as a spawned download worker is) writes a shard and never imports TensorFlow."""
    code = (
        "import sys, pyarrow as pa\n"
        "from laionprep.ingest.sample_writer import TFRecordSampleWriter\n"
        "import img2dataset.downloader\n"
        "w = TFRecordSampleWriter(0, sys.argv[1], True, 5, pa.schema([('key', pa.string())]), 'jpg')\n"
        "w.write(b'\\xff\\xd8 image', '000000000', 'a caption', {'key': '000000000'})\n"
        "w.close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_io')))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    recs = list(tfrecord.read_records(os.path.join(tmp_path, "00000.tfrecord")))
    ex = tfrecord.Example.FromString(recs[0])
    assert ex.features.feature["txt"].bytes_list.value == [b"a caption"]
