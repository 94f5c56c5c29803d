"""Writers for ``qkv check``: a marked table per answer sheet, a gradebook, JSON and CSV.

>>> from ..check import Cell
>>> from ..answers import written
>>> verdict_text(Cell("output", (0, 0), written("1.86"), 1.8639, 1.86, "consistent", "weights", True))
'consistent with your rounded weights'
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from ..check import Cell, Finding, Report

from ..check import cell_name, joined
from ..i18n import _
from ..i18n import _ as tr
from ..trace import STAGES
from .tables import Grid


def _value(v: float, precision: int) -> str:
    from .text import fmt

    if math.isnan(v):
        return "—"
    if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return fmt(v, precision)


def _where(report: Report, c: Cell) -> str:
    assert report.trace is not None
    s = report.trace.stages[c.stage]
    return cell_name(c.index, s.per_head, report.trace.batched)


def verdict_text(c: Cell) -> str:
    """``right``, ``wrong``, ``consistent with your scores`` or ``… with your rounded weights``."""
    if c.verdict == "right":
        return _("right")
    if c.verdict == "wrong":
        return _("wrong")
    if c.rounding and c.basis in STAGES:
        return _("consistent with your rounded {stage}").format(stage=c.basis)
    if c.rounding:
        what = _("earlier stages") if c.basis == "earlier stages" else c.basis
        return _("consistent with {what}").format(what=what)
    return _("consistent with your {stage}").format(stage=c.basis)


def summary(report: Report) -> str:
    """One line: how many cells got each verdict."""
    if report.error is not None:
        return _("{answers}: not marked: {error}").format(
            answers=report.answers, error=report.error
        )
    parts = [_("{n} right").format(n=report.count("right"))]
    slips = sum(c.verdict == "consistent" and not c.rounding for c in report.cells)
    rounded = sum(c.verdict == "consistent" and c.rounding for c in report.cells)
    if slips:
        parts.append(_("{n} consistent with an earlier slip").format(n=slips))
    if rounded:
        parts.append(_("{n} consistent with your rounding").format(n=rounded))
    parts.append(_("{n} wrong").format(n=report.count("wrong")))
    if report.blank:
        parts.append(_("{n} blank").format(n=report.blank))
    return _("{answers} for {problem}: {counts}").format(
        answers=report.answers, problem=report.problem, counts=joined(parts)
    )


def finding_lines(report: Report) -> list[str]:
    """The diagnosis, one line per stage that went wrong (one per slip)."""
    lines = []
    given = {c.stage for c in report.cells}
    for f in report.findings:
        stages = f.stage
        if f.more:
            stages = _("{stage} (and {more})").format(stage=f.stage, more=joined(f.more))
        where = ""
        if f.astray:
            where = (
                _("; it first departs from your working at {stage}")
                if f.astray in given
                else _("; it first departs from your working at {stage} (not in your answers)")
            )
            where = where.format(stage=f.astray)  # fmt: skip
        if f.fit == "full" and f.detail:
            lines.append(_("{stages}: {detail}: it matches a known mistake: {label}.").format(
                stages=stages, detail=f.detail, label=f.label))  # fmt: skip
        elif f.fit == "full":
            label = f.label if not f.more else _summary(f)
            same = ""
            if f.also:
                same = _(" — or, with the same numbers, {others}").format(
                    others=_("; ").join(f.also)
                )
            lines.append(_("{stages}: your values match a known mistake: {label}{same}{where}.").format(
                stages=stages, label=label, same=same, where=where))  # fmt: skip
            why = _why(f)
            if why:
                lines.append(why)
        elif f.fit == "several":
            others = _("; or ").join(f.also)
            lines.append(
                _("{stages}: your values fit several known mistakes, so qkv cannot tell which: "
                  "{label}; or {others}.").format(stages=stages, label=f.label, others=others)
            )  # fmt: skip
        elif f.fit == "partial":
            lines.append(
                _("{stages}: only partly fits a known mistake: {label} gives your values except at "
                  "{detail}; no single known mistake explains all of them.").format(
                      stages=stages, label=f.label, detail=f.detail)
            )  # fmt: skip
        elif f.fit == "slips":
            for slip in f.slips:
                lines.append(_("{stages}: {slip}.").format(stages=stages, slip=slip.text))
        elif f.fit == "layout":
            lines.append(_("{stages}: {label}: {detail}.").format(
                stages=stages, label=f.label, detail=f.detail))  # fmt: skip
        else:
            lines.append(
                _("{stages}: wrong, and no single known mistake explains it.").format(stages=stages)
            )
    return lines


def _why(f: Finding) -> str:
    """What a mistake the source articles make themselves gets: the article's words and why not."""
    from ..mistakes import article_note

    return article_note(f.keys) if f.fit == "full" else ""


