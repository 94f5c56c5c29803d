"""JSON problem files and their entries: key spellings, settings, PyTorch state dicts.

>>> p, settings = parse_json('{"Q": [[1, 0]], "key": [[1, 0]], "V": [[2]], "scale": "none"}')
>>> p.sources["K"], settings["scale"]
('key', 'none')
"""

from __future__ import annotations

import re
from typing import Any

from .. import i18n
from ..errors import InputError, OptionError, closest, one_line, placed
from ..i18n import N_, _
from ..options import MASK_KINDS, SETTINGS, choice
from ..problem import Problem
from .files import decode_json, display, read_text
from .nested import FLOAT_MAX, bad_cell, to_array
from .values import check_labels

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
    # The variants of today's models, by their Hugging Face config names.
    "rope": ("rope",),
    "rope_theta": ("ropetheta",),
    "partial_rotary_factor": ("partialrotaryfactor",),
    "position_ids": ("positionids",),
    "position_offset": ("positionoffset",),
    "sliding_window": ("slidingwindow",),
    "attention_chunk_size": ("attentionchunksize",),
    "qk_norm": ("qknorm",),
    "q_norm": ("qnorm", "qnormweight"),
    "k_norm": ("knorm", "knormweight"),
    "rms_norm_eps": ("rmsnormeps",),
    "rms_norm_unit_offset": ("rmsnormunitoffset",),
    "attn_logit_softcapping": ("attnlogitsoftcapping", "softcap"),
    "sinks": ("sinks",),
    "past_key": ("pastkey", "keycache"),
    "past_value": ("pastvalue", "valuecache"),
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
#: The key of a problem file that sets how finely ``qkv check`` marks it (read by `precision_entry`).
PRECISION_KEYS = ("precision", "markingprecision")
#: The settings a problem file may carry (the other keys are matrices and labels).
FILE_SETTINGS = ("scale", "layout", "weights_layout", "heads", "kv_heads", "mask_polarity",
                 "empty_rows", "similarity", "normalize", "temperature", "rope", "rope_theta",
                 "partial_rotary_factor", "position_offset", "sliding_window",
                 "attention_chunk_size", "qk_norm", "rms_norm_eps", "rms_norm_unit_offset",
                 "attn_logit_softcapping", "alibi")  # fmt: skip
#: Settings that a Hugging Face config may write as null: "not in force".
NULLABLE = ("rope", "rope_theta", "partial_rotary_factor", "position_offset", "sliding_window",
            "attention_chunk_size", "qk_norm", "rms_norm_eps", "attn_logit_softcapping")  # fmt: skip
#: Vectors are read with the rules of an entry of the same shape (b_O: a list of numbers).
SHAPED_AS = {"q_norm": "b_O", "k_norm": "b_O", "sinks": "b_O", "position_ids": "b_Q"}
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


def load_json(path: str) -> tuple[Problem, dict[str, Any]]:
    """Read a JSON problem file (``-`` = stdin): the matrices and the settings it carries."""
    return parse_json(read_text(path), display(path))


