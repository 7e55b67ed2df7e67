"""Real training runs of a tiny FLIP: the loss falls, 8 devices == 1 device, a killed run resumes on the same loss
curve, pretrain_dir starts from another run, evaluation restores a run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from flip_helpers import resume_config
from laionprep.train_ref import checkpointing, evaluate, train

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", "..", "src"))


def _losses(workdir: str) -> dict[int, float]:
    """step -> loss from metrics.jsonl (the last line of a step wins: a resumed run rewrites the steps it redoes)."""
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            if "train/loss" in row:
                out[row["step"]] = row["train/loss"]
    return out


def _subprocess(code: str, env_extra: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, HERE, os.environ.get("PYTHONPATH", "")]))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, flip_data, vocab_file):
    """An uninterrupted 12-step run (checkpoints every 4 steps) that the resume test compares against; it computes
    in bfloat16 and rematerialises activations (FLIP's large-model settings)."""
    w = str(tmp_path_factory.mktemp("run_a"))
    cfg = resume_config(flip_data, vocab_file)
    res = train.train_and_evaluate(cfg, w, quiet=True)
    assert res["step"] == 12 and np.isfinite(res["loss"])
    return w, cfg, res



def test_one_step_on_8_devices_equals_1_device(tmp_path, flip_data, vocab_file):
    """The same two training steps on a 1-device mesh and on 8 simulated CPU devices, with parameters replicated
    and with them sharded (partition_states): same loss, same gradients, same parameters afterwards."""
    from laionprep.train_ref import input_pipeline, runtime, tokenizer

    tok = tokenizer.Tokenizer(tokenizer.load_vocab(vocab_file), 16)
    it = iter(input_pipeline.train_dataset(flip_data, tok, image_size=32, batch_size=16, shuffle_buffer=8))
    batches = [runtime.tf_numpy(next(it)) for _ in range(2)]
    np.savez(tmp_path / "batches.npz", **{f"{k}{i}": v for i, b in enumerate(batches) for k, v in b.items()})
    code = f"""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        import json, jax, numpy as np
        from flip_helpers import tiny_config
        from laionprep.train_ref import models, optim, runtime, train

        cfg = tiny_config({flip_data!r}, {vocab_file!r}, warmup_steps=0, learning_rate=1e-2, batch_size=16)
        assert jax.device_count() == 8
        model = models.build_model(cfg.model, {tok.vocab_size}, cfg.tokenizer.max_len)
        tx, sched = optim.make_optimizer(cfg, *optim.schedule_steps(cfg))
        z = np.load({str(tmp_path / "batches.npz")!r})
        batches = [{{"image": z[f"image{{i}}"], "text": z[f"text{{i}}"]}} for i in range(2)]
        key = jax.random.PRNGKey(0)
        init = train._init_fn(model, tx, cfg)
        state0 = jax.device_get(jax.jit(init)(key))  # one initial state (on the host), placed on each mesh below

        def run(devices, partition):
            mesh = runtime.make_mesh(devices)
            sh = runtime.state_shardings(jax.eval_shape(init, key), mesh, partition)
            sh["step"] = runtime.replicated(mesh)
            state = jax.device_put(state0, sh)
            step = train.compile_train_step(train.make_train_step(model, tx, sched, cfg, mesh, with_grads=True), sh,
                                            mesh)
            out = []
            for b in batches:
                gb = runtime.global_batch(b, runtime.batch_sharding(mesh))
                assert len(gb["image"].sharding.device_set) == len(devices)
                state, m = step(state, gb)
                g = [np.asarray(x) for x in jax.tree_util.tree_leaves(m.pop("grads"))]
                out.append(({{k: float(v) for k, v in m.items()}}, g,
                            [np.asarray(x) for x in jax.tree_util.tree_leaves(state["params"])]))
            kernel = state["params"]["image"]["encoder"]["block_00"]["mlp"]["fc1"]["kernel"]
            return out, str(kernel.sharding.spec)

        one, _ = run(jax.devices()[:1], False)
        report = {{}}
        for name, partition in (("dp8", False), ("fsdp8", True)):
            res, spec = run(jax.devices(), partition)
            report[name] = {{"spec": spec, "steps": []}}
            for (m1, g1, p1), (m8, g8, p8) in zip(one, res):
                diffs = np.concatenate([np.abs(a - b).ravel() for a, b in zip(p1, p8)])
                report[name]["steps"].append({{
                    "loss": [m1["loss"], m8["loss"]], "grad_norm": [m1["grad_norm"], m8["grad_norm"]],
                    "grad_max_err": max(float(np.max(np.abs(a - b))) for a, b in zip(g1, g8)),
                    "grad_max_abs": max(float(np.max(np.abs(a))) for a in g1),
                    "param_max_diff": float(diffs.max()), "param_frac_diff_gt_1e-6": float(np.mean(diffs > 1e-6)),
                    "lr": m1["lr"]}})
        print("REPORT" + json.dumps(report))
    """
    r = _subprocess(code)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.split("REPORT", 1)[1])
    assert report["dp8"]["spec"] in ("P()", "PartitionSpec()")  # replicated parameters
    assert "data" in report["fsdp8"]["spec"]  # partition_states really shards them over the 8 devices
    for name in ("dp8", "fsdp8"):
        for s in report[name]["steps"]:
            assert s["loss"][1] == pytest.approx(s["loss"][0], rel=1e-5, abs=1e-6), (name, s)
            assert s["grad_norm"][1] == pytest.approx(s["grad_norm"][0], rel=1e-4), (name, s)
            # every gradient entry, to float32 reduction-order noise (relative to the gradients' scale: some, like
            # the attention key biases, are exactly 0 in theory and pure rounding noise in practice)
            assert s["grad_max_err"] < 1e-5 * s["grad_max_abs"], (name, s)
            # Adam's early updates are ~lr * sign(gradient): the few entries whose gradient is ~0 may differ by up
            # to 2 lr; everything else must agree.
            assert s["param_max_diff"] <= 2.01 * s["lr"], (name, s)
            assert s["param_frac_diff_gt_1e-6"] < 0.01, (name, s)


