"""tf.data input pipelines for the FLIP trainer (TensorFlow on the CPU only; accelerators belong to JAX).

Training data (image-text pairs) is read from any of:

* a TFDS dataset by name (``data.source=laion_demo``, ``data.data_dir=ROOT``) or by builder directory
  (``ROOT/NAME/VERSION``, or ``ROOT/NAME`` for its newest version): ``jpg`` is read undecoded
  (``tfds.decode.SkipDecoding``) so that only the crop is decoded;
* raw TFRecords, FLIP's own path: a glob, one file, or a folder -- an img2dataset download (``DIR/tfrecord/*.tfrecord``)
  or a reshard output (``OUT/train/NAME-train-00000-of-00004.tfrecord``, or the older flat
  ``NAME-train.tfrecord-00000-of-00004``: the wanted split's files as counts.json names them).

Only the ``jpg`` (JPEG bytes) and ``txt`` (caption) features are read; every other feature is ignored.

Per process: files are sharded ``files[process_index::process_count]`` (TFDS: ``tfds.split_for_jax_process``),
shuffled, interleaved (read in parallel from object storage, in the consumer's thread from local disk), repeated,
example-shuffled and batched; then, in one map call per batch (:func:`train_batch`), each example is
random-resized-cropped by decoding only the crop window (``tf.image.decode_and_crop_jpeg``), flipped and resized, and
the captions are tokenized; batches are prefetched.  Random choices are
stateless functions of ``(seed, process, example counter)``, so the iterator can be checkpointed with
``tf.train.Checkpoint`` and a resumed run sees exactly the examples it would have seen.  Images leave the pipeline
as uint8 (4x less host->device traffic than float32) and are normalised on the device by :func:`normalize`.

Zero-shot evaluation data (labelled images) comes from a TFDS classification dataset (``image`` + ``label``
features, e.g. ``imagenet2012`` or one built by ``build-tfds --mode image-folder``) or a plain folder
``DIR/SPLIT/<class>/*.jpg`` (with an optional ``DIR/class_names.txt`` of prompt names).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Any, Sequence

import numpy as np

from laionprep import feature_names, folders
from laionprep import fs as lfs
from laionprep._env import import_tf
from laionprep.errors import DataError, UsageError

# ImageNet statistics (FLIP / MAE normalisation), in 0..255 units.
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_SPLIT_IN_NAME = re.compile(r"-(train|validation|valid|val|test|eval)\.tfrecord")


def normalize(images, dtype=None):
    """uint8 ``[..., 3]`` images -> normalised floats (runs inside the jitted step on the accelerator)."""
    import jax.numpy as jnp  # this module runs without JAX where only data is read (`laionprep tokenizer`)

    dtype = dtype or jnp.float32
    x = images.astype(jnp.float32)
    x = (x - jnp.asarray(MEAN_RGB, jnp.float32)) / jnp.asarray(STDDEV_RGB, jnp.float32)
    return x.astype(dtype)


# --------------------------------------------------------------------------------------------------- sources


@dataclasses.dataclass
class Source:
    """Where examples come from: a list of TFRecord files, or a TFDS builder + split."""

    kind: str  # "files" | "tfds" | "folder" (image folder, evaluation only)
    description: str
    split: str = "train"
    files: list[str] = dataclasses.field(default_factory=list)
    builder: Any = None
    root: str = ""  # folder sources: the directory holding the class folders
    # a reshard output in more than one format (reshard --format both): {file format: the same shards in it}
    alternatives: dict[str, list[str]] = dataclasses.field(default_factory=dict)


def _is_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _version_key(v: str):
    try:
        return tuple(int(x) for x in v.split("."))
    except ValueError:
        return (-1,)


def _tfds_builder_dir(path: str) -> str | None:
    """``path`` itself if it holds dataset_info.json, else its newest ``VERSION/`` (or ``CONFIG/VERSION``) subdir."""
    tf = import_tf()
    if tf.io.gfile.exists(os.path.join(path, "dataset_info.json")):
        return path
    candidates = []
    for pattern in ("*/dataset_info.json", "*/*/dataset_info.json"):
        for info in tf.io.gfile.glob(os.path.join(path, pattern)):
            d = os.path.dirname(info)
            candidates.append((_version_key(os.path.basename(d)), d))
    if candidates:
        return max(candidates)[1]
    return None


def _tfrecord_files_in(path: str, split: str) -> list[str]:
    tf = import_tf()
    files: list[str] = []
    for pattern in ("*.tfrecord*", os.path.join("tfrecord", "*.tfrecord*"), "*.tfrec"):
        files.extend(tf.io.gfile.glob(os.path.join(path, pattern)))
    files = sorted({f for f in files if not f.endswith((".tmp", ".json", ".parquet", ".crc"))})
    named = [f for f in files if _SPLIT_IN_NAME.search(os.path.basename(f))]
    if named:
        wanted = [f for f in named if f"-{split}.tfrecord" in os.path.basename(f)]
        if not wanted:
            have = sorted({_SPLIT_IN_NAME.search(os.path.basename(f)).group(1) for f in named})
            raise UsageError(f"no '{split}' files in {path} (it has: {', '.join(have)})", where=path,
                             fix="pick one of those splits (data.split / eval.split)")
        return wanted
    return files


def _stage_folder_files(source: str, split: str) -> Source | None:
    """The files of a folder laionprep wrote, as ``laionprep.folders`` knows it: a reshard output's shards of
    ``split`` (from counts.json), or a download's complete shards (a shard without its stats file is left out: a
    killed run's last file may be truncated).  ``None`` for any other folder (plain TFRecord globbing applies)."""
    try:
        found = folders.detect(source, kinds=("resharded", "download"))
    except UsageError:
        return None
    if isinstance(found, folders.ReshardFolder):
        splits = found.counts().get("splits", {})
        if split not in splits:
            raise UsageError(f"no '{split}' files in {source} (it has: {', '.join(sorted(splits))})", where=source,
                             fix="pick one of those splits (data.split / eval.split)")
        renamed = {o: n for n, o in feature_names.of_manifest(found.manifest()).items() if o in ("jpg", "txt")}
        if renamed:
            raise UsageError(f"the records of {source} store {', '.join(f'{o} as {n!r}' for o, n in renamed.items())} "
                             "(reshard --feature-names): this trainer reads jpg and txt", where=source,
                             fix="reshard again without --feature-names for this trainer")
        files = found.split_files(split, {"splits": splits})
        others = {f: found.split_files(split, {"splits": splits}, f)
                  for f in found.file_formats(split, {"splits": splits})[1:]}
        return Source("files", f"{len(files)} '{split}' shards of the reshard output {source}", split, files=files,
                      alternatives=others)
    files = [s.tfrecord for s in found.scan().require_readable().shards]
    if not files:
        return None
    return Source("files", f"{len(files)} complete shards of the download {found.root}", split, files=files)


