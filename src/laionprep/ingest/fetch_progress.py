"""Per-image download progress from img2dataset's worker processes to ``laionprep download``'s progress bar.

img2dataset reports nothing until a whole shard is written (its ``NNNNN_stats.json``), so a bar fed by finished
shards stands still for minutes.  Every URL goes through laionprep's fetcher in the workers
(:func:`laionprep.ingest.safe_fetch.download_image_with_retry`), which calls :func:`count_one`.  Each worker
process keeps its count in memory and overwrites a fixed-width number in its own file ``<dir>/<pid>-<id>.count``
(one ``pwrite`` of 20 bytes into the page cache: about a microsecond, against milliseconds to fetch and resize an
image); the parent sums them (:func:`read_total`).  ``dir`` is a local temporary folder
named by ``LAIONPREP_PROGRESS_DIR`` in the download child's environment (inherited by its workers), never the
output folder: img2dataset treats every ``*.json`` there as a finished shard.  Without the variable (a Spark or
Ray executor elsewhere), nothing is counted and the bar moves with finished shards.
"""
from __future__ import annotations

import os
import threading
import uuid

ENV = "LAIONPREP_PROGRESS_DIR"
_WIDTH = 20


class _Counter:
    def __init__(self, folder: str):
        self.pid = os.getpid()
        self.n = 0
        self.lock = threading.Lock()
        path = os.path.join(folder, f"{self.pid}-{uuid.uuid4().hex[:8]}.count")
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)


_counter: _Counter | None = None
_make_lock = threading.Lock()


def count_one() -> None:
    """One URL done (fetched or failed) in this process."""
    global _counter
    c = _counter
    if c is None or c.pid != os.getpid():  # first call here (or a forked child of a counting process)
        folder = os.environ.get(ENV)
        if not folder:
            return
        with _make_lock:
            if _counter is None or _counter.pid != os.getpid():
                try:
                    _counter = _Counter(folder)
                except OSError:  # the parent has finished and removed the folder: nothing to report to
                    os.environ.pop(ENV, None)
                    return
            c = _counter
    with c.lock:
        c.n += 1
        try:
            os.pwrite(c.fd, str(c.n).rjust(_WIDTH).encode(), 0)
        except OSError:
            pass


def read_total(folder: str) -> int:
    """The URLs done so far by every worker that reported into ``folder``."""
    total = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for n in names:
        if n.endswith(".count"):
            try:
                with open(os.path.join(folder, n), "rb") as f:
                    total += int(f.read(_WIDTH) or 0)
            except (OSError, ValueError):
                pass
    return total
