"""The README stays true: every ``$ qkv …`` line in a ```console block is run and its output compared.

docs/update_readme.py writes the same outputs back when behaviour changes on purpose.
"""

from __future__ import annotations

import importlib.util
import re
import shutil

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


spec = importlib.util.spec_from_file_location("update_readme", ROOT / "docs" / "update_readme.py")
update_readme = importlib.util.module_from_spec(spec)
spec.loader.exec_module(update_readme)


def examples() -> list[tuple[str, str, int | None]]:
    """(command, expected output, expected exit code or None) from the README."""
    out: list[tuple[str, str, int | None]] = []
    for _, block, _ in update_readme.BLOCK.findall(
        (ROOT / "README.md").read_text(encoding="utf-8")
    ):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, expected = chunk.partition("\n")
            if command == "echo $?":
                out[-1] = (out[-1][0], out[-1][1], int(expected.strip()))
            else:
                out.append((command, expected, None))
    return out


CASES = examples()


@pytest.fixture(scope="module")
def cwd():
    where = update_readme.scratch()
    yield where
    shutil.rmtree(where)


def strip(text: str) -> list[str]:
    return [line.rstrip() for line in text.rstrip("\n").splitlines()]


def test_the_readme_has_examples():
    assert len(CASES) >= 20


@pytest.mark.parametrize("command, expected, code", CASES, ids=[c[0][:60] for c in CASES])
def test_readme_example(cwd, command, expected, code):
    result = update_readme.shell(command, cwd)
    assert strip(result.stdout + result.stderr) == strip(expected)
    if code is not None:
        assert result.returncode == code
