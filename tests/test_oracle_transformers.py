"""The variants of today's models against Hugging Face `transformers`' own code, in float64.

Each test builds a random configuration, runs transformers' function or
attention module (rotary embeddings, masks, Gemma 2 / Gemma 3 / Qwen3 /
OLMo 2 / gpt-oss / BLOOM attention, a decode step with a DynamicCache) and
qkv on the same numbers, and asks for agreement to 1e-10.

transformers computes some tables in float32 on purpose (RoPE's inverse
frequencies, RMSNorm's upcast, the softmax of the eager paths): `float64`
runs transformers' own lines with that float32 redirected to float64, so
what is compared is the formula, not float32 rounding.
"""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.slow  # importing transformers alone takes seconds

from qkvcli import attention, stream  # noqa: E402
from qkvcli.masks import alibi_slopes  # noqa: E402
from qkvcli.options import Options  # noqa: E402
from qkvcli.problem import Problem, resolve  # noqa: E402

TOL = {"rtol": 1e-10, "atol": 1e-10}
FAST = [0, 1]  # seeds in the fast set; the slow set sweeps more
SEEDS = [*FAST, *(pytest.param(s, marks=pytest.mark.slow) for s in range(2, 12))]


@contextlib.contextmanager
def float64():
    """Run transformers' code with its float32 upcasts (and default dtype) made float64."""
    saved = torch.float32, torch.float, torch.Tensor.float, torch.get_default_dtype()
    torch.float32 = torch.float64
    torch.float = torch.float64
    torch.Tensor.float = torch.Tensor.double
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.float32, torch.float, torch.Tensor.float, default = saved
        torch.set_default_dtype(default)


def run(mats: dict, options: Options, streamed: bool = True):
    """qkv's dense trace; the streamed output must agree with it to 1e-12."""
    r = resolve(Problem({k: np.asarray(v, dtype=float) for k, v in mats.items()}), options)
    t = attention.run(r)
    if streamed:
        s = stream.run(r, block=8)
        np.testing.assert_allclose(s["output"], t["output"], rtol=1e-12, atol=1e-12)
    return t


