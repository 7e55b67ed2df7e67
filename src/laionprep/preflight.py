"""The paths of every verb, checked before any work starts (``cli.main`` calls :func:`check` first).

Outputs: a folder that exists as a file, cannot be created or is not writable is a usage error within a second
(``fs.check_writable_dir``), instead of a traceback after the work.  Inputs and outputs on gs://: the bucket is
asked once, with short deadlines (``laionprep.gcs_check``), so missing credentials or no network fail in seconds
with one message.  A new verb or path flag is one line in ``PATHS``.
"""
from __future__ import annotations

import argparse

from laionprep import fs as lfs

OUT_DIR, OUT_FILE, IN = "out_dir", "out_file", "in"

# verb -> (argparse dest, flag as the user wrote it, kind)
PATHS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "download": (("output", "--output", OUT_DIR), ("metadata_source", "--metadata-source", IN)),
    "validate": (("path", "DIR", IN), ("report", "--report", OUT_DIR)),
    "reshard": (("sources", "SRC", IN), ("output", "--output", OUT_DIR), ("keep_keys", "--keep-keys", IN),
                ("drop_keys", "--drop-keys", IN)),
    "build-tfds": (("source", "--source", IN), ("data_dir", "--data-dir", OUT_DIR)),
    "demo": (("workdir", "--workdir", OUT_DIR),),
    "train": (("workdir", "--workdir", OUT_DIR),),
    "eval": (("workdir", "--workdir", IN),),
    "tokenizer": (("source", "--source", IN), ("output", "--output", OUT_FILE)),
    "remove": (("folder", "DIR", IN), ("list_file", "--list", IN)),
}


def check(args: argparse.Namespace) -> None:
    for dest, flag, kind in PATHS.get(args.verb, ()):
        value = getattr(args, dest, None)
        if args.verb == "build-tfds" and dest == "data_dir" and getattr(args, "check", False):
            kind = IN  # --check only reads the registration
        for v in (value if isinstance(value, (list, tuple)) else (value,)):
            if not v:
                continue
            if kind == OUT_DIR:
                lfs.check_writable_dir(v, flag)
            elif kind == OUT_FILE:
                lfs.check_writable_file(v, flag)
            else:
                lfs.check_readable(v, flag)
