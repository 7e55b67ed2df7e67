"""Issue #14: no empty success.  A flag that selects nothing, a filter whose column is missing or null, or an address
policy that refuses every URL is a clear error (usage: exit 2 before anything is written; data: exit 1 with the
summary table and the manifest on disk), never exit 0 with nothing kept.  And ``--extra-columns`` adds to the spec's
columns (DataComp's sha256 check stays on), ``--columns`` replaces them (with a warning).

Real parts: generated metadata parquet files, the real img2dataset fetching from the demo server on 127.0.0.1.
docs/RELIABILITY.md ("Empty results and likely mistakes") lists these cases and tests.
"""
from __future__ import annotations

import hashlib
import json
import os
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laionprep import cli
from laionprep.testing import synth


def image_url(base: str, i: int, seed: int = 0) -> str:
    return f"{base}/img/{seed}/{i}.{synth.sample(seed, i).fmt}"


def write(path, rows: list[dict], schema: pa.Schema | None = None) -> str:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), str(path))
    return str(path)


def demo_rows(base: str, n: int, start: int = 0, similarity: float | None = 0.4) -> list[dict]:
    """Rows of the demo dataset (LAION-400M's columns), each kept by its default filters unless ``similarity``."""
    return [{"URL": image_url(base, i), "TEXT": f"caption {i}", "NSFW": "UNLIKELY", "similarity": similarity,
             "LICENSE": "?"} for i in range(start, start + n)]


DEMO_SCHEMA = pa.schema([("URL", pa.string()), ("TEXT", pa.string()), ("NSFW", pa.string()),
                         ("similarity", pa.float64()), ("LICENSE", pa.string())])


def download(dataset: str, src: str, out: str, *extra: str, allow_private: bool = True) -> list[str]:
    return ["download", "--dataset", dataset, "--metadata-source", src, "--output", out, "--processes", "1",
            "--threads", "8", "--no-progress", *(["--allow-private-addresses"] if allow_private else []), *extra]


def manifest(out: str) -> dict:
    return json.load(open(os.path.join(out, "manifest.json")))


def tfrecords(out: str) -> list[str]:
    d = os.path.join(out, "tfrecord")
    return [n for n in os.listdir(d) if n.endswith(".tfrecord")] if os.path.isdir(d) else []


def fails(argv: list[str], capfd, code: int, *expected: str) -> tuple[str, str]:
    assert cli.main(argv) == code
    got = capfd.readouterr()
    assert "Traceback" not in got.err and "Traceback" not in got.out
    assert "fix:" in got.err
    for s in expected:
        assert s in got.err, (s, got.err)
    return got.out, got.err


# ------------------------------------------------------------------------------------------------ usage errors
@pytest.mark.parametrize("parts,expected", [
    ("5-2", ["the range 5-2 is inverted", "2-5"]),
    ("-1", ["a negative index '-1'"]),
    ("0,,1", ["an empty item"]),
])
def test_malformed_parts_refused_before_anything_is_written(parts, expected, demo_server, tmp_path, capfd):
    src = write(tmp_path / "src" / "part-00000.parquet", demo_rows(demo_server.base_url, 4), DEMO_SCHEMA)
    out = str(tmp_path / "out")
    fails(download("demo", os.path.dirname(src), out, f"--parts={parts}"), capfd, 2, "where: --parts", *expected)
    assert not os.path.exists(out)  # not even the folder lock


def test_unknown_nsfw_tag_lists_the_known_ones(demo_server, tmp_path, capfd):
    src = write(tmp_path / "src" / "part-00000.parquet", demo_rows(demo_server.base_url, 4), DEMO_SCHEMA)
    out = str(tmp_path / "out")
    fails(download("demo", os.path.dirname(src), out, "--nsfw", "UNLIKELY,FOO"), capfd, 2,
          "'FOO' is not an NSFW tag of demo", "where: --nsfw", "UNLIKELY, UNSURE, NSFW")
    fails(download("datacomp_small", os.path.dirname(src), out, "--nsfw", "UNLIKELY"), capfd, 2,
          "has no NSFW tag column", "leave out --nsfw")
    fails(download("demo", os.path.dirname(src), out, "--max-punsafe", "half"), capfd, 2,
          "--max-punsafe 'half': not a number", "--max-punsafe none")
    assert not os.path.exists(out)


def test_columns_leaving_out_a_filtered_column_refused(demo_server, tmp_path, capfd):
    src = write(tmp_path / "src" / "part-00000.parquet", demo_rows(demo_server.base_url, 4), DEMO_SCHEMA)
    out = str(tmp_path / "out")
    fails(download("demo", os.path.dirname(src), out, "--columns", "similarity,LICENSE"), capfd, 2,
          "--columns leaves out 'NSFW', which the nsfw filter reads", "--nsfw none")
    assert not os.path.exists(out)


