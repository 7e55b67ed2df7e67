"""The metadata prefilter on hand-made parquet files: reasons, order, sentinels, types, duplicates, bad input."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laionprep.datasets import Column, Filters, get_spec
from laionprep.errors import DataError
from laionprep.ingest.prefilter import REASONS, prefilter


def write(path, rows, schema=None):
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path)
    return str(path)


def row(url, text="a red circle", nsfw="UNLIKELY", sim=0.35, lic="?"):
    return {"URL": url, "TEXT": text, "NSFW": nsfw, "similarity": sim, "LICENSE": lic}


def test_reasons_in_order_and_accounting(tmp_path):
    spec = get_spec("laion400m")
    a = write(tmp_path / "a.parquet", [
        row("http://x/1.jpg"),                      # kept
        row(""),                                    # invalid_url
        row("ftp://x/2.jpg"),                       # invalid_url
        row(None),                                  # invalid_url (null)
        row("http://x/3.jpg", text="   "),          # empty_caption
        row("http://x/4.jpg", nsfw="NSFW"),         # nsfw
        row("http://x/5.jpg", nsfw="NSFW", sim=0.1),  # nsfw wins over low_similarity (first reason)
        row("http://x/6.jpg", sim=0.29),            # low_similarity
        row("http://x/7.jpg", sim=None),            # low_similarity (null -> sentinel -1)
        row("HTTPS://x/8.jpg", nsfw="unsure"),      # kept: scheme and tag are case-insensitive
        row("http://x/1.jpg"),                      # duplicate_url (same file)
    ])
    b = write(tmp_path / "b.parquet", [row("http://x/8.jpg"), row("HTTPS://x/8.jpg"), row("http://x/9.jpg")])
    rep = prefilter(spec, [a, b], str(tmp_path / "out"), spec.default_filters)
    assert rep.rows_in == 14
    assert rep.dropped == {"invalid_url": 3, "empty_caption": 1, "nsfw": 2, "low_similarity": 2, "high_punsafe": 0,
                           "high_pwatermark": 0, "duplicate_url": 2}
    assert rep.rows_out == 4 and rep.rows_in == rep.rows_out + sum(rep.dropped.values())
    out0 = pq.read_table(tmp_path / "out" / "00000.parquet").to_pydict()
    out1 = pq.read_table(tmp_path / "out" / "00001.parquet").to_pydict()
    assert out0["url"] == ["http://x/1.jpg", "HTTPS://x/8.jpg"]
    assert out1["url"] == ["http://x/8.jpg", "http://x/9.jpg"]  # http vs HTTPS: different URLs; the HTTPS dup dropped
    assert set(out0) == {"url", "caption", "NSFW", "similarity", "LICENSE"}
    # per-file report adds up to the total
    assert sum(f["rows_in"] for f in rep.files) == 14
    assert [f["dropped"]["duplicate_url"] for f in rep.files] == [1, 1]
    report = json.loads((tmp_path / "out" / "_prefilter_report.json").read_text())
    assert report["rows_out"] == 4


def test_lowercase_columns_and_sentinels(tmp_path):
    """Re-LAION's lower-case columns resolve; nulls become the documented sentinels with one type per column."""
    spec = get_spec("relaion2b-en-research-safe")
    path = write(tmp_path / "r.parquet", [
        {"url": "http://x/1.jpg", "caption": "a cat", "similarity": 0.4, "punsafe": 0.1, "pwatermark": 0.2},
        {"url": "http://x/2.jpg", "caption": "a dog", "similarity": 0.4, "punsafe": None, "pwatermark": 0.2},
        {"url": "http://x/3.jpg", "caption": "a cow", "similarity": 0.4, "punsafe": 0.1, "pwatermark": 0.9},
        {"url": "http://x/4.jpg", "caption": "a pig", "similarity": 0.4, "punsafe": 0.7, "pwatermark": 0.1},
    ])
    rep = prefilter(spec, [path], str(tmp_path / "out"), spec.default_filters)
    assert rep.dropped["high_punsafe"] == 2 and rep.dropped["high_pwatermark"] == 1 and rep.rows_out == 1
    # with no filters, the null punsafe is kept as the float sentinel
    rep2 = prefilter(spec, [path], str(tmp_path / "out2"), Filters())
    t = pq.read_table(tmp_path / "out2" / "00000.parquet")
    assert t.schema.field("punsafe").type == pa.float64()
    assert t.column("punsafe").to_pylist() == [pytest.approx(0.1), -1.0, pytest.approx(0.1), pytest.approx(0.7)]
    assert rep2.files[0]["nulls_replaced"] == {"punsafe": 1}


