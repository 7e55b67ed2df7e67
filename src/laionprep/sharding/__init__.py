"""Filtering and resharding img2dataset TFRecords as an Apache Beam job (``laionprep reshard``).

``reshard(ReshardConfig(...)) -> manifest`` is the stage; ``prepare`` / ``build_pipeline`` expose the plan and
the (unrun) Beam pipeline, e.g. to check Dataflow options.  See ``pipeline.py`` for the shape of the job and
``records.py`` for what happens to each record.
"""
from laionprep.sharding.pipeline import (COUNTS_NAME, MANIFEST_NAME, Prepared, ReshardConfig, build_pipeline,
                                         build_wheel, pipeline_options, prepare, reshard, summary_rows)
from laionprep.sharding.records import REASONS, split_hash

__all__ = ["COUNTS_NAME", "MANIFEST_NAME", "Prepared", "REASONS", "ReshardConfig", "build_pipeline", "build_wheel",
           "pipeline_options", "prepare", "reshard", "split_hash", "summary_rows"]
