"""A sentence as the model's tokens, by the model's own ``tokenizer.json`` (the `tokenizers` library).

Padding and truncation set in the file are turned off: qkv shows every token
of the sentence, and refuses one longer than the model's positions rather
than cut it silently.

>>> Tokens(ids=[101, 102], labels=["[CLS]", "[SEP]"], type_ids=[0, 0]).n
2
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .source import Folder


@dataclass(frozen=True)
class Tokens:
    """Token ids, their text (the tables' labels) and their segment (token type) ids."""

    ids: list[int]
    labels: list[str]
    type_ids: list[int]

    @property
    def n(self) -> int:
        """How many tokens."""
        return len(self.ids)


def tokenize(folder: Folder, sentence: str, limit: int | None) -> Tokens:
    """The tokens of ``sentence``, special tokens ([CLS] … [SEP]) included as the model adds them.

    ``limit``: the most tokens the model has positions for (None: no limit).
    """
    from tokenizers import Tokenizer

    if not sentence.strip():
        raise InputError("the sentence is empty: give the text to run the model on")
    path = folder.path / "tokenizer.json"
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own exception type
        raise InputError(f"{path}: not a tokenizer qkv can read: {e}") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    encoding = tokenizer.encode(sentence)
    tokens = Tokens(list(encoding.ids), list(encoding.tokens), list(encoding.type_ids))
    if limit is not None and tokens.n > limit:
        raise InputError(
            f"the sentence has {tokens.n} tokens but model {folder.name} has positions for {limit}"
        )
    return tokens
