"""Read numpy's own files: one matrix from ``.npy``, a whole problem from ``.npz``.

An ``.npz`` holds named arrays with the same names (and spellings) as a JSON
problem file: ``X``, ``w_query``, ``Wk``, ``tokens`` … Nothing is unpickled.

>>> import io, numpy as np
>>> buf = io.BytesIO(); np.savez(buf, Q=np.eye(2), key=np.eye(2), V=np.ones((2, 1)), scale=2.0)
>>> _ = buf.seek(0)
>>> p, settings = parse_npz(buf, "p.npz")
>>> sorted(p.matrices), p.sources["K"], settings
(['K', 'Q', 'V'], 'key', {'scale': 2.0})
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .document import parse_doc
from .files import open_input
from .nested import to_array

if TYPE_CHECKING:
    import numpy as np

    from ..problem import Problem


def load_npy(path: str, name: str) -> np.ndarray:
    """One matrix (``--x X.npy``) as float64, checked like a JSON entry for ``name``."""
    import numpy as np

    with open_input(path) as fh:
        try:
            a = np.load(fh, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            raise InputError(f"{path}: not a .npy file numpy can read") from None
    if not isinstance(a, np.ndarray):
        raise InputError(f"{path}: holds several arrays; give a .npz as the input file")
    return to_array(_plain(a, path, name), name, path, name)


def load_npz(path: str) -> tuple[Problem, dict[str, Any]]:
    """A problem from an ``.npz`` file of named arrays; see the module docstring."""
    with open_input(path) as fh:
        return parse_npz(fh, path)


def parse_npz(fh: Any, origin: str) -> tuple[Problem, dict[str, Any]]:
    """Parse an open ``.npz`` file; names map as in JSON, 0-d arrays are settings."""
    import numpy as np

    try:
        z = np.load(fh, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise InputError(f"{origin}: a single array, not an .npz archive of named matrices")
        with z:
            doc = {key: _plain(z[key], origin, key) for key in z.files}
    except InputError:
        raise
    except (ValueError, OSError, EOFError):
        raise InputError(f"{origin}: not an .npz file numpy can read") from None
    if not doc:
        raise InputError(f"{origin}: holds no arrays")
    return parse_doc(doc, origin)


def _plain(a: np.ndarray, origin: str, key: str) -> Any:
    """An array as `parse_doc` takes it: text as lists of str, 0-d as a number, else the array."""
    kind = a.dtype.kind
    if kind in "US":
        return a.tolist()
    if kind not in "biuf":
        raise InputError(f"{origin}: {key} holds {a.dtype} values, not numbers")
    if a.ndim == 0:
        return a.item()
    return a
