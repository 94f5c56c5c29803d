"""Failure modes as deliberate as the happy path: pipes, signals, full disks, extremes, limits."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import qkvcli.load.files
from qkvcli.attention import run
from qkvcli.errors import ComputeError
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
def test_a_closed_pipe_ends_quietly(tmp_path):
    p = qkv_process("compute", big_problem(tmp_path), "--stage", "weights")
    p.stdout.read(200)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141
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


@settings(max_examples=200, deadline=None)
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
