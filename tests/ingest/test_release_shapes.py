"""Issue #17: the public releases' column sets.  Generated metadata in each shape (original LAION-400M, original
LAION-2B-en, Re-LAION, DataComp) goes through the real download (img2dataset fetching from 127.0.0.1) with the
default filters; each keeps exactly the rows those filters keep.  ``laion400m`` / ``laion2b-en`` read either column
set (detected from the first file), and the summary names the filters and columns that applied."""
from __future__ import annotations

import hashlib
import json
import os
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laionprep import cli, shards
from laionprep.datasets import SPECS, get_spec
from laionprep.ingest import pipeline
from laionprep.testing import synth

# (NSFW tag, similarity, punsafe, pwatermark) per row; captions are "c<i>"
ROWS = [("UNLIKELY", 0.35, 0.1, 0.1),   # 0: kept by every default
        ("UNSURE", 0.29, 0.2, 0.2),     # 1: similarity between 0.28 (2B-en) and 0.3 (400M)
        ("NSFW", 0.40, 0.9, 0.1),       # 2: NSFW tag / punsafe
        ("UNLIKELY", 0.20, 0.1, 0.1),   # 3: low similarity everywhere
        ("UNLIKELY", 0.33, 0.1, 0.9),   # 4: watermark (Re-LAION-2B's filter only)
        ("UNLIKELY", 0.31, 0.6, 0.1)]   # 5: punsafe 0.6 (Re-LAION), NSFW tag UNLIKELY (original)


def url(base: str, i: int) -> str:
    return f"{base}/img/0/{i}.{synth.sample(0, i).fmt}"


def original_400m(base):
    return [{"SAMPLE_ID": i, "URL": url(base, i), "TEXT": f"c{i}", "HEIGHT": 100, "WIDTH": 100, "LICENSE": "?",
             "NSFW": r[0], "similarity": r[1]} for i, r in enumerate(ROWS)]


def original_2b_en(base):
    return [{"URL": url(base, i), "TEXT": f"c{i}", "WIDTH": 100, "HEIGHT": 100, "similarity": r[1], "NSFW": r[0],
             "LICENSE": "?"} for i, r in enumerate(ROWS)]


def relaion(base):
    """Re-LAION-2B-en research-safe's columns as reported, img2dataset's own names (key, status, ...) included."""
    return [{"url": url(base, i), "caption": f"c{i}", "similarity": r[1], "hash": i, "punsafe": r[2],
             "pwatermark": r[3], "key": f"{i:09d}", "status": "success", "error_message": None, "width": 100,
             "height": 100, "original_width": 100, "original_height": 100, "exif": "{}", "md5": "0" * 32}
            for i, r in enumerate(ROWS)]


def datacomp(base):
    rows = []
    for i in range(len(ROWS)):
        body = urllib.request.urlopen(url(base, i), timeout=30).read()
        rows.append({"uid": f"{i:032x}", "url": url(base, i), "text": f"c{i}", "original_width": 100,
                     "original_height": 100, "clip_b32_similarity_score": 0.1, "clip_l14_similarity_score": 0.1,
                     "face_bboxes": [[0.3, 0.3, 0.6, 0.6]] if i % 2 else [],
                     "sha256": hashlib.sha256(body).hexdigest()})
    return rows


CASES = [  # (shape, --dataset, the spec it is read with, captions kept)
    ("original_400m", "laion400m", "laion400m", {"c0", "c4", "c5"}),
    ("original_2b_en", "laion2b-en", "laion2b-en", {"c0", "c1", "c4", "c5"}),
    ("relaion", "laion2b-en", "relaion2b-en-research-safe", {"c0", "c1"}),
    ("relaion", "relaion2B-en-research-safe", "relaion2b-en-research-safe", {"c0", "c1"}),  # the Hub's spelling
    ("relaion", "laion400m", "relaion400m", {"c0", "c4"}),
    ("relaion", "relaion2b-multi-research", "relaion2b-multi-research", {"c0", "c1", "c3"}),
    ("datacomp", "datacomp_small", "datacomp_small", {f"c{i}" for i in range(len(ROWS))}),
]
SHAPES = {"original_400m": original_400m, "original_2b_en": original_2b_en, "relaion": relaion, "datacomp": datacomp}


def captions(out: str) -> set[str]:
    got = set()
    for s in shards.scan(os.path.join(out, "tfrecord")).shards:
        for data in shards.iter_records(s.tfrecord):
            got.add(shards.parse_example(data)["txt"][1][0].decode())
    return got


