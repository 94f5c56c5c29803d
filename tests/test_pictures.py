"""Heatmaps, the token view and SVG/HTML reports: values, labels, shades and files.

Numbers are checked against the slow reference (tests/reference.py) and
entropies against math.log2; the SVG and HTML are parsed, not grepped.
"""

from __future__ import annotations

import json
import math
import os
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from io import StringIO

import numpy as np
import pytest
import reference
from typer.testing import CliRunner

from qkvcli.atomic import write_atomic
from qkvcli.errors import OutputError
from qkvcli.focus import entropy_bits, ranked
from qkvcli.render.heatmap import PALETTE, Shades
from qkvcli.render.tokens import bar

X = [[1, 0, 1, 0], [0, 2, 0, 2], [1, 1, 1, 1]]
W_Q = [[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 1]]
W_K = [[0, 0, 1], [1, 1, 0], [0, 1, 0], [1, 1, 0]]
W_V = [[0, 2, 0], [0, 3, 0], [1, 0, 3], [1, 1, 0]]
WORKED = "samples/worked_example.json"
TWO_HEADS = "samples/causal_two_heads.json"

runner = CliRunner()


def qkv(*args: str):
    from qkvcli.cli import app

    return runner.invoke(app, list(args))


def ref_weights(x=X, wq=W_Q, wk=W_K, wv=W_V, heads=1, allowed=None):
    """Weights per head from the slow reference."""
    Q, K, V = (reference.project(x, w) for w in (wq, wk, wv))
    return reference.attention(Q, K, V, heads=heads, allowed=allowed)["weights"]


def ref_entropy(row):
    return -sum(p * math.log2(p) for p in row if p > 0)


def causal(n):
    return [[j <= i for j in range(n)] for i in range(n)]


# ---- the small pieces ------------------------------------------------------


def test_entropy_in_bits_by_hand():
    assert entropy_bits(np.array([0.5, 0.25, 0.25])) == 1.5
    assert entropy_bits(np.array([1.0, 0.0, 0.0])) == 0.0
    assert entropy_bits(np.full(8, 1 / 8)) == pytest.approx(3.0, abs=1e-15)
    row = ref_weights()[0][1]
    assert entropy_bits(np.array(row)) == pytest.approx(ref_entropy(row), abs=1e-12)


def test_ranked_heaviest_first_ties_in_key_order_masked_left_out():
    w = np.array([0.25, 0.5, 0.0, 0.25])
    assert ranked(w, None) == [1, 0, 3, 2]
    assert ranked(w, np.array([False, False, True, False])) == [1, 0, 3]


def test_shades_bins_and_edges():
    s = Shades(2.0, 16.0)  # the worked example's scores
    assert s.edges() == pytest.approx([2, 4.8, 7.6, 10.4, 13.2, 16])
    assert [s.level(v) for v in (2, 4, 4.8, 10, 12, 13.2, 16)] == [0, 0, 1, 2, 3, 4, 4]
    assert Shades(3.0, 3.0).level(3.0) == 2  # one value: the middle shade


def test_bar_is_weight_times_twenty_cells_in_eighths():
    assert bar(0.4319) == "█" * 8 + "▋"  # 0.4319 × 160 = 69.1 eighths = 8 cells + 5/8
    assert bar(1.0) == "█" * 20
    assert bar(0.0) == bar(float("nan")) == ""


# ---- the terminal drawing ----------------------------------------------------


