"""qkv check / explain / new, and compute --exact / --format markdown|latex, through the CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qkvcli.cli import app

runner = CliRunner()
WORKED = "samples/worked_example.json"
HW = "samples/homework"


def qkv(*args: str):
    return runner.invoke(app, list(args))


# ---------------------------------------------------------------- check


def test_check_all_right_exits_0():
    r = qkv("check", WORKED, f"{HW}/worked/right.json")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == (
        "samples/homework/worked/right.json for samples/worked_example.json: 36 right, 0 wrong"
    )
    assert "│ weights │ [2,3] │  0.09 │  0.0903 │ ✓ right │" in r.stdout


def test_check_names_the_mistake_and_exits_1():
    r = qkv("check", WORKED, f"{HW}/worked/divided_by_dk.json")
    assert r.exit_code == 1
    assert r.stdout.endswith(
        "Diagnosis:\n"
        "output: your values match a known mistake: divided by d_k = 3 instead of √d_k = √3 — or, "
        "with the same numbers, the scale applied twice (scores × scale × scale); it first departs "
        "from your working at scaled (not in your answers).\n"
        'This is the slip "divide by the dimension" that the article makes ("再除以K的维度", '
        "divide by the dimension of K): the formula divides by √d_k, the square root of the "
        "dimension, not by d_k. A dot product of d_k terms spreads like √d_k, so dividing by √d_k "
        "keeps the scores near 1 whatever d_k is; dividing by d_k shrinks them d_k/√d_k = √d_k "
        "times more and flattens the softmax.\n"
    )
    assert r.stdout.splitlines()[1].startswith(
        "marking: each value at the decimals you wrote, at least 2"
    )
    assert "│ output │ [2,3] │ 0.660 │  0.2735 │ ✗ wrong │" in r.stdout


def test_check_the_articles_code():
    """The worked example's code (shared/seeds/004): no scaling, then weightsᵀ·V."""
    r = qkv("check", WORKED, f"{HW}/worked/article_code.json", "-f", "json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    (rep,) = doc["reports"]
    assert [(d["stage"], d["mistake"], d["astray"]) for d in rep["diagnosis"]] == [
        ("weights", "no-scaling", "scaled"),
        ("output", "weights-transposed", "output"),
    ]
    scores = [c for c in rep["cells"] if c["stage"] == "scores"]
    assert all(c["verdict"] == "right" for c in scores) and len(scores) == 9
    assert rep["cells"][0] == {
        "stage": "scores", "row": 1, "col": 1, "yours": "2", "correct": 2.0,
        "from_yours": 2.0, "verdict": "right", "basis": None, "rounding": False,
    }  # fmt: skip


def test_check_follow_through_in_json():
    r = qkv("check", WORKED, f"{HW}/worked/softmax_columns.json", "-f", "json")
    rep = json.loads(r.stdout)["reports"][0]
    out = [c for c in rep["cells"] if c["stage"] == "output"]
    assert {c["verdict"] for c in out} == {"consistent"}
    assert {c["basis"] for c in out} == {"weights"}
    assert (rep["right"], rep["consistent"], rep["wrong"]) == (3, 9, 6)


def test_gradebook_csv_one_row_per_file():
    files = sorted(
        f"{HW}/worked/{n}" for n in ("right.json", "article_code.json", "divided_by_dk.json")
    )
    r = qkv("check", WORKED, *files, "--format", "csv")
    assert r.exit_code == 1
    assert r.stdout == (
        "file,right,consistent,wrong,blank,score,first_wrong,mistake,diagnosis\n"
        "samples/homework/worked/article_code.json,9,0,18,0,33%,weights,no-scaling,"
        "weights: no scaling (the scores were not divided by √d_k); "
        "output: output computed as weightsᵀ·V instead of weights·V\n"
        "samples/homework/worked/divided_by_dk.json,0,0,9,0,0%,output,divided-by-dk,"
        "output: divided by d_k = 3 instead of √d_k = √3\n"
        "samples/homework/worked/right.json,36,0,0,0,100%,,,\n"
    )


def test_gradebook_table():
    r = qkv("check", WORKED, f"{HW}/worked/right.json", f"{HW}/worked/divided_by_dk.json")
    assert r.exit_code == 1
    assert "Gradebook for samples/worked_example.json" in r.stdout
    assert re.search(
        r"│ samples/homework/worked/right.json +│ +36 │ +0 │ +0 │ +0 │ +100% │", r.stdout
    )


def test_stage_file_csv_with_a_blank():
    r = qkv("check", WORKED, "--stage-file", f"weights={HW}/worked/weights.csv")
    assert r.exit_code == 0
    assert r.stdout.splitlines()[0] == (
        "samples/homework/worked/weights.csv for samples/worked_example.json: 8 right, 0 wrong, 1 blank"
    )


def test_tolerance_option(tmp_path):
    f = tmp_path / "a.json"
    f.write_text('{"weights": [[0.14, 0.43, 0.43], [0, 0.91, 0.09], [0.01, 0.75, 0.24]]}')
    assert qkv("check", WORKED, str(f)).exit_code == 0
    r = qkv("check", WORKED, str(f), "--tolerance", "0.001")
    assert r.exit_code == 1
    assert "│ weights │ [1,1] │  0.14 │  0.1361 │ ✗ wrong │" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope.json"], "qkv: error: nope.json: no such file\n"),
        (
            ["--stage-file", "weights"],
            "qkv: error: --stage-file 'weights': write it as STAGE=FILE, e.g. weights=w.csv\n",
        ),
        ([], "qkv: error: no answers: give an answer file or --stage-file STAGE=FILE\n"),
        (
            ["--stage-file", "attn=x.csv"],
            "qkv: error: --stage-file attn=x.csv: unknown stage 'attn' (stages: Q K V Q_normed K_normed Q_rotated K_rotated scores scaled capped masked weights head_outputs concat output)\n",
        ),
        (
            [f"{HW}/worked/right.json", "-f", "xml"],
            "qkv: error: --format must be one of table, json, csv, not 'xml'\n",
        ),
    ],
)
def test_check_bad_usage(args, message):
    r = qkv("check", WORKED, *args)
    assert (r.exit_code, r.stdout, r.stderr) == (2, "", message)


