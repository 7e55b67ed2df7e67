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
