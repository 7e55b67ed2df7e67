"""Benchmark of the reference FLIP trainer (issue #6).

1. Training speed: steps/s of the same model at image mask ratios 0, 0.5 and 0.75 in one run, and the speed-ups
   (FLIP's targets: >= 1.8x at 0.5, >= 3.0x at 0.75).  The default model is one whose image tower dominates, as in
   FLIP's large models: 224 px images in 16 px patches (196 patches), a 192-wide 6-layer ViT, a 128-wide 2-layer
   text tower.  Batches are synthetic and already on the devices, so this measures the model step only.  The
   ratios are timed in interleaved rounds and the median is reported, so a machine shared with other work biases
   all three alike.  ``--config flip_b16 --config.batch_size=...`` benchmarks a bundled config instead.
   Each ratio also gets its model FLOPs per step (analytic, train_ref/flops.py: matmuls, backward = 2x forward,
   no remat), the TFLOP/s achieved and the model FLOPs utilisation (MFU) against the device's peak (a table of
   known accelerators, or ``--peak-tflops``).  On a GPU/TPU host, for FLIP B/16:

    python bench/train.py --skip-pipeline --config flip_b16 --config.batch_size=256 --config.model.dtype=bfloat16

2. Input pipeline (issue #19): images/s per CPU core of the full training pipeline (TFRecord read, shuffle,
   random-resized crop decoding only the crop, flip, resize, tokenize, batch) next to the plain crop-decode rate of
   the same images and the same crop windows (``decode_and_crop_jpeg`` at full scale and nothing else; target
   >= 0.9x), both on one thread.  The images are JPEGs with a 480 px short side (what img2dataset writes),
   rendered by the demo generator.  In the same interleaved rounds: the pipeline at 84 and 112 px (CLIPA's
   low-resolution stages) from those images and from a 160 px copy made by ``reshard --image-size 160``'s encoder
   (target >= 4x), and the plain crop-decode of the copy (at 112 px the copy's pipeline decodes every crop at full
   scale, so that rate over the 480 px pipeline's is about the highest ratio reachable).  Quality: mean PSNR over
   the images of each pipeline output (no flip) against an antialiased resize of the full-resolution decode of the
   window it covers, next to the previous method's (full-scale crop decode + bilinear resize without antialiasing,
   against its window) and, at the low-resolution sizes, the output from the copy against the same region of the
   full-resolution image.

    PYTHONPATH=src .venv/bin/python bench/train.py                # both parts, ~3-5 min on 2 CPU cores
    PYTHONPATH=src .venv/bin/python bench/train.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))


def bench_config(args):
    from laionprep.train_ref import config_lib

    if args.config:  # a bundled recipe's schedule (billions of samples) is irrelevant to a step's speed
        c = config_lib.load_config(args.config)
        c.update(num_train_steps=10_000, warmup_steps=10)
        config_lib.apply_overrides(c, config_lib.parse_overrides(args.overrides))
        return c
    c = config_lib.load_config("flip_tiny")
    c.model.dtype = args.dtype
    c.model.embed_dim = 128
    c.model.image.update(image_size=224, patch_size=16, width=192, depth=6, num_heads=3, mlp_dim=768)
    c.model.text.update(width=128, depth=2, num_heads=2, mlp_dim=512, vocab_size=1024)
    c.tokenizer.max_len = 32
    c.batch_size = args.batch
    c.num_train_steps = 10_000
    c.warmup_steps = 10
    config_lib.apply_overrides(c, config_lib.parse_overrides(args.overrides))
    return c


def bench_model(args) -> dict:
    import jax
    import numpy as np

    from _common import synthetic_batch
    from laionprep.train_ref import flops, models, runtime, train

    cfg = bench_config(args)
    mesh = runtime.make_mesh()
    B, S, T = cfg.batch_size, cfg.model.image.image_size, cfg.tokenizer.max_len
    vocab = cfg.model.text.vocab_size or 1024
    batch = synthetic_batch(B, S, T, vocab, mesh, min_len=4)
    L = (S // cfg.model.image.patch_size) ** 2
    runs = {}
    for ratio in args.ratios:
        c = cfg.copy_and_resolve_references()
        c.model.image.mask_ratio = ratio
        model = models.build_model(c.model, vocab, T)
        state, step = train.fresh_state_and_step(model, c, mesh)
        t0 = time.time()
        for _ in range(2):  # compile + warm up
            state, m = step(state, batch)
        jax.block_until_ready(m)
        runs[ratio] = {"step": step, "state": state, "rates": [], "compile_s": time.time() - t0,
                       "kept": models.num_kept(L, ratio), "flops": flops.train_step_flops(c)["total"]}
        n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state["params"]))
        print(f"  mask {ratio:.2f}: compiled ({runs[ratio]['compile_s']:.1f}s), {runs[ratio]['kept']}/{L} patches, "
              f"{n_params / 1e6:.2f}M params", flush=True)
    for r in range(args.rounds):
        for ratio in args.ratios:
            run = runs[ratio]
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                run["state"], m = run["step"](run["state"], batch)
            jax.block_until_ready(m)
            run["rates"].append(args.steps / (time.perf_counter() - t0))
            run["cpu_rates"] = run.get("cpu_rates", []) + [args.steps / (time.process_time() - c0)]
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{ratio:.2f}: {runs[ratio]['rates'][-1]:.3f} steps/s"
                                                             for ratio in args.ratios), flush=True)
    base = statistics.median(runs[args.ratios[0]]["rates"])
    base_cpu = statistics.median(runs[args.ratios[0]]["cpu_rates"])
    out = {"batch_size": B, "image_size": S, "patch_size": cfg.model.image.patch_size,
           "image_width": cfg.model.image.width, "image_depth": cfg.model.image.depth,
           "text_width": cfg.model.text.width, "text_depth": cfg.model.text.depth, "dtype": cfg.model.dtype,
           "devices": jax.device_count(), "platform": jax.devices()[0].platform,
           "device_kind": jax.devices()[0].device_kind, "ratios": {}}
    peak = flops.peak_flops(out["device_kind"], args.peak_tflops)
    out["peak_flops_per_device"] = peak
    for ratio in args.ratios:
        med = statistics.median(runs[ratio]["rates"])
        med_cpu = statistics.median(runs[ratio]["cpu_rates"])
        out["ratios"][str(ratio)] = {"steps_per_s": med, "images_per_s": med * B, "speedup": med / base,
                                     "steps_per_cpu_s": med_cpu, "speedup_cpu_time": med_cpu / base_cpu,
                                     "kept_patches": runs[ratio]["kept"], "all_rates": runs[ratio]["rates"],
                                     "model_flops_per_step": runs[ratio]["flops"],
                                     "model_tflops_per_s": runs[ratio]["flops"] * med / 1e12,
                                     "mfu": flops.mfu(runs[ratio]["flops"], med, jax.device_count(), peak),
                                     "all_cpu_rates": runs[ratio]["cpu_rates"]}
    return out


def _db(got, ref) -> float:
    """PSNR (dB) of a uint8 image against a float reference in [0, 255]."""
    import numpy as np

    mse = float(np.mean((np.asarray(got, np.float32) - np.asarray(ref, np.float32)) ** 2))
    return float(10 * np.log10(255 ** 2 / max(mse, 1e-6)))


def _psnr(files: list[str], image_size: int, old: bool = False) -> float:
    """Mean PSNR (dB) over the images of the pipeline's random crop (no flip), against an antialiased resize of the
    full-resolution decode of the window the output covers (``snap_window`` of the DCT scale).  ``old``: the method
    before issue #19 (full-scale crop decode, bilinear resize of the uint8 crop without antialiasing)."""
    import numpy as np

    from laionprep._env import import_tf
    from laionprep.train_ref import input_pipeline as ip

    tf = import_tf()
    spec = {"jpg": tf.io.FixedLenFeature([], tf.string)}
    area, aspect = (0.5, 1.0), (3 / 4, 4 / 3)
    vals = []
    for i, rec in enumerate(tf.data.TFRecordDataset(files)):
        data = tf.io.parse_single_example(rec, spec)["jpg"]
        seed = tf.random.experimental.stateless_fold_in(tf.constant([0, 0], tf.int64), i)
        win = ip._crop_window(tf.image.extract_jpeg_shape(data), tf.random.experimental.stateless_split(seed, 2)[0],
                              area, aspect)
        if old:
            out = tf.raw_ops.ResizeBilinear(images=tf.image.decode_and_crop_jpeg(data, win, channels=3)[None],
                                            size=[image_size, image_size], half_pixel_centers=True)[0]
            got = tf.cast(out + 0.5, tf.uint8)
        else:
            got = ip.decode_random_crop(data, seed, image_size, area, aspect, flip=False)
            win = ip.snap_window(win, ip.dct_scale(win, image_size)[0])
        full = tf.cast(tf.image.decode_and_crop_jpeg(data, win, channels=3), tf.float32)
        ref = tf.clip_by_value(tf.round(tf.image.resize(full, [image_size, image_size], antialias=True)), 0, 255)
        vals.append(_db(got, ref))
    return float(np.mean(vals))