@pytest.mark.parametrize(
    "content, message",
    [
        (
            '{"weights": [[1, 2]]}',
            "weights is 1×2 but this problem's weights is 3×3 (queries × keys)",
        ),
        (
            '{"masked": [[1]]}',
            "no stage 'masked' in this problem (stages: Q K V scores scaled weights output)",
        ),
        (
            '{"weights": [[1, "x", 2]]}',
            "weights[1,2]: 'x' is not a number, a fraction, a surd or -inf",
        ),
        (
            '{"weights": [[1, {"a": 1}]]}',
            "weights[1,2]: an object is not an answer (write a number, or null for a blank)",
        ),
        (
            '{"weights": [[1' + "0" * 400 + "]]}",
            "weights[1,1]: 100000000000…0000 (401 characters) is too large for a number",
        ),
        ("[1, 2]", "the top level must be an object keyed by stage names"),
        ('{"weights": [[1, 2]', "invalid JSON at line 1, column 20: Expecting ',' delimiter"),
    ],
)
def test_check_bad_answers(tmp_path, content, message):
    f = tmp_path / "a.json"
    f.write_text(content)
    r = qkv("check", WORKED, str(f))
    assert (r.exit_code, r.stderr) == (2, f"qkv: error: {f}: {message}\n")


# ---------------------------------------------------------------- explain


def test_explain_scores():
    r = qkv("explain", WORKED, "scores[2,2]")
    assert r.exit_code == 0
    assert r.stdout == (
        "scores[2,2]: rows and columns count from 1; row = query 2 (x2), column = key 2 (x2).\n"
        "scores[2,2] = q₂·k₂ = 2·4 + 2·4 + 2·0 = 16\n"
    )


def test_explain_exact():
    r = qkv("explain", WORKED, "scaled[2,2]", "--exact")
    assert r.stdout.splitlines()[-1] == (
        "scaled[2,2] = scores[2,2] × 1/√3 = 16 × √3/3 = 16√3/3 ≈ 9.2376"
    )


