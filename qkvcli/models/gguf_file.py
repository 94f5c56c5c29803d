"""A GGUF model file (llama.cpp's format): its metadata, its tensors dequantized by the ``gguf`` package.

`read` parses the header — the metadata (``llama.block_count``,
``tokenizer.ggml.tokens`` …) and each tensor's shape, ggml type and offset —
in a fraction of a second (the ``gguf`` package's own reader takes seconds
on a vocabulary of 49152 tokens), and maps the tensors' bytes without reading
them. `GgufFile.array` dequantizes one tensor (or some of its rows) to
float32 with ``gguf.quants.dequantize``, the code llama.cpp's Python package
ships and transformers' GGUF loader uses; each tensor is dequantized once
per process. `GgufWeights` serves a family the same names and methods as
`weights.Weights` (``layers.0.self_attn.q_proj.weight`` …), undoing the row
permutation llama.cpp's converter applies to W_Q and W_K. `hf_config` states
the metadata under Hugging Face config names.

>>> import numpy as np
>>> unpermute_rows(np.array([[0], [4], [1], [5], [2], [6], [3], [7]]), heads=1)[:, 0].tolist()
[0, 1, 2, 3, 4, 5, 6, 7]
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..i18n import _

if TYPE_CHECKING:
    import numpy as np

    from .source import Folder

MAGIC = b"GGUF"
#: The metadata value types of GGUF (v2, v3) with fixed sizes: struct formats, little-endian.
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
           11: "<q", 12: "<d"}  # fmt: skip
STRING, ARRAY = 8, 9
#: The one architecture qkv runs from a GGUF file, and its tensors by Hugging Face names.
ARCHITECTURES = ("llama",)
LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.o_proj.bias": "attn_output.bias",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
MODEL_TENSORS = {"embed_tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight"}


@dataclass(frozen=True)
class Tensor:
    """One tensor of the file: its numpy shape (rows, …, columns), ggml type and byte offset."""

    shape: tuple[int, ...]
    kind: int  # a ggml type (gguf.GGMLQuantizationType)
    offset: int  # from the start of the data section


@dataclass(eq=False)
class GgufFile:
    """A parsed GGUF file: metadata, tensor table, the mapped bytes, and what was dequantized."""

    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, Tensor]
    start: int  # where the data section begins
    data: Any = field(repr=False)  # np.memmap of the whole file (uint8)
    read: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def type_name(self, name: str) -> str:
        """The ggml type of a tensor, by name: ``Q4_1``, ``F32`` …"""
        from gguf import GGMLQuantizationType

        kind = self.tensors[name].kind
        try:
            return GGMLQuantizationType(kind).name
        except ValueError:
            return f"type {kind}"

    def raw(self, name: str) -> np.ndarray:
        """A tensor's bytes as (rows, bytes per row), uint8, without reading the rest of the file."""
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        t = self.tensors[name]
        try:
            block, size = GGML_QUANT_SIZES[GGMLQuantizationType(t.kind)]
        except (ValueError, KeyError):
            raise InputError(
                _(
                    "{path}: tensor {name} has ggml type {kind}, which the gguf package does not know"
                ).format(path=self.path, name=name, kind=t.kind)
            ) from None
        columns = t.shape[-1]
        if columns % block:
            raise InputError(
                _("{path}: tensor {name} has {columns} columns, not whole blocks").format(
                    path=self.path, name=name, columns=columns
                )
            )
        rows = 1
        for n in t.shape[:-1]:
            rows *= n
        width = columns // block * size
        begin = self.start + t.offset
        if begin + rows * width > len(self.data):
            raise InputError(
                _("{path}: tensor {name} runs past the end of the file (cut short?)").format(
                    path=self.path, name=name
                )
            )
        return self.data[begin : begin + rows * width].reshape(rows, width)  # (rows, bytes)

    def array(self, name: str, rows: list[int] | None = None) -> np.ndarray:
        """A tensor (or some of its rows) dequantized to float32, in its numpy shape; read once."""
        if rows is None and name in self.read:
            return self.read[name]
        from gguf.quants import dequantize

        raw = self.raw(name)
        if rows is not None:
            raw = raw[rows]
        try:
            a = dequantize(raw, self.tensors[name].kind)  # (rows, columns) float32
        except (NotImplementedError, ValueError) as e:
            raise InputError(
                _("{path}: cannot dequantize {name} ({type_name}): {e}").format(
                    path=self.path, name=name, type_name=self.type_name(name), e=e
                )
            ) from None
        if rows is not None:
            return a
        a = a.reshape(self.tensors[name].shape)
        self.read[name] = a
        return a


