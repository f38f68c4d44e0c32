"""The mixer: the LM, the static table P_T and the session memory P_S in one softmax, and its one fitter.

    z_T = b_T + w_T·φ_T   (−∞ where the static tables saw nothing)
    z_S = b_S + w_S·φ_S   (−∞ before the session has read a token)
    (π_LM, π_T, π_S) = softmax(0, z_T, z_S);   p = π_LM p_LM + π_T P_T + π_S P_S        (`mix`)
Features of the context only (never of the scored token), so p sums to 1. Every other mixture is a special
case, not a second code path: a fixed λ for the table is `Mixer.fixed(λ)` (w_T = 0, b_T = logit λ, no
session part), the static gate of old is a mixer with no session part (π_T = σ(z_T); a version-1 gate.json
loads as one), and the LM alone is a mixer that is not shipped. Table features φ_T (overlay/gate.py): match,
log_count, concentration, sparse, lm_maxp, and on an index of several corpora each source's share of the
longest match's occurrences ("source:SPEC"), so the gate can weigh sources. Session features φ_S:
overlay/session.py.

Fit (`fit`): nested candidates are cross-fitted on K contiguous dev blocks, each by L-BFGS on Σ log p −
ridge·n·|w|²: the static table alone (constant / full features), the session alone (constant / full / a
small fixed weight), both (constant / full / the static decision's table part + a small fixed session
weight). The static decision: its best candidate by out-of-fold gain, shipped if the block-bootstrap 95%
interval of that gain lies above 0 (`block_ci`). A candidate with a session part replaces it only if the 95%
lower bound of its paired gain over the static decision is at least `min_gain` (0.0005 nats/token, 0.05% of
perplexity: nested candidates tie or win a hair out of fold, and a gain of 1e-7 nats can have a tight
interval; measured: a bound of +7e-6 shipped λ_S = 0.002 on 300 dev tokens of Matthew and lost 0.06% on the
next 300); among those, the one with the largest out-of-fold gain. The small fixed weights matter: the
session's gains sit on few tokens, so a fitted weight's interval is often wide. The session's full-feature
gate is a candidate only with ≥ `min_gate_positions` (1,000) dev positions where the session has read
something: on less it fits the regime of the dev text. Otherwise the static decision stands, which may be
nothing: the overlay is the LM.

The session prior (`prior`): the session memory's value is a property of the LM and of text that repeats
itself, not of the index, so its part can be fitted and proven on text that is not the evaluated one (eval:
the index's own documents, overlay/evaluate.py `prior_text`, by this same `fit`), where there is more of it
than a dev half holds. Frozen, it is one more parameter-free candidate ("session-prior", "both-prior": beside
the static decision's table part). Its dev gain is out of sample without a cross-fit, and the dev half only
has to show that it carries over: if no candidate is proven on dev, the prior ships when its dev gain over
the static decision is at least `min_gain` (a prior proven elsewhere plus a positive dev gain: two
independent pieces of evidence, where the dev half alone is too short to prove the few tokens the session
wins on).

`oracle`: the best constant weights chosen in hindsight on the scored positions themselves (same parts, same
masks): the ceiling of what these tables can add to this LM with fixed weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from glassbox.overlay.gate import FEATURES as TABLE_FEATURES
from glassbox.overlay.session import SESSION_FEATURES


@dataclass
class Part:
    """One component's logit z = b + w·φ."""

    w: list[float]
    b: float
    features: tuple[str, ...]

    def z(self, phi: dict[str, float] | None) -> float:
        if phi is None:
            return -math.inf
        return self.b + sum(wi * phi[f] for wi, f in zip(self.w, self.features, strict=True))

    def to_json(self) -> dict:
        return {"w": list(self.w), "b": self.b, "features": list(self.features)}

    @classmethod
    def from_json(cls, d: dict, default: tuple[str, ...]) -> Part:
        part = cls(w=[float(x) for x in d["w"]], b=float(d["b"]), features=tuple(d.get("features", default)))
        if len(part.w) != len(part.features):
            raise ValueError(f"{len(part.w)} weights for {len(part.features)} features")
        return part


