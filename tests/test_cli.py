"""The command line: exact output, messages and exit codes."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import reference
from typer.testing import CliRunner

from qkvcli.cli import app

runner = CliRunner()
GOLDEN = Path(__file__).parent / "golden"
WORKED = "samples/worked_example.json"
CSV_WEIGHTS = (
    "--wq",
    "samples/csv/W_Q.csv",
    "--wk",
    "samples/csv/W_K.csv",
    "--wv",
    "samples/csv/W_V.csv",
)
GOOD = {
    "X": [[1, 0], [0, 1]],
    "W_Q": [[1, 0], [0, 1]],
    "W_K": [[1, 0], [0, 1]],
    "W_V": [[1, 2], [3, 4]],
}


def qkv(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def with_(**changes) -> str:
    return json.dumps(GOOD | changes)


def test_trace_table_matches_golden():
    result = qkv("compute", WORKED, "--trace")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == (GOLDEN / "worked_example_trace.txt").read_text(encoding="utf-8")


def test_default_shows_weights_and_output_only():
    out = qkv("compute", WORKED).stdout
    assert "weights = softmax(scaled) per row (3×3)" in out
    assert "output = weights·V (3×3)" in out
    assert "scores" not in out.split("\n", 2)[2]
    assert "W_Q ← w_query" in out


def test_trace_titles_carry_formula_shape_and_scale():
    out = qkv("compute", WORKED, "--trace").stdout
    for title in ("Q = X·W_Q (3×3)", "K = X·W_K (3×3)", "V = X·W_V (3×3)", "scores = Q·Kᵀ (3×3)",
                  "scaled = scores × 1/√3 (3×3)", "weights = softmax(scaled) per row (3×3)", "output = weights·V (3×3)"):  # fmt: skip
        assert title in out
    assert "scale 1/√3 = 0.57735" in out
    assert "│ x2 │ 4.0000 │ 16.0000 │ 12.0000 │" in out  # scores row 2, labelled by token


def test_json_round_trips_and_matches_reference():
    result = qkv("compute", WORKED, "--format", "json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    X = [[1, 0, 1, 0], [0, 2, 0, 2], [1, 1, 1, 1]]
    W = {"Q": [[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 1]], "K": [[0, 0, 1], [1, 1, 0], [0, 1, 0], [1, 1, 0]],
         "V": [[0, 2, 0], [0, 3, 0], [1, 0, 3], [1, 1, 0]]}  # fmt: skip
    Q, K, V = (reference.matmul(X, W[n]) for n in "QKV")
    ref = reference.attention(Q, K, V)
    assert doc["Q"] == Q and doc["K"] == K and doc["V"] == V
    for name in ("scores", "scaled", "weights"):
        np.testing.assert_allclose(doc[name], ref[name][0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(doc["output"], ref["output"], rtol=0, atol=1e-12)
    assert list(doc) == ["meta", "Q", "K", "V", "scores", "scaled", "weights", "output"]
    meta = doc["meta"]
    assert meta["scale"] == 1 / math.sqrt(3)
    assert meta["d_k"] == 3 and meta["layout"] == "rows"
    assert meta["keys"]["W_Q"] == "w_query"
    assert meta["shapes"]["weights"] == [3, 3]


def test_json_values_are_full_precision():
    doc = json.loads(qkv("compute", WORKED, "-f", "json", "--stage", "weights").stdout)
    e = [math.exp(2 / math.sqrt(3)), math.exp(4 / math.sqrt(3)), math.exp(4 / math.sqrt(3))]
    assert doc["weights"][0] == pytest.approx([x / sum(e) for x in e], rel=1e-15)
    assert list(doc) == ["meta", "weights"]


def test_csv_and_tsv_print_one_stage_plainly():
    out = qkv("compute", WORKED, "--format", "csv", "--stage", "scores").stdout
    assert out == "2.0,4.0,4.0\n4.0,16.0,12.0\n4.0,12.0,10.0\n"
    out = qkv("compute", WORKED, "--format", "tsv").stdout  # default stage: output
    rows = [[float(c) for c in line.split("\t")] for line in out.splitlines()]
    assert rows[0] == pytest.approx([1.8638742, 6.3193710, 1.7041887], abs=1e-7)
    assert "\x1b" not in out


def test_stdin_and_q_k_v_direct():
    text = json.dumps({"Q": [[1, 0]], "K": [[1, 0], [0, 1]], "V": [[1], [0]]})
    out = qkv("compute", "-", "--stage", "weights", "-f", "csv", input=text).stdout
    e = math.exp(1 / math.sqrt(2))
    assert [float(c) for c in out.split(",")] == pytest.approx(
        [e / (e + 1), 1 / (e + 1)], abs=1e-15
    )


def test_csv_inputs_match_json():
    csv_out = qkv("compute", "--x", "samples/csv/X.csv", "--wq", "samples/csv/W_Q.csv", "--wk",
                  "samples/csv/W_K.csv", "--wv", "samples/csv/W_V.csv", "-f", "json").stdout  # fmt: skip
    json_out = qkv("compute", WORKED, "-f", "json").stdout
    a, b = json.loads(csv_out), json.loads(json_out)
    for name in ("Q", "K", "V", "scores", "weights", "output"):
        assert a[name] == b[name]
    assert a["meta"]["tokens"] == ["x1", "x2", "x3"]


def test_csv_option_overrides_one_matrix_of_the_json(tmp_path):
    (tmp_path / "wv.csv").write_text("1,0,0\n0,1,0\n0,0,1\n0,0,0\n")
    doc = json.loads(qkv("compute", WORKED, "--wv", str(tmp_path / "wv.csv"), "-f", "json").stdout)
    assert doc["V"] == [[1, 0, 1], [0, 2, 0], [1, 1, 1]]
    assert doc["meta"]["keys"]["W_V"] == str(tmp_path / "wv.csv")
    assert doc["meta"]["keys"]["W_Q"] == "w_query"


def test_scale_and_layout_options_win_over_the_file():
    doc = json.loads(
        qkv("compute", "samples/dk_ne_dv.json", "--scale", "none", "-f", "json").stdout
    )
    assert doc["scaled"] == doc["scores"] and doc["meta"]["scale"] == 1.0
    doc = json.loads(
        qkv("compute", "-", "--scale", "0.5", "-f", "json", input=with_(scale="none")).stdout
    )
    assert doc["meta"]["scale"] == 0.5


def test_columns_layout_from_the_command_line():
    cols = {k: [list(c) for c in zip(*v)] for k, v in GOOD.items()}
    a = json.loads(qkv("compute", "-", "-f", "json", input=json.dumps(GOOD)).stdout)
    b = json.loads(
        qkv("compute", "-", "-f", "json", "--layout", "columns", input=json.dumps(cols)).stdout
    )
    assert b["output"] == [list(c) for c in zip(*a["output"])]
    assert b["weights"] == a["weights"]


def test_key_spellings():
    for spelling in ("W_Q", "w_q", "Wq", "WQ", "w_query"):
        text = json.dumps(
            {"X": GOOD["X"], spelling: GOOD["W_Q"], "wk": GOOD["W_K"], "W_value": GOOD["W_V"]}
        )
        doc = json.loads(qkv("compute", "-", "-f", "json", input=text).stdout)
        assert doc["meta"]["keys"]["W_Q"] == spelling


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (["compute", "missing.json"], None, "missing.json: no such file"),
        (["compute", "samples"], None, "samples: is a directory, not a file"),
        (
            ["compute", "-"],
            '{"X": [[1, 2]],\n "W_Q": [[1]] "W_K": 1}',
            "<stdin>: invalid JSON at line 2, column 15: Expecting ',' delimiter",
        ),
        (
            ["compute", "-"],
            "[1, 2]",
            "<stdin>: the top level must be an object with keys such as X, W_Q, W_K, W_V",
        ),
        (
            ["compute", "-"],
            json.dumps({"X": GOOD["X"], "W_Q": GOOD["W_Q"], "W_K": GOOD["W_K"]}),
            "<stdin>: missing matrix: W_V (or V)",
        ),
        (
            ["compute", "-"],
            json.dumps({"Q": [[1]], "K": [[1]]}),
            "<stdin>: missing matrix: W_V (or V)",
        ),
        (
            ["compute", "-"],
            json.dumps({"W_Q": [[1]], "W_K": [[1]], "W_V": [[1]]}),
            "<stdin>: missing matrix: X (W_Q, W_K, W_V project the rows of X)",
        ),
        (
            ["compute", "-"],
            with_(X=[[1, 0], [0, 1, 2]]),
            "<stdin>: X row 2 has 3 values but row 1 has 2",
        ),
        (
            ["compute", "-"],
            with_(W_K=[[1, 0], ["a", 1]]),
            '<stdin>: W_K row 2, column 1: "a" is not a number',
        ),
        (
            ["compute", "-"],
            with_(W_K=[[1, 0], [None, 1]]),
            "<stdin>: W_K row 2, column 1: null is not a number",
        ),
        (
            ["compute", "-"],
            with_(W_K=[[1, 0], [True, 1]]),
            "<stdin>: W_K row 2, column 1: true is not a number",
        ),
        (
            ["compute", "-"],
            '{"X": [[1, NaN], [0, 1]], "W_Q": [[1]], "W_K": [[1]], "W_V": [[1]]}',
            "<stdin>: X row 1, column 2 is nan: qkv needs finite numbers",
        ),
        (
            ["compute", "-"],
            '{"X": [[1, 0], [0, Infinity]], "W_Q": [[1]], "W_K": [[1]], "W_V": [[1]]}',
            "<stdin>: X row 2, column 2 is inf: qkv needs finite numbers",
        ),
        (["compute", "-"], with_(X=[]), "<stdin>: X is empty"),
        (["compute", "-"], with_(X=[[]]), "<stdin>: X row 1 is empty"),
        (
            ["compute", "-"],
            with_(X=[1, 2]),
            "<stdin>: X must be a matrix (a list of rows) or a list of matrices, not a list of numbers",
        ),
        (
            ["compute", "-"],
            with_(W_Q=[[1, 0, 0], [0, 1, 0]], X=[[1, 0, 0], [0, 1, 0]]),
            "<stdin>: W_Q is 2×3 but X has 3 columns: did you mean its transpose (--weights-layout out-in)?",
        ),
        (["compute", "-"], with_(W_Q=[[1, 0, 0]]), "<stdin>: W_Q is 1×3 but X has 2 columns"),
        (["compute", "-"], with_(wq=[[1], [0]]), "<stdin>: keys 'W_Q' and 'wq' both give W_Q"),
        (
            ["compute", "-"],
            with_(W_K=[[1], [0]]),
            "<stdin>: Q is 2×2 but K is 2×1: Q·Kᵀ needs Q and K to have the same number of columns",
        ),
        (
            ["compute", "-"],
            json.dumps({"Q": [[1]], "K": [[1], [2]], "V": [[1]]}),
            "<stdin>: K has 2 rows but V has 1: every key needs one value",
        ),
        (
            ["compute", "-"],
            with_(tokens=["a"]),
            "<stdin>: tokens has 1 label but there are 2 queries",
        ),
        (
            ["compute", "-"],
            with_(W_Z=[[1]]),
            "<stdin>: unknown key 'W_Z': a problem holds X, W_Q, W_K, W_V (or Q, K, V) and may hold X_kv, "
            "W_O, b_Q, b_K, b_V, b_O, mask, attn_bias, valid_lens, key_padding_mask, tokens, kv_tokens, "
            "scale, layout, weights_layout, heads, kv_heads, mask_polarity, empty_rows, similarity, "
            "normalize, temperature, rope, rope_theta, partial_rotary_factor, position_ids, "
            "position_offset, sliding_window, attention_chunk_size, qk_norm, q_norm, k_norm, "
            "rms_norm_eps, rms_norm_unit_offset, attn_logit_softcapping, sinks, past_key, past_value, "
            "precision (for qkv check) or PyTorch's in_proj_weight, in_proj_bias, out_proj.weight, "
            "out_proj.bias; keys starting with _ are comments",
        ),
        (
            ["compute", "-"],
            with_(scael=2),
            "<stdin>: unknown key 'scael' (did you mean scale?)",
        ),
        (
            ["compute", "-"],
            json.dumps(
                {"X": GOOD["X"], "W_Qx": GOOD["W_Q"], "W_K": GOOD["W_K"], "W_V": GOOD["W_V"]}
            ),
            "<stdin>: unknown key 'W_Qx' (did you mean W_Q?)",
        ),
        (
            ["compute", "-"],
            with_(scale="big"),
            "<stdin>: scale must be sqrt, none or a number, not 'big'",
        ),
        (
            ["compute", "-"],
            with_(layout="diagonal"),
            "<stdin>: layout must be rows or columns, not 'diagonal'",
        ),
        (
            ["compute", "-", "--scale", "0"],
            json.dumps(GOOD),
            "--scale must be a finite non-zero number, not '0'",
        ),
        (
            ["compute", "-", "--layout", "row"],
            json.dumps(GOOD),
            "--layout must be rows or columns, not 'row' (did you mean rows?)",
        ),
        (
            ["compute", "-", "--format", "xml"],
            json.dumps(GOOD),
            "--format must be table, json, csv, tsv, markdown, latex or npz, not 'xml'",
        ),
        (
            ["compute", "-", "--stage", "softmax"],
            json.dumps(GOOD),
            "--stage softmax: no such stage; this run's stages: Q, K, V, scores, scaled, weights, output",
        ),
        (
            ["compute", "-", "--stage", "weight"],
            json.dumps(GOOD),
            "--stage weight: no such stage (did you mean weights?); this run's stages: Q, K, V, "
            "scores, scaled, weights, output",
        ),
        (
            ["compute", "-", "--stage", "masked"],
            json.dumps(GOOD),
            "--stage masked: this run has no masked stage; this run's stages: Q, K, V, scores, "
            "scaled, weights, output",
        ),
        (
            ["compute", "-", "-f", "csv", "--stage", "Q", "--stage", "K"],
            json.dumps(GOOD),
            "--format csv writes one stage, not 2: choose one with --stage, or use --format json or npz",
        ),
        (
            ["compute", "-", "-f", "csv", "--trace"],
            json.dumps(GOOD),
            "--format csv writes one stage, not every stage (--trace): use --format json or npz for "
            "every stage, or --stage NAME",
        ),
        (
            ["compute", "samples/csv/X.csv"],
            None,
            "samples/csv/X.csv: holds one CSV matrix, not a JSON problem: give each matrix with its "
            "option, --x FILE --wq FILE --wk FILE --wv FILE (or --q, --k, --v)",
        ),
        (
            ["compute", "-"],
            with_(sliding_window=3e100),
            "<stdin>: sliding_window must be at most 2^53 (a whole number a float holds), not 3e+100",
        ),
        (
            ["compute", "-", "--scale", "sqr"],
            json.dumps(GOOD),
            "--scale must be sqrt, none or a number, not 'sqr' (did you mean sqrt?)",
        ),
        (
            ["compute"],
            None,
            "no input: give a JSON file (or - for stdin), or CSV files with --x/--wq/--wk/--wv or --q/--k/--v",
        ),
        (
            ["compute", "-", "--x", "-"],
            json.dumps(GOOD),
            "only one input can be read from stdin (-), not X and input",
        ),
        (
            ["compute", "--bogus"],
            None,
            "No such option: --bogus (Possible options: --bo) (see 'qkv compute --help')",
        ),
        (
            ["compute", "x.json", "--precision", "x"],
            None,
            "Invalid value for '--precision': Input should be a valid integer, unable to parse string as an integer (see 'qkv compute --help')",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, stdin, message):
    result = qkv(*args, input=stdin)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"qkv: error: {message}\n"


@pytest.mark.parametrize(
    "content, message",
    [
        ("1,2\n3,x\n", "{f}: line 2, column 2: 'x' is not a number"),
        ("1,2\n3\n", "{f}: line 2 has 1 value but line 1 has 2"),
        ("1,2\n3,nan\n", "{f}: line 2, column 2 is 'nan': qkv needs finite numbers"),
        ("\n# nothing\n", "{f}: holds no numbers (X is empty)"),
    ],
)
def test_bad_csv(tmp_path, content, message):
    f = tmp_path / "X.csv"
    f.write_text(content)
    result = qkv("compute", "--x", str(f), *CSV_WEIGHTS)
    assert result.exit_code == 2
    assert result.stderr == "qkv: error: " + message.format(f=f) + "\n"


def test_csv_shape_error_names_the_files(tmp_path):
    f = tmp_path / "X.csv"
    f.write_text("1,2,3\n")
    result = qkv("compute", "--x", str(f), *CSV_WEIGHTS)
    assert result.exit_code == 2
    assert f"W_Q (samples/csv/W_Q.csv) is 4×3 but X ({f}) has 3 columns" in result.stderr
    assert result.stderr.count("\n") == 1


def test_csv_delimiters_headers_and_decimal_commas(tmp_path):
    for text in ("a;b\n1,5;2\n3;4\n", "1.5\t2\n3\t4\n", "1.5 2\n3 4\n", "\ufeff1.5,2\r\n3,4\r\n"):
        f = tmp_path / "Q.csv"
        f.write_text(text, encoding="utf-8")
        result = qkv(
            "compute", "--q", str(f), "--k", str(f), "--v", str(f), "-f", "csv", "--stage", "Q"
        )
        assert result.stdout == "1.5,2.0\n3.0,4.0\n", text


def test_non_utf8_file(tmp_path):
    f = tmp_path / "bad.json"
    f.write_bytes(b'{"X": "\xff"}')
    result = qkv("compute", str(f))
    assert result.stderr == f"qkv: error: {f}: not UTF-8 text (byte 0xff at offset 7)\n"
    assert result.exit_code == 2


def test_version_and_help():
    assert qkv("--version").stdout.startswith("qkv ")
    for cmd in (["--help"], ["-h"], ["compute", "--help"], ["compute", "-h"]):
        result = qkv(*cmd)
        assert result.exit_code == 0, cmd
        assert "qkv compute samples/worked_example.json" in result.stdout
    assert (
        "Exit codes: 0 success, 1 a check found a mismatch, 2 bad usage or input,"
        in qkv("--help").stdout
    )


def test_a_bare_qkv_lists_the_commands_and_exits_0():
    result = qkv()
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == "Usage: qkv COMMAND [ARGS]..."
    for name in ("compute", "check", "explain", "new", "model"):
        assert any(line.startswith(f"  {name} ") for line in lines), name
    assert "'qkv COMMAND -h' lists a command's options; 'qkv -h' adds the exit codes." in lines
    assert len(lines) < 20  # a short usage, not the whole help


def test_every_command_has_help_with_an_example():
    from typer.main import get_command

    group = get_command(app)
    for name, command in group.commands.items():
        assert command.help, name
        assert "qkv " + name in command.help, name
        assert qkv(name, "-h").exit_code == 0, name


READABLE = re.compile(r"[A-Za-z0-9_|,.\[\]…=-]+")


def test_every_option_has_help_and_a_readable_metavar():
    """Help in typer/rich's conventions: each option says what it does; its value has a name."""
    from typer.main import get_command

    from qkvcli.cli.app import help_record

    group = get_command(app)
    for name, command in group.commands.items():
        for param in command.params:
            where = f"qkv {name} {param.name}"
            assert param.help and param.help.strip(), where
            shown, text = help_record(param)
            assert "<" not in shown and text, where
            if param.param_type_name == "option" and not param.is_flag:
                assert READABLE.fullmatch(shown.split()[-1]), (where, shown)
                if name in ("compute", "model"):  # named by hand: FILE, N, sqrt|none|X …
                    assert param.metavar, where


