"""check names every planted mistake, marks every cell, and never names a wrong one.

Each mistake is planted by tests/planted.py — the wrong computation written
out in plain numpy, independently of qkvcli's pipeline and mistake variants —
on many random problems. For every answer sheet the test asserts the verdict
of every cell (right where the student's number is the truth, wrong at the
first stage that departs, consistent after it) and that the diagnosis names
the mistake (alone, or among mistakes that give the same numbers).
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from planted import check_verdicts, random_case, same_text, softmax, stages, text
from planted import sheet as write_sheet

from qkvcli.answers import parse_answers
from qkvcli.check import grade
from qkvcli.load import parse_doc
from qkvcli.options import Options

#: planted bug → (the mistake key qkv must name, the kind of problem it needs)
BUGS = {
    "layout-all": ("weights-layout", dict(d_model=3, d_k=3, heads=1)),
    "layout-k": ("weights-layout", dict(d_model=3, d_k=3, heads=1)),
    "k-from-wq": ("wrong-weight", {}),
    "q-is-x": ("no-projection", dict(d_model=3, d_k=3, heads=1)),
    "v-is-x": ("no-projection", dict(d_model=3, d_k=3, heads=1)),
    "weights-times-k": ("weights-times-k", {}),
    "weights-times-x": ("weights-times-x", dict(heads=1)),
    "q-times-q": ("q-times-q", {}),
    "qk": ("k-not-transposed", dict(n=3, d_k=3)),
    "kqt": ("k-not-transposed", {}),
    "weights-transposed": ("weights-transposed", {}),
    "mask-forgotten": ("mask-forgotten", dict(mask="causal")),
    "causal-upper": ("causal-upper", dict(mask="causal")),
    "causal+1": ("causal-misaligned", dict(mask="causal")),
    "mask-polarity": ("mask-polarity", dict(mask="explicit")),
    "mask-after-softmax": ("mask-after-softmax", dict(mask="causal")),
    "mask-zero": ("mask-zero", dict(mask="causal")),
    "softmax-columns": ("softmax-columns", {}),
    "softmax-whole": ("softmax-whole", {}),
    "exp-only": ("exp-not-normalised", {}),
    "row-sum": ("row-sum", dict(low=0)),
    "argmax": ("argmax", {}),
    "sigmoid": ("sigmoid-for-softmax", {}),
    "no-softmax": ("no-softmax", {}),
    "no-scaling": ("no-scaling", {}),
    "divided-by-dk": ("divided-by-dk", {}),
    "scale-twice": ("scale-twice", {}),
    "times-sqrt-dk": ("times-sqrt-dk", {}),
    "dk-squared": ("dk-squared", {}),
    "sqrt-dv": ("sqrt-other", dict(d_k=2, d_v=3)),
    "sqrt-n": ("sqrt-other", dict(n=4, d_k=2, d_model=3)),
    "sqrt-d-model": ("sqrt-other", dict(d_model=5, d_k=2)),
    "scale-after-softmax": ("scale-after-softmax", {}),
    "heads-order": ("heads-order", dict(heads=2)),
    "heads-interleaved": ("heads-interleaved", dict(heads=2)),
    "wo-forgotten": ("wo-forgotten", dict(heads=2, W_O=True)),
    "wo-transposed": ("wo-transposed", dict(heads=2, W_O=True)),
    "cosine": ("cosine-as-scaled", {}),
}
SEEDS = range(6)


def finite(values: dict) -> bool:
    return all(np.isfinite(np.where(np.isneginf(v), 0.0, v)).all() for v in values.values())


def planted_case(bug: str, seed: int):
    """A random problem, its true stages and the stages with ``bug``; None when it cannot show."""
    _key, kw = BUGS[bug]
    c = random_case(np.random.default_rng(seed), **kw)
    with np.errstate(all="ignore"):  # a planted 0/0 is a draw that cannot show the mistake
        truth, wrong = stages(c), stages(c, bug)
    if set(truth) != set(wrong) or not finite(wrong):
        return None
    if all(np.array_equal(truth[n], wrong[n]) for n in truth):
        return None  # e.g. a symmetric W read transposed: nothing to see
    return c, truth, wrong


def mark(c, wrong, names, places=4):
    p, settings = parse_doc(c.document(), "p.json")
    doc = write_sheet(wrong, names, places)
    return grade(p, Options().merged(settings), parse_answers(json.dumps(doc), "a.json"))


@pytest.mark.parametrize("bug", list(BUGS))
@pytest.mark.parametrize("seed", SEEDS)
def test_every_planted_mistake_is_named_and_every_cell_marked(bug, seed):
    case = planted_case(bug, seed)
    if case is None:
        pytest.skip("this draw does not show the mistake")
    c, truth, wrong = case
    names = list(truth)
    report = mark(c, wrong, names)
    first = check_verdicts(report, truth, wrong, names)
    assert not report.ok
    f = report.findings[0]
    key = BUGS[bug][0]
    assert f.fit in ("full", "several"), (f, bug)
    assert key in f.keys, (f.keys, f.label, bug)
    assert f.stage == first
    assert len(report.findings) == 1, [(g.stage, g.fit, g.keys) for g in report.findings]


@pytest.mark.slow
@pytest.mark.parametrize("bug", list(BUGS))
def test_never_a_wrong_name_over_many_problems(bug):
    """30 more problems per mistake, answers at 4 and at 2 decimals, all stages or a few."""
    key = BUGS[bug][0]
    for seed in range(100, 130):
        case = planted_case(bug, seed)
        if case is None:
            continue
        c, truth, wrong = case
        for places, names in ((4, list(truth)), (2, list(truth)), (4, ["weights", "output"])):
            report = mark(c, wrong, [n for n in names if n in truth], places)
            keys = {k for f in report.findings for k in f.keys}
            assert not keys or key in keys, (bug, seed, places, names, report.findings)


@pytest.mark.slow
def test_unknown_mistakes_get_no_name():
    """A stage scrambled in a way no known mistake explains: an honest 'nothing known fits'."""
    named = []
    for seed in range(80):
        rng = np.random.default_rng(1000 + seed)
        c = random_case(rng)
        truth = stages(c)
        wrong = {k: v.copy() for k, v in truth.items()}
        stage = ["scores", "weights", "output", "Q"][seed % 4]
        wrong[stage] = wrong[stage] * rng.uniform(0.5, 1.5, wrong[stage].shape)
        report = mark(c, wrong, list(truth))
        for f in report.findings:
            if f.fit in ("full", "several", "partial"):
                named.append((seed, f.label))
    assert not named


# ---------------------------------------------------------------- cell-level slips


def _slip(kind: str, seed: int):
    rng = np.random.default_rng(seed)
    c = random_case(rng, heads=1)
    t = stages(c)
    s = {k: v.copy() for k, v in t.items()}
    n, d, V = c.n, c.d_k, t["V"]
    i, j = int(rng.integers(n)), int(rng.integers(n))
    if kind == "sign":
        nonzero = np.argwhere(t["scores"] != 0)
        i, j = nonzero[int(rng.integers(len(nonzero)))]
        s["scores"][i, j] *= -1
        s["scaled"] = s["scores"] / np.sqrt(d)
        s["weights"] = softmax(s["scaled"])
        return c, t, s, "scores", ["Q", "K", "V", "scores", "scaled", "weights", "output"], (i, j)
    if kind == "digits":
        digits = text(t["weights"][i, j]).split(".")[1]
        k = int(np.argmax([a != b for a, b in itertools.pairwise(digits)]))
        if digits[k] == digits[k + 1] or text(t["weights"][i, j]).startswith("1"):
            return None
        s["weights"][i, j] = float("0." + digits[:k] + digits[k + 1] + digits[k] + digits[k + 2 :])
    elif kind == "denominator":
        e = np.exp(t["scaled"][i])
        s["weights"][i] = e / (e.sum() - e[j])
    elif kind == "exp":
        e = np.exp(t["scaled"][i])
        e[j] = np.exp(t["scaled"][i, j] + 1)
        s["weights"][i] = e / e.sum()
    elif kind == "cell":
        s["output"][i, j % c.d_v] += 0.37
        return c, t, s, "output", ["scores", "weights", "output"], (i, j % c.d_v)
    s["output"] = s["weights"] @ V
    return c, t, s, "weights", ["scores", "scaled", "weights", "output"], (i, j)


@pytest.mark.parametrize("kind", ["sign", "digits", "denominator", "exp", "cell"])
@pytest.mark.parametrize("seed", range(8))
def test_cell_slips_are_named_by_cell(kind, seed):
    case = _slip(kind, seed)
    if case is None:
        pytest.skip("no two different neighbouring digits")
    c, truth, wrong, stage, names, (i, j) = case
    if same_text(truth[stage], wrong[stage], 4):
        pytest.skip("the slip vanishes in rounding")
    if kind in ("denominator", "exp"):
        changed = np.vectorize(text)(truth[stage][i]) != np.vectorize(text)(wrong[stage][i])
        if changed.sum() < 2:
            pytest.skip("the row's slip shows in fewer than two cells")
    report = mark(c, wrong, names)
    check_verdicts(report, truth, wrong, names)
    (f,) = report.findings
    assert f.stage == stage and f.fit == "slips", f
    one_wrong = sum(x.verdict == "wrong" for x in report.cells if x.stage == stage) < 2
    assert kind in {s.kind for s in f.slips} or (kind == "exp" and one_wrong), f.slips
    words = " ".join(s.text for s in f.slips)
    if kind in ("denominator", "exp"):
        assert f"row {i + 1}" in words
        assert ("still sums to 1" in words) == (kind == "exp")
    else:
        assert f"[{i + 1},{j + 1}]" in words
    if kind == "digits":
        assert "sums to" in words and "not 1" in words


# ---------------------------------------------------------------- hand work is right


@pytest.mark.parametrize("places", [4, 3, 2])
@pytest.mark.parametrize("seed", range(10))
def test_hand_work_carried_at_the_written_precision_is_right(places, seed):
    """Every intermediate rounded as a student would: 1/√d_k to the same decimals, e^x of the
    shifted scores, the sum, each weight; the output from the rounded weights."""
    rng = np.random.default_rng(seed)
    c = random_case(rng, mask=[None, "causal"][seed % 2])
    t = stages(c)
    r = lambda x: np.round(x, places)  # noqa: E731
    f = r(1 / np.sqrt(c.d_k))
    scaled = r(t["scores"] * f)
    z = scaled if c.mask is None else np.where(c.allowed(), scaled, -np.inf)
    top = z.max(axis=-1, keepdims=True)
    e = np.where(np.isfinite(z), r(np.exp(np.where(np.isfinite(z), z - top, 0.0))), 0.0)
    w = r(e / r(e.sum(axis=-1, keepdims=True)))
    hand = dict(t, scaled=scaled, weights=w)
    if c.mask is not None:
        hand["masked"] = z
    dv = c.d_v
    heads = [
        r((w if c.heads == 1 else w[h]) @ t["V"][:, h * dv : (h + 1) * dv]) for h in range(c.heads)
    ]
    if c.heads > 1:
        hand["head_outputs"], hand["concat"] = np.array(heads), np.concatenate(heads, axis=1)
    hand["output"] = np.concatenate(heads, axis=1)
    report = mark(c, hand, list(t), places)
    assert report.ok, [(x.stage, x.index, x.written.text, x.correct) for x in report.cells
                       if x.verdict != "right"]  # fmt: skip
