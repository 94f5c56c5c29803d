"""Failure modes as deliberate as the happy path: pipes, signals, full disks, extremes, limits."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import qkvcli.load.files
from qkvcli.attention import run
from qkvcli.errors import ComputeError, InputError
from qkvcli.options import Options
from qkvcli.problem import Problem, resolve

runner = CliRunner()
WORKED = "samples/worked_example.json"


def qkv_process(*args: str, **kw) -> subprocess.Popen:
    env = os.environ | {"NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "qkvcli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # fmt: skip


def big_problem(tmp_path, n=1500) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path / "big.json"
    path.write_text(json.dumps({k: rng.normal(size=(n, 4)).round(3).tolist() for k in "QKV"}))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "how", [["--full"], ["--trace", "-f", "json"], ["-f", "csv"], ["-f", "markdown"], []]
)
def test_a_closed_pipe_ends_quietly(tmp_path, how):
    """The reader goes after 200 bytes of megabytes (more than a pipe holds): exit 141, no word.

    (One write of megabytes can lose the broken pipe: qkv writes in pieces, `write_out`.)
    """
    n = 600 if how else 1500  # the last: a summarised table, small, written before the reader goes
    p = qkv_process("compute", big_problem(tmp_path, n=n), "--stage", "weights", *how)
    p.stdout.read(200)
    p.stdout.close()
    err = p.stderr.read().decode()
    code = p.wait(timeout=120)
    assert code == 141 if how else code in (0, 141)  # a small output may all be in the pipe
    assert err == ""


@pytest.mark.slow
def test_ctrl_c_exits_130_without_a_traceback():
    p = qkv_process("compute", "-", stdin=subprocess.PIPE)  # waits for stdin that never ends
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    try:
        _, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        pytest.fail("qkv did not stop within 30 s of Ctrl-C")
    assert p.returncode == 130
    assert "Traceback" not in err.decode()


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_a_full_disk_is_a_clear_error(fmt):
    with open("/dev/full", "w") as full:
        env = os.environ | {"NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-m", "qkvcli", "compute", WORKED, "-f", fmt], cwd=ROOT,
                              env=env, stdout=full, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == "qkv: error: cannot write the output: No space left on device\n"


def test_devices_directories_and_oversized_inputs_are_refused_before_reading(monkeypatch, tmp_path):
    assert runner.invoke(_app(), ["compute", "/dev/zero"]).stderr == (
        "qkv: error: /dev/zero: is a device or socket, not a file\n"
    )
    monkeypatch.setattr(qkvcli.load.files, "MAX_TEXT_BYTES", 100)
    monkeypatch.setattr(qkvcli.load.files.read_bytes, "__defaults__", (100,))
    result = runner.invoke(_app(), ["compute", WORKED])
    assert result.exit_code == 2
    assert (
        result.stderr == f"qkv: error: {WORKED}: is larger than 0 MiB; give big matrices as .npy\n"
    )


def _app():
    from qkvcli.cli import app

    return app


def test_absurd_nesting_and_long_lines(tmp_path):
    deep = "[" * 200_000 + "]" * 200_000
    result = runner.invoke(_app(), ["compute", "-"], input='{"X": ' + deep + "}")
    assert (
        result.stderr
        == "qkv: error: <stdin>: JSON nested too deeply (qkv reads at most 32 levels)\n"
    )
    wide = tmp_path / "wide.csv"
    wide.write_text(",".join(["1"] * 50_000) + "\n")
    result = runner.invoke(
        _app(), ["compute", "--q", str(wide), "--k", str(wide), "--v", str(wide), "-f", "csv"]
    )
    assert result.exit_code == 0
    assert result.stdout == ",".join(["1.0"] * 50_000) + "\n"


def test_a_bom_is_accepted(tmp_path):
    f = tmp_path / "bom.json"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps({"Q": [[1]], "K": [[1]], "V": [[2]]}).encode())
    assert runner.invoke(_app(), ["compute", str(f), "-f", "csv"]).stdout == "2.0\n"


def compute(options=None, **mats):
    problem = Problem({k: np.asarray(v, dtype=float) for k, v in mats.items()})
    return run(resolve(problem, options or Options()))


@pytest.mark.parametrize(
    "q, k, options",
    [
        ([[1e150, -1e150]], [[1e150, 0.0], [0.0, 1e150]], Options(scale="none")),  # scores ±1e300
        ([[1.0]], [[1.0], [-1.0]], Options(scale=1e300)),  # huge scale: one-hot, still finite
        ([[1.0]], [[1.0], [-1.0]], Options(scale=1e-300)),  # tiny scale: uniform
        ([[1.0]], [[1.0], [-1.0]], Options(temperature=1e-300)),
        ([[1.0]], [[1.0], [-1.0]], Options(temperature=1e300)),
        ([[5e-324]], [[5e-324], [1e-310]], Options()),  # denormals, d_k = 1
    ],
)
def test_numeric_extremes_give_finite_weights_that_sum_to_one(q, k, options):
    t = compute(options, Q=q, K=k, V=[[1.0], [2.0]])
    assert np.all(np.isfinite(t["weights"]))
    np.testing.assert_allclose(t["weights"].sum(axis=-1), 1.0, atol=1e-15)
    assert np.all(np.isfinite(t["output"]))


def test_overflow_in_q_k_transpose_is_reported_not_propagated():
    with pytest.raises(ComputeError, match=r"^Q·Kᵀ overflows the float range at scores\[1,1\]"):
        compute(Q=[[1e200]], K=[[1e200]], V=[[1.0]])
    with pytest.raises(
        ComputeError, match=r"^the projection Q overflows the float range at Q\[1,1\]"
    ):
        compute(X=[[1e200]], W_Q=[[1e200]], W_K=[[1.0]], W_V=[[1.0]])
    with pytest.raises(
        ComputeError, match=r"^scores × scale overflows the float range at scaled\[1,1\]"
    ):
        compute(Options(temperature=1e-300), Q=[[1e10]], K=[[1e10]], V=[[1.0]])


@settings(deadline=None)
@given(
    st.floats(-300, 300), st.floats(-300, 300), st.floats(-300, 300),
    st.sampled_from(["sqrt", "none", 1e-300, 1e-5, 1e5]), st.sampled_from([1e-5, 1.0, 1e5]),
)  # fmt: skip
def test_random_magnitudes_are_finite_or_refused(a, b, c, scale, temperature):
    q = [[10.0**a]]
    k = [[10.0**b], [-(10.0**c)]]
    try:
        t = compute(Options(scale=scale, temperature=temperature), Q=q, K=k, V=[[1.0], [2.0]])
    except ComputeError as e:
        assert "overflows the float range" in str(e)
        return
    assert np.all(np.isfinite(t["weights"]))
    assert math.isclose(float(t["weights"].sum()), 1.0, abs_tol=1e-12)


@pytest.mark.parametrize("fmt", ["json", "csv", "table", "npz"])
def test_a_failed_output_write_keeps_the_old_file(tmp_path, monkeypatch, fmt):
    import qkvcli.atomic

    target = tmp_path / "out.txt"
    target.write_text("old")

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(qkvcli.atomic.os, "replace", full_disk)
    result = runner.invoke(_app(), ["compute", WORKED, "-f", fmt, "--output", str(target)])
    assert result.exit_code == 2
    assert (
        result.stderr == f"qkv: error: --output {target}: cannot write: No space left on device\n"
    )
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_a_big_output_is_sent_to_the_disk_while_it_is_written(tmp_path, monkeypatch):
    """`writeback` syncs as the file grows, so the last fsync has only the rest to wait for."""
    import threading

    import qkvcli.atomic

    synced, seen = [], threading.Event()

    def fdatasync(fd):
        synced.append(os.fstat(fd).st_size)
        seen.set()

    monkeypatch.setattr(qkvcli.atomic, "WRITEBACK", 1000)
    monkeypatch.setattr(qkvcli.atomic.os, "fdatasync", fdatasync)
    target = tmp_path / "big.bin"
    with qkvcli.atomic.atomic_file(str(target), "--output", binary=True) as f:
        f.write(b"x" * 5000)
        f.flush()
        assert seen.wait(10)  # the thread looks every 50 ms
    assert synced and synced[0] >= 1000
    assert target.read_bytes() == b"x" * 5000
    synced.clear()
    with qkvcli.atomic.atomic_file(str(tmp_path / "small.txt"), "--output") as f:
        f.write("small")
    assert synced == []  # a small file: only the final fsync
    assert sorted(os.listdir(tmp_path)) == ["big.bin", "small.txt"]


def test_output_into_a_read_only_directory(tmp_path, monkeypatch):
    import qkvcli.atomic

    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.setattr(qkvcli.atomic.os, "access", lambda path, mode: False)  # as if read-only
    target = folder / "o.json"
    result = runner.invoke(_app(), ["compute", WORKED, "-f", "json", "--output", str(target)])
    assert result.exit_code == 2
    assert result.stderr == f"qkv: error: --output {target}: directory {folder} is not writable\n"
    assert not target.exists()


# ---------------------------------------------------------------- issue 12: each class ends one way


def one_line_error(result, message: str | None = None) -> str:
    """The run failed the promised way: exit 2, nothing on stdout, one ``qkv: error:`` line."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert (result.exit_code, result.stdout) == (2, ""), (result.exit_code, result.stderr)
    assert result.stderr.startswith("qkv: error: ") and result.stderr.count("\n") == 1
    assert "internal error" not in result.stderr
    if message is not None:
        assert result.stderr == f"qkv: error: {message}\n"
    return result.stderr


