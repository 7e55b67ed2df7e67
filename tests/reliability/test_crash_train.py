"""kill -9 of ``laionprep train`` (a tiny FLIP, async orbax checkpoints every 3 steps) at a random moment of its
training loop, for several seeds; the same command again must resume from the newest committed checkpoint and
continue the uninterrupted run's loss curve exactly from there: the first step it logs is that checkpoint's step + 1
and every loss it logs equals the reference run's loss at that step.

The loop of this tiny run lasts about a second of a ~30 s command (imports and compilation are the rest), so the
kill moment is drawn over the loop: from the killed run's first logged step, a delay of [5%, 95%] (stratified per
seed) of the reference run's loop duration up to its last step, measured from its metrics.  Most of that time is
spent writing the asynchronous checkpoints, so kills land mid-step and mid-checkpoint.
(tests/train_ref/test_training.py kills at one fixed moment, step 7, from a step hook.)
"""
from __future__ import annotations

import json
import os
import shutil

import pytest

from .crash_helpers import SEEDS, cli, env, kill_moment, run, run_and_kill

STEPS, EVERY = 12, 3


def train_cmd(data: str, vocab: str, workdir: str) -> list[str]:
    """flip_tiny shrunk to the size of tests/train_ref/flip_helpers.tiny_config, through the CLI's overrides."""
    o = {"data.source": data, "data.shuffle_buffer": 64, "tokenizer.vocab": vocab, "tokenizer.max_len": 16,
         "model.embed_dim": 32, "model.image.image_size": 32, "model.image.patch_size": 8, "model.image.width": 64,
         "model.image.depth": 2, "model.image.num_heads": 2, "model.image.mlp_dim": 128, "model.text.width": 64,
         "model.text.depth": 1, "model.text.num_heads": 2, "model.text.mlp_dim": 128, "batch_size": 16,
         "num_train_steps": STEPS, "warmup_steps": 2, "learning_rate": 1e-3, "log_every_steps": 1,
         "checkpoint_every_steps": EVERY, "async_checkpointing": True}
    return cli("train", "--config", "flip_tiny", "--workdir", workdir, *(f"--config.{k}={v}" for k, v in o.items()))


def metric_lines(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [r for r in (json.loads(line) for line in f) if "train/loss" in r]


def _started(workdir: str) -> bool:
    p = os.path.join(workdir, "metrics.jsonl")
    return os.path.exists(p) and os.path.getsize(p) > 0


def committed_steps(workdir: str) -> list[int]:
    """Checkpoints orbax committed (it renames a finished checkpoint's temporary folder to the bare step number)."""
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


pytestmark = pytest.mark.slow  # real img2dataset / Beam / training runs, killed and run again


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Data, vocabulary, the JAX compilation cache the runs share, and an uninterrupted run: its losses by step and
    its duration."""
    from flip_helpers import write_records  # tests/train_ref/flip_helpers.py

    from laionprep.train_ref import tokenizer

    root = tmp_path_factory.mktemp("crash_train")
    data = str(root / "data")
    write_records(data, 256, files=4, short_side=40)
    vocab = str(root / "vocab.txt")
    tokenizer.learn_vocab(data, 300, vocab)
    e = env(JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    w = str(root / "reference")
    r, seconds = run(train_cmd(data, vocab, w), env=e)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = metric_lines(w)
    assert [x["step"] for x in lines] == list(range(1, STEPS + 1))
    assert committed_steps(w)[-1] == STEPS
    loop = lines[-2]["time"] - lines[0]["time"]  # from the first logged step to the last but one
    return data, vocab, e, {x["step"]: x["train/loss"] for x in lines}, loop


@pytest.mark.parametrize("seed", SEEDS)
def test_train_killed_at_a_random_moment_continues_the_loss_curve(tmp_path, reference, seed):
    data, vocab, e, ref_loss, seconds = reference
    w = str(tmp_path / "run")
    delay = kill_moment(seed, seconds)
    killed = run_and_kill(train_cmd(data, vocab, w), delay, env=e, start=lambda: _started(w))
    if not killed:  # its loop ran faster than the reference's: again, at the same fraction of the loop just measured
        lines = metric_lines(w)
        delay = kill_moment(seed, lines[-2]["time"] - lines[0]["time"])
        shutil.rmtree(w)
        killed = run_and_kill(train_cmd(data, vocab, w), delay, env=e, start=lambda: _started(w))
    before = metric_lines(w)
    ckpt = (committed_steps(w) or [0])[-1]
    for x in before:  # what the killed run logged is the reference curve
        assert x["train/loss"] == pytest.approx(ref_loss[x["step"]], rel=1e-5, abs=1e-6)

    r, _ = run(train_cmd(data, vocab, w), env=e)  # the same command again
    assert r.returncode == 0, f"killed={killed} {delay:.2f}s after step 1\n" + r.stderr[-3000:]
    after = metric_lines(w)[len(before):]
    steps = [x["step"] for x in after]
    assert steps == list(range(ckpt + 1, STEPS + 1)), (ckpt, [x["step"] for x in before], steps)
    for x in after:
        assert x["train/loss"] == pytest.approx(ref_loss[x["step"]], rel=1e-5, abs=1e-6), x["step"]
    assert committed_steps(w)[-1] == STEPS
    leftovers = [n for n in os.listdir(os.path.join(w, "checkpoints")) if not n.isdigit()]
    assert not leftovers, f"temporary checkpoint folders left behind: {leftovers}"
    assert killed, f"the run ended before the kill, {delay:.2f}s after its first step"
    print(f"seed {seed}: killed {delay:.2f}s into a {seconds:.2f}s training loop, after step "
          f"{max([x['step'] for x in before], default=0)}; resumed from checkpoint {ckpt}")
