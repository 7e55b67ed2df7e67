"""Bad input files, each fed to the real stage: malformed, truncated and garbage parquet, missing, misnamed and
mistyped columns, nulls everywhere, zero rows, non-UTF-8 and 100 kB captions (``laionprep download``), and damaged
TFRecords (``laionprep reshard`` and ``laionprep build-tfds``).

Every case ends one of two ways, and the table says which:

* ``error``: exit 1 (data), a message naming the file (and the record, where there is one) and a fix, and no Python
  traceback on stderr (worker processes included: checked at the file-descriptor level);
* ``kept``: the run succeeds and the oddity is counted in the manifest and reported as a warning - never dropped
  silently.

docs/RELIABILITY.md lists these cases and this file's tests.
"""
from __future__ import annotations

import glob
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laionprep import cli
from laionprep.testing import synth
from laionprep.tfrecord import Damage, read_frames

from .crash_helpers import download_args


ROWS = 12


# ------------------------------------------------------------------------------------------------ metadata
@pytest.fixture(scope="module")
def good_table(tmp_path_factory, demo_server) -> pa.Table:
    """Demo metadata (LAION-400M's columns), every row kept by the filters and served by the demo server."""
    d = str(tmp_path_factory.mktemp("good_meta"))
    synth.write_metadata(d, 40, demo_server.base_url, seed=3, files=1)
    t = pq.read_table(glob.glob(os.path.join(d, "*.parquet"))[0])
    ok = [i for i, u in enumerate(t["URL"].to_pylist()) if u and u.startswith("http") and "missing" not in u]
    t = t.take(pa.array(ok[:ROWS]))
    n = t.num_rows
    t = t.set_column(t.schema.get_field_index("NSFW"), "NSFW", pa.array(["UNLIKELY"] * n))
    return t.set_column(t.schema.get_field_index("similarity"), "similarity", pa.array([0.4] * n, pa.float64()))


def _col(t: pa.Table, name: str, arr) -> pa.Table:
    return t.set_column(t.schema.get_field_index(name), name, arr)


def _bytes(fn):
    def w(p, t):
        buf = pa.BufferOutputStream()
        pq.write_table(t, buf)
        open(p, "wb").write(fn(bytearray(buf.getvalue().to_pybytes())))
    return w


