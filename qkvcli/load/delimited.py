"""One matrix from CSV or TSV text: delimiter sniffed, header row and label column found.

>>> a, labels = parse_csv("q;k\\n1,5;2\\n3;4\\n", "m.csv")
>>> a.tolist(), labels
([[1.5, 2.0], [3.0, 4.0]], None)
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import InputError, counted
from ..i18n import _
from ..notes import note
from .files import display, read_text
from .nested import NEG_INF_WORDS
from .values import ascii_forms, check_labels

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
        raise InputError(
            _("{origin}: holds no numbers ({name} is empty)").format(origin=origin, name=name)
        )
    first = lines[0][1]
    delim = next((d for d in ("\t", ";", ",") if d in first), None)
    if delim is None:  # a Chinese keyboard's semicolon or comma: ；，
        delim = next((d for d, wide in ((";", "；"), (",", "，")) if wide in first), None)
    wide = {";": "；", ",": "，"}.get(delim or "")
    import csv

    rows: list[tuple[int, list[str]]] = []
    for lineno, line in lines:
        if delim is None:
            cells = line.split()
        else:
            if wide:
                line = line.replace(wide, delim)
            cells = next(csv.reader(io.StringIO(line), delimiter=delim))
        rows.append((lineno, [c.strip() for c in cells]))
    decimal_comma = delim in ("\t", ";")
    neg_inf = name == "attn_bias"

    def value(cell: str) -> Any:
        cell = ascii_forms(cell)  # full-width digits, signs and points (labels stay as written)
        if read is None:
            return _float(cell, decimal_comma, neg_inf)
        return read(cell.replace(",", ".") if decimal_comma else cell)

    def number(cell: str) -> bool:
        try:
            value(cell)
        except ValueError:
            return False
        return True

    header, labelled = _header(rows, number, origin)
    if header:
        rows = rows[1:]
    labels = check_labels([r[0] for _, r in rows], f"{origin}: first column") if labelled else None
    if labelled:
        rows = [(ln, r[1:]) for ln, r in rows]
    mixed = not header and _mixed(rows[0][1], number)
    width = len(rows[0][1])
    values = []
    for lineno, cells in rows:
        if len(cells) != width:
            count = counted(len(cells), "value", "values")
            raise InputError(
                _("{origin}: line {lineno} has {count} but line {v} has {width}").format(
                    origin=origin, lineno=lineno, count=count, v=rows[0][0], width=width
                )
            )
        row = []
        for col, cell in enumerate(cells, 1 + bool(labelled)):
            try:
                v = value(cell)
            except ValueError:
                shown = cell if len(cell) <= 40 else cell[:37] + "…"
                hint = (
                    _(" (a header row holds labels only)") if mixed and lineno == rows[0][0] else ""
                )
                raise InputError(
                    _(
                        "{origin}: line {lineno}, column {col}: {shown!r} is not a number{hint}"
                    ).format(origin=origin, lineno=lineno, col=col, shown=shown, hint=hint)
                ) from None
            if read is None and not math.isfinite(v) and not (neg_inf and v == -math.inf):
                raise InputError(
                    _(
                        "{origin}: line {lineno}, column {col} is {cell!r}: qkv needs finite numbers"
                    ).format(origin=origin, lineno=lineno, col=col, cell=cell)
                )
            row.append(v)
        values.append(row)
    if read is not None:
        out = np.empty((len(values), width), dtype=object)
        out[:] = values
        return out, labels
    return np.array(values, dtype=np.float64), labels


def _header(
    rows: list[tuple[int, list[str]]], number: Callable[[str], bool], origin: str
) -> tuple[bool, bool]:
    """Whether the first row is a header, and whether the first column holds row labels.

    A header is a row of labels: no cell in it is a number (``token,q1,q2``).
    A row with numbers and labels mixed (``1,2x,3``) is data with a typo, so
    its bad cell is named. A row of column numbers ``0,1,2`` (``1,2,3``), as
    pandas writes for unnamed columns, is a header when the rows below hold
    fractions or its first cell is empty (pandas' index column); above whole
    numbers it is read as data. A note says which was chosen (none for
    ``1,2,3`` read as data: pandas never writes that header).
    The first column holds row labels when no row starts with a number, or
    when the header's first cell is empty (as pandas and R write).
    """
    first_line, first = rows[0]
    body = rows[1:]

    def labelled(r: list[str]) -> bool:
        return len(r) > 1 and not number(r[0])

    if not body:
        return False, labelled(first)
    by_rows = all(labelled(r) for _, r in body)
    corner = len(first) > 1 and first[0] == ""
    if any(first) and not any(number(c) for c in first):
        return True, by_rows or corner
    if corner and _column_numbers(first[1:]):
        if not by_rows:
            note(
                _(
                    "{origin}: the first column is read as row labels (the header's first cell is empty, as pandas writes)"
                ).format(origin=origin)
            )
        return True, True
    if by_rows or corner or not _column_numbers(first):
        return False, by_rows and labelled(first)
    shown = ",".join(first)
    shown = shown if len(shown) <= 30 else shown[:29] + "…"
    if not all(_whole(c) for _, r in body for c in r):
        note(
            _(
                "{origin}: line {first_line} ({shown}) is read as a header of column numbers, as pandas writes; to read it as data, add a row of labels above it"
            ).format(origin=origin, first_line=first_line, shown=shown)
        )
        return True, False
    if first[0] == "0":  # pandas' names for unnamed columns; 1,2,3 above whole numbers is data
        note(
            _(
                "{origin}: line {first_line} ({shown}) is read as data; if it is a header of column numbers (as pandas writes), delete that line"
            ).format(origin=origin, first_line=first_line, shown=shown)
        )
    return False, False


def _column_numbers(cells: list[str]) -> bool:
    """``0,1,2`` or ``1,2,3``: the names pandas gives unnamed columns (at least two)."""
    start = 0 if cells[:1] == ["0"] else 1
    return len(cells) >= 2 and cells == [str(i) for i in range(start, start + len(cells))]


def _whole(cell: str) -> bool:
    try:
        return float(cell.replace(",", ".")).is_integer()
    except ValueError:
        return False


def _mixed(cells: list[str], number: Callable[[str], bool]) -> bool:
    """A row with numbers and text: data with a typo, not a header."""
    return any(number(c) for c in cells) and not all(number(c) for c in cells)


def _float(cell: str, decimal_comma: bool, neg_inf: bool = False) -> float:
    """A CSV cell as a number; ``-inf`` / ``−∞`` only where ``neg_inf`` (attn_bias)."""
    if neg_inf and cell.strip().lower() in NEG_INF_WORDS:
        return -math.inf
    return float(cell.replace(",", ".") if decimal_comma else cell)