def problem(**mats) -> str:
    return json.dumps({"Q": [[1, 0], [0, 1]], "K": [[1, 0], [0, 1]], "V": [[1, 2], [3, 4]]} | mats)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '{"Q": [[1' + "0" * 400 + ']], "K": [[1]], "V": [[1]]}',
            "<stdin>: Q row 1, column 1 is 100000000000… (401 digits): too large for a float",
        ),
        (
            '{"Q": [[' + "9" * 5000 + ']], "K": [[1]], "V": [[1]]}',
            "<stdin>: the number at line 1, column 9 has 5000 digits: far too large for a float",
        ),
        (
            '{"Q": [[1]], "K": [[1]], "V": [[1]], "scale": 1' + "0" * 400 + "}",
            "<stdin>: scale: 100000000000… (401 digits) is too large for a float",
        ),
    ],
)
def test_whole_numbers_too_large_for_a_float_are_placed(text, message):
    one_line_error(runner.invoke(_app(), ["compute", "-"], input=text), message)


def test_a_huge_explain_index_is_one_line():
    for index in ("1" + "0" * 400, "9" * 5000):
        result = runner.invoke(_app(), ["explain", WORKED, f"scores[{index},1]"])
        assert one_line_error(result).endswith("digits; no stage is that large\n")


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_a_lone_surrogate_in_a_label_is_refused(fmt):
    text = problem(tokens=["a", "b"]).replace('"b"', '"\\ud800"')
    one_line_error(
        runner.invoke(_app(), ["compute", "-", "-f", fmt], input=text),
        "<stdin>: tokens: label 2 ('\\ud800') holds a lone surrogate: "
        "a label must be printable text on one line",
    )


