"""The project's own error types.

Every error a user can cause (a bad flag, a bad file, a missing column, an unreachable source) is raised as a
subclass of :class:`LaionprepError` carrying *what* went wrong, *where* (file, row, record, flag) and *how to fix
it*.  ``laionprep.cli`` prints the message without a traceback (``--debug`` shows one) and exits with
``exit_code``: 2 for usage errors, 1 for data problems.
"""
from __future__ import annotations


class LaionprepError(Exception):
    """Base class: a problem the user can act on."""

    exit_code = 1

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        parts = [self.what]
        if self.where:
            parts.append(f"  where: {self.where}")
        if self.fix:
            parts.append(f"  fix:   {self.fix}")
        return "\n".join(parts)

    def __reduce__(self):  # survive pickling across worker processes (multiprocessing, Beam)
        return (_rebuild, (type(self), self.what, self.where, self.fix))


def _rebuild(cls, what, where, fix):
    return cls(what, where=where, fix=fix)


class UsageError(LaionprepError):
    """Bad flags or arguments, unknown dataset names, contradictory options: exit code 2."""

    exit_code = 2


class DataError(LaionprepError):
    """Bad or missing input data (unreadable parquet, missing columns, corrupt records): exit code 1."""

    exit_code = 1


class SourceError(DataError):
    """A metadata or image source cannot be reached or listed."""


class NothingKept(DataError):
    """A stage kept nothing from a non-empty input (exit 1).  Its manifest is written first (status ``empty``,
    accounting balanced); ``tables`` are the stage's summary, which the CLI prints before the message."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None, tables: tuple = ()):
        self.tables = tuple(tables)
        super().__init__(what, where=where, fix=fix)