def _psnr_copy(files: list[str], copy_files: list[str], image_size: int) -> float:
    """Mean PSNR (dB) of the pipeline's random crop (no flip) of the low-resolution copy against an antialiased
    resize of the same region of the full-resolution image: the copy's window in continuous coordinates, scaled by
    the sides' ratio (the copy is a resize of the whole image), resampled with ``ScaleAndTranslate``'s antialiased
    triangle kernel, as ``tf.image.resize(antialias=True)`` does."""
    import numpy as np

    from laionprep._env import import_tf
    from laionprep.train_ref import input_pipeline as ip

    tf = import_tf()
    spec = {"jpg": tf.io.FixedLenFeature([], tf.string)}
    area, aspect = (0.5, 1.0), (3 / 4, 4 / 3)
    vals = []
    pairs = zip(tf.data.TFRecordDataset(files), tf.data.TFRecordDataset(copy_files))  # the same records, in order
    for i, (rec, low_rec) in enumerate(pairs):
        data, low = (tf.io.parse_single_example(r, spec)["jpg"] for r in (rec, low_rec))
        seed = tf.random.experimental.stateless_fold_in(tf.constant([0, 0], tf.int64), i)
        got = ip.decode_random_crop(low, seed, image_size, area, aspect, flip=False)
        win = ip._crop_window(tf.image.extract_jpeg_shape(low), tf.random.experimental.stateless_split(seed, 2)[0],
                              area, aspect)
        win = ip.snap_window(win, ip.dct_scale(win, image_size)[0]).numpy().astype(np.float64)
        full = tf.cast(tf.image.decode_jpeg(data, channels=3), tf.float32)
        ratio = np.array(full.shape[:2], np.float64) / tf.image.extract_jpeg_shape(low).numpy()[:2]
        y0, x0, h, w = win[0] * ratio[0], win[1] * ratio[1], win[2] * ratio[0], win[3] * ratio[1]
        scale = np.array([image_size / h, image_size / w], np.float32)
        ref = tf.raw_ops.ScaleAndTranslate(images=full[None], size=[image_size, image_size], scale=scale,
                                           translation=np.array([-y0, -x0], np.float32) * scale,
                                           kernel_type="triangle", antialias=True)[0]
        ref = tf.clip_by_value(tf.round(ref), 0, 255)
        vals.append(_db(got, ref))
    return float(np.mean(vals))