def test_a_label_with_a_line_break_is_refused_from_json_csv_and_options(tmp_path):
    text = problem(tokens=["a", "b\nc"])
    assert "label 2 ('b\\nc') holds a control character" in one_line_error(
        runner.invoke(_app(), ["compute", "-"], input=text)
    )
    result = runner.invoke(_app(), ["compute", "-", "--tokens", "a,\x1b[31mb"], input=problem())
    assert "--tokens: label 2 ('\\x1b[31mb') holds a control character" in one_line_error(result)
    x = tmp_path / "X.csv"
    x.write_text("a\x1b,1,0\nb,0,1\n")
    result = runner.invoke(_app(), ["compute", "--q", str(x), "--k", str(x), "--v", str(x)])
    assert f"{x}: first column: label 1 ('a\\x1b')" in one_line_error(result)


@pytest.mark.parametrize("depth", [33, 460, 600, 990, 5000])
def test_any_nesting_past_32_levels_is_one_line(depth):
    text = '{"Q": ' + "[" * depth + "1" + "]" * depth + ', "K": [[1]], "V": [[1]]}'
    for command in (["compute", "-"], ["check", WORKED, "-"], ["explain", "-", "Q[1,1]"]):
        stdin = text if command[1] == "-" else '{"scores": ' + "[" * depth + "]" * depth + "}"
        one_line_error(
            runner.invoke(_app(), command, input=stdin),
            "<stdin>: JSON nested too deeply (qkv reads at most 32 levels)",
        )


