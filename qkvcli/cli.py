"""The ``qkv`` command line: parse options, call the core, pick a renderer.

Every error the user can cause ends here as one line, ``qkv: error: …``, on
stderr with exit code 2. numpy and rich are imported only inside commands,
so ``qkv --version`` and ``qkv --help`` stay fast.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from . import __version__
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, QkvError


class QkvGroup(TyperGroup):
    """Maps every exception to one stderr line and an exit code, in one place."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from .coercion import install

        for command in (self, *self.commands.values()):
            install(command)  # plain option types without pydantic: fast start-up

    def main(self, args: Any = None, prog_name: Any = None, **extra: Any) -> Any:  # type: ignore[override]
        extra.pop("standalone_mode", None)
        try:
            rv = super().main(
                args=args, prog_name=prog_name or "qkv", standalone_mode=False, **extra
            )
        except QkvError as e:
            _fail(str(e), e.exit_code)
        except (KeyboardInterrupt, typer.Abort):
            _fail("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            _quiet_pipe()
        except Exception as e:
            if hasattr(e, "format_message") and hasattr(e, "exit_code"):  # click usage errors
                cmd = getattr(getattr(e, "ctx", None), "command_path", "qkv")
                _fail(f"{e.format_message()} (see '{cmd} --help')", EXIT_USAGE)
            raise
        sys.exit(rv if isinstance(rv, int) else 0)


def _fail(message: str, code: int) -> None:
    print(f"qkv: error: {message}", file=sys.stderr)
    sys.exit(code)


def _quiet_pipe() -> None:
    """The reader went away (``qkv … | head``): stop without a word."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(0)


app = typer.Typer(
    cls=QkvGroup,
    name="qkv",
    help="qkv: see every stage of an attention computation.\n\n"
    "Exit codes: 0 success, 1 a check found a mismatch, 2 bad usage or input.",
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

    Exit codes: 0 success, 1 a check found a mismatch, 2 bad usage or input.
    """


CSV = "Matrices from CSV or .npy files (one matrix per file; '-' = stdin)"
HOW = "How to compute"
OUT = "Output"
BIG = "Large inputs"


@app.command()
def compute(
    input: Annotated[
        str | None,
        typer.Argument(help="JSON or .npz problem file, or - for stdin.", show_default=False),
    ] = None,
    x: Annotated[
        str | None, typer.Option("--x", help="X (tokens × d_model).", rich_help_panel=CSV)
    ] = None,
    wq: Annotated[
        str | None, typer.Option("--wq", help="W_Q (d_model × d_k).", rich_help_panel=CSV)
    ] = None,
    wk: Annotated[
        str | None, typer.Option("--wk", help="W_K (d_model × d_k).", rich_help_panel=CSV)
    ] = None,
    wv: Annotated[
        str | None, typer.Option("--wv", help="W_V (d_model × d_v).", rich_help_panel=CSV)
    ] = None,
    q: Annotated[
        str | None, typer.Option("--q", help="Q given directly.", rich_help_panel=CSV)
    ] = None,
    k: Annotated[
        str | None, typer.Option("--k", help="K given directly.", rich_help_panel=CSV)
    ] = None,
    v: Annotated[
        str | None, typer.Option("--v", help="V given directly.", rich_help_panel=CSV)
    ] = None,
    scale: Annotated[
        str | None,
        typer.Option(help="sqrt (1/√d_k, the default), none, or a number.", rich_help_panel=HOW),
    ] = None,
    layout: Annotated[
        str | None,
        typer.Option(
            help="rows (tokens are rows, Q = X·W_Q; default) or columns (Q = W_Q·X).",
            rich_help_panel=HOW,
        ),
    ] = None,
    trace: Annotated[
        bool, typer.Option("--trace", help="Show every stage.", rich_help_panel=OUT)
    ] = False,
    stage: Annotated[
        list[str] | None,
        typer.Option(
            help="Show this stage (repeatable): Q K V scores scaled masked weights head_outputs concat output.",
            rich_help_panel=OUT,
        ),
    ] = None,
    precision: Annotated[
        int, typer.Option(min=0, max=17, help="Decimals in tables.", rich_help_panel=OUT)
    ] = 4,
    format: Annotated[
        str,
        typer.Option("--format", "-f", help="table, json, csv, tsv or npz.", rich_help_panel=OUT),
    ] = "table",
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="Write to this file (needed for npz).", rich_help_panel=OUT
        ),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="Show every row and column of big tables.", rich_help_panel=OUT
        ),
    ] = False,
    dtype: Annotated[
        str | None, typer.Option(help="float64 (default) or float32.", rich_help_panel=BIG)
    ] = None,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="Compute in blocks, without the n×n stages (chosen on its own for long inputs).",
            rich_help_panel=BIG,
        ),
    ] = False,
) -> None:
    """Compute scaled dot-product attention and show its stages.

    The JSON holds X, W_Q, W_K, W_V (or Q, K, V) and optional tokens.
    Spellings such as w_query, Wq, WQ are accepted; the output says which
    key was read. Options on the command line win over the file.

    \b
    Examples:
      qkv compute samples/worked_example.json --trace
      qkv compute samples/worked_example.json --format json
      qkv compute --x samples/csv/X.csv --wq samples/csv/W_Q.csv \\
          --wk samples/csv/W_K.csv --wv samples/csv/W_V.csv
      cat samples/qkv_direct.json | qkv compute - --stage weights -f csv
    """
    from .loaders import load
    from .problem import Options, resolve

    files = {"X": x, "W_Q": wq, "W_K": wk, "W_V": wv, "Q": q, "K": k, "V": v}
    _check_format(format, output)
    problem, settings = load(input, files)
    cli_settings = {"scale": scale, "layout": layout, "dtype": dtype}
    options = Options().merged(settings).merged(cli_settings)
    result = _evaluate(resolve(problem, options), format, stage, trace, stream)
    _emit(result, format, stage, trace, precision, output, full)


