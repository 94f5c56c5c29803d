"""Exact arithmetic for the linear stages: fractions, and a + b·√r for the scale.

Inputs are read back from their shortest decimal form (``0.1`` is 1/10, not
the nearest binary float), so Q, K, V and the scores are exact fractions; the
scale 1/√d_k stays a surd when d_k is not a perfect square. The softmax is
transcendental: its terms are written as e-powers beside their decimals.

>>> s = Surd.sqrt_inverse(3) * 16
>>> str(s), latex(s), round(float(s), 4)
('16√3/3', '\\\\frac{16\\\\sqrt{3}}{3}', 9.2376)
>>> str(exact(0.1) + exact(0.2))
'3/10'
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Union

from .trace import NEG_INF

if TYPE_CHECKING:
    import numpy as np

    from .problem import Resolved

Number = Union[Fraction, "Surd", float]


def exact(x: float | int | Fraction) -> Fraction:
    """The fraction a number was written as: ``0.1`` → 1/10 (via its shortest repr)."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, int):
        return Fraction(x)
    return Fraction(repr(float(x)))


def _squarefree(d: int) -> tuple[int, int]:
    """d = k²·r with r square-free: returns (k, r). ``_squarefree(12)`` → (2, 3)."""
    k, r, f = 1, d, 2
    while f * f <= r:
        while r % (f * f) == 0:
            r //= f * f
            k *= f
        f += 1
    return k, r


class Surd:
    """a + b·√r with a, b fractions and r a square-free whole number (r = 1: rational)."""

    __slots__ = ("a", "b", "r")

    def __init__(self, a: Fraction | int = 0, b: Fraction | int = 0, r: int = 1) -> None:
        a, b = Fraction(a), Fraction(b)
        if r == 1:
            a, b = a + b, Fraction(0)
        self.a, self.b, self.r = a, b, (r if b else 1)

    @classmethod
    def sqrt_inverse(cls, d: int) -> Surd | Fraction:
        """1/√d, e.g. 1/√12 = √3/6; a fraction when d is a perfect square."""
        k, r = _squarefree(d)
        return cls(0, Fraction(1, k * r), r) if r > 1 else Fraction(1, k)

    def _lift(self, other: Any) -> Surd | None:
        if isinstance(other, Surd):
            return other
        if isinstance(other, (int, Fraction)):
            return Surd(other)
        if isinstance(other, float) and math.isfinite(other):
            return Surd(exact(other))
        return None

    def __add__(self, other: Any) -> Any:
        o = self._lift(other)
        if o is None:
            return float(self) + other  # −∞ from an additive mask stays −∞
        if self.b and o.b and self.r != o.r:
            return float(self) + float(o)
        return _make(self.a + o.a, self.b + o.b, self.r if self.b else o.r)

    __radd__ = __add__

    def __neg__(self) -> Surd:
        return Surd(-self.a, -self.b, self.r)

    def __sub__(self, other: Any) -> Any:
        return self + (-other)

    def __mul__(self, other: Any) -> Any:
        o = self._lift(other)
        if o is None:
            return float(self) * other
        if self.b and o.b and self.r != o.r:
            return float(self) * float(o)
        r = self.r if self.b else o.r
        return _make(self.a * o.a + self.b * o.b * r, self.a * o.b + self.b * o.a, r)

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Any:
        o = self._lift(other)
        if o is None or o.b:
            return float(self) / float(other)
        return _make(self.a / o.a, self.b / o.a, self.r)

    def __float__(self) -> float:
        return float(self.a) + float(self.b) * math.sqrt(self.r)

    def __eq__(self, other: Any) -> bool:
        o = self._lift(other)
        return o is not None and (self.a, self.b, self.r) == (o.a, o.b, o.r)

    def __hash__(self) -> int:
        return hash((self.a, self.b, self.r))

    def __repr__(self) -> str:
        return f"Surd({self.a!r}, {self.b!r}, {self.r})"

    def __str__(self) -> str:
        return text(self)


def _make(a: Fraction, b: Fraction, r: int) -> Surd | Fraction:
    """a + b·√r, as a plain fraction when b is 0."""
    return Surd(a, b, r) if b else a


