"""sha256 "where present, matches the bytes": what can honestly be checked.

img2dataset hashes the ORIGINAL downloaded bytes, then (laionprep never sets skip_reencode) re-encodes every image,
so in a download no record's sha256 can match its stored jpg.  `auto` therefore reports mismatches only when the
dataset's hashes are evidently of the stored bytes (>= 90 % of the checked images match); `stored` always does."""
from __future__ import annotations

import hashlib
import os

import validate_helpers as vh

from laionprep.validate import ValidateConfig, validate


def run(path, **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("decode_fraction", 1.0)
    return validate(ValidateConfig(str(path), **kw))


def test_download_hashes_are_of_the_original_bytes(demo_download):
    p = os.path.join(demo_download, "tfrecord", "00000.tfrecord")
    r = vh.record_features(p, 0)
    assert r["sha256"][0] != hashlib.sha256(r["jpg"][0]).hexdigest().encode()  # re-encoded by img2dataset
    rep = run(demo_download)
    assert rep.ok and any("ORIGINAL downloaded bytes" in n for n in rep.notes)
    stored = run(demo_download, sha256="stored")
    assert stored.counts == {"sha256_mismatch": 190}


def test_hashes_of_the_stored_bytes_are_checked(demo_download, tmp_path, cli):
    d = str(tmp_path / "rs")
    vh.make_resharded(demo_download, d, rehash=True)
    rep = run(d)
    assert rep.ok and any("all 190 checked images match" in n for n in rep.notes)
    # the same size and pixels, encoded again: the bytes (and so the hash) differ
    path = os.path.join(d, "demo_rs-train.tfrecord-00001-of-00004")
    vh.edit_record(path, 3, lambda ex: vh.set_bytes(
        ex, "jpg", vh.jpeg(vh.decode(ex.features.feature["jpg"].bytes_list.value[0]), quality=80)))
    rep = run(d)
    (pr,) = rep.by_kind("sha256_mismatch")
    assert (pr.file, pr.record) == ("demo_rs-train.tfrecord-00001-of-00004", 3)
    assert set(rep.counts) == {"sha256_mismatch"}
    assert cli(d, "--decode-fraction", 1) == 1
    assert run(d, sha256="off").ok
    # not in the decode sample -> not hashed
    assert "sha256_mismatch" not in run(d, decode_fraction=0).counts


def test_malformed_sha256(copy_download):
    d = copy_download()
    vh.edit_record(vh.shard_paths(d, 1)["tfrecord"], 5, lambda ex: vh.set_bytes(ex, "sha256", b"not-a-hash"))
    (pr,) = run(d, decode_fraction=0).by_kind("sha256_malformed")
    assert (pr.file, pr.record) == ("tfrecord/00001.tfrecord", 5)
