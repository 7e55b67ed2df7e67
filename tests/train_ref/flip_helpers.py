"""Helpers for the FLIP trainer tests: real TFRecords of the demo's synthetic images written the way img2dataset
writes them (``DIR/tfrecord/0000N.tfrecord``, keys jpg/txt/key/width/height plus extra columns), and a flip_tiny
config shrunk further for unit tests."""
from __future__ import annotations

import dataclasses
import io
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src"))  # before pip install -e


def write_records(out_dir: str, n: int, *, seed: int = 0, files: int = 4, short_side: int = 72,
                  png_every: int = 0) -> list[str]:
    """``n`` synthetic image-caption records in ``files`` TFRecord files under ``out_dir/tfrecord``."""
    from laionprep._env import import_tf
    from laionprep.testing import synth

    tf = import_tf()
    d = os.path.join(out_dir, "tfrecord")
    os.makedirs(d, exist_ok=True)
    paths = [os.path.join(d, f"{k:05d}.tfrecord") for k in range(files)]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    rnd = random.Random(seed)

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i64(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    def f32(v):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[v]))

    for i in range(n):
        s = synth.sample(seed, i)
        scale = short_side / min(s.width, s.height)
        s = dataclasses.replace(s, width=max(8, round(s.width * scale)), height=max(8, round(s.height * scale)))
        img = synth.render(s)
        buf = io.BytesIO()
        if png_every and i % png_every == png_every - 1:
            img.save(buf, format="PNG")  # a non-JPEG in the jpg column: the pipeline must still read it
        else:
            img.save(buf, format="JPEG", quality=90)
        cap = synth.caption(s, rnd)
        ex = tf.train.Example(features=tf.train.Features(feature={
            "jpg": b(buf.getvalue()), "txt": b(cap.encode()), "key": b(f"{i:09d}".encode()),
            "width": i64(img.width), "height": i64(img.height), "NSFW": b(b"UNLIKELY"), "similarity": f32(0.33),
            "LICENSE": b(b"?"), "url": b(f"http://127.0.0.1/img/{seed}/{i}.jpg".encode()), "caption": b(cap.encode()),
            "status": b(b"success"), "error_message": b(b""), "exif": b(b"{}"), "sha256": b(b"0" * 64),
            "original_width": i64(s.width), "original_height": i64(s.height),
        }))
        writers[i % files].write(ex.SerializeToString())
    for w in writers:
        w.close()
    return paths


def register_tfds(download_dir: str, root: str, name: str = "flip_demo_pairs") -> str:
    """Register an img2dataset download as a TFDS dataset without copying a record (the layout `build-tfds --mode
    register` produces): links named NAME-train.tfrecord-0000i-of-0000n + dataset_info.json / features.json."""
    import tensorflow_datasets as tfds

    files = sorted(os.listdir(os.path.join(download_dir, "tfrecord")))
    d = os.path.join(root, name, "1.0.0")
    os.makedirs(d)
    for i, fn in enumerate(files):
        os.symlink(os.path.join(download_dir, "tfrecord", fn),
                   os.path.join(d, f"{name}-train.tfrecord-{i:05d}-of-{len(files):05d}"))
    features = tfds.features.FeaturesDict({"jpg": tfds.features.Image(encoding_format="jpeg"),
                                           "txt": tfds.features.Text()})
    tfds.folder_dataset.write_metadata(data_dir=d, features=features, split_infos=None, check_data=True)
    return name


def tiny_config(data: str, vocab: str = "", **over):
    """flip_tiny shrunk further for unit tests (32 px, width 64, 2 layers): compiles and steps in seconds."""
    from laionprep.train_ref import config_lib

    c = config_lib.load_config("flip_tiny")
    c.data.source = data
    c.data.shuffle_buffer = 64
    c.tokenizer.vocab = vocab
    c.tokenizer.max_len = 16
    c.model.embed_dim = 32
    c.model.image.update(image_size=32, patch_size=8, width=64, depth=2, num_heads=2, mlp_dim=128)
    c.model.text.update(width=64, depth=1, num_heads=2, mlp_dim=128)
    c.batch_size = 16
    c.num_train_steps = 10
    c.warmup_steps = 2
    c.learning_rate = 1e-3
    c.log_every_steps = 1
    c.checkpoint_every_steps = 5
    c.async_checkpointing = False
    c.eval.batch_size = 64
    return set_fields(c, **over)


def set_fields(c, **over):
    """``c`` with ``a__b=v`` keyword overrides set as ``c.a.b = v``."""
    for k, v in over.items():
        node = c
        parts = k.split("__")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = v
    return c


def resume_config(data: str, vocab: str):
    """The run the resume test kills and compares: 12 steps, checkpoints every 4 (async), bfloat16 compute and
    rematerialised activations (FLIP's large-model settings)."""
    return tiny_config(data, vocab, num_train_steps=12, checkpoint_every_steps=4, async_checkpointing=True,
                       model__dtype="bfloat16", model__remat_policy="minimal")


def write_tfds(data_dir: str, name: str, features, splits: dict, version: str = "1.0.0") -> str:
    """A real TFDS dataset ``data_dir/name/version`` (records serialised by ``features``, metadata by
    ``tfds.folder_dataset.write_metadata``); ``splits`` maps split name -> list of example dicts."""
    import tensorflow_datasets as tfds

    from laionprep._env import import_tf

    tf = import_tf()
    d = os.path.join(data_dir, name, version)
    os.makedirs(d, exist_ok=True)
    for split, rows in splits.items():
        with tf.io.TFRecordWriter(os.path.join(d, f"{name}-{split}.tfrecord-00000-of-00001")) as w:
            for row in rows:
                w.write(features.serialize_example(row))
    tfds.folder_dataset.write_metadata(data_dir=d, features=features, split_infos=None, check_data=True)
    return d


def write_low_res_copy(src_dir: str, out_dir: str, short_side: int) -> list[str]:
    """The records of the download-like folder ``src_dir`` with every image re-encoded to ``short_side`` by
    ``laionprep reshard --image-size``'s encoder (width/height updated), under ``out_dir/tfrecord``."""
    import glob

    from laionprep.sharding.images import write_low_res_copy as write_copy

    return write_copy(sorted(glob.glob(os.path.join(src_dir, "tfrecord", "*.tfrecord"))), out_dir, short_side)
