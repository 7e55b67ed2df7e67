"""Fixtures for the validate tests (the session's demo download comes from tests/conftest.py)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # validate_helpers


@pytest.fixture
def cli():
    """``laionprep validate ARGS --no-progress`` in-process: the real argument parsing; returns the exit code."""
    from laionprep.cli import main

    return lambda *args: main(["validate", *map(str, args), "--no-progress"])


@pytest.fixture(scope="session")
def resharded(demo_download, tmp_path_factory):
    """A valid resharded-format folder built from copies of the demo records (read-only)."""
    import validate_helpers as vh

    out = str(tmp_path_factory.mktemp("resharded") / "out")
    vh.make_resharded(demo_download, out)
    return out


@pytest.fixture(scope="session")
def tfds_folder(demo_download, tmp_path_factory):
    """ROOT/demo_tfds/1.0.0 over copies of the demo shards (read-only)."""
    import validate_helpers as vh

    return vh.make_tfds(demo_download, str(tmp_path_factory.mktemp("tfds")))
