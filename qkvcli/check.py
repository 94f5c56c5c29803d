"""Mark a student's answers against the true stages, with follow-through and diagnosis.

Stages are marked in pipeline order, each cell by the marking model
(`marking`): **right** when it agrees with the truth; **consistent** when it
agrees with what follows from the student's own earlier values — after an
earlier slip (so one slip is counted once), or after rounding carried
forward (not a mistake: the note says what it cost); else **wrong**. A stage
with wrong cells is recomputed from the student's earlier values under every
known mistake (`mistakes`), and every one that reproduces it is named; when
none does, single-cell slips are looked for (a sign, two digits swapped, a
softmax row missing a term of its denominator or carrying a wrong e^x); when
nothing fits, the diagnosis says so.

>>> from .answers import parse_answers
>>> import numpy as np
>>> from .problem import Problem
>>> from .options import Options
>>> p = Problem({"Q": np.eye(2), "K": np.eye(2), "V": np.eye(2)}, origin="p.json")
>>> report = grade(p, Options(), parse_answers('{"weights": [[1, 0], [0, 1]]}', "a.json"))
>>> sorted(report.findings[0].keys), report.count("wrong")  # the same numbers: both named
(['argmax', 'row-sum'], 4)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .answers import Sheet, Written, grid_of, load_answers, parse_answers, written
from .errors import InputError, QkvError, shape_str
from .i18n import N_, _, ngettext
from .i18n import _ as tr
from .load.values import ascii_forms
from .marking import (
    Cells,
    Precision,
    agrees,
    agrees_many,
    bounds,
    halves_many,
    window,
    windows,
)
from .trace import to_internal, to_public

if TYPE_CHECKING:
    import numpy as np

    from .mistakes import Variant
    from .options import Options
    from .problem import Problem, Resolved
    from .trace import Trace

__all__ = ["Cell", "Finding", "Report", "Sheet", "Slip", "cell_name", "grade", "load_answers",
           "parse_answers", "upstream", "written"]  # fmt: skip

#: The stages each stage may be computed from directly (a run has some of them).
INPUTS = {"Q": (), "K": (), "V": (), "Q_normed": ("Q",), "K_normed": ("K",),
          "Q_rotated": ("Q_normed", "Q"), "K_rotated": ("K_normed", "K"),
          "scores": ("Q_rotated", "Q_normed", "Q", "K_rotated", "K_normed", "K"),
          "scaled": ("scores",), "capped": ("scaled",), "masked": ("capped", "scaled"),
          "weights": ("masked", "capped", "scaled"), "head_outputs": ("weights", "V"),
          "concat": ("head_outputs", "weights", "V"), "output": ("concat", "weights", "V")}  # fmt: skip
#: The logit stages, last first: the one a run's softmax reads is the first it has.
LOGITS = ("masked", "capped", "scaled")
VERDICTS = ("right", "consistent", "wrong")


def upstream(stage: str) -> set[str]:
    """Every stage ``stage`` depends on.

    >>> sorted(upstream("scaled"))  # Q_normed … where the run has them
    ['K', 'K_normed', 'K_rotated', 'Q', 'Q_normed', 'Q_rotated', 'scores']
    """
    out: set[str] = set()
    for s in INPUTS[stage]:
        out |= {s} | upstream(s)
    return out


def cell_name(index: tuple[int, ...], per_head: bool, batched: bool) -> str:
    """A cell as people name it, 1-based: ``[2,3]``, ``head 1 [2,3]``, ``item 2 [1,1]``.

    >>> cell_name((0, 1, 2), per_head=True, batched=False)
    'head 1 [2,3]'
    """
    lead = []
    rest = list(index)
    if batched:
        lead.append(_("item {n}").format(n=rest.pop(0) + 1))
    if per_head:
        lead.append(_("head {n}").format(n=rest.pop(0) + 1))
    where = (f"[{rest[0] + 1},{rest[1] + 1}]" if len(rest) == 2
             else _("row {n}").format(n=rest[0] + 1))  # fmt: skip
    return " ".join([*lead, where])


#: What the axes of a stage index, as `axes_words` says them.
AXIS_WORDS = {"queries": N_("queries"), "keys": N_("keys"), "features": N_("features")}


def joined(items: list[str], sep: str = ", ") -> str:
    """Items in a list, separated as the language separates them (``, `` or ``、``; `` or ``)."""
    return (_(", ") if sep == ", " else _(" or ")).join(items)


@dataclass(eq=False)
class Cell:
    """One given answer cell and its verdict. ``index`` is 0-based in the stage's public shape."""

    stage: str
    index: tuple[int, ...]
    written: Written
    correct: float
    expected: float  # what follows from the student's own earlier stages
    verdict: str  # right | consistent | wrong
    basis: str | None = None  # for "consistent": the earlier stage it follows from
    rounding: bool = False  # consistent because of rounding carried forward (not a mistake)


@dataclass(eq=False)
class Slip:
    """A slip in one cell (``index``) or one row of weights (``index`` ends at the row)."""

    index: tuple[int, ...]
    kind: str  # sign | digits | cell | denominator | exp
    text: str


@dataclass(eq=False)
class Finding:
    """The diagnosis of a stage with wrong cells.

    ``fit``: ``full`` (one known mistake, or several giving the same numbers,
    reproduces every given cell), ``several`` (different mistakes each do),
    ``partial`` (one reproduces most of the wrong cells), ``slips`` (single
    cells or rows), ``layout`` (the stage written transposed or in another
    shape), ``none`` (nothing known explains it).
    """

    stage: str
    fit: str = "none"
    mistake: str | None = None  # key in mistakes.MISTAKES
    label: str | None = None
    astray: str | None = None  # first stage where the mistake's computation departs
    also: list[str] = field(default_factory=list)  # other labels that fit as well
    keys: list[str] = field(default_factory=list)  # every mistake key that fits
    more: list[str] = field(default_factory=list)  # parallel stages the same mistake explains
    slips: list[Slip] = field(default_factory=list)
    detail: str = ""


