"""Answer sheets: every number as the student wrote it, in the forms people write.

A cell may be a decimal (``0.4319``, ``-1.5``, ``1e-3``, a decimal comma in
CSV), a percentage (``43.19%``), a fraction or surd as ``--exact`` prints
them (``7/2``, ``2√3/3``, ``1 + √2/2``), an e-expression
(``e^{2}/(e^{1} + e^{2})``), a masked cell (``-inf``, ``−∞``, ``masked``, or
a large negative sentinel such as ``-1e9``), or blank (``null``; an empty
CSV cell). Each keeps its text and how many decimals it carries: trailing
zeros carry none (``2.20`` is ``2.2``), and an exact form carries them all.

>>> w = written("2.20"); (w.value, w.decimals)
(2.2, 1)
>>> written("43.19%").value, written("2√3/3").decimals is None
(0.4319, True)
>>> round(written("e^{2}/(e^{1} + e^{2})").value, 4)
0.7311
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from .errors import InputError
from .i18n import _
from .load.values import ascii_forms
from .trace import ALIASES, STAGES

if TYPE_CHECKING:
    import numpy as np

#: Words for a masked (−∞) cell, after lower-casing (and full-width forms made plain).
MASKED_WORDS = ("-inf", "-infinity", "−∞", "-∞", "−inf", "−infinity", "masked",
                "负无穷", "-无穷", "−无穷", "负无穷大", "掩码", "已掩码", "屏蔽")  # fmt: skip
#: What a CSV cell may hold for a blank.
BLANK_WORDS = ("", "null", "none", "?", "_", "-", "—", "blank", "空", "未作答", "未答")
#: A written value at or below this, in a cell whose truth is −∞, stands for −∞ (−1e9, −1e4).
SENTINEL = -1e4
#: Other names people give the stages (after lower-casing and joining words with ``_``).
STAGE_ALIASES = {
    "attention_weights": "weights",
    "attn_weights": "weights",
    "softmax": "weights",
    "scaled_scores": "scaled",
    "capped_scores": "capped",
    "softcapped": "capped",
    "raw_scores": "scores",
    "masked_scores": "masked",
    "head_output": "head_outputs",
    "heads": "head_outputs",
    "concatenated": "concat",
    "out": "output",
    "attention_output": "output",
    **ALIASES,  # the Chinese names (trace.CHINESE)
}


def stage_hint(typed: str, names: list[str] | tuple[str, ...]) -> str:
    """`` (did you mean weights?)`` for a stage name typed near one of ``names`` or of their
    Chinese names (a Chinese name is offered back in Chinese), or ``""``.

    >>> stage_hint("weight", ["scores", "weights"]), stage_hint("zzz", ["Q"])
    (' (did you mean weights?)', '')
    """
    import difflib

    from .errors import closest

    if not any("\u4e00" <= ch <= "\u9fff" for ch in typed):
        near = closest(typed, list(names))
    else:
        zh = [a for a, s in STAGE_ALIASES.items() if s in names and not a.isascii()]
        found = difflib.get_close_matches(typed.strip(), zh, 1, cutoff=0.5)
        near = found[0] if found else None
    if near is None or near == typed:
        return ""
    return _(" (did you mean {name}?)").format(name=near)


@dataclass(frozen=True)
class Written:
    """One answer as written: its text, its value and the decimals it carries.

    ``decimals`` is None for an exact form (a fraction, a surd, an
    e-expression), which carries every decimal. ``form`` is ``decimal``,
    ``percent``, ``exact``, ``masked`` (−∞), ``nan`` or ``huge`` (too large
    for a number: refused where it is read).
    """

    text: str
    value: float
    decimals: int | None
    form: str = "decimal"

    def __repr__(self) -> str:
        return f"Written({self.text!r})"

    @property
    def sentinel(self) -> bool:
        """A masked cell (−∞), or a large negative number standing for one."""
        return self.value == -math.inf or (self.form == "decimal" and self.value <= SENTINEL)


#: A plain decimal without an exponent, short enough to be finite: `written`'s fast path.
_PLAIN = re.compile(r"-?([0-9]{1,300})(?:\.([0-9]{0,300}))?")


def written(text: str) -> Written:
    """Read one answer, keeping its text; ValueError for what is not an answer.

    >>> written("-inf").value, written("0.250").decimals, written("7/2").value
    (-inf, 2, 3.5)
    """
    fast = _PLAIN.fullmatch(text)
    if fast is not None:  # the common case, read as `_decimal` reads it (trailing zeros carry none)
        whole, fraction = fast.groups("")
        kept = fraction.rstrip("0") if whole.strip("0") or fraction.strip("0") else fraction
        return Written(text, float(text), len(kept), "decimal")
    t = text.strip()
    plain = ascii_forms(t).replace("−", "-").replace("\u2009", "").replace(" ", "")
    if plain.lower() in MASKED_WORDS or t.lower() in MASKED_WORDS:  # −∞, -inf, 负无穷
        return Written(t, -math.inf, 0, "masked")
    if plain.lower() in ("nan", "n/a"):
        return Written(t, math.nan, 0, "nan")
    if "≈" in plain:  # "4√3 ≈ 6.9282", as --exact prints it: the exact part counts
        plain = plain.split("≈", 1)[0]
    if plain.endswith("%"):
        w = _decimal(plain[:-1])
        if w is None:
            raise ValueError(t)
        value = float(Decimal(plain[:-1]) / 100) if math.isfinite(w[0]) else w[0]
        return _sized(t, value, w[1] + 2, "percent")
    if plain.count(",") == 1 and "." not in plain and re.fullmatch(r"[-+]?\d*,\d+", plain):
        plain = plain.replace(",", ".")  # a decimal comma
    w = _decimal(plain)
    if w is not None:
        return _sized(t, *w, "decimal")
    value, inexact = evaluate(plain)
    return _sized(t, value, inexact, "exact" if inexact is None else "decimal")


def _sized(text: str, value: float, decimals: int | None, form: str) -> Written:
    if math.isinf(value) or abs(value) > 1.7e308:
        return Written(text, math.copysign(math.inf, value), 0, "huge")
    return Written(text, value, decimals, form)


def _decimal(t: str) -> tuple[float, int] | None:
    """A plain decimal number's value and decimals (trailing zeros dropped), or None."""
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", t):
        return None
    try:
        d = Decimal(t)
    except InvalidOperation:
        return None
    _sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    kept = len(digits)
    while kept > 1 and digits[kept - 1] == 0 and exponent < 0:
        kept -= 1
        exponent += 1
    try:
        value = float(d)
    except OverflowError:
        value = math.inf
    return value, max(0, -exponent)