def test_nesting_deeper_than_the_entry_allows_is_named_without_recursion():
    from qkvcli.load import to_array

    deep = [[[[[[[[1]]]]]]]]
    with pytest.raises(InputError, match=r"X must be a matrix .* or a list of matrices, not 8-D"):
        to_array(deep, "X", "f.json")
    ragged = [[1], [[[[[[[[[[1]]]]]]]]]]]
    with pytest.raises(InputError, match="not 11-D"):
        to_array(ragged, "X", "f.json")


def test_batch_items_of_different_widths_name_the_row():
    text = json.dumps({"Q": [[[1, 2]], [[1, 2, 3]]], "K": [[[1, 2]]], "V": [[[1]]]})
    one_line_error(
        runner.invoke(_app(), ["compute", "-"], input=text),
        "<stdin>: Q matrix 2, row 1 has 3 values but matrix 1, row 1 has 2",
    )
    text = json.dumps({"Q": [[[1, 2]], [[1, 2], [3, 4]]], "K": [[[1, 2]]], "V": [[[1]]]})
    one_line_error(
        runner.invoke(_app(), ["compute", "-"], input=text),
        "<stdin>: Q matrix 2 has 2 rows but matrix 1 has 1",
    )


def test_exact_runs_that_overflow_are_reported_like_float_runs():
    text = problem(Q=[[1e200, 0], [0, 1]], K=[[1e200, 0], [0, 1]])
    for extra in ([], ["--exact"]):
        one_line_error(
            runner.invoke(_app(), ["compute", "-", *extra], input=text),
            "Q·Kᵀ overflows the float range at scores[1,1]: the inputs are too large",
        )


def test_exact_pictures_with_a_bias_work():
    text = problem(attn_bias=[[0, "-inf"], [1, 0]])
    for picture in (["--tokens-view"], ["--heatmap"], ["--heatmap", "--trace"]):
        result = runner.invoke(_app(), ["compute", "-", "--exact", *picture], input=text)
        assert (result.exit_code, result.stderr) == (0, ""), result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--exact", "--stream"], "--exact works out every stage as fractions, not in blocks: drop --exact or --stream"),
        (["--stream", "--tokens-view"], "--stream computes no 2×2 stage: drop --tokens-view or --stream"),
        (["--stream", "--heatmap"], "--stream computes no 2×2 stage: drop --heatmap or --stream"),
        (["--stream", "--stage", "weights"], "--stream computes no 2×2 stage: drop --stage weights or --stream"),
    ],
)  # fmt: skip
def test_what_the_streamed_path_cannot_honour_is_refused_from_the_cli(args, message):
    one_line_error(runner.invoke(_app(), ["compute", "-", *args], input=problem()), message)


def test_an_exact_input_too_big_is_refused_from_the_cli():
    rng = np.random.default_rng(0)
    text = json.dumps({k: rng.integers(-3, 4, size=(600, 8)).tolist() for k in "QKV"})
    message = one_line_error(runner.invoke(_app(), ["compute", "-", "--exact"], input=text))
    assert message.startswith("qkv: error: --exact is for problems of hand size")


@pytest.mark.parametrize(
    "mats, where",
    [
        ({"X": [[1, 1], [1, 0]], "W_Q": [[1, 0], [0, 1]], "W_K": [[1, 0], [0, 1]],
          "W_V": [[1e308, 1], [1e308, 1]]}, "the projection V overflows the float range at V[1,1]"),
        ({"W_O": [[1.5e308, 1], [1.5e308, 1]]}, "the output overflows the float range at output[1,1]"),
    ],
)  # fmt: skip
def test_streamed_overflow_of_v_or_w_o_is_reported_from_the_cli(monkeypatch, mats, where):
    import qkvcli.plan

    text = json.dumps({"Q": [[1, 0], [0, 1]], "K": [[1, 0], [0, 1]], "V": [[1, 2], [3, 4]]} | mats)
    if "X" in mats:
        text = json.dumps(mats)
    dense = one_line_error(runner.invoke(_app(), ["compute", "-", "-f", "csv"], input=text))
    streamed = one_line_error(runner.invoke(_app(), ["compute", "-", "--stream"], input=text))
    monkeypatch.setattr(qkvcli.plan, "LARGE", 0)  # long inputs stream on their own
    chosen = one_line_error(runner.invoke(_app(), ["compute", "-", "-f", "csv"], input=text))
    assert dense == streamed == chosen == f"qkv: error: {where}: the inputs are too large\n"