def resolve_source(source: str, data_dir: str = "", split: str = "train", *, allow_folder: bool = False) -> Source:
    """Work out what ``source`` names.  See the module docstring for what is accepted."""
    tf = import_tf()
    if not source:
        raise UsageError("no data source given", where="--config.data.source",
                         fix="set --config.data.source to a TFDS name, a TFDS builder dir, a TFRecord folder or glob")
    lfs.check_tf_reaches_emulator(source, source)
    lfs.check_tf_reaches_emulator(data_dir, data_dir)
    if _is_glob(source):
        files = sorted(tf.io.gfile.glob(source))
        if not files:
            raise DataError(f"no files match {source}", where=source)
        kind = "ArrayRecord" if folders.names.file_format_of(files[0]) == "array_record" else "TFRecord"
        return Source("files", f"{len(files)} {kind} files matching {source}", split, files=files)
    if tf.io.gfile.isdir(source):
        bdir = _tfds_builder_dir(source)
        if bdir:
            import tensorflow_datasets as tfds  # TFDS sources only: importing it takes seconds

            builder = tfds.builder_from_directory(bdir)
            return Source("tfds", f"TFDS {builder.info.full_name} at {bdir}", split, builder=builder)
        stage_files = _stage_folder_files(source, split)
        if stage_files is not None:
            return stage_files
        files = _tfrecord_files_in(source, split)
        if files:
            return Source("files", f"{len(files)} TFRecord files in {source}", split, files=files)
        if allow_folder:
            root = source
            for cand in ([split] if split else ["val", "validation", "test"]):
                if tf.io.gfile.isdir(os.path.join(source, cand)):
                    root = os.path.join(source, cand)
                    break
            return Source("folder", f"image folder {root}", split, root=root)
        raise DataError(f"{source} holds no TFDS dataset and no *.tfrecord files", where=source,
                        fix="point at an img2dataset download, a reshard output folder, or a TFDS dataset dir")
    if tf.io.gfile.exists(source):
        return Source("files", f"TFRecord file {source}", split, files=[source])
    if "/" in source and not re.match(r"^[\w]+(/[\w.\-]+)?(:[\w.*]+)?$", source):
        raise UsageError(f"data source not found: {source}", where=source,
                         fix="give an existing folder, file or glob, or a TFDS dataset name")
    import tensorflow_datasets as tfds  # TFDS sources only: importing it takes seconds

    try:
        builder = tfds.builder(source, data_dir=data_dir or None)
        if not builder.is_prepared():
            raise FileNotFoundError(f"no prepared data in {builder.data_dir}")
        if split:
            builder.info.splits[split]  # noqa: B018 -- raises when the split is missing
    except Exception as e:  # DatasetNotFoundError, a missing split, ...
        raise UsageError(f"TFDS dataset {source!r} (split {split!r}) not found"
                         + (f" under {data_dir}" if data_dir else "") + f": {type(e).__name__}: {e}",
                         where=source, fix="build/register it first (laionprep build-tfds) or set data_dir") from e
    return Source("tfds", f"TFDS {builder.info.full_name} in {builder.data_dir}", split, builder=builder)


