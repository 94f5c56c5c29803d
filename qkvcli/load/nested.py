"""Nested lists of numbers (JSON entries, arrays) → float arrays, with every bad cell placed.

>>> to_array([[1, 2], [3, 4]], "X", "f.json").shape
(2, 2)
"""

from __future__ import annotations

import json
import math
import sys
from typing import TYPE_CHECKING, Any

from .. import i18n
from ..errors import InputError, counted, placed
from ..i18n import N_, _

if TYPE_CHECKING:
    import numpy as np

#: How many dimensions each kind of entry may have.
NDIMS = {"b_Q": (1, 2), "b_K": (1, 2), "b_V": (1, 2), "b_O": (1,), "valid_lens": (0, 1, 2),
         "key_padding_mask": (1, 2), "mask": (2, 3, 4), "attn_bias": (2, 3, 4)}  # fmt: skip
#: How −∞ may be written where it is allowed (a bias, an answer's masked cell).
NEG_INF_WORDS = ("-inf", "-infinity", "−∞", "-∞")


def _where(name: str, origin: str, path: tuple[int, ...], depth: int) -> str:
    """``origin: W_Q row 2, column 3`` from an index path into a ``depth``-D nested list."""
    return placed(origin, f"{name} {position(path, depth)}")


def position(path: tuple[int, ...], depth: int) -> str:
    """``row 2, column 3``: an index path named by the axes of a ``depth``-D list.

    >>> position((1, 2), 2), position((0, 1, 2), 3)
    ('row 2, column 3', 'matrix 1, row 2, column 3')
    """
    words = _AXIS_WORDS.get(depth, ("index",) * depth)[: len(path)]
    return i18n._(", ").join(i18n._(_AXES[w]).format(i=i + 1) for w, i in zip(words, path))


_AXIS_WORDS = {1: ("value",), 2: ("row", "column"), 3: ("matrix", "row", "column"),
               4: ("item", "head", "row", "column")}  # fmt: skip
#: Each axis's place in words: ``row 2`` (第 2 行).
_AXES = {"value": N_("value {i}"), "row": N_("row {i}"), "column": N_("column {i}"),
         "matrix": N_("matrix {i}"), "item": N_("item {i}"), "head": N_("head {i}"),
         "index": N_("index {i}")}  # fmt: skip


def bad_cell(cell: Any) -> str:
    if isinstance(cell, int) and not isinstance(cell, bool) and cell.bit_length() > 10_000:
        return _("a whole number of thousands of digits")  # str() refuses past 4,300 digits
    text = json.dumps(cell) if not isinstance(cell, float) else repr(cell)
    if isinstance(cell, int) and len(text) > 40:
        return _("{start}… ({n} digits)").format(start=text[:12], n=len(text.lstrip("-")))
    return text if len(text) <= 40 else text[:37] + "…"


