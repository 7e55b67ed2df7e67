"""Helpers shared by the benchmark scripts (imported as ``_common``: a script's own folder is on ``sys.path``)."""
from __future__ import annotations


def synthetic_batch(batch: int, image_size: int, text_len: int, vocab: int, mesh, *, min_len: int = 3, seed: int = 0):
    """A random training batch already placed on ``mesh``'s devices: uint8 images ``[B, S, S, 3]`` and token ids
    ``[B, text_len]`` with random caption lengths in ``[min_len, text_len]`` (zero-padded), so a benchmark times
    the model step only."""
    import numpy as np

    from laionprep.train_ref import runtime

    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, vocab, size=(batch, text_len)).astype(np.int32)
    lengths = rng.integers(min_len, text_len + 1, size=batch)
    tokens[np.arange(text_len)[None, :] >= lengths[:, None]] = 0
    host = {"image": rng.integers(0, 256, size=(batch, image_size, image_size, 3), dtype=np.uint8), "text": tokens}
    return runtime.global_batch(host, runtime.batch_sharding(mesh))


def one_thread(ds):
    """``ds`` on one thread, deterministic: the per-core setting of the pipeline benchmarks."""
    from laionprep._env import import_tf

    tf = import_tf()
    o = tf.data.Options()
    o.threading.private_threadpool_size = 1
    o.threading.max_intra_op_parallelism = 1
    o.deterministic = True
    return ds.with_options(o)


def pipeline_rate(ds, n_batches: int, batch: int, *, warmup: int = 2, settle_s: float = 0.5) -> tuple[float, float]:
    """(items per CPU-second of this process, items per wall-clock second) of a tf.data pipeline over ``n_batches``.

    A pipeline works ahead of its consumer (prefetch and parallel-map buffers), so the CPU spent while ``n_batches``
    are taken is not the CPU it took to make them: the buffers may be empty at the start and full at the end, or
    the other way round (up to ~3 batches of error either way).  The CPU window therefore opens after the buffers
    have filled (``settle_s`` of sleep after the warm-up) and closes after they have filled again, so it holds
    exactly ``n_batches`` of work.  The wall-clock rate is the consumer's (no sleeps)."""
    import time

    it = iter(ds)
    for _ in range(warmup):
        next(it)
    time.sleep(settle_s)
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n_batches):
        next(it)
    w1 = time.perf_counter()
    time.sleep(settle_s)
    c1 = time.process_time()
    return n_batches * batch / (c1 - c0), n_batches * batch / (w1 - w0)


def run_info() -> dict:
    """When and where a benchmark ran: date, machine, JAX devices and version, load average at the start."""
    import os
    import platform
    import time

    import jax

    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()} {os.cpu_count()} cores, "
           f"{jax.devices()[0].device_kind} x{jax.device_count()}", "jax": jax.__version__}
    try:
        res["load_average_at_start"] = os.getloadavg()
    except OSError:
        pass
    return res


def write_bench_images(out_dir: str, n: int, short_side: int = 480) -> list[str]:
    """``n`` demo-generator images with a ``short_side`` px short side, as img2dataset TFRecords (2 files, with
    ``jpg`` and ``txt``) under ``out_dir/tfrecord/``: the input pipeline benchmarks' images."""
    import dataclasses
    import io
    import os
    import random

    from laionprep._env import import_tf
    from laionprep.testing import synth

    tf = import_tf()
    os.makedirs(os.path.join(out_dir, "tfrecord"), exist_ok=True)
    paths = [os.path.join(out_dir, "tfrecord", f"{k:05d}.tfrecord") for k in range(2)]
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    rnd = random.Random(0)
    size = 0
    for i in range(n):
        s = synth.sample(0, i)
        aspect = max(s.width, s.height) / min(s.width, s.height)
        long_side = round(short_side * aspect)
        w, h = (long_side, short_side) if s.width >= s.height else (short_side, long_side)
        s = dataclasses.replace(s, width=w, height=h)
        buf = io.BytesIO()
        synth.render(s).save(buf, format="JPEG", quality=90)
        size += buf.tell()
        feat = {"jpg": tf.train.Feature(bytes_list=tf.train.BytesList(value=[buf.getvalue()])),
                "txt": tf.train.Feature(bytes_list=tf.train.BytesList(value=[synth.caption(s, rnd).encode()]))}
        writers[i % 2].write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
    for w_ in writers:
        w_.close()
    print(f"  wrote {n} JPEGs, short side {short_side}px, mean {size / n / 1024:.0f} KiB", flush=True)
    return paths


def low_res_copy(files: list[str], out_dir: str, short_side: int) -> list[str]:
    """The records of ``files`` with their images re-encoded as ``reshard --image-size`` does (sharding.images),
    same file names under ``out_dir/tfrecord/``.  Returns the paths, in the order of ``files``."""
    from laionprep import tfrecord
    from laionprep.sharding.images import write_low_res_copy

    paths = write_low_res_copy(files, out_dir, short_side)
    sizes = [len(tfrecord.Example.FromString(r).features.feature["jpg"].bytes_list.value[0])
             for p in paths for r in tfrecord.read_records(p)]
    print(f"  wrote a {short_side} px copy: mean {sum(sizes) / len(sizes) / 1024:.1f} KiB", flush=True)
    return paths
