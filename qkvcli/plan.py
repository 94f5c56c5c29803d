"""Choose how to evaluate a run — every stage (`attention.run`) or in blocks (`stream.run`) — and run it.

The n×n stages (scores, scaled, masked, weights) are what make long inputs
expensive. They are computed only when asked for; asking for one that will
not fit in memory is refused before any work, with the size it would need.
A combination the blocked evaluation cannot honour (exact arithmetic) is
refused in one line, or evaluated densely.

>>> import numpy as np
>>> from .problem import Problem, Options, resolve
>>> r = resolve(Problem({"Q": np.ones((4096, 8)), "K": np.ones((4096, 8)), "V": np.ones((4096, 8))}), Options())
>>> plan(r, None).stream, plan(r, ["weights"]).stream, plan(r, ["output"]).stream
(True, False, True)
>>> size(2**31)
'2.0 GiB'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import OptionError
from .i18n import _
from .trace import SQUARE, STAGES, stage_names

if TYPE_CHECKING:
    from .problem import Resolved
    from .trace import Trace

#: Bytes of one n×n stage above which it is left out unless asked for (n > 2048 in float64).
LARGE = 32 * 2**20
#: n×n arrays the full pipeline holds at its peak (stages and softmax temporaries).
FULL_COPIES = 7
#: Multiply-adds an exact run may take (fractions cost microseconds each: a few seconds).
EXACT_LIMIT = 2_000_000


@dataclass(frozen=True)
class Plan:
    """``stream``: evaluate in blocks; ``note``: what the user should know, or None.

    ``rows``: the n×n stages are needed for these query rows only (a summarised
    table shows them): computed apart, beside the streamed evaluation.
    """

    stream: bool
    note: str | None = None
    rows: tuple[int, ...] | None = None
    later: tuple[str, ...] = ()  # n×n stages written a block of rows at a time


def square_bytes(r: Resolved) -> int:
    """Bytes of one n×n stage: batch × heads × queries × keys × item size."""
    itemsize = 4 if r.options.dtype == "float32" else 8
    return r.B * r.heads * r.n * r.m * itemsize


def exact_work(r: Resolved) -> int:
    """Multiply-adds of an exact run: the projections, the scores and weights·V."""
    d_model = r.arrays["X"].shape[-1] if "X" in r.arrays else 0
    width = r.heads * r.d_head * 2 + r.kv_heads * r.dv_head
    pairs = r.B * r.heads * r.n * r.m
    return r.B * (r.n + r.m) * d_model * width + pairs * (r.d_head + r.dv_head)


def available_memory() -> int | None:
    """Memory the system can give this process now (Linux MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def size(nbytes: float) -> str:
    """Bytes as people read them: ``512 MiB``, ``2.0 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.1f} {unit}" if unit == "GiB" else f"{nbytes:.0f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"  # pragma: no cover


def _millions(count: int) -> str:
    return f"{count / 1e6:.1f} million"


def plan(
    r: Resolved,
    asked: list[str] | None,
    stream: bool = False,
    available: int | None = None,
    why: dict[str, str] | None = None,
    rows: list[int] | None = None,
    by_rows: bool = False,
    in_place: bool = False,
) -> Plan:
    """How to evaluate ``r`` given the stages named on the command line (None = the defaults).

    ``why`` names the option that asks for a stage (``{"weights":
    "--tokens-view"}``; default ``--stage NAME``). ``rows``: the query rows the
    display shows (a summarised table), when not every row. ``by_rows``: the
    writer takes the n×n stages a block of query rows at a time (NPZ), so big
    ones are not held whole; ``in_place``: it writes to a pipe or a device, not
    a file replaced whole, so every error must be found before its first
    byte (a streamed pass runs first). Raises `OptionError` when
    an n×n stage is asked for with ``stream``, or would not fit in
    ``available`` bytes (default: what the system has free), or when exact
    arithmetic meets streaming or a problem too big to work out in fractions.
    """
    square = [s for s in asked or [] if s in SQUARE]
    shape = f"{r.n}×{r.m}"
    if r.options.exact:
        if stream:
            raise OptionError(
                _(
                    "--exact works out every stage as fractions, not in blocks: drop --exact or --stream"
                )
            )
        work = exact_work(r)
        if work > EXACT_LIMIT:
            raise OptionError(
                _(
                    "--exact is for problems of hand size: this one needs {millions} multiply-adds in fractions (at most {millions2}); drop --exact"
                ).format(millions=_millions(work), millions2=_millions(EXACT_LIMIT))
            )
        return Plan(stream=False)
    if square and stream:
        reason = (why or {}).get(square[0], f"--stage {square[0]}")
        raise OptionError(
            _("--stream computes no {shape} stage: drop {reason} or --stream").format(
                shape=shape, reason=reason
            )
        )
    if rows is not None and not stream and r.options.layout == "rows":
        # Only some rows are shown: stream every row, and the n×n stages of the shown ones.
        return Plan(stream=True, rows=tuple(rows) if square or asked is None else None)
    if square and by_rows and square_bytes(r) > LARGE:
        # Written a block of rows at a time; the blocks give row_logsumexp, so a streamed
        # pass is needed only for the other stages asked for, or to find errors first.
        later = tuple(s for s in stage_names(r) if s in square)
        return Plan(stream=in_place or not set(asked or []) <= set(SQUARE), later=later)
    if square:
        need = square_bytes(r) * FULL_COPIES
        free = available_memory() if available is None else available
        if free is not None and need > free:
            reason = (why or {}).get(square[0], f"--stage {square[0]}")
            raise OptionError(
                _(
                    "{reason} needs the {shape} matrices in memory: about {size}, but {size2} is available (--stage output is computed in blocks)"
                ).format(reason=reason, shape=shape, size=size(need), size2=size(free))
            )
        return Plan(stream=False)
    if stream or asked:
        return Plan(stream=stream or square_bytes(r) > LARGE)
    if square_bytes(r) > LARGE:
        names = ", ".join(s for s in stage_names(r) if s in SQUARE)
        return Plan(
            stream=True,
            note=_(
                "the {shape} stages ({names}: {size} each) are left out; "
                "name one with --stage to get it"
            ).format(shape=shape, names=names, size=size(square_bytes(r))),
        )
    return Plan(stream=False)


def evaluate(
    r: Resolved,
    how: Plan,
    progress: Callable[..., object] | None = None,
) -> Trace:
    """Run ``r`` the way ``how`` says. ``progress(r, streamed)`` is a context manager
    yielding a ``tick(done, total)`` (or None), for a progress bar."""
    from contextlib import nullcontext

    bar = progress(r, how.stream) if progress is not None else nullcontext(None)
    from .attention import run

    if not how.stream and not how.later:
        with bar:
            return run(r)
    if how.stream:
        from .stream import run as run_streaming

        with bar as tick:
            trace = run_streaming(r, progress=tick)
    else:  # every stage asked for is written later, a block of rows at a time
        from .describe import build

        trace = build(r, {})
    if how.later:
        trace.later = how.later
        trace.rows_of = lambda rows: run(r, rows=rows, keep=how.later)
    if how.rows is None:
        return trace
    import numpy as np

    part = run(r, rows=np.array(how.rows))  # the n×n stages of the rows shown
    part.stages = {name: trace.stages.get(name, s) for name, s in part.stages.items()}
    part.stats = trace.stats
    return part


def all_stages() -> list[str]:
    """Every stage name, for ``--trace``."""
    return list(STAGES)