# ---------------------------------------------------------------- exact forms

_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<name>sqrt|exp|pi|ln|e|π|√)"
    r"|(?P<op>[-+*×·/÷^(){}\[\]]))"
)


def evaluate(text: str) -> tuple[float, int | None]:
    """The value of an answer written as an expression, and its decimals.

    Numbers, ``+ − × · * / ÷``, brackets, ``√``/``sqrt``, ``e^{…}``/``exp``,
    ``π``; a number before a bracket, root or ``e`` multiplies it (``2√3``).
    The decimals are None when every number in it is whole (an exact form),
    else the most decimals of its numbers.

    >>> evaluate("16√3/3")[0] == 16 * 3 ** 0.5 / 3, evaluate("0.5·4")
    (True, (2.0, 1))
    """
    tokens: list[tuple[str, str]] = []
    pos, src = 0, text.strip()
    while pos < len(src):
        m = _TOKEN.match(src, pos)
        if not m or m.end() == pos:
            raise ValueError(text)
        kind = m.lastgroup or ""
        tokens.append((kind, m[kind]))
        pos = m.end()
    if not tokens:
        raise ValueError(text)
    parser = _Parser(tokens, text)
    try:
        value = parser.expr()
    except (OverflowError, ZeroDivisionError):
        raise ValueError(text) from None
    if parser.i != len(tokens):
        raise ValueError(text)
    if isinstance(value, complex) or math.isnan(value):
        raise ValueError(text)
    return value, parser.decimals


_CLOSE = {"(": ")", "{": "}", "[": "]"}