def test_compute_help_groups_its_options_in_panels():
    out = qkv("compute", "-h").stdout
    panels = [line for line in out.splitlines() if line and not line[0].isspace()]
    assert panels == [
        "Usage: qkv compute [OPTIONS] [PROBLEM]",
        "Arguments:",
        "Options:",
        "Input (matrices from CSV or .npy files, - = stdin; each replaces the problem's):",
        "How to compute:",
        "Masks:",
        "Today's models' variants (Hugging Face config names):",
        "Output:",
        "Pictures:",
        "Large inputs:",
    ]
    for shown in ("--x FILE", "--scale sqrt|none|X", "--heads N", "--stage STAGE",
                  "--precision N", "-f, --format FORMAT", "--tokens LABEL[,LABEL…]", "--debug",
                  "-h, --help"):  # fmt: skip
        assert f"  {shown} " in out or f"  {shown}\n" in out, shown
    assert not re.search(r"<(str|int|float|list)", out) and "[0<=x<=17]" not in out


def run_python(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "args", [["--version"], ["--help"], ["-h"], [], ["compute", "-h"], ["check", "--help"]]
)
def test_fast_paths_import_neither_numpy_nor_rich(args):
    code = (
        "import sys\nfrom qkvcli.cli import main\nsys.argv = ['qkv', *" + repr(args) + "]\n"
        "sys.modules['qkvcli.cli'].leave = lambda code: None  # stay: what did the run load?\nmain()\n"
        "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'rich'}))"
    )
    assert run_python(code).splitlines()[-1] == "LOADED []"