def read(path: Path) -> GgufFile:
    """The parsed file at ``path``; parsed once per process (while its size and time stay the same)."""
    try:
        stat = path.stat()
    except OSError as e:
        raise InputError(
            _("{path}: cannot read: {strerror}").format(path=path, strerror=e.strerror)
        ) from None
    return _read(path.resolve(), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4)
def _read(path: Path, size: int, mtime: int) -> GgufFile:
    import numpy as np

    try:
        data = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError) as e:
        raise InputError(_("{path}: cannot read: {e}").format(path=path, e=e)) from None
    if bytes(data[:4]) != MAGIC:
        raise InputError(
            _("{path}: not a GGUF file (it does not start with GGUF)").format(path=path)
        )
    try:
        metadata, tensors, start = parse(memoryview(data))
    except (struct.error, UnicodeDecodeError, IndexError, KeyError, ValueError) as e:
        raise InputError(
            _("{path}: a GGUF header qkv cannot read ({name}: {e})").format(
                path=path, name=type(e).__name__, e=e
            )
        ) from None
    return GgufFile(path, metadata, tensors, start, data)


def parse(buf: memoryview) -> tuple[dict[str, Any], dict[str, Tensor], int]:
    """The metadata, the tensor table and the data section's start of a GGUF file's bytes."""
    import numpy as np

    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal pos
        n = take("<Q")
        if pos + n > len(buf):
            raise ValueError(_("a string runs past the end of the file"))
        s = bytes(buf[pos : pos + n]).decode("utf-8")
        pos += n
        return s

    def value(kind: int) -> Any:
        nonlocal pos
        if kind == STRING:
            return text()
        if kind == ARRAY:
            item, count = take("<I"), take("<Q")
            if item in (STRING, ARRAY):
                return [value(item) for _ in range(count)]
            fmt = SCALARS[item]
            out = np.frombuffer(buf, dtype=np.dtype(fmt), count=count, offset=pos)
            pos += count * out.itemsize
            return out.tolist()
        return take(SCALARS[kind])

    pos = 4
    version = take("<I")
    if version not in (2, 3):
        swapped = struct.unpack(">I", struct.pack("<I", version))[0]
        why = "a big-endian file" if swapped in (2, 3) else f"version {version}"
        raise ValueError(_("{why}: qkv reads little-endian GGUF versions 2 and 3").format(why=why))
    count, entries = take("<Q"), take("<Q")
    metadata = {}
    for _entry in range(entries):
        key = text()
        metadata[key] = value(take("<I"))
    tensors = {}
    for _tensor in range(count):
        name = text()
        dims = [take("<Q") for _ in range(take("<I"))]
        kind, offset = take("<I"), take("<Q")
        tensors[name] = Tensor(tuple(reversed(dims)), kind, offset)  # ggml lists columns first
    align = metadata.get("general.alignment", 32)
    return metadata, tensors, (pos + align - 1) // align * align


