"""The output keys of a reshard: unique across sources, and still numbers (FLIP casts ``key`` to int64).

img2dataset's keys are fixed-width decimal strings (shard number then index in the shard, each zero-padded:
``000010042``).  FLIP's LAION reader parses ``key`` with ``tf.strings.to_number(out_type=int64)`` under
``ignore_errors()``, so a key that is not a number silently drops its record.  Hence:

* one source: keys are kept as they are (a single-source reshard's keys equal the download's keys);
* several sources with numeric keys: the key of source ``s`` becomes ``s * 10**W + int(key)``, written as
  ``{s}{key zero-padded to W digits}`` with every source index padded to the same width, where ``W`` is the
  longest key width among the sources.  Within a source every key must have that source's width (as img2dataset
  writes them), so the mapping is one-to-one and the keys stay unique.  A result above int64's maximum is refused;
* several sources whose keys are not numbers (not img2dataset's): ``{s}_{key}`` as before, with a warning that
  FLIP's reader would drop those records.
"""
from __future__ import annotations

import dataclasses

INT64_MAX = 2**63 - 1


class KeyFormatError(ValueError):
    """A record's key does not fit the rule its source was planned with."""


@dataclasses.dataclass(frozen=True)
class KeyRule:
    """How one source's keys are rewritten (pickled to the workers inside the Job)."""

    prefix: bytes = b""  # b"": the key is kept as it is
    length: int = 0  # > 0: every key of the source is exactly this many decimal digits
    width: int = 0  # > 0: the key is zero-padded to this many digits after the prefix

    def apply(self, key: bytes) -> bytes:
        if not self.prefix:
            return key
        if self.length:
            if len(key) != self.length or not key.isdigit():
                raise KeyFormatError(f"key {key[:40]!r} is not a {self.length}-digit number like the rest of its "
                                     "source's keys")
            return self.prefix + key.rjust(self.width, b"0")
        return self.prefix + key


@dataclasses.dataclass(frozen=True)
class KeyPlan:
    rules: tuple[KeyRule, ...]
    description: str  # for the manifest (stages.reshard.keys)
    warnings: tuple[str, ...] = ()


def plan(first_keys: list[bytes | None]) -> KeyPlan:
    """The key rule of each source, from one key of each (``None``: the source has no records).

    Raises ``OverflowError`` when numeric keys would not fit in int64."""
    n = len(first_keys)
    if n == 1:
        return KeyPlan((KeyRule(),), "unchanged (one source)")
    sw = len(str(n - 1))
    if all(k is None or (k.isdigit() and k) for k in first_keys):
        width = max((len(k) for k in first_keys if k), default=1)
        if n * 10**width - 1 > INT64_MAX:
            raise OverflowError(f"{n} sources with {width}-digit keys give keys up to {n * 10**width - 1}, above "
                                f"int64's maximum {INT64_MAX} (FLIP casts keys to int64)")
        rules = tuple(KeyRule(f"{i:0{sw}d}".encode(), len(k) if k else width, width) for i, k in enumerate(first_keys))
        return KeyPlan(rules, f"numeric: source * 10**{width} + key (width W={width}; source index padded to {sw} "
                              f"digit(s), keys to {width}): source i's keys are {sw + width}-digit numbers "
                              f"starting with i")
    rules = tuple(KeyRule(f"{i:0{sw}d}_".encode()) for i in range(n))
    return KeyPlan(rules, "prefixed with the source index: " + ", ".join(f"{r.prefix.decode()}<key> = source {i}"
                                                                       for i, r in enumerate(rules)),
                   ("the sources' keys are not numbers, so the output keys are '<source>_<key>': FLIP's reader "
                    "(key cast to int64, errors ignored) would drop every record",))