def parse_json(text: str, origin: str = "<input>") -> tuple[Problem, dict[str, Any]]:
    """Parse JSON text into a `Problem` and a dict of settings (scale, heads, …).

    Text that is not JSON but reads as a CSV matrix is pointed to ``--x``.
    """
    from .values import ascii_outside_strings

    try:
        doc = decode_json(ascii_outside_strings(text), origin)  # ［１，２］ as typed in Chinese
    except InputError as e:
        if looks_like_csv(text):
            raise InputError(placed(origin, i18n._(CSV_AS_INPUT))) from None
        raise e from None
    if not isinstance(doc, dict):
        raise InputError(
            _(
                "{origin}: the top level must be an object with keys such as X, W_Q, W_K, W_V"
            ).format(origin=origin)
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
                raise InputError(
                    _("{origin}: keys {v!r} and {key!r} both give {tkey}").format(
                        origin=origin, v=torch[tkey][0], key=key, tkey=tkey
                    )
                )
            torch[tkey] = (key, value)
            continue
        if key.startswith("_") or sq in IGNORED or sq in PRECISION_KEYS:
            continue
        canon = _LOOKUP.get(sq)
        if sq == "alibi" and (isinstance(value, bool) or value is None):
            canon = "alibi"  # alibi: true = ALiBi from the head count; a matrix is an attn_bias
        if canon is None:
            raise InputError(placed(origin, unknown_key(key)))
        if canon in found:
            raise InputError(
                _("{origin}: keys {v!r} and {key!r} both give {canon}").format(
                    origin=origin, v=found[canon][0], key=key, canon=canon
                )
            )
        found[canon] = (key, value)
    settings = _settings(found, origin)
    problem = Problem(matrices={}, origin=origin)
    problem.setting_names = {c: one_line(found[c][0]) for c in settings}
    if torch:
        _torch_state_dict(torch, found, settings, problem, origin)
    mask = found.get("mask")
    if mask is not None and isinstance(mask[1], str):
        problem.mask_kind = _setting(origin, lambda: choice(one_line(mask[0]), mask[1], MASK_KINDS))
        problem.sources["mask"] = one_line(mask[0])
        del found["mask"]
    for canon in ("tokens", "kv_tokens"):
        if canon in found:
            key, value = found.pop(canon)
            setattr(problem, canon, _labels(value, f"{origin}: {key}"))
            problem.sources[canon] = one_line(key)
    for canon, (key, value) in found.items():
        if canon in FILE_SETTINGS:
            continue
        problem.matrices[canon] = to_array(value, key, origin, SHAPED_AS.get(canon, canon))
        problem.sources[canon] = one_line(key)  # printed in the header: one line, whatever the key
    return problem, settings


def precision_entry(text: str, origin: str) -> tuple[str, Any] | None:
    """The marking precision a JSON problem file sets (its key and raw value), or None.

    >>> precision_entry('{"Q": [[1]], "precision": 3}', "p.json")
    ('precision', 3)
    """
    doc = decode_json(text, origin)
    if not isinstance(doc, dict):
        return None
    for key, value in doc.items():
        if squash(key) in PRECISION_KEYS:
            return key, value
    return None


def _setting(origin: str, check: Any) -> Any:
    """``check()``, its error naming the file (the check's message names the key)."""
    try:
        return check()
    except OptionError as e:
        raise InputError(placed(origin, e)) from None


def _settings(found: dict[str, tuple[str, Any]], origin: str) -> dict[str, Any]:
    """Validate the settings a file carries; messages name the file and key."""
    out = {}
    for canon in FILE_SETTINGS:
        if canon in found:
            key, value = found[canon]
            if value is None and canon in NULLABLE:
                continue  # null: the variant is off, as in a Hugging Face config
            if canon == "alibi" and value is None:
                continue
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > FLOAT_MAX:
                raise InputError(
                    _("{origin}: {key}: {bad_cell} is too large for a float").format(
                        origin=origin, key=key, bad_cell=bad_cell(value)
                    )
                )
            out[canon] = _setting(
                origin, lambda c=SETTINGS[canon], v=value, k=key: c(v, one_line(k))
            )
    return out


#: A CSV file given where a problem file goes.
CSV_AS_INPUT = N_(
    "holds one CSV matrix, not a JSON problem: give each matrix with its option, "
    "--x FILE --wq FILE --wk FILE --wv FILE (or --q, --k, --v)"
)


def looks_like_csv(text: str) -> bool:
    """Whether text that is not JSON is a CSV matrix: its first line is numbers (or labels) in cells.

    >>> looks_like_csv("1,0,1\\n0,2,0\\n"), looks_like_csv("token;a;b\\nx;1;2"), looks_like_csv('{"X": ')
    (True, True, False)
    """
    import re

    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines or lines[0].lstrip()[:1] in ("{", "[", '"'):
        return False
    cells = re.split(r"[,;\t ]+", lines[-1].strip())
    numbers = 0
    for cell in cells:
        try:
            float(cell.replace(",", "."))
            numbers += 1
        except ValueError:
            pass
    return numbers >= max(1, len(cells) - 1)


def unknown_key(key: str) -> str:
    """The message for a key a problem file may not hold: the nearest known key, or every key.

    >>> unknown_key("scael")
    "unknown key 'scael' (did you mean scale?)"
    """
    shown = one_line(key)
    near = closest(squash(key), list(_NEAR))
    if near is not None:
        return _("unknown key {key!r} (did you mean {near}?)").format(key=shown, near=_NEAR[near])
    optional = [k for k in ALIASES if k not in REQUIRED]
    return _(
        "unknown key {key!r}: a problem holds X, W_Q, W_K, W_V (or Q, K, V) and may hold "
        "{optional}, precision (for qkv check) or PyTorch's in_proj_weight, "
        "in_proj_bias, out_proj.weight, out_proj.bias; keys starting with _ are comments"
    ).format(key=shown, optional=", ".join(optional))


REQUIRED = ("X", "Q", "K", "V", "W_Q", "W_K", "W_V")
#: Every spelling a key is matched in, to the name a suggestion gives.
_NEAR = _LOOKUP | {k: "precision" for k in PRECISION_KEYS} | {k: v for k, v in TORCH_KEYS.items()}


def _labels(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not value:
        raise InputError(_("{where}: must be a non-empty list of labels").format(where=where))
    for i, t in enumerate(value, 1):
        if isinstance(t, (list, dict)) or t is None:
            raise InputError(
                _("{where}: label {i} is not text or a number").format(where=where, i=i)
            )
        if isinstance(t, int) and not isinstance(t, bool) and t.bit_length() > 10_000:
            raise InputError(
                _("{where}: label {i} is a number of thousands of digits").format(where=where, i=i)
            )
    return check_labels([str(t) for t in value], where)


def _torch_state_dict(
    torch: dict[str, tuple[str, Any]], found: dict, settings: dict, problem: Problem, origin: str
) -> None:
    """Unpack PyTorch MultiheadAttention weights: ``in_proj_weight`` is q, k, v stacked, (out, in)."""
    if settings.get("weights_layout") == "in-out":
        raise InputError(
            _(
                "{origin}: PyTorch keys such as {next!r} hold (out, in) weights but weights_layout is in-out"
            ).format(origin=origin, next=next(iter(torch)))
        )
    settings["weights_layout"] = "out-in"
    problem.torch_key = one_line(next(iter(torch.values()))[0])
    for canon in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
        if canon in found:
            raise InputError(
                _("{origin}: both {v!r} and PyTorch weights give {canon}").format(
                    origin=origin, v=found[canon][0], canon=canon
                )
            )
    for packed, names in (
        ("in_proj_weight", ("W_Q", "W_K", "W_V")),
        ("in_proj_bias", ("b_Q", "b_K", "b_V")),
    ):
        if packed in torch:
            key, value = torch.pop(packed)
            a = to_array(value, key, origin, "W_Q" if packed.endswith("weight") else "b_O")
            if a.shape[0] % 3:
                raise InputError(
                    _("{origin}: {key} has {v} rows, not 3 equal blocks (q, k, v)").format(
                        origin=origin, key=key, v=a.shape[0]
                    )
                )
            e = a.shape[0] // 3
            for i, canon in enumerate(names):
                problem.matrices[canon] = a[i * e : (i + 1) * e]
                problem.sources[canon] = f"{one_line(key)}[{i * e}:{(i + 1) * e}]"
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
                    _("{origin}: both {key!r} and {v!r} give {canon}").format(
                        origin=origin, key=key, v=problem.sources[canon], canon=canon
                    )
                )
            problem.matrices[canon] = to_array(value, key, origin, canon)
            problem.sources[canon] = one_line(key)