# ------------------------------------------------------------------------------------------------ missing columns
def test_filter_column_missing_from_a_later_file_is_an_error_before_any_download(demo_server, tmp_path, capfd):
    """Pre-2024 LAION-2B-en copies have no punsafe/pwatermark: the sentinel used to drop 100% of their rows.
    Every file's footer is checked, not only the first's."""
    base = demo_server.base_url
    full = [{"URL": image_url(base, i), "TEXT": f"c {i}", "similarity": 0.4, "punsafe": 0.1, "pwatermark": 0.1}
            for i in range(3)]
    old = [{"URL": image_url(base, i), "TEXT": f"c {i}", "similarity": 0.4} for i in range(3, 6)]
    src = tmp_path / "src"
    write(src / "part-00000.parquet", full)
    bad = write(src / "part-00001.parquet", old)
    out = str(tmp_path / "out")
    fails(download("laion2b-en", str(src), out), capfd, 1, "the max_punsafe filter reads column 'punsafe'",
          f"where: {bad}", "--max-punsafe none", "--no-filters", "max_pwatermark")
    assert not tfrecords(out) and not os.path.exists(os.path.join(out, "prefiltered", "00000.parquet"))
    assert os.path.exists(os.path.join(out, "metadata", "part-00001.parquet"))  # the copy is kept: the fix is a flag
    # the flags the message names turn those two filters off, alone (the similarity filter still applies)
    assert cli.main(download("laion2b-en", str(src), out, "--max-punsafe", "none", "--max-pwatermark", "none")) == 0
    m = manifest(out)
    assert m["status"] == "complete" and m["stages"]["download"]["success"] == 6
    assert m["parameters"]["filters_applied"] == {"nsfw": None, "min_similarity": 0.28, "max_punsafe": None,
                                                  "max_pwatermark": None}


# ------------------------------------------------------------------------------------------------ nothing kept
def test_similarity_null_in_every_row_is_an_error_with_the_table(demo_server, tmp_path, capfd):
    src = write(tmp_path / "src" / "part-00000.parquet", demo_rows(demo_server.base_url, 5, similarity=None),
                DEMO_SCHEMA)
    out = str(tmp_path / "out")
    printed, _ = fails(download("demo", os.path.dirname(src), out), capfd, 1,
                       "the prefilter kept none of the 5 rows: low_similarity 5",
                       "every row was dropped by min_similarity: the 'similarity' column is null in all rows of "
                       "part-00000.parquet: turn the filter off with --min-similarity none")
    assert "dropped: low_similarity" in printed and "kept by prefilter" in printed  # the table, printed first
    m = manifest(out)
    assert m["status"] == "empty" and m["accounting"]["balanced"] and m["accounting"]["kept"] == 0
    assert m["accounting"]["dropped_by_prefilter"] == 5 and not tfrecords(out)


def test_a_filter_taking_every_row_of_one_file_is_a_warning(demo_server, tmp_path, capfd):
    base = demo_server.base_url
    src = tmp_path / "src"
    write(src / "part-00000.parquet", demo_rows(base, 4), DEMO_SCHEMA)
    write(src / "part-00001.parquet", demo_rows(base, 3, start=4, similarity=None), DEMO_SCHEMA)
    out = str(tmp_path / "out")
    assert cli.main(download("demo", str(src), out)) == 0
    printed = capfd.readouterr().out
    expected = ("part-00001.parquet: every row (3) was dropped as low_similarity (min_similarity filter): the "
                "'similarity' column is null in all rows: turn the filter off with --min-similarity none")
    assert expected in printed
    assert "warning: all rows of part-00001.parquet: low_similarity" in printed  # a row of the table
    m = manifest(out)
    assert m["status"] == "complete" and m["stages"]["download"]["success"] == 4
    assert expected in m["stages"]["prefilter"]["warnings"]
    assert m["stages"]["prefilter"]["files_dropped_whole"] == {"part-00001.parquet": {"reason": "low_similarity",
                                                                                     "rows": 3}}