class _Parser:
    """Recursive descent over the tokens of an answer expression (see `evaluate`)."""

    def __init__(self, tokens: list[tuple[str, str]], text: str) -> None:
        self.tokens, self.text, self.i = tokens, text, 0
        self.decimals: int | None = None

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("", "")

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if not tok[0]:
            raise ValueError(self.text)
        self.i += 1
        return tok

    def expr(self) -> float:
        value = self.term()
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            right = self.term()
            value = value + right if op == "+" else value - right
        return value

    def term(self) -> float:
        value = self.unary()
        while True:
            kind, tok = self.peek()
            if kind == "op" and tok in "*×·/÷":
                self.take()
                right = self.unary()
                value = value / right if tok in "/÷" else value * right
            elif kind == "name" or (kind == "op" and tok in "([{"):
                value *= self.power()  # 2√3, 2e^{…}, 3(…)
            else:
                return value

    def unary(self) -> float:
        if self.peek() in (("op", "-"), ("op", "+")):
            sign = -1.0 if self.take()[1] == "-" else 1.0
            return sign * self.unary()
        return self.power()

    def power(self) -> float:
        base = self.atom()
        if self.peek() == ("op", "^"):
            self.take()
            exponent = self.unary() if self.peek()[1] not in "([{" else self.atom()
            if base == math.e:
                return math.exp(exponent)
            return float(base**exponent)
        return base

    def atom(self) -> float:
        kind, tok = self.take()
        if kind == "num":
            places = _decimal(tok)
            if places is None:
                raise ValueError(self.text)
            if ("." in tok or "e" in tok.lower()) and places[1]:
                self.decimals = max(self.decimals or 0, places[1])
            return places[0]
        if kind == "op" and tok in _CLOSE:
            value = self.expr()
            if self.take() != ("op", _CLOSE[tok]):
                raise ValueError(self.text)
            return value
        if tok in ("√", "sqrt"):
            x = self.power() if tok == "√" else self.atom()
            if x < 0:
                raise ValueError(self.text)
            return math.sqrt(x)
        if tok in ("e",):
            return math.e
        if tok in ("π", "pi"):
            return math.pi
        if tok == "exp":
            return math.exp(self.atom())
        if tok == "ln":
            x = self.atom()
            if x <= 0:
                raise ValueError(self.text)
            return math.log(x)
        raise ValueError(self.text)


# ---------------------------------------------------------------- answer sheets


@dataclass(eq=False)
class Sheet:
    """A student's answers: stage name → nested lists of `Written` or None (blank)."""

    origin: str
    stages: dict[str, Any]


def stage_key(key: str) -> str | None:
    """The stage an answer key names, in any case and spacing, or None.

    >>> stage_key("Weights"), stage_key("head outputs"), stage_key("q_rotated"), stage_key("权重")
    ('weights', 'head_outputs', 'Q_rotated', 'weights')
    """
    k = re.sub(r"[\s\-.]+", "_", ascii_forms(key).strip()).lower()
    if k in STAGE_ALIASES:  # Chinese names first: 值 is V, never a near miss
        return STAGE_ALIASES[k]
    for stage in STAGES:
        if k == stage.lower():
            return stage
    return STAGE_ALIASES.get(k)


def shown(text: str) -> str:
    """A long answer shortened for a message: ``1000000000…0 (401 digits)``."""
    if len(text) <= 24:
        return text
    return _("{start}…{end} ({n} characters)").format(start=text[:12], end=text[-4:], n=len(text))


def parse_answers(text: str, origin: str) -> Sheet:
    """Parse a JSON answer sheet, keeping every number's text; keys in any case, or Chinese.

    Full-width brackets, commas, colons and digits (a Chinese keyboard's) read as ASCII.

    >>> s = parse_answers('{"Scores": [[2, 4.0], [null, "-inf"]]}', "a.json")
    >>> s.stages["scores"]
    [[Written('2'), Written('4.0')], [None, Written('-inf')]]
    """
    from .load import decode_json

    def constant(t: str) -> Written:
        if t == "-Infinity":
            return Written(t, -math.inf, 0, "masked")
        if t == "NaN":
            return Written(t, math.nan, 0, "nan")
        return Written(t, math.inf, 0, "huge")

    def number(t: str) -> Written:
        try:
            return written(t)
        except ValueError:
            return Written(t, math.inf, 0, "huge")

    hooks = {"parse_float": number, "parse_int": number, "parse_constant": constant}
    doc = decode_json(ascii_forms(text), origin, **hooks)  # ［１，２］ typed on a Chinese keyboard
    if not isinstance(doc, dict):
        raise InputError(
            _("{origin}: the top level must be an object keyed by stage names").format(
                origin=origin
            )
        )
    stages: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, value in doc.items():
        if key.startswith("_"):
            continue
        name = stage_key(key)
        if name is None:
            raise InputError(
                _("{origin}: unknown stage {key!r}{hint} (answer keys are stage names: {names})")
                .format(origin=origin, key=key, hint=stage_hint(key, STAGES), names=" ".join(STAGES))
            )  # fmt: skip
        if name in seen:
            raise InputError(
                _("{origin}: keys {first!r} and {key!r} both give {name}").format(
                    origin=origin, first=seen[name], key=key, name=name
                )
            )
        seen[name] = key
        stages[name] = _cells(value, origin, name, ())
    return Sheet(origin, stages)


