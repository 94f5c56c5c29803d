"""Fuzzing the front door: random and mutated input ends in exit 0 with a right answer, or exit 2 and one line.

The mutation fuzz (`tests/fuzzing.py`) runs 10,000 seeded cases over
``compute``, ``check`` and ``explain`` in-process and a few hundred as real
processes; the hypothesis tests below fuzz each reader on its own. Inputs
that once failed are kept in tests/corpus/ and replayed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fuzzing
import numpy as np
import pytest
import reference
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from qkvcli.cli import app

pytestmark = pytest.mark.slow

runner = CliRunner()
CORPUS = Path(__file__).parent / "corpus"
WORKED = (Path(__file__).parent.parent / "samples" / "worked_example.json").read_text(
    encoding="utf-8"
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def invoke(args: list[str], stdin: str | bytes | None = None):
    result = runner.invoke(app, args, input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: {type(result.exception).__name__}: {result.exception}")
    assert result.exit_code in (0, 1, 2), (args, result.exit_code, result.stderr)
    if result.exit_code == 2:
        assert result.stdout == ""
        assert result.stderr.startswith("qkv: error: ")
        assert result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.stderr
    return result


def check_answer(doc_text: str, out: str) -> None:
    """An exit-0 run of a JSON input: recompute it with the slow reference."""
    result = json.loads(out)
    doc = json.loads(doc_text)
    keys = result["meta"]["keys"]
    if not set(keys) <= {"X", "W_Q", "W_K", "W_V", "Q", "K", "V", "tokens", "kv_tokens"}:
        return  # variants (masks, biases, W_O, memory …) are covered by their own tests
    if (
        result["meta"]["heads"] != 1
        or result["meta"]["batch"]
        or result["meta"]["layout"] != "rows"
    ):
        return
    if result["meta"]["weights_layout"] != "in-out" or result["meta"]["similarity"] != "dot":
        return
    variants = ("mask", "rope", "sliding_window", "attention_chunk_size", "qk_norm", "sinks",
                "attn_logit_softcapping", "alibi", "past_length")  # fmt: skip
    if any(result["meta"].get(v) for v in variants):
        return  # today's models' variants have their own tests against transformers
    mats = {}
    for name in "QKV":
        if name in keys:
            mats[name] = doc[keys[name]]
        else:
            mats[name] = reference.matmul(doc[keys["X"]], doc[keys[f"W_{name}"]])
    scale = result["meta"]["scale"] / result["meta"]["temperature"]
    ref = reference.attention(
        mats["Q"], mats["K"], mats["V"], scale=scale, normalize=result["meta"]["normalize"]
    )
    np.testing.assert_allclose(result["weights"], ref["weights"][0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(result["output"], ref["output"], rtol=1e-9, atol=1e-9)


@st.composite
def mutated(draw, text: str) -> str:
    chars = list(text)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(chars)))
        op = draw(st.sampled_from(["delete", "insert", "replace"]))
        c = draw(
            st.sampled_from(
                [
                    *list('[]{},:"0123456789.-eE abNnIfty\\\n'),
                    "NaN",
                    "Infinity",
                    "1e400",
                    "null",
                    "true",
                ]
            )
        )
        if op == "delete" and i < len(chars):
            del chars[i]
        elif op == "insert":
            chars.insert(i, c)
        elif i < len(chars):
            chars[i] = c
    return "".join(chars)


@FUZZ
@given(mutated(WORKED))
def test_mutated_json(text):
    result = invoke(["compute", "-", "-f", "json"], text)
    if result.exit_code == 0:
        check_answer(text, result.stdout)


numbers = st.one_of(
    st.integers(-5, 5),
    st.floats(-1e3, 1e3, allow_nan=False),
    st.sampled_from([1e308, -1e308, 5e-324]),
)
cells = st.one_of(numbers, st.none(), st.booleans(), st.text(max_size=3), st.just(float("nan")))
matrix = st.lists(st.lists(cells, min_size=0, max_size=4), min_size=0, max_size=4)
value = st.one_of(
    matrix,
    numbers,
    st.text(max_size=5),
    st.lists(matrix, max_size=2),
    st.dictionaries(st.text(max_size=3), numbers, max_size=2),
)
KEYS = ["X", "W_Q", "W_K", "W_V", "Q", "K", "V", "w_query", "tokens", "scale", "layout", "heads", "mask",
        "valid_lens", "attn_bias", "W_O", "b_Q", "kv_heads", "memory", "temperature", "similarity", "normalize"]  # fmt: skip


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), value, max_size=6))
def test_random_documents(doc):
    text = json.dumps(doc)
    result = invoke(["compute", "-", "-f", "json"], text)
    if result.exit_code == 0:
        check_answer(text, result.stdout)


square = st.integers(1, 4).flatmap(
    lambda n: st.lists(st.lists(st.integers(-3, 3), min_size=n, max_size=n), min_size=1, max_size=4)
)


@FUZZ
@given(square, square, square, square)
def test_random_shapes(x, wq, wk, wv):
    text = json.dumps({"X": x, "W_Q": wq, "W_K": wk, "W_V": wv})
    result = invoke(["compute", "-", "-f", "json"], text)
    if result.exit_code == 0:
        check_answer(text, result.stdout)


@FUZZ
@given(
    st.lists(
        st.lists(
            st.text(alphabet='0123456789.,;\t -eEnaif#x"', max_size=6), min_size=1, max_size=4
        ),
        min_size=0,
        max_size=4,
    ),
    st.sampled_from([",", ";", "\t", " "]),
)
def test_random_csv(rows, sep):
    text = "\n".join(sep.join(r) for r in rows)
    invoke(
        ["compute", "--q", "-", "--k", "samples/csv/W_Q.csv", "--v", "samples/csv/W_Q.csv"], text
    )


OPTIONS = ["--scale", "--layout", "--precision", "--stage", "--format"]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(OPTIONS), st.text(max_size=8)), max_size=3))
def test_random_option_values(pairs):
    args = ["compute", "samples/worked_example.json"]
    for opt, val in pairs:
        args += [opt, val]
    invoke(args)


@FUZZ
@given(st.binary(max_size=64))
def test_random_bytes(data):
    invoke(["compute", "-"], data)


def test_corpus_of_inputs_that_once_failed():
    cases = sorted(CORPUS.glob("*.json"))
    assert cases, "the corpus is empty"
    for case in cases:
        for extra in (["-f", "json"], [], ["--exact"], ["--stream", "-f", "csv"]):
            invoke(["compute", "-", *extra], case.read_bytes())
        invoke(["explain", "-", "weights[1,1]"], case.read_bytes())
        invoke(["check", "samples/worked_example.json", "-"], case.read_bytes())
    for case in sorted(CORPUS.glob("*.npz")):
        invoke(["compute", str(case)])


# ---------------------------------------------------------------- the mutation fuzz

CASES = int(os.environ.get("QKV_FUZZ_CASES", "10000"))
PROCESSES = int(os.environ.get("QKV_FUZZ_PROCESSES", "200"))
SEED = int(os.environ.get("QKV_FUZZ_SEED", "0"))


def test_mutation_fuzz_in_process(tmp_path):
    """10,000 mutated runs of compute, check and explain; plain runs also checked against the reference."""
    broken, codes = [], Counter()
    for n, case in enumerate(fuzzing.cases(SEED, CASES)):
        why = fuzzing.run_in_process(runner, app, case, tmp_path)
        result = fuzzing.LAST.result
        codes[result.exit_code] += 1
        if (
            why is None
            and case.args == ["compute", "-", "-f", "json"]
            and result.exit_code == 0
            and moderate(case.stdin)
        ):
            try:
                check_answer(case.stdin.decode("utf-8"), result.stdout)
            except AssertionError as e:
                why = f"a wrong answer: {str(e)[:200]}"
        if why:
            broken.append(f"case {n}: {why}\n    {case.show()}")
    assert not broken, f"{len(broken)} of {CASES} cases broke the promise:\n" + "\n".join(
        broken[:10]
    )
    # The cases reach past the readers: many runs succeed, many are refused, some checks fail.
    assert codes[0] > CASES // 10 and codes[2] > CASES // 5 and codes[1] > CASES // 100, codes


def moderate(stdin: bytes) -> bool:
    """Every number of a problem within ±1000: no cancellation that sums in another order can tell."""

    def ok(v) -> bool:
        if isinstance(v, dict):
            return all(ok(x) for x in v.values())
        if isinstance(v, list):
            return all(ok(x) for x in v)
        return not isinstance(v, (int, float)) or abs(v) <= 1000

    return ok(json.loads(stdin))


def run_process(case: fuzzing.Case, tmp: Path) -> str | None:
    """A case as a real process: its files on disk under awkward names, real stdin and stdout."""
    work = tmp / f"case{abs(hash(case.show())) % 10**9}"
    work.mkdir(exist_ok=True)
    args = [os.fsencode(a.replace("{tmp}", str(work))) for a in case.args]
    for name, data in case.files.items():
        (work / name).write_bytes(data)
    stdin = case.stdin
    if stdin is not None and b"-" in args and len(case.args) > 1 and case.args[1] == "-":
        name = os.fsencode(work) + b"/" + fuzzing.awkward_name(case)  # the input as a file
        with open(name, "wb") as f:
            f.write(stdin)
        args[args.index(b"-")] = name
        stdin = None
    env = os.environ | {"NO_COLOR": "1", "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    done = subprocess.run([os.fsencode(sys.executable), b"-m", b"qkvcli", *args], cwd=ROOT, env=env,
                          input=stdin or b"", capture_output=True, timeout=120)  # fmt: skip
    try:
        out, err = done.stdout.decode("utf-8"), done.stderr.decode("utf-8")
    except UnicodeDecodeError:
        return "output that is not UTF-8"
    left = [p.name for p in work.iterdir() if p.name.startswith(".qkv-")]
    if left:
        return f"temporary files left behind: {left}"
    return fuzzing.broken_promise(done.returncode, out, err)


def test_mutation_fuzz_as_real_processes(tmp_path):
    """A few hundred cases as real processes (two at a time per core): names, encodings, exit codes."""
    chosen = list(fuzzing.cases(SEED + 1, PROCESSES))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda c: run_process(c, tmp_path), chosen))
    broken = [f"{why}\n    {case.show()}" for case, why in zip(chosen, results) if why]
    assert not broken, f"{len(broken)} of {PROCESSES} processes broke the promise:\n" + "\n".join(
        broken[:10]
    )