def test_killed_run_resumes_on_the_same_loss_curve(tmp_path, run_a, flip_data, vocab_file):
    a_dir, cfg, _ = run_a
    b_dir = str(tmp_path / "run_b")
    code = f"""
        import os, signal, time
        from flip_helpers import resume_config
        from laionprep.train_ref import train
        cfg = resume_config({flip_data!r}, {vocab_file!r})

        def hook(step, metrics):
            if step == 7:  # between the checkpoints at 4 and 8
                # the step-4 checkpoint is written asynchronously: kill once it is committed (a real run's steps
                # take long enough; these take milliseconds)
                deadline = time.time() + 120
                while not os.path.isdir(os.path.join({b_dir!r}, "checkpoints", "4")) and time.time() < deadline:
                    time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGKILL)

        train.train_and_evaluate(cfg, {b_dir!r}, step_hook=hook, quiet=True)
    """
    r = _subprocess(code)
    assert r.returncode == -9, (r.returncode, r.stderr[-2000:])
    assert sorted(_losses(b_dir)) == list(range(1, 8))  # it really ran 7 steps before dying
    mngr = checkpointing.make_manager(b_dir, read_only=True, async_save=False)
    assert mngr.latest_step() == 4
    mngr.close()

    res = train.train_and_evaluate(cfg, b_dir, quiet=True)  # same command again: resumes at step 4
    assert res["step"] == 12
    with open(os.path.join(b_dir, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f if "train/loss" in line]
    assert steps == list(range(1, 8)) + list(range(5, 13))  # resumed at 5, not restarted at 1
    la, lb = _losses(a_dir), _losses(b_dir)
    assert sorted(la) == sorted(lb) == list(range(1, 13))
    for s in range(1, 13):
        assert lb[s] == pytest.approx(la[s], rel=1e-5, abs=1e-6), (s, la[s], lb[s])
    # and the final parameters are the same
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                      checkpointing.load_params(a_dir, None)[0])
    pa, _ = checkpointing.load_params(a_dir, abstract)
    pb, _ = checkpointing.load_params(b_dir, abstract)
    for x, y in zip(jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


def test_pretrain_dir_and_evaluate(tmp_path, run_a, eval_folder):
    a_dir, cfg, _ = run_a
    cfg = cfg.copy_and_resolve_references()
    cfg.eval.source = eval_folder
    ev_a = evaluate.evaluate(cfg, a_dir)
    assert ev_a["step"] == 12 and ev_a["num_examples"] == 240 and ev_a["num_classes"] == 30
    assert os.path.exists(os.path.join(a_dir, "eval_results.json"))
    # evaluating another run through pretrain_dir gives the same numbers
    cfg_p = cfg.copy_and_resolve_references()
    cfg_p.pretrain_dir = a_dir
    ev_c = evaluate.evaluate(cfg_p, str(tmp_path / "eval_only"))
    assert (ev_c["top1"], ev_c["top5"]) == (ev_a["top1"], ev_a["top5"])
    # unmasked tuning from run A: parameters start from A's (lr 0 here, so they stay A's), step counts from 0
    cfg_t = cfg_p.copy_and_resolve_references()
    cfg_t.model.image.mask_ratio = 0.0
    cfg_t.learning_rate = 0.0
    cfg_t.num_train_steps = 2
    cfg_t.eval.source = ""
    tdir = str(tmp_path / "tuned")
    res = train.train_and_evaluate(cfg_t, tdir, quiet=True)
    assert res["step"] == 2
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                      checkpointing.load_params(a_dir, None)[0])
    pa, sa = checkpointing.load_params(a_dir, abstract)
    pt, st = checkpointing.load_params(tdir, abstract)
    assert (sa, st) == (12, 2)
    for x, y in zip(jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pt)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with open(os.path.join(tdir, "vocab.txt")) as f1, open(os.path.join(a_dir, "vocab.txt")) as f2:
        assert f1.read() == f2.read()  # the tuned run uses the pre-trained run's vocabulary


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_run_through_jax_distributed(tmp_path, flip_data, vocab_file, eval_folder):
    """Two processes on this machine started the way a multi-host job is (JAX_COORDINATOR_ADDRESS ... ->
    jax.distributed.initialize): each reads its own half of the files, they train one model on the global batch,
    checkpoint (one input position per process), die, resume, and evaluate every image exactly once."""
    workdir = str(tmp_path / "run")
    port = _free_port()
    code = """
        import json, os, sys, time
        from flip_helpers import tiny_config
        from laionprep.train_ref import train
        flip_data, vocab, eval_folder, workdir, crash_at = sys.argv[1:6]
        cfg = tiny_config(flip_data, vocab, num_train_steps=6, checkpoint_every_steps=3, batch_size=16,
                          eval__source=eval_folder, eval__batch_size=32)

        def hook(step, metrics):
            if step == int(crash_at):  # both processes die between checkpoints, once step 3's is committed
                deadline = time.time() + 120
                while not os.path.isdir(os.path.join(workdir, "checkpoints", "3")) and time.time() < deadline:
                    time.sleep(0.05)
                os._exit(3)

        res = train.train_and_evaluate(cfg, workdir, quiet=True, step_hook=hook)
        import jax
        print("RESULT" + json.dumps(dict(res, process=jax.process_index(), processes=jax.process_count(),
                                          devices=jax.device_count())))
    """

    def run_both(crash_at: int):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, HERE, os.environ.get("PYTHONPATH", "")]),
                   JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PLATFORMS="cpu")
        procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), flip_data, vocab_file, eval_folder,
                                   workdir, str(crash_at)], env=dict(env, JAX_PROCESS_ID=str(i)),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        outs = [p.communicate(timeout=400) for p in procs]
        return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]

    first = run_both(crash_at=4)
    assert [rc for rc, _, _ in first] == [3, 3], first[0][2][-3000:]
    data_dir = os.path.join(workdir, "checkpoints", "3", "data")
    assert sorted(f for f in os.listdir(data_dir) if f.endswith(".index")) == ["process_0.index", "process_1.index"]

    second = run_both(crash_at=0)  # the same command again: both processes resume at step 3
    for rc, _, err in second:
        assert rc == 0, err[-3000:]
    r0, r1 = (json.loads(out.split("RESULT", 1)[1]) for _, out, _ in second)
    assert (r0["process"], r1["process"], r0["processes"], r0["devices"]) == (0, 1, 2, 2)
    assert r0["step"] == r1["step"] == 6
    assert r0["loss"] == pytest.approx(r1["loss"], rel=1e-6)  # one model, one global batch
    assert r0["num_examples"] == r1["num_examples"] == 240  # each image evaluated once over both processes
    assert r0["top1"] == r1["top1"]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f if "train/loss" in line]
    assert steps == [1, 2, 3, 4, 4, 5, 6]  # died after step 4, resumed from the checkpoint at 3


def test_multihost_detection(monkeypatch):
    from laionprep.train_ref import runtime

    for k in ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS",
              "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert runtime._multihost_env() is False  # a laptop / one GPU host: no jax.distributed
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.1")
    assert runtime._multihost_env() is False  # a single-host TPU VM
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "10.0.0.1,10.0.0.2")
    assert runtime._multihost_env() is True  # a pod slice
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES")
    monkeypatch.setenv("SLURM_NTASKS", "16")
    assert runtime._multihost_env() is True
