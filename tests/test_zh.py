"""qkv in Chinese (--lang zh): the help, the messages, the tables, Chinese input."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from qkvcli.cli import app
from qkvcli.render.text import width


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None):
    return CliRunner().invoke(app, list(args), env=env, input=input)


@pytest.mark.parametrize("command", ["compute", "check", "explain", "new", "model"])
def test_the_help_of_every_command_is_chinese_and_fits_80_columns(command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    result = run("--lang", "zh", command, "-h")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"用法：qkv {command} "), lines[0]
    assert "选项：" in lines and "显示此帮助信息并退出。" in result.output
    assert sum(width(c) == 2 for c in result.output) > 100  # Chinese throughout, not one line
    wrapped = [
        line for line in lines if not line.startswith("    ")
    ]  # the examples stay as written
    assert max(width(line) for line in wrapped) <= 80, max(wrapped, key=width)


def test_the_root_help_and_a_bare_qkv_are_chinese():
    result = run("--lang", "zh", "-h")
    assert "qkv：查看注意力计算的每一个阶段。" in result.output
    assert "退出码：0 成功" in result.output
    assert (
        "命令：" in result.output
        and "计算注意力，用表格、图或数据显示每一个阶段。" in result.output
    )
    bare = run("--lang", "zh")
    assert bare.output.startswith("用法：qkv 命令 [参数]...") and "  check    批改" in bare.output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["compute", "--nope"], "没有选项 --nope"),
        (["compute", "--heads"], "选项 '--heads' 需要一个值"),
        (["compute", "a", "b"], "多出了意料之外的参数：b"),
        (["nope"], "没有命令 'nope'"),
    ],
)
def test_click_usage_errors_are_chinese_in_one_line(args, said):
    result = run("--lang", "zh", *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qkv: error: ") and said in lines[0], lines


def test_english_comes_back_after_chinese_in_the_same_process():
    """A Chinese run points click's words at qkv's catalogue; the next English run gets click's own."""
    assert "用法" in run("--lang", "zh", "compute", "-h").output
    result = run("compute", "-h")
    assert result.output.startswith("Usage: qkv compute") and "Show this message" in result.output
    assert "No such option: --nope" in run("compute", "--nope").stderr


GOLDEN = Path(__file__).parent / "golden"


def test_a_compute_trace_in_chinese_matches_its_golden_output():
    result = run("--lang", "zh", "compute", "samples/worked_example.json", "--trace")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (GOLDEN / "zh" / "worked_example_trace.txt").read_text(encoding="utf-8")
    # The numbers are the language's business not at all: every table row as in English.
    english = (GOLDEN / "worked_example_trace.txt").read_text(encoding="utf-8")
    rows = [line for line in result.stdout.splitlines() if line.startswith(("│", "┃"))]
    assert rows == [line for line in english.splitlines() if line.startswith(("│", "┃"))]
    assert "注意力权重 weights = softmax(scaled)，按行（3×3）" in result.stdout


def chinese_problem(tmp_path: Path, n: int, d: int = 3) -> Path:
    """A problem with Chinese token labels (some long), random but seeded entries."""
    import numpy as np

    rng = np.random.default_rng(n)
    words = ["我", "喜欢", "注意力", "机制", "查询矩阵", "键", "值向量", "自注意力机制"]
    tokens = [words[i % len(words)] + (str(i) if i >= len(words) else "") for i in range(n)]
    x = rng.integers(-3, 4, size=(n, d)).tolist()
    w = [rng.integers(-2, 3, size=(d, d)).tolist() for _ in range(3)]
    path = tmp_path / "中文.json"
    path.write_text(
        json.dumps({"tokens": tokens, "X": x, "W_Q": w[0], "W_K": w[1], "W_V": w[2]}),
        encoding="utf-8",
    )
    return path


def tables(text: str) -> list[list[str]]:
    """The box tables of an output, each as its lines (from ┏ to └)."""
    found, current = [], None
    for line in text.splitlines():
        if line.startswith("┏"):
            current = []
        if current is not None:
            current.append(line)
        if line.startswith("└") and current is not None:
            found.append(current)
            current = None
    return found


@pytest.mark.parametrize("n", [3, 8, 30])
def test_tables_with_chinese_titles_and_labels_align_at_80_columns(tmp_path, monkeypatch, n):
    monkeypatch.setenv("COLUMNS", "80")
    path = chinese_problem(tmp_path, n)
    result = run("--lang", "zh", "compute", str(path), "--trace")
    assert result.exit_code == 0, result.stderr
    found = tables(result.stdout)
    assert len(found) == 7
    for table in found:
        widths = {width(line) for line in table}
        assert len(widths) == 1 and widths.pop() <= 80, "\n".join(table)
        # every column border in the same place on every line
        bars = {
            tuple(i for i, c in enumerate(cells_of(line)) if c and c in "┃│╇┡┩")
            for line in table[1:-1]
        }
        assert len(bars) == 1, "\n".join(table)
    titles = [line for line in result.stdout.splitlines() if "（" in line and "=" in line]
    assert any(t.startswith("注意力权重 weights") for t in titles)


