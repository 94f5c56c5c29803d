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

from .errors import OptionError, did_you_mean
from .i18n import _

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


def parse_scale(text: str | float | int, name: str = "scale") -> str | float:
    """Read a scale setting: ``sqrt``, ``none`` or any finite non-zero number.

    Learned scales may be negative, so a negative number is a scale too.
    ``name`` is how the user gave it, for the message (``--scale``).

    >>> parse_scale("0.5"), parse_scale("SQRT"), parse_scale(2), parse_scale("-0.25")
    (0.5, 'sqrt', 2.0, -0.25)
    """
    if isinstance(text, bool):
        raise OptionError(
            _("{name} must be sqrt, none or a number, not {text!r}").format(name=name, text=text)
        )
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        word = str(text).strip().lower()
        if word in ("sqrt", "none"):
            return word
        if not word.isascii():  # typed on a Chinese keyboard: ０．５
            from .load.values import ascii_forms

            word = ascii_forms(word)
        try:
            value = float(word)
        except ValueError:
            hint = did_you_mean(word, ("sqrt", "none"))
            raise OptionError(
                _("{name} must be sqrt, none or a number, not {text!r}{hint}").format(
                    name=name, text=text, hint=hint
                )
            ) from None
    if not math.isfinite(value) or value == 0:
        raise OptionError(
            _("{name} must be a finite non-zero number, not {text!r}").format(name=name, text=text)
        )
    return value


def either(words: tuple[str, ...] | list[str]) -> str:
    """Choices as a sentence lists them.

    >>> either(("dot", "cosine")), either(("error", "nan", "zero"))
    ('dot or cosine', 'error, nan or zero')
    """
    if len(words) == 1:
        return words[0]
    return _("{some} or {last}").format(some=_(", ").join(words[:-1]), last=words[-1])


def choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """Check that ``value`` is one of ``allowed`` and return it; a near miss gets "did you mean".

    >>> choice("layout", "rows", LAYOUTS)
    'rows'
    >>> choice("--layout", "row", LAYOUTS)
    Traceback (most recent call last):
    ...
    qkvcli.errors.OptionError: --layout must be rows or columns, not 'row' (did you mean rows?)
    """
    if not isinstance(value, str) or value not in allowed:
        hint = did_you_mean(value, allowed)
        raise OptionError(
            _("{name} must be {either}, not {value!r}{hint}").format(
                name=name, either=either(allowed), value=value, hint=hint
            )
        )
    return value


def positive_int(name: str, value: Any) -> int:
    """Check a count such as ``heads``.

    >>> positive_int("heads", 2)
    2
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(
            _("{name} must be a positive whole number, not {value!r}").format(
                name=name, value=value
            )
        )
    return value


def positive_number(name: str, value: Any) -> float:
    """Check a positive finite number such as ``temperature``.

    >>> positive_number("temperature", 2)
    2.0
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        shown = f"{value:g}" if ok else repr(value)
        raise OptionError(
            _("{name} must be a positive finite number, not {shown}").format(name=name, shown=shown)
        )
    return float(value)


def whole_number(name: str, value: Any, least: int = 0) -> int:
    """Check a whole number of at least ``least``, at most 2^53 (a float such as 3.0 counts).

    >>> whole_number("position_offset", 3.0)
    3
    >>> whole_number("--sliding-window", 3e100, 1)
    Traceback (most recent call last):
    ...
    qkvcli.errors.OptionError: --sliding-window must be at most 2^53 (a whole number a float holds), not 3e+100
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value != int(value) or value < least:
        word = (
            _("a positive whole number")
            if least == 1
            else _("a whole number ≥ {least}").format(least=least)
        )
        raise OptionError(
            _("{name} must be {word}, not {value!r}").format(name=name, word=word, value=value)
        )
    if value > WHOLE_MAX:
        raise OptionError(
            _("{name} must be at most 2^53 (a whole number a float holds), not {value:g}").format(
                name=name, value=value
            )
        )
    return int(value)


#: The largest whole-number setting (windows, offsets): every whole number up to it is a float.
WHOLE_MAX = 2**53


def fraction(name: str, value: Any) -> float:
    """Check a number in (0, 1], such as ``partial_rotary_factor``.

    >>> fraction("partial_rotary_factor", 0.5)
    0.5
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0 < value <= 1:
        raise OptionError(
            _("{name} must be a number in (0, 1], not {value!r}").format(name=name, value=value)
        )
    return float(value)


def _choice_of(key: str, allowed: tuple[str, ...]) -> Callable[..., str]:
    return lambda v, name=key: choice(name, v, allowed)


def _flag(key: str) -> Callable[..., bool]:
    def check(v: Any, name: str = key) -> bool:
        if not isinstance(v, bool):
            raise OptionError(_("{name} must be true or false, not {v!r}").format(name=name, v=v))
        return v

    return check


def _with(check: Callable[..., Any], key: str, *extra: Any) -> Callable[..., Any]:
    return lambda v, name=key: check(name, v, *extra)


