"""Tiny random Hugging Face models, one per architecture the role maps and the run layer cover, for tests
that need real modules with known layouts. Small enough to build in milliseconds."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers


def tiny_config(arch: str, hidden: int = 32, vocab: int = 96, sliding_window: int = 4
                ) -> transformers.PretrainedConfig:
    """2 layers, 4 heads of hidden // 4. llama and qwen2: GQA with 2 kv heads; gemma3: one kv head,
    q/k norms, a sliding and a global layer; qwen3: GQA and q/k norms; phi3: GQA, fused QKV and gate/up;
    gpt_neox: interleaved fused QKV with partial rotary."""
    common = dict(vocab_size=vocab, num_hidden_layers=2, hidden_size=hidden, num_attention_heads=4,
                  intermediate_size=2 * hidden, max_position_embeddings=128)
    if arch == "llama":
        return transformers.LlamaConfig(**common, num_key_value_heads=2, rope_theta=10000.0,
                                        tie_word_embeddings=False)
    if arch == "qwen2":  # llama family with q/k/v biases
        return transformers.Qwen2Config(**common, num_key_value_heads=2)
    if arch == "qwen3":  # llama family with an RMSNorm on each head's query and key
        return transformers.Qwen3Config(**common, num_key_value_heads=2, head_dim=hidden // 4)
    if arch == "phi3":  # fused qkv_proj rows [Q | K | V] and fused gate_up_proj; partial rotary
        return transformers.Phi3Config(**common, num_key_value_heads=2, partial_rotary_factor=0.5,
                                       pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if arch == "gemma3":
        return transformers.Gemma3TextConfig(**common, num_key_value_heads=1, head_dim=hidden // 4,
                                             query_pre_attn_scalar=hidden // 4, sliding_window=sliding_window,
                                             layer_types=["sliding_attention", "full_attention"])
    if arch == "gpt2":
        return transformers.GPT2Config(vocab_size=vocab, n_layer=2, n_embd=hidden, n_head=4, n_positions=128)
    if arch == "gpt_neox":
        return transformers.GPTNeoXConfig(**common, rotary_pct=0.5)
    if arch == "bert":
        return transformers.BertConfig(**common)
    raise ValueError(arch)


def tiny_model(arch: str, seed: int = 0, random_norms: bool = False, **config) -> transformers.PreTrainedModel:
    """A random model in eval mode with eager attention (so attention patterns are returned)."""
    torch.manual_seed(seed)
    cfg = tiny_config(arch, **config)
    cls = transformers.AutoModel if arch == "bert" else transformers.AutoModelForCausalLM
    model = cls.from_config(cfg, attn_implementation="eager")
    if random_norms:  # norms start at 1 (or 0 for Gemma's 1 + w): randomize so a test cannot ignore them
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name.lower() or "ln_" in name:
                    p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def save_tiny(arch: str, folder: Path, seed: int = 0) -> Path:
    """Build a tiny random model, save it (safetensors + config.json) and return the folder."""
    tiny_model(arch, seed).save_pretrained(folder)
    return folder
