"""Progress bars and summary tables for long work (rich), switched off cleanly for tests and pipes."""
from __future__ import annotations

import contextlib
from typing import Iterator, Mapping, Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)


@contextlib.contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress | None]:
    """A rich Progress (or None when disabled) that callers pass to stages as ``progress``."""
    if not enabled:
        yield None
        return
    p = Progress(
        TextColumn("[bold]{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False,
    )
    try:
        with p:
            yield p
    finally:
        from laionprep import native_stderr

        native_stderr.sync()  # the bar's last lines before the tables printed next (stdout)


def table(title: str, rows: Sequence[Sequence], headers: Sequence[str]) -> Table:
    t = Table(title=title, title_justify="left")
    for i, h in enumerate(headers):
        t.add_column(h, justify="right" if i else "left")
    for r in rows:
        t.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in r])
    return t


def print_table(title: str, rows: Sequence[Sequence], headers: Sequence[str]) -> None:
    Console().print(table(title, rows, headers))


def counts_rows(counts: Mapping[str, int], indent: str = "  ") -> list[tuple[str, int]]:
    return [(indent + k, v) for k, v in counts.items() if v]
