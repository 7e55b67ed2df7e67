"""``laionprep demo``: the whole pipeline, offline, on a generated mini-LAION served from 127.0.0.1.

Steps: generate metadata (LAION-400M's schema, with rows the filters must drop and URLs that 404) -> serve the
images from an in-process HTTP server on an ephemeral loopback port -> ``download`` (fetch, prefilter,
img2dataset) -> ``validate`` -> ``build-tfds`` (zero-copy registration, plus a labelled evaluation set of the
demo's objects) -> train ``flip_tiny`` on the TFDS dataset -> zero-shot accuracy on the evaluation set.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import time

from laionprep.testing import synth
from laionprep.testing.server import DemoServer
from laionprep.errors import DataError
from laionprep.ingest import pipeline
from laionprep.ingest.download import DownloadOptions
from laionprep.progress import print_table, progress_bar

DATASET_NAME = "demo_laion_tfrecord"
EVAL_NAME = "demo_objects"


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    workdir: str
    rows: int = 3000
    processes: int = 0
    seed: int = 0
    progress: bool = True
    files: int = 2
    number_sample_per_shard: int = 500
    eval_per_class: int = 10
    train: bool = True
    train_overrides: tuple[str, ...] = ()
    train_config: str = "flip_tiny"


def demo_paths(workdir: str) -> dict[str, str]:
    return {
        "source": os.path.join(workdir, "source", "metadata"),
        "download": os.path.join(workdir, "laion"),
        "report": os.path.join(workdir, "report"),
        "tfds": os.path.join(workdir, "tfds"),
        "eval_folder": os.path.join(workdir, "eval_images"),
        "train": os.path.join(workdir, "train"),
    }


def download_demo(cfg: DemoConfig, server: DemoServer, progress=None) -> dict:
    """Generate the metadata for ``server`` and run the download stage on it; returns the manifest."""
    paths = demo_paths(cfg.workdir)
    synth.write_metadata(paths["source"], cfg.rows, server.base_url, seed=cfg.seed, files=cfg.files)
    icfg = pipeline.IngestConfig(
        dataset="demo", output=paths["download"], metadata_source=paths["source"],
        # the demo's own server is on 127.0.0.1, which the fetcher refuses unless told otherwise
        download=DownloadOptions(processes=cfg.processes, threads=16, timeout=10,
                                 number_sample_per_shard=cfg.number_sample_per_shard, allow_private_addresses=True),
    )
    return pipeline.run(icfg, progress=progress)


def _step(title: str) -> float:
    print(f"\n== demo: {title}", flush=True)
    return time.time()


def main(cfg: DemoConfig) -> int:
    from laionprep.tfds_builders.image_folder import build_image_folder
    from laionprep.tfds_builders.register import describe, register
    from laionprep.validate import ValidateConfig, validate
    from laionprep.validate.core import print_summary

    paths = demo_paths(cfg.workdir)
    # Every demo run serves from a new ephemeral port, so earlier outputs (which name the old port) are stale.
    for key in ("download", "report", "tfds", "eval_folder", "train"):
        if os.path.exists(paths[key]):
            shutil.rmtree(paths[key])
    if os.path.exists(os.path.dirname(paths["source"])):
        shutil.rmtree(os.path.dirname(paths["source"]))
    os.makedirs(cfg.workdir, exist_ok=True)
    started = time.time()

    t = _step("download (metadata -> prefilter -> img2dataset)")
    with DemoServer() as server, progress_bar(cfg.progress) as prog:
        print(f"serving {cfg.rows} synthetic images from {server.base_url}")
        m = download_demo(cfg, server, progress=prog)
    print_table(f"download -> {paths['download']} ({time.time() - t:.0f} s)", pipeline.summary_rows(m), ["", "rows"])

    t = _step("validate")
    with progress_bar(cfg.progress) as prog:
        rep = validate(ValidateConfig(path=paths["download"], report=paths["report"], decode_fraction=1.0),
                       progress=prog)
    print_summary(rep)
    print(f"({time.time() - t:.0f} s)")
    if not rep.ok:
        raise DataError(f"the demo download has {len(rep.problems)} problem(s)", where=paths["download"],
                        fix="see the validation summary above; this is a bug in laionprep, please report it")

    t = _step("build-tfds (zero-copy registration + labelled evaluation set)")
    reg = register(paths["download"], DATASET_NAME, paths["tfds"])
    print_table(f"{DATASET_NAME} as TFDS sees it", describe(reg.dataset_dir), ["", ""])
    synth.write_eval_folder(paths["eval_folder"], per_class=cfg.eval_per_class)
    ev = build_image_folder(paths["eval_folder"], EVAL_NAME, paths["tfds"],
                            class_names_file=os.path.join(paths["eval_folder"], "class_names.txt"))
    print_table(f"{EVAL_NAME} (zero-shot evaluation set)", ev.summary_rows(), ["", ""])
    print(f"({time.time() - t:.0f} s)")

    if cfg.train:
        t = _step(f"train {cfg.train_config} on {DATASET_NAME}, zero-shot on {EVAL_NAME}")
        metrics = train_demo(cfg, paths)
        chance = metrics.get("chance_top1", 1.0 / len(synth.class_names()))
        print_table(f"zero-shot on {EVAL_NAME} ({time.time() - t:.0f} s)", [
            ("examples", metrics.get("num_examples", "")),
            ("top-1", f"{metrics['top1']:.1%}"), ("top-5", f"{metrics['top5']:.1%}"),
            ("chance top-1", f"{chance:.1%}"), ("top-1 / chance", f"{metrics['top1'] / chance:.1f}x"),
            ("train steps", metrics.get("total_step", metrics.get("step", ""))),
        ], ["", ""])
    print(f"\ndemo finished in {time.time() - started:.0f} s; everything is under {cfg.workdir}")
    return 0


def train_demo(cfg: DemoConfig, paths: dict[str, str]) -> dict:
    from laionprep.train_ref import runner

    return runner.train_demo(DATASET_NAME, EVAL_NAME, paths["train"], data_dir=paths["tfds"],
                             eval_data_dir=paths["tfds"], config=cfg.train_config, overrides=list(cfg.train_overrides))
