"""Light coercion of command-line values, so that start-up skips pydantic.

Recent typer releases turn every option value into its Python type through a
pydantic ``TypeAdapter``; importing pydantic and building the adapters costs
more than importing numpy. qkv's options are plain ``str``, ``int``,
``float``, ``bool`` and lists of those, which need none of it: `install`
gives such parameters a small coercer with the same messages, and leaves any
other annotation (and typer releases without pydantic) as they are.

>>> to_number("3", int, None, None, False)
3
>>> to_number("2.5", int, None, None, False)
Traceback (most recent call last):
...
ValueError: Input should be a valid integer, unable to parse string as an integer
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, get_args, get_origin

from .i18n import _

SIMPLE = (str, int, float, bool)
_TRUE = ("1", "true", "t", "yes", "y", "on")
_FALSE = ("0", "false", "f", "no", "n", "off")


def to_number(value: Any, kind: type, low: Any, high: Any, clamp: bool | None) -> Any:
    """``value`` as an int or float within [low, high], as pydantic words it."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(_("Input should be a valid {word}").format(word=_word(kind)))
    if isinstance(value, str):
        if not value.isascii():  # typed on a Chinese keyboard: －２．５
            from .load.values import ascii_forms

            value = ascii_forms(value)
        try:
            number = kind(value.strip())
        except ValueError:
            if kind is int:
                msg = _("Input should be a valid integer, unable to parse string as an integer")
            else:
                msg = _("Input should be a valid number, unable to parse string as a number")
            raise ValueError(msg) from None
    else:
        number = kind(value)
        if kind is int and number != value:
            raise ValueError(
                _("Input should be a valid integer, got a number with a fractional part")
            )
    if low is not None and number < low:
        if clamp:
            return kind(low)
        raise ValueError(_("Input should be greater than or equal to {low}").format(low=low))
    if high is not None and number > high:
        if clamp:
            return kind(high)
        raise ValueError(_("Input should be less than or equal to {high}").format(high=high))
    return number


def _word(kind: type) -> str:
    return _("integer") if kind is int else _("number")


def to_bool(value: Any) -> bool:
    """A flag or a word such as ``yes``/``off``."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE or word == "":
        return False
    raise ValueError(_("Input should be a valid boolean, unable to interpret input"))


def coercer(annotation: Any, info: Any) -> Any:
    """A function str → value for a simple annotation, or None to leave it to typer."""
    if getattr(info, "parser", None) is not None:
        return None
    if get_origin(annotation) is list:
        (item,) = get_args(annotation) or (None,)
        one = coercer(item, info)
        if one is None:
            return None
        return lambda vs: [one(v) for v in (vs if isinstance(vs, (list, tuple)) else [vs])]
    if annotation is str:
        return str
    if annotation is bool:
        return to_bool
    if annotation in (int, float):
        low, high, clamp = info.min, info.max, info.clamp
        return lambda v: to_number(v, annotation, low, high, clamp)
    return None


@functools.cache
def light_param() -> Any:
    """typer's RuntimeParam with a plain coercer (made once); None for a typer without it."""
    try:
        from typer._click.exceptions import BadParameter
        from typer._coercion import RuntimeParam
    except ImportError:
        return None  # a typer that coerces through click: nothing heavy to avoid

    @dataclass(frozen=True)
    class Light(RuntimeParam):
        """Coerce with a plain function; ValueError becomes click's BadParameter."""

        fn: Any = None

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            try:
                return self.fn(value)
            except ValueError as e:
                raise BadParameter(str(e), ctx=ctx, param=param) from None

    return Light


def install(command: Any) -> None:
    """Give each simple parameter of ``command`` a light coercer (typer with pydantic only)."""
    Light = light_param()
    if Light is None:
        return

    def light(param: Any) -> None:
        desc = getattr(param, "type_descriptor", None)
        if desc is None or getattr(desc, "file_annotation", None) is not None:
            return
        fn = coercer(desc.annotation, desc.parameter_info)
        if fn is not None and getattr(param, "_runtime_param", 0) is None:
            param._runtime_param = Light(desc.parameter_info, desc.annotation, fn)

    for param in getattr(command, "params", []):
        light(param)
    help_option = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        """The --help flag click adds to every context, coerced lightly too."""
        option = help_option(ctx)
        if option is not None:
            light(option)
        return option

    command.get_help_option = get_help_option