def bench_pipeline(args) -> dict:
    from _common import low_res_copy, one_thread, pipeline_rate, write_bench_images
    from laionprep._env import import_tf
    from laionprep.train_ref import input_pipeline as ip
    from laionprep.train_ref import tokenizer as tokenizer_lib

    tf = import_tf()
    tmp = tempfile.mkdtemp(prefix="flip_bench_")
    files = write_bench_images(tmp, args.pipeline_images)
    low = os.path.join(tmp, f"copy{args.copy_size}")
    low_files = low_res_copy(files, low, args.copy_size)
    tok = tokenizer_lib.Tokenizer(tokenizer_lib.learn_vocab(tmp, 300), 32)
    S, B = args.pipeline_image_size, args.pipeline_batch
    area, aspect = (0.5, 1.0), (3 / 4, 4 / 3)

    def full(threads, npc, source=tmp, size=S):
        return ip.train_dataset(source, tok, image_size=size, batch_size=B, seed=0, shuffle_buffer=256,
                                num_parallel_calls=npc, threads=threads)

    def plain(threads=1, source=files):
        """The same records and crop windows, decoded with decode_and_crop_jpeg and nothing else."""
        spec = {"jpg": tf.io.FixedLenFeature([], tf.string)}
        base = tf.constant([0, 0], tf.int64)

        def crop(i, rec):
            data = tf.io.parse_single_example(rec, spec)["jpg"]
            seed = tf.random.experimental.stateless_split(tf.random.experimental.stateless_fold_in(base, i), 2)[0]
            win = ip._crop_window(tf.image.extract_jpeg_shape(data), seed, area, aspect)
            img = tf.image.decode_and_crop_jpeg(data, win, channels=3)
            return tf.reduce_sum(tf.cast(img[::97, ::97, 0], tf.int32))  # touch the pixels; nothing to move

        ds = tf.data.TFRecordDataset(source).repeat().enumerate().map(crop, num_parallel_calls=1 if threads else None)
        ds = ds.batch(B).prefetch(2)
        return one_thread(ds) if threads else ds

    print("  PSNR against an antialiased full-resolution reference (dB): ", end="", flush=True)
    sizes = [S] + [s for s in args.low_res_sizes if s != S]
    psnr = {}
    for size in sizes:
        v = psnr[str(size)] = {"pipeline": _psnr(files, size), "previous_method": _psnr(files, size, old=True)}
        if size in args.low_res_sizes:
            v["copy"] = _psnr_copy(files, low_files, size)
        copy = f", from the {args.copy_size} px copy {v['copy']:.2f}" if "copy" in v else ""
        print(f"{size} px {v['pipeline']:.2f} (previous {v['previous_method']:.2f}{copy})  ", end="", flush=True)
    print(flush=True)

    # Whole passes over the images: the warm-up is one pass and the timed window a whole number of passes, so both
    # sides decode every image equally often (a window of 1.5 passes decodes some images twice and others once, and
    # the two sides would pick different ones: on these images that alone moved the ratio by ~0.1).
    per_pass = args.pipeline_images // B
    if per_pass * B != args.pipeline_images:
        raise SystemExit(f"--pipeline-images ({args.pipeline_images}) must be a multiple of --pipeline-batch ({B})")
    n = max(1, round(args.pipeline_batches / per_pass)) * per_pass
    makers = {"plain": plain, "full": lambda: full(1, 1)}
    if args.low_res_sizes:  # the copy's plain crop-decode: ~the floor of its pipeline where that decodes full-scale
        makers[f"plain@{args.copy_size}"] = lambda: plain(1, low_files)
    for size in args.low_res_sizes:
        makers[f"{size}@480"] = lambda size=size: full(1, 1, tmp, size)
        makers[f"{size}@{args.copy_size}"] = lambda size=size: full(1, 1, low, size)
    rates = {k: [] for k in makers}
    paired = []  # full / plain within one round: both sides see the same machine state
    low_paired = {size: [] for size in args.low_res_sizes}  # copy / 480 px source within one round
    ceiling = {size: [] for size in args.low_res_sizes}  # the copy's plain crop-decode / 480 px source
    for r in range(args.pipeline_rounds):
        order = list(makers) if r % 2 == 0 else list(makers)[::-1]  # alternate, so drift cancels
        for k in order:
            rates[k].append(pipeline_rate(makers[k](), n, B, warmup=per_pass))
        paired.append(rates["full"][-1][0] / rates["plain"][-1][0])
        for size in args.low_res_sizes:
            low_paired[size].append(rates[f"{size}@{args.copy_size}"][-1][0] / rates[f"{size}@480"][-1][0])
            ceiling[size].append(rates[f"plain@{args.copy_size}"][-1][0] / rates[f"{size}@480"][-1][0])
        print(f"  round {r + 1}/{args.pipeline_rounds}: one thread: pipeline {rates['full'][-1][0]:.0f} img/CPU-s "
              f"({rates['full'][-1][1]:.0f} img/s wall), plain crop-decode {rates['plain'][-1][0]:.0f} img/CPU-s "
              f"({rates['plain'][-1][1]:.0f} img/s wall): {paired[-1]:.2f}x; "
              + ", ".join(f"{size} px {rates[f'{size}@480'][-1][0]:.0f} -> "
                          f"{rates[f'{size}@{args.copy_size}'][-1][0]:.0f} ({low_paired[size][-1]:.1f}x)"
                          for size in args.low_res_sizes), flush=True)
    all_cores = pipeline_rate(full(0, -1), n * 2, B, warmup=per_pass)[1]
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in rates.items()}
    low_res = {str(size): {"source_480_images_per_cpu_s": med[f"{size}@480"][0],
                           f"copy_{args.copy_size}_images_per_cpu_s": med[f"{size}@{args.copy_size}"][0],
                           "ratio": statistics.median(low_paired[size]), "round_ratios": low_paired[size],
                           f"copy_{args.copy_size}_plain_crop_decode_images_per_cpu_s":
                               med[f"plain@{args.copy_size}"][0],
                           "ceiling_decode_only": statistics.median(ceiling[size])}
               for size in args.low_res_sizes}
    shutil.rmtree(tmp, ignore_errors=True)
    return {"images": args.pipeline_images, "short_side": 480, "image_size": S, "batch": B, "timed_batches": n,
            "pipeline_images_per_cpu_s": med["full"][0], "plain_crop_decode_images_per_cpu_s": med["plain"][0],
            "ratio": statistics.median(paired), "ratio_of_medians": med["full"][0] / med["plain"][0],
            "round_ratios": paired,
            "pipeline_images_per_s_one_thread_wall": med["full"][1],
            "plain_crop_decode_images_per_s_one_thread_wall": med["plain"][1],
            "ratio_wall": med["full"][1] / med["plain"][1], "copy_size": args.copy_size, "low_res": low_res,
            "psnr_db": psnr,
            "pipeline_images_per_s_all_cores": all_cores, "cores": os.cpu_count(), "all_rounds": rates}


