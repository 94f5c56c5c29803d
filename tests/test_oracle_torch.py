"""qkv against PyTorch, the peer every engineer checks against (float64, to 1e-10).

``scaled_dot_product_attention`` checks the core: heads, GQA, bool and float
masks, ``is_causal``, ``scale``. ``nn.MultiheadAttention`` checks the whole
path from a JSON state dict (``in_proj_weight`` …) through the loader:
projections with biases, cross-attention, ``key_padding_mask`` and
``attn_mask`` in PyTorch's polarity (True = blocked), averaged and per-head
weights, ``batch_first`` either way. Skipped when torch is not installed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the torch oracle: importing torch alone takes seconds

torch = pytest.importorskip("torch")
F = torch.nn.functional

from qkvcli.attention import run  # noqa: E402
from qkvcli.load import parse_json  # noqa: E402
from qkvcli.options import Options  # noqa: E402
from qkvcli.problem import Problem, resolve  # noqa: E402

TOL = {"rtol": 1e-10, "atol": 1e-10}


def qkv_run(options: Options, **mats):
    problem = Problem({k: np.asarray(v, dtype=np.float64) for k, v in mats.items()})
    return run(resolve(problem, options))


def t64(a: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(a))


def merge(a: np.ndarray) -> np.ndarray:
    """(B, h, n, d) → (B, n, h·d), heads side by side as qkv expects them."""
    B, h, n, d = a.shape
    return a.transpose(0, 2, 1, 3).reshape(B, n, h * d)


def some_true(rng: np.random.Generator, shape: tuple[int, ...], p: float = 0.6) -> np.ndarray:
    """A random bool mask with at least one True in every row (no empty softmax)."""
    mask = rng.random(shape) < p
    first = rng.integers(0, shape[-1], size=shape[:-1])
    np.put_along_axis(mask, first[..., None], True, axis=-1)
    return mask


# ---------------------------------------------------------------- scaled_dot_product_attention


@pytest.mark.parametrize("seed", range(150))
def test_sdpa_random_configurations(seed):
    rng = np.random.default_rng(seed)
    B = int(rng.integers(1, 4))
    g = int(rng.integers(1, 4))  # K/V heads
    h = g * int(rng.integers(1, 4))  # query heads, a multiple of g
    n, m = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    dk, dv = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    q = rng.normal(size=(B, h, n, dk))
    k = rng.normal(size=(B, g, m, dk))
    v = rng.normal(size=(B, g, m, dv))
    kind = ["none", "bool", "float", "causal"][seed % 4]
    scale = None if rng.random() < 0.5 else float(rng.uniform(0.1, 2.0))
    mats = {"Q": merge(q), "K": merge(k), "V": merge(v)}
    opts = {"heads": h, "kv_heads": g, "scale": "sqrt" if scale is None else scale}
    kwargs = {"scale": scale, "enable_gqa": g != h}
    if kind == "bool":
        allowed = some_true(rng, (B, h, n, m) if rng.random() < 0.5 else (n, m))
        mats["mask"] = allowed.astype(float)
        kwargs["attn_mask"] = t64(allowed)
    elif kind == "float":
        bias = rng.normal(size=(n, m))
        bias[~some_true(rng, (n, m))] = -np.inf  # some keys blocked, never a whole row
        mats["attn_bias"] = bias
        kwargs["attn_mask"] = t64(bias)
    elif kind == "causal":
        n = min(n, m)  # top-left causal: every query keeps key 1
        q = q[:, :, :n]
        mats["Q"] = merge(q)
        kwargs["is_causal"] = True
    t = qkv_run(Options(**opts, mask="causal" if kind == "causal" else None), **mats)
    expected = F.scaled_dot_product_attention(t64(q), t64(k), t64(v), **kwargs).numpy()
    np.testing.assert_allclose(t["output"], merge(expected), **TOL)
    if h > 1:
        np.testing.assert_allclose(t["head_outputs"], expected, **TOL)


def test_sdpa_fully_masked_row_is_zero_and_empty_rows_zero_matches():
    rng = np.random.default_rng(7)
    q, k, v = (
        rng.normal(size=(1, 1, 3, 2)),
        rng.normal(size=(1, 1, 4, 2)),
        rng.normal(size=(1, 1, 4, 3)),
    )
    allowed = some_true(rng, (3, 4))
    allowed[1] = False
    expected = F.scaled_dot_product_attention(t64(q), t64(k), t64(v), attn_mask=t64(allowed))
    t = qkv_run(
        Options(empty_rows="zero"), Q=q[0, 0], K=k[0, 0], V=v[0, 0], mask=allowed.astype(float)
    )
    np.testing.assert_allclose(t["output"], expected.numpy()[0, 0], **TOL)
    assert t["output"][1].tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------- nn.MultiheadAttention


def mha_case(seed: int):
    """A random nn.MultiheadAttention, its inputs and masks, as PyTorch and as qkv JSON."""
    rng = np.random.default_rng(1000 + seed)
    torch.manual_seed(seed)
    h = int(rng.integers(1, 4))
    E = h * int(rng.integers(1, 4))
    cross = seed % 2 == 1
    kdim = int(rng.integers(1, 6)) if cross and rng.random() < 0.5 else E
    bias = bool(rng.random() < 0.7)
    batch_first = bool(rng.random() < 0.5)
    batched = bool(rng.random() < 0.8)
    B = int(rng.integers(1, 4)) if batched else 1
    n = int(rng.integers(1, 6))
    m = int(rng.integers(1, 6)) if cross else n
    mha = torch.nn.MultiheadAttention(
        E, h, bias=bias, kdim=kdim, vdim=kdim, batch_first=batch_first, dtype=torch.float64
    ).eval()
    with torch.no_grad():  # non-zero biases, so that a dropped bias would show
        for name, p in mha.named_parameters():
            if "bias" in name:
                p.copy_(torch.randn_like(p))
    x = rng.normal(size=(B, n, E))
    mem = rng.normal(size=(B, m, kdim)) if cross else x
    doc = {key: value.tolist() for key, value in mha.state_dict().items()}
    doc["heads"] = h
    doc["X"] = x.tolist() if batched else x[0].tolist()
    if cross:
        doc["memory"] = mem.tolist() if batched else mem[0].tolist()
    kwargs = {}
    allowed = np.ones((B, h, n, m), dtype=bool)
    which = rng.integers(0, 5)
    if which in (1, 3):  # key_padding_mask: True = padding, blocked
        keep = some_true(rng, (B, m), 0.7)
        kwargs["key_padding_mask"] = t64(~keep if batched else ~keep[0])
        doc["key_padding_mask"] = (
            (~keep).astype(int).tolist() if batched else (~keep[0]).astype(int).tolist()
        )
        allowed &= keep[:, None, None, :]
    if which in (2, 3):  # attn_mask: True = blocked, 2-D or per (item, head)
        shared = rng.random() < 0.5 or not batched
        shape = (n, m) if shared else (B, h, n, m)
        keep = some_true(rng, shape, 0.7)
        torch_mask = ~keep if shared else (~keep).reshape(B * h, n, m)
        kwargs["attn_mask"] = t64(torch_mask)
        doc["mask"] = (~keep).astype(int).tolist()
        allowed &= keep
    if which == 4:  # a float attn_mask is added to the scaled scores: qkv's attn_bias
        bias = rng.normal(size=(n, m))
        bias[~some_true(rng, (n, m), 0.7)] = -np.inf
        kwargs["attn_mask"] = t64(bias)
        doc["attn_bias"] = [[v if np.isfinite(v) else "-inf" for v in row] for row in bias]
        allowed &= np.isfinite(bias)
    doc["mask_polarity"] = "block"
    live = allowed.any(-1).all()
    query = t64(x if batched else x[0])
    memory = t64(mem if batched else mem[0])
    if batched and not batch_first:
        query, memory = query.transpose(0, 1), memory.transpose(0, 1)
    return mha, doc, query, memory, kwargs, batched, batch_first, live


@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("seed", range(80))
def test_multihead_attention_from_its_state_dict(seed, average):
    mha, doc, query, memory, kwargs, batched, batch_first, live = mha_case(seed)
    if not live:
        pytest.skip("this draw masks a whole row (covered by the NaN test)")
    with torch.no_grad():
        out, w = mha(
            query, memory, memory, need_weights=True, average_attn_weights=average, **kwargs
        )
    if batched and not batch_first:
        out = out.transpose(0, 1)
    problem, settings = parse_json(json.dumps(doc), "state_dict.json")
    t = run(resolve(problem, Options().merged(settings)))
    np.testing.assert_allclose(t["output"], out.numpy(), **TOL)
    ours = t["weights"]  # ([B,] [h,] n, m)
    if t.heads == 1:
        ours = np.expand_dims(ours, -3)
    if average:
        ours = ours.mean(axis=-3)
    np.testing.assert_allclose(ours, w.numpy(), **TOL)


def test_multihead_attention_fully_masked_row_is_nan_and_empty_rows_nan_matches():
    torch.manual_seed(3)
    mha = torch.nn.MultiheadAttention(4, 2, batch_first=True, dtype=torch.float64).eval()
    x = torch.randn(1, 3, 4, dtype=torch.float64)
    blocked = torch.tensor([[False, True, False], [True, True, True], [False, False, True]])
    with torch.no_grad():
        out, w = mha(x, x, x, attn_mask=blocked, average_attn_weights=False)
    doc = {k: v.tolist() for k, v in mha.state_dict().items()}
    doc |= {"heads": 2, "X": x[0].tolist(), "mask": blocked.int().tolist()}
    doc |= {"mask_polarity": "block", "empty_rows": "nan"}
    problem, settings = parse_json(json.dumps(doc))
    t = run(resolve(problem, Options().merged(settings)))
    np.testing.assert_allclose(t["output"], out.numpy()[0], **TOL, equal_nan=True)
    np.testing.assert_allclose(t["weights"], w.numpy()[0], **TOL, equal_nan=True)
    assert np.isnan(t["output"][1]).all() and np.isfinite(t["output"][[0, 2]]).all()


def test_in_out_weights_equal_pytorch_out_in_weights():
    """The same numbers given as W (in-out) and as nn.Linear weights (out-in) agree."""
    torch.manual_seed(5)
    mha = torch.nn.MultiheadAttention(6, 3, batch_first=True, dtype=torch.float64).eval()
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    with torch.no_grad():
        out, _ = mha(x, x, x)
    sd = {k: v.numpy() for k, v in mha.state_dict().items()}
    wq, wk, wv = np.split(sd["in_proj_weight"], 3)
    bq, bk, bv = np.split(sd["in_proj_bias"], 3)
    t = qkv_run(
        Options(heads=3), X=x.numpy(), W_Q=wq.T, W_K=wk.T, W_V=wv.T, b_Q=bq, b_K=bk, b_V=bv,
        W_O=sd["out_proj.weight"].T, b_O=sd["out_proj.bias"],
    )  # fmt: skip
    np.testing.assert_allclose(t["output"], out.numpy(), **TOL)


# ---------------------------------------------------------------- the samples themselves


def sample(name: str):
    from qkvcli.load import load_json

    problem, settings = load_json(f"samples/{name}.json")
    return problem, run(resolve(problem, Options().merged(settings)))


def test_torch_state_dict_sample_matches_the_module_it_describes():
    _, t = sample("torch_state_dict")
    with open("samples/torch_state_dict.json") as fh:
        doc = json.load(fh)
    mha = torch.nn.MultiheadAttention(4, 2, batch_first=True, dtype=torch.float64).eval()
    keys = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
    mha.load_state_dict({k: torch.tensor(doc[k], dtype=torch.float64) for k in keys})
    x = torch.tensor([doc["X"]], dtype=torch.float64)
    padding = torch.tensor([doc["key_padding_mask"]], dtype=torch.bool)
    with torch.no_grad():
        out, w = mha(x, x, x, key_padding_mask=padding, average_attn_weights=False)
    np.testing.assert_allclose(t["output"], out.numpy()[0], **TOL)
    np.testing.assert_allclose(t["weights"], w.numpy()[0], **TOL)


def test_sdpa_samples_match():
    _, gqa = sample("grouped_query")
    q, k, v = (torch.tensor(gqa[n]) for n in ("Q", "K", "V"))
    split = lambda a, h: a.reshape(a.shape[0], h, -1).transpose(0, 1)[None]  # noqa: E731
    out = F.scaled_dot_product_attention(split(q, 4), split(k, 2), split(v, 2), enable_gqa=True)
    np.testing.assert_allclose(gqa["head_outputs"], out.numpy()[0], **TOL)

    _, causal = sample("causal")
    q, k, v = (torch.tensor(causal[n])[None] for n in ("Q", "K", "V"))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    np.testing.assert_allclose(causal["output"], out.numpy()[0], **TOL)

    problem, alibi = sample("alibi")
    q, k, v = (torch.tensor(alibi[n])[None] for n in ("Q", "K", "V"))
    bias = torch.from_numpy(problem.matrices["attn_bias"])
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    np.testing.assert_allclose(alibi["output"], out.numpy()[0], **TOL)
