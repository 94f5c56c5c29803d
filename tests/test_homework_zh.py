"""The homework commands in Chinese: Chinese stage names and full-width input, the articles'
two slips in their own words (in both languages), golden outputs, tables at 80 columns."""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import numpy as np
import pytest
from rich.cells import cell_len
from test_i18n import PO_DIR, po_entries
from typer.testing import CliRunner

from qkvcli import i18n
from qkvcli.answers import STAGE_ALIASES, parse_answers, stage_key, written
from qkvcli.check import grade
from qkvcli.cli import app
from qkvcli.explain import explain, parse_cell
from qkvcli.load import load
from qkvcli.load.values import ascii_forms
from qkvcli.options import Options
from qkvcli.trace import STAGES

runner = CliRunner()
GOLDEN = Path(__file__).parent / "golden" / "zh"
WORKED = "samples/worked_example.json"
HW = "samples/homework"


@pytest.fixture(autouse=True)
def _english_after():
    """A test that speaks Chinese in-process leaves the next one in English."""
    yield
    i18n.choose("en")


def qkv(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env)


def worked_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q, K, V of the worked example, by plain numpy (the reference, not qkv's pipeline)."""
    doc = json.loads(Path(WORKED).read_text(encoding="utf-8"))
    X = np.array(doc["X"], float)
    return tuple(X @ np.array(doc[w], float) for w in ("w_query", "w_key", "w_value"))


def softmax_rows(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- Chinese stage names


@pytest.mark.parametrize(
    ("typed", "stage"),
    [("查询", "Q"), ("键", "K"), ("值", "V"), ("分数", "scores"), ("注意力分数", "scores"),
     ("缩放", "scaled"), ("缩放后的分数", "scaled"), ("权重", "weights"), ("注意力权重", "weights"),
     ("输出", "output"), ("各头输出", "head_outputs"), ("拼接", "concat"),
     ("掩码后的分数", "masked"), ("Ｗｅｉｇｈｔｓ", "weights"), ("Q矩阵", "Q")],
)  # fmt: skip
def test_chinese_stage_names_name_the_stages(typed, stage):
    assert stage_key(typed) == stage


def test_every_alias_names_a_stage():
    assert set(STAGE_ALIASES.values()) <= set(STAGES)


def test_an_answer_file_in_chinese_is_marked_like_the_english_one():
    Q, K, _V = worked_arrays()
    w = softmax_rows(Q @ K.T / math.sqrt(3))
    english = {"scores": (Q @ K.T).tolist(), "weights": np.round(w, 4).tolist()}
    chinese = {"分数": english["scores"], "注意力权重": english["weights"]}
    problem, settings = load(WORKED)
    options = Options().merged(settings)
    a = grade(problem, options, parse_answers(json.dumps(english), "a.json"))
    b = grade(problem, options, parse_answers(json.dumps(chinese, ensure_ascii=False), "b.json"))
    assert a.ok and b.ok
    assert [(c.stage, c.index, c.verdict) for c in a.cells] == [
        (c.stage, c.index, c.verdict) for c in b.cells
    ]
    assert len(b.cells) == 18


@pytest.mark.parametrize(
    ("text", "value"),
    [("０.４３１９", 0.4319), ("－１.５", -1.5), ("４３.１９％", 0.4319), ("负无穷", -math.inf),
     ("７／２", 3.5), ("２√３／３", 2 * math.sqrt(3) / 3)],
)  # fmt: skip
def test_full_width_answers_are_read(text, value):
    w = written(text)
    assert w.value == pytest.approx(value) and w.text == text


def test_an_answer_file_typed_full_width_is_read(tmp_path):
    plain = Path(f"{HW}/worked/right.json").read_text(encoding="utf-8")
    body = plain.split("\n", 2)[2]  # after the _about line
    wide = "{" + body.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789,.[]:-"})
    wide = wide.replace('"scores"', '"分数"').replace('"weights"', '"权重"')
    assert "［［" in wide and "，" in wide
    sheet = tmp_path / "全角.json"
    sheet.write_text(wide, encoding="utf-8")
    r = qkv("check", WORKED, str(sheet))
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].endswith(": 36 right, 0 wrong")


def test_full_width_csv_of_a_stage_is_read(tmp_path):
    plain = Path(f"{HW}/worked/weights.csv").read_text(encoding="utf-8")
    wide = plain.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789,."})
    assert wide != plain and ascii_forms(wide) == plain
    path = tmp_path / "权重.csv"
    path.write_text(wide, encoding="utf-8")
    r = qkv("check", WORKED, "--stage-file", f"权重={path}")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].endswith(": 8 right, 0 wrong, 1 blank")


