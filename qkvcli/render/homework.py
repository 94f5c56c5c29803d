"""Writers for ``qkv check``: a marked table per answer sheet, a gradebook, JSON and CSV.

>>> cell_name("weights", (0, 1, 2), per_head=True, batched=False)
'head 1 [2,3]'
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


def cell_name(stage: str, index: tuple[int, ...], per_head: bool, batched: bool) -> str:
    """A cell as people name it, 1-based: ``[2,3]``, ``head 1 [2,3]``, ``item 2 [1,1]``."""
    lead = []
    rest = list(index)
    if batched:
        lead.append(f"item {rest.pop(0) + 1}")
    if per_head:
        lead.append(f"head {rest.pop(0) + 1}")
    where = f"[{rest[0] + 1},{rest[1] + 1}]"
    return " ".join([*lead, where])


def _value(v: float, precision: int) -> str:
    from .text import fmt

    if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return fmt(v, precision)


def _where(report: Report, c: Cell) -> str:
    s = report.trace.stages[c.stage]
    return cell_name(c.stage, c.index, s.per_head, report.trace.batched)


def verdict_text(c: Cell) -> str:
    """``right``, ``wrong`` or ``consistent with your scores``."""
    return f"consistent with your {c.basis}" if c.verdict == "consistent" else c.verdict


def summary(report: Report) -> str:
    """One line: how many cells got each verdict."""
    parts = [f"{report.count('right')} right"]
    if report.count("consistent"):
        parts.append(f"{report.count('consistent')} consistent with an earlier slip")
    parts.append(f"{report.count('wrong')} wrong")
    if report.blank:
        parts.append(f"{report.blank} blank")
    return f"{report.answers} for {report.problem}: " + ", ".join(parts)


def finding_lines(report: Report) -> list[str]:
    """The diagnosis, one line (or two) per stage that went wrong."""
    lines = []
    given = {c.stage for c in report.cells}
    for f in report.findings:
        if f.mistake is None:
            lines.append(f"{f.stage}: wrong, and none of the common mistakes reproduces it.")
            continue
        where = f"the first stage that went astray is {f.astray}"
        if f.astray not in given:
            where += " (not in your answers)"
        stages = f.stage + (f" (and {', '.join(f.more)})" if f.more else "")
        lines.append(f"{stages}: your values match a common mistake: {f.label}; {where}.")
        if f.also:
            lines.append(f"  (these fit as well: {'; '.join(f.also)})")
    return lines


def render_report(report: Report, console: Console, precision: int = 4) -> None:
    """The summary, a table of every given cell beside the correct value, the diagnosis."""
    from rich.table import Table
    from rich.text import Text

    console.print(Text(summary(report)), soft_wrap=True)
    table = Table(header_style="bold")
    for title, justify in (("stage", "left"), ("cell", "left"), ("yours", "right"),
                           ("correct", "right"), ("verdict", "left")):  # fmt: skip
        table.add_column(title, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for c in report.cells:
        mark = {"right": "✓ ", "wrong": "✗ ", "consistent": "~ "}[c.verdict]
        table.add_row(
            c.stage,
            _where(report, c),
            c.written.text,
            _value(c.correct, precision),
            Text(mark + verdict_text(c)),
        )
    console.print()
    _print(console, table)
    lines = finding_lines(report)
    if lines:
        console.print()
        console.print(Text("Diagnosis:"))
        for line in lines:
            console.print(Text(line), soft_wrap=True)


def _diagnosis_short(report: Report, labels: bool = False) -> str:
    """``scaled: no-scaling; output: weights-transposed`` (full labels when asked)."""
    parts = []
    for f in report.findings:
        what = (f.label if labels else f.mistake) if f.mistake else "not a listed mistake"
        parts.append(f"{f.stage}: {what}")
    return "; ".join(parts)


def render_gradebook(reports: list[Report], console: Console) -> None:
    """One row per answer file: counts, score, first wrong stage, diagnosis."""
    from rich.table import Table
    from rich.text import Text

    table = Table(header_style="bold", title=Text(f"Gradebook for {reports[0].problem}"))
    for title, justify in (("file", "left"), ("right", "right"), ("consistent", "right"),
                           ("wrong", "right"), ("blank", "right"), ("score", "right"),
                           ("first wrong", "left"), ("diagnosis", "left")):  # fmt: skip
        table.add_column(title, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in reports:
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


def _print(console: Console, table: Any) -> None:
    """Print a table at its natural width, wider than the terminal if need be."""
    from rich.measure import Measurement

    from .tables import print_wide

    wide = console.options.update(max_width=10_000)
    print_wide(console, table, Measurement.get(console, wide, table).maximum)


def score(r: Report) -> str:
    """Right cells as a percentage of the cells given (consistent ones count half)."""
    given = len(r.cells)
    if not given:
        return "-"
    return f"{100 * (r.count('right') + 0.5 * r.count('consistent')) / given:.0f}%"


def gradebook_csv(reports: list[Report]) -> str:
    """The gradebook as CSV, one row per file."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["file", "right", "consistent", "wrong", "blank", "score", "first_wrong",
                "mistake", "diagnosis"])  # fmt: skip
    for r in reports:
        first = r.findings[0] if r.findings else None
        w.writerow([r.answers, r.count("right"), r.count("consistent"), r.count("wrong"),
                    r.blank, score(r), r.first_wrong or "", (first.mistake or "") if first else "",
                    _diagnosis_short(r, labels=True)])  # fmt: skip
    return out.getvalue()


def _finding(f: Finding) -> dict[str, Any]:
    return {"stage": f.stage, "mistake": f.mistake, "label": f.label, "astray": f.astray,
            "also": f.also, "same_in": f.more}  # fmt: skip


def report_dict(report: Report) -> dict[str, Any]:
    """A report for scripts: counts, a verdict per cell (1-based indices), the diagnosis."""
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
                 "verdict": c.verdict, "basis": c.basis}  # fmt: skip
        cells.append(cell)
    return {
        "answers": report.answers,
        "ok": report.ok,
        "right": report.count("right"),
        "consistent": report.count("consistent"),
        "wrong": report.count("wrong"),
        "blank": report.blank,
        "cells": cells,
        "diagnosis": [_finding(f) for f in report.findings],
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