def heads_of(a: np.ndarray, h: int) -> torch.Tensor:
    """(B, n, h·d) → (B, h, n, d), as transformers holds q, k, v."""
    B, n, hd = a.shape
    return torch.from_numpy(np.ascontiguousarray(a)).view(B, n, h, hd // h).transpose(1, 2)


def joined(t: torch.Tensor) -> np.ndarray:
    """(B, h, n, d) → (B, n, h·d), qkv's layout of Q, K, V."""
    B, h, n, d = t.shape
    return t.transpose(1, 2).reshape(B, n, h * d).detach().numpy()


def like(hf: torch.Tensor, ours: np.ndarray) -> np.ndarray:
    """transformers' (B, h, n, m) as qkv shows it (no head axis for one head)."""
    return hf.detach().numpy().reshape(ours.shape)


def shape_of(rng: np.random.Generator) -> SimpleNamespace:
    """A random attention shape: batch, heads, K/V heads, head size, tokens."""
    g = int(rng.choice([1, 2]))
    h = g * int(rng.choice([1, 2, 3]))
    d = 2 * int(rng.integers(1, 5))
    return SimpleNamespace(B=int(rng.integers(1, 3)), h=h, g=g, d=d, n=int(rng.integers(1, 9)))


def eager_mask(B, n, m, q_offset, function):
    """transformers' additive eager mask (0 or the dtype's minimum), (B, 1, n, m)."""
    from transformers.masking_utils import eager_mask as make

    return make(B, n, m, q_offset=q_offset, mask_function=function, dtype=torch.float64)


def causal():
    from transformers.masking_utils import causal_mask_function

    return causal_mask_function


# ---------------------------------------------------------------- rotary position embeddings


@pytest.mark.parametrize("seed", SEEDS)
def test_rope_half_matches_llama_and_neox_partial(seed):
    from transformers import GPTNeoXConfig, LlamaConfig
    from transformers.models.gpt_neox import modeling_gpt_neox as neox
    from transformers.models.llama import modeling_llama as llama

    rng = np.random.default_rng(seed)
    s = shape_of(rng)
    theta = float(rng.choice([100.0, 10000.0, 500000.0]))
    factor = float(rng.choice([1.0, 0.5, 0.25])) if s.d >= 8 else 1.0
    positions = rng.integers(0, 4000, size=(s.B, s.n))
    mats = {"Q": rng.normal(size=(s.B, s.n, s.h * s.d)), "K": rng.normal(size=(s.B, s.n, s.g * s.d)),
            "V": rng.normal(size=(s.B, s.n, s.g * 3)), "position_ids": positions}  # fmt: skip
    opts = Options(heads=s.h, kv_heads=s.g, rope="half", rope_theta=theta,
                   partial_rotary_factor=factor if factor != 1 else None)  # fmt: skip
    t = run(mats, opts)
    q, k = heads_of(mats["Q"], s.h), heads_of(mats["K"], s.g)
    pos = torch.from_numpy(positions)
    rope = {"rope_type": "default", "rope_theta": theta, "partial_rotary_factor": factor}
    with float64():
        if factor == 1:
            config = LlamaConfig(hidden_size=s.h * s.d, num_attention_heads=s.h, head_dim=s.d,
                                 num_key_value_heads=s.g, rope_parameters=rope)  # fmt: skip
            cos, sin = llama.LlamaRotaryEmbedding(config)(q, pos)
            q_hf, k_hf = llama.apply_rotary_pos_emb(q, k, cos, sin)
        else:
            config = GPTNeoXConfig(hidden_size=s.h * s.d, num_attention_heads=s.h,
                                   rope_parameters=rope)  # fmt: skip
            cos, sin = neox.GPTNeoXRotaryEmbedding(config)(q, pos)
            q_hf, k_hf = neox.apply_rotary_pos_emb(q, k, cos, sin)
    np.testing.assert_allclose(t["Q_rotated"], joined(q_hf), **TOL)
    np.testing.assert_allclose(t["K_rotated"], joined(k_hf), **TOL)


def test_rope_tables_agree_with_transformers_in_its_own_float32():
    """Without the redirect, transformers' float32 angles agree to float32's precision."""
    from transformers import LlamaConfig
    from transformers.models.llama import modeling_llama as llama

    rng = np.random.default_rng(3)
    mats = {
        "Q": rng.normal(size=(1, 5, 8)),
        "K": rng.normal(size=(1, 5, 8)),
        "V": np.ones((1, 5, 2)),
    }
    t = run(mats, Options(rope="half"))
    config = LlamaConfig(hidden_size=8, num_attention_heads=1, head_dim=8)
    q, k = heads_of(mats["Q"], 1), heads_of(mats["K"], 1)
    cos, sin = llama.LlamaRotaryEmbedding(config)(q, torch.arange(5)[None])
    q_hf, _ = llama.apply_rotary_pos_emb(q, k, cos, sin)
    np.testing.assert_allclose(t["Q_rotated"], joined(q_hf), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_rope_interleaved_matches_gptj_and_llama4(seed):
    from transformers import Llama4TextConfig
    from transformers.models.gptj import modeling_gptj as gptj
    from transformers.models.llama4 import modeling_llama4 as llama4

    rng = np.random.default_rng(100 + seed)
    s = shape_of(rng)
    offset = int(rng.integers(0, 300))
    mats = {"Q": rng.normal(size=(s.B, s.n, s.h * s.d)), "K": rng.normal(size=(s.B, s.n, s.h * s.d)),
            "V": rng.normal(size=(s.B, s.n, s.h * 2))}  # fmt: skip
    pos = torch.arange(offset, offset + s.n)[None].expand(s.B, -1)
    q = heads_of(mats["Q"], s.h).transpose(1, 2)  # (B, n, h, d): GPT-J's and Llama 4's layout
    k = heads_of(mats["K"], s.h).transpose(1, 2)

    # GPT-J: θ = 10000, the first rotary_dim features of each head.
    rotary_dim = s.d if s.d < 4 else int(rng.choice([s.d, s.d // 2 + s.d // 2 % 2]))
    factor = rotary_dim / s.d
    t = run(mats, Options(heads=s.h, rope="interleaved", position_offset=offset,
                          partial_rotary_factor=None if factor == 1 else factor))  # fmt: skip
    with float64():
        table = gptj.create_sinusoidal_positions(offset + s.n, rotary_dim)
        sin, cos = torch.split(table[pos], rotary_dim // 2, dim=-1)
        q_hf = torch.cat([gptj.apply_rotary_pos_emb(q[..., :rotary_dim], sin, cos),
                          q[..., rotary_dim:]], dim=-1)  # fmt: skip
        k_hf = torch.cat([gptj.apply_rotary_pos_emb(k[..., :rotary_dim], sin, cos),
                          k[..., rotary_dim:]], dim=-1)  # fmt: skip
    np.testing.assert_allclose(t["Q_rotated"], q_hf.reshape(s.B, s.n, -1).numpy(), **TOL)
    np.testing.assert_allclose(t["K_rotated"], k_hf.reshape(s.B, s.n, -1).numpy(), **TOL)

    # Llama 4: complex pairs (2i, 2i + 1), any θ, every feature.
    theta = float(rng.choice([500.0, 10000.0, 500000.0]))
    t = run(mats, Options(heads=s.h, rope="interleaved", rope_theta=theta, position_offset=offset))
    with float64():
        config = Llama4TextConfig(hidden_size=s.h * s.d, num_attention_heads=s.h, head_dim=s.d,
                                  rope_parameters={"rope_type": "default", "rope_theta": theta})  # fmt: skip
        freqs = llama4.Llama4TextRotaryEmbedding(config)(q, pos)
        q_hf, k_hf = llama4.apply_rotary_emb(q, k, freqs)
    np.testing.assert_allclose(t["Q_rotated"], q_hf.reshape(s.B, s.n, -1).numpy(), **TOL)
    np.testing.assert_allclose(t["K_rotated"], k_hf.reshape(s.B, s.n, -1).numpy(), **TOL)


# ---------------------------------------------------------------- sliding window and chunks


@pytest.mark.parametrize("seed", range(6))
def test_sliding_window_and_chunked_masks_match_transformers(seed):
    from transformers.masking_utils import (
        chunked_causal_mask_function,
        sdpa_mask,
        sliding_window_causal_mask_function,
    )

    rng = np.random.default_rng(200 + seed)
    n, past = int(rng.integers(1, 12)), int(rng.choice([0, 0, int(rng.integers(1, 9))]))
    m = past + n
    window, chunk = int(rng.integers(1, 8)), int(rng.integers(1, 6))
    base = {
        "Q": rng.normal(size=(n, 2)),
        "K": rng.normal(size=(n, 2)),
        "V": rng.normal(size=(n, 2)),
    }
    if past:
        base |= {"past_key": rng.normal(size=(past, 2)), "past_value": rng.normal(size=(past, 2))}
    for option, function, extra in (
        ({"sliding_window": window}, sliding_window_causal_mask_function(window), {}),
        ({"attention_chunk_size": chunk},
         chunked_causal_mask_function(chunk, torch.zeros(1, dtype=torch.long)), {"mask": "causal"}),
    ):  # fmt: skip
        want = sdpa_mask(1, n, m, q_offset=past, mask_function=function, allow_is_causal_skip=False)
        r = resolve(
            Problem({k: np.asarray(v) for k, v in base.items()}), Options(**option, **extra)
        )
        got = r.rules.allowed()
        np.testing.assert_array_equal(got[0, 0], want[0, 0].numpy(), err_msg=str(option))
        t = attention.run(resolve(r.problem, Options(**option, **extra, empty_rows="zero")))
        np.testing.assert_array_equal(np.isfinite(t["masked"]), want[0, 0].numpy())


# ---------------------------------------------------------------- whole attention layers


def linear_weights(module, names=("q_proj", "k_proj", "v_proj", "o_proj")) -> dict:
    """A module's projections as qkv's out-in weights (and biases when it has them)."""
    out = {}
    for canon, name in zip(("Q", "K", "V", "O"), names):
        lin = getattr(module, name)
        out[f"W_{canon}"] = lin.weight.detach().numpy()
        if lin.bias is not None:
            out[f"b_{canon}"] = lin.bias.detach().numpy()
    return out


def randomise(module, rng, scale=0.5):
    """Every parameter of a module drawn at random (transformers' init leaves some at 0 or 1)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.from_numpy(rng.normal(size=tuple(p.shape)) * scale))


def layer_config(cls, s, **kw):
    config = cls(hidden_size=s.h * s.d, num_attention_heads=s.h, num_key_value_heads=s.g,
                 head_dim=s.d, vocab_size=16, intermediate_size=8, num_hidden_layers=1, **kw)  # fmt: skip
    config._attn_implementation = "eager"
    return config


@pytest.mark.parametrize("seed", SEEDS)
def test_gemma2_softcapped_sliding_window_layer(seed):
    from transformers import Gemma2Config
    from transformers.models.gemma2 import modeling_gemma2 as gemma2

    rng = np.random.default_rng(300 + seed)
    s = shape_of(rng)
    cap = float(rng.choice([0.5, 2.0, 50.0]))
    window = int(rng.integers(1, 6))
    scalar = int(rng.choice([s.d, 3, 256]))
    theta = float(rng.choice([10000.0, 100.0]))
    rope = {"rope_type": "default", "rope_theta": theta}
    with float64():
        config = layer_config(Gemma2Config, s, attn_logit_softcapping=cap, sliding_window=window,
                              query_pre_attn_scalar=scalar, layer_types=["sliding_attention"],
                              rope_parameters=rope)  # fmt: skip
        layer = gemma2.Gemma2Attention(config, 0).double()
        randomise(layer, rng)
        x = torch.from_numpy(rng.normal(size=(s.B, s.n, s.h * s.d)))
        pos = torch.arange(s.n)[None].expand(s.B, -1)
        emb = gemma2.Gemma2RotaryEmbedding(config)(x, pos)
        mask = eager_mask(s.B, s.n, s.n, 0, _sliding(window))
        out, weights = layer(x, emb, mask)
    mats = {"X": x.numpy(), **linear_weights(layer)}
    t = run(mats, Options(heads=s.h, kv_heads=s.g, weights_layout="out-in", rope="half",
                          rope_theta=theta, scale=scalar**-0.5, attn_logit_softcapping=cap,
                          sliding_window=window))  # fmt: skip
    np.testing.assert_allclose(t["weights"], like(weights, t["weights"]), **TOL)
    np.testing.assert_allclose(t["output"], out.detach().numpy(), **TOL)
    with float64():  # the eager function alone: scaling, then the soft-cap, then the mask
        q, k = heads_of(t["Q_rotated"], s.h), heads_of(t["K_rotated"], s.g)
        v = heads_of(t["V"], s.g)
        module = SimpleNamespace(num_key_value_groups=s.h // s.g, training=False, head_dim=s.d)
        _, w = gemma2.eager_attention_forward(module, q, k, v, mask, scaling=scalar**-0.5,
                                              softcap=cap)  # fmt: skip
    np.testing.assert_allclose(t["weights"], like(w, t["weights"]), **TOL)


def _sliding(window):
    from transformers.masking_utils import sliding_window_causal_mask_function

    return sliding_window_causal_mask_function(window)


@pytest.mark.parametrize("seed", SEEDS)
def test_gemma3_layer_qk_norm_with_unit_offset(seed):
    from transformers import Gemma3TextConfig
    from transformers.models.gemma3 import modeling_gemma3 as gemma3

    rng = np.random.default_rng(400 + seed)
    s = shape_of(rng)
    eps = float(rng.choice([1e-6, 1e-2]))
    with float64():
        config = layer_config(Gemma3TextConfig, s, rms_norm_eps=eps, query_pre_attn_scalar=s.d,
                              layer_types=["full_attention"])  # fmt: skip
        layer = gemma3.Gemma3Attention(config, 0).double()
        randomise(layer, rng)
        x = torch.from_numpy(rng.normal(size=(s.B, s.n, s.h * s.d)))
        pos = torch.arange(s.n)[None].expand(s.B, -1)
        emb = gemma3.Gemma3RotaryEmbedding(config)(x, pos, layer_type="full_attention")
        out, weights = layer(x, emb, eager_mask(s.B, s.n, s.n, 0, causal()))
    theta = config.rope_parameters["full_attention"]["rope_theta"]
    mats = {"X": x.numpy(), **linear_weights(layer), "q_norm": layer.q_norm.weight.detach().numpy(),
            "k_norm": layer.k_norm.weight.detach().numpy()}  # fmt: skip
    t = run(mats, Options(heads=s.h, kv_heads=s.g, weights_layout="out-in", rope="half",
                          rope_theta=theta, mask="causal", qk_norm="head", rms_norm_eps=eps,
                          rms_norm_unit_offset=True))  # fmt: skip
    np.testing.assert_allclose(t["weights"], like(weights, t["weights"]), **TOL)
    np.testing.assert_allclose(t["output"], out.detach().numpy(), **TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_qwen3_layer_qk_norm_per_head(seed):
    from transformers import Qwen3Config
    from transformers.models.qwen3 import modeling_qwen3 as qwen3

    rng = np.random.default_rng(500 + seed)
    s = shape_of(rng)
    theta = float(rng.choice([1e6, 10000.0]))
    rope = {"rope_type": "default", "rope_theta": theta}
    with float64():
        config = layer_config(Qwen3Config, s, rope_parameters=rope, attention_bias=bool(seed % 2))
        layer = qwen3.Qwen3Attention(config, 0).double()
        randomise(layer, rng)
        x = torch.from_numpy(rng.normal(size=(s.B, s.n, s.h * s.d)))
        pos = torch.arange(s.n)[None].expand(s.B, -1)
        emb = qwen3.Qwen3RotaryEmbedding(config)(x, pos)
        out, weights = layer(x, emb, eager_mask(s.B, s.n, s.n, 0, causal()))
    mats = {"X": x.numpy(), **linear_weights(layer), "q_norm": layer.q_norm.weight.detach().numpy(),
            "k_norm": layer.k_norm.weight.detach().numpy()}  # fmt: skip
    t = run(mats, Options(heads=s.h, kv_heads=s.g, weights_layout="out-in", rope="half",
                          rope_theta=theta, mask="causal", qk_norm="head"))  # fmt: skip
    np.testing.assert_allclose(t["weights"], like(weights, t["weights"]), **TOL)
    np.testing.assert_allclose(t["output"], out.detach().numpy(), **TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_olmo2_layer_qk_norm_over_all_heads(seed):
    from transformers import Olmo2Config
    from transformers.models.olmo2 import modeling_olmo2 as olmo2

    rng = np.random.default_rng(600 + seed)
    s = shape_of(rng)
    with float64():
        config = layer_config(Olmo2Config, s, rms_norm_eps=1e-5)
        layer = olmo2.Olmo2Attention(config, 0).double()
        randomise(layer, rng)
        x = torch.from_numpy(rng.normal(size=(s.B, s.n, s.h * s.d)))
        pos = torch.arange(s.n)[None].expand(s.B, -1)
        emb = olmo2.Olmo2RotaryEmbedding(config)(x, pos)
        out, weights = layer(x, emb, eager_mask(s.B, s.n, s.n, 0, causal()))
        # transformers' RMSNorm of the whole row (all heads), checked on its own too
        q_norm = layer.q_norm(layer.q_proj(x)).detach().numpy()
    mats = {"X": x.numpy(), **linear_weights(layer), "q_norm": layer.q_norm.weight.detach().numpy(),
            "k_norm": layer.k_norm.weight.detach().numpy()}  # fmt: skip
    theta = config.rope_parameters["rope_theta"]
    t = run(mats, Options(heads=s.h, kv_heads=s.g, weights_layout="out-in", rope="half",
                          rope_theta=theta, mask="causal", qk_norm="all", rms_norm_eps=1e-5))  # fmt: skip
    np.testing.assert_allclose(t["Q_normed"], q_norm, **TOL)
    np.testing.assert_allclose(t["weights"], like(weights, t["weights"]), **TOL)
    np.testing.assert_allclose(t["output"], out.detach().numpy(), **TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_gpt_oss_layer_with_sinks(seed):
    from transformers import GptOssConfig
    from transformers.models.gpt_oss import modeling_gpt_oss as gpt_oss

    rng = np.random.default_rng(700 + seed)
    s = shape_of(rng)
    sliding = bool(seed % 2)
    window = int(rng.integers(1, 5))
    with float64():
        config = layer_config(GptOssConfig, s, sliding_window=window,
                              layer_types=["sliding_attention" if sliding else "full_attention"],
                              num_local_experts=2, num_experts_per_tok=1)  # fmt: skip
        layer = gpt_oss.GptOssAttention(config, 0).double()
        randomise(layer, rng, scale=1.5)  # sinks of ±1.5: a visible share of each row
        x = torch.from_numpy(rng.normal(size=(s.B, s.n, s.h * s.d)))
        mask = eager_mask(s.B, s.n, s.n, 0, _sliding(window) if sliding else causal())
    # gpt-oss's own RoPE is YaRN (stretched angles, not a qkv variant): qkv's Q, K, V go
    # through transformers' eager function with the layer's sinks instead of the whole layer.
    t = run({"X": x.numpy(), **linear_weights(layer), "sinks": layer.sinks.detach().numpy()},
            Options(heads=s.h, kv_heads=s.g, weights_layout="out-in", mask="causal",
                    sliding_window=window if sliding else None))  # fmt: skip
    with float64():
        q, k, v = heads_of(t["Q"], s.h), heads_of(t["K"], s.g), heads_of(t["V"], s.g)
        module = SimpleNamespace(num_key_value_groups=s.h // s.g, training=False,
                                 sinks=layer.sinks)  # fmt: skip
        o, w = gpt_oss.eager_attention_forward(module, q, k, v, mask, scaling=s.d**-0.5)
    np.testing.assert_allclose(t["weights"], like(w, t["weights"]), **TOL)
    np.testing.assert_allclose(t["concat"], o.reshape(s.B, s.n, -1).detach().numpy(), **TOL)
    # What each row lacks is the sink's share, e^sink / (Σ e^logit + e^sink), by the formula.
    logits = t["masked"].reshape(s.B, s.h, s.n, s.n)
    sink = layer.sinks.detach().numpy()[None, :, None, None] + np.zeros((s.B, s.h, s.n, 1))
    every = np.concatenate([logits, sink], axis=-1)
    top = every.max(axis=-1, keepdims=True)
    share = np.exp(sink - top) / np.exp(every - top).sum(axis=-1, keepdims=True)
    rows = t["weights"].reshape(s.B, s.h, s.n, s.n).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(rows + share, 1.0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_bloom_layer_with_alibi(seed):
    from transformers import BloomConfig
    from transformers.models.bloom import modeling_bloom as bloom

    rng = np.random.default_rng(800 + seed)
    h, d, B, n = int(rng.integers(1, 13)), int(rng.integers(1, 4)), int(rng.integers(1, 3)), 7
    with float64():
        config = BloomConfig(hidden_size=h * d, n_head=h, n_layer=1, vocab_size=16)
        config._attn_implementation = "eager"
        layer = bloom.BloomAttention(config, 0).double().eval()
        randomise(layer, rng)
        x = torch.from_numpy(rng.normal(size=(B, n, h * d)))
        alibi = bloom.build_alibi_tensor(torch.ones(B, n), h, torch.float64)
        mask = eager_mask(B, n, n, 0, causal())
        out, weights = layer(x, torch.zeros_like(x), alibi, mask)
    w = layer.query_key_value.weight.detach().numpy().reshape(h, 3, d, h * d)
    b = layer.query_key_value.bias.detach().numpy().reshape(h, 3, d)
    mats = {"X": x.numpy(), "W_O": layer.dense.weight.detach().numpy(),
            "b_O": layer.dense.bias.detach().numpy()}  # fmt: skip
    for i, name in enumerate("QKV"):
        mats[f"W_{name}"] = w[:, i].reshape(h * d, h * d)
        mats[f"b_{name}"] = b[:, i].reshape(-1)
    t = run(mats, Options(heads=h, weights_layout="out-in", alibi=True, mask="causal"))
    np.testing.assert_allclose(t["weights"], like(weights, t["weights"]), **TOL)
    np.testing.assert_allclose(t["output"], out.detach().numpy(), **TOL)
    # The bias itself: BLOOM adds m_h·j, qkv m_h·(j − i); they differ by a constant per row.
    scaled = t["scaled"] if h > 1 else t["scaled"][:, None]
    plain = run(mats, Options(heads=h, weights_layout="out-in"), streamed=False)["scaled"]
    plain = plain if h > 1 else plain[:, None]
    ours = scaled - plain  # (B, h, n, n)
    theirs = alibi.view(B, h, 1, n).numpy()
    diff = ours - theirs
    np.testing.assert_allclose(diff, np.broadcast_to(diff[..., :1], diff.shape), **TOL)


def test_alibi_slopes_match_bloom_and_mpt_for_every_head_count():
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes
    from transformers.models.mpt.modeling_mpt import build_mpt_alibi_tensor

    for heads in range(1, 65):
        with float64():
            bloom = _get_alibi_slopes(heads, "cpu").numpy()
            mpt = build_mpt_alibi_tensor(heads, 2).numpy()[:, 0, 0]  # slope × (1 − 2) = −slope
        # a few units in the last place: qkv takes 2^(−8k/H) at once, BLOOM a power of 2^(−8/H)
        np.testing.assert_allclose(alibi_slopes(heads), bloom, rtol=1e-14, atol=0, err_msg=heads)
        np.testing.assert_allclose(alibi_slopes(heads), -mpt, rtol=1e-14, atol=0, err_msg=heads)


# ---------------------------------------------------------------- the decode step


@pytest.mark.parametrize("seed", SEEDS)
def test_decode_step_with_a_dynamic_cache_matches_transformers(seed):
    """Prefill P tokens into transformers' DynamicCache, then decode n more: qkv, given the
    cache's keys and values and the new tokens' X, gives transformers' decode output, which is
    the last rows of the full causal pass."""
    from transformers import DynamicCache, Qwen3Config
    from transformers.models.qwen3 import modeling_qwen3 as qwen3

    rng = np.random.default_rng(900 + seed)
    s = shape_of(rng)
    past, n = int(rng.integers(1, 7)), int(rng.integers(1, 4))
    with float64():
        config = layer_config(Qwen3Config, s)
        layer = qwen3.Qwen3Attention(config, 0).double()
        randomise(layer, rng)
        rope = qwen3.Qwen3RotaryEmbedding(config)
        x = torch.from_numpy(rng.normal(size=(s.B, past + n, s.h * s.d)))
        pos = torch.arange(past + n)[None].expand(s.B, -1)
        full, _ = layer(x, rope(x, pos), eager_mask(s.B, past + n, past + n, 0, causal()))
        cache = DynamicCache(config=config)
        layer(x[:, :past], rope(x, pos[:, :past]), eager_mask(s.B, past, past, 0, causal()),
              cache=cache)  # fmt: skip
        keys, values = cache.layers[0].keys.clone(), cache.layers[0].values.clone()
        step, _ = layer(x[:, past:], rope(x, pos[:, past:]),
                        eager_mask(s.B, n, past + n, past, causal()), cache=cache)  # fmt: skip
    np.testing.assert_allclose(step.detach().numpy(), full[:, past:].detach().numpy(), **TOL)
    mats = {"X": x[:, past:].numpy(), **linear_weights(layer), "past_key": joined(keys),
            "past_value": joined(values), "q_norm": layer.q_norm.weight.detach().numpy(),
            "k_norm": layer.k_norm.weight.detach().numpy()}  # fmt: skip
    opts = Options(heads=s.h, kv_heads=s.g, weights_layout="out-in", rope="half",
                   rope_theta=config.rope_parameters["rope_theta"], qk_norm="head")  # fmt: skip
    t = run(mats, opts)
    np.testing.assert_allclose(t["output"], step.detach().numpy(), **TOL)
    assert math.isclose(float(t["K_rotated"][0, 0, 0]), float(joined(keys)[0, 0, 0]))
