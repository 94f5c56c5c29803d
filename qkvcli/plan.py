"""Choose how to evaluate a run: every stage (`attention.run`) or in blocks (`stream.run`).

The n×n stages (scores, scaled, masked, weights) are what make long inputs
expensive. They are computed only when asked for; asking for one that will
not fit in memory is refused before any work, with the size it would need.

>>> import numpy as np
>>> from .problem import Problem, Options, resolve
>>> r = resolve(Problem({"Q": np.ones((4096, 8)), "K": np.ones((4096, 8)), "V": np.ones((4096, 8))}), Options())
>>> plan(r, None).stream, plan(r, ["weights"]).stream, plan(r, ["output"]).stream
(True, False, True)
>>> size(2**31)
'2.0 GiB'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import OptionError
from .trace import STAGES

if TYPE_CHECKING:
    from .problem import Resolved

#: The stages with one value per (query, key) pair.
SQUARE = ("scores", "scaled", "masked", "weights")
#: Bytes of one n×n stage above which it is left out unless asked for (n > 2048 in float64).
LARGE = 32 * 2**20
#: n×n arrays the full pipeline holds at its peak (stages and softmax temporaries).
FULL_COPIES = 7


@dataclass(frozen=True)
class Plan:
    """``stream``: evaluate in blocks; ``note``: what the user should know, or None."""

    stream: bool
    note: str | None = None


def square_bytes(r: Resolved) -> int:
    """Bytes of one n×n stage: batch × heads × queries × keys × item size."""
    itemsize = 4 if r.options.dtype == "float32" else 8
    return r.B * r.heads * r.n * r.m * itemsize


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


def plan(
    r: Resolved, asked: list[str] | None, stream: bool = False, available: int | None = None
) -> Plan:
    """How to evaluate ``r`` given the stages named on the command line (None = the defaults).

    Raises `OptionError` when an n×n stage is asked for with ``stream``, or
    would not fit in ``available`` bytes (default: what the system has free).
    """
    square = [s for s in asked or [] if s in SQUARE]
    shape = f"{r.n}×{r.m}"
    if square and stream:
        raise OptionError(
            f"--stream computes no {shape} stage: drop --stage {square[0]} or --stream"
        )
    if square:
        need = square_bytes(r) * FULL_COPIES
        free = available_memory() if available is None else available
        if free is not None and need > free:
            raise OptionError(
                f"--stage {square[0]} needs the {shape} matrices in memory: about {size(need)}, "
                f"but {size(free)} is available (--stage output is computed in blocks)"
            )
        return Plan(stream=False)
    if stream or asked:
        return Plan(stream=stream or square_bytes(r) > LARGE)
    if square_bytes(r) > LARGE:
        has_masked = r.allowed is not None or r.bias is not None
        names = ", ".join(s for s in SQUARE if s != "masked" or has_masked)
        return Plan(
            stream=True,
            note=f"the {shape} stages ({names}: {size(square_bytes(r))} each) are left out; "
            "name one with --stage to get it",
        )
    return Plan(stream=False)


def all_stages() -> list[str]:
    """Every stage name, for ``--trace``."""
    return list(STAGES)
