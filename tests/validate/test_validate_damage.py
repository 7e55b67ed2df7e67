"""A valid demo download passes; copies damaged in exactly one way each are caught, named and located precisely.

Every damage is checked twice: through the API (for the exact kind / file / record / offset) and through the CLI
(exit code 1; the undamaged download gives 0)."""
from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import validate_helpers as vh
from PIL import Image

from laionprep.validate import ValidateConfig, validate


def run(path, **kw):
    kw.setdefault("workers", 1)
    kw.setdefault("decode_fraction", 1.0)
    return validate(ValidateConfig(str(path), **kw))


def only(rep, kind):
    got = rep.by_kind(kind)
    assert got, f"no {kind} problem; found {rep.counts}"
    return got


def test_undamaged_download_is_valid(demo_download, cli, capsys):
    rep = run(demo_download, workers=2)
    assert rep.ok, rep.problem_rows()
    assert rep.kind == "download"
    manifest = json.load(open(os.path.join(demo_download, "manifest.json")))
    assert rep.totals["records"] == manifest["stages"]["download"]["success"] == rep.totals["decoded"]
    assert rep.totals["shards"] == manifest["stages"]["download"]["shards_done"]
    assert rep.config["checks"]["image_size"] == 480
    assert set(rep.config["checks"]["required"]) >= {"jpg", "txt", "key", "width", "height", "NSFW", "similarity",
                                                      "LICENSE"}
    assert cli(demo_download, "--workers", 2, "--decode-fraction", 1) == 0
    assert "OK" in capsys.readouterr().out


def test_tfrecord_subfolder_is_accepted(demo_download):
    rep = run(os.path.join(demo_download, "tfrecord"), decode_fraction=0)
    assert rep.ok and rep.kind == "download" and rep.folder == demo_download


# --------------------------------------------------------------------------------------------- integrity
def test_truncated_tail(copy_download, cli):
    d = copy_download()
    p = vh.shard_paths(d, 2)["tfrecord"]
    offs = vh.frame_offsets(p)
    os.truncate(p, os.path.getsize(p) - 1000)
    rep = run(d)
    (pr,) = only(rep, "truncated")
    assert (pr.file, pr.record, pr.offset) == ("tfrecord/00002.tfrecord", len(offs) - 1, offs[-1])
    assert "ends inside record" in pr.message
    assert rep.totals["records"] == 190 - 1  # every other record of every shard was still read
    assert cli(d) == 1


def test_flipped_byte_mid_record(copy_download, cli):
    d = copy_download()
    p = vh.shard_paths(d, 1)["tfrecord"]
    offs = vh.frame_offsets(p)
    recs = vh.read_records(p)
    with open(p, "r+b") as f:
        pos = offs[7] + 12 + len(recs[7]) // 2
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0xFF]))
    rep = run(d)
    (pr,) = only(rep, "bad_data_crc")
    assert (pr.file, pr.record, pr.offset) == ("tfrecord/00001.tfrecord", 7, offs[7])
    assert rep.totals["records"] == 190 and "count_mismatch" not in rep.counts
    assert cli(d) == 1


def test_flipped_byte_in_a_length_field(copy_download):
    d = copy_download()
    p = vh.shard_paths(d, 3)["tfrecord"]
    offs = vh.frame_offsets(p)
    with open(p, "r+b") as f:
        f.seek(offs[4] + 1)
        b = f.read(1)
        f.seek(offs[4] + 1)
        f.write(bytes([b[0] ^ 0x01]))
    rep = run(d)
    (pr,) = only(rep, "bad_length_crc")
    assert (pr.file, pr.record, pr.offset) == ("tfrecord/00003.tfrecord", 4, offs[4])
    assert "cannot be checked" in pr.message


# --------------------------------------------------------------------------------------------- schema
def test_similarity_stored_as_bytes(copy_download, cli):
    d = copy_download()
    vh.edit_record(vh.shard_paths(d, 0)["tfrecord"], 5, lambda ex: vh.set_bytes(ex, "similarity", b""))
    rep = run(d, decode_fraction=0)
    (pr,) = only(rep, "mixed_type")
    assert (pr.file, pr.record, pr.count) == ("tfrecord/00000.tfrecord", 5, 1)
    assert "float in 189 records" in pr.message and "bytes in 1 record" in pr.message
    assert set(rep.counts) == {"mixed_type"}
    assert cli(d, "--decode-fraction", 0) == 1


