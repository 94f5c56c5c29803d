"""Reading the user's files and stdin: size limits, devices refused, errors naming the file.

>>> display("-"), display("a.json")
('<stdin>', 'a.json')
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any

from ..errors import InputError

MAX_TEXT_BYTES = 512 * 2**20  # a text input larger than this is refused (use .npy)


def open_input(path: str, limit: int | None = None) -> IO[bytes]:
    """``path`` opened for reading bytes; directories, devices and files over ``limit`` refused.

    Every failure is an `InputError` naming the file.
    """
    import stat

    name = display(path)
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise InputError(f"{name}: is a directory, not a file")
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise InputError(f"{name}: is a device or socket, not a file")
        if limit is not None and stat.S_ISREG(mode) and os.stat(path).st_size > limit:
            raise InputError(
                f"{name}: is larger than {limit // 2**20} MiB; give big matrices as .npy"
            )
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except PermissionError:
        raise InputError(f"{name}: permission denied") from None
    except OSError as e:
        raise InputError(f"{name}: cannot read: {e.strerror or e}") from None


def read_bytes(path: str, limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of ``path`` (``-`` = stdin), refusing devices and inputs over ``limit``.

    The size is checked before anything large is read.
    """
    name = display(path)
    try:
        if path == "-":
            stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
            if stream is None:
                return sys.stdin.read().encode("utf-8")
            data = stream.read(limit + 1)
        else:
            with open_input(path, limit) as fh:
                data = fh.read(limit + 1)
    except OSError as e:
        raise InputError(f"{name}: cannot read: {e.strerror or e}") from None
    if len(data) > limit:
        raise InputError(f"{name}: is larger than {limit // 2**20} MiB; give big matrices as .npy")
    return data


def decode_json(text: str, origin: str, **hooks: Any) -> Any:
    """``json.loads`` with its errors as one line naming the place (``hooks`` go to json)."""
    try:
        return json.loads(text, **hooks)
    except json.JSONDecodeError as e:
        raise InputError(
            f"{origin}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None
    except RecursionError:
        raise InputError(f"{origin}: JSON nested too deeply") from None


def read_text(path: str) -> str:
    """The text of ``path`` (``-`` = stdin), as UTF-8 with or without a BOM."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{display(path)}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from None


def display(path: str) -> str:
    """How a path is named in messages."""
    return "<stdin>" if path == "-" else path
