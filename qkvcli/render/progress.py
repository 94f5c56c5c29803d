"""A progress bar on stderr for long streamed runs — only when stderr is a terminal.

>>> from types import SimpleNamespace
>>> small = SimpleNamespace(B=1, heads=1, n=100, m=100, d_head=8, dv_head=8)
>>> seconds(small) < 0.01
True
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: Multiply-adds per second this kind of machine sustains on the blocked products.
RATE = 2e10
#: Show a bar when the work is expected to take longer than this (seconds).
SHOW_AFTER = 1.0


def seconds(r: Any) -> float:
    """A rough guess of the time a streamed run takes: two products of n×m×d per head."""
    return r.B * r.heads * r.n * r.m * (r.d_head + r.dv_head) / RATE


@contextmanager
def progress(r: Any, stream: Any = None) -> Iterator[Callable[[int, int], None] | None]:
    """Yield a ``tick(done, total)`` that draws a rich bar, or None when no bar is wanted."""
    err = stream or sys.stderr
    if seconds(r) < SHOW_AFTER or not getattr(err, "isatty", lambda: False)():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("attention in blocks"), BarColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(file=err), transient=True) as bar:
        task = bar.add_task("rows", total=r.B * r.heads * r.n)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield tick
