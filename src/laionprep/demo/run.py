"""``laionprep demo``: the whole pipeline, offline, on a generated mini-LAION served from 127.0.0.1.

Steps: generate metadata (LAION-400M's schema, with rows the filters must drop and URLs that 404) -> serve the
images from an in-process HTTP server on an ephemeral loopback port -> ``download`` (fetch, prefilter,
img2dataset) -> check the records -> print a summary.
"""
from __future__ import annotations

import dataclasses
import os
import shutil

from laionprep import fs as lfs
from laionprep.demo import synth
from laionprep.demo.server import DemoServer
from laionprep.ingest import pipeline
from laionprep.ingest.download import DownloadOptions
from laionprep.progress import print_table, progress_bar


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    workdir: str
    rows: int = 3000
    processes: int = 0
    seed: int = 0
    progress: bool = True
    files: int = 2
    number_sample_per_shard: int = 500


def demo_paths(workdir: str) -> dict[str, str]:
    return {
        "source": os.path.join(workdir, "source", "metadata"),
        "download": os.path.join(workdir, "laion"),
        "eval_folder": os.path.join(workdir, "eval_images"),
    }


def download_demo(cfg: DemoConfig, server: DemoServer, progress=None) -> dict:
    """Generate the metadata for ``server`` and run the download stage on it; returns the manifest."""
    paths = demo_paths(cfg.workdir)
    synth.write_metadata(paths["source"], cfg.rows, server.base_url, seed=cfg.seed, files=cfg.files)
    icfg = pipeline.IngestConfig(
        dataset="demo", output=paths["download"], metadata_source=paths["source"],
        download=DownloadOptions(processes=cfg.processes, threads=16, timeout=10,
                                 number_sample_per_shard=cfg.number_sample_per_shard),
    )
    return pipeline.run(icfg, progress=progress)


def main(cfg: DemoConfig) -> int:
    paths = demo_paths(cfg.workdir)
    # Every demo run serves from a new ephemeral port, so earlier outputs (which name the old port) are stale.
    for p in (os.path.dirname(paths["source"]), paths["download"]):
        if os.path.exists(p):
            shutil.rmtree(p)
    os.makedirs(cfg.workdir, exist_ok=True)
    with DemoServer() as server, progress_bar(cfg.progress) as prog:
        print(f"demo: serving {cfg.rows} synthetic images from {server.base_url}")
        m = download_demo(cfg, server, progress=prog)
    print_table(f"demo download -> {paths['download']}", pipeline.summary_rows(m), ["", "rows"])
    return 0
