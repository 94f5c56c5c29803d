"""The interactive report (--html): self-contained, its numbers and arithmetic are qkv's own.

What a browser does with it is tested in tests/test_explore_browser.py.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import SAMPLES
from typer.testing import CliRunner

from qkvcli.attention import run
from qkvcli.cli import app
from qkvcli.explain import explain
from qkvcli.load import load
from qkvcli.options import Options
from qkvcli.problem import resolve
from qkvcli.render import explore
from qkvcli.render.explore import View, key, quick, report_data
from qkvcli.trace import PER_HEAD

TWO_HEADS = str(SAMPLES / "causal_two_heads.json")


def cell_texts(data):
    """The page's explanations, each cell's lines joined (the page stores each line once)."""
    shared = data["explain"]
    return {k: "\n".join(shared["lines"][n] for n in ids) for k, ids in shared["cells"].items()}


def qkv(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def data_of(page: str) -> dict:
    """The JSON the page's script draws from."""
    m = re.search(r'<script type="application/json" id="qkv-data">(.*?)</script>', page, re.S)
    assert m, "no data in the page"
    return json.loads(m.group(1))


def view_of(path: str) -> View:
    problem, settings = load(path)
    options = Options().merged(settings)
    return View("", problem, options, run(resolve(problem, options)))


def test_compute_html_is_one_offline_file_with_the_explorer(tmp_path):
    target = tmp_path / "r.html"
    r = qkv("compute", TWO_HEADS, "--heatmap", "--html", str(target))
    assert r.exit_code == 0, r.output
    page = target.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>qkv compute causal_two_heads.json</title>" in page
    assert re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page) is None  # nothing fetched
    assert "http://" not in page and "https://" not in page
    assert page.count("<script") == 2  # the data and the code, both inline
    assert 'id="qkv-grid"' in page and "As the terminal drew it" in page
    data = data_of(page)
    assert data["views"][0]["heads"] == 2
    assert [s["name"] for s in data["views"][0]["stages"]] == [
        "Q", "K", "V", "scores", "scaled", "masked", "weights", "head_outputs", "concat", "output",
    ]  # fmt: skip


def test_every_cell_of_a_small_problem_has_qkvs_explanation():
    view = view_of(TWO_HEADS)
    data = report_data([view], 4)
    texts = cell_texts(data)
    t = view.trace
    count = 0
    for stage in t.stages.values():
        for idx in np.ndindex(*stage.array.shape[:-2]):
            head = idx[-1] if stage.per_head else None
            n, m = stage.shape
            for i in range(n):
                for j in range(m):
                    cell = f"{stage.name}[{i + 1},{j + 1}]"
                    lines = explain(
                        view.problem, view.options, cell, None if head is None else head + 1
                    )
                    assert texts[key(0, stage.name, 0, head, i, j)] == "\n".join(lines)
                    count += 1
    assert count == len(texts)
    assert data["notes"] == []


def test_cells_are_the_tables_numbers_with_their_shade_levels():
    view = view_of(TWO_HEADS)
    data = report_data([view], 4)
    weights = next(s for s in data["views"][0]["stages"] if s["name"] == "weights")
    head2 = next(m for m in weights["matrices"] if m["head"] == 1)
    assert head2["cells"][:4] == ["1.0000", "×", "×", "×"]  # masked keys drawn as in the terminal
    assert head2["levels"][:4] == "4xxx"
    assert weights["rows"] == ["the", "cat", "sat", "down"]
    assert weights["legend"] == ["0–0.2", "0.2–0.4", "0.4–0.6", "0.6–0.8", "0.8–1"]
    tv = next(x for x in data["views"][0]["tokens"] if x["head"] == 0)
    assert tv["rows"][2]["entropy"] == "0.1910"
    assert [r[1] for r in tv["rows"][2]["ranked"]] == ["0.9713", "0.0283", "0.0004"]
    assert tv["rows"][2]["masked"] == [3]
    assert data["views"][0]["entropy"][0] == ["0.1001", "0.6120"]


