"""Which atlas verdicts rounding could have changed: marked from the half-precision run alone (issue 22).

A model run in bfloat16 or float16 gives slightly different probe scores and ablation effects than in float32,
and a verdict near its boundary can flip (SmolLM2-135M, 6 Dec 2026: bfloat16 validated 11.1 previous_token,
whose p moved from 0.058 to 0.016, and listed 23.3 successor, whose score moved from 0.3455 to 0.3636 across
its 0.35 threshold). The user has no float32 run to compare with, so the atlas marks what could have flipped:

- a verdict (validated or not) is precision-sensitive when deciding it again with every effect one rounding
  step lower, or one higher, gives the other answer (`verdict`). The step is the dtype's machine epsilon ×
  the RMS of the probe batch's logits (`validate.rounding_step`): the noise floor's own scale. The interval,
  a group's effect and both tails' p move with the effect; the direct kind, computed in float32 from the
  head's own activations, moves by DIRECT_EPS epsilons of its own scale. Validation only grows with the
  effects, so these two extremes bound every mix of per-kind moves within ±step. A kind whose effect, interval and null all lie
  within validate.FLOOR of 0 (a head that writes nothing there: 1e-16 in float32) is not moved;
- in float16, every verdict of the sink removal (first_token's `no_sink`) is marked (`range_hazard`): there
  the dtype's range, not its epsilon, decides;
- a role listed or not listed is precision-sensitive when the head's score lies within the score's rounding
  margin of the role's threshold (`score_margin`): ROUNDING_EPS machine epsilons of the dtype, by kind of score.

float32's epsilon is 2^-23, so both margins are ~1e-6 there and nothing is marked on a real model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from glassbox.heads import validate
from glassbox.run.placement import eps

# How far rounding moves a probe score, in machine epsilons of the dtype: the largest |bfloat16 − float32| over
# SmolLM2-135M's 576 heads (this 2-core CPU box, 6 Dec 2026), divided by bfloat16's epsilon (2^-7), rounded up
# to a tenth. "mass": a mean of attention probabilities (the pattern probes) or of many comparisons (copying):
# 0.0160 (first_token) → 2.1. "count": a share of N argmax decisions (syntax:*, coreference, successor), which
# moves by whole decisions (1/N): 0.0834 (coreference, one sentence of 12) → 10.7. For counts this is the size
# of the moves seen, not a bound: a flipped decision is rare, but its size does not shrink with the epsilon.
ROUNDING_EPS = {"mass": 2.1, "count": 10.7}
# The direct kind is computed in float32 from the clean run's activations of the one head, not from the half-
# precision logits of an ablated forward: its rounding is relative to its own values (the interval's ends, the
# null's mean + sd). Measured, |Δ(effect − null mean)| against float32 in those units: at most 3.1 epsilons in
# bfloat16 (23 checks), 1.1 in float16 (25); 4 covers both (chosen after seeing both).
DIRECT_EPS = 4.0


def score_kind(role: str) -> str:
    return "count" if role.startswith("syntax:") or role in ("coreference", "successor") else "mass"


def score_margin(role: str, dtype: str) -> float:
    """How far rounding in `dtype` can move `role`'s score (see ROUNDING_EPS)."""
    return ROUNDING_EPS[score_kind(role)] * eps(dtype)


def near_threshold(role: str, score: float, threshold: float, dtype: str) -> str | None:
    """Why the role's listing could flip (the score within its rounding margin of the threshold), or None."""
    margin = score_margin(role, dtype)
    if abs(score - threshold) > margin:
        return None
    side = "at or above" if score >= threshold else "below"
    return (f"score {score:.4g} {side} the threshold {threshold:g} by less than {margin:.2g}, "
            f"how far {dtype} rounding moves a {score_kind(role)} score")


def near_thresholds(scores: dict[str, Any], threshold: Callable[[str], float], dtype: str) -> list[dict[str, Any]]:
    """Every (head, role) whose score ([layer, head] per role) lies within its rounding margin of the role's
    threshold, listed or not: `significance.precision_near_threshold`."""
    out = []
    for role, s in scores.items():
        for layer, row in enumerate(s.tolist()):
            for head, score in enumerate(row):
                why = near_threshold(role, score, threshold(role), dtype)  # one decision, the entries' own
                if why:
                    out.append({"layer": layer, "head": head, "role": role, "score": round(score, 4), "why": why})
    return out


