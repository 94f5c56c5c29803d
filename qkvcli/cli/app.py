"""The ``qkv`` app: its commands' group, and the one place every error becomes a line and an exit code.

Every error the user can cause ends here as one line, ``qkv: error: …``, on
stderr with exit code 2. numpy and rich are imported only inside commands,
so ``qkv --version`` and ``qkv --help`` stay fast.
"""

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from .. import __version__, i18n
from ..errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_MISMATCH,
    EXIT_OK,
    EXIT_USAGE,
    OptionError,
    OutputError,
    QkvError,
    one_line,
)
from ..i18n import N_, _

#: ``--debug`` is taken off the command line before parsing (see `QkvGroup.main`); help lists it.
DEBUG = (
    "--debug",
    N_("Show the traceback of an error (anywhere on the line; the exit code stays)."),
)
#: ``--lang`` too (see `take_lang`): the language of every message, table and help.
LANG = (
    "--lang LANG",
    N_(
        "The language qkv speaks: en or zh (anywhere on the line; default: QKV_LANG, else the locale)."
    ),
)


def take_lang(argv: list[str]) -> tuple[str | None, list[str]]:
    """``--lang zh`` or ``--lang=zh`` taken off the command line (before ``--``), and the rest.

    >>> take_lang(["compute", "--lang", "zh", "x.json", "--", "--lang"])
    ('zh', ['compute', 'x.json', '--', '--lang'])
    """
    end = argv.index("--") if "--" in argv else len(argv)
    lang, rest, i = None, [], 0
    while i < end:
        a = argv[i]
        if a == "--lang":
            if i + 1 >= end:
                raise OptionError(_("--lang needs a language: en or zh"))
            lang, i = argv[i + 1], i + 2
            continue
        if a.startswith("--lang="):
            lang = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    return lang, rest + argv[end:]


def help_record(param: Any) -> tuple[str, str] | None:
    """An option's or argument's line in the help: ``-f, --format FORMAT`` and its help text.

    Written here rather than by typer, whose plain help shows Python types
    (``<str>``) and ranges (``[0<=x<=17]``): every value has a metavar a
    person reads, and its range and default are in its help text.
    """
    if getattr(param, "hidden", False):
        return None
    if param.param_type_name == "argument":
        name = param.metavar or param.name.upper()
        return name + ("…" if param.nargs != 1 else ""), i18n._(param.help) if param.help else ""
    names = sorted([*param.opts, *param.secondary_opts], key=lambda o: o.startswith("--"))
    shown = ", ".join(names)
    text = i18n._(param.help) if param.help else ""
    if not param.is_flag:
        shown += f" {param.metavar or _metavar(param)}"
        if param.default is not None and "default" not in (param.help or ""):
            text += _("  [default: {default}]").format(default=param.default)
    return shown, text


def _metavar(param: Any) -> str:
    """A readable placeholder for an option that names none: N (whole number), X (number), TEXT."""
    from typing import get_args

    kind = getattr(getattr(param, "type_descriptor", None), "annotation", str)
    kinds = set(get_args(kind)) | {kind}
    return "N" if int in kinds else "X" if float in kinds else "TEXT"


def format_panels(command: Any, ctx: Any, formatter: Any) -> None:
    """Arguments, then the options in their panels (as typer's rich help groups them), then the rest."""
    args: list[tuple[str, str]] = []
    panels: dict[str, list[tuple[str, str]]] = {}
    for param in command.get_params(ctx):
        record = help_record(param)
        if record is None:
            continue
        if param.param_type_name == "argument":
            args.append(record)
        else:
            panel = getattr(param, "rich_help_panel", None) or "Options"
            panels.setdefault(panel, []).append(record)
    panels = {"Options": [], **panels}  # the general options first, as typer's rich help puts them
    panels["Options"] += [(name, i18n._(text)) for name, text in (LANG, DEBUG)]
    if args:
        with formatter.section(_("Arguments")):
            formatter.write_dl(args)
    for title, rows in panels.items():
        with formatter.section(i18n._(title)):
            formatter.write_dl(rows)


#: click's own functions that `speak_click` replaces for a language other than English.
_CLICK: dict[tuple[Any, str], Any] = {}


def speak_click(lang: str) -> None:
    """click's help in ``lang``: its headings ("Commands") and its text wrapped in terminal
    columns (a Chinese character takes two). English puts click back as it was.

    typer (with the click it carries) names these at module level, so the names
    are pointed at qkv's; English never imports anything for it.
    """
    if lang == "en" and not _CLICK:
        return
    import typer.core

    from ..render import text

    try:
        from typer._click import formatting  # the click typer carries
    except ImportError:  # a typer on click itself
        from click import formatting  # type: ignore[no-redef]

    def heading(self: Any, heading: str) -> None:  # "选项：", a Chinese colon
        self.write(f"{'':>{self.current_indent}}" + _("{heading}:").format(heading=heading) + "\n")

    ours = [
        (typer.core, "_", i18n._),
        (formatting, "wrap_text", text.wrap),
        (formatting, "term_len", text.width),
        (formatting.HelpFormatter, "write_heading", heading),
    ]
    for module, name, fn in ours:
        if hasattr(module, name):
            _CLICK.setdefault((module, name), getattr(module, name))
            setattr(module, name, fn if lang != "en" else _CLICK[(module, name)])


