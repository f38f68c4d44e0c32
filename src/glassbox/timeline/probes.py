"""The timeline's probe batch: a fixed block of random tokens repeated twice, small enough for every checkpoint.

The scores come from glassbox.heads.masks, the definitions the atlas uses too (induction, previous_token,
duplicate_token, first_token, self: a head's attention mass where the role says to look). Only the batch is
the timeline's own: one forward of [16, seq_len] tokens per checkpoint, where the atlas's inputs (a prefix
token, text probes, ablations) would cost many. The same masks drive steering (glassbox.train.steer), so what
is steered is exactly what is measured; the role list is masks.TRAINING_ROLES.
"""

from __future__ import annotations


def probe_batch(vocab_size: int, seq_len: int, n: int = 16, seed: int = 1234):
    """[n, 2P] tokens: P distinct random tokens (when the vocabulary allows), then the same P again."""
    import torch

    g = torch.Generator()
    g.manual_seed(seed)
    half = min(seq_len // 2, vocab_size)
    rows = [torch.randperm(vocab_size, generator=g)[:half] for _ in range(n)]
    block = torch.stack(rows)
    return torch.cat([block, block], dim=1)


def copy_losses(logits, tokens) -> tuple[float, float, float]:
    """(loss, first-copy loss, second-copy loss) on a probe batch made of a block repeated twice."""
    import torch.nn.functional as F

    n = tokens.shape[1]
    half = n // 2
    per_tok = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")
    per_tok = per_tok.view(tokens.shape[0], n - 1)
    # predicting token t+1 from position t: positions < half-1 see only the first copy; positions >= half
    # predict a token that already occurred (position half-1 predicts the second copy's first token, which
    # nothing in context announces, so it belongs to neither part)
    first = per_tok[:, : half - 1].mean().item()
    second = per_tok[:, half:].mean().item()
    return per_tok.mean().item(), first, second