def to_array(value: Any, key: str, origin: str, canon: str = "X") -> np.ndarray:
    """A nested list of numbers as a float64 array, or an `InputError` saying where it is not.

    >>> to_array([[1, 2], [3, 4]], "X", "f.json").shape
    (2, 2)
    >>> to_array([[[1, 2]], [[3]]], "X", "f.json")
    Traceback (most recent call last):
    ...
    qkvcli.errors.InputError: f.json: X matrix 2, row 1 has 1 value but matrix 1, row 1 has 2
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
        except (ValueError, OverflowError, RecursionError):
            a = None
        ok_kinds = "iuf" + ("b" if flags else "")
        if a is not None and a.dtype.kind in ok_kinds and a.ndim in ndims and a.size:
            a = a.astype(np.float64, copy=False)
            if np.all(np.isfinite(a)) or (neg_inf and not np.any(np.isnan(a) | (a == np.inf))):
                return a
    if given:
        value = value.tolist()  # an array from .npy/.npz: find the bad cell in its lists
    walk = _Walk(key, origin, flags, neg_inf, ndims)
    depth = len(walk.shape(value, ()))
    if depth not in ndims:
        raise walk.dims_error(depth)
    return np.array(_numbers(value, neg_inf), dtype=np.float64)


FAST_CELLS = 50_000  # above this many cells, trust numpy's conversion first


def _width(value: list) -> int:
    """Cells per row of a nested list, guessed from its first row."""
    first = value[0] if value else None
    return len(first) if isinstance(first, list) else 1


_DIM_WORDS = {0: N_("a number"), 1: N_("a list of numbers"), 2: N_("a matrix (a list of rows)"),
              3: N_("a list of matrices"), 4: N_("a 4-D nested list")}  # fmt: skip
#: An axis's word in the plural, as `counted` counts it.
_PLURAL = {"value": "values", "row": "rows", "matrix": "matrices", "head": "heads",
           "item": "items", "entry": "entries"}  # fmt: skip


def _numbers(value: Any, neg_inf: bool) -> Any:
    if isinstance(value, list):
        return [_numbers(v, neg_inf) for v in value]
    if isinstance(value, str):
        return -math.inf
    return value


class _Walk:
    """Checks a nested list is rectangular and numeric, never deeper than the entry may be."""

    def __init__(
        self, key: str, origin: str, flags: bool, neg_inf: bool, ndims: tuple[int, ...]
    ) -> None:
        self.key, self.origin, self.flags, self.neg_inf = key, origin, flags, neg_inf
        self.ndims = ndims

    def dims_error(self, depth: int) -> InputError:
        want = i18n._(" or ").join(i18n._(_DIM_WORDS[d]) for d in self.ndims)
        got = i18n._(_DIM_WORDS[depth]) if depth in _DIM_WORDS else f"{depth}-D"
        return InputError(
            _("{origin}: {key} must be {want}, not {got}").format(
                origin=self.origin, key=self.key, want=want, got=got
            )
        )

    def shape(self, value: Any, path: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of ``value`` (at ``path`` in the whole), or an `InputError` placing the fault."""
        key, origin = self.key, self.origin
        if isinstance(value, list):
            if len(path) >= max(self.ndims):  # deeper than any entry may be: stop before recursing
                raise self.dims_error(len(path) + _depth(value))
            if not value:
                where = _where(key, origin, path, len(path) + 1) if path else placed(origin, key)
                raise InputError(_("{where} is empty").format(where=where))
            shapes = [self.shape(v, (*path, i)) for i, v in enumerate(value)]
            first = shapes[0]
            if len({len(s) for s in shapes}) > 1:
                raise InputError(
                    _("{origin}: {key} mixes numbers and lists at {v}").format(
                        origin=origin,
                        key=key,
                        v="/".join(str(i + 1) for i in path) or _("the top level"),
                    )
                )
            for i, s in enumerate(shapes):
                if s != first:
                    axis = next(a for a in range(len(s)) if s[a] != first[a])
                    depth = len(path) + 1 + len(first)
                    here, there = (*path, i, *(0,) * axis), (*path, 0, *(0,) * axis)
                    n = s[axis]
                    if axis == len(first) - 1:
                        one = "value"
                    else:
                        word = _AXIS_WORDS.get(depth, ())[len(here) : len(here) + 1] or ("entry",)
                        one = word[0]
                    raise InputError(
                        _("{where} has {count} but {position} has {v}").format(
                            where=_where(key, origin, here, depth),
                            count=counted(n, one, _PLURAL[one]),
                            position=position(there, depth),
                            v=first[axis],
                        )
                    )
            return (len(value), *first)
        self.cell(value, path)
        return ()

    def cell(self, value: Any, path: tuple[int, ...]) -> None:
        """A leaf must be a finite number (a flag may be a bool, a bias may be −∞)."""
        if isinstance(value, bool):
            if self.flags:
                return
        elif isinstance(value, int):
            if abs(value) <= FLOAT_MAX:
                return
            raise InputError(
                _("{cell} is {bad_cell}: too large for a float").format(
                    cell=_cell(self.key, self.origin, path), bad_cell=bad_cell(value)
                )
            )
        elif isinstance(value, float):
            if math.isnan(value) or (math.isinf(value) and not (self.neg_inf and value < 0)):
                raise InputError(
                    _("{cell} is {bad_cell}: qkv needs finite numbers").format(
                        cell=_cell(self.key, self.origin, path), bad_cell=bad_cell(value)
                    )
                )
            return
        elif self.neg_inf and isinstance(value, str) and value.strip().lower() in NEG_INF_WORDS:
            return
        raise InputError(
            _("{cell}: {bad_cell} is not a number").format(
                cell=_cell(self.key, self.origin, path), bad_cell=bad_cell(value)
            )
        )


FLOAT_MAX = int(sys.float_info.max)  # a whole number above this has no float (OverflowError)


def _depth(value: Any) -> int:
    """How deep lists go along their first elements, counted without recursion."""
    depth = 0
    while isinstance(value, list):
        depth += 1
        if not value:
            break
        value = value[0]
    return depth


def _cell(key: str, origin: str, path: tuple[int, ...]) -> str:
    return _where(key, origin, path, len(path))
