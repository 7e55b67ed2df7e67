"""Devices, sharding, multi-host start-up and run logging shared by training and evaluation."""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from laionprep._env import import_tf
from laionprep.errors import UsageError

DATA_AXIS = "data"
_DISTRIBUTED_DONE = False


def _multihost_env() -> bool:
    """Does the environment describe a multi-process job that jax.distributed can discover by itself?"""
    env = os.environ
    if env.get("JAX_COORDINATOR_ADDRESS") or env.get("COORDINATOR_ADDRESS"):
        return True
    if "," in env.get("TPU_WORKER_HOSTNAMES", ""):  # TPU pod slice: one process per host
        return True
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
        return True
    return False


def maybe_initialize_distributed(mode: Any = "auto") -> None:
    """``jax.distributed.initialize()`` for multi-host runs (TPU pod slices, SLURM/Open MPI GPU clusters).

    ``mode``: ``True`` always, ``False`` never, ``"auto"`` when the environment describes a multi-process job
    (``TPU_WORKER_HOSTNAMES`` with several hosts, ``JAX_COORDINATOR_ADDRESS``, ``SLURM_NTASKS`` > 1, Open MPI).
    Must run before anything touches the JAX backend.
    """
    global _DISTRIBUTED_DONE
    if _DISTRIBUTED_DONE:
        return
    if isinstance(mode, str):
        m = mode.strip().lower()
        on = _multihost_env() if m == "auto" else m in ("true", "1", "yes", "on")
    else:
        on = bool(mode)
    if on:
        kwargs = {}
        addr = os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("COORDINATOR_ADDRESS")
        if addr and os.environ.get("JAX_NUM_PROCESSES") and os.environ.get("JAX_PROCESS_ID"):
            kwargs = dict(coordinator_address=addr, num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                          process_id=int(os.environ["JAX_PROCESS_ID"]))
        jax.distributed.initialize(**kwargs)
    _DISTRIBUTED_DONE = True


def make_mesh(devices=None) -> Mesh:
    """A 1-D data-parallel mesh over every device of every process (or the given ones)."""
    devs = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devs.reshape(-1), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def state_shardings(abstract_state, mesh: Mesh, partition_states: bool, min_size: int = 2 ** 12):
    """Shardings for a train-state pytree.

    Replicated by default.  With ``partition_states`` (FLIP's ``partition_states``, ZeRO-3/FSDP style) every
    array of at least ``min_size`` elements is split along its largest dimension divisible by the number of
    devices; XLA gathers the parameters where the step needs them and reduce-scatters the gradients.
    """
    n = mesh.devices.size

    def one(x):
        shape = getattr(x, "shape", ())
        if not partition_states or n == 1 or not shape or math.prod(shape) < min_size:
            return replicated(mesh)
        dims = [i for i in np.argsort(shape)[::-1] if shape[i] % n == 0]
        if not dims:
            return replicated(mesh)
        spec = [None] * len(shape)
        spec[int(dims[0])] = DATA_AXIS
        return NamedSharding(mesh, P(*spec))

    return jax.tree_util.tree_map(one, abstract_state)


def with_shardings(abstract_tree, shardings):
    return jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree,
                                  shardings)


def global_batch(host_batch: dict, sharding: NamedSharding) -> dict:
    """This process's slice of the batch (numpy) -> global jax.Arrays sharded over the data axis."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in host_batch.items()}


def check_batch(batch_size: int, what: str = "batch_size") -> int:
    """The per-process batch for a global ``batch_size`` (it must split evenly over devices and processes)."""
    nd, npr = jax.device_count(), jax.process_count()
    if batch_size <= 0 or batch_size % nd or batch_size % npr:
        raise UsageError(f"{what}={batch_size} does not split evenly over {nd} devices / {npr} processes",
                         where=f"--config.{what}", fix=f"use a multiple of {nd}")
    return batch_size // npr


def tf_numpy(batch) -> dict:
    return {k: v._numpy() if hasattr(v, "_numpy") else np.asarray(v) for k, v in batch.items()}


class RunLog:
    """Console progress lines, ``WORKDIR/metrics.jsonl`` and TensorBoard scalars (process 0 only).

    TensorBoard event files are written with TensorFlow's core ``tf.summary.write`` and the scalar plugin's
    metadata, so TensorBoard reads them as scalars without the ``tensorboard`` package being installed here.
    """

    def __init__(self, workdir: str | None, *, enabled: bool = True, quiet: bool = False):
        self.enabled = enabled and jax.process_index() == 0
        self.quiet = quiet
        self.workdir = workdir
        self._writer = None
        self._md = None
        if self.enabled and workdir:
            tf = import_tf()
            tf.io.gfile.makedirs(workdir)
            self._writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
            from tensorflow.core.framework import summary_pb2  # TensorFlow is imported through import_tf() first

            self._md = summary_pb2.SummaryMetadata()
            self._md.plugin_data.plugin_name = "scalars"

    def print(self, msg: str) -> None:
        if self.enabled and not self.quiet:
            print(msg, flush=True)

    def scalars(self, step: int, values: dict, *, prefix: str = "", jsonl: str = "metrics.jsonl") -> None:
        if not self.enabled:
            return
        vals = {prefix + k: float(v) for k, v in values.items()}
        if self._writer is not None:
            tf = import_tf()
            with self._writer.as_default():
                for k, v in vals.items():
                    tf.summary.write(k, tf.constant(v, tf.float32), step=int(step), metadata=self._md)
            self._writer.flush()
        if self.workdir and jsonl:
            tf = import_tf()
            path = os.path.join(self.workdir, jsonl)
            line = json.dumps({"step": int(step), "time": time.time(), **vals}) + "\n"
            if "://" in path:  # object stores cannot append: rewrite
                old = tf.io.gfile.GFile(path).read() if tf.io.gfile.exists(path) else ""
                with tf.io.gfile.GFile(path, "w") as f:
                    f.write(old + line)
            else:
                with open(path, "a") as f:
                    f.write(line)

    def close(self):
        if self._writer is not None:
            self._writer.close()


def format_duration(s: float) -> str:
    s = int(max(0, s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{sec:02d}s"


def dtype_of(name: str):
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}[name]
