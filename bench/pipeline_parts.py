"""Where the input pipeline's time goes, per image, from the 480 px images and from a low-resolution copy (#19).

The training pipeline's per-batch function (``input_pipeline.train_batch``: one ``tf.map_fn`` over the batch's
serialized records) is cut after each of its steps, and each cut is timed as one graph call per batch, on one
thread, for the 480 px images and for the copy made by ``reshard --image-size``'s encoder:

  parse      ``parse_single_example`` of the record
  window     + the JPEG's shape and the random crop window
  decode     + the DCT-scaled decode of the window (``decode_jpeg_crop``)
  resize     + the bilinear resize to the output size (``decode_random_crop`` without the flip)
  flip       + the flip of half the images (``decode_random_crop``)
  batch      the whole ``train_batch`` (+ the batch's output tensors)

The ratio of a cut (480 px time over the copy's) bounds what any pipeline doing at least that cut's work can
reach: the full tf.data pipeline adds reading, shuffling, tokenizing and batching, the same per image on both
sides, and every added cost shared by both sides lowers the ratio.  At 112 px from a 160 px copy the ratio after
``resize`` is the most a pipeline that crops and resizes can reach.

    .venv/bin/python bench/pipeline_parts.py                       # 224, 112 and 84 px; ~1 min on 2 cores
    .venv/bin/python bench/pipeline_parts.py --sizes 112 --copy-size 128
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

CUTS = ("parse", "window", "decode", "resize", "flip", "batch")


def cut_functions(size: int) -> dict:
    """One ``tf.function`` per cut: serialized records ``[B]`` -> a scalar that touches the pixels made."""
    from laionprep._env import import_tf
    from laionprep.train_ref import input_pipeline as ip

    tf = import_tf()
    spec = {"jpg": tf.io.FixedLenFeature([], tf.string), "txt": tf.io.FixedLenFeature([], tf.string)}
    base = tf.constant([0, 0], tf.int64)
    area, aspect = (0.5, 1.0), (3 / 4, 4 / 3)

    def touch(img):  # a few pixels, so the work is not pruned and nothing is moved
        return tf.reduce_sum(tf.cast(img[::97, ::97, 0], tf.int32))

    def upto(cut):
        def one(args):
            counter, record = args
            jpg = tf.io.parse_single_example(record, spec)["jpg"]
            if cut == "parse":
                return tf.strings.length(jpg)
            seed = tf.random.experimental.stateless_fold_in(base, counter)
            if cut in ("resize", "flip"):
                return touch(ip.decode_random_crop(jpg, seed, size, area, aspect, flip=cut == "flip"))
            window = ip._crop_window(tf.image.extract_jpeg_shape(jpg), tf.random.experimental.stateless_split(
                seed, 2)[0], area, aspect)
            return tf.reduce_sum(window) if cut == "window" else touch(ip.decode_jpeg_crop(jpg, window, size))

        @tf.function
        def run(records):
            counters = tf.range(tf.shape(records)[0], dtype=tf.int64)
            return tf.map_fn(one, (counters, records), fn_output_signature=tf.int32, parallel_iterations=1)
        return run

    @tf.function
    def whole(records):
        counters = tf.range(tf.shape(records)[0], dtype=tf.int64)
        images, _ = ip.train_batch(records, counters, base, size, area, aspect, serialized=True)
        return tf.reduce_sum(tf.cast(images[:, ::97, ::97, 0], tf.int32))

    fns = {cut: upto(cut) for cut in CUTS[:-1]}
    fns["batch"] = whole
    return fns


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--images", type=_positive, default=128, help="480 px images (one batch of them per call)")
    ap.add_argument("--sizes", type=_positive, nargs="+", default=[224, 112, 84])
    ap.add_argument("--copy-size", type=_positive, default=160)
    ap.add_argument("--rounds", type=_positive, default=5)
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="parts_bench_")
    try:
        return _run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args, tmp: str) -> dict:
    from _common import low_res_copy, run_info, write_bench_images
    from laionprep import tfrecord
    from laionprep._env import import_tf

    tf = import_tf()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    res = run_info()
    files = write_bench_images(tmp, args.images)
    copy_files = low_res_copy(files, os.path.join(tmp, "copy"), args.copy_size)
    batches = {"480": tf.constant([r for p in files for r in tfrecord.read_records(p)]),
               "copy": tf.constant([r for p in copy_files for r in tfrecord.read_records(p)])}
    print(f"per image, one graph call per batch of {args.images}, one thread; median of {args.rounds} rounds; "
          f"{res['date']}, load average at start {res.get('load_average_at_start')}", flush=True)
    out = {}
    for size in args.sizes:
        fns = cut_functions(size)
        times = {(cut, src): [] for cut in CUTS for src in batches}
        for fn in fns.values():  # trace and warm every function first
            for x in batches.values():
                fn(x)
        for _ in range(args.rounds):  # interleaved, so a busy moment biases every cut alike
            for cut, fn in fns.items():
                for src, x in batches.items():
                    c0 = time.process_time()
                    fn(x)
                    times[(cut, src)].append((time.process_time() - c0) / args.images * 1e6)
        print(f"{size} px ({args.copy_size} px copy):  cut  480 px us  copy us  ratio")
        out[str(size)] = {}
        for cut in CUTS:
            big, small = (statistics.median(times[(cut, s)]) for s in ("480", "copy"))
            out[str(size)][cut] = {"us_480": big, "us_copy": small, "ratio": big / small}
            print(f"  {cut:>8} {big:9.0f} {small:8.0f} {big / small:6.2f}x", flush=True)
    res["parts"] = out
    return res


if __name__ == "__main__":
    main()
