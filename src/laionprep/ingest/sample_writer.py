"""img2dataset's TFRecord shard writer, without TensorFlow in the download workers.

img2dataset's own ``TFRecordSampleWriter`` imports ``tensorflow_io`` and TensorFlow in every worker process (on
its first shard, and again after each of multiprocessing's worker restarts every 5 shards): ~3.5 s of CPU and a
few hundred MB of memory per process, to frame records that :mod:`laionprep.tfrecord` frames the same way.  The
download child swaps this class in (:func:`laionprep.ingest.safe_downloader.use_in_img2dataset`); workers get it
by reference with img2dataset's ``Downloader``.

The same files as img2dataset's writer (tested against it): ``NNNNN.tfrecord`` with one ``tf.train.Example`` per
success (``key``, the image under its format's name, ``txt`` when captions are saved, then the metadata columns,
typed as img2dataset types them: ``int`` and ``bool`` -> int64, ``float`` -> float (float32), lists by their
first element, anything else -> bytes with ``None`` as empty bytes), and ``NNNNN.parquet`` with every row's
metadata, byte for byte.  One difference, on purpose: the Example's feature map is serialized in key order.
protobuf's runtime writes a map in the order of a hash seeded per process, so img2dataset's own records differ in
bytes from one run (and worker) to the next; these are the same bytes every time.  Files are written through
fsspec, as the shard parquets always were.
"""
from __future__ import annotations

from laionprep import tfrecord


def _feature(value) -> tfrecord.Feature:
    """img2dataset's typing: a list by its first element (an empty list fails here, as in its writer), a scalar as
    a list of one."""
    values = value if isinstance(value, list) else [value]
    f = tfrecord.Feature()
    if isinstance(values[0], int):
        f.int64_list.value.extend(int(v) for v in values)  # a bool as 0/1 (protobuf deprecates bools in int64 fields)
    elif isinstance(values[0], float):
        f.float_list.value.extend(values)
    else:
        f.bytes_list.value.extend(b"" if v is None else v.encode() if isinstance(v, str) else v for v in values)
    return f


class TFRecordSampleWriter:
    """img2dataset's ``TFRecordSampleWriter`` interface (constructor arguments, ``write``, ``close``)."""

    def __init__(self, shard_id, output_folder, save_caption, oom_shard_count, schema, encode_format):
        from img2dataset.writer import BufferedParquetWriter  # the shard parquet exactly as img2dataset writes it

        name = f"{shard_id:0{oom_shard_count}d}"
        self.shard_id = shard_id
        self.records = tfrecord.RecordWriter(f"{output_folder}/{name}.tfrecord")
        self.save_caption = save_caption
        self.parquet = BufferedParquetWriter(f"{output_folder}/{name}.parquet", schema, 100)
        self.encode_format = encode_format

    def write(self, img_str, key, caption, meta) -> None:
        if img_str is not None:
            ex = tfrecord.Example()
            feats = ex.features.feature
            feats["key"].CopyFrom(_feature(key.encode()))
            feats[self.encode_format].CopyFrom(_feature(img_str))
            if self.save_caption:
                feats["txt"].CopyFrom(_feature(str(caption) if caption is not None else ""))
            for k, v in meta.items():
                feats[k].CopyFrom(_feature(v))
            self.records.write(ex.SerializeToString(deterministic=True))
        self.parquet.write(meta)

    def close(self) -> None:
        self.parquet.close()
        self.records.close()
