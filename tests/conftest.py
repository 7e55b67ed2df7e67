"""Shared fixtures: a real demo download (real img2dataset fetching from a real HTTP server on 127.0.0.1).

``demo_server`` serves the synthetic mini-LAION for the whole session; ``demo_download`` is one finished
``laionprep download`` of it (about 240 metadata rows, 4 shards), built once per session and shared read-only:
tests that damage or extend a dataset copy it first (``copy_download``).
"""
from __future__ import annotations

import os
import shutil

import pytest

from laionprep.testing.server import DemoServer

DEMO_ROWS = 240
DEMO_SHARD_SIZE = 60


@pytest.fixture(scope="session", autouse=True)
def keylist_cache(tmp_path_factory):
    """Key-list caches (laionprep.keylist) go to a session folder, not the user's ~/.cache."""
    old = os.environ.get("LAIONPREP_CACHE_DIR")
    os.environ["LAIONPREP_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield os.environ["LAIONPREP_CACHE_DIR"]
    if old is None:
        os.environ.pop("LAIONPREP_CACHE_DIR", None)
    else:
        os.environ["LAIONPREP_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def demo_server():
    with DemoServer() as srv:
        yield srv


def run_demo_download(workdir: str, server, rows: int = DEMO_ROWS, shard_size: int = DEMO_SHARD_SIZE, seed: int = 0):
    from laionprep.demo.run import DemoConfig, download_demo

    cfg = DemoConfig(workdir=workdir, rows=rows, processes=2, seed=seed, progress=False,
                     number_sample_per_shard=shard_size)
    return download_demo(cfg, server)


@pytest.fixture(scope="session")
def demo_download(tmp_path_factory, demo_server) -> str:
    """Path of a finished download folder DIR (with DIR/tfrecord, DIR/manifest.json). Do not modify it."""
    work = str(tmp_path_factory.mktemp("demo"))
    run_demo_download(work, demo_server)
    return os.path.join(work, "laion")


@pytest.fixture
def copy_download(demo_download, tmp_path):
    """A private copy of the session's demo download, safe to damage."""
    def _copy() -> str:
        dst = str(tmp_path / "laion")
        shutil.copytree(demo_download, dst)
        return dst
    return _copy


def relocate_download(download_dir: str, metadata_source: str) -> None:
    """Make a copied download folder's parameter record name ``metadata_source`` (where the test put the copy of
    its metadata), as if it had been downloaded from there: the re-run rule (``stage.check_rerun``) then lets the
    same command resume it.  Without this a resume from the new path is refused as other parameters."""
    from laionprep import manifest

    m = manifest.read(download_dir)
    manifest.write(manifest.path_in(download_dir), stage=m["stage"], dataset=m["dataset"], status=m["status"],
                   parameters={**m["parameters"], "metadata_source": metadata_source},
                   inputs={**m["inputs"], "metadata_source": metadata_source}, accounting=m["accounting"],
                   stages=m["stages"])
