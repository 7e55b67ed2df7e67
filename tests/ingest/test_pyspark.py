"""`--distributor pyspark`: img2dataset's Spark path on a real local Spark session (Java 17 + pyspark)."""
from __future__ import annotations

import os
import shutil

import pytest

from laionprep import shards
from laionprep.testing import synth
from laionprep.ingest import pipeline
from laionprep.ingest.download import DownloadOptions


def test_pyspark_distributor(tmp_path, demo_server):
    if shutil.which("java") is None:
        pytest.fail("Java 17+ is needed for pyspark: apt-get install openjdk-17-jre-headless")
    source = str(tmp_path / "source" / "metadata")
    synth.write_metadata(source, 80, demo_server.base_url, seed=3, files=1)
    out = str(tmp_path / "spark")
    cfg = pipeline.IngestConfig(
        dataset="demo", output=out, metadata_source=source,
        download=DownloadOptions(processes=2, threads=4, number_sample_per_shard=40, distributor="pyspark",
                                 allow_private_addresses=True),
    )
    m = pipeline.run(cfg)
    assert m["status"] == "complete" and m["accounting"]["balanced"]
    assert m["stages"]["download"]["settings"]["download"]["distributor"] == "pyspark"  # run-only: not a parameter
    scan = shards.scan(out)
    assert len(scan.shards) == 2 and scan.total == m["stages"]["download"]["success"] > 50
    log = open(os.path.join(out, "logs", "img2dataset.log")).read()
    assert "laionprep-download" in log or "spark" in log.lower()
