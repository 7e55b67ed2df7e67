"""Issue #17: DataComp's face blurring.  ``--blur-faces`` hands the spec's face-box column to img2dataset
(``bbox_col``), on by default for the DataComp specs as in DataComp's own download, off with ``--no-blur-faces``,
and it is a parameter of the download (a folder made the other way is not resumed).  Real img2dataset over
127.0.0.1: the pixels inside a box change, those away from it do not; boxes are normalised [x0, y0, x1, y1] as
DataComp stores them."""
from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from laionprep import cli, shards
from laionprep.testing import synth

BOX = [0.3, 0.3, 0.6, 0.6]
N = 4


def url(base: str, i: int) -> str:
    return f"{base}/img/0/{i}.{synth.sample(0, i).fmt}"


@pytest.fixture
def source(demo_server, tmp_path):
    """DataComp rows: even rows have one face box, odd rows none (an empty list; row 3 a null)."""
    rows = []
    for i in range(N):
        body = urllib.request.urlopen(url(demo_server.base_url, i), timeout=30).read()
        rows.append({"uid": f"{i:032x}", "url": url(demo_server.base_url, i), "text": f"c{i}",
                     "clip_b32_similarity_score": 0.3, "clip_l14_similarity_score": 0.3,
                     "face_bboxes": [BOX] if i % 2 == 0 else (None if i == 3 else []),
                     "sha256": hashlib.sha256(body).hexdigest()})
    schema = pa.schema([("uid", pa.string()), ("url", pa.string()), ("text", pa.string()),
                        ("clip_b32_similarity_score", pa.float64()), ("clip_l14_similarity_score", pa.float64()),
                        ("face_bboxes", pa.list_(pa.list_(pa.float64()))), ("sha256", pa.string())])
    os.makedirs(tmp_path / "dc")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), str(tmp_path / "dc" / "part-00000.parquet"))
    return str(tmp_path / "dc")


def download(src: str, out: str, *extra: str) -> list[str]:
    return ["download", "--dataset", "datacomp_small", "--metadata-source", src, "--output", out, "--processes",
            "1", "--threads", "8", "--image-size", "256", "--no-progress", "--allow-private-addresses", *extra]


def images(out: str) -> dict[str, np.ndarray]:
    got = {}
    for s in shards.scan(os.path.join(out, "tfrecord")).shards:
        for data in shards.iter_records(s.tfrecord):
            ex = shards.parse_example(data)
            got[ex["txt"][1][0].decode()] = np.asarray(Image.open(io.BytesIO(ex["jpg"][1][0])).convert("RGB"),
                                                       dtype=np.int16)
    return got


def far_from_box(h: int, w: int) -> np.ndarray:
    """Pixels the blur cannot reach: beyond the box grown by img2dataset's 10% of its diagonal, the blur kernel
    (sigma = 10% of the diagonal) and one 16-pixel JPEG block."""
    x0, y0, x1, y1 = BOX[0] * w, BOX[1] * h, BOX[2] * w, BOX[3] * h
    diag = max(x1 - x0, y1 - y0)
    margin = 0.1 * diag + 2 * np.ceil(0.1 * diag) + 1 + 16
    ys, xs = np.mgrid[0:h, 0:w]
    return (xs < x0 - margin) | (xs > x1 + margin) | (ys < y0 - margin) | (ys > y1 + margin)


@pytest.mark.slow
def test_faces_are_blurred_by_default_for_datacomp_inside_the_boxes_only(source, tmp_path, capfd):
    blurred, plain = str(tmp_path / "blurred"), str(tmp_path / "plain")
    assert cli.main(download(source, blurred)) == 0
    assert cli.main(download(source, plain, "--no-blur-faces")) == 0
    a, b = images(blurred), images(plain)
    assert sorted(a) == sorted(b) == [f"c{i}" for i in range(N)]
    for i in range(N):
        x, y = a[f"c{i}"], b[f"c{i}"]
        h, w = y.shape[:2]
        far = far_from_box(h, w)
        assert far.any() and np.abs(x - y)[far].max() <= 1, i  # away from the box: the same pixels
        inside = np.zeros((h, w), bool)
        inside[int(BOX[1] * h):int(BOX[3] * h), int(BOX[0] * w):int(BOX[2] * w)] = True
        diff = np.abs(x - y)[inside].mean()
        if i % 2 == 0:
            assert diff > 2.0, (i, diff)  # the box is blurred (the noise of the synthetic image smoothed away)
        else:
            assert diff <= 0.5, (i, diff)  # no box (an empty list, or null): nothing blurred
    ma, mb = (json.load(open(os.path.join(d, "manifest.json"))) for d in (blurred, plain))
    assert ma["parameters"]["blur_faces"] == {"bbox_column": "face_bboxes"}
    assert "blur_faces" not in mb["parameters"]  # off: recorded as a folder made before the flag existed
    assert dict(ma["stages"]["prefilter"]["columns"])["face_bboxes"] == "json"
    # a parameter: the unblurred folder is not resumed with blurring on (the default), and says so
    capfd.readouterr()
    assert cli.main(download(source, plain)) == 2
    err = capfd.readouterr().err
    assert "blur_faces" in err and "--restart" in err and "Traceback" not in err


def test_blurring_without_the_box_column_is_an_error_naming_the_fix(demo_server, tmp_path, capfd):
    rows = [{"uid": f"{i:032x}", "url": url(demo_server.base_url, i), "text": f"c{i}",
             "clip_b32_similarity_score": 0.3, "clip_l14_similarity_score": 0.3, "sha256": "0" * 64}
            for i in range(2)]
    os.makedirs(tmp_path / "dc")
    pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "dc" / "part-00000.parquet"))
    out = str(tmp_path / "out")
    assert cli.main(download(str(tmp_path / "dc"), out)) == 1
    err = capfd.readouterr().err
    assert "face blurring reads column 'face_bboxes'" in err and "--no-blur-faces" in err
    assert "part-00000.parquet" in err and "Traceback" not in err
    assert not os.path.exists(os.path.join(out, "tfrecord"))  # nothing fetched unblurred
    # --columns leaving the box column out is refused before anything is written
    out2 = str(tmp_path / "out2")
    assert cli.main(download(str(tmp_path / "dc"), out2, "--columns", "uid")) == 2
    err = capfd.readouterr().err
    assert "--columns leaves out 'face_bboxes', which face blurring reads" in err and "--no-blur-faces" in err
    assert not os.path.exists(out2)
    # a spec without a box column: --blur-faces is a usage error
    assert cli.main(["download", "--dataset", "demo", "--metadata-source", str(tmp_path / "dc"), "--output",
                     str(tmp_path / "out3"), "--blur-faces"]) == 2
    err = capfd.readouterr().err
    assert "has no face-box column" in err and "where: --blur-faces" in err and "Traceback" not in err
