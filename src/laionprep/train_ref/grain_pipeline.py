"""The Grain input pipeline (``--config.data.loader=grain``): random access into ArrayRecord shards, a global
shuffle by index, and a loader state of a few integers that any number of processes can resume from.

Order.  The examples of all processes form ONE sequence of global positions ``g = 0, 1, 2, ...``; position ``g`` is
record ``perm_e(g mod N)`` of epoch ``e = g // N``, ``perm_e`` being Grain's index shuffle seeded with
``config.seed + e`` (``MapDataset.shuffle().repeat()``: a Feistel-style permutation computed per index, no table of N
entries, so 2B records cost no memory).  Global batch ``k`` (``G`` = per-process batch ``B`` x processes) is
positions ``[start + k G, start + (k+1) G)``; process ``p`` takes the ``B`` of them at offset ``p B``.  So:

* the loader state is the next global position (plus the seed and N, checked on resume): ``LoaderState``;
* a resumed run continues with exactly the batches an uninterrupted run would have drawn;
* resuming with another process count (and the same global batch) re-splits the same global batches: no example
  of the epoch is repeated or skipped.  Only the split among processes changes.

Every example's random crop/flip is seeded by its global position (``fold_in([seed, 0], g)``), not by a per-process
counter as in tf.data, so the crops do not depend on the process count either.

Work split.  One Grain element is one process-local batch: the records are read in the worker that decodes them
(``mp_prefetch``: ``data.grain_workers`` spawned processes, elements ``w::W`` each, re-ordered by Grain), where
:func:`input_pipeline.train_batch` -- the very function tf.data's batch map calls -- parses and crop-decodes them,
and the run's tokenizer (CLIPA's text reduction, or CLIPPO's renderer) makes the batch's text, all in one
``tf.function`` over the batch.  The arrays come back in reused shared-memory slots (:mod:`shm_slots`), so the
training process only maps them: the batch contract ``{'image': uint8 [B,S,S,3], 'text': ...}`` of tf.data.
Tokenizing in the training process instead cost ~130 us of its CPU per image (an eager TensorFlow call per batch
on TF's global thread pools; BENCHMARKS.md), ~8% of the work per image.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from laionprep._env import import_tf
from laionprep.errors import DataError, UsageError
from laionprep.folders.names import file_format_of
from laionprep.train_ref import input_pipeline, shm_slots

STATE_FORMAT = "laionprep.grain_loader/1"
_NEVER_ENDS = 1 << 62  # elements of the (endless) batch dataset; Grain only needs a length
_MIN_SHM_BYTES = 1 << 16  # arrays below this are pickled into Grain's queue, not given a shared-memory segment


def array_record_files(src: input_pipeline.Source) -> list[str]:
    """The ArrayRecord files of a resolved source (a reshard output or a TFDS registration of one); a source without
    random access (TFRecord) is a usage error naming the fix."""
    files: list[str] = []
    if src.kind == "files":  # a reshard output in both formats (--format both) has its ArrayRecord copies too
        files = list(src.alternatives.get("array_record") or src.files)
    elif src.kind == "tfds" and "array_record" in {f.value for f in src.builder.info.available_file_formats()}:
        if src.split not in src.builder.info.splits:
            raise UsageError(f"{src.description} has no split {src.split!r} "
                             f"(it has: {', '.join(src.builder.info.splits.keys())})", where="data.split")
        # file_format, or an alternative_file_formats entry (build-tfds of a --format both reshard): the same
        # template with TFDS's array_record suffix
        tpl = src.builder.info.splits[src.split].filename_template.replace(filetype_suffix="array_record")
        files = [str(p) for p in tpl.sharded_filepaths(num_shards=src.builder.info.splits[src.split].num_shards)]
    if not files or any(file_format_of(f) != "array_record" for f in files):
        raise UsageError(f"{src.description}: the Grain loader reads ArrayRecord shards (random access), this source "
                         "is TFRecord", where="--config.data.loader",
                         fix="reshard it with `laionprep reshard SRC --output OUT --name NAME --format array_record` "
                             "(or --format both) (no filters: a conversion) and train on OUT, or use "
                             "--config.data.loader=tf.data")
    return files


def check_streamable(src: input_pipeline.Source) -> None:
    """tf.data streams TFRecords only: an ArrayRecord source needs the Grain loader."""
    arrays = (src.kind == "files" and any(file_format_of(f) == "array_record" for f in src.files)) or (
        src.kind == "tfds" and str(src.builder.info.file_format.value) == "array_record")
    if arrays:
        raise UsageError(f"{src.description} holds ArrayRecord shards, which tf.data does not stream",
                         where="--config.data.source", fix="add --config.data.loader=grain")


@dataclasses.dataclass(frozen=True)
class LoaderState:
    """What a checkpoint holds of the Grain loader (a JSON object of ~150 bytes)."""

    position: int  # the next global position (examples drawn by all processes so far, over all epochs)
    batches: int  # global batches drawn so far (CLIPA's text reduction counts them)
    seed: int
    num_records: int
    global_batch: int  # informational: a resume may use another process count and per-process batch

    def to_json(self) -> dict:
        return {"format": STATE_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, d: dict, where: str = "checkpoint") -> "LoaderState":
        if not isinstance(d, dict) or d.get("format") != STATE_FORMAT:
            raise UsageError("the checkpoint's input position was not written by the Grain loader", where=where,
                             fix="resume with the data.loader the run was started with (tf.data is the default)")
        return cls(**{f.name: int(d[f.name]) for f in dataclasses.fields(cls)})

    @property
    def epoch(self) -> int:
        return self.position // self.num_records


def record_index(position: int, num_records: int, seed: int) -> int:
    """The record at global ``position``: Grain's ``MapDataset.source(records).shuffle(seed=seed).repeat()`` at that
    index (its per-epoch index shuffle, seeded ``seed + epoch``), computed directly -- through Grain's three dataset
    wrappers a record cost ~100 us to fetch here, ~45 us without them (BENCHMARKS.md)."""
    from grain.experimental import index_shuffle  # Grain is imported only where its loader runs

    epoch, index = divmod(int(position), num_records)
    return index_shuffle(index, max_index=num_records - 1, seed=(seed + epoch) % (1 << 32), rounds=4)


class _Fetch:
    """Element ``e`` -> this process's records of global batch ``e`` (counted from the start state), and the run's
    number of that batch (what seeds CLIPA's random text reduction)."""

    def __init__(self, records, start: "LoaderState", global_batch: int, offset: int, batch: int):
        self.records, self.start, self.global_batch, self.offset, self.batch = records, start, global_batch, offset, \
            batch

    def __call__(self, e: int) -> dict:
        n, seed = self.start.num_records, self.start.seed
        first = self.start.position + int(e) * self.global_batch + self.offset
        positions = np.arange(first, first + self.batch, dtype=np.int64)
        return {"records": [self.records[record_index(g, n, seed)] for g in positions], "positions": positions,
                "batch": np.int64(self.start.batches + int(e))}


class DecodeBatch:
    """Parse + random-resized-crop + flip a batch of serialized records with :func:`input_pipeline.train_batch`, and
    tokenize (or render) its captions with ``tokenizer`` (then ``text_transform(ids, batch)``, CLIPA's reduction).
    Pickled into Grain's worker processes; the ``tf.function`` is built in the process that runs it."""

    def __init__(self, image_size: int, seed: int, area_range, aspect_ratio_range, flip: bool, tokenizer,
                 text_transform=None, *, with_keys: bool = False):
        self.image_size, self.seed, self.flip = int(image_size), int(seed), bool(flip)
        self.area_range, self.aspect_ratio_range = tuple(area_range), tuple(aspect_ratio_range)
        self.tokenizer, self.text_transform = tokenizer, text_transform
        self.with_keys = with_keys
        self.slot_names: dict[str, list[list[str]]] = {}  # per array, per worker: its shm_slots (set by the loader)
        self.slot_bytes: dict[str, int] = {}
        self._fn = self._slots = None

    def __getstate__(self):
        return self.__dict__ | {"_fn": None, "_slots": None}

    def _build(self):
        tf = import_tf()
        base = tf.constant([self.seed, 0], tf.int64)
        size = self.image_size
        key_spec = {"key": tf.io.FixedLenFeature([], tf.string, default_value="")}

        tok, transform = self.tokenizer, self.text_transform

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int64),
                                      tf.TensorSpec([], tf.int64)])
        def fn(records, positions, batch):
            images, txt = input_pipeline.train_batch(records, positions, base, size, self.area_range,
                                                     self.aspect_ratio_range, self.flip, serialized=True)
            ids = tok.tokenize(txt)
            out = {"image": images, "text": ids if transform is None else transform(ids, batch)}
            if self.with_keys:
                out["key"] = tf.io.parse_example(records, key_spec)["key"]
            return out

        return fn

    def __call__(self, element: dict) -> dict:
        if self._fn is None:
            self._fn = self._build()
        out = self._fn(np.asarray(element["records"], dtype=object), element["positions"], element["batch"])
        res = {k: np.asarray(v) for k, v in out.items()}  # views of TensorFlow's buffers (.numpy() copies)
        res["positions"] = element["positions"]
        if self.slot_names and _WORKER_INDEX is not None:  # in a worker process: hand the arrays over in slots
            if self._slots is None:
                self._slots = {k: shm_slots.WorkerSlots(_WORKER_INDEX, names[_WORKER_INDEX], self.slot_bytes[k])
                               for k, names in self.slot_names.items()}
            for k, slots in self._slots.items():
                res[k] = slots.put(res[k]) or res[k]
        return res


