"""Tables written without rich (a pipe, a file) are, byte for byte, what rich prints there.

`render.tables.write_tables` skips loading rich where rich would print no
styles; each case here is run both ways and compared.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from qkvcli.cli import app
from qkvcli.render import tables

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples").glob("*.json"))
LABELS = ["the", "猫", "café", "注意力", "x_1", "Ünïcödé", "（全角）", "a b", "ß", "—"]


def both(monkeypatch, args: list[str], env: dict[str, str] | None = None) -> tuple[str, str]:
    """The output of ``qkv *args`` written plainly, and as rich prints it."""
    plain = CliRunner().invoke(app, args, env=env)
    with monkeypatch.context() as m:
        m.setattr(tables, "styled", lambda file: True)  # rich's path, to a file: no styles
        rich = CliRunner().invoke(app, args, env=env)
    assert plain.exit_code == rich.exit_code == 0, plain.output + rich.output
    return plain.stdout, rich.stdout


@pytest.mark.parametrize("sample", [p.name for p in SAMPLES])
def test_every_samples_trace_is_rich_s_text(monkeypatch, sample):
    plain, rich = both(monkeypatch, ["compute", f"samples/{sample}", "--trace"])
    assert plain == rich


@pytest.mark.parametrize(
    "args",
    [
        ["samples/worked_example.json", "--trace", "--exact"],
        ["samples/worked_example.json", "--trace", "--lang", "zh"],
        ["samples/multihead.json", "--trace", "--precision", "7"],
        ["samples/batch.json", "--stage", "weights", "--stage", "output"],
        ["samples/decode_rope.json", "--trace", "--full"],
    ],
)
def test_options_that_change_the_tables_keep_them_rich_s_text(monkeypatch, args):
    plain, rich = both(monkeypatch, ["compute", *args])
    assert plain == rich


@pytest.mark.parametrize("seed", range(12))
def test_random_problems_summarised_or_full_are_rich_s_text(monkeypatch, tmp_path, seed):
    """Long and wide stages (summarised to the width), tiny and huge numbers, any labels."""
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(1, 45)), int(rng.integers(1, 40))
    scale = 10.0 ** rng.integers(-12, 12)
    doc = {"X": (rng.normal(size=(n, d)) * scale).tolist()}
    doc |= {w: rng.normal(size=(d, d)).tolist() for w in ("W_Q", "W_K", "W_V")}
    if rng.random() < 0.7:
        doc["tokens"] = [str(rng.choice(LABELS)) + str(i) for i in range(n)]
    if rng.random() < 0.3:
        doc["mask"] = "causal"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    args = ["compute", str(path), "--trace", *(["--full"] if rng.random() < 0.25 else [])]
    columns = str(int(rng.choice([40, 80, 100, 137])))
    plain, rich = both(monkeypatch, args, env={"COLUMNS": columns})
    assert plain == rich


def test_labels_whose_width_only_rich_knows_go_through_rich(monkeypatch, tmp_path):
    """An emoji with a skin tone: rich measures it; the plain writer is not used."""
    doc = json.loads(Path("samples/worked_example.json").read_text())
    doc["tokens"] = ["👍🏽", "e\u0301", "x"]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    used = []
    real = tables.render
    monkeypatch.setattr(tables, "render", lambda *a, **k: used.append(1) or real(*a, **k))
    result = CliRunner().invoke(app, ["compute", str(path)])
    assert result.exit_code == 0 and used


def test_a_terminal_or_forced_colour_is_rich_s(monkeypatch):
    class Terminal:
        def isatty(self) -> bool:
            return True

    class Pipe:
        def isatty(self) -> bool:
            return False

    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    assert tables.styled(Terminal()) and not tables.styled(Pipe())
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert tables.styled(Pipe())
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    assert not tables.styled(Terminal())


#: Each shipped answer sheet with the problem it answers.
SHEETS = {
    **{f"samples/homework/worked/{p.name}": "samples/worked_example.json"
       for p in sorted((ROOT / "samples/homework/worked").glob("*.json"))},
    **{f"samples/homework/two_heads/{p.name}": "samples/homework/two_heads.json"
       for p in sorted((ROOT / "samples/homework/two_heads").glob("*.json"))},
    "samples/homework/variants/rope_pairing.json": "samples/rope.json",
    "samples/homework/variants/decode_positions.json": "samples/decode_rope.json",
    "samples/homework/variants/window_off_by_one.json": "samples/sliding_window.json",
    "samples/homework/variants/sinks_forgotten.json": "samples/sinks.json",
}  # fmt: skip


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize("answers", list(SHEETS))
def test_every_check_of_a_shipped_sheet_is_rich_s_text(monkeypatch, answers, lang):
    problem = SHEETS[answers]
    plain = CliRunner().invoke(app, ["--lang", lang, "check", problem, answers])
    with monkeypatch.context() as m:
        m.setattr(tables, "styled", lambda file: True)
        rich = CliRunner().invoke(app, ["--lang", lang, "check", problem, answers])
    assert plain.exit_code == rich.exit_code and plain.exit_code in (0, 1, 2), plain.output
    assert plain.stdout == rich.stdout


@pytest.mark.parametrize("full", [False, True])
def test_a_long_sheet_with_odd_answers_is_rich_s_text(monkeypatch, tmp_path, full):
    """A 24-token problem (its counts table, the cells not right), answers written oddly."""
    rng = np.random.default_rng(5)
    n, d = 24, 4
    doc = {"X": rng.integers(-2, 3, size=(n, d)).tolist()}
    doc |= {w: rng.integers(-1, 2, size=(d, d)).tolist() for w in ("W_Q", "W_K", "W_V")}
    problem = tmp_path / "p.json"
    problem.write_text(json.dumps(doc))
    truth = CliRunner().invoke(app, ["compute", str(problem), "--trace", "-f", "json"])
    key = json.loads(truth.stdout)
    answers = {"scores": key["scores"], "weights": key["weights"]}
    answers["scores"][0][0] = "5.00"
    answers["weights"][3] = [round(v, 1) for v in answers["weights"][3]]
    answers["weights"][5][2] = "１/２"
    sheet = tmp_path / "a.json"
    sheet.write_text(json.dumps(answers, ensure_ascii=False), encoding="utf-8")
    args = ["check", str(problem), str(sheet), *(["--full"] if full else [])]
    plain = CliRunner().invoke(app, args)
    with monkeypatch.context() as m:
        m.setattr(tables, "styled", lambda file: True)
        rich = CliRunner().invoke(app, args)
    assert plain.exit_code == rich.exit_code == 1, plain.output
    assert plain.stdout == rich.stdout
    assert "１/２" in plain.stdout or "1/2" in plain.stdout


def test_every_width_the_plain_writer_trusts_is_rich_s():
    """`tables.sure_width` lets a character into plain tables only where rich measures it alike."""
    from rich.cells import cell_len

    from qkvcli.render.text import width

    trusted = [chr(o) for o in range(0x20, 0x10000) if tables.sure_width(chr(o))]
    assert len(trusted) > 20000
    differ = [c for c in trusted if cell_len(c) != width(c)]
    assert not differ, differ[:10]


def test_a_check_report_with_marks_is_written_without_rich(tmp_path):
    """✓ and ✗ are trusted: a report to a pipe does not load rich (start-up)."""
    import subprocess
    import sys

    code = (
        "import sys\nimport qkvcli.cli as c\nc.leave = lambda code: None\n"
        "sys.argv = ['qkv', 'check', 'samples/worked_example.json', "
        "'samples/homework/worked/argmax.json']\nc.main()\n"
        "print('RICH', 'rich' in sys.modules, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "✗ wrong" in done.stdout and done.stderr.strip().endswith("RICH False"), done.stderr