def _summary(f: Finding) -> str:
    from ..mistakes import MISTAKES

    return next((tr(m.summary) for m in MISTAKES if m.key == f.mistake), f.label or "")


#: Sheets with more given cells than this show a count per stage and the cells not right.
MAX_CELLS = 100
#: Cells listed at most in a summarised report.
MAX_LISTED = 40


def report_parts(report: Report, precision: int = 4, full: bool = False) -> list[str | Grid]:
    """What `render_report` prints, in order: lines of text ("" a blank line) and tables.

    The summary, the marking model, a table of the given cells beside the correct values,
    the diagnosis and the notes. A long sheet (more than `MAX_CELLS` cells) shows a count
    per stage and the cells that are not right, at most `MAX_LISTED` of them, unless ``full``.
    """
    parts: list[str | Grid] = [summary(report), report.precision.describe()]
    cells = report.cells
    short = not full and len(cells) > MAX_CELLS
    if short:
        parts += ["", stage_counts(report)]
        cells = [c for c in cells if c.verdict != "right"]
    listed = cells[:MAX_LISTED] if short else cells
    if listed:
        marks = {"right": "✓ ", "wrong": "✗ ", "consistent": "~ "}
        rows = [[c.stage, _where(report, c), c.written.text, _value(c.correct, precision),
                 marks[c.verdict] + verdict_text(c)] for c in listed]  # fmt: skip
        head = [_("stage"), _("cell"), _("yours"), _("correct"), _("verdict")]
        parts += ["", Grid(head, rows, justify=["left", "left", "right", "right", "left"])]
    if short:
        what = (
            _("the others are right")
            if len(listed) == len(cells)
            else _("{n} more not right are left out").format(n=len(cells) - len(listed))
        )
        parts.append(
            _("{n} of {total} cells listed: {what} (--full lists every cell)").format(
                n=len(listed), total=len(report.cells), what=what
            )
        )
    lines = finding_lines(report)
    if lines:
        parts += ["", _("Diagnosis:"), *lines]
    if report.notes:
        parts += ["", *(_("Note: {note}.").format(note=note) for note in report.notes)]
    return parts


def render_report(report: Report, console: Console, precision: int = 4, full: bool = False) -> None:
    """`report_parts` printed by rich."""
    _draw(report_parts(report, precision, full), console)


def _draw(parts: list[str | Grid], console: Console) -> None:
    from rich.text import Text

    from .tables import grid_table

    for part in parts:
        if isinstance(part, str):
            console.print(Text(part), soft_wrap=True)
        else:
            _print(console, grid_table(part))


def write_report(report: Report, file: Any = None, precision: int = 4, full: bool = False) -> None:
    """`render_report` to ``file`` (stdout); as plain text, without loading rich, where rich
    would print no styles and every cell's width is sure (`tables.plain`)."""
    import sys

    from .tables import make_console, plain
    from .text import box, write_out

    out = file or sys.stdout
    parts = report_parts(report, precision, full)
    cells = [c for p in parts if isinstance(p, Grid) for row in (p.head, *p.rows) for c in row]
    if not plain(out, cells):
        _draw(parts, make_console(file))
        return
    lines = [p if isinstance(p, str) else box(p.head, p.rows, p.justify) for p in parts]
    write_out(out, "\n".join(lines) + "\n")


def stage_counts(report: Report) -> Grid:
    """A table: per stage answered, how many cells are right, consistent, wrong."""
    order: dict[str, list[int]] = {}
    for c in report.cells:
        counts = order.setdefault(c.stage, [0, 0, 0])
        counts[("right", "consistent", "wrong").index(c.verdict)] += 1
    head = [_("stage"), _("right"), _("consistent"), _("wrong")]
    return Grid(head, [[stage, *(str(k) for k in counts)] for stage, counts in order.items()])


def _diagnosis_short(report: Report, labels: bool = False) -> str:
    """``scaled: no-scaling; output: weights-transposed`` (full labels when asked)."""
    if report.error is not None:
        return _("error: {error}").format(error=report.error)
    parts = []
    for f in report.findings:
        if f.fit == "none" or f.mistake is None:
            what = _("no single known mistake")
        elif f.fit == "several":
            what = (
                _("one of {keys}").format(keys=", ".join(f.keys))
                if not labels
                else _("{label}; or {others}").format(label=f.label, others=_("; or ").join(f.also))
            )
        elif f.fit == "partial":
            what = _("partly {what}").format(what=f.label if labels else f.mistake)
        elif f.fit == "slips":
            kinds = ", ".join(sorted({s.kind for s in f.slips}))
            what = f.label if labels else _("slip {kinds}").format(kinds=kinds)
        else:
            what = (f.label or "") if labels else (f.mistake or "")
        parts.append(f"{f.stage}: {what}")
    return _("; ").join(parts)