#: click's usage errors, by the English it writes them in, and their messages for the catalogue.
USAGE_ERRORS = (
    (r"No such option: (?P<name>\S+) \(Possible options: (?P<options>.*)\)",
     N_("no such option: {name} (did you mean {options}?)")),
    (r"No such option: (?P<name>\S+)", N_("no such option: {name}")),
    (r"Option (?P<name>'\S+') requires an argument\.", N_("option {name} needs a value")),
    (r"Option (?P<name>'\S+') requires (?P<n>\d+) arguments\.", N_("option {name} needs {n} values")),
    (r"Option (?P<name>'\S+') does not take a value\.", N_("option {name} takes no value")),
    (r"Got unexpected extra argument\(s\) \((?P<args>.*)\)", N_("unexpected extra arguments: {args}")),
    (r"Missing argument (?P<name>'\S+')\.", N_("missing argument {name}")),
    (r"Missing option (?P<name>'\S+')\.", N_("missing option {name}")),
    (r"Missing parameter: (?P<name>\S+)", N_("missing parameter: {name}")),
    (r"No such command (?P<name>'.*')\.", N_("no such command {name}")),
    (r"Missing command\.", N_("missing command")),
    (r"Invalid value for (?P<name>'[^']+'): (?P<message>.*)", N_("invalid value for {name}: {message}")),
)  # fmt: skip


def usage_message(message: str) -> str:
    """A usage error of click's in the language spoken (as it is, in English or when unknown).

    >>> usage_message("No such option: --nope")
    'No such option: --nope'
    """
    if i18n.language() == "en":
        return message
    import re

    for pattern, words in USAGE_ERRORS:
        m = re.fullmatch(pattern, message, re.S)
        if m:
            return i18n._(words).format(**m.groupdict())
    return message


def translated_help(command: Any, ctx: Any, formatter: Any, format_help_text: Any) -> None:
    """A command's docstring (and epilog) in the language spoken, as click formats it."""
    saved = command.help, command.epilog
    command.help = i18n._(command.help) if command.help else command.help
    command.epilog = i18n._(command.epilog) if command.epilog else command.epilog
    try:
        format_help_text(ctx, formatter)
    finally:
        command.help, command.epilog = saved


