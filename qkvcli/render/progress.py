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

from .. import i18n
from ..i18n import N_

#: The bars' labels: a streamed run, a run that holds every stage, and n×n stages written by rows.
BLOCKS, EVERY = N_("attention in blocks"), N_("attention, every stage")
WRITING = N_("attention, written a block of rows at a time")
#: Multiply-adds per second this kind of machine sustains on the blocked products.
RATE = 2e10
#: Show a bar when the work is expected to take longer than this (seconds).
SHOW_AFTER = 1.0


#: Seconds per (query, key) pair for the full pipeline's n×n arrays (memory traffic).
PER_PAIR = 5e-8


def seconds(r: Any, every_stage: bool = False) -> float:
    """A rough guess of a run's time: two products of n×m×d per head (and the n×n arrays)."""
    pairs = r.B * r.heads * r.n * r.m
    return pairs * (r.d_head + r.dv_head) / RATE + (pairs * PER_PAIR if every_stage else 0.0)


@contextmanager
def progress(
    r: Any, stream: Any = None, label: str = BLOCKS, steps: bool = True
) -> Iterator[Callable[[int, int], None] | None]:
    """Yield a ``tick(done, total)`` that draws a rich bar, or None when no bar is wanted.

    Without ``steps`` (work that cannot report how far it is) the bar pulses.
    """
    err = stream or sys.stderr
    if seconds(r, not steps) < SHOW_AFTER or not getattr(err, "isatty", lambda: False)():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(i18n._(label)), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(file=err), transient=True) as bar:
        task = bar.add_task("rows", total=r.B * r.heads * r.n if steps else None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield tick


def bar(r: Any, streamed: bool) -> Any:
    """The bar for an evaluation: it counts rows when streamed, and pulses for the dense path."""
    if streamed:
        return progress(r)
    return progress(r, label=EVERY, steps=False)


def writing(trace: Any) -> Any:
    """The bar for the n×n stages a trace writes a block of query rows at a time: it counts rows.

    >>> from types import SimpleNamespace
    >>> meta = {"batch": None, "heads": 1, "n_queries": 4, "n_keys": 4, "d_k": 2, "d_v": 2}
    >>> with writing(SimpleNamespace(meta=meta, later=("weights",))) as tick:
    ...     tick is None
    True
    """
    from types import SimpleNamespace

    meta = trace.meta
    size = SimpleNamespace(
        B=meta["batch"] or 1,
        heads=meta["heads"]
        * max(1, len(trace.later)),  # each stage written is a pass over the rows
        n=meta["n_queries"],
        m=meta["n_keys"],
        d_head=meta["d_k"],
        dv_head=meta["d_v"],
    )
    return progress(size, label=WRITING)
