"""The seed's table, measured: which level and which head took the writes, and when.

From the ledger: per level (embedding, attention Q/K/V/O, MLP, norms, unembedding), the share of the total
update Σ‖Δw‖² (what the optimizer wrote) and of the total squared gradient, over time windows; and the heads
with the largest share of the attention writes. A fused QKV tensor is split by its head rows into Q, K and V; in a GQA model a kv head's K/V writes are
split evenly among the query heads that read it.
Windows are log-spaced (1-3, 4-10, 11-31, ...), since most of the writing that matters happens early.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glassbox.errors import BadInput

LEVEL_ORDER = ("embedding", "position_embedding", "attention.norm", "attention.q", "attention.k", "attention.v",
               "attention.qkv", "attention.o", "attention.qk_norm", "mlp.norm", "mlp.in", "mlp.gate",
               "mlp.gate_up", "mlp.out", "final_norm", "unembedding", "unknown")


def windows(last_step: int) -> list[tuple[int, int]]:
    edges, lo, k = [], 1, 0
    while lo <= last_step:
        hi = min(last_step, int(round(10 ** ((k + 1) / 2))))
        if hi >= lo:
            edges.append((lo, hi))
            lo = hi + 1
        k += 1
    return edges


def write_table(run: str | Path, top: int = 5) -> dict[str, Any]:
    from glassbox.train.store import read_table

    run = Path(run)
    if not run.is_dir():
        raise BadInput("not a directory", run)
    ledger = read_table(run, "ledger")
    if ledger is None or ledger.num_rows == 0:
        raise BadInput("no ledger (ledger.parquet); was the run trained with --ledger-every 0?", run)
    d = ledger.select(["step", "tensor", "level", "layer", "head", "kind", "update_norm", "grad_norm"]).to_pydict()
    split_tensors = {t for t, h in zip(d["tensor"], d["head"], strict=True) if h is not None}
    per_kind: dict[tuple[int, str], set[int]] = {}
    for layer, head, kind in zip(d["layer"], d["head"], d["kind"], strict=True):
        if head is not None:
            per_kind.setdefault((layer, kind), set()).add(head)
    groups = {layer: max(1, len(per_kind.get((layer, "q"), ())) // len(heads_k))
              for (layer, kind), heads_k in per_kind.items() if kind == "k"}
    steps = sorted(set(d["step"]))
    spans = windows(steps[-1]) + [(steps[0], steps[-1])]
    # one pass: accumulate squared norms per (window, level) and per (window, layer, head)
    levels: dict[tuple[int, int], dict[str, list[float]]] = {s: {} for s in spans}
    heads: dict[tuple[int, int], dict[tuple[int, int], float]] = {s: {} for s in spans}
    for step, tensor, level, layer, head, kind, upd, grad in zip(
            d["step"], d["tensor"], d["level"], d["layer"], d["head"], d["kind"], d["update_norm"], d["grad_norm"], strict=True):
        if head is None and tensor in split_tensors:
            continue  # counted through its head rows
        name = f"attention.{kind}" if head is not None else level
        for span in spans:
            if span[0] <= step <= span[1]:
                acc = levels[span].setdefault(name, [0.0, 0.0])
                acc[0] += upd * upd
                acc[1] += grad * grad
                if head is not None:
                    # a K/V row of a GQA model is one kv head, shared by `group` query heads: split it evenly
                    group = groups.get(layer, 1) if kind in ("k", "v") else 1
                    for h in range(head * group, (head + 1) * group):
                        heads[span][(layer, h)] = heads[span].get((layer, h), 0.0) + upd * upd / group
    out_windows = []
    for span in spans:
        total_u = sum(v[0] for v in levels[span].values()) or 1.0
        total_g = sum(v[1] for v in levels[span].values()) or 1.0
        head_total = sum(heads[span].values()) or 1.0
        ranked = sorted(heads[span].items(), key=lambda kv: -kv[1])[:top]
        out_windows.append({
            "start": span[0], "end": span[1], "all": span == spans[-1],
            "levels": [{"level": lv, "update_share": levels[span][lv][0] / total_u,
                        "grad_share": levels[span][lv][1] / total_g}
                       for lv in sorted(levels[span], key=_level_key)],
            "top_heads": [{"layer": lh[0], "head": lh[1], "share": v / head_total} for lh, v in ranked],
        })
    return {"run": str(run), "steps_recorded": len(steps), "windows": out_windows}


def _level_key(level: str) -> int:
    return LEVEL_ORDER.index(level) if level in LEVEL_ORDER else len(LEVEL_ORDER)


def render(doc: dict[str, Any]) -> str:
    spans = doc["windows"]
    names = [lv["level"] for lv in spans[-1]["levels"]]
    header = f"{'level':<20}" + "".join(f"{_span(w):>12}" for w in spans)
    lines = [f"{doc['run']}: share of the update Σ‖Δw‖² written per level, by step window "
             f"({doc['steps_recorded']} steps recorded)", header]
    for name in names:
        cells = []
        for w in spans:
            share = next((lv["update_share"] for lv in w["levels"] if lv["level"] == name), None)
            cells.append(f"{share * 100:11.1f}%" if share is not None else f"{'-':>12}")
        lines.append(f"{name:<20}" + "".join(cells))
    lines.append("")
    lines.append("top heads by share of the attention writes (Q/K/V/O slices together):")
    for w in spans:
        tops = ", ".join(f"L{t['layer']}H{t['head']} {t['share'] * 100:.0f}%" for t in w["top_heads"][:4])
        lines.append(f"  {_span(w):>10}: {tops}")
    return "\n".join(lines)


def _span(w: dict) -> str:
    return "all" if w.get("all") else f"{w['start']}-{w['end']}"
