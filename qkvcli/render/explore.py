"""The interactive report (``--html``): one self-contained HTML file to explore a run in a browser.

Everything is inline — the data as JSON, the style, a small script — so the
page works offline, from a file, with no network. It shows the query × key
stages of every head (and layer, for a model) as heatmaps; hovering or
clicking a cell shows its arithmetic, written beforehand by qkv's own
`explain.explain`, so every number on the page is qkv's; the token view ranks
the keys of the chosen query; an overview grid shows every layer and head
with its mean entropy. Below, the drawing as the terminal printed it.

Pages stay small: grids of at most `MAX_TOKENS` tokens, and at most
`MAX_EXPLAINED` cells explained (the weights of every head first; a cell of
scores or scaled falls back to its weight's explanation, which passes
through it).

>>> key(0, "weights", 0, 2, 1, 3)
'0|weights|0|2|1|3'
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .. import i18n
from ..i18n import N_
from ..trace import PER_HEAD, SQUARE
from .text import fmt, fmt_row, header, scientific

if TYPE_CHECKING:
    from ..options import Options
    from ..problem import Problem
    from ..trace import Stage, Trace

#: Grids larger than this (queries or keys) are not explored in the page.
MAX_TOKENS = 64
#: Cells whose explanation the page holds, at most, and their text in characters.
MAX_EXPLAINED = 6000
MAX_CHARS = 8_000_000
#: Stages with more columns than this are left out of the page (a model's Q is 384 wide).
MAX_COLUMNS = 48


@dataclass
class View:
    """One run the page shows: ``label`` (``layer 2``; empty for a single problem), its
    problem, options and trace.

    """

    label: str
    problem: Problem
    options: Options
    trace: Trace


def quick(view: View) -> Problem | None:
    """The same problem from its Q, K and V as qkv computed them (None when masks or another
    layout make that differ): the per-head stages' arithmetic starts at Q, K and V, so it
    explains them in the same words and numbers, without projecting X again.
    """
    import numpy as np

    from ..problem import Problem

    p, o = view.problem, view.options
    others = ("X_kv", "past_key", "past_value", "mask", "attn_bias", "valid_lens",
              "key_padding_mask")  # fmt: skip
    if (
        o.exact
        or o.layout != "rows"
        or o.mask
        or p.mask_kind
        or any(k in p.matrices for k in others)
    ):
        return None
    mats = {k: np.asarray(view.trace[k]) for k in ("Q", "K", "V")}
    return Problem(mats, tokens=p.tokens, kv_tokens=p.kv_tokens, origin=p.origin)


def key(view: int, stage: str, item: int, head: int | None, i: int, j: int) -> str:
    """The page's name for one cell (0-based), as its script looks explanations up."""
    return f"{view}|{stage}|{item}|{'-' if head is None else head}|{i}|{j}"


def narrow(trace: Trace) -> list[Stage]:
    """The stages the page may draw besides the query × key ones: those narrow enough."""
    return [s for s in trace.stages.values() if s.name not in SQUARE and s.shape[1] <= MAX_COLUMNS]


def cells(stage: Stage) -> int:
    """How many cells a stage has (every head and batch item)."""
    import math

    return math.prod(stage.array.shape)


def explorable(trace: Trace) -> bool:
    """True when the run's grids are small enough for the page."""
    n, m = trace.stages["weights"].shape
    return max(n, m) <= MAX_TOKENS


def _places(stage: Stage, trace: Trace) -> list[tuple[tuple[int, ...], int, int | None]]:
    """Each matrix of a stage: its index in the array, its batch item and head (None: not per head)."""
    import numpy as np

    out = []
    for idx in np.ndindex(*stage.array.shape[:-2]):
        item = idx[0] if trace.batched else 0
        head = idx[-1] if stage.per_head else None
        out.append((idx, item, head))
    return out


