"""Optimizers and learning-rate schedules of the trainer, all chosen by config fields (configs/common.py).

* ``optimizer``: ``adamw`` (FLIP, CLIPA; ``b1``, ``b2``, ``weight_decay``) or ``adafactor`` (big_vision's variant,
  CLIPPO's); no weight decay on biases, norm scales, position embeddings or the temperature;
  ``grad_clip_norm`` > 0 clips the global gradient norm first.
* ``lr_schedule``: ``cosine`` (linear warmup, cosine to ``min_learning_rate``) or ``rsqrt`` (linear warmup,
  ``peak / sqrt(1 + (step - warmup) / rsqrt_timescale)``, linear cooldown over the last ``cooldown_steps``).
* Steps: ``num_train_steps`` / ``warmup_steps`` when set, else counted from ``num_train_samples`` /
  ``warmup_samples``; the peak learning rate is ``learning_rate * batch_size / 256`` (FLIP's rule).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from laionprep.errors import UsageError

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
    opt, shape = config.optimizer, config.lr_schedule
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