_WORKER_INDEX: int | None = None  # this process's index among the loader's workers (None: not a worker)


def _worker_init(worker_index: int, worker_count: int) -> None:
    """Grain worker init (before the dataset is unpickled, which builds the tokenizer and so starts TensorFlow):
    one TensorFlow thread (a worker is one core), remember the worker's index (its slots), and exit with the
    training process."""
    global _WORKER_INDEX
    tf = import_tf()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    _WORKER_INDEX = int(worker_index)
    _exit_with_parent(worker_index, worker_count)


def _exit_with_parent(worker_index: int, worker_count: int) -> None:
    """Grain worker init: exit when the training process is gone (kill -9 of it alone, the OOM killer): Grain's
    workers do not watch their parent and would stay behind, blocked on a full queue.  A polling thread rather than
    PR_SET_PDEATHSIG, which fires when the parent *thread* that spawned the worker ends (Grain may spawn from a pool
    thread)."""
    import os
    import threading
    import time

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="laionprep-parent-watch", daemon=True).start()


class GrainLoader:
    """This process's endless iterator of batches ``{'image': uint8 [B,S,S,3], 'text': ...}`` read with Grain.

    ``state()`` is the :class:`LoaderState` after the batches handed out so far; ``restore(state)`` (before the first
    ``next``) continues from one, whatever process count wrote it.  ``keys_log`` (a path; diagnostics and tests)
    appends one JSON line per batch: ``{"batch", "process", "positions", "keys"}``.  ``close()`` stops the workers.
    """

    def __init__(self, src: input_pipeline.Source | str, tokenizer, *, image_size: int, batch_size: int, seed: int = 0,
                 process_index: int = 0, process_count: int = 1, data_dir: str = "", workers: int = 0,
                 area_range=(0.5, 1.0), aspect_ratio_range=(3 / 4, 4 / 3), flip: bool = True, text_transform=None,
                 keys_log: str = "", prefetch: int = 2):
        if isinstance(src, str):
            src = input_pipeline.resolve_source(src, data_dir, "train")
        import grain  # only the Grain loader needs it
        from absl import flags

        if not flags.FLAGS.is_parsed():  # Grain reads its absl flags (defaults) in the worker machinery
            flags.FLAGS.mark_as_parsed()
        self._grain = grain
        self.description = src.description
        self.files = array_record_files(src)
        self.records = grain.sources.ArrayRecordDataSource(self.files)
        self.num_records = len(self.records)
        if self.num_records == 0:
            raise DataError(f"{src.description} holds no records", where=self.files[0])
        if self.num_records >= 1 << 32:  # Grain's index shuffle works on 32-bit indices
            raise DataError(f"{self.num_records} records: Grain's index shuffle takes at most 2**32 - 1",
                            where=src.description, fix="train on a split of at most 4.29B records")
        self.seed = int(seed) % (1 << 32)
        self.batch_size, self.process_index, self.process_count = int(batch_size), process_index, process_count
        self.global_batch = self.batch_size * process_count
        self.workers, self.prefetch = int(workers), int(prefetch)
        self.decode = DecodeBatch(image_size, self.seed, area_range, aspect_ratio_range, flip, tokenizer,
                                  text_transform, with_keys=bool(keys_log))
        # per batch, the bytes of each array that travels in slots: the images, and the text where it is large
        # (CLIPPO's rendered captions; token ids at large batches)
        self._array_bytes = {"image": self.batch_size * int(image_size) ** 2 * 3}
        text_bytes = _text_bytes(tokenizer, self.batch_size)
        if text_bytes >= _MIN_SHM_BYTES:
            self._array_bytes["text"] = text_bytes
        self.keys_log = keys_log
        self._start = LoaderState(0, 0, self.seed, self.num_records, self.global_batch)
        self._handed = 0  # batches handed out since the start state
        self._it = None
        self._pools: dict[str, shm_slots.SlotPool] = {}

    # -- state
    def state(self) -> LoaderState:
        s = self._start
        return LoaderState(s.position + self._handed * self.global_batch, s.batches + self._handed, self.seed,
                           self.num_records, self.global_batch)

    def restore(self, state: LoaderState) -> None:
        if self._it is not None:
            raise RuntimeError("restore() must come before the first batch")
        if state.num_records != self.num_records:
            raise DataError(f"the checkpoint's input position is over {state.num_records} records, the data source "
                            f"now holds {self.num_records}", where=self.description,
                            fix="resume on the same data (a position in another dataset's order means nothing), or "
                                "start a new run (another --workdir)")
        if state.seed != self.seed:
            raise UsageError(f"the checkpoint's input order was seeded with {state.seed}, this run with {self.seed}",
                             where="--config.seed", fix="resume with the seed the run was started with")
        self._start, self._handed = state, 0

    # -- iteration
    def _dataset(self):
        grain = self._grain
        # the records of each batch are read by _Fetch (record_index): the same order as
        # MapDataset.source(records).shuffle(seed).repeat(), without its per-record wrappers
        fetch = _Fetch(self.records, self._start, self.global_batch, self.process_index * self.batch_size,
                       self.batch_size)
        ds = grain.MapDataset.range(_NEVER_ENDS).map(fetch).map(self.decode)
        # one reading/decoding thread per process (Grain's default is 16): with workers, each worker process is
        # one core; without, decoding runs in one background thread of this process, `prefetch` batches ahead
        ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=self.prefetch))
        if self.workers > 0:
            # the batches come back in reused shared memory (shm_slots).  In flight per worker: its read-ahead,
            # Grain's queue and buffers (9 batches at prefetch=2, measured), and those the training step holds
            self._pools = {k: shm_slots.SlotPool(self.workers, 4 * self.prefetch + 4, n)
                           for k, n in self._array_bytes.items()}
            self.decode.slot_names = {k: p.names for k, p in self._pools.items()}
            self.decode.slot_bytes = {k: p.nbytes for k, p in self._pools.items()}
            # small arrays (the batch's positions) travel in the pickled element: Grain's default gives each array,
            # however small, a shared-memory segment of its own (created, registered, mapped, unlinked per batch)
            ds = grain.experimental.WithOptionsIterDataset(ds, grain.experimental.DatasetOptions(
                min_shm_size=_MIN_SHM_BYTES))
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers,
                                                             per_worker_buffer_size=self.prefetch),
                                worker_init_fn=_worker_init)
        return ds

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, Any]:
        if self._it is None:
            self._it = iter(self._dataset())
        el = next(self._it)
        batch = self._start.batches + self._handed
        # with workers an array is in a slot (shm_slots) or, when all were in use, Grain's SharedMemoryArray: a
        # view of either, no copy (copying 4.8 MB a batch into fresh pages cost 70-100 us per image)
        out = {k: self._pools[k].view(el[k]) if isinstance(el[k], shm_slots.SlotRef) else np.asarray(el[k])
               for k in ("image", "text")}
        if self.keys_log:
            keys = [k.decode("utf-8", "replace") for k in el["key"]]
            with open(self.keys_log, "a") as f:
                f.write(json.dumps({"batch": batch, "process": self.process_index,
                                    "positions": [int(g) for g in el["positions"]], "keys": keys}) + "\n")
        del el
        self._handed += 1
        return out

    def close(self) -> None:
        it, self._it = self._it, None
        if it is not None and hasattr(it, "close"):
            it.close()
        pools, self._pools = self._pools, {}
        for pool in pools.values():  # after the workers: batches handed out stay readable
            pool.close()


