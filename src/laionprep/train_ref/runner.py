"""What ``laionprep train`` / ``eval`` / ``demo`` call: a config is one run (train.py) or a staged sequence of runs
(stages.py, CLIPA); this module alone decides which, so train and evaluate never know about stages.

* ``train_and_evaluate(config, workdir)`` -- train / resume, zero-shot at the end; returns the metrics;
* ``evaluate(config, workdir)`` -- zero-shot of a run's newest checkpoint (a staged run: its last stage's);
* ``train_demo(data, eval_data, workdir)`` -- a bundled config (flip_tiny) on ``data`` + zero-shot on ``eval_data``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import ml_collections

from laionprep.train_ref import config_lib, evaluate as evaluate_lib, stages, train


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       step_hook: Callable[[int, dict], None] | None = None, quiet: bool = False) -> dict:
    """Train (or resume) ``config`` in ``workdir``: see :func:`train.train_and_evaluate` (one run) and
    :func:`stages.train_staged` (``config.stage_order`` set: ``total_step``, ``stage`` and ``stage_dir`` added)."""
    if stages.is_staged(config):
        return stages.train_staged(config, workdir, step_hook=step_hook, quiet=quiet)
    return train.train_and_evaluate(config, workdir, step_hook=step_hook, quiet=quiet)


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Zero-shot evaluation of the newest checkpoint in ``workdir`` (see :func:`evaluate.evaluate`); a staged run is
    evaluated with its last stage's config in that stage's directory."""
    if stages.is_staged(config):
        config, workdir = stages.final_stage(config, workdir)
    return evaluate_lib.evaluate(config, workdir)


def train_demo(data: str, eval_data: str, workdir: str, *, overrides: Sequence[str] = (), config: str = "flip_tiny",
               data_dir: str = "", eval_data_dir: str = "", quiet: bool = False) -> dict:
    """flip_tiny on ``data`` (anything the input pipeline reads: a download folder, a TFDS name with ``data_dir``,
    a TFDS dir ...), zero-shot evaluated on ``eval_data`` (an image folder, or a TFDS classification dataset -- by
    directory, or by name with ``eval_data_dir``).  ``overrides`` are ``--config.x=y`` strings.  Returns the metrics
    of :func:`train_and_evaluate` (``top1``, ``top5``, ``chance_top1``, ``num_examples``, ``loss``, ``step`` ...)."""
    cfg = config_lib.load_config(config, [f"--config.data.source={data}", f"--config.eval.source={eval_data}",
                                          *([f"--config.data.data_dir={data_dir}"] if data_dir else []),
                                          *([f"--config.eval.data_dir={eval_data_dir}"] if eval_data_dir else []),
                                          *overrides])
    return train_and_evaluate(cfg, workdir, quiet=quiet)