def stage_data(stage: Stage, trace: Trace, precision: int) -> dict[str, Any]:
    """A stage for the page: each matrix's cell texts and shade levels (``x`` = masked), the legend."""
    import numpy as np

    from ..focus import allowed, blocked_cells
    from .heatmap import MASKED, shades_for

    array = np.asarray(stage.array, dtype=float)  # exact runs hold fractions
    square = stage.name in SQUARE
    shades = shades_for(replace(stage, array=array)) if square else None
    blocked = blocked_cells(array, allowed(trace)) if stage.name == "weights" else None
    mats = []
    for idx, item, head in _places(stage, trace):
        a = array[idx]
        sci = scientific(a, precision)  # one notation for the matrix
        cells, levels = [], []
        for i, row in enumerate(a):
            texts = fmt_row(row, precision, sci)
            for j, v in enumerate(row.tolist()):
                if blocked is not None and blocked[idx][i, j]:
                    cells.append(MASKED)
                    levels.append("x")
                elif not np.isfinite(v):
                    cells.append(fmt(v, precision))
                    levels.append("x")
                else:
                    cells.append(texts[j])
                    levels.append(str(shades.level(v)) if shades else "-")
        mats.append({"item": item, "head": head, "cells": cells, "levels": "".join(levels)})
    legend = None
    if shades is not None and shades.hi > shades.lo:
        e = [f"{v:.{max(precision, 1)}g}" for v in shades.edges()]
        legend = [f"{e[k]}–{e[k + 1]}" for k in range(len(e) - 1)]
    n, m = stage.shape
    return {
        "name": stage.name,
        "formula": stage.formula,
        "square": square,
        "per_head": stage.per_head,
        "rows": trace.labels(stage.rows, n, short=True),
        "cols": trace.labels(stage.cols, m, short=True),
        "matrices": mats,
        "legend": legend,
    }


def token_view(trace: Trace, precision: int) -> list[dict[str, Any]]:
    """For each batch item and head, each query's keys heaviest first, with its entropy."""
    import numpy as np

    from ..focus import allowed, blocked_cells, entropy_bits, ranked

    stage = trace.stages["weights"]
    array = np.asarray(stage.array, dtype=float)
    blocked = blocked_cells(array, allowed(trace))
    softmax = trace.meta["normalize"] == "softmax"
    out = []
    for idx, item, head in _places(stage, trace):
        rows = []
        for i, row in enumerate(array[idx]):
            order = ranked(row, blocked[idx][i])
            bits = entropy_bits(row[order]) if softmax and order else None
            rows.append(
                {
                    "entropy": None if bits is None else fmt(bits, precision),
                    "ranked": [[j, fmt(float(row[j]), precision), float(row[j])] for j in order],
                    "masked": [int(j) for j in np.flatnonzero(blocked[idx][i])],
                }
            )
        out.append({"item": item, "head": head, "rows": rows})
    return out


@dataclass
class Explained:
    """What the page can explain: the text of each cell, and the stages drawn.

    ``complete`` is False when some weights had no room (a cell of scores,
    scaled or masked is covered by its weight's explanation, which passes
    through it); stages left out of ``drawn`` had no room at all.
    """

    texts: dict[str, str]
    drawn: list[list[str]]  # per view, the stage names the page draws
    complete: bool