def test_worked_example_heatmap_and_token_view():
    (w,) = ref_weights()
    f = [[f"{v:.4f}" for v in row] for row in w]
    h = [f"{ref_entropy(row):.4f}" for row in w]
    u = f"{math.log2(3):.4f}"
    r = qkv("compute", WORKED, "--heatmap", "--tokens-view")
    assert r.exit_code == 0, r.output
    # shades by hand: [0, .2) blank, [.2, .4) ░, [.4, .6) ▒, [.6, .8) ▓, [.8, 1] █
    assert r.stdout == "\n".join(
        [
            "samples/worked_example.json: 3 queries × 3 keys, d_model 4, d_k 3, d_v 3",
            "layout rows, weights in-out",
            "scale 1/√3 = 0.57735",
            "read W_Q ← w_query, W_K ← w_key, W_V ← w_value",
            "",
            "weights = softmax(scaled) per row (3×3)",
            "rows: queries (who looks) · columns: keys (looked at)",
            "       x1         x2         x3",
            f"x1   {f[0][0]}   ▒▒{f[0][1]}▒▒ ▒▒{f[0][2]}▒▒",
            f"x2   {f[1][0]}   ██{f[1][1]}██   {f[1][2]}  ",
            f"x3   {f[2][0]}   ▓▓{f[2][1]}▓▓ ░░{f[2][2]}░░",
            "shade = weight: [  ] 0–0.2  [░░] 0.2–0.4  [▒▒] 0.4–0.6  [▓▓] 0.6–0.8  [██] 0.8–1",
            "",
            "top 3 keys per query (weights, heaviest first)",
            "entropy in bits: 0 = all weight on one key; log₂(keys) = spread evenly",
            f"x1  entropy {h[0]} bits (uniform over 3 keys: {u})",
            f"  1. x2  {f[0][1]}  ████████▋",
            f"  2. x3  {f[0][2]}  ████████▋",
            f"  3. x1  {f[0][0]}  ██▊",
            f"x2  entropy {h[1]} bits (uniform over 3 keys: {u})",
            f"  1. x2  {f[1][1]}  ██████████████████▏",
            f"  2. x3  {f[1][2]}  █▊",
            f"  3. x1  {f[1][0]}  ",
            f"x3  entropy {h[2]} bits (uniform over 3 keys: {u})",
            f"  1. x2  {f[2][1]}  ███████████████▏",
            f"  2. x3  {f[2][2]}  ████▊",
            f"  3. x1  {f[2][0]}  ▏",
            "",
        ]
    )


def test_scores_heatmap_shades_from_smallest_to_largest():
    r = qkv("compute", WORKED, "--heatmap", "--stage", "scores")
    assert r.exit_code == 0, r.output
    # scores [[2, 4, 4], [4, 16, 12], [4, 12, 10]]; bins of 2.8 from 2 to 16
    grid = r.stdout.split("rows: queries (who looks) · columns: keys (looked at)\n")[1]
    assert grid.splitlines() == [
        "        x1          x2          x3",
        "x1    2.0000      4.0000      4.0000  ",
        "x2    4.0000   ██16.0000██ ▓▓12.0000▓▓",
        "x3    4.0000   ▓▓12.0000▓▓ ▒▒10.0000▒▒",
        "shade = scores: [  ] 2–4.8  [░░] 4.8–7.6  [▒▒] 7.6–10.4  [▓▓] 10.4–13.2  [██] 13.2–16",
    ]


def _write(tmp_path, doc):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_causal_mask_shown_as_masked(tmp_path):
    path = _write(tmp_path, {"tokens": ["x1", "x2", "x3"], "mask": "causal", "X": X,
                             "W_Q": W_Q, "W_K": W_K, "W_V": W_V})  # fmt: skip
    (w,) = ref_weights(allowed=causal(3))
    f = [[f"{v:.4f}" for v in row] for row in w]
    r = qkv("compute", path, "--heatmap", "--top", "2")
    assert r.exit_code == 0, r.output
    out = r.stdout.split("rows: queries (who looks) · columns: keys (looked at)\n")[1]
    # x2: softmax(4/√3, 16/√3) by hand
    e = math.exp(12 / math.sqrt(3))
    assert w[1][:2] == pytest.approx([1 / (1 + e), e / (1 + e)], abs=1e-15)
    h = [f"{ref_entropy(row):.4f}" for row in w]
    assert out.splitlines() == [
        "       x1         x2         x3",
        f"x1 ██{f[0][0]}██      ×          ×    ",
        f"x2   {f[1][0]}   ██{f[1][1]}██      ×    ",
        f"x3   {f[2][0]}   ▓▓{f[2][1]}▓▓ ░░{f[2][2]}░░",
        "shade = weight: [  ] 0–0.2  [░░] 0.2–0.4  [▒▒] 0.4–0.6  [▓▓] 0.6–0.8  [██] 0.8–1",
        "                × masked (weight 0)",  # wrapped at 100 columns
        "",
        "top 2 keys per query (weights, heaviest first)",
        "entropy in bits: 0 = all weight on one key; log₂(keys) = spread evenly",
        "x1  entropy 0.0000 bits (uniform over 1 key: 0.0000)",
        f"  1. x1  {f[0][0]}  ████████████████████",
        "  masked: x2, x3",
        f"x2  entropy {h[1]} bits (uniform over 2 keys: 1.0000)",
        f"  1. x2  {f[1][1]}  ████████████████████",
        f"  2. x1  {f[1][0]}  ",
        "  masked: x3",
        f"x3  entropy {h[2]} bits (uniform over 3 keys: {math.log2(3):.4f})",
        f"  1. x2  {f[2][1]}  ███████████████▏",
        f"  2. x3  {f[2][2]}  ████▊",
        "  … 1 more",
    ]


