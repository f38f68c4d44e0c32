"""Chapter 2 of the tour, how training writes it: a 2-layer model from its declaration (the init rule and a
head's step-0 values), one step's update split over the levels, then the run to the phase change: which head
becomes the induction head and when, the loss drop, its K-composition sender rising, and the training rows
that wrote it. Trained now (the `induction-2l` preset) or read from a run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PRESET = "induction-2l"
TOP_ROWS = 3
WINDOW = 12  # steps before the phase change whose rows are ranked


def ensure_run(run: Path | None, folder: Path, seed: int = 0) -> tuple[Path, bool]:
    """The run to read: `run` when given, else the preset trained into `folder` (kept; reused when finished).
    → (run, trained_now)."""
    from glassbox.train.loop import declare, train

    if run is not None:
        return Path(run), False
    if (folder / "summary.json").is_file():
        return folder, False
    train(folder, declare(preset=PRESET, seed=seed))
    return folder, True


def _level_shares(run: Path, step: int) -> dict[str, float]:
    """Each level's share of one step's update: Σ‖ΔW‖² over its whole-tensor rows, over the total."""
    from glassbox.train.store import read_table

    t = read_table(run, "ledger").to_pydict()
    sums: dict[str, float] = {}
    for s, head, level, upd in zip(t["step"], t["head"], t["level"], t["update_norm"], strict=True):
        if s == step and head is None and upd == upd:
            sums[level] = sums.get(level, 0.0) + float(upd) ** 2
    total = sum(sums.values()) or 1.0
    return {k: v / total for k, v in sorted(sums.items(), key=lambda kv: -kv[1])}


def _step0(run: Path, layer: int, head: int) -> dict[str, Any]:
    """The head's query weights at the first checkpoint: the first values and their spread."""
    from glassbox import weights
    from glassbox.train.checkpoints import list_checkpoints

    step, path = list_checkpoints(run)[0]
    w = weights.head(path, layer, head).W_Q
    return {"step": step, "file": str(path), "values": [round(float(v), 6) for v in w[0, :8]],
            "std": float(w.std()), "shape": list(w.shape)}


def _sender(doc: dict[str, Any], layer: int, head: int) -> dict[str, Any] | None:
    """The strongest K-composition sender into the head at the end, and its score at the first checkpoint."""
    def k_into(ck: dict) -> dict[tuple[int, int], float]:
        return {tuple(c["from"]): c["score"] for c in ck.get("composition", [])
                if c["kind"] == "k" and list(c["to"]) == [layer, head]}

    first, last = k_into(doc["checkpoints"][0]), k_into(doc["checkpoints"][-1])
    if not last:
        return None
    src = max(last, key=last.get)
    return {"from": list(src), "kind": "k", "first": first.get(src), "last": last[src],
            "first_step": doc["checkpoints"][0]["step"], "last_step": doc["checkpoints"][-1]["step"]}


def _examples(run: Path, layer: int, head: int, step: int | None, quiet: bool) -> dict[str, Any] | None:
    """The rows that wrote the head: `writes --examples`' file in the run when there, else ranked now over the
    WINDOW steps before the phase change (the per-row gradients cost a replay of each step)."""
    from glassbox.timeline.examples import rank

    saved = run / f"examples-L{layer}H{head}.json"
    if saved.is_file():
        doc = json.loads(saved.read_text())
    else:
        steps = (max(1, step - WINDOW), step) if step else None
        doc = rank(run, layer, head, steps=steps, top=TOP_ROWS, quiet=quiet)
    return {"steps": doc["steps"], "rows": doc["rows"],
            "top": [{k: r[k] for k in ("step", "row", "contribution", "share", "text")} for r in doc["top"][:TOP_ROWS]],
            "top_share_of_positive": doc.get("top_share_of_positive")}


def chapter(run: Path, trained_now: bool, seconds: float, quiet: bool = False) -> dict[str, Any]:
    """The `training` chapter document."""
    from glassbox.timeline.analyze import analyze
    from glassbox.train.loop import _read_declaration
    from glassbox.train.model import INIT_SCHEMES

    decl = _read_declaration(run)
    doc = analyze(run)
    ind = [c for c in doc["phase_changes"] if c["role"] == "induction"]
    pc = ind[0] if ind else None
    if pc is None:  # no phase change: follow the best induction head at the end
        top = doc["final"]["top_heads"]["induction"]
        layer, head = top["layer"], top["head"]
    else:
        layer, head = pc["layer"], pc["head"]
    loss = next((lc for lc in doc["loss_changes"] if lc["metric"] == "loss_repeated"), None)
    scheme = str(decl["init"]).split(":")[0]
    config = {k: v for k, v in decl["model_config"].items() if v is not None and k in (
        "model_type", "n_layer", "n_head", "n_embd", "vocab_size", "n_positions", "num_hidden_layers",
        "num_attention_heads", "hidden_size")}
    first_step = min(doc["checkpoints"][1]["step"], 1) if len(doc["checkpoints"]) > 1 else 0
    shares = _level_shares(run, max(first_step, 1))
    step0 = _step0(run, layer, head)
    sender = _sender(doc, layer, head)
    examples = _examples(run, layer, head, pc["step"] if pc else None, quiet)
    how = "trained now" if trained_now else "read from"
    text = (f"A model is a declaration ({', '.join(f'{k}={v}' for k, v in config.items())}) and an init rule "
            f"({scheme}: {INIT_SCHEMES.get(scheme, decl['init'])}). At step {step0['step']} head {layer}.{head}'s "
            f"query weights are just those random numbers (first values {', '.join(f'{v:+.3f}' for v in step0['values'][:4])}, "
            f"std {step0['std']:.3f}). Each optimizer step writes into every level at once: the first step's update "
            f"went {', '.join(f'{k} {v:.0%}' for k, v in list(shares.items())[:4])}. ")
    if pc is not None:
        took = f", {seconds:.0f} s" if trained_now else ""
        text += (f"Over {doc['steps']} steps ({how} {run}{took}) head {layer}.{head} becomes an induction "
                 f"head at step {pc['step']} (score {pc['before']:.2f} → {pc['after']:.2f})")
        if loss:
            text += f"; the loss on the repeated half drops {loss['before']:.2f} → {loss['after']:.2f} nats at step {loss['step']}"
        text += ". "
    else:
        text += f"No induction phase change was detected in {doc['steps']} steps ({how} {run}). "
    if sender:
        text += (f"Its key reads what head {sender['from'][0]}.{sender['from'][1]} writes: their K-composition rises "
                 f"{sender['first']:.2f} → {sender['last']:.2f}. " if sender["first"] is not None else "")
    if examples and examples["top"]:
        r = examples["top"][0]
        text += (f"The training row that pushed hardest the way the head moved was row {r['row']} of step "
                 f"{r['step']} (of {examples['rows']} rows in steps {examples['steps'][0]}–{examples['steps'][1]}).")
    return {"id": "training", "title": "How training writes it", "text": text, "run": str(run),
            "trained_now": trained_now, "seconds": seconds, "declaration": config, "init": decl["init"],
            "init_rule": INIT_SCHEMES.get(scheme, ""), "step0": step0, "first_step_shares": shares,
            "phase_change": {"layer": layer, "head": head, "step": pc["step"] if pc else None,
                             "before": pc["before"] if pc else None, "after": pc["after"] if pc else None},
            "loss_change": loss, "sender": sender, "examples": examples, "steps": doc["steps"],
            "commands": [f"glassbox train --preset {PRESET} --out RUN", "glassbox timeline RUN",
                         f"glassbox writes RUN --examples --head {layer}.{head}"]}
