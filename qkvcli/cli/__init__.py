"""The ``qkv`` command line: `app` with its commands, and `main`, the script's entry point.

The app and its error mapping are in `app`; each command parses its
options, calls one core function and renders (`compute`, `homework`).
"""

from __future__ import annotations

from ..i18n import N_
from .app import QkvCommand, app
from .compute import compute
from .homework import check, explain, new
from .model import model

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


def main() -> None:
    """Entry point of the ``qkv`` script.

    For start-up time, typer builds only the command named, and reads its
    signature once: the annotations (strings, by ``from __future__ import
    annotations``) are evaluated here, once, instead of four times by typer.
    """
    import copy
    import inspect
    import sys

    first = next((a for a in sys.argv[1:] if a != "--debug"), None)
    named = [c for c in app.registered_commands if c.callback and c.callback.__name__ == first]
    if not named:
        app()
        return
    one = copy.copy(app)
    one.registered_commands = named
    for f in (named[0].callback, app.registered_callback and app.registered_callback.callback):
        if f is not None:
            f.__annotations__ = inspect.get_annotations(f, eval_str=True)
    one()


__all__ = ["app", "main"]
