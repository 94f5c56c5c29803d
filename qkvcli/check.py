"""Mark a student's answers against the true stages, with follow-through and diagnosis.

An answer sheet is JSON keyed by stage names (``null`` = left blank), or CSV
per stage. Numbers keep the text they were written with, because a value
written with k decimals is right when it agrees with the true value rounded to
k decimals, with one unit in the last place of slack (none for a whole number,
nor when the true value itself has no more than k decimals, e.g. a score of 16). A wrong cell that
agrees with what follows from the student's own earlier stages is
"consistent" (follow-through marking), so one slip is not counted five times.

>>> agrees(written("0.43"), 0.4319371), agrees(written("0.44"), 0.4319371)
(True, True)
>>> agrees(written("0.45"), 0.4319371), agrees(written("2"), 1.1547)
(False, False)
>>> agrees(written("17"), 16.0), agrees(written("16.0"), 16.0)
(False, True)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import TYPE_CHECKING, Any

from .errors import InputError, QkvError, shape_str
from .load import decode_json
from .load.nested import NEG_INF_WORDS
from .trace import STAGES, to_internal

if TYPE_CHECKING:
    import numpy as np

    from .mistakes import Variant
    from .options import Options
    from .problem import Problem, Resolved
    from .trace import Trace

#: The stages each stage is computed from directly.
INPUTS = {"Q": (), "K": (), "V": (), "scores": ("Q", "K"), "scaled": ("scores",),
          "masked": ("scaled",), "weights": ("masked", "scaled"), "head_outputs": ("weights", "V"),
          "concat": ("head_outputs", "weights", "V"), "output": ("concat", "weights", "V")}  # fmt: skip


def upstream(stage: str) -> set[str]:
    """Every stage ``stage`` depends on.

    >>> sorted(upstream("scaled"))
    ['K', 'Q', 'scores']
    """
    out: set[str] = set()
    for s in INPUTS[stage]:
        out |= {s} | upstream(s)
    return out


MASKED_WORDS = (*NEG_INF_WORDS, "masked")
VERDICTS = ("right", "consistent", "wrong")


class Written:
    """One number as the student wrote it: its text, value and decimals.

    >>> w = written("0.250"); (w.value, w.decimals)
    (0.25, 3)
    """

    __slots__ = ("decimals", "text", "value")

    def __init__(self, text: str, value: float, decimals: int) -> None:
        self.text, self.value, self.decimals = text, value, decimals

    def __repr__(self) -> str:
        return f"Written({self.text!r})"


def written(text: str) -> Written:
    """Read a number keeping its text; ``-inf`` / ``−∞`` / ``masked`` mean a masked cell."""
    t = text.strip()
    if t.lower() in MASKED_WORDS:
        return Written(t, -math.inf, 0)
    try:
        d = Decimal(t)
    except InvalidOperation:
        raise ValueError(t) from None
    if not d.is_finite():
        raise ValueError(t)
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int)
    return Written(t, float(d), min(max(0, -exponent), 400))  # guard (issue 12): 4.5e-32400


def agrees(w: Written, true: float, tolerance: float | None = None) -> bool:
    """Is ``w`` right for ``true``? Rounding-aware unless a ``tolerance`` is given."""
    if math.isnan(true):
        return False
    if math.isinf(true) or math.isinf(w.value):
        return w.value == true
    if tolerance is not None:
        return abs(w.value - true) <= tolerance
    with localcontext() as ctx:
        ctx.prec = 800
        unit = Decimal(1).scaleb(-w.decimals)
        exact = Decimal(true)
        rounded = exact.quantize(unit, rounding=ROUND_HALF_UP)
        mine = Decimal(w.text)
        if mine == rounded:
            return True
        if abs(mine - rounded) > unit:
            return False
        # One unit of slack for written decimals, unless the true value has no more decimals.
        exact_enough = abs(exact - rounded) <= exact.copy_abs() * Decimal("1e-9") + Decimal("1e-12")
        return w.decimals > 0 and not exact_enough


# ---------------------------------------------------------------- reading answer sheets


@dataclass
class Sheet:
    """A student's answers: stage name → nested lists of `Written` or None (blank)."""

    origin: str
    stages: dict[str, Any]


