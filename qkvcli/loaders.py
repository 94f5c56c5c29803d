"""Read problems from JSON, CSV (files or ``-`` for stdin) and NPY/NPZ into a `Problem`.

Every error names the file and the place in it: key, row, column, the text.

>>> p, settings = parse_json('{"Q": [[1, 0]], "key": [[1, 0]], "V": [[2]], "scale": "none"}')
>>> p.sources["K"], settings["scale"]
('key', 'none')
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
from typing import IO, TYPE_CHECKING, Any

from .errors import InputError, OptionError
from .problem import (
    EMPTY_ROWS,
    LAYOUTS,
    MASK_KINDS,
    NORMALIZERS,
    POLARITIES,
    SIMILARITIES,
    WEIGHTS_LAYOUTS,
    Problem,
    choice,
    parse_scale,
    positive_int,
)

if TYPE_CHECKING:
    import numpy as np

#: Spellings people use, after lower-casing and dropping ``_``, ``-``, ``.`` and spaces.
ALIASES: dict[str, tuple[str, ...]] = {
    "X": ("x", "input", "inputs", "embeddings", "a"),
    "X_kv": ("xkv", "memory", "context", "source", "encoderoutput"),
    "Q": ("q", "query", "queries"),
    "K": ("k", "key", "keys"),
    "V": ("v", "value", "values"),
    "W_Q": ("wq", "wquery", "wqueries", "queryweight", "weightquery", "weightq"),
    "W_K": ("wk", "wkey", "wkeys", "keyweight", "weightkey", "weightk"),
    "W_V": ("wv", "wvalue", "wvalues", "valueweight", "weightvalue", "weightv"),
    "W_O": ("wo", "wout", "woutput", "outputweight", "outweight", "weighto"),
    "b_Q": ("bq", "bquery", "querybias", "biasq", "qbias"),
    "b_K": ("bk", "bkey", "keybias", "biask", "kbias"),
    "b_V": ("bv", "bvalue", "valuebias", "biasv", "vbias"),
    "b_O": ("bo", "bout", "boutput", "outputbias", "biaso", "obias"),
    "mask": ("mask", "attnmask", "attentionmask"),
    "attn_bias": ("attnbias", "bias", "attentionbias", "alibi"),
    "valid_lens": ("validlens", "validlengths", "lengths", "lens"),
    "key_padding_mask": ("keypaddingmask", "paddingmask"),
    "tokens": ("tokens", "labels", "words", "querytokens"),
    "kv_tokens": ("kvtokens", "keytokens", "memorytokens", "contexttokens"),
    "scale": ("scale",),
    "layout": ("layout",),
    "weights_layout": ("weightslayout", "weightlayout"),
    "heads": ("heads", "numheads", "nheads", "nhead"),
    "kv_heads": ("kvheads", "numkvheads", "nkvheads", "numkeyvalueheads"),
    "mask_polarity": ("maskpolarity",),
    "empty_rows": ("emptyrows",),
    "similarity": ("similarity",),
    "normalize": ("normalize", "normalise", "normalizer"),
    "temperature": ("temperature", "temp"),
}

#: PyTorch ``nn.MultiheadAttention`` state-dict keys; their weights are (out, in).
TORCH_KEYS = {
    "inprojweight": "in_proj_weight",
    "inprojbias": "in_proj_bias",
    "outprojweight": "out_proj.weight",
    "outprojbias": "out_proj.bias",
    "qprojweight": "q_proj_weight",
    "kprojweight": "k_proj_weight",
    "vprojweight": "v_proj_weight",
}

IGNORED = ("comment", "comments", "description", "title", "name", "notes", "note", "source_url")
SETTINGS = ("scale", "layout", "weights_layout", "heads", "kv_heads", "mask_polarity",
            "empty_rows", "similarity", "normalize", "temperature")  # fmt: skip
_LOOKUP = {alias: canon for canon, aliases in ALIASES.items() for alias in aliases}
#: How many dimensions each kind of entry may have, and what its axes are called.
NDIMS = {"b_Q": (1, 2), "b_K": (1, 2), "b_V": (1, 2), "b_O": (1,), "valid_lens": (0, 1, 2),
         "key_padding_mask": (1, 2), "mask": (2, 3, 4), "attn_bias": (2, 3, 4)}  # fmt: skip


def squash(key: str) -> str:
    """The form a key is matched in: ``"W_Query"`` → ``"wquery"``."""
    return re.sub(r"[\s_.\-]", "", key).lower()


def torch_key(key: str) -> str | None:
    """The PyTorch state-dict key ``key`` names, module prefix and all, or None.

    >>> torch_key("layers.0.self_attn.in_proj_weight"), torch_key("W_Q")
    ('in_proj_weight', None)
    """
    parts = key.split(".")
    for i in range(len(parts)):  # drop module prefixes one at a time
        name = TORCH_KEYS.get(squash(".".join(parts[i:])))
        if name is not None:
            return name
    return None


MAX_TEXT_BYTES = 512 * 2**20  # a text input larger than this is refused (use .npy)


def open_input(path: str, limit: int | None = None) -> IO[bytes]:
    """``path`` opened for reading bytes; directories, devices and files over ``limit`` refused.

    Every failure is an `InputError` naming the file.
    """
    import stat

    name = display(path)
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise InputError(f"{name}: is a directory, not a file")
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise InputError(f"{name}: is a device or socket, not a file")
        if limit is not None and stat.S_ISREG(mode) and os.stat(path).st_size > limit:
            raise InputError(
                f"{name}: is larger than {limit // 2**20} MiB; give big matrices as .npy"
            )
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except PermissionError:
        raise InputError(f"{name}: permission denied") from None
    except OSError as e:
        raise InputError(f"{name}: cannot read: {e.strerror or e}") from None


def read_bytes(path: str, limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of ``path`` (``-`` = stdin), refusing devices and inputs over ``limit``.

    The size is checked before anything large is read.
    """
    name = display(path)
    try:
        if path == "-":
            stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
            if stream is None:
                return sys.stdin.read().encode("utf-8")
            data = stream.read(limit + 1)
        else:
            with open_input(path, limit) as fh:
                data = fh.read(limit + 1)
    except OSError as e:
        raise InputError(f"{name}: cannot read: {e.strerror or e}") from None
    if len(data) > limit:
        raise InputError(f"{name}: is larger than {limit // 2**20} MiB; give big matrices as .npy")
    return data