def render_gradebook(reports: list[Report], console: Console) -> None:
    """One row per answer file: counts, score, first wrong stage, diagnosis (or its error)."""
    from rich.table import Table
    from rich.text import Text

    title = Text(_("Gradebook for {problem}").format(problem=reports[0].problem))
    table = Table(header_style="bold", title=title)
    for title, justify in ((_("file"), "left"), (_("right"), "right"),
                           (_("consistent"), "right"), (_("wrong"), "right"),
                           (_("blank"), "right"), (_("score"), "right"),
                           (_("first wrong"), "left"), (_("diagnosis"), "left")):  # fmt: skip
        table.add_column(title, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in reports:
        if r.error is not None:
            error = _("error: {error}").format(error=r.error)
            table.add_row(Text(r.answers), "", "", "", "", "-", "", Text(error))
            continue
        table.add_row(
            Text(r.answers),
            str(r.count("right")),
            str(r.count("consistent")),
            str(r.count("wrong")),
            str(r.blank),
            score(r),
            r.first_wrong or "",
            Text(_diagnosis_short(r)),
        )
    _print(console, table)
    console.print(Text(reports[0].precision.describe()), soft_wrap=True)


def _print(console: Console, table: Any) -> None:
    """Print a table at its natural width, wider than the terminal if need be."""
    from rich.measure import Measurement

    from .tables import print_wide

    wide = console.options.update(max_width=10_000)
    print_wide(console, table, Measurement.get(console, wide, table).maximum)


def score(r: Report) -> str:
    """Credit as a percentage of the cells given (a cell consistent with an earlier slip: half)."""
    value = r.score
    return "-" if value is None else f"{100 * value:.0f}%"


def gradebook_csv(reports: list[Report]) -> str:
    """The gradebook as CSV, one row per file."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["file", "right", "consistent", "wrong", "blank", "score", "first_wrong",
                "mistake", "diagnosis"])  # fmt: skip
    for r in reports:
        if r.error is not None:
            w.writerow([r.answers, "", "", "", "", "", "", "", f"error: {r.error}"])
            continue
        first = r.findings[0] if r.findings else None
        w.writerow([r.answers, r.count("right"), r.count("consistent"), r.count("wrong"),
                    r.blank, score(r), r.first_wrong or "", (first.mistake or "") if first else "",
                    _diagnosis_short(r, labels=True)])  # fmt: skip
    return out.getvalue()


def _finding(f: Finding) -> dict[str, Any]:
    return {"stage": f.stage, "fit": f.fit, "mistake": f.mistake, "label": f.label,
            "astray": f.astray, "also": f.also, "keys": f.keys, "same_in": f.more,
            "detail": f.detail or None,
            "slips": [{"kind": s.kind, "text": s.text} for s in f.slips]}  # fmt: skip


def report_dict(report: Report) -> dict[str, Any]:
    """A report for scripts: counts, a verdict per cell (1-based indices), the diagnosis."""
    if report.error is not None:
        return {"answers": report.answers, "ok": False, "error": report.error}
    assert report.trace is not None
    cells = []
    for c in report.cells:
        s = report.trace.stages[c.stage]
        rest = list(c.index)
        cell: dict[str, Any] = {"stage": c.stage}
        if report.trace.batched:
            cell["item"] = rest.pop(0) + 1
        if s.per_head:
            cell["head"] = rest.pop(0) + 1
        cell |= {"row": rest[0] + 1, "col": rest[1] + 1, "yours": c.written.text,
                 "correct": _json_float(c.correct), "from_yours": _json_float(c.expected),
                 "verdict": c.verdict, "basis": c.basis, "rounding": c.rounding}  # fmt: skip
        cells.append(cell)
    return {
        "answers": report.answers,
        "ok": report.ok,
        "right": report.count("right"),
        "consistent": report.count("consistent"),
        "wrong": report.count("wrong"),
        "blank": report.blank,
        "score": report.score,
        "marking": report.precision.describe(),
        "cells": cells,
        "diagnosis": [_finding(f) for f in report.findings],
        "notes": report.notes,
    }


def _json_float(v: float) -> float | str | None:
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "-inf" if v < 0 else "inf"
    return v


def reports_json(problem: str, reports: list[Report]) -> str:
    """Every report as one JSON document."""
    doc = {"problem": problem, "reports": [report_dict(r) for r in reports]}
    return json.dumps(doc, ensure_ascii=False, allow_nan=False) + "\n"
