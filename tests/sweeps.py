"""Sweeps of parameters: the first case in the fast subset, the rest only in the full run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest


def slow_after_first(values: Iterable[Any]) -> list[Any]:
    """Parameters of a sweep: the first in ``pytest -m "not slow"``, the rest marked slow.

    >>> [p.marks == () for p in slow_after_first(range(3))]
    [True, False, False]
    """
    first, *rest = list(values)
    return [pytest.param(first), *(pytest.param(v, marks=pytest.mark.slow) for v in rest)]
