"""``laionprep reshard --image-size N``: a low-resolution copy, on the real demo download with the real Beam runner.

The demo download stores every image with a 480 px short side (img2dataset, keep_ratio, upscaling small originals).
The copy is compared record by record with an unfiltered reshard of the same download without the flag.
"""
from __future__ import annotations

import glob
import io
import json
import os
import shutil

import numpy as np
import pytest

from laionprep import cli
from laionprep.errors import UsageError
from laionprep.manifest import detail
from laionprep.sharding import ReshardConfig, reshard
from laionprep.sharding import images as limages
from laionprep.sharding.records import RecordFilters, RecordProcessor

from reshard_helpers import shard_bytes, value

QUIET = {"log": lambda *a, **k: None}
SIZE = 64
BASE = dict(name="demo_lr", num_shards=2, validation_fraction=0.25, drop_columns=("exif", "error_message", "status"))


@pytest.fixture(scope="module")
def pair(demo_download, tmp_path_factory):
    """(config, OUT, manifest) of a full-resolution reshard and of the same with --image-size 64."""
    root = tmp_path_factory.mktemp("lowres")
    full_cfg = ReshardConfig(sources=(demo_download,), output=str(root / "full"), **BASE)
    small_cfg = ReshardConfig(sources=(demo_download,), output=str(root / "small"), image_size=SIZE, **BASE)
    return (full_cfg, full_cfg.output, reshard(full_cfg, **QUIET)), (small_cfg, small_cfg.output,
                                                                    reshard(small_cfg, **QUIET))


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    img.load()  # a truncated or corrupt JPEG raises here
    return np.asarray(img.convert("RGB"))


def test_copy_has_the_short_side_valid_jpegs_and_every_other_field_byte_identical(pair, read_out):
    from PIL import Image

    (_, full_out, _), (_, small_out, _) = pair
    n = 0
    for split in ("train", "validation"):
        full_rows, small_rows = read_out(full_out, split), read_out(small_out, split)
        assert [f for f, _ in small_rows] == [f for f, _ in full_rows] and len(small_rows) > 0
        for (_, a), (_, b) in zip(full_rows, small_rows):
            fa, fb = a.features.feature, b.features.feature
            assert set(fa) == set(fb)
            for k in fa:  # every carried feature, byte for byte
                if k not in ("jpg", "width", "height"):
                    assert fb[k].SerializeToString() == fa[k].SerializeToString(), k
            big, small = _decode(value(a, "jpg")[0]), _decode(value(b, "jpg")[0])
            h0, w0 = big.shape[:2]
            assert min(h0, w0) == 480
            w, h = limages.new_size(w0, h0, SIZE)
            assert small.shape[:2] == (h, w) and min(w, h) == SIZE
            assert (value(b, "width")[0], value(b, "height")[0]) == (w, h)
            # the same picture: close to an independent (Pillow) downscale of the full-resolution image
            ref = np.asarray(Image.fromarray(big).resize((w, h), Image.BOX), dtype=float)
            assert np.abs(small.astype(float) - ref).mean() < 6.0
            n += 1
    assert n == detail(pair[0][2])["rows_in"] > 100


def test_accounting_counts_and_settings(pair):
    (_, full_out, full_m), (_, small_out, small_m) = pair
    a, b = detail(full_m), detail(small_m)
    for k in ("rows_in", "rows_out", "dropped", "normalised"):
        assert b[k] == a[k], k
    assert small_m["accounting"] == full_m["accounting"]
    assert json.load(open(os.path.join(small_out, "counts.json")))["splits"] == \
        json.load(open(os.path.join(full_out, "counts.json")))["splits"]
    assert small_m["parameters"]["image_size"] == SIZE
    assert "image_size" not in full_m["parameters"]  # older outputs (no such parameter) keep their fingerprint
    assert b["images"] == {"image_size": SIZE, "resize_mode": "keep_ratio", "resize_only_if_bigger": False,
                           "encode_quality": 95, "interpolation": "area"}
    total = lambda out: sum(len(v) for v in shard_bytes(out).values())  # noqa: E731
    assert total(small_out) < total(full_out) / 4


def test_validate_checks_the_copy_against_its_own_size(pair, capsys):
    (_, _, _), (_, small_out, _) = pair
    assert cli.main(["validate", small_out, "--decode-fraction", "1"]) == 0
    capsys.readouterr()


def test_rerun_is_a_noop_and_another_size_needs_restart(pair, tmp_path):
    (_, _, _), (small_cfg, small_out, small_m) = pair
    ref = shard_bytes(small_out)
    mtimes = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(small_out, "*", "*"))}
    again = reshard(small_cfg, **QUIET)
    assert detail(again)["plan"]["hash"] == detail(small_m)["plan"]["hash"]
    assert {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(small_out, "*", "*"))} == mtimes
    copy = str(tmp_path / "copy")
    shutil.copytree(small_out, copy)
    for other in ({"image_size": 32}, {"image_size": None}):
        with pytest.raises(UsageError, match="--restart") as e:
            reshard(ReshardConfig(**{**small_cfg.__dict__, "output": copy, **other}), **QUIET)
        assert "image_size" in str(e.value)
    assert shard_bytes(copy) == ref


