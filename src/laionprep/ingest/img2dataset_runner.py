"""Runs ``img2dataset.download`` in a child process: ``python -m laionprep.ingest.img2dataset_runner CONFIG.json``.

img2dataset spawns worker processes, installs a SIGINT handler (main thread only) and starts a logger process.
Running it in its own interpreter, under a ``__main__`` guard, makes it work the same way from the CLI, from tests,
from a user's script without a guard and from a Beam worker, and lets the parent stop the whole process group.

Before ``img2dataset.download`` the child makes img2dataset's workers fetch with laionprep's fetcher
(:mod:`laionprep.ingest.safe_downloader`, limits from ``cfg["fetch"]``).  At the end it writes the peak resident
memory of its child processes (img2dataset's download workers) to ``cfg["rusage_path"]``.

With ``distributor == "pyspark"`` the child first creates the Spark session itself (``spark_master``, default
``local[processes]``, with a driver memory that fits the machine) so img2dataset uses it instead of its own
16 GB-driver default; on a cluster, pass the cluster's master URL.
"""
from __future__ import annotations

import json
import sys


def _spark_session(cfg: dict):
    import os

    # Local workers must run this interpreter (it has laionprep and img2dataset installed); on a cluster, set
    # PYSPARK_PYTHON to the workers' interpreter yourself.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    master = cfg.get("spark_master") or f"local[{cfg['download']['processes_count']}]"
    builder = (
        SparkSession.builder.master(master)
        .appName("laionprep-download")
        .config("spark.driver.memory", cfg.get("spark_driver_memory", "2g"))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.task.maxFailures", "4")
    )
    return builder.getOrCreate()


def _keep_tmp_folder(output_folder: str) -> None:
    """img2dataset keeps its work files in ``OUTPUT/_tmp``, deletes each when its shard is done and finally removes
    the folder, guarding only S3 against it being gone.  On gs:// a folder is nothing but its objects: with all
    shards done ``_tmp`` no longer exists and the final ``rm`` fails the whole download after every shard is
    written.  A placeholder object keeps the folder until img2dataset removes it with the rest."""
    from laionprep import fs as lfs

    if not lfs.is_local(output_folder):
        keep = lfs.join(output_folder, "_tmp", ".keep")
        if not lfs.exists(keep):
            fsys, path = lfs.get_fs(keep)
            fsys.pipe_file(path, b"")


def main(argv: list[str]) -> int:
    from laionprep._env import setup_environment

    setup_environment()
    with open(argv[0]) as f:
        cfg = json.load(f)
    spark = None
    if cfg["download"].get("distributor") == "pyspark":
        spark = _spark_session(cfg)
        spark.sparkContext.setLogLevel("ERROR")
    from img2dataset import download

    _keep_tmp_folder(cfg["download"]["output_folder"])
    from laionprep.ingest import safe_fetch
    from laionprep.ingest.safe_downloader import use_in_img2dataset

    use_in_img2dataset(safe_fetch.FetchOptions(**cfg.get("fetch", {})))
    try:
        download(**cfg["download"])
    finally:
        if spark is not None:
            spark.stop()
        if cfg.get("rusage_path"):
            _write_rusage(cfg["rusage_path"])
    return 0


def _write_rusage(path: str) -> None:
    """Peak RSS (ru_maxrss, KiB on Linux) of the largest finished child (a download worker) and of this process."""
    import resource

    with open(path, "w") as f:
        json.dump({"children_max_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                   "self_max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}, f)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
