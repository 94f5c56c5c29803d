"""check: rounding-aware marking, follow-through, and a diagnosis for every planted mistake.

The students' wrong answers are made here with plain numpy, independently of
qkvcli's pipeline and of its mistake variants.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkvcli.check import Sheet, agrees, grade, parse_answers, written
from qkvcli.errors import InputError
from qkvcli.options import Options
from qkvcli.problem import Problem

# ---------------------------------------------------------------- the marking rule


@pytest.mark.parametrize(
    "text, true, right",
    [
        ("0.43", 0.431937, True),  # rounded
        ("0.44", 0.431937, True),  # one unit of slack
        ("0.42", 0.431937, True),
        ("0.45", 0.431937, False),  # two units off
        ("0.4319", 0.431937, True),
        ("0.4320", 0.431937, True),
        ("0.4317", 0.431937, False),
        ("16", 16.0, True),
        ("17", 16.0, False),  # a whole number has no slack
        ("16.0", 16.0, True),
        ("16.1", 16.0, False),  # the true value has no more decimals: no slack
        ("2", 1.1547, False),  # whole number, no slack
        ("1", 1.1547, True),
        ("-inf", -math.inf, True),
        ("0", -math.inf, False),
        ("-inf", 0.0, False),
        ("1e-3", 0.001, True),
    ],
)
def test_rounding_aware_marking(text, true, right):
    assert agrees(written(text), true) is right


def test_tolerance_overrides_rounding():
    assert agrees(written("0.45"), 0.431937, tolerance=0.02)
    assert not agrees(written("0.44"), 0.431937, tolerance=0.005)


def test_answers_keep_their_decimals():
    s = parse_answers('{"weights": [[0.50, 0.5], [1, null]], "_name": "Ann"}', "a.json")
    cells = s.stages["weights"]
    assert [c.decimals for c in cells[0]] == [2, 1]
    assert cells[1][1] is None


def test_unknown_stage_is_an_error():
    with pytest.raises(InputError, match=r"a\.json: unknown stage 'attention'"):
        parse_answers('{"attention": [[1]]}', "a.json")


# ---------------------------------------------------------------- independent attention

PER_HEAD = ("scores", "scaled", "masked", "weights", "head_outputs")


def softmax(x, axis):
    x = np.where(np.isneginf(x), -np.inf, x)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def attend(X, W, heads=1, allowed=None, bug=None):
    """Every stage, with one planted mistake. ``W`` = (W_Q, W_K, W_V); allowed[i, j] True = may attend."""
    X = np.asarray(X, float)
    Wq, Wk, Wv = (np.asarray(w, float) for w in W)
    if bug == "weights-layout":
        Wq, Wk, Wv = Wq.T, Wk.T, Wv.T
    Q, K, V = X @ Wq, X @ Wk, X @ Wv
    d = Q.shape[1] // heads
    dv = V.shape[1] // heads
    if bug == "mask-forgotten":
        allowed = None
    if bug == "mask-polarity":
        allowed = ~allowed
    if bug == "causal+1":
        allowed = np.tri(len(X), len(X), 1, dtype=bool)
    out = {"Q": Q, "K": K, "V": V}
    per = {name: [] for name in PER_HEAD}
    for h in range(heads):
        q, k = Q[:, h * d : (h + 1) * d], K[:, h * d : (h + 1) * d]
        v = V[:, h * dv : (h + 1) * dv]
        scores = {"QK": q @ k, "KQt": k @ q.T}.get(bug, q @ k.T)
        factor = {
            "no-scaling": 1.0,
            "divided-by-dk": 1 / d,
            "sqrt-d-model": 1 / math.sqrt(X.shape[1]),
        }
        scaled = scores * factor.get(bug, 1 / math.sqrt(d))
        masked = scaled if allowed is None else np.where(allowed, scaled, -np.inf)
        logits = np.round(masked, 1) if bug == "round1" else masked
        if bug == "no-softmax":
            weights = np.where(np.isneginf(logits), 0.0, logits)
        else:
            weights = softmax(logits, 0 if bug == "softmax-columns" else 1)
        head = (weights.T if bug == "weights-transposed" else weights) @ v
        for name, val in zip(PER_HEAD, (scores, scaled, masked, weights, head)):
            per[name].append(val)
    for name in PER_HEAD:
        out[name] = np.array(per[name]) if heads > 1 else per[name][0]
    out["concat"] = np.concatenate(per["head_outputs"], axis=1)
    out["output"] = out["concat"]
    return out


def text(v):
    return "-inf" if np.isneginf(v) else f"{v:.4f}"


def sheet(stages, names):
    """An answer sheet with every cell written to 4 decimals."""
    doc = {name: np.vectorize(text, otypes=[object])(stages[name]).tolist() for name in names}
    return Sheet("student.json", {k: _written(v) for k, v in doc.items()})


def _written(x):
    return [_written(v) for v in x] if isinstance(x, list) else written(x)


RNG = np.random.default_rng(11)
SQUARE = dict(
    X=[[1, 2, 0], [0, 1, 2], [2, 1, 1]],
    W_Q=[[1, 0, 1], [1, 1, 0], [0, 1, 1]],
    W_K=[[0, 1, 0], [1, 1, 0], [1, 0, 1]],
    W_V=[[1, 0, 2], [0, 2, 1], [1, 1, 0]],
)
WIDE = dict(  # d_model 4, d_k 3: √d_model differs from √d_k
    X=[[1, 0, 1, 0], [0, 2, 0, 1], [1, 1, 0, 2]],
    W_Q=[[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 1]],
    W_K=[[0, 0, 1], [1, 1, 0], [0, 1, 0], [1, 1, 0]],
    W_V=[[0, 2, 0], [0, 3, 0], [1, 0, 3], [1, 1, 0]],
)
TWO_HEADS = dict(  # d_model 6, two heads of d_k 3
    X=[[1, 0, 1, 0, 2, 0], [0, 1, 0, 1, 1, 2], [2, 1, 0, 0, 1, 1]],
    W_Q=RNG.integers(0, 2, (6, 6)).tolist(),
    W_K=RNG.integers(0, 2, (6, 6)).tolist(),
    W_V=RNG.integers(0, 3, (6, 6)).tolist(),
)
MASK = [[1, 0, 1], [0, 1, 1], [1, 1, 0]]


def problem(mats, heads=1, mask=None, causal=False):
    m = {k: np.array(v, dtype=float) for k, v in mats.items()}
    if mask is not None:
        m["mask"] = np.array(mask, dtype=float)
    p = Problem(m, origin="problem.json", mask_kind="causal" if causal else None)
    return p, Options(heads=heads)


def plant(mats, heads, bug, causal=False, mask=None):
    W = (mats["W_Q"], mats["W_K"], mats["W_V"])
    allowed = None
    if causal:
        allowed = np.tri(3, 3, dtype=bool)
    if mask is not None:
        allowed = np.array(mask, dtype=bool)
    return attend(mats["X"], W, heads, allowed, bug), problem(mats, heads, mask, causal)


CASES = [
    # (mistake key, bug, problem, extra): every kind of the list
    ("no-scaling", "no-scaling", SQUARE, {}),
    ("divided-by-dk", "divided-by-dk", SQUARE, {}),
    ("sqrt-d-model", "sqrt-d-model", WIDE, {}),
    ("softmax-columns", "softmax-columns", SQUARE, {}),
    ("weights-transposed", "weights-transposed", SQUARE, {}),
    ("k-not-transposed", "QK", SQUARE, {}),
    ("k-not-transposed", "KQt", SQUARE, {}),
    ("weights-layout", "weights-layout", SQUARE, {}),
    ("no-softmax", "no-softmax", SQUARE, {}),
    ("mask-polarity", "mask-polarity", SQUARE, {"mask": MASK}),
    ("mask-forgotten", "mask-forgotten", SQUARE, {"causal": True}),
    ("causal-misaligned", "causal+1", SQUARE, {"causal": True}),
    ("rounded-early", "round1", SQUARE, {}),
]
FIRST = {"no-scaling": "scaled", "divided-by-dk": "scaled", "sqrt-d-model": "scaled",
         "softmax-columns": "weights", "weights-transposed": "output", "QK": "scores",
         "KQt": "scores", "weights-layout": "Q", "no-softmax": "weights",
         "mask-polarity": "masked", "mask-forgotten": "masked", "causal+1": "masked",
         "round1": "weights"}  # fmt: skip


def _all_stages(stages, trace_stages, bug):
    names = [n for n in trace_stages if n in stages]
    if bug in ("mask-forgotten", "round1"):
        # a student who forgets the mask writes no masked stage; one who rounds
        # early hands in the later stages only
        names = [n for n in names if n not in ("masked", "scaled")]
    return names


@pytest.mark.parametrize("key, bug, mats, extra", CASES, ids=[c[1] for c in CASES])
def test_each_planted_mistake_is_diagnosed_single_head(key, bug, mats, extra):
    stages, (p, o) = plant(mats, 1, bug, **extra)
    _diagnosed(stages, p, o, key, bug)


MULTI = [c for c in CASES if c[0] != "sqrt-d-model"] + [
    ("sqrt-d-model", "sqrt-d-model", TWO_HEADS, {})
]


@pytest.mark.parametrize("key, bug, mats, extra", MULTI, ids=[c[1] for c in MULTI])
def test_each_planted_mistake_is_diagnosed_two_heads(key, bug, mats, extra):
    mats = TWO_HEADS if mats is SQUARE else mats
    stages, (p, o) = plant(mats, 2, bug, **extra)
    _diagnosed(stages, p, o, key, bug)


def _diagnosed(stages, p, o, key, bug):
    from qkvcli.attention import run
    from qkvcli.problem import resolve

    trace = run(resolve(p, o))
    names = _all_stages(stages, trace.stages, bug)
    report = grade(p, o, sheet(stages, names))
    assert not report.ok
    first = report.findings[0]
    assert first.mistake == key, (first, report.findings)
    expected_astray = FIRST[bug]
    if bug == "weights-transposed" and "head_outputs" in trace.stages:
        expected_astray = "head_outputs"
    assert first.astray == expected_astray
    # Follow-through: one slip is one finding; every later stage is consistent with it.
    assert len(report.findings) == 1, report.findings
    if bug == "weights-layout":
        assert first.more == ["K", "V"]  # the same slip in the parallel stages
    later = [
        c
        for c in report.cells
        if names.index(c.stage) > names.index(first.stage) and c.stage not in first.more
    ]
    assert all(c.verdict in ("consistent", "right") for c in later)
    assert later or first.stage == names[-1]


def test_right_answers_pass():
    stages, (p, o) = plant(SQUARE, 1, None)
    report = grade(p, o, sheet(stages, ["Q", "K", "V", "scores", "scaled", "weights", "output"]))
    assert report.ok and not report.findings
    assert report.count("right") == 63


def test_follow_through_names_the_earlier_stage():
    stages, (p, o) = plant(SQUARE, 1, "no-scaling")
    report = grade(p, o, sheet(stages, ["scores", "scaled", "weights", "output"]))
    verdicts = {(c.stage, c.verdict, c.basis) for c in report.cells}
    assert ("scores", "right", None) in verdicts
    assert ("weights", "consistent", "scaled") in verdicts
    assert ("output", "consistent", "weights") in verdicts
    assert report.count("wrong") == sum(1 for c in report.cells if c.stage == "scaled") - 0


def test_a_second_independent_slip_is_a_second_finding():
    stages, (p, o) = plant(SQUARE, 1, "no-scaling")
    stages["output"] = stages["output"] + 1.0  # an arithmetic slip of its own
    report = grade(p, o, sheet(stages, ["scaled", "weights", "output"]))
    assert [f.stage for f in report.findings] == ["scaled", "output"]
    assert report.findings[1].mistake is None


def test_answers_of_the_wrong_shape():
    p, o = problem(SQUARE)
    bad = Sheet("s.json", {"weights": [[written("1"), written("0")]]})
    with pytest.raises(
        InputError,
        match=r"s\.json: weights is 1×2 but this problem's weights is 3×3 \(queries × keys\)",
    ):
        grade(p, o, bad)


def test_causal_mask_aligned_to_the_wrong_end():
    """More keys than queries: the right mask is aligned to the last key (lower right)."""
    Q = np.array([[1.0, 2.0], [0.0, 1.0]])
    K = np.array([[1.0, 0.0], [2.0, 1.0], [0.0, 3.0]])
    V = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    top_left = np.tri(2, 3, 0, dtype=bool)  # the slip: query i sees keys 1…i
    scaled = np.where(top_left, Q @ K.T / math.sqrt(2), -np.inf)
    weights = softmax(scaled, 1)
    stages = {"weights": weights, "output": weights @ V}
    p = Problem({"Q": Q, "K": K, "V": V}, origin="cross.json")
    report = grade(p, Options(mask="causal-lower-right"), sheet(stages, ["weights", "output"]))
    (finding,) = report.findings
    assert (finding.stage, finding.mistake, finding.astray) == (
        "weights",
        "causal-misaligned",
        "masked",
    )
    assert finding.label == "causal mask aligned to the first key instead"


def test_consistent_names_the_stage_it_follows_from():
    stages, (p, o) = plant(SQUARE, 1, None)
    K = stages["K"].copy()
    K[0, 0] += 1  # a slip in K …
    V = stages["V"].copy()
    V[2, 1] += 1  # … and an unrelated one in V
    slipped = dict(stages, K=K, V=V, scores=stages["Q"] @ K.T)
    report = grade(p, o, sheet(slipped, ["K", "V", "scores"]))
    assert [f.stage for f in report.findings] == ["K", "V"]
    follows = {c.basis for c in report.cells if c.verdict == "consistent"}
    assert follows == {"K"}
