"""A sentence as the model's tokens, by the model's own tokenizer (the `tokenizers` library).

The tokenizer is the folder's ``tokenizer.json``, or for a GGUF file the
byte-level BPE its metadata describes (``tokenizer.ggml.tokens``, ``merges``,
the pre-tokenizer named by ``tokenizer.ggml.pre``, the BOS token when
``add_bos_token`` says so, as llama.cpp tokenizes it). Padding and
truncation set in the file are turned off: qkv shows every token of the
sentence, and refuses one longer than the model's positions rather than
cut it silently.

>>> Tokens(ids=[101, 102], labels=["[CLS]", "[SEP]"], type_ids=[0, 0]).n
2
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..i18n import _
from .source import Folder

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from .gguf_file import GgufFile

#: llama.cpp's pre-tokenizers of byte-level BPE vocabularies that qkv builds (``tokenizer.ggml.pre``):
#: the splits applied before GPT-2's own (ByteLevel's regex), each as a regex whose matches are isolated.
GGUF_PRE_SPLITS = {"default": None, "gpt-2": None, "smollm": r"\p{N}"}
CONTROL = 3  # llama.cpp's token type of special tokens (<|im_start|> …)


@dataclass(frozen=True)
class Tokens:
    """Token ids, their text (the tables' labels), their segment (token type) ids, and which tokenizer."""

    ids: list[int]
    labels: list[str]
    type_ids: list[int]
    source: str = "tokenizer.json"

    @property
    def n(self) -> int:
        """How many tokens."""
        return len(self.ids)


def tokenize(folder: Folder, sentence: str, limit: int | None) -> Tokens:
    """The tokens of ``sentence``, special tokens ([CLS] … [SEP]) included as the model adds them.

    ``limit``: the most tokens the model has positions for (None: no limit).
    """
    if not sentence.strip():
        raise InputError(_("the sentence is empty: give the text to run the model on"))
    if folder.gguf:
        from .gguf_file import read

        tokenizer, source = gguf_tokenizer(read(folder.path), folder.name), "tokenizer.ggml.tokens"
    else:
        tokenizer, source = from_json(folder), "tokenizer.json"
    encoding = tokenizer.encode(sentence)
    tokens = Tokens(list(encoding.ids), list(encoding.tokens), list(encoding.type_ids), source)
    if limit is not None and tokens.n > limit:
        raise InputError(
            _("the sentence has {n} tokens but model {name} has positions for {limit}").format(
                n=tokens.n, name=folder.name, limit=limit
            )
        )
    return tokens


def from_json(folder: Folder) -> Tokenizer:
    """The folder's tokenizer.json, without padding or truncation."""
    from tokenizers import Tokenizer

    path = folder.path / "tokenizer.json"
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own exception type
        raise InputError(
            _("{path}: not a tokenizer qkv can read: {e}").format(path=path, e=e)
        ) from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


@lru_cache(maxsize=4)
def gguf_tokenizer(gguf: GgufFile, model: str) -> Tokenizer:
    """The byte-level BPE a GGUF file's metadata describes, as llama.cpp tokenizes with it."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
    )

    m = gguf.metadata
    kind, pre = m.get("tokenizer.ggml.model"), m.get("tokenizer.ggml.pre", "default")
    if kind != "gpt2":
        raise InputError(
            _(
                "model {model}: tokenizer.ggml.model is {kind!r}; qkv builds byte-level BPE (gpt2) tokenizers from a GGUF file only"
            ).format(model=model, kind=kind)
        )
    if pre not in GGUF_PRE_SPLITS:
        raise InputError(
            _(
                "model {model}: tokenizer.ggml.pre is {pre!r}; qkv builds the pre-tokenizers {join}"
            ).format(model=model, pre=pre, join=", ".join(GGUF_PRE_SPLITS))
        )
    tokens: list[str] = _strings(m, "tokenizer.ggml.tokens", model)
    merges = [tuple(pair.split(" ")) for pair in _strings(m, "tokenizer.ggml.merges", model)]
    if any(len(pair) != 2 for pair in merges):
        raise InputError(
            _("model {model}: tokenizer.ggml.merges holds a merge that is not two tokens").format(
                model=model
            )
        )
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab, merges))
    level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    split = GGUF_PRE_SPLITS[pre]
    tokenizer.pre_tokenizer = (
        level
        if split is None
        else pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), "isolated"), level])
    )
    tokenizer.decoder = decoders.ByteLevel()
    types = m.get("tokenizer.ggml.token_type") or []
    tokenizer.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t, k in zip(tokens, types)
            if k == CONTROL
        ]
    )
    bos = m.get("tokenizer.ggml.bos_token_id")
    if m.get("tokenizer.ggml.add_bos_token") and isinstance(bos, int) and 0 <= bos < len(tokens):
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]} $A", special_tokens=[(tokens[bos], bos)]
        )
    return tokenizer


def _strings(metadata: dict[str, Any], key: str, model: str) -> list[str]:
    value = metadata.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(
            _("model {model}: the GGUF file has no list of strings {key}").format(
                model=model, key=key
            )
        )
    return value
