"""The Grain loader (``--config.data.loader=grain``) on real ArrayRecord shards: a global shuffle by index that covers
every record once per epoch, the batch contract, exact resume from its state, and resume with another process count
(2 -> 1) that neither repeats nor skips an example of the epoch."""
from __future__ import annotations

import collections
import json
import os

import numpy as np
import pytest

from flip_helpers import write_records
from laionprep.errors import UsageError

N, FILES = 96, 3


def to_array_record(tfrecords: list[str], out: str) -> str:
    """The records of ``tfrecords`` in ArrayRecord files (what `reshard --format array_record` writes per shard)."""
    from laionprep import arrayrecord
    from laionprep.tfrecord import read_records

    os.makedirs(out, exist_ok=True)
    for i, p in enumerate(tfrecords):
        w = arrayrecord.ArrayRecordFileWriter(os.path.join(out, f"pairs-train-{i:05d}-of-{len(tfrecords):05d}"
                                                                ".array_record"))
        for r in read_records(p):
            w.write(r)
        w.close()
    return os.path.join(out, "*.array_record")


@pytest.fixture(scope="module")
def ar_data(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("grain_data"))
    paths = write_records(d, N, files=FILES, short_side=40)
    return d, to_array_record(paths, os.path.join(d, "ar"))


@pytest.fixture(scope="module")
def tok(ar_data):
    from laionprep.train_ref import tokenizer

    vocab = os.path.join(ar_data[0], "vocab.txt")
    tokenizer.learn_vocab(ar_data[0], 200, vocab)
    return tokenizer.Tokenizer(tokenizer.load_vocab(vocab), 16)


def loader(src, tok, log, **kw):
    from laionprep.train_ref.grain_pipeline import GrainLoader

    kw.setdefault("batch_size", 8)
    return GrainLoader(src, tok, image_size=32, seed=7, keys_log=log, **kw)


def read_log(path: str) -> dict[tuple[int, int], list[str]]:
    """{(batch, process): keys}; a batch drawn twice (killed run, then resumed) keeps the last line."""
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            out[(r["batch"], r["process"])] = r["keys"]
    return out