def _cells(value: Any, origin: str, key: str, path: tuple[int, ...]) -> Any:
    """Check the leaves of an answer are numbers, masked words or null."""
    if isinstance(value, list) and all(
        v is None or (type(v) is Written and v.form != "huge") for v in value
    ):
        return list(value)  # a row of numbers, as JSON's hooks read them: nothing to check
    where = ",".join(str(i + 1) for i in path)
    place = f"{origin}: {key}[{where}]" if path else f"{origin}: {key}"
    if isinstance(value, list):
        return [_cells(v, origin, key, (*path, i)) for i, v in enumerate(value)]
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = written(value)
        except ValueError:
            raise InputError(
                _("{place}: {value!r} is not a number, a fraction, a surd or -inf").format(
                    place=place, value=shown(value)
                )
            ) from None
    if isinstance(value, Written):
        if value.form == "huge":
            raise InputError(
                _("{place}: {value} is too large for a number").format(
                    place=place, value=shown(value.text)
                )
            )
        return value
    what = {dict: _("an object"), bool: _("true/false")}.get(type(value), type(value).__name__)
    raise InputError(
        _("{place}: {what} is not an answer (write a number, or null for a blank)").format(
            place=place, what=what
        )
    )


def _csv_cell(text: str) -> Written | None:
    """One CSV answer cell (the reader `load.parse_csv` calls): a `Written`, or None for blank."""
    if text.strip().lower() in BLANK_WORDS:
        return None
    w = written(text)
    if w.form == "huge":
        raise ValueError(text)
    return w


def parse_stage_csv(text: str, origin: str, stage: str = "answers") -> list[list[Written | None]]:
    """One stage's answers from CSV text, read as ``compute`` reads a matrix (`load.parse_csv`).

    >>> parse_stage_csv("0.5,0.5\\n1,\\n", "w.csv")
    [[Written('0.5'), Written('0.5')], [Written('1'), None]]
    """
    from .load import parse_csv

    cells, _labels = parse_csv(ascii_forms(text), origin, stage, read=_csv_cell)  # ，and ０-９ too
    return cells.tolist()


def load_answers(path: str | None, stage_files: dict[str, str] | None = None) -> Sheet:
    """An answer sheet from a JSON file (or none) with per-stage CSV files on top."""
    from .load import display, read_text

    sheet = parse_answers(read_text(path), display(path)) if path is not None else Sheet("", {})
    for given, csv_path in (stage_files or {}).items():
        stage = stage_key(given)
        if stage is None:
            raise InputError(
                _("--stage-file {given}={path}: unknown stage {given!r}{hint} (stages: {names})")
                .format(given=given, path=csv_path, hint=stage_hint(given, STAGES),
                        names=" ".join(STAGES))
            )  # fmt: skip
        sheet.stages[stage] = parse_stage_csv(read_text(csv_path), display(csv_path), stage)
        sheet.origin = sheet.origin or display(csv_path)
    if not sheet.stages:
        raise InputError(
            _("{origin}: no answers (give stages such as scores, weights, output)").format(
                origin=sheet.origin or _("answers")
            )
        )
    return sheet


def grid_of(nested: Any, origin: str, key: str) -> np.ndarray:
    """A stage's answers as an object array of `Written`/None; an error where it is ragged."""
    import numpy as np

    shape = _shape(nested, origin, key)
    out = np.empty(shape, dtype=object)
    out[...] = nested  # a regular nesting (`_shape`): leaf by leaf
    return out


def _shape(nested: Any, origin: str, key: str) -> tuple[int, ...]:
    from .errors import shape_str

    if not isinstance(nested, list):
        return ()
    if nested and not any(isinstance(v, list) for v in nested):
        return (len(nested),)  # a row of leaves
    if not nested:
        raise InputError(_("{origin}: {key} is empty").format(origin=origin, key=key))
    shapes = [_shape(v, origin, key) for v in nested]
    for i, s in enumerate(shapes):
        if s != shapes[0]:
            first = shape_str(shapes[0]) or _("a number")
            raise InputError(
                _("{origin}: {key} entry {i} is {shape} but entry 1 is {first}").format(
                    origin=origin,
                    key=key,
                    i=i + 1,
                    shape=shape_str(s) or _("a number"),
                    first=first,
                )
            )
    return (len(nested), *shapes[0])