def cells_of(line: str) -> list[str]:
    """A line as the columns a terminal shows: a wide character takes its cell and the next."""
    out: list[str] = []
    for c in line:
        out += [c] if width(c) < 2 else [c, ""]
    return out


def test_plain_box_tables_align_with_chinese_labels():
    import numpy as np

    from qkvcli.render.tables import stage_grid
    from qkvcli.render.text import box
    from qkvcli.trace import Trace

    t = Trace({}, {}, tokens=["我", "喜欢", "注意力机制"], kv_tokens=["键", "值向量", "x"])
    stage = SimpleNamespace(rows="queries", cols="keys", name="weights", index=None)
    grid = stage_grid(t, stage, np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7], [1, 0, 0]]), 3)
    text = box(grid.head, grid.rows)
    lines = text.splitlines()
    assert len({width(line) for line in lines}) == 1, text
    assert lines[1] == "┃            ┃    键 ┃ 值向量 ┃     x ┃     Σ ┃"
    assert lines[3] == "│ 我         │ 0.500 │  0.250 │ 0.250 │ 1.000 │"


# Chinese input: what a Chinese keyboard types is read as its ASCII form, numbers only.


def test_csv_with_full_width_digits_commas_signs_and_points():
    from qkvcli.load import parse_csv

    a, labels = parse_csv("１，２\n３，－４．５\n", "m.csv")
    assert a.tolist() == [[1.0, 2.0], [3.0, -4.5]] and labels is None
    a, labels = parse_csv("我，１，２\n喜欢，３，４\n", "m.csv")
    assert a.tolist() == [[1.0, 2.0], [3.0, 4.0]] and labels == ["我", "喜欢"]
    a, _ = parse_csv("１，５；２\n３；－０，２５\n", "m.csv")  # semicolons, decimal commas
    assert a.tolist() == [[1.5, 2.0], [3.0, -0.25]]
    a, labels = parse_csv("Ｑ１\t１\t２\nＱ２\t３\t４\n", "m.tsv")  # labels kept as written
    assert a.tolist() == [[1.0, 2.0], [3.0, 4.0]] and labels == ["Ｑ１", "Ｑ２"]


def test_a_full_width_cell_that_is_no_number_is_named_as_written():
    from qkvcli.errors import InputError
    from qkvcli.load import parse_csv

    with pytest.raises(InputError, match="line 2, column 2: '４ｘ' is not a number"):
        parse_csv("１，２\n３，４ｘ\n", "m.csv")


def compute_json(path: Path, *more: str) -> dict:
    result = run("compute", str(path), "-f", "json", *more)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    doc["meta"].pop("input")
    return doc


def test_a_json_problem_typed_with_full_width_brackets_and_digits(tmp_path):
    ascii_ = tmp_path / "a.json"
    ascii_.write_text(
        '{"tokens": ["我，你", "他"], "X": [[1, -0.5], [2, 3]], "W_Q": [[1, 0], [0, 1]], '
        '"W_K": [[2, 1], [0, 1]], "W_V": [[1, 1], [1, -1]]}',
        encoding="utf-8",
    )
    wide = tmp_path / "b.json"
    wide.write_text(
        '{"tokens": ["我，你", "他"], "X": ［［１，－０．５］，［２，３］］，"W_Q": [[1, 0], [0, 1]], '
        '"W_K": ［［２，１］，［０，１］］, "W_V": [[１, １], [１, －１]]}',
        encoding="utf-8",
    )
    expected = compute_json(ascii_)
    assert compute_json(wide) == expected
    assert expected["meta"]["keys"] and "我，你" in json.dumps(
        compute_json(wide), ensure_ascii=False
    )


def test_option_values_typed_with_full_width_forms(samples):
    worked = str(samples / "worked_example.json")
    assert compute_json(Path(worked), "--scale", "０．５", "--heads", "１") == compute_json(
        Path(worked), "--scale", "0.5", "--heads", "1"
    )
    assert compute_json(Path(worked), "--valid-lens", "２") == compute_json(
        Path(worked), "--valid-lens", "2"
    )
    from qkvcli.load import parse_lens, parse_tokens

    assert parse_lens("１，２；２，３").tolist() == [[1.0, 2.0], [2.0, 3.0]]
    assert parse_tokens("我，喜欢，注意力") == ["我", "喜欢", "注意力"]
    assert parse_tokens("Ｑ,Ｋ") == ["Ｑ", "Ｋ"]  # labels are never rewritten


def test_the_pictures_and_the_report_speak_chinese(tmp_path):
    result = run(
        "--lang", "zh", "compute", "samples/worked_example.json", "--heatmap", "--top", "2"
    )
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "行：查询（谁在看）· 列：键（被看的）" in out and "灰度 = 权重：" in out
    assert "每个查询权重最大的 2 个键（按权重从大到小）" in out
    assert (
        "x1  熵 1.4379 比特（在 3 个键上均匀分布时为 1.5850）" in out
    )  # the numbers as in English
    report = tmp_path / "报告.html"
    assert (
        run(
            "--lang", "zh", "compute", "samples/worked_example.json", "--html", str(report)
        ).exit_code
        == 0
    )
    page = report.read_text(encoding="utf-8")
    assert "<h1>qkv：探索注意力</h1>" in page and "词元视图" in page and "Token view" not in page


