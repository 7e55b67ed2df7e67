"""Helpers for the lost-and-damaged-file tests and the randomized integrity test: a tiny real download (30 metadata
rows, one parquet file, 32-pixel images, one process of 8 threads) from the session's 127.0.0.1 demo server, its
records by key, the damage done to it, and a snapshot that tells whether a command left a folder unchanged."""
from __future__ import annotations

import hashlib
import json
import os
import struct

from laionprep import shards
from laionprep.testing import synth

from .crash_helpers import cli, download_args

ROWS = 30
SHARD = 10  # 23 rows pass the prefilter: shards of 10, 10 and 3
DAMAGES = ("tfrecord", "parquet", "stats", "truncate")


def write_source(folder: str, server) -> str:
    synth.write_metadata(folder, ROWS, server.base_url, seed=0, files=1)
    return folder


def download_cmd(source: str, out: str, *, shard: int = SHARD, min_similarity: float | None = None,
                 restart: bool = False) -> list[str]:
    extra = ["--threads", "8", "--image-size", "32", "--number-sample-per-shard", str(shard)]
    if min_similarity is not None:
        extra += ["--min-similarity", str(min_similarity)]
    if restart:
        extra.append("--restart")
    return cli(*download_args(source, out, *extra, processes=1))


def validate_cmd(folder: str, *extra: str) -> list[str]:
    return cli("validate", folder, "--no-progress", "--workers", "1", "--decode-fraction", "1", *extra)


def records(folder: str) -> dict[str, tuple[bytes, str]]:
    """key -> (caption, sha256 of the stored image) over the complete shards; a key twice fails."""
    out: dict[str, tuple[bytes, str]] = {}
    for s in shards.scan(folder).shards:
        for data in shards.iter_records(s.tfrecord):
            ex = shards.parse_example(data)
            key = ex["key"][1][0].decode()
            assert key not in out, f"key {key} twice in {folder}"
            out[key] = (ex["txt"][1][0], hashlib.sha256(ex["jpg"][1][0]).hexdigest())
    return out


def shard_file(folder: str, sid: int, what: str) -> str:
    suffix = {"tfrecord": ".tfrecord", "parquet": ".parquet", "stats": "_stats.json"}[what]
    return os.path.join(folder, "tfrecord", f"{sid:05d}{suffix}")


def damage(folder: str, sid: int, how: str, keep: int | None = None) -> str:
    """Delete one file of shard ``sid`` (``tfrecord``, ``parquet``, ``stats``) or ``truncate`` its tfrecord: at the
    end of its first record by default (the framing stays intact: only the record count gives it away), else to
    ``keep`` bytes.  Returns the path damaged."""
    if how in ("tfrecord", "parquet", "stats"):
        path = shard_file(folder, sid, how)
        os.remove(path)
        return path
    assert how == "truncate", how
    path = shard_file(folder, sid, "tfrecord")
    if keep is None:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
        keep = 8 + 4 + length + 4
    os.truncate(path, keep)
    return path


def snapshot(folder: str) -> dict[str, tuple[int, str]]:
    """relative path -> (size, sha256) of every file (the lock file, which every stage takes, left out)."""
    out = {}
    for root, _, files in os.walk(folder):
        for n in files:
            if n == ".laionprep.lock":
                continue
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder)] = (os.path.getsize(p), hashlib.sha256(f.read()).hexdigest())
    return out


def manifest(folder: str) -> dict:
    with open(os.path.join(folder, "manifest.json")) as f:
        return json.load(f)
