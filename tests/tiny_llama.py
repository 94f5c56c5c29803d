"""A small random Llama, as a GGUF file and as a Hugging Face folder, and a plain numpy Llama to check runs.

`make_gguf` writes the file as llama.cpp's converter does: the metadata
under llama.cpp's keys, W_Q and W_K with their rows permuted for llama.cpp's
RoPE (`llama_cpp_permute`, the converter's formula), matrices quantized
(Q4_1, Q8_0, F16) by the gguf package, and a byte-level BPE vocabulary with
merges. `make_folder` writes the same model (the dequantized weights, Hugging
Face names and row order) as config.json, model.safetensors and tokenizer.json.
`forward` is Llama written out directly, in transformers' shape (rotate_half
on concatenated cos/sin, repeat_kv, a −∞ causal mask), independent of qkvcli.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = [("Ġ", "c"), ("a", "t"), ("Ġc", "at"), ("Ġ", "s"), ("Ġs", "at"), ("T", "h"), ("Th", "e"),
          ("Ġ", "m"), ("Ġm", "at"), ("4", "2")]  # fmt: skip


def config(**overrides) -> dict:
    base = {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32,
        "rms_norm_eps": float(np.float32(1e-5)),  # as a GGUF file holds it (float32)
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
    }
    return base | overrides


def byte_chars() -> list[str]:
    """GPT-2's printable stand-in for each byte (its ``bytes_to_unicode``), in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def vocabulary() -> list[str]:
    merged = ["".join(pair) for pair in MERGES]
    return SPECIAL + byte_chars() + merged


