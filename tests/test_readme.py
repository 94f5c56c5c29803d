"""The README stays true: every ``$ qkv …`` line in a ```console block is run and its output compared."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```console\n(.*?)```", re.S)


def examples() -> list[tuple[str, str, int | None]]:
    """(command, expected output, expected exit code or None) from the README."""
    out: list[tuple[str, str, int | None]] = []
    for block in BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8")):
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, expected = chunk.partition("\n")
            if command == "echo $?":
                out[-1] = (out[-1][0], out[-1][1], int(expected.strip()))
            else:
                out.append((command, expected, None))
    return out


def shell(command: str) -> subprocess.CompletedProcess:
    qkv = f"{sys.executable} -m qkvcli"
    command = re.sub(r"(^|\| )qkv ", lambda m: m.group(1) + qkv + " ", command)
    env = os.environ | {"NO_COLOR": "1", "COLUMNS": "100"}
    return subprocess.run(command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True)


def strip(text: str) -> list[str]:
    return [line.rstrip() for line in text.rstrip("\n").splitlines()]


CASES = examples()


def test_the_readme_has_examples():
    assert len(CASES) >= 8


@pytest.mark.parametrize("command, expected, code", CASES, ids=[c[0][:60] for c in CASES])
def test_readme_example(command, expected, code):
    result = shell(command)
    assert strip(result.stdout + result.stderr) == strip(expected)
    if code is not None:
        assert result.returncode == code