def parse_answers(text: str, origin: str) -> Sheet:
    """Parse a JSON answer sheet, keeping every number's text.

    >>> s = parse_answers('{"scores": [[2, 4.0], [null, "-inf"]]}', "a.json")
    >>> s.stages["scores"]
    [[Written('2'), Written('4.0')], [None, Written('-inf')]]
    """

    def number(t: str) -> Written:
        return written(t)

    def constant(t: str) -> Written:
        if t == "-Infinity":
            return Written(t, -math.inf, 0)
        raise InputError(f"{origin}: {t} is not an answer (write null for a blank cell)")

    hooks = {"parse_float": number, "parse_int": number, "parse_constant": constant}
    doc = decode_json(text, origin, **hooks)
    if not isinstance(doc, dict):
        raise InputError(f"{origin}: the top level must be an object keyed by stage names")
    stages: dict[str, Any] = {}
    for key, value in doc.items():
        if key.startswith("_"):
            continue
        if key not in STAGES:
            raise InputError(
                f"{origin}: unknown stage {key!r} (answer keys are stage names: {' '.join(STAGES)})"
            )
        stages[key] = _cells(value, origin, key, ())
    return Sheet(origin, stages)


def _cells(value: Any, origin: str, key: str, path: tuple[int, ...]) -> Any:
    """Check the leaves of an answer are numbers, masked words or null."""
    if isinstance(value, list):
        return [_cells(v, origin, key, (*path, i)) for i, v in enumerate(value)]
    if value is None or isinstance(value, Written):
        return value
    if isinstance(value, str):
        try:
            return written(value)
        except ValueError:
            pass
    where = ",".join(str(i + 1) for i in path)
    raise InputError(
        f"{origin}: {key}[{where}]: {json.dumps(value, default=lambda w: w.value)} is not a number or null"
    )


