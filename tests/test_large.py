"""Large inputs from the command line: start-up imports, streaming, NPY/NPZ, summarised tables."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from qkvcli import plan
from qkvcli.cli import app
from qkvcli.render.progress import progress

SAMPLE = "samples/worked_example.json"


def qkv(*args):
    return CliRunner().invoke(app, list(args))


def run_ok(*args):
    r = qkv(*args)
    assert r.exit_code == 0, r.stderr
    return r


def loaded_modules(*argv):
    """Which heavy modules a whole ``qkv`` process imports for these arguments."""
    code = (
        "import sys\n"
        f"sys.argv = ['qkv', *{list(argv)!r}]\n"
        "from qkvcli.cli import main\n"
        "sys.modules['qkvcli.cli'].leave = lambda code: None  # stay: what did the run load?\nmain()\n"
        "print(sorted(m for m in ('numpy', 'rich', 'pydantic') if m in sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("argv", [("--version",), ("--help",), ("compute", "--help")])
def test_version_and_help_load_neither_numpy_nor_rich(argv):
    assert loaded_modules(*argv) == "[]"


@pytest.mark.slow
def test_json_output_loads_numpy_only():
    assert loaded_modules("compute", SAMPLE, "--format", "json") == "['numpy']"


def full_json(*extra):
    return json.loads(run_ok("compute", SAMPLE, "--format", "json", *extra).stdout)


def test_stream_gives_the_same_output_without_square_stages():
    full, streamed = full_json(), full_json("--stream")
    assert streamed["meta"]["stages"] == ["Q", "K", "V", "output"]
    assert "weights" not in streamed
    np.testing.assert_allclose(streamed["output"], full["output"], rtol=1e-12, atol=1e-12)
    assert streamed["Q"] == full["Q"]


def test_stream_refuses_a_square_stage():
    r = qkv("compute", SAMPLE, "--stream", "--stage", "scores")
    assert (r.exit_code, r.stdout) == (2, "")
    assert (
        r.stderr == "qkv: error: --stream computes no 3×3 stage: drop --stage scores or --stream\n"
    )


def test_a_square_stage_that_does_not_fit_is_refused_up_front(monkeypatch):
    monkeypatch.setattr(plan, "available_memory", lambda: 100)
    r = qkv("compute", SAMPLE, "--stage", "weights")
    assert (r.exit_code, r.stdout) == (2, "")
    assert r.stderr == (
        "qkv: error: --stage weights needs the 3×3 matrices in memory: about 504 B, "
        "but 100 B is available (--stage output is computed in blocks)\n"
    )


def test_dtype_float32():
    doc = full_json("--dtype", "float32")
    assert doc["meta"]["dtype"] == "float32"
    np.testing.assert_allclose(doc["output"], full_json()["output"], rtol=1e-6)
    r = qkv("compute", SAMPLE, "--dtype", "float16")
    assert r.exit_code == 2
    assert (
        r.stderr
        == "qkv: error: --dtype must be float64 or float32, not 'float16' (did you mean float64?)\n"
    )


def write_npz(path, **arrays):
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    return str(path)


def worked():
    with open(SAMPLE, encoding="utf-8") as fh:
        return json.load(fh)


@pytest.mark.slow
def test_npz_input_with_json_spellings(tmp_path):
    doc = worked()
    path = write_npz(tmp_path / "p.npz", **{k: v for k, v in doc.items() if k != "_about"})
    got = run_ok("compute", path, "--stage", "output", "-f", "csv").stdout
    assert got == run_ok("compute", SAMPLE, "--stage", "output", "-f", "csv").stdout
    meta = json.loads(run_ok("compute", path, "-f", "json").stdout)["meta"]
    assert meta["keys"]["W_Q"] == "w_query" and meta["tokens"] == ["x1", "x2", "x3"]


@pytest.mark.slow
def test_npy_for_a_matrix_option(tmp_path):
    x = tmp_path / "X.npy"
    np.save(x, np.array(worked()["X"]))
    got = run_ok("compute", SAMPLE, "--x", str(x), "--stage", "output", "-f", "csv").stdout
    assert got == run_ok("compute", SAMPLE, "--stage", "output", "-f", "csv").stdout


@pytest.mark.slow
def test_npz_output_holds_every_stage_asked_for(tmp_path):
    out = tmp_path / "out.npz"
    r = run_ok(
        "compute", SAMPLE, "-f", "npz", "-o", str(out), "--stage", "weights", "--stage", "output"
    )
    assert r.stdout == ""
    full = full_json()
    with np.load(out) as z:
        assert sorted(z.files) == ["meta", "output", "weights"]
        np.testing.assert_array_equal(z["weights"], full["weights"])
        np.testing.assert_array_equal(z["output"], full["output"])
        assert json.loads(str(z["meta"]))["tokens"] == ["x1", "x2", "x3"]


@pytest.mark.slow
def test_streamed_npz_output_adds_row_statistics(tmp_path):
    out = tmp_path / "out.npz"
    run_ok("compute", SAMPLE, "-f", "npz", "-o", str(out), "--stream")
    full = full_json()
    with np.load(out) as z:
        assert sorted(z.files) == ["K", "Q", "V", "meta", "output", "row_logsumexp"]
        scaled = np.array(full["scaled"])
        want = np.log(np.exp(scaled).sum(axis=1))
        np.testing.assert_allclose(z["row_logsumexp"], want, rtol=1e-12)


@pytest.mark.parametrize(
    "args, message",
    [
        (["-f", "npz"], "--format npz writes a file: give it with --output FILE"),
        (
            ["-f", "xml"],
            "--format must be table, json, csv, tsv, markdown, latex or npz, not 'xml'",
        ),
    ],
)
def test_format_errors(args, message):
    r = qkv("compute", SAMPLE, *args)
    assert (r.exit_code, r.stdout, r.stderr) == (2, "", f"qkv: error: {message}\n")


def test_npy_and_npz_errors(tmp_path):
    x = tmp_path / "X.npy"
    np.save(x, np.ones((3, 4)))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    nan = write_npz(tmp_path / "nan.npz", Q=[[1.0, np.nan]], K=[[1.0, 0.0]], V=[[1.0]])
    words = write_npz(tmp_path / "words.npz", Q=np.array([["a", "b"]]), K=[[1.0, 0.0]], V=[[1.0]])
    cases = [
        ([str(x)], f"{x}: one matrix: give it with an option such as --x, --wq or --q"),
        (
            [SAMPLE, "--wq", str(bad)],
            f"{bad}: holds named matrices: give it as the input file, not with --wq",
        ),
        ([str(bad)], f"{bad}: not an .npz file numpy can read"),
        ([str(tmp_path / "none.npz")], f"{tmp_path / 'none.npz'}: no such file"),
        ([nan], f"{nan}: Q row 1, column 2 is nan: qkv needs finite numbers"),
        ([words], f'{words}: Q row 1, column 1: "a" is not a number'),
    ]
    for args, message in cases:
        r = qkv("compute", *args)
        assert (r.exit_code, r.stdout, r.stderr) == (2, "", f"qkv: error: {message}\n"), args


def big_problem(tmp_path, n=2049, d=2):
    rng = np.random.default_rng(3)
    return write_npz(
        tmp_path / "big.npz", Q=rng.random((n, d)), K=rng.random((n, d)), V=rng.random((n, d))
    )


@pytest.mark.slow
@pytest.mark.slow
def test_large_runs_stream_by_themselves(tmp_path):
    path = big_problem(tmp_path)
    r = run_ok("compute", path, "-f", "json")
    assert r.stderr == (
        "qkv: note: the 2049×2049 stages (scores, scaled, weights: 32 MiB each) are left out; "
        "name one with --stage to get it\n"
    )
    doc = json.loads(r.stdout)
    assert doc["meta"]["stages"] == ["Q", "K", "V", "output"]
    full = json.loads(
        run_ok("compute", path, "-f", "json", "--stage", "weights", "--stage", "output").stdout
    )
    np.testing.assert_allclose(doc["output"], full["output"], rtol=1e-12, atol=1e-12)
    csv = run_ok("compute", path, "--stage", "output", "-f", "csv")
    assert csv.stderr == "" and len(csv.stdout.splitlines()) == 2049


def table_lines(*args, columns=None, monkeypatch=None):
    if columns is not None:
        monkeypatch.setenv("COLUMNS", str(columns))
    return run_ok("compute", *args).stdout.splitlines()


def test_big_tables_show_their_corners(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    path = write_npz(
        tmp_path / "p.npz", Q=rng.random((25, 2)), K=rng.random((25, 2)), V=rng.random((25, 60))
    )
    lines = table_lines(path, "--stage", "output")
    rows = [ln.split("│")[1].strip() for ln in lines if ln.startswith("│")]
    assert rows == [str(i) for i in range(1, 9)] + ["⋮"] + [str(i) for i in range(18, 26)]
    assert lines[-1] == "25×60: showing 16 of 25 rows and 10 of 60 columns (--full shows all)"
    header = next(ln for ln in lines if ln.startswith("┃"))
    assert [c.strip() for c in header.split("┃")[1:-1]] == [
        "",
        "1",
        "2",
        "3",
        "4",
        "5",
        "…",
        "56",
        "57",
        "58",
        "59",
        "60",
    ]
    assert max(len(ln) for ln in lines[1:]) <= 100


@pytest.mark.parametrize("columns", [30, 100, 200])
def test_no_blank_or_cut_cells_at_any_width(tmp_path, monkeypatch, columns):
    rng = np.random.default_rng(6)
    v = rng.standard_normal((25, 60)) * 1000
    path = write_npz(tmp_path / "p.npz", Q=rng.random((25, 2)), K=rng.random((25, 2)), V=v)
    lines = table_lines(
        path, "--stage", "output", "--precision", "3", columns=columns, monkeypatch=monkeypatch
    )
    body = [ln for ln in lines if ln.startswith("│")]
    row_1 = {round(x, 3) for x in full_row(path)}
    shown = 0
    for ln in body:
        cells = [c.strip() for c in ln.split("│")[1:-1]]
        assert all(cells), ln  # no blank cell
        if cells[0] == "1":
            shown = len(cells) - 1
            for cell in cells[1:]:
                assert cell == "…" or float(cell) in row_1, cell  # not cut short
    assert shown >= 3
    if columns >= 60:  # a narrower terminal gets the smallest table, wider than itself
        assert max(len(ln) for ln in lines if ln[:1] in "┏┃│└") <= columns


def full_row(path):
    """Row 1 of the output, from the CSV (full precision) — every table cell must be one of these."""
    csv = run_ok("compute", path, "--stage", "output", "-f", "csv").stdout
    return [float(x) for x in csv.splitlines()[0].split(",")]


def test_full_shows_everything(tmp_path):
    rng = np.random.default_rng(5)
    path = write_npz(
        tmp_path / "p.npz", Q=rng.random((25, 2)), K=rng.random((25, 2)), V=rng.random((25, 3))
    )
    lines = table_lines(path, "--stage", "output", "--full")
    rows = [ln.split("│")[1].strip() for ln in lines if ln.startswith("│")]
    assert rows == [str(i) for i in range(1, 26)]
    assert not any("showing" in ln for ln in lines)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_only_on_a_terminal_and_for_long_work():
    from types import SimpleNamespace

    long = SimpleNamespace(B=1, heads=8, n=16384, m=16384, d_head=64, dv_head=64)
    short = SimpleNamespace(B=1, heads=1, n=100, m=100, d_head=8, dv_head=8)
    with progress(long, io.StringIO()) as tick:
        assert tick is None  # not a terminal
    with progress(short, Terminal()) as tick:
        assert tick is None  # too quick to bother
    err = Terminal()
    with progress(long, err) as tick:
        assert callable(tick)
        tick(10, 20)
    assert "attention in blocks" in err.getvalue()
    err = Terminal()
    with progress(long, err, label="every stage", steps=False) as tick:
        assert callable(tick)  # a pulsing bar: the full pipeline cannot say how far it is
    assert "every stage" in err.getvalue()


@pytest.mark.slow
def test_full_big_tables_are_plain_text_with_every_cell(tmp_path):
    rng = np.random.default_rng(8)
    path = write_npz(
        tmp_path / "p.npz",
        Q=rng.random((70, 2)),
        K=rng.random((70, 2)),
        V=rng.standard_normal((70, 64)),
    )
    lines = table_lines(path, "--stage", "output", "--full")
    body = [[c.strip() for c in ln.split("│")[1:-1]] for ln in lines if ln.startswith("│")]
    csv = run_ok("compute", path, "--stage", "output", "-f", "csv").stdout.splitlines()

    values = [float(x) for row in csv for x in row.split(",")]
    sci = any(0 < abs(x) < 0.00005 or abs(x) >= 1e9 for x in values)  # one notation per table

    def shown(x):  # 4 decimals, or every cell in e-notation when one is too small for them
        return f"{x:.4e}" if sci else f"{x:.4f}"

    want = [[str(i + 1), *(shown(float(x)) for x in row.split(","))] for i, row in enumerate(csv)]
    zero = "0.0000e+00" if sci else "0.0000"
    assert body == [[(zero if c == "-" + zero else c) for c in row] for row in want]
    assert lines[3] == "output = weights·V (70×64)"


@pytest.mark.slow
def test_output_file_for_text_formats(tmp_path):
    out = tmp_path / "o.json"
    r = run_ok("compute", SAMPLE, "-f", "json", "-o", str(out))
    assert r.stdout == ""
    assert json.loads(out.read_text(encoding="utf-8")) == full_json()
    table = tmp_path / "o.txt"
    run_ok("compute", SAMPLE, "--stage", "output", "-o", str(table))
    assert (
        table.read_text(encoding="utf-8") == run_ok("compute", SAMPLE, "--stage", "output").stdout
    )
    missing = tmp_path / "no" / "o.csv"
    r = qkv("compute", SAMPLE, "-f", "csv", "-o", str(missing))
    assert (r.exit_code, r.stdout) == (2, "")
    assert (
        r.stderr == f"qkv: error: --output {missing}: directory {missing.parent} does not exist\n"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--exact", "--stream"],
            "--exact works out every stage as fractions, not in blocks: drop --exact or --stream",
        ),
        (
            ["--stream", "--tokens-view"],
            "--stream computes no 3×3 stage: drop --tokens-view or --stream",
        ),
        (["--stream", "--heatmap"], "--stream computes no 3×3 stage: drop --heatmap or --stream"),
        (["--stream", "--top", "2"], "--stream computes no 3×3 stage: drop --top or --stream"),
        (
            ["--stream", "--trace"],
            "--stream computes no 3×3 stage: drop --stage scores or --stream",
        ),
    ],
)
def test_what_the_streamed_path_cannot_honour_is_refused_in_one_line(args, message):
    result = CliRunner().invoke(app, ["compute", "samples/worked_example.json", *args])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == f"qkv: error: {message}\n"


def test_exact_on_a_long_input_is_refused_not_streamed(tmp_path):
    n = 2100
    path = tmp_path / "long.json"
    path.write_text(json.dumps({k: [[1, 0]] * n for k in "QKV"}))
    result = CliRunner().invoke(app, ["compute", str(path), "--exact"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "qkv: error: --exact is for problems of hand size: this one needs 17.6 million "
        "multiply-adds in fractions (at most 2.0 million); drop --exact\n"
    )
