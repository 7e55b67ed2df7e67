"""What one Beam worker does for one output shard (the body of the ``WriteShards`` step).

For task ``i`` it streams the task's pieces of input shards, normalises and filters every record
(:class:`~laionprep.sharding.records.RecordProcessor`), routes kept records to their split, writes
``SPLIT/NAME-SPLIT-i-of-N.tfrecord`` (``.array_record`` with ``--format array_record``: the same records,
:mod:`laionprep.arrayrecord`; both files with ``--format both``, each record written to both writers) under a
temporary name per split and format, renames them when complete, then writes its result (counts per split,
drops per reason, normalisations) to ``OUT/_reshard/part-i.json`` and returns it.

Why retries and re-runs cannot duplicate anything:

* the output of task ``i`` depends only on the plan (inputs, parameters, seed), never on timing or on which
  worker runs it, so any attempt writes the same bytes;
* every attempt writes under its own unique temporary name and renames at the end: a failed attempt leaves at
  most a temporary file (removed by the launcher), never a partial file under a final name; a duplicate or
  zombie attempt renames identical bytes over identical bytes;
* the launcher reads exactly one result per task index (a retried bundle's output is committed once by Beam,
  and the part file is keyed by the index), and checks that every index is there.

A problem with the data (a damaged input TFRecord, a record that is not an Example) is not raised into Beam: the
DoFn writes it to ``OUT/_reshard/error-i.json`` and the launcher raises it, naming the file and record, once the job
ends (a runner would otherwise retry a deterministic failure and print every worker's traceback).

A test hook injects one failure: with ``LAIONPREP_RESHARD_FAIL_ONCE=<index>@<marker path>`` in the environment,
the first attempt at task ``<index>`` writes half of its records to its temporary file, creates the marker file
and raises; later attempts (the marker exists) run normally.
"""
from __future__ import annotations

import dataclasses
import os
import random
import time

from google.protobuf.message import DecodeError

from laionprep import arrayrecord
from laionprep import fs as lfs
from laionprep.errors import DataError, LaionprepError
from laionprep.manifest import check_accounting
from laionprep import keylist
from laionprep.sharding.plan import Task
from laionprep.folders import names
from laionprep.sharding.images import ImageError, ShortSideResizer
from laionprep.sharding.keys import KeyFormatError, KeyRule
from laionprep.sharding.records import REASONS, RecordFilters, RecordProcessor
from laionprep.tfrecord import read_records

FAIL_ONCE_ENV = "LAIONPREP_RESHARD_FAIL_ONCE"
WORK_DIR = "_reshard"
BATCH = 512  # records normalised and looked up in the key lists together


def _key_list(url: str | None) -> keylist.KeyList | None:
    """The sorted, memory-mapped list (laionprep.keylist), shared by all workers through the page cache."""
    return keylist.load(url) if url else None


@dataclasses.dataclass(frozen=True)
class Job:
    """Everything a worker needs, fixed on the launcher (pickled to the workers)."""

    output: str
    name: str
    split: str
    validation_split: str | None  # None: no validation split
    validation_fraction: float
    num_shards: int
    schema: tuple[tuple[str, str], ...]
    drop_columns: tuple[str, ...]
    filters: RecordFilters
    key_rules: tuple[KeyRule, ...]  # per source (laionprep.sharding.keys)
    feature_names: tuple[tuple[str, str], ...]  # (new, old): keys renamed in the output (laionprep.feature_names)
    shuffle: bool
    seed: int
    shuffle_buffer_bytes: int
    plan_hash: str
    file_format: str = "tfrecord"  # names.FORMAT_CHOICES (left out of the plan hash when tfrecord: older plans)
    image_size: int | None = None  # --image-size: images re-encoded to this short side (sharding.images)

    @property
    def splits(self) -> tuple[str, ...]:
        return (self.split,) + ((self.validation_split,) if self.validation_split else ())

    @property
    def formats(self) -> tuple[str, ...]:
        """The file formats written, the primary (counts.json's ``filename_template``) first."""
        return names.formats_of(self.file_format)

    def shard_file(self, split: str, index: int, fmt: str | None = None) -> str:
        return names.shard_name(self.name, split, index, self.num_shards, fmt or self.formats[0])

    def shard_url(self, split: str, index: int, fmt: str | None = None) -> str:
        return lfs.join(self.output, self.shard_file(split, index, fmt))

    def split_folder(self, split: str) -> str:  # one folder per split, whatever the formats
        return lfs.join(self.output, names.template_folder(names.reshard_template(self.name, split,
                                                                                         self.formats[0])))

    def part_url(self, index: int) -> str:
        return lfs.join(self.output, WORK_DIR, f"part-{index:05d}.json")

    def error_url(self, index: int) -> str:
        return lfs.join(self.output, WORK_DIR, f"error-{index:05d}.json")