@dataclass(eq=False)
class Report:
    """The marking of one answer sheet (``error`` set when it could not be read or marked)."""

    answers: str
    problem: str
    cells: list[Cell]
    findings: list[Finding]
    blank: int
    trace: Trace | None
    precision: Precision = field(default_factory=Precision)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def count(self, verdict: str) -> int:
        """How many given cells got ``verdict``."""
        return sum(c.verdict == verdict for c in self.cells)

    @property
    def ok(self) -> bool:
        """Nothing wrong: every given cell right, or consistent only through rounding."""
        return self.error is None and not self.findings and self._cells_ok()

    def _cells_ok(self) -> bool:
        return all(c.verdict == "right" or (c.verdict == "consistent" and c.rounding)
                   for c in self.cells)  # fmt: skip

    @property
    def first_wrong(self) -> str | None:
        """The first stage with a wrong cell (or a layout finding)."""
        return self.findings[0].stage if self.findings else None

    @property
    def score(self) -> float | None:
        """Credit over the cells given: right and rounding 1, consistent after a slip ½."""
        if not self.cells:
            return None
        credit = sum(
            1.0 if c.verdict == "right" or c.rounding else 0.5 if c.verdict == "consistent" else 0
            for c in self.cells
        )
        return credit / len(self.cells)


# ---------------------------------------------------------------- the answers in the stages' shapes


def axes_words(trace: Trace, name: str) -> str:
    """What the axes of a stage are: ``heads × queries × keys``."""
    s = trace.stages[name]
    words = ([_("batch items")] if trace.batched else []) + ([_("heads")] if s.per_head else [])
    return " × ".join([*words, tr(AXIS_WORDS[s.rows]), tr(AXIS_WORDS[s.cols])])


@dataclass(eq=False)
class Answered:
    """One answered stage: its cells in the stage's shape, or in another shape (``misfit``)."""

    grid: np.ndarray
    transposed: bool = False
    misfit: bool = False


def sheet_arrays(sheet: Sheet, trace: Trace) -> dict[str, Answered]:
    """Every answered stage in the stage's shape; a stage written transposed is turned back."""
    import numpy as np

    out = {}
    for name, nested in sheet.stages.items():
        if name not in trace.stages:
            raise InputError(
                _("{origin}: no stage {name!r} in this problem (stages: {names})").format(
                    origin=sheet.origin, name=name, names=" ".join(trace.stages)
                )
            )
        want = tuple(trace[name].shape)
        grid = grid_of(nested, sheet.origin, name)
        if grid.shape == want:
            out[name] = Answered(grid)
            continue
        flat = _index_columns(grid, want)
        new = _new_rows(grid, want, trace, name)
        if flat is not None:
            out[name] = Answered(flat)
        elif new is not None:
            out[name] = Answered(new)
        elif len(grid.shape) == len(want) >= 2 and grid.shape[:-2] + grid.shape[-2:][::-1] == want:
            out[name] = Answered(np.ascontiguousarray(grid.swapaxes(-1, -2)), transposed=True)
        else:
            out[name] = Answered(grid, misfit=True)
    return out


def _new_rows(
    grid: np.ndarray, want: tuple[int, ...], trace: Trace, name: str
) -> np.ndarray | None:
    """A decode step's K or V (normed, rotated) written without the cache's rows: the new
    tokens' rows, the cached ones left blank (they are given in past_key / past_value)."""
    import numpy as np

    from .trace import AXES

    if not trace.past or AXES[name][0] != "keys" or len(grid.shape) != len(want):
        return None
    short = [k for k in range(len(want)) if grid.shape[k] != want[k]]
    if len(short) != 1 or want[short[0]] - grid.shape[short[0]] != trace.past:
        return None
    out = np.empty(want, dtype=object)  # None: blank
    index = [slice(None)] * len(want)
    index[short[0]] = slice(trace.past, None)
    out[tuple(index)] = grid
    return out


def _index_columns(grid: np.ndarray, want: tuple[int, ...]) -> np.ndarray | None:
    """A per-head stage as `qkv compute --format csv` writes it: index columns, then the row."""
    import numpy as np

    lead = want[:-2]
    if len(grid.shape) != 2 or not lead:
        return None
    rows, width = grid.shape
    if rows != math.prod(lead) * want[-2] or width not in (want[-1], want[-1] + len(lead)):
        return None
    out = np.empty(want, dtype=object)
    out.reshape(-1, want[-1])[:] = grid[:, width - want[-1] :].reshape(-1, want[-1])
    return out


def _misfit_error(sheet: Sheet, trace: Trace, name: str, shape: tuple[int, ...]) -> InputError:
    return InputError(
        _("{origin}: {name} is {shape} but this problem's {name} is {want} ({axes})").format(
            origin=sheet.origin, name=name, shape=shape_str(shape) or _("a number"),
            want=shape_str(tuple(trace[name].shape)), axes=axes_words(trace, name))
    )  # fmt: skip


# ---------------------------------------------------------------- marking


