"""Steered specialization: ask, before training, that head L.H take a role.

`--steer L.H=ROLE[:WEIGHT]` adds an auxiliary loss to the language-modelling loss:

    aux = WEIGHT × mean over queries i with a target of  −log( Σ_j A[L,H][i, j] · mask_ROLE[i, j] + 1e-6 )

where A is the head's attention pattern on the training batch and mask_ROLE is the same mask the timeline and
the atlas score (glassbox.heads.masks.role_mask). It rewards the head for putting its attention where the
role says; it touches nothing else, so the rest of the model stays free. The cost is what it adds to the
loss (logged as `aux_loss` in metrics.parquet) and the time of one masked sum per steered head.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from glassbox.errors import BadInput
from glassbox.heads.masks import TRAINING_ROLES as ROLES
from glassbox.heads.masks import mask_attention, role_mask

DEFAULT_WEIGHT = 0.3
_SPEC = re.compile(r"(\d+)\.(\d+)=([a-z_]+)(?::([0-9.eE+-]+))?")


@dataclass(frozen=True)
class Steer:
    layer: int
    head: int
    role: str
    weight: float = DEFAULT_WEIGHT

    def to_json(self) -> dict:
        return {"layer": self.layer, "head": self.head, "role": self.role, "weight": self.weight}


def parse(spec: str, n_layers: int, n_heads: int) -> Steer:
    m = _SPEC.fullmatch(spec.strip())
    if not m:
        raise BadInput(f"--steer {spec!r}: expected LAYER.HEAD=ROLE[:WEIGHT], e.g. 1.0=induction")
    layer, head, role, weight = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
    if role not in ROLES:
        raise BadInput(f"--steer {spec!r}: unknown role {role!r}; known: {', '.join(ROLES)}")
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise BadInput(f"--steer {spec!r}: the model has {n_layers} layers × {n_heads} heads")
    try:
        w = float(weight) if weight else DEFAULT_WEIGHT
    except ValueError:
        raise BadInput(f"--steer {spec!r}: weight {weight!r} is not a number") from None
    if not w > 0:
        raise BadInput(f"--steer {spec!r}: the weight must be positive")
    return Steer(layer, head, role, w)


def aux_loss(steers: list[Steer], attentions, tokens):
    """The summed auxiliary loss of all steered heads (a 0-dim tensor)."""
    import torch

    total = torch.zeros(())
    masks: dict[str, object] = {}
    for s in steers:
        if s.role not in masks:
            masks[s.role] = role_mask(tokens, s.role)
        pattern = attentions[s.layer][:, s.head : s.head + 1]
        mass, valid = mask_attention(pattern, masks[s.role])
        nll = -torch.log(mass[:, 0] + 1e-6)
        total = total + s.weight * nll[valid].mean() if valid.any() else total
    return total