def _moved(e: dict[str, Any], delta: float, n_tests: int) -> dict[str, Any]:
    """A kind's figures (as the atlas keeps them: corrected `p` and `p_negative`, the null's n, mean and sd)
    as `validate.decide` reads them, with the effect moved by `delta`: its interval and a group's effect with
    it, both tails' p computed again at the moved effect and corrected by the factor this test got (corrected
    ÷ raw; n_tests, Bonferroni's bound on Holm's, where the corrected p was capped at 1 or the raw one is 0)."""
    if max(abs(e["ci"][0]), abs(e["ci"][1]), abs(e.get("null_mean") or 0.0), e.get("null_sd") or 0.0) <= validate.FLOOR:
        delta = 0.0  # the head and its null all within FLOOR of 0 (a head that writes nothing there): no move
    tested = "group_effect" if "group_effect" in e else "effect"
    x = dict(e, effect=e["effect"] + delta, ci=[e["ci"][0] + delta, e["ci"][1] + delta])
    x[tested] = e[tested] + delta
    if "credited" in e:  # a member's credit: its drop's interval above 0 and the drop above FLOOR
        x["credited"] = bool(x["ci"][0] > 0 and x["effect"] > validate.FLOOR)
    null = (e.get("null_n", 0), e.get("null_mean"), e.get("null_sd"))
    before, after = validate.tails(e[tested], *null), validate.tails(x[tested], *null)
    for key, corrected, raw, moved in zip(("p", "p_down"), (e["p"], e["p_negative"]), before, after, strict=True):
        factor = n_tests if corrected >= 1.0 or raw <= 0.0 else corrected / raw
        x[key] = corrected if delta == 0 else min(1.0, moved * factor)
    return x


def own_step(e: dict[str, Any], dtype: str) -> float:
    """The direct kind's rounding step: DIRECT_EPS epsilons of its own values' scale (see DIRECT_EPS)."""
    scale = max(abs(e["ci"][0]), abs(e["ci"][1]), abs(e.get("null_mean") or 0.0) + (e.get("null_sd") or 0.0))
    return DIRECT_EPS * eps(dtype) * scale


def verdict(kinds: dict[str, dict[str, Any]], step: float, noise: float, n_tests: int, dtype: str
            ) -> tuple[str | None, list[str]]:
    """Could rounding have changed this (head, role)'s validation? → (why, or None; the kinds whose
    significance could change), deciding again with every effect its step lower and its step higher: `step`
    for the effects read from the model's logits (total, group), `own_step` for the direct kind."""
    def decided(sign: int) -> tuple[bool, dict[str, str]]:
        view = {k: _moved(e, sign * (own_step(e, dtype) if k == "direct" else step), n_tests)
                for k, e in kinds.items()}
        return validate.decide(view, noise)[0], {k: v["significant"] for k, v in view.items()}

    base, low, high = decided(0), decided(-1), decided(1)
    changed = [k for k in kinds if len({base[1][k], low[1][k], high[1][k]}) > 1]
    if low[0] != base[0]:
        return f"validated, but not with every effect {step:.2g} nats lower (one rounding step of the logits)", changed
    if high[0] != base[0]:
        return (f"not validated, but validated with every effect {step:.2g} nats higher (one rounding step of "
                f"the logits)"), changed
    return None, changed


def range_hazard(intervention: str, dtype: str) -> str | None:
    """Why an intervention is unreliable in `dtype` whatever the effect's size, or None. float16's smallest
    subnormal is 6e-8: the attention a sink head leaves to the other keys flushes to 0 there (SmolLM2's 18.8:
    92.5% of its non-sink weights, 8e-7 per row in all), and the sink removal renormalizes what is left, so
    its effect moved by up to 0.48 nats (22%) against float32. bfloat16 has float32's range."""
    if dtype == "float16" and intervention == "no_sink":
        return ("float16 flushes the small attention weights the sink removal renormalizes to 0 "
                "(its effect can move far more than one rounding step)")
    return None


def rule(dtype: str, step: float) -> str:
    """The rule in words, for the atlas's `significance.precision_rule`."""
    mass, count = score_margin("self", dtype), score_margin("successor", dtype)
    return (f"a (head, role) is marked precision_sensitive when rounding in {dtype} could have changed its "
            f"verdict: validated or not once every effect moves by one rounding step of the logits "
            f"({step:.2g} nats) either way, or listed or not because its score lies within its rounding margin "
            f"of the threshold ({mass:.2g} for attention-mass scores, {count:.2g} for decision counts)"
            + ("; in float16 every sink-removal (first_token) verdict, as float16 flushes the weights it "
               "renormalizes" if dtype == "float16" else ""))