@pytest.mark.parametrize(
    ("sample", "extra"),
    [("multihead.json", {"heads": 2}), ("grouped_query.json", {}), ("sigmoid.json", {}),
     ("biases.json", {}), ("batch.json", {}), ("dk_ne_dv.json", {}), ("cosine.json", {}),
     ("worked_example.json", {"temperature": 2.0, "scale": 0.5})],
)  # fmt: skip
def test_the_quick_problem_explains_per_head_stages_in_the_same_words(sample, extra):
    problem, settings = load(str(SAMPLES / sample))
    options = Options().merged(settings).merged(extra)
    t = run(resolve(problem, options))
    fast = quick(View("", problem, options, t))
    assert fast is not None
    for stage in t.stages.values():
        if stage.name not in PER_HEAD:
            continue
        for idx in np.ndindex(*stage.array.shape[:-2]):
            head = idx[-1] + 1 if stage.per_head else None
            item = idx[0] + 1 if t.batched else None
            n, m = stage.shape
            for i in range(n):
                for j in range(m):
                    cell = f"{stage.name}[{i + 1},{j + 1}]"
                    assert explain(fast, options, cell, head, item) == explain(
                        problem, options, cell, head, item
                    ), (stage.name, idx, i, j)


def test_masks_and_other_layouts_are_explained_from_the_problem_itself():
    for sample in ("causal.json", "padding.json", "alibi.json", "cross_attention.json"):
        assert quick(view_of(str(SAMPLES / sample))) is None, sample
    for sample in ("decode.json", "decode_rope.json"):  # a KV cache: the past is no Q, K, V row
        assert quick(view_of(str(SAMPLES / sample))) is None, sample


@pytest.mark.slow
@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.json")))
def test_every_sample_s_page_explains_each_cell_as_explain_does(sample):
    """Whatever shortcut the page takes (the quick problem), its words are explain's own."""
    view = view_of(str(SAMPLES / sample))
    texts = cell_texts(report_data([view], 4))
    t = view.trace
    for k, text in texts.items():
        _view, name, item, head, i, j = k.split("|")
        cell = f"{name}[{int(i) + 1},{int(j) + 1}]"
        h = None if head == "-" else int(head) + 1
        b = int(item) + 1 if t.batched else None
        assert text == "\n".join(explain(view.problem, view.options, cell, h, b)), (sample, k)


def test_a_small_budget_keeps_weights_first_and_says_so(monkeypatch):
    monkeypatch.setattr(explore, "MAX_EXPLAINED", 20)
    view = view_of(TWO_HEADS)  # 2 heads × 16 weights
    data = report_data([view], 4)
    assert len(cell_texts(data)) == 20
    assert all("|weights|" in k for k in cell_texts(data))
    assert data["notes"] == [
        "the page holds the arithmetic of 20 weights (at most 20 cells): "
        "for the others, save the problem and run qkv explain"
    ]
    assert [s["name"] for s in data["views"][0]["stages"]] == [
        "scores",
        "scaled",
        "masked",
        "weights",
    ]


def test_a_budget_for_weights_leaves_out_what_does_not_fit_whole(monkeypatch):
    monkeypatch.setattr(explore, "MAX_EXPLAINED", 32 + 16)  # the weights, and Q (4×4) whole
    data = report_data([view_of(TWO_HEADS)], 4)
    assert data["notes"] == []
    assert [s["name"] for s in data["views"][0]["stages"]] == [
        "Q",
        "scores",
        "scaled",
        "masked",
        "weights",
    ]


def test_big_runs_keep_the_drawing_and_say_why_there_is_no_explorer(tmp_path):
    g = np.random.default_rng(0)
    doc = {"Q": g.standard_normal((70, 2)).tolist(), "K": g.standard_normal((70, 2)).tolist(),
           "V": g.standard_normal((70, 2)).tolist()}  # fmt: skip
    path = tmp_path / "big.json"
    path.write_text(json.dumps(doc))
    target = tmp_path / "big.html"
    r = qkv("compute", str(path), "--stage", "output", "--html", str(target))
    assert r.exit_code == 0, r.output
    data = data_of(target.read_text(encoding="utf-8"))
    assert data["views"] == []
    assert data["notes"] == [
        "this run is 70×70: the page explores grids of at most 64 tokens; "
        "the drawing below is what the terminal showed"
    ]


def test_an_exact_run_explains_in_fractions(tmp_path):
    target = tmp_path / "exact.html"
    r = qkv("compute", str(SAMPLES / "worked_example.json"), "--exact", "--html", str(target))
    assert r.exit_code == 0, r.output
    data = data_of(target.read_text(encoding="utf-8"))
    assert "scores[2,3] × 1/√3 = 12 × √3/3 = 4√3 ≈ 6.9282" in cell_texts(data)["0|weights|0|-|1|2"]
    scores = next(s for s in data["views"][0]["stages"] if s["name"] == "scores")
    assert scores["matrices"][0]["cells"][:3] == ["2.0000", "4.0000", "4.0000"]
