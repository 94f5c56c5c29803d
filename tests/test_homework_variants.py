"""check under today's variants: every planted mistake named, every cell marked, never a wrong name.

Each mistake is planted by tests/planted_models.py — the variants and the
wrong computation written out in plain numpy from their formulas,
independently of qkvcli's pipeline and of its mistake variants — on many
random problems. For every answer sheet the test asserts the verdict of
every cell (right where the student's number is the truth, wrong at the
first stage that departs, consistent after it) and that the diagnosis names
the mistake (alone, or among mistakes that give the same numbers).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from planted import check_verdicts, visible
from planted_models import random_model_case, sheet, stages

from qkvcli.answers import parse_answers
from qkvcli.check import grade
from qkvcli.load import parse_doc
from qkvcli.options import Options

#: test id → (planted bug, the mistake key qkv must name, the variants in force, sizes)
BUGS = {
    "rope-pairing-half": ("rope-pairing", "rope-pairing", {"rope", "causal"}, {}),
    "rope-pairing-interleaved": ("rope-pairing", "rope-pairing", {"rope-interleaved"}, {}),
    "rope-pairing-partial": ("rope-pairing", "rope-pairing", {"rope", "partial"}, dict(d_k=8)),
    "rope-forgotten": ("rope-forgotten", "rope-forgotten", {"rope", "causal"}, {}),
    "rope-forgotten-normed": ("rope-forgotten", "rope-forgotten", {"rope", "qk-norm"}, {}),
    "rope-pos+1": ("rope-pos+1", "rope-positions", {"rope", "causal"}, {}),
    "rope-pos-1": ("rope-pos-1", "rope-positions", {"rope", "offset"}, {}),
    "rope-pos-given-ignored": ("rope-pos-zero", "rope-positions", {"rope", "offset"}, {}),
    "rope-pos-decode": ("rope-pos-zero", "rope-positions", {"rope", "decode"}, {}),
    "rope-on-v": ("rope-on-v", "rope-on-v", {"rope", "causal"}, {}),
    "rope-on-v-late": ("rope-on-v-late", "rope-on-v", {"rope", "causal"}, {}),
    "cache-again-rope": ("cache-again-rope", "cache-again", {"rope", "decode"}, {}),
    "cache-again-norm": ("cache-again-norm", "cache-again", {"qk-norm", "decode"}, {}),
    "cache-forgotten": ("cache-forgotten", "cache-forgotten", {"decode"}, {}),
    "decode-causal": ("decode-causal", "decode-causal", {"decode"}, {}),
    "window+1": ("window+1", "window-off-by-one", {"window"}, dict(n=5)),
    "window-1": ("window-1", "window-off-by-one", {"window"}, dict(n=5)),
    "window-forgotten": ("window-forgotten", "window-forgotten", {"window"}, dict(n=5)),
    "window-decode": ("window+1", "window-off-by-one", {"window", "decode"}, dict(n=5)),
    "chunk-early": ("chunk-early", "chunk-off-by-one", {"chunk", "causal"}, dict(n=5)),
    "chunk-late": ("chunk-late", "chunk-off-by-one", {"chunk"}, dict(n=5)),
    "chunk+1": ("chunk+1", "chunk-off-by-one", {"chunk", "causal"}, dict(n=5)),
    "chunk-1": ("chunk-1", "chunk-off-by-one", {"chunk"}, dict(n=5)),
    "chunk-forgotten": ("chunk-forgotten", "chunk-forgotten", {"chunk", "causal"}, dict(n=5)),
    "softcap-before-scale": ("softcap-before-scale", "softcap-before-scale", {"softcap"}, {}),
    "softcap-before-scale-2": ("softcap-before-scale-2", "softcap-before-scale", {"softcap"}, {}),
    "softcap-forgotten": ("softcap-forgotten", "softcap-forgotten", {"softcap", "causal"}, {}),
    "softcap-no-c": ("softcap-no-c", "softcap-formula", {"softcap"}, dict(cap=2.0)),
    "softcap-no-divide": ("softcap-no-divide", "softcap-formula", {"softcap"}, dict(cap=3.0)),
    "sinks-forgotten": ("sinks-forgotten", "sinks-forgotten", {"sinks", "causal"}, {}),
    "sink-in-numerators": ("sink-in-numerators", "sink-in-numerators", {"sinks"}, {}),
    "sink-added-to-logits": ("sink-added-to-logits", "sink-in-numerators", {"sinks"}, {}),
    "sink-reversed": ("sink-reversed", "sink-wrong-head", {"sinks", "causal"}, dict(heads=2)),
    "alibi-forgotten": ("alibi-forgotten", "alibi-forgotten", {"alibi", "causal"}, dict(heads=2)),
    "alibi-reversed": ("alibi-reversed", "alibi-slope", {"alibi", "causal"}, dict(heads=2)),
    "alibi-plain": ("alibi-plain", "alibi-slope", {"alibi", "causal"}, dict(heads=3, d_k=2)),
    "alibi-sign": ("alibi-sign", "alibi-sign", {"alibi", "causal"}, {}),
    "alibi-position": ("alibi-position", "alibi-position", {"alibi", "decode"}, dict(heads=2)),
    "alibi-softcap": ("alibi-sign", "alibi-sign", {"alibi", "softcap", "causal"}, {}),
    "qk-norm-forgotten": ("qk-norm-forgotten", "qk-norm-forgotten", {"qk-norm"}, {}),
    "qk-norm-weight": ("qk-norm-weight", "qk-norm-weight", {"qk-norm", "causal"}, {}),
    "qk-norm-gemma": ("qk-norm-offset", "qk-norm-offset", {"gemma"}, {}),
    "qk-norm-offset": ("qk-norm-offset", "qk-norm-offset", {"qk-norm"}, {}),
    "qk-norm-scope": ("qk-norm-scope", "qk-norm-scope", {"qk-norm"}, dict(heads=2)),
    "qk-norm-scope-all": ("qk-norm-scope", "qk-norm-scope", {"qk-norm-all"}, dict(heads=2)),
    "qk-norm-l2": ("qk-norm-l2", "qk-norm-l2", {"qk-norm", "rope"}, {}),
}
SEEDS = range(4)
#: The stages whose rows are the keys (in a decode step: the cache's rows first).
KEYS_ROWS = ("K", "V", "K_normed", "K_rotated")


def finite(values: dict) -> bool:
    return all(np.isfinite(np.where(np.isneginf(v), 0.0, v)).all() for v in values.values())


def planted_case(test: str, seed: int):
    """A random problem, its true stages and the stages with the bug; None when it cannot show."""
    bug, _key, variants, kw = BUGS[test]
    c = random_model_case(np.random.default_rng(seed), variants, **kw)
    with np.errstate(all="ignore"):
        truth, wrong = stages(c), stages(c, bug)
    if set(truth) != set(wrong) or not finite(wrong):
        return None
    if not visible(truth, wrong):
        return None  # e.g. a window longer than the problem: nothing to see
    return c, truth, wrong


def mark(c, wrong, names, places=4):
    p, settings = parse_doc(c.document(), "p.json")
    doc = sheet(wrong, names, places)
    return grade(p, Options().merged(settings), parse_answers(json.dumps(doc), "a.json"))


def test_the_planted_truth_is_qkv_s_truth():
    """The two accounts agree on every stage of every kind of problem drawn here."""
    from qkvcli.attention import run
    from qkvcli.problem import resolve

    for test, (_bug, _key, variants, kw) in BUGS.items():
        c = random_model_case(np.random.default_rng(7), variants, **kw)
        p, settings = parse_doc(c.document(), "p.json")
        t = run(resolve(p, Options().merged(settings)))
        truth = stages(c)
        assert list(t.stages) == list(truth), test
        for name in truth:
            np.testing.assert_allclose(t[name], truth[name], atol=1e-9, err_msg=f"{test} {name}")


@pytest.mark.parametrize("test", list(BUGS))
@pytest.mark.parametrize("seed", SEEDS)
def test_every_planted_mistake_is_named_and_every_cell_marked(test, seed):
    case = planted_case(test, seed)
    if case is None:
        pytest.skip("this draw does not show the mistake")
    c, truth, wrong = case
    names = list(truth)
    report = mark(c, wrong, names)
    if BUGS[test][0] == "cache-forgotten":  # K and V written without the cache: their new rows
        wrong = {k: np.concatenate([truth[k][..., : c.past, :], v], axis=-2) if k in KEYS_ROWS
                 else v for k, v in wrong.items()}  # fmt: skip
    first = check_verdicts(report, truth, wrong, names)
    assert not report.ok
    f = report.findings[0]
    key = BUGS[test][1]
    assert f.fit in ("full", "several"), (f, test)
    assert key in f.keys, (f.keys, f.label, test)
    assert f.stage == first
    assert len(report.findings) == 1, [(g.stage, g.fit, g.keys) for g in report.findings]


@pytest.mark.slow
@pytest.mark.parametrize("test", list(BUGS))
def test_never_a_wrong_name_over_many_problems(test):
    """20 more problems per mistake, answers at 4 decimals, and at 2 or only the last stages."""
    key = BUGS[test][1]
    shown = 0
    for seed in range(100, 120):
        case = planted_case(test, seed)
        if case is None:
            continue
        shown += 1
        c, truth, wrong = case
        late = [n for n in ("weights", "output") if n in truth]
        other = (2, list(truth)) if seed % 2 else (4, late)
        for places, names in ((4, list(truth)), other):
            report = mark(c, wrong, names, places)
            keys = {k for f in report.findings for k in f.keys}
            assert not keys or key in keys, (test, seed, places, names, report.findings)
    assert shown >= 8, shown


@pytest.mark.slow
def test_unknown_mistakes_get_no_name():
    """A stage of a variant scrambled in a way no known mistake explains: nothing is named."""
    named = []
    kinds = [{"rope", "causal"}, {"qk-norm"}, {"softcap"}, {"sinks"}, {"alibi", "causal"},
             {"window"}, {"decode", "rope"}]  # fmt: skip
    for seed in range(70):
        rng = np.random.default_rng(2000 + seed)
        variants = kinds[seed % len(kinds)]
        c = random_model_case(rng, variants)
        truth = stages(c)
        wrong = {k: v.copy() for k, v in truth.items()}
        options = [
            s for s in ("Q_rotated", "K_normed", "capped", "weights", "scores") if s in truth
        ]
        stage = options[seed % len(options)]
        wrong[stage] = wrong[stage] * rng.uniform(0.5, 1.5, wrong[stage].shape)
        report = mark(c, wrong, list(truth))
        for f in report.findings:
            if f.fit in ("full", "several", "partial"):
                named.append((seed, stage, f.label))
    assert not named


# ---------------------------------------------------------------- hand work is right


HAND = [{"rope", "causal"}, {"rope-interleaved", "partial"}, {"qk-norm", "rope"}, {"gemma"},
        {"qk-norm-all"}, {"softcap", "causal"}, {"sinks", "causal"}, {"alibi", "causal"},
        {"window"}, {"chunk", "causal"}, {"decode", "rope"}, {"alibi", "softcap", "sinks"}]  # fmt: skip


@pytest.mark.parametrize("places", [4, 3, 2])
@pytest.mark.parametrize("kind", range(len(HAND)))
def test_hand_work_rounded_as_it_goes_is_right(places, kind):
    """Every stage computed from the one before as written, rounded to ``places`` decimals —
    the RMS, cos θ and sin θ, tanh, every e^x and the sum — is right, never 'consistent'."""
    from planted_models import norm_rows, rotate, slopes_of

    r = lambda x: np.round(x, places)  # noqa: E731
    for seed in range(3):
        c = random_model_case(np.random.default_rng(40 + 10 * kind + seed), HAND[kind])
        t = stages(c)
        hand = {"Q": t["Q"], "K": t["K"], "V": t["V"]}
        q, k = t["Q"], t["K"]
        P, H = c.past, c.heads
        if c.qk_norm:
            scope, unit = c.qk_norm, c.unit_offset
            root = lambda v: np.where(r(v) == 0, v, r(v))  # noqa: E731 (a zero row's √eps kept)
            hand["Q_normed"] = r(norm_rows(c, q, c.q_norm, H, scope, unit, rnd=root))
            new = r(norm_rows(c, k[P:], c.k_norm, H, scope, unit, rnd=root))
            hand["K_normed"] = np.vstack([k[:P], new])
            q, k = hand["Q_normed"], hand["K_normed"]
        if c.rope:
            dim = int(c.d_k * c.factor)
            pos = (P if c.offset is None else c.offset) + np.arange(c.n)
            hand["Q_rotated"] = r(rotate(q, pos, c.rope, dim, c.theta, H, rnd=r))
            new = r(rotate(k[P:], pos, c.rope, dim, c.theta, H, rnd=r))
            hand["K_rotated"] = np.vstack([k[:P], new])
            q, k = hand["Q_rotated"], hand["K_rotated"]
        d = c.d_k
        per = {s: [] for s in ("scores", "scaled", "capped", "masked", "weights", "head_outputs")}
        for h in range(H):
            scores = r(q[:, h * d : (h + 1) * d] @ k[:, h * d : (h + 1) * d].T)
            f = r(1 / np.sqrt(d))
            scaled = r(scores * f)
            bias = 0.0
            if c.alibi:
                m = slopes_of(H)[h]
                bias = m * (np.arange(k.shape[0])[None, :] - (np.arange(c.n)[:, None] + P))
            logits = scaled + bias
            if c.cap is not None:
                logits = r(c.cap * r(np.tanh(scaled / c.cap)) + bias)
                per["capped"].append(logits)
            else:
                scaled = logits = r(logits)
            per["scaled"].append(scaled)
            allowed = t["masked"][h] if "masked" in t and H > 1 else t.get("masked")
            z = logits if allowed is None else np.where(np.isneginf(allowed), -np.inf, logits)
            per["masked"].append(z)
            top = z.max(axis=-1, keepdims=True)
            if c.sinks is not None:
                top = np.maximum(top, c.sinks[h])
            e = np.where(np.isfinite(z), r(np.exp(np.where(np.isfinite(z), z - top, 0.0))), 0.0)
            total = e.sum(axis=-1, keepdims=True)
            if c.sinks is not None:
                total = total + r(np.exp(c.sinks[h] - top))
            w = r(e / r(total))
            per["weights"].append(w)
            per["head_outputs"].append(r(w @ t["V"][:, h * c.d_v : (h + 1) * c.d_v]))
            per["scores"].append(scores)
        for name, values in per.items():
            if name in t:
                hand[name] = np.array(values) if H > 1 else values[0]
        hand["output"] = np.concatenate(per["head_outputs"], axis=1)
        if H > 1:
            hand["concat"] = hand["output"]
        report = mark(c, hand, list(t), places)
        assert report.ok, [(x.stage, x.index, x.written.text, x.correct, x.verdict)
                           for x in report.cells if x.verdict != "right"][:6]  # fmt: skip


# ---------------------------------------------------------------- a row's slip, with a sink


def _sink_row(kind: str):
    """sinks.json with head 2's sink at 1 (a share the rows show), row 3 redone with one slip."""
    import math
    from dataclasses import replace

    from qkvcli.attention import run
    from qkvcli.load import load
    from qkvcli.problem import resolve

    p, settings = load("samples/sinks.json")
    p = replace(p, matrices={**p.matrices, "sinks": np.array([0.5, 1.0])})
    o = Options().merged(settings)
    t = run(resolve(p, o))
    w, z = np.array(t["weights"]), np.array(t["masked"])
    row, sink = z[1, 2], 1.0
    e = np.where(np.isfinite(row), np.exp(np.where(np.isfinite(row), row, 0.0)), 0.0)
    if kind == "sink-left-out":
        w[1, 2] = e / e.sum()
    elif kind == "key-left-out":
        w[1, 2] = e / (e.sum() - e[0] + math.exp(sink))
    elif kind == "digits":
        d = f"{w[1, 2, 1]:.4f}".split(".")[1]  # 0.2716 → 0.7216: the first two digits swapped
        w[1, 2, 1] = float(f"0.{d[1]}{d[0]}{d[2:]}")
    answers = {"weights": [[[f"{v:.4f}" for v in r] for r in h] for h in w]}
    return grade(p, o, parse_answers(json.dumps(answers), "a.json")), w


def test_a_row_of_a_sink_head_names_its_slip_and_what_it_sums_to():
    report, _ = _sink_row("right")
    assert report.ok
    (f,) = _sink_row("sink-left-out")[0].findings
    assert f.fit == "slips" and f.slips[0].kind == "denominator", f
    assert f.label.startswith(
        "head 2 row 3: the denominator leaves out the sink's e^{1}; the row sums to 1.0"
    )
    (f,) = _sink_row("key-left-out")[0].findings
    assert f.label.startswith("head 2 row 3: the denominator leaves out e^{masked[3,1]} (key 1)")
    (f,) = _sink_row("digits")[0].findings
    assert f.slips[0].kind == "digits" and "head 2 row 3 now sums to" in f.label, f.label
