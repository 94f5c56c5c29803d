"""Write a layer's attention as a problem file, so ``qkv compute``, ``explain`` and ``check`` read it.

JSON (every float written with ``repr``, so it reads back exactly) or
``.npz`` (the arrays as the model holds them, float32: a quarter of the
size). Both carry the same keys as any problem file: the matrices by their
canonical names, ``tokens``, the settings (``heads``, ``weights_layout``,
``rope`` …) that differ from the defaults and a named ``mask`` (``causal``);
``description`` says where it came from.

>>> document_settings(Options(heads=12, weights_layout="out-in"))
{'weights_layout': 'out-in', 'heads': 12}
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from ..errors import OptionError
from ..i18n import _
from ..load.document import FILE_SETTINGS
from ..options import Options
from ..problem import MATRICES, Problem

KINDS = (".json", ".npz")


def document_settings(options: Options) -> dict[str, Any]:
    """The options a file must carry to be run the same way: those not at their default."""
    defaults = Options()
    return {
        f.name: getattr(options, f.name)
        for f in fields(options)
        if f.name in FILE_SETTINGS and getattr(options, f.name) != getattr(defaults, f.name)
    }


def check_kind(path: str, option: str) -> str:
    """``.json`` or ``.npz`` from the file name; `OptionError` for another."""
    kind = next((k for k in KINDS if path.lower().endswith(k)), None)
    if kind is None:
        raise OptionError(
            _("{option} {path}: give a file name ending in .json or .npz").format(
                option=option, path=path
            )
        )
    return kind


def write_problem(
    path: str, problem: Problem, options: Options, description: str, option: str
) -> None:
    """Write ``problem`` (its matrices, tokens, non-default settings) to ``path`` whole or not at all."""
    from ..atomic import atomic_file

    kind = check_kind(path, option)
    matrices = {name: problem.matrices[name] for name in MATRICES if name in problem.matrices}
    settings = document_settings(options)
    mask = problem.mask_kind or options.mask
    if mask is not None:
        settings["mask"] = mask  # a named mask (causal) is a key of its own in a problem file
    if kind == ".npz":
        import numpy as np

        arrays: dict[str, Any] = {"description": np.array(description)}
        if problem.tokens is not None:
            arrays["tokens"] = np.array(problem.tokens)
        arrays |= {k: np.asarray(v) for k, v in matrices.items()}
        arrays |= {k: np.array(v) for k, v in settings.items()}
        with atomic_file(path, option, binary=True) as fh:
            np.savez(fh, **arrays)
        return
    doc: dict[str, Any] = {"description": description}
    if problem.tokens is not None:
        doc["tokens"] = problem.tokens
    doc |= settings
    doc |= {k: v.astype("float64").tolist() for k, v in matrices.items()}
    with atomic_file(path, option) as fh:
        json.dump(doc, fh, ensure_ascii=False, allow_nan=False)
        fh.write("\n")