def explanations(views: list[View], precision: int, selected: int) -> Explained:
    """The lines of ``qkv explain`` for the cells of the page, within `MAX_EXPLAINED` and `MAX_CHARS`.

    In turn: the weights of every view (the selected one first); then each
    other stage whole or not at all — the narrow ones (drawn only when all
    their cells fit) and scores, scaled, masked (which fall back on the weights).
    """
    order = [selected] + [v for v in range(len(views)) if v != selected]
    texts: dict[str, str] = {}
    seen: set[str] = set()  # lines already held: the page stores each distinct line once
    fast = [quick(v) for v in views]
    budget = {"cells": MAX_EXPLAINED, "chars": MAX_CHARS}

    def explain_stage(v: int, name: str, whole: bool) -> bool:
        """Explain every cell of a stage; with ``whole``, only when it fits entirely."""
        from ..explain import explain

        view = views[v]
        t = view.trace
        stage = t.stages[name]
        if whole and cells(stage) > budget["cells"]:
            return False
        problem = fast[v] if fast[v] is not None and name in PER_HEAD else view.problem
        n, m = stage.shape
        added: dict[str, str] = {}
        used = 0
        for _, item, head in _places(stage, t):
            for i in range(n):
                for j in range(m):
                    if len(added) >= budget["cells"] or used >= budget["chars"]:
                        if whole:
                            return False
                        texts.update(added)
                        budget["cells"] -= len(added)
                        budget["chars"] -= used
                        return False
                    cell = f"{name}[{i + 1},{j + 1}]"
                    h = None if head is None else head + 1
                    b = item + 1 if t.batched else None
                    said = explain(problem, view.options, cell, h, b, precision)
                    used += sum(len(line) + 1 for line in said if line not in seen)
                    seen.update(said)
                    text = "\n".join(said)
                    added[key(v, name, item, head, i, j)] = text
        texts.update(added)
        budget["cells"] -= len(added)
        budget["chars"] -= used
        return True

    complete = all([explain_stage(v, "weights", whole=False) for v in order])
    drawn = [
        [s.name for s in views[v].trace.stages.values() if s.name in SQUARE]
        for v in range(len(views))
    ]
    for v in order:
        for stage in narrow(views[v].trace):
            if complete and explain_stage(v, stage.name, whole=True):
                drawn[v].append(stage.name)
    for v in order:
        for name in ("scores", "scaled", "masked"):
            if complete and name in views[v].trace.stages:
                explain_stage(v, name, whole=True)
    return Explained(texts, drawn, complete)


def view_data(view: View, precision: int, drawn: list[str]) -> dict[str, Any]:
    """One view for the page: header, the stages ``drawn``, token view, each head's mean entropy."""
    from .overview import head_entropies

    t = view.trace
    ent = head_entropies(t)
    return {
        "label": view.label,
        "header": header(t).split("\n"),
        "heads": t.heads,
        "items": int(t.meta["batch"] or 1),
        "stages": [stage_data(s, t, precision) for s in t.stages.values() if s.name in drawn],
        "tokens": token_view(t, precision),
        "entropy": None if ent is None else [[fmt(float(v), precision) for v in e] for e in ent],
        "entropy2": None if ent is None else [[f"{float(v):.2f}" for v in e] for e in ent],
    }


def report_data(
    views: list[View], precision: int, selected: tuple[int, int] = (0, 0), intro: list[str] = ()
) -> dict[str, Any]:
    """Everything the page's script draws from, as JSON-ready values."""
    from .heatmap import INK, PALETTE

    notes: list[str] = []
    usable = [v for v in views if explorable(v.trace)]
    if len(usable) < len(views):
        n, m = views[0].trace.stages["weights"].shape
        return {
            "views": [],
            "intro": list(intro),
            "notes": [
                i18n._(
                    "this run is {n}×{m}: the page explores grids of at most {most} tokens; "
                    "the drawing below is what the terminal showed"
                ).format(n=n, m=m, most=MAX_TOKENS)
            ],
        }
    done = explanations(views, precision, selected[0])
    if not done.complete:
        notes.append(
            i18n._(
                "the page holds the arithmetic of {n} weights (at most {most} cells): "
                "for the others, save the problem and run qkv explain"
            ).format(n=len(done.texts), most=MAX_EXPLAINED)
        )
    return {
        "intro": list(intro),
        "notes": notes,
        "precision": precision,
        "palette": list(PALETTE),
        "ink": list(INK),
        "selected": {"view": selected[0], "head": selected[1]},
        "views": [view_data(v, precision, d) for v, d in zip(views, done.drawn)],
        "explain": shared_lines(done.texts),
        **script_words(),
    }


