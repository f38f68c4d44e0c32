"""The mixing weight: how much the table is trusted at this step, from what the tables know here.

    λ(φ) = σ(b + w·φ)   when the last token was seen in the corpus (else λ = 0: the tables know nothing)
    p(t) = (1 − λ) · p_LM(t) + λ · P_T(t)        (P_T: overlay/ngram.py; a proper distribution, so is p)
Features φ of the context only (never of the token being scored, so p stays a distribution):
    match          length of the longest corpus match of the context (capped at 16) / 4
    log_count      log(1 + occurrences of that match) / 4
    concentration  share of its most frequent continuation
    sparse         1 if a single continuation was ever seen after it (infini-gram's "sparse" estimate)
    lm_maxp        the LM's own top probability (kNN-LM: trust the LM where it is sure)
Fitting (on the eval's dev part): maximize Σ log p(true) − ridge·n·|w|² (L-BFGS). Two nested candidates, a
constant λ where the tables saw something (w = 0) and the full gate, are cross-fitted on K contiguous blocks
of the dev part; the one with the larger out-of-fold gain is kept. Never worse than the LM by construction
on data it was not fitted on: it is shipped only if a block-bootstrap 95% interval of its out-of-fold gain
in log-likelihood lies above 0; otherwise λ ≡ 0 and the mixture *is* the LM.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from glassbox.overlay.ngram import Level

FEATURES = ("match", "log_count", "concentration", "sparse", "lm_maxp")


def features(levels: list[Level], lm_maxp: float) -> dict[str, float] | None:
    """φ for one step from the accumulator's chain levels (counts read); None when the tables saw nothing."""
    if not levels or levels[-1].counts is None:
        return None
    top = levels[-1]
    total = float(top.counts.sum() + top.unread)
    if total <= 0:
        return None
    return {"match": min(top.length, 16) / 4.0, "log_count": math.log1p(total) / 4.0,
            "concentration": float(top.counts.max()) / total, "sparse": float(len(top.counts) == 1),
            "lm_maxp": float(lm_maxp)}


def vector(phi: dict[str, float] | None) -> np.ndarray | None:
    return None if phi is None else np.array([phi[f] for f in FEATURES], np.float64)


@dataclass
class Gate:
    w: list[float] = field(default_factory=lambda: [0.0] * len(FEATURES))
    b: float = -30.0  # λ ≈ 0 until fitted
    shipped: bool = False  # False: λ ≡ 0 (the fit did not beat the LM out of fold)
    features: tuple[str, ...] = FEATURES
    report: dict = field(default_factory=dict)  # how it was fitted and checked

    def lam(self, phi: dict[str, float] | None) -> float:
        if phi is None or not self.shipped:
            return 0.0
        z = self.b + sum(wi * phi[f] for wi, f in zip(self.w, self.features, strict=True))
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_json(cls, d: dict) -> Gate:
        d = {k: v for k, v in d.items() if k in ("w", "b", "shipped", "report")}  # a version-2 file has more
        return cls(**d, features=tuple(d.get("features", FEATURES)))


def _fit(p_lm: np.ndarray, p_t: np.ndarray, x: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
    """(w, b) maximizing Σ log((1−λ)p_lm + λ p_t) − ridge |w|² with λ = σ(b + x·w)."""
    from scipy.optimize import minimize

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        lam = 1.0 / (1.0 + np.exp(-np.clip(b + x @ w, -60, 60)))
        m = (1 - lam) * p_lm + lam * p_t
        g = (p_t - p_lm) * lam * (1 - lam) / m  # d log m / dz
        val = -np.log(m).sum() + ridge * (w @ w)
        grad = np.concatenate([-(x.T @ g) + 2 * ridge * w, [-g.sum()]])
        return float(val), grad

    theta0 = np.zeros(x.shape[1] + 1)
    theta0[-1] = -3.0
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B")
    return res.x[:-1], float(res.x[-1])


def _oof(p_lm: np.ndarray, p_t: np.ndarray, x: np.ndarray, pos: np.ndarray, n: int, folds: int,
         ridge: float) -> np.ndarray:
    """Out-of-fold gain in log-likelihood over the LM per position (0 where λ = 0), K contiguous blocks."""
    gain = np.zeros(n)
    edges = np.linspace(0, n, folds + 1).astype(int)
    for f in range(folds):
        test = (pos >= edges[f]) & (pos < edges[f + 1])
        if not test.any() or test.all():
            continue
        w, b = _fit(p_lm[~test], p_t[~test], x[~test], ridge * (~test).sum())
        lam = 1.0 / (1.0 + np.exp(-np.clip(b + x[test] @ w, -60, 60)))
        gain[pos[test]] = np.log((1 - lam) * p_lm[test] + lam * p_t[test]) - np.log(p_lm[test])
    return gain


def fit(p_lm: np.ndarray, p_t: np.ndarray, phi: list[np.ndarray | None], folds: int = 5, ridge: float = 0.001,
        block: int = 64, boot: int = 2000, seed: int = 0) -> Gate:
    """Fit the gate on dev positions (true-token probabilities under each model, φ per position) and decide
    whether to ship it (see the module docstring). Positions whose φ is None keep λ = 0.

    Two nested candidates are cross-fitted: a constant λ wherever the tables saw something (w = 0) and the
    full gate (ridge·n·|w|²: a weight of 1 costs `ridge` nats a token: sharp gates only where the data pay for them, else near the
    constant). The one with the larger out-of-fold gain is kept, and shipped only if the block-bootstrap 95%
    interval of that gain lies above 0."""
    keep = np.array([f is not None for f in phi])
    n = len(phi)
    if keep.sum() < 20:
        return Gate(report={"reason": "too few positions where the tables saw anything", "positions": int(keep.sum())})
    x = np.stack([f for f in phi if f is not None])
    pl, pt = np.asarray(p_lm, np.float64)[keep], np.asarray(p_t, np.float64)[keep]
    pos = np.flatnonzero(keep)
    x0 = np.zeros_like(x)  # the constant-λ candidate: features that never move λ
    gains = {"constant": _oof(pl, pt, x0, pos, n, folds, ridge), "gate": _oof(pl, pt, x, pos, n, folds, ridge)}
    kind = max(gains, key=lambda k: gains[k].mean())
    gain = gains[kind]
    rng = np.random.default_rng(seed)
    block = max(1, min(block, n // 10))  # at least ~10 blocks to resample
    nb = max(1, n // block)
    sums = np.add.reduceat(gain[: nb * block], np.arange(0, nb * block, block))
    draws = rng.integers(0, nb, (boot, nb))
    totals = sums[draws].sum(axis=1) / (nb * block)
    lo, hi = (float(q) for q in np.percentile(totals, [2.5, 97.5]))
    w, b = _fit(pl, pt, x0 if kind == "constant" else x, ridge * len(pl))
    report = {"dev_positions": n, "seen_positions": int(keep.sum()), "folds": folds, "ridge_per_token": ridge,
              "kind": kind, "oof_gain_nats_per_token": float(gain.mean()), "oof_gain_ci95": [lo, hi],
              "oof_gain_by_kind": {k: float(v.mean()) for k, v in gains.items()}, "bootstrap_block": block}
    shipped = lo > 0
    report["reason"] = (f"{kind}: out-of-fold gain above 0 at 95%" if shipped else
                        "out-of-fold gain not above 0 at 95%: λ ≡ 0, the mixture is the LM")
    return Gate(w=[0.0] * len(w) if kind == "constant" else [float(v) for v in w], b=b, shipped=shipped,
                report=report)
