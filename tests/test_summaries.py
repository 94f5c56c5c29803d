"""Summarised tables and pictures compute only the rows they show, and say what they left out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from qkvcli import attention
from qkvcli.cli import app
from qkvcli.options import Options
from qkvcli.plan import evaluate, plan
from qkvcli.problem import Problem, resolve
from qkvcli.render.text import summary_rows

runner = CliRunner()


def problem(n, d=4, seed=0, **mats):
    rng = np.random.default_rng(seed)
    return Problem({"X": rng.standard_normal((n, d)), "W_Q": rng.standard_normal((d, 4)),
                    "W_K": rng.standard_normal((d, 4)), "W_V": rng.standard_normal((d, 4))} | mats)  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [
        Options(),
        Options(mask="causal", heads=2),
        Options(heads=2, alibi=True, mask="causal"),
        Options(heads=2, rope="half", sliding_window=5, mask="causal"),
        Options(normalize="sigmoid", attn_logit_softcapping=2.0),
    ],
)
def test_the_rows_a_summary_shows_equal_the_dense_run(options):
    r = resolve(problem(45), options)
    rows = summary_rows(r.n)
    how = plan(r, None, rows=rows)
    assert how.stream and how.rows == tuple(rows)
    part, full = evaluate(r, how), attention.run(r)
    for name in ("scores", "scaled", "weights"):
        stage = part.stages[name]
        assert stage.shape == full.stages[name].shape  # every row counted
        np.testing.assert_allclose(stage.array, full[name][..., rows, :], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(part["output"], full["output"], rtol=1e-12, atol=1e-12)
    assert part.meta["shapes"] == full.meta["shapes"]


def test_an_error_in_a_row_not_shown_is_still_reported():
    lens = np.full(45, 3.0)
    lens[30] = 0  # query row 31 may attend no key
    r = resolve(problem(45, valid_lens=lens), Options())
    with pytest.raises(Exception, match="every key is masked for query row 31"):
        evaluate(r, plan(r, None, rows=summary_rows(r.n)))


def write(tmp_path, n):
    rng = np.random.default_rng(n)
    path = tmp_path / "p.json"
    path.write_text(json.dumps({k: rng.integers(-2, 3, (n, 4)).tolist() for k in "QKV"}))
    return str(path)


def test_a_big_heatmap_is_summarised_and_says_so(tmp_path):
    path = write(tmp_path, 40)
    out = runner.invoke(app, ["compute", path, "--heatmap"]).stdout
    assert "40×40: showing 16 of 40 rows and " in out and "(--full shows all)" in out
    assert "q8 " in out and "q33 " in out and "q9 " not in out and "\n⋮" in out
    full = runner.invoke(app, ["compute", path, "--heatmap", "--full"]).stdout
    assert "showing" not in full
    assert all(f"q{i} " in full for i in range(1, 41))


def test_a_long_token_view_shows_the_first_and_last_queries(tmp_path):
    path = write(tmp_path, 30)
    out = runner.invoke(app, ["compute", path, "--tokens-view"]).stdout
    assert "showing 16 of 30 queries (--full shows all)" in out
    assert "\nq8 " in out and "\nq23 " in out and "\nq9 " not in out
    full = runner.invoke(app, ["compute", path, "--tokens-view", "--full"]).stdout
    assert "showing" not in full and "\nq9 " in full


def test_the_default_table_of_a_long_input_shows_its_weights(tmp_path):
    path = tmp_path / "long.npz"
    rng = np.random.default_rng(1)
    np.savez(path, **{k: rng.standard_normal((2100, 8)) for k in "QKV"})
    result = runner.invoke(app, ["compute", str(path)])
    assert result.exit_code == 0
    assert "weights = softmax(scaled) per row (2100×2100)" in result.stdout
    assert "2100×2100: showing 16 of 2100 rows" in result.stdout
    assert "left out" not in result.stderr


@pytest.mark.parametrize("extra", [{}, {"heads": 2}, {"batch": True, "heads": 2}])
def test_a_big_stage_is_written_to_npz_a_block_of_rows_at_a_time(tmp_path, monkeypatch, extra):
    from qkvcli import plan as plan_module
    from qkvcli.render import machine

    monkeypatch.setattr(plan_module, "LARGE", 1000)  # every n×n stage counts as big
    monkeypatch.setattr(machine, "ROW_BLOCK", 200)  # blocks of a few rows
    rng = np.random.default_rng(5)
    lead = (2,) if extra.get("batch") else ()
    mats = {k: rng.standard_normal((*lead, 37, 4)) for k in "QKV"}
    src = tmp_path / "in.npz"
    np.savez(src, **mats, **({"heads": extra["heads"]} if "heads" in extra else {}))
    out = tmp_path / "out.npz"
    args = ["compute", str(src), "--stage", "weights", "--stage", "masked", "--mask", "causal"]
    result = runner.invoke(app, [*args, "-f", "npz", "-o", str(out)])
    assert result.exit_code == 0, result.output
    z = np.load(out, allow_pickle=False)
    assert z.files == ["masked", "weights", "row_logsumexp", "meta"]
    r = resolve(Problem(mats), Options(heads=extra.get("heads"), mask="causal"))
    full = attention.run(r)
    for name in ("masked", "weights"):
        assert z[name].shape == full[name].shape
        np.testing.assert_allclose(z[name], full[name], rtol=1e-12, atol=1e-12)
    assert json.loads(str(z["meta"]))["stages"] == ["masked", "weights"]


def test_rows_written_by_blocks_are_counted_for_a_progress_bar(tmp_path, monkeypatch):
    import io
    import sys
    from types import SimpleNamespace

    from qkvcli import plan as plan_module
    from qkvcli.render import machine
    from qkvcli.render.progress import writing

    monkeypatch.setattr(plan_module, "LARGE", 1000)
    monkeypatch.setattr(machine, "ROW_BLOCK", 200)
    r = resolve(problem(37), Options(mask="causal"))
    t = evaluate(r, plan(r, ["masked", "weights"], by_rows=True))
    seen = []
    machine.to_npz(t, ["masked", "weights"], str(tmp_path / "o.npz"), lambda *a: seen.append(a))
    assert len(seen) > 4 and seen == sorted(seen) and seen[-1] == (2 * 37, 2 * 37)

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    meta = {"batch": None, "heads": 1, "n_queries": 40000, "n_keys": 40000, "d_k": 64, "d_v": 64}
    with writing(SimpleNamespace(meta=meta, later=("weights",))) as tick:
        tick(10, 40000)
    assert "attention, written a block of rows at a time" in sys.stderr.getvalue()


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="needs FIFOs")
def test_npz_into_a_pipe_finds_every_error_before_its_first_byte(tmp_path, monkeypatch):
    """A file is replaced only when whole; a pipe cannot take bytes back, so the streamed pass
    finds an overflow in a late block of rows before anything is written to it."""
    import io
    import os
    import threading

    from qkvcli import plan as plan_module
    from qkvcli.render import machine

    monkeypatch.setattr(plan_module, "LARGE", 1000)
    monkeypatch.setattr(machine, "ROW_BLOCK", 200)
    rng = np.random.default_rng(3)
    mats = {"Q": rng.standard_normal((40, 3)), "K": rng.standard_normal((40, 3)) * 1e10}
    mats["V"] = rng.standard_normal((40, 2))

    def through_pipe(mats):
        src, fifo = tmp_path / "in.npz", tmp_path / "pipe"
        np.savez(src, **mats)
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo)
        got = bytearray()

        def read():
            with open(fifo, "rb") as fh:
                got.extend(fh.read())

        reader = threading.Thread(target=read)
        reader.start()
        args = ["compute", str(src), "--stage", "weights", "-f", "npz", "-o", str(fifo)]
        result = runner.invoke(app, args)
        reader.join(2)
        if reader.is_alive():  # qkv never opened the pipe: let the reader see its end
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)
        assert not reader.is_alive()
        return result, bytes(got)

    result, got = through_pipe(mats)
    assert result.exit_code == 0, result.output
    z = np.load(io.BytesIO(got), allow_pickle=False)
    r = resolve(Problem(mats), Options())
    np.testing.assert_allclose(z["weights"], attention.run(r)["weights"], rtol=1e-12)
    assert z.files == ["weights", "row_logsumexp", "meta"]
    mats["Q"][33] = 1e300  # overflows in a late block of rows
    result, got = through_pipe(mats)
    assert result.exit_code == 2
    assert "overflows the float range" in result.stderr and "[34," in result.stderr
    assert got == b""
