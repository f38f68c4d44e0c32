"""A GPT-2 whose induction circuit is set by hand, so the atlas's verdicts can be checked against the truth.

d_model 96 = token one-hots (dims 0..23, vocab 24) | previous-token slot (24..47) | position one-hots
(48..71) | unused. MLPs write nothing. Layer 0: head 0 attends to the previous position and writes that
token into the previous-token slot; head 1 attends the same way but its W_O is zero (it writes nothing);
heads 2, 3 are small random heads. Layer 1: head 0 is the induction head (query: the current token; key:
the previous-token slot; value: the token, written back onto the token dims the tied unembedding reads);
with harmful=True head 1 is a second induction head whose output is negative (it pushes the right answer
down, so removing it helps); head 2 is small and random; head 3 is dead (every weight zero).
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

V, D, H, HD, N_POS = 24, 96, 4, 24, 24
T0, P0, POS0 = 0, 24, 48


def planted_induction(folder: Path, harmful: bool = False, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=V, n_embd=D, n_layer=2, n_head=H, n_positions=N_POS,
                                  bos_token_id=None, eos_token_id=None, n_inner=4 * D)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    tr = model.transformer
    with torch.no_grad():
        tr.wte.weight.zero_()
        tr.wte.weight[torch.arange(V), T0 + torch.arange(V)] = 1.0
        tr.wpe.weight.zero_()
        tr.wpe.weight[torch.arange(N_POS), POS0 + torch.arange(N_POS)] = 1.0
        for block in tr.h:
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
            block.attn.c_attn.bias.zero_()
            block.attn.c_proj.bias.zero_()
            block.attn.c_attn.weight.normal_(0, 0.02)
            block.attn.c_proj.weight.normal_(0, 0.02)
        w0, o0 = tr.h[0].attn.c_attn.weight, tr.h[0].attn.c_proj.weight  # Conv1D: [in, out]; c_attn = [Q | K | V]
        for head in (0, 1):  # previous-token pattern: query at i matches key at i − 1
            q, k, v = head * HD, D + head * HD, 2 * D + head * HD
            w0[:, q: q + HD] = 0
            w0[:, k: k + HD] = 0
            w0[:, v: v + HD] = 0
            for p in range(N_POS):
                w0[POS0 + p, q + p] = 1.5
                if p + 1 < HD:
                    w0[POS0 + p, k + p + 1] = 1.5
            for t in range(V):
                w0[T0 + t, v + t] = 1.0  # value: the token
        o0[0: HD] = 0
        for t in range(V):
            o0[t, P0 + t] = 0.3  # head 0 writes the token into the previous-token slot
        o0[HD: 2 * HD] = 0  # head 1 writes nothing
        w1, o1 = tr.h[1].attn.c_attn.weight, tr.h[1].attn.c_proj.weight
        heads = [(0, 2.0)] + ([(1, -0.6)] if harmful else [])
        for head, gain in heads:  # induction: query = current token, key = previous-token slot
            q, k, v = head * HD, D + head * HD, 2 * D + head * HD
            w1[:, q: q + HD] = 0
            w1[:, k: k + HD] = 0
            w1[:, v: v + HD] = 0
            o1[head * HD: (head + 1) * HD] = 0
            for t in range(V):
                w1[T0 + t, q + t] = 1.5
                w1[P0 + t, k + t] = 1.5
                w1[T0 + t, v + t] = 1.0
                o1[head * HD + t, T0 + t] = gain
        dead = 3  # every weight of layer 1 head 3 is zero
        w1[:, dead * HD: (dead + 1) * HD] = 0
        w1[:, D + dead * HD: D + (dead + 1) * HD] = 0
        w1[:, 2 * D + dead * HD: 2 * D + (dead + 1) * HD] = 0
        o1[dead * HD: (dead + 1) * HD] = 0
    model.save_pretrained(folder)
    return folder
