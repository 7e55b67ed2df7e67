"""Filtering and resharding img2dataset TFRecords as an Apache Beam job (``laionprep reshard``).

``reshard(ReshardConfig(...)) -> manifest`` is the stage; ``prepare`` / ``build_pipeline`` expose the plan and
the (unrun) Beam pipeline, e.g. to check Dataflow options.  See ``pipeline.py`` for the shape of the job,
``config.py`` for the options and ``records.py`` for what happens to each record.  Names are resolved on first use
(PEP 562) so that importing ``laionprep.sharding.config`` (the CLI does, to build its parser) does not load Beam.
"""
from __future__ import annotations

import importlib

_WHERE = {
    "ReshardConfig": "config",
    **{n: "pipeline" for n in ("COUNTS_NAME", "MANIFEST_NAME", "Prepared", "build_pipeline", "build_wheel",
                               "pipeline_options", "prepare", "reshard", "summary_rows")},
    "REASONS": "records", "split_hash": "records",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'laionprep.sharding' has no attribute {name!r}")
    return getattr(importlib.import_module(f"laionprep.sharding.{_WHERE[name]}"), name)
