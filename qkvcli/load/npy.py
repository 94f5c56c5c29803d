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

from ..errors import InputError, one_line
from ..i18n import _
from .document import parse_doc
from .files import display, open_input
from .nested import position, to_array

if TYPE_CHECKING:
    import numpy as np

    from ..problem import Problem


def load_npy(path: str, name: str) -> np.ndarray:
    """One matrix (``--x X.npy``) as float64, checked like a JSON entry for ``name``."""
    import numpy as np

    shown = display(path)
    with open_input(path) as fh:
        try:
            a = np.load(fh, allow_pickle=False)
        except Exception:  # a damaged file fails in many ways inside numpy: all are the file's
            raise InputError(
                _("{shown}: not a .npy file numpy can read").format(shown=shown)
            ) from None
    if not isinstance(a, np.ndarray):
        raise InputError(
            _("{shown}: holds several arrays; give a .npz as the input file").format(shown=shown)
        )
    return to_array(_plain(a, shown, name), name, shown, name)


def load_npz(path: str) -> tuple[Problem, dict[str, Any]]:
    """A problem from an ``.npz`` file of named arrays; see the module docstring."""
    with open_input(path) as fh:
        return parse_npz(fh, display(path))


def parse_npz(fh: Any, origin: str) -> tuple[Problem, dict[str, Any]]:
    """Parse an open ``.npz`` file; names map as in JSON, 0-d arrays are settings.

    A truncated or damaged archive is an `InputError` naming the file (and the
    array, when one member is damaged), never numpy's or zipfile's exception.
    """
    import numpy as np

    try:
        z = np.load(fh, allow_pickle=False)
    except Exception:  # zipfile, zlib and numpy each fail their own way on a damaged file
        raise InputError(
            _("{origin}: not an .npz file numpy can read").format(origin=origin)
        ) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise InputError(
            _("{origin}: a single array, not an .npz archive of named matrices").format(
                origin=origin
            )
        )
    arrays = {}
    with z:
        for key in z.files:
            try:
                arrays[key] = z[key]
            except Exception as e:
                raise InputError(
                    _("{origin}: {key} cannot be read: the archive is damaged ({why})").format(
                        origin=origin, key=key, why=_why(e)
                    )
                ) from None
    if not arrays:
        raise InputError(_("{origin}: holds no arrays").format(origin=origin))
    return parse_doc({key: _plain(a, origin, key) for key, a in arrays.items()}, origin)


def _why(e: Exception) -> str:
    """What numpy, zipfile or zlib said, short and on one line."""
    text = one_line(str(e)) or type(e).__name__
    return text if len(text) <= 80 else text[:77] + "…"


def _plain(a: np.ndarray, origin: str, key: str) -> Any:
    """An array as `parse_doc` takes it: text as lists of str, 0-d as a number, else float64.

    >>> import numpy as np
    >>> _plain(np.array([[np.longdouble("1e4000")]]), "p.npz", "X")
    Traceback (most recent call last):
    ...
    qkvcli.errors.InputError: p.npz: X row 1, column 1 is 1e+4000: too large for a float
    """
    import numpy as np

    kind = a.dtype.kind
    if kind == "U":
        return a.tolist()
    if kind == "S":
        try:
            return np.char.decode(a, "utf-8").tolist()
        except UnicodeDecodeError:
            raise InputError(
                _("{origin}: {key} holds bytes that are not UTF-8 text").format(
                    origin=origin, key=key
                )
            ) from None
    if kind not in "biuf":
        raise InputError(
            _("{origin}: {key} holds {dtype} values, not numbers").format(
                origin=origin, key=key, dtype=a.dtype
            )
        )
    if kind == "f" and a.dtype != np.float64:  # float16/32 widen; a long double may not fit
        with np.errstate(over="ignore"):
            wide = a.astype(np.float64)
        lost = np.isfinite(a) & ~np.isfinite(wide)
        if lost.any():
            index = tuple(int(i) for i in np.argwhere(lost)[0])
            where = f" {position(index, a.ndim)}" if a.ndim else ""
            value = np.format_float_scientific(a[index], precision=3, trim="-")
            raise InputError(
                _("{origin}: {key}{where} is {value}: too large for a float").format(
                    origin=origin, key=key, where=where, value=value
                )
            )
        a = wide
    if a.ndim == 0:
        return a.item()
    return a