class TeeWriter:
    """One writer per file format, fed the very same records in the same order (``--format both``)."""

    def __init__(self, writers: dict):
        self.writers = writers  # {file format: writer}, the primary first

    @property
    def records(self) -> int:
        return next(iter(self.writers.values())).records

    def bytes_of(self, fmt: str) -> int:
        return self.writers[fmt].bytes_written

    def write(self, data: bytes) -> None:
        for w in self.writers.values():
            w.write(data)

    def flush(self) -> None:
        for w in self.writers.values():
            w.flush()

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


def shard_entry(job: Job, split: str, index: int, writer: TeeWriter) -> dict:
    """A task's record of one split's shard: the primary file, and the other formats' files under ``alternatives``
    (what the resume, the complete-output check and counts.json read)."""
    primary, *others = job.formats
    entry = {"file": job.shard_file(split, index), "records": writer.records, "bytes": writer.bytes_of(primary)}
    if others:
        entry["alternatives"] = {f: {"file": job.shard_file(split, index, f), "bytes": writer.bytes_of(f)}
                                 for f in others}
    return entry


def entry_files(entry: dict) -> list[tuple[str, int]]:
    """``(file relative to OUT, bytes)`` of every format's file of one shard entry."""
    return [(entry["file"], entry["bytes"])] + [(a["file"], a["bytes"])
                                                for a in (entry.get("alternatives") or {}).values()]


def entry_intact(fsys, output: str, entry: dict) -> bool:
    """Every format's file of a shard entry is in OUT at its recorded size (a resumed task, a complete output)."""
    for rel, size in entry_files(entry):
        path = lfs.get_fs(lfs.join(output, rel))[1]
        if not fsys.exists(path) or fsys.size(path) != size:
            return False
    return True


class ShuffleBuffer:
    """A deterministic, byte-bounded shuffle buffer (the tf.data kind): with the same seed and input order it
    emits the same order.  When full it emits a uniformly chosen element; at the end it emits the rest shuffled."""

    def __init__(self, max_bytes: int, rng: random.Random):
        self.max_bytes = max_bytes
        self.rng = rng
        self.items: list[bytes] = []
        self.size = 0

    def add(self, item: bytes):
        self.items.append(item)
        self.size += len(item)
        while self.size > self.max_bytes and len(self.items) > 1:
            j = self.rng.randrange(len(self.items))
            self.items[j], self.items[-1] = self.items[-1], self.items[j]
            out = self.items.pop()
            self.size -= len(out)
            yield out

    def drain(self):
        self.rng.shuffle(self.items)
        items, self.items, self.size = self.items, [], 0
        return items


def _maybe_fail(index: int) -> bool:
    spec = os.environ.get(FAIL_ONCE_ENV)
    if not spec:
        return False
    want, _, marker = spec.partition("@")
    return int(want) == index and bool(marker) and not os.path.exists(marker)


def _resume(job: Job, index: int) -> dict | None:
    """The stored result of task ``index`` when it finished under the same plan and its files are intact."""
    url = job.part_url(index)
    try:
        if not lfs.exists(url):
            return None
        res = lfs.read_json(url)
    except Exception:
        return None
    if res.get("plan_hash") != job.plan_hash:
        return None
    fsys, _ = lfs.get_fs(job.output)
    if not all(entry_intact(fsys, job.output, info) for info in res["splits"].values()):
        return None
    if not res.get("resumed"):
        res["resumed"] = True
        lfs.write_json(url, res)  # the launcher reads results from the part files
    return res


INPUT_FIX = ("run `laionprep validate` on the source folder with --quarantine (it moves damaged shards aside), "
             "re-run `laionprep download` to fetch them again, then re-run this reshard: finished output shards are "
             "reused")


def _read_input(piece):
    """The records of one input piece; a damaged input file is a DataError naming file and record, with the fix
    that applies to a reshard's input."""
    try:
        yield from read_records(piece.path, piece.start, piece.stop)
    except DataError as e:
        raise DataError(e.what, where=e.where, fix=INPUT_FIX) from None


