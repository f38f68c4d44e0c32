"""Phase-change detection: where a head's score jumps from "not doing it" to "doing it", and where a loss
drops from its plateau.

A head has a phase change for a role when its score series goes from below `low` (0.1) to above `high` (0.5)
and ends above `high`. The reported step is where the series crosses the midpoint (linear interpolation between
checkpoints), and the window runs from the last checkpoint below `low` to the first one above `high`.
A loss drop is located the same way on the smoothed per-step curve: the step where it crosses halfway between
its plateau before and its level after, with the window from 80% to 20% of the drop.
"""

from __future__ import annotations

LOW, HIGH = 0.1, 0.5


def _crossing(steps: list[int], values: list[float], level: float, start: int, rising: bool) -> float | None:
    for k in range(max(start, 1), len(values)):
        a, b = values[k - 1], values[k]
        if (a < level <= b) if rising else (a > level >= b):
            return steps[k - 1] + (steps[k] - steps[k - 1]) * (level - a) / (b - a)
    return None


def score_change(steps: list[int], values: list[float], low: float = LOW, high: float = HIGH) -> dict | None:
    """The rise of one head's score, or None when it did not go from < low to > high (and stay there)."""
    if len(values) < 2 or values[-1] <= high:
        return None
    first_high = next((k for k, v in enumerate(values) if v > high and all(u > high * 0.8 for u in values[k:])),
                      None)
    if first_high is None:
        return None
    lows = [k for k in range(first_high) if values[k] < low]
    if not lows:
        return None
    last_low = lows[-1]
    step = _crossing(steps, values, (low + high) / 2, last_low + 1, rising=True)
    return {"step": int(round(step if step is not None else steps[first_high])),
            "window": [steps[last_low], steps[first_high]],
            "before": values[last_low], "after": values[-1]}


def smooth(values: list[float], width: int = 9) -> list[float]:
    half = width // 2
    out = []
    for i in range(len(values)):
        window = [v for v in values[max(0, i - half): i + half + 1] if v == v]
        out.append(sum(window) / len(window) if window else float("nan"))
    return out


def loss_drop(steps: list[int], values: list[float], min_drop: float = 0.5) -> dict | None:
    """The big drop of a loss curve (after its early fall to a plateau), or None when it never drops by
    `min_drop` nats below its plateau."""
    s = smooth(values, max(3, len(values) // 40 * 2 + 1))
    if len(s) < 10:
        return None
    n = len(s)
    after = min(s[-max(1, n // 10):])
    # the plateau: the highest smoothed value reached after the first 5% of the run, before the final level
    plateau = max(s[n // 20: max(n // 20 + 1, n - n // 10)])
    if plateau - after < min_drop:
        return None
    peak = s.index(plateau, n // 20)

    def cross(frac: float) -> float | None:
        return _crossing(steps, s, after + frac * (plateau - after), peak + 1, rising=False)

    mid, start, end = cross(0.5), cross(0.8), cross(0.2)
    if mid is None:
        return None
    return {"step": int(round(mid)), "window": [int(round(start or mid)), int(round(end or mid))],
            "before": plateau, "after": after}