FORMATS = ("table", "json", "csv", "tsv", "npz")


def _check_format(format: str, output: str | None) -> None:
    from .errors import OptionError

    if format not in FORMATS:
        raise OptionError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
    if format == "npz" and output is None:
        raise OptionError("--format npz writes a file: give it with --output FILE")


def _evaluate(
    resolved: Any, format: str, stage: list[str] | None, trace: bool, stream: bool
) -> Any:
    """Run the full pipeline, or stream it when the n×n stages are large and not asked for."""
    from .plan import all_stages, plan

    asked = all_stages() if trace else stage or (["output"] if format in ("csv", "tsv") else None)
    how = plan(resolved, asked, stream)
    if how.note:
        print(f"qkv: note: {how.note}", file=sys.stderr)
    from .render.progress import progress

    if not how.stream:
        from .attention import run

        with progress(resolved, label="attention, every stage", steps=False):
            return run(resolved)
    from .stream import run as run_streaming

    with progress(resolved) as tick:
        return run_streaming(resolved, progress=tick)


def _emit(
    result: Any,
    format: str,
    stage: list[str] | None,
    trace: bool,
    precision: int,
    output: str | None = None,
    full: bool = False,
) -> None:
    """Write a trace in the chosen format to stdout (or ``output``)."""
    from .errors import OptionError

    if format == "npz":
        from .render.machine import to_npz

        to_npz(result, result.select(stage), output or "")
        return
    with _opened(output) as out:
        if format in ("csv", "tsv"):
            names = stage or ["output"]
            if len(names) != 1:
                raise OptionError(f"--format {format} writes one stage; choose one with --stage")
            from .render.machine import write_delimited

            (chosen,) = result.select(names)
            write_delimited(out, chosen.array, "," if format == "csv" else "\t")
            return
        if format == "json":
            from .render.machine import to_json

            out.write(to_json(result, result.select(stage)))
            return
        from .render.tables import make_console, render

        defaults = [] if trace else [n for n in ("weights", "output") if n in result.stages]
        console = make_console(None if output is None else out)
        render(result, result.select(stage or defaults), console, precision, full=full)


@contextmanager
def _opened(path: str | None) -> Iterator[Any]:
    """stdout, or the file ``path`` opened for writing (a one-line error if it cannot be)."""
    if path is None:
        yield sys.stdout
        return
    from .errors import OptionError

    try:
        fh = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by the with below)
    except OSError as e:
        raise OptionError(f"--output {path}: cannot write: {e.strerror or e}") from None
    with fh:
        yield fh


def main() -> None:
    """Entry point of the ``qkv`` script."""
    app()
