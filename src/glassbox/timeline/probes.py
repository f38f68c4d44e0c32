"""Cheap attention-pattern probes for the timeline: a score per head from one forward pass on a fixed batch.

The probe batch is a random block of distinct tokens repeated twice. For each role, a mask says where the
role's attention should go from each query position; the score is the attention mass on the mask, averaged
over the query positions where the mask is not empty:
  induction       the token after an earlier occurrence of the current token
  previous_token  the position just before
  duplicate_token an earlier occurrence of the current token
  first_token     position 0 (the attention sink)
  self            the current position
The same masks drive steering (glassbox.train.steer), so what is steered is exactly what is measured.
These are this module's own few probes; the full catalogue with causal checks is glassbox.heads.
"""

from __future__ import annotations

ROLES = ("induction", "previous_token", "duplicate_token", "first_token", "self")


def probe_batch(vocab_size: int, seq_len: int, n: int = 16, seed: int = 1234):
    """[n, 2P] tokens: P distinct random tokens (when the vocabulary allows), then the same P again."""
    import torch

    g = torch.Generator()
    g.manual_seed(seed)
    half = min(seq_len // 2, vocab_size)
    rows = [torch.randperm(vocab_size, generator=g)[:half] for _ in range(n)]
    block = torch.stack(rows)
    return torch.cat([block, block], dim=1)


def role_mask(tokens, role: str):
    """Bool [b, n, n]: mask[b, i, j] is True where a head with `role` at query i should attend to key j."""
    import torch

    b, n = tokens.shape
    i = torch.arange(n).view(n, 1)
    j = torch.arange(n).view(1, n)
    causal = (j <= i).expand(b, n, n)
    same = tokens.unsqueeze(2) == tokens.unsqueeze(1)  # [b, i, j]: token i == token j
    if role == "induction":
        # key j qualifies when token j-1 equals token i, for an earlier occurrence (j-1 < i)
        shifted = torch.zeros_like(same)
        shifted[:, :, 1:] = same[:, :, :-1]
        return shifted & (j - 1 < i) & causal
    if role == "duplicate_token":
        return same & (j < i)
    if role == "previous_token":
        return (j == i - 1).expand(b, n, n).clone()
    if role == "first_token":
        return ((j == 0) & (i > 0)).expand(b, n, n).clone()
    if role == "self":
        return (j == i).expand(b, n, n).clone()
    raise ValueError(role)


def mask_attention(pattern, mask):
    """Attention mass on the mask per (batch, head, query) and which queries count: ([b, H, n], [b, n])."""
    mass = (pattern * mask.unsqueeze(1).to(pattern.dtype)).sum(-1)
    return mass, mask.any(-1)


def pattern_scores(attentions, tokens) -> dict[str, list[list[float]]]:
    """{role: [layer][head] score} from a model's `output_attentions` on `tokens`."""
    scores: dict[str, list[list[float]]] = {}
    for role in ROLES:
        mask = role_mask(tokens, role)
        per_layer = []
        for pattern in attentions:
            mass, valid = mask_attention(pattern.detach().float(), mask)
            w = valid.unsqueeze(1).to(mass.dtype)
            per_layer.append(((mass * w).sum((0, 2)) / w.sum((0, 2)).clamp(min=1)).tolist())
        scores[role] = per_layer
    return scores


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