def parse_stage_csv(text: str, origin: str) -> list[list[Written | None]]:
    """One stage's answers from CSV text: rows of numbers, empty cells blank.

    >>> parse_stage_csv("0.5,0.5\\n1,\\n", "w.csv")
    [[Written('0.5'), Written('0.5')], [Written('1'), None]]
    """
    lines = [
        (i, ln)
        for i, ln in enumerate(text.splitlines(), 1)
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    if not lines:
        raise InputError(f"{origin}: holds no answers")
    delim = next((d for d in ("\t", ";", ",") if d in lines[0][1]), None)
    rows = []
    for lineno, line in lines:
        cells = line.split(delim) if delim else line.split()
        row: list[Written | None] = []
        for col, cell in enumerate(cells, 1):
            cell = cell.strip()
            if cell.lower() in ("", "null", "none", "?", "_"):
                row.append(None)
                continue
            try:
                row.append(written(cell))
            except ValueError:
                raise InputError(
                    f"{origin}: line {lineno}, column {col}: {cell!r} is not a number"
                ) from None
        rows.append(row)
    return rows


def load_answers(path: str | None, stage_files: dict[str, str] | None = None) -> Sheet:
    """An answer sheet from a JSON file (or none) with per-stage CSV files on top."""
    from .load import display, read_text

    sheet = parse_answers(read_text(path), display(path)) if path is not None else Sheet("", {})
    for stage, csv_path in (stage_files or {}).items():
        if stage not in STAGES:
            raise InputError(
                f"--stage-file {stage}={csv_path}: unknown stage {stage!r} (stages: {' '.join(STAGES)})"
            )
        sheet.stages[stage] = parse_stage_csv(read_text(csv_path), display(csv_path))
        sheet.origin = sheet.origin or display(csv_path)
    if not sheet.stages:
        raise InputError(
            f"{sheet.origin or 'answers'}: no answers (give stages such as scores, weights, output)"
        )
    return sheet


def _shape(nested: Any, origin: str, key: str) -> tuple[int, ...]:
    """The shape of a rectangular nested list, or an error naming where it is ragged."""
    if not isinstance(nested, list):
        return ()
    if not nested:
        raise InputError(f"{origin}: {key} is empty")
    shapes = [_shape(v, origin, key) for v in nested]
    for i, s in enumerate(shapes):
        if s != shapes[0]:
            raise InputError(
                f"{origin}: {key} entry {i + 1} is {shape_str(s) or 'a number'} but entry 1 is {shape_str(shapes[0]) or 'a number'}"
            )
    return (len(nested), *shapes[0])


def _grid(nested: Any, want: tuple[int, ...], origin: str, key: str, axes: str) -> np.ndarray:
    """The answers of one stage as an object array of `Written`/None in the stage's shape."""
    import numpy as np

    shape = _shape(nested, origin, key)
    lead = want[:-2]
    if shape != want and len(shape) == 2 and lead:
        # CSV as `qkv compute --format csv` writes it: index columns, then the row.
        rows, width = shape
        count = math.prod(lead)
        if rows == count * want[-2] and width in (want[-1], want[-1] + len(lead)):
            flat = [row[width - want[-1] :] for row in nested]
            nested, shape = flat, (rows, want[-1])
            out = np.empty(want, dtype=object)
            out.reshape(-1, want[-1])[:] = np.array(flat, dtype=object).reshape(-1, want[-1])
            return out
    if shape != want:
        raise InputError(
            f"{origin}: {key} is {shape_str(shape) or 'a number'} but this problem's {key} is "
            f"{shape_str(want)} ({axes})"
        )
    out = np.empty(want, dtype=object)
    for idx in np.ndindex(*want):
        v: Any = nested
        for i in idx:
            v = v[i]
        out[idx] = v
    return out


def axes_words(trace: Trace, name: str) -> str:
    """What the axes of a stage are: ``heads × queries × keys``."""
    s = trace.stages[name]
    words = (["batch items"] if trace.batched else []) + (["heads"] if s.per_head else [])
    return " × ".join([*words, s.rows, s.cols])


# ---------------------------------------------------------------- marking


@dataclass
class Cell:
    """One given answer cell and its verdict. ``index`` is 0-based in the stage's public shape."""

    stage: str
    index: tuple[int, ...]
    written: Written
    correct: float
    expected: float  # what follows from the student's own earlier stages
    verdict: str  # right | consistent | wrong
    basis: str | None = None  # for "consistent": the earlier stage it follows from


@dataclass
class Finding:
    """The diagnosis of a stage with wrong cells."""

    stage: str
    mistake: str | None = None  # key in mistakes.MISTAKES
    label: str | None = None
    astray: str | None = None  # first stage where the mistake's computation departs
    also: list[str] = field(default_factory=list)  # other mistakes that fit as well
    more: list[str] = field(default_factory=list)  # later stages the same mistake explains


@dataclass
class Report:
    """The marking of one answer sheet."""

    answers: str
    problem: str
    cells: list[Cell]
    findings: list[Finding]
    blank: int
    trace: Trace

    def count(self, verdict: str) -> int:
        """How many given cells got ``verdict``."""
        return sum(c.verdict == verdict for c in self.cells)

    @property
    def ok(self) -> bool:
        """Every given cell is right."""
        return all(c.verdict == "right" for c in self.cells)

    @property
    def first_wrong(self) -> str | None:
        """The first stage with a wrong cell."""
        return self.findings[0].stage if self.findings else None


def sheet_arrays(sheet: Sheet, trace: Trace) -> dict[str, np.ndarray]:
    """Every answered stage as an object array of `Written`/None, shapes checked."""
    arrays = {}
    for name, nested in sheet.stages.items():
        if name not in trace.stages:
            raise InputError(
                f"{sheet.origin}: no stage {name!r} in this problem (stages: {' '.join(trace.stages)})"
            )
        want = tuple(trace[name].shape)
        arrays[name] = _grid(nested, want, sheet.origin, name, axes_words(trace, name))
    return arrays


def grade(
    problem: Problem,
    options: Options,
    sheet: Sheet,
    tolerance: float | None = None,
    diagnose: bool = True,
) -> Report:
    """Mark ``sheet`` against ``problem``: verdict per cell, follow-through, diagnosis.

    Stages are marked in pipeline order. Each is compared with the truth and
    with what follows from the student's own earlier stages (blanks filled
    from the stages before them). What the student carries forward is the
    unrounded value their written one stands for: the true or followed-through
    value when it agrees, the diagnosed mistake's value when one reproduces
    it, else the number as written.
    """
    import numpy as np

    from .attention import run
    from .problem import resolve

    r = resolve(problem, options)
    truth = run(r)
    grids = sheet_arrays(sheet, truth)
    tried: list[tuple[Variant, Resolved]] | None = None  # the mistake variants, made when needed
    basis: dict[str, np.ndarray] = {}
    cells: list[Cell] = []
    findings: list[Finding] = []
    blank = 0
    troubled: list[str] = []  # stages so far with a cell that is not right
    for name in truth.stages:
        if name not in grids:
            continue
        grid = grids[name]
        expected = np.asarray(run(r, given=basis)[name], dtype=float) if basis else truth[name]
        carried = np.array(expected, dtype=float)
        wrong: list[tuple[tuple[int, ...], Written]] = []
        for idx in np.ndindex(*grid.shape):
            w = grid[idx]
            if w is None:
                blank += 1
                continue
            correct, exp = float(truth[name][idx]), float(expected[idx])
            if agrees(w, exp, tolerance):
                causes = [s for s in troubled if s in upstream(name)]
                if causes and not agrees(w, correct, tolerance):
                    cells.append(Cell(name, idx, w, correct, exp, "consistent", causes[-1]))
                else:
                    cells.append(Cell(name, idx, w, correct, exp, "right"))
            elif agrees(w, correct, tolerance):
                cells.append(Cell(name, idx, w, correct, exp, "right"))
                carried[idx] = correct
            else:
                cells.append(Cell(name, idx, w, correct, exp, "wrong"))
                carried[idx] = w.value
                wrong.append((idx, w))
        if wrong:
            finding = Finding(name)
            if tried is None:
                tried = _variants(problem, options, r) if diagnose else []
            fit = _diagnose(r, truth, tried, basis, name, grid, finding, tolerance)
            same = [f for f in findings if f.mistake and f.label == finding.label]
            if fit is not None and same:
                same[0].more.append(name)  # one slip seen in parallel stages (Q, K, V)
            else:
                findings.append(finding)
            if fit is not None:  # every given cell agrees with the mistake: carry its values
                given = np.array([w is not None for w in grid.reshape(-1)]).reshape(grid.shape)
                carried = np.where(given, fit, carried)
        if any(c.stage == name and c.verdict != "right" for c in cells):
            troubled.append(name)
        basis[name] = to_internal(r, name, carried)
    return Report(sheet.origin, problem.origin, cells, findings, blank, truth)


def _variants(problem: Problem, options: Options, r: Resolved) -> list[tuple[Variant, Resolved]]:
    """Every mistake variant that applies, resolved (those that do not fit are left out)."""
    from .mistakes import variants
    from .problem import resolve

    out = []
    for v in variants(problem, options, r):
        try:
            out.append((v, resolve(v.problem, v.options)))
        except QkvError:
            continue
    return out


def _diagnose(
    r: Resolved,
    truth: Trace,
    tried: list[tuple[Variant, Resolved]],
    basis: dict[str, np.ndarray],
    name: str,
    grid: np.ndarray,
    finding: Finding,
    tolerance: float | None,
) -> np.ndarray | None:
    """Name the first listed mistake that reproduces stage ``name`` from the student's earlier
    stages; return its values of that stage (None when no mistake fits)."""
    import numpy as np

    from .attention import run

    fit = None
    for v, rv in tried:
        try:
            t = run(rv, given=basis, steps=v.steps)
        except (QkvError, ValueError, FloatingPointError):
            continue
        stage = t.stages.get(name) or (t.stages.get("scaled") if name == "masked" else None)
        if stage is None or stage.array.shape != grid.shape:
            continue
        got = np.asarray(stage.array, dtype=float)
        if not all(
            w is None or agrees(w, float(got[idx]), tolerance) for idx, w in np.ndenumerate(grid)
        ):
            continue
        if fit is None:
            fit = got
            finding.mistake, finding.label = v.key, v.label
            finding.astray = _astray(truth, run(rv, steps=v.steps), name)
        elif v.label != finding.label and len(finding.also) < 3:
            finding.also.append(v.label)
    return fit


def _astray(truth: Trace, wrong: Trace, limit: str) -> str:
    """The first stage (up to ``limit``) where a mistaken computation departs from the truth."""
    import numpy as np

    for name in truth.stages:
        other = wrong.stages.get(name) or (wrong.stages.get("scaled") if name == "masked" else None)
        if other is None or other.array.shape != truth[name].shape:
            return name
        a, b = np.asarray(truth[name], float), np.asarray(other.array, float)
        if not np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True):
            return name
        if name == limit:
            break
    return limit
