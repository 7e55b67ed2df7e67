"""Hash-partitioned runs on local disk: the one spiller behind the dataset-wide checks that must not hold a record
per row in one process's RAM (the prefilter's duplicate URLs, :mod:`laionprep.ingest.url_dedup`; validate's
duplicate keys, :mod:`laionprep.validate.key_check`).

A producer (:class:`Runs`) appends numpy structured records; every ``chunk_rows`` records become one chunk, its
records grouped by partition (stably: a partition keeps the order the records came in), written as
``folder/NAME-CCCC.npy`` plus ``NAME-CCCC.off.npy`` (each partition's start).  A consumer reads one partition back
from every chunk of every producer (:func:`read_partition`), in producer and chunk order.  Memory: one chunk while
writing, one partition while reading; nothing grows with the number of producers or chunks.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

MAX_PARTITIONS = 4096


def partitions_for(rows: int, bytes_per_row: int, budget_bytes: int) -> int:
    """How many partitions keep one partition's working set (``rows`` spread evenly, ``bytes_per_row`` each)
    within ``budget_bytes``."""
    return max(1, min(MAX_PARTITIONS, -(-rows * bytes_per_row // max(budget_bytes, 1))))


def concat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Records of several chunks as one array (fields of the same name and a wider dtype where widths differ,
    e.g. keys of 9 and 12 bytes)."""
    return np.concatenate(arrays) if len(arrays) > 1 else arrays[0]


class Runs:
    """One producer's records, written in chunks of at most ``chunk_rows``; a subclass says which partition a
    record goes to (:meth:`partition_of`)."""

    def __init__(self, folder: str, name: str, partitions: int, chunk_rows: int):
        self.folder, self.name, self.partitions = folder, name, partitions
        self.chunk_rows = max(1, chunk_rows)
        self.parts: list[np.ndarray] = []
        self.buffered = 0
        self.chunks = 0

    def partition_of(self, rec: np.ndarray) -> np.ndarray:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def append(self, rec: np.ndarray) -> None:
        self.parts.append(rec)
        self.buffered += len(rec)
        if self.buffered >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if not self.parts:
            return
        rec = concat(self.parts)
        self.parts, self.buffered = [], 0
        # 16-bit ids (MAX_PARTITIONS fits): numpy's stable sort of them is a radix sort, ~5x a 64-bit one
        part = self.partition_of(rec).astype(np.uint16)
        order = np.argsort(part, kind="stable")  # stable: records stay in order within a partition
        offsets = np.zeros(self.partitions + 1, dtype=np.int64)
        np.cumsum(np.bincount(part, minlength=self.partitions), out=offsets[1:])
        base = os.path.join(self.folder, f"{self.name}-{self.chunks:04d}")
        np.save(base + ".npy", rec[order])
        np.save(base + ".off.npy", offsets)
        self.chunks += 1

    def close(self) -> int:
        """Flush what is buffered; returns the number of chunks written."""
        self.flush()
        return self.chunks


def read_partition(folder: str, producers: Sequence[tuple[str, int]], partition: int) -> np.ndarray | None:
    """Partition ``partition``'s records from every chunk of every producer (``(name, chunks)``, in the order
    given), concatenated in that order; None when it has none."""
    pieces = []
    for name, n in producers:
        for c in range(n):
            base = os.path.join(folder, f"{name}-{c:04d}")
            off = np.load(base + ".off.npy")
            lo, hi = int(off[partition]), int(off[partition + 1])
            if hi > lo:
                mm = np.load(base + ".npy", mmap_mode="r")
                pieces.append(np.array(mm[lo:hi]))
                del mm
    return concat(pieces) if pieces else None
