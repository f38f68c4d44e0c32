"""Write tiny GGUF files from tiny random Hugging Face models, the way llama.cpp's converter lays them out.

Names come from the `gguf` package's own HF → GGUF name map (not from glassbox), so a test that reads these
files back checks glassbox against an independent table. Layout rules applied here, as llama.cpp does:
llama Q/K rows permuted per head for its rope kernel; Gemma norms stored as 1 + w; dims written reversed
(GGUFWriter takes the numpy/HF shape and reverses it itself).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def permute_rows(w: np.ndarray, n: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of Q/K rows (n = heads for Q, kv heads for K)."""
    return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tokenizer(writer, vocab_size: int) -> None:
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"<t{i}>" for i in range(vocab_size)])
    writer.add_token_scores([0.0] * vocab_size)
    writer.add_token_types([1] * vocab_size)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)


def write_tiny_gguf(model, path: str | Path, qtype: str = "F32", swa_pattern: int | list[bool] | None = None) -> Path:
    """Write a tiny LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM / Gemma3ForCausalLM as GGUF (F32 by default; Q8_0
    quantizes the 2-D weights whose rows allow it). `swa_pattern`: Gemma 3's `attention.sliding_window_pattern`
    (per-layer flags, true = sliding, or a period), written only when given (llama.cpp's files omit it)."""
    import gguf
    from gguf.constants import MODEL_ARCH_NAMES

    cfg = model.config
    arch = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3", "gemma3_text": "gemma3"}[cfg.model_type]
    arch_enum = next(k for k, v in MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_enum, cfg.num_hidden_layers)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    path = Path(path)
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"tiny-{arch}")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    rope = getattr(cfg, "rope_parameters", None) or {"rope_theta": cfg.rope_theta}
    rope = rope.get("full_attention", rope)  # gemma3: global layers' base; llama.cpp fixes the local one
    w.add_rope_freq_base(float(rope["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    if arch == "gemma3":
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_sliding_window(cfg.sliding_window)
        if swa_pattern is not None:
            w.add_sliding_window_pattern(swa_pattern)
    else:
        w.add_rope_dimension_count(head_dim)
    _tokenizer(w, cfg.vocab_size)
    if arch == "phi3":  # else transformers' Phi-3 default pad id (32000) lies outside the tiny vocabulary
        w.add_pad_token_id(cfg.pad_token_id)

    state = model.state_dict()
    tied = cfg.tie_word_embeddings
    for hf_name, tensor in state.items():
        if tied and hf_name == "lm_head.weight":
            continue
        base, _, suffix = hf_name.rpartition(".")
        gguf_base = names.get_name(base)
        assert gguf_base is not None, f"gguf has no name for {hf_name}"
        data = tensor.detach().float().numpy().copy()
        if arch == "llama" and gguf_base.endswith((".attn_q", ".attn_k")):
            n = cfg.num_attention_heads if gguf_base.endswith(".attn_q") else cfg.num_key_value_heads
            data = permute_rows(data, n)
        if arch == "gemma3" and hf_name.endswith("norm.weight"):
            data = data + 1.0
        raw_dtype = None
        if qtype == "Q8_0" and data.ndim == 2 and data.shape[1] % 32 == 0:
            data = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            raw_dtype = gguf.GGMLQuantizationType.Q8_0
        w.add_tensor(f"{gguf_base}.{suffix}", data, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_tiny_llama_gguf(model, path: str | Path) -> Path:
    """A tiny LlamaForCausalLM as an F32 GGUF file with llama.cpp's Q/K row permutation."""
    assert model.config.model_type == "llama"
    return write_tiny_gguf(model, path)


def tiny_llama(tie: bool = False, seed: int = 0):
    """A tiny random LlamaForCausalLM with GQA (4 heads, 2 kv heads)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      rope_theta=10000.0, tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg).eval()


def tiny_qwen2(seed: int = 0):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=False)
    return Qwen2ForCausalLM(cfg).eval()


def tiny_qwen3(seed: int = 0):
    """A tiny random Qwen3ForCausalLM: GQA and an RMSNorm on each head's query and key (randomized)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
                      tie_word_embeddings=False)
    model = Qwen3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * 0.3)
    return model


def tiny_phi3(seed: int = 0):
    """A tiny random Phi3ForCausalLM: fused qkv_proj and gate_up_proj, GQA, norms randomized."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(seed)
    cfg = Phi3Config(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                     tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = Phi3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * 0.3)
    return model


def tiny_gemma3(seed: int = 0):
    """A tiny random Gemma3ForCausalLM (text): q/k norms, four norms per layer, one kv head, tied embeddings.
    Norm weights are randomized (they start at zero) so the 1 + w storage rule is actually exercised."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                           max_position_embeddings=128, sliding_window=16)
    model = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(0, 0.1)
    return model