def test_global_shuffle_covers_every_record_once_per_epoch(ar_data, tok, tmp_path):
    log = str(tmp_path / "keys.jsonl")
    ld = loader(ar_data[1], tok, log)
    batches = [next(ld) for _ in range(2 * N // 8)]  # two epochs
    ld.close()
    b = batches[0]
    assert b["image"].shape == (8, 32, 32, 3) and b["image"].dtype == np.uint8  # tf.data's batch contract
    assert b["text"].shape == (8, 16) and b["text"].dtype == np.int32
    keys = [k for i in range(2 * N // 8) for k in read_log(log)[(i, 0)]]
    all_keys = {f"{i:09d}" for i in range(N)}
    first, second = keys[:N], keys[N:]
    assert sorted(first) == sorted(all_keys) == sorted(second)  # each record exactly once per epoch
    assert first != sorted(first) and first != second  # shuffled, and differently each epoch
    st = ld.state()
    assert (st.position, st.batches, st.num_records, st.epoch) == (2 * N, 2 * N // 8, N, 2)


def test_resume_from_the_state_continues_with_identical_batches(ar_data, tok, tmp_path):
    from laionprep.train_ref.grain_pipeline import LoaderState, state_bytes

    a = loader(ar_data[1], tok, str(tmp_path / "a.jsonl"))
    ref = [next(a) for _ in range(9)]
    a.close()
    b = loader(ar_data[1], tok, str(tmp_path / "b.jsonl"))
    [next(b) for _ in range(5)]
    saved = b.state().to_json()
    b.close()
    assert state_bytes(LoaderState.from_json(saved)) < 200  # what the checkpoint holds of the loader
    c = loader(ar_data[1], tok, str(tmp_path / "c.jsonl"))
    c.restore(LoaderState.from_json(json.loads(json.dumps(saved))))
    rest = [next(c) for _ in range(4)]
    c.close()
    for x, y in zip(ref[5:], rest):  # the same examples, crops and tokens
        assert np.array_equal(x["image"], y["image"]) and np.array_equal(x["text"], y["text"])
    assert [read_log(str(tmp_path / "a.jsonl"))[(i, 0)] for i in range(5, 9)] == \
        [read_log(str(tmp_path / "c.jsonl"))[(i, 0)] for i in range(5, 9)]


def test_two_processes_resumed_by_one_neither_repeat_nor_skip(ar_data, tok, tmp_path):
    """Processes 0 and 1 of 2 (4 examples each per step) draw 5 global batches; one process (8 per step) resumes
    from their state and finishes the epoch: every record once, and each global batch is the one a single process
    would have drawn."""
    from laionprep.train_ref.grain_pipeline import LoaderState

    log = str(tmp_path / "keys.jsonl")
    two = [loader(ar_data[1], tok, log, batch_size=4, process_index=p, process_count=2) for p in (0, 1)]
    halves = [[next(ld) for _ in range(5)] for ld in two]
    states = {json.dumps(ld.state().to_json()) for ld in two}
    for ld in two:
        ld.close()
    assert len(states) == 1  # every process holds the same (global) state
    one = loader(ar_data[1], tok, log, batch_size=8)
    one.restore(LoaderState.from_json(json.loads(states.pop())))
    steps_per_epoch = N // 8
    [next(one) for _ in range(steps_per_epoch - 5)]
    one.close()
    seen = read_log(log)
    keys = [k for i in range(5) for p in (0, 1) for k in seen[(i, p)]]
    keys += [k for i in range(5, steps_per_epoch) for k in seen[(i, 0)]]
    counts = collections.Counter(keys)
    assert len(keys) == N and set(counts.values()) == {1} and set(counts) == {f"{i:09d}" for i in range(N)}

    ref_log = str(tmp_path / "ref.jsonl")  # an uninterrupted single process
    ref = loader(ar_data[1], tok, ref_log, batch_size=8)
    ref_batches = [next(ref) for _ in range(5)]
    ref.close()
    r = read_log(ref_log)
    for i in range(5):
        assert r[(i, 0)] == seen[(i, 0)] + seen[(i, 1)]
        # crops are seeded by the global position, not the process: the same pixels
        assert np.array_equal(ref_batches[i]["image"], np.concatenate([halves[0][i]["image"], halves[1][i]["image"]]))


def test_restore_refuses_other_data_or_seed(ar_data, tok, tmp_path):
    from laionprep.errors import DataError
    from laionprep.train_ref.grain_pipeline import LoaderState

    ld = loader(ar_data[1], tok, "")
    with pytest.raises(DataError, match="records"):
        ld.restore(LoaderState(position=8, batches=1, seed=7, num_records=N + 1, global_batch=8))
    with pytest.raises(UsageError, match="seed"):
        ld.restore(LoaderState(position=8, batches=1, seed=8, num_records=N, global_batch=8))
    with pytest.raises(UsageError, match="Grain loader"):
        LoaderState.from_json({"position": 3})


def test_tfrecord_source_is_a_usage_error_naming_the_conversion(ar_data, tok):
    with pytest.raises(UsageError) as e:
        loader(os.path.join(ar_data[0], "tfrecord", "*.tfrecord"), tok, "")
    assert "--format array_record" in e.value.fix and e.value.where == "--config.data.loader"


def test_worker_processes_decode_the_same_batches(ar_data, tok, tmp_path):
    a = loader(ar_data[1], tok, "")
    ref = [next(a) for _ in range(4)]
    a.close()
    w = loader(ar_data[1], tok, "", workers=2)
    got = [next(w) for _ in range(4)]
    w.close()
    for x, y in zip(ref, got):
        assert np.array_equal(x["image"], y["image"]) and np.array_equal(x["text"], y["text"])


def test_workers_exit_when_the_training_process_is_killed_alone(ar_data, tok, tmp_path):
    """kill -9 of the consumer alone (not its process group: the OOM killer, a `kill PID`): its Grain workers must
    not stay behind."""
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    import psutil

    code = textwrap.dedent("""
        import os, sys, time
        import psutil
        from laionprep.train_ref import tokenizer
        from laionprep.train_ref.grain_pipeline import GrainLoader
        src, vocab = sys.argv[1:3]
        tok = tokenizer.Tokenizer(tokenizer.load_vocab(vocab), 16)
        ld = GrainLoader(src, tok, image_size=32, batch_size=8, seed=7, workers=2)
        next(ld)
        print("SLOTS", " ".join(n for ns in ld._pools["image"].names for n in ns), flush=True)
        print("WORKERS", " ".join(str(c.pid) for c in psutil.Process().children(recursive=True)), flush=True)
        time.sleep(600)
    """)
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(here, "..", "..", "src"), here,
                                                       os.environ.get("PYTHONPATH", "")]))
    p = subprocess.Popen([sys.executable, "-c", code, ar_data[1], os.path.join(ar_data[0], "vocab.txt")],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line, slots = "", []
    deadline = time.time() + 300
    while not line.startswith("WORKERS") and time.time() < deadline:
        line = p.stdout.readline()
        slots += line.split()[1:] if line.startswith("SLOTS") else []
        if not line and p.poll() is not None:
            break
    assert line.startswith("WORKERS") and slots, p.poll()
    workers = [psutil.Process(int(x)) for x in line.split()[1:]]
    decoding = [w for w in workers if "python" in w.name().lower()]
    assert len(decoding) >= 2  # the two decoding workers (and multiprocessing's resource tracker)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    gone, alive = psutil.wait_procs(decoding, timeout=30)
    for w in alive:
        w.kill()
    assert not alive, [w.pid for w in alive]
    # the shared-memory slots of the batches (shm_slots): multiprocessing's resource tracker unlinks them once
    # every process of the run is gone
    deadline = time.time() + 30
    while [n for n in slots if os.path.exists("/dev/shm" + n)] and time.time() < deadline:
        time.sleep(0.2)
    assert not [n for n in slots if os.path.exists("/dev/shm" + n)]


def test_array_record_source_with_tf_data_is_a_usage_error_naming_grain(ar_data):
    from laionprep.train_ref import input_pipeline
    from laionprep.train_ref.grain_pipeline import check_streamable

    src = input_pipeline.resolve_source(ar_data[1])
    assert src.description == f"{FILES} ArrayRecord files matching {ar_data[1]}"  # what the trainer's log says
    with pytest.raises(UsageError) as e:
        check_streamable(src)
    assert e.value.fix == "add --config.data.loader=grain" and e.value.where == "--config.data.source"
    check_streamable(input_pipeline.resolve_source(os.path.join(ar_data[0], "tfrecord", "*.tfrecord")))  # fine


def _slot_of(batch):
    from laionprep.train_ref import shm_slots

    base = batch["image"].base
    return base.key if isinstance(base, shm_slots._HandedBatch) else None


def test_worker_batches_come_in_reused_slots_never_overwritten_while_held(ar_data, tok):
    """The workers hand image batches over in reused shared memory (shm_slots): a batch the consumer still holds
    is never overwritten, one it dropped frees its slot, and with every slot held the batch still arrives whole
    (Grain's own copy).  Batches stay readable after close(), and close() leaves no segment behind."""
    a = loader(ar_data[1], tok, "")
    ref = [next(a)["image"].copy() for _ in range(48)]
    a.close()
    w = loader(ar_data[1], tok, "", workers=1)
    dropped = []
    for i in range(16):  # dropped at once: every one comes in one of the 12 slots, so slots are reused
        b = next(w)
        dropped.append(_slot_of(b))
        assert np.array_equal(b["image"], ref[i])
        del b
    assert len(w._pools["image"].names[0]) == 12 and None not in dropped
    held = [next(w) for _ in range(32)]  # more than the 12 slots: the rest comes as Grain's copies
    slots = [_slot_of(b) for b in held]
    assert 0 < sum(s is not None for s in slots) <= 12 and None in slots
    names = [n for ns in w._pools["image"].names for n in ns]
    w.close()
    assert not [n for n in names if os.path.exists("/dev/shm" + n)]
    for i, b in enumerate(held):
        assert np.array_equal(b["image"], ref[16 + i]), i


def test_slots_of_a_killed_process_group_are_swept_by_the_next_pool():
    """kill -9 of the whole process group (a job scheduler's kill, Ctrl-\\ of a shell job) takes multiprocessing's
    resource tracker with it, so nothing unlinks that run's slots; the next loader's pool does, and leaves a live
    pool's slots alone."""
    import signal
    import subprocess
    import sys
    import textwrap

    from laionprep.train_ref import shm_slots

    code = textwrap.dedent("""
        import time
        from laionprep.train_ref import shm_slots
        pool = shm_slots.SlotPool(2, 3, 4096)
        print(" ".join(n for ns in pool.names for n in ns), flush=True)
        time.sleep(600)
    """)
    live = shm_slots.SlotPool(1, 2, 4096)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stale = p.stdout.readline().split()
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert len(stale) == 6
    assert all(os.path.exists("/dev/shm" + n) for n in stale)  # the tracker died with the group
    try:
        pool = shm_slots.SlotPool(1, 1, 4096)
        assert not [n for n in stale if os.path.exists("/dev/shm" + n)]
        assert all(os.path.exists("/dev/shm" + n) for ns in live.names for n in ns)
        pool.close()
    finally:
        live.close()
        for n in stale:
            if os.path.exists("/dev/shm" + n):
                os.unlink("/dev/shm" + n)


def test_too_little_shared_memory_is_a_usage_error_not_a_sigbus():
    """A small /dev/shm (Docker's 64 MB default) must not kill a worker with SIGBUS: the pool checks the room for
    its slots, and a worker reserves a slot's pages before writing it (here a slot larger than the whole tmpfs)."""
    from laionprep.train_ref import shm_slots

    st = os.statvfs("/dev/shm")
    too_big = st.f_blocks * st.f_frsize + (1 << 30)  # sparse segments of this size are fine; writing them is not
    with pytest.raises(UsageError) as e:
        shm_slots.SlotPool(1, 2, too_big)
    assert e.value.where == "/dev/shm" and "--shm-size" in e.value.fix and "1 worker(s) x 2 batches" in e.value.what
    name = f"/lp{os.getpid():x}abcdefw0s0"
    shm_slots._Mapping(name, too_big, create=True)
    try:
        with pytest.raises(UsageError) as e:
            shm_slots.WorkerSlots(0, [name], too_big).put(np.ones((4, 4), np.uint8))
        assert "--shm-size" in e.value.fix and name in e.value.what
    finally:
        os.unlink("/dev/shm" + name)


def test_a_worker_out_of_shared_memory_stops_the_loader_with_the_usage_error(ar_data, tok, monkeypatch):
    """The room can run out after the pool's check (other processes use /dev/shm too): the worker's error reaches
    the training process as the same UsageError, not as a worker dead of SIGBUS."""
    from laionprep.train_ref import shm_slots

    st = os.statvfs("/dev/shm")
    too_big = st.f_blocks * st.f_frsize + (1 << 30)
    make = shm_slots.SlotPool.__init__
    monkeypatch.setattr(shm_slots, "_free_bytes", lambda directory="": 1 << 50)  # the pool's check passes
    monkeypatch.setattr(shm_slots.SlotPool, "__init__", lambda self, w, s, n: make(self, w, s, too_big))
    w = loader(ar_data[1], tok, "", workers=1)
    try:
        with pytest.raises(UsageError) as e:
            next(w)
        assert "--shm-size" in str(e.value) and "slot /lp" in str(e.value)
    finally:
        w.close()


def _captions_by_key(ar_data) -> dict[str, bytes]:
    from laionprep import tfrecord

    out = {}
    for p in sorted(os.listdir(os.path.join(ar_data[0], "tfrecord"))):
        for r in tfrecord.read_records(os.path.join(ar_data[0], "tfrecord", p)):
            f = tfrecord.Example.FromString(r).features.feature
            out[f["key"].bytes_list.value[0].decode()] = f["txt"].bytes_list.value[0]
    return out


@pytest.mark.parametrize("workers", [0, 1])
def test_the_text_is_the_batch_captions_tokenized_and_reduced_by_batch_number(ar_data, tok, tmp_path, workers):
    """The loader makes the text where it decodes (in the worker processes): each batch's text is its captions
    tokenized, then reduced by CLIPA's random strategy seeded with the batch's number in the run -- also after a
    resume, which continues the numbering."""
    from laionprep.train_ref.grain_pipeline import LoaderState
    from laionprep.train_ref.text_reduction import TextReducer

    red = TextReducer("random", 6, cls_id=tok.cls_id, sep_id=tok.sep_id, pad_id=tok.pad_id, seed=3)
    captions = _captions_by_key(ar_data)
    log = str(tmp_path / "k.jsonl")
    a = loader(ar_data[1], tok, log, workers=workers, text_transform=red)
    got = [next(a)["text"] for _ in range(3)]
    state = a.state()
    a.close()
    b = loader(ar_data[1], tok, log, workers=workers, text_transform=red)
    b.restore(LoaderState.from_json(state.to_json()))
    got += [next(b)["text"] for _ in range(2)]
    b.close()
    keys = read_log(log)
    for n, text in enumerate(got):
        want = red(tok.tokenize([captions[k] for k in keys[(n, 0)]]), n).numpy()
        assert text.shape == (8, 6) and np.array_equal(text, want), n
    assert not np.array_equal(got[0], red(tok.tokenize([captions[k] for k in keys[(0, 0)]]), 1).numpy())


def test_rendered_captions_come_from_the_workers_in_slots(ar_data, tmp_path):
    """CLIPPO: the captions rendered as images in the worker, handed over in slots like the images; the same
    pixels as rendering them in this process."""
    from laionprep.train_ref import shm_slots, text_render

    try:
        renderer = text_render.TextRenderer(text_render.find_unifont(), image_size=64)
    except UsageError as e:
        pytest.fail(f"GNU Unifont is not installed here (`make install` as root installs it): {e}")
    captions = _captions_by_key(ar_data)
    log = str(tmp_path / "k.jsonl")
    w = loader(ar_data[1], renderer, log, workers=1, batch_size=8)
    assert set(w._array_bytes) == {"image", "text"}  # 8 x 64 x 64 x 3 bytes of text: a slot too
    batches = [next(w) for _ in range(3)]
    keys = read_log(log)
    for n, b in enumerate(batches):
        assert isinstance(b["text"].base, shm_slots._HandedBatch)
        assert np.array_equal(b["text"], renderer([captions[k].decode() for k in keys[(n, 0)]])), n
    w.close()


def test_record_order_is_grains_shuffle_repeat_across_epochs(ar_data):
    """The loader reads each position's record directly (record_index): exactly the record Grain's
    ``MapDataset.source(...).shuffle(seed).repeat()`` gives at that index, a fresh permutation per epoch."""
    import grain

    from laionprep.train_ref.grain_pipeline import array_record_files, record_index
    from laionprep.train_ref.input_pipeline import resolve_source

    src = grain.sources.ArrayRecordDataSource(array_record_files(resolve_source(ar_data[1])))
    ds = grain.MapDataset.source(src).shuffle(seed=7).repeat()
    mine = [src[record_index(g, N, 7)] for g in range(3 * N)]
    assert mine == [ds[g] for g in range(3 * N)]
    assert mine[:N] != mine[N:2 * N] and sorted(mine[:N]) == sorted(mine[N:2 * N])