def test_damaged_npz_files_are_one_line(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, Q=np.eye(2), K=np.eye(2), V=np.ones((2, 1)))
    data = good.read_bytes()
    truncated, corrupt = tmp_path / "truncated.npz", tmp_path / "corrupt.npz"
    truncated.write_bytes(data[: len(data) // 2])
    damaged = bytearray(data)
    damaged[100:110] = b"x" * 10  # inside Q's data: its CRC no longer matches
    corrupt.write_bytes(bytes(damaged))
    one_line_error(
        runner.invoke(_app(), ["compute", str(truncated)]),
        f"{truncated}: not an .npz file numpy can read",
    )
    message = one_line_error(runner.invoke(_app(), ["compute", str(corrupt)]))
    assert message.startswith(f"qkv: error: {corrupt}: Q cannot be read: the archive is damaged (")


def test_a_long_double_beyond_the_float_range_is_placed(tmp_path):
    f = tmp_path / "ld.npz"
    np.savez(f, Q=np.array([[1, np.longdouble("1e4000")]]), K=np.eye(2), V=np.ones((2, 1)))
    one_line_error(
        runner.invoke(_app(), ["compute", str(f)]),
        f"{f}: Q row 1, column 2 is 1e+4000: too large for a float",
    )
    small = tmp_path / "f32.npz"
    np.savez(small, Q=np.eye(2, dtype=np.float32), K=np.eye(2, dtype=np.float16), V=np.ones((2, 1)))
    assert runner.invoke(_app(), ["compute", str(small), "-f", "json"]).exit_code == 0


def test_an_answer_cell_that_is_an_object_is_one_line():
    text = json.dumps({"scores": [[2, {"a": 1}, 4], [4, 16, 12], [4, 12, 10]]})
    assert (
        "scores[1,2]: an object is not an answer (write a number, or null for a blank)"
        in one_line_error(runner.invoke(_app(), ["check", WORKED, "-"], input=text))
    )
    text = json.dumps({"scores": [[2, [{"a": 1}], 4]]})
    one_line_error(runner.invoke(_app(), ["check", WORKED, "-"], input=text))


def test_exact_npz_holds_plain_floats(tmp_path):
    out = tmp_path / "exact.npz"
    result = runner.invoke(_app(), ["compute", WORKED, "--exact", "-f", "npz", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    with np.load(out, allow_pickle=False) as z:
        assert all(z[k].dtype == np.float64 for k in z.files if k != "meta")
        plain = runner.invoke(_app(), ["compute", WORKED, "-f", "json"]).stdout
        np.testing.assert_allclose(z["weights"], json.loads(plain)["weights"], rtol=1e-12)


def test_pictures_honour_output(tmp_path):
    out = tmp_path / "picture.txt"
    result = runner.invoke(
        _app(), ["compute", WORKED, "--heatmap", "--tokens-view", "-o", str(out)]
    )
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    drawn = runner.invoke(_app(), ["compute", WORKED, "--heatmap", "--tokens-view"]).stdout
    assert out.read_text(encoding="utf-8") == drawn
    assert "weights = softmax(scaled) per row" in drawn


def test_output_that_is_an_input_is_refused_and_the_input_kept(tmp_path):
    source = tmp_path / "p.json"
    text = Path(ROOT / WORKED).read_text(encoding="utf-8")
    source.write_text(text, encoding="utf-8")
    link = tmp_path / "link.json"
    link.symlink_to(source)
    hard = tmp_path / "hard.json"
    os.link(source, hard)
    spelled = str(tmp_path / "." / "p.json")
    for out in (str(source), str(link), str(hard), spelled):
        result = runner.invoke(_app(), ["compute", str(source), "-f", "json", "-o", out])
        one_line_error(
            result,
            f"--output {out} is the input file {source}: qkv never writes over its input; "
            "choose another file",
        )
    x = tmp_path / "X.csv"
    x.write_text("1,0\n0,1\n")
    result = runner.invoke(
        _app(), ["compute", "--q", str(x), "--k", str(x), "--v", str(x), "--svg", str(x)]
    )
    one_line_error(result)
    assert source.read_text(encoding="utf-8") == text and x.read_text() == "1,0\n0,1\n"
    result = runner.invoke(
        _app(),
        [
            "compute",
            str(source),
            "--heatmap",
            "-o",
            str(tmp_path / "a"),
            "--html",
            str(tmp_path / "a"),
        ],
    )
    one_line_error(result)
    assert sorted(os.listdir(tmp_path)) == ["X.csv", "hard.json", "link.json", "p.json"]


def test_output_writes_through_a_symlink(tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "made.csv")
    for out in (link, dangling):
        result = runner.invoke(_app(), ["compute", WORKED, "-f", "csv", "-o", str(out)])
        assert result.exit_code == 0, result.stderr
        assert out.is_symlink()
    assert target.read_text().startswith("1.8638742024430663,")
    assert (tmp_path / "made.csv").read_text() == target.read_text()


def test_output_to_a_device_or_a_fifo_is_written_in_place(tmp_path):
    import stat
    import threading

    result = runner.invoke(_app(), ["compute", WORKED, "-f", "csv", "-o", "/dev/null"])
    assert (result.exit_code, result.stderr) == (0, "")
    assert stat.S_ISCHR(
        os.stat("/dev/null").st_mode
    )  # not replaced by a file (as root it could be)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    result = runner.invoke(_app(), ["compute", WORKED, "-f", "csv", "-o", str(fifo)])
    reader.join(timeout=30)
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert got == [runner.invoke(_app(), ["compute", WORKED, "-f", "csv"]).stdout.encode()]
    assert sorted(os.listdir(tmp_path)) == ["fifo"]


def test_a_full_device_is_one_line():
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    for fmt in ("csv", "npz"):
        result = runner.invoke(_app(), ["compute", WORKED, "-f", fmt, "-o", "/dev/full"])
        one_line_error(result, "--output /dev/full: cannot write: No space left on device")


@pytest.mark.parametrize("name", ["two\nlines.json", "tab\there.json", "esc\x1b[2J.json"])
def test_a_file_name_with_control_characters_stays_on_one_line(tmp_path, name):
    f = tmp_path / name
    f.write_text('{"Q": [[1, 2], [3]]}')
    shown = str(f).replace("\n", "\\n").replace("\t", "\\t").replace("\x1b", "\\x1b")
    one_line_error(
        runner.invoke(_app(), ["compute", str(f)]),
        f"'{shown}': Q row 2 has 1 value but row 1 has 2",
    )
    one_line_error(runner.invoke(_app(), ["compute", str(f) + "x"]), f"'{shown}x': no such file")
    result = runner.invoke(_app(), ["compute", WORKED, "-o", str(tmp_path / "no" / name)])
    assert one_line_error(result).endswith("does not exist\n")


# ---------------------------------------------------------------- CSV headers and notes


def csv_run(tmp_path, text: str, *extra: str):
    f = tmp_path / "m.csv"
    f.write_text(text)
    args = ["compute", "--q", str(f), "--k", str(f), "--v", str(f), "-f", "csv", "--stage", "Q"]
    return runner.invoke(_app(), [*args, *extra]), f


def test_pandas_header_of_column_numbers_above_fractions_is_a_header_with_a_note(tmp_path):
    result, f = csv_run(tmp_path, "0,1\n0.5,0.25\n1.5,2\n")
    assert result.exit_code == 0
    assert result.stdout == "0.5,0.25\n1.5,2.0\n"
    note = (f"qkv: note: {f}: line 1 (0,1) is read as a header of column numbers, as pandas "
            "writes; to read it as data, add a row of labels above it\n")  # fmt: skip
    assert result.stderr == note * 1  # said once, though three options read the file
    result, f = csv_run(tmp_path, "a,b\n0,1\n0.5,0.25\n")  # a row of labels above it: data
    assert (result.stdout, result.stderr) == ("0.0,1.0\n0.5,0.25\n", "")


def test_column_numbers_above_whole_numbers_are_data(tmp_path):
    result, f = csv_run(tmp_path, "0,1\n5,2\n")
    assert result.stdout == "0.0,1.0\n5.0,2.0\n"
    assert result.stderr == (
        f"qkv: note: {f}: line 1 (0,1) is read as data; if it is a header of column numbers "
        "(as pandas writes), delete that line\n"
    )
    result, f = csv_run(tmp_path, "1,2\n3,4\n")  # pandas never writes 1,2,…: plain data, no note
    assert (result.stdout, result.stderr) == ("1.0,2.0\n3.0,4.0\n", "")


def test_an_empty_header_corner_makes_the_first_column_labels(tmp_path):
    f = tmp_path / "X.csv"
    f.write_text(",0,1\n0,0.5,0.25\n1,1.5,2\n")  # pandas' to_csv() with its index
    result = runner.invoke(_app(), ["compute", "--x", str(f), "--wq", str(f), "--wk", str(f), "--wv", str(f), "-f", "json"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["meta"]["tokens"] == ["0", "1"]
    assert result.stderr == (
        f"qkv: note: {f}: the first column is read as row labels (the header's first cell "
        "is empty, as pandas writes)\n"
    )


def test_a_typo_in_the_first_row_is_named_not_dropped_as_a_header(tmp_path):
    result, f = csv_run(tmp_path, "1,2x\n3,4\n")
    one_line_error(
        result, f"{f}: line 1, column 2: '2x' is not a number (a header row holds labels only)"
    )
    result, f = csv_run(tmp_path, "t1,1,2x\nt2,3,4\n")
    one_line_error(
        result, f"{f}: line 1, column 3: '2x' is not a number (a header row holds labels only)"
    )


def test_notes_go_out_only_when_the_run_succeeds_and_come_last(tmp_path, monkeypatch):
    import qkvcli.plan

    q = tmp_path / "Q.csv"
    q.write_text("0,1\n0.5,0.25\n1.5,2\n")  # read with a note
    bad = tmp_path / "V.csv"
    bad.write_text("1,2\n3\n")
    result = runner.invoke(_app(), ["compute", "--q", str(q), "--k", str(q), "--v", str(bad)])
    one_line_error(result, f"{bad}: line 2 has 1 value but line 1 has 2")
    monkeypatch.setattr(qkvcli.plan, "LARGE", 0)  # streamed on its own: a second note
    result = runner.invoke(_app(), ["compute", "--q", str(q), "--k", str(q), "--v", str(q)])
    assert result.exit_code == 0
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("qkv: note: ") for line in lines)
    assert "is read as a header of column numbers" in lines[0]
    assert "stages (scores, scaled, weights" in lines[1]


def test_a_python_warning_becomes_one_note_line(monkeypatch):
    import warnings

    module = sys.modules["qkvcli.cli.compute"]
    real = module._emit

    def warn_then_emit(*args, **kwargs):
        warnings.warn("overflow encountered in multiply\nsecond line", RuntimeWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "_emit", warn_then_emit)
    result = runner.invoke(_app(), ["compute", WORKED, "-f", "csv"])
    assert result.exit_code == 0
    assert result.stderr == (
        "qkv: note: RuntimeWarning (a bug in qkv: please report it): "
        "overflow encountered in multiply\\nsecond line\n"
    )


def test_cosine_similarity_of_very_long_rows_is_right():
    text = json.dumps({"Q": [[1e200, 1e200]], "K": [[1, 1], [1, -1]], "V": [[1], [2]],
                       "similarity": "cosine", "scale": "none"})  # fmt: skip
    for extra in ([], ["--stream"]):
        result = runner.invoke(_app(), ["compute", "-", "-f", "json", *extra], input=text)
        assert (result.exit_code, result.stderr) == (0, ""), result.stderr
        np.testing.assert_allclose(
            json.loads(result.stdout)["output"],
            [[1 / (1 + math.exp(-1)) + 2 * math.exp(-1) / (1 + math.exp(-1))]],
            rtol=1e-12,
        )


# ---------------------------------------------------------------- faults injected for real


def wait_for_temporary(folder: Path, p: subprocess.Popen, timeout: float = 60) -> list[str]:
    """The .qkv-*.tmp files in ``folder`` once the process has started writing one."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and p.poll() is None:
        found = [n for n in os.listdir(folder) if n.startswith(".qkv-") and n.endswith(".tmp")]
        if found and os.path.getsize(folder / found[0]) > 0:
            return found
        time.sleep(0.01)
    pytest.fail("qkv never started writing its temporary file")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_during_a_write_leaves_the_old_file_and_no_temporary(tmp_path, sig):
    source = big_problem(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "weights.csv"
    target.write_text("old\n")
    p = qkv_process("compute", source, "--stage", "weights", "-f", "csv", "-o", str(target))
    wait_for_temporary(out_dir, p)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + sig, err.decode()
    assert err == b""
    assert os.listdir(out_dir) == ["weights.csv"]
    assert target.read_text() == "old\n"


@pytest.mark.slow
def test_an_ignored_hangup_stays_ignored(tmp_path):
    target = tmp_path / "w.csv"
    source = big_problem(tmp_path)
    env = os.environ | {"NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "qkvcli", "compute", source, "--stage", "weights", "-f", "csv", "-o", str(target)]  # fmt: skip
    p = subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))  # fmt: skip
    wait_for_temporary(tmp_path, p)
    p.send_signal(signal.SIGHUP)  # as under nohup: the run goes on
    _, err = p.communicate(timeout=120)
    assert (p.returncode, err) == (0, b"")
    assert target.read_text().count("\n") == 1500


@pytest.mark.slow
def test_a_full_filesystem_keeps_the_old_file(tmp_path):
    """A real small filesystem (tmpfs, as root); skipped where one cannot be mounted."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True)  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    try:
        target = mount / "weights.csv"
        target.write_text("old\n")
        source = big_problem(tmp_path, n=200)  # 40,000 weights: far more than 64 KiB of text
        for fmt, name in (("csv", "weights.csv"), ("npz", "weights.csv")):
            p = qkv_process(
                "compute", source, "--stage", "weights", "-f", fmt, "-o", str(mount / name)
            )
            _, err = p.communicate(timeout=120)
            assert p.returncode == 2
            assert (
                err.decode()
                == f"qkv: error: --output {mount / name}: cannot write: No space left on device\n"
            )
            assert os.listdir(mount) == ["weights.csv"]
            assert target.read_text() == "old\n"
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.slow
def test_output_over_the_file_on_stdin_is_refused(tmp_path):
    source = tmp_path / "p.json"
    text = (ROOT / WORKED).read_text(encoding="utf-8")
    source.write_text(text, encoding="utf-8")
    with open(source, "rb") as stdin:
        p = qkv_process("compute", "-", "-o", str(source), stdin=stdin)
        out, err = p.communicate(timeout=60)
    assert (p.returncode, out) == (2, b"")
    assert err.decode() == (
        f"qkv: error: --output {source} is the file read on stdin: qkv never writes over its "
        "input; choose another file\n"
    )
    assert source.read_text(encoding="utf-8") == text


@pytest.mark.slow
def test_dev_stdout_is_written_in_place_and_keeps_an_append(tmp_path):
    out = tmp_path / "log.txt"
    out.write_text("kept\n")
    with open(out, "ab") as log:
        env = os.environ | {"NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-m", "qkvcli", "compute", WORKED, "-f", "csv", "-o", "/dev/stdout"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.PIPE)  # fmt: skip
    assert (done.returncode, done.stderr) == (0, b"")
    assert out.read_text().startswith("kept\n1.8638742024430663,")
    p = qkv_process("compute", WORKED, "-f", "csv", "-o", "/dev/stdout")
    piped, err = p.communicate(timeout=60)
    assert (p.returncode, err) == (0, b"")
    assert piped.decode() == out.read_text()[len("kept\n") :]


@pytest.mark.slow
def test_a_stdout_that_cannot_encode_the_table_is_one_line():
    env = os.environ | {"NO_COLOR": "1", "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([sys.executable, "-m", "qkvcli", "compute", WORKED], cwd=ROOT, env=env,
                          capture_output=True)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.decode("ascii") == (
        "qkv: error: cannot write the output: its encoding (ascii) has no '\\xd7'; "
        "use a UTF-8 locale or PYTHONIOENCODING=utf-8\n"
    )


@pytest.mark.slow
def test_a_file_name_that_is_not_utf8_is_one_line(tmp_path):
    name = os.fsencode(tmp_path) + b"/\xff\xfe\n.json"
    with open(name, "wb") as f:
        f.write(b'{"Q": [[1, 2], [3]]}')
    env = os.environ | {"NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable.encode(), b"-m", b"qkvcli", b"compute", name], cwd=ROOT,
                          env=env, capture_output=True)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.decode("utf-8") == (
        f"qkv: error: '{tmp_path}/\\xff\\xfe\\n.json': Q row 2 has 1 value but row 1 has 2\n"
    )