def test_chinese_needs_neither_numpy_nor_rich_for_the_version_and_the_help():
    import subprocess
    import sys

    code = (
        "import sys; from qkvcli.cli import main\n"
        "sys.argv = ['qkv', '--lang', 'zh', *sys.argv[1:]]\n"
        "sys.modules['qkvcli.cli'].leave = lambda code: None  # stay: what did the run load?\nmain()\n"
        "assert 'numpy' not in sys.modules and 'rich' not in sys.modules, 'loaded'\n"
    )
    for args in (["--version"], ["compute", "-h"]):
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_stages_named_as_the_articles_write_them():
    """--stage 权重 is --stage weights (the glossary's aliases), in either language."""
    for lang in ("en", "zh"):
        chinese = run("--lang", lang, "compute", "samples/worked_example.json", "--stage", "权重",
                      "--stage", "查询", "-f", "json")  # fmt: skip
        english = run("compute", "samples/worked_example.json", "--stage", "weights",
                      "--stage", "Q", "-f", "json")  # fmt: skip
        assert chinese.exit_code == 0, chinese.stderr
        assert json.loads(chinese.stdout) == json.loads(english.stdout)
    wrong = run("--lang", "zh", "compute", "samples/worked_example.json", "--stage", "权")
    assert wrong.exit_code == 2 and "--stage 权：没有这个阶段" in wrong.stderr


def test_every_chinese_entry_keeps_the_placeholders_of_its_english():
    """A translation that loses or renames a {placeholder} would fail when formatted (exit 70)."""
    import re

    from test_i18n import PO_DIR, po_entries

    fields = re.compile(r"\{[^{}]*\}")
    for po in sorted(PO_DIR.glob("*.po")):
        for msgid, msgstr in po_entries(po).items():
            if msgstr:
                english, chinese = set(fields.findall(msgid)), set(fields.findall(msgstr))
                # Chinese has no plural ending: only an English "s" glued to a word may go (head{v}).
                ending = {"{v}"} if re.search(r"[a-z]\{v\}", msgid) else set()
                assert chinese <= english and english - chinese <= ending, (po.name, msgid, msgstr)


@pytest.mark.parametrize("fmt", ["json", "csv", "tsv"])
def test_machine_formats_are_the_same_in_chinese(fmt):
    args = ["compute", "samples/multihead.json", "--heads", "2", "--mask", "causal", "-f", fmt]
    args += ["--trace"] if fmt == "json" else ["--stage", "output"]
    english, chinese = run(*args), run("--lang", "zh", *args)
    assert english.exit_code == chinese.exit_code == 0, chinese.stderr
    assert chinese.stdout == english.stdout


def test_machine_formats_of_csv_input_are_the_same_in_chinese_and_its_header_is_chinese():
    csv = [f"--{k}=samples/csv/{f}.csv" for k, f in
           (("x", "X"), ("wq", "W_Q"), ("wk", "W_K"), ("wv", "W_V"))]  # fmt: skip
    english, chinese = (
        run("compute", *csv, "-f", "json"),
        run("--lang", "zh", "compute", *csv, "-f", "json"),
    )
    assert chinese.stdout == english.stdout
    meta = json.loads(chinese.stdout)["meta"]
    assert (
        meta["input"] == "CSV input"
        and meta["keys"]["tokens"] == "samples/csv/X.csv (first column)"
    )
    table = run("--lang", "zh", "compute", *csv).stdout.splitlines()
    assert table[0].startswith("CSV 输入：3 个查询 × 3 个键")
    assert "tokens ← samples/csv/X.csv（第一列）" in table[1]


@pytest.mark.parametrize(
    "text, said",
    [
        ("[[1,2],[3", "<stdin>：第 1 行第 10 列的 JSON 无效：这里应有逗号 ','"),
        ('{"X": 1,}', "<stdin>：第 1 行第 9 列的 JSON 无效：这里应有一个用双引号括起来的键名"),
        ('{"X": [[1, 2], [3]]}', "<stdin>：X 第 2 行有 1 个值，但第 1 行有 2 个"),
        (
            '{"X": [[[1, 2]], [[3]]]}',
            "<stdin>：X 第 2 个矩阵，第 1 行有 1 个值，但第 1 个矩阵，第 1 行有 2 个",
        ),
        (
            '{"X": [1, 2]}',
            "<stdin>：X 必须是 矩阵（由行组成的列表）或矩阵的列表，而不是 一列数（一维列表）",
        ),
        ('{"X": [[1, "a"]]}', '<stdin>：X 第 1 行，第 2 列："a" 不是一个数'),
    ],
)
def test_what_is_wrong_in_a_json_file_and_where_is_said_in_chinese(text, said):
    result = run("--lang", "zh", "compute", "-", input=text)
    assert result.exit_code == 2
    assert result.stderr == f"qkv: error: {said}\n"
