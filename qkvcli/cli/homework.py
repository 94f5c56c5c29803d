"""The homework commands: ``qkv check``, ``qkv explain`` and ``qkv new``.

Each parses its options, calls one core function (``check``, ``explain``,
``generate``) and renders the result.
"""

import sys
from typing import Annotated, Any

import typer

from ..errors import EXIT_MISMATCH
from ..i18n import _, ngettext

OUT = "Output"
MARKING = "Marking (how close is right)"


def _stage_files(items: list[str] | None) -> dict[str, str]:
    from ..errors import OptionError

    files: dict[str, str] = {}
    for item in items or []:
        stage, sep, path = item.partition("=")
        if not sep or not stage or not path:
            raise OptionError(
                _("--stage-file {item!r}: write it as STAGE=FILE, e.g. weights=w.csv").format(
                    item=item
                )
            )
        files[stage.strip()] = path.strip()
    return files


def check(
    problem: Annotated[
        str, typer.Argument(help="JSON problem file.", show_default=False, metavar="PROBLEM")
    ],
    answers: Annotated[
        list[str] | None,
        typer.Argument(
            help="JSON answer files keyed by stage names (null = blank).",
            show_default=False,
            metavar="ANSWERS",
        ),
    ] = None,
    stage_file: Annotated[
        list[str] | None,
        typer.Option(
            "--stage-file",
            help="One stage's answers from CSV: STAGE=FILE, e.g. weights=w.csv (repeatable).",
            metavar="STAGE=FILE",
        ),
    ] = None,
    decimals: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=15,
            help="Mark at least this many decimals (default 2).",
            rich_help_panel=MARKING,
        ),
    ] = None,
    sig_figs: Annotated[
        int | None,
        typer.Option(
            "--sig-figs",
            min=1,
            max=15,
            help="Mark at least this many significant figures.",
            rich_help_panel=MARKING,
        ),
    ] = None,
    rel_tol: Annotated[
        float | None,
        typer.Option(
            "--rel-tol",
            help="Mark within this fraction of the true value (e.g. 0.01).",
            rich_help_panel=MARKING,
        ),
    ] = None,
    tolerance: Annotated[
        float | None,
        typer.Option(
            help="Right when within this absolute distance (replaces the model).",
            rich_help_panel=MARKING,
        ),
    ] = None,
    precision: Annotated[
        int,
        typer.Option(
            min=0, max=17, help="Decimals of the correct values shown.", rich_help_panel=OUT
        ),
    ] = 4,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="table, json or csv (csv: the gradebook).",
            rich_help_panel=OUT,
            metavar="FORMAT",
        ),
    ] = "table",
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="List every given cell (a long sheet lists the cells not right).",
            rich_help_panel=OUT,
        ),
    ] = False,
) -> None:
    """Mark a hand computation: every given cell right or wrong beside the correct value.

    A value is compared with the truth at the decimals you wrote (trailing
    zeros carry none), never coarser than the problem's precision: 2 decimals
    unless --decimals, --sig-figs, --rel-tol or the problem file's
    "precision" says otherwise; the window is half a unit in that last place
    plus what carrying that precision through earlier steps can add. A stage
    that follows from your own earlier values is "consistent": after an
    earlier slip, or after rounding carried forward (not a mistake). A wrong
    stage is recomputed under the known mistakes and every one that
    reproduces it is named, or single-cell slips are found, or the diagnosis
    says nothing known explains it. Several answer files give a gradebook.

    Exit codes: 0 nothing wrong, 1 something wrong, 2 bad input.

    \b
    Examples:
      qkv check samples/worked_example.json samples/homework/worked/article_code.json
      qkv check samples/worked_example.json --stage-file weights=samples/homework/worked/weights.csv
      qkv check samples/worked_example.json samples/homework/worked/*.json -f csv
    """
    from ..check import Report, grade, load_answers
    from ..errors import OptionError, QkvError

    formats = ("table", "json", "csv")
    if format not in formats:
        raise OptionError(
            _("--format must be one of {formats}, not {format!r}").format(
                formats=", ".join(formats), format=format
            )
        )
    files = _stage_files(stage_file)
    paths = list(answers or [])
    if files and len(paths) > 1:
        raise OptionError(_("--stage-file adds to one answer file, not to several"))
    if not paths and not files:
        raise OptionError(_("no answers: give an answer file or --stage-file STAGE=FILE"))
    prob, options, model = _marked_problem(problem, decimals, sig_figs, rel_tol, tolerance)
    if len(paths) <= 1:
        sheet = load_answers(paths[0] if paths else None, files)
        reports = [grade(prob, options, sheet, model)]
    else:
        reports = []
        for path in paths:  # a gradebook: an unreadable file is a row with its error
            try:
                reports.append(grade(prob, options, load_answers(path, files), model))
            except QkvError as e:
                reports.append(Report(path, prob.origin, [], [], 0, None, model, error=str(e)))
    if format == "json":
        from ..render.homework import reports_json
        from ..render.text import write_out

        write_out(sys.stdout, reports_json(prob.origin, reports))
    elif format == "csv":
        from ..render.homework import gradebook_csv
        from ..render.text import write_out

        write_out(sys.stdout, gradebook_csv(reports))
    else:
        from ..render.homework import render_gradebook, write_report

        if len(reports) == 1:
            write_report(reports[0], None, precision, full)
        else:
            from ..render.tables import make_console

            render_gradebook(reports, make_console())
    bad = [r for r in reports if r.error is not None]
    if bad:
        sys.stdout.flush()
        said = ngettext(
            "{n} answer file could not be marked ({file}: {error})",
            "{n} answer files could not be marked ({file}: {error})",
            len(bad),
        )
        print("qkv: error: " + said.format(n=len(bad), file=bad[0].answers, error=bad[0].error),
              file=sys.stderr)  # fmt: skip
        raise typer.Exit(2)
    if not all(r.ok for r in reports):
        raise typer.Exit(EXIT_MISMATCH)


