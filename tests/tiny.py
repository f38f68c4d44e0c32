"""Tiny random Hugging Face models, one per architecture the role maps cover, for tests that need real
modules with known layouts. Small enough to build in milliseconds."""

from __future__ import annotations

import torch
import transformers


def tiny_config(arch: str) -> transformers.PretrainedConfig:
    common = dict(vocab_size=97, num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                  intermediate_size=96, max_position_embeddings=64)
    if arch == "llama":  # GQA: 4 query heads share 2 kv heads
        return transformers.LlamaConfig(**common, num_key_value_heads=2, rope_theta=10000.0)
    if arch == "qwen2":  # llama family with q/k/v biases
        return transformers.Qwen2Config(**common, num_key_value_heads=2)
    if arch == "gemma3":  # q/k norms, one kv head, (1+w) norms, sliding + global layers
        return transformers.Gemma3TextConfig(**common, num_key_value_heads=1, head_dim=16,
                                             query_pre_attn_scalar=16, sliding_window=32,
                                             layer_types=["sliding_attention", "full_attention"])
    if arch == "gpt2":
        return transformers.GPT2Config(vocab_size=97, n_layer=2, n_embd=64, n_head=4, n_positions=64)
    if arch == "gpt_neox":  # interleaved fused QKV, partial rotary
        return transformers.GPTNeoXConfig(**common, rotary_pct=0.5)
    if arch == "bert":
        return transformers.BertConfig(**common)
    raise ValueError(arch)


def tiny_model(arch: str, seed: int = 0) -> transformers.PreTrainedModel:
    torch.manual_seed(seed)
    config = tiny_config(arch)
    config._attn_implementation = "eager"
    cls = transformers.BertModel if arch == "bert" else transformers.AutoModelForCausalLM
    model = cls(config) if arch == "bert" else cls.from_config(config, attn_implementation="eager")
    with torch.no_grad():  # random norms, so a test cannot pass by ignoring them
        for name, p in model.named_parameters():
            if "norm" in name.lower() or "ln_" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model.eval()