def test_explain_head(tmp_path):
    r = qkv("explain", f"{HW}/two_heads.json", "weights[2,1]", "--head", "2")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].startswith(
        "weights[2,1] (head 2): rows and columns count from 1"
    )
    assert qkv("explain", f"{HW}/two_heads.json", "weights[2,1]").stderr == (
        "qkv: error: weights is computed per head: give --head 1…2\n"
    )


# ---------------------------------------------------------------- new


def test_new_same_seed_same_problem(tmp_path):
    a, b, c = (qkv("new", "--seed", s) for s in ("4", "4", "5"))
    assert a.exit_code == 0 and a.stdout == b.stdout != c.stdout
    doc = json.loads(a.stdout)
    assert doc["_about"] == "practice problem: qkv new --seed 4 --tokens 3 --d-model 4 --d-k 4"
    assert all(v in (0, 1, 2) for row in doc["X"] for v in row)
    assert all(v in (0, 1) for name in ("W_Q", "W_K", "W_V") for row in doc[name] for v in row)


def test_new_answer_key_checks_out(tmp_path):
    p, key = tmp_path / "p.json", tmp_path / "key.json"
    r = qkv("new", "--seed", "2", "--heads", "2", "--d-k", "2", "--mask", "causal",
            "-o", str(p), "--answers", str(key))  # fmt: skip
    assert r.exit_code == 0 and r.stdout == ""
    doc = json.loads(key.read_text())
    assert list(doc) == ["_about", "Q", "K", "V", "scores", "scaled", "masked", "weights",
                         "head_outputs", "concat", "output"]  # fmt: skip
    assert doc["masked"][0][0][1] == "-inf"
    assert len(doc["weights"]) == 2  # one matrix per head
    assert all(abs(sum(row) - 1) < 2e-4 for head in doc["weights"] for row in head)
    ok = qkv("check", str(p), str(key))
    assert ok.exit_code == 0, ok.stdout
    doc["weights"][1][2] = [0.3333, 0.3333, 0.3334]  # forget the mask in one row
    key.write_text(json.dumps(doc))
    assert qkv("check", str(p), str(key)).exit_code == 1


def test_new_bad_options():
    r = qkv("new", "--mask", "sliding")
    assert (r.exit_code, r.stderr) == (2, "qkv: error: --mask must be causal, not 'sliding'\n")


# ---------------------------------------------------------------- compute write-ups


def test_compute_exact_table():
    r = qkv("compute", WORKED, "--exact", "--stage", "scaled")
    assert r.exit_code == 0
    assert "│ x2 │ 4√3/3 │ 16√3/3 │    4√3 │" in r.stdout


def test_markdown_structure():
    r = qkv("compute", WORKED, "--trace", "-f", "markdown")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0] == "# Attention, step by step"
    heads = [ln for ln in lines if ln.startswith("## ")]
    assert heads == [
        "## Q = X·W_Q (3×3)", "## K = X·W_K (3×3)", "## V = X·W_V (3×3)",
        "## scores = Q·Kᵀ (3×3)", "## scaled = scores × 1/√3 (3×3)",
        "## weights = softmax(scaled) per row (3×3)", "## output = weights·V (3×3)",
    ]  # fmt: skip
    i = lines.index("## weights = softmax(scaled) per row (3×3)")
    assert lines[i + 2 : i + 6] == [
        "| | x1 | x2 | x3 |",
        "|---|---:|---:|---:|",
        "| **x1** | 0.1361 | 0.4319 | 0.4319 |",
        "| **x2** | 0.0009 | 0.9088 | 0.0903 |",
    ]


def _latex(*args: str) -> str:
    r = qkv("compute", *args, "-f", "latex")
    assert r.exit_code == 0, r.output
    return r.stdout


