"""An independent causal tracing written from the paper (Meng et al. 2022, §2.1) in plain torch, to check
glassbox.facts.trace against: full forwards of the HF model, forward hooks on its own modules, nothing of
glassbox. It restores the MLP outputs of a window of layers at one token, for every window centre.

Noise convention shared with the implementation (so p_corrupt can be compared exactly): a torch.Generator
seeded with `seed`, `randn(samples, n_subject_tokens, d_model)` × 3 × std(embedding matrix), added to the
subject tokens' embeddings.
"""

from __future__ import annotations

import torch


def mlp_window_column(model, ids: list[int], subject: list[int], target: int, token: int, window: int,
                      samples: int = 10, seed: int = 0) -> tuple[float, float, list[float]]:
    """(p_clean, p_corrupt, [p restored by the window centred on layer L, for each L]) at `token`."""
    blocks = model.model.layers
    n = len(blocks)
    x = torch.tensor([ids])
    clean_mlp: dict[int, torch.Tensor] = {}

    def keep(i):
        def hook(mod, args, out):
            clean_mlp[i] = out[0, token].detach().clone()
        return hook

    handles = [blocks[i].mlp.register_forward_hook(keep(i)) for i in range(n)]
    with torch.no_grad():
        p_clean = model(x).logits[0, -1].softmax(-1)[target].item()
    for h in handles:
        h.remove()

    emb = model.get_input_embeddings()
    scale = 3 * emb.weight.std().item()
    noise = torch.randn(samples, len(subject), emb.weight.shape[1], generator=torch.Generator().manual_seed(seed))

    def corrupt(mod, args, out):
        out = out.clone()
        out[:, subject] += noise * scale
        return out

    def restore(i):
        def hook(mod, args, out):
            out = out.clone()
            out[:, token] = clean_mlp[i]
            return out
        return hook

    xs = x.repeat(samples, 1)

    def run(restored: list[int]) -> float:
        hs = [emb.register_forward_hook(corrupt)] + [blocks[i].mlp.register_forward_hook(restore(i))
                                                     for i in restored]
        try:
            with torch.no_grad():
                return model(xs).logits[:, -1].softmax(-1)[:, target].mean().item()
        finally:
            for h in hs:
                h.remove()

    p_corrupt = run([])
    column = []
    for centre in range(n):
        lo = max(0, centre - window // 2)
        column.append(run(list(range(lo, min(n, lo + window)))))
    return p_clean, p_corrupt, column
