"""The warm-load fast path (run/load.py `_assign`): parameters built on the meta device, safetensors tensors
memory-mapped and assigned. Its models must equal `from_pretrained`'s exactly, for every family, ties kept;
and the GGUF cache key must survive a reinstall of the same bytes but not a changed byte."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import safetensors.torch
import torch
import transformers
from tiny import save_tiny, tiny_model

from glassbox.run import load as load_mod
from glassbox.run import load_model

FAMILIES = ["llama", "qwen2", "qwen3", "phi3", "gemma3", "gpt2", "gpt_neox", "bert"]


def reference(folder, arch):
    cls = transformers.AutoModel if arch == "bert" else transformers.AutoModelForCausalLM
    return cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()


def outputs(model, ids):
    with torch.no_grad():
        out = model(input_ids=ids)
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


@pytest.fixture
def no_fallback(monkeypatch):
    """Make the slow path fail loudly, so a test proves the fast path did the loading."""
    def fail(*_, **__):
        raise AssertionError("from_pretrained fallback was used")

    monkeypatch.setattr(load_mod, "_from_pretrained", fail)


@pytest.mark.parametrize("arch", FAMILIES)
def test_fast_load_equals_from_pretrained(arch, tmp_path, no_fallback):
    folder = save_tiny(arch, tmp_path / arch)
    ref = reference(folder, arch)
    ids = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(1))
    for spec in (folder, folder / "model.safetensors"):
        model = load_model(spec).model
        assert not any(p.is_meta for p in model.parameters())
        assert torch.equal(outputs(model, ids), outputs(ref, ids))
        assert set(model.state_dict()) == set(ref.state_dict())
        out_emb = model.get_output_embeddings()
        if out_emb is not None:  # tied in the config ⇒ one tensor, as from_pretrained makes it
            tied = ref.get_output_embeddings().weight is ref.get_input_embeddings().weight
            assert (out_emb.weight is model.get_input_embeddings().weight) == tied


def test_tied_weights_are_one_tensor(tmp_path, no_fallback):
    folder = save_tiny("gpt2", tmp_path / "gpt2")  # GPT-2 ties wte and lm_head; the file stores wte only
    model = load_model(folder).model
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_in_place_edit_never_reaches_the_file(tmp_path, no_fallback):
    """Weights map the file copy-on-write: ablation by weight surgery must work and leave the file alone."""
    folder = save_tiny("llama", tmp_path / "llama")
    before = (folder / "model.safetensors").read_bytes()
    model = load_model(folder).model
    with torch.no_grad():
        model.model.layers[0].self_attn.o_proj.weight.zero_()
    assert float(model.model.layers[0].self_attn.o_proj.weight.detach().abs().sum()) == 0.0
    assert (folder / "model.safetensors").read_bytes() == before
    fresh = load_model(folder).model
    assert float(fresh.model.layers[0].self_attn.o_proj.weight.detach().abs().sum()) > 0


def test_half_precision_file_is_upcast(tmp_path, no_fallback):
    folder = save_tiny("llama", tmp_path / "llama")
    ref = reference(folder, "llama")
    state = {k: v.to(torch.bfloat16) for k, v in safetensors.torch.load_file(folder / "model.safetensors").items()}
    safetensors.torch.save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    model = load_model(folder).model
    assert model.lm_head.weight.dtype == torch.float32
    assert torch.equal(model.lm_head.weight, ref.lm_head.weight.to(torch.bfloat16).float())


def test_sharded_folder_fast(tmp_path, no_fallback):
    folder = tmp_path / "sharded"
    tiny_model("llama").save_pretrained(folder, max_shard_size="20KB")
    assert (folder / "model.safetensors.index.json").is_file()
    ids = torch.randint(0, 96, (1, 7))
    assert torch.equal(outputs(load_model(folder).model, ids), outputs(reference(folder, "llama"), ids))


def test_unmappable_names_fall_back(tmp_path):
    """A file whose names need a conversion we do not do still loads, through from_pretrained."""
    folder = save_tiny("llama", tmp_path / "llama")
    state = safetensors.torch.load_file(folder / "model.safetensors")
    q = state.pop("model.layers.0.self_attn.q_proj.weight")
    state["model.layers.0.self_attn.q_proj.weight_renamed_by_nobody"] = q
    safetensors.torch.save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    from glassbox.errors import BadInput

    with pytest.raises(BadInput, match="lacks 1 tensors"):  # from_pretrained's verdict, as before
        load_model(folder)


def test_gguf_cache_survives_reinstall_not_change(tmp_path, monkeypatch):
    import gguf_util

    monkeypatch.setenv("GLASSBOX_CACHE", str(tmp_path / "cache"))
    model = tiny_model("llama")
    (tmp_path / "a").mkdir()
    first = gguf_util.write_tiny_gguf(model, tmp_path / "a" / "m.gguf")
    folder = load_mod.gguf_cache(first)
    # a reinstall: the same bytes at a new inode, with a new mtime
    again = tmp_path / "b" / "m.gguf"
    again.parent.mkdir()
    shutil.copyfile(first, again)
    os.utime(again, ns=(1_000_000_000, 1_000_000_000))
    assert load_mod.gguf_cache(again) == folder
    keys = [p for p in (tmp_path / "cache" / "gguf").iterdir() if p.name != "seen"]
    assert keys == [folder]
    # one changed byte in the middle of the tensor data, same size and the same first and last bytes
    data = bytearray(again.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0x01
    again.write_bytes(bytes(data))
    changed = load_mod.gguf_cache(again)
    assert changed != folder
    a = load_model(first).model.model.layers[0].self_attn.q_proj.weight
    b = load_model(again).model.model.layers[0].self_attn.q_proj.weight
    assert a.shape == b.shape


@pytest.mark.slow
def test_smollm2_fast_load_equals_from_pretrained(smollm2):
    folder = load_mod.gguf_cache(smollm2.source)
    ref = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                            attn_implementation="eager").eval()
    ids = torch.tensor([[1, 504, 2655, 3290, 314, 260, 1345, 30]])
    assert torch.equal(outputs(smollm2.model, ids), outputs(ref, ids))
    assert smollm2.model.lm_head.weight is smollm2.model.model.embed_tokens.weight
    assert np.isfinite(outputs(smollm2.model, ids).numpy()).all()


def test_thread_count(monkeypatch):
    """GLASSBOX_THREADS wins; otherwise one thread below SMALL_MODEL parameters, torch's default above."""
    from glassbox.errors import BadInput

    load_mod.set_threads()
    default = load_mod._DEFAULT_THREADS  # torch's own count, remembered before anything changed it
    small = tiny_model("llama")
    with torch.device("meta"):  # counted, never allocated
        big = transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=200_000, hidden_size=64,
                                                                     num_hidden_layers=1, intermediate_size=64))
    assert sum(p.numel() for p in big.parameters()) >= load_mod.SMALL_MODEL
    monkeypatch.delenv("GLASSBOX_THREADS", raising=False)
    assert load_mod.set_threads(small) == 1 == torch.get_num_threads()
    assert load_mod.set_threads(big) == default == torch.get_num_threads()
    monkeypatch.setenv("GLASSBOX_THREADS", "3")
    assert load_mod.set_threads(small) == 3 == torch.get_num_threads()
    monkeypatch.setenv("GLASSBOX_THREADS", "two")
    with pytest.raises(BadInput, match="GLASSBOX_THREADS"):
        load_mod.set_threads()
    monkeypatch.delenv("GLASSBOX_THREADS")
    assert load_mod.set_threads() == default