def test_missing_required_key(copy_download):
    d = copy_download()
    p = vh.shard_paths(d, 1)["tfrecord"]
    key = vh.edit_record(p, 2, lambda ex: ex.features.feature.pop("txt"))["key"][0].decode()
    rep = run(d, decode_fraction=0)
    (pr,) = only(rep, "missing_key")
    assert (pr.file, pr.record, pr.key) == ("tfrecord/00001.tfrecord", 2, key)
    assert "txt" in pr.message


# --------------------------------------------------------------------------------------------- content
def test_non_jpeg_bytes_under_jpg_even_without_decoding(copy_download, cli):
    d = copy_download()
    p = vh.shard_paths(d, 3)["tfrecord"]

    def to_png(ex):
        import io

        buf = io.BytesIO()
        vh.decode(ex.features.feature["jpg"].bytes_list.value[0]).save(buf, format="PNG")
        vh.set_bytes(ex, "jpg", buf.getvalue())

    vh.edit_record(p, 3, to_png)
    for fraction in (0.0, 1.0):
        rep = run(d, decode_fraction=fraction)
        (pr,) = only(rep, "not_jpeg")
        assert (pr.file, pr.record) == ("tfrecord/00003.tfrecord", 3)
        assert "89 50 4e 47" in pr.message  # the PNG signature it found instead
    assert cli(d, "--decode-fraction", 0) == 1


def test_truncated_jpeg_is_found_by_decoding(copy_download):
    d = copy_download()
    p = vh.shard_paths(d, 0)["tfrecord"]
    vh.edit_record(p, 9, lambda ex: vh.set_bytes(ex, "jpg", ex.features.feature["jpg"].bytes_list.value[0][:3000]))
    (pr,) = only(run(d, decode_fraction=1.0), "not_jpeg")
    assert (pr.file, pr.record) == ("tfrecord/00000.tfrecord", 9) and "does not decode" in pr.message
    assert "not_jpeg" not in run(d, decode_fraction=0.0).counts  # the header alone is intact: only decoding tells


def test_wrong_short_side(copy_download, cli):
    d = copy_download()
    p = vh.shard_paths(d, 0)["tfrecord"]

    def shrink(ex):
        im = vh.decode(ex.features.feature["jpg"].bytes_list.value[0])
        w, h = im.size
        s = 470 / min(w, h)
        im = im.resize((round(w * s), round(h * s)), Image.BICUBIC)
        vh.set_bytes(ex, "jpg", vh.jpeg(im))
        vh.set_int(ex, "width", im.size[0])
        vh.set_int(ex, "height", im.size[1])

    vh.edit_record(p, 2, shrink)
    for fraction in (0.0, 1.0):  # width/height features are checked on every record, decoded sizes on the sample
        rep = run(d, decode_fraction=fraction)
        (pr,) = only(rep, "wrong_short_side")
        assert (pr.file, pr.record) == ("tfrecord/00000.tfrecord", 2)
        assert "expected short side 480" in pr.message and "470" in pr.message
        assert set(rep.counts) == {"wrong_short_side"}
    assert cli(d) == 1


def test_size_features_that_disagree_with_the_image(copy_download):
    d = copy_download()
    p = vh.shard_paths(d, 2)["tfrecord"]
    recs = [vh.record_features(p, i) for i in range(5)]
    i = next(i for i, r in enumerate(recs) if r["width"][0] > r["height"][0])
    w = recs[i]["width"][0]
    vh.edit_record(p, i, lambda ex: vh.set_int(ex, "width", w + 3))
    (pr,) = only(run(d), "size_mismatch")
    assert (pr.file, pr.record) == ("tfrecord/00002.tfrecord", i)
    assert f"{w + 3}x" in pr.message and f"decodes to {w}x" in pr.message


def test_empty_caption(copy_download, cli):
    d = copy_download()
    key = vh.edit_record(vh.shard_paths(d, 2)["tfrecord"], 4, lambda ex: vh.set_bytes(ex, "txt", b""))["key"][0]
    rep = run(d, decode_fraction=0)
    (pr,) = only(rep, "empty_caption")
    assert (pr.file, pr.record, pr.key) == ("tfrecord/00002.tfrecord", 4, key.decode())
    assert set(rep.counts) == {"empty_caption"}
    assert cli(d, "--decode-fraction", 0) == 1


