"""The language qkv speaks: English, or Chinese from gettext's compiled catalogue.

``_`` (gettext's name for it) looks an English message up in the chosen
language's catalogue; with English, it returns the message itself, and the
catalogue is never opened. The catalogues' sources are
``po/zh/LC_MESSAGES/qkv.po`` (computing, tables, pictures, models, errors,
help) and ``homework.po`` (check, explain, new); the build
(setuptools-gettext, with GNU msgfmt) compiles them to
``qkvcli/locale/zh/LC_MESSAGES/*.mo``, which the standard library reads.

The language comes from ``--lang`` (see `choose`), else ``QKV_LANG``, else
the locale as gettext reads it: ``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``,
``LANG``. English when nothing says otherwise.

>>> choose("en")
'en'
>>> _("the scores")
'the scores'
>>> language_of({"LANGUAGE": "fr:zh_CN:en", "LANG": "de_DE.UTF-8"})
'zh'
>>> language_of({"LC_ALL": "C.UTF-8", "LANG": "zh_CN.UTF-8"})
'en'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .errors import OptionError

#: The languages qkv speaks, by the code ``--lang`` and ``QKV_LANG`` take.
LANGUAGES = {"en": "English", "zh": "中文 (简体)"}
#: The catalogues, looked up in this order.
DOMAINS = ("qkv", "homework")
LOCALE_DIR = os.path.join(os.path.dirname(__file__), "locale")

_state: dict[str, Any] = {"lang": None, "catalogue": None}


class LanguageError(OptionError):
    """A language asked for by name (``--lang``, ``QKV_LANG``) that qkv cannot speak."""


def language_of(environ: Mapping[str, str] | None = None) -> str:
    """The language the environment asks for: ``QKV_LANG``, else the locale; ``en`` by default.

    A locale qkv doesn't speak (``fr_FR``) means English, as gettext falls
    back; ``QKV_LANG`` names qkv's language outright, so a wrong one is refused.
    """
    env = os.environ if environ is None else environ
    asked = env.get("QKV_LANG", "").strip()
    if asked:
        return parse(asked, "QKV_LANG=")
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(var, "").strip()
        if not value:
            continue
        if var == "LANGUAGE":  # a list, the first one spoken wins (gettext's own rule)
            for item in value.split(":"):
                if code(item) in LANGUAGES:
                    return code(item)
            continue
        return code(value) if code(value) in LANGUAGES else "en"
    return "en"


def code(locale: str) -> str:
    """The language part of a locale name: ``zh_CN.UTF-8`` → ``zh``, ``C`` → ``en``.

    >>> code("zh_TW.UTF-8"), code("en_GB"), code("POSIX")
    ('zh', 'en', 'en')
    """
    lang = locale.split(".", 1)[0].split("@", 1)[0].replace("-", "_").split("_", 1)[0].lower()
    return "en" if lang in ("c", "posix", "") else lang


def parse(value: str, where: str) -> str:
    """A language named by the user (``zh``, ``zh_CN``, ``en``), or a one-line refusal.

    ``where`` is how the user said it, ready to precede the value: ``--lang `` or ``QKV_LANG=``.
    """
    lang = code(value.strip())
    if lang not in LANGUAGES:
        spoken = ", ".join(f"{k} ({v})" for k, v in LANGUAGES.items())
        raise LanguageError(f"{where}{value}: qkv speaks {spoken}")
    return lang


def choose(lang: str | None = None) -> str:
    """Speak ``lang`` from now on (None: what the environment says); returns the code chosen.

    >>> choose("en")
    'en'
    """
    lang = language_of() if lang is None else parse(lang, "--lang ")
    _state["lang"], _state["catalogue"] = lang, None
    return lang


def language() -> str:
    """The code of the language being spoken (chosen from the environment on first use)."""
    if _state["lang"] is None:
        choose()
    return _state["lang"]


def catalogue() -> Any:
    """The chosen language's translations (``gettext.NullTranslations`` for English).

    A language whose compiled catalogue is missing (a build without GNU
    msgfmt) is refused in one line rather than answered in English.
    """
    if _state["catalogue"] is None:
        import gettext

        lang = language()
        if lang == "en":
            _state["catalogue"] = gettext.NullTranslations()
        else:
            try:
                first, *rest = (
                    gettext.translation(d, LOCALE_DIR, languages=[lang]) for d in DOMAINS
                )
                for more in rest:
                    first.add_fallback(more)
                _state["catalogue"] = first
            except OSError:
                _state["lang"] = "en"
                raise LanguageError(
                    f"the {LANGUAGES[lang]} catalogue ({lang}) is not installed: "
                    "reinstall qkv where GNU gettext's msgfmt is present "
                    "(Debian: apt-get install gettext)"
                ) from None
    return _state["catalogue"]


def _(message: str) -> str:
    """``message`` in the language being spoken (gettext's ``_``)."""
    if _state["lang"] == "en" or (_state["lang"] is None and language() == "en"):
        return message
    return catalogue().gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural form of a message for ``n``, in the language being spoken.

    >>> ngettext("{n} row", "{n} rows", 2).format(n=2)
    '2 rows'
    """
    if language() == "en":
        return singular if n == 1 else plural
    return catalogue().ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Marks a message for the catalogue where it is defined; `_` translates it where shown."""
    return message


class Spoken(str):
    """A phrase kept in English as data (JSON, CSV, files) and said in the language spoken
    wherever it is formatted into a message (``"{}".format``, f-strings).

    The template is marked with `N_` where it is written, so the catalogue holds it.

    >>> where = Spoken(N_("{path} (first column)"), path="x.csv")
    >>> str(where), f"read {where}"
    ('x.csv (first column)', 'read x.csv (first column)')
    """

    template: str
    fields: dict[str, Any]

    def __new__(cls, template: str, **fields: Any) -> Spoken:
        self = super().__new__(cls, template.format(**{k: str(v) for k, v in fields.items()}))
        self.template, self.fields = template, fields
        return self

    def __format__(self, spec: str) -> str:
        if language() == "en":
            return format(str(self), spec)
        return format(catalogue().gettext(self.template).format(**self.fields), spec)