def _check_latex(tex: str, shapes: list[tuple[int, int]]) -> None:
    """Structure: one document, balanced braces, a bmatrix per matrix of the right shape."""
    assert tex.startswith("\\documentclass{article}\n\\usepackage{amsmath}\n")
    assert tex.rstrip().endswith("\\end{document}")
    assert tex.count("{") == tex.count("}") + tex.count("\\{") - tex.count("\\}")
    bodies = re.findall(r"\\begin\{bmatrix\}\n(.*?)\n\\end\{bmatrix\}", tex, re.S)
    assert len(bodies) == len(shapes)
    for body, (rows, cols) in zip(bodies, shapes):
        lines = body.split(" \\\\\n")
        assert len(lines) == rows
        assert all(line.count(" & ") == cols - 1 for line in lines)
    assert tex.count("\\[") == tex.count("\\]") == len(shapes)
    assert not re.search(r"[·ᵀ√×−∞…]", tex.split("\\begin{document}")[1].replace("$\\surd$", ""))


def test_latex_structure():
    tex = _latex(WORKED, "--trace")
    _check_latex(tex, [(3, 3)] * 7)
    assert "\\text{scaled} = \\text{scores} \\times 1 / \\sqrt{3} =" in tex
    assert "0.1361 & 0.4319 & 0.4319 \\\\\n0.0009 & 0.9088 & 0.0903" in tex


def test_latex_exact_and_heads():
    tex = _latex(f"{HW}/two_heads.json", "--trace", "--exact")
    # Q K V, 2 heads × (scores scaled masked weights head_outputs), concat, output
    _check_latex(tex, [(3, 6), (3, 6), (3, 4)] + [(3, 3)] * 8 + [(3, 2)] * 2 + [(3, 4)] * 2)
    assert "\\text{scores}^{(\\text{head 1/2})}" in tex
    assert "-\\infty" in tex and "\\frac{" in tex


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX installed")
def test_latex_compiles(tmp_path):
    (tmp_path / "w.tex").write_text(_latex(f"{HW}/two_heads.json", "--trace", "--exact"))
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "w.tex"], cwd=tmp_path,
                          capture_output=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]


def test_compute_rejects_unknown_format():
    r = qkv("compute", WORKED, "-f", "html")
    assert r.stderr == (
        "qkv: error: --format must be table, json, csv, tsv, markdown, latex or npz, not 'html'\n"
    )


def test_check_two_heads_sample():
    r = qkv("check", f"{HW}/two_heads.json", f"{HW}/two_heads/sqrt_d_model.json", "-f", "json")
    assert r.exit_code == 1
    (rep,) = json.loads(r.stdout)["reports"]
    (d,) = rep["diagnosis"]
    assert (d["stage"], d["mistake"], d["astray"]) == ("weights", "sqrt-other", "scaled")
    heads = {c["head"] for c in rep["cells"] if c["stage"] == "weights"}
    assert heads == {1, 2}
    # row 1 attends only to itself under the causal mask, so its output is right anyway
    assert {c["verdict"] for c in rep["cells"] if c["stage"] == "output"} == {"consistent", "right"}


@pytest.mark.slow
def test_homework_commands_do_not_load_numpy_or_rich_for_help():
    code = "import sys; import qkvcli.cli; print('numpy' in sys.modules, 'rich' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout == "False False\n"


def test_every_homework_command_has_help():
    for cmd in ("check", "explain", "new"):
        r = qkv(cmd, "--help")
        assert r.exit_code == 0 and "Examples:" in r.stdout


def test_compute_exact_json_and_csv_are_floats():
    exact = json.loads(qkv("compute", WORKED, "--exact", "-f", "json", "--trace").stdout)
    plain = json.loads(qkv("compute", WORKED, "-f", "json", "--trace").stdout)
    for name in ("Q", "scores", "scaled", "weights", "output"):
        for a, b in zip(exact[name], plain[name]):
            assert a == pytest.approx(b, rel=1e-14)
    r = qkv("compute", WORKED, "--exact", "-f", "csv", "--stage", "scores")
    assert r.stdout == "2.0,4.0,4.0\n4.0,16.0,12.0\n4.0,12.0,10.0\n"


