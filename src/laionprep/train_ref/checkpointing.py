"""Orbax checkpoints of a FLIP run: model parameters, optimizer state, step and the input pipeline's position.

A checkpoint directory ``WORKDIR/checkpoints/<step>/`` holds four items:

* ``params``, ``opt_state`` -- sharded arrays (``StandardSave``), restored straight into the run's shardings;
* ``meta`` -- JSON: the step and the number of images seen;
* ``data`` -- the tf.data iterator of every process (``tf.train.Checkpoint``, one ``process_<i>`` file each), so a
  resumed run continues with exactly the batch that would have come next.  Its size is about the example shuffle
  buffer (encoded JPEGs + captions) plus the prefetched batches.  With the Grain loader (grain_pipeline.py) it is
  a JSON object instead (``grain_pipeline.LoaderState``: the next global position, seed, record count; ~150
  bytes), the same for every process, so a run can resume with another number of processes.

Orbax keeps the newest ``keep`` checkpoints and writes array data asynchronously; the data iterator is written
synchronously, at the moment the step's batches have all been drawn and no later one has.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from laionprep._env import import_tf
from laionprep.errors import DataError, UsageError


class DataIteratorHandler(ocp.CheckpointHandler):
    """Saves/restores a ``tf.data`` iterator per process with ``tf.train.Checkpoint``."""

    def save(self, directory, args: "DataIteratorSave"):
        tf = import_tf()
        d = str(directory)
        tf.io.gfile.makedirs(d)
        tf.train.Checkpoint(iterator=args.iterator).write(os.path.join(d, f"process_{jax.process_index()}"))

    def restore(self, directory, args: "DataIteratorRestore"):
        tf = import_tf()
        prefix = os.path.join(str(directory), f"process_{jax.process_index()}")
        if not tf.io.gfile.exists(prefix + ".index"):
            raise DataError(f"no saved input position for process {jax.process_index()} in {directory}",
                            where=str(directory),
                            fix="resume with the same number of hosts, or set --config.data.checkpoint_position=False "
                                "to restart the data stream")
        try:
            tf.train.Checkpoint(iterator=args.iterator).read(prefix).assert_existing_objects_matched()
        except tf.errors.OpError as e:  # the pipeline's graph differs from the saved one (data config, version)
            raise DataError(f"the saved input position in {directory} does not fit this run's input pipeline: "
                            f"{e.message.splitlines()[0][:300]}", where=str(directory),
                            fix="resume with the data settings (and laionprep version) the run was saved with, or set "
                                "--config.data.checkpoint_position=False to restart the data stream") from None
        return args.iterator

    def metadata(self, directory):
        return None

    def finalize(self, directory):
        pass

    def close(self):
        pass


@ocp.args.register_with_handler(DataIteratorHandler, for_save=True)
@dataclasses.dataclass
class DataIteratorSave(ocp.args.CheckpointArgs):
    iterator: Any


@ocp.args.register_with_handler(DataIteratorHandler, for_restore=True)
@dataclasses.dataclass
class DataIteratorRestore(ocp.args.CheckpointArgs):
    iterator: Any


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir) if "://" not in workdir else workdir, "checkpoints")


def make_manager(workdir: str, keep: int = 3, *, async_save: bool = True, read_only: bool = False):
    opts = ocp.CheckpointManagerOptions(max_to_keep=max(1, int(keep)), create=not read_only,
                                        enable_async_checkpointing=async_save, read_only=read_only)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=opts)


def save(mngr, step: int, state: dict, *, iterator=None, images_seen: int = 0,
         loader_state: dict | None = None) -> None:
    """``iterator``: a tf.data iterator; ``loader_state``: the Grain loader's state (JSON), saved as ``data``."""
    meta = {"step": int(step), "images_seen": int(images_seen)}
    items = dict(params=ocp.args.StandardSave(state["params"]), opt_state=ocp.args.StandardSave(state["opt_state"]))
    if iterator is not None:
        items["data"] = DataIteratorSave(iterator)
    if loader_state is not None:
        items["data"] = ocp.args.JsonSave(loader_state)
        meta["loader"] = "grain"
    items["meta"] = ocp.args.JsonSave(meta)
    mngr.save(int(step), args=ocp.args.Composite(**items), force=True)


def restore(mngr, step: int, abstract_state: dict, *, iterator=None, loader: str = "tf.data") -> tuple[dict, dict]:
    """-> (state with 'params' and 'opt_state' in the abstract state's shardings, meta dict).  With
    ``loader="grain"`` the meta dict holds the saved loader state under ``loader_state``."""
    meta = dict(mngr.restore(int(step), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
    saved = meta.get("loader", "tf.data")
    if (iterator is not None or loader == "grain") and saved != loader:
        raise UsageError(f"the checkpoint at step {step} holds the input position of the {saved} loader, this run "
                         f"uses {loader}", where="--config.data.loader",
                         fix=f"resume with --config.data.loader={saved}, or start a new run (another --workdir)")
    items = dict(params=ocp.args.StandardRestore(abstract_state["params"]),
                 opt_state=ocp.args.StandardRestore(abstract_state["opt_state"]))
    if iterator is not None:
        items["data"] = DataIteratorRestore(iterator)
    if loader == "grain":
        items["data"] = ocp.args.JsonRestore()
    out = mngr.restore(int(step), args=ocp.args.Composite(**items))
    if loader == "grain":
        meta["loader_state"] = dict(out["data"])
    return {"params": out["params"], "opt_state": out["opt_state"]}, meta


def latest_step(run_dir: str) -> int | None:
    """The newest checkpoint step of ``run_dir`` (None when it has none)."""
    tf = import_tf()
    if not tf.io.gfile.isdir(checkpoint_dir(run_dir)):
        return None
    mngr = make_manager(run_dir, read_only=True, async_save=False)
    try:
        return mngr.latest_step()
    finally:
        mngr.close()


def load_params(run_dir: str, abstract_params, *, step: int | None = None):
    """Parameters of the newest (or ``step``) checkpoint of another run (``pretrain_dir``), in the given shardings."""
    tf = import_tf()
    if not tf.io.gfile.isdir(checkpoint_dir(run_dir)):
        raise UsageError(f"no checkpoints in {run_dir}", where="--config.pretrain_dir",
                         fix="give the workdir of a finished or running `laionprep train`")
    mngr = make_manager(run_dir, read_only=True, async_save=False)
    try:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise UsageError(f"no checkpoints in {run_dir}", where="--config.pretrain_dir")
        try:
            out = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params),
                                                             meta=ocp.args.JsonRestore()))
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f"the checkpoint in {run_dir} (step {step}) does not fit this model: {e}",
                             where="--config.pretrain_dir",
                             fix="use the same config.model (and vocabulary) as the run that wrote it") from e
        return out["params"], int(out["meta"]["step"])
    finally:
        mngr.close()
