"""A tiny GPT-2 with hand-built attention heads, for the lens / patching / clustering tests.

Residual dims: 0-7 token, 8-15 'copied token', 16-23 a rotary position code, 24-31 its negative (so every
residual has zero mean and the same norm, and LayerNorm is one fixed scale). A previous-token head
attends from p to p−1 (the query rotates the position code back one step); a self head attends p → p;
both copy the attended token into dims 8-15, which the unembedding reads. Everything else is random init.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

D, HEAD_DIM, N_HEADS = 32, 8, 4
THETAS = (1.0, 0.6, 0.35, 0.2)  # frequencies of the position code: one sharp peak per offset


def position_code(p: int) -> torch.Tensor:
    return torch.tensor([f(t * p) for t in THETAS for f in (math.cos, math.sin)])


def planted_gpt2(folder: Path, previous: list[tuple[int, int]], self_heads: list[tuple[int, int]] = (),
                 uniform: list[tuple[int, int]] = (), n_layers: int = 2, writes: bool = True,
                 seed: int = 0) -> Path:
    """Build and save the model; `writes=False` keeps only layer 0's planted heads writing (for patching),
    and zeroes layer-0 writes otherwise so that every layer reads the bare embeddings (for clustering)."""
    import transformers as tf

    torch.manual_seed(seed)
    config = tf.GPT2Config(vocab_size=96, n_embd=D, n_layer=n_layers, n_head=N_HEADS, n_positions=64,
                           bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    model = tf.GPT2LMHeadModel(config)
    tok = torch.randn(96, 8)
    tok = tok - tok.mean(1, keepdim=True)
    tok = 3 * tok / tok.norm(dim=1, keepdim=True)
    with torch.no_grad():
        tr = model.transformer
        tr.wte.weight.zero_()
        tr.wte.weight[:, :8] = tok
        tr.wpe.weight.zero_()
        for p in range(64):
            tr.wpe.weight[p, 16:24] = position_code(p)
            tr.wpe.weight[p, 24:32] = -position_code(p)
        planted = set(previous) | set(self_heads) | set(uniform)
        for layer in sorted({layer for layer, _ in planted}):
            attn = tr.h[layer].attn
            w, o = attn.c_attn.weight, attn.c_proj.weight  # Conv1D: [in, q|k|v], [heads·head_dim, d]
            attn.c_attn.bias.zero_()
            attn.c_proj.bias.zero_()
            for head in range(N_HEADS):
                if (layer, head) not in planted:
                    continue
                q0, k0, v0 = head * HEAD_DIM, D + head * HEAD_DIM, 2 * D + head * HEAD_DIM
                for cols in (q0, k0, v0):
                    w[:, cols : cols + HEAD_DIM] = 0
                if (layer, head) not in uniform:
                    back = 1.0 if (layer, head) in previous else 0.0
                    for i, t in enumerate(THETAS):
                        a = back * t  # the query's code rotated back by `back` steps
                        rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
                        w[16 + 2 * i : 18 + 2 * i, q0 + 2 * i : q0 + 2 * i + 2] = 20 * rot
                        w[16 + 2 * i : 18 + 2 * i, k0 + 2 * i : k0 + 2 * i + 2] = torch.eye(2)
                w[0:8, v0 : v0 + 8] = torch.eye(8)
                o[head * HEAD_DIM : (head + 1) * HEAD_DIM] = 0
                o[head * HEAD_DIM : (head + 1) * HEAD_DIM, 8:16] = torch.eye(8)
        if not writes:  # every layer reads the embeddings: no attention or MLP writes at all
            for block in tr.h:
                block.attn.c_proj.weight.zero_()
                block.mlp.c_proj.weight.zero_()
                block.attn.c_proj.bias.zero_()
                block.mlp.c_proj.bias.zero_()
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, 8:16] = tok
    model.save_pretrained(folder)
    return folder
