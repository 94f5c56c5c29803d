"""``qkv compute``: read a problem, evaluate it, write its stages as tables, pictures or data."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer

CSV = "Matrices from CSV or .npy files (one matrix per file; '-' = stdin)"
HOW = "How to compute"
MASKS = "Masks"
OUT = "Output"
PIC = "Pictures"
BIG = "Large inputs"
MODELS = "Today's models (Hugging Face config names)"


def compute(
    input: Annotated[
        str | None,
        typer.Argument(help="JSON or .npz problem file, or - for stdin.", show_default=False),
    ] = None,
    x: Annotated[
        str | None, typer.Option("--x", help="X (tokens × d_model).", rich_help_panel=CSV)
    ] = None,
    wq: Annotated[
        str | None, typer.Option("--wq", help="W_Q (d_model × d_k).", rich_help_panel=CSV)
    ] = None,
    wk: Annotated[
        str | None, typer.Option("--wk", help="W_K (d_model × d_k).", rich_help_panel=CSV)
    ] = None,
    wv: Annotated[
        str | None, typer.Option("--wv", help="W_V (d_model × d_v).", rich_help_panel=CSV)
    ] = None,
    q: Annotated[
        str | None, typer.Option("--q", help="Q given directly.", rich_help_panel=CSV)
    ] = None,
    k: Annotated[
        str | None, typer.Option("--k", help="K given directly.", rich_help_panel=CSV)
    ] = None,
    v: Annotated[
        str | None, typer.Option("--v", help="V given directly.", rich_help_panel=CSV)
    ] = None,
    x_kv: Annotated[
        str | None,
        typer.Option(
            "--x-kv",
            "--memory",
            help="X_kv: keys and values come from this sequence (cross-attention).",
            rich_help_panel=CSV,
        ),
    ] = None,
    wo: Annotated[
        str | None,
        typer.Option("--wo", help="W_O (h·d_v × d_out): output = concat·W_O.", rich_help_panel=CSV),
    ] = None,
    bq: Annotated[
        str | None, typer.Option("--bq", help="b_Q (one row).", rich_help_panel=CSV)
    ] = None,
    bk: Annotated[
        str | None, typer.Option("--bk", help="b_K (one row).", rich_help_panel=CSV)
    ] = None,
    bv: Annotated[
        str | None, typer.Option("--bv", help="b_V (one row).", rich_help_panel=CSV)
    ] = None,
    bo: Annotated[
        str | None, typer.Option("--bo", help="b_O (one row).", rich_help_panel=CSV)
    ] = None,
    tokens: Annotated[
        str | None,
        typer.Option(help="Query labels, e.g. the,cat,sat.", rich_help_panel=CSV),
    ] = None,
    kv_tokens: Annotated[
        str | None,
        typer.Option(help="Key labels when keys come from --x-kv.", rich_help_panel=CSV),
    ] = None,
    scale: Annotated[
        str | None,
        typer.Option(help="sqrt (1/√d_k, the default), none, or a number.", rich_help_panel=HOW),
    ] = None,
    heads: Annotated[
        int | None,
        typer.Option(
            help="Attention heads h: Q, K, V split into h column blocks.", rich_help_panel=HOW
        ),
    ] = None,
    kv_heads: Annotated[
        int | None,
        typer.Option(
            help="K/V heads for grouped-query attention (divides --heads; 1 = multi-query).",
            rich_help_panel=HOW,
        ),
    ] = None,
    weights_layout: Annotated[
        str | None,
        typer.Option(
            help="in-out (W is d_model × d_k; default) or out-in (PyTorch nn.Linear: Q = X·Wᵀ + b).",
            rich_help_panel=HOW,
        ),
    ] = None,
    similarity: Annotated[
        str | None,
        typer.Option(help="dot (default) or cosine.", rich_help_panel=HOW),
    ] = None,
    normalize: Annotated[
        str | None,
        typer.Option(help="softmax (default) or sigmoid.", rich_help_panel=HOW),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option(help="Divide the scaled scores by T (default 1).", rich_help_panel=HOW),
    ] = None,
    mask: Annotated[
        str | None,
        typer.Option(
            help="causal, causal-lower-right, or a CSV file of 0/1 (queries × keys).",
            rich_help_panel=MASKS,
        ),
    ] = None,
    mask_polarity: Annotated[
        str | None,
        typer.Option(
            help="attend (1 = may attend; default) or block (1/True = blocked, as in "
            "PyTorch nn.MultiheadAttention).",
            rich_help_panel=MASKS,
        ),
    ] = None,
    valid_lens: Annotated[
        str | None,
        typer.Option(
            help="Keys each item may attend to, e.g. 2,3 (one per batch item) or 1,2;2,3.",
            rich_help_panel=MASKS,
        ),
    ] = None,
    attn_bias: Annotated[
        str | None,
        typer.Option(
            help="CSV added to the scaled scores (-inf blocks), e.g. ALiBi.",
            rich_help_panel=MASKS,
        ),
    ] = None,
    empty_rows: Annotated[
        str | None,
        typer.Option(
            help="A query row with every key masked: error (default), nan, zero or uniform.",
            rich_help_panel=MASKS,
        ),
    ] = None,
    layout: Annotated[
        str | None,
        typer.Option(
            help="rows (tokens are rows, Q = X·W_Q; default) or columns (Q = W_Q·X).",
            rich_help_panel=HOW,
        ),
    ] = None,
    exact: Annotated[
        bool,
        typer.Option(
            "--exact", help="Fractions for linear stages, the scale as a surd.", rich_help_panel=HOW
        ),
    ] = False,
    trace: Annotated[
        bool, typer.Option("--trace", help="Show every stage.", rich_help_panel=OUT)
    ] = False,
    stage: Annotated[
        list[str] | None,
        typer.Option(
            help="Show this stage (repeatable): Q K V [Q_normed K_normed Q_rotated K_rotated] "
            "scores scaled [capped] masked weights head_outputs concat output.",
            rich_help_panel=OUT,
        ),
    ] = None,
    precision: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=17,
            help="Decimals in tables (default 4); CSV/TSV print every digit unless given.",
            rich_help_panel=OUT,
        ),
    ] = None,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="table, json, csv, tsv, markdown, latex or npz.",
            rich_help_panel=OUT,
        ),
    ] = "table",
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="Write to this file (needed for npz).", rich_help_panel=OUT
        ),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="Show every row and column of big tables.", rich_help_panel=OUT
        ),
    ] = False,
    rope: Annotated[
        str | None,
        typer.Option(
            help="Rotary positions: half (pairs i, i + d/2: Llama, NeoX) or interleaved "
            "(pairs 2i, 2i + 1: GPT-J).",
            rich_help_panel=MODELS,
        ),
    ] = None,
    rope_theta: Annotated[
        float | None,
        typer.Option(help="RoPE's base θ (default 10000).", rich_help_panel=MODELS),
    ] = None,
    partial_rotary_factor: Annotated[
        float | None,
        typer.Option(
            help="Share of each head's features RoPE rotates, the first ones (default 1).",
            rich_help_panel=MODELS,
        ),
    ] = None,
    position_ids: Annotated[
        str | None,
        typer.Option(
            help="RoPE positions of the queries, e.g. 0,1,2 (or rows 0,1;5,6 per batch item), or a file.",
            rich_help_panel=MODELS,
        ),
    ] = None,
    position_offset: Annotated[
        int | None,
        typer.Option(
            help="Position of the first query (default 0, or the cache's length).",
            rich_help_panel=MODELS,
        ),
    ] = None,
    sliding_window: Annotated[
        int | None,
        typer.Option(
            help="Each query sees its last W keys: i − W < j ≤ i (Mistral, Gemma 2).",
            rich_help_panel=MODELS,
        ),
    ] = None,
    attention_chunk_size: Annotated[
        int | None,
        typer.Option(
            help="Queries see keys of their own chunk of C tokens: ⌊i/C⌋ = ⌊j/C⌋ (Llama 4; "
            "add --mask causal).",
            rich_help_panel=MODELS,
        ),
    ] = None,
    qk_norm: Annotated[
        str | None,
        typer.Option(
            help="RMSNorm of q and k: head (per head: Qwen3, Gemma 3) or all (over all heads: OLMo 2).",
            rich_help_panel=MODELS,
        ),
    ] = None,
    q_norm: Annotated[
        str | None,
        typer.Option(
            help="QK-norm weights of q, e.g. 1,0.5 (or a file); default 1.",
            rich_help_panel=MODELS,
        ),
    ] = None,
    k_norm: Annotated[
        str | None,
        typer.Option(
            help="QK-norm weights of k, e.g. 1,0.5 (or a file); default 1.",
            rich_help_panel=MODELS,
        ),
    ] = None,
    rms_norm_eps: Annotated[
        float | None,
        typer.Option(help="QK-norm's eps (default 1e-6).", rich_help_panel=MODELS),
    ] = None,
    rms_norm_unit_offset: Annotated[
        bool,
        typer.Option(
            "--rms-norm-unit-offset",
            help="QK-norm weights as Gemma stores them: scale by 1 + w.",
            rich_help_panel=MODELS,
        ),
    ] = False,
    attn_logit_softcapping: Annotated[
        float | None,
        typer.Option(
            help="Soft-cap the scaled scores: c·tanh(s/c), before bias and mask (Gemma 2).",
            rich_help_panel=MODELS,
        ),
    ] = None,
    sinks: Annotated[
        str | None,
        typer.Option(
            help="One sink logit per head in each softmax's denominator, e.g. 0.5,-1 (gpt-oss).",
            rich_help_panel=MODELS,
        ),
    ] = None,
    alibi: Annotated[
        bool,
        typer.Option(
            "--alibi",
            help="ALiBi: add m_h·(j − i), slopes m_h from the head count (BLOOM, MPT).",
            rich_help_panel=MODELS,
        ),
    ] = False,
    past_key: Annotated[
        str | None,
        typer.Option(
            help="KV cache: the cached tokens' keys as the scores use them (normed, rotated), "
            "every head side by side.",
            rich_help_panel=MODELS,
        ),
    ] = None,
    past_value: Annotated[
        str | None,
        typer.Option(
            help="KV cache: the cached tokens' values; X holds the new tokens (a decode step).",
            rich_help_panel=MODELS,
        ),
    ] = None,
    dtype: Annotated[
        str | None, typer.Option(help="float64 (default) or float32.", rich_help_panel=BIG)
    ] = None,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="Compute in blocks, without the n×n stages (chosen on its own for long inputs).",
            rich_help_panel=BIG,
        ),
    ] = False,
    heatmap: Annotated[
        bool,
        typer.Option(
            "--heatmap",
            help="Draw weights as a shaded grid (--stage scores etc. for others).",
            rich_help_panel=PIC,
        ),
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
            help="Keys per query in the token view (implies --tokens-view; default 5).",
            rich_help_panel=PIC,
        ),
    ] = None,
    svg: Annotated[
        str | None, typer.Option(help="Save the drawing as SVG.", rich_help_panel=PIC)
    ] = None,
    html: Annotated[
        str | None,
        typer.Option(
            help="Save an interactive report (HTML, offline; the drawing in it).",
            rich_help_panel=PIC,
        ),
    ] = None,
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
    from ..options import Options

    mask_kind, mask_csv = mask_option(mask) if mask is not None else (None, None)
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
    check_output(format, output, drawing)
    from ..atomic import check_outputs

    check_outputs({"--output": output, "--svg": svg, "--html": html}, [input, *files.values()])
    problem, settings = load(input, files, inline)
    cli_settings = {"scale": scale, "layout": layout, "heads": heads, "kv_heads": kv_heads,
                    "weights_layout": weights_layout, "similarity": similarity,
                    "normalize": normalize, "temperature": temperature, "mask": mask_kind,
                    "mask_polarity": mask_polarity, "empty_rows": empty_rows,
                    "exact": exact or None, "dtype": dtype, "rope": rope,
                    "rope_theta": rope_theta, "partial_rotary_factor": partial_rotary_factor,
                    "position_offset": position_offset, "sliding_window": sliding_window,
                    "attention_chunk_size": attention_chunk_size, "qk_norm": qk_norm,
                    "rms_norm_eps": rms_norm_eps,
                    "rms_norm_unit_offset": rms_norm_unit_offset or None,
                    "attn_logit_softcapping": attn_logit_softcapping,
                    "alibi": alibi or None}  # fmt: skip
    options = Options().merged(settings).merged(cli_settings)
    present(problem, options, format, stage, trace, precision, output, full, stream, drawing)


def check_output(format: str, output: str | None, drawing: tuple[Any, ...]) -> None:
    """Refuse, before any work, output options that do not go together."""
    from ..errors import OptionError

    if any(drawing) and format != "table":
        raise OptionError(
            f"--heatmap, --tokens-view, --top, --svg and --html draw pictures: they need --format table, not {format}"
        )
    _check_format(format, output)


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

    names = ("--heatmap", "--tokens-view", "--top", "--svg", "--html")
    picture = next((name for name, on in zip(names, drawing) if on), None)
    why = {"weights": picture} if picture else None  # pictures need the weights
    # Tables and pictures summarise long stages (the --html report explores every cell).
    shown = format == "table" and not full and not drawing[4]
    result = _evaluate(resolve(problem, options), format, stage, trace, stream, why, shown)
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

    if format not in FORMATS:
        raise OptionError(f"--format must be one of {', '.join(FORMATS)}, not {format!r}")
    if format == "npz" and output in (None, "-"):
        raise OptionError("--format npz writes a file: give it with --output FILE")


def _evaluate(
    resolved: Any,
    format: str,
    stage: list[str] | None,
    trace: bool,
    stream: bool,
    why: dict[str, str] | None = None,
    summarised: bool = False,
) -> Any:
    """Plan the run (every stage, or in blocks when the n×n stages are large and not asked for) and run it.

    ``summarised``: the stages are shown as tables that summarise long ones,
    so only the rows they show of the n×n stages are computed.
    """
    from ..plan import all_stages, evaluate, plan
    from ..render.progress import bar
    from ..render.text import summary_rows

    asked = all_stages() if trace else stage or (["output"] if format in ("csv", "tsv") else None)
    if why:
        asked = [*(asked or ["weights", "output"]), *why]
    rows = summary_rows(resolved.n) if summarised else None
    how = plan(resolved, asked, stream, why=why, rows=rows, by_rows=format == "npz")
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
    from ..errors import OptionError

    digits = 4 if precision is None else precision
    if format == "npz":
        from ..render.machine import to_npz
        from ..trace import STAGES

        result.select(stage)  # every name must be a stage of this run
        have = {*result.stages, *result.later}
        names = [s for s in STAGES if s in have and (not stage or s in stage)]
        to_npz(result, names, output or "")
        return
    with _opened(output) as out:
        if format in ("markdown", "latex"):
            from ..render import writeup

            write = writeup.to_markdown if format == "markdown" else writeup.to_latex
            out.write(write(result, result.select(stage), digits))
            return
        if format in ("csv", "tsv"):
            names = stage or ["output"]
            if len(names) != 1:
                raise OptionError(f"--format {format} writes one stage; choose one with --stage")
            from ..render.machine import write_delimited

            (chosen,) = result.select(names)
            write_delimited(out, chosen.array, "," if format == "csv" else "\t", precision)
            return
        if format == "json":
            from ..render.machine import to_json

            out.write(to_json(result, result.select(stage)))
            return
        from ..render.tables import make_console, render

        defaults = [] if trace else [n for n in ("weights", "output") if n in result.stages]
        console = make_console(None if output is None else out)
        render(result, result.select(stage or defaults), console, digits, full=full)


@contextmanager
def _opened(path: str | None) -> Iterator[Any]:
    """stdout, or ``path`` written atomically (whole or not at all)."""
    if path is None:
        yield sys.stdout
        return
    from ..atomic import atomic_file

    with atomic_file(path, "--output") as fh:
        yield fh
