"""check: rounding-aware marking, follow-through, and a diagnosis for every planted mistake.

The students' wrong answers are made here with plain numpy, independently of
qkvcli's pipeline and of its mistake variants.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkvcli.check import Sheet, grade, parse_answers, written
from qkvcli.errors import InputError
from qkvcli.marking import Precision, agrees, window
from qkvcli.options import Options
from qkvcli.problem import Problem

# ---------------------------------------------------------------- the marking model


def right(text, true, precision=None, carried=(0.0, 0.0, 0.0)):
    w = written(text)
    return agrees(w, true, window(w, true, precision or Precision(), carried))


@pytest.mark.parametrize(
    "text, true, ok",
    [
        ("0.43", 0.431937, True),  # rounded
        ("0.432", 0.431937, True),
        ("0.44", 0.431937, False),  # 2 decimals: half a unit, no more
        ("0.4319", 0.431937, True),
        ("0.4317", 0.431937, False),
        ("0.4", 0.431937, False),  # never coarser than the problem's 2 decimals
        ("0", 0.3177, False),  # argmax's one-hot weights are not right
        ("1", 0.6443, False),
        ("16", 16.0, True),
        ("17", 16.0, False),
        ("16.0", 16.0, True),
        ("16.1", 16.0, False),  # an exact truth must be written exactly
        ("16.001", 16.0, False),
        ("2", 1.1547, False),
        ("2", 2.0002, True),
        ("-inf", -math.inf, True),
        ("−∞", -math.inf, True),
        ("-1e9", -math.inf, True),  # a sentinel in a masked cell
        ("0", -math.inf, False),
        ("-inf", 0.0, False),
        ("1e-3", 0.001, True),
        ("7/2", 3.5, True),
        ("2√3/3", 2 / math.sqrt(3), True),
        ("2√3/3", 1.1547, False),  # an exact form is exact
        ("43.19%", 0.431937, True),
        ("43%", 0.431937, True),
        ("44%", 0.431937, False),
    ],
)
def test_marking_model(text, true, ok):
    assert right(text, true) is ok


def test_trailing_zeros_never_change_a_verdict():
    for true in (0.431937, 2.2049, 2.2051, 16.0, 0.0903, 9.2376):
        for body in ("2.2", "0.43", "16", "0.09", "9.24", "9.2376"):
            point = "" if "." in body else "."
            verdicts = {right(body, true)} | {
                right(body + point + z, true) for z in ("0", "00", "000")
            }
            assert len(verdicts) == 1, (body, true)


def test_precision_of_the_problem():
    p3, sig, rel = Precision(3), Precision(None, sig_figs=3), Precision(None, rel_tol=0.01)
    assert right("0.43", 0.431937) and not right("0.43", 0.431937, p3)
    assert right("0.432", 0.431937, p3)
    assert right("9.24", 9.2376, sig) and not right("9.2", 9.2376, sig)
    assert right("0.43", 0.431937, rel) and not right("0.42", 0.431937, rel)
    assert right("0.45", 0.431937, Precision(None, tolerance=0.02))
    assert not right("0.44", 0.431937, Precision(None, tolerance=0.005))


def test_carried_rounding_widens_the_window():
    # 17 × 0.5774 = 9.8158 while 17/√3 = 9.8150: the scale carried to 4 decimals
    assert not right("9.8158", 17 / math.sqrt(3))
    w = written("9.8158")
    assert agrees(w, 17 / math.sqrt(3), window(w, 17 / math.sqrt(3), Precision(), (0.0, 17.0, 0.0)))


def test_answers_keep_their_decimals():
    s = parse_answers('{"weights": [[0.50, 0.5], [1, null]], "_name": "Ann"}', "a.json")
    cells = s.stages["weights"]
    assert [c.decimals for c in cells[0]] == [1, 1]  # trailing zeros carry none
    assert cells[0][0].text == "0.50"
    assert cells[1][1] is None


def test_stage_keys_in_any_case():
    s = parse_answers('{"Weights": [[1]], "SCORES": [[2]], "Head Outputs": [[[3]]]}', "a.json")
    assert list(s.stages) == ["weights", "scores", "head_outputs"]
    with pytest.raises(InputError, match=r"keys 'weights' and 'Weights' both give weights"):
        parse_answers('{"weights": [[1]], "Weights": [[1]]}', "a.json")


def test_unknown_stage_is_an_error():
    with pytest.raises(InputError, match=r"a\.json: unknown stage 'attention'"):
        parse_answers('{"attention": [[1]]}', "a.json")


@pytest.mark.parametrize(
    "doc, message",
    [
        ('{"weights": [[1, {"a": 1}]]}', r"weights\[1,2\]: an object is not an answer"),
        ('{"weights": [[1, true]]}', r"weights\[1,2\]: true/false is not an answer"),
        (
            '{"weights": [[1' + "0" * 400 + "]]}",
            r"weights\[1,1\]: 1000.* is too large for a number",
        ),
        (
            '{"weights": [[' + "9" * 5000 + "]]}",
            r"weights\[1,1\]: 9999.*5000 characters.* too large",
        ),
        ('{"weights": [[1e400]]}', r"1e400 is too large for a number"),
        ('{"weights": [["seven"]]}', r"'seven' is not a number, a fraction, a surd or -inf"),
    ],
)
def test_bad_cells_are_one_clear_error(doc, message):
    with pytest.raises(InputError, match=message):
        parse_answers(doc, "a.json")


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
    ("sqrt-other", "sqrt-d-model", WIDE, {}),
    ("softmax-columns", "softmax-columns", SQUARE, {}),
    ("weights-transposed", "weights-transposed", SQUARE, {}),
    ("k-not-transposed", "QK", SQUARE, {}),
    ("k-not-transposed", "KQt", SQUARE, {}),
    ("weights-layout", "weights-layout", SQUARE, {}),
    ("no-softmax", "no-softmax", SQUARE, {}),
    ("mask-polarity", "mask-polarity", SQUARE, {"mask": MASK}),
    ("mask-forgotten", "mask-forgotten", SQUARE, {"causal": True}),
    ("causal-misaligned", "causal+1", SQUARE, {"causal": True}),
]
FIRST = {"no-scaling": "scaled", "divided-by-dk": "scaled", "sqrt-d-model": "scaled",
         "softmax-columns": "weights", "weights-transposed": "output", "QK": "scores",
         "KQt": "scores", "weights-layout": "Q", "no-softmax": "weights",
         "mask-polarity": "masked", "mask-forgotten": "masked", "causal+1": "masked",
         "round1": "weights"}  # fmt: skip


def _all_stages(stages, trace_stages, bug):
    names = [n for n in trace_stages if n in stages]
    if bug == "mask-forgotten":
        # a student who forgets the mask writes no masked stage
        names = [n for n in names if n not in ("masked", "scaled")]
    return names


@pytest.mark.parametrize("key, bug, mats, extra", CASES, ids=[c[1] for c in CASES])
def test_each_planted_mistake_is_diagnosed_single_head(key, bug, mats, extra):
    stages, (p, o) = plant(mats, 1, bug, **extra)
    _diagnosed(stages, p, o, key, bug)


MULTI = [c for c in CASES if c[0] != "sqrt-other"] + [("sqrt-other", "sqrt-d-model", TWO_HEADS, {})]


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
    assert key in first.keys, (first, report.findings)
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


def test_rounding_carried_forward_is_consistent_with_a_note():
    """Weights rounded to 2 decimals (right), the output from them at 4 decimals: consistent,
    not wrong — whether or not the rounded weights are written."""
    Q = np.array([[1.0, 2.0], [0.0, 1.0], [2.0, 1.0]])
    K = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    V = np.array([[0.37, 1.13], [2.71, -0.59], [1.41, 0.83]])
    p, o = Problem({"Q": Q, "K": K, "V": V}, origin="p.json"), Options()
    weights = softmax(Q @ K.T / math.sqrt(2), 1)
    rounded = np.round(weights, 2)
    output = rounded @ V
    cells = {"weights": [[f"{v:.2f}" for v in row] for row in rounded],
             "output": [[f"{v:.4f}" for v in row] for row in output]}  # fmt: skip
    report = grade(p, o, Sheet("s.json", {k: _written(v) for k, v in cells.items()}))
    assert report.ok and not report.findings, report.findings
    out = [c for c in report.cells if c.stage == "output"]
    assert any(c.verdict == "consistent" and c.rounding and c.basis == "weights" for c in out)
    assert all(c.verdict in ("right", "consistent") for c in out)
    assert "weights as you rounded it (2 decimals)" in report.notes[0], report.notes
    unwritten = grade(p, o, Sheet("s.json", {"output": _written(cells["output"])}))
    assert unwritten.ok, [(c.written.text, c.correct, c.verdict) for c in unwritten.cells]
    assert "weights rounded to 2 decimals (not in your answers)" in unwritten.notes[0]


def test_argmax_is_flagged_and_named():
    stages, (p, o) = plant(SQUARE, 1, None)
    w = stages["weights"]
    one_hot = (w == w.max(axis=1, keepdims=True)).astype(float)
    s = Sheet("s.json", {"weights": _written([[f"{v:g}" for v in row] for row in one_hot])})
    report = grade(p, o, s)
    assert not report.ok
    assert report.findings[0].mistake == "argmax"
    assert all(c.verdict == "wrong" for c in report.cells if c.correct != c.written.value)


def test_a_stage_written_transposed_is_marked_as_such():
    stages, (p, o) = plant(WIDE, 1, None)
    out = stages["output"]  # 3×3 here: use Q (3 tokens × 3) of a wide problem instead
    q = stages["Q"]
    assert out.shape == q.shape
    p2 = Problem({**p.matrices, "W_V": np.ones((4, 2))}, origin="p.json")
    s = Sheet("s.json", {"output": _written(np.vectorize(text, otypes=[object])(
        _run(p2, o)["output"].T).tolist())})  # fmt: skip
    report = grade(p2, o, s)
    (f,) = report.findings
    assert f.fit == "layout" and "look transposed" in f.label
    assert all(c.verdict == "right" for c in report.cells)
    assert not report.ok


def _run(p, o):
    from qkvcli.attention import run
    from qkvcli.problem import resolve

    return run(resolve(p, o))
