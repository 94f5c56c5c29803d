"""How to compute (`Options`): every setting, its choices and its validation.

One table, `SETTINGS`, says how each setting is checked, whether it comes
from a problem file's key or from a command-line option.

>>> validate_options(Options(scale="SQRT", heads=2)).scale
'sqrt'
>>> SETTINGS["normalize"]("sigmoid")
'sigmoid'
>>> SETTINGS["rope"]("half"), SETTINGS["sliding_window"](4096)
('half', 4096)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from .errors import OptionError

LAYOUTS = ("rows", "columns")
WEIGHTS_LAYOUTS = ("in-out", "out-in")
MASK_KINDS = ("causal", "causal-lower-right")
POLARITIES = ("attend", "block")
EMPTY_ROWS = ("error", "nan", "zero", "uniform")
SIMILARITIES = ("dot", "cosine")
NORMALIZERS = ("softmax", "sigmoid")
DTYPES = ("float64", "float32")
ROPE_PAIRINGS = ("half", "interleaved")
QK_NORMS = ("head", "all")


@dataclass(frozen=True)
class Options:
    """How to compute: scale, layouts, heads, masks, similarity, normaliser, dtype.

    ``scale`` is ``"sqrt"`` (1/√d_k, per head), ``"none"`` or a number;
    ``exact`` keeps the linear stages as fractions and the scale as a surd.

    The variants of today's models carry their Hugging Face config names:
    ``rope`` (``half`` as in Llama, ``interleaved`` as in GPT-J; None = no
    rotary) with ``rope_theta``, ``partial_rotary_factor`` and
    ``position_offset``; ``sliding_window`` and ``attention_chunk_size``;
    ``qk_norm`` (``head`` as in Qwen3, ``all`` as in OLMo 2) with
    ``rms_norm_eps`` and ``rms_norm_unit_offset`` (Gemma's 1 + w);
    ``attn_logit_softcapping`` (Gemma 2); ``alibi`` (slopes from the heads).
    None means "not given": the defaults (θ = 10000, factor 1, eps 1e-6)
    apply only when their variant is in force.
    """

    scale: str | float = "sqrt"
    layout: str = "rows"
    weights_layout: str = "in-out"
    heads: int | None = None
    kv_heads: int | None = None
    mask: str | None = None
    mask_polarity: str = "attend"
    empty_rows: str = "error"
    similarity: str = "dot"
    normalize: str = "softmax"
    temperature: float = 1.0
    dtype: str = "float64"
    exact: bool = False
    rope: str | None = None
    rope_theta: float | None = None
    partial_rotary_factor: float | None = None
    position_offset: int | None = None
    sliding_window: int | None = None
    attention_chunk_size: int | None = None
    qk_norm: str | None = None
    rms_norm_eps: float | None = None
    rms_norm_unit_offset: bool = False
    attn_logit_softcapping: float | None = None
    alibi: bool = False

    def merged(self, settings: dict[str, Any]) -> Options:
        """These options with ``settings`` (already validated values) on top."""
        return replace(self, **{k: v for k, v in settings.items() if v is not None})


def parse_scale(text: str | float | int) -> str | float:
    """Read a scale setting: ``sqrt``, ``none`` or any finite non-zero number.

    Learned scales may be negative, so a negative number is a scale too.

    >>> parse_scale("0.5"), parse_scale("SQRT"), parse_scale(2), parse_scale("-0.25")
    (0.5, 'sqrt', 2.0, -0.25)
    """
    if isinstance(text, bool):
        raise OptionError(f"scale must be sqrt, none or a number, not {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        word = str(text).strip().lower()
        if word in ("sqrt", "none"):
            return word
        try:
            value = float(word)
        except ValueError:
            raise OptionError(f"scale must be sqrt, none or a number, not {text!r}") from None
    if not math.isfinite(value) or value == 0:
        raise OptionError(f"scale must be a finite non-zero number, not {text!r}")
    return value


def choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """Check that ``value`` is one of ``allowed`` and return it.

    >>> choice("layout", "rows", LAYOUTS)
    'rows'
    """
    if not isinstance(value, str) or value not in allowed:
        raise OptionError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def positive_int(name: str, value: Any) -> int:
    """Check a count such as ``heads``.

    >>> positive_int("heads", 2)
    2
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{name} must be a positive whole number, not {value!r}")
    return value


def positive_number(name: str, value: Any) -> float:
    """Check a positive finite number such as ``temperature``.

    >>> positive_number("temperature", 2)
    2.0
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise OptionError(f"{name} must be a positive finite number, not {value!r}")
    return float(value)


#: The largest position, window or chunk accepted: floats count whole numbers exactly up to here.
MOST = 2**53


def whole_number(name: str, value: Any, least: int = 0) -> int:
    """Check a whole number from ``least`` to `MOST` (a float such as 3.0 counts).

    >>> whole_number("position_offset", 3.0)
    3
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value != int(value) or not least <= value <= MOST:
        word = "a positive whole number" if least == 1 else f"a whole number ≥ {least}"
        raise OptionError(f"{name} must be {word} up to 2^53, not {value!r}")
    return int(value)


def fraction(name: str, value: Any) -> float:
    """Check a number in (0, 1], such as ``partial_rotary_factor``.

    >>> fraction("partial_rotary_factor", 0.5)
    0.5
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0 < value <= 1:
        raise OptionError(f"{name} must be a number in (0, 1], not {value!r}")
    return float(value)


def _choice_of(name: str, allowed: tuple[str, ...]) -> Callable[[Any], str]:
    return lambda v: choice(name, v, allowed)


def _flag(name: str) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if not isinstance(v, bool):
            raise OptionError(f"{name} must be true or false, not {v!r}")
        return v

    return check


#: Every setting: a function that checks a value and returns it in canonical form.
SETTINGS: dict[str, Callable[[Any], Any]] = {
    "scale": parse_scale,
    "layout": _choice_of("layout", LAYOUTS),
    "weights_layout": _choice_of("weights_layout", WEIGHTS_LAYOUTS),
    "heads": lambda v: positive_int("heads", v),
    "kv_heads": lambda v: positive_int("kv_heads", v),
    "mask": _choice_of("mask", MASK_KINDS),
    "mask_polarity": _choice_of("mask_polarity", POLARITIES),
    "empty_rows": _choice_of("empty_rows", EMPTY_ROWS),
    "similarity": _choice_of("similarity", SIMILARITIES),
    "normalize": _choice_of("normalize", NORMALIZERS),
    "temperature": lambda v: positive_number("temperature", v),
    "dtype": _choice_of("dtype", DTYPES),
    "exact": _flag("exact"),
    "rope": _choice_of("rope", ROPE_PAIRINGS),
    "rope_theta": lambda v: positive_number("rope_theta", v),
    "partial_rotary_factor": lambda v: fraction("partial_rotary_factor", v),
    "position_offset": lambda v: whole_number("position_offset", v),
    "sliding_window": lambda v: whole_number("sliding_window", v, 1),
    "attention_chunk_size": lambda v: whole_number("attention_chunk_size", v, 1),
    "qk_norm": _choice_of("qk_norm", QK_NORMS),
    "rms_norm_eps": lambda v: positive_number("rms_norm_eps", v),
    "rms_norm_unit_offset": _flag("rms_norm_unit_offset"),
    "attn_logit_softcapping": lambda v: positive_number("attn_logit_softcapping", v),
    "alibi": _flag("alibi"),
}
assert set(SETTINGS) == {f.name for f in fields(Options)}


def validate_options(o: Options) -> Options:
    """Check every setting of ``o``; raise `OptionError` naming the bad one."""
    checked = {}
    for f in fields(o):
        value = getattr(o, f.name)
        if value is None or (value == f.default and f.name != "scale"):
            continue  # the defaults are valid
        checked[f.name] = SETTINGS[f.name](value)
    o = replace(o, **checked)
    if o.exact and o.similarity != "dot":
        raise OptionError("exact arithmetic works with dot-product similarity, not cosine")
    if o.exact:
        curved = [n for n in ("rope", "qk_norm", "attn_logit_softcapping") if getattr(o, n)]
        if curved:
            raise OptionError(
                f"exact arithmetic keeps the linear stages as fractions: {', '.join(curved)} "
                "needs cosines, square roots or tanh; drop --exact"
            )
    for name, needs in (
        ("rope_theta", "rope"), ("partial_rotary_factor", "rope"), ("position_offset", "rope"),
        ("rms_norm_eps", "qk_norm"), ("rms_norm_unit_offset", "qk_norm"),
    ):  # fmt: skip
        if getattr(o, name) not in (None, False) and getattr(o, needs) is None:
            raise OptionError(f"{name} is set but {needs} is not: {_NEEDS[needs]}")
    return o


_NEEDS = {
    "rope": "add rope half (Llama) or rope interleaved (GPT-J)",
    "qk_norm": "add qk_norm head (Qwen3, Gemma 3) or qk_norm all (OLMo 2)",
}


#: The defaults of the variants' numbers, used when their variant is in force.
ROPE_THETA = 10000.0
RMS_NORM_EPS = 1e-6