def decode_json(text: str, origin: str, **hooks: Any) -> Any:
    """``json.loads`` with its errors as one line naming the place (``hooks`` go to json)."""
    try:
        return json.loads(text, **hooks)
    except json.JSONDecodeError as e:
        raise InputError(
            f"{origin}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from None
    except RecursionError:
        raise InputError(f"{origin}: JSON nested too deeply") from None


def read_text(path: str) -> str:
    """The text of ``path`` (``-`` = stdin), as UTF-8 with or without a BOM."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{display(path)}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from None


def display(path: str) -> str:
    """How a path is named in messages."""
    return "<stdin>" if path == "-" else path


def load_json(path: str) -> tuple[Problem, dict[str, Any]]:
    """Read a JSON problem file (``-`` = stdin): the matrices and the settings it carries."""
    return parse_json(read_text(path), display(path))


def parse_json(text: str, origin: str = "<input>") -> tuple[Problem, dict[str, Any]]:
    """Parse JSON text into a `Problem` and a dict of settings (scale, heads, …)."""
    doc = decode_json(text, origin)
    if not isinstance(doc, dict):
        raise InputError(
            f"{origin}: the top level must be an object with keys such as X, W_Q, W_K, W_V"
        )
    return parse_doc(doc, origin)


def parse_doc(doc: dict[str, Any], origin: str) -> tuple[Problem, dict[str, Any]]:
    """A `Problem` and settings from named entries (nested lists or numpy arrays)."""
    found: dict[str, tuple[str, Any]] = {}
    torch: dict[str, tuple[str, Any]] = {}
    for key, value in doc.items():
        sq = squash(key)
        tkey = torch_key(key)
        if tkey is not None:
            if tkey in torch:
                raise InputError(f"{origin}: keys {torch[tkey][0]!r} and {key!r} both give {tkey}")
            torch[tkey] = (key, value)
            continue
        if key.startswith("_") or sq in IGNORED:
            continue
        canon = _LOOKUP.get(sq)
        if canon is None:
            raise InputError(
                f"{origin}: unknown key {key!r} (expected X, W_Q, W_K, W_V, or Q, K, V; see qkv compute --help)"
            )
        if canon in found:
            raise InputError(f"{origin}: keys {found[canon][0]!r} and {key!r} both give {canon}")
        found[canon] = (key, value)
    settings = _settings(found, origin)
    problem = Problem(matrices={}, origin=origin)
    if torch:
        _torch_state_dict(torch, found, settings, problem, origin)
    mask = found.get("mask")
    if mask is not None and isinstance(mask[1], str):
        problem.mask_kind = _setting(origin, mask[0], lambda: choice("mask", mask[1], MASK_KINDS))
        problem.sources["mask"] = mask[0]
        del found["mask"]
    for canon in ("tokens", "kv_tokens"):
        if canon in found:
            key, value = found.pop(canon)
            setattr(problem, canon, _labels(value, f"{origin}: {key}"))
            problem.sources[canon] = key
    for canon, (key, value) in found.items():
        if canon in SETTINGS:
            continue
        problem.matrices[canon] = to_array(value, key, origin, canon)
        problem.sources[canon] = key
    return problem, settings


def _setting(origin: str, key: str, check: Any) -> Any:
    try:
        return check()
    except OptionError as e:
        raise InputError(f"{origin}: {key}: {e}") from None


def _settings(found: dict[str, tuple[str, Any]], origin: str) -> dict[str, Any]:
    """Validate the settings a file carries; messages name the file and key."""
    checks = {
        "scale": parse_scale,
        "layout": lambda v: choice("layout", v, LAYOUTS),
        "weights_layout": lambda v: choice("weights_layout", v, WEIGHTS_LAYOUTS),
        "heads": lambda v: positive_int("heads", v),
        "kv_heads": lambda v: positive_int("kv_heads", v),
        "mask_polarity": lambda v: choice("mask_polarity", v, POLARITIES),
        "empty_rows": lambda v: choice("empty_rows", v, EMPTY_ROWS),
        "similarity": lambda v: choice("similarity", v, SIMILARITIES),
        "normalize": lambda v: choice("normalize", v, NORMALIZERS),
        "temperature": _temperature,
    }
    out = {}
    for canon, check in checks.items():
        if canon in found:
            key, value = found[canon]
            out[canon] = _setting(origin, key, lambda c=check, v=value: c(v))
    return out


def _temperature(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise OptionError(f"temperature must be a positive finite number, not {v!r}")
    return float(v)


def _labels(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: must be a non-empty list of labels")
    for i, t in enumerate(value, 1):
        if isinstance(t, (list, dict)) or t is None:
            raise InputError(f"{where}: label {i} is not text or a number")
    return [str(t) for t in value]


def _torch_state_dict(
    torch: dict[str, tuple[str, Any]], found: dict, settings: dict, problem: Problem, origin: str
) -> None:
    """Unpack PyTorch MultiheadAttention weights: ``in_proj_weight`` is q, k, v stacked, (out, in)."""
    if settings.get("weights_layout") == "in-out":
        raise InputError(
            f"{origin}: PyTorch keys such as {next(iter(torch))!r} hold (out, in) weights but weights_layout is in-out"
        )
    settings["weights_layout"] = "out-in"
    problem.torch_key = next(iter(torch.values()))[0]
    for canon in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
        if canon in found:
            raise InputError(f"{origin}: both {found[canon][0]!r} and PyTorch weights give {canon}")
    for packed, names in (
        ("in_proj_weight", ("W_Q", "W_K", "W_V")),
        ("in_proj_bias", ("b_Q", "b_K", "b_V")),
    ):
        if packed in torch:
            key, value = torch.pop(packed)
            a = to_array(value, key, origin, "W_Q" if packed.endswith("weight") else "b_O")
            if a.shape[0] % 3:
                raise InputError(
                    f"{origin}: {key} has {a.shape[0]} rows, not 3 equal blocks (q, k, v)"
                )
            e = a.shape[0] // 3
            for i, canon in enumerate(names):
                problem.matrices[canon] = a[i * e : (i + 1) * e]
                problem.sources[canon] = f"{key}[{i * e}:{(i + 1) * e}]"
    plain = {
        "out_proj.weight": "W_O",
        "out_proj.bias": "b_O",
        "q_proj_weight": "W_Q",
        "k_proj_weight": "W_K",
        "v_proj_weight": "W_V",
    }
    for tkey, canon in plain.items():
        if tkey in torch:
            key, value = torch.pop(tkey)
            if canon in problem.matrices:
                raise InputError(
                    f"{origin}: both {key!r} and {problem.sources[canon]!r} give {canon}"
                )
            problem.matrices[canon] = to_array(value, key, origin, canon)
            problem.sources[canon] = key


def _where(name: str, origin: str, path: tuple[int, ...], depth: int) -> str:
    """``origin: W_Q row 2, column 3`` from an index path into a ``depth``-D nested list."""
    return f"{origin}: {name} {_pos(path, depth)}"


def _pos(path: tuple[int, ...], depth: int) -> str:
    """``row 2, column 3``: an index path named by the axes of a ``depth``-D list."""
    words = _AXIS_WORDS.get(depth, ("index",) * depth)[: len(path)]
    return ", ".join(f"{w} {i + 1}" for w, i in zip(words, path))


_AXIS_WORDS = {1: ("value",), 2: ("row", "column"), 3: ("matrix", "row", "column"),
               4: ("item", "head", "row", "column")}  # fmt: skip


def _bad_cell(cell: Any) -> str:
    text = json.dumps(cell) if not isinstance(cell, float) else repr(cell)
    return text if len(text) <= 40 else text[:37] + "…"


def to_array(value: Any, key: str, origin: str, canon: str = "X") -> np.ndarray:
    """A nested list of numbers as a float64 array, or an `InputError` saying where it is not.

    >>> to_array([[1, 2], [3, 4]], "X", "f.json").shape
    (2, 2)
    """
    import numpy as np

    ndims = NDIMS.get(canon, (2, 3))
    flags = canon in ("mask", "key_padding_mask")
    neg_inf = canon == "attn_bias"
    given = isinstance(value, np.ndarray)
    if given or (isinstance(value, list) and len(value) * _width(value) > FAST_CELLS):
        # Arrays and large inputs skip the cell-by-cell walk unless numpy finds a problem.
        try:
            a = value if given else np.array(value)
        except (ValueError, OverflowError):
            a = None
        ok_kinds = "iuf" + ("b" if flags else "")
        if a is not None and a.dtype.kind in ok_kinds and a.ndim in ndims and a.size:
            a = a.astype(np.float64, copy=False)
            if np.all(np.isfinite(a)) or (neg_inf and not np.any(np.isnan(a) | (a == np.inf))):
                return a
    if given:
        value = value.tolist()  # an array from .npy/.npz: find the bad cell in its lists
    depth = _walk(value, key, origin, (), flags, neg_inf)
    if depth not in ndims:
        want = " or ".join(_DIM_WORDS[d] for d in ndims)
        raise InputError(
            f"{origin}: {key} must be {want}, not {_DIM_WORDS.get(depth, f'{depth}-D')}"
        )
    return np.array(_numbers(value, neg_inf), dtype=np.float64)


FAST_CELLS = 50_000  # above this many cells, trust numpy's conversion first


def _width(value: list) -> int:
    """Cells per row of a nested list, guessed from its first row."""
    first = value[0] if value else None
    return len(first) if isinstance(first, list) else 1


_DIM_WORDS = {0: "a number", 1: "a list of numbers", 2: "a matrix (a list of rows)",
              3: "a list of matrices", 4: "a 4-D nested list"}  # fmt: skip
_NEG_INF = ("-inf", "-infinity", "−∞", "-∞")


def _numbers(value: Any, neg_inf: bool) -> Any:
    if isinstance(value, list):
        return [_numbers(v, neg_inf) for v in value]
    if isinstance(value, str):
        return -math.inf
    return value


def _walk(
    value: Any, key: str, origin: str, path: tuple[int, ...], flags: bool, neg_inf: bool
) -> int:
    """Check a nested list is rectangular and numeric; return its depth."""
    if isinstance(value, list):
        if not value:
            where = _where(key, origin, path, len(path) + 1) if path else f"{origin}: {key}"
            raise InputError(f"{where} is empty")
        depths = [_walk(v, key, origin, (*path, i), flags, neg_inf) for i, v in enumerate(value)]
        if len(set(depths)) > 1:
            raise InputError(
                f"{origin}: {key} mixes numbers and lists at {'/'.join(str(i + 1) for i in path) or 'the top level'}"
            )
        if depths[0] >= 1:
            lens = [len(v) for v in value]
            for i, n in enumerate(lens):
                if n != lens[0]:
                    depth = len(path) + 1 + depths[0]
                    row = _where(key, origin, (*path, i), depth)
                    what = ("value" if n == 1 else "values") if depths[0] == 1 else "entries"
                    first = _pos((*path, 0), depth)
                    raise InputError(f"{row} has {n} {what} but {first} has {lens[0]}")
        return depths[0] + 1
    ok = isinstance(value, (int, float)) and (flags or not isinstance(value, bool))
    if isinstance(value, bool) and flags:
        return 0
    if ok:
        if math.isnan(value) or (math.isinf(value) and not (neg_inf and value < 0)):
            raise InputError(
                f"{_cell(key, origin, path)} is {_bad_cell(value)}: qkv needs finite numbers"
            )
        return 0
    if neg_inf and isinstance(value, str) and value.strip().lower() in _NEG_INF:
        return 0
    raise InputError(f"{_cell(key, origin, path)}: {_bad_cell(value)} is not a number")


def _cell(key: str, origin: str, path: tuple[int, ...]) -> str:
    return _where(key, origin, path, len(path))


def load_csv(path: str, name: str) -> tuple[np.ndarray, list[str] | None]:
    """One matrix from a CSV file (``-`` = stdin), with row labels if its first column has them.

    The delimiter (comma, semicolon, tab or spaces) is sniffed; a header row is
    skipped; with ``;`` or tab as delimiter a decimal comma is accepted.
    """
    return parse_csv(read_text(path), display(path), name)


def parse_csv(text: str, origin: str, name: str = "matrix") -> tuple[np.ndarray, list[str] | None]:
    """Parse CSV text; see `load_csv`. An ``attn_bias`` may hold ``-inf`` (blocked).

    >>> a, labels = parse_csv("q;k\\n1,5;2\\n3;4\\n", "m.csv")
    >>> a.tolist(), labels
    ([[1.5, 2.0], [3.0, 4.0]], None)
    """
    import numpy as np

    lines = [
        (i, ln)
        for i, ln in enumerate(text.splitlines(), 1)
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    if not lines:
        raise InputError(f"{origin}: holds no numbers ({name} is empty)")
    first = lines[0][1]
    delim = next((d for d in ("\t", ";", ",") if d in first), None)
    rows: list[tuple[int, list[str]]] = []
    for lineno, line in lines:
        if delim is None:
            cells = line.split()
        else:
            cells = next(csv.reader(io.StringIO(line), delimiter=delim))
        rows.append((lineno, [c.strip() for c in cells]))
    decimal_comma = delim in ("\t", ";")
    neg_inf = name == "attn_bias"

    def numeric(cells: list[str]) -> bool:
        return all(_is_number(c, decimal_comma, neg_inf) for c in cells)

    # A first column of labels (tokens) when no row starts with a number.
    labelled = all(len(r) > 1 and not _is_number(r[0], decimal_comma, neg_inf) for _, r in rows)
    if not numeric(rows[0][1][1 if labelled else 0 :]) and len(rows) > 1:
        rows = rows[1:]  # a header row
    labels = [r[0] for _, r in rows] if labelled else None
    if labelled:
        rows = [(ln, r[1:]) for ln, r in rows]
    width = len(rows[0][1])
    values = []
    for lineno, cells in rows:
        if len(cells) != width:
            count = f"{len(cells)} value" + ("" if len(cells) == 1 else "s")
            raise InputError(
                f"{origin}: line {lineno} has {count} but line {rows[0][0]} has {width}"
            )
        row = []
        for col, cell in enumerate(cells, 1):
            try:
                v = _float(cell, decimal_comma, neg_inf)
            except ValueError:
                shown = cell if len(cell) <= 40 else cell[:37] + "…"
                raise InputError(
                    f"{origin}: line {lineno}, column {col}: {shown!r} is not a number"
                ) from None
            if not math.isfinite(v) and not (neg_inf and v == -math.inf):
                raise InputError(
                    f"{origin}: line {lineno}, column {col} is {cell!r}: qkv needs finite numbers"
                )
            row.append(v)
        values.append(row)
    return np.array(values, dtype=np.float64), labels


def _float(cell: str, decimal_comma: bool, neg_inf: bool = False) -> float:
    """A CSV cell as a number; ``-inf`` / ``−∞`` only where ``neg_inf`` (attn_bias)."""
    if neg_inf and cell.strip().lower() in _NEG_INF:
        return -math.inf
    return float(cell.replace(",", ".") if decimal_comma else cell)


def _is_number(cell: str, decimal_comma: bool, neg_inf: bool = False) -> bool:
    try:
        _float(cell, decimal_comma, neg_inf)
    except ValueError:
        return False
    return True


_OPTION = {
    "X": "x",
    "W_Q": "wq",
    "W_K": "wk",
    "W_V": "wv",
    "Q": "q",
    "K": "k",
    "V": "v",
    "X_kv": "x-kv",
    "W_O": "wo",
}


def mask_option(text: str) -> tuple[str | None, str | None]:
    """Split a ``--mask`` value into a mask kind or a CSV path.

    >>> mask_option("causal")
    ('causal', None)
    """
    import os

    if text in MASK_KINDS:
        return text, None
    if text == "-" or os.path.exists(text):
        return None, text
    raise OptionError(
        f"--mask must be {', '.join(MASK_KINDS)} or a CSV file of 0/1, not {text!r} (no such file)"
    )


def parse_lens(text: str, option: str = "--valid-lens") -> np.ndarray:
    """Whole numbers from an option: ``"2,3"`` is one per item, ``"1,2;2,3"`` a matrix.

    >>> parse_lens("2,3").tolist(), parse_lens("1,2; 2,2").tolist()
    ([2.0, 3.0], [[1.0, 2.0], [2.0, 2.0]])
    """
    import numpy as np

    rows = []
    for part in text.split(";"):
        row = []
        for cell in part.replace(" ", ",").split(","):
            if not cell:
                continue
            try:
                row.append(float(cell))
            except ValueError:
                raise OptionError(f"{option}: {cell!r} is not a number") from None
        rows.append(row)
    if not rows[0] or any(len(r) != len(rows[0]) for r in rows):
        raise OptionError(f"{option} must be numbers such as 2,3 (or rows 1,2;2,3), not {text!r}")
    return np.array(rows[0] if len(rows) == 1 else rows, dtype=np.float64)


def parse_tokens(text: str, option: str = "--tokens") -> list[str]:
    """Token labels from an option: comma-separated, or separated by spaces.

    >>> parse_tokens("the,cat,sat"), parse_tokens("the cat sat")
    (['the', 'cat', 'sat'], ['the', 'cat', 'sat'])
    """
    words = [w.strip() for w in (text.split(",") if "," in text else text.split())]
    if not words or not all(words):
        raise OptionError(f"{option} must be labels such as a,b,c, not {text!r}")
    return words


def load(
    path: str | None,
    files: dict[str, str] | None = None,
    inline: dict[str, Any] | None = None,
) -> tuple[Problem, dict[str, Any]]:
    """A problem from a JSON file (or none) with matrices from CSV files on top.

    ``files`` maps a canonical name (``"W_Q"``) to a CSV path; each replaces
    that matrix of the JSON input. Row labels in the first column of X's CSV
    become the tokens when the JSON has none. ``inline`` holds values typed
    as options (``valid_lens``, ``tokens``, ``kv_tokens``); they win too.
    """
    files = {k: v for k, v in (files or {}).items() if v is not None}
    stdin_users = [k for k, v in files.items() if v == "-"] + (["input"] if path == "-" else [])
    if len(stdin_users) > 1:
        raise InputError(
            f"only one input can be read from stdin (-), not {' and '.join(stdin_users)}"
        )
    if path is None and not files:
        raise InputError(
            "no input: give a JSON file (or - for stdin), or CSV files with --x/--wq/--wk/--wv or --q/--k/--v"
        )
    if path is not None and path.lower().endswith(".npy"):
        raise InputError(f"{path}: one matrix: give it with an option such as --x, --wq or --q")
    for canon, given in files.items():
        if given.lower().endswith(".npz"):
            raise InputError(
                f"{given}: holds named matrices: give it as the input file, not with --{_OPTION.get(canon, canon.lower())}"
            )
    if path is not None and path.lower().endswith(".npz"):
        from .npy import load_npz

        problem, settings = load_npz(path)
    elif path is not None:
        problem, settings = load_json(path)
    else:
        problem, settings = (
            Problem(matrices={}, origin="CSV input"),
            {},
        )
    for canon, csv_path in files.items():
        if csv_path.lower().endswith(".npy"):
            from .npy import load_npy

            array, row_labels = load_npy(csv_path, canon), None
        else:
            array, row_labels = load_csv(csv_path, canon)
        if canon in ("b_Q", "b_K", "b_V", "b_O", "valid_lens"):
            array = array.reshape(-1)
        problem.matrices[canon] = array
        problem.sources[canon] = display(csv_path)
        rival = {"Q": "W_Q", "K": "W_K", "V": "W_V", "W_Q": "Q", "W_K": "K", "W_V": "V"}.get(canon)
        if rival in problem.matrices and rival not in files:
            del problem.matrices[rival]  # the option wins over the file's way to this matrix
            problem.sources.pop(rival, None)
        if canon == "mask":
            problem.mask_kind = None  # the option's mask replaces the file's
        for who, attr in (("X", "tokens"), ("X_kv", "kv_tokens")):
            if canon == who and row_labels and getattr(problem, attr) is None:
                setattr(problem, attr, row_labels)
                problem.sources[attr] = f"{display(csv_path)} (first column)"
    for name, value in (inline or {}).items():
        if value is None:
            continue
        if name in ("tokens", "kv_tokens"):
            setattr(problem, name, parse_tokens(value, "--" + name.replace("_", "-")))
        else:
            problem.matrices[name] = parse_lens(value, "--" + name.replace("_", "-"))
        problem.sources[name] = "--" + name.replace("_", "-")
    return problem, settings