def shared_lines(texts: dict[str, str]) -> dict[str, Any]:
    """Cell texts as indices into one list of distinct lines (a row's softmax line is shared).

    >>> shared_lines({"a": "x\\ny", "b": "x\\nz"})
    {'lines': ['x', 'y', 'z'], 'cells': {'a': [0, 1], 'b': [0, 2]}}
    """
    index: dict[str, int] = {}
    cells = {}
    for k, text in texts.items():
        cells[k] = [index.setdefault(line, len(index)) for line in text.split("\n")]
    return {"lines": list(index), "cells": cells}


def page(
    views: list[View],
    drawn: str,
    precision: int,
    selected: tuple[int, int] = (0, 0),
    intro: list[str] = (),
) -> str:
    """The report: rich's HTML of the drawing (``drawn``) with the explorer put in before it."""
    data = report_data(views, precision, selected, intro)
    blob = json.dumps(data, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")
    explorer = speak(EXPLORER).replace("{data}", blob)
    head, sep, body = drawn.partition("<body>")
    if not sep:  # not rich's page: put the explorer first
        return STYLE + explorer + drawn
    pre, close, rest = body.partition("</body>")
    terminal = speak('<h2 class="qkv-h">As the terminal drew it</h2>') + pre
    return head.replace("</head>", STYLE + "</head>", 1) + sep + explorer + terminal + close + rest


#: The words of the page around the data, each written in it as ``>words<`` or ``"words"``.
WORDS = (
    N_("qkv: explore the attention"),
    N_("Every layer and head"),
    N_(
        "under each head: the mean entropy of its query rows in bits (0 = each query looks at "
        "one key); click a head to open it"
    ),
    N_("Arithmetic of the cell"),
    N_("hover or click a cell"),
    N_("Token view"),
    N_("As the terminal drew it"),
)


#: The words the page's script writes (``tr("head {h} of {n}", …)`` in it), placeholders kept.
SCRIPT_WORDS = (
    N_("layer"), N_("head"), N_("item"), N_("stage"), N_("heads"), N_("head {h}"),
    N_(": mean entropy {e} bits"), N_("head {h} of {n}"), N_("shade = {stage}:"),
    N_("(the arithmetic of weights[{i},{j}], which passes through this cell)"),
    N_("no arithmetic kept for this cell in the page: run qkv explain on the problem"),
    N_(" (pinned: click again to unpin)"), N_("pick a cell of a query × key stage"),
    N_("query {i} ({token})"), N_(": entropy {e} bits"), N_("masked: {keys}"),
)  # fmt: skip


def script_words() -> dict[str, Any]:
    """``{"words": {English: translation}}`` for the page's script; nothing in English.

    >>> script_words()
    {}
    """
    if i18n.language() == "en":
        return {}
    return {"words": {w: i18n._(w) for w in SCRIPT_WORDS}}


def speak(html: str) -> str:
    """The page's own words (`WORDS`) in the language spoken; the data is translated where made.

    >>> speak("<h2>Token view</h2>")
    '<h2>Token view</h2>'
    """
    if i18n.language() == "en":
        return html
    import html as markup

    for words in WORDS:
        said = markup.escape(i18n._(words), quote=False)
        html = html.replace(f">{words}<", f">{said}<").replace(f'"{words}"', json.dumps(said))
    return html


STYLE = """<style>
#qkv { font: 14px/1.4 system-ui, sans-serif; color: #e8e8e8; max-width: 1400px; }
#qkv h1, .qkv-h { font-size: 18px; margin: 12px 0 4px; color: #e8e8e8; font-family: system-ui, sans-serif; }
#qkv .intro, #qkv .note { color: #b8b8b8; margin: 2px 0; font-family: monospace; white-space: pre-wrap; }
#qkv .note { color: #f0c674; }
#qkv .bar { display: flex; flex-wrap: wrap; gap: 4px; align-items: center; margin: 6px 0; }
#qkv .bar b { min-width: 56px; }
#qkv button { background: #3a3a3a; color: #e8e8e8; border: 1px solid #555; border-radius: 4px;
  padding: 2px 8px; cursor: pointer; font: inherit; }
#qkv button.on { background: #21918c; border-color: #5ec962; color: #000; }
#qkv .main { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
#qkv table.grid { border-collapse: collapse; font-family: monospace; font-size: 13px; }
#qkv table.grid th { padding: 2px 6px; font-weight: bold; white-space: nowrap; }
#qkv table.grid td { padding: 3px 6px; text-align: right; cursor: pointer; border: 2px solid transparent; }
#qkv table.grid td.x { color: #888; text-align: center; }
#qkv table.grid td.picked { border-color: #ff5f5f; }
#qkv table.grid th.picked { color: #ff8f8f; }
#qkv .legend span { display: inline-block; padding: 0 6px; margin-right: 4px; font-family: monospace; }
#qkv .side { flex: 1 1 480px; min-width: 420px; }
#qkv pre.explain { background: #1e1e1e; border: 1px solid #555; padding: 8px; white-space: pre-wrap;
  word-break: break-word; min-height: 60px; font-size: 13px; margin: 4px 0; }
#qkv .tokens div.row { font-family: monospace; display: flex; gap: 8px; align-items: center; }
#qkv .tokens .w { display: inline-block; height: 12px; background: #21918c; }
#qkv .overview { display: grid; gap: 6px 10px; align-items: center; margin: 6px 0; }
#qkv .overview canvas { image-rendering: pixelated; cursor: pointer; border: 2px solid transparent; }
#qkv .overview canvas.on { border-color: #ff5f5f; }
#qkv .overview .cap { font-family: monospace; font-size: 11px; color: #b8b8b8; text-align: center; }
#qkv .overview .lab { font-family: monospace; font-weight: bold; }
</style>
"""

EXPLORER = """<div id="qkv">
<h1>qkv: explore the attention</h1>
<div id="qkv-intro"></div>
<div id="qkv-overview-box"><h2 class="qkv-h">Every layer and head</h2>
<div class="intro">under each head: the mean entropy of its query rows in bits (0 = each query looks at one key); click a head to open it</div>
<div id="qkv-overview" class="overview"></div></div>
<div id="qkv-controls"></div>
<div id="qkv-header"></div>
<div class="main" id="qkv-main">
<div><div id="qkv-title" class="intro"></div><table id="qkv-grid" class="grid"></table>
<div id="qkv-legend" class="legend"></div></div>
<div class="side"><h2 class="qkv-h">Arithmetic of the cell</h2><div id="qkv-cell" class="intro">hover or click a cell</div>
<pre id="qkv-explain" class="explain"></pre>
<h2 class="qkv-h">Token view</h2><div id="qkv-tokens" class="tokens"></div></div>
</div>
</div>
<script type="application/json" id="qkv-data">{data}</script>
<script>
(function () {
"use strict";
const D = JSON.parse(document.getElementById("qkv-data").textContent);
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => { const e = document.createElement(tag);
  if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };
const S = { view: 0, head: 0, item: 0, stage: "weights", cell: null, pinned: false };
const tr = (k, a) => ((D.words || {})[k] || k).replace(/\\{(\\w+)\\}/g,
  (m, n) => (a && n in a ? String(a[n]) : m));
function lines(box, texts, cls) { box.replaceChildren(...texts.map((t) => el("div", cls, t))); }
lines($("qkv-intro"), D.intro || [], "intro");
for (const n of D.notes || []) { $("qkv-intro").appendChild(el("div", "note", n)); }
if (!D.views.length) { $("qkv-overview-box").hidden = true; $("qkv-main").hidden = true; return; }
S.view = D.selected.view; S.head = D.selected.head;
const V = () => D.views[S.view];
const stageOf = (name) => V().stages.find((s) => s.name === name);
function matrixOf(st) {
  return st.matrices.find((m) => m.item === S.item && (m.head === null || m.head === S.head));
}
function button(label, on, click) { const b = el("button", on ? "on" : "", label);
  b.onclick = click; return b; }
function controls() {
  const box = $("qkv-controls"); box.replaceChildren();
  const row = (name, items) => { const r = el("div", "bar"); r.appendChild(el("b", "", name));
    items.forEach((i) => r.appendChild(i)); box.appendChild(r); };
  if (D.views.length > 1) row(tr("layer"), D.views.map((v, k) =>
    button(v.label, k === S.view, () => { S.view = k; S.cell = null; draw(); })));
  if (V().heads > 1) row(tr("head"), [...Array(V().heads).keys()].map((h) =>
    button(String(h + 1), h === S.head, () => { S.head = h; draw(); })));
  if (V().items > 1) row(tr("item"), [...Array(V().items).keys()].map((b) =>
    button(String(b + 1), b === S.item, () => { S.item = b; draw(); })));
  row(tr("stage"), V().stages.map((s) => button(s.name, s.name === S.stage, () => {
    S.stage = s.name; S.cell = null; draw(); })));
}
function overview() {
  const box = $("qkv-overview"), heads = Math.max(...D.views.map((v) => v.heads));
  if (D.views.length === 1 && heads === 1) { $("qkv-overview-box").hidden = true; return; }
  box.style.gridTemplateColumns = "auto repeat(" + heads + ", auto)"; box.replaceChildren();
  D.views.forEach((v, k) => {
    box.appendChild(el("div", "lab", v.label || tr("heads")));
    const w = v.stages.find((s) => s.name === "weights");
    for (let h = 0; h < v.heads; h++) {
      const m = w.matrices.find((x) => x.item === S.item && (x.head === null || x.head === h));
      const n = w.rows.length, c = w.cols.length, cv = el("canvas");
      cv.width = c; cv.height = n; const z = Math.max(3, Math.floor(54 / Math.max(n, c)));
      cv.style.width = c * z + "px"; cv.style.height = n * z + "px";
      const g = cv.getContext("2d");
      for (let i = 0; i < n; i++) for (let j = 0; j < c; j++) {
        const l = m.levels[i * c + j]; g.fillStyle = l === "x" ? "#111" : D.palette[+l];
        g.fillRect(j, i, 1, 1); }
      if (k === S.view && h === S.head) cv.className = "on";
      cv.title = (v.label ? v.label + ", " : "") + tr("head {h}", { h: h + 1 });
      cv.dataset.view = k; cv.dataset.head = h;
      cv.onclick = () => { S.view = k; S.head = h; S.stage = "weights"; S.cell = null; draw(); };
      const cell = el("div"); cell.appendChild(cv);
      const e = v.entropy2 ? " " + v.entropy2[S.item][h] : "";
      if (v.entropy) cv.title += tr(": mean entropy {e} bits", { e: v.entropy[S.item][h] });
      cell.appendChild(el("div", "cap", "h" + (h + 1) + e)); box.appendChild(cell);
    }
  });
}
function grid() {
  const st = stageOf(S.stage) || stageOf("weights"); S.stage = st.name;
  const m = matrixOf(st), t = $("qkv-grid"), n = st.rows.length, c = st.cols.length;
  const where = (V().label ? V().label + ", " : "") + (st.per_head && V().heads > 1 ?
    tr("head {h} of {n}", { h: S.head + 1, n: V().heads }) : "");
  $("qkv-title").textContent = st.formula + " (" + n + "×" + c + ")" + (where ? " — " + where : "");
  t.replaceChildren(); const hr = el("tr"); hr.appendChild(el("th"));
  st.cols.forEach((k, j) => { const th = el("th", "", k); th.dataset.j = j; hr.appendChild(th); });
  t.appendChild(hr);
  for (let i = 0; i < n; i++) {
    const tr = el("tr"), th = el("th", "", st.rows[i]); th.dataset.i = i; tr.appendChild(th);
    for (let j = 0; j < c; j++) {
      const l = m.levels[i * c + j], td = el("td", l === "x" ? "x" : "", m.cells[i * c + j]);
      if (l !== "x" && l !== "-") { td.style.background = D.palette[+l]; td.style.color = D.ink[+l]; }
      td.dataset.i = i; td.dataset.j = j;
      td.onmouseenter = () => { if (!S.pinned) pick(i, j); };
      td.onclick = () => { S.pinned = !(S.pinned && S.cell && S.cell[0] === i && S.cell[1] === j);
        pick(i, j); };
      tr.appendChild(td);
    }
    t.appendChild(tr);
  }
  const lg = $("qkv-legend"); lg.replaceChildren();
  if (st.legend) { lg.appendChild(el("span", "", tr("shade = {stage}:", { stage: st.name })));
    st.legend.forEach((txt, k) => { const s = el("span", "", txt);
      s.style.background = D.palette[k]; s.style.color = D.ink[k]; lg.appendChild(s); }); }
  if (S.cell) pick(S.cell[0], S.cell[1]);
}
function said(k) {
  const ids = D.explain.cells[k];
  return ids === undefined ? undefined : ids.map((n) => D.explain.lines[n]).join("\\n");
}
function explanation(st, i, j) {
  const h = st.per_head ? S.head : "-", own = said([S.view, st.name, S.item, h, i, j].join("|"));
  if (own !== undefined) return [own, ""];
  if (st.square) {
    const w = said([S.view, "weights", S.item, st.per_head ? S.head : "-", i, j].join("|"));
    if (w !== undefined)
      return [w, tr("(the arithmetic of weights[{i},{j}], which passes through this cell)",
        { i: i + 1, j: j + 1 })];
  }
  return ["", tr("no arithmetic kept for this cell in the page: run qkv explain on the problem")];
}
function pick(i, j) {
  const st = stageOf(S.stage); S.cell = [i, j];
  document.querySelectorAll("#qkv-grid .picked").forEach((e) => e.classList.remove("picked"));
  document.querySelectorAll('#qkv-grid td[data-i="' + i + '"][data-j="' + j + '"], ' +
    '#qkv-grid th[data-i="' + i + '"], #qkv-grid th[data-j="' + j + '"]')
    .forEach((e) => e.classList.add("picked"));
  const [text, note] = explanation(st, i, j);
  const name = st.name + "[" + (i + 1) + "," + (j + 1) + "]";
  $("qkv-cell").textContent = name + " = " + matrixOf(st).cells[i * st.cols.length + j] +
    (S.pinned ? tr(" (pinned: click again to unpin)") : "") + (note ? " " + note : "");
  $("qkv-explain").textContent = text;
  tokens(st.square ? i : null);
}
function tokens(i) {
  const box = $("qkv-tokens"); box.replaceChildren();
  if (i === null) { box.appendChild(el("div", "intro", tr("pick a cell of a query × key stage"))); return; }
  const tv = V().tokens.find((x) => x.item === S.item && (x.head === null || x.head === S.head));
  const w = stageOf("weights"), row = tv.rows[i];
  box.appendChild(el("div", "intro", tr("query {i} ({token})", { i: i + 1, token: w.rows[i] }) +
    (row.entropy !== null ? tr(": entropy {e} bits", { e: row.entropy }) : "")));
  row.ranked.forEach(([j, text, v], r) => { const d = el("div", "row");
    d.appendChild(el("span", "", String(r + 1).padStart(3) + ". " + w.cols[j].padEnd(10) + " " + text));
    const b = el("span", "w"); b.style.width = Math.round(Math.max(0, Math.min(1, v)) * 200) + "px";
    d.appendChild(b); box.appendChild(d); });
  if (row.masked.length) box.appendChild(el("div", "intro",
    tr("masked: {keys}", { keys: row.masked.map((j) => w.cols[j]).join(", ") })));
}
function draw() {
  if (S.head >= V().heads) S.head = 0;
  controls(); overview(); lines($("qkv-header"), V().header, "intro"); grid();
  if (!S.cell) { $("qkv-cell").textContent = "hover or click a cell"; $("qkv-explain").textContent = "";
    tokens(null); }
}
draw();
})();
</script>
"""