def _grids(stdout: str, tokens: list[str]) -> dict[str, list[list[str]]]:
    """The cells of each head's grid, read back from the drawing: {'head 1/2': rows}.

    Grids may stand side by side: a line then holds a row of each.
    """
    grids: dict[str, list[list[str]]] = {}
    heads: list[str] = []
    m = len(tokens)
    for line in stdout.splitlines():
        if line.startswith("head "):
            heads = re.findall(r"head \d+/\d+", line)
            grids.update({h: [] for h in heads})
        elif heads and line.split(" ", 1)[0] in tokens:
            cells = re.findall(r"\d+\.\d+|×", line)
            assert len(cells) == m * len(heads), line
            for k, h in enumerate(heads):
                grids[h].append(cells[k * m : (k + 1) * m])
    return grids


def test_two_heads_each_drawn_with_its_own_weights():
    with open(TWO_HEADS) as f:
        doc = json.load(f)
    w = ref_weights(doc["X"], doc["W_Q"], doc["W_K"], doc["W_V"], heads=2, allowed=causal(4))
    r = qkv("compute", TWO_HEADS, "--heatmap")
    assert r.exit_code == 0, r.output
    expected = {
        f"head {h + 1}/2": [[f"{v:.4f}" if j <= i else "×" for j, v in enumerate(row)]
                            for i, row in enumerate(w[h])]
        for h in range(2)
    }  # fmt: skip
    assert _grids(r.stdout, doc["tokens"]) == expected


@pytest.mark.parametrize(("columns", "side_by_side"), [(100, True), (99, False)])
def test_heads_side_by_side_when_they_fit(monkeypatch, columns, side_by_side):
    monkeypatch.setenv("COLUMNS", str(columns))
    r = qkv("compute", TWO_HEADS, "--heatmap")
    assert max(len(line) for line in r.stdout.splitlines() if "×" in line) <= columns
    assert bool(re.search(r"^head 1/2 +head 2/2$", r.stdout, re.M)) == side_by_side


def test_colour_draws_the_same_characters(monkeypatch):
    from rich.console import Console

    from qkvcli.attention import run
    from qkvcli.load import load
    from qkvcli.options import Options
    from qkvcli.problem import resolve
    from qkvcli.render.report import Pictures, show

    problem, settings = load(WORKED, {})
    trace = run(resolve(problem, Options().merged(settings)))
    plain = qkv("compute", WORKED, "--heatmap", "--tokens-view").stdout
    monkeypatch.delenv("NO_COLOR")
    out = StringIO()
    console = Console(file=out, width=100, force_terminal=True, color_system="truecolor")
    show(trace, Pictures(heatmap=True, tokens_view=True), None, False, 4, console)
    text = out.getvalue()
    assert "\x1b[38;2;253;231;37;48;2;253;231;37m██" in text  # glyphs hidden in their colour
    assert re.sub(r"\x1b\[[0-9;]*m", "", text) == plain


def test_top_implies_token_view_and_must_be_positive():
    r = qkv("compute", WORKED, "--top", "1")
    assert r.exit_code == 0
    assert "  1. x2  0.4319  ████████▋\n  … 2 more\n" in r.stdout
    assert "shade" not in r.stdout
    bad = qkv("compute", WORKED, "--top", "0")
    assert bad.exit_code == 2
    assert bad.stderr.startswith("qkv: error: Invalid value for '--top'")