def test_missing_extra_column_filled_and_warned(tmp_path):
    spec = get_spec("laion400m")
    path = write(tmp_path / "m.parquet",
                 [{"URL": "http://x/1.jpg", "TEXT": "t", "NSFW": "UNLIKELY", "similarity": 0.5}])
    rep = prefilter(spec, [path], str(tmp_path / "out"), spec.default_filters)
    assert rep.rows_out == 1
    assert any("LICENSE" in w for w in rep.warnings)
    assert pq.read_table(tmp_path / "out" / "00000.parquet").column("LICENSE").to_pylist() == [""]


def test_list_column_stored_as_json(tmp_path):
    """DataComp's face_bboxes (a list column) is carried as JSON text instead of img2dataset's empty tfrecords."""
    spec = get_spec("datacomp_small")
    path = write(tmp_path / "d.parquet", [
        {"uid": "ab", "url": "http://x/1.jpg", "text": "t", "face_bboxes": [[0.1, 0.2, 0.3, 0.4]],
         "clip_b32_similarity_score": 0.3, "clip_l14_similarity_score": 0.2, "sha256": "00"},
        {"uid": "cd", "url": "http://x/2.jpg", "text": "u", "face_bboxes": None,
         "clip_b32_similarity_score": 0.3, "clip_l14_similarity_score": None, "sha256": "11"},
    ])
    cols = list(spec.extra_columns) + [Column("face_bboxes", "json")]
    rep = prefilter(spec, [path], str(tmp_path / "out"), spec.default_filters, columns=cols)
    t = pq.read_table(tmp_path / "out" / "00000.parquet").to_pydict()
    assert t["face_bboxes"] == ["[[0.1,0.2,0.3,0.4]]", ""]
    assert t["clip_l14_similarity_score"] == [pytest.approx(0.2), -1.0]
    assert rep.columns["face_bboxes"] == "json" and any("JSON" in w for w in rep.warnings)


def test_max_samples_cuts_across_files(tmp_path):
    spec = get_spec("laion400m")
    a = write(tmp_path / "a.parquet", [row(f"http://x/{i}.jpg") for i in range(5)])
    b = write(tmp_path / "b.parquet", [row(f"http://y/{i}.jpg") for i in range(5)])
    rep = prefilter(spec, [a, b], str(tmp_path / "out"), spec.default_filters, max_samples=7)
    assert rep.rows_in == 7 and rep.rows_out == 7
    assert [f["rows_in"] for f in rep.files] == [5, 2]


def test_missing_url_column_names_file_and_columns(tmp_path):
    spec = get_spec("laion400m")
    path = write(tmp_path / "bad.parquet", [{"LINK": "http://x", "TEXT": "t"}])
    with pytest.raises(DataError) as e:
        prefilter(spec, [path], str(tmp_path / "out"), spec.default_filters)
    msg = e.value.render()
    assert "bad.parquet" in msg and "LINK" in msg and "URL" in msg


def test_wrong_column_type_named(tmp_path):
    spec = get_spec("laion400m")
    path = write(tmp_path / "t.parquet", [row("http://x/1.jpg", sim="high")])
    with pytest.raises(DataError) as e:
        prefilter(spec, [path], str(tmp_path / "out"), spec.default_filters)
    assert "similarity" in e.value.render() and "t.parquet" in e.value.render()


def test_unreadable_parquet_named(tmp_path):
    spec = get_spec("laion400m")
    good = write(tmp_path / "good.parquet", [row("http://x/1.jpg")])
    bad = tmp_path / "trunc.parquet"
    bad.write_bytes(open(good, "rb").read()[:40])
    with pytest.raises(DataError) as e:
        prefilter(spec, [str(bad)], str(tmp_path / "out"), spec.default_filters)
    assert "trunc.parquet" in e.value.render()


def test_rerun_is_deterministic_and_reuses_report(tmp_path):
    spec = get_spec("laion400m")
    a = write(tmp_path / "a.parquet", [row(f"http://x/{i % 7}.jpg", sim=0.2 + i / 50) for i in range(30)])
    out = tmp_path / "out"
    rep1 = prefilter(spec, [a], str(out), spec.default_filters)
    data1 = (out / "00000.parquet").read_bytes()
    rep2 = prefilter(spec, [a], str(out), spec.default_filters)
    assert rep1 == rep2 and (out / "00000.parquet").read_bytes() == data1
    rep3 = prefilter(spec, [a], str(out), spec.default_filters.replace(min_similarity=0.5))  # new params: recomputed
    assert rep3.params_hash != rep1.params_hash and set(REASONS) == set(rep3.dropped)
    assert rep3.dropped["low_similarity"] > rep1.dropped["low_similarity"]
    assert rep3.rows_in == rep3.rows_out + sum(rep3.dropped.values())
