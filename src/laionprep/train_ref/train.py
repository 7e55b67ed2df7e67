"""The FLIP training loop: data parallel over every device (jax.sharding), AdamW + warmup/cosine, orbax checkpoints.

``train_and_evaluate(config, workdir)`` trains ``config`` (see configs/flip_tiny.py for every field) and writes
into ``workdir``: ``checkpoints/<step>/`` (orbax: params, optimizer state, step, input position), ``vocab.txt``
(FLIP; CLIPPO -- ``text_input=render`` -- renders captions instead, see clippo.py),
``config.json``, ``metrics.jsonl``, ``tensorboard/`` and ``eval_results.json``.  Run it again with the same workdir
and it resumes exactly where it stopped.  ``config.pretrain_dir`` starts a fresh run (new optimizer, step 0) from
another run's parameters -- FLIP's unmasked tuning.

``train_demo(data, eval_data, workdir)`` is the one-call entry point for ``laionprep demo``: flip_tiny on
``data`` with zero-shot evaluation on ``eval_data``; it returns the metrics.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from laionprep._env import import_tf
from laionprep.errors import UsageError
from laionprep.train_ref import checkpointing, clippo, evaluate as evaluate_lib, input_pipeline, models, pos_embed
from laionprep.train_ref import runtime, stages as stages_lib, text_reduction, text_render
from laionprep.train_ref import tokenizer as tokenizer_lib


MAX_STEPS = 2**31 - 1  # the step counter (and the schedules' step arithmetic) is int32 on the accelerator


def schedule_steps(config) -> tuple[int, int]:
    """(total steps, warmup steps): ``num_train_steps`` / ``warmup_steps`` when > 0, else from the sample counts."""
    b = config.batch_size
    total = config.num_train_steps if config.num_train_steps > 0 else int(config.num_train_samples) // b
    warm = config.warmup_steps if config.warmup_steps >= 0 else int(config.warmup_samples) // b
    if total <= 0:
        raise UsageError("training has no steps", where="--config.num_train_steps",
                         fix="set --config.num_train_steps (or num_train_samples >= batch_size)")
    if total > MAX_STEPS:
        given = config.num_train_steps > 0
        what = "--config.num_train_steps" if given else "--config.batch_size"
        raise UsageError((f"{int(total):,} steps" if given else
                          f"{int(config.num_train_samples):,} samples at batch {b} make {int(total):,} steps")
                         + f": more than the int32 step counter holds ({MAX_STEPS:,})", where=what,
                         fix="use fewer steps" if given else
                             "use a larger --config.batch_size, or set --config.num_train_steps for a short run")
    return int(total), int(min(max(warm, 0), total))


def peak_learning_rate(config) -> float:
    """FLIP's rule: ``learning_rate`` is per 256 examples; the peak is ``learning_rate * batch_size / 256``."""
    return float(config.learning_rate) * config.batch_size / 256.0


def weight_decay_mask(params):
    """Decay matrices only: no weight decay on biases, norm scales, position embeddings or the temperature."""
    def keep(path, p):
        name = jax.tree_util.keystr(path)
        return p.ndim >= 2 and "pos_embed" not in name
    return jax.tree_util.tree_map_with_path(keep, params)


