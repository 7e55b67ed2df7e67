"""One training run: data parallel over every device (jax.sharding), orbax checkpoints, zero-shot at the end.

``train_and_evaluate(config, workdir)`` trains ``config`` (configs/common.py documents every field) and writes
into ``workdir``: ``checkpoints/<step>/`` (orbax: params, optimizer state, step, input position), ``vocab.txt``
(FLIP; CLIPPO -- ``text_input=render`` -- renders captions instead, see variants.py),
``config.json``, ``metrics.jsonl``, ``tensorboard/`` and ``eval_results.json``.  Run it again with the same workdir
and it resumes exactly where it stopped.  ``config.pretrain_dir`` starts a fresh run (new optimizer, step 0) from
another run's parameters -- FLIP's unmasked tuning.  The optimizer and schedule come from optim.py, the text side
and model from variants.py.  A staged config is several such runs: stages.py, called by runner.py.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from laionprep._env import import_tf
from laionprep.errors import UsageError
from laionprep.train_ref import checkpointing, evaluate as evaluate_lib, grain_pipeline, input_pipeline, models
from laionprep.train_ref import optim, pos_embed
from laionprep.train_ref import runtime, text_reduction, variants


def _init_fn(model, tx, config):
    def init(key):
        params = variants.init_params(model, config, key)
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params)}

    return init


def step_rng(base_key, step):
    """The RNG of training step ``step`` (masks): fresh every step, the same when a resumed run redoes a step."""
    return jax.random.fold_in(base_key, step)


def make_loss_fn(model, config, mesh):
    """``loss_fn(params, batch, rng) -> (loss, metrics)``: FLIP's forward pass and global-batch InfoNCE."""
    dtype = runtime.dtype_of(config.model.dtype)
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(runtime.DATA_AXIS, None))

    def row_sharding(x):
        return jax.lax.with_sharding_constraint(x, rows)

    def loss_fn(params, batch, rng):
        images = input_pipeline.normalize(batch["image"], dtype)
        zi, zt, ls = model.apply({"params": params}, images, batch["text"], train=True, rngs={"mask": rng})
        return models.contrastive_loss(zi, zt, ls, row_sharding)

    return loss_fn


def make_train_step(model, tx, sched, config, mesh, *, with_grads: bool = False):
    """The step ``(state, batch) -> (state, metrics)``; jit it with :func:`compile_train_step`.
    ``with_grads`` adds the gradients to the metrics (for tests and debugging)."""
    base_key = jax.random.PRNGKey(config.seed)
    loss_fn = make_loss_fn(model, config, mesh)

    def step_fn(state, batch):
        step = state["step"]
        rng = step_rng(base_key, step)
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, rng)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = dict(metrics, lr=sched(step), grad_norm=optax.global_norm(grads))
        if with_grads:
            metrics["grads"] = grads
        return {"step": step + 1, "params": params, "opt_state": opt_state}, metrics

    return step_fn


def compile_train_step(step_fn, state_sharding, mesh):
    bs = runtime.batch_sharding(mesh)
    return jax.jit(step_fn, in_shardings=(state_sharding, {"image": bs, "text": bs}),
                   out_shardings=(state_sharding, runtime.replicated(mesh)), donate_argnums=(0,))


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    """What a training run of a model on a mesh needs before its first step (see :func:`setup_state`)."""

    tx: optax.GradientTransformation  # the optimizer
    schedule: Callable                # step -> learning rate
    init: Callable                    # key -> freshly initialised state {'step', 'params', 'opt_state'}
    key: Any                          # the key ``init`` is called with
    abstract: Any                     # the state's shapes and dtypes
    shardings: Any                    # where each state array lives


def setup_state(model, config, mesh, total_steps: int, warmup_steps: int) -> TrainSetup:
    """The optimizer, schedule, initialiser and state layout of a training run of ``model`` on ``mesh``:
    ``init(key)`` builds the state, ``shardings`` places it (parameters / optimizer state partitioned over the data
    axis when ``config.partition_states``)."""
    tx, sched = optim.make_optimizer(config, total_steps, warmup_steps)
    init = _init_fn(model, tx, config)
    key = jax.random.PRNGKey(config.seed)
    abstract = jax.eval_shape(init, key)
    shardings = runtime.state_shardings(abstract, mesh, config.partition_states)
    shardings["step"] = runtime.replicated(mesh)
    return TrainSetup(tx=tx, schedule=sched, init=init, key=key, abstract=abstract, shardings=shardings)


