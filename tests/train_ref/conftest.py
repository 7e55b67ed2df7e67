"""Fixtures for the FLIP trainer tests (data written by flip_helpers)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src"))  # before pip install -e

from flip_helpers import register_tfds, write_records  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _jax_compilation_cache(tmp_path_factory):
    """A compilation cache for this test session only: the killed-and-resumed runs (and their subprocesses)
    compile the same programs as the run they are compared with, so they are compiled once."""
    import jax

    d = str(tmp_path_factory.mktemp("jax_cache"))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = d
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    jax.config.update("jax_compilation_cache_dir", d)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield


@pytest.fixture(scope="session")
def flip_data(tmp_path_factory) -> str:
    """A small img2dataset-like download folder: 1024 records in 4 files."""
    out = str(tmp_path_factory.mktemp("flip_data"))
    write_records(out, 1024, files=4, short_side=72)
    return out


@pytest.fixture(scope="session")
def demo_pairs(tmp_path_factory) -> tuple[str, str]:
    """(data_dir, name) of a TFDS dataset registered over 1536 demo-like records (links, no copies): what the
    end-to-end trainings (FLIP, CLIPA, CLIPPO) read; they only read it."""
    download = str(tmp_path_factory.mktemp("demo_pairs_download"))
    write_records(download, 1536, seed=1, files=4, short_side=72)
    root = str(tmp_path_factory.mktemp("demo_pairs_tfds"))
    return root, register_tfds(download, root)


@pytest.fixture(scope="session")
def eval_folder(tmp_path_factory) -> str:
    """The demo's labelled evaluation folder: val/<color>_<shape>/*.jpg + class_names.txt, 30 classes x 8."""
    from laionprep.testing import synth

    out = str(tmp_path_factory.mktemp("flip_eval"))
    synth.write_eval_folder(out, per_class=8)
    return out


@pytest.fixture(scope="session")
def vocab_file(tmp_path_factory, flip_data) -> str:
    from laionprep.train_ref import tokenizer

    path = str(tmp_path_factory.mktemp("vocab") / "vocab.txt")
    tokenizer.learn_vocab(flip_data, 300, path)
    return path