def shard_files(files: Sequence[str], process_index: int, process_count: int) -> list[str]:
    """This process's files: ``files[process_index::process_count]`` (each file read by exactly one process)."""
    files = list(files)
    if len(files) < process_count:
        raise DataError(f"{len(files)} files cannot be shared by {process_count} processes", where="data.source",
                        fix="reshard into at least one file per host (laionprep reshard --num-shards N)")
    return files[process_index::process_count]


def _check_record_keys(path: str, needed: Sequence[str]) -> None:
    """Read the first record of ``path`` and make sure it is a tf.train.Example with the ``needed`` keys."""
    tf = import_tf()
    for raw in tf.data.TFRecordDataset(path).take(1):
        ex = tf.train.Example()
        try:
            ex.ParseFromString(raw.numpy())
        except Exception as e:
            raise DataError(f"{path} does not hold tf.train.Example records", where=path) from e
        missing = [k for k in needed if k not in ex.features.feature]
        if missing:
            raise DataError(f"records in {path} lack feature(s) {', '.join(missing)} "
                            f"(they have: {', '.join(sorted(ex.features.feature))})", where=path,
                            fix="train on img2dataset TFRecords or a laionprep TFDS dataset (keys jpg/txt)")
        return
    # empty file: fine as long as another file has records (checked by the caller)


def _nonempty(files: Sequence[str]) -> bool:
    tf = import_tf()
    return any(tf.io.gfile.stat(f).length > 0 for f in files)


def _record_spec(keys):
    tf = import_tf()
    return {k: tf.io.FixedLenFeature([], tf.string, default_value="" if k == "txt" else None) for k in keys}