def _marked_problem(
    path: str,
    decimals: int | None,
    sig_figs: int | None,
    rel_tol: float | None,
    tolerance: float | None,
) -> tuple[Any, Any, Any]:
    """The problem, its options, and the marking precision: the options', else the file's."""
    import math

    from ..errors import InputError, OptionError
    from ..load import display, load, parse_json, read_text
    from ..load.document import precision_entry
    from ..marking import Precision, parse_precision
    from ..options import Options

    chosen = [n for n, v in (("--decimals", decimals), ("--sig-figs", sig_figs),
                             ("--rel-tol", rel_tol), ("--tolerance", tolerance)) if v is not None]  # fmt: skip
    if len(chosen) > 1:
        raise OptionError(
            _("{options}: give one way to mark, not several").format(
                options=_(" and ").join(chosen)
            )
        )
    for name, value in (("--rel-tol", rel_tol), ("--tolerance", tolerance)):
        if value is not None and (not math.isfinite(value) or value < 0):
            raise OptionError(
                _("{option} must be a finite number ≥ 0, not {value}").format(
                    option=name, value=f"{value:g}"
                )
            )
    if rel_tol is not None and not 0 < rel_tol < 1:
        raise OptionError(
            _("--rel-tol must be between 0 and 1 (e.g. 0.01), not {value}").format(
                value=f"{rel_tol:g}"
            )
        )
    entry = None
    if path.lower().endswith(".npz"):
        prob, settings = load(path)
    else:
        text = read_text(path)
        prob, settings = parse_json(text, display(path))
        entry = precision_entry(text, display(path))
    options = Options().merged(settings)
    if decimals is not None:
        model = Precision(decimals, source="--decimals")
    elif sig_figs is not None:
        model = Precision(None, sig_figs=sig_figs, source="--sig-figs")
    elif rel_tol is not None:
        model = Precision(None, rel_tol=rel_tol, source="--rel-tol")
    elif tolerance is not None:
        model = Precision(None, tolerance=tolerance, source="--tolerance")
    elif entry is not None:
        try:
            model = parse_precision(entry[1], display(path))
        except OptionError as e:
            raise InputError(str(e)) from None
    else:
        model = Precision(source="the default")
    return prob, options, model