@dataclass
class Mixer:
    """The shipped mixture: a static table part and/or a session part; neither = the LM alone."""

    table: Part | None = None
    session: Part | None = None
    shipped: bool = False
    kind: str = "lm"
    report: dict = field(default_factory=dict)

    def weights(self, phi_t: dict[str, float] | None, phi_s: dict[str, float] | None) -> tuple[float, float, float]:
        """(π_LM, π_T, π_S) for one step."""
        if not self.shipped:
            return 1.0, 0.0, 0.0
        zt = self.table.z(phi_t) if self.table is not None else -math.inf
        zs = self.session.z(phi_s) if self.session is not None else -math.inf
        m = max(0.0, zt, zs)
        e0, et, es = math.exp(-m), (math.exp(zt - m) if zt > -math.inf else 0.0), \
            (math.exp(zs - m) if zs > -math.inf else 0.0)
        tot = e0 + et + es
        return e0 / tot, et / tot, es / tot

    @classmethod
    def fixed(cls, lam: float) -> Mixer:
        """One fixed table weight λ wherever the tables saw something, no session part (λ = 0: the LM)."""
        if lam <= 0:
            return cls(kind="lm")
        b = _logit(min(lam, 1 - 1e-12))
        return cls(table=Part(w=[0.0] * len(TABLE_FEATURES), b=b, features=TABLE_FEATURES), shipped=True,
                   kind=f"fixed:{lam}")

    @property
    def uses_session(self) -> bool:
        return self.shipped and self.session is not None

    def to_json(self) -> dict:
        t = self.table.to_json() if self.table is not None else None
        out = {"version": 2, "kind": self.kind, "shipped": self.shipped, "table": t,
               "session": self.session.to_json() if self.session is not None else None, "report": self.report}
        # the version-1 keys (the static part), so a reader of the old format still finds its gate
        out |= {"w": t["w"], "b": t["b"], "features": t["features"]} if t else \
            {"w": [0.0] * len(TABLE_FEATURES), "b": -30.0, "features": list(TABLE_FEATURES)}
        return out

    @classmethod
    def from_json(cls, d: dict) -> Mixer:
        """A version-2 mixer, or a version-1 gate.json (overlay/gate.py: the static part only)."""
        if int(d.get("version", 1)) < 2:
            part = Part.from_json(d, TABLE_FEATURES) if "w" in d else None
            return cls(table=part, shipped=bool(d.get("shipped", False)) and part is not None,
                       kind="table (version-1 gate)", report=d.get("report", {}))
        return cls(table=Part.from_json(d["table"], TABLE_FEATURES) if d.get("table") else None,
                   session=Part.from_json(d["session"], SESSION_FEATURES) if d.get("session") else None,
                   shipped=bool(d.get("shipped", False)), kind=str(d.get("kind", "")), report=d.get("report", {}))


def mix(w: tuple[float, ...] | np.ndarray, *parts: np.ndarray | None) -> np.ndarray:
    """π_LM p_LM + π_T P_T + π_S P_S: the one mixture formula (arrays over the same candidates or positions;
    `w` one weight per part, or one row of weights per position; a part of weight 0 may be None)."""
    w = np.asarray(w, np.float64)
    out = 0.0
    for k, p in enumerate(parts):
        wk = w[..., k]
        if p is not None and np.any(wk):
            out = out + wk * np.asarray(p, np.float64)
    return np.broadcast_to(np.asarray(out, np.float64), np.shape(parts[0])).copy()


# -- fitting ------------------------------------------------------------------------------------------

CANDIDATES = {  # name: (table part, session part), each None | "constant" | "gate" | "fixed:λ"; nested
    "table-constant": ("constant", None), "table-gate": ("gate", None),
    "session-constant": (None, "constant"), "session-gate": (None, "gate"),
    "both-constant": ("constant", "constant"), "both-gate": ("gate", "gate"),
}
# Small fixed session weights, not fitted (no parameter, so out of fold = in fold): the session's gains sit on
# few tokens (a rare name the LM puts at e^-12), and a small weight keeps most of them (log(1 + λ p_S / p_LM))
# at a loss of only ≈ λ elsewhere, so its gain has a narrow interval where a fitted weight's may not.
FIXED = (0.002, 0.005, 0.01, 0.02)


def _logit(lam: float) -> float:
    return math.log(lam / (1 - lam))


def _nparams(part: str | None, d: int) -> int:
    return d + 1 if part in ("constant", "gate") else 0


def _stack(phi: list[np.ndarray | None], dim: int) -> tuple[np.ndarray, np.ndarray]:
    mask = np.array([f is not None for f in phi])
    x = np.zeros((len(phi), dim))
    if mask.any():
        x[mask] = np.stack([f for f in phi if f is not None])
    return x, mask


