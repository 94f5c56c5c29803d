"""Values typed as options: ``--mask``, ``--valid-lens``, ``--tokens``, ``--sinks`` ….

>>> parse_tokens("the,cat,sat")
['the', 'cat', 'sat']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InputError, OptionError, did_you_mean, one_line
from ..i18n import _
from ..options import MASK_KINDS

if TYPE_CHECKING:
    import numpy as np


#: Full-width forms (U+FF01…U+FF5E) and the ideographic space, as a Chinese keyboard types them.
FULL_WIDTH = "[\uff01-\uff5e\u3000]"
#: Each of them → its ASCII form (what NFKC makes of it): ０-９ ， ［］ － ． and the space.
ASCII = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)} | {0x3000: " "}
#: In a cell reference, also the ideographic comma 、 and the brackets 【】 (a Chinese keyboard's [ ]).
CELL_MARKS = ASCII | {ord("、"): ",", ord("【"): "[", ord("】"): "]"}


def ascii_forms(text: str, cell: bool = False) -> str:
    """Full-width digits, signs, points, commas and brackets as their ASCII forms (``cell``: 、【】 too).

    For numbers, keys and cell references: a Chinese keyboard's ``－１２．５`` is ``-12.5``.
    Labels are never passed here.

    >>> ascii_forms("－１２．５，［３］（４）"), ascii_forms("1.5")
    ('-12.5,[3](4)', '1.5')
    >>> ascii_forms("权重【１、２】", cell=True)
    '权重[1,2]'
    """
    return text if text.isascii() else text.translate(CELL_MARKS if cell else ASCII)


def ascii_outside_strings(text: str) -> str:
    """JSON typed on a Chinese keyboard (``［［１，２］］``) as JSON: `ascii_forms` outside its strings.

    What is inside quotes (token labels, keys) is kept as written.

    >>> ascii_outside_strings('{"tokens": ["我，你"], "X": ［［１，－２．５］］}')
    '{"tokens": ["我，你"], "X": [[1,-2.5]]}'
    """
    import re

    if not re.search(FULL_WIDTH, text):
        return text
    pattern = '"(?:[^"\\\\]|\\\\.)*"|' + FULL_WIDTH + "+"
    return re.sub(
        pattern, lambda m: m.group() if m.group()[0] == '"' else ascii_forms(m.group()), text
    )


def mask_option(text: str) -> tuple[str | None, str | None]:
    """Split a ``--mask`` value into a mask kind or a CSV path.

    >>> mask_option("causal")
    ('causal', None)
    """
    import os

    if text in MASK_KINDS:
        return text, None
    if text == "-" or os.path.exists(text):
        return None, text
    hint = did_you_mean(text, MASK_KINDS) or " (no such file)"
    raise OptionError(
        _("--mask must be {join} or a CSV file of 0/1, not {text!r}{hint}").format(
            join=", ".join(MASK_KINDS), text=text, hint=hint
        )
    )


def file_or_numbers(text: str) -> tuple[str | None, str | None]:
    """A vector option's value (``--sinks``, ``--q-norm``, ``--position-ids``): a file or numbers.

    An existing file (or ``-``, stdin) is read as CSV or .npy; anything else
    is numbers typed inline, such as ``0.5,-1``.

    >>> file_or_numbers("0.5,-1")
    (None, '0.5,-1')
    """
    import os

    if text == "-" or os.path.isfile(text):
        return text, None
    return None, text


def parse_lens(text: str, option: str = "--valid-lens") -> np.ndarray:
    """Whole numbers from an option: ``"2,3"`` is one per item, ``"1,2;2,3"`` a matrix.

    >>> parse_lens("2,3").tolist(), parse_lens("1,2; 2,2").tolist()
    ([2.0, 3.0], [[1.0, 2.0], [2.0, 2.0]])
    """
    import numpy as np

    rows = []
    for part in ascii_forms(text).split(";"):
        row = []
        for cell in part.replace(" ", ",").split(","):
            if not cell:
                continue
            try:
                row.append(float(cell))
            except ValueError:
                raise OptionError(
                    _("{option}: {cell!r} is not a number").format(option=option, cell=cell)
                ) from None
        rows.append(row)
    if not rows[0] or any(len(r) != len(rows[0]) for r in rows):
        raise OptionError(
            _("{option} must be numbers such as 2,3 (or rows 1,2;2,3), not {text!r}").format(
                option=option, text=text
            )
        )
    return np.array(rows[0] if len(rows) == 1 else rows, dtype=np.float64)


def parse_tokens(text: str, option: str = "--tokens") -> list[str]:
    """Token labels from an option: comma-separated, or separated by spaces.

    >>> parse_tokens("the,cat,sat"), parse_tokens("the cat sat")
    (['the', 'cat', 'sat'], ['the', 'cat', 'sat'])
    """
    comma = "," if "," in text else "，" if "，" in text else None  # a Chinese comma separates too
    words = [w.strip() for w in (text.split(comma) if comma else text.split())]
    if not words or not all(words):
        raise OptionError(
            _("{option} must be labels such as a,b,c, not {text!r}").format(
                option=option, text=text
            )
        )
    return check_labels(words, option, OptionError)


def check_labels(labels: list[str], where: str, error: type[Exception] = InputError) -> list[str]:
    """``labels`` if each is one line of text; else an error naming the first that is not.

    A label is printed in tables and JSON: a control character, a line break
    or a lone surrogate (``"\\ud800"`` in JSON, a byte that is not UTF-8)
    would break the line or the encoding.

    >>> check_labels(["a", "b\\tc"], "f.json: tokens")
    Traceback (most recent call last):
    ...
    qkvcli.errors.InputError: f.json: tokens: label 2 ('b\\tc') holds a control character: a label must be printable text on one line
    """
    for i, label in enumerate(labels, 1):
        if one_line(label) != label:
            bad = next(c for c in label if one_line(c) != c)
            what = (
                _("a lone surrogate") if 0xD800 <= ord(bad) <= 0xDFFF else _("a control character")
            )
            raise error(
                _(
                    "{where}: label {i} ('{label}') holds {what}: a label must be printable text on one line"
                ).format(where=where, i=i, label=one_line(label), what=what)
            )
    return labels
