"""End to end through the real img2dataset, downloading from a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import glob
import json
import os

import pyarrow.parquet as pq
from PIL import Image
import io

from laionprep import shards
from laionprep.ingest.download import list_done

DROPPED_KINDS = {"nsfw", "low_similarity", "null_similarity", "bad_url", "empty_caption"}


def records(download_dir):
    out = []
    for s in shards.scan(download_dir).shards:
        out.extend(shards.parse_example(r) for r in shards.iter_records(s.tfrecord))
    return out


def truth(download_dir):
    work = os.path.dirname(download_dir)
    return pq.read_table(os.path.join(work, "source", "truth", "metadata.parquet")).to_pylist()


def test_records_carry_keys_size_and_columns(demo_download):
    recs = records(demo_download)
    assert len(recs) > 150
    for r in recs:
        for k in ("jpg", "txt", "key", "width", "height", "NSFW", "similarity", "LICENSE"):
            assert k in r, k
        assert r["similarity"][0] == "float" and r["width"][0] == "int64" and r["NSFW"][0] == "bytes"
        img = Image.open(io.BytesIO(r["jpg"][1][0]))
        assert img.format == "JPEG"
        assert min(img.size) == 480, img.size  # keep_ratio: short side == 480, upscaled or shrunk
        assert (img.width, img.height) == (r["width"][1][0], r["height"][1][0])
        assert r["txt"][1][0].decode().strip()
    keys = [r["key"][1][0] for r in recs]
    assert len(keys) == len(set(keys))


def test_filtered_rows_absent_and_accounting(demo_download):
    recs = records(demo_download)
    rows = truth(demo_download)
    by_kind_urls = {}
    for r in rows:
        by_kind_urls.setdefault(r["kind"], set()).add(r["URL"])
    ok_urls = by_kind_urls["ok"] | by_kind_urls.get("duplicate", set())
    rec_urls = [r["url"][1][0].decode() for r in recs]
    assert len(rec_urls) == len(set(rec_urls)), "a URL was downloaded twice"
    for kind in DROPPED_KINDS:
        assert not (set(rec_urls) & (by_kind_urls.get(kind, set()) - ok_urls)), kind
    assert not any("/missing/" in u for u in rec_urls)
    for r in recs:
        assert r["NSFW"][1][0] in (b"UNLIKELY", b"UNSURE") and r["similarity"][1][0] >= 0.3 - 1e-6
    # every OK row that is neither a 404 nor filtered is present
    expected = {r["URL"] for r in rows if r["kind"] == "ok"}
    assert expected <= set(rec_urls)

    m = json.load(open(os.path.join(demo_download, "manifest.json")))
    st, acc = m["stages"], m["accounting"]
    assert m["status"] == "complete" and acc["balanced"]
    assert st["metadata"]["rows"] == len(rows)
    assert st["prefilter"]["rows_in"] == st["prefilter"]["rows_out"] + sum(st["prefilter"]["dropped"].values())
    assert st["prefilter"]["rows_out"] == st["download"]["success"] + sum(st["download"]["failed"].values())
    assert st["download"]["success"] == len(recs)
    assert st["download"]["failed"].get("failed_to_download", 0) == len(by_kind_urls.get("missing", ()))
    assert any("404" in k for k in st["download"]["failure_reasons"])
    kinds = {r["kind"] for r in rows}
    assert st["prefilter"]["dropped"]["nsfw"] == sum(r["kind"] == "nsfw" for r in rows)
    assert {"nsfw", "low_similarity", "missing", "bad_url"} <= kinds
    assert m["versions"]["img2dataset"].startswith("1.47")
    # no foreign json in the img2dataset folder (its resume would crash on it)
    jsons = glob.glob(os.path.join(demo_download, "tfrecord", "*.json"))
    assert jsons and all(j.endswith("_stats.json") for j in jsons)


def test_stats_match_parquet_and_records(demo_download):
    scan = shards.scan(demo_download)
    assert not scan.gaps and not scan.orphans and len(scan.shards) == len(list_done(scan.folder)) >= 4
    for s in scan.shards:
        status = pq.read_table(s.parquet, columns=["status"]).column("status").to_pylist()
        assert status.count("success") == s.count == sum(1 for _ in shards.iter_records(s.tfrecord))