#: Every setting: a function ``(value, name)`` that checks a value and returns it in
#: canonical form; ``name`` is how the user gave it (``--heads``, or a file's key), for the message.
SETTINGS: dict[str, Callable[..., Any]] = {
    "scale": parse_scale,
    "layout": _choice_of("layout", LAYOUTS),
    "weights_layout": _choice_of("weights_layout", WEIGHTS_LAYOUTS),
    "heads": _with(positive_int, "heads"),
    "kv_heads": _with(positive_int, "kv_heads"),
    "mask": _choice_of("mask", MASK_KINDS),
    "mask_polarity": _choice_of("mask_polarity", POLARITIES),
    "empty_rows": _choice_of("empty_rows", EMPTY_ROWS),
    "similarity": _choice_of("similarity", SIMILARITIES),
    "normalize": _choice_of("normalize", NORMALIZERS),
    "temperature": _with(positive_number, "temperature"),
    "dtype": _choice_of("dtype", DTYPES),
    "exact": _flag("exact"),
    "rope": _choice_of("rope", ROPE_PAIRINGS),
    "rope_theta": _with(positive_number, "rope_theta"),
    "partial_rotary_factor": _with(fraction, "partial_rotary_factor"),
    "position_offset": _with(whole_number, "position_offset"),
    "sliding_window": _with(whole_number, "sliding_window", 1),
    "attention_chunk_size": _with(whole_number, "attention_chunk_size", 1),
    "qk_norm": _choice_of("qk_norm", QK_NORMS),
    "rms_norm_eps": _with(positive_number, "rms_norm_eps"),
    "rms_norm_unit_offset": _flag("rms_norm_unit_offset"),
    "attn_logit_softcapping": _with(positive_number, "attn_logit_softcapping"),
    "alibi": _flag("alibi"),
}
assert set(SETTINGS) == {f.name for f in fields(Options)}


def option_name(key: str) -> str:
    """The command-line option of a setting.

    >>> option_name("mask_polarity")
    '--mask-polarity'
    """
    return "--" + key.replace("_", "-")


def check_options(values: dict[str, Any]) -> dict[str, Any]:
    """Settings typed as command-line options, checked; a message names the option as typed.

    >>> check_options({"scale": "none", "heads": None})
    {'scale': 'none'}
    >>> check_options({"mask_polarity": "yes"})
    Traceback (most recent call last):
    ...
    qkvcli.errors.OptionError: --mask-polarity must be attend or block, not 'yes'
    """
    return {k: SETTINGS[k](v, option_name(k)) for k, v in values.items() if v is not None}


def said(names: dict[str, str], key: str, value: Any = None) -> str:
    """A setting as the user gave it, for a message: ``--heads 2``, ``"heads": 2`` or ``heads=2``.

    ``names`` maps a setting to how it was given: an option (``--heads``) or a
    file's key as typed (``num_heads``); a setting in neither is named by its key.

    >>> said({"heads": "--heads"}, "heads", 2), said({"heads": "num_heads"}, "heads", 2)
    ('--heads 2', '"num_heads": 2')
    >>> said({}, "heads", 2), said({"alibi": "--alibi"}, "alibi", True), said({}, "rope")
    ('heads=2', '--alibi', 'rope')
    """
    import json

    name = names.get(key)
    if value is None:
        return name or key
    if name is not None and name.startswith("--"):
        return name if value is True else f"{name} {value}"
    if name is not None:
        return f'"{name}": {json.dumps(value, ensure_ascii=False)}'
    return f"{key}={value}"


def _add(cli: bool, need: str, examples: tuple[tuple[str, str], ...]) -> str:
    """How to add a setting: as an option (``cli``) or as a file's key."""
    form = (lambda v: f"{option_name(need)} {v}") if cli else (lambda v: f'"{need}": "{v}"')
    return _("add {options}").format(
        options=_(" or ").join(f"{form(v)} ({who})" for v, who in examples)
    )


#: What to add when a setting needs another: the values, and a model that uses each.
NEEDS = {
    "rope": (("half", "Llama"), ("interleaved", "GPT-J")),
    "qk_norm": (("head", "Qwen3, Gemma 3"), ("all", "OLMo 2")),
}


def needs(given: str, need: str) -> str:
    """The message for something given (as the user named it) without the variant it belongs to.

    >>> needs("--rope-theta", "rope")
    '--rope-theta is set but --rope is not: add --rope half (Llama) or --rope interleaved (GPT-J)'
    """
    cli = given.startswith("--")
    shown = option_name(need) if cli else need
    return _("{given} is set but {shown} is not: {add}").format(
        given=given, shown=shown, add=_add(cli, need, NEEDS[need])
    )


def validate_options(o: Options, names: dict[str, str] | None = None) -> Options:
    """Check every setting of ``o``; raise `OptionError` naming the bad one as the user gave it.

    ``names`` maps a setting to how it was given (see `said`).
    """
    names = names or {}
    checked = {}
    for f in fields(o):
        value = getattr(o, f.name)
        if value is None or (value == f.default and f.name != "scale"):
            continue  # the defaults are valid
        checked[f.name] = SETTINGS[f.name](value, names.get(f.name, f.name))
    o = replace(o, **checked)
    if o.exact and o.similarity != "dot":
        raise OptionError(
            _(
                "exact arithmetic works with dot-product similarity, not cosine: drop {get} or {cosine}"
            ).format(get=names.get("exact", "--exact"), cosine=said(names, "similarity", "cosine"))
        )
    if o.exact:
        curved = [
            said(names, n) for n in ("rope", "qk_norm", "attn_logit_softcapping") if getattr(o, n)
        ]
        if curved:
            raise OptionError(
                _(
                    "exact arithmetic keeps the linear stages as fractions: {join} needs cosines, square roots or tanh; drop {get}"
                ).format(join=", ".join(curved), get=names.get("exact", "--exact"))
            )
    for name, need in (
        ("rope_theta", "rope"), ("partial_rotary_factor", "rope"), ("position_offset", "rope"),
        ("rms_norm_eps", "qk_norm"), ("rms_norm_unit_offset", "qk_norm"),
    ):  # fmt: skip
        if getattr(o, name) not in (None, False) and getattr(o, need) is None:
            raise OptionError(needs(said(names, name), need))
    return o


#: The defaults of the variants' numbers, used when their variant is in force.
ROPE_THETA = 10000.0
RMS_NORM_EPS = 1e-6
