"""The ``qkv`` command line: `app` with its commands, and `main`, the script's entry point.

The app and its error mapping are in `app`; each command parses its
options, calls one core function and renders (`compute`, `homework`).
"""

from __future__ import annotations

import gc

_collecting = gc.isenabled()
gc.disable()  # start-up: no cyclic collections while typer and the commands load (see `main`)

from ..i18n import N_  # noqa: E402
from .app import QkvCommand, app  # noqa: E402
from .compute import compute  # noqa: E402
from .homework import check, explain, new  # noqa: E402
from .model import model  # noqa: E402

#: Each command with the one line a bare ``qkv`` and ``qkv -h`` show for it.
COMMANDS = (
    (compute, N_("Compute attention and show every stage as tables, pictures or data.")),
    (check, N_("Mark a hand-done answer cell by cell and name the mistake.")),
    (explain, N_("Write out the arithmetic behind one cell, with the actual numbers.")),
    (new, N_("Write a practice problem with friendly numbers, and its answer key.")),
    (model, N_("Run a pretrained model on a sentence; show one layer's attention.")),
)
for command, line in COMMANDS:
    app.command(cls=QkvCommand, short_help=line)(command)

gc.freeze()  # what the imports made lives as long as the process: later collections skip it
if _collecting:
    gc.enable()


def main() -> None:
    """Entry point of the ``qkv`` script.

    For start-up time, typer builds only the command named, and reads its
    signature once: the annotations (strings, by ``from __future__ import
    annotations``) are evaluated here, once, instead of four times by typer.
    The run ends with `leave`: everything it printed or wrote is out, and the
    interpreter's teardown (a third of ``import numpy``'s time) is skipped.
    """
    import copy
    import inspect
    import sys

    first = next((a for a in sys.argv[1:] if a != "--debug"), None)
    named = [c for c in app.registered_commands if c.callback and c.callback.__name__ == first]
    try:
        if not named:
            app()
            return
        one = copy.copy(app)
        one.registered_commands = named
        for f in (named[0].callback, app.registered_callback and app.registered_callback.callback):
            if f is not None:
                f.__annotations__ = inspect.get_annotations(f, eval_str=True)
        one()
    except SystemExit as e:
        leave(e.code)
    leave(0)


def leave(code: object) -> None:
    """Exit with ``code`` once stdout and stderr are flushed, without the interpreter's teardown.

    Every file qkv writes is closed before its command returns (the atomic
    writer renames it whole), so only the two streams are left to flush; a
    reader gone from the pipe ends the run quietly with 141, as elsewhere.
    """
    import contextlib
    import os
    import sys

    from ..errors import EXIT_BROKEN_PIPE

    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # sys.exit("text"): as Python prints it
        code = 1
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = EXIT_BROKEN_PIPE
    except (OSError, ValueError):
        pass
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(code or 0)


__all__ = ["app", "main"]
