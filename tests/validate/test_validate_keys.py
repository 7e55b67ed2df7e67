"""The duplicate-key check in bounded memory: a budget that forces many partitions (and several chunks) on disk
gives the same duplicates report, counts and quarantined shards as one partition (the whole check in memory)."""
from __future__ import annotations

import os
import shutil

import validate_helpers as vh

from laionprep.validate import ValidateConfig, key_check, validate


def _damage(d: str) -> dict:
    """Duplicates across shards (one key in three records of three shards), within a shard, of other key widths
    (12 bytes, and a 50-byte key the check digests) and more of them than are listed with max_examples=1."""
    tf = {s: vh.shard_paths(d, s)["tfrecord"] for s in range(4)}
    first = vh.record_features(tf[0], 0)["key"][0]
    edits = [(2, 10, first), (1, 3, first),  # across shards
             (1, 7, vh.record_features(tf[1], 5)["key"][0]),  # within a shard
             (0, 4, b"wide-key-012"), (3, 6, b"wide-key-012"),  # a wider key in two shards
             (2, 1, b"k" * 50), (2, 2, b"k" * 50), (3, 0, b"k" * 50)]  # a long key, stored as a digest
    for s, i, key in edits:
        vh.edit_record(tf[s], i, lambda ex, key=key: vh.set_bytes(ex, "key", key))
    return {"first": first.decode()}


def _dups(rep):
    return [(p.file, p.record, p.key, p.message) for p in rep.by_kind("duplicate_key")]


def test_many_partitions_give_the_same_duplicates_report(copy_download, monkeypatch):
    d = copy_download()
    want = _damage(d)
    other = d + "-copy"
    shutil.copytree(d, other)
    seen: dict = {}
    folders: list = []

    class SmallChunks(key_check.KeySpill):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            folders.append(self.folder)
            if seen.get("small"):
                self.chunk_rows = 1  # a chunk per shard, each holding every partition

        def flush(self):
            seen.setdefault("chunks", 0)
            seen["chunks"] += bool(self.parts)
            super().flush()
            seen["partitions"] = self.partitions

    monkeypatch.setattr(key_check, "KeySpill", SmallChunks)
    base = dict(decode_fraction=0, max_examples=1)
    one = validate(ValidateConfig(d, workers=1, **base))
    assert seen["partitions"] == 1 and seen["chunks"] == 1  # the default budget: all keys in one sort
    seen.clear()
    seen["small"] = True
    many = validate(ValidateConfig(d, workers=2, memory_budget=2000, **base))  # partitions checked in 2 processes
    assert seen["partitions"] > 4 and seen["chunks"] >= 4

    # 2 + 1 + 1 + 2 duplicates; 5 listed (max_examples=1): the first in key order (the digest's \x01 first, then
    # the demo's digit keys; "wide-key-012" comes last and is counted, not listed), each naming both records
    assert one.counts["duplicate_key"] == many.counts["duplicate_key"] == 6
    assert _dups(many) == _dups(one)
    listed = {(f, r): (k, m) for f, r, k, m in _dups(one)}
    assert len(listed) == 5
    assert listed[("tfrecord/00001.tfrecord", 3)] == (want["first"], "key also in tfrecord/00000.tfrecord record 0")
    assert listed[("tfrecord/00002.tfrecord", 10)] == (want["first"], "key also in tfrecord/00000.tfrecord record 0")
    assert listed[("tfrecord/00001.tfrecord", 7)][1] == "key also in tfrecord/00001.tfrecord record 5"
    assert listed[("tfrecord/00002.tfrecord", 2)][1] == "key also in tfrecord/00002.tfrecord record 1"
    assert listed[("tfrecord/00003.tfrecord", 0)][1] == "key also in tfrecord/00002.tfrecord record 1"
    assert listed[("tfrecord/00003.tfrecord", 0)][0].startswith("\x01")  # the 50-byte key, named by its digest
    full = validate(ValidateConfig(d, workers=1, memory_budget=2000, decode_fraction=0))  # 100 listed: all 6
    assert ("tfrecord/00003.tfrecord", 6, "wide-key-012", "key also in tfrecord/00000.tfrecord record 4") in _dups(full)
    assert many.counts == one.counts

    # --quarantine moves the same shards, for the same kinds, and what is left has no duplicate
    seen.clear()
    q_one = validate(ValidateConfig(d, workers=1, quarantine=True, **base))
    seen["small"] = True
    q_many = validate(ValidateConfig(other, workers=2, quarantine=True, memory_budget=2000, **base))
    moved = [(q["shard"], q["kinds"]) for q in q_one.quarantined]
    assert moved == [(q["shard"], q["kinds"]) for q in q_many.quarantined]
    assert {s for s, _ in moved} == {0, 1, 2, 3}
    assert all("duplicate_key" in k for _, k in moved)
    assert "duplicate_key" not in q_one.remaining and q_one.remaining == q_many.remaining
    assert folders and not [f for f in folders if os.path.exists(f)]  # the runs on disk are removed


def test_a_budget_below_one_byte_is_a_usage_error(demo_download, cli, capsys):
    assert cli(demo_download, "--memory-budget", "0") == 2
    assert "--memory-budget" in capsys.readouterr().err


def test_figures_are_summed_in_shard_order_whatever_the_order_results_arrive(demo_download):
    """The figures are folded in as results arrive (each result then drops its histograms), in unit order: one
    worker and several give the same figures, float sums and the order of ties included."""
    one = validate(ValidateConfig(demo_download, workers=1, decode_fraction=0))
    three = validate(ValidateConfig(demo_download, workers=3, decode_fraction=0))
    assert one.figures == three.figures
    assert one.figures["ints"]["width"]["n"] == one.totals["records"] > 0
    assert one.figures["floats"]["similarity"]["n"] == one.totals["records"]
    assert [s["parquet_success"] for s in one.shards] == [s["parquet_success"] for s in three.shards]


def test_no_room_for_the_runs_is_a_clear_error(demo_download, cli, capsys, monkeypatch, tmp_path):
    import errno
    import tempfile

    from laionprep import spill

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))  # $TMPDIR does not exist
    assert cli(demo_download, "--decode-fraction", 0, "--workers", 1) == 1
    err = capsys.readouterr().err
    assert "temporary folder for the duplicate-key check" in err and "TMPDIR" in err and "Traceback" not in err
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spill.Runs, "flush", full)
    assert cli(demo_download, "--decode-fraction", 0, "--workers", 1) == 1
    err = capsys.readouterr().err
    assert "cannot write the duplicate-key check's runs" in err and "No space left" in err and "TMPDIR" in err
    assert not [n for n in os.listdir(tmp_path) if n.startswith("laionprep-validate-keys-")]  # removed