def test_sigmoid_weights_have_no_entropy(tmp_path):
    path = _write(tmp_path, {"X": X, "W_Q": W_Q, "W_K": W_K, "W_V": W_V, "normalize": "sigmoid"})
    r = qkv("compute", path, "--tokens-view")
    assert r.exit_code == 0, r.output
    assert r.stdout.count("entropy: none (sigmoid weights do not sum to 1)") == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--heatmap", "--stage", "Q"],
         "--heatmap draws scores, scaled, capped, masked, weights (queries × keys); Q is queries × features"),
        (["--heatmap", "-f", "json"],
         "--heatmap draws a picture: not with --format json (tables only)"),
        (["--heatmap", "--stage", "masked"],
         "--stage masked: this run has no masked stage; this run's stages: Q, K, V, scores, scaled, weights, output"),
        (["--svg", "no/such/dir/r.svg"], "--svg no/such/dir/r.svg: directory no/such/dir does not exist"),
        (["--html", "samples"], "--html 'samples': needs a file name"),
    ],
)  # fmt: skip
def test_picture_errors(args, message):
    r = qkv("compute", WORKED, *args)
    assert (r.exit_code, r.stdout, r.stderr) == (2, "", f"qkv: error: {message}\n")


# ---- the files ---------------------------------------------------------------

SVG = "{http://www.w3.org/2000/svg}"


def svg_drawing(path):
    """The SVG's lines of text (rebuilt from the positions) and the fill under each text."""
    root = ET.parse(path).getroot()
    texts = [t for t in root.iter(f"{SVG}text") if "line-" in t.get("clip-path", "")]
    rects = {
        (r.get("x"), r.get("width"), round(float(r.get("y")))): r.get("fill")
        for r in root.iter(f"{SVG}rect")
        if r.get("shape-rendering") == "crispEdges"
    }
    cw = float(texts[0].get("textLength")) / len(texts[0].text)
    lines: dict[int, dict[int, str]] = {}
    fills: dict[str, list[str | None]] = {}
    for t in texts:
        row = int(re.search(r"line-(\d+)", t.get("clip-path"))[1])
        col = round(float(t.get("x")) / cw)
        for k, ch in enumerate(t.text.replace("\xa0", " ")):
            lines.setdefault(row, {})[col + k] = ch
        under = [
            fill
            for (x, w, _), fill in rects.items()
            if x == t.get("x") and w == t.get("textLength")
        ]
        fills.setdefault(t.text, []).extend(under)
    text = [
        "".join(
            lines.get(i, {}).get(c, " ") for c in range(max(lines.get(i, {0: ""}), default=0) + 1)
        )
        for i in range(max(lines) + 1)
    ]
    return [line.rstrip() for line in text], fills


def test_svg_holds_what_was_drawn_with_values_labels_and_shades(tmp_path):
    target = tmp_path / "report.svg"
    r = qkv("compute", WORKED, "--heatmap", "--svg", str(target))
    assert r.exit_code == 0, r.output
    lines, fills = svg_drawing(target)
    assert lines == [line.rstrip() for line in r.stdout.splitlines()]
    assert "weights = softmax(scaled) per row (3×3)" in lines
    assert lines[7].split() == ["x1", "x2", "x3"]
    (w,) = ref_weights()
    for row in w:
        for v in row:
            level = min(int(v * 5), 4)
            assert PALETTE[level] in fills[f"{v:.4f}"], (v, fills[f"{v:.4f}"])
    root = ET.parse(target).getroot()
    assert root.get("viewBox").startswith("0 0 ")
    titles = [t.text for t in root.iter(f"{SVG}text") if t.get("class", "").endswith("-title")]
    assert titles == ["qkv\xa0compute\xa0worked_example.json"]


class _Spans(HTMLParser):
    """Collects the text of a page and the style around each piece of it."""

    def __init__(self) -> None:
        super().__init__()
        self.styles: list[str] = []
        self.pieces: list[tuple[str, str]] = []
        self.tags: list[str] = []
        self.title = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "span":
            self.styles.append(dict(attrs).get("style", ""))

    def handle_endtag(self, tag):
        if tag in self.tags:  # close it and anything left open inside it (void tags)
            del self.tags[len(self.tags) - 1 - self.tags[::-1].index(tag) :]
        if tag == "span":
            self.styles.pop()

    def handle_data(self, data):
        if self.tags[-1:] == ["title"]:
            self.title = data
            return
        self.pieces.append((data, self.styles[-1] if self.styles else ""))