def write_task(job: Job, task: Task) -> dict:
    """Write output shard ``task.index`` of every split; returns its result (also stored as a part file)."""
    done = _resume(job, task.index)
    if done is not None:
        return done
    t0 = time.time()
    proc = RecordProcessor(dict(job.schema), job.drop_columns, job.filters, _key_list(job.filters.keep_keys),
                           _key_list(job.filters.drop_keys), job.validation_fraction, renames=job.feature_names,
                           resize=ShortSideResizer(job.image_size) if job.image_size else None)
    finals = {(s, f): job.shard_url(s, task.index, f) for s in job.splits for f in job.formats}
    tmps = {k: lfs.tmp_name(u) for k, u in finals.items()}
    writers = {s: TeeWriter({f: arrayrecord.writer(tmps[s, f], f) for f in job.formats}) for s in job.splits}
    seed = f"laionprep-reshard:{job.seed}:{task.index}"
    buffers = ({s: ShuffleBuffer(job.shuffle_buffer_bytes, random.Random(f"{seed}:{s}")) for s in job.splits}
               if job.shuffle else None)
    fail_at = max(1, task.expected // 2) if _maybe_fail(task.index) else None
    rows_in = 0
    pieces = []
    try:
        for piece in task.pieces:
            rule = job.key_rules[piece.source]
            n_piece = 0
            batch: list[bytes] = []

            def run_batch():
                try:
                    results = proc.process_batch(batch, rule)
                except DecodeError as e:
                    i = piece.start + n_piece - len(batch) + proc.failed_at
                    raise DataError(f"record {i} is not a tf.train.Example ({e})", where=f"{piece.path} record {i}",
                                    fix=INPUT_FIX) from e
                except ImageError as e:
                    i = piece.start + n_piece - len(batch) + proc.failed_at
                    raise DataError(f"record {i}: {e} (--image-size re-encodes every image)",
                                    where=f"{piece.path} record {i}", fix=INPUT_FIX) from e
                except KeyFormatError as e:
                    i = piece.start + n_piece - len(batch) + proc.failed_at
                    raise DataError(f"{e}: the numeric output keys (source * 10**W + key) would not be unique",
                                    where=f"{piece.path} record {i}",
                                    fix="reshard this source on its own (its keys are then kept as they are)") from e
                batch.clear()
                for is_val, out in results:
                    if is_val is None:
                        continue
                    split = job.validation_split if is_val else job.split
                    if buffers is None:
                        writers[split].write(out)
                    else:
                        for item in buffers[split].add(out):
                            writers[split].write(item)

            for data in _read_input(piece):
                if fail_at is not None and rows_in + 1 >= fail_at:
                    run_batch()
                    marker = os.environ[FAIL_ONCE_ENV].partition("@")[2]
                    for w in writers.values():
                        w.flush()
                    with open(marker, "w") as f:
                        f.write(f"task {task.index} failed once after {rows_in + 1} records\n")
                    raise RuntimeError(f"injected failure ({FAIL_ONCE_ENV}) in task {task.index} after {rows_in + 1} "
                                       "records")
                n_piece += 1
                rows_in += 1
                batch.append(data)
                if len(batch) >= BATCH:
                    run_batch()
            run_batch()
            pieces.append({"source": piece.source, "shard": piece.shard, "start": piece.start, "stop": piece.stop,
                           "expected": piece.expected, "read": n_piece})
        if buffers is not None:
            for s, b in buffers.items():
                for item in b.drain():
                    writers[s].write(item)
        for w in writers.values():
            w.close()
    except BaseException:
        for w in writers.values():
            try:
                w.close()
            except Exception:
                pass
        raise
    fsys, _ = lfs.get_fs(job.output)
    for k in finals:
        fsys.mv(lfs.get_fs(tmps[k])[1], lfs.get_fs(finals[k])[1])
    kept = sum(w.records for w in writers.values())
    dropped = {r: proc.dropped.get(r, 0) for r in REASONS}
    check_accounting(rows_in, kept, dropped, stage=f"reshard task {task.index}")
    result = {
        "index": task.index, "plan_hash": job.plan_hash, "rows_in": rows_in, "expected": task.expected,
        "splits": {s: shard_entry(job, s, task.index, writers[s]) for s in job.splits},
        "dropped": dropped, "normalised": proc.normalised_dict(), "pieces": pieces,
        "seconds": round(time.time() - t0, 3), "started": round(t0, 3), "worker_pid": os.getpid(),
    }
    lfs.write_json(job.part_url(task.index), result)
    return result


def write_error(job: Job, index: int, e: LaionprepError) -> None:
    lfs.write_json(job.error_url(index), {"index": index, "plan_hash": job.plan_hash, "type": type(e).__name__,
                                          "what": e.what, "where": e.where, "fix": e.fix})


try:  # the DoFn needs Beam; the functions above do not
    import apache_beam as beam

    class WriteShardFn(beam.DoFn):
        def __init__(self, job: Job):
            self.job = job

        def setup(self):  # open the key lists once per worker process
            _key_list(self.job.filters.keep_keys)
            _key_list(self.job.filters.drop_keys)

        def process(self, task: Task):
            # A problem with the data (a damaged input file...) is written for the launcher to report, instead of
            # failing the bundle: a runner would retry it in vain and print the worker's traceback.
            try:
                yield write_task(self.job, task)
            except LaionprepError as e:
                write_error(self.job, task.index, e)
except ImportError:  # pragma: no cover - apache-beam is a dependency
    WriteShardFn = None
