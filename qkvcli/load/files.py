"""Reading the user's files and stdin: size limits, devices refused, errors naming the file.

>>> display("-"), display("a.json")
('<stdin>', 'a.json')
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any

from .. import i18n
from ..errors import InputError, one_line, placed
from ..i18n import N_, _

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
            raise InputError(_("{name}: is a directory, not a file").format(name=name))
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise InputError(_("{name}: is a device or socket, not a file").format(name=name))
        if limit is not None and stat.S_ISREG(mode) and os.stat(path).st_size > limit:
            raise InputError(
                _("{name}: is larger than {v} MiB; give big matrices as .npy").format(
                    name=name, v=limit // 2**20
                )
            )
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError(_("{name}: no such file").format(name=name)) from None
    except PermissionError:
        raise InputError(_("{name}: permission denied").format(name=name)) from None
    except OSError as e:
        raise InputError(
            _("{name}: cannot read: {v}").format(name=name, v=e.strerror or e)
        ) from None


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
        raise InputError(
            _("{name}: cannot read: {v}").format(name=name, v=e.strerror or e)
        ) from None
    if len(data) > limit:
        raise InputError(
            _("{name}: is larger than {v} MiB; give big matrices as .npy").format(
                name=name, v=limit // 2**20
            )
        )
    return data


def decode_json(text: str, origin: str, **hooks: Any) -> Any:
    """``json.loads`` with its errors as one line naming the place (``hooks`` go to json).

    A document nested deeper than `MAX_DEPTH` is refused here, so no reader
    after this one can run out of stack, whatever it walks.

    >>> decode_json("[" * 40 + "]" * 40, "f.json")
    Traceback (most recent call last):
    ...
    qkvcli.errors.InputError: f.json: JSON nested too deeply (qkv reads at most 32 levels)
    """
    try:
        doc = json.loads(text, **hooks)
    except json.JSONDecodeError as e:
        raise InputError(
            _("{origin}: invalid JSON at line {lineno}, column {colno}: {msg}").format(
                origin=origin, lineno=e.lineno, colno=e.colno, msg=json_message(e.msg)
            )
        ) from None
    except RecursionError:
        raise InputError(placed(origin, i18n._(_TOO_DEEP).format(depth=MAX_DEPTH))) from None
    except ValueError:  # an integer of more digits than Python converts (4,300)
        raise InputError(placed(origin, _long_number(text))) from None
    if _depth(doc) > MAX_DEPTH:
        raise InputError(placed(origin, i18n._(_TOO_DEEP).format(depth=MAX_DEPTH)))
    return doc


def json_message(msg: str) -> str:
    """What Python's JSON decoder said, in the language spoken (as it is when unknown).

    >>> json_message("Expecting ',' delimiter")
    "Expecting ',' delimiter"
    """
    if i18n.language() == "en":
        return msg
    return i18n._(_JSON_ERRORS[msg]) if msg in _JSON_ERRORS else msg


#: The decoder's messages (json.decoder, json.scanner; 3.13 adds the trailing commas).
_JSON_ERRORS = {
    "Expecting value": N_("Expecting value"),
    "Expecting property name enclosed in double quotes": N_(
        "Expecting property name enclosed in double quotes"
    ),
    "Expecting ':' delimiter": N_("Expecting ':' delimiter"),
    "Expecting ',' delimiter": N_("Expecting ',' delimiter"),
    "Extra data": N_("Extra data"),
    "Unterminated string starting at": N_("Unterminated string starting at"),
    "Invalid control character at": N_("Invalid control character at"),
    "Invalid \\escape": N_("Invalid \\escape"),
    "Invalid \\uXXXX escape": N_("Invalid \\uXXXX escape"),
    "Illegal trailing comma before end of object": N_(
        "Illegal trailing comma before end of object"
    ),
    "Illegal trailing comma before end of array": N_("Illegal trailing comma before end of array"),
}

MAX_DEPTH = 32  # lists and objects inside each other; a problem needs 5
_TOO_DEEP = N_("JSON nested too deeply (qkv reads at most {depth} levels)")


def _depth(doc: Any) -> int:
    """How deeply lists and objects nest in ``doc``, found without recursion (stops past `MAX_DEPTH`)."""
    deepest = 0
    todo = [(doc, 1)] if isinstance(doc, (list, dict)) else []
    while todo:
        value, depth = todo.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        for v in value.values() if isinstance(value, dict) else value:
            if type(v) is list or type(v) is dict:
                todo.append((v, depth + 1))
    return deepest


def _long_number(text: str) -> str:
    """Where a whole number too long to read stands: ``number at line 1, column 9 has 5000 digits…``."""
    import re

    m = re.search(r"\d{4301,}", text)
    if m is None:
        return _("a number too long to read")
    line = text.count("\n", 0, m.start()) + 1
    column = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
    return _(
        "the number at line {line}, column {column} has {digits} digits: far too large for a float"
    ).format(line=line, column=column, digits=len(m.group()))


def read_text(path: str) -> str:
    """The text of ``path`` (``-`` = stdin), as UTF-8 with or without a BOM."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(
            _("{display}: not UTF-8 text (byte 0x{v:02x} at offset {start})").format(
                display=display(path), v=data[e.start], start=e.start
            )
        ) from None


def display(path: str) -> str:
    """How a path is named in messages: one line, whatever the name holds.

    A name with a line break, a control character or a byte that is not
    UTF-8 is quoted, with those characters escaped.

    >>> display("-"), display("a b.json"), display("two\\nlines.json")
    ('<stdin>', 'a b.json', "'two\\\\nlines.json'")
    """
    if path == "-":
        return "<stdin>"
    shown = one_line(path)
    return path if shown == path else f"'{shown}'"
