"""glassbox.weights on tiny random HF models of every family: the per-head matrices must *be* the heads.

From W_Q/W_K (+ the returned norm scales and the model's rotary embedding) each head's attention pattern is
recomputed and compared with Hugging Face's `output_attentions`; Σ_h W_O·(pattern·V) + b_O must equal the
output projection's output. Norms and biases are randomized first, so a test that ignored them would fail."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import tiny_model

from glassbox import registry, weights
from glassbox.checkpoint import open_checkpoint
from glassbox.run.layout import submodule

ARCHS = ["llama", "qwen2", "qwen3", "phi3", "gemma3", "gpt2", "gpt_neox", "bert"]


def _randomized(arch: str):
    model = tiny_model(arch, random_norms=True, hidden=64, vocab=97, sliding_window=32)
    with torch.no_grad():  # biases start at zero: give them values so a dropped bias shows
        for name, p in model.named_parameters():
            if name.endswith("bias") and "norm" not in name.lower() and "ln_" not in name:
                p.add_(torch.randn_like(p) * 0.2)
    return model


@pytest.fixture(scope="module", params=ARCHS)
def saved(request, tmp_path_factory):
    arch = request.param
    model = _randomized(arch)
    folder = tmp_path_factory.mktemp(f"w-{arch}")
    model.save_pretrained(folder)
    return arch, model, folder


def _norm(x, scale, bias, eps):
    if bias is None:  # RMSNorm
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * scale
    mu = x.mean(-1, keepdim=True)
    return (x - mu) * torch.rsqrt((x - mu).pow(2).mean(-1, keepdim=True) + eps) * scale + bias


def _eps(config):
    for key in ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon"):
        if getattr(config, key, None) is not None:
            return float(getattr(config, key))
    raise AssertionError("no eps")


def _rotate(x, cos, sin):
    d = cos.shape[-1]
    rot, keep = x[..., :d], x[..., d:]
    half = torch.cat((-rot[..., d // 2:], rot[..., : d // 2]), -1)
    return torch.cat((rot * cos + half * sin, keep), -1)


def _rotary(model, arch, layer, hidden, n):
    base = model.base_model
    positions = torch.arange(n)[None]
    if arch == "gemma3":
        return base.rotary_emb(hidden[None], positions, base.layers[layer].self_attn.layer_type)
    return base.rotary_emb(hidden[None], positions)


def _patterns(arch, model, aw, layer, hidden):
    """[head, q, k] attention recomputed from aw alone (+ the model's rotary tables)."""
    n = hidden.shape[0]
    eps = _eps(model.config)
    x = hidden if aw.norm_in is None else _norm(hidden, aw.norm_in[layer], None if aw.norm_in_bias is None
                                                 else aw.norm_in_bias[layer], eps)
    q = torch.einsum("hdm,sm->hsd", aw.W_Q[layer], x)
    k = torch.einsum("hdm,sm->hsd", aw.W_K[layer], x)
    if aw.b_Q is not None:
        q, k = q + aw.b_Q[layer][:, None], k + aw.b_K[layer][:, None]
    if aw.q_norm is not None:
        q, k = _norm(q, aw.q_norm[layer], None, eps), _norm(k, aw.k_norm[layer], None, eps)
    if aw.rotary:
        cos, sin = _rotary(model, arch, layer, hidden, n)
        q, k = _rotate(q, cos[0], sin[0]), _rotate(k, cos[0], sin[0])
    scale = model.config.query_pre_attn_scalar ** -0.5 if arch == "gemma3" else 1 / math.sqrt(q.shape[-1])
    scores = q @ k.transpose(-1, -2) * scale
    if aw.causal:
        scores = scores.masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf"))
    return scores.softmax(-1)


def test_heads_recompute_attention_and_output(saved):
    arch, model, folder = saved
    aw = weights.all_heads(folder)
    family = registry.get(aw.family)
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(1))
    outs: dict[int, torch.Tensor] = {}
    blocks = submodule(model.base_model, family.layout.layers)
    hooks = [submodule(blocks[layer], family.layout.o_proj).register_forward_hook(
        lambda _m, _i, out, layer=layer: outs.__setitem__(layer, out[0].detach()))
        for layer in range(len(blocks))]
    try:
        with torch.no_grad():
            ref = model(ids, output_attentions=True, output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    L, H = aw.dims.n_layers, aw.dims.n_heads
    assert aw.W_Q.shape == (L, H, aw.dims.head_dim, aw.dims.d_model)
    assert aw.W_O.shape == (L, H, aw.dims.d_model, aw.dims.head_dim)
    for layer in range(L):
        hidden = ref.hidden_states[layer][0]
        with torch.no_grad():
            ours = _patterns(arch, model, aw, layer, hidden)
        pattern = ref.attentions[layer][0]
        assert (ours - pattern).abs().max() < 1e-4, (arch, layer)
        assert (ours[1] - pattern[0]).abs().max() > 1e-3  # a wrong head must not match
        # the OV side: Σ_h W_O^h (A^h V^h) + b_O is the output projection's output
        x = hidden if aw.norm_in is None else _norm(hidden, aw.norm_in[layer], None if aw.norm_in_bias is None
                                                     else aw.norm_in_bias[layer], _eps(model.config))
        v = torch.einsum("hdm,sm->hsd", aw.W_V[layer], x)
        if aw.b_V is not None:
            v = v + aw.b_V[layer][:, None]
        out = torch.einsum("hmd,hsd->sm", aw.W_O[layer], pattern @ v)
        if aw.b_O is not None:
            out = out + aw.b_O[layer]
        assert (out - outs[layer]).abs().max() < 1e-4, (arch, layer)


def test_file_and_model_agree(saved):
    """The same heads from the checkpoint file and from the model in memory (a run.Loaded's path)."""
    arch, model, folder = saved
    a, b = weights.all_heads(folder), weights.all_heads(model)
    for key in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O", "norm_in", "q_norm", "k_norm"):
        x, y = getattr(a, key), getattr(b, key)
        assert (x is None) == (y is None), key
        if x is not None:
            assert torch.equal(x, y), key
    assert a.family == b.family == {"qwen2": "llama"}.get(arch, arch)
    assert a.bytes(0, 0) is not None and b.bytes(0, 0) is None


def test_one_head_matches_the_stack_and_its_bytes(saved):
    arch, _, folder = saved
    aw = weights.all_heads(folder)
    layer, head = 1, aw.dims.n_heads - 1
    hw = weights.head(folder, layer, head)
    assert hw.kv_group == head // aw.dims.group_size
    for key, stacked in (("W_Q", aw.W_Q), ("W_K", aw.W_K), ("W_V", aw.W_V), ("W_O", aw.W_O)):
        assert torch.equal(getattr(hw, key), stacked[layer, head]), key
    assert (hw.b_Q is None) == (aw.b_Q is None)
    raw = (folder / "model.safetensors").read_bytes()
    assert hw.bytes == aw.bytes(layer, head)
    with open_checkpoint(folder) as ck:
        for kind, matrix in (("q", hw.W_Q), ("k", hw.W_K), ("v", hw.W_V), ("o", hw.W_O)):
            runs = [r for r in hw.bytes[kind] if ck.tensors[r["tensor"]].dtype == "F32"]
            assert runs, (kind, hw.bytes)
            weight = [r for r in runs if len(ck.tensors[r["tensor"]].shape) == 2]
            assert len(weight) == 1
            r = weight[0]
            data = b"".join(raw[r["offset"] + i * (r["stride"] or 0):][: r["length"]] for i in range(r["count"]))
            values = torch.frombuffer(bytearray(data), dtype=torch.float32)
            # the bytes hold exactly this head's matrix (in the file's own order: sort to compare)
            assert torch.equal(values.sort().values, matrix.flatten().sort().values), (arch, kind)


def test_loaded_model(tmp_path):
    """A run.Loaded (what atlas, circuits and the web app hold) gives the same heads as its file."""
    from glassbox.run import load_model

    folder = tmp_path / "m"
    _randomized("qwen2").save_pretrained(folder)
    loaded = load_model(folder)
    a, b = weights.all_heads(loaded), weights.all_heads(folder)
    assert torch.equal(a.W_K, b.W_K) and torch.equal(a.b_V, b.b_V)
    hw = weights.head(loaded, 0, 3)
    assert hw.bytes is None and torch.equal(hw.W_O, b.W_O[0, 3])


@pytest.mark.parametrize("arch", ["llama", "qwen3", "phi3", "gemma3"])
def test_gguf_heads(tmp_path, arch):
    """GGUF llama files store Q/K rows permuted for llama.cpp's rope kernel, Gemma norms as 1 + w: the
    accessor reads through both, so a GGUF file gives the same heads and norms as the model it came from."""
    import gguf_util

    model = getattr(gguf_util, f"tiny_{arch}")()
    path = gguf_util.write_tiny_gguf(model, tmp_path / f"{arch}.gguf")
    a, b = weights.all_heads(path), weights.all_heads(model)
    for key in ("W_Q", "W_K", "W_V", "W_O", "norm_in", "q_norm", "k_norm"):
        x, y = getattr(a, key), getattr(b, key)
        assert (x is None) == (y is None), key
        assert x is None or torch.allclose(x, y), key
    assert (a.q_norm is not None) == (arch in ("qwen3", "gemma3"))
    fused = "self_attn.qkv_proj" if arch == "phi3" else "self_attn.q_proj"
    assert a.bytes(0, 0)["q"][0]["tensor"] == f"model.layers.0.{fused}.weight"
    from glassbox.anatomy import describe

    with open_checkpoint(path) as ck:
        assert describe(ck).warnings == []  # every GGUF tensor has its Hugging Face name and a role


def test_out_of_range(saved):
    _, _, folder = saved
    with pytest.raises(IndexError):
        weights.head(folder, 0, 99)
    with pytest.raises(IndexError):
        weights.head(folder, 7, 0)


@pytest.mark.slow
def test_bundled_model_heads(smollm2):
    """The real SmolLM2-135M (Q4_1 GGUF, GQA 9/3): heads read from the quantized file through our reader equal
    those of the model transformers loaded, and recompute its attention in layers 0 and 7."""
    from_file = weights.all_heads("smollm2-135m", layers=[0, 7])
    from_model = weights.all_heads(smollm2, layers=[0, 7])
    assert from_file.family == "llama" and from_file.W_K.shape == (2, 9, 64, 576)
    for key in ("W_Q", "W_K", "W_V", "W_O", "norm_in"):
        assert torch.allclose(getattr(from_file, key), getattr(from_model, key), atol=1e-6), key
    assert from_file.bytes(7, 4)["k"][0]["slice"] == "[64:128, :]"  # query head 4 reads kv group 1
    ids = smollm2.tokenizer("The cat sat on the mat because it was tired.", return_tensors="pt").input_ids
    with torch.no_grad():
        ref = smollm2.model(ids, output_attentions=True, output_hidden_states=True)
        for i, layer in enumerate((0, 7)):
            one = weights.all_heads(smollm2, layers=[layer])
            ours = _patterns("llama", smollm2.model, one, 0, ref.hidden_states[layer][0])
            assert (ours - ref.attentions[layer][0]).abs().max() < 1e-4, layer
            assert torch.equal(one.W_Q[0], from_model.W_Q[i])


def test_heads_that_do_not_tile_are_bad_input(tmp_path):
    """A config whose heads do not tile the stored tensors: BadInput naming the file, not wrong matrices."""
    import json

    from glassbox.errors import BadInput

    folder = tmp_path / "m"
    tiny_model("llama", hidden=64).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["num_attention_heads"] = 8  # 8 heads of head_dim 16 need 128 rows; q_proj has 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(BadInput, match="do not fit"):
        weights.head(folder, 0, 0)
