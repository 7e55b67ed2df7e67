"""Unique keys across the whole dataset in bounded memory: validate's one check that needs every record's key.

As each shard's result arrives in the parent, its keys (``shard_check.key_token``: the key itself, or a 33-byte
digest when longer than 40 bytes) go to :class:`KeySpill`, which writes them with their position
``unit << 32 | record`` into ``P`` hash partitions on local disk (:mod:`laionprep.spill`, the prefilter's spiller),
and the result drops them.  Then each partition is read back alone (:func:`check_partition`, in worker processes)
and sorted by (key, position): every record after the first of its key is a duplicate of that first one.  A key's
records all fall in one partition, so the duplicates, their count and the shards involved are exactly those of
one sort over all keys; the listed ones are the first ``listed`` in (key, position) order over all partitions,
also as one sort would give.

Memory: one chunk of records while the shards are checked, one partition per process afterwards; ``P`` is sized
from the keys per shard seen before the first chunk is written (and the metadata's record count), so that a
partition's working set (:func:`working_bytes`) fits the budget.  Disk: key width + 8 bytes per record
(17 bytes for img2dataset's 9-digit keys), in a temporary folder removed at the end.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from laionprep import spill
from laionprep.errors import DataError

POS_BITS = 32  # a shard may hold up to 2^32 records; a dataset 2^32 shards
POS_MASK = (1 << POS_BITS) - 1
_FIX = ("free space there, or point TMPDIR at a writable local disk with room for key width + 8 bytes per record "
        "(17 GB per billion img2dataset keys)")
_MULT = (np.random.default_rng(0x6B657973).integers(1, 1 << 63, size=64, dtype=np.uint64) | np.uint64(1))


def working_bytes(width: int) -> int:
    """Phase 2's bytes per key ``width`` bytes wide, as counted from :func:`check_partition`'s arrays: the records
    read (twice while gathered), the key copy, the sort words and their sorted copy, the order and the position
    (bench/scale.py --part validate: the process tree's peak stays under the budget plus the interpreters)."""
    words = 8 * -(-width // 8)
    return 3 * (width + 8) + 2 * words + 32


def _contiguous_keys(rec: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rec["key"])


def _hash(keys: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each key that does not depend on the array's width (a NUL padding byte adds nothing), so
    the same key spilled from shards of different key widths goes to the same partition."""
    w = keys.dtype.itemsize
    b = keys.view(np.uint8).reshape(len(keys), w)
    h = np.zeros(len(keys), np.uint64)
    for i in range(w):
        h += b[:, i].astype(np.uint64) * _MULT[i]
    h ^= h >> np.uint64(31)
    h *= np.uint64(0x9E3779B97F4A7C15)
    return h ^ (h >> np.uint64(29))


class KeySpill(spill.Runs):
    """Every shard's keys as records (key token, position), hash-partitioned by the key."""

    def __init__(self, folder: str, budget: int, units: int, expected_records: int | None = None,
                 processes: int = 1):
        record_max = 48  # a 40-byte token + the position
        super().__init__(folder, "keys", 0, max(1024, budget // (4 * record_max)))
        self.per_process = max(budget // max(processes, 1), 1)
        self.units, self.expected = max(units, 1), expected_records or 0
        self.units_seen = self.keys_seen = 0
        self.width = 1

    def add(self, r) -> None:
        """Spill the keys of shard result ``r`` and drop them from it."""
        self.units_seen += 1
        if r.keys is not None and len(r.keys):
            rec = np.empty(len(r.keys), [("key", r.keys.dtype), ("pos", "<u8")])
            rec["key"] = r.keys
            rec["pos"] = (np.uint64(r.unit) << np.uint64(POS_BITS)) | r.key_records.astype(np.uint64)
            self.keys_seen += len(rec)
            self.width = max(self.width, r.keys.dtype.itemsize)
            self.append(rec)
        r.keys = r.key_records = None

    def flush(self) -> None:
        if self.parts and not self.partitions:  # the first chunk fixes P: from the keys per shard so far
            estimate = self.keys_seen * self.units // max(self.units_seen, 1)
            self.partitions = spill.partitions_for(max(estimate, self.expected), working_bytes(self.width),
                                                   self.per_process)
        try:
            super().flush()
        except OSError as e:  # e.g. the temporary disk is full
            raise DataError(f"cannot write the duplicate-key check's runs: {e}", where=self.folder,
                            fix=_FIX) from None

    def partition_of(self, rec: np.ndarray) -> np.ndarray:
        return _hash(_contiguous_keys(rec)) % np.uint64(self.partitions)


@dataclasses.dataclass
class PartitionResult:
    duplicates: int  # records whose key an earlier record has
    units: np.ndarray  # units holding a duplicate or the first record of a duplicated key
    listed: list  # the first duplicates in (key, position) order: (key token, position, first position)


def check_partition(folder: str, chunks: int, partition: int, unit_map: np.ndarray | None,
                    listed: int) -> PartitionResult:
    """Sort one partition by (key, position); ``unit_map`` renumbers units (-1: leave the unit's keys out)."""
    rec = spill.read_partition(folder, [("keys", chunks)], partition)
    if rec is None:
        return PartitionResult(0, np.empty(0, np.int64), [])
    pos = rec["pos"]
    keys = _contiguous_keys(rec)
    del rec
    if unit_map is not None:
        new = unit_map[(pos >> np.uint64(POS_BITS)).astype(np.int64)]
        keep = new >= 0
        keys = keys[keep]
        pos = (new[keep].astype(np.uint64) << np.uint64(POS_BITS)) | (pos[keep] & np.uint64(POS_MASK))
    n, w = len(keys), keys.dtype.itemsize
    if n < 2:
        return PartitionResult(0, np.empty(0, np.int64), [])
    # the keys as big-endian 64-bit words: NUL-padded bytes compare as the words do, and lexsort on a few integer
    # columns is faster than a sort of fixed-width strings
    nw = -(-w // 8)
    padded = np.zeros((n, nw * 8), np.uint8)
    padded[:, :w] = keys.view(np.uint8).reshape(n, w)
    words = padded.view(">u8")
    del padded
    order = np.lexsort((pos,) + tuple(words[:, i] for i in reversed(range(nw))))
    sw = words[order]
    del words
    same = (sw[1:] == sw[:-1]).all(axis=1)
    del sw
    if not same.any():
        return PartitionResult(0, np.empty(0, np.int64), [])
    dup_at = np.flatnonzero(same) + 1  # sorted positions of the duplicates
    starts = np.flatnonzero(np.r_[True, ~same])  # sorted positions of each key's first record
    first_at = starts[np.searchsorted(starts, dup_at, side="right") - 1]
    dup_pos, first_pos = pos[order[dup_at]], pos[order[first_at]]
    units = np.unique(np.concatenate([dup_pos, first_pos]) >> np.uint64(POS_BITS)).astype(np.int64)
    shown = [(bytes(keys[order[d]]), int(p), int(f))
             for d, p, f in zip(dup_at[:listed].tolist(), dup_pos[:listed].tolist(), first_pos[:listed].tolist())]
    return PartitionResult(len(dup_at), units, shown)


def _check(args) -> PartitionResult:
    return check_partition(*args)


@dataclasses.dataclass
class Duplicates:
    count: int
    units: set
    listed: list  # (key token, unit, record, first unit, first record), the first ``listed`` in key order


def find_duplicates(keys: KeySpill, unit_map: np.ndarray | None, listed: int, pool=None) -> Duplicates:
    """Every partition checked (in ``pool``'s processes when given), merged as one sort over all keys would."""
    chunks = keys.close()
    found = Duplicates(0, set(), [])
    if not chunks:
        return found
    args = [(keys.folder, chunks, p, unit_map, listed) for p in range(keys.partitions)]
    for part in (pool.map(_check, args) if pool is not None and len(args) > 1 else map(_check, args)):
        found.count += part.duplicates
        found.units.update(part.units.tolist())
        found.listed = sorted(found.listed + part.listed)[:listed]  # by (key, position): the global order
    found.listed = [(k, p >> POS_BITS, p & POS_MASK, f >> POS_BITS, f & POS_MASK) for k, p, f in found.listed]
    return found


def spill_folder(parent: str | None = None) -> str:
    """A new temporary folder for the key runs (``$TMPDIR``: local disk)."""
    import tempfile

    try:
        return tempfile.mkdtemp(prefix="laionprep-validate-keys-", dir=parent)
    except OSError as e:
        raise DataError(f"cannot make a temporary folder for the duplicate-key check: {e}",
                        where=parent or tempfile.gettempdir(), fix=_FIX) from None


__all__ = ["KeySpill", "check_partition", "find_duplicates", "spill_folder", "working_bytes"]
