"""Anatomy on real (tiny, random) Hugging Face models: the per-head slices we report must *be* the heads.

For every architecture, head h's attention pattern is recomputed from our slices of Q and K alone (plus the
model's own norms and rotary embedding) and compared with what the model itself returns."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from tiny import tiny_model

from glassbox.anatomy import describe, head_bytes
from glassbox.checkpoint import open_checkpoint

ARCHS = ["llama", "qwen2", "qwen3", "phi3", "gemma3", "gpt2", "gpt_neox", "bert"]
EXPECTED_FAMILY = {"qwen2": "llama"}


@pytest.fixture(scope="module", params=ARCHS)
def saved(request, tmp_path_factory):
    arch = request.param
    model = tiny_model(arch, random_norms=True, hidden=64, vocab=97, sliding_window=32)
    folder = tmp_path_factory.mktemp(arch)
    model.save_pretrained(folder)
    return arch, model, folder


def _qk_slices(anatomy, layer):
    """{(kind, head): (weight block, bias block or None)} for one layer, from our slices alone."""
    ck = anatomy.checkpoint
    out: dict = {}
    for t in anatomy.tensors:
        if t.layer != layer or not t.heads:
            continue
        values = ck.tensor(t.entry.name).float()
        is_bias = t.entry.name.endswith("bias")
        for h in t.heads:
            block = values[h.index(values.ndim)]
            slot = out.setdefault((h.kind, h.head), [None, None, h.kv_group])
            slot[1 if is_bias else 0] = block
    return out


def _pattern_from_slices(arch, model, anatomy, layer, head, ids):
    """Attention of `head` in `layer`, recomputed outside the model's attention module."""
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states[layer][0]
        parts = _qk_slices(anatomy, layer)
        wq, bq, group = parts[("q", head)]
        wk, bk, _ = parts[("k", group)]
        n = ids.shape[1]
        if arch == "gpt2":  # Conv1D: x @ W, weights [in, out]
            block = model.transformer.h[layer]
            x = block.ln_1(hidden)
            q, k = x @ wq + bq, x @ wk + bk
        else:
            if arch == "bert":
                x = hidden
            elif arch == "gpt_neox":
                x = model.gpt_neox.layers[layer].input_layernorm(hidden)
            else:
                x = model.model.layers[layer].input_layernorm(hidden)
            q = x @ wq.T + (bq if bq is not None else 0)
            k = x @ wk.T + (bk if bk is not None else 0)
        scale = 1 / math.sqrt(q.shape[-1])
        positions = torch.arange(n)[None]
        if arch == "gemma3":
            attn = model.model.layers[layer].self_attn
            q, k = attn.q_norm(q), attn.k_norm(k)
            cos, sin = model.model.rotary_emb(hidden[None], positions, attn.layer_type)
            scale = model.config.query_pre_attn_scalar ** -0.5
        elif arch == "qwen3":  # an RMSNorm over each head's query and key, before the rotary
            attn = model.model.layers[layer].self_attn
            q, k = attn.q_norm(q), attn.k_norm(k)
            cos, sin = model.model.rotary_emb(hidden[None], positions)
        elif arch in ("llama", "qwen2", "phi3"):  # phi3: partial rotary (the tables cover half of each head)
            cos, sin = model.model.rotary_emb(hidden[None], positions)
        elif arch == "gpt_neox":
            cos, sin = model.gpt_neox.rotary_emb(hidden[None], positions)
        if arch in ("llama", "qwen2", "qwen3", "phi3", "gemma3", "gpt_neox"):
            q, k = _rotate(q, cos[0], sin[0]), _rotate(k, cos[0], sin[0])
        scores = (q @ k.T) * scale
        if arch != "bert":
            scores = scores.masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf"))
        return scores.softmax(-1)