def test_html_holds_what_was_drawn_with_values_and_shades(tmp_path):
    target = tmp_path / "report.html"
    r = qkv("compute", TWO_HEADS, "--heatmap", "--tokens-view", "--html", str(target))
    assert r.exit_code == 0, r.output
    page = _Spans()
    page.feed(target.read_text(encoding="utf-8"))
    assert page.title == "qkv compute causal_two_heads.json"
    text = "".join(d for d, _ in page.pieces)
    assert r.stdout in text
    styles = {d: s for d, s in page.pieces}
    assert "background-color: #fde725" in styles["1.0000"]  # 'the' looks only at itself
    assert "background-color: #440154" in styles["0.1956"]


def test_svg_alone_saves_the_tables(tmp_path):
    target = tmp_path / "tables.svg"
    r = qkv("compute", WORKED, "--stage", "weights", "--svg", str(target))
    assert r.exit_code == 0, r.output
    lines, _ = svg_drawing(target)
    assert lines == [line.rstrip() for line in r.stdout.splitlines()]
    assert any("0.9088" in line for line in lines)


def test_atomic_write_replaces_whole_and_keeps_the_mode(tmp_path):
    target = tmp_path / "r.svg"
    target.write_text("old")
    os.chmod(target, 0o640)
    write_atomic(str(target), "new", "--svg")
    assert target.read_text() == "new"
    assert os.stat(target).st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["r.svg"]


@pytest.mark.parametrize("fails", ["replace", "fsync"])
def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch, fails):
    import qkvcli.atomic as atomic

    target = tmp_path / "r.svg"
    target.write_text("old")

    def boom(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, fails, boom)
    with pytest.raises(
        OutputError, match=r"^--svg .*r\.svg: cannot write: No space left on device$"
    ):
        write_atomic(str(target), "new", "--svg")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.svg"]


def test_failed_write_from_the_command_line(tmp_path, monkeypatch):
    import qkvcli.atomic as atomic

    def boom(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", boom)
    target = tmp_path / "r.svg"
    r = qkv("compute", WORKED, "--heatmap", "--svg", str(target))
    assert r.exit_code == 2
    assert r.stderr == f"qkv: error: --svg {target}: cannot write: No space left on device\n"
    assert os.listdir(tmp_path) == []


def test_without_tokens_rows_are_q_and_columns_k(tmp_path):
    path = _write(tmp_path, {"Q": [[1, 0], [0, 1]], "K": [[1, 0], [0, 1]], "V": [[1], [2]]})
    r = qkv("compute", path, "--heatmap", "--top", "1")
    assert r.exit_code == 0, r.output
    # softmax([1, 0] / √2) by hand
    big = 1 / (1 + math.exp(-1 / math.sqrt(2)))
    assert f"q1 ▓▓{big:.4f}▓▓ ░░{1 - big:.4f}░░\n" in r.stdout
    assert "top 1 key per query" in r.stdout
    assert f"q2  entropy {ref_entropy([big, 1 - big]):.4f} bits" in r.stdout
    assert f"  1. k2  {big:.4f}  " in r.stdout


@pytest.mark.parametrize("fill", ["nan", "uniform"])
def test_fully_masked_row_in_the_token_view(tmp_path, fill):
    doc = {"tokens": ["a", "b"], "Q": [[1, 0], [0, 1]], "K": [[1, 0], [0, 1]], "V": [[1], [2]],
           "mask": [[0, 0], [1, 1]], "empty_rows": fill}  # fmt: skip
    r = qkv("compute", _write(tmp_path, doc), "--heatmap", "--tokens-view")
    assert r.exit_code == 0, r.output
    if fill == "nan":
        assert "a     NaN        NaN   \n" in r.stdout
        assert "\na  no weights: every key is masked\nb  entropy" in r.stdout
    else:
        assert "a ▒▒0.5000▒▒ ▒▒0.5000▒▒\n" in r.stdout
        assert (
            "\na  entropy 1.0000 bits (uniform over 2 keys: 1.0000)\n"
            "  every key is masked: weights filled by --empty-rows uniform\n"
            "  1. a  0.5000  ██████████\n  2. b  0.5000  ██████████\n"
        ) in r.stdout