def _pair_examples(src: Source, *, seed: int, process_index: int, process_count: int, shuffle_files: bool,
                   repeat: bool, keys=("jpg", "txt"), parse: bool = True):
    """A dataset of ``{'jpg': bytes, 'txt': bytes}`` for this process (TFDS or raw files).  With ``parse=False``
    raw-file sources yield the serialized records (parsed later, fused with decoding)."""
    tf = import_tf()
    if src.kind == "tfds":
        import tensorflow_datasets as tfds  # TFDS sources only: importing it takes seconds

        feats = src.builder.info.features
        missing = [k for k in keys if k not in feats]
        if missing:
            raise DataError(f"{src.description} has no feature(s) {', '.join(missing)} "
                            f"(it has: {', '.join(sorted(feats.keys()))})", where=src.description)
        if src.split not in src.builder.info.splits:
            raise UsageError(f"{src.description} has no split {src.split!r} "
                             f"(it has: {', '.join(src.builder.info.splits.keys())})", where="data.split")
        if src.builder.info.splits[src.split].num_examples == 0:
            raise DataError(f"{src.description} split {src.split} is empty", where=src.description)
        split = tfds.split_for_jax_process(src.split, process_index=process_index, process_count=process_count)
        decoders = {"jpg": tfds.decode.SkipDecoding()} if "jpg" in keys else None
        ds = src.builder.as_dataset(
            split=split, shuffle_files=shuffle_files, decoders=decoders,
            read_config=tfds.ReadConfig(shuffle_seed=seed, skip_prefetch=True, try_autocache=False,
                                        shuffle_reshuffle_each_iteration=True))
        ds = ds.map(lambda ex: {k: ex[k] for k in keys})
        return ds.repeat() if repeat else ds
    if src.kind != "files":
        raise UsageError(f"{src.description} is not image-text data", where="data.source")
    files = shard_files(src.files, process_index, process_count)
    if not _nonempty(files):
        raise DataError(f"{src.description}: the files of process {process_index} hold no records", where=files[0])
    _check_record_keys(next(f for f in files if tf.io.gfile.stat(f).length > 0), keys)
    fds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        fds = fds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        fds = fds.repeat()
    spec = _record_spec(keys)
    # Local files are read in the consumer's thread: a local read is a memcpy, and a parallel interleave would hand
    # every record from a reader thread to the consumer (~2 extra context switches per record, a few % of the
    # pipeline's CPU).  Object-store files are read in parallel, where each read waits on the network.
    parallel = not lfs.is_local(files[0])  # one source: all local or all remote
    ds = fds.interleave(lambda f: tf.data.TFRecordDataset(f, buffer_size=1 << 20),
                        cycle_length=min(16, len(files)), block_length=1,
                        **({"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": True} if parallel else {}))
    if not parse:
        return ds
    return ds.map(lambda r: tf.io.parse_single_example(r, spec), num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True)


def caption_dataset(source: str, *, data_dir: str = "", split: str = "train"):
    """All captions (``txt``) of a source, once, in file order: for learning a tokenizer vocabulary."""
    src = resolve_source(source, data_dir, split)
    ds = _pair_examples(src, seed=0, process_index=0, process_count=1, shuffle_files=False, repeat=False,
                        keys=("txt",))
    return ds.map(lambda ex: ex["txt"])


# ------------------------------------------------------------------------------------------ preprocessing


def _crop_window(shape, seed, area_range, aspect_ratio_range):
    """A random-resized-crop window ``[y, x, h, w]`` (int32) for an image of ``shape`` (FLIP: area 0.5..1)."""
    tf = import_tf()
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.cast(shape, tf.int32),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=aspect_ratio_range, area_range=area_range, max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    return tf.concat([begin[:2], size[:2]], 0)


def _resize(img, image_size: int, antialias: bool = False):
    """Bilinear resize (half-pixel centres, as tf.image.resize) of a uint8 HxWx3 image -> uint8, rounded.

    Training uses the raw op on a float copy of the input: TF's bilinear kernel is ~2x faster on float than on
    uint8 input, and the input (a DCT-scaled crop, see :func:`decode_jpeg_crop`) is no larger than the output.
    Adding 0.5 before resizing and truncating after rounds (the weights sum to 1), on the smaller of the two
    arrays.  Evaluation antialiases."""
    tf = import_tf()
    if antialias:
        out = tf.image.resize(img, [image_size, image_size], method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(out + 0.5, 0.0, 255.0), tf.uint8)
    x = tf.cast(img, tf.float32) + 0.5
    out = tf.raw_ops.ResizeBilinear(images=x[None], size=[image_size, image_size], half_pixel_centers=True)[0]
    return tf.cast(out, tf.uint8)  # in [0.5, 255.5]: truncation rounds, 255.5 -> 255


def _to_uint8(img):
    """Round a bilinearly resized uint8 image back to uint8.  Bilinear interpolation never leaves [0, 255], so
    adding 0.5 and truncating rounds without a clip."""
    tf = import_tf()
    return tf.cast(img + 0.5, tf.uint8)


