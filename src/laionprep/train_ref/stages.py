"""Staged schedules (CLIPA): one config, one command, several training stages run one after another -- e.g.
``12.8B samples at 84 px with 8 text tokens + 512M samples at 224 px with 32``.

A config is staged when ``config.stage_order`` names stages.  ``config.stages.<name>`` holds, for each stage, the
fields that differ from the top-level config (same nesting: ``stages.low_res.model.image.image_size = 84``); the
top level holds everything the stages share.  ``--config.stages.low_res.num_train_samples=...`` overrides a stage.

``train_staged(config, workdir)`` -- what ``runner.train_and_evaluate`` runs for a staged config -- trains stage
``i`` (1-based) in ``WORKDIR/stage<i>_<name>/``, an ordinary run directory (checkpoints, metrics.jsonl, vocab.txt,
config.json).  Each stage after the first starts from the last parameters of the one before (``pretrain_dir``):
a fresh optimizer and its own warmup + cosine schedule, as CLIPA's fine-tuning runs do, with learned image
position embeddings interpolated to the new resolution (pos_embed.py).  Only the last stage is evaluated.

Running the same command again resumes: stages whose last checkpoint is at their final step are skipped, the
first unfinished one resumes from its newest checkpoint (data position included), or starts from its
predecessor's parameters if it has none yet.  ``step_hook`` receives the step counted over all stages.
"""
from __future__ import annotations

import json
import os
from typing import Callable

import jax
import ml_collections

from laionprep._env import import_tf
from laionprep.errors import UsageError
from laionprep.train_ref import checkpointing, optim, runtime, train, variants


def is_staged(config) -> bool:
    return bool(tuple(config.stage_order))


def _merge(dst: ml_collections.ConfigDict, src: ml_collections.ConfigDict, where: str) -> None:
    for key, value in src.items():
        if key not in dst:
            raise UsageError(f"{where}.{key} is not a config field", where=f"--config.{where}.{key}",
                             fix="a stage may only set fields the top-level config has")
        if isinstance(value, ml_collections.ConfigDict):
            if not isinstance(dst[key], ml_collections.ConfigDict):
                raise UsageError(f"{where}.{key} is a group, but {key} is a value", where=f"--config.{where}.{key}")
            _merge(dst[key], value, f"{where}.{key}")
        else:
            with dst.ignore_type():
                dst[key] = value


def stage_configs(config) -> list[tuple[str, ml_collections.ConfigDict]]:
    """``[(name, full config of that stage)]`` in ``stage_order`` (each without stages of its own)."""
    names = [str(n) for n in tuple(config.stage_order)]
    if len(set(names)) != len(names):
        raise UsageError(f"stage_order {names} names a stage twice", where="--config.stage_order")
    out = []
    for name in names:
        if name not in config.stages:
            raise UsageError(f"stage_order names {name!r}, which config.stages does not define",
                             where="--config.stage_order", fix=f"use some of: {', '.join(config.stages.keys())}")
        cfg = config.copy_and_resolve_references()
        partial = cfg.stages[name]
        cfg.stages = ml_collections.ConfigDict()
        with cfg.ignore_type():
            cfg.stage_order = ()
        _merge(cfg, partial, f"stages.{name}")
        out.append((name, cfg))
    return out


def stage_dir(workdir: str, index: int, name: str) -> str:
    return os.path.join(workdir, f"stage{index + 1}_{name}")


def _runs(config, workdir: str) -> list[tuple[str, str, ml_collections.ConfigDict]]:
    """Per stage: (name, directory, the config of its run): each stage starts from the previous one's checkpoint,
    and only the final stage is evaluated."""
    stages = stage_configs(config)
    out = []
    for i, (name, cfg) in enumerate(stages):
        if i > 0:
            cfg.pretrain_dir = stage_dir(workdir, i - 1, stages[i - 1][0])
        if i < len(stages) - 1:
            cfg.eval.source = ""
        out.append((name, stage_dir(workdir, i, name), cfg))
    return out


def plan(config, workdir: str) -> list[dict]:
    """Per stage: name, directory, config, total steps, steps before it, checkpoint step now, done?"""
    out, offset = [], 0
    for name, d, cfg in _runs(config, workdir):
        total = optim.schedule_steps(cfg)[0]
        at = checkpointing.latest_step(d)
        out.append({"name": name, "dir": d, "config": cfg, "steps": total, "offset": offset, "at": at,
                    "done": at is not None and at >= total})
        offset += total
    return out


def train_staged(config, workdir: str, *, step_hook: Callable[[int, dict], None] | None = None,
                 quiet: bool = False) -> dict:
    """Run (or resume) every stage of a staged config; returns the last stage's metrics plus ``stage`` and
    ``total_step`` (steps over all stages)."""
    runtime.maybe_initialize_distributed(config.distributed)  # before the checkpoint look-ups
    tf = import_tf()
    tf.io.gfile.makedirs(workdir)
    stages = plan(config, workdir)
    lead = jax.process_index() == 0
    if lead:
        with tf.io.gfile.GFile(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    say = (lambda msg: print(msg, flush=True)) if lead and not quiet else (lambda msg: None)
    res: dict = {}
    for i, st in enumerate(stages):
        last = i == len(stages) - 1
        cfg = st["config"]
        ic = cfg.model.image
        desc = (f"stage {i + 1}/{len(stages)} '{st['name']}': {st['steps']} steps at {ic.image_size} px, "
                f"{variants.describe_text(cfg)}, mask ratio {ic.mask_ratio}")
        if st["done"] and not last:
            say(f"[stages] {desc}: done (checkpoint at step {st['at']}) in {st['dir']}")
            continue
        state = f"resuming at step {st['at']}" if st["at"] else (
            f"from {cfg.pretrain_dir}" if cfg.pretrain_dir else "from scratch")
        say(f"[stages] {desc} in {st['dir']} ({state})")
        hook = None
        if step_hook is not None:
            offset, name = st["offset"], st["name"]

            def hook(step, metrics, offset=offset, name=name):
                step_hook(offset + step, dict(metrics, stage=name, stage_step=step))
        res = train.train_and_evaluate(cfg, st["dir"], step_hook=hook, quiet=quiet)
    final = stages[-1]
    res = {**res, "stage": final["name"], "total_step": final["offset"] + int(res.get("step", 0)),
           "stage_dir": final["dir"]}
    if "top1" in res and lead:
        with tf.io.gfile.GFile(os.path.join(workdir, "eval_results.json"), "w") as f:
            json.dump({k: v for k, v in res.items() if isinstance(v, (int, float, str))}, f, indent=2)
    return res


def final_stage(config, workdir: str) -> tuple[ml_collections.ConfigDict, str]:
    """(config, directory) of the last stage: what ``laionprep eval`` evaluates for a staged run (no checkpoint
    is looked at here)."""
    _, d, cfg = _runs(config, workdir)[-1]
    return cfg, d
