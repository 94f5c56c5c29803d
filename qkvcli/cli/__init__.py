"""The ``qkv`` command line: `app` with its commands, and `main`, the script's entry point.

The app and its error mapping are in `app`; each command parses its
options, calls one core function and renders (`compute`, `homework`).
"""

from __future__ import annotations

from .app import app
from .compute import compute
from .homework import check, explain, new
from .model import model

for command in (compute, check, explain, new, model):
    app.command()(command)


def main() -> None:
    """Entry point of the ``qkv`` script."""
    app()


__all__ = ["app", "main"]
