"""A small random BERT folder (config.json, model.safetensors, tokenizer.json) for the model tests.

It needs no download and no torch: the weights come from a seeded numpy
generator and are written with safetensors' numpy API; the tokenizer is a
WordPiece one built with `tokenizers`, padded to a fixed length as
sentence-transformers' files are (qkv must turn that off).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", ".", ",", "##s", "un", "##like"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def config(**overrides) -> dict:
    base = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": 16,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "intermediate_size": 32,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 12,
        "type_vocab_size": 2,
        "vocab_size": len(SPECIAL) + len(WORDS),
        "position_embedding_type": "absolute",
        "pad_token_id": 0,
    }
    return base | overrides


def tensors(cfg: dict, seed: int, prefix: str = "") -> dict[str, np.ndarray]:
    """Random weights with BERT's names (scaled so the attention is not uniform)."""
    g = np.random.default_rng(seed)
    d, f = cfg["hidden_size"], cfg["intermediate_size"]

    def w(*shape: int, scale: float = 0.5) -> np.ndarray:
        return (g.standard_normal(shape) * scale).astype(np.float32)

    t = {
        "embeddings.word_embeddings.weight": w(cfg["vocab_size"], d),
        "embeddings.position_embeddings.weight": w(cfg["max_position_embeddings"], d),
        "embeddings.token_type_embeddings.weight": w(cfg["type_vocab_size"], d),
        "embeddings.LayerNorm.weight": 1 + w(d, scale=0.1),
        "embeddings.LayerNorm.bias": w(d, scale=0.1),
    }
    for layer in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."
        for name in ("query", "key", "value"):
            t[p + f"attention.self.{name}.weight"] = w(d, d)
            t[p + f"attention.self.{name}.bias"] = w(d, scale=0.1)
        t[p + "attention.output.dense.weight"] = w(d, d)
        t[p + "attention.output.dense.bias"] = w(d, scale=0.1)
        t[p + "attention.output.LayerNorm.weight"] = 1 + w(d, scale=0.1)
        t[p + "attention.output.LayerNorm.bias"] = w(d, scale=0.1)
        t[p + "intermediate.dense.weight"] = w(f, d)
        t[p + "intermediate.dense.bias"] = w(f, scale=0.1)
        t[p + "output.dense.weight"] = w(d, f)
        t[p + "output.dense.bias"] = w(d, scale=0.1)
        t[p + "output.LayerNorm.weight"] = 1 + w(d, scale=0.1)
        t[p + "output.LayerNorm.bias"] = w(d, scale=0.1)
    return {prefix + k: v for k, v in t.items()}


def tokenizer_json(path: Path) -> None:
    """A BERT-style WordPiece tokenizer over `WORDS`, padded to 16 tokens like sentence-transformers'."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(max_length=16)
    tok.save(str(path))


def make(folder: Path, seed: int = 0, prefix: str = "", **overrides) -> Path:
    """Write a tiny BERT into ``folder`` and return it."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = config(**overrides)
    (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    save_file(
        tensors(cfg, seed, prefix), str(folder / "model.safetensors"), metadata={"format": "pt"}
    )
    tokenizer_json(folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizerFast"}),
        encoding="utf-8",
    )
    return folder
