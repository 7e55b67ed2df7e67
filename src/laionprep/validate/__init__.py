"""``laionprep validate``: prove a dataset folder is whole (integrity, schema, content, accounting) and report it.

    from laionprep.validate import ValidateConfig, validate
    rep = validate(ValidateConfig("runs/laion", report="runs/laion/validation", decode_fraction=0.01))
    rep.ok, rep.counts, rep.problems[0].where()

The folder may be a download (``manifest.json`` + ``tfrecord/``), a resharded folder (``counts.json``) or a TFDS
folder (``dataset_info.json``); :mod:`.layout` recognises which.  See ``docs/validate.md``.

The names are imported lazily, so that worker processes (which import only :mod:`.shard_check`) start fast.
"""
from __future__ import annotations

__all__ = ["KINDS", "Problem", "Report", "ValidateConfig", "validate"]


def __getattr__(name):
    if name in ("Report", "ValidateConfig", "validate"):
        from laionprep.validate import core

        return getattr(core, name)
    if name in ("KINDS", "Problem"):
        from laionprep.validate import problems

        return getattr(problems, name)
    raise AttributeError(f"module 'laionprep.validate' has no attribute {name!r}")