# ------------------------------------------------------------------------------------------------ --grain
def _tree_cpu() -> float:
    """CPU seconds of this process and its live children (Grain's worker processes)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for c in me.children(recursive=True):
        try:
            total += sum(c.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def _rates(it, n_batches: int, batch: int, *, warmup: int, settle_s: float = 1.0) -> tuple[float, float]:
    """(images per CPU-second of the whole process tree, images/s wall) of an iterator of batches (tf.data or Grain,
    whose worker processes count).  Wall: ``n_batches`` taken straight after a continuous warm-up, when the
    producers are the bottleneck and the prefetch buffers hold nothing extra (a window that starts with full
    buffers gets those batches for free: with a few batches per window that inflated Grain's rate ~5x).  CPU: as
    _common.pipeline_rate, a window that opens and closes with the buffers full, so it holds exactly that work."""
    for _ in range(warmup):
        next(it)
    w0 = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    w1 = time.perf_counter()
    time.sleep(settle_s)
    c0 = _tree_cpu()
    for _ in range(n_batches):
        next(it)
    time.sleep(settle_s)
    c1 = _tree_cpu()
    return n_batches * batch / (c1 - c0), n_batches * batch / (w1 - w0)


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def bench_grain(args) -> dict:
    """Grain (ArrayRecord, global shuffle, worker processes) next to tf.data (TFRecord, one thread) on the same
    images and transforms: images/s per core and wall clock, and what a checkpoint of each loader's position costs."""
    from laionprep import arrayrecord
    from laionprep._env import import_tf
    from laionprep.tfrecord import read_records
    from laionprep.train_ref import grain_pipeline as gp
    from laionprep.train_ref import input_pipeline as ip
    from laionprep.train_ref import tokenizer as tokenizer_lib

    from _common import write_bench_images

    tf = import_tf()
    tmp = tempfile.mkdtemp(prefix="grain_bench_")
    files = write_bench_images(os.path.join(tmp, "images"), args.pipeline_images)
    # Both sources hold --grain-records records (the images repeated): Grain's index shuffle costs ~235 us per
    # index over 128 records but ~7 us over 16k and ~4 us from 64k on, so a 128-record source measures a cost no
    # real dataset pays.  The same records as TFRecord (tf.data) and as ArrayRecord shards (Grain).
    reps = max(1, args.grain_records // args.pipeline_images)
    ar_dir = os.path.join(tmp, "ar")
    os.makedirs(os.path.join(tmp, "tfrecord"))
    os.makedirs(ar_dir)
    for i, f in enumerate(files):
        recs = list(read_records(f))
        w = arrayrecord.ArrayRecordFileWriter(os.path.join(ar_dir, f"b-train-{i:05d}-of-{len(files):05d}"
                                                                   ".array_record"))
        with tf.io.TFRecordWriter(os.path.join(tmp, "tfrecord", os.path.basename(f))) as tw:
            for _ in range(reps):
                for r in recs:
                    w.write(r)
                    tw.write(r)
        w.close()
    print(f"  both sources: {reps * args.pipeline_images} records ({args.pipeline_images} images x {reps})",
          flush=True)
    tok = tokenizer_lib.Tokenizer(tokenizer_lib.learn_vocab(os.path.join(tmp, "images"), 300), 32)
    S, B = args.pipeline_image_size, args.pipeline_batch
    per_pass = args.pipeline_images // B
    n = max(1, round(args.pipeline_batches / per_pass)) * per_pass

    def tfdata():
        return ip.train_dataset(os.path.join(tmp, "tfrecord", "*.tfrecord"), tok, image_size=S, batch_size=B, seed=0,
                                shuffle_buffer=args.grain_shuffle_buffer, num_parallel_calls=1, threads=1)

    def grain(workers):
        return gp.GrainLoader(os.path.join(ar_dir, "*.array_record"), tok, image_size=S, batch_size=B, seed=0,
                              workers=workers)

    kinds = ["tf.data"] + [f"grain_{w}" for w in args.grain_workers]
    rates = {k: [] for k in kinds}
    loaders = {f"grain_{w}": grain(w) for w in args.grain_workers}  # started once: worker start-up is not timed
    for k, ld in loaders.items():
        for _ in range(per_pass):
            next(ld)
    for r in range(args.grain_rounds):
        for k in (kinds if r % 2 == 0 else kinds[::-1]):
            # warm-up: as many batches as are timed, so the buffers a loader filled while the others were timed are
            # drained (2 Grain workers measured 3.8x tf.data's one thread with a 4-batch warm-up: beyond 2 cores)
            if k == "tf.data":
                rates[k].append(_rates(iter(tfdata()), n, B, warmup=max(per_pass, n)))
            else:  # and at least what its buffers hold: per worker Grain's buffer and the worker's read-ahead
                ld = loaders[k]
                held = ld.workers * 2 * ld.prefetch + ld.prefetch + 2
                rates[k].append(_rates(ld, n, B, warmup=max(per_pass, n, held)))
        print(f"  round {r + 1}/{args.grain_rounds}: " + ", ".join(
            f"{k} {rates[k][-1][0]:.0f} img/CPU-s {rates[k][-1][1]:.0f} img/s" for k in kinds), flush=True)
    state = next(iter(loaders.values())).state() if loaders else gp.LoaderState(0, 0, 0, args.pipeline_images, B)
    for ld in loaders.values():
        ld.close()
    # the tf.data position checkpoint: the iterator (shuffle buffer of encoded records + prefetched batches)
    it = iter(tfdata())
    for _ in range(per_pass):
        next(it)
    ck = os.path.join(tmp, "tfdata_ckpt")
    tf.train.Checkpoint(iterator=it).write(os.path.join(ck, "process_0"))
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in rates.items()}
    ref = med["tf.data"]
    out = {"images": args.pipeline_images, "records": reps * args.pipeline_images, "image_size": S, "batch": B,
           "timed_batches": n, "cores": os.cpu_count(),
           "tf_data_images_per_cpu_s": ref[0], "tf_data_images_per_s": ref[1],
           "tf_data_shuffle_buffer": args.grain_shuffle_buffer, "tf_data_checkpoint_bytes": _dir_bytes(ck),
           "grain_state_bytes": gp.state_bytes(state), "all_rounds": rates}
    for w in args.grain_workers:
        g = med[f"grain_{w}"]
        out[f"grain_{w}_workers"] = {"images_per_cpu_s": g[0], "images_per_s": g[1],
                                     "per_core_vs_tf_data": g[0] / ref[0], "wall_vs_tf_data_one_thread": g[1] / ref[1]}
    try:
        out["load_average_at_end"] = os.getloadavg()
    except OSError:
        pass
    shutil.rmtree(tmp, ignore_errors=True)  # ~2.6 GB at the default --grain-records
    return out


def print_grain(g: dict) -> None:
    print(f"Grain vs tf.data ({g['image_size']}px crops, batch {g['batch']}, {g['images']} 480px-short-side JPEGs, "
          f"{g['cores']} cores):")
    print(f"  tf.data, one thread: {g['tf_data_images_per_cpu_s']:.0f} img/CPU-s, "
          f"{g['tf_data_images_per_s']:.0f} img/s")
    for k, v in g.items():
        if k.startswith("grain_") and k.endswith("_workers"):
            w = int(k.split("_")[1])
            target = {1: ("per core", 0.9, v["per_core_vs_tf_data"]), 2: ("wall", 1.7, v["wall_vs_tf_data_one_thread"])}
            line = (f"  grain, {w} worker process(es): {v['images_per_cpu_s']:.0f} img/CPU-s "
                    f"({v['per_core_vs_tf_data']:.2f}x per core), {v['images_per_s']:.0f} img/s "
                    f"({v['wall_vs_tf_data_one_thread']:.2f}x tf.data's one thread)")
            if w in target:
                what, t, got = target[w]
                line += f"  [target {what} >= {t}x: {'met' if got >= t else 'NOT met'}]"
            print(line)
    print(f"  position checkpoint: grain {g['grain_state_bytes']} bytes; tf.data iterator "
          f"{g['tf_data_checkpoint_bytes'] / 1e6:.1f} MB at shuffle_buffer {g['tf_data_shuffle_buffer']}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="global batch of the model benchmark")
    ap.add_argument("--dtype", default="float32", help="compute dtype of the default benchmark model")
    ap.add_argument("--steps", type=int, default=3, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.0, 0.5, 0.75])
    ap.add_argument("--peak-tflops", type=float, default=0.0,
                    help="peak TFLOP/s of one device for MFU (default: a table of known accelerators; none for CPUs)")
    ap.add_argument("--config", default="", help="benchmark a config file / bundled config instead of the default")
    ap.add_argument("--pipeline-images", type=int, default=256)
    ap.add_argument("--pipeline-batches", type=int, default=32,
                    help="timed batches per round (rounded to whole passes over --pipeline-images)")
    ap.add_argument("--pipeline-rounds", type=int, default=9)
    ap.add_argument("--pipeline-batch", type=int, default=32)
    ap.add_argument("--pipeline-image-size", type=int, default=224)
    ap.add_argument("--low-res-sizes", type=int, nargs="*", default=[84, 112],
                    help="pipeline sizes timed from the 480 px images and from the low-resolution copy")
    ap.add_argument("--copy-size", type=int, default=160, help="short side of the low-resolution copy")
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--json", default="", help="also write the results here")
    ap.add_argument("--grain", action="store_true",
                    help="only the Grain loader next to tf.data (per core, worker processes, checkpoint sizes)")
    ap.add_argument("--grain-workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--grain-rounds", type=int, default=3)
    ap.add_argument("--grain-records", type=int, default=16384,
                    help="records in each source, the images repeated (Grain's index shuffle is slow below ~10k)")
    ap.add_argument("--grain-shuffle-buffer", type=int, default=256,
                    help="tf.data's example shuffle buffer in the comparison (the trainer's default is 10000)")
    args, rest = ap.parse_known_args(argv)
    args.overrides = rest
    from _common import run_info

    res = run_info()
    if args.grain:
        print("Grain loader vs tf.data:", flush=True)
        res["grain"] = bench_grain(args)
        print()
        print(f"FLIP trainer benchmark (--grain), {res['date']}, {res['machine']}, load average at start "
              f"{res.get('load_average_at_start')}")
        print_grain(res["grain"])
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=2)
        return res
    if not args.skip_model:
        print("training steps/s by mask ratio:", flush=True)
        m = bench_model(args)
        res["model"] = m
    if not args.skip_pipeline:
        print("input pipeline:", flush=True)
        res["pipeline"] = bench_pipeline(args)
    print()
    print(f"FLIP trainer benchmark, {res['date']}, {res['machine']}")
    if "model" in res:
        m = res["model"]
        print(f"model: ViT {m['image_size']}px/{m['patch_size']} width {m['image_width']} depth {m['image_depth']}, "
              f"text width {m['text_width']} depth {m['text_depth']}, batch {m['batch_size']}, {m['dtype']}, "
              f"{m['devices']} {m['platform']} device(s)")
        targets = {"0.5": 1.8, "0.75": 3.0}
        for r, v in m["ratios"].items():
            t = targets.get(r)
            print(f"  mask {float(r):.2f} ({v['kept_patches']:3d} patches): {v['steps_per_s']:.3f} steps/s "
                  f"({v['images_per_s']:.1f} img/s)  speed-up {v['speedup']:.2f}x"
                  + (f"  (target >= {t}x: {'met' if v['speedup'] >= t else 'NOT met'})" if t else "")
                  + f"   [by CPU time: {v['steps_per_cpu_s']:.3f} steps/CPU-s, {v['speedup_cpu_time']:.2f}x]")
            print(f"      model FLOPs {v['model_flops_per_step'] / 1e12:.3f} TFLOP/step, {v['model_tflops_per_s']:.3f} "
                  f"TFLOP/s achieved, MFU " + (f"{100 * v['mfu']:.1f}% of {m['devices']} x "
                                               f"{m['peak_flops_per_device'] / 1e12:g} TFLOP/s"
                                               if v["mfu"] is not None else
                                               f"n/a (no peak known for {m['device_kind']!r}: --peak-tflops)"))
    if "pipeline" in res:
        from laionprep.train_ref.input_pipeline import MIN_SCALED_FRACTION

        p = res["pipeline"]
        print(f"input pipeline ({p['short_side']}px-short-side JPEGs -> {p['image_size']}px, batch {p['batch']}):")
        print(f"  per core: {p['pipeline_images_per_cpu_s']:.0f} img/CPU-s  vs plain crop-decode "
              f"{p['plain_crop_decode_images_per_cpu_s']:.0f} img/CPU-s; median of the paired rounds "
              f"{p['ratio']:.2f}x (target >= 0.9x: {'met' if p['ratio'] >= 0.9 else 'NOT met'}; rounds "
              f"{min(p['round_ratios']):.2f}-{max(p['round_ratios']):.2f}x, ratio of the medians "
              f"{p['ratio_of_medians']:.2f}x)")
        print(f"  one thread, wall clock: {p['pipeline_images_per_s_one_thread_wall']:.0f} vs "
              f"{p['plain_crop_decode_images_per_s_one_thread_wall']:.0f} img/s = {p['ratio_wall']:.2f}x")
        print(f"  all {p['cores']} cores (AUTOTUNE), wall clock: {p['pipeline_images_per_s_all_cores']:.0f} img/s")
        for size, v in p["low_res"].items():
            c = p["copy_size"]
            print(f"  {size} px per core: {v['source_480_images_per_cpu_s']:.0f} img/CPU-s from the 480 px images, "
                  f"{v[f'copy_{c}_images_per_cpu_s']:.0f} from the {c} px copy: {v['ratio']:.2f}x (target >= 4x: "
                  f"{'met' if v['ratio'] >= 4 else 'NOT met'}; rounds {min(v['round_ratios']):.2f}-"
                  f"{max(v['round_ratios']):.2f}x)")
            plain_rate = v[f"copy_{c}_plain_crop_decode_images_per_cpu_s"]
            # a ceiling only where no crop of the copy is big enough for a 1/2-scale decode (dct_scale's 3/4 rule)
            full_scale = c * MIN_SCALED_FRACTION[1] < 2 * MIN_SCALED_FRACTION[0] * int(size)
            print(f"    the copy's plain crop-decode (read, parse, window, full-scale decode; nothing else): "
                  f"{plain_rate:.0f} img/CPU-s = {v['ceiling_decode_only']:.2f}x the 480 px pipeline"
                  + (": about the most the copy's pipeline can reach, as it decodes every crop of the copy at full "
                     "scale" if full_scale else ""))
        for size, v in p["psnr_db"].items():
            copy = f"; from the {p['copy_size']} px copy: {v['copy']:.2f} dB" if "copy" in v else ""
            print(f"  PSNR at {size} px vs an antialiased full-resolution reference: {v['pipeline']:.2f} dB "
                  f"(previous method: {v['previous_method']:.2f} dB{copy})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
