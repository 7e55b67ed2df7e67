"""Fixtures for the reliability tests: the hostile image server (hostile_server.py) for the session; helpers to
run the real download stage over a list of URLs are in reliability_helpers.py."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # hostile_server, reliability_helpers

import hostile_server  # noqa: E402


@pytest.fixture(scope="session")
def hostile():
    """The hostile server for the session (drip: one byte every 0.5 s)."""
    with hostile_server.HostileServer(drip_interval=0.5) as srv:
        yield srv