def test_explain_columns_layout(tmp_path):
    f = tmp_path / "cols.json"
    X = [[1, 0, 1], [0, 2, 1], [1, 0, 1], [0, 2, 1]]  # the worked example, tokens as columns
    W_Q = [[1, 1, 0, 0], [0, 0, 0, 1], [1, 0, 1, 1]]
    f.write_text(json.dumps({"layout": "columns", "X": X, "W_Q": W_Q, "W_K": W_Q, "W_V": W_Q}))
    r = qkv("explain", str(f), "Q[3,2]")
    assert r.stdout == (
        "Q[3,2]: rows and columns count from 1; row = feature 3, column = query 2.\n"
        "(layout columns: worked in rows form, where this cell is Q[2,3])\n"
        "Q[2,3] = x₂ · (row 3 of W_Q) = 0·1 + 2·0 + 0·1 + 2·1 = 2\n"
    )


def test_stage_file_in_compute_csv_form_for_two_heads(tmp_path):
    """A per-head stage as `qkv compute --format csv` writes it: a head column, then the row."""
    problem = f"{HW}/two_heads.json"
    written = qkv("compute", problem, "-f", "csv", "--stage", "weights").stdout
    assert written.splitlines()[3].startswith("2,1.0,0.0,0.0")
    f = tmp_path / "w.csv"
    f.write_text(written)
    assert qkv("check", problem, "--stage-file", f"weights={f}").stdout.startswith(
        f"{f} for {problem}: 18 right, 0 wrong\n"
    )
    f.write_text("\n".join(written.splitlines()[:3]))
    r = qkv("check", problem, "--stage-file", f"weights={f}")
    assert r.stderr == (
        f"qkv: error: {f}: weights is 3×4 but this problem's weights is 2×3×3 (heads × queries × keys)\n"
    )


def test_gradebook_row_for_an_unreadable_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"weights": [[1, 2]')
    r = qkv("check", WORKED, f"{HW}/worked/right.json", str(bad), "-f", "csv")
    assert r.exit_code == 2
    rows = r.stdout.splitlines()
    assert rows[1].startswith("samples/homework/worked/right.json,36,0,0,0,100%")
    assert rows[2].startswith(f'{bad},,,,,,,,"error: {bad}: invalid JSON at line 1')
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(
        "qkv: error: 1 answer file could not be marked"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tolerance", "nan"], "qkv: error: --tolerance must be a finite number ≥ 0, not nan\n"),
        (["--rel-tol", "2"], "qkv: error: --rel-tol must be between 0 and 1 (e.g. 0.01), not 2\n"),
        (
            ["--decimals", "3", "--sig-figs", "2"],
            "qkv: error: --decimals and --sig-figs: give one way to mark, not several\n",
        ),
    ],
)
def test_check_marking_options_refused_in_one_line(args, message):
    r = qkv("check", WORKED, f"{HW}/worked/right.json", *args)
    assert (r.exit_code, r.stderr) == (2, message)


def test_precision_from_the_problem_file(tmp_path):
    doc = json.loads(Path(WORKED).read_text())
    doc["precision"] = 3
    p = tmp_path / "p.json"
    p.write_text(json.dumps(doc))
    r = qkv("check", str(p), f"{HW}/worked/right.json")
    assert r.exit_code == 1  # 2 decimals are too coarse now
    assert f"at least 3 decimals (precision in {p})" in r.stdout.splitlines()[1]


def test_stage_csv_read_as_compute_reads_it(tmp_path):
    f = tmp_path / "w.csv"
    f.write_text("k1;k2;k3\n0,1361;43.19%;0,4319\n;0.9088;9.03%\n0.0074;0.7547;0.2378\n")
    r = qkv("check", WORKED, "--stage-file", f"Weights={f}")
    assert r.exit_code == 0, r.stdout
    assert r.stdout.splitlines()[0].endswith("8 right, 0 wrong, 1 blank")


@pytest.mark.parametrize("cell", ["scores[1" + "0" * 5000 + ",1]", "scores[1,1" + "0" * 400 + "]"])
def test_explain_huge_cell_index_is_one_line(cell):
    r = qkv("explain", WORKED, cell)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "digits" in r.stderr