@pytest.mark.slow
def test_python_dash_m():
    out = subprocess.run(
        [sys.executable, "-m", "qkvcli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("qkv ")


def test_no_color_and_not_a_terminal_mean_no_escape_codes():
    assert "\x1b[" not in qkv("compute", WORKED, "--trace").stdout


def test_debug_shows_the_traceback_anywhere_on_the_line_and_keeps_the_exit_code():
    for args in (["--debug", "compute", "missing.json"], ["compute", "missing.json", "--debug"]):
        result = qkv(*args)
        assert result.exit_code == 2  # bad input stays 2 (1 means "check found a mismatch")
        assert result.stderr.startswith("Traceback (most recent call last):\n")
        lines = result.stderr.splitlines()
        assert lines[-2] == "qkvcli.errors.InputError: missing.json: no such file"
        assert lines[-1] == "qkv: error: missing.json: no such file"


def test_debug_keeps_the_exit_code_of_a_bug(monkeypatch):
    import qkvcli.attention

    def broken(r):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(qkvcli.attention, "run", broken)
    result = qkv("compute", WORKED, "--debug")
    assert result.exit_code == 70
    assert "ZeroDivisionError: division by zero\n" in result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        "qkv: error: internal error: ZeroDivisionError"
    )


def test_a_bug_is_one_line_with_exit_70(monkeypatch):
    import qkvcli.attention

    def broken(r):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(qkvcli.attention, "run", broken)
    result = qkv("compute", WORKED)
    assert result.exit_code == 70
    assert result.stderr == (
        "qkv: error: internal error: ZeroDivisionError: division by zero — this is a bug in qkv; "
        "run again with --debug for the traceback and please report it\n"
    )


def test_the_light_coercion_still_fits_this_typer():
    """coercion.py replaces typer's pydantic coercion: when typer changes under it, fail here.

    It saves about 0.15 s of start-up (pydantic's import); pyproject.toml bounds
    typer to the releases it was tested with.
    """
    import typer._coercion  # noqa: F401  (the module coercion.py builds on)
    from typer.main import get_command

    group = get_command(app)
    for name, command in group.commands.items():
        kinds = {type(p._runtime_param).__name__ for p in command.params}
        assert kinds == {"Light"}, f"{name}: {kinds}"
    result = qkv("compute", WORKED, "--precision", "x")
    assert result.exit_code == 2
    assert "Input should be a valid integer" in result.stderr


def table_cells(out: str) -> list[str]:
    return [c.strip() for ln in out.splitlines() if ln.startswith("│") for c in ln.split("│")[2:-1]]


def test_numbers_in_one_table_use_one_notation():
    """At 1 decimal the weight 0.0009 needs e-notation, so every cell of that table takes it."""
    coarse = qkv("compute", WORKED, "--stage", "weights", "--stage", "V", "--precision", "1").stdout
    v, weights = coarse.split("weights = ")
    assert all(re.fullmatch(r"\d\.\d", c) for c in table_cells(v))  # V: whole numbers, fixed
    cells = table_cells(weights)
    assert len(cells) == 12 and all(re.fullmatch(r"\d\.\de[+-]\d\d", c) for c in cells)
    fine = qkv("compute", WORKED, "--stage", "weights").stdout
    assert all(re.fullmatch(r"\d\.\d{4}", c) for c in table_cells(fine))
    md = qkv("compute", WORKED, "--stage", "weights", "-f", "markdown", "--precision", "2").stdout
    rows = [ln.split(" | ")[1:] for ln in md.splitlines() if ln.startswith("| **")]
    assert all(re.fullmatch(r"\d\.\d\de[+-]\d\d", c.strip(" |")) for r in rows for c in r)
    tex = qkv("compute", WORKED, "--stage", "weights", "-f", "latex", "--precision", "2").stdout
    matrix = tex.split("\\begin{bmatrix}\n")[1].split("\n\\end{bmatrix}")[0]
    assert "e-0" not in matrix and matrix.count("\\times 10^{") == 9
    assert matrix.splitlines()[1].startswith("8.90 \\times 10^{-4} & 9.09 \\times 10^{-1}")
    heat = qkv("compute", WORKED, "--heatmap", "--precision", "1").stdout
    grid = [ln for ln in heat.splitlines() if ln.startswith("x")]
    numbers = [n for ln in grid for n in re.findall(r"\d\.\d+(?:e[+-]\d+)?", ln)]
    assert len(numbers) == 9 and all("e" in n for n in numbers)


def test_a_stage_typo_on_a_long_input_lists_every_stage(tmp_path):
    """Long inputs stream without the n×n stages; a typo still lists every stage of the run."""
    rng = np.random.default_rng(0)
    path = tmp_path / "long.npz"
    np.savez(path, **{k: rng.standard_normal((2100, 4)) for k in "QKV"})
    result = qkv("compute", str(path), "--stage", "weight")
    assert result.exit_code == 2
    assert result.stderr == (
        "qkv: error: --stage weight: no such stage (did you mean weights?); "
        "this run's stages: Q, K, V, scores, scaled, weights, output\n"
    )


@pytest.mark.slow
def test_a_whole_process_flushes_all_it_wrote_and_keeps_its_exit_code(tmp_path):
    """``main`` skips the interpreter's teardown (`leave`): nothing printed may be lost."""
    SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "worked_example.json"
    rng = np.random.default_rng(3)
    n = 400
    doc = {"X": rng.normal(size=(n, 4)).tolist()} | {
        w: rng.normal(size=(4, 4)).tolist() for w in ("W_Q", "W_K", "W_V")
    }
    path = tmp_path / "big.json"
    path.write_text(json.dumps(doc))

    def qkv(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "qkvcli", *args], capture_output=True, text=True, cwd=tmp_path
        )

    done = qkv("compute", str(path), "--stage", "weights", "-f", "csv")  # 400 rows, 2.5 MB
    assert done.returncode == 0, done.stderr
    rows = [list(map(float, line.split(","))) for line in done.stdout.splitlines()]
    assert len(rows) == n and all(len(r) == n for r in rows)
    assert abs(sum(rows[-1]) - 1) < 1e-12
    wrong = tmp_path / "answers.json"
    wrong.write_text(json.dumps({"weights": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}))
    done = qkv("check", str(SAMPLE), str(wrong))
    assert done.returncode == 1 and "weights" in done.stdout and done.stdout.endswith("\n")
    done = qkv("compute", str(tmp_path / "missing.json"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "missing.json" in done.stderr
