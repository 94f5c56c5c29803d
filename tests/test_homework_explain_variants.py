"""explain under today's variants: hand-checked lines, every cell of every stage ending with
its value, and every printed line redone with a calculator from the numbers on it.

The calculator is `redo`: each `a = b` on a line whose left side is plain arithmetic
(numbers, · × / + −, powers, √, tanh, e^{…}) and whose right side is a number must
agree to the decimals printed on the right (`≈` alike); two arithmetic sides must agree to the
rounding of the numbers printed in them.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from planted_models import random_model_case
from typer.testing import CliRunner

from qkvcli.attention import run
from qkvcli.cli import app
from qkvcli.explain import explain
from qkvcli.load import load, parse_doc
from qkvcli.options import Options
from qkvcli.problem import resolve

SAMPLES = ["rope", "rope_interleaved", "decode", "decode_rope", "sinks", "softcap", "alibi_heads",
           "qk_norm", "qk_norm_olmo2", "sliding_window", "chunked"]  # fmt: skip


CLASSIC = ["worked_example", "homework/two_heads", "causal_two_heads", "biases", "sigmoid",
           "cosine", "dk_ne_dv", "grouped_query", "padding", "explicit_mask", "alibi",
           "multihead", "cross_attention", "batch"]  # fmt: skip


def sample(name: str):
    p, settings = load(f"samples/{name}.json")
    return p, Options().merged(settings)


# ---------------------------------------------------------------- the calculator

_WORDS = re.compile(r" \(([^()]*[A-Za-z]{3,}[^()]*)\)$")  # a closing remark in words
_NUMBER = re.compile(r"^\(?−?\d+(\.\d+)?\)?$")
_PURE = re.compile(r"^[\d.\s()+\-*/^²√,]*$|^.*(tanh|exp|sqrt).*$")


def _python(expr: str) -> str | None:
    """A printed arithmetic expression as Python, or None when it holds names."""
    e = re.sub(r"(?:attn_bias\[\d+,\d+\]|ALiBi) \(", "(", expr.strip())
    e = e.replace("−", "-").replace("·", "*").replace("×", "*").replace("^", "**")
    e = re.sub(r"e\*\*\{([^{}]*)\}", r"exp(\1)", e)
    e = e.replace("²", "**2").replace("√(", "sqrt(")
    e = re.sub(r"√(\d+)", r"sqrt(\1)", e)
    if re.search(r"[A-Za-z_\[\]∞]", re.sub(r"\b(exp|sqrt|tanh)\(", "(", e)):
        return None
    return e if re.search(r"[-+*/]|exp|sqrt|tanh", e.lstrip("-(")) else None


def _value(expr: str) -> float:
    return eval(expr, {"exp": math.exp, "sqrt": math.sqrt, "tanh": math.tanh})


def _decimals(number: str) -> int:
    n = number.strip("()")
    return len(n.split(".")[1]) if "." in n else 0


def redo(lines: list[str]) -> int:
    """Check every `arithmetic = number` and `arithmetic = arithmetic` step; return how many."""
    checked = 0
    joined: list[str] = []
    for line in lines:
        if line.startswith("  = ") and joined:
            joined[-1] += " " + line.strip()
        else:
            joined.append(line)
    for line in joined:
        parts = [_WORDS.sub("", p.strip()) for p in re.split(" = | ≈ ", line)]
        for left, right in itertools.pairwise(parts):
            lp = _python(left)
            if lp is None:
                continue
            got = _value(lp)
            if _NUMBER.match(right):
                want = float(right.strip("()").replace("−", "-"))
                unit = 0.5 * 10.0 ** -_decimals(right)
                assert abs(got - want) <= unit * (1 + 1e-9) + 1e-12, (line, left, got, right)
                checked += 1
            else:
                rp = _python(right)
                if rp is not None:
                    other = _value(rp)
                    assert abs(got - other) <= 2e-3 * max(1.0, abs(got)), (line, left, right)
                    checked += 1
    return checked


def test_the_calculator_catches_a_line_that_does_not_redo():
    assert redo(["scaled[1,2] = scores[1,2] × 1/√3 = 4 × 0.57735 = 2.3094"]) == 1
    with pytest.raises(AssertionError):
        redo(["scaled[1,2] = scores[1,2] × 1/√3 = 4 × 0.5774 = 2.3094"])  # 2.3096
    with pytest.raises(AssertionError):
        redo(["  rms = √(2.5 + 0.000001) = 1.5812"])
    assert redo(["  = 0.96464 / (0.96464 + 1) = 0.96464 / 1.96464", "  = 0.4910"]) == 2


# ---------------------------------------------------------------- every cell, every line


def cells(p, o):
    """Every (stage, row, column, head) of a problem, 1-based, and its value."""
    r = resolve(p, o)
    t = run(r)
    for name, st in t.stages.items():
        a = np.asarray(st.array, dtype=float)
        if r.batched:
            a = a[0]
        heads = a.shape[0] if st.per_head and r.multihead else 1
        for h in range(heads):
            grid = a[h] if st.per_head and r.multihead else a
            for (i, j), value in np.ndenumerate(grid):
                yield name, i + 1, j + 1, (h + 1 if st.per_head and r.multihead else None), value


def _number(lines: list[str]) -> float:
    """The value the explanation ends with (an output that is a concat cell: the line before)."""
    for line in lines[::-1]:
        last = re.split(r"= |≈ ", line)[-1].strip().split(" ")[0].replace("−", "-").rstrip(":")
        if last == "-∞":
            return -math.inf
        if re.fullmatch(r"-?\d+(\.\d+)?", last):
            return float(last)
    raise AssertionError(lines)


def check_all(p, o) -> int:
    checked = 0
    for name, i, j, head, value in cells(p, o):
        lines = explain(p, o, f"{name}[{i},{j}]", head=head)
        assert lines[0].startswith(f"{name}[{i},{j}]")
        end = lines[-1]
        got = 0.0 if "gets no weight" in end else _number(lines)
        if math.isinf(value):
            assert got == value, (name, i, j, lines)
        else:
            assert got == pytest.approx(value, abs=5e-5), (name, i, j, head, lines)
        checked += redo(lines)
    return checked


@pytest.mark.parametrize("name", SAMPLES)
def test_every_cell_of_every_sample_ends_with_its_value_and_redoes(name):
    assert check_all(*sample(name)) > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", [*CLASSIC, "alibi_heads", "sinks", "sliding_window", "decode"])
@pytest.mark.parametrize("exact", [False, True])
def test_every_line_of_the_classic_samples_redoes_too(name, exact):
    p, o = sample(name)
    if exact and o.similarity == "cosine":
        pytest.skip("exact arithmetic is for dot products")
    assert check_all(p, o.merged({"exact": exact or None})) > 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", range(8))
def test_every_cell_of_random_variant_problems(kind):
    kinds = [{"rope", "causal"}, {"rope-interleaved", "partial", "qk-norm"}, {"gemma", "sinks"},
             {"softcap", "alibi", "causal"}, {"window", "rope"}, {"chunk", "causal", "sinks"},
             {"decode", "rope", "qk-norm"}, {"decode", "alibi", "window"}]  # fmt: skip
    for seed in range(2):
        c = random_model_case(np.random.default_rng(300 + 10 * kind + seed), kinds[kind],
                              **({"d_k": 8} if "partial" in kinds[kind] else {}))  # fmt: skip
        p, settings = parse_doc(c.document(), "p.json")
        assert check_all(p, Options().merged(settings)) > 0


# ---------------------------------------------------------------- lines checked by hand


def test_a_rotated_cell_written_out():
    """rope.json: q₂ = (2, 2, 2, 2) at position 1; feature 1 pairs with 3 (half), θ = 1 rad."""
    lines = explain(*sample("rope"), "Q_rotated[2,1]")
    assert lines[1:] == [
        "Q_rotated[2,1]: column 1 is feature 1, which turns with feature 3 (column 3) by the "
        "angle of pair 1 of 2 (half: feature i turns with feature i + d/2), at position 1",
        "  θ = position × 10000^(−2·0/4) = 1 × 1 = 1",
        f"  cos θ = {math.cos(1):.4f}, sin θ = {math.sin(1):.5f}",
        "  Q_rotated[2,1] = Q[2,1]·cos θ − Q[2,3]·sin θ = 2·0.5403 − 2·0.84147 = −0.6023",
    ]
    assert 2 * math.cos(1) - 2 * math.sin(1) == pytest.approx(-0.6023, abs=5e-5)
    second = explain(*sample("rope"), "Q_rotated[3,4]")
    assert second[-3:] == [
        "  θ = position × 10000^(−2·1/4) = 2 × 0.01 = 0.02",
        f"  cos θ = {math.cos(0.02):.4f}, sin θ = 0.02",
        "  Q_rotated[3,4] = Q[3,4]·cos θ + Q[3,2]·sin θ = 1·0.9998 + 1·0.02 = 1.0198",
    ]


def test_interleaved_pairs_and_features_not_rotated():
    lines = explain(*sample("rope_interleaved"), "Q_rotated[2,2]")
    assert "turns with feature 1 (column 1)" in lines[1] and "at position 6" in lines[1]
    assert lines[-1].endswith("= 2·0.96017 + 2·(−0.27942) = 1.3615")
    assert explain(*sample("rope_interleaved"), "Q_rotated[2,3]")[-1] == (
        "Q_rotated[2,3] = Q[2,3] = 2: feature 3 is not rotated (partial_rotary_factor 0.5 "
        "rotates the first 2 of the 4 features of each head)"
    )


def test_position_zero_is_not_turned():
    assert explain(*sample("rope"), "K_rotated[1,2]")[-1] == (
        "  θ = 0 at position 0: cos θ = 1, sin θ = 0, so K_rotated[1,2] = K[1,2] = 1"
    )


def test_a_normed_cell_written_out():
    """qk_norm.json head 2 of k₃ = (1, 2): mean square 2.5, rms √2.5, × k_norm[1] = 2."""
    lines = explain(*sample("qk_norm"), "K_normed[3,3]")
    assert lines[1:] == [
        "K_normed[3,3] = K[3,3] / rms · k_norm[1], rms = √(mean(K[3,3…4]²) + eps) "
        "(per head: head 2 is columns 3–4)",
        "  mean(K[3,3…4]²) = (1² + 2²) / 2 = 2.5",
        "  rms = √(2.5 + 0.000001) = 1.581139",
        "  K_normed[3,3] = 1 / 1.581139 × 2 = 1.2649",
    ]
    over_all = explain(*sample("qk_norm_olmo2"), "Q_normed[3,3]")
    assert "(over the whole row)" in over_all[1]
    assert over_all[2] == "  mean(Q[3,1…4]²) = (2² + 1² + 3² + 1²) / 4 = 3.75"


def test_gemma_one_plus_w():
    p, o = sample("qk_norm")
    o = o.merged({"rms_norm_unit_offset": True})
    lines = explain(p, o, "K_normed[3,3]")
    assert "· (1 + k_norm[1])" in lines[1]
    assert lines[-1] == "  K_normed[3,3] = 1 / 1.581139 × (1 + 2) = 1.8974"


def test_a_capped_score_written_out():
    assert explain(*sample("softcap"), "capped[2,1]")[-1] == (
        "capped[2,1] = 1·tanh(scaled[2,1] / 1) = tanh(2) = 1 × 0.96403 = 0.9640"
    )
    p, o = sample("softcap")
    lines = explain(p, o.merged({"attn_logit_softcapping": 3.0}), "capped[2,1]")
    # 3·tanh(2/3) = 3 × 0.582783 = 1.74835
    assert (
        lines[-1] == "capped[2,1] = 3·tanh(scaled[2,1] / 3) = 3·tanh(2 / 3) = 3 × 0.58278 = 1.7483"
    )


def test_alibi_term_of_a_logit():
    lines = explain(*sample("alibi_heads"), "scaled[3,1]", head=1)
    assert lines[2] == (
        "ALiBi of head 1: m₁ = 0.0625 (the slopes of 3 heads: 0.0625, 0.00390625, 0.25); "
        "m₁·(j − i) = 0.0625·(1 − 3) = 0.0625·(−2) = −0.125"
    )
    assert lines[3] == "scaled[3,1] = scores[3,1] × 1/√2 = 1 × 0.7071 + ALiBi (−0.125) = 0.5821"


def test_a_sink_s_share_of_a_row():
    lines = explain(*sample("sinks"), "weights[1,1]", head=1)
    assert "where m = 0.5, the sink, larger than every logit of row 1" in lines[4]
    assert lines[5] == "  (row 1 of weights sums to less than 1: 0.3775 + 0 + 0 + 0 = 0.3775)"
    assert lines[6] == (
        "  the sink takes e^{0} / 1.606531 = 1 / 1.606531 = 0.6225 of the row, a weight no "
        "value gets"
    )
    assert lines[-1] == "  = 0.3775"


def test_why_a_window_or_a_chunk_blocks_or_keeps():
    lines = explain(*sample("sliding_window"), "masked[5,2]")
    assert lines[-2:] == [
        "  sliding window 3: query 5 sees keys 3…5 (i − 3 < j ≤ i); key 2 is outside, blocked",
        "masked[5,2] = −∞ (the mask blocks key 2 for query 5)",
    ]
    kept = explain(*sample("chunked"), "masked[5,4]")
    assert kept[-3:] == [
        "  causal: query 5 sees keys 1…5; key 4 is among them, kept",
        "  chunks of 3: query 5 is in chunk 2 (keys 4…6, ⌊i/3⌋ = ⌊j/3⌋), key 4 in chunk 2: the "
        "same, kept",
        "masked[5,4] = scaled[5,4] = 2 (query 5 may attend key 4)",
    ]
    blocked = explain(*sample("chunked"), "masked[4,3]")
    assert "key 3 in chunk 1: another, blocked" in blocked[-2]


def test_cache_rows_in_a_decode_step():
    p, o = sample("decode_rope")
    head = explain(p, o, "masked[1,2]")
    assert head[0] == (
        "masked[1,2]: rows and columns count from 1; row = query 1 (down, new: token 4 of the "
        "sequence), column = key 2 (c2, cached: token 2 of the sequence)."
    )
    assert head[-2] == (
        "  causal: query 1 (key 4 of the sequence) sees keys 1…4, after the 3 cached; key 2 is "
        "among them, kept"
    )
    assert explain(p, o, "K[2,1]")[-1] == (
        "K[2,1] = past_key[2,1] = 2.1612 (row 2 is c2, a cached token: given in past_key)"
    )
    assert explain(p, o, "K_rotated[3,1]")[-1].endswith(
        "(row 3 is c3, a cached key: it was rotated at position 2 when it was cached)"
    )
    new = explain(p, o, "K_rotated[4,3]")
    assert "at position 3" in new[1] and new[2] == "  θ = position × 10000^(−2·0/4) = 3 × 1 = 3"
    assert (
        explain(p, o, "K[4,3]")[-1] == "K[4,3] = x₁ · (column 3 of W_K) = 2·1 + 0·0 + 0·0 + 1·0 = 2"
    )


def test_the_cli_explains_and_checks_every_variant():
    runner = CliRunner()
    for name in SAMPLES:
        res = runner.invoke(app, ["explain", f"samples/{name}.json", "weights[1,1]"]
                            + (["--head", "1"] if name in ("sinks", "alibi_heads", "qk_norm",
                                                           "qk_norm_olmo2") else []))  # fmt: skip
        assert res.exit_code == 0, (name, res.output)
    res = runner.invoke(app, ["check", "samples/rope.json",
                              "samples/homework/variants/rope_pairing.json"])  # fmt: skip
    assert res.exit_code == 1
    assert "RoPE's pairs taken the other way" in res.output
