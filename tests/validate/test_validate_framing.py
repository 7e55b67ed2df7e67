"""The hand-written TFRecord framing reader against files written by TensorFlow itself."""
from __future__ import annotations

import io
import os

import pytest
import validate_helpers as vh

from laionprep.tfrecord import Damage, Example, frame, masked_crc as masked_crc32c, read_frames


def _read(data: bytes):
    return list(read_frames(io.BytesIO(data), len(data)))


@pytest.fixture(scope="module")
def shard(demo_download):
    path = os.path.join(demo_download, "tfrecord", "00001.tfrecord")
    with open(path, "rb") as f:
        return f.read(), vh.read_records(path), vh.frame_offsets(path)


def test_reads_every_record_tf_reads_with_offsets(shard):
    data, records, offsets = shard
    got = _read(data)
    assert [g[2] for g in got] == records
    assert [g[0] for g in got] == list(range(len(records)))
    assert [g[1] for g in got] == offsets


def test_frame_and_crc_match_tensorflow(tmp_path, shard):
    _, records, _ = shard
    p = str(tmp_path / "x.tfrecord")
    vh.write_records(p, records[:3])
    with open(p, "rb") as f:
        assert f.read() == b"".join(frame(r) for r in records[:3])
    assert masked_crc32c(b"") != masked_crc32c(b"\x00")


@pytest.mark.parametrize("cut", [1, 3, 4, 100, -5, -14])
def test_truncation_anywhere_in_the_last_record_is_located(shard, cut):
    """cut > 0: bytes removed from the end; cut < 0: bytes of the last frame kept (inside its header)."""
    data, records, offsets = shard
    last = len(records) - 1
    end = len(data) - cut if cut > 0 else offsets[last] - cut
    got = _read(data[:end])
    assert [g[2] for g in got[:-1]] == records[:-1]
    d = got[-1]
    assert isinstance(d, Damage) and d.kind == "truncated"
    assert (d.index, d.offset) == (last, offsets[last])


def test_flipped_data_byte_is_located_and_reading_goes_on(shard):
    data, records, offsets = shard
    i = 7
    pos = offsets[i] + 12 + len(records[i]) // 2
    bad = bytearray(data)
    bad[pos] ^= 0x55
    got = _read(bytes(bad))
    assert len(got) == len(records)
    d = got[i]
    assert isinstance(d, Damage) and d.kind == "bad_data_crc" and (d.index, d.offset) == (i, offsets[i])
    assert [g[2] for j, g in enumerate(got) if j != i] == records[:i] + records[i + 1:]


def test_flipped_length_byte_stops_the_file_and_says_how_much_is_unchecked(shard):
    data, records, offsets = shard
    i = 3
    bad = bytearray(data)
    bad[offsets[i] + 1] ^= 0x01
    got = _read(bytes(bad))
    assert [g[2] for g in got[:-1]] == records[:i]
    d = got[-1]
    assert d.kind == "bad_length_crc" and (d.index, d.offset) == (i, offsets[i])
    assert d.unchecked_bytes == len(data) - offsets[i] - 12


def test_example_proto_parses_like_tensorflow(shard):
    _, records, _ = shard
    for r in records[:5]:
        mine = Example.FromString(r)
        theirs = vh.tf().train.Example.FromString(r)
        assert mine.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
        assert set(mine.features.feature) == set(theirs.features.feature)
        assert mine.features.feature["key"].bytes_list.value[0] == theirs.features.feature["key"].bytes_list.value[0]
