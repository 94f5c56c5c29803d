"""Pictures of a run on the terminal, and the same drawing saved as SVG or HTML.

`show` draws on a console that records what it prints, then `export` turns
the recording into SVG or HTML and `write_atomic` writes it (a temporary file
in the target's directory, then `os.replace`), so a failed write never leaves
a partial file nor clobbers the old one.

>>> Pictures(heatmap=True).wanted, Pictures().wanted
(True, False)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..atomic import check_target, write_atomic

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from ..trace import Stage, Trace


@dataclass(frozen=True)
class Pictures:
    """What to draw and where to save it, as given on the command line."""

    heatmap: bool = False
    tokens_view: bool = False
    top: int | None = None
    svg: str | None = None
    html: str | None = None
    full: bool = False  # every row and column of big tables, grids and token views

    @property
    def wanted(self) -> bool:
        """True when any picture option was given."""
        return bool(self.heatmap or self.tokens_view or self.top or self.svg or self.html)


def content_width(console: Console) -> int:
    """The widest line recorded so far, in cells (at least 20)."""
    from rich.cells import cell_len

    text = console.export_text(clear=False)
    return max([20] + [cell_len(line) for line in text.splitlines()])


def export(console: Console, kind: str, title: str) -> str:
    """The recording as an SVG or HTML document, as wide as its widest line."""
    import html

    from rich.console import CONSOLE_HTML_FORMAT
    from rich.terminal_theme import SVG_EXPORT_THEME

    width = console.width
    console.width = content_width(console)
    try:
        if kind == "svg":
            return console.export_svg(title=title, theme=SVG_EXPORT_THEME, clear=False)
        named = html.escape(title).replace("{", "{{").replace("}", "}}")
        page = CONSOLE_HTML_FORMAT.replace("<head>\n", f"<head>\n<title>{named}</title>\n", 1)
        return console.export_html(
            theme=SVG_EXPORT_THEME, inline_styles=True, clear=False, code_format=page
        )
    finally:
        console.width = width


def picture_header(text: str, keys: dict[str, str]) -> list[str]:
    """The table header in short lines, naming only the keys read under another name.

    >>> picture_header("f.json: 3 queries; scale 1\\nread X ← X, W_Q ← w_query", {"X": "X", "W_Q": "w_query"})
    ['f.json: 3 queries', 'scale 1', 'read W_Q ← w_query']
    """
    from .. import i18n
    from .text import COMMA, READ, SEP

    read, comma = i18n._(READ), i18n._(COMMA)
    out: list[str] = []
    for line in text.split("\n"):
        if line.startswith(read):
            renamed = [f"{canon} ← {key}" for canon, key in keys.items() if canon != key]
            out += [read + comma.join(renamed)] if renamed else []
        else:
            out += line.split(i18n._(SEP))
    return out


def draw(
    trace: Trace,
    pictures: Pictures,
    console: Console,
    stages: list[str] | None,
    every: bool,
    precision: int,
) -> None:
    """Print the header, then the heatmaps and the token view asked for (tables if neither)."""
    from rich.text import Text

    from .heatmap import draw_heatmaps, heatmap_stages
    from .tables import render
    from .text import header
    from .tokens import DEFAULT_TOP, draw_token_view

    token_view = pictures.tokens_view or pictures.top is not None
    if not (pictures.heatmap or token_view):
        render(
            trace,
            trace.select(stages or ([] if every else ["weights", "output"])),
            console,
            precision,
            full=pictures.full,
        )
        return
    chosen = heatmap_stages(trace, stages, every) if pictures.heatmap else []
    chosen = [_in_floats(s) for s in chosen]  # an exact run's fractions are shaded as numbers
    for line in picture_header(header(trace), trace.meta["keys"]):
        console.print(Text(line), soft_wrap=True)
    draw_heatmaps(trace, chosen, console, precision, pictures.full)
    if token_view:
        draw_token_view(trace, console, pictures.top or DEFAULT_TOP, precision, pictures.full)


def _in_floats(stage: Stage) -> Stage:
    """The stage with its exact values (fractions, surds) as floats; float stages as they are."""
    import dataclasses

    from ..exact import floats

    if stage.array.dtype != object:
        return stage
    return dataclasses.replace(stage, array=floats(stage.array))


def show(
    trace: Trace,
    pictures: Pictures,
    stages: list[str] | None,
    every: bool,
    precision: int,
    console: Console | None = None,
    page: Callable[[str], str] | None = None,
    title: str | None = None,
) -> None:
    """Draw on the terminal (or ``console``) and save the drawing to the files asked for.

    ``page(drawn)`` turns the drawing's HTML into the page saved by ``--html``
    (the interactive report); ``title`` names the saved files' window.
    """
    from .tables import make_console

    targets = [(p, kind) for p, kind in ((pictures.svg, "svg"), (pictures.html, "html")) if p]
    for path, kind in targets:
        check_target(path, f"--{kind}")
    console = console or make_console()
    console.record = bool(targets)
    draw(trace, pictures, console, stages, every, precision)
    title = title or f"qkv compute {os.path.basename(trace.meta['input'])}"
    for path, kind in targets:
        text = export(console, kind, title)
        write_atomic(path, page(text) if page and kind == "html" else text, f"--{kind}")
