"""The demo's training part: train the induction preset (a few seconds) and name its phase change."""

from __future__ import annotations

import time
from pathlib import Path


def demo_summary(out_dir: str | Path, seed: int = 0) -> str:
    from glassbox.timeline.analyze import analyze
    from glassbox.timeline.plots import plot_runs
    from glassbox.train.loop import declare, train
    from glassbox.train.store import read_table

    out = Path(out_dir)
    t0 = time.perf_counter()
    if not (out / "summary.json").is_file():
        train(out, declare(preset="induction-2l", seed=seed))
    doc = analyze(out)
    png = plot_runs([doc], [read_table(out, "metrics")], out / "timeline.png")
    seconds = time.perf_counter() - t0
    lines = [f"trained GPT-2 (2 layers × 2 heads, attention only) on repeated random tokens, seed {seed}: "
             f"{doc['steps']} steps, {seconds:.1f} s with the timeline"]
    ind = [c for c in doc["phase_changes"] if c["role"] == "induction"]
    for c in ind:
        lines.append(f"  phase change: L{c['layer']}H{c['head']} becomes an induction head at step {c['step']} "
                     f"(score {c['before']:.2f} → {c['after']:.2f})")
    for lc in doc["loss_changes"]:
        if lc["metric"] == "loss_repeated":
            lines.append(f"  loss on the repeated part: {lc['before']:.2f} → {lc['after']:.2f} nats, "
                         f"dropping at step {lc['step']}")
    if not ind:
        lines.append("  no induction phase change detected")
    prev = doc["final"]["top_heads"]["previous_token"]
    lines.append(f"  top previous-token head: L{prev['layer']}H{prev['head']} (score {prev['score']:.2f})")
    lines.append(f"  plot: {png}")
    return "\n".join(lines)