def _text_bytes(tokenizer, batch: int) -> int:
    """Bytes of one batch's text: CLIPPO's rendered captions (uint8 images), else int32 token ids."""
    if hasattr(tokenizer, "render"):
        return batch * int(tokenizer.image_size) ** 2 * 3
    return batch * int(tokenizer.max_len) * 4


def state_bytes(state: LoaderState) -> int:
    """Size of the state as the checkpoint stores it (orbax's JSON item)."""
    return len(json.dumps(state.to_json()).encode())


def loader_from_config(src, tokenizer, config, *, batch_size: int, process_index: int, process_count: int,
                       text_transform=None) -> GrainLoader:
    d = config.data
    return GrainLoader(src, tokenizer, image_size=config.model.image.image_size, batch_size=batch_size,
                       seed=config.seed, process_index=process_index, process_count=process_count,
                       workers=int(d.get("grain_workers", 0)), area_range=tuple(d.area_range),
                       aspect_ratio_range=tuple(d.aspect_ratio_range), flip=d.flip, text_transform=text_transform,
                       keys_log=d.get("keys_log", ""))


__all__ = ["GrainLoader", "LoaderState", "DecodeBatch", "array_record_files", "check_streamable", "state_bytes",
           "loader_from_config", "STATE_FORMAT"]
