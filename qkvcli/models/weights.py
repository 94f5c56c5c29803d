"""A model's tensors from safetensors files, read with safetensors' numpy API (no torch).

Tensors are named without the model's prefix (``bert.`` in a checkpoint saved
from ``BertForMaskedLM``): `Weights.find_prefix` finds it from one key every
checkpoint of the family has. One file (``model.safetensors``) or shards
(``model.safetensors.index.json``) are read alike, each opened lazily.

>>> strip_prefix(["bert.embeddings.word_embeddings.weight", "cls.x"], "embeddings.word_embeddings.weight")
'bert.'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..i18n import _
from .source import INDEX, WEIGHTS, Folder

if TYPE_CHECKING:
    import numpy as np

#: The dtypes qkv computes with (float32 as the model does, float64 to recompute).
FLOATS = ("float16", "float32", "float64")


def strip_prefix(keys: list[str], anchor: str) -> str | None:
    """The prefix before ``anchor`` in the key that ends with it, or None when none does."""
    for key in keys:
        if key == anchor or key.endswith("." + anchor):
            return key[: len(key) - len(anchor)]
    return None


class Weights:
    """The tensors of one model folder, by name without the checkpoint's prefix."""

    def __init__(self, folder: Folder, anchor: str) -> None:
        self.folder = folder
        self.files = _files(folder)  # full key → file
        prefix = strip_prefix(list(self.files), anchor)
        if prefix is None:
            raise InputError(
                _(
                    "model {name}: its weights have no tensor {anchor} (not a checkpoint of the model type its config.json names)"
                ).format(name=folder.name, anchor=anchor)
            )
        self.prefix = prefix
        self._open: dict[Path, Any] = {}
        self._read: dict[str, np.ndarray] = {}  # tensors read once, for both dtypes

    def key(self, name: str) -> str:
        """The key as stored: ``encoder.layer.0.attention.self.query.weight``."""
        return self.prefix + name

    def _handle(self, name: str) -> Any:
        key = self.key(name)
        path = self.files.get(key)
        if path is None:
            raise InputError(
                _("model {name}: its weights have no tensor {key}").format(
                    name=self.folder.name, key=key
                )
            )
        if path not in self._open:
            from safetensors import safe_open

            try:
                self._open[path] = safe_open(str(path), framework="numpy")
            except Exception as e:  # safetensors raises its own error types
                raise InputError(
                    _("{path}: not a safetensors file qkv can read: {e}").format(path=path, e=e)
                ) from None
        return self._open[path]

    def tensor(self, name: str) -> np.ndarray:
        """A whole tensor, as stored (float16/32/64); read once."""
        if name not in self._read:
            self._read[name] = self._checked(name, lambda h: h.get_tensor(self.key(name)))
        return self._read[name]

    def rows(self, name: str, ids: list[int]) -> np.ndarray:
        """Rows ``ids`` of a matrix (an embedding table) without reading the rest."""
        import numpy as np

        def read(h: Any) -> np.ndarray:
            part = h.get_slice(self.key(name))
            count = part.get_shape()[0]
            bad = [i for i in ids if not 0 <= i < count]
            if bad:
                raise InputError(
                    _(
                        "model {name}: token id {v} is outside {key} ({count} rows): the tokenizer does not fit the weights"
                    ).format(name=self.folder.name, v=bad[0], key=self.key(name), count=count)
                )
            return np.concatenate([part[i : i + 1] for i in ids], axis=0)

        return self._checked(name, read)

    def _checked(self, name: str, read: Any) -> np.ndarray:
        handle = self._handle(name)
        try:
            a = read(handle)
        except InputError:
            raise
        except Exception as e:  # e.g. bfloat16, which numpy has no type for
            raise InputError(
                _("model {name}: cannot read {key} with numpy: {e}").format(
                    name=self.folder.name, key=self.key(name), e=e
                )
            ) from None
        if a.dtype.name not in FLOATS:
            raise InputError(
                _("model {name}: {key} holds {dtype} values, not floats").format(
                    name=self.folder.name, key=self.key(name), dtype=a.dtype
                )
            )
        return a


def _files(folder: Folder) -> dict[str, Path]:
    """Every tensor key and the file that holds it."""
    single = folder.path / WEIGHTS
    if single.is_file():
        return dict.fromkeys(_keys(single), single)
    index = folder.path / INDEX
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {str(k): folder.path / str(v) for k, v in weight_map.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(
            _("{index}: not a safetensors index qkv can read ({e})").format(index=index, e=e)
        ) from None


def _keys(path: Path) -> list[str]:
    """The tensor names in one safetensors file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return list(f.keys())
    except Exception as e:  # safetensors raises its own error types
        raise InputError(
            _("{path}: not a safetensors file qkv can read: {e}").format(path=path, e=e)
        ) from None
