"""Helpers for the crash tests: run a ``laionprep`` command in its own process group, kill -9 the whole group at a
moment drawn from a seeded RNG, and read back every record of a folder by key (duplicates counted, not hidden)."""
from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time

from laionprep import fs as lfs
from laionprep import shards
from laionprep.tfrecord import read_records

SEEDS = (0, 1, 2)
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", "..", "src"))
# the other test folders' helper modules (reshard_helpers, flip_helpers), imported the way their own tests do
for _d in ("sharding", "train_ref"):
    if os.path.join(HERE, "..", _d) not in sys.path:
        sys.path.insert(0, os.path.join(HERE, "..", _d))


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "laionprep.cli", *args]


def env(**extra: str) -> dict:
    """The environment of a CLI subprocess: this checkout's ``src`` first, so the code under test is what runs."""
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    e.update(extra)
    return e


def run(cmd: list[str], timeout: float = 300, **kw) -> tuple[subprocess.CompletedProcess, float]:
    """Run to completion; returns (result, seconds)."""
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=kw.pop("env", env()), **kw)
    return r, time.monotonic() - t0


def kill_moment(seed: int, duration: float) -> float:
    """A kill delay drawn at random from [5%, 95%] of an uninterrupted run's duration, reproducible per seed and
    stratified: seed k of the n in SEEDS draws uniformly from the k-th of n equal slices of that range, so a few
    seeds cover the start, the middle and the end of a run instead of clustering."""
    k, n = SEEDS.index(seed), len(SEEDS)
    width = 0.9 / n
    return random.Random(f"laionprep-crash-{seed}").uniform(0.05 + k * width, 0.05 + (k + 1) * width) * duration


def run_and_kill(cmd: list[str], delay: float, *, start=None, **kw) -> bool:
    """Start ``cmd`` in a new session, SIGKILL its whole process group ``delay`` seconds later (workers, Beam SDK
    harnesses and img2dataset processes die with it).  With ``start`` (a callable), the delay counts from the moment
    ``start()`` first returns True (polled every 10 ms), e.g. when a training run logs its first step.  Returns True
    if the command was still running when killed."""
    p = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=kw.pop("env", env()), **kw)
    if start is not None:
        deadline = time.monotonic() + 600
        while not start() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
    try:
        p.wait(timeout=delay)
        return False  # it finished first
    except subprocess.TimeoutExpired:
        pass
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    _wait_group_gone(p.pid)
    return True


def kill_at(cmd: list[str], seed: int, duration: float, reset, **kw) -> float:
    """Run ``cmd`` and kill its process group at seed ``seed``'s moment of ``duration`` (:func:`kill_moment`).  If the
    command finished first (it ran faster than the reference run, e.g. on a less loaded machine), ``reset()`` its
    output and run it again, killed at the same fraction of the shortest duration measured so far (a few times).
    Returns the delay of the kill that happened; fails the test if the command could not be killed while running."""
    delay = kill_moment(seed, duration)
    shortest = duration
    for _ in range(3):  # run times vary with the machine's load: aim at the shortest run seen so far
        t0 = time.monotonic()
        if run_and_kill(cmd, delay, **dict(kw)):
            return delay
        shortest = min(shortest, time.monotonic() - t0)
        reset()
        delay = kill_moment(seed, shortest)
    assert run_and_kill(cmd, delay, **kw), f"the command ended before the kill at {delay:.2f}s of {shortest:.2f}s"
    return delay


def _wait_group_gone(pgid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def keys_of_files(paths) -> collections.Counter:
    """key -> number of records carrying it, over TFRecord files read with laionprep.tfrecord (CRCs verified)."""
    out: collections.Counter = collections.Counter()
    for p in paths:
        for data in read_records(p):
            out[shards.parse_example(data)["key"][1][0].decode()] += 1
    return out


def download_keys(download_dir: str) -> collections.Counter:
    return keys_of_files(s.tfrecord for s in shards.scan(download_dir).shards)


def temp_files(folder: str) -> list[str]:
    """Files a killed run could leave behind under a temporary name."""
    out = []
    for root, _, files in os.walk(folder):
        out += [os.path.join(root, f) for f in files if lfs.TMP_MARK in f]
    return out


def download_args(source: str, out: str, *extra: str, processes: int = 2) -> list[str]:
    """The arguments of ``laionprep download`` of demo metadata at ``source`` (images served from 127.0.0.1): the one
    place the reliability tests spell them."""
    return ["download", "--dataset", "demo", "--metadata-source", source, "--output", out, "--processes",
            str(processes), "--threads", "4", "--no-progress", "--allow-private-addresses", *extra]


def download_cmd(source: str, out: str, shard_size: int) -> list[str]:
    return cli(*download_args(source, out, "--number-sample-per-shard", str(shard_size)))
