"""The run layer on tiny random models of every architecture: loading, the cache against HF's own outputs,
ablation and patching against weight surgery."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from glassbox.errors import BadInput
from glassbox.run import hooks, load_model
from glassbox.run.layout import o_weight

ARCHS = ["llama", "qwen3", "phi3", "gemma3", "gpt2", "gpt_neox", "bert"]


def tokens(seed: int = 0, batch: int = 2, seq: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 96, (batch, seq), generator=g)


@pytest.mark.parametrize("arch", ARCHS)
def test_cache_matches_hf_outputs(arch, tiny_folder):
    loaded = load_model(tiny_folder(arch))
    assert loaded.architecture == arch
    ids = tokens()
    logits, cache = hooks.run_with_cache(loaded, ids)
    with torch.inference_mode():
        ref = loaded.model(input_ids=ids, output_hidden_states=True, output_attentions=True)
    plain = ref.logits if hasattr(ref, "logits") and ref.logits is not None else ref.last_hidden_state
    assert torch.allclose(logits, plain, atol=1e-5)
    n = loaded.n_layers
    for layer in range(n):
        assert torch.allclose(cache[f"blocks.{layer}.resid_pre"], ref.hidden_states[layer], atol=1e-6)
        assert torch.allclose(cache[f"blocks.{layer}.attn.pattern"], ref.attentions[layer], atol=1e-6)
        z = cache[f"blocks.{layer}.attn.z"]
        assert z.shape == (2, 10, loaded.n_heads, z.shape[-1])
        # per-head contributions sum to the projection's output (less its bias)
        o = cache[f"blocks.{layer}.attn.out"]
        summed = cache[f"blocks.{layer}.attn.head_out"].sum(dim=2)
        bias = o - summed
        assert torch.allclose(bias, bias[:1, :1].expand_as(bias), atol=1e-5)
        assert cache[f"blocks.{layer}.mlp.out"].shape == o.shape
    # the last layer's output is the model's output before the final norm (HF's last hidden state is normed,
    # except for BERT where there is no final norm)
    if arch == "bert":
        assert torch.allclose(cache[f"blocks.{n - 1}.resid_post"], ref.last_hidden_state, atol=1e-6)
    else:
        assert torch.allclose(cache["blocks.0.resid_post"], ref.hidden_states[1], atol=1e-6)
    if arch in ("llama", "qwen3", "phi3", "gpt2", "gpt_neox"):  # pre-LN, no output norm: mid = pre + attn write
        for layer in range(n):
            mid = cache[f"blocks.{layer}.resid_pre"] + cache[f"blocks.{layer}.attn.out"]
            assert torch.allclose(cache[f"blocks.{layer}.resid_mid"], mid, atol=1e-6)
            post = cache[f"blocks.{layer}.resid_mid"] + cache[f"blocks.{layer}.mlp.out"]
            if arch != "gpt_neox" or layer < n - 1:
                assert torch.allclose(cache[f"blocks.{layer}.resid_post"], post, atol=1e-5)


def test_only_named_items_are_kept(tiny_folder):
    loaded = load_model(tiny_folder("gpt_neox"))
    _, cache = hooks.run_with_cache(loaded, tokens(), names=["blocks.*.attn.pattern", "blocks.1.resid_mid"])
    assert sorted(cache) == ["blocks.0.attn.pattern", "blocks.1.attn.pattern", "blocks.1.resid_mid"]
    _, cache = hooks.run_with_cache(loaded, tokens(), names="blocks.0.attn.head_out")
    assert list(cache) == ["blocks.0.attn.head_out"]
    assert cache["blocks.0.attn.head_out"].shape == (2, 10, 4, 32)
    with pytest.raises(KeyError):
        hooks.select(["blocks.9.nothing"], 2)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert"])
def test_cache_until_a_layer_equals_the_full_forward_there(arch, tiny_folder):
    loaded = load_model(tiny_folder(arch))
    names = ["blocks.*.attn.pattern", "blocks.0.attn.head_out"]
    _, full = hooks.run_with_cache(loaded, tokens(), names=names)
    before = hooks.stats["forwards"]
    part = hooks.run_with_cache_until(loaded, tokens(), 0, names=names)
    assert hooks.stats["forwards"] == before + 1
    # block 0 recorded exactly as in the full forward; block 1 never ran
    assert sorted(part) == ["blocks.0.attn.head_out", "blocks.0.attn.pattern"]
    assert torch.equal(part["blocks.0.attn.pattern"], full["blocks.0.attn.pattern"])
    assert torch.allclose(part["blocks.0.attn.head_out"], full["blocks.0.attn.head_out"], atol=1e-6)
    # the model is usable afterwards: the stop hook is gone
    _, again = hooks.run_with_cache(loaded, tokens(), names=names)
    assert torch.equal(again["blocks.1.attn.pattern"], full["blocks.1.attn.pattern"])


@pytest.mark.parametrize("arch", ["llama", "phi3", "gpt2", "bert"])
def test_zero_ablation_equals_weight_surgery(arch, tiny_folder):
    loaded = load_model(tiny_folder(arch))
    ids = tokens(1)
    ablated = hooks.run(loaded, ids, hooks.zero_ablation([(1, 2)]))
    plain = hooks.run(loaded, ids)
    assert not torch.allclose(ablated, plain, atol=1e-4)
    w = o_weight(loaded.model, arch, 1)
    d = w.shape[1] // loaded.n_heads
    with torch.no_grad():
        saved = w[:, 2 * d:3 * d].clone()
        w[:, 2 * d:3 * d] = 0  # a view on the real parameter (Conv1D: a transposed view)
        surgery = hooks.run(loaded, ids)
        w[:, 2 * d:3 * d] = saved
    assert torch.allclose(ablated, surgery, atol=1e-5)
    assert torch.equal(hooks.run(loaded, ids), plain)  # hooks are gone after the run


def test_mean_ablation_and_head_patching(tiny_folder):
    loaded = load_model(tiny_folder("llama"))
    a, b = tokens(2, batch=1), tokens(3, batch=1)
    _, cache_a = hooks.run_with_cache(loaded, a, names="blocks.*.attn.z")
    _, cache_b = hooks.run_with_cache(loaded, b, names="blocks.*.attn.z")
    edits = hooks.patch_heads([(0, 1)], cache_a, positions=[3, 4])
    _, patched = hooks.run_with_cache(loaded, b, names="blocks.*.attn.z", edits=edits)
    z = patched["blocks.0.attn.z"]
    assert torch.equal(z[:, 3:5, 1], cache_a["blocks.0.attn.z"][:, 3:5, 1])
    assert torch.equal(z[:, :3, 1], cache_b["blocks.0.attn.z"][:, :3, 1])
    assert torch.equal(z[:, :, 0], cache_b["blocks.0.attn.z"][:, :, 0])
    # layer 1 sees the patched layer 0, so its heads change at the patched positions onward only
    z1 = patched["blocks.1.attn.z"]
    assert torch.equal(z1[:, :3], cache_b["blocks.1.attn.z"][:, :3])
    assert not torch.allclose(z1[:, 3:], cache_b["blocks.1.attn.z"][:, 3:])
    means = hooks.head_means(loaded, torch.cat([a, b]))
    assert means.shape == (2, 4, 8)
    _, mean_run = hooks.run_with_cache(loaded, b, names="blocks.0.attn.z", edits=hooks.mean_ablation([(0, 3)], means))
    assert torch.allclose(mean_run["blocks.0.attn.z"][0, :, 3], means[0, 3].expand(10, -1))


def test_batched_edits_touch_only_their_row(tiny_folder):
    loaded = load_model(tiny_folder("llama"))
    ids = tokens(4, batch=1).repeat(3, 1)
    out = hooks.run(loaded, ids, hooks.zero_ablation([(0, 0)], batch=1) + hooks.zero_ablation([(1, 3)], batch=2))
    plain = hooks.run(loaded, ids[:1])
    assert torch.allclose(out[0], plain[0], atol=1e-6)
    assert not torch.allclose(out[1], plain[0], atol=1e-4)
    assert not torch.allclose(out[2], out[1], atol=1e-4)
    assert torch.allclose(out[1], hooks.run(loaded, ids[:1], hooks.zero_ablation([(0, 0)]))[0], atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_pattern_edits(arch, tiny_folder):
    loaded = load_model(tiny_folder(arch))
    ids = tokens(7)
    plain, clean = hooks.run_with_cache(loaded, ids, names="blocks.*.attn.pattern")
    same = hooks.run(loaded, ids, [hooks.PatternEdit(1, 2, lambda p: p), hooks.PatternEdit(0, 0, lambda p: p)])
    assert torch.allclose(same, plain, atol=1e-6)
    out, cache = hooks.run_with_cache(loaded, ids, names="blocks.*.attn.pattern",
                                      edits=[hooks.PatternEdit(1, 2, "no_sink")])
    assert clean["blocks.1.attn.pattern"][:, 2, 1:, 0].min() > 0.01  # the head did attend to position 0
    p = cache["blocks.1.attn.pattern"]  # recorded after the edit
    first = 0 if arch == "bert" else 1  # a causal model's first query sees only position 0: its row stays
    assert torch.equal(p[:, 2, first:, 0], torch.zeros_like(p[:, 2, first:, 0]))
    assert torch.allclose(p[:, 2].sum(-1), torch.ones(2, 10), atol=1e-5)
    assert torch.equal(p[:, [0, 1, 3]], clean["blocks.1.attn.pattern"][:, [0, 1, 3]])
    assert torch.equal(cache["blocks.0.attn.pattern"], clean["blocks.0.attn.pattern"])
    assert not torch.allclose(out, plain, atol=1e-4)
    assert loaded.model.config._attn_implementation == "eager"  # restored after the run
    assert torch.equal(hooks.run(loaded, ids), plain)


def test_pattern_edit_is_pattern_times_values(tiny_folder):
    """The edited head's z is the new pattern times the values, computed here from GPT-2's own weights;
    batch and positions confine the edit."""
    loaded = load_model(tiny_folder("gpt2"))
    ids = tokens(8)
    _, clean = hooks.run_with_cache(loaded, ids, names=["blocks.1.*"])
    edit = hooks.PatternEdit(1, 3, "uniform", positions=[5, 6], batch=1)
    _, cache = hooks.run_with_cache(loaded, ids, names=["blocks.1.*"], edits=[edit])
    p = cache["blocks.1.attn.pattern"]
    assert torch.allclose(p[1, 3, 5], torch.tensor([0.0] + [0.2] * 5 + [0.0] * 4))
    changed = torch.zeros_like(p, dtype=torch.bool)
    changed[1, 3, 5:7] = True
    assert torch.equal(p[~changed], clean["blocks.1.attn.pattern"][~changed])
    block = loaded.model.transformer.h[1]
    with torch.inference_mode():
        qkv = block.attn.c_attn(block.ln_1(cache["blocks.1.resid_pre"]))
    v = qkv[..., 64:].view(2, 10, 4, 8)[:, :, 3]  # [batch, seq, d_head] of head 3
    z = cache["blocks.1.attn.z"][:, :, 3]
    assert torch.allclose(z, p[:, 3] @ v, atol=1e-5)
    assert not torch.allclose(z[1, 5:7], clean["blocks.1.attn.z"][1, 5:7, 3], atol=1e-4)
    assert torch.equal(z[0], clean["blocks.1.attn.z"][0, :, 3])
    with pytest.raises(ValueError):
        hooks.run(loaded, ids, [hooks.PatternEdit(1, 0, "nonsense")])
    assert loaded.model.config._attn_implementation == "eager"


def test_residual_patch_carries_the_other_run(tiny_folder):
    loaded = load_model(tiny_folder("gpt2"))
    a, b = tokens(5, batch=1), tokens(6, batch=1)
    la, cache_a = hooks.run_with_cache(loaded, a, names="blocks.*.resid_*")
    edit = hooks.ResidEdit(1, "resid_pre", cache_a["blocks.1.resid_pre"])
    lb = hooks.run(loaded, b, [edit])
    assert torch.allclose(lb, la, atol=1e-5)
    edit = hooks.ResidEdit(0, "resid_post", cache_a["blocks.0.resid_post"][:, 4], positions=4)
    lb = hooks.run(loaded, b, [edit])
    plain_b = hooks.run(loaded, b)
    assert torch.allclose(lb[:, :4], plain_b[:, :4], atol=1e-6)
    assert not torch.allclose(lb[:, 4:], plain_b[:, 4:], atol=1e-4)  # from the patched position on


def test_load_from_file_and_training_layout(tiny_folder, tmp_path):
    src = tiny_folder("llama")
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(src / "config.json", run_dir / "config.json")
    shutil.copy(src / "model.safetensors", run_dir / "checkpoints" / "step-000010.safetensors")
    a = load_model(run_dir / "checkpoints" / "step-000010.safetensors")
    b = load_model(src)
    ids = tokens()
    assert torch.equal(hooks.run(a, ids), hooks.run(b, ids))


def test_bad_inputs_are_bad_input(tiny_folder, tmp_path):
    src = tiny_folder("llama")
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(src / "model.safetensors", lone / "model.safetensors")
    with pytest.raises(BadInput, match="config.json"):
        load_model(lone / "model.safetensors")
    odd = tmp_path / "odd"
    odd.mkdir()
    shutil.copy(src / "model.safetensors", odd / "model.safetensors")
    (odd / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(BadInput, match="cannot be run"):
        load_model(odd)
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(src / "config.json", broken / "config.json")
    (broken / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(BadInput):
        load_model(broken)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(src / "config.json", pickled / "config.json")
    model = load_model(src).model
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(BadInput, match="allow-pickle"):
        load_model(pickled)
    allowed = load_model(pickled, allow_pickle=True)
    assert torch.equal(hooks.run(allowed, tokens()), hooks.run(load_model(src), tokens()))
    with pytest.raises(BadInput):
        load_model(tmp_path / "missing")


@pytest.mark.slow
def test_bundled_smollm2_cache(smollm2):
    assert (smollm2.architecture, smollm2.n_layers, smollm2.n_heads) == ("llama", 30, 9)
    ids = smollm2.tokenizer("The cat sat on the mat because", return_tensors="pt").input_ids
    logits, cache = hooks.run_with_cache(smollm2, ids, names=["blocks.3.attn.pattern", "blocks.3.attn.head_out"])
    pattern = cache["blocks.3.attn.pattern"]
    assert pattern.shape == (1, 9, ids.shape[1], ids.shape[1])
    assert torch.allclose(pattern.sum(-1), torch.ones(1, 9, ids.shape[1]), atol=1e-5)
    assert torch.triu(pattern[0, 0], diagonal=1).abs().max() == 0  # causal
    assert cache["blocks.3.attn.head_out"].shape == (1, ids.shape[1], 9, 576)
    assert logits.shape[-1] == 49152


def test_load_sharded(tiny_folder, tmp_path):
    import transformers as tf

    src = tiny_folder("gpt_neox")
    model = tf.AutoModelForCausalLM.from_pretrained(src)
    model.save_pretrained(tmp_path, max_shard_size="40KB")
    index = tmp_path / "model.safetensors.index.json"
    assert index.exists() and len(list(tmp_path.glob("*.safetensors"))) > 1
    ids = tokens()
    ref = hooks.run(load_model(src), ids)
    assert torch.equal(hooks.run(load_model(tmp_path), ids), ref)
    assert torch.equal(hooks.run(load_model(index), ids), ref)
