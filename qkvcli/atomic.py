"""Files written whole or not at all: a temporary file beside the target, then a rename.

A failure (full disk, read-only directory, Ctrl-C, SIGTERM, SIGHUP) never
leaves a partial file and never clobbers the previous one. A symlink is
written through (its target is replaced); a FIFO or a device (``/dev/stdout``,
``/dev/null``) is written in place, since renaming over it would replace the
device itself.

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
import stat
from collections.abc import Iterator
from typing import IO, Any

from .errors import OutputError
from .i18n import _
from .load.files import display


def target(path: str, option: str) -> tuple[str, bool]:
    """Where writing ``path`` lands, and whether it is replaced atomically (a regular file).

    A symlink resolves to its target (made if missing); a FIFO, a device or a
    name under ``/proc`` (``/dev/stdout``) is written in place.

    >>> target("/dev/null", "-o")
    ('/dev/null', False)
    """
    shown = display(path)
    if not path or path.endswith(os.sep):
        raise OutputError(
            _("{option} {path!r}: needs a file name").format(option=option, path=path)
        )
    linked = os.path.islink(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:  # new, or a dangling symlink: made where it points
        return (os.path.realpath(path) if linked else path), True
    except OSError as e:
        raise OutputError(
            _("{option} {shown}: cannot write: {v}").format(
                option=option, shown=shown, v=e.strerror or e
            )
        ) from None
    if stat.S_ISDIR(mode):
        raise OutputError(
            _("{option} {path!r}: needs a file name").format(option=option, path=path)
        )
    if not stat.S_ISREG(mode) or _through_proc(path):
        return path, False  # a FIFO, a device, or a stream of this process (/dev/stdout)
    return (os.path.realpath(path) if linked else path), True


def _through_proc(path: str) -> bool:
    """True when ``path`` or a link on the way to its file is under /proc (``/dev/stdout`` → ``/proc/self/fd/1``)."""
    for _hop in range(40):  # the kernel's own limit on links followed
        path = os.path.abspath(path)
        if path.startswith("/proc/"):
            return True
        if not os.path.islink(path):
            return False
        path = os.path.join(os.path.dirname(path), os.readlink(path))
    return False


def check_target(path: str, option: str) -> None:
    """Fail early, before any work, when ``path`` cannot be written.

    >>> check_target("/no/such/dir/r.svg", "--svg")
    Traceback (most recent call last):
    ...
    qkvcli.errors.OutputError: --svg /no/such/dir/r.svg: directory /no/such/dir does not exist
    """
    where, atomic = target(path, option)
    if not atomic:
        return
    folder = os.path.dirname(where) or "."
    shown = display(path)
    if not os.path.isdir(folder):
        raise OutputError(
            _("{option} {shown}: directory {display} does not exist").format(
                option=option, shown=shown, display=display(folder)
            )
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(
            _("{option} {shown}: directory {display} is not writable").format(
                option=option, shown=shown, display=display(folder)
            )
        )


def check_outputs(outputs: dict[str, str | None], inputs: list[str | None]) -> None:
    """Each output writable, none of them an input (same file by inode, through any link), none twice.

    ``outputs`` maps an option (``--output``) to its path; ``-`` among the
    inputs stands for stdin, compared when stdin is a file.
    """
    given = {option: path for option, path in outputs.items() if path is not None}
    for option, path in given.items():
        check_target(path, option)
    seen: dict[object, str] = {}
    for option, path in given.items():
        here = _identity(path)
        for source in inputs:
            if here is not None and source is not None and _identity(source) == here:
                name = (
                    _("the file read on stdin")
                    if source == "-"
                    else _("the input file {path}").format(path=display(source))
                )
                raise OutputError(
                    _(
                        "{option} {display} is {name}: qkv never writes over its input; choose another file"
                    ).format(option=option, display=display(path), name=name)
                )
        same = here or os.path.realpath(path)  # a file still to be made: by its full name
        if same in seen and _atomic(path):
            raise OutputError(
                _("{v} and {option} name the same file {display}").format(
                    v=seen[same], option=option, display=display(path)
                )
            )
        seen[same] = option


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of an existing file, following links; stdin's when ``path`` is ``-``."""
    import sys

    try:
        if path == "-":
            st = os.fstat(sys.stdin.fileno())
            return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None
        st = os.stat(path)
    except (OSError, ValueError, AttributeError):  # no such file, or stdin is not a real file
        return None
    return st.st_dev, st.st_ino