def _probs(theta: np.ndarray, data: dict, spec: tuple[str | None, str | None]
           ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(p of the true token under the mixture, π_T, π_S) at every position under θ = [w_T, b_T, w_S, b_S] (the
    fitted parts only): the weights of `Mixer.weights`, vectorized, through `mix`."""
    i, n = 0, len(data["p_lm"])
    es = []  # exp(z) per part (0 where the part saw nothing); the LM's logit is 0
    for part, key in zip(spec, ("t", "s"), strict=True):
        if part is None:
            es.append(None)
            continue
        if part.startswith("fixed:"):
            z = np.full(n, _logit(float(part[6:])))
        elif part == "prior":  # a part fitted elsewhere, frozen: its logit per position was computed once
            z = data["z" + key + "_prior"]
        else:
            x = data["x" + key] if part == "gate" else np.zeros_like(data["x" + key])
            d = x.shape[1]
            z = theta[i + d] + x @ theta[i:i + d]
            i += d + 1
        es.append(np.where(data["m" + key], np.exp(np.clip(z, -60, 60)), 0.0))
    denom = 1.0 + sum(e for e in es if e is not None)
    pis = [None if e is None else e / denom for e in es]
    w = np.stack([1.0 / denom] + [np.zeros(n) if pi is None else pi for pi in pis], axis=1)
    return mix(w, data["p_lm"], data["pt"], data["ps"]), pis[0], pis[1]


def _fit(data: dict, spec: tuple[str | None, str | None], ridge: float) -> np.ndarray:
    from scipy.optimize import minimize

    dims = [_nparams(part, data["x" + k].shape[1]) for part, k in zip(spec, ("t", "s"), strict=True)]
    if sum(dims) == 0:
        return np.zeros(0)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        m, pi_t, pi_s = _probs(theta, data, spec)
        grad, i, val = np.zeros_like(theta), 0, -np.log(m).sum()
        for part, key, pi, k in zip(spec, ("t", "s"), (pi_t, pi_s), dims, strict=True):
            if k == 0:
                continue
            x = data["x" + key] if part == "gate" else np.zeros_like(data["x" + key])
            d = x.shape[1]
            g = pi * (data["p" + key] - m) / m  # d log m / d z
            w = theta[i:i + d]
            val += ridge * (w @ w)
            grad[i:i + d] = -(x.T @ g) + 2 * ridge * w
            grad[i + d] = -g.sum()
            i += d + 1
        return float(val), grad

    theta0 = np.zeros(sum(dims))
    i = 0
    for k in dims:
        if k:
            theta0[i + k - 1] = -3.0
        i += k
    return minimize(loss, theta0, jac=True, method="L-BFGS-B").x


def _sub(data: dict, sel: np.ndarray) -> dict:
    return {k: v[sel] for k, v in data.items()}


def _oof(data: dict, spec: tuple[str | None, str | None], folds: int, ridge: float) -> np.ndarray:
    """Out-of-fold gain in log-likelihood over the LM per position, K contiguous blocks."""
    n = len(data["p_lm"])
    gain = np.zeros(n)
    edges = np.linspace(0, n, folds + 1).astype(int)
    for f in range(folds):
        test = np.zeros(n, bool)
        test[edges[f]:edges[f + 1]] = True
        if not test.any() or test.all():
            continue
        theta = _fit(_sub(data, ~test), spec, ridge * (~test).sum())
        m = _probs(theta, _sub(data, test), spec)[0]
        gain[test] = np.log(m) - np.log(data["p_lm"][test])
    return gain


def block_ci(gain: np.ndarray, block: int = 64, boot: int = 2000, seed: int = 0) -> tuple[float, float, int]:
    """95% interval of the mean per-token gain, resampling contiguous blocks (neighbouring tokens are not
    independent: a repeated passage helps many in a row) → (lo, hi, the block length used)."""
    n = len(gain)
    rng = np.random.default_rng(seed)
    block = max(1, min(block, n // 10))  # at least ~10 blocks to resample
    nb = max(1, n // block)
    sums = np.add.reduceat(gain[: nb * block], np.arange(0, nb * block, block))
    totals = sums[rng.integers(0, nb, (boot, nb))].sum(axis=1) / (nb * block)
    lo, hi = (float(q) for q in np.percentile(totals, [2.5, 97.5]))
    return lo, hi, block


def _mixer(theta: np.ndarray, spec: tuple[str | None, str | None], kind: str, report: dict,
           table_features: tuple[str, ...] = TABLE_FEATURES, prior: Part | None = None) -> Mixer:
    parts, i = [], 0
    for part, names in zip(spec, (table_features, SESSION_FEATURES), strict=True):
        d = len(names)
        if part is None:
            parts.append(None)
        elif part == "prior":
            parts.append(Part(w=list(prior.w), b=prior.b, features=prior.features))
        elif part.startswith("fixed:"):
            parts.append(Part(w=[0.0] * d, b=_logit(float(part[6:])), features=names))
        else:
            w = [0.0] * d if part == "constant" else [float(v) for v in theta[i:i + d]]
            parts.append(Part(w=w, b=float(theta[i + d]), features=names))
            i += d + 1
    return Mixer(table=parts[0], session=parts[1], shipped=True, kind=kind, report=report)


def fit(p_lm: np.ndarray, p_t: np.ndarray, p_s: np.ndarray, phi_t: list[np.ndarray | None],
        phi_s: list[np.ndarray | None], session: bool = True, folds: int = 5, ridge: float = 0.001,
        block: int = 64, boot: int = 2000, seed: int = 0, min_gain: float = 5e-4,
        min_gate_positions: int = 1000, table_features: tuple[str, ...] = TABLE_FEATURES,
        prior: Part | None = None) -> dict[str, Mixer]:
    """Fit and check the candidates on dev positions (true-token probability under each model and the
    features per position, None where a part knows nothing). Returns {"overlay": the shipped mixer,
    "static": the static-only decision (today's gate), "session": the session-only decision}; each one is
    the LM (shipped False) unless its out-of-fold gain is above 0 at 95%, or (`prior`: a session part
    fitted and proven on other text) the prior's dev gain is at least `min_gain` (see the module docstring)."""
    n = len(p_lm)
    xt, mt = _stack(phi_t, len(table_features))
    xs, ms = _stack(phi_s, len(SESSION_FEATURES))
    data = {"p_lm": np.asarray(p_lm, np.float64), "pt": np.asarray(p_t, np.float64),
            "ps": np.asarray(p_s, np.float64), "xt": xt, "mt": mt, "xs": xs, "ms": ms}
    if prior is not None:
        data["zs_prior"] = prior.b + xs @ np.asarray(prior.w, np.float64)
    specs: dict[str, tuple[str | None, str | None]] = {}
    gains: dict[str, np.ndarray] = {}
    stats: dict[str, dict] = {}

    def run(name: str, spec: tuple[str | None, str | None]) -> None:
        t, s = spec
        if (t is not None and mt.sum() < 20) or (s is not None and ms.sum() < 20):
            return  # that part saw (almost) nothing: nothing to fit
        specs[name] = spec
        gains[name] = _oof(data, spec, folds, ridge)
        lo, hi, _ = block_ci(gains[name], block, boot, seed)
        stats[name] = {"oof_gain_nats_per_token": float(gains[name].mean()), "oof_gain_ci95": [lo, hi]}

    for name, spec in CANDIDATES.items():
        if spec[1] is None:
            run(name, spec)
    base = {"dev_positions": n, "table_seen_positions": int(mt.sum()), "session_seen_positions": int(ms.sum()),
            "folds": folds, "ridge_per_token": ridge, "bootstrap_block": max(1, min(block, n // 10)),
            "candidates": stats, "min_gain_over_static": min_gain}

    def ship(best: str, rep: dict, label: str) -> Mixer:
        theta = _fit(data, specs[best], ridge * n)
        why = (f"{label}: {best}: the session prior's dev gain over the static decision is at least {min_gain}"
               if specs[best][1] == "prior" and rep.get("prior_checked") else
               f"{label}: {best}: out-of-fold gain above 0 at 95%")
        return _mixer(theta, specs[best], best, rep | {"reason": why}, table_features, prior)

    # the static decision, as today's gate: the best static candidate by out-of-fold gain, if proven
    pool = [k for k in stats if specs[k][1] is None]
    if not pool:
        static = Mixer(report=base | {"reason": "static tables only: too few positions where the tables saw anything"})
    else:
        best = max(pool, key=lambda k: stats[k]["oof_gain_nats_per_token"])
        rep = base | {"kind": best, **stats[best]}
        static = ship(best, rep, "static tables only") if stats[best]["oof_gain_ci95"][0] > 0 else Mixer(
            kind="lm", report=rep | {"reason": f"static tables only: best candidate {best}'s out-of-fold gain is "
                                             "not above 0 at 95%: the mixture is the LM"})
    if not session:
        return {"overlay": static, "static": static, "session": Mixer(report={"reason": "session memory off"})}

    # session candidates: fitted, and small fixed weights; with the static decision's table part beside them
    table_spec = specs[static.kind][0] if static.shipped else None
    for name, spec in CANDIDATES.items():
        # the session's full-feature gate (6 parameters) only with enough dev text: fitted on the 300-400 tokens
        # of Matthew 1's genealogy it shipped with a 95% interval of [+0.011, +0.071] nats/token and then lost
        # 1.3-1.9% on the narrative that follows (a change of regime no dev-only check can see)
        if spec[1] is not None and (spec[1] != "gate" or ms.sum() >= min_gate_positions):
            run(name, spec)
    for lam in FIXED:
        run(f"session-fixed-{lam}", (None, f"fixed:{lam}"))
        if table_spec is not None:
            run(f"both-fixed-{lam}", (table_spec, f"fixed:{lam}"))
    if prior is not None:  # frozen, so its dev gain is out of sample without a cross-fit
        run("session-prior", (None, "prior"))
        if table_spec is not None:
            run("both-prior", (table_spec, "prior"))

    def decide(pool: list[str], against: np.ndarray, label: str) -> Mixer:
        """Of the candidates whose gain over `against` has its lower 95% bound at min_gain nats/token or more,
        the one with the largest out-of-fold gain (as the static decision picks); none proven: not shipped."""
        pool = [k for k in pool if k in stats]
        if not pool:
            return Mixer(report=base | {"reason": f"{label}: the session has read too little"})
        bounds = {k: block_ci(gains[k] - against, block, boot, seed) for k in pool}
        for k in pool:
            stats[k]["over_static_ci95"] = list(bounds[k][:2])
        proven = [k for k in pool if bounds[k][0] >= min_gain]
        # the prior was proven on its own text: here the dev half only checks that it carries over
        checked = [k for k in pool if specs[k][1] == "prior" and (gains[k] - against).mean() >= min_gain]
        best = max(proven or checked or pool,
                   key=lambda k: stats[k]["oof_gain_nats_per_token"] if proven or checked else bounds[k][0])
        lo, hi, _ = bounds[best]
        over = float((gains[best] - against).mean())
        rep = base | {"kind": best, **stats[best], "oof_gain_over_static": over,
                      "oof_gain_over_static_ci95": [lo, hi], "prior_checked": bool(not proven and checked)}
        if lo >= min_gain or (not proven and checked):
            return ship(best, rep, label)
        return Mixer(kind="lm", report=rep | {"reason": f"{label}: no session candidate's gain over the static "
                                              f"decision has its 95% lower bound at {min_gain} nats/token or more"
                                              + (" and the prior's dev gain is below it" if prior else "")})

    sess = decide([k for k in stats if specs[k][0] is None and specs[k][1] is not None], np.zeros(n),
                  "session only")
    # the session part ships only if it adds a proven gain to what the static gate alone would ship
    against = gains[static.kind] if static.shipped else np.zeros(n)
    pool = [k for k in stats if specs[k][1] is not None and (specs[k][0] is not None or not static.shipped)]
    full = decide(pool, against, "with the session memory")
    if not full.shipped:
        full = Mixer(table=static.table, shipped=static.shipped, kind=static.kind,
                     report=static.report | {"session_candidate": full.report})
    return {"overlay": full, "static": static, "session": sess}


def oracle(p_lm: np.ndarray, p_t: np.ndarray, p_s: np.ndarray, phi_t: list[np.ndarray | None],
           phi_s: list[np.ndarray | None], session: bool = True,
           table_features: tuple[str, ...] = TABLE_FEATURES) -> Mixer:
    """The best constant weights for these positions, chosen on them (hindsight): constant logits for the
    table and (if `session`) the session part, where each part saw something, as the gate's masks. The LM
    alone is one such choice, so the oracle is never below it: if the optimizer ends below, it is the LM."""
    xt, mt = _stack(phi_t, len(table_features))
    xs, ms = _stack(phi_s, len(SESSION_FEATURES))
    data = {"p_lm": np.asarray(p_lm, np.float64), "pt": np.asarray(p_t, np.float64),
            "ps": np.asarray(p_s, np.float64), "xt": xt, "mt": mt, "xs": xs, "ms": ms}
    spec = ("constant" if mt.any() else None, "constant" if session and ms.any() else None)
    if spec == (None, None):
        return Mixer(kind="lm", report={"reason": "oracle: no part saw anything"})
    theta = _fit(data, spec, 0.0)
    gain = float(np.log(_probs(theta, data, spec)[0]).mean() - np.log(data["p_lm"]).mean())
    if gain <= 0:
        return Mixer(kind="lm", report={"reason": "oracle: no constant weights beat the LM", "gain": gain})
    return _mixer(theta, spec, "oracle", {"gain_nats_per_token": gain}, table_features)