def test_same_copy_from_a_fresh_run(pair, tmp_path):
    """Deterministic: a second output folder holds the same bytes (JPEG encoding included)."""
    (_, _, _), (small_cfg, small_out, _) = pair
    m = reshard(ReshardConfig(**{**small_cfg.__dict__, "output": str(tmp_path / "again")}), **QUIET)
    assert shard_bytes(str(tmp_path / "again")) == shard_bytes(small_out)
    assert detail(m)["rows_out"] == detail(pair[1][2])["rows_out"]


def test_images_not_larger_than_n_are_carried_byte_identical():
    """resize-only-if-bigger: a record whose image's short side is <= N comes out as the input bytes."""
    from PIL import Image

    from laionprep.tfrecord import Example

    def record(w, h):
        buf = io.BytesIO()
        Image.new("RGB", (w, h), (200, 30, 30)).save(buf, format="JPEG", quality=90)
        ex = Example()
        f = ex.features.feature
        f["jpg"].bytes_list.value.append(buf.getvalue())
        f["txt"].bytes_list.value.append(b"a red square")
        f["key"].bytes_list.value.append(b"000000001")
        f["width"].int64_list.value.append(w)
        f["height"].int64_list.value.append(h)
        return ex.SerializeToString()

    schema = {"height": "int64", "jpg": "bytes", "key": "bytes", "txt": "bytes", "width": "int64"}
    proc = RecordProcessor(schema, (), RecordFilters(), None, None, 0.0,
                           resize=limages.ShortSideResizer(100))
    for w, h in ((100, 150), (80, 60)):
        data = record(w, h)
        assert proc.process(data) == (False, data)
    _, out = proc.process(record(300, 200))
    ex = Example.FromString(out)
    assert (value(ex, "width")[0], value(ex, "height")[0]) == (150, 100)
    assert _decode(value(ex, "jpg")[0]).shape == (100, 150, 3)


def test_cli_image_size_errors(demo_download, tmp_path, capsys):
    for n in ("0", "-5"):
        rc = cli.main(["reshard", demo_download, "--output", str(tmp_path / "e"), "--name", "x", "--image-size", n])
        err = capsys.readouterr().err
        assert rc == 2 and "--image-size" in err and "e.g. --image-size 160" in err and "Traceback" not in err


def test_an_image_that_cannot_be_decoded_is_an_image_error_not_a_silent_copy():
    """The worker turns ImageError into a DataError naming the file and record (worker.write_task)."""
    good = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (300, 200), (1, 2, 3)).save(good, format="JPEG")
    resize = limages.ShortSideResizer(100)
    for bad in (b"not an image at all", good.getvalue()[:200]):  # garbage; a JPEG cut after its header
        with pytest.raises(limages.ImageError):
            resize(bad)


def test_write_low_res_copy_reencodes_each_record(tmp_path):
    """The benchmarks' and tests' copy (sharding.images.write_low_res_copy): per record, an image with a short side
    above N re-encoded to N with width/height following, a smaller one carried byte-identical, every other feature
    kept; same file names and record order."""
    from PIL import Image

    from laionprep import tfrecord

    def jpeg(w, h):
        buf = io.BytesIO()
        Image.fromarray((np.random.default_rng(w).random((h, w, 3)) * 255).astype(np.uint8)).save(buf, "JPEG")
        return buf.getvalue()

    def record(img, w, h, key):
        ex = tfrecord.Example()
        f = ex.features.feature
        f["jpg"].bytes_list.value.append(img)
        f["key"].bytes_list.value.append(key)
        f["width"].int64_list.value.append(w)
        f["height"].int64_list.value.append(h)
        return ex.SerializeToString()

    small = jpeg(40, 30)
    src = str(tmp_path / "in" / "00000.tfrecord")
    os.makedirs(os.path.dirname(src))
    tfrecord.write_records(src, [record(jpeg(200, 100), 200, 100, b"a"), record(small, 40, 30, b"b")])
    out = limages.write_low_res_copy([src], str(tmp_path / "copy"), 50)
    assert out == [str(tmp_path / "copy" / "tfrecord" / "00000.tfrecord")]
    got = [tfrecord.Example.FromString(r) for r in tfrecord.read_records(out[0])]
    assert [value(ex, "key")[0] for ex in got] == [b"a", b"b"]
    assert Image.open(io.BytesIO(value(got[0], "jpg")[0])).size == (100, 50)
    assert (value(got[0], "width")[0], value(got[0], "height")[0]) == (100, 50)
    assert value(got[1], "jpg")[0] == small and (value(got[1], "width")[0], value(got[1], "height")[0]) == (40, 30)
