"""The exceptions qkv raises for anything a user typed or fed in.

Only the CLI turns them into ``qkv: error: …`` on stderr and an exit code.

>>> str(ShapeError("W_Q is 3×4 but X has 4 columns"))
'W_Q is 3×4 but X has 4 columns'
"""

from __future__ import annotations

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


def shape_str(shape: tuple[int, ...]) -> str:
    """Write a shape the way people do.

    >>> shape_str((3, 4))
    '3×4'
    """
    return "×".join(str(n) for n in shape)
