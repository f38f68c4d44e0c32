"""The one KL and log-sum-exp helper (glassbox.logprob) against torch's own implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from glassbox.logprob import kl, kl_logp, logsumexp  # noqa: E402


def test_kl_matches_torch():
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(3, 5, 50, generator=g), torch.randn(3, 5, 50, generator=g)
    ref = torch.nn.functional.kl_div(q.log_softmax(-1), p.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    assert kl(p, q).shape == (3, 5)
    assert torch.allclose(kl(p, q), ref, atol=1e-6)
    assert torch.allclose(kl_logp(p.log_softmax(-1), q.log_softmax(-1)), ref, atol=1e-6)
    assert kl(p, p).abs().max() < 1e-6 and (kl(p, q) > 0).all()
    assert kl(p.half(), q.half()).dtype == torch.float32


def test_logsumexp_is_stable():
    x = np.array([1000.0, 1000.0, -5.0])
    assert logsumexp(x) == pytest.approx(1000.0 + math.log(2.0 + math.exp(-1005.0)))
    y = np.random.default_rng(0).normal(size=20)
    assert logsumexp(y) == pytest.approx(float(torch.logsumexp(torch.tensor(y), 0)))
    assert logsumexp([-math.inf, -math.inf]) == -math.inf
