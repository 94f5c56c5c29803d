"""Files written whole or not at all: a temporary file beside the target, then a rename.

A failure (full disk, read-only directory, Ctrl-C) never leaves a partial file
and never clobbers the previous one.

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "out.txt")
>>> with atomic_file(path, "--output") as f:
...     _ = f.write("hello")
>>> open(path).read()
'hello'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from .errors import OutputError


def check_target(path: str, option: str) -> None:
    """Fail early, before any work, when ``path`` cannot be written.

    >>> check_target("/no/such/dir/r.svg", "--svg")
    Traceback (most recent call last):
    ...
    qkvcli.errors.OutputError: --svg /no/such/dir/r.svg: directory /no/such/dir does not exist
    """
    folder = os.path.dirname(path) or "."
    if not path or os.path.isdir(path):
        raise OutputError(f"{option} {path!r}: needs a file name")
    if not os.path.isdir(folder):
        raise OutputError(f"{option} {path}: directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: directory {folder} is not writable")


@contextlib.contextmanager
def atomic_file(path: str, option: str, binary: bool = False) -> Iterator[IO[Any]]:
    """A file to write ``path`` through; it replaces ``path`` only when the block succeeds."""
    check_target(path, option)
    folder = os.path.dirname(path) or "."
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".qkv-", suffix=".tmp", dir=folder)
        mode = "wb" if binary else "w"
        with os.fdopen(fd, mode, **({} if binary else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _copy_mode(path, tmp)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise OutputError(f"{option} {path}: cannot write: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_atomic(path: str, text: str, option: str) -> None:
    """Write ``text`` to ``path`` whole or not at all; errors name the option and file."""
    with atomic_file(path, option) as f:
        f.write(text)


def _copy_mode(path: str, tmp: str) -> None:
    """Give the new file the old one's permissions, or the usual ones for a new file."""
    if os.path.exists(path):
        os.chmod(tmp, os.stat(path).st_mode & 0o777)
    else:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
