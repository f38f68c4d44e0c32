"""The seed's table, measured: which level and which head took the writes, and when.

From the ledger: per level (embedding, attention Q/K/V/O, MLP, norms, unembedding), the share of the total
update Σ‖Δw‖² (what the optimizer wrote) and of the total squared gradient, over time windows; and the heads
with the largest share of the attention writes. A fused QKV tensor is split by its head rows into Q, K and V; in a GQA model a kv head's K/V writes are
split evenly among the query heads that read it.
Windows are log-spaced (1-3, 4-10, 11-31, ...), since most of the writing that matters happens early.
`window_table` sums exactly one window instead (`writes --steps A-B`, or `--steps phase`: a phase change's
window from timeline.json), every head ranked by its share, with the phase-change head's own share and rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glassbox.errors import BadInput
from glassbox.train.store import read_table

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


def _ledger(run: Path) -> dict[str, list]:
    if not run.is_dir():
        raise BadInput("not a directory", run)
    ledger = read_table(run, "ledger")
    if ledger is None or ledger.num_rows == 0:
        raise BadInput("no ledger (ledger.parquet); was the run trained with --ledger-every 0?", run)
    return ledger.select(["step", "tensor", "level", "layer", "head", "kind", "update_norm", "grad_norm"]).to_pydict()


def _accumulate(d: dict[str, list], spans: list[tuple[int, int]]):
    """Per span: {name: [Σ‖Δw‖², Σ‖g‖²]} per level, {(layer, head): Σ‖Δw‖²} and {(layer, head): Σ‖g‖²} over the
    ledger rows of its steps."""
    split_tensors = {t for t, h in zip(d["tensor"], d["head"], strict=True) if h is not None}
    per_kind: dict[tuple[int, str], set[int]] = {}
    for layer, head, kind in zip(d["layer"], d["head"], d["kind"], strict=True):
        if head is not None:
            per_kind.setdefault((layer, kind), set()).add(head)
    groups = {layer: max(1, len(per_kind.get((layer, "q"), ())) // len(heads_k))
              for (layer, kind), heads_k in per_kind.items() if kind == "k"}
    # one pass: accumulate squared norms per (window, level) and per (window, layer, head)
    levels: dict[tuple[int, int], dict[str, list[float]]] = {s: {} for s in spans}
    heads: dict[tuple[int, int], dict[tuple[int, int], float]] = {s: {} for s in spans}
    heads_g: dict[tuple[int, int], dict[tuple[int, int], float]] = {s: {} for s in spans}
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
                        heads_g[span][(layer, h)] = heads_g[span].get((layer, h), 0.0) + grad * grad / group
    return levels, heads, heads_g


def write_table(run: str | Path, top: int = 5) -> dict[str, Any]:
    run = Path(run)
    d = _ledger(run)
    steps = sorted(set(d["step"]))
    spans = windows(steps[-1]) + [(steps[0], steps[-1])]
    levels, heads, _ = _accumulate(d, spans)
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


def phase_window(run: Path, head: tuple[int, int] | None = None) -> tuple[tuple[int, int], tuple[int, int], str]:
    """The step window of a phase change in RUN/timeline.json: `head`'s first one, else the induction winner's
    (the timeline's "why"). The change lies between checkpoints lo and hi, so the updates are steps lo+1..hi.
    → ((start, end), (layer, head), what it is)."""
    import json

    path = run / "timeline.json"
    try:
        doc = json.loads(path.read_text())
        changes = doc["phase_changes"]
    except OSError:
        raise BadInput("no timeline.json; run `glassbox timeline RUN` first to find the phase changes", run) from None
    except (ValueError, KeyError, TypeError):
        raise BadInput("not a timeline document (no phase_changes)", path) from None
    if head is not None:
        found = [c for c in changes if (c["layer"], c["head"]) == head]
        if not found:
            raise BadInput(f"L{head[0]}H{head[1]} has no phase change in timeline.json", path)
        c = min(found, key=lambda c: c["step"])
    else:
        why = next((w for w in doc.get("why", []) if w["role"] == "induction"), None)
        if why is None:
            raise BadInput("no induction phase change in timeline.json (give --steps A-B, or --head for another "
                           "head's)", path)
        c = next(c for c in changes if c["role"] == "induction" and (c["layer"], c["head"]) == (why["layer"],
                                                                                              why["winner"]))
    lo, hi = (int(x) for x in c["window"])
    return ((max(1, lo + 1), max(hi, lo + 1)), (c["layer"], c["head"]),
            f"{c['role']} phase change of L{c['layer']}H{c['head']} at step {c['step']} (timeline.json)")


def window_table(run: str | Path, start: int, end: int, focus: tuple[int, int] | None = None,
                 source: str = "given (--steps)", top: int = 5) -> dict[str, Any]:
    """Where the update went over exactly steps start..end: each level's share of Σ‖Δw‖² (and of Σ‖g‖²), every
    head's share of the attention head writes with its rank, and `focus`'s share and rank. The `windows` list
    holds the same window in `write_table`'s shape, so readers of that keep working."""
    run = Path(run)
    d = _ledger(run)
    if end > max(d["step"]):
        raise BadInput(f"--steps {start}-{end} runs past the ledger's last step {max(d['step'])}", run)
    steps = sorted({s for s in d["step"] if start <= s <= end})
    if not steps:
        raise BadInput(f"the ledger has no step in {start}-{end} (it holds steps {min(d['step'])}-{max(d['step'])})",
                       run)
    span = (start, end)
    levels, heads, heads_g = _accumulate(d, [span])
    lv, hd, hg = levels[span], heads[span], heads_g[span]
    grad_total = sum(hg.values())
    total_u = sum(v[0] for v in lv.values())
    total_g = sum(v[1] for v in lv.values())
    head_total = sum(hd.values())
    ranked = sorted(hd.items(), key=lambda kv: (-kv[1], kv[0]))
    rows = [{"layer": lh[0], "head": lh[1], "rank": k + 1, "share": v / head_total if head_total else None,
             "share_of_all": v / total_u if total_u else None, "update_sq": v,
             "grad_share": hg.get(lh, 0.0) / grad_total if grad_total else None} for k, (lh, v) in enumerate(ranked)]
    level_rows = [{"level": name, "update_share": lv[name][0] / total_u if total_u else None,
                   "grad_share": lv[name][1] / total_g if total_g else None, "update_sq": lv[name][0],
                   "grad_sq": lv[name][1]} for name in sorted(lv, key=_level_key)]
    focus_row = None
    if focus is not None:
        focus_row = next((dict(r, of=len(rows)) for r in rows if (r["layer"], r["head"]) == tuple(focus)), None)
        if focus_row is None:
            raise BadInput(f"no head L{focus[0]}H{focus[1]} in the ledger", run)
    window = {"start": start, "end": end, "source": source, "steps_recorded": len(steps),
              "update_sq_total": total_u, "levels": level_rows, "heads": rows, "focus": focus_row}
    compat = {"start": start, "end": end, "all": False,
              "levels": [{k: r[k] for k in ("level", "update_share", "grad_share")} for r in level_rows],
              "top_heads": [{k: r[k] for k in ("layer", "head", "share")} for r in rows[:top]]}
    return {"run": str(run), "steps_recorded": len(set(d["step"])), "windows": [compat], "window": window}


def render_window(doc: dict[str, Any]) -> str:
    w = doc["window"]
    lines = [f"{doc['run']}: where the update went over steps {w['start']}-{w['end']} ({w['source']}; "
             f"{w['steps_recorded']} steps recorded)", f"{'level':<20}{'update':>9}{'gradient':>10}"]
    for r in w["levels"]:
        lines.append(f"{r['level']:<20}{_pct(r['update_share']):>9}{_pct(r['grad_share']):>10}")
    lines.append("")
    lines.append(f"heads by share of the attention head writes (Q/K/V/O slices together; an even split is "
                 f"{_pct(1 / max(1, len(w['heads'])))}), of the whole update, and of the heads' squared gradient:")
    for r in w["heads"]:
        mark = "  <- focus" if w["focus"] and (r["layer"], r["head"]) == (w["focus"]["layer"], w["focus"]["head"]) else ""
        lines.append(f"  {r['rank']:>3}. L{r['layer']}H{r['head']:<4} {_pct(r['share']):>7}  whole {_pct(r['share_of_all']):>6}"
                     f"  gradient {_pct(r['grad_share']):>6}{mark}")
    f = w["focus"]
    if f:
        lines.append("")
        lines.append(f"L{f['layer']}H{f['head']} took {_pct(f['share'])} of the head writes in this window "
                     f"({_pct(f['share_of_all'])} of the whole update, {_pct(f['grad_share'])} of the heads' squared "
                     f"gradient), rank {f['rank']} of {f['of']} heads")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


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
