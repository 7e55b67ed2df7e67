"""Pieces of reshard that need no Beam: TFRecord framing, the Example class, key lists, the plan."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laionprep import cli, keylist
from laionprep.errors import DataError
from laionprep.sharding import plan
from laionprep.tfrecord import Example, RecordWriter, feature_kinds, read_records


def test_tfrecord_io_matches_tensorflow(demo_download, tmp_path, tf):
    src = sorted(p for p in os.listdir(os.path.join(demo_download, "tfrecord")) if p.endswith(".tfrecord"))[0]
    src = os.path.join(demo_download, "tfrecord", src)
    ref = list(tf.data.TFRecordDataset([src]).as_numpy_iterator())
    ours = list(read_records(src))
    assert ours == ref and len(ours) > 10
    assert list(read_records(src, 3, 7)) == ref[3:7]
    assert list(read_records(src, len(ref) - 2)) == ref[-2:]

    # our writer's bytes == tf.io.TFRecordWriter's bytes for the same records
    mine, theirs = str(tmp_path / "mine.tfrecord"), str(tmp_path / "tf.tfrecord")
    with RecordWriter(mine) as w:
        for r in ref:
            w.write(r)
    with tf.io.TFRecordWriter(theirs) as w:
        for r in ref:
            w.write(r)
    assert open(mine, "rb").read() == open(theirs, "rb").read()
    assert os.path.getsize(mine) == sum(len(r) + 16 for r in ref)

    # the TF-free Example class is wire-compatible with tf.train.Example
    ex = Example.FromString(ref[0])
    tex = tf.train.Example.FromString(ref[0])
    assert ex.SerializeToString(deterministic=True) == tex.SerializeToString(deterministic=True)
    assert feature_kinds(ref[0])["similarity"] == "float" and feature_kinds(ref[0])["width"] == "int64"

    # damage is reported with the file and record index
    data = bytearray(open(mine, "rb").read())
    data[len(ref[0]) + 16 + 12 + 40] ^= 0xFF  # inside record 1's data
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match="bad data checksum") as e:
        list(read_records(str(bad)))
    assert "record 1" in e.value.where
    bad.write_bytes(bytes(data[: len(ref[0]) + 16 + 20]))
    with pytest.raises(DataError, match="truncated"):
        list(read_records(str(bad)))


def test_key_lists_all_formats(tmp_path):
    keys = ["0000001", "0000017", "0100003"]
    (tmp_path / "k.txt").write_text("\n".join(keys) + "\n\n")
    pq.write_table(pa.table({"key": keys, "other": [1, 2, 3]}), tmp_path / "k.parquet")
    np.save(tmp_path / "k.npy", np.array(keys))
    probe = keys + ["0000002", "", "00000017", "0000001 "]
    for name in ("k.txt", "k.parquet", "k.npy"):
        kl = keylist.load(str(tmp_path / name))
        assert len(kl) == 3 and kl.kind == "string", name
        assert kl.contains(probe).tolist() == [True] * 3 + [False] * 4, name
        assert kl.contains([k.encode() for k in probe]).tolist() == [True] * 3 + [False] * 4, name
        assert kl.contains(pa.array(probe)).tolist() == [True] * 3 + [False] * 4, name
    # DataComp's subset files: structured (uint64, uint64) uids = the 32-digit hex uid (first field = high bits)
    uids = np.array([(0x0123456789ABCDEF, 0x1), (0xFFFFFFFFFFFFFFFF, 0xABCDEF)], dtype="u8,u8")
    np.save(tmp_path / "uids.npy", uids)
    kl = keylist.load(str(tmp_path / "uids.npy"))
    assert kl.kind == "uid" and len(kl) == 2
    assert kl.contains([b"0123456789abcdef0000000000000001", b"ffffffffffffffff0000000000abcdef",
                        b"0123456789abcdef0000000000000002", b"not a uid"]).tolist() == [True, True, False, False]
    pq.write_table(pa.table({"a": [1], "b": [2]}), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="no column 'key' or 'uid'") as e:
        keylist.load(str(tmp_path / "bad.parquet"))
    assert "bad.parquet" in e.value.where and ".parquet (column key" in e.value.fix
    np.save(tmp_path / "f.npy", np.array([1.5]))
    with pytest.raises(DataError, match="unsupported array dtype") as e:
        keylist.load(str(tmp_path / "f.npy"))
    assert "f.npy" in e.value.where
    with pytest.raises(DataError, match="key list not found"):
        keylist.load(str(tmp_path / "missing.txt"))


def _fake_sources(counts_per_source):
    out = []
    for i, counts in enumerate(counts_per_source):
        shards = [plan.lshards.Shard(id=j, tfrecord=f"s{i}/{j:05d}.tfrecord", parquet="", stats="", count=c, rows=c)
                  for j, c in enumerate(counts)]
        out.append(plan.SourceInfo(index=i, given=f"s{i}", folder=f"s{i}", dataset=None, manifest_status=None,
                                   column_kinds={}, shards=shards, sizes={j: c * 100 for j, c in enumerate(counts)},
                                   peeked={}, warnings=[]))
    return out


@pytest.mark.parametrize("counts,n", [([[60, 50, 0, 70], [33]], 3), ([[5, 5]], 7), ([[100]], 4), ([[3, 0, 0]], 2),
                                       ([[10, 20, 30, 40]], 1), ([[7] * 13, [0, 9, 11]], 5)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_plan_covers_every_record_once_balanced(counts, n, shuffle):
    sources = _fake_sources(counts)
    n = plan.num_output_shards(sources, n, 1024)
    tasks = plan.make_tasks(sources, n, shuffle=shuffle, seed=5)
    assert [t.index for t in tasks] == list(range(n))
    total = sum(sum(c) for c in counts)
    # balanced: every output expects T//N or T//N + 1 records
    assert sorted({t.expected for t in tasks}) <= [total // n, total // n + 1]
    assert sum(t.expected for t in tasks) == total
    # every input shard: pieces tile [0, count) exactly, and exactly one piece reads to the end of the file
    by_shard = {}
    for t in tasks:
        for p in t.pieces:
            by_shard.setdefault((p.source, p.shard), []).append(p)
    for i, c in enumerate(counts):
        for j, count in enumerate(c):
            ps = sorted(by_shard[(i, j)], key=lambda p: p.start)
            assert sum(1 for p in ps if p.stop is None) == 1 and ps[-1].stop is None
            pos = 0
            for p in ps:
                assert p.start == pos
                pos = count if p.stop is None else p.stop
            assert pos == count
    # deterministic
    assert plan.make_tasks(sources, n, shuffle=shuffle, seed=5) == tasks


def test_plan_shuffle_changes_assignment_with_seed():
    sources = _fake_sources([[10] * 20])
    a = plan.make_tasks(sources, 4, shuffle=True, seed=1)
    b = plan.make_tasks(sources, 4, shuffle=True, seed=2)
    plain = plan.make_tasks(sources, 4)
    shards = lambda tasks: [[p.shard for p in t.pieces] for t in tasks]  # noqa: E731
    assert shards(plain) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15, 16, 17, 18, 19]]
    assert shards(a) != shards(plain) and shards(a) != shards(b)
    assert sorted(sum(shards(a), [])) == list(range(20))


def test_reshard_flags_are_the_config_fields():
    """Options declared once: the CLI parses every ReshardConfig field (beam_args: the rest) into the same config."""
    import dataclasses

    from laionprep import options
    from laionprep.sharding import ReshardConfig

    parser = cli.build_parser()
    args, extra = parser.parse_known_args(
        ["reshard", "a", "b", "--output", "o", "--name", "n", "--nsfw", "unlikely", "--drop-columns", "x, y",
         "--min-side", "3", "--runner=DataflowRunner"])
    cfg = options.from_args(ReshardConfig, args, beam_args=tuple(extra))
    assert cfg == ReshardConfig(sources=("a", "b"), output="o", name="n", nsfw=("UNLIKELY",), drop_columns=("x", "y"),
                                min_side=3, beam_args=("--runner=DataflowRunner",))
    assert {f.name for f in dataclasses.fields(ReshardConfig)} - set(vars(args)) == {"beam_args"}


# ------------------------------------------------------------------------------------------------ output keys
def test_numeric_keys_of_several_sources_are_unique_int64_and_refused_past_it():
    from laionprep.sharding import keys

    one = keys.plan([b"000010042"])
    assert one.rules[0].apply(b"000010042") == b"000010042" and one.description == "unchanged (one source)"
    p = keys.plan([b"000010042", b"00000000001", None])  # widths 9 and 11; a source without records
    assert [r.apply(k) for r, k in zip(p.rules, (b"000010042", b"00000000001", b"00000000007"))] == \
        [b"000000010042", b"100000000001", b"200000000007"]  # source * 10**11 + key
    assert not p.warnings and "10**11" in p.description
    with pytest.raises(keys.KeyFormatError, match="9-digit"):  # another width within a source: not one-to-one
        p.rules[0].apply(b"10042")
    with pytest.raises(keys.KeyFormatError):
        p.rules[1].apply(b"0000000000x")
    assert keys.plan([b"9" * 18] * 9).rules[8].apply(b"9" * 18) == b"8" + b"9" * 18  # < 2**63
    with pytest.raises(OverflowError, match="int64"):
        keys.plan([b"9" * 18] * 10)
    fallback = keys.plan([b"abc", b"000000001"])  # not img2dataset keys: the old prefix, and a warning
    assert fallback.rules[1].apply(b"abc") == b"1_abc" and "FLIP" in fallback.warnings[0]