@pytest.mark.slow
@pytest.mark.parametrize("shape,dataset,read_as,kept", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_each_release_shape_keeps_exactly_the_rows_its_default_filters_keep(shape, dataset, read_as, kept,
                                                                             demo_server, tmp_path, capfd):
    src = tmp_path / "src"
    os.makedirs(src)
    pq.write_table(pa.Table.from_pylist(SHAPES[shape](demo_server.base_url)), str(src / "part-00000.parquet"))
    out = str(tmp_path / "out")
    argv = ["download", "--dataset", dataset, "--metadata-source", str(src), "--output", out, "--processes", "1",
            "--threads", "8", "--image-size", "32", "--no-progress", "--allow-private-addresses"]
    assert cli.main(argv) == 0, capfd.readouterr().err
    printed = capfd.readouterr().out
    assert captions(out) == kept
    m = json.load(open(os.path.join(out, "manifest.json")))
    spec = get_spec(read_as)
    assert m["dataset"] == read_as and m["parameters"]["dataset"] == dataset
    assert m["parameters"]["filters_applied"] == spec.default_filters.to_dict()
    assert list(m["stages"]["prefilter"]["columns"]) == [c.name for c in spec.extra_columns]
    assert m["stages"]["download"]["success"] == len(kept) and m["accounting"]["balanced"]
    # the summary says which filters and columns applied, and which spec read a renamed release
    rows = dict(pipeline.applied_rows(m))
    assert rows["filters"] == spec.default_filters.describe() and "filters" in printed  # (rich may wrap values)
    assert rows["columns carried"] == ", ".join(c.name for c in spec.extra_columns) and "columns carried" in printed
    if read_as != get_spec(dataset).name:
        assert rows[f"{get_spec(dataset).name} read as"] == f"{read_as} (by its columns)"
        assert f"{get_spec(dataset).name} read as" in printed
        assert f"the {get_spec(dataset).name} metadata has the columns of {read_as}" in printed
    # the same command resumes (the detected column set gives the same parameters)
    assert cli.main(argv) == 0
    assert captions(out) == kept


def test_every_variant_is_listed(capsys):
    assert cli.main(["datasets", "-v"]) == 0
    printed = capsys.readouterr().out
    for name in ("relaion400m", "relaion2b-en-research", "relaion2b-en-research-safe", "relaion2b-multi-research",
                 "relaion2b-multi-research-safe", "relaion1b-nolang-research", "relaion1b-nolang-research-safe"):
        assert name in SPECS and "hf://datasets/laion/" in printed
        assert any(line.startswith(name + " ") for line in printed.splitlines()), name
    assert "hf://datasets/laion/relaion1b-nolang-research-safe" in printed  # the Hub's lower-case b
    assert get_spec("LAION-400M").name == "laion400m" and get_spec("datacomp-1b").name == "datacomp_1b"


def _hub_server():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hub_server", os.path.join(os.path.dirname(__file__),
                                                                             "hub_server.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_a_hub_repo_in_the_relaion_shape_is_detected_through_the_hub_client(demo_server, tmp_path):
    """`laion2b-en` from a gated Hub repo (the real huggingface_hub client against the local stand-in) that now
    serves Re-LAION's columns: the first file's footer is read over hf:// before anything is written."""
    import subprocess
    import sys

    root = tmp_path / "repo" / "data"
    os.makedirs(root)
    pq.write_table(pa.Table.from_pylist(relaion(demo_server.base_url)), str(root / "part-00000.parquet"))
    hub = _hub_server().Hub(str(tmp_path / "repo"), token="secret-token")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_TELEMETRY="1")
        out = tmp_path / "out"
        argv = [sys.executable, "-m", "laionprep.cli", "download", "--dataset", "laion2b-en", "--metadata-source",
                "hf://datasets/laion/fake", "--output", str(out), "--processes", "1", "--threads", "4",
                "--image-size", "32", "--no-progress", "--allow-private-addresses"]
        r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 1 and "HF_TOKEN" in r.stderr and "Traceback" not in r.stderr
        assert not out.exists()  # refused before the folder was made
        r = subprocess.run(argv, capture_output=True, text=True, env={**env, "HF_TOKEN": "secret-token"},
                           timeout=300)
        assert r.returncode == 0, r.stderr
    finally:
        hub.stop()
    m = json.load(open(out / "manifest.json"))
    assert m["dataset"] == "relaion2b-en-research-safe" and captions(str(out)) == {"c0", "c1"}


def test_folders_made_before_the_split_are_read_with_the_columns_they_carry():
    """A `laion2b-en` download made when that spec meant punsafe/pwatermark keeps being read (reshard, build-tfds,
    validate) with those columns; a new one with the original release's."""
    from laionprep.datasets import dataset_of

    old = {"dataset": "laion2b-en", "stages": {"prefilter": {"columns": {"similarity": "float", "punsafe": "float",
                                                                         "pwatermark": "float"}}}}
    new = {"dataset": "laion2b-en", "stages": {"prefilter": {"columns": {"NSFW": "str", "similarity": "float",
                                                                         "LICENSE": "str"}}}}
    resharded = {"dataset": "laion2b-en", "stages": {"reshard": {"schema": {"jpg": "bytes", "punsafe": "float"}}}}
    assert dataset_of(old) == "relaion2b-en-research-safe" and dataset_of(new) == "laion2b-en"
    assert dataset_of(resharded) == "relaion2b-en-research-safe"
    assert dataset_of({"dataset": "datacomp_small"}) == "datacomp_small" and dataset_of({}) is None
