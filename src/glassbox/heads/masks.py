"""Where each attention role looks, and how much a head looks there: one definition for every consumer.

`role_mask(tokens, role)` says, from the token ids alone, where a head with that role should attend:
mask[b, i, j] is True where query i should look at key j. A head's score is its attention mass on the mask,
averaged over the queries whose mask is not empty. The atlas (glassbox.heads.probes), the training timeline
(glassbox.timeline.probes) and steering (glassbox.train.steer) all use these functions, so an "induction
score" means the same thing everywhere, whatever batch it is measured on.

  induction        the token after an earlier occurrence of the current token (causal models only)
  previous_token   the position just before          next_token   the position just after (encoders)
  duplicate_token  an earlier occurrence of the current token (encoders: any other occurrence)
  first_token      position 0 (the attention sink)   last_token   the last position ([SEP], encoders)
  self             the current position              local        the whole window i−3..i

Position 0 (and, in an encoder, the last position) is where sink heads park their attention, so it is a
target only for first_token / last_token, and a query there counts for no role: mass on the sink must not
pass for a previous-token or duplicate-token head.
"""

from __future__ import annotations

from typing import Any

# in the order the atlas lists them
CAUSAL_ROLES = ("previous_token", "first_token", "self", "local", "duplicate_token", "induction")
ENCODER_ROLES = ("previous_token", "first_token", "self", "local", "duplicate_token", "next_token", "last_token")
SINK_ROLES = ("first_token", "last_token")
# what the training timeline tracks and `train --steer` accepts: roles a random repeated block shows alone
TRAINING_ROLES = ("induction", "previous_token", "duplicate_token", "first_token", "self")
WINDOW = 4  # local: the current position and the three before it


def role_mask(tokens: Any, role: str, causal: bool = True) -> Any:
    """Bool [batch, n, n]: True where a head with `role` at query i should attend to key j."""
    import torch

    b, n = tokens.shape
    i = torch.arange(n).view(n, 1)
    j = torch.arange(n).view(1, n)
    same = tokens.unsqueeze(2) == tokens.unsqueeze(1)  # [b, i, j]: token i == token j
    if role == "induction":
        if not causal:
            raise ValueError("induction needs a causal model")
        # key j qualifies when token j-1 is an earlier occurrence of token i
        shifted = torch.zeros_like(same)
        shifted[:, :, 1:] = same[:, :, :-1]
        mask = shifted & (j - 1 < i)
    elif role == "duplicate_token":
        mask = same & ((j < i) if causal else (j != i))
    elif role == "previous_token":
        mask = j == i - 1
    elif role == "next_token":
        mask = j == i + 1
    elif role == "first_token":
        mask = j == 0
    elif role == "last_token":
        mask = j == n - 1
    elif role == "self":
        mask = j == i
    elif role == "local":
        mask = (j <= i) & (j > i - WINDOW) & (i >= WINDOW)  # whole windows only, never touching 0
    else:
        raise ValueError(role)
    sink = torch.zeros(n, dtype=torch.bool)
    sink[0] = True
    if not causal:
        sink[n - 1] = True
    mask = mask & ~sink.view(n, 1)  # no role is scored from a sink position
    if role not in SINK_ROLES:
        mask = mask & ~sink.view(1, n)
    if causal:
        mask = mask & (j <= i)
    return mask.expand(b, n, n)


def masks(tokens: Any, roles: tuple[str, ...], causal: bool = True) -> dict[str, Any]:
    """{role: mask} for one batch: build once, score many patterns (every layer, every checkpoint)."""
    return {role: role_mask(tokens, role, causal) for role in roles}


def mask_attention(pattern: Any, mask: Any) -> tuple[Any, Any]:
    """Attention mass on the mask per (batch, head, query), and which queries count: ([b, H, n], [b, n]).

    Differentiable in `pattern` (steering trains on it)."""
    mass = (pattern * mask.unsqueeze(1).to(pattern.dtype)).sum(-1)
    return mass, mask.any(-1)


def head_scores(pattern: Any, mask: Any) -> Any:
    """[head]: each head's mean mass on the mask over the queries that have a target; pattern [b, H, q, k]."""
    mass, valid = mask_attention(pattern.float(), mask)
    w = valid.unsqueeze(1).to(mass.dtype)
    return (mass * w).sum((0, 2)) / w.sum((0, 2)).clamp(min=1)


def pattern_scores(patterns: list[Any], role_masks: dict[str, Any]) -> dict[str, Any]:
    """{role: tensor [layer, head]} from one pattern [b, H, q, k] per layer."""
    import torch

    return {role: torch.stack([head_scores(p.detach(), m) for p in patterns]) for role, m in role_masks.items()}
