"""Regenerate the builders' ``dummy_data/`` (committed): ``python -m laionprep.tfds_builders.make_dummy_data``.

Each family gets a tiny img2dataset-shaped folder ``dummy_data/tfrecord/0000{0,1}.tfrecord`` + ``_stats.json``
with records exactly as img2dataset writes them (the same keys, one null written as ``b''`` in a float column,
like img2dataset does), images drawn by the demo generator (``laionprep.testing.synth``) at 40 px so the whole
folder stays a few KB.  Output is deterministic.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import random

from laionprep.tfrecord import write_records

HERE = os.path.dirname(os.path.abspath(__file__))
SHARDS = (3, 2)  # records per shard
FAMILIES = {
    "laion400m_tfrecord": ("NSFW", "similarity", "LICENSE"),
    "laion2b_en_tfrecord": ("similarity", "punsafe", "pwatermark"),
    "datacomp_tfrecord": ("uid", "clip_b32_similarity_score", "clip_l14_similarity_score"),
}
NULL_AT = (0, 1)  # (shard, record) whose first float column is null (b''), as img2dataset writes it


def _image(seed: int, index: int) -> tuple[bytes, int, int, int, int]:
    from laionprep.testing import synth

    s = synth.sample(seed, index)
    w, h = (40, 30) if s.width >= s.height else (30, 40)
    s = dataclasses.replace(s, width=w, height=h, fmt="jpg")
    buf = io.BytesIO()
    synth.render(s).save(buf, format="JPEG", quality=60)
    return buf.getvalue(), w, h, synth.sample(seed, index).width, synth.sample(seed, index).height


def _example(family: str, shard: int, i: int, seed: int) -> bytes:
    from laionprep._env import import_tf
    from laionprep.testing import synth

    tf = import_tf()
    index = shard * 10 + i
    jpg, w, h, ow, oh = _image(seed, index)
    r = random.Random(seed * 1000 + index)
    text = synth.caption(synth.sample(seed, index), r)
    url = f"http://127.0.0.1:8000/img/{seed}/{index}.jpg"

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() if isinstance(v, str) else v]))

    def f(v):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[v]))

    def n(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))

    feats = {
        "jpg": b(jpg), "txt": b(text), "key": b(f"{shard:05d}{i:04d}"), "url": b(url), "caption": b(text),
        "status": b("success"), "error_message": b(""), "exif": b("{}"),
        "sha256": b(hashlib.sha256(jpg).hexdigest()), "width": n(w), "height": n(h),
        "original_width": n(ow), "original_height": n(oh),
    }
    null_done = (shard, i) != NULL_AT
    for col in FAMILIES[family]:
        if col == "NSFW":
            feats[col] = b(r.choice(["UNLIKELY", "UNSURE"]))
        elif col == "LICENSE":
            feats[col] = b(r.choice(synth.LICENSES))
        elif col == "uid":
            feats[col] = b(hashlib.md5(url.encode()).hexdigest())
        elif not null_done:
            feats[col] = b(b"")  # img2dataset's null
            null_done = True
        else:
            feats[col] = f(round(r.uniform(0.2, 0.45), 4))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def write(family: str, out: str, seed: int = 7) -> int:
    os.makedirs(out, exist_ok=True)
    total = 0
    for shard, n in enumerate(SHARDS):
        write_records(os.path.join(out, f"{shard:05d}.tfrecord"), [_example(family, shard, i, seed) for i in range(n)])
        stats = {"count": n, "successes": n, "failed_to_download": 0, "failed_to_resize": 0, "duration": 0.0,
                 "start_time": 0.0, "end_time": 0.0, "status_dict": {"success": n}}
        with open(os.path.join(out, f"{shard:05d}_stats.json"), "w") as fh:
            json.dump(stats, fh, indent=4)
        total += n
    return total


def main() -> None:
    for family in FAMILIES:
        out = os.path.join(HERE, family, "dummy_data", "tfrecord")
        n = write(family, out)
        size = sum(os.path.getsize(os.path.join(out, x)) for x in os.listdir(out))
        print(f"{family}: {n} records, {size:,} bytes in {out}")


if __name__ == "__main__":
    main()