class _Marker:
    """The state of marking one sheet: what the student carries forward, stage by stage."""

    def __init__(
        self, problem: Problem, options: Options, precision: Precision, diagnose: bool
    ) -> None:
        from .attention import run
        from .problem import resolve

        self.problem, self.options, self.precision, self.diagnose = (
            problem, options, precision, diagnose)  # fmt: skip
        self.r = r = resolve(problem, options)
        self.truth = run(r)
        # What follows from a student's values may have rows with no key left: NaN, not an error.
        self.r_follow = resolve(problem, replace(options, empty_rows="nan")) if (
            options.empty_rows == "error") else r  # fmt: skip
        self.truth_int = _internal(r, self.truth)
        self.truth_bounds = bounds(r, self.truth_int, {})
        self.basis: dict[str, np.ndarray] = {}
        self.given: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.slipped: list[str] = []  # stages with a wrong or slip-consistent cell
        self.cells: list[Cell] = []
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self.blank = 0
        self.grids: dict[str, np.ndarray] = {}
        self.windows: dict[str, tuple[np.ndarray, ...]] = {}
        self._tried: list[tuple[Variant, Resolved]] | None = None

    @property
    def tried(self) -> list[tuple[Variant, Resolved]]:
        if self._tried is None:
            self._tried = _variants(self.problem, self.options, self.r)
        return self._tried

    def follow(
        self, rv: Resolved | None = None, steps: Any = None, given: Any = None
    ) -> Trace | None:
        """A run from the student's own values (None when they lead nowhere, e.g. an overflow)."""
        from .attention import STEPS, run

        try:
            return run(rv or self.r_follow, given=self.basis if given is None else given,
                       steps=steps or STEPS)  # fmt: skip
        except (QkvError, ValueError, FloatingPointError, IndexError):
            return None

    def spread(self, rv: Resolved, steps: Any, name: str) -> np.ndarray | None:
        """How far a stage moves when the student's written values move within their rounding.

        The first-order bound Σ |∂cell/∂x|·half-unit(x), by nudging each
        written value that flows into the stage (those not hidden behind a
        later written stage) by its half-unit: what a computation from
        unrounded values may differ by under a mistake (e^x grows with its
        exponent, so a mistake's stage may move more than the right one).
        """
        import numpy as np

        base = self.follow(rv, steps)
        a = None if base is None else _stage_of(base, name)
        if a is None:
            return None
        a = np.asarray(a, float)
        ups = upstream(name)
        written_ups = [k for k in self.basis if k in ups]
        frontier = [k for k in written_ups if not any(k in upstream(t) for t in written_ups)]
        moved = np.zeros(a.shape)
        for k in frontier:
            where, h = self.given[k]
            b = self.basis[k]
            for idx in zip(*np.nonzero(where & (h > 0) & np.isfinite(b))):
                nudged = dict(self.basis)
                nudged[k] = b.copy()
                nudged[k][idx] += h[idx]
                t = self.follow(rv, steps, nudged)
                other = None if t is None else _stage_of(t, name)
                if other is None or other.shape != a.shape:
                    return None
                moved = moved + np.nan_to_num(np.abs(np.asarray(other, float) - a))
        return moved

    def window_at(self, w: Written, true: float, b: tuple[np.ndarray, ...], idx: tuple) -> float:
        return window(w, true, self.precision, tuple(float(t[idx]) for t in b))

    def mark(self, name: str, ans: Answered, origin: str) -> None:
        """Mark one stage, diagnose its wrong cells, and carry the student's values on."""
        import numpy as np

        r, grid = self.r, ans.grid
        exp_trace = (self.follow() or self.truth) if self.basis else self.truth
        exp_int = _internal(r, exp_trace) if self.basis else self.truth_int
        follow = bounds(r, exp_int, self.given) if self.given else self.truth_bounds
        truth = np.asarray(self.truth[name], dtype=float)
        expected = np.asarray(exp_trace[name], dtype=float)
        tb = tuple(to_public(r, name, t) for t in self.truth_bounds[name])
        fb = tuple(to_public(r, name, t) for t in follow[name])
        start = len(self.cells)
        pending: list[int] = []
        pairs = _cells(grid)
        self.blank += grid.size - len(pairs)
        cells = Cells.of(pairs, grid.ndim)
        p = self.precision
        t_all, e_all = truth[cells.index], expected[cells.index]  # (k,) each
        right = agrees_many(cells, t_all, windows(cells, t_all, p, _at(tb, cells)))
        follows = agrees_many(cells, e_all, windows(cells, e_all, p, _at(fb, cells)))
        basis, rounding = self._basis(name) if (follows & ~right).any() else ("", False)
        for (idx, w), t, e, ok, cons in zip(
            pairs, t_all.tolist(), e_all.tolist(), right.tolist(), follows.tolist()
        ):
            if ok:
                self.cells.append(Cell(name, idx, w, t, e, "right"))
            elif cons:
                self.cells.append(Cell(name, idx, w, t, e, "consistent", basis, rounding))
            else:
                pending.append(len(self.cells))
                self.cells.append(Cell(name, idx, w, t, e, "wrong"))
        mine = self.cells[start:]
        rounded = [c for c in mine if c.verdict == "consistent" and c.rounding]
        if rounded:
            self._rounding_note(name, rounded)
        if pending and self.diagnose:
            self._infer_rounding(name, [self.cells[i] for i in pending], fb)
        wrong = [c for c in mine if c.verdict == "wrong"]
        if ans.transposed:
            self.findings.append(_layout(self.truth, name, grid.shape))
        if wrong:
            self._diagnose(name, grid, wrong, expected, exp_trace, fb, (pairs, cells))
        if any(
            c.verdict == "wrong" or (c.verdict == "consistent" and not c.rounding) for c in mine
        ):
            self.slipped.append(name)
        carried = expected.copy()
        where = np.zeros(grid.shape, dtype=bool)
        halves = np.zeros(grid.shape)
        correct = np.array([c.correct for c in mine], dtype=float)  # (k,)
        follows_e = np.array([c.expected for c in mine], dtype=float)  # (k,) after any inference
        # −1e9 written for a masked cell stands for −∞
        v = np.where(cells.sentinel & np.isinf(correct), -np.inf, cells.value)  # (k,)
        carried[cells.index] = v
        where[cells.index] = True
        exact = _same_many(v, correct) | (_same_many(v, np.round(v)) & _same_many(v, follows_e))
        halves[cells.index] = np.where(exact, 0.0, halves_many(cells, correct, p))
        self.grids[name] = grid
        self.windows[name] = fb
        self.basis[name] = to_internal(r, name, carried)
        self.given[name] = (to_internal(r, name, where).astype(bool), to_internal(r, name, halves))

    def _basis(self, name: str) -> tuple[str, bool]:
        """The earlier stage a consistent cell follows from, and whether only by rounding."""
        ups = upstream(name)
        slips = [s for s in self.slipped if s in ups]
        if slips:
            return slips[-1], False
        rounded = [s for s in self.given if s in ups]
        return (rounded[-1] if rounded else "earlier stages"), True

    def _rounding_note(self, name: str, cells: list[Cell]) -> None:
        basis = cells[0].basis or "earlier stages"
        places = [
            c.written.decimals
            for c in self.cells
            if c.stage == basis and c.written.decimals is not None
        ]
        most = max(places, default=None)
        how = (
            ""
            if most is None
            else ngettext(" ({n} decimal)", " ({n} decimals)", most).format(n=most)
        )
        cost = max(abs(c.expected - c.correct) for c in cells)
        self.notes.append(ngettext(
            "rounding: your {name} follows from your {basis} as you rounded it{how}; that moved "
            "{name} by up to {cost}, so {n} cell marked consistent, not wrong",
            "rounding: your {name} follows from your {basis} as you rounded it{how}; that moved "
            "{name} by up to {cost}, so {n} cells marked consistent, not wrong", len(cells),
        ).format(name=name, basis=tr(basis) if basis == "earlier stages" else basis, how=how,
                 cost=_short(cost), n=len(cells)))  # fmt: skip

    def _infer_rounding(self, name: str, pending: list[Cell], fb: tuple[np.ndarray, ...]) -> None:
        """Wrong cells that follow from earlier values rounded as they went (not written)."""
        import numpy as np

        from .mistakes import roundings

        ups = upstream(name)
        cells: Cells | None = None
        carried: tuple[np.ndarray, ...] = ()
        for ro in roundings():
            if ro.at:  # a factor worked out and rounded: it must act by this stage
                if not any(a in ups | {name} and a in self.truth.stages for a in ro.at):
                    continue
            elif ro.stage is not None and (ro.stage not in ups or ro.stage in self.given
                                           or ro.stage not in self.truth.stages):  # fmt: skip
                continue
            t = self.follow(steps=ro.steps)
            if t is None:
                continue
            got = np.asarray(t[name], dtype=float)
            if cells is None:
                cells = Cells.of([(c.index, c.written) for c in pending], got.ndim)
                carried = _at(fb, cells)
            value = got[cells.index]  # (k,)
            if agrees_many(cells, value, windows(cells, value, self.precision, carried)).all():
                for c in pending:
                    c.verdict, c.basis, c.rounding = "consistent", ro.words, True
                    c.expected = float(got[c.index])
                cost = max(abs(float(got[c.index]) - c.correct) for c in pending)
                self.notes.append(ngettext(
                    "rounding: your {name} follows from {words} (not in your answers); that "
                    "moved {name} by up to {cost}, so {n} cell marked consistent, not wrong",
                    "rounding: your {name} follows from {words} (not in your answers); that "
                    "moved {name} by up to {cost}, so {n} cells marked consistent, not wrong",
                    len(pending),
                ).format(name=name, words=ro.words, cost=_short(cost), n=len(pending)))  # fmt: skip
                return

    def _diagnose(
        self,
        name: str,
        grid: np.ndarray,
        wrong: list[Cell],
        expected: np.ndarray,
        exp_trace: Trace,
        fb: tuple[np.ndarray, ...],
        given: tuple[list[tuple[tuple[int, ...], Written]], Cells],
    ) -> None:
        finding = Finding(name)
        if self.diagnose:
            _Diagnosis(self, name, grid, wrong, expected, exp_trace, fb, given).run(finding)
        same = [f for f in self.findings
                if f.mistake and f.mistake == finding.mistake and f.fit == finding.fit
                and f.stage in ("Q", "K", "V") and name in ("K", "V")]  # fmt: skip
        if finding.fit == "full" and same:
            same[0].more.append(name)  # one slip seen in parallel stages (Q, K, V)
            return
        if finding.fit == "full":
            for f in self.findings:  # the same mistake, seen again further on: one finding
                if f.fit in ("full", "several") and finding.mistake in f.keys:
                    if f.mistake != finding.mistake or f.fit == "several":
                        f.fit, f.mistake, f.label = "full", finding.mistake, finding.label
                        f.also, f.keys = finding.also, finding.keys
                    f.more.append(name)
                    return
        self.findings.append(finding)

    def mark_misfit(self, name: str, grid: np.ndarray, sheet: Sheet) -> None:
        """A stage in a shape this problem's stage does not have: a known mistake's shape, or refused."""
        import numpy as np

        for v, rv in self.tried if self.diagnose else []:
            t = self.follow(rv, v.steps)
            stage = None if t is None else t.stages.get(name)
            if stage is None or stage.array.shape != grid.shape:
                continue
            got = np.asarray(stage.array, dtype=float)
            moved = self.spread(rv, v.steps, name)
            extra = np.zeros(got.shape) if moved is None else moved
            if all(w is None or agrees(w, float(got[i]),
                                       window(w, float(got[i]), self.precision) + float(extra[i]))
                   for i, w in np.ndenumerate(grid)):  # fmt: skip
                for idx, w in np.ndenumerate(grid):
                    if w is None:
                        self.blank += 1
                    else:
                        self.cells.append(Cell(name, idx, w, math.nan, float(got[idx]), "wrong"))
                want = shape_str(tuple(self.truth[name].shape))
                self.slipped.append(name)
                for f in self.findings:  # the same mistake in a parallel stage (K, then V)
                    if f.fit == "full" and f.mistake == v.key:
                        f.more.append(name)
                        return
                self.findings.append(Finding(
                    name, "full", v.key, v.label, name, keys=[v.key],
                    detail=_("your {name} is {shape}, this problem's is {want}").format(
                        name=name, shape=shape_str(grid.shape), want=want)))  # fmt: skip
                return
        raise _misfit_error(sheet, self.truth, name, grid.shape)


