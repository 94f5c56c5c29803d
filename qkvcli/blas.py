"""Run numpy's OpenBLAS on one thread for a while, so qkv can share the cores itself.

The streamed attention makes many small matrix products. OpenBLAS splits
each one across its threads and waits for all of them: when another program
holds a core, every product waits for it. Giving each of qkv's own worker
threads whole blocks, with OpenBLAS on one thread, avoids those waits (the
way PyTorch's attention kernel works). Where the BLAS is not an OpenBLAS
that can be found (Linux ``/proc/self/maps``), nothing changes and qkv uses
one worker.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: (set, get) symbol names in the OpenBLAS builds numpy ships and distributions use.
_SYMBOLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)
_lock = threading.Lock()


@functools.cache
def _openblas() -> tuple[Any, Any] | None:
    """The set/get thread-count functions of the OpenBLAS numpy loaded, if any (looked up once)."""
    import ctypes

    import numpy  # noqa: F401  (loads its BLAS; numpy's own copy is tried first)

    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted((p for p in paths if p.startswith("/")), key=lambda p: "numpy" not in p):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _SYMBOLS:
            setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                return setter, getter
    return None


def cores() -> int:
    """Threads for blocks of rows: the cores this process may use."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads() -> int | None:
    """OpenBLAS's thread count now, or None when no OpenBLAS could be found."""
    found = _openblas()
    return None if found is None else int(found[1]())


@contextmanager
def single_threaded() -> Iterator[bool]:
    """OpenBLAS on one thread inside the block; yields whether that could be done."""
    found = _openblas()
    if found is None:
        yield False
        return
    setter, getter = found
    with _lock:
        before = int(getter())
        setter(1)
        try:
            yield True
        finally:
            setter(before)
