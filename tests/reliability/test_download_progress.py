"""Issue #14: the download progress bar moves with images, not only when a whole shard is written.

One shard of 24 URLs: 20 answer at once, 4 hold their headers until the fetcher's 3 s deadline, so the shard cannot
be finished before ~3 s.  The progress callback (the real download stage, in-process, real img2dataset) must
report images done while no ``_stats.json`` exists yet."""
from __future__ import annotations

import glob
import os

from laionprep.ingest import fetch_progress, pipeline
from laionprep.ingest.download import DownloadOptions

from reliability_helpers import write_urls


class Recorder:
    """The part of rich's Progress the download stage uses; records (rows completed, any shard finished)."""

    def __init__(self, tf_dir: str):
        self.tf_dir, self.tasks, self.seen = tf_dir, {}, []

    def add_task(self, name, total=None):
        self.tasks[len(self.tasks)] = name
        return len(self.tasks) - 1

    def advance(self, task, n):
        pass

    def update(self, task, completed):
        if self.tasks[task] == "download":
            self.seen.append((completed, bool(glob.glob(os.path.join(self.tf_dir, "*_stats.json")))))


def test_progress_counts_images_before_the_first_shard_finishes(tmp_path, hostile):
    urls = [hostile.url(f"/ok/{i}.jpg") for i in range(20)] + [hostile.url(f"/stall-headers?copy={k}")
                                                               for k in range(4)]
    out = str(tmp_path / "laion")
    cfg = pipeline.IngestConfig(
        dataset="demo", output=out, metadata_source=write_urls(str(tmp_path / "source"), urls), no_filters=True,
        download=DownloadOptions(processes=1, threads=8, timeout=3, image_size=64, number_sample_per_shard=1000,
                                 allow_private_addresses=True))
    rec = Recorder(os.path.join(out, "tfrecord"))
    m = pipeline.run_stage(cfg, progress=rec, log=lambda *a: None).manifest
    assert m["status"] == "complete"
    before_shard = [n for n, shard_done in rec.seen if not shard_done]
    assert max(before_shard, default=0) >= 20, rec.seen  # the fast images, counted while the shard was open
    assert rec.seen[-1] == (24, True)
    assert not [p for p in os.listdir(os.path.join(out, "tfrecord")) if p.endswith(".json")
                and not p.endswith("_stats.json")]  # nothing but img2dataset's markers there


def test_counter_is_one_small_file_per_process(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch_progress.ENV, str(tmp_path))
    monkeypatch.setattr(fetch_progress, "_counter", None)
    for _ in range(5):
        fetch_progress.count_one()
    assert fetch_progress.read_total(str(tmp_path)) == 5
    assert [p.endswith(".count") for p in os.listdir(tmp_path)] == [True]