def explain(
    problem: Annotated[
        str, typer.Argument(help="JSON problem file.", show_default=False, metavar="PROBLEM")
    ],
    cell: Annotated[
        str,
        typer.Argument(
            help="STAGE[ROW,COLUMN], 1-based, e.g. scores[2,3].",
            show_default=False,
            metavar="CELL",
        ),
    ],
    head: Annotated[
        int | None, typer.Option(min=1, help="Head (1-based) for per-head stages.")
    ] = None,
    item: Annotated[int | None, typer.Option(min=1, help="Batch item (1-based).")] = None,
    exact: Annotated[
        bool, typer.Option("--exact", help="Fractions, the scale as a surd, e-powers.")
    ] = False,
    precision: Annotated[int, typer.Option(min=0, max=17, help="Decimals shown.")] = 4,
) -> None:
    """Write out the arithmetic behind one cell, with the actual numbers.

    Rows and columns count from 1, as people write them by hand: scores[2,3]
    is query 2 against key 3.

    \b
    Examples:
      qkv explain samples/worked_example.json 'scores[2,3]'
      qkv explain samples/worked_example.json 'weights[1,2]' --exact
      qkv explain samples/homework/two_heads.json 'weights[2,1]' --head 2
    """
    from ..explain import explain as explain_cell
    from ..load import load
    from ..options import Options

    prob, settings = load(problem)
    options = Options().merged(settings).merged({"exact": exact or None})
    for line in explain_cell(prob, options, cell, head, item, precision):
        print(line)


def new(
    seed: Annotated[
        int | None, typer.Option(help="Same seed, same problem (default: a random one, printed).")
    ] = None,
    tokens: Annotated[int, typer.Option(help="Number of tokens (rows of X).")] = 3,
    d_model: Annotated[int, typer.Option("--d-model", help="Columns of X.")] = 4,
    d_k: Annotated[int, typer.Option("--d-k", help="d_k per head (4: the scale is 1/2).")] = 4,
    d_v: Annotated[int | None, typer.Option("--d-v", help="d_v per head (default d_k).")] = None,
    heads: Annotated[int, typer.Option(help="Number of heads.")] = 1,
    scale: Annotated[
        str,
        typer.Option(
            help="sqrt (1/√d_k), none, or nice (1/√d_k with d_k 1, 4 or 9).", metavar="SCALE"
        ),
    ] = "sqrt",
    mask: Annotated[str | None, typer.Option(help="causal, or no mask.", metavar="MASK")] = None,
    negative: Annotated[
        bool, typer.Option("--negative", help="Allow −1 among the entries.")
    ] = False,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="Write the problem here (default stdout).", metavar="FILE"
        ),
    ] = None,
    answers: Annotated[
        str | None,
        typer.Option(help="Also write the answer key here, in the check format.", metavar="FILE"),
    ] = None,
    precision: Annotated[int, typer.Option(min=0, max=17, help="Decimals in the key.")] = 4,
) -> None:
    """Write a practice problem with friendly numbers (small whole entries).

    Friendly by construction: no zero row or column, Q ≠ K, every scaled
    score within ±6 and no weight above 0.95. Without --seed a random seed is
    drawn and printed (a note on stderr, and in the problem's "_about").

    \b
    Examples:
      qkv new --seed 3 -o problem.json --answers key.json
      qkv new --seed 3 --heads 2 --d-k 2 --mask causal
    """
    from ..attention import run
    from ..generate import Spec, answer_key, practice, to_json
    from ..load import parse_json
    from ..options import Options
    from ..problem import resolve

    drawn = seed is None
    if seed is None:
        import random

        seed = random.SystemRandom().randrange(1_000_000)
    spec = Spec(seed, tokens, d_model, d_k, d_v, heads, scale, mask, negative)
    doc = practice(spec)
    if drawn:
        said = _("seed {seed} (qkv new --seed {seed} … makes this problem again)").format(seed=seed)
        print(f"note: {said}", file=sys.stderr)
    text = to_json(doc)
    _write(output, text, "--output")
    if answers:
        prob, settings = parse_json(text, output or "<new>")
        trace = run(resolve(prob, Options().merged(settings)))
        _write(answers, to_json(answer_key(trace), precision), "--answers")


def _write(path: str | None, text: str, option: str) -> None:
    """Text to stdout, or to ``path`` whole or not at all (the writer of ``compute -o``)."""
    if path is None or path == "-":
        from ..render.text import write_out

        write_out(sys.stdout, text)
        return
    from ..atomic import write_atomic

    write_atomic(path, text, option)
