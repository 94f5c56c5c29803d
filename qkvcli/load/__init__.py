"""Read a problem: a JSON or ``.npz`` file (or stdin) with matrices from CSV/NPY files on top.

Every error names the file and the place in it: key, row, column, the text.
The modules: `files` (reading bytes and text), `document` (JSON entries and
state dicts), `nested` (nested lists → arrays), `delimited` (CSV/TSV),
`npy` (numpy's files), `values` (option values).
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..i18n import N_, Spoken, _
from ..problem import Problem
from .delimited import load_csv, parse_csv
from .document import load_json, parse_doc, parse_json
from .files import decode_json, display, open_input, read_bytes, read_text
from .nested import to_array
from .values import mask_option, parse_lens, parse_tokens

__all__ = ["decode_json", "display", "load", "load_csv", "load_json", "mask_option",
           "open_input", "parse_csv", "parse_doc", "parse_json", "parse_lens", "parse_tokens",
           "read_bytes", "read_text", "to_array"]  # fmt: skip

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
            _("only one input can be read from stdin (-), not {join}").format(
                join=_(" and ").join(stdin_users)
            )
        )
    if path is None and not files:
        raise InputError(
            _(
                "no input: give a JSON file (or - for stdin), or CSV files with --x/--wq/--wk/--wv or --q/--k/--v"
            )
        )
    if path is not None and path.lower().endswith(".npy"):
        raise InputError(
            _("{path}: one matrix: give it with an option such as --x, --wq or --q").format(
                path=path
            )
        )
    for canon, given in files.items():
        if given.lower().endswith(".npz"):
            raise InputError(
                _(
                    "{given}: holds named matrices: give it as the input file, not with --{get}"
                ).format(given=given, get=_OPTION.get(canon, canon.lower()))
            )
    if path is not None and path.lower().endswith(".npz"):
        from .npy import load_npz

        problem, settings = load_npz(path)
    elif path is not None:
        problem, settings = load_json(path)
    else:
        problem, settings = (
            Problem(matrices={}, origin=Spoken(N_("CSV input"))),
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
                problem.sources[attr] = Spoken(N_("{path} (first column)"), path=display(csv_path))
    for name, value in (inline or {}).items():
        if value is None:
            continue
        if name in ("tokens", "kv_tokens"):
            setattr(problem, name, parse_tokens(value, "--" + name.replace("_", "-")))
        else:
            problem.matrices[name] = parse_lens(value, "--" + name.replace("_", "-"))
        problem.sources[name] = "--" + name.replace("_", "-")
    return problem, settings