def tensors(cfg: dict, seed: int) -> dict[str, np.ndarray]:
    """Random float32 weights with Hugging Face names (without the ``model.`` prefix)."""
    g = np.random.default_rng(seed)
    d, f = cfg["hidden_size"], cfg["intermediate_size"]
    h, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = d // h
    v = len(vocabulary())

    def w(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (g.standard_normal(shape) * scale).astype(np.float32)

    t = {"embed_tokens.weight": w(v, d, scale=1.0), "norm.weight": 1 + w(d, scale=0.1)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"layers.{i}."
        t |= {
            p + "input_layernorm.weight": 1 + w(d, scale=0.1),
            p + "self_attn.q_proj.weight": w(h * hd, d),
            p + "self_attn.k_proj.weight": w(kv * hd, d),
            p + "self_attn.v_proj.weight": w(kv * hd, d),
            p + "self_attn.o_proj.weight": w(d, h * hd),
            p + "post_attention_layernorm.weight": 1 + w(d, scale=0.1),
            p + "mlp.gate_proj.weight": w(f, d),
            p + "mlp.up_proj.weight": w(f, d),
            p + "mlp.down_proj.weight": w(d, f),
        }
    return t


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter on W_Q / W_K: each head's rows from (i, i + d/2) pairs to (2i, 2i + 1)."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


GGUF_NAMES = {
    "input_layernorm.weight": ("attn_norm.weight", "F32"),
    "self_attn.q_proj.weight": ("attn_q.weight", "Q4_1"),
    "self_attn.k_proj.weight": ("attn_k.weight", "Q4_1"),
    "self_attn.v_proj.weight": ("attn_v.weight", "Q8_0"),
    "self_attn.o_proj.weight": ("attn_output.weight", "Q4_1"),
    "post_attention_layernorm.weight": ("ffn_norm.weight", "F32"),
    "mlp.gate_proj.weight": ("ffn_gate.weight", "Q8_0"),
    "mlp.up_proj.weight": ("ffn_up.weight", "F16"),
    "mlp.down_proj.weight": ("ffn_down.weight", "Q4_1"),
}


def stored(cfg: dict, seed: int) -> dict[str, tuple[str, np.ndarray, str]]:
    """HF name → (GGUF name, the bytes or floats as the file holds them, ggml type)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    h, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out = {}
    for name, a in tensors(cfg, seed).items():
        if name == "embed_tokens.weight":
            gname, kind = "token_embd.weight", "Q8_0"
        elif name == "norm.weight":
            gname, kind = "output_norm.weight", "F32"
        else:
            layer, rest = name.split(".")[1], name.split(".", 2)[2]
            gname, kind = GGUF_NAMES[rest]
            gname = f"blk.{layer}.{gname}"
            if rest == "self_attn.q_proj.weight":
                a = llama_cpp_permute(a, h)
            elif rest == "self_attn.k_proj.weight":
                a = llama_cpp_permute(a, kv)
        data = a if kind == "F32" else quantize(a, GGMLQuantizationType[kind])
        out[name] = (gname, data, kind)
    return out


def make_gguf(
    path: Path, seed: int = 0, pre: str = "smollm", bos: bool = False, **overrides
) -> Path:
    """Write the tiny model as one GGUF file; returns its path."""
    import gguf

    cfg = config(**overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny llama")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    w.add_vocab_size(len(vocabulary()))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    vocab = vocabulary()
    w.add_token_list(vocab)
    w.add_token_types([3 if t in SPECIAL else 1 for t in vocab])
    w.add_token_merges([f"{a} {b}" for a, b in MERGES])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(bos)
    for gname, data, kind in stored(cfg, seed).values():
        w.add_tensor(gname, data, raw_dtype=gguf.GGMLQuantizationType[kind])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def dequantized(cfg: dict, seed: int) -> dict[str, np.ndarray]:
    """The weights as the file holds them, dequantized, in Hugging Face's names and row order.

    Each row is quantized on its own (blocks of 32 along it), so quantizing
    commutes with llama.cpp's permutation of the rows: the unpermuted
    weights quantized and dequantized are what the file holds, unpermuted.
    """
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    kinds = {name: kind for name, (_, _, kind) in stored(cfg, seed).items()}
    out = {}
    for name, a in tensors(cfg, seed).items():
        kind = GGMLQuantizationType[kinds[name]]
        out[name] = a if kinds[name] == "F32" else dequantize(quantize(a, kind), kind)
    return out


def make_folder(path: Path, seed: int = 0, **overrides) -> Path:
    """The same model as a Hugging Face folder: config.json, model.safetensors, tokenizer.json."""
    from safetensors.numpy import save_file
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    cfg = config(**overrides)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(cfg))
    weights = {"model." + k: v for k, v in dequantized(cfg, seed).items()}
    save_file(weights, str(path / "model.safetensors"))
    vocab = {t: i for i, t in enumerate(vocabulary())}
    tok = Tokenizer(models.BPE(vocab, MERGES))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\p{N}"), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tok.save(str(path / "tokenizer.json"))
    return path


def forward(w: dict[str, np.ndarray], cfg: dict, ids: list[int], dtype=np.float64):
    """hidden_states (embeddings, then each layer's output) and each layer's attention weights."""
    d, h, kv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps, n = d // h, cfg["rms_norm_eps"], len(ids)

    def W(name):
        return w[name].astype(dtype)

    def norm(x, g):
        return g * (x / np.sqrt((x**2).mean(-1, keepdims=True) + eps))

    inv = 1.0 / cfg["rope_theta"] ** (np.arange(0, hd, 2) / hd)
    ang = np.arange(n)[:, None] * inv[None, :]
    cos = np.cos(np.concatenate([ang, ang], -1)).astype(dtype)  # (n, hd)
    sin = np.sin(np.concatenate([ang, ang], -1)).astype(dtype)

    def rope(x):  # (heads, n, hd)
        rot = np.concatenate([-x[..., hd // 2 :], x[..., : hd // 2]], -1)
        return x * cos + rot * sin

    x = W("embed_tokens.weight")[ids]
    states, attentions = [x], []
    causal = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"layers.{i}."
        a = norm(x, W(p + "input_layernorm.weight"))
        q = (a @ W(p + "self_attn.q_proj.weight").T).reshape(n, h, hd).transpose(1, 0, 2)
        k = (a @ W(p + "self_attn.k_proj.weight").T).reshape(n, kv, hd).transpose(1, 0, 2)
        v = (a @ W(p + "self_attn.v_proj.weight").T).reshape(n, kv, hd).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, h // kv, axis=0), np.repeat(v, h // kv, axis=0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + causal
        e = np.exp(s - s.max(-1, keepdims=True))
        weights = e / e.sum(-1, keepdims=True)
        attentions.append(weights)
        o = (weights @ v).transpose(1, 0, 2).reshape(n, h * hd) @ W(p + "self_attn.o_proj.weight").T
        x = x + o
        m = norm(x, W(p + "post_attention_layernorm.weight"))
        gate = m @ W(p + "mlp.gate_proj.weight").T
        up = m @ W(p + "mlp.up_proj.weight").T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ W(p + "mlp.down_proj.weight").T
        states.append(x)
    return states, attentions
