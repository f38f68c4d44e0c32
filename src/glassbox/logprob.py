"""Log-probability arithmetic every area shares: one KL divergence and one log-sum-exp.

`kl(p_logits, q_logits)` and `kl_logp(logp, logq)` give KL(p ‖ q) = Σ p (log p − log q) over the last axis, in
nats, per position (torch tensors; float32 so half-precision logits do not lose the small differences);
`logsumexp(x)` is the stable log Σ exp x of a numpy vector (the largest term factored out).
"""

from __future__ import annotations

import math
from typing import Any


def kl_logp(logp: Any, logq: Any) -> Any:
    """KL(p ‖ q) over the last axis from normalized log-probabilities (tensors of the same shape)."""
    return (logp.exp() * (logp - logq)).sum(-1)


def kl(p_logits: Any, q_logits: Any) -> Any:
    """KL(p ‖ q) over the last axis from unnormalized logits: what q misses of p's prediction."""
    return kl_logp(p_logits.float().log_softmax(-1), q_logits.float().log_softmax(-1))


def logsumexp(x: Any) -> float:
    """log Σ exp(x) of a 1-D numpy array (or sequence), without overflow."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    m = float(np.max(x))
    if not math.isfinite(m):
        return m
    return m + math.log(float(np.exp(x - m).sum()))