def _flip_pages(raw: bytearray) -> bytes:
    for i in range(8, len(raw) // 2, 5):  # the data pages; the footer (at the end) stays readable
        raw[i] ^= 0x5A
    return bytes(raw)


# name -> (writer(path, good table), strings the message must contain)
METADATA_ERRORS = {
    "truncated": (_bytes(lambda r: bytes(r[: len(r) // 2])), ["unreadable parquet file"]),
    "garbage": (lambda p, t: open(p, "wb").write(os.urandom(4000)), ["unreadable parquet file"]),
    "empty_file": (lambda p, t: open(p, "wb").write(b""), ["unreadable parquet file"]),
    "corrupt_pages": (_bytes(_flip_pages), ["unreadable parquet"]),
    "missing_url_column": (lambda p, t: pq.write_table(t.drop(["URL"]), p), ["no url column", "found ["]),
    "misnamed_url_column": (lambda p, t: pq.write_table(t.rename_columns(
        ["URL_" if c == "URL" else c for c in t.column_names]), p), ["no url column", "rename column 'URL_' to 'URL'"]),
    "misnamed_caption_column": (lambda p, t: pq.write_table(t.rename_columns(
        ["TXT" if c == "TEXT" else c for c in t.column_names]), p), ["no caption column", "rename column 'TXT'"]),
    "similarity_as_string": (lambda p, t: pq.write_table(_col(t, "similarity", pa.array(
        [str(x) for x in t["similarity"].to_pylist()])), p), ["column 'similarity' has type string"]),
    "nsfw_as_int": (lambda p, t: pq.write_table(_col(t, "NSFW", pa.array(range(t.num_rows), pa.int64())), p),
                    ["column 'NSFW' has type int64, expected text"]),
    "url_as_int": (lambda p, t: pq.write_table(_col(t, "URL", pa.array(range(t.num_rows), pa.int64())), p),
                   ["column 'URL' has type int64, expected text"]),
    "caption_as_list": (lambda p, t: pq.write_table(_col(t, "TEXT", pa.array([["a", "b"]] * t.num_rows)), p),
                        ["column 'TEXT' has type list<", "expected text (the caption)"]),
}


def download(source: str, out: str, *extra: str) -> list[str]:
    return download_args(source, out, *extra, processes=1)


@pytest.mark.parametrize("case", sorted(METADATA_ERRORS))
def test_bad_metadata_is_a_clear_error_naming_the_file(case, good_table, tmp_path, capfd):
    writer, expected = METADATA_ERRORS[case]
    src = tmp_path / "src"
    src.mkdir()
    bad = str(src / "part-00007.parquet")
    writer(bad, good_table)
    out = str(tmp_path / "out")
    assert cli.main(download(str(src), out)) == 1
    err = capfd.readouterr().err
    assert "laionprep download: error:" in err and "Traceback" not in err
    assert f"where: {bad}" in err  # the user's file, not only laionprep's copy of it
    assert "fix:" in err
    for s in expected:
        assert s in err, (s, err)
    # the bad copy is not kept: once the source file is fixed, the same command fetches it again
    assert not os.path.exists(os.path.join(out, "metadata", "part-00007.parquet"))


def test_fixed_metadata_is_fetched_again_even_at_the_same_size(good_table, tmp_path, capfd):
    """A misnamed column fixed in place can keep the file's size: the re-run must not reuse the old copy."""
    src = tmp_path / "src"
    src.mkdir()
    p = str(src / "part-00000.parquet")
    empty = good_table.slice(0, 0)  # zero rows: the run after the fix needs no images
    pq.write_table(empty.rename_columns(["URI" if c == "URL" else c for c in empty.column_names]), p)
    size = os.path.getsize(p)
    out = str(tmp_path / "out")
    assert cli.main(download(str(src), out)) == 1
    assert "rename column 'URI' to 'URL'" in capfd.readouterr().err
    pq.write_table(empty, p)
    assert os.path.getsize(p) == size
    assert cli.main(download(str(src), out)) == 0, capfd.readouterr().err
    m = json.load(open(os.path.join(out, "manifest.json")))
    assert m["status"] == "complete" and m["accounting"]["metadata_rows"] == 0
    assert any("has no rows" in w for w in m["stages"]["prefilter"]["warnings"])


def _null_table(t: pa.Table, typed: bool) -> pa.Table:
    return pa.table({c: pa.nulls(t.num_rows, t.schema.field(c).type if typed else pa.null()) for c in t.column_names})


@pytest.mark.parametrize("typed", [True, False], ids=["typed_nulls", "null_type"])
def test_nulls_everywhere_are_counted_as_drops_and_reported(typed, good_table, tmp_path, capfd):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(_null_table(good_table, typed), str(src / "part-00000.parquet"))
    out = str(tmp_path / "out")
    # every row dropped: exit 1 (issue #14: no empty success), with the summary and the manifest written first
    assert cli.main(download(str(src), out)) == 1
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err
    assert "the prefilter kept none of the" in printed.err and "invalid_url: no http(s) URL" in printed.err
    m = json.load(open(os.path.join(out, "manifest.json")))
    n = good_table.num_rows
    assert m["status"] == "empty"
    assert m["accounting"]["metadata_rows"] == n == m["accounting"]["dropped_by_prefilter"]
    assert m["stages"]["prefilter"]["dropped"]["invalid_url"] == n and m["accounting"]["balanced"]
    warnings = m["stages"]["prefilter"]["warnings"]
    assert any("'URL' (URL) is null in all" in w for w in warnings) and "null in all" in printed.out
    assert "dropped: invalid_url" in printed.out


def test_zero_row_file_is_reported(good_table, tmp_path, capfd):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(good_table.slice(0, 0), str(src / "part-00000.parquet"))
    out = str(tmp_path / "out")
    assert cli.main(download(str(src), out)) == 0
    printed = capfd.readouterr().out
    assert "part-00000.parquet: the file has no rows" in printed
    m = json.load(open(os.path.join(out, "manifest.json")))
    assert m["accounting"]["metadata_rows"] == 0 and m["stages"]["download"]["shards_expected"] == 0


def test_non_utf8_and_100kB_captions_are_kept_counted_and_reported(good_table, tmp_path, capfd):
    """Real img2dataset download.  Captions that are not UTF-8 (in a binary column, and in a string column whose
    bytes were never checked) are repaired (U+FFFD), counted and reported with their rows; a 100 kB caption is kept
    whole and reported.  Every row reaches the TFRecords."""
    from laionprep import shards

    n = good_table.num_rows
    caps = [c.encode() for c in good_table["TEXT"].to_pylist()]
    caps[1] = b"caf\xe9 au lait \xff"  # latin-1, not UTF-8
    caps[4] = b"\xc3\x28 broken"
    long_caption = ("a very long caption " * 5000)[:100_000]
    caps[3] = long_caption.encode()
    src = tmp_path / "src"
    src.mkdir()
    half = n // 2
    caps[half] = b"\xff\xfe" + caps[half]
    a = _col(good_table.slice(0, half), "TEXT", pa.array(caps[:half], pa.binary()))
    b = _col(good_table.slice(half), "TEXT", pa.array(caps[half:], pa.binary()).view(pa.string()))  # unchecked
    pq.write_table(a, str(src / "part-00000.parquet"))
    pq.write_table(b, str(src / "part-00001.parquet"))
    out = str(tmp_path / "out")
    assert cli.main(download(str(src), out, "--no-filters")) == 0
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err
    m = json.load(open(os.path.join(out, "manifest.json")))
    pre = m["stages"]["prefilter"]
    assert pre["rows_in"] == pre["rows_out"] == n  # nothing dropped
    assert pre["invalid_utf8_repaired"] == {"TEXT": 3} and pre["long_captions"] == 1
    report = json.load(open(os.path.join(out, "prefiltered", "_prefilter_report.json")))
    files = {f["input"]: f for f in report["files"]}
    assert files["part-00000.parquet"]["invalid_utf8_repaired"] == {"TEXT": 2}
    assert files["part-00001.parquet"]["invalid_utf8_repaired"] == {"TEXT": 1}
    assert files["part-00000.parquet"]["long_captions"] == 1
    w = "\n".join(pre["warnings"])
    assert "part-00000.parquet: 2 value(s) of column 'TEXT' are not valid UTF-8 (rows 1, 4)" in w
    assert "part-00001.parquet: 1 value(s) of column 'TEXT' are not valid UTF-8 (rows 0)" in w
    assert "1 caption(s) longer than 4096 characters (rows 3; longest 100,000)" in w
    assert "not valid UTF-8" in printed.out and "longer than 4096" in printed.out
    # every row is downloaded (the demo server serves them all), with its caption
    assert m["accounting"]["downloaded_ok"] == n and m["accounting"]["balanced"]
    got = {}
    for s in shards.scan(out).shards:
        for r in shards.iter_records(s.tfrecord):
            ex = shards.parse_example(r)
            got[ex["url"][1][0].decode()] = ex["txt"][1][0].decode("utf-8")  # valid UTF-8 now
    urls = good_table["URL"].to_pylist()
    assert got[urls[3]] == long_caption
    assert got[urls[1]] == "caf\ufffd au lait \ufffd"
    assert got[urls[4]] == "\ufffd( broken"
    assert got[urls[half]].startswith("\ufffd\ufffd")
    assert got[urls[0]] == caps[0].decode()


# ------------------------------------------------------------------------------------------------ TFRecords
def _frames(path: str):
    with open(path, "rb") as f:
        return [fr for fr in read_frames(f)]


def _truncate(raw: bytearray, frames):
    _, off, data = frames[len(frames) // 2]
    return bytes(raw[: off + 12 + len(data) // 2]), len(frames) // 2  # cut inside the middle record's data


def _flip_data(raw: bytearray, frames):
    i = len(frames) // 2
    _, off, data = frames[i]
    raw[off + 12 + len(data) // 2] ^= 0xFF
    return bytes(raw), i


def _flip_length(raw: bytearray, frames):
    i = 3
    raw[frames[i][1] + 9] ^= 0x01  # the length CRC of record 3
    return bytes(raw), i


def _garbage(raw: bytearray, frames):
    return os.urandom(len(raw)), 0


TFRECORD_DAMAGE = {"truncated": _truncate, "flipped_data_crc_byte": _flip_data,
                   "flipped_length_crc_byte": _flip_length, "garbage": _garbage}


@pytest.fixture
def damaged(copy_download):
    def make(kind: str) -> tuple[str, str, int]:
        dl = copy_download()
        path = sorted(glob.glob(os.path.join(dl, "tfrecord", "*.tfrecord")))[1]
        frames = _frames(path)
        assert not [f for f in frames if isinstance(f, Damage)] and len(frames) > 6
        data, index = TFRECORD_DAMAGE[kind](bytearray(open(path, "rb").read()), frames)
        open(path, "wb").write(data)
        return dl, path, index
    return make


@pytest.mark.parametrize("kind", sorted(TFRECORD_DAMAGE))
def test_damaged_tfrecord_fed_to_reshard(kind, damaged, tmp_path, capfd):
    dl, path, index = damaged(kind)
    out = str(tmp_path / "out")
    rc = cli.main(["reshard", dl, "--output", out, "--name", "bad", "--num-shards", "2", "--no-progress"])
    err = capfd.readouterr().err  # file-descriptor level: Beam's worker processes included
    assert rc == 1, err
    assert "Traceback" not in err and "laionprep reshard: error:" in err
    assert f"where: {path} record {index}" in err
    assert "laionprep validate" in err and "--quarantine" in err  # the fix
    assert not os.path.exists(os.path.join(out, "counts.json"))  # never marked complete
    assert not glob.glob(os.path.join(out, "**", "*.tmp-*"), recursive=True)


@pytest.mark.parametrize("kind", sorted(TFRECORD_DAMAGE))
def test_damaged_tfrecord_fed_to_build_tfds(kind, damaged, tmp_path, capfd):
    dl, path, index = damaged(kind)
    root = str(tmp_path / "tfds")
    rc = cli.main(["build-tfds", "--name", "bad_tfrecord", "--source", dl, "--data-dir", root, "--no-progress"])
    err = capfd.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err and "laionprep build-tfds: error:" in err
    assert path in err and f"record {index}" in err and "fix:" in err
    assert not glob.glob(os.path.join(root, "bad_tfrecord", "*", "dataset_info.json"))  # nothing registered
