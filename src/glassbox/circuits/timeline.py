"""Composition over training: the timeline records, per checkpoint, the scores of the pairs strongest at the end.

`scores(model)` runs on each checkpoint (inside the timeline's prober, so it goes wherever the probing goes) and
returns every pair; `keep_strongest(checkpoints)` then keeps, in every checkpoint, only the pairs that are
strongest at the last one: the top `n` by score over all kinds, plus each final induction head's top K sender
(the pair the induction mechanism needs), so the plot shows that circuit wiring up across the phase change.
"""

from __future__ import annotations

from typing import Any

from glassbox import weights
from glassbox.circuits import compose

INDUCTION_HEAD = 0.4  # a head whose final induction score reaches this gets its top K sender tracked


def scores(model: Any) -> list[dict[str, Any]]:
    """Every (sender, receiver, kind) score of a model in memory: [{from, to, kind, score, z}]."""
    comp = compose.composition(weights.all_heads(model))
    return [{k: p[k] for k in ("from", "to", "kind", "score", "z")} for p in comp.pairs()]


def keep_strongest(checkpoints: list[dict[str, Any]], n: int = 6) -> list[dict[str, Any]]:
    """Trim every checkpoint's `composition` to the pairs chosen at the last checkpoint; returns those pairs."""
    last = checkpoints[-1].get("composition")
    if not last:
        return []
    key = lambda p: (tuple(p["from"]), tuple(p["to"]), p["kind"])  # noqa: E731
    chosen = [key(p) for p in sorted(last, key=lambda p: -p["score"])[:n]]
    for h in checkpoints[-1]["heads"]:
        if h["scores"].get("induction", 0.0) >= INDUCTION_HEAD:
            ks = [p for p in last if p["kind"] == "k" and p["to"] == [h["layer"], h["head"]]]
            if ks:
                best = key(max(ks, key=lambda p: p["score"]))
                if best not in chosen:
                    chosen.append(best)
    for c in checkpoints:
        by_key = {key(p): p for p in c.get("composition") or []}
        c["composition"] = [{"from": list(f), "to": list(t), "kind": kind,
                             "score": by_key[(f, t, kind)]["score"] if (f, t, kind) in by_key else None}
                            for f, t, kind in chosen]
    return [{"from": list(f), "to": list(t), "kind": kind} for f, t, kind in chosen]


def draw(ax: Any, doc: dict[str, Any]) -> None:
    """The tracked pairs' scores over the steps (K solid, Q dashed, V dotted), phase changes marked."""
    cps = doc["checkpoints"]
    if not cps or not cps[-1].get("composition"):
        ax.set_visible(False)
        return
    steps = [c["step"] for c in cps]
    styles = {"k": "-", "q": "--", "v": ":"}
    for i, p in enumerate(cps[-1]["composition"]):
        series = [c["composition"][i]["score"] if c.get("composition") else None for c in cps]
        ax.plot(steps, [float("nan") if v is None else v for v in series], styles[p["kind"]], color=f"C{i % 10}",
                label=f"{p['from'][0]}.{p['from'][1]}→{p['to'][0]}.{p['to'][1]} {p['kind'].upper()}")
    for c in doc.get("phase_changes", []):
        ax.axvline(c["step"], color="grey", alpha=0.4)
    ax.set_ylabel("composition")
    ax.legend(fontsize=6, loc="upper left")
