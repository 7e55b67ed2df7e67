"""Paths are URLs: local paths, gs://, memory://, hf:// — everything goes through fsspec.

The helpers here give every stage the same atomic-output behaviour: write to a temporary name next to the final
one, rename when complete.  A killed run never leaves a partial file under a final name.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import posixpath
import uuid
from typing import Any

import fsspec
from fsspec.core import url_to_fs

TMP_MARK = ".tmp-"


def get_fs(url: str):
    """(filesystem, path-within-filesystem) for a URL or local path."""
    return url_to_fs(str(url))


def is_local(url: str) -> bool:
    fs, _ = get_fs(url)
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def join(base: str, *parts: str) -> str:
    base = str(base)
    if "://" in base:
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def normalise(url: str) -> str:
    """A canonical form for comparing locations (absolute local paths, no trailing slash)."""
    url = str(url)
    if "://" not in url or url.startswith("file://"):
        return os.path.abspath(url.removeprefix("file://")).rstrip("/")
    return url.rstrip("/")


def is_inside(child: str, parent: str) -> bool:
    c, p = normalise(child), normalise(parent)
    return c == p or c.startswith(p + "/")


def exists(url: str) -> bool:
    fs, path = get_fs(url)
    return fs.exists(path)


def makedirs(url: str) -> None:
    fs, path = get_fs(url)
    fs.makedirs(path, exist_ok=True)


def tmp_name(url: str) -> str:
    """A unique temporary sibling of ``url`` (same folder, so the final rename stays within one filesystem)."""
    return f"{url}{TMP_MARK}{uuid.uuid4().hex[:12]}"


def atomic_write_bytes(url: str, data: bytes) -> None:
    fs, path = get_fs(url)
    parent = posixpath.dirname(path) if "://" in str(url) else os.path.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = tmp_name(path)
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, path)


def write_json(url: str, obj: Any) -> None:
    atomic_write_bytes(url, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode())


def read_json(url: str) -> Any:
    with fsspec.open(str(url), "rb") as f:
        return json.loads(f.read())


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def glob(pattern: str) -> list[str]:
    """Sorted matches of ``pattern`` as full URLs (fsspec's glob drops the protocol; this puts it back)."""
    fsys, path = get_fs(pattern)
    matches = sorted(fsys.glob(path))
    if "://" in str(pattern) and not str(pattern).startswith("file://"):
        proto = str(pattern).split("://", 1)[0]
        return [m if "://" in m else f"{proto}://{m}" for m in matches]
    return matches


def open_file(url: str, mode: str = "rb"):
    fsys, path = get_fs(url)
    return fsys.open(path, mode)


@contextlib.contextmanager
def exclusive_lock(folder: str, what: str):
    """Hold an exclusive lock on ``folder/.laionprep.lock`` (local folders; a no-op on object stores).

    The lock is an ``flock``: the kernel releases it when the holder dies, so a killed run never blocks the next
    one, while two runs writing the same folder at once are refused.
    """
    if not is_local(folder):
        yield
        return
    import fcntl

    from laionprep.errors import UsageError

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, ".laionprep.lock")
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise UsageError(f"another {what} is running on this folder ({f.read().strip() or 'unknown process'})",
                             where=folder, fix="wait for it to finish, or stop it; then re-run to resume") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def replace_local_dir(tmp: str, final: str) -> None:
    """Publish the finished local folder ``tmp`` as ``final``, replacing an older ``final`` with two renames (the old
    one is moved aside first and removed after), so readers never see a half-written folder."""
    import shutil

    if os.path.lexists(final):
        old = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.old-{uuid.uuid4().hex[:10]}")
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