# The smallest DCT-scaled crop decoded, relative to the output size: a crop may be upsampled by up to 4/3 after a
# 1/r-scale decode.  Against an antialiased resize of the full-resolution crop (480 px photos, bench/train.py):
# 43.2 / 43.7 / 43.7 dB at 224 / 112 / 84 px, where a full-scale decode + bilinear resize gives 39.1 / 35.0 / 33.7
# dB (it aliases).  Requiring the scaled crop to be >= the output size gave 40.5 dB at 224 px; allowing 5/8 or 1/2
# of it lost 2.4-6 dB at 84 px (BENCHMARKS.md).
MIN_SCALED_FRACTION = (3, 4)


def dct_scale(window, out_size: int):
    """The DCT scale ``r`` (1, 2, 4 or 8) :func:`decode_jpeg_crop` decodes ``window`` ([y, x, h, w]) at: the
    largest whose scaled crop keeps a short side >= 3/4 of ``out_size``."""
    tf = import_tf()
    num, den = MIN_SCALED_FRACTION
    short = tf.minimum(window[2], window[3])
    # 0 -> 1/1, 1 -> 1/2, 2 -> 1/4, 3 -> 1/8
    index = tf.reduce_sum(tf.cast(short * den >= tf.constant([2, 4, 8], tf.int32) * (num * out_size), tf.int32))
    return tf.bitwise.left_shift(1, index), index


