"""Nested lists of numbers (JSON entries, arrays) → float arrays, with every bad cell placed.

>>> to_array([[1, 2], [3, 4]], "X", "f.json").shape
(2, 2)
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from ..errors import InputError

if TYPE_CHECKING:
    import numpy as np

#: How many dimensions each kind of entry may have.
NDIMS = {"b_Q": (1, 2), "b_K": (1, 2), "b_V": (1, 2), "b_O": (1,), "valid_lens": (0, 1, 2),
         "key_padding_mask": (1, 2), "mask": (2, 3, 4), "attn_bias": (2, 3, 4)}  # fmt: skip
#: How −∞ may be written where it is allowed (a bias, an answer's masked cell).
NEG_INF_WORDS = ("-inf", "-infinity", "−∞", "-∞")


def _where(name: str, origin: str, path: tuple[int, ...], depth: int) -> str:
    """``origin: W_Q row 2, column 3`` from an index path into a ``depth``-D nested list."""
    return f"{origin}: {name} {_pos(path, depth)}"


def _pos(path: tuple[int, ...], depth: int) -> str:
    """``row 2, column 3``: an index path named by the axes of a ``depth``-D list."""
    words = _AXIS_WORDS.get(depth, ("index",) * depth)[: len(path)]
    return ", ".join(f"{w} {i + 1}" for w, i in zip(words, path))


_AXIS_WORDS = {1: ("value",), 2: ("row", "column"), 3: ("matrix", "row", "column"),
               4: ("item", "head", "row", "column")}  # fmt: skip


def _bad_cell(cell: Any) -> str:
    text = json.dumps(cell) if not isinstance(cell, float) else repr(cell)
    return text if len(text) <= 40 else text[:37] + "…"


def to_array(value: Any, key: str, origin: str, canon: str = "X") -> np.ndarray:
    """A nested list of numbers as a float64 array, or an `InputError` saying where it is not.

    >>> to_array([[1, 2], [3, 4]], "X", "f.json").shape
    (2, 2)
    """
    import numpy as np

    ndims = NDIMS.get(canon, (2, 3))
    flags = canon in ("mask", "key_padding_mask")
    neg_inf = canon == "attn_bias"
    given = isinstance(value, np.ndarray)
    if given or (isinstance(value, list) and len(value) * _width(value) > FAST_CELLS):
        # Arrays and large inputs skip the cell-by-cell walk unless numpy finds a problem.
        try:
            a = value if given else np.array(value)
        except (ValueError, OverflowError):
            a = None
        ok_kinds = "iuf" + ("b" if flags else "")
        if a is not None and a.dtype.kind in ok_kinds and a.ndim in ndims and a.size:
            a = a.astype(np.float64, copy=False)
            if np.all(np.isfinite(a)) or (neg_inf and not np.any(np.isnan(a) | (a == np.inf))):
                return a
    if given:
        value = value.tolist()  # an array from .npy/.npz: find the bad cell in its lists
    depth = _walk(value, key, origin, (), flags, neg_inf)
    if depth not in ndims:
        want = " or ".join(_DIM_WORDS[d] for d in ndims)
        raise InputError(
            f"{origin}: {key} must be {want}, not {_DIM_WORDS.get(depth, f'{depth}-D')}"
        )
    return np.array(_numbers(value, neg_inf), dtype=np.float64)


FAST_CELLS = 50_000  # above this many cells, trust numpy's conversion first


def _width(value: list) -> int:
    """Cells per row of a nested list, guessed from its first row."""
    first = value[0] if value else None
    return len(first) if isinstance(first, list) else 1


_DIM_WORDS = {0: "a number", 1: "a list of numbers", 2: "a matrix (a list of rows)",
              3: "a list of matrices", 4: "a 4-D nested list"}  # fmt: skip


def _numbers(value: Any, neg_inf: bool) -> Any:
    if isinstance(value, list):
        return [_numbers(v, neg_inf) for v in value]
    if isinstance(value, str):
        return -math.inf
    return value


def _walk(
    value: Any, key: str, origin: str, path: tuple[int, ...], flags: bool, neg_inf: bool
) -> int:
    """Check a nested list is rectangular and numeric; return its depth."""
    if isinstance(value, list):
        if not value:
            where = _where(key, origin, path, len(path) + 1) if path else f"{origin}: {key}"
            raise InputError(f"{where} is empty")
        depths = [_walk(v, key, origin, (*path, i), flags, neg_inf) for i, v in enumerate(value)]
        if len(set(depths)) > 1:
            raise InputError(
                f"{origin}: {key} mixes numbers and lists at {'/'.join(str(i + 1) for i in path) or 'the top level'}"
            )
        if depths[0] >= 1:
            lens = [len(v) for v in value]
            for i, n in enumerate(lens):
                if n != lens[0]:
                    depth = len(path) + 1 + depths[0]
                    row = _where(key, origin, (*path, i), depth)
                    what = ("value" if n == 1 else "values") if depths[0] == 1 else "entries"
                    first = _pos((*path, 0), depth)
                    raise InputError(f"{row} has {n} {what} but {first} has {lens[0]}")
        return depths[0] + 1
    ok = isinstance(value, (int, float)) and (flags or not isinstance(value, bool))
    if isinstance(value, bool) and flags:
        return 0
    if ok:
        if math.isnan(value) or (math.isinf(value) and not (neg_inf and value < 0)):
            raise InputError(
                f"{_cell(key, origin, path)} is {_bad_cell(value)}: qkv needs finite numbers"
            )
        return 0
    if neg_inf and isinstance(value, str) and value.strip().lower() in NEG_INF_WORDS:
        return 0
    raise InputError(f"{_cell(key, origin, path)}: {_bad_cell(value)} is not a number")


def _cell(key: str, origin: str, path: tuple[int, ...]) -> str:
    return _where(key, origin, path, len(path))
