"""Helpers for the validate tests: damage real demo shards in exactly one way, and build the other two folder
kinds (resharded, TFDS) from copies of the demo's records.  Records are rewritten with TensorFlow's own writer
(tf.io.TFRecordWriter / tf.train.Example), independent of the reader under test."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil

from PIL import Image


def tf():
    from laionprep._env import import_tf

    return import_tf()


def read_records(path: str) -> list[bytes]:
    return [bytes(r) for r in tf().data.TFRecordDataset([path]).as_numpy_iterator()]


def write_records(path: str, records: list[bytes]) -> None:
    with tf().io.TFRecordWriter(path) as w:
        for r in records:
            w.write(r)


def frame_offsets(path: str) -> list[int]:
    """Byte offset of each record's frame (12-byte header + data + 4-byte CRC)."""
    offs, pos = [], 0
    for r in read_records(path):
        offs.append(pos)
        pos += 16 + len(r)
    return offs


def edit_record(path: str, index: int, fn) -> dict:
    """Rewrite record ``index`` of ``path`` with ``fn(example)`` (a tf.train.Example edited in place)."""
    t = tf()
    recs = read_records(path)
    ex = t.train.Example.FromString(recs[index])
    fn(ex)
    recs[index] = ex.SerializeToString()
    write_records(path, recs)
    return features(ex)


def edit_all(path: str, fn) -> None:
    """Rewrite every record of ``path`` with ``fn(example)``."""
    t = tf()
    recs = []
    for r in read_records(path):
        ex = t.train.Example.FromString(r)
        fn(ex)
        recs.append(ex.SerializeToString())
    write_records(path, recs)


def features(ex) -> dict:
    out = {}
    for k, f in ex.features.feature.items():
        kind = f.WhichOneof("kind")
        out[k] = list(getattr(f, kind).value) if kind else []
    return out


def record_features(path: str, index: int) -> dict:
    return features(tf().train.Example.FromString(read_records(path)[index]))


def set_bytes(ex, key: str, value: bytes) -> None:
    ex.features.feature[key].Clear()
    ex.features.feature[key].bytes_list.value.append(value)


def set_int(ex, key: str, value: int) -> None:
    ex.features.feature[key].Clear()
    ex.features.feature[key].int64_list.value.append(value)


def jpeg(img: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode(b: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(b))
    im.load()
    return im


def shard_paths(download: str, sid: int) -> dict[str, str]:
    d = os.path.join(download, "tfrecord")
    return {"tfrecord": os.path.join(d, f"{sid:05d}.tfrecord"), "parquet": os.path.join(d, f"{sid:05d}.parquet"),
            "stats": os.path.join(d, f"{sid:05d}_stats.json")}


def make_resharded(download: str, out: str, name: str = "demo_rs", *, rehash: bool = False,
                   manifest: dict | None = None) -> list[int]:
    """A resharded-format folder: each demo shard copied to NAME-train.tfrecord-0000i-of-0000N + counts.json.

    ``rehash``: rewrite every record's sha256 as the hash of its stored jpg (a dataset whose hashes are of the
    stored bytes)."""
    t = tf()
    os.makedirs(out, exist_ok=True)
    srcs = sorted(p for p in os.listdir(os.path.join(download, "tfrecord")) if p.endswith(".tfrecord"))
    n = len(srcs)
    lengths = []
    for i, s in enumerate(srcs):
        recs = read_records(os.path.join(download, "tfrecord", s))
        if rehash:
            new = []
            for r in recs:
                ex = t.train.Example.FromString(r)
                jpg = ex.features.feature["jpg"].bytes_list.value[0]
                set_bytes(ex, "sha256", hashlib.sha256(jpg).hexdigest().encode())
                new.append(ex.SerializeToString())
            recs = new
        write_records(os.path.join(out, f"{name}-train.tfrecord-{i:05d}-of-{n:05d}"), recs)
        lengths.append(len(recs))
    counts = {"name": name, "splits": {"train": {
        "filename_template": f"{name}-train.tfrecord-{{SHARD_INDEX}}-of-{{NUM_SHARDS}}", "num_shards": n,
        "shard_lengths": lengths, "num_examples": sum(lengths)}}}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest if manifest is not None else {"dataset": "demo", "rows_out": {"train": sum(lengths)}}, f)
    with open(os.path.join(out, "counts.json"), "w") as f:
        json.dump(counts, f)
    return lengths


def make_tfds(download: str, root: str, name: str = "demo_tfds", version: str = "1.0.0") -> str:
    """A TFDS folder ROOT/NAME/VERSION over copies of the demo shards, written by tfds.folder_dataset.write_metadata."""
    import numpy as np
    import tensorflow_datasets as tfds

    tf()
    d = os.path.join(root, name, version)
    os.makedirs(d)
    srcs = sorted(p for p in os.listdir(os.path.join(download, "tfrecord")) if p.endswith(".tfrecord"))
    lengths = []
    for i, s in enumerate(srcs):
        shutil.copy(os.path.join(download, "tfrecord", s),
                    os.path.join(d, f"{name}-train.tfrecord-{i:05d}-of-{len(srcs):05d}"))
        with open(os.path.join(download, "tfrecord", s.replace(".tfrecord", "_stats.json"))) as f:
            lengths.append(json.load(f)["successes"])
    F = tfds.features
    feats = F.FeaturesDict({
        "jpg": F.Image(encoding_format="jpeg"), "txt": F.Text(), "key": F.Text(), "width": F.Scalar(np.int64),
        "height": F.Scalar(np.int64), "similarity": F.Scalar(np.float32), "NSFW": F.Text(), "LICENSE": F.Text(),
    })
    tfds.folder_dataset.write_metadata(
        data_dir=d, features=feats,
        split_infos=[tfds.core.SplitInfo(name="train", shard_lengths=lengths, num_bytes=0)],
        filename_template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_INDEX}-of-{NUM_SHARDS}", check_data=True)
    return d
