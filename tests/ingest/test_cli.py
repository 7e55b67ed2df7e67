"""The CLI: errors users cause print what/where/fix without a traceback and exit 2 (usage) or 1 (data)."""
from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "laionprep.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_datasets_one_line_each():
    r = run("datasets")
    assert r.returncode == 0
    lines = r.stdout.strip().splitlines()
    names = [l.split()[0] for l in lines]
    assert names == ["laion400m", "relaion400m", "laion2b-en", "relaion2b-en-research", "relaion2b-en-research-safe",
                     "relaion2b-multi-research", "relaion2b-multi-research-safe", "relaion1b-nolang-research",
                     "relaion1b-nolang-research-safe", "datacomp_small", "datacomp_medium", "datacomp_large",
                     "datacomp_xlarge", "datacomp_1b", "demo"]
    by = dict(zip(names, lines))
    assert "similarity>=0.3" in by["laion400m"] and "NSFW" in by["laion400m"]
    assert "or read as: relaion400m" in by["laion400m"]
    # the original LAION-2B-en columns (NSFW tags); its Re-LAION column set reads as relaion2b-en-research-safe
    assert "NSFW in {UNLIKELY,UNSURE}" in by["laion2b-en"] and "similarity>=0.28" in by["laion2b-en"]
    assert "or read as: relaion2b-en-research-safe" in by["laion2b-en"]
    safe = by["relaion2b-en-research-safe"]
    assert "punsafe<0.5" in safe and "pwatermark<0.8" in safe and "similarity>=0.28" in safe
    assert "faces blurred (face_bboxes" in by["datacomp_small"]


def test_unknown_dataset_lists_known_ones(tmp_path):
    r = run("download", "--dataset", "laion5b", "--output", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "unknown dataset 'laion5b'" in r.stderr and "laion400m" in r.stderr and "datacomp_1b" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_columns_named(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"link": ["http://x/1.jpg"], "TEXT": ["t"]}), src / "p.parquet")
    r = run("download", "--dataset", "laion400m", "--metadata-source", str(src), "--output", str(tmp_path / "o"),
            "--no-progress")
    assert r.returncode == 1
    assert "no url column" in r.stderr and "'link'" in r.stderr and "p.parquet" in r.stderr
    assert "Traceback" not in r.stderr
    r = run("--debug", "download", "--dataset", "laion400m", "--metadata-source", str(src), "--output",
            str(tmp_path / "o"), "--no-progress")
    assert "Traceback" in r.stderr  # --debug shows one


def test_unreadable_parquet_named(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    r = run("download", "--dataset", "laion400m", "--metadata-source", str(src), "--output", str(tmp_path / "o"),
            "--no-progress")
    assert r.returncode == 1 and "broken.parquet" in r.stderr and "unreadable parquet" in r.stderr


def test_output_inside_input_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"URL": ["http://x/1.jpg"], "TEXT": ["t"]}), src / "p.parquet")
    r = run("download", "--dataset", "laion400m", "--metadata-source", str(src), "--output", str(src / "out"))
    assert r.returncode == 2 and "inside the metadata source" in r.stderr
    assert not (src / "out" / "tfrecord").exists()


def test_bad_flags(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"URL": ["http://x/1.jpg"], "TEXT": ["t"]}), src / "p.parquet")
    r = run("download", "--dataset", "demo", "--metadata-source", str(src), "--output", str(tmp_path / "o"),
            "--parts", "1-x")
    assert r.returncode == 2 and "--parts" in r.stderr
    r = run("download", "--dataset", "demo", "--output", str(tmp_path / "o"))
    assert r.returncode == 2 and "--metadata-source" in r.stderr
    r = run("download", "--dataset", "demo", "--output", str(tmp_path / "o"), "--bogus")
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr


def test_foreign_json_in_image_folder_refused(tmp_path):
    out = tmp_path / "o"
    (out / "tfrecord").mkdir(parents=True)
    (out / "tfrecord" / "dataset_info.json").write_text("{}")
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"URL": ["http://x/1.jpg"], "TEXT": ["t"]}), src / "p.parquet")
    r = run("download", "--dataset", "laion400m", "--metadata-source", str(src), "--output", str(out))
    assert r.returncode == 2 and "dataset_info.json" in r.stderr and "move them out" in r.stderr


def test_download_flags_are_the_config_fields():
    """Options declared once: every flagged DownloadOptions field is a download flag, parsed into the same config,
    and its run-only fields (processes, threads, distributor, spark_master; retries and timeout, which only change
    which transient failures happen) stay out of the manifest's parameters."""
    import dataclasses

    from laionprep import cli
    from laionprep.ingest.download import DownloadOptions

    args = cli.build_parser().parse_args(
        ["download", "--dataset", "laion400m", "--output", "o", "--allow-network", "10.1.0.0/16", "--allow-network",
         "10.2.0.0/16", "--processes", "3", "--max-redirects", "2", "--resize-only-if-bigger"])
    cfg = cli.ingest_config(args)
    assert cfg.download == DownloadOptions(allowed_networks=("10.1.0.0/16", "10.2.0.0/16"), processes=3,
                                           max_redirects=2, resize_only_if_bigger=True)
    flagged = {f.name for f in dataclasses.fields(DownloadOptions) if "flag" in f.metadata}
    assert flagged - set(vars(args)) == set()
    params, settings = cfg.parameters()
    assert set(settings["download"]) == {"processes", "threads", "distributor", "spark_master", "retries", "timeout"}
    # shape: the spec of the metadata's column set (#17), whose effect the parameters record (filters_applied)
    assert set(settings) == {"output", "restart", "dry_run", "memory_budget", "prefilter_processes", "download",
                             "shape"}
    assert not set(settings["download"]) & set(params["download"])
