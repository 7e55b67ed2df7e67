"""Paths are URLs: local paths, gs://, memory://, hf:// — everything goes through fsspec.

The helpers here give every stage the same atomic-output behaviour: write to a temporary name next to the final
one, rename when complete.  A killed run never leaves a partial file under a final name.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import posixpath
import uuid
from typing import Any

import fsspec
from fsspec.core import url_to_fs

TMP_MARK = ".tmp-"

GCS_PROTOCOLS = ("gs://", "gcs://")


def gcs_emulator() -> str | None:
    """The GCS emulator endpoint from ``STORAGE_EMULATOR_HOST`` (the switch gcsfs and google-cloud-storage share), or
    None for real Google Cloud Storage."""
    host = os.environ.get("STORAGE_EMULATOR_HOST", "")
    return None if host in ("", "default") else host


def configure_gcs() -> None:
    """Settings gs:// needs before gcsfs is used; set as environment variables so worker processes inherit them.

    Against an emulator (``STORAGE_EMULATOR_HOST``), gcsfs's default file system first asks the gRPC storage-control
    API for the bucket's layout (zonal / hierarchical); an emulator speaks only the JSON API, so every such probe
    waits for its 60 s timeout before falling back to JSON -- on each operation, as the failure is not cached.
    ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` is gcsfs's switch for its plain JSON file system; it is read when
    gcsfs is imported, so when gcsfs already is, the plain class is registered for gs:// directly.
    """
    if gcs_emulator() is None:
        return
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    if os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"].lower() not in ("false", "0"):
        return
    import gcsfs.core

    if fsspec.get_filesystem_class("gs") is not gcsfs.core.GCSFileSystem:
        for proto in ("gs", "gcs"):
            fsspec.register_implementation(proto, gcsfs.core.GCSFileSystem, clobber=True)


def get_fs(url: str):
    """(filesystem, path-within-filesystem) for a URL or local path.

    gs:// listings are not cached: gcsfs keeps each folder listing for good by default, so files that other
    processes wrote (img2dataset's and Beam's workers) would stay invisible to this one.
    """
    url = str(url)
    if url.startswith(GCS_PROTOCOLS):
        configure_gcs()
        return url_to_fs(url, use_listings_cache=False)
    return url_to_fs(url)


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


def size(url: str) -> int:
    """Size in bytes of the file at ``url`` (FileNotFoundError when there is none)."""
    fs, path = get_fs(url)
    return int(fs.size(path))


def version_key(url: str) -> tuple:
    """(size, modification stamp) of a file: what changes when the file is replaced (for cache keys)."""
    if is_local(url):
        st = os.stat(str(url).removeprefix("file://"))
        return st.st_size, st.st_mtime_ns
    fs, path = get_fs(url)
    info = fs.info(path)
    stamp = info.get("generation") or info.get("updated") or info.get("mtime") or info.get("LastModified") or ""
    return int(info.get("size") or 0), str(stamp)


def listdir(url: str) -> list[str]:
    """Names (not paths) of the entries of folder ``url``; empty when it does not exist."""
    fs, path = get_fs(url)
    try:
        entries = fs.ls(path, detail=False, refresh=True) if not is_local(url) else fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    # an object store may list a folder's own marker object (``DIR/``, made by tf.io.gfile.makedirs or a console)
    return sorted(posixpath.basename(str(e).rstrip("/")) for e in entries if str(e).rstrip("/") != path.rstrip("/"))


def remove(url: str) -> None:
    fs, path = get_fs(url)
    fs.rm(path)


def rename(src: str, dst: str) -> None:
    """Move ``src`` to ``dst`` (same filesystem; an atomic rename locally, a server-side move on object stores)."""
    if is_local(src):
        os.replace(str(src).removeprefix("file://"), str(dst).removeprefix("file://"))
        return
    fs, path = get_fs(src)
    fs.mv(path, get_fs(dst)[1])


def check_bucket(url: str, where: str | None = None) -> None:
    """For a gs:// URL, a clear error when its bucket does not exist or these credentials may not list it (asked
    once per bucket and process); other URLs pass.  Without it a missing output bucket shows up later as an
    upload failing with a bare 404."""
    url = str(url)
    if not url.startswith(GCS_PROTOCOLS):
        return
    fs, path = get_fs(url)
    bucket = path.split("/", 1)[0]
    if bucket in _BUCKETS_SEEN:
        return
    from laionprep.errors import UsageError

    creds = ("use credentials that may read and write it (gcloud auth application-default login, or "
             "GOOGLE_APPLICATION_CREDENTIALS=KEY.json)")
    try:
        fs.call("GET", "b/{}/o", bucket, maxResults=1, json_out=True)
    except FileNotFoundError:
        raise UsageError(f"bucket gs://{bucket} does not exist", where=where or url,
                         fix=f"create it (gcloud storage buckets create gs://{bucket}) or correct the name") from None
    except OSError as e:
        if "Forbidden" in str(e) or "401" in str(e) or "403" in str(e):
            raise UsageError(f"no permission to list bucket gs://{bucket}: {str(e).splitlines()[-1]}",
                             where=where or url, fix=creds) from None
        raise
    _BUCKETS_SEEN.add(bucket)


_BUCKETS_SEEN: set[str] = set()


def check_tf_reaches_emulator(url: str, where: str) -> None:
    """Refuse a gs:// path that TensorFlow's own GCS client will read or write while ``STORAGE_EMULATOR_HOST`` is
    set but nothing routes TensorFlow there.  That client has no endpoint setting: it would silently use the real
    Google Cloud Storage bucket of the same name (or retry for minutes offline) while gcsfs uses the emulator."""
    if not str(url).startswith(GCS_PROTOCOLS) or gcs_emulator() is None:
        return
    if os.environ.get("https_proxy") or os.environ.get("HTTPS_PROXY"):
        return
    from laionprep.errors import UsageError

    raise UsageError(
        f"STORAGE_EMULATOR_HOST={gcs_emulator()} is set, but TensorFlow's GCS client (which reads/writes {url} "
        "here) ignores it and would use the real Google Cloud Storage", where=where,
        fix="unset STORAGE_EMULATOR_HOST to use real GCS, or route TensorFlow to the emulator through an HTTPS proxy "
            "for www.googleapis.com and storage.googleapis.com (https_proxy=..., CURL_CA_BUNDLE=its CA; see "
            "README, 'Object storage')")


def check_writable_dir(url: str, flag: str) -> None:
    """Refuse, before any work, an output folder that cannot be written: one that exists as a file, lies under a
    file, or whose nearest existing folder is not writable (permissions, a read-only mount: a file is created and
    removed there to know).  gs://: the bucket must be reachable, exist and be usable with the credentials found
    (``laionprep.gcs_check``).  Other object stores pass (their own errors are clear enough)."""
    from laionprep.errors import UsageError

    url = str(url)
    if url.startswith(GCS_PROTOCOLS):
        from laionprep import gcs_check

        gcs_check.check_access(url, flag, write=True)
        return
    if "://" in url and not url.startswith("file://"):
        return
    path = os.path.abspath(url.removeprefix("file://"))
    existing = path
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = (f"{flag} {url} exists and is not a folder" if existing == path else
                f"{flag} {url} cannot be created: {existing} is a file, not a folder")
        raise UsageError(what, where=flag, fix="give a folder path (a new or an existing folder), or move the file "
                                               "out of the way")
    try:
        import tempfile

        fd, probe = tempfile.mkstemp(prefix=".laionprep-write-check-", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        what = (f"{flag} {url} is not writable" if existing == path else
                f"{flag} {url} cannot be created: {existing} is not writable")
        raise UsageError(f"{what} ({e.strerror or e})", where=flag,
                         fix="choose a folder you may write to (check its permissions, and that it is not on a "
                             "read-only mount)") from None


def check_writable_file(url: str, flag: str) -> None:
    """:func:`check_writable_dir` for an output file's folder; the file itself must not be a folder."""
    from laionprep.errors import UsageError

    url = str(url)
    if "://" not in url or url.startswith("file://"):
        local = url.removeprefix("file://")
        if os.path.isdir(local):
            raise UsageError(f"{flag} {url} is a folder, not a file", where=flag,
                             fix="give the path of the file to write, e.g. " + os.path.join(local, "vocab.txt"))
        check_writable_dir(os.path.dirname(os.path.abspath(local)), flag)
        return
    check_writable_dir(url.rsplit("/", 1)[0] if url.count("/") > 2 else url, flag)


def check_readable(url: str, flag: str) -> None:
    """Before any work, for an input: a gs:// bucket must be reachable and usable (``laionprep.gcs_check``).
    Local inputs are checked by the stage that reads them (it knows what it expects there)."""
    if str(url).startswith(GCS_PROTOCOLS):
        from laionprep import gcs_check

        gcs_check.check_access(str(url), flag, write=False)


def makedirs(url: str) -> None:
    """Create folder ``url`` (on object stores there are no folders: for gs:// the bucket is checked instead)."""
    check_bucket(url)
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
    with open_file(url, "rb") as f:
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


def open_file(url: str, mode: str = "rb", **kwargs):
    """Open ``url``; a missing object on a store is a FileNotFoundError naming the URL (gcsfs names the API path)."""
    fsys, path = get_fs(url)
    if is_local(url):
        return fsys.open(path, mode, **kwargs)
    try:
        return fsys.open(path, mode, **kwargs)
    except FileNotFoundError as e:
        raise FileNotFoundError(errno.ENOENT, "no such object (deleted, or never written)", str(url)) from e


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
            holder, _, where = f.read().strip().rpartition(": ")  # "<what>: pid N on HOST", written by the holder
            raise UsageError(f"another {holder or 'laionprep command'} is running on this folder "
                             f"({where or 'unknown process'})", where=folder,
                             fix="wait for it to finish, or stop it; then re-run to resume") from None
        f.seek(0)
        f.truncate()
        f.write(f"{what}: pid {os.getpid()} on {socket.gethostname()}\n")
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
