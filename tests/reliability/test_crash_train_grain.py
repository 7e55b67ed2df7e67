"""kill -9 of a Grain-fed ``laionprep train`` (``--config.data.loader=grain``, one Grain worker process decoding,
async orbax checkpoints every 3 steps) at a random moment of its loop; the same command again resumes from the newest
committed checkpoint and every step after it trains on the very records (keys compared per step) and reaches the
very loss of an uninterrupted run.  The run crosses an epoch boundary (8 steps per epoch, 12 steps).

One kill, drawn from SEEDS[0]'s slice of the loop after the first committed checkpoint: each run starts a Grain
worker process (a TensorFlow import), so
the three runs take ~1-2 minutes; tests/reliability/test_crash_train.py covers the kill moments of the tf.data path.
"""
from __future__ import annotations

import json
import os

import pytest

from .crash_helpers import cli, env, kill_moment, run, run_and_kill
from .test_crash_train import committed_steps, metric_lines

STEPS, EVERY, N = 12, 3, 128


def train_cmd(data: str, vocab: str, workdir: str, keys_log: str) -> list[str]:
    o = {"data.source": data, "data.loader": "grain", "data.grain_workers": 1, "data.keys_log": keys_log,
         "tokenizer.vocab": vocab, "tokenizer.max_len": 16, "model.embed_dim": 32, "model.image.image_size": 32,
         "model.image.patch_size": 8, "model.image.width": 64, "model.image.depth": 2, "model.image.num_heads": 2,
         "model.image.mlp_dim": 128, "model.text.width": 64, "model.text.depth": 1, "model.text.num_heads": 2,
         "model.text.mlp_dim": 128, "batch_size": 16, "num_train_steps": STEPS, "warmup_steps": 2,
         "learning_rate": 1e-3, "log_every_steps": 1, "checkpoint_every_steps": EVERY, "async_checkpointing": True}
    return cli("train", "--config", "flip_tiny", "--workdir", workdir, *(f"--config.{k}={v}" for k, v in o.items()))


def keys_by_batch(path: str, skip_lines: int = 0) -> dict[int, list[str]]:
    with open(path) as f:
        rows = [json.loads(line) for line in f.readlines()[skip_lines:]]
    return {r["batch"]: r["keys"] for r in rows}


pytestmark = pytest.mark.slow


def test_grain_train_killed_resumes_with_the_same_examples_per_step(tmp_path):
    from flip_helpers import write_records  # tests/train_ref/flip_helpers.py

    from laionprep.train_ref import tokenizer

    from test_grain_pipeline import to_array_record  # tests/train_ref

    data = str(tmp_path / "data")
    src = to_array_record(write_records(data, N, files=4, short_side=40), os.path.join(data, "ar"))
    vocab = str(tmp_path / "vocab.txt")
    tokenizer.learn_vocab(data, 300, vocab)
    e = env(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

    ref_w, ref_log = str(tmp_path / "reference"), str(tmp_path / "reference.jsonl")
    r, _ = run(train_cmd(src, vocab, ref_w, ref_log), env=e, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ref_lines = metric_lines(ref_w)
    ref_loss = {x["step"]: x["train/loss"] for x in ref_lines}
    ref_keys = keys_by_batch(ref_log)
    assert sorted(k for b in range(N // 16) for k in ref_keys[b]) == [f"{i:09d}" for i in range(N)]  # an epoch

    w, log = str(tmp_path / "run"), str(tmp_path / "run.jsonl")
    loop = ref_lines[-2]["time"] - ref_lines[0]["time"]
    # the delay counts from the first committed checkpoint, so the kill always leaves one to resume from
    killed = run_and_kill(train_cmd(src, vocab, w, log), kill_moment(0, loop), env=e,
                          start=lambda: bool(committed_steps(w)))
    before = metric_lines(w)
    ckpt = (committed_steps(w) or [0])[-1]
    assert ckpt >= EVERY, committed_steps(w)
    n_lines = sum(1 for _ in open(log)) if os.path.exists(log) else 0

    r, _ = run(train_cmd(src, vocab, w, log), env=e, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    after = metric_lines(w)[len(before):]
    assert [x["step"] for x in after] == list(range(ckpt + 1, STEPS + 1))
    resumed = keys_by_batch(log, n_lines)
    for step in range(ckpt + 1, STEPS + 1):  # step s trains on batch s-1
        assert resumed[step - 1] == ref_keys[step - 1], step
    for x in after:
        assert x["train/loss"] == pytest.approx(ref_loss[x["step"]], rel=1e-5, abs=1e-6), x["step"]
    data_item = os.path.join(w, "checkpoints", str(STEPS), "data")
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data_item) for f in fs)
    print(f"killed={killed} after step {max([x['step'] for x in before], default=0)}; resumed from checkpoint "
          f"{ckpt}; loader state in the checkpoint: {size} bytes")
    assert size < 4096
    assert killed, "the run ended before the kill"
