"""``qkv compute``: read a problem, evaluate it, write its stages as tables, pictures or data."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

from ..i18n import N_, _

INPUT = N_("Input (matrices from CSV or .npy files, - = stdin; each replaces the problem's)")
HOW = N_("How to compute")
MASKS = N_("Masks")
MODELS = N_("Today's models' variants (Hugging Face config names)")
OUT = N_("Output")
PIC = N_("Pictures")
BIG = N_("Large inputs")


def option(*names: str, help: str, panel: str, metavar: str | None = None, **more: Any) -> Any:
    """A typer option in its help panel, with the placeholder a person reads (``FILE``, ``N``)."""
    return typer.Option(*names, help=help, rich_help_panel=panel, metavar=metavar, **more)


def compute(
    input: Annotated[
        str | None,
        typer.Argument(
            metavar="PROBLEM",
            help="A JSON or .npz problem file, or - for stdin (CSV matrices go with --x, --wq …).",
            show_default=False,
        ),
    ] = None,
    x: Annotated[
        str | None, option("--x", help="X (tokens × d_model).", panel=INPUT, metavar="FILE")
    ] = None,
    wq: Annotated[
        str | None, option("--wq", help="W_Q (d_model × d_k).", panel=INPUT, metavar="FILE")
    ] = None,
    wk: Annotated[
        str | None, option("--wk", help="W_K (d_model × d_k).", panel=INPUT, metavar="FILE")
    ] = None,
    wv: Annotated[
        str | None, option("--wv", help="W_V (d_model × d_v).", panel=INPUT, metavar="FILE")
    ] = None,
    q: Annotated[
        str | None,
        option("--q", help="Q given directly (no X, no W_Q).", panel=INPUT, metavar="FILE"),
    ] = None,
    k: Annotated[
        str | None, option("--k", help="K given directly.", panel=INPUT, metavar="FILE")
    ] = None,
    v: Annotated[
        str | None, option("--v", help="V given directly.", panel=INPUT, metavar="FILE")
    ] = None,
    x_kv: Annotated[
        str | None,
        option(
            "--x-kv",
            "--memory",
            help="X_kv: keys and values come from this sequence (cross-attention).",
            panel=INPUT,
            metavar="FILE",
        ),
    ] = None,
    wo: Annotated[
        str | None,
        option(
            "--wo", help="W_O (h·d_v × d_out): output = concat·W_O.", panel=INPUT, metavar="FILE"
        ),
    ] = None,
    bq: Annotated[
        str | None, option("--bq", help="b_Q (one row).", panel=INPUT, metavar="FILE")
    ] = None,
    bk: Annotated[
        str | None, option("--bk", help="b_K (one row).", panel=INPUT, metavar="FILE")
    ] = None,
    bv: Annotated[
        str | None, option("--bv", help="b_V (one row).", panel=INPUT, metavar="FILE")
    ] = None,
    bo: Annotated[
        str | None, option("--bo", help="b_O (one row).", panel=INPUT, metavar="FILE")
    ] = None,
    tokens: Annotated[
        str | None,
        option(
            "--tokens",
            help="Query labels, e.g. the,cat,sat.",
            panel=INPUT,
            metavar="LABEL[,LABEL…]",
        ),
    ] = None,
    kv_tokens: Annotated[
        str | None,
        option(
            "--kv-tokens",
            help="Key labels when keys come from --x-kv.",
            panel=INPUT,
            metavar="LABEL[,LABEL…]",
        ),
    ] = None,
    scale: Annotated[
        str | None,
        option(
            "--scale",
            help="1/√d_k (sqrt, the default), 1 (none), or this number.",
            panel=HOW,
            metavar="sqrt|none|X",
        ),
    ] = None,
    heads: Annotated[
        int | None,
        option(
            "--heads",
            help="Attention heads: Q, K, V split into N column blocks.",
            panel=HOW,
            metavar="N",
        ),
    ] = None,
    kv_heads: Annotated[
        int | None,
        option(
            "--kv-heads",
            help="K/V heads for grouped-query attention (divides --heads; 1 = multi-query).",
            panel=HOW,
            metavar="N",
        ),
    ] = None,
    layout: Annotated[
        str | None,
        option(
            "--layout",
            help="rows: tokens are rows, Q = X·W_Q (default); columns: Q = W_Q·X.",
            panel=HOW,
            metavar="rows|columns",
        ),
    ] = None,
    weights_layout: Annotated[
        str | None,
        option(
            "--weights-layout",
            help="in-out: W is d_model × d_k (default); out-in: PyTorch's nn.Linear, Q = X·Wᵀ + b.",
            panel=HOW,
            metavar="in-out|out-in",
        ),
    ] = None,
    similarity: Annotated[
        str | None,
        option(
            "--similarity",
            help="Scores by dot product (default) or cosine.",
            panel=HOW,
            metavar="dot|cosine",
        ),
    ] = None,
    normalize: Annotated[
        str | None,
        option(
            "--normalize",
            help="Weights by softmax (default) or sigmoid.",
            panel=HOW,
            metavar="softmax|sigmoid",
        ),
    ] = None,
    temperature: Annotated[
        float | None,
        option(
            "--temperature",
            help="Divide the scaled scores by T (default 1).",
            panel=HOW,
            metavar="T",
        ),
    ] = None,
    exact: Annotated[
        bool,
        option("--exact", help="Fractions for the linear stages, the scale as a surd.", panel=HOW),
    ] = False,
    mask: Annotated[
        str | None,
        option(
            "--mask",
            help="causal, causal-lower-right, or a CSV file of 0/1 (queries × keys).",
            panel=MASKS,
            metavar="causal|causal-lower-right|FILE",
        ),
    ] = None,
    mask_polarity: Annotated[
        str | None,
        option(
            "--mask-polarity",
            help="attend: 1 = may attend (default); block: 1/True = blocked, "
            "as in PyTorch's nn.MultiheadAttention.",
            panel=MASKS,
            metavar="attend|block",
        ),
    ] = None,
    valid_lens: Annotated[
        str | None,
        option(
            "--valid-lens",
            help="Keys each batch item may attend to, e.g. 2,3 (or per query row: 1,2;2,3).",
            panel=MASKS,
            metavar="N[,N…]",
        ),
    ] = None,
    attn_bias: Annotated[
        str | None,
        option(
            "--attn-bias",
            help="A CSV added to the scaled scores (-inf blocks), e.g. ALiBi's.",
            panel=MASKS,
            metavar="FILE",
        ),
    ] = None,
    empty_rows: Annotated[
        str | None,
        option(
            "--empty-rows",
            help="A query row with every key masked: an error (default), or "
            "filled with NaN, zeros or uniform weights.",
            panel=MASKS,
            metavar="error|nan|zero|uniform",
        ),
    ] = None,
    rope: Annotated[
        str | None,
        option(
            "--rope",
            help="Rotary positions: half (pairs i, i + d/2: Llama, NeoX) or "
            "interleaved (pairs 2i, 2i + 1: GPT-J).",
            panel=MODELS,
            metavar="half|interleaved",
        ),
    ] = None,
    rope_theta: Annotated[
        float | None,
        option("--rope-theta", help="RoPE's base θ (default 10000).", panel=MODELS, metavar="X"),
    ] = None,
    partial_rotary_factor: Annotated[
        float | None,
        option(
            "--partial-rotary-factor",
            help="Share of each head's features RoPE rotates, the first ones (default 1).",
            panel=MODELS,
            metavar="X",
        ),
    ] = None,
    position_ids: Annotated[
        str | None,
        option(
            "--position-ids",
            help="RoPE positions of the queries, e.g. 0,1,2 (rows 0,1;5,6 "
            "per batch item), or a file.",
            panel=MODELS,
            metavar="N[,N…]|FILE",
        ),
    ] = None,
    position_offset: Annotated[
        int | None,
        option(
            "--position-offset",
            help="Position of the first query (default 0, or the cache's length).",
            panel=MODELS,
            metavar="N",
        ),
    ] = None,
    sliding_window: Annotated[
        int | None,
        option(
            "--sliding-window",
            help="Each query sees its last W keys: i − W < j ≤ i (Mistral, Gemma 2).",
            panel=MODELS,
            metavar="W",
        ),
    ] = None,
    attention_chunk_size: Annotated[
        int | None,
        option(
            "--attention-chunk-size",
            help="Queries see the keys of their own chunk of C "
            "tokens: ⌊i/C⌋ = ⌊j/C⌋ (Llama 4; add --mask causal).",
            panel=MODELS,
            metavar="C",
        ),
    ] = None,
    qk_norm: Annotated[
        str | None,
        option(
            "--qk-norm",
            help="RMSNorm of q and k: per head (Qwen3, Gemma 3) or over all heads (OLMo 2).",
            panel=MODELS,
            metavar="head|all",
        ),
    ] = None,
    q_norm: Annotated[
        str | None,
        option(
            "--q-norm",
            help="QK-norm weights of q, e.g. 1,0.5, or a file (default 1).",
            panel=MODELS,
            metavar="X[,X…]|FILE",
        ),
    ] = None,
    k_norm: Annotated[
        str | None,
        option(
            "--k-norm",
            help="QK-norm weights of k, e.g. 1,0.5, or a file (default 1).",
            panel=MODELS,
            metavar="X[,X…]|FILE",
        ),
    ] = None,
    rms_norm_eps: Annotated[
        float | None,
        option("--rms-norm-eps", help="QK-norm's eps (default 1e-6).", panel=MODELS, metavar="X"),
    ] = None,
    rms_norm_unit_offset: Annotated[
        bool,
        option(
            "--rms-norm-unit-offset",
            help="QK-norm weights as Gemma stores them: scale by 1 + w.",
            panel=MODELS,
        ),
    ] = False,
    attn_logit_softcapping: Annotated[
        float | None,
        option(
            "--attn-logit-softcapping",
            help="Soft-cap the scaled scores: c·tanh(s/c), before bias and mask (Gemma 2).",
            panel=MODELS,
            metavar="C",
        ),
    ] = None,
    sinks: Annotated[
        str | None,
        option(
            "--sinks",
            help="One sink logit per head in each softmax's denominator, e.g. "
            "0.5,-1, or a file (gpt-oss).",
            panel=MODELS,
            metavar="X[,X…]|FILE",
        ),
    ] = None,
    alibi: Annotated[
        bool,
        option(
            "--alibi",
            help="ALiBi: add m_h·(j − i), slopes m_h from the head count (BLOOM, MPT).",
            panel=MODELS,
        ),
    ] = False,
    past_key: Annotated[
        str | None,
        option(
            "--past-key",
            help="KV cache: the cached tokens' keys as the scores use them "
            "(normed, rotated), every head side by side.",
            panel=MODELS,
            metavar="FILE",
        ),
    ] = None,
    past_value: Annotated[
        str | None,
        option(
            "--past-value",
            help="KV cache: the cached tokens' values; X holds the new tokens (a decode step).",
            panel=MODELS,
            metavar="FILE",
        ),
    ] = None,
    trace: Annotated[bool, option("--trace", help="Show every stage.", panel=OUT)] = False,
    stage: Annotated[
        list[str] | None,
        option(
            "--stage",
            help="Show this stage (repeatable): Q K V [Q_normed K_normed Q_rotated "
            "K_rotated] scores scaled [capped] [masked] weights [head_outputs concat] output.",
            panel=OUT,
            metavar="STAGE",
        ),
    ] = None,
    precision: Annotated[
        int | None,
        option(
            "--precision",
            min=0,
            max=17,
            help="Decimals, 0 to 17 (default 4 in tables; CSV/TSV print every digit unless given).",
            panel=OUT,
            metavar="N",
        ),
    ] = None,
    format: Annotated[
        str,
        option(
            "--format",
            "-f",
            help="table (default), json, csv, tsv, markdown, latex or npz.",
            panel=OUT,
            metavar="FORMAT",
        ),
    ] = "table",
    output: Annotated[
        str | None,
        option(
            "--output",
            "-o",
            help="Write to this file, whole or not at all (needed for npz).",
            panel=OUT,
            metavar="FILE",
        ),
    ] = None,
    full: Annotated[
        bool, option("--full", help="Show every row and column of big tables.", panel=OUT)
    ] = False,
    heatmap: Annotated[
        bool,
        option(
            "--heatmap",
            help="Draw the weights as a shaded grid (with --stage: that stage).",
            panel=PIC,
        ),
    ] = False,
    tokens_view: Annotated[
        bool, option("--tokens-view", help="Rank the keys each query attends to.", panel=PIC)
    ] = False,
    top: Annotated[
        int | None,
        option(
            "--top",
            min=1,
            help="Keys per query in the token view (default 5; turns the token view on).",
            panel=PIC,
            metavar="N",
        ),
    ] = None,
    svg: Annotated[
        str | None, option("--svg", help="Save the drawing as SVG.", panel=PIC, metavar="FILE")
    ] = None,
    html: Annotated[
        str | None,
        option(
            "--html",
            help="Save an interactive report (HTML, offline; the drawing in it).",
            panel=PIC,
            metavar="FILE",
        ),
    ] = None,
    dtype: Annotated[
        str | None,
        option(
            "--dtype", help="float64 (default) or float32.", panel=BIG, metavar="float64|float32"
        ),
    ] = None,
    stream: Annotated[
        bool,
        option(
            "--stream",
            help="Compute in blocks, without the n×n stages (chosen on its own for long inputs).",
            panel=BIG,
        ),
    ] = False,
) -> None:
    """Compute scaled dot-product attention and show its stages.

    The JSON holds X, W_Q, W_K, W_V (or Q, K, V) and optional tokens.
    Spellings such as w_query, Wq, WQ are accepted; the output says which
    key was read. Options on the command line win over the file.

    \b
    Examples:
      qkv compute samples/worked_example.json --trace
      qkv compute samples/worked_example.json --format json
      qkv compute --x samples/csv/X.csv --wq samples/csv/W_Q.csv \\
          --wk samples/csv/W_K.csv --wv samples/csv/W_V.csv
      cat samples/qkv_direct.json | qkv compute - --stage weights -f csv
      qkv compute samples/multihead.json --heads 2 --mask causal --trace
      qkv compute samples/worked_example.json --heatmap --tokens-view --svg report.svg
      qkv compute samples/rope.json --stage Q_rotated --stage K_rotated
      qkv compute samples/decode.json --trace
    """
    from ..load import load, mask_option
    from ..load.values import file_or_numbers
    from ..options import Options, check_options, option_name
    from ..trace import canonical

    stage = [canonical(s) for s in stage] if stage else stage  # 权重 is weights

    cli_settings = check_options(
        {"scale": scale, "layout": layout, "heads": heads, "kv_heads": kv_heads,
         "weights_layout": weights_layout, "similarity": similarity, "normalize": normalize,
         "temperature": temperature, "mask_polarity": mask_polarity, "empty_rows": empty_rows,
         "exact": exact or None, "dtype": dtype, "rope": rope, "rope_theta": rope_theta,
         "partial_rotary_factor": partial_rotary_factor, "position_offset": position_offset,
         "sliding_window": sliding_window, "attention_chunk_size": attention_chunk_size,
         "qk_norm": qk_norm, "rms_norm_eps": rms_norm_eps,
         "rms_norm_unit_offset": rms_norm_unit_offset or None,
         "attn_logit_softcapping": attn_logit_softcapping, "alibi": alibi or None}
    )  # fmt: skip
    mask_kind, mask_csv = mask_option(mask) if mask is not None else (None, None)
    if mask_kind is not None:
        cli_settings["mask"] = mask_kind
    files = {"X": x, "W_Q": wq, "W_K": wk, "W_V": wv, "Q": q, "K": k, "V": v, "X_kv": x_kv,
             "W_O": wo, "b_Q": bq, "b_K": bk, "b_V": bv, "b_O": bo, "mask": mask_csv,
             "attn_bias": attn_bias, "past_key": past_key, "past_value": past_value}  # fmt: skip
    inline = {"valid_lens": valid_lens, "tokens": tokens, "kv_tokens": kv_tokens}
    vectors = {"position_ids": position_ids, "q_norm": q_norm, "k_norm": k_norm, "sinks": sinks}
    for name, value in vectors.items():
        path, numbers = file_or_numbers(value) if value is not None else (None, None)
        files[name], inline[name] = path, numbers
    drawing = (heatmap, tokens_view, top, svg, html)
    output = None if output == "-" and format != "npz" else output  # -o - is stdout
    check_output(format, output, drawing, stage, trace)
    from ..atomic import check_outputs

    check_outputs({"--output": output, "--svg": svg, "--html": html}, [input, *files.values()])
    problem, settings = load(input, files, inline)
    problem.setting_names |= {key: option_name(key) for key in cli_settings}  # they win
    options = Options().merged(settings).merged(cli_settings)
    present(problem, options, format, stage, trace, precision, output, full, stream, drawing)


#: The options that draw pictures, in the order of ``drawing`` tuples.
PICTURES = ("--heatmap", "--tokens-view", "--top", "--svg", "--html")


def check_output(
    format: str,
    output: str | None,
    drawing: tuple[Any, ...],
    stage: list[str] | None = None,
    trace: bool = False,
) -> None:
    """Refuse, before any work, output options that do not go together."""
    from ..errors import OptionError

    picture = next((name for name, on in zip(PICTURES, drawing) if on), None)
    if picture is not None and format != "table":
        raise OptionError(
            _("{picture} draws a picture: not with --format {format} (tables only)").format(
                picture=picture, format=format
            )
        )
    _check_format(format, output)
    if format in ("csv", "tsv"):
        if trace:
            raise OptionError(
                _(
                    "--format {format} writes one stage, not every stage (--trace): use --format json or npz for every stage, or --stage NAME"
                ).format(format=format)
            )
        if stage and len(set(stage)) > 1:
            raise OptionError(
                _(
                    "--format {format} writes one stage, not {n_len}: choose one with --stage, or use --format json or npz"
                ).format(format=format, n_len=len(set(stage)))
            )


def present(
    problem: Any,
    options: Any,
    format: str,
    stage: list[str] | None,
    trace: bool,
    precision: int | None,
    output: str | None,
    full: bool,
    stream: bool,
    drawing: tuple[Any, ...],
    report: Any = None,
    title: str | None = None,
) -> Any:
    """Resolve and evaluate a problem, then write it as tables, pictures or data (``qkv model`` too).

    ``drawing`` is (heatmap, tokens_view, top, svg, html); ``report(drawn)``
    turns the drawing's HTML into the saved page (default: the interactive
    report of this problem, render/explore.py); ``title`` names saved drawings.
    """
    from ..problem import resolve

    picture = next((name for name, on in zip(PICTURES, drawing) if on), None)
    why = {"weights": picture} if picture else None  # pictures need the weights
    # Tables and pictures summarise long stages (the --html report explores every cell).
    shown = format == "table" and not full and not drawing[4]
    result = _evaluate(resolve(problem, options), format, stage, trace, stream, why, shown, output)
    if any(drawing):
        from ..render.explore import View, page
        from ..render.report import Pictures, show  # only when drawing: it costs start-up
        from ..render.tables import make_console

        digits = 4 if precision is None else precision
        if report is None:

            def report(drawn: str) -> str:
                return page([View("", problem, options, result)], drawn, digits)

        with _opened(output) as out:  # the drawing goes to --output when given, like a table
            console = make_console(None if output is None else out)
            show(
                result,
                Pictures(*drawing, full=full),
                stage,
                trace,
                digits,
                console,
                page=report,
                title=title,
            )
        return result
    _emit(result, format, stage, trace, precision, output, full)
    return result


FORMATS = ("table", "json", "csv", "tsv", "markdown", "latex", "npz")


def _check_format(format: str, output: str | None) -> None:
    from ..errors import OptionError
    from ..options import choice

    choice("--format", format, FORMATS)
    if format == "npz" and output in (None, "-"):
        raise OptionError(_("--format npz writes a file: give it with --output FILE"))


def _evaluate(
    resolved: Any,
    format: str,
    stage: list[str] | None,
    trace: bool,
    stream: bool,
    why: dict[str, str] | None = None,
    summarised: bool = False,
    output: str | None = None,
) -> Any:
    """Plan the run (every stage, or in blocks when the n×n stages are large and not asked for) and run it.

    ``summarised``: the stages are shown as tables that summarise long ones,
    so only the rows they show of the n×n stages are computed.
    """
    from ..plan import all_stages, evaluate, plan
    from ..render.progress import bar
    from ..render.text import summary_rows
    from ..trace import check_stages, stage_names

    check_stages(stage or [], stage_names(resolved))  # every stage of the run, streamed or not
    asked = all_stages() if trace else stage or (["output"] if format in ("csv", "tsv") else None)
    if why:
        asked = [*(asked or ["weights", "output"]), *why]
    rows = summary_rows(resolved.n) if summarised else None
    by_rows = format == "npz"  # a big n×n stage is written a block of rows at a time
    # An error in a late block must not follow bytes already sent down a pipe or to a device.
    in_place = by_rows and output is not None and not _replaced_whole(output)
    how = plan(resolved, asked, stream, why=why, rows=rows, by_rows=by_rows, in_place=in_place)
    result = evaluate(resolved, how, bar)
    if how.note:
        from ..notes import note

        note(how.note)
    return result


def _emit(
    result: Any,
    format: str,
    stage: list[str] | None,
    trace: bool,
    precision: int | None,
    output: str | None = None,
    full: bool = False,
) -> None:
    """Write a trace in the chosen format to stdout (or ``output``)."""

    digits = 4 if precision is None else precision
    if format == "npz":
        from ..render.machine import to_npz
        from ..trace import STAGES

        result.select(stage)  # every name must be a stage of this run
        have = {*result.stages, *result.later}
        names = [s for s in STAGES if s in have and (not stage or s in stage)]
        from ..render.progress import writing

        with writing(result) as tick:
            to_npz(result, names, output or "", tick)
        return
    from ..render.text import write_out

    with _opened(output) as out:
        if format in ("markdown", "latex"):
            from ..render import writeup

            write = writeup.to_markdown if format == "markdown" else writeup.to_latex
            write_out(out, write(result, result.select(stage), digits))
            return
        if format in ("csv", "tsv"):
            names = stage or ["output"]
            from ..render.machine import write_delimited

            (chosen,) = result.select(names)
            write_delimited(out, chosen.array, "," if format == "csv" else "\t", precision)
            return
        if format == "json":
            from ..render.machine import to_json

            write_out(out, to_json(result, result.select(stage)))
            return
        from ..render.tables import write_tables

        defaults = [] if trace else [n for n in ("weights", "output") if n in result.stages]
        write_tables(result, result.select(stage or defaults), out, digits, full=full)


def _replaced_whole(path: str) -> bool:
    """True when ``path`` is a file written beside and renamed into place (not a FIFO, a device)."""
    from ..atomic import target

    return target(path, "--output")[1]


@contextmanager
def _opened(path: str | None) -> Iterator[Any]:
    """stdout, or ``path`` written atomically (whole or not at all)."""
    if path is None:
        yield sys.stdout
        return
    from ..atomic import atomic_file

    with atomic_file(path, "--output") as fh:
        yield fh
