"""The ``qkv`` app: its commands' group, and the one place every error becomes a line and an exit code.

Every error the user can cause ends here as one line, ``qkv: error: …``, on
stderr with exit code 2. numpy and rich are imported only inside commands,
so ``qkv --version`` and ``qkv --help`` stay fast.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    OutputError,
    QkvError,
)


class QkvGroup(TyperGroup):
    """Maps every exception to one stderr line and an exit code, in one place."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from ..coercion import install

        for command in (self, *self.commands.values()):
            install(command)  # plain option types without pydantic: fast start-up

    def main(self, args: Any = None, prog_name: Any = None, **extra: Any) -> Any:  # type: ignore[override]
        extra.pop("standalone_mode", None)
        argv = list(sys.argv[1:] if args is None else args)
        end = argv.index("--") if "--" in argv else len(argv)
        debug = "--debug" in argv[:end]  # accepted anywhere before --
        argv = [a for a in argv[:end] if a != "--debug"] + argv[end:]
        try:
            rv = super().main(
                args=argv, prog_name=prog_name or "qkv", standalone_mode=False, **extra
            )
        except QkvError as e:
            if debug:
                raise
            _fail(str(e), e.exit_code)
        except (KeyboardInterrupt, typer.Abort):
            _fail("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            _quiet_pipe()
        except Exception as e:
            if hasattr(e, "format_message") and hasattr(e, "exit_code"):  # click usage errors
                cmd = getattr(getattr(e, "ctx", None), "command_path", "qkv")
                _fail(f"{e.format_message()} (see '{cmd} --help')", EXIT_USAGE)
            if debug:
                raise
            _fail(
                f"internal error: {type(e).__name__}: {e} — this is a bug in qkv; "
                "run again with --debug for the traceback and please report it",
                EXIT_INTERNAL,
            )
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: Any) -> Any:
        """Run the command; a closed pipe is caught here, before typer's own handler."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _quiet_pipe()
        except OSError as e:
            if e.filename is not None:
                raise
            raise OutputError(f"cannot write the output: {e.strerror or e}") from None


def _fail(message: str, code: int) -> None:
    print(f"qkv: error: {message}", file=sys.stderr)
    sys.exit(code)


def _quiet_pipe() -> None:
    """The reader went away (``qkv … | head``): stop without a word, exit 141 as SIGPIPE would."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(EXIT_BROKEN_PIPE)


app = typer.Typer(
    cls=QkvGroup,
    name="qkv",
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=True,
)


def _version(value: bool) -> None:
    if value:
        print(f"qkv {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """qkv: see every stage of an attention computation.

    \b
    Example:
      qkv compute samples/worked_example.json --trace

    Exit codes: 0 success, 1 a check found a mismatch, 2 bad usage or input,
    70 an internal error (a bug: please report it). Add --debug anywhere to
    see the traceback of an error.
    """