def test_caption_that_is_not_utf8(copy_download):
    d = copy_download()
    vh.edit_record(vh.shard_paths(d, 1)["tfrecord"], 0, lambda ex: vh.set_bytes(ex, "txt", b"caf\xe9 au lait"))
    (pr,) = only(run(d, decode_fraction=0), "bad_caption")
    assert (pr.file, pr.record) == ("tfrecord/00001.tfrecord", 0) and "UTF-8" in pr.message


def test_duplicated_key(copy_download, cli):
    d = copy_download()
    first = vh.record_features(vh.shard_paths(d, 0)["tfrecord"], 0)["key"][0]
    vh.edit_record(vh.shard_paths(d, 2)["tfrecord"], 10, lambda ex: vh.set_bytes(ex, "key", first))
    rep = run(d, decode_fraction=0)
    (pr,) = only(rep, "duplicate_key")
    assert (pr.file, pr.record, pr.key) == ("tfrecord/00002.tfrecord", 10, first.decode())
    assert "tfrecord/00000.tfrecord record 0" in pr.message
    # the shard parquet no longer lists that record's key as a success row either
    assert any(p.file == "tfrecord/00002.tfrecord" and p.record == 10 for p in rep.by_kind("parquet_mismatch"))
    assert cli(d, "--decode-fraction", 0) == 1


# --------------------------------------------------------------------------------------------- accounting
def test_removed_shard_is_a_gap(copy_download, cli):
    d = copy_download()
    for p in vh.shard_paths(d, 1).values():
        os.remove(p)
    rep = run(d, decode_fraction=0)
    (pr,) = only(rep, "missing_shard")
    assert pr.file == "tfrecord/00001.tfrecord"
    assert any("shards hold 155 records" in p.message for p in rep.by_kind("manifest_mismatch"))
    assert cli(d, "--decode-fraction", 0) == 1


def test_removed_last_shard_is_found_from_the_manifest(copy_download):
    d = copy_download()
    for p in vh.shard_paths(d, 3).values():
        os.remove(p)
    (pr,) = only(run(d, decode_fraction=0), "missing_shard")
    assert pr.file == "tfrecord/00003.tfrecord" and "expects 4 shards" in pr.message


def test_stats_file_that_disagrees_with_its_shard(copy_download, cli):
    d = copy_download()
    sp = vh.shard_paths(d, 2)["stats"]
    stats = json.load(open(sp))
    n = stats["successes"]
    stats["successes"] = n - 1
    json.dump(stats, open(sp, "w"))
    rep = run(d, decode_fraction=0)
    (pr,) = only(rep, "count_mismatch")
    assert pr.file == "tfrecord/00002.tfrecord"
    assert f"{n} records in the tfrecord" in pr.message and f"{n - 1} successes in _stats.json" in pr.message
    assert cli(d, "--decode-fraction", 0) == 1


def test_parquet_that_disagrees_with_its_shard(copy_download):
    d = copy_download()
    pp = vh.shard_paths(d, 0)["parquet"]
    t = pq.read_table(pp)
    status = t.column("status").to_pylist()
    i = status.index("success")
    status[i] = "failed_to_download"
    pq.write_table(t.set_column(t.schema.get_field_index("status"), "status", pa.array(status)), pp)
    rep = run(d, decode_fraction=0)
    (pr,) = only(rep, "count_mismatch")
    assert pr.file == "tfrecord/00000.tfrecord" and "'success' rows in the parquet" in pr.message
    assert rep.by_kind("parquet_mismatch")[0].key == t.column("key")[i].as_py()


def test_unfinished_shard(copy_download):
    d = copy_download()
    os.remove(vh.shard_paths(d, 3)["stats"])
    rep = run(d, decode_fraction=0)
    assert {p.file for p in rep.by_kind("incomplete_shard")} == {"tfrecord/00003.tfrecord", "tfrecord/00003.parquet"}


def test_workers_give_the_same_findings(copy_download):
    d = copy_download()
    vh.edit_record(vh.shard_paths(d, 0)["tfrecord"], 1, lambda ex: vh.set_bytes(ex, "txt", b" "))
    vh.edit_record(vh.shard_paths(d, 3)["tfrecord"], 6, lambda ex: vh.set_bytes(ex, "similarity", b""))
    one, two = run(d, workers=1), run(d, workers=2)
    assert one.counts == two.counts and one.counts
    assert [p.to_dict() for p in one.problems] == [p.to_dict() for p in two.problems]
