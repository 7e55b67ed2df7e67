"""Training fed by the Grain loader: two processes (jax.distributed on this machine) train, checkpoint and die; ONE
process resumes from their checkpoint and finishes the epoch.  Every record of the epoch is trained on exactly once,
and the global batches after the resume are the ones the two processes had drawn."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import textwrap

import pytest

from flip_helpers import write_records
from test_grain_pipeline import read_log, to_array_record

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", "..", "src"))
N, BATCH, STEPS = 128, 16, 8  # one epoch


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CODE = """
    import json, os, sys, time
    from flip_helpers import tiny_config
    from laionprep.train_ref import train
    data, vocab, workdir, keys_log, crash_at = sys.argv[1:6]
    cfg = tiny_config(data, vocab, num_train_steps=%d, checkpoint_every_steps=4, batch_size=%d,
                      data__loader="grain", data__keys_log=keys_log)

    def hook(step, metrics):
        if step == int(crash_at):  # die between checkpoints, once step 4's is committed
            deadline = time.time() + 120
            while not os.path.isdir(os.path.join(workdir, "checkpoints", "4")) and time.time() < deadline:
                time.sleep(0.05)
            os._exit(3)

    res = train.train_and_evaluate(cfg, workdir, quiet=True, step_hook=hook)
    import jax
    print("RESULT" + json.dumps(dict(res, processes=jax.process_count())))
""" % (STEPS, BATCH)


@pytest.mark.slow
def test_two_processes_killed_then_one_resumes_the_epoch_exactly(tmp_path, vocab_file):
    data = str(tmp_path / "data")
    src = to_array_record(write_records(data, N, files=4, short_side=40), os.path.join(data, "ar"))
    workdir, log = str(tmp_path / "run"), str(tmp_path / "keys.jsonl")
    base = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, HERE, os.environ.get("PYTHONPATH", "")]),
                JAX_PLATFORMS="cpu")
    args = [sys.executable, "-c", textwrap.dedent(CODE), src, vocab_file, workdir, log]
    port = _free_port()
    procs = [subprocess.Popen(args + ["5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(base, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                                       JAX_PROCESS_ID=str(i))) for i in range(2)]
    first = [(p, *p.communicate(timeout=600)) for p in procs]
    assert [p.returncode for p, _, _ in first] == [3, 3], first[0][2][-3000:]
    killed = read_log(log)
    n_lines = sum(1 for _ in open(log))
    data_item = os.path.join(workdir, "checkpoints", "4", "data")
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(data_item) for f in fs)
    print(f"loader state in the checkpoint: {size} bytes ({data_item})")
    assert size < 4096

    r = subprocess.run(args + ["0"], capture_output=True, text=True, timeout=600, env=base)  # one process
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.split("RESULT", 1)[1])
    assert res["step"] == STEPS and res["processes"] == 1
    with open(log) as f:
        lines = [json.loads(x) for x in f.readlines()[n_lines:]]
    resumed = {x["batch"]: x["keys"] for x in lines}
    assert {x["process"] for x in lines} == {0} and min(resumed) == 4  # resumed at step 4's position

    # steps 1-4 from the two processes (batches 0-3), steps 5-8 from the one (batches 4-7): the epoch, once each
    keys = [k for b in range(4) for p in (0, 1) for k in killed[(b, p)]]
    keys += [k for b in range(4, STEPS) for k in resumed[b]]
    counts = collections.Counter(keys)
    assert len(keys) == N and set(counts.values()) == {1} and set(counts) == {f"{i:09d}" for i in range(N)}
    # what the two processes had drawn after the checkpoint is what the one process drew: the same global batches
    for b in (4, 5):
        assert resumed[b] == killed[(b, 0)] + killed[(b, 1)], b
