"""PNG plots: each head's score over training steps, with the loss curve underneath and phase changes marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glassbox.circuits.timeline import draw as draw_composition
from glassbox.fileio import save_png


def _draw(ax_score, ax_loss, doc: dict[str, Any], metrics, roles=("induction", "previous_token")) -> None:
    steps = [c["step"] for c in doc["checkpoints"]]
    styles = {"induction": "-", "previous_token": ":", "duplicate_token": "--", "first_token": "-."}
    for k, h in enumerate(doc["checkpoints"][0]["heads"]):
        for role in roles:
            series = [c["heads"][k]["scores"][role] for c in doc["checkpoints"]]
            ax_score.plot(steps, series, styles.get(role, "-"), color=f"C{k % 10}",
                          label=f"L{h['layer']}H{h['head']} {role}")
    for c in doc["phase_changes"]:
        ax_score.axvline(c["step"], color="grey", alpha=0.4)
        ax_loss.axvline(c["step"], color="grey", alpha=0.4)
    for lc in doc.get("loss_changes", []):
        if lc["metric"] == "loss_repeated":  # a loss drop may come with or without a head's phase change
            ax_loss.axvline(lc["step"], color="C3", ls="--", alpha=0.6)
    title = f"seed {doc['seed']}, init {doc['init']}"
    if doc.get("steer"):
        title += ", steer " + ", ".join(f"{s['layer']}.{s['head']}={s['role']}" for s in doc["steer"])
    ax_score.set_title(title, fontsize=9)
    ax_score.set_ylabel("probe score")
    ax_score.set_ylim(-0.02, 1.02)
    ax_score.legend(fontsize=6, loc="upper left")
    if metrics is not None:
        m = metrics.to_pydict()
        ax_loss.plot(m["step"], m["loss"], color="black", lw=0.8, label="loss")
        if "loss_repeated" in m and any(v == v for v in m["loss_repeated"]):
            ax_loss.plot(m["step"], m["loss_repeated"], color="C3", lw=0.8, label="loss on repeated part")
    else:
        ax_loss.plot(steps, [c["loss"] for c in doc["checkpoints"]], color="black", label="loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (nats)")
    ax_loss.legend(fontsize=6, loc="upper right")


def plot_runs(docs: list[dict[str, Any]], metrics: list, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(docs)
    fig, axes = plt.subplots(3, n, figsize=(4.5 * n, 7), sharex="col", squeeze=False,
                             gridspec_kw={"height_ratios": [2, 1, 1]})
    for i, (doc, m) in enumerate(zip(docs, metrics, strict=True)):
        _draw(axes[0][i], axes[2][i], doc, m)
        draw_composition(axes[1][i], doc)  # the circuit wiring up, under the induction score
    fig.tight_layout()
    return save_png(fig, path)