def unpermute_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """W_Q or W_K (rows = heads × d_head) back in Hugging Face's order.

    llama.cpp's converter reorders each head's rows from rotate-half pairs
    (i, i + d/2) to adjacent pairs (2i, 2i + 1); this reverses it, as
    transformers' GGUF loader does.
    """
    half = w.shape[0] // heads // 2
    return w.reshape(heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_config(gguf: GgufFile, model: str) -> dict[str, Any]:
    """The file's metadata under Hugging Face config names (``model_type``, ``num_hidden_layers`` …)."""
    m = gguf.metadata
    arch = m.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise InputError(
            _(
                "model {model}: its GGUF architecture {arch!r} is not one qkv runs yet (it runs: {join})"
            ).format(model=model, arch=arch, join=", ".join(ARCHITECTURES))
        )
    scaling = m.get(f"{arch}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise InputError(
            _(
                "model {model}: {arch}.rope.scaling.type is {scaling!r}: qkv computes plain RoPE only"
            ).format(model=model, arch=arch, scaling=scaling)
        )
    names = {
        "num_hidden_layers": "block_count",
        "hidden_size": "embedding_length",
        "intermediate_size": "feed_forward_length",
        "num_attention_heads": "attention.head_count",
        "num_key_value_heads": "attention.head_count_kv",
        "max_position_embeddings": "context_length",
        "rms_norm_eps": "attention.layer_norm_rms_epsilon",
        "rope_theta": "rope.freq_base",
        "head_dim": "attention.key_length",
    }
    config: dict[str, Any] = {"model_type": arch, "hidden_act": "silu"}
    config |= {hf: m[f"{arch}.{key}"] for hf, key in names.items() if f"{arch}.{key}" in m}
    rotary, heads = m.get(f"{arch}.rope.dimension_count"), config.get("num_attention_heads")
    if isinstance(rotary, int) and isinstance(heads, int) and heads > 0:
        head_dim = config.get("head_dim") or config.get("hidden_size", 0) // heads
        if isinstance(head_dim, int) and head_dim > 0 and rotary != head_dim:
            config["partial_rotary_factor"] = rotary / head_dim
    config["attention_bias"] = "blk.0.attn_q.bias" in gguf.tensors
    return config


class GgufWeights:
    """A GGUF file's tensors under Hugging Face names (``layers.3.mlp.up_proj.weight``), as float32.

    The same methods as `weights.Weights`: ``key`` (the name in the file),
    ``tensor`` and ``rows``; W_Q and W_K come back in Hugging Face's row order.
    """

    def __init__(self, folder: Folder, heads: int, kv_heads: int) -> None:
        self.folder = folder
        self.file = read(folder.path)
        self.heads = {"q_proj": heads, "k_proj": kv_heads}

    def key(self, name: str) -> str:
        """The tensor's name in the file: ``blk.0.attn_q.weight``."""
        if name in MODEL_TENSORS:
            return MODEL_TENSORS[name]
        parts = name.split(".", 2)
        if len(parts) == 3 and parts[0] == "layers" and parts[2] in LAYER_TENSORS:
            return f"blk.{parts[1]}.{LAYER_TENSORS[parts[2]]}"
        raise InputError(
            _("model {name}: qkv has no GGUF name for {name2}").format(
                name=self.folder.name, name2=name
            )
        )

    def _known(self, name: str) -> str:
        key = self.key(name)
        if key not in self.file.tensors:
            raise InputError(
                _("model {name}: the file has no tensor {key}").format(
                    name=self.folder.name, key=key
                )
            )
        return key

    def tensor(self, name: str) -> np.ndarray:
        """A whole tensor, float32; W_Q and W_K (and their biases) un-permuted."""
        a = self.file.array(self._known(name))
        proj = name.split(".")[-2] if name.startswith("layers.") else ""
        if proj in self.heads:
            a = unpermute_rows(a, self.heads[proj])
        return a

    def rows(self, name: str, ids: list[int]) -> np.ndarray:
        """Rows ``ids`` of a matrix (the embedding table), dequantized alone."""
        key = self._known(name)
        count = self.file.tensors[key].shape[0]
        bad = [i for i in ids if not 0 <= i < count]
        if bad:
            raise InputError(
                _(
                    "model {name}: token id {v} is outside {key} ({count} rows): the tokenizer does not fit the weights"
                ).format(name=self.folder.name, v=bad[0], key=key, count=count)
            )
        return self.file.array(key, ids)

    def types(self) -> list[str]:
        """The ggml types of the layers' matrices and the embeddings, e.g. ``['Q4_1', 'Q8_0']``."""
        return sorted(
            {self.file.type_name(k) for k, t in self.file.tensors.items() if len(t.shape) > 1}
        )