@pytest.mark.parametrize(
    "cell",
    ["权重[1,2]", "权重［１，２］", "weights［1，2］", "权重【1、2】", "注意力权重 [ 1 , 2 ]"],
)
def test_explain_takes_chinese_names_and_full_width_cells(cell):
    assert parse_cell(cell) == ("weights", 0, 1)
    problem, settings = load(WORKED)
    options = Options().merged(settings)
    assert explain(problem, options, cell) == explain(problem, options, "weights[1,2]")


def test_a_wrong_chinese_stage_name_gets_did_you_mean_in_the_language_spoken(tmp_path):
    sheet = tmp_path / "a.json"
    sheet.write_text(json.dumps({"权种": [[1, 0, 0]] * 3}, ensure_ascii=False), encoding="utf-8")
    for lang, said in (("zh", "（是不是想写 权重？）"), ("en", " (did you mean 权重?)")):
        r = qkv("--lang", lang, "check", WORKED, str(sheet))
        assert r.exit_code == 2, r.output
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("qkv: error: "), r.stderr
        assert said in lines[0], lines[0]
    r = qkv("--lang", "zh", "explain", WORKED, "权种[1,2]")
    assert r.exit_code == 2
    assert r.stderr.startswith("qkv: error: 本题没有阶段 '权种'（是不是想写 权重？）；"), r.stderr
    r = qkv("explain", WORKED, "weight[1,2]")
    assert r.exit_code == 2 and " (did you mean weights?)" in r.stderr, r.stderr


def test_a_cell_that_is_not_a_cell_is_refused_in_chinese():
    r = qkv("--lang", "zh", "explain", WORKED, "权重(1,2)")
    assert r.exit_code == 2
    assert r.stderr == (
        "qkv: error: 单元格 '权重(1,2)' 的格式不是 阶段[行,列]，例如 scores[2,3] 或 权重[1,2]"
        "（从 1 开始计数）\n"
    )


# ---------------------------------------------------------------- the articles' slips

DIVIDE_EN = 'This is the slip "divide by the dimension" that the article makes ("再除以K的维度"'
DIVIDE_ZH = "这正是文章里“除以维度”的笔误（“再除以K的维度”）：公式除以的是 √d_k"
COSINE_EN = "This is the article's claim that dividing by √d gives cosine similarity"
COSINE_ZH = "除以 √d 并不会得到余弦相似度"


def test_divided_by_dk_is_the_articles_divide_by_the_dimension_in_both_languages():
    for lang, said, why in (
        ("en", DIVIDE_EN, "not by d_k"),
        ("zh", DIVIDE_ZH, "除以维度 d_k = 3，而不是 √d_k = √3"),
    ):
        r = qkv("--lang", lang, "check", WORKED, f"{HW}/worked/divided_by_dk.json")
        assert r.exit_code == 1, r.output
        assert said in r.stdout and why in r.stdout, r.stdout


def cosine_sheet() -> dict[str, list]:
    """Weights and output from cos(q, k) taken as the scaled scores: numpy, not qkv."""
    Q, K, V = worked_arrays()
    cos = (Q @ K.T) / np.outer(np.linalg.norm(Q, axis=1), np.linalg.norm(K, axis=1))
    w = softmax_rows(cos)
    return {"scores": (Q @ K.T).tolist(), "scaled": np.round(cos, 4).tolist(),
            "weights": np.round(w, 4).tolist(), "output": np.round(w @ V, 4).tolist()}  # fmt: skip


def test_cosine_as_the_scaled_scores_is_the_articles_claim_in_both_languages(tmp_path):
    sheet = tmp_path / "cosine.json"
    sheet.write_text(json.dumps(cosine_sheet()), encoding="utf-8")
    problem, settings = load(WORKED)
    report = grade(problem, Options().merged(settings), parse_answers(sheet.read_text(), "c.json"))
    assert report.findings[0].stage == "scaled"
    assert "cosine-as-scaled" in report.findings[0].keys
    for lang, said in (("en", COSINE_EN), ("zh", COSINE_ZH)):
        r = qkv("--lang", lang, "check", WORKED, str(sheet))
        assert r.exit_code == 1, r.output
        assert said in r.stdout, r.stdout
    r = qkv("--lang", "zh", "check", WORKED, str(sheet))
    assert "把余弦相似度当作缩放后的点积（scaled = q·k / (|q|·|k|)）" in r.stdout
    assert "√d_k 对所有向量对都是同一个常数" in r.stdout


def test_another_mistake_gets_no_article_note():
    r = qkv("check", WORKED, f"{HW}/worked/argmax.json")
    assert r.exit_code == 1
    assert "article" not in r.stdout and "文章" not in r.stdout


# ---------------------------------------------------------------- golden outputs, 80 columns