def fresh_state_and_step(model, config, mesh):
    """A freshly initialised, placed training state of ``model`` and its compiled train step (benchmarks)."""
    su = setup_state(model, config, mesh, *optim.schedule_steps(config))
    state = jax.jit(su.init, out_shardings=su.shardings)(su.key)
    return state, compile_train_step(make_train_step(model, su.tx, su.schedule, config, mesh), su.shardings, mesh)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       step_hook: Callable[[int, dict], None] | None = None, quiet: bool = False) -> dict:
    """Train (or resume) one run in ``workdir``; zero-shot evaluate at the end when ``config.eval.source`` is set.

    ``step_hook(step, metrics)`` is called after every step (metrics are host floats on logging steps, else
    empty).  Returns ``{'step', 'loss', 'images_per_sec', 'top1', 'top5', ...}`` (eval keys when evaluated).
    A staged config (``config.stage_order``, CLIPA) is a sequence of such runs: ``runner.train_and_evaluate``.
    """
    if tuple(config.stage_order):
        raise ValueError("a staged config (config.stage_order) runs through runner.train_and_evaluate")
    runtime.maybe_initialize_distributed(config.distributed)
    tf = import_tf()
    tf.io.gfile.makedirs(workdir)
    log = runtime.RunLog(workdir, quiet=quiet)
    pidx, pcount = jax.process_index(), jax.process_count()
    mesh = runtime.make_mesh()
    local_bs = runtime.check_batch(config.batch_size)
    total_steps, warmup_steps = optim.schedule_steps(config)

    src = input_pipeline.resolve_source(config.data.source, config.data.data_dir, config.data.split)
    tok, model = variants.text_side(config, workdir, training=True)
    reducer = text_reduction.reducer_from_config(config, tok)
    su = setup_state(model, config, mesh, total_steps, warmup_steps)
    shardings = su.shardings

    dcfg = config.data
    if dcfg.loader not in ("tf.data", "grain"):
        raise UsageError(f"unknown data loader {dcfg.loader!r}", where="--config.data.loader",
                         fix="use tf.data (the default: streams TFRecords) or grain (ArrayRecord shards)")
    grain = dcfg.loader == "grain"  # random access + a resumable global order (grain_pipeline.py)
    if grain:
        it = grain_pipeline.loader_from_config(src, tok, config, batch_size=local_bs, process_index=pidx,
                                               process_count=pcount, text_transform=reducer)
    else:
        grain_pipeline.check_streamable(src)
        ds = input_pipeline.train_dataset(
            src, tok, image_size=config.model.image.image_size, batch_size=local_bs, seed=config.seed,
            process_index=pidx, process_count=pcount, shuffle_buffer=dcfg.shuffle_buffer,
            shuffle_files=dcfg.shuffle_files, area_range=tuple(dcfg.area_range),
            aspect_ratio_range=tuple(dcfg.aspect_ratio_range), flip=dcfg.flip, text_transform=reducer)
        it = iter(ds)
    tf_it = it if (dcfg.checkpoint_position and not grain) else None  # what a checkpoint saves of tf.data

    mngr = checkpointing.make_manager(workdir, config.keep_checkpoints, async_save=config.async_checkpointing)
    latest = mngr.latest_step()
    abstract_sharded = runtime.with_shardings(su.abstract, shardings)
    if latest is not None:
        restored, meta = checkpointing.restore(mngr, latest, abstract_sharded, iterator=tf_it,
                                               loader="grain" if grain else "tf.data")
        if grain:
            it.restore(grain_pipeline.LoaderState.from_json(meta["loader_state"]))
        state = {"step": jax.device_put(jnp.asarray(meta["step"], jnp.int32), shardings["step"]), **restored}
        images_seen = int(meta.get("images_seen", meta["step"] * config.batch_size))
        log.print(f"[train] resumed from {checkpointing.checkpoint_dir(workdir)} step {latest}")
    else:
        state = jax.jit(su.init, out_shardings=shardings)(su.key)
        images_seen = 0
        if config.pretrain_dir:
            params, pstep = pos_embed.load_params(config.pretrain_dir, abstract_sharded["params"], log=log.print,
                                                  method=config.model.image.pos_embed_resize)
            opt_state = jax.jit(su.tx.init, out_shardings=shardings["opt_state"])(params)
            state = {"step": state["step"], "params": params, "opt_state": opt_state}
            log.print(f"[train] parameters from {config.pretrain_dir} (step {pstep}); fresh optimizer, step 0")
    if pidx == 0:
        with tf.io.gfile.GFile(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    step_fn = compile_train_step(make_train_step(model, su.tx, su.schedule, config, mesh), shardings, mesh)
    bsh = runtime.batch_sharding(mesh)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(su.abstract["params"]))
    L = (config.model.image.image_size // config.model.image.patch_size) ** 2
    log.print(f"[train] {src.description}; {jax.device_count()} devices ({jax.devices()[0].platform}) on "
              f"{pcount} process(es); batch {config.batch_size} ({local_bs}/process); {n_params / 1e6:.2f}M params; "
              f"{models.num_kept(L, config.model.image.mask_ratio)}/{L} patches kept; "
              f"{variants.describe_text(config)}; peak lr "
              f"{optim.peak_learning_rate(config):.3g}; {total_steps} steps ({warmup_steps} warmup)")

    step = int(jax.device_get(state["step"]))
    last = {"step": step}
    eval_res: dict = {}

    def next_batch():
        return runtime.global_batch(runtime.tf_numpy(next(it)), bsh)

    ckpt_every = max(1, int(config.checkpoint_every_steps))
    log_every = max(1, int(config.log_every_steps))
    eval_every = int(config.eval.every_steps)
    batch = next_batch() if step < total_steps else None
    t_mark, steps_mark, t_first = None, step, time.time()
    while step < total_steps:
        state, metrics = step_fn(state, batch)
        step += 1
        images_seen += config.batch_size
        if step % ckpt_every == 0 or step == total_steps:
            # The iterator has produced exactly `step` batches: the position saved is the one a resume needs.
            checkpointing.save(mngr, step, state, iterator=tf_it, images_seen=images_seen,
                               loader_state=it.state().to_json() if grain else None)
        if step < total_steps:
            batch = next_batch()  # overlaps with the step running on the devices
        host_metrics: dict = {}
        if t_mark is None:  # the first step includes compilation: time throughput from its end
            jax.block_until_ready(metrics)
            log.print(f"[train] first step (compile + run) {time.time() - t_first:.1f}s")
            t_mark, steps_mark = time.time(), step
        if step % log_every == 0 or step == total_steps:
            host_metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            now = time.time()
            ips = (step - steps_mark) * config.batch_size / max(now - t_mark, 1e-9) if step > steps_mark else 0.0
            host_metrics["images_per_sec"] = ips
            eta = (total_steps - step) * config.batch_size / ips if ips > 0 else 0.0
            log.print(f"[train] step {step}/{total_steps} loss {host_metrics['loss']:.4f} "
                      f"lr {host_metrics['lr']:.3g} temp {host_metrics['temperature']:.4f} "
                      f"{ips:.1f} img/s ({ips / jax.device_count():.1f}/device) eta {runtime.format_duration(eta)}")
            log.scalars(step, {k: host_metrics[k] for k in ("loss", "lr", "temperature", "images_per_sec",
                                                            "i2t_accuracy", "grad_norm")}, prefix="train/")
            last = {"step": step, **host_metrics}
            t_mark, steps_mark = time.time(), step
        if config.eval.source and eval_every > 0 and step % eval_every == 0 and step < total_steps:
            res = evaluate_lib.zero_shot(model, state["params"], tok, config, mesh, log=log.print)
            log.scalars(step, {"top1": res["top1"], "top5": res["top5"]}, prefix="eval/")
            t_mark, steps_mark = time.time(), step
        if step_hook is not None:
            step_hook(step, host_metrics)
    mngr.wait_until_finished()
    if grain:
        it.close()  # stops Grain's worker processes
    if config.eval.source:
        eval_res = evaluate_lib.zero_shot(model, state["params"], tok, config, mesh, log=log.print)
        log.scalars(step, {"top1": eval_res["top1"], "top5": eval_res["top5"]}, prefix="eval/")
        if pidx == 0:
            with tf.io.gfile.GFile(os.path.join(workdir, "eval_results.json"), "w") as f:
                json.dump(dict(eval_res, step=step), f, indent=2)
    mngr.close()
    log.close()
    return {**last, "step": step, **eval_res}
