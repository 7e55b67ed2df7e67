"""The tombstone: what ``laionprep remove`` writes in place of a removed row in a download's input copies
(``DIR/metadata/``, ``DIR/prefiltered/``), so that the row keeps its position (img2dataset numbers shards and keys
by position in the prefiltered input) while nothing of it is left.

Its URL, ``laionprep-removed:<list id>``, is refused by laionprep's fetcher before any network request, with its
own reason (:data:`REASON`); a shard fetched again therefore holds the row as a failure with that reason, and the
download takes it out of the shard exactly as ``remove`` did (``folders.replace.settle``).  It imports nothing.
"""
from __future__ import annotations

PREFIX = "laionprep-removed:"
REASON = "removed by laionprep remove"  # safe_fetch's reason for a tombstone URL (the detail is the list id)


def url(ident: str) -> str:
    """The tombstone URL of list ``ident`` (the list's id in ``DIR/_removals/``)."""
    return PREFIX + ident


def ident_of(value) -> str | None:
    """The list id of a tombstone URL, None for any other value."""
    return value[len(PREFIX):] if isinstance(value, str) and value.startswith(PREFIX) else None
