"""Fuzzing the front door: random and mutated input ends in exit 0 with a right answer, or exit 2 and one line.

Inputs that once failed are kept in tests/corpus/ and replayed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import reference
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
    assert result.exit_code in (0, 2), (args, result.exit_code, result.stderr)
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
    if any(k in keys for k in ("mask", "attn_bias", "valid_lens", "key_padding_mask", "W_O")):
        return  # variants are covered by their own tests
    if (
        result["meta"]["heads"] != 1
        or result["meta"]["batch"]
        or result["meta"]["layout"] != "rows"
    ):
        return
    if result["meta"]["weights_layout"] != "in-out" or result["meta"]["similarity"] != "dot":
        return
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
        invoke(["compute", "-", "-f", "json"], case.read_bytes())