def _frac_text(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def _surd_text(b: Fraction, r: int) -> str:
    """b·√r written as people do: √3/3, 16√3/3, −2√3."""
    num = abs(b.numerator)
    body = f"√{r}" if num == 1 else f"{num}√{r}"
    sign = "−" if b < 0 else ""
    return sign + (body if b.denominator == 1 else f"{body}/{b.denominator}")


def text(x: Any) -> str:
    """An exact value as plain text: ``3/10``, ``16√3/3``, ``1 + √2/2``; floats as −∞ or repr."""
    if isinstance(x, Surd):
        if not x.b:
            return text(x.a)
        surd = _surd_text(x.b, x.r)
        if not x.a:
            return surd
        joined = f" − {surd[1:]}" if surd.startswith("−") else f" + {surd}"
        return text(x.a) + joined
    if isinstance(x, Fraction):
        return ("−" if x < 0 else "") + _frac_text(abs(x))
    if isinstance(x, float) and math.isinf(x):
        return NEG_INF if x < 0 else "∞"
    return repr(x)


def latex(x: Any) -> str:
    r"""An exact value in LaTeX: ``\frac{3}{10}``, ``\frac{16\sqrt{3}}{3}``, ``-\infty``."""

    def frac(num: str, den: int, neg: bool) -> str:
        body = num if den == 1 else f"\\frac{{{num}}}{{{den}}}"
        return ("-" if neg else "") + body

    if isinstance(x, Surd):
        if not x.b:
            return latex(x.a)
        num = abs(x.b.numerator)
        root = f"\\sqrt{{{x.r}}}" if num == 1 else f"{num}\\sqrt{{{x.r}}}"
        surd = frac(root, x.b.denominator, x.b < 0)
        if not x.a:
            return surd
        return latex(x.a) + (f" - {surd[1:]}" if surd.startswith("-") else f" + {surd}")
    if isinstance(x, Fraction):
        return frac(str(abs(x.numerator)), x.denominator, x < 0)
    if isinstance(x, float) and math.isinf(x):
        return "-\\infty" if x < 0 else "\\infty"
    return repr(x)


def is_exact(x: Any) -> bool:
    """True for a fraction or surd (not a float)."""
    return isinstance(x, (Fraction, Surd))


def exact_array(a: np.ndarray) -> np.ndarray:
    """A float array as an object array of fractions (−∞ stays a float)."""
    import numpy as np

    out = np.empty(a.shape, dtype=object)
    for idx, v in np.ndenumerate(a):
        out[idx] = exact(float(v)) if math.isfinite(v) else float(v)
    return out


def floats(a: np.ndarray) -> np.ndarray:
    """An array of exact values as float64; one beyond the float range becomes ±∞.

    So an exact run that overflows is reported like a float run, at the stage and cell.

    >>> import numpy as np
    >>> floats(np.array([Fraction(1, 2), Fraction(10**400), Surd(0, -(10**400), 3)], dtype=object)).tolist()
    [0.5, inf, -inf]
    """
    import numpy as np

    try:
        return a.astype(np.float64)
    except OverflowError:
        out = np.empty(a.shape, dtype=np.float64)
        for idx, v in np.ndenumerate(a):
            try:
                out[idx] = float(v)
            except OverflowError:
                out[idx] = math.inf if _positive(v) else -math.inf
        return out


def _positive(v: Any) -> bool:
    """Whether an exact value is above zero; a + b·√r by comparing a² with b²·r."""
    if not isinstance(v, Surd):
        return v > 0
    if (v.a >= 0) == (v.b >= 0):
        return v.a + v.b > 0
    return v.a > 0 if v.a * v.a > v.b * v.b * v.r else v.b > 0


def exact_scale(r: Resolved) -> Fraction | Surd:
    """The scale of a run, exactly: 1/√d_k (a surd unless d_k is a square), 1 or the number given."""
    o = r.options
    if o.scale == "sqrt":
        s: Fraction | Surd = Surd.sqrt_inverse(r.d_head)
    elif o.scale == "none":
        s = Fraction(1)
    else:
        s = exact(float(o.scale))
    t = exact(float(o.temperature))
    return s / t