def _same_many(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Equal but for float noise: a value carried exactly (a whole number, an exact truth)."""
    import numpy as np

    scale = np.where(np.abs(b) > 1.0, np.abs(b), 1.0)  # max(1, |b|)
    return np.isfinite(a) & np.isfinite(b) & (np.abs(a - b) <= 1e-12 * scale)


def _at(b: tuple[np.ndarray, ...], cells: Cells) -> tuple[np.ndarray, ...]:
    """What earlier steps add (`bounds`), at each of ``cells``."""
    return tuple(t[cells.index] for t in b)


def _stage_of(t: Trace, name: str) -> np.ndarray | None:
    """A stage of a run; a run without a mask stands in its logits for ``masked``."""
    stage = _stage_in(t, name)
    return None if stage is None else stage.array


def _stage_in(t: Trace, name: str) -> Any:
    """`_stage_of`'s `Stage`: ``masked`` falls back on ``capped``, then ``scaled``."""
    if name in t.stages or name not in LOGITS:
        return t.stages.get(name)
    return next((t.stages[s] for s in LOGITS[LOGITS.index(name) :] if s in t.stages), None)


def logits_of(t: Trace) -> str:
    """The logit stage a run's softmax reads: ``masked``, ``capped`` or ``scaled``."""
    return next(s for s in LOGITS if s in t.stages)


def _short(x: float) -> str:
    """A cost in a note: 4 significant digits."""
    return f"{x:.4g}"


def _layout(truth: Trace, name: str, shape: tuple[int, ...]) -> Finding:
    s = truth.stages[name]
    return Finding(
        name, "layout", "transposed", _("your {name} look transposed").format(name=name),
        detail=_("written {shape} with {cols} as rows; marked at the transposed places").format(
            shape=shape_str(shape[-2:]), cols=tr(AXIS_WORDS[s.cols])),
    )  # fmt: skip


def _internal(r: Resolved, t: Trace) -> dict[str, np.ndarray]:
    import numpy as np

    return {name: np.asarray(to_internal(r, name, t[name]), dtype=float) for name in t.stages}


def grade(
    problem: Problem,
    options: Options,
    sheet: Sheet,
    precision: Precision | None = None,
    diagnose: bool = True,
) -> Report:
    """Mark ``sheet`` against ``problem``: verdict per cell, follow-through, diagnosis.

    What the student carries forward is what they wrote (blanks filled from
    their earlier values): a stage computed from their own rounded values is
    consistent, and the window of each later cell accounts for that rounding.
    Answers beyond the float range overflow quietly: they are marked, not warned about.
    """
    import numpy as np

    with np.errstate(all="ignore"):
        m = _Marker(problem, options, precision or Precision(), diagnose)
        answered = sheet_arrays(sheet, m.truth)
        for name in m.truth.stages:
            ans = answered.get(name)
            if ans is None:
                continue
            if ans.misfit:
                m.mark_misfit(name, ans.grid, sheet)
            else:
                m.mark(name, ans, sheet.origin)
    return Report(sheet.origin, problem.origin, m.cells, m.findings, m.blank, m.truth,
                  m.precision, m.notes)  # fmt: skip


def _variants(problem: Problem, options: Options, r: Resolved) -> list[tuple[Variant, Resolved]]:
    """Every mistake variant that applies, resolved (those that do not fit are left out)."""
    from .mistakes import variants
    from .problem import resolve

    out = []
    for v in variants(problem, options, r):
        o = v.options if v.options.empty_rows != "error" else replace(v.options, empty_rows="nan")
        try:
            out.append((v, resolve(v.problem, o)))
        except QkvError:
            continue
    return out


# ---------------------------------------------------------------- diagnosis


class _Diagnosis:
    """Which known mistakes, or which single-cell slips, reproduce a stage's wrong cells."""

    def __init__(
        self,
        m: _Marker,
        name: str,
        grid: np.ndarray,
        wrong: list[Cell],
        expected: np.ndarray,
        exp_trace: Trace,
        fb: tuple[np.ndarray, ...],
        given: tuple[list[tuple[tuple[int, ...], Written]], Cells],
    ) -> None:
        import numpy as np

        self.m, self.name, self.grid, self.wrong = m, name, grid, wrong
        self.expected, self.exp_trace, self.fb = expected, exp_trace, fb
        self.given, self.cells = given  # the grid's written cells (`_cells`), as arrays
        self.carried = _at(fb, self.cells)  # what earlier steps add, at each given cell
        position = {idx: k for k, (idx, _) in enumerate(self.given)}
        self.wrong_at = np.array([position[c.index] for c in wrong], dtype=np.intp)  # in given
        writtens = {c.written for c in wrong}
        self.as_wrong = np.array([w in writtens for _, w in self.given], dtype=bool)
        self._stage_cells: dict[str, tuple[Cells, tuple[np.ndarray, ...]]] = {}

    def near_many(self, got: np.ndarray, extra: np.ndarray | None = None) -> np.ndarray:
        """`near` for every given cell at once: ``got`` and ``extra`` in the stage's shape."""
        value = got[self.cells.index]  # (k,)
        width = windows(self.cells, value, self.m.precision, self.carried)
        width = width + (0.0 if extra is None else extra[self.cells.index])
        return agrees_many(self.cells, value, width)

    def agrees_all(self, got: np.ndarray, extra: np.ndarray | None = None) -> bool:
        return bool(self.near_many(got, extra).all())

    def close(self, got: np.ndarray) -> bool:
        """Within a few percent everywhere: worth asking how far rounding could move it."""
        import numpy as np

        c = self.cells
        value = got[c.index]  # (k,)
        finite = np.isfinite(value) & np.isfinite(c.value)
        if not agrees_many(c, value, np.zeros(value.shape))[~finite].all():
            return False
        width = windows(c, value, self.m.precision, self.carried)
        with np.errstate(all="ignore"):
            a, b = 0.05 * np.abs(value), 100 * width
            far = np.abs(c.value - value) > np.where(b > a, b, a)  # max(a, b), as Python's max
        return not far[finite].any()

    def near(self, w: Written, value: float, idx: tuple, extra: float = 0.0) -> bool:
        return agrees(w, value, self.m.window_at(w, value, self.fb, idx) + extra)

    def run(self, finding: Finding) -> None:
        import numpy as np

        fits, partial = self._fits()
        if fits:
            groups: list[tuple[np.ndarray, list[tuple[Variant | None, str]]]] = []
            for got, v, label in fits:
                for g in groups:
                    same_key = v is not None and g[1][0][0] is not None and g[1][0][0].key == v.key
                    if same_key or np.allclose(g[0], got, rtol=1e-9, atol=1e-12, equal_nan=True):
                        g[1].append((v, label))
                        break
                else:
                    groups.append((got, [(v, label)]))
            first = groups[0][1]
            v0 = first[0][0]
            finding.fit = "full" if len(groups) == 1 else "several"
            finding.mistake = v0.key if v0 else "transposed"
            finding.label = first[0][1]
            finding.also = [label for _v, label in first[1:]] + [
                joined([label for _v, label in g[1]], " or ") for g in groups[1:]
            ]
            finding.keys = list(dict.fromkeys(
                (v.key if v else "transposed") for g in groups for v, _label in g[1]))  # fmt: skip
            finding.astray = self._astray(v0)
            return
        slips = self._slips()
        if slips is not None:
            finding.fit, finding.slips = "slips", slips
            finding.mistake = "slip"
            finding.label = _("; ").join(s.text for s in slips)
            return
        if partial is not None:
            got, v, missed = partial
            finding.fit, finding.mistake, finding.label = "partial", v.key, v.label
            finding.keys = [v.key]
            finding.detail = joined([self.place(c.index) for c in missed])
            finding.astray = self._astray(v)

    def place(self, idx: tuple[int, ...]) -> str:
        t = self.m.truth
        return cell_name(idx, t.stages[self.name].per_head, t.batched)

    def _fits(self) -> tuple[list[tuple[np.ndarray, Variant | None, str]], Any]:
        """Every variant reproducing every given cell; the best partial fit."""
        import numpy as np

        name, m = self.name, self.m
        fits: list[tuple[np.ndarray, Variant | None, str]] = []
        best: tuple[int, Any] = (0, None)
        for v, rv in m.tried:
            t = m.follow(rv, v.steps)
            got = None if t is None else _stage_of(t, name)
            if got is None or got.shape != self.grid.shape:
                continue
            got = np.asarray(got, dtype=float)
            fit = self.agrees_all(got)
            if not fit and self.close(got):
                moved = m.spread(rv, v.steps, name)
                fit = moved is not None and self.agrees_all(got, moved)
            if fit:
                if self.upstream_agrees(v, rv):
                    fits.append((got, v, v.label))
                continue
            near = self.near_many(got)  # (k,)
            hit = near[self.wrong_at]  # (wrong,)
            matched = int(hit.sum())
            changed = bool((~near & ~self.as_wrong).any())  # a right cell the mistake changes
            enough = matched >= max(2, math.ceil(0.75 * len(self.wrong)))
            if enough and not changed and matched > best[0] and self.upstream_agrees(v, rv):
                missed = [c for c, h in zip(self.wrong, hit.tolist()) if not h]
                best = (matched, (got, v, missed))
        if len(self.grid.shape) >= 2 and self.grid.shape[-1] == self.grid.shape[-2]:
            flipped = self.expected.swapaxes(-1, -2)
            if self.agrees_all(flipped):
                label = _("your {name} are the right values transposed (rows and columns swapped)")
                label = label.format(name=name)
                fits.append((flipped, None, label))
        return fits, best[1]

    def upstream_agrees(self, v: Variant, rv: Resolved) -> bool:
        """Does the mistake also give the earlier stages the student wrote (where they are not wrong)?

        A mistake that would have changed a stage the student got right does
        not explain this one (cosine similarity does not explain weights that
        follow from correct dot-product scores).
        """
        import numpy as np

        from .attention import run

        m = self.m
        for s in [s for s in m.grids if s in upstream(self.name)]:
            before = {k: b for k, b in m.basis.items() if k in upstream(s)}
            try:
                t = run(rv, given=before, steps=v.steps)
            except (QkvError, ValueError, FloatingPointError, IndexError):
                return False
            stage = _stage_in(t, s)
            grid = m.grids[s]
            if stage is None or stage.array.shape != grid.shape:
                return False
            got = np.asarray(stage.array, dtype=float)
            if s not in self._stage_cells:  # the stage's cells not marked wrong
                kept = [
                    (c.index, c.written) for c in m.cells if c.stage == s and c.verdict != "wrong"
                ]
                cells = Cells.of(kept, grid.ndim)
                self._stage_cells[s] = (cells, _at(m.windows[s], cells))
            cells, carried = self._stage_cells[s]
            value = got[cells.index]  # (k,)
            if not agrees_many(cells, value, windows(cells, value, m.precision, carried)).all():
                return False
        return True

    def _astray(self, v: Variant | None) -> str:
        """The first stage (up to this one) where the mistake's computation departs from the student's."""
        import numpy as np

        if v is None:
            return self.name
        rv = next(rv for vv, rv in self.m.tried if vv is v)
        wrong = self.m.follow(rv, v.steps)
        if wrong is None:
            return self.name
        for name in self.exp_trace.stages:
            other = _stage_in(wrong, name)
            mine = self.exp_trace[name]
            if other is None or other.array.shape != mine.shape:
                return name
            a, b = np.asarray(mine, float), np.asarray(other.array, float)
            if not np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True):
                return name
            if name == self.name:
                break
        return self.name

    # ------------------------------------------------------------ single-cell slips

    def _slips(self) -> list[Slip] | None:
        """Every wrong cell explained as a slip of its own (or a softmax row's slip), or None."""
        m, name = self.m, self.name
        wrong = list(self.wrong)
        slips: list[Slip] = []
        rows_done: set[tuple[int, ...]] = set()
        softmax_rows = name == "weights" and m.r.options.normalize == "softmax"
        if softmax_rows:
            for c in wrong:
                row = c.index[:-1]
                if row in rows_done:
                    continue
                slip = self._row_slip(row)
                if slip is not None:
                    rows_done.add(row)
                    slips.append(slip)
            wrong = [c for c in wrong if c.index[:-1] not in rows_done]
        given = len(self.given)
        if len(wrong) > 3 or (wrong and len(wrong) * 2 > given):
            return None
        for c in wrong:
            slips.append(self._cell_slip(c))
        if softmax_rows:
            for slip in list(slips):
                if slip.kind in ("sign", "digits", "cell"):
                    slip.text += self._row_sum_words(slip.index[:-1])
        return slips

    def _row(self, row: tuple[int, ...]) -> tuple[list[tuple[int, Written]], np.ndarray]:
        import numpy as np

        cells = [(j, self.grid[(*row, j)]) for j in range(self.grid.shape[-1])]
        logits_name = logits_of(self.exp_trace)
        z = np.asarray(self.exp_trace[logits_name], dtype=float)[row]
        return [(j, w) for j, w in cells if w is not None], z

    def _row_sum_words(self, row: tuple[int, ...]) -> str:
        total, off = self._row_sum(row)
        label = self.place((*row, 0)).rsplit("[", 1)[0] + _("row {n}").format(n=row[-1] + 1)
        if off:
            return _("; {row} now sums to {total}, not {target}").format(
                row=label, total=f"{total:.4f}", target=self._row_target(row))  # fmt: skip
        return _("; {row} still sums to {target}").format(row=label, target=self._row_target(row))

    def _sink(self, row: tuple[int, ...]) -> float | None:
        """The sink logit of a row's head (gpt-oss), or None."""
        sinks = self.m.r.arrays.get("sinks")
        if sinks is None:
            return None
        return float(sinks[row[-2] if self.m.r.multihead else 0])

    def _row_target(self, row: tuple[int, ...]) -> str:
        """What a row of weights sums to: 1, or less with a sink (what follows from yours)."""
        import numpy as np

        if self._sink(row) is None:
            return "1"
        return f"{float(np.nansum(self.expected[row])):.4f}"

    def _row_sum(self, row: tuple[int, ...]) -> tuple[float, bool]:
        given, _z = self._row(row)
        values = dict((j, w.value) for j, w in given)
        width = sum(
            self.m.window_at(w, float(self.expected[(*row, j)]), self.fb, (*row, j))
            for j, w in given
        )
        total = sum(
            values.get(j, float(self.expected[(*row, j)])) for j in range(self.grid.shape[-1])
        )
        target = 1.0 if self._sink(row) is None else float(sum(
            float(self.expected[(*row, j)]) for j in range(self.grid.shape[-1])))  # fmt: skip
        return total, abs(total - target) > width + 1e-9

    def _row_slip(self, row: tuple[int, ...]) -> Slip | None:
        """A softmax row that follows from a denominator missing a term, or from a wrong e^x.

        Either changes every weight of the row, so at least two of its cells
        must be wrong; a wrong e^x keeps the row summing to 1, a missing term
        does not. With a sink (gpt-oss) its e^{sink} is a term of every
        denominator, and one may be left out too.
        """
        import numpy as np

        given, z = self._row(row)
        live = np.isfinite(z)
        wrong = [c for c in self.wrong if c.index[:-1] == row]
        if len(wrong) < 2 or len(given) < 2 or live.sum() < 2:
            return None
        zero = np.where(live, z, 0.0)
        logits = logits_of(self.exp_trace)
        hz = np.zeros(len(z))
        for k in LOGITS[LOGITS.index(logits) :]:
            if k in self.m.given:
                where, h = self.m.given[k]
                hz = np.where(
                    to_public(self.m.r, k, where)[row], to_public(self.m.r, k, h)[row], hz
                )
                break
        where = self.place((*row, 0)).rsplit("[", 1)[0] + _("row {n}").format(n=row[-1] + 1)
        i = row[-1] + 1

        sink = self._sink(row)
        target = self._row_target(row)

        def top_of(zz: np.ndarray) -> float:
            top = float(zz[live].max())
            return top if sink is None else max(top, sink)  # a sink is a logit of every row

        def numerators(zz: np.ndarray) -> np.ndarray:
            return np.where(live, np.exp(zz - top_of(zz)), 0.0)  # shifted numerators

        def rest(zz: np.ndarray) -> float:
            """The sink's term of the denominator, shifted as the numerators are."""
            return 0.0 if sink is None else math.exp(sink - top_of(zz))

        def fits(pred: Any, alt: dict[int, Any] | None = None, extra: Any = 0.0) -> bool:
            base = pred(zero)
            moved = np.zeros(len(z)) + extra
            for j in np.nonzero(hz > 0)[0]:  # what the written logits' rounding can move
                nudged = zero.copy()
                nudged[j] += hz[j]
                moved += np.abs(pred(nudged) - base)
            for j, w in given:
                ok = self.near(w, float(base[j]), (*row, j), float(moved[j]))
                if not ok and alt and j in alt:
                    ok = self.near(w, float(alt[j](zero)), (*row, j), float(moved[j]))
                if not ok:
                    return False
            return True

        def without(k: int) -> Any:
            def pred(zz: np.ndarray) -> np.ndarray:
                e = numerators(zz)
                return e / (e.sum() + rest(zz) - e[k])

            return pred

        def exact(k: int) -> Any:
            return lambda zz: numerators(zz)[k] / (numerators(zz).sum() + rest(zz))

        total, off = self._row_sum(row)
        if sink is not None and off and fits(lambda zz: numerators(zz) / numerators(zz).sum()):
            return Slip(row, "denominator",
                        _("{row}: the denominator leaves out the sink's e^{{{sink}}}; "
                          "the row sums to {total}, not {target}").format(
                            row=where, sink=f"{sink:g}", total=f"{total:.4f}", target=target))  # fmt: skip
        missing = [k for k in range(len(z)) if live[k] and (numerators(zero).sum() + rest(zero) - numerators(zero)[k]) > 0
                   and fits(without(k), {k: exact(k)})]  # fmt: skip
        if missing and off:
            keys = joined([_("key {n}").format(n=k + 1) for k in missing], " or ")
            k = missing[0]
            return Slip(row, "denominator",
                        _("{row}: the denominator leaves out e^{{{term}}} ({keys}); "
                          "the row sums to {total}, not {target}").format(
                            row=where, term=f"{logits}[{i},{k + 1}]", keys=keys,
                            total=f"{total:.4f}", target=target))  # fmt: skip
        if off and sink is None:
            return None  # a wrong e^x keeps a row summing to 1
        e0 = numerators(zero)
        S = e0.sum() + rest(zero)
        wrong_e = []
        for k, wk in given:
            if not live[k] or not 0 < wk.value < 1:
                continue
            E = wk.value * (S - e0[k]) / (1 - wk.value)  # the e-term the student's row implies

            def other(zz: np.ndarray, k: int = k, E: float = E, wk: float = wk.value) -> np.ndarray:
                e = numerators(zz)
                p = e / (e.sum() + rest(zz) - e[k] + E * e[k] / max(e0[k], 1e-300))
                p[k] = wk
                return p

            hk = self.m.window_at(wk, wk.value, self.fb, (*row, k))  # E as the rounded w_k gives it
            nudged = min(wk.value + hk, 1 - 1e-12)
            moved = np.abs(
                other(zero, k, nudged * (S - e0[k]) / (1 - nudged), wk.value) - other(zero)
            )
            if abs(E - e0[k]) > 1e-6 * max(e0[k], 1e-300) and fits(other, extra=moved):
                wrong_e.append((k, E))
        if wrong_e and len(wrong_e) < len(given):
            k, E = wrong_e[0]
            top = top_of(zero)
            raw_true = math.exp(float(z[k]))
            raw_mine = E * math.exp(top)
            keys = joined([_("key {n}").format(n=kk + 1) for kk, _e in wrong_e], " or ")
            as_if = (
                _(", as if {term} were {value}").format(
                    term=f"{logits}[{i},{k + 1}]", value=f"{math.log(raw_mine):.4f}")
                if raw_mine > 0
                else ""
            )  # fmt: skip
            sums = (_("the row still sums to {target}").format(target=target) if not off
                    else _("the row sums to {total}, not {target}").format(
                        total=f"{total:.4f}", target=target))  # fmt: skip
            return Slip(row, "exp",
                        _("{row}: a wrong e^x for {keys}: your weights imply e^{{{term}}} "
                          "≈ {mine}{as_if}, but e^{{{z}}} = {true}; {sums}").format(
                            row=where, keys=keys, term=f"{logits}[{i},{k + 1}]",
                            mine=f"{raw_mine:.6g}", as_if=as_if, z=f"{z[k]:.4f}",
                            true=f"{raw_true:.6g}", sums=sums))  # fmt: skip
        return None

    def _cell_slip(self, c: Cell) -> Slip:
        where = self.place(c.index)
        e = c.expected
        if (
            e != 0
            and math.isfinite(e)
            and agrees(c.written, -e, self.m.window_at(c.written, -e, self.fb, c.index))
        ):
            return Slip(c.index, "sign", _("{cell}: the sign is wrong ({yours} for {right})").format(
                cell=where, yours=c.written.text, right=_plain(e)))  # fmt: skip
        swapped = _digit_swap(c.written, e)
        if swapped is not None:
            return Slip(c.index, "digits", _("{cell}: two digits swapped ({yours} for {right})").format(
                cell=where, yours=c.written.text, right=swapped))  # fmt: skip
        return Slip(
            c.index,
            "cell",
            _("{cell}: a slip in this cell alone ({yours} for {right})").format(
                cell=where, yours=c.written.text, right=_plain(e)
            ),
        )


