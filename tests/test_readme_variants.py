"""The README's variants section shows real output: every command in it is run again here."""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import ROOT
from typer.testing import CliRunner

from qkvcli.cli import app


def blocks() -> list[tuple[str, list[str], int]]:
    """(command, expected output lines, exit code) for each console block of the section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("<!-- section: variants -->", 1)[1].split("\n## ", 1)[0]
    found = []
    for body in re.findall(r"```console\n(.*?)```", section, flags=re.S):
        lines = body.splitlines()
        command, out, code = lines[0].removeprefix("$ qkv "), lines[1:], 0
        if out[-2:-1] == ["$ echo $?"]:
            out, code = out[:-2], int(out[-1])
        found.append((command, out, code))
    return found


@pytest.mark.parametrize(
    "command, expected, code", blocks(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_readme_variant_example_is_real(command, expected, code):
    result = CliRunner().invoke(app, shlex.split(command))
    assert result.exit_code == code
    shown = (result.stdout + result.stderr).splitlines()
    assert [line.rstrip() for line in shown] == expected