def snap_window(window, r):
    """``window`` rounded down to multiples of ``r`` (position and size; it moves/shrinks by < r px): the window a
    1/r-scale decode covers exactly, so its pixels are the window's and no shifted copy of it."""
    return (window // r) * r


def decode_jpeg_crop(image_bytes, window, out_size: int):
    """Decode only ``window`` ([y, x, h, w]) of a JPEG, at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling: cheaper
    than a full decode, and an antialiasing filter where a plain bilinear resize aliases) when the scaled crop
    keeps at least 3/4 of ``out_size`` (:func:`dct_scale`) -- e.g. every 224 px crop of a 480 px download.  The
    decoded pixels cover :func:`snap_window` of the window exactly.  uint8 HxWx3."""
    tf = import_tf()
    _, index = dct_scale(window, out_size)
    branches = [lambda: tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)]
    for r in (2, 4, 8):
        branches.append(lambda r=r: tf.image.decode_and_crop_jpeg(image_bytes, window // r, channels=3, ratio=r))
    return tf.switch_case(index, branches)


def decode_random_crop(image_bytes, seed, image_size: int, area_range=(0.5, 1.0),
                       aspect_ratio_range=(3 / 4, 4 / 3), flip: bool = True):
    """Random-resized-crop of an encoded image, decoding only the crop window when it is a JPEG -> uint8 HxWx3."""
    tf = import_tf()
    seeds = tf.random.experimental.stateless_split(seed, 2)

    def jpeg():
        shape = tf.image.extract_jpeg_shape(image_bytes)
        win = _crop_window(shape, seeds[0], area_range, aspect_ratio_range)
        return decode_jpeg_crop(image_bytes, win, image_size)

    def other():  # PNG/GIF/BMP/WebP-in-a-JPEG-column: decode all, then crop the same way
        img = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        win = _crop_window(tf.shape(img), seeds[0], area_range, aspect_ratio_range)
        return img[win[0]:win[0] + win[2], win[1]:win[1] + win[3], :]

    img = _resize(tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other), image_size)
    if flip:  # mirror half of the images (only the branch taken runs)
        coin = tf.random.stateless_uniform([], seed=seeds[1]) < 0.5
        img = tf.cond(coin, lambda: tf.reverse(img, axis=[1]), lambda: img)
    img.set_shape([image_size, image_size, 3])
    return img


def decode_center_crop(image_bytes, image_size: int, crop_fraction: float = 1.0):
    """Evaluation preprocessing: the central square (``crop_fraction`` of the short side), resized -> uint8."""
    tf = import_tf()

    def window(shape):
        h, w = shape[0], shape[1]
        side = tf.cast(tf.cast(tf.minimum(h, w), tf.float32) * crop_fraction, tf.int32)
        side = tf.maximum(side, 1)
        return tf.stack([(h - side) // 2, (w - side) // 2, side, side])

    def jpeg():
        return tf.image.decode_and_crop_jpeg(image_bytes, window(tf.image.extract_jpeg_shape(image_bytes)), channels=3)

    def other():
        img = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        win = window(tf.shape(img))
        return img[win[0]:win[0] + win[2], win[1]:win[1] + win[3], :]

    img = _resize(tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other), image_size, antialias=True)
    img.set_shape([image_size, image_size, 3])
    return img


# ------------------------------------------------------------------------------------------- train data


def train_example(ex, seed, image_size: int, area_range=(0.5, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
                  flip: bool = True, *, serialized: bool = False):
    """One training example -> ``{'image': uint8 [S,S,3], 'txt'}``: ``ex`` is ``{'jpg', 'txt'}`` or, with
    ``serialized``, a serialized tf.train.Example (parsed here, fused with decoding); ``seed`` its stateless seed.
    :func:`train_batch` calls it on each example of a batch."""
    tf = import_tf()
    if serialized:
        ex = tf.io.parse_single_example(ex, _record_spec(("jpg", "txt")))
    image = decode_random_crop(ex["jpg"], seed, image_size, tuple(area_range), tuple(aspect_ratio_range), flip)
    return {"image": image, "txt": ex["txt"]}


def train_batch(examples, counters, base, image_size: int, area_range=(0.5, 1.0),
                aspect_ratio_range=(3 / 4, 4 / 3), flip: bool = True, *, serialized: bool = False):
    """A batch of examples -> ``(images uint8 [B,S,S,3], captions [B])``: :func:`train_example` on each, example
    ``k`` seeded with ``stateless_fold_in(base, counters[k])``.  Both loaders call it on whole batches (tf.data's
    batch map, Grain's workers).

    One ``tf.map_fn`` over the batch, inside one call of the pipeline's function: a tf.data map per example costs a
    function call and a hand-off between threads for every image, ~100 us per image on this project's bench
    (BENCHMARKS.md), a quarter of the work on a 160 px copy.  Batches run in parallel (the map's
    ``num_parallel_calls``, or Grain's workers), the images of one batch one after another."""
    tf = import_tf()

    def one(args):
        counter, ex = args
        out = train_example(ex, tf.random.experimental.stateless_fold_in(base, counter), image_size, area_range,
                            aspect_ratio_range, flip, serialized=serialized)
        return out["image"], out["txt"]

    return tf.map_fn(one, (counters, examples), parallel_iterations=1, fn_output_signature=(
        tf.TensorSpec([image_size, image_size, 3], tf.uint8), tf.TensorSpec([], tf.string)))


def train_dataset(src: Source | str, tokenizer, *, image_size: int, batch_size: int, seed: int = 0,
                  process_index: int = 0, process_count: int = 1, data_dir: str = "", shuffle_buffer: int = 10_000,
                  shuffle_files: bool = True, area_range=(0.5, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
                  flip: bool = True, num_parallel_calls: int = -1, prefetch: int = 2, threads: int = 0,
                  text_transform=None):
    """This process's endless stream of batches ``{'image': uint8 [B,S,S,3], 'text': int32 [B,max_len]}``
    (``text`` is ``tokenizer.tokenize(captions)``: with CLIPPO's TextRenderer, uint8 [B,S,S,3] rendered captions).

    ``batch_size`` is the per-process batch.  ``num_parallel_calls=-1`` is AUTOTUNE; ``threads`` > 0 caps the
    pipeline's private thread pool (used by the benchmark to measure one core).  ``text_transform(ids, counter)``
    (optional) rewrites each batch's token ids, ``counter`` being the batch number (CLIPA's text reduction, see
    text_reduction.py).
    """
    tf = import_tf()
    if isinstance(src, str):
        src = resolve_source(src, data_dir, "train")
    auto = tf.data.AUTOTUNE
    npc = auto if num_parallel_calls in (-1, None) else num_parallel_calls
    raw = src.kind == "files"  # shuffle serialized records; parse them in the same map that decodes
    ds = _pair_examples(src, seed=seed, process_index=process_index, process_count=process_count,
                        shuffle_files=shuffle_files, repeat=True, parse=not raw)
    if shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed * 1_000_003 + process_index, reshuffle_each_iteration=True)
    base = tf.constant([seed, process_index], tf.int64)

    def prep(counters, examples):  # example k of the stream is seeded by k; batch n holds examples nB .. nB+B-1
        images, txt = train_batch(examples, counters, base, image_size, tuple(area_range), tuple(aspect_ratio_range),
                                  flip, serialized=raw)
        ids = tokenizer.tokenize(txt)
        if text_transform is not None:
            ids = text_transform(ids, counters[0] // batch_size)
        return {"image": images, "text": ids}

    ds = ds.enumerate().batch(batch_size, drop_remainder=True).map(prep, num_parallel_calls=npc, deterministic=True)
    ds = ds.prefetch(prefetch)
    opts = tf.data.Options()
    opts.deterministic = True
    if threads:
        opts.threading.private_threadpool_size = threads
        opts.threading.max_intra_op_parallelism = 1
    return ds.with_options(opts)


# -------------------------------------------------------------------------------------------- eval data


@dataclasses.dataclass
class EvalData:
    dataset: Any  # batches {'image': uint8, 'label': int32, 'mask': bool}
    num_batches: int  # the same on every process
    num_examples: int  # over all processes
    label_names: list[str]  # folder / ClassLabel names, in label order
    class_names: list[str]  # prompt names, in label order
    description: str


def read_class_names(path: str) -> list[str] | dict[str, str]:
    """A class-names file: ``.txt`` one prompt name per line (label order), or ``.json`` -- a list in label order
    or a ``{label_name: prompt_name}`` mapping."""
    tf = import_tf()
    with tf.io.gfile.GFile(path, "r") as f:
        text = f.read()
    if path.endswith(".json"):
        data = json.loads(text)
        if isinstance(data, dict):
            return {str(k): str(v) for k, v in data.items()}
        return [str(x) for x in data]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _norm_name(s: str) -> str:
    return re.sub(r"[\s_\-]+", " ", s.strip().lower())


def prompt_names(label_names: Sequence[str], class_names_file: str = "", *, where: str = "") -> list[str]:
    """Prompt names for each label.

    From ``class_names_file`` (one name per line) when given: matched to the labels by name (``red_circle`` ->
    ``red circle``) when every label has a match, else by position.  Without a file: the label names with ``_``
    and ``-`` as spaces.  ImageNet's WordNet ids (``n01440764``) are not names: a file is required for them.
    """
    if class_names_file:
        names = read_class_names(class_names_file)
        if isinstance(names, dict):
            missing = [lbl for lbl in label_names if lbl not in names]
            if missing:
                raise DataError(f"{class_names_file} has no name for {len(missing)} labels (e.g. {missing[0]})",
                                where=class_names_file)
            return [names[lbl] for lbl in label_names]
        by_norm = {_norm_name(n): n for n in names}
        if all(_norm_name(lbl) in by_norm for lbl in label_names):
            return [by_norm[_norm_name(lbl)] for lbl in label_names]
        if len(names) != len(label_names):
            raise DataError(f"{class_names_file} has {len(names)} names for {len(label_names)} classes",
                            where=class_names_file, fix="one prompt name per line, in label order")
        return names
    if label_names and all(re.fullmatch(r"n\d{8}", n) for n in label_names):
        raise UsageError(f"the labels of {where or 'the eval dataset'} are WordNet ids (e.g. {label_names[0]}), "
                         "not names to put in a prompt", where="--config.eval.class_names",
                         fix="give a file of class names, one per line in label order "
                             "(for ImageNet: CLIP's curated class names)")
    return [_norm_name(n) for n in label_names]


def _stored_class_names(src: Source, n: int) -> list[str] | None:
    """Prompt names a TFDS dataset carries in its ``metadata.json`` (``class_names``), as written by
    ``build-tfds --mode image-folder``; None when there are none."""
    if src.kind != "tfds":
        return None
    tf = import_tf()
    meta = os.path.join(str(src.builder.data_dir), "metadata.json")
    if not tf.io.gfile.exists(meta):
        return None
    with tf.io.gfile.GFile(meta) as f:
        names = json.load(f).get("class_names")
    return [str(x) for x in names] if isinstance(names, list) and len(names) == n else None


def eval_dataset(source: str, *, image_size: int, batch_size: int, data_dir: str = "", split: str = "",
                 process_index: int = 0, process_count: int = 1, crop_fraction: float = 1.0,
                 class_names_file: str = "", image_key: str = "image", label_key: str = "label") -> EvalData:
    """Labelled evaluation batches for this process, padded (``mask`` False) so every process runs as many."""
    tf = import_tf()
    src = resolve_source(source, data_dir, split, allow_folder=True)
    if src.kind == "folder":
        root = src.root
        label_names = sorted(d.rstrip("/") for d in tf.io.gfile.listdir(root)
                             if tf.io.gfile.isdir(os.path.join(root, d)))
        if not label_names:
            raise DataError(f"{root} has no class folders", where=root, fix="lay it out as SPLIT/<class>/*.jpg")
        items = []
        for label, name in enumerate(label_names):
            for fn in sorted(tf.io.gfile.listdir(os.path.join(root, name))):
                if fn.lower().endswith(IMAGE_EXTENSIONS):
                    items.append((os.path.join(root, name, fn), label))
        if not items:
            raise DataError(f"no images under {root}", where=root)
        if not class_names_file:
            for cand in (os.path.join(root, "class_names.txt"), os.path.join(os.path.dirname(root.rstrip("/")),
                                                                              "class_names.txt")):
                if tf.io.gfile.exists(cand):
                    class_names_file = cand
                    break
        n_total = len(items)
        mine = items[process_index::process_count]
        paths = [p for p, _ in mine]
        labels = np.array([lbl for _, lbl in mine], np.int32)
        ds = tf.data.Dataset.from_tensor_slices((paths, labels)).map(
            lambda p, lbl: {"bytes": tf.io.read_file(p), "label": lbl})
        n_local_max = math.ceil(n_total / process_count)
        description = src.description
    else:
        if src.kind != "tfds":
            raise UsageError(f"{src.description}: zero-shot evaluation reads a TFDS classification dataset or an "
                             "image folder, not raw TFRecords", where="--config.eval.source")
        import tensorflow_datasets as tfds  # TFDS sources only: importing it takes seconds

        info = src.builder.info
        if not split:
            split = next((s for s in ("validation", "val", "test", "train") if s in info.splits), "")
        if split not in info.splits:
            raise UsageError(f"{src.description} has no split {split!r} (it has: {', '.join(info.splits.keys())})",
                             where="--config.eval.split")
        for k in (image_key, label_key):
            if k not in info.features:
                raise DataError(f"{src.description} has no feature {k!r} (it has: {', '.join(info.features.keys())})",
                                where="--config.eval.image_key/label_key")
        label_names = list(info.features[label_key].names)
        if not class_names_file:  # what `build-tfds --mode image-folder` stores next to the dataset
            for fn in ("class_names.txt", "class_names.json"):
                cand = os.path.join(str(src.builder.data_dir), fn)
                if tf.io.gfile.exists(cand):
                    class_names_file = cand
                    break
        n_total = info.splits[split].num_examples
        psplit = tfds.split_for_jax_process(split, process_index=process_index, process_count=process_count)
        ds = src.builder.as_dataset(split=psplit, shuffle_files=False,
                                    decoders={image_key: tfds.decode.SkipDecoding()})
        ds = ds.map(lambda ex: {"bytes": ex[image_key], "label": tf.cast(ex[label_key], tf.int32)})
        n_local_max = math.ceil(n_total / process_count)
        description = f"{src.description} split {split}"
    stored = _stored_class_names(src, len(label_names)) if not class_names_file else None
    class_names = stored or prompt_names(label_names, class_names_file, where=description)
    num_batches = max(1, math.ceil(n_local_max / batch_size))

    def prep(ex):
        return {"image": decode_center_crop(ex["bytes"], image_size, crop_fraction), "label": ex["label"],
                "mask": tf.constant(True)}

    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    pad = tf.data.Dataset.from_tensors({"image": tf.zeros([image_size, image_size, 3], tf.uint8),
                                        "label": tf.constant(-1, tf.int32), "mask": tf.constant(False)}).repeat()
    ds = ds.concatenate(pad).take(num_batches * batch_size).batch(batch_size, drop_remainder=True)
    return EvalData(ds.prefetch(2), num_batches, n_total, label_names, class_names, description)
