"""Human-readable timeline: phase changes, a few checkpoints, why this head; and several runs side by side."""

from __future__ import annotations

from typing import Any


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _lh(top: dict) -> str:
    return f"L{top['layer']}H{top['head']} {top['score']:.2f}"


def render(doc: dict[str, Any], plot: str | None = None) -> str:
    lines = [f"{doc['run']}: seed {doc['seed']}, init {doc['init']}, {doc['steps']} steps, "
             f"{len(doc['checkpoints'])} checkpoints"
             + (", steered " + ", ".join(f"L{s['layer']}H{s['head']}={s['role']}" for s in doc["steer"])
                if doc["steer"] else "")]
    if doc["phase_changes"]:
        lines.append("phase changes:")
        for c in doc["phase_changes"]:
            extra = ""
            if "loss_drop_step" in c:
                extra = (f"; repeated-part loss drops at step {c['loss_drop_step']}"
                         + (" (same time)" if c["coincides_with_loss_drop"] else ""))
            lines.append(f"  {c['role']:<15} L{c['layer']}H{c['head']} at step {c['step']} "
                         f"(score {_f(c['before'])} → {_f(c['after'])} between steps {c['window'][0]} and "
                         f"{c['window'][1]}{extra})")
    else:
        lines.append("phase changes: none detected (no head went from < 0.1 to > 0.5 and stayed)")
    for lc in doc["loss_changes"]:
        lines.append(f"  loss drop: {lc['metric']} {_f(lc['before'])} → {_f(lc['after'])} at step {lc['step']}")
    lines.append("")
    heads = [f"L{h['layer']}H{h['head']}" for h in doc["checkpoints"][0]["heads"]]
    lines.append(f"{'step':>6} {'loss':>6} {'icl':>6}  induction: " + " ".join(f"{h:>6}" for h in heads)
                 + "  prev-token: " + " ".join(f"{h:>6}" for h in heads))
    cks = doc["checkpoints"]
    pick = sorted({0, len(cks) - 1, *range(0, len(cks), max(1, len(cks) // 10))})
    for k in pick:
        c = cks[k]
        ind = " ".join(f"{h['scores']['induction']:6.2f}" for h in c["heads"])
        prev = " ".join(f"{h['scores']['previous_token']:6.2f}" for h in c["heads"])
        lines.append(f"{c['step']:>6} {_f(c['loss']):>6} {_f(c['icl_score']):>6}             {ind}               {prev}")
    for why in doc["why"]:
        lines.append("")
        lines.append(f"why L{why['layer']}H{why['winner']} won {why['role']} (change at step {why['step']}; "
                     f"first to change: L{why['layer']}H{why['first_to_change']}; "
                     f"before = steps < {why['window'][0]}, during = {why['window'][0]}-{why['window'][1]}):")
        lines.append(f"  {'head':<6} {'score start/before/during/after':<32} {'write share b/d/a':<18}"
                     f" {'grad share b/d/a':<18} ablation early/final")
        for h in why["heads"]:
            sc = "/".join(_f(h["score"][k]) for k in ("start", "before", "during", "after"))
            ws = "/".join(_f(h.get("write_share", {}).get(k)) for k in ("before", "during", "after"))
            gs = "/".join(_f(h.get("grad_share", {}).get(k)) for k in ("before", "during", "after"))
            lines.append(f"  L{why['layer']}H{h['head']:<4} {sc:<32} {ws:<18} {gs:<18} "
                         f"{_f(h['early_ablation_effect'], '.3f')}/{_f(h['final_ablation_effect'], '.3f')}")
    for ex in doc.get("examples", []):  # `glassbox writes --examples` files of this run (timeline/spans.py)
        lines.append("")
        steps = ex["steps"] or ["?", "?"]
        lines.append(f"examples that wrote L{ex['layer']}H{ex['head']} (steps {steps[0]}-{steps[1]}, {ex['rows']} rows, "
                     f"{ex['file']}): {ex['summary_line']}")
        rt = ex.get("retrain")
        if rt:
            got = ", ".join(f"{name} {rt[name]['phase_change_step'] if rt[name]['phase_change_step'] is not None else '-'}"
                            for name in ("baseline", "top_replaced", "random_replaced"))
            lines.append(f"  retrained ({rt['replaced_rows']} rows replaced): {rt['role']} forms at step {got}")
    if plot:
        lines.append("")
        lines.append(f"plot: {plot}")
    return "\n".join(lines)


def comparison(docs: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for d in docs:
        ind = [c for c in d["phase_changes"] if c["role"] == "induction"]
        why = next((w for w in d["why"] if w["role"] == "induction"), None)
        rows.append({
            "run": d["run"], "seed": d["seed"], "init": d["init"], "steer": d["steer"],
            "induction_phase_step": min((c["step"] for c in ind), default=None),
            "loss_drop_step": next((lc["step"] for lc in d["loss_changes"] if lc["metric"] == "loss_repeated"),
                                   None),
            "induction_heads_formed": [[c["layer"], c["head"]] for c in ind],
            "induction_winner": [why["layer"], why["winner"]] if why else None,
            "top_induction": d["final"]["top_heads"]["induction"],
            "top_previous_token": d["final"]["top_heads"]["previous_token"],
            "final_loss": d["final"]["loss"], "final_icl_score": d["final"]["icl_score"],
            "final_second_copy_loss": d["final"]["probe_loss_second_copy"],
        })
    winners = {tuple(r["induction_winner"]) for r in rows if r["induction_winner"]}
    return {"runs": rows, "winner_heads": sorted(list(w) for w in winners),
            "winner_changes_across_runs": len(winners) > 1}


def render_comparison(cmp: dict[str, Any], plot: str | None = None) -> str:
    lines = [f"{'run':<28} {'seed':>4} {'init':<11} {'phase':>6} {'drop':>5} {'winner':>7} {'top ind.':>12} "
             f"{'top prev.':>12} {'2nd-copy loss':>13} {'icl':>6}"]
    for r in cmp["runs"]:
        win = f"L{r['induction_winner'][0]}H{r['induction_winner'][1]}" if r["induction_winner"] else "none"
        ti, tp = r["top_induction"], r["top_previous_token"]
        lines.append(f"{r['run'][-28:]:<28} {r['seed']:>4} {r['init'][:11]:<11} "
                     f"{_f(r['induction_phase_step'], 'd') if r['induction_phase_step'] is not None else '-':>6} "
                     f"{r['loss_drop_step'] if r['loss_drop_step'] is not None else '-':>5} "
                     f"{win:>7} {_lh(ti):>12} "
                     f"{_lh(tp):>12} "
                     f"{_f(r['final_second_copy_loss']):>13} {_f(r['final_icl_score']):>6}")
    lines.append("")
    formed = [r for r in cmp["runs"] if r["induction_winner"]]
    if not formed:
        lines.append("no run formed an induction head (no layer's head went from < 0.1 to > 0.5)")
    else:
        lines.append("the induction winner's index " + ("changes across runs" if cmp["winner_changes_across_runs"]
                                                         else "is the same in every run that formed one"))
    without = [r for r in cmp["runs"] if not r["induction_winner"]]
    if formed and without:  # the two-init contrast: same data, one mechanism forms, the other does not
        for label, group in (("formed induction heads", formed), ("formed none", without)):
            inits = sorted({r["init"] for r in group})
            losses = ", ".join(_f(r["final_second_copy_loss"]) for r in group)
            lines.append(f"  init {'/'.join(inits)}: {label}; second-copy probe loss {losses}")
        lines.append("  nothing in the code dictates the mechanism: a model can fit the same data with or "
                     "without an induction head")
    lines.append("(phase: step of the first induction head's rise; drop: step of the repeated-part loss drop)")
    if plot:
        lines.append(f"plot: {plot}")
    return "\n".join(lines)