@pytest.mark.parametrize(
    ("args", "golden", "code"),
    [
        (("check", WORKED, f"{HW}/worked/divided_by_dk.json"), "check_divided_by_dk.txt", 1),
        (("explain", WORKED, "权重[1,2]"), "explain_weights_1_2.txt", 0),
    ],
)
def test_chinese_output_matches_golden(monkeypatch, args, golden, code):
    monkeypatch.setenv("COLUMNS", "80")
    r = qkv("--lang", "zh", *args)
    assert r.exit_code == code, r.output
    assert r.stderr == ""
    assert r.stdout == (GOLDEN / golden).read_text(encoding="utf-8")


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and line[0] in "┏┃┡│└"]


@pytest.mark.parametrize(
    "answers",
    [
        f"{HW}/worked/divided_by_dk.json",
        f"{HW}/worked/article_code.json",
        f"{HW}/worked/right.json",
    ],
)
def test_chinese_check_tables_align_at_80_columns(monkeypatch, answers):
    monkeypatch.setenv("COLUMNS", "80")
    r = qkv("--lang", "zh", "check", WORKED, answers)
    lines = table_lines(r.stdout)
    assert lines and "阶段" in lines[1] and "判定" in lines[1]
    widths = {cell_len(line) for line in lines}
    assert len(widths) == 1 and widths.pop() <= 80, lines
    for line in lines:  # every column boundary at the same display column
        cols = [cell_len(line[:i]) for i, ch in enumerate(line) if ch in "┃│┏┓┡┩└┘┳╇┴"]
        first = [cell_len(lines[0][:i]) for i, ch in enumerate(lines[0]) if ch in "┏┓┳"]
        assert cols == first, (line, cols, first)


def test_chinese_gradebook_aligns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    r = qkv("--lang", "zh", "check", WORKED, f"{HW}/worked/right.json",
            f"{HW}/worked/argmax.json")  # fmt: skip
    lines = table_lines(r.stdout)
    assert "成绩单" in r.stdout and "首个错误阶段" in r.stdout
    assert len({cell_len(line) for line in lines}) == 1, lines


# ---------------------------------------------------------------- the catalogue itself


def test_every_translation_keeps_the_placeholders_of_its_message():
    """A msgstr names only fields its msgid has (else .format fails), and drops none but a plural s."""
    fields = lambda s: {f for _t, f, _s, _c in string.Formatter().parse(s) if f is not None}  # noqa: E731
    for msgid, msgstr in po_entries(PO_DIR / "homework.po").items():
        assert fields(msgstr) <= fields(msgid), (msgid, msgstr)
        assert fields(msgid) - fields(msgstr) <= {"v"}, (msgid, msgstr)


def test_the_homework_report_has_no_english_words_left_in_chinese(monkeypatch):
    r = qkv("--lang", "zh", "check", WORKED, f"{HW}/worked/article_code.json")
    words = {"right", "wrong", "Diagnosis", "marking", "your", "known", "mistake", "departs"}
    text = r.stdout.replace("article_code", "")
    assert not [w for w in words if w in text], text


# ---------------------------------------------------------------- new and the write-ups


def test_new_writes_its_problem_text_in_chinese(tmp_path):
    key = tmp_path / "key.json"
    r = qkv("--lang", "zh", "new", "--seed", "3", "--answers", str(key))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["_about"] == "练习题：qkv new --seed 3 --tokens 3 --d-model 4 --d-k 4"
    assert json.loads(key.read_text(encoding="utf-8"))["_about"].startswith("答案（qkv new")
    english = json.loads(qkv("new", "--seed", "3").stdout)
    assert english["_about"] == "practice problem: qkv new --seed 3 --tokens 3 --d-model 4 --d-k 4"
    assert {k: v for k, v in doc.items() if k != "_about"} == {
        k: v for k, v in english.items() if k != "_about"
    }


def test_the_latex_write_up_asks_for_xecjk_only_when_chinese_is_in_it():
    zh = qkv("--lang", "zh", "compute", WORKED, "-f", "latex").stdout
    en = qkv("compute", WORKED, "-f", "latex").stdout
    assert r"\usepackage{xeCJK}" in zh and "xelatex" in zh
    assert r"\section*{注意力机制，逐步计算}" in zh
    assert "xeCJK" not in en and r"\section*{Attention, step by step}" in en


def test_chinese_words_in_a_formula_go_inside_text():
    from qkvcli.render.writeup import tex_formula

    assert tex_formula("权重 = softmax(缩放) 按行") == (
        r"\text{权重} = \text{softmax} ( \text{缩放} ) \text{按行}"
    )
    assert tex_formula("scaled = scores × 1/√3") == (
        r"\text{scaled} = \text{scores} \times 1 / \sqrt{3}"
    )
