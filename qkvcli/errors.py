"""The exceptions qkv raises for anything a user typed or fed in.

Only the CLI turns them into ``qkv: error: …`` on stderr and an exit code.

>>> str(ShapeError("W_Q is 3×4 but X has 4 columns"))
'W_Q is 3×4 but X has 4 columns'
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70  # a bug in qkv (sysexits EX_SOFTWARE)
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (128 + SIGPIPE)


class QkvError(Exception):
    """A problem with the user's input or options: one line, exit code 2."""

    exit_code = EXIT_USAGE


class InputError(QkvError):
    """A file or value that cannot be read as the matrices qkv needs."""


class ShapeError(QkvError):
    """Matrices whose shapes do not fit together."""


class OptionError(QkvError):
    """An option or setting that is out of range or contradicts another."""


class OutputError(QkvError):
    """Output that cannot be written: a full disk, a read-only directory, a closed stream."""


class ComputeError(QkvError):
    """Input that is well formed but has no defined result (e.g. a fully masked row)."""


def one_line(text: str) -> str:
    """``text`` with line breaks, control characters and lone surrogates escaped, so it prints as one line.

    An undecodable byte of a file name (a surrogate escape) is written as ``\\xNN``.

    >>> one_line("a\\nb\\tc"), one_line("\\udcff.json"), one_line("3×4 −∞")
    ('a\\\\nb\\\\tc', '\\\\xff.json', '3×4 −∞')
    """
    if text.isprintable():
        return text
    import unicodedata

    out = []
    for c in text:
        if c.isprintable() or unicodedata.category(c) not in _UNSAFE:
            out.append(c)
        elif c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif 0xDC80 <= ord(c) <= 0xDCFF:
            out.append(f"\\x{ord(c) - 0xDC00:02x}")  # a byte that is not UTF-8 (surrogateescape)
        else:
            out.append(f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
    return "".join(out)


_UNSAFE = ("Cc", "Cs", "Zl", "Zp")  # control characters, surrogates, line and paragraph breaks
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shape_str(shape: tuple[int, ...]) -> str:
    """Write a shape the way people do.

    >>> shape_str((3, 4))
    '3×4'
    """
    return "×".join(str(n) for n in shape)


def counted(n: int, one: str, many: str) -> str:
    """``n`` with the word in the number it takes.

    >>> counted(1, "label", "labels"), counted(2, "query", "queries")
    ('1 label', '2 queries')
    """
    from . import i18n

    if i18n.language() == "en":
        return f"{n} {one if n == 1 else many}"
    return i18n.ngettext(f"{{n}} {one}", f"{{n}} {many}", n).format(n=n)  # see COUNTED


def placed(where: str, message: Any) -> str:
    """``where: message``, the place a message is about first (a file, a key), in the language spoken.

    >>> placed("f.json", "no such file")
    'f.json: no such file'
    """
    from .i18n import _

    return _("{where}: {message}").format(where=where, message=message)


def closest(typed: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """The choice ``typed`` most likely meant: the same but for case, else difflib's nearest.

    >>> closest("Weights", ["scores", "weights"]), closest("casual", ["causal"]), closest("zzz", ["dot"])
    ('weights', 'causal', None)
    """
    import difflib

    if not isinstance(typed, str) or not choices:
        return None
    lower = {c.lower(): c for c in choices}
    if typed.lower() in lower:
        return lower[typed.lower()]
    near = difflib.get_close_matches(typed.lower(), list(lower), 1)
    return lower[near[0]] if near else None


def did_you_mean(typed: str, choices: list[str] | tuple[str, ...]) -> str:
    """`` (did you mean X?)`` for the choice closest to ``typed`` (see `closest`), or ``""``.

    >>> did_you_mean("weight", ["scores", "weights"]), did_you_mean("zzz", ["dot", "cosine"])
    (' (did you mean weights?)', '')
    """
    from .i18n import _

    near = closest(typed, choices)
    return (
        _(" (did you mean {near}?)").format(near=near) if near is not None and near != typed else ""
    )


#: The words `counted` counts, as the catalogue holds them (``{n} label`` / ``{n} labels``).
COUNTED = (("label", "labels"), ("query", "queries"), ("key", "keys"), ("value", "values"),
           ("column", "columns"), ("row", "rows"), ("head", "heads"), ("matrix", "matrices"),
           ("item", "items"), ("entry", "entries"))  # fmt: skip