def _atomic(path: str) -> bool:
    with contextlib.suppress(OSError):
        return stat.S_ISREG(os.stat(path).st_mode)
    return True


@contextlib.contextmanager
def atomic_file(path: str, option: str, binary: bool = False) -> Iterator[IO[Any]]:
    """A file to write ``path`` through; it replaces ``path`` only when the block succeeds.

    A FIFO or a device is written in place (it has no old contents to keep).
    """
    check_target(path, option)
    where, atomic = target(path, option)
    mode = "wb" if binary else "w"
    text = {} if binary else {"encoding": "utf-8"}
    if not atomic:
        try:  # appending: a device ignores it, and /dev/stdout keeps what the shell's >> meant
            with open(where, mode.replace("w", "a"), **text) as f:
                yield f
        except OSError as e:
            raise OutputError(
                _("{option} {display}: cannot write: {v}").format(
                    option=option, display=display(path), v=e.strerror or e
                )
            ) from None
        return
    import tempfile

    folder = os.path.dirname(where) or "."
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".qkv-", suffix=".tmp", dir=folder)
        with os.fdopen(fd, mode, **text) as f:
            with writeback(fd):
                yield f
            f.flush()
            os.fsync(f.fileno())  # little is left: `writeback` sent most of it on the way
        with signals_held():  # a signal now waits until the new file is in place
            _copy_mode(where, tmp)
            os.replace(tmp, where)
            tmp = None
    except OSError as e:
        raise OutputError(
            _("{option} {display}: cannot write: {v}").format(
                option=option, display=display(path), v=e.strerror or e
            )
        ) from None
    finally:
        if tmp is not None:
            with signals_held(), contextlib.suppress(OSError):
                os.unlink(tmp)


#: Bytes a file grows by before `writeback` sends them to the disk (64 MiB).
WRITEBACK = 2**26


@contextlib.contextmanager
def writeback(fd: int, every: float = 0.05) -> Iterator[None]:
    """While the block writes the file ``fd``, a thread sends what was written to the disk.

    A big file (an n×n stage) is then mostly on disk when the block ends, so
    the fsync that makes it safe waits for the last part only, not for all of
    it after the work. The thread looks every ``every`` seconds and syncs when
    the file has grown by `WRITEBACK` bytes; a small file is never synced twice.
    """
    import threading

    if not hasattr(os, "fdatasync"):  # macOS, Windows: the final fsync does it all
        yield
        return
    done = threading.Event()

    def sync() -> None:
        synced = 0
        while not done.wait(every):
            with contextlib.suppress(OSError):  # the writer meets the same error, and reports it
                size = os.fstat(fd).st_size
                if size - synced >= WRITEBACK:
                    os.fdatasync(fd)
                    synced = size

    thread = threading.Thread(target=sync, name="qkv-writeback", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def write_atomic(path: str, text: str, option: str) -> None:
    """Write ``text`` to ``path`` whole or not at all; errors name the option and file."""
    with atomic_file(path, option) as f:
        f.write(text)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP wait while the block runs (a rename, a clean-up), then arrive."""
    import signal

    held = {signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _copy_mode(path: str, tmp: str) -> None:
    """Give the new file the old one's permissions, or the usual ones for a new file."""
    if os.path.exists(path):
        os.chmod(tmp, os.stat(path).st_mode & 0o777)
    else:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