def lr_schedule(peak: float, warmup_steps: int, total_steps: int, end: float = 0.0):
    """Linear warmup from 0 to ``peak`` over ``warmup_steps``, then a cosine from ``peak`` to ``end`` at
    ``total_steps`` (FLIP's schedule shape)."""
    warmup_steps, total_steps = int(warmup_steps), int(total_steps)

    def sched(step):
        step = jnp.asarray(step, jnp.float32)
        warm = peak * step / max(warmup_steps, 1)
        frac = jnp.clip((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0, 1.0)
        cos = end + 0.5 * (peak - end) * (1.0 + jnp.cos(jnp.pi * frac))
        return jnp.where(step < warmup_steps, warm, cos)

    return sched


def rsqrt_schedule(peak: float, warmup_steps: int, total_steps: int, timescale: int, cooldown_steps: int = 0):
    """big_vision's ``rsqrt`` shape (CLIPPO): linear warmup to ``peak``, then ``peak / sqrt(1 + (step - warmup) /
    timescale)``, multiplied by a linear cooldown to 0 over the last ``cooldown_steps``."""
    warmup_steps, total_steps, cooldown_steps = int(warmup_steps), int(total_steps), int(cooldown_steps)

    def sched(step):
        step = jnp.asarray(step, jnp.float32)
        lr = peak / jnp.sqrt(1.0 + jnp.maximum(step - warmup_steps, 0.0) / max(timescale, 1))
        if warmup_steps:
            lr = lr * jnp.minimum(1.0, step / warmup_steps)
        if cooldown_steps:
            lr = lr * jnp.clip((total_steps - step) / cooldown_steps, 0.0, 1.0)
        return lr

    return sched


def adafactor(learning_rate, weight_decay: float, mask, *, momentum: float = 0.9, decay_rate: float = 0.8,
              beta2_cap: float = 0.999, min_dim_size_to_factor: int = 32):
    """The Adafactor variant of big_vision (ViT scaling paper; CLIPPO's optimizer): factored second moments with
    a ``1 - t^-0.8`` decay capped at ``beta2_cap``, first-moment momentum kept in bfloat16, decoupled weight decay
    (scaled by the learning rate, as AdamW's)."""
    def decay_fn(step, exponent):
        t = jnp.asarray(step, jnp.float32) + 1.0
        return jnp.minimum(beta2_cap, 1.0 - t ** (-exponent))

    return optax.chain(
        optax.scale_by_factored_rms(factored=True, decay_rate=decay_rate, epsilon=1e-30,
                                    min_dim_size_to_factor=min_dim_size_to_factor, decay_rate_fn=decay_fn),
        optax.ema(momentum, debias=False, accumulator_dtype=jnp.bfloat16) if momentum else optax.identity(),
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(learning_rate))


OPTIMIZERS = ("adamw", "adafactor")
LR_SCHEDULES = ("cosine", "rsqrt")


def make_optimizer(config, total_steps: int, warmup_steps: int):
    """AdamW + warmup/cosine (FLIP, the default), or what ``config.optimizer`` / ``config.lr_schedule`` name
    (CLIPPO: ``adafactor`` + ``rsqrt`` with ``rsqrt_timescale`` and ``cooldown_steps``)."""
    opt, shape = config.get("optimizer", "adamw"), config.get("lr_schedule", "cosine")
    if opt not in OPTIMIZERS or shape not in LR_SCHEDULES:
        bad, choices = ("optimizer", OPTIMIZERS) if opt not in OPTIMIZERS else ("lr_schedule", LR_SCHEDULES)
        raise UsageError(f"unknown {bad} {config[bad]!r}", where=f"--config.{bad}",
                         fix=f"use one of {', '.join(choices)}")
    if shape == "rsqrt":
        sched = rsqrt_schedule(peak_learning_rate(config), warmup_steps, total_steps, config.rsqrt_timescale,
                               config.cooldown_steps)
    else:
        sched = lr_schedule(peak_learning_rate(config), warmup_steps, total_steps,
                            float(config.min_learning_rate) * config.batch_size / 256)
    if opt == "adafactor":
        tx = adafactor(sched, config.weight_decay, weight_decay_mask)
    else:
        tx = optax.adamw(sched, b1=config.b1, b2=config.b2, eps=1e-8, weight_decay=config.weight_decay,
                         mask=weight_decay_mask)
    if config.grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
    return tx, sched


def _init_fn(model, tx, config):
    s = config.model.image.image_size

    def init(key):
        params = model.init(key, jnp.zeros((1, s, s, 3), jnp.float32), clippo.example_text(config),
                            train=False)["params"]
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


def _resolve_tokenizer(config, workdir: str):
    tf = import_tf()
    if not tf.io.gfile.exists(os.path.join(workdir, "vocab.txt")) and config.pretrain_dir:
        pre = os.path.join(config.pretrain_dir, "vocab.txt")
        if tf.io.gfile.exists(pre):
            tokenizer_lib.write_vocab(tokenizer_lib.load_vocab(pre), os.path.join(workdir, "vocab.txt"))
    return tokenizer_lib.tokenizer_from_config(config, workdir, learn_source=config.data.source,
                                               data_dir=config.data.data_dir, split=config.data.split)


def _text_side(config, workdir: str):
    """(text processor, model): the WordPiece tokenizer and FLIP's two towers, or -- ``text_input=render``,
    CLIPPO -- the Unifont text renderer and one shared ViT.  Both processors have ``tokenize`` (in tf.data) and
    ``__call__`` (eager, for the zero-shot prompts)."""
    if clippo.uses_rendered_text(config):
        return text_render.renderer_from_config(config), clippo.build_model(config.model)
    tok = _resolve_tokenizer(config, workdir)
    return tok, models.build_model(config.model, tok.vocab_size, config.tokenizer.max_len)


def text_description(config) -> str:
    """What the text side trains on, for the logs: rendered captions (CLIPPO) or N tokens (and how reduced)."""
    if clippo.uses_rendered_text(config):
        return "captions rendered as images"
    if text_reduction.enabled(config):
        return f"{config.text_reduction.length} text tokens ({config.text_reduction.strategy})"
    return f"{config.tokenizer.max_len} text tokens"


def setup_state(model, config, mesh, total_steps: int, warmup_steps: int):
    """``(tx, schedule, init, key, abstract_state, shardings)`` of a training run of ``model`` on ``mesh``:
    ``init(key)`` builds the state, ``shardings`` places it (parameters / optimizer state partitioned over the data
    axis when ``config.partition_states``)."""
    tx, sched = make_optimizer(config, total_steps, warmup_steps)
    init = _init_fn(model, tx, config)
    key = jax.random.PRNGKey(config.seed)
    abstract = jax.eval_shape(init, key)
    shardings = runtime.state_shardings(abstract, mesh, config.partition_states)
    shardings["step"] = runtime.replicated(mesh)
    return tx, sched, init, key, abstract, shardings


def fresh_state_and_step(model, config, mesh):
    """A freshly initialised, placed training state of ``model`` and its compiled train step (benchmarks)."""
    tx, sched, init, key, _, shardings = setup_state(model, config, mesh, *schedule_steps(config))
    state = jax.jit(init, out_shardings=shardings)(key)
    return state, compile_train_step(make_train_step(model, tx, sched, config, mesh), shardings, mesh)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       step_hook: Callable[[int, dict], None] | None = None, quiet: bool = False) -> dict:
    """Train (or resume) in ``workdir``; zero-shot evaluate at the end when ``config.eval.source`` is set.

    ``step_hook(step, metrics)`` is called after every step (metrics are host floats on logging steps, else
    empty).  Returns ``{'step', 'loss', 'images_per_sec', 'top1', 'top5', ...}`` (eval keys when evaluated).
    A staged config (``config.stage_order``, CLIPA) runs its stages one after another: see stages.py.
    """
    if stages_lib.is_staged(config):
        return stages_lib.train_staged(config, workdir, step_hook=step_hook, quiet=quiet)
    runtime.maybe_initialize_distributed(config.get("distributed", "auto"))
    tf = import_tf()
    tf.io.gfile.makedirs(workdir)
    log = runtime.RunLog(workdir, quiet=quiet)
    pidx, pcount = jax.process_index(), jax.process_count()
    mesh = runtime.make_mesh()
    local_bs = runtime.check_batch(config.batch_size)
    total_steps, warmup_steps = schedule_steps(config)

    src = input_pipeline.resolve_source(config.data.source, config.data.data_dir, config.data.split)
    tok, model = _text_side(config, workdir)
    reducer = text_reduction.reducer_from_config(config, tok)
    tx, sched, init, key, abstract, shardings = setup_state(model, config, mesh, total_steps, warmup_steps)

    dcfg = config.data
    ds = input_pipeline.train_dataset(
        src, tok, image_size=config.model.image.image_size, batch_size=local_bs, seed=config.seed,
        process_index=pidx, process_count=pcount, shuffle_buffer=dcfg.shuffle_buffer,
        shuffle_files=dcfg.shuffle_files, area_range=tuple(dcfg.area_range),
        aspect_ratio_range=tuple(dcfg.aspect_ratio_range), flip=dcfg.flip, text_transform=reducer)
    it = iter(ds)

    mngr = checkpointing.make_manager(workdir, config.keep_checkpoints, async_save=config.async_checkpointing)
    latest = mngr.latest_step()
    abstract_sharded = runtime.with_shardings(abstract, shardings)
    if latest is not None:
        restored, meta = checkpointing.restore(mngr, latest, abstract_sharded,
                                               iterator=it if dcfg.checkpoint_position else None)
        state = {"step": jax.device_put(jnp.asarray(meta["step"], jnp.int32), shardings["step"]), **restored}
        images_seen = int(meta.get("images_seen", meta["step"] * config.batch_size))
        log.print(f"[train] resumed from {checkpointing.checkpoint_dir(workdir)} step {latest}")
    else:
        state = jax.jit(init, out_shardings=shardings)(key)
        images_seen = 0
        if config.pretrain_dir:
            params, pstep = pos_embed.load_params(config.pretrain_dir, abstract_sharded["params"], log=log.print,
                                                  method=config.model.image.get("pos_embed_resize", "bilinear"))
            opt_state = jax.jit(tx.init, out_shardings=shardings["opt_state"])(params)
            state = {"step": state["step"], "params": params, "opt_state": opt_state}
            log.print(f"[train] parameters from {config.pretrain_dir} (step {pstep}); fresh optimizer, step 0")
    if pidx == 0:
        with tf.io.gfile.GFile(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))

    step_fn = compile_train_step(make_train_step(model, tx, sched, config, mesh), shardings, mesh)
    bsh = runtime.batch_sharding(mesh)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(abstract["params"]))
    L = (config.model.image.image_size // config.model.image.patch_size) ** 2
    log.print(f"[train] {src.description}; {jax.device_count()} devices ({jax.devices()[0].platform}) on "
              f"{pcount} process(es); batch {config.batch_size} ({local_bs}/process); {n_params / 1e6:.2f}M params; "
              f"{models.num_kept(L, config.model.image.mask_ratio)}/{L} patches kept; "
              f"{text_description(config)}; peak lr "
              f"{peak_learning_rate(config):.3g}; {total_steps} steps ({warmup_steps} warmup)")

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
            checkpointing.save(mngr, step, state, iterator=it if dcfg.checkpoint_position else None,
                               images_seen=images_seen)
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
    if config.eval.source:
        eval_res = evaluate_lib.zero_shot(model, state["params"], tok, config, mesh, log=log.print)
        log.scalars(step, {"top1": eval_res["top1"], "top5": eval_res["top5"]}, prefix="eval/")
        if pidx == 0:
            with tf.io.gfile.GFile(os.path.join(workdir, "eval_results.json"), "w") as f:
                json.dump(dict(eval_res, step=step), f, indent=2)
    mngr.close()
    log.close()
    return {**last, "step": step, **eval_res}


def train_demo(data: str, eval_data: str, workdir: str, *, overrides: Sequence[str] = (), config: str = "flip_tiny",
               data_dir: str = "", eval_data_dir: str = "", quiet: bool = False) -> dict:
    """flip_tiny on ``data`` (anything the input pipeline reads: a download folder, a TFDS name with ``data_dir``,
    a TFDS dir ...), zero-shot evaluated on ``eval_data`` (an image folder, or a TFDS classification dataset -- by
    directory, or by name with ``eval_data_dir``).  ``overrides`` are ``--config.x=y`` strings.  Returns the metrics
    of :func:`train_and_evaluate` (``top1``, ``top5``, ``chance_top1``, ``num_examples``, ``loss``, ``step`` ...)."""
    from laionprep.train_ref import config_lib

    cfg = config_lib.load_config(config, [f"--config.data.source={data}", f"--config.eval.source={eval_data}",
                                          *([f"--config.data.data_dir={data_dir}"] if data_dir else []),
                                          *([f"--config.eval.data_dir={eval_data_dir}"] if eval_data_dir else []),
                                          *overrides])
    return train_and_evaluate(cfg, workdir, quiet=quiet)