class QkvCommand(TyperCommand):
    """A command whose help groups its options in panels, without rich (help stays fast)."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        format_panels(self, ctx, formatter)

    def format_help_text(self, ctx: Any, formatter: Any) -> None:
        translated_help(self, ctx, formatter, super().format_help_text)

    def format_usage(self, ctx: Any, formatter: Any) -> None:
        formatter.write_usage(
            ctx.command_path, " ".join(self.collect_usage_pieces(ctx)), prefix=_("Usage: ")
        )

    def get_short_help_str(self, limit: int = 45) -> str:
        if self.short_help:
            return i18n._(self.short_help)
        return super().get_short_help_str(limit)


class QkvGroup(TyperGroup):
    """Maps every exception to one stderr line and an exit code, in one place."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from ..coercion import install

        for command in (self, *self.commands.values()):
            install(command)  # plain option types without pydantic: fast start-up

    def main(self, args: Any = None, prog_name: Any = None, **extra: Any) -> Any:  # type: ignore[override]
        from .. import notes

        extra.pop("standalone_mode", None)
        argv = list(sys.argv[1:] if args is None else args)
        end = argv.index("--") if "--" in argv else len(argv)
        debug = "--debug" in argv[:end]  # accepted anywhere before --
        argv = [a for a in argv[:end] if a != "--debug"] + argv[end:]
        notes.take()  # a fresh run: nothing left over from an earlier one in this process
        try:
            lang, argv = take_lang(argv)
            speak_click(i18n.choose(lang))
        except QkvError as e:
            speak_click(i18n.choose("en"))
            _fail(str(e), e.exit_code)
        if not argv:
            print(self.short_usage())  # a bare qkv: what there is to run, not an error
            sys.exit(EXIT_OK)
        try:
            with signals_raise(), warnings.catch_warnings():
                warnings.showwarning = _warning_as_note  # one line, never Python's two
                rv = super().main(
                    args=argv, prog_name=prog_name or "qkv", standalone_mode=False, **extra
                )
        except QkvError as e:
            if debug:
                _traceback()
            _fail(str(e), e.exit_code)
        except Interrupted as e:
            _stop(128 + e.signum)
        except (KeyboardInterrupt, typer.Abort):
            _stop(EXIT_INTERRUPTED)
        except BrokenPipeError:
            _quiet_pipe()
        except Exception as e:
            if hasattr(e, "format_message") and hasattr(e, "exit_code"):  # click usage errors
                cmd = getattr(getattr(e, "ctx", None), "command_path", "qkv")
                _fail(
                    _("{message} (see '{command} --help')").format(
                        message=usage_message(e.format_message()), command=cmd
                    ),
                    EXIT_USAGE,
                )
            if debug:
                _traceback()
            _fail(
                _(
                    "internal error: {kind}: {error} — this is a bug in qkv; "
                    "run again with --debug for the traceback and please report it"
                ).format(kind=type(e).__name__, error=e),
                EXIT_INTERNAL,
            )
        code = rv if isinstance(rv, int) else 0
        if code in (EXIT_OK, EXIT_MISMATCH):  # notes go out only when the run succeeded
            for text in notes.take():
                print(f"qkv: note: {one_line(text)}", file=sys.stderr)
        sys.exit(code)

    def short_usage(self) -> str:
        """What a bare ``qkv`` prints: the commands, an example, where the help is."""
        rows = [(name, cmd.get_short_help_str(200)) for name, cmd in self.commands.items()]
        width = max(len(name) for name, _text in rows)
        return "\n".join(
            [
                _("Usage: qkv COMMAND [ARGS]..."),
                "",
                _("qkv: see every stage of an attention computation."),
                "",
                _("Commands:"),
                *(f"  {name.ljust(width)}  {text}" for name, text in rows),
                "",
                _("Example: qkv compute samples/worked_example.json --trace"),
                _("'qkv COMMAND -h' lists a command's options; 'qkv -h' adds the exit codes."),
            ]
        )

    def format_options(self, ctx: Any, formatter: Any) -> None:
        format_panels(self, ctx, formatter)
        self.format_commands(ctx, formatter)

    def format_help_text(self, ctx: Any, formatter: Any) -> None:
        translated_help(self, ctx, formatter, super().format_help_text)

    def format_usage(self, ctx: Any, formatter: Any) -> None:
        formatter.write_usage(
            ctx.command_path, " ".join(self.collect_usage_pieces(ctx)), prefix=_("Usage: ")
        )

    def invoke(self, ctx: Any) -> Any:
        """Run the command; a closed pipe is caught here, before typer's own handler."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _quiet_pipe()
        except OSError as e:
            if e.filename is not None:
                raise
            raise OutputError(
                _("cannot write the output: {error}").format(error=e.strerror or e)
            ) from None
        except UnicodeEncodeError as e:  # stdout in ASCII or Latin-1 (PYTHONIOENCODING, a C locale)
            raise OutputError(
                _(
                    "cannot write the output: its encoding ({encoding}) has no {char}; "
                    "use a UTF-8 locale or PYTHONIOENCODING=utf-8"
                ).format(encoding=e.encoding, char=repr(e.object[e.start]))
            ) from None


class Interrupted(BaseException):
    """A signal (SIGTERM, SIGHUP, SIGINT) stopped the run; like KeyboardInterrupt, not an error."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def signals_raise() -> Iterator[None]:
    """While the block runs, SIGTERM, SIGHUP and SIGINT raise `Interrupted`.

    So every ``finally`` runs: a file being written is removed, the old one
    kept. A signal the caller ignores (``nohup``) stays ignored; the old
    handlers come back afterwards (the tests run many commands in one process).
    """
    import signal
    import threading

    def raise_(signum: int, frame: Any) -> None:
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}
    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:
            old[sig] = signal.signal(sig, raise_)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _warning_as_note(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    """A Python warning (numpy's overflow, say) kept as a note: one line, and only if the run succeeds."""
    from .. import notes

    notes.note(
        _("{kind} (a bug in qkv: please report it): {message}").format(
            kind=getattr(category, "__name__", "warning"), message=message
        )
    )


def _traceback() -> None:
    """The traceback of the error being handled, on stderr (``--debug``), before its one line."""
    import traceback

    traceback.print_exc()


def _fail(message: str, code: int) -> None:
    """The one line of an error, whatever the message holds (a name with a newline stays one line)."""
    print(f"qkv: error: {one_line(message)}", file=sys.stderr)
    sys.exit(code)


def _stop(code: int) -> None:
    """Stopped by a signal or Ctrl-C: nothing printed, exit 128 + the signal number."""
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
    context_settings={"help_option_names": ["-h", "--help"]},
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
    see the traceback of an error. 'qkv COMMAND -h' lists a command's options.
    """