def _plain(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "−∞" if x < 0 else "∞"
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.4f}"


def _digit_swap(w: Written, true: float) -> str | None:
    """The correct value's text when ``w`` is it with two neighbouring digits swapped."""
    if w.form != "decimal" or not math.isfinite(true) or "e" in w.text.lower():
        return None
    text = ascii_forms(w.text).strip().replace("−", "-").lstrip("+")
    places = len(text.split(".", 1)[1]) if "." in text else 0
    unit = 10.0**-places
    if places > 17 or not math.isfinite(true / unit):
        return None  # more digits than a float holds: no swap to find
    for candidate in {
        round(true, places),
        math.floor(true / unit) * unit,
        math.ceil(true / unit) * unit,
    }:
        right = f"{candidate:.{places}f}"
        if len(right) != len(text) or right == text:
            continue
        diff = [i for i, (a, b) in enumerate(zip(text, right)) if a != b]
        if (len(diff) == 2 and diff[1] == diff[0] + 1 and text[diff[0]] == right[diff[1]]
                and text[diff[1]] == right[diff[0]] and "." not in (text[diff[0]], text[diff[1]])):  # fmt: skip
            return right
    return None


def _cells(grid: np.ndarray) -> list[tuple[tuple[int, ...], Written]]:
    """The written cells of a grid and their indices, in row-major order (blanks left out)."""
    import numpy as np

    flat = grid.ravel().tolist()
    keep = [i for i, w in enumerate(flat) if w is not None]
    where = zip(*(a.tolist() for a in np.unravel_index(keep, grid.shape)))  # index tuples
    return [(idx, flat[i]) for idx, i in zip(where, keep)]
