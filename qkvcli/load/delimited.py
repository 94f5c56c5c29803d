"""One matrix from CSV or TSV text: delimiter sniffed, header row and label column found.

>>> a, labels = parse_csv("q;k\\n1,5;2\\n3;4\\n", "m.csv")
>>> a.tolist(), labels
([[1.5, 2.0], [3.0, 4.0]], None)
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .files import display, read_text
from .nested import NEG_INF_WORDS

if TYPE_CHECKING:
    import numpy as np


def load_csv(path: str, name: str) -> tuple[np.ndarray, list[str] | None]:
    """One matrix from a CSV file (``-`` = stdin), with row labels if its first column has them.

    The delimiter (comma, semicolon, tab or spaces) is sniffed; a header row is
    skipped; with ``;`` or tab as delimiter a decimal comma is accepted.
    """
    return parse_csv(read_text(path), display(path), name)


def parse_csv(
    text: str, origin: str, name: str = "matrix", read: Callable[[str], Any] | None = None
) -> tuple[np.ndarray, list[str] | None]:
    """Parse CSV text; see `load_csv`. An ``attn_bias`` may hold ``-inf`` (blocked).

    ``read`` turns one cell's text (a decimal comma already a point) into its
    value, raising ValueError for what is not one; with it the result is an
    object array of what it returns (``check`` keeps each answer as written).

    >>> a, labels = parse_csv("q;k\\n1,5;2\\n3;4\\n", "m.csv")
    >>> a.tolist(), labels
    ([[1.5, 2.0], [3.0, 4.0]], None)
    """
    import numpy as np

    lines = [
        (i, ln)
        for i, ln in enumerate(text.splitlines(), 1)
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    if not lines:
        raise InputError(f"{origin}: holds no numbers ({name} is empty)")
    first = lines[0][1]
    delim = next((d for d in ("\t", ";", ",") if d in first), None)
    rows: list[tuple[int, list[str]]] = []
    for lineno, line in lines:
        if delim is None:
            cells = line.split()
        else:
            cells = next(csv.reader(io.StringIO(line), delimiter=delim))
        rows.append((lineno, [c.strip() for c in cells]))
    decimal_comma = delim in ("\t", ";")
    neg_inf = name == "attn_bias"

    def value(cell: str) -> Any:
        if read is None:
            return _float(cell, decimal_comma, neg_inf)
        return read(cell.replace(",", ".") if decimal_comma else cell)

    def is_number(cell: str) -> bool:
        try:
            value(cell)
        except ValueError:
            return False
        return True

    def numeric(cells: list[str]) -> bool:
        return all(is_number(c) for c in cells)

    # A first column of labels (tokens) when no row starts with a number.
    labelled = all(len(r) > 1 and not is_number(r[0]) for _, r in rows)
    if not numeric(rows[0][1][1 if labelled else 0 :]) and len(rows) > 1:
        rows = rows[1:]  # a header row
    labels = [r[0] for _, r in rows] if labelled else None
    if labelled:
        rows = [(ln, r[1:]) for ln, r in rows]
    width = len(rows[0][1])
    values = []
    for lineno, cells in rows:
        if len(cells) != width:
            count = f"{len(cells)} value" + ("" if len(cells) == 1 else "s")
            raise InputError(
                f"{origin}: line {lineno} has {count} but line {rows[0][0]} has {width}"
            )
        row = []
        for col, cell in enumerate(cells, 1):
            try:
                v = value(cell)
            except ValueError:
                shown = cell if len(cell) <= 40 else cell[:37] + "…"
                raise InputError(
                    f"{origin}: line {lineno}, column {col}: {shown!r} is not a number"
                ) from None
            if read is None and not math.isfinite(v) and not (neg_inf and v == -math.inf):
                raise InputError(
                    f"{origin}: line {lineno}, column {col} is {cell!r}: qkv needs finite numbers"
                )
            row.append(v)
        values.append(row)
    if read is not None:
        out = np.empty((len(values), width), dtype=object)
        out[:] = values
        return out, labels
    return np.array(values, dtype=np.float64), labels


def _float(cell: str, decimal_comma: bool, neg_inf: bool = False) -> float:
    """A CSV cell as a number; ``-inf`` / ``−∞`` only where ``neg_inf`` (attn_bias)."""
    if neg_inf and cell.strip().lower() in NEG_INF_WORDS:
        return -math.inf
    return float(cell.replace(",", ".") if decimal_comma else cell)