def test_every_url_refused_by_the_address_policy_names_the_flags(demo_server, tmp_path, capfd):
    src = write(tmp_path / "src" / "part-00000.parquet", demo_rows(demo_server.base_url, 4), DEMO_SCHEMA)
    out = str(tmp_path / "out")
    printed, _ = fails(download("demo", os.path.dirname(src), out, allow_private=False), capfd, 1,
                       "every URL (4) was refused by the address policy", "--allow-private-addresses",
                       "--allow-network CIDR")
    assert "refused: loopback address" in printed and "downloaded OK" in printed
    m = manifest(out)
    assert m["status"] == "empty" and m["accounting"]["balanced"]
    assert m["accounting"]["failed_download"] == 4 and m["stages"]["download"]["success"] == 0
    # the failed shards are on disk (img2dataset would keep them): the fix alone is refused, the fix + --restart runs
    fails(download("demo", os.path.dirname(src), out), capfd, 2, "download.allow_private_addresses: false -> true",
          "--restart")
    assert cli.main(download("demo", os.path.dirname(src), out, "--restart")) == 0
    assert manifest(out)["stages"]["download"]["success"] == 4 and len(tfrecords(out)) == 1


def test_a_run_that_fetched_no_image_replans_with_other_filters(demo_server, tmp_path, capfd):
    """A folder whose download stopped before any image (here: its prefilter kept nothing) takes other filters in
    place, as a fresh run would (stage.check_rerun's replan); its metadata copy is not fetched again."""
    src = write(tmp_path / "src" / "part-00000.parquet", demo_rows(demo_server.base_url, 5, similarity=None),
                DEMO_SCHEMA)
    out, ref = str(tmp_path / "out"), str(tmp_path / "ref")
    fails(download("demo", os.path.dirname(src), out), capfd, 1, "--min-similarity none")
    copy = os.path.join(out, "metadata", "part-00000.parquet")
    mtime = os.stat(copy).st_mtime_ns
    assert cli.main(download("demo", os.path.dirname(src), out, "--min-similarity", "none")) == 0
    printed = capfd.readouterr().out
    assert "fetched no image: re-planning with the new parameters" in printed and "min_similarity" in printed
    assert os.stat(copy).st_mtime_ns == mtime and not os.path.exists(os.path.join(out, "_previous"))
    assert cli.main(download("demo", os.path.dirname(src), ref, "--min-similarity", "none")) == 0
    assert manifest(out)["accounting"] == manifest(ref)["accounting"] and manifest(out)["status"] == "complete"
    assert manifest(out)["parameters"] == manifest(ref)["parameters"]


# ------------------------------------------------------------------------------------------------ columns
@pytest.fixture
def datacomp_source(demo_server, tmp_path):
    """40 DataComp rows of demo images: 37 with the sha256 of the served bytes, 3 with a wrong one."""
    base = demo_server.base_url
    rows = []
    for i in range(40):
        body = urllib.request.urlopen(image_url(base, i), timeout=30).read()  # the bytes the server sends
        digest = hashlib.sha256(body).hexdigest() if i % 13 != 5 else "0" * 64  # rows 5, 18, 31 are wrong
        rows.append({"uid": f"{i:032x}", "url": image_url(base, i), "text": f"caption {i}",
                     "clip_b32_similarity_score": 0.3, "clip_l14_similarity_score": 0.25,
                     "face_bboxes": [[0.1, 0.2, 0.3, 0.4]] if i % 2 else [], "sha256": digest})
    return os.path.dirname(write(tmp_path / "dc" / "part-00000.parquet", rows))


def test_extra_columns_add_to_the_spec_and_keep_the_sha256_check(datacomp_source, tmp_path, capfd):
    out = str(tmp_path / "out")
    assert cli.main(download("datacomp_small", datacomp_source, out, "--extra-columns", "uid,face_bboxes")) == 0
    m = manifest(out)
    assert m["stages"]["download"]["success"] == 37
    assert any("hash mismatch" in k for k in m["stages"]["download"]["failure_reasons"])
    assert list(m["stages"]["prefilter"]["columns"]) == ["uid", "clip_b32_similarity_score",
                                                         "clip_l14_similarity_score", "sha256", "face_bboxes"]
    assert m["parameters"]["extra_columns"] == ["uid", "face_bboxes"]


def test_columns_replace_the_spec_and_warn_about_the_sha256_check(datacomp_source, tmp_path, capfd):
    out = str(tmp_path / "out")
    assert cli.main(download("datacomp_small", datacomp_source, out, "--columns", "uid,face_bboxes")) == 0
    printed = capfd.readouterr().out
    warning = "--columns leaves out 'sha256': img2dataset's sha256 check of the downloaded bytes"
    assert warning in printed
    m = manifest(out)
    assert m["stages"]["download"]["success"] == 40  # what the user asked for, said out loud
    assert any(warning in w for w in m["stages"]["prefilter"]["warnings"])
    assert list(m["stages"]["prefilter"]["columns"]) == ["uid", "face_bboxes"]