def _rotate(x, cos, sin):
    d = cos.shape[-1]
    rot, keep = x[..., :d], x[..., d:]
    half = torch.cat((-rot[..., d // 2:], rot[..., : d // 2]), -1)
    return torch.cat((rot * cos + half * sin, keep), -1)


def test_slices_are_the_heads(saved):
    arch, model, folder = saved
    anatomy = describe(open_checkpoint(folder))
    assert anatomy.architecture == EXPECTED_FAMILY.get(arch, arch)
    assert anatomy.architecture_source == "config.json"
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(ids, output_attentions=True).attentions
    for layer in range(2):
        for head in range(anatomy.dims.n_heads):
            ours = _pattern_from_slices(arch, model, anatomy, layer, head, ids)
            assert (ours - reference[layer][0, head]).abs().max() < 1e-4, (arch, layer, head)
        # and a wrong head must not match: the test can fail
        ours = _pattern_from_slices(arch, model, anatomy, layer, 1, ids)
        assert (ours - reference[layer][0, 0]).abs().max() > 1e-3


def test_every_parameter_has_a_role(saved):
    arch, model, folder = saved
    anatomy = describe(open_checkpoint(folder))
    levels = {t.entry.name: t.level for t in anatomy.tensors}
    assert "unknown" not in levels.values(), [n for n, lv in levels.items() if lv == "unknown"]
    stored = sum(t.entry.numel for t in anatomy.tensors if t.level != "buffer")
    assert stored == anatomy.n_parameters
    assert anatomy.warnings == []


def test_gqa_groups(saved):
    arch, _, folder = saved
    anatomy = describe(open_checkpoint(folder))
    dims = anatomy.dims
    q_heads = [h for t in anatomy.tensors if t.level in ("attention.q", "attention.qkv") and t.layer == 0
               and t.entry.name.endswith("weight") for h in t.heads if h.kind == "q"]
    assert [h.kv_group for h in q_heads] == [h // dims.group_size for h in range(dims.n_heads)]
    expected_kv = {"llama": 2, "qwen2": 2, "qwen3": 2, "phi3": 2, "gemma3": 1}.get(arch, 4)
    assert dims.n_kv_heads == expected_kv


def test_byte_ranges_read_back_the_head(saved):
    """The offsets in the JSON are literal: reading those bytes from the file gives head h's values."""
    _, _, folder = saved
    anatomy = describe(open_checkpoint(folder))
    raw = (folder / "model.safetensors").read_bytes()
    checked = 0
    for t in anatomy.tensors:
        if t.entry.dtype != "F32" or not t.heads:
            continue
        values = anatomy.checkpoint.tensor(t.entry.name)
        for h in t.heads[:2]:
            b = head_bytes(t.entry, h)
            runs = [raw[b["offset"] + i * (b["stride"] or 0): b["offset"] + i * (b["stride"] or 0) + b["length"]]
                    for i in range(b["count"])]
            got = torch.frombuffer(bytearray(b"".join(runs)), dtype=torch.float32)
            assert torch.equal(got, values[h.index(values.ndim)].contiguous().flatten())
            checked += 1
    assert checked >= 4


def test_cli_json_contract(saved):
    arch, _, folder = saved
    run = subprocess.run([sys.executable, "-m", "glassbox", "anatomy", str(folder), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["format"] == "safetensors"
    assert set(doc) >= {"format", "architecture", "config", "n_parameters", "warnings", "levels", "tensors"}
    for t in doc["tensors"]:
        assert set(t) >= {"name", "dtype", "shape", "level", "layer", "heads"}
        for h in t["heads"]:
            assert h["kind"] in "qkvo" and set(h["bytes"]) >= {"offset", "length", "stride", "count"}
    assert sum(lv["n_parameters"] for lv in doc["levels"]) == doc["n_parameters"]


def test_human_output_binds_formulas(saved):
    arch, _, folder = saved
    run = subprocess.run([sys.executable, "-m", "glassbox", "anatomy", str(folder)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "softmax" in run.stdout and "Level → where it is written" in run.stdout
    assert "[0:16" in run.stdout  # a head's slice of a projection is printed literally


GGUF_MODELS = {"llama": "tiny_llama", "qwen2": "tiny_qwen2", "qwen3": "tiny_qwen3", "phi3": "tiny_phi3",
               "gemma3": "tiny_gemma3"}
GGUF_FAMILY = {"llama": "llama", "qwen2": "llama", "qwen3": "qwen3", "phi3": "phi3", "gemma3": "gemma3"}


@pytest.mark.parametrize("arch", sorted(GGUF_MODELS))
def test_gguf_slices_are_the_heads(tmp_path, arch):
    """GGUF stores llama Q/K rows permuted for llama.cpp's rope kernel and gemma norms as 1+w: the slices we
    report, read through our GGUF reader, must still recompute each head's attention exactly."""
    import gguf_util

    model = getattr(gguf_util, GGUF_MODELS[arch])()
    model.set_attn_implementation("eager")
    path = gguf_util.write_tiny_gguf(model, tmp_path / f"{arch}.gguf")
    anatomy = describe(open_checkpoint(path))
    assert anatomy.checkpoint.format == "gguf" and anatomy.architecture_source == "gguf metadata"
    assert anatomy.architecture == GGUF_FAMILY[arch]
    ids = torch.randint(0, 64, (1, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = model(ids, output_attentions=True).attentions
    family = GGUF_FAMILY[arch]
    for layer in range(2):
        for head in range(anatomy.dims.n_heads):
            ours = _pattern_from_slices(family, model, anatomy, layer, head, ids)
            assert (ours - reference[layer][0, head]).abs().max() < 1e-4, (arch, layer, head)


@pytest.mark.slow
def test_bundled_model_slices_are_the_heads(smollm2):
    """The real SmolLM2-135M GGUF (Q4_1, GQA 9 query / 3 kv heads): heads from our slices of the quantized
    file match the attention the transformers model computes, in layers 0 and 7."""
    anatomy = describe(open_checkpoint("smollm2-135m"))
    assert anatomy.dims.n_heads == 9 and anatomy.dims.n_kv_heads == 3 and anatomy.dims.n_layers == 30
    q = next(t for t in anatomy.tensors if t.entry.name == "model.layers.0.self_attn.q_proj.weight")
    assert q.entry.dtype == "Q4_1" and [h.kv_group for h in q.heads] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    ids = smollm2.tokenizer("The cat sat on the mat because it was tired.", return_tensors="pt").input_ids
    model = smollm2.model
    with torch.no_grad():
        reference = model(ids, output_attentions=True).attentions
    for layer in (0, 7):
        for head in (0, 4, 8):
            ours = _pattern_from_slices("llama", model, anatomy, layer, head, ids)
            assert (ours - reference[layer][0, head]).abs().max() < 1e-4, (layer, head)


@pytest.mark.parametrize("arch", ["qwen3", "phi3"])
def test_new_families_by_one_entry(arch, tmp_path):
    """Qwen3 and Phi-3 are one registry entry each: recognised from the config and from tensor names alone,
    every tensor has a level, Phi-3's fused qkv_proj rows split into [Q | K | V] heads with GQA groups."""
    import safetensors.torch

    from glassbox import registry

    model = tiny_model(arch, hidden=64)
    assert registry.family_of(model.config.model_type).name == arch
    model.save_pretrained(tmp_path / "m")
    anatomy = describe(open_checkpoint(tmp_path / "m"))
    assert anatomy.architecture == arch
    levels = {t.entry.name: t.level for t in anatomy.tensors}
    qkv = next(t for t in anatomy.tensors if t.layer == 1 and t.level in ("attention.qkv", "attention.q"))
    if arch == "phi3":
        assert levels["model.layers.0.self_attn.qkv_proj.weight"] == "attention.qkv"
        assert levels["model.layers.0.mlp.gate_up_proj.weight"] == "mlp.gate_up"
        assert [(h.kind, h.head, h.kv_group, h.start) for h in qkv.heads] == [
            ("q", 0, 0, 0), ("q", 1, 0, 16), ("q", 2, 1, 32), ("q", 3, 1, 48),
            ("k", 0, 0, 64), ("k", 1, 1, 80), ("v", 0, 0, 96), ("v", 1, 1, 112)]
    else:
        assert levels["model.layers.0.self_attn.q_norm.weight"] == "attention.qk_norm"
        assert [h.kv_group for h in qkv.heads] == [0, 0, 1, 1]
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                                str(tmp_path / "bare.safetensors"))
    bare = describe(open_checkpoint(tmp_path / "bare.safetensors"))
    assert bare.architecture == arch and bare.architecture_source == "tensor names"


def test_architecture_from_tensor_names_without_config(tmp_path):
    """No config.json: the family is recognised from its tensor names and said so; heads need the config."""
    import safetensors.torch

    model = tiny_model("gpt2")
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"},
                                str(tmp_path / "weights.safetensors"))
    anatomy = describe(open_checkpoint(tmp_path / "weights.safetensors"))
    assert anatomy.architecture == "gpt2" and anatomy.architecture_source == "tensor names"
    assert any("no usable config" in w for w in anatomy.warnings)
    assert all(not t.heads for t in anatomy.tensors)
    assert {t.level for t in anatomy.tensors} >= {"embedding", "attention.qkv", "mlp.in", "final_norm"}


def test_unknown_architecture_lists_tensors_with_a_warning(tmp_path):
    import safetensors.torch

    safetensors.torch.save_file({"encoder.weird.w": torch.zeros(2, 3), "blob": torch.ones(4)},
                                str(tmp_path / "odd.safetensors"))
    run = subprocess.run([sys.executable, "-m", "glassbox", "anatomy", str(tmp_path / "odd.safetensors"), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["architecture"] == "unknown"
    assert [t["level"] for t in doc["tensors"]] == ["unknown", "unknown"]
    assert any("unknown architecture" in w for w in doc["warnings"])
