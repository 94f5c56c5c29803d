"""The whole traced solution as Markdown or as a LaTeX document (bmatrix), ready to paste.

Plain text, no rich. Exact runs (``--exact``) show fractions and surds.

>>> tex_formula("scaled = scores × 1/√3")
'\\\\text{scaled} = \\\\text{scores} \\\\times 1 / \\\\sqrt{3}'
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..i18n import _

if TYPE_CHECKING:
    from ..trace import Stage, Trace

#: Chinese (CJK ideographs and their punctuation) in a LaTeX formula goes inside \text{…}.
_CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]+")

_TOKEN = re.compile(r"[A-Za-z]+(?:_[A-Za-z0-9]+)*|√\d+|−∞|\d+(?:\.\d+)?|\S")
#: Each symbol qkv writes, in LaTeX math (in text, it goes between dollars).
_SYMBOLS = {"·": r"\cdot", "ᵀ": r"^{\top}", "×": r"\times", "…": r"\ldots", "−": "-",
            "Σ": r"\Sigma", "∞": r"\infty", "√": r"\surd", "←": r"\leftarrow",
            "→": r"\rightarrow", "≤": r"\leq", "≥": r"\geq", "≈": r"\approx", "≠": r"\neq",
            "±": r"\pm", "÷": r"\div", "⌊": r"\lfloor", "⌋": r"\rfloor", "‖": r"\|",
            "⊙": r"\odot", "⋮": r"\vdots", "∂": r"\partial", "½": r"\tfrac{1}{2}",
            "θ": r"\theta", "δ": r"\delta", "π": r"\pi", "ρ": r"\rho", "σ": r"\sigma",
            "Φ": r"\Phi", "ε": r"\varepsilon", "²": "^{2}", "ᵢ": "_{i}", "ⱼ": "_{j}", "ₖ": "_{k}",
            **{chr(0x2080 + d): f"_{{{d}}}" for d in range(10)}}  # fmt: skip
#: Dashes, in text only.
_DASHES = {"—": "---", "–": "--"}


def tex_formula(formula: str) -> str:
    """A stage formula (``scores = Q·Kᵀ``) in LaTeX math."""
    out: list[str] = []
    for tok in re.findall(f"{_CJK.pattern}|{_TOKEN.pattern}", formula):
        if _CJK.fullmatch(tok):
            out.append(r"\text{" + tok + "}")
        elif tok.startswith("√"):
            out.append(rf"\sqrt{{{tok[1:]}}}")
        elif tok == "−∞":
            out.append(r"-\infty")
        elif tok in _SYMBOLS:
            out.append(_SYMBOLS[tok])
        elif re.fullmatch(r"[A-Z](?:_[A-Za-z0-9]+)?", tok):
            base, _sep, low = tok.partition("_")
            out.append(f"{base}_{{{low}}}" if low else base)
        elif re.fullmatch(r"[A-Za-z_0-9]+", tok) and not tok.isdigit():
            if out and out[-1].startswith(r"\text{"):
                out[-1] = out[-1][:-1] + " " + tok.replace("_", r"\_") + "}"
            else:
                out.append(r"\text{" + tok.replace("_", r"\_") + "}")
        else:
            out.append(tok)
    return " ".join(out)


def _cell(v: Any, precision: int, tex: bool, sci: bool | None = None) -> str:
    """One cell, in its table's notation ``sci``; LaTeX writes 4.07e-03 as 4.07 \\times 10^{-3}.

    >>> _cell(0.00407, 2, True, sci=True), _cell(0.5, 2, False, sci=False)
    ('4.07 \\\\times 10^{-3}', '0.50')
    """
    from ..exact import is_exact, latex, text
    from .text import fmt

    if is_exact(v):
        return latex(v) if tex else text(v)
    s = fmt(float(v), precision, sci)
    if tex:
        s = re.sub(r"e([+-])(\d+)$", lambda m: rf" \times 10^{{{int(m.group(1) + m.group(2))}}}", s)
        return s.replace("−∞", r"-\infty").replace("NaN", r"\text{NaN}")
    return s


def _title(stage: Stage, suffix: str) -> tuple[str, str]:
    """The stage name with its batch/head suffix, and the right-hand side of its formula."""
    name = stage.name + (f" [{suffix}]" if suffix else "")
    _lhs, _sep, rhs = stage.formula.partition(" = ")
    return name, rhs if rhs else stage.formula


def to_markdown(trace: Trace, stages: list[Stage], precision: int = 4) -> str:
    """Markdown: a heading and a table per matrix, token labels on rows and columns."""
    from ..errors import shape_str
    from .text import header, matrices, scientific

    out = ["# " + _("Attention, step by step"), ""]
    out += [line + "  " for line in header(trace).splitlines()]
    for stage in stages:
        for suffix, matrix in matrices(stage, trace):
            name, rhs = _title(stage, suffix)
            out += ["", f"## {name} = {rhs} ({shape_str(matrix.shape)})", ""]
            cols = trace.labels(stage.cols, matrix.shape[1])
            rows = trace.labels(stage.rows, matrix.shape[0])
            out.append("| | " + " | ".join(_md(c) for c in cols) + " |")
            out.append("|---|" + "---:|" * len(cols))
            sci = scientific(matrix, precision)  # one notation per table
            for label, row in zip(rows, matrix):
                cells = [_cell(v, precision, False, sci) for v in row]
                out.append(f"| **{_md(label)}** | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _md(text: str) -> str:
    return text.replace("|", r"\|")


def _tex_text(text: str) -> str:
    """Plain text for a LaTeX paragraph: specials escaped, symbols in math."""
    specials = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\~{}", "^": r"\^{}"}  # fmt: skip

    plain = specials | _DASHES | {"−": "-"}  # in text as they are; other symbols in math
    return "".join(
        plain[ch] if ch in plain else f"${_SYMBOLS[ch]}$" if ch in _SYMBOLS else ch for ch in text
    )


def to_latex(trace: Trace, stages: list[Stage], precision: int = 4) -> str:
    """A complete LaTeX document: one displayed equation with a bmatrix per matrix."""
    from .text import header, matrices, scientific

    out = [r"\documentclass{article}", r"\usepackage{amsmath}"]
    lines = [_tex_text(line) + r"\\" for line in header(trace).splitlines()]
    if trace.tokens:
        tokens = _tex_text(", ".join(trace.tokens))
        lines.append(_("Rows are the queries {tokens}.").format(tokens=tokens) + r"\\")
    title = _("Attention, step by step")
    if _CJK.search(title + "".join(lines)) or any(_CJK.search(s.formula) for s in stages):
        out += [
            "% Chinese text: compile with xelatex (the xeCJK package, e.g. from TeX Live's",
            "% texlive-lang-chinese, with a CJK font such as Noto Serif CJK SC or Fandol)",
            r"\usepackage{xeCJK}",
        ]
    out += [r"\setcounter{MaxMatrixCols}{30}", r"\begin{document}", r"\section*{" + title + "}", ""]
    out += lines
    for stage in stages:
        for suffix, matrix in matrices(stage, trace):
            _name, rhs = _title(stage, suffix)
            head = tex_formula(stage.name)
            if suffix:
                head += r"^{(\text{" + _tex_text(suffix) + "})}"
            sci = scientific(matrix, precision)
            rows = [" & ".join(_cell(v, precision, True, sci) for v in row) for row in matrix]
            out += [
                "",
                r"\[",
                f"{head} = {tex_formula(rhs)} =",
                r"\begin{bmatrix}",
                " \\\\\n".join(rows),
                r"\end{bmatrix}",
                r"\]",
            ]
    out += ["", r"\end{document}"]
    return "\n".join(out) + "\n"
