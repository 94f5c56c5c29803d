"""The language qkv speaks: how it is chosen, and that every message has its Chinese entry."""

from __future__ import annotations

import ast
import gettext
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qkvcli import i18n
from qkvcli.cli import app

ROOT = Path(__file__).resolve().parent.parent
PO_DIR = ROOT / "po" / "zh" / "LC_MESSAGES"
MARKERS = {"_": 1, "N_": 1, "ngettext": 2}


def po_entries(path: Path, plurals: bool = True) -> dict[str, str]:
    """msgid → msgstr of a .po file, parsed plainly (plural entries by their singular, and by
    their plural too unless not ``plurals``)."""
    entries: dict[str, str] = {}
    key, field, parts = None, None, {}
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        line = line.strip()
        if not line or line.startswith("#"):
            if parts.get("msgid") is not None:
                entries[parts["msgid"]] = parts.get("msgstr", parts.get("msgstr[0]", ""))
                if (
                    plurals and parts.get("msgid_plural") is not None
                ):  # the plural form is marked too
                    entries[parts["msgid_plural"]] = parts.get("msgstr[0]", "")
            parts, field = {}, None
            continue
        if line.startswith('"'):
            parts[field] += ast.literal_eval(line)
            continue
        key, _, rest = line.partition(" ")
        field = key
        parts[field] = ast.literal_eval(rest)
    entries.pop("", None)  # the header
    return entries


def catalogue() -> dict[str, str]:
    found: dict[str, str] = {}
    for po in sorted(PO_DIR.glob("*.po")):
        found.update(po_entries(po))
    return found


def marked_messages() -> dict[str, str]:
    """Every literal message marked in the code (``_``, ``N_``, ``ngettext``) → where it is."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "qkvcli").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            count = MARKERS.get(node.func.id)
            if count is None:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            for arg in node.args[:count]:
                assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), (
                    f"{where}: {node.func.id}() takes a literal string (format it after translating)"
                )
                found.setdefault(arg.value, where)
    return found


def help_texts() -> dict[str, str]:
    """Every help text of the command line (options, arguments, commands) → where it is."""
    import typer.main

    found: dict[str, str] = {}
    group = typer.main.get_command(app)
    for name, command in [("qkv", group), *group.commands.items()]:
        for text in (command.help, command.short_help):
            if text:
                found.setdefault(text, f"qkv {name}")
        for param in command.params:
            if getattr(param, "help", None):
                found.setdefault(param.help, f"qkv {name} {param.name}")
    return found


def test_every_marked_message_has_a_chinese_entry():
    have = catalogue()
    missing = {m: w for m, w in marked_messages().items() if not have.get(m)}
    assert not missing, f"{len(missing)} messages without a Chinese entry, e.g. " + "; ".join(
        f"{w}: {m!r}" for m, w in list(missing.items())[:10]
    )


def test_every_help_text_has_a_chinese_entry():
    have = catalogue()
    missing = {m: w for m, w in help_texts().items() if not have.get(m)}
    assert not missing, f"{len(missing)} help texts without a Chinese entry, e.g. " + "; ".join(
        f"{w}: {m!r}" for m, w in list(missing.items())[:10]
    )


def test_the_compiled_catalogue_is_the_source():
    """The installed .mo files hold what po/ says (a stale build would speak old Chinese)."""
    for po in sorted(PO_DIR.glob("*.po")):
        mo = Path(i18n.LOCALE_DIR) / "zh" / "LC_MESSAGES" / (po.stem + ".mo")
        assert mo.exists(), f"{mo} missing: reinstall qkv (pip install -e .) with msgfmt present"
        with mo.open("rb") as f:
            compiled = gettext.GNUTranslations(f)
        for msgid, msgstr in po_entries(po, plurals=False).items():
            if msgstr:
                assert compiled.gettext(msgid) == msgstr, f"{mo} is stale: reinstall qkv"


@pytest.mark.parametrize(
    ("env", "lang"),
    [
        ({}, "en"),
        ({"LANG": "zh_CN.UTF-8"}, "zh"),
        ({"LANG": "zh_CN.UTF-8", "LC_ALL": "en_US.UTF-8"}, "en"),
        ({"LC_MESSAGES": "zh_TW", "LANG": "en_US"}, "zh"),
        ({"LANGUAGE": "fr:zh", "LANG": "en_US"}, "zh"),
        ({"LANGUAGE": "fr", "LANG": "zh_CN"}, "zh"),
        ({"LANG": "fr_FR.UTF-8"}, "en"),
        ({"LANG": "C"}, "en"),
        ({"QKV_LANG": "zh", "LANG": "en_US"}, "zh"),
        ({"QKV_LANG": "en", "LANG": "zh_CN.UTF-8"}, "en"),
    ],
)
def test_the_language_comes_from_qkv_lang_then_the_locale(env, lang):
    assert i18n.language_of(env) == lang


def test_a_language_qkv_does_not_speak_is_refused_in_one_line():
    runner = CliRunner()
    for args, env, said in [
        (["--lang", "fr", "compute", "samples/worked_example.json"], {}, "--lang fr"),
        (["compute", "samples/worked_example.json", "--lang=xx"], {}, "--lang xx"),
        (["compute", "samples/worked_example.json"], {"QKV_LANG": "klingon"}, "QKV_LANG=klingon"),
        (["compute", "--lang"], {}, "--lang needs"),
    ]:
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and said in lines[0], (args, result.stderr)


def test_lang_is_taken_anywhere_before_the_double_dash():
    assert app  # the app imports
    from qkvcli.cli.app import take_lang

    assert take_lang(["compute", "a.json", "--lang=zh"]) == ("zh", ["compute", "a.json"])
    assert take_lang(["--lang", "en", "check", "--", "--lang"]) == ("en", ["check", "--", "--lang"])


def test_the_english_path_never_opens_a_catalogue():
    code = (
        "import sys; from qkvcli.cli import main; from qkvcli import i18n\n"
        "sys.argv = ['qkv', 'compute', 'samples/worked_example.json', '-f', 'json']\n"
        "sys.modules['qkvcli.cli'].leave = lambda code: None  # stay: what did the run load?\nmain()\n"
        "assert i18n.language() == 'en' and i18n._state['catalogue'] is None, i18n._state\n"
    )
    env = {"PATH": "/usr/bin:/bin", "LANG": "en_US.UTF-8"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_counted_word_has_its_chinese_entry():
    """`errors.counted` counts these words in the catalogue's ``{n} row`` / ``{n} rows``."""
    from qkvcli.errors import COUNTED

    have = catalogue()
    missing = [f"{{n}} {one}" for one, _many in COUNTED if not have.get(f"{{n}} {one}")]
    assert not missing, missing
