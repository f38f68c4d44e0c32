"""Showing an atlas: a Rich table (roles → heads) and a PNG heatmap (layers × heads, one panel per role)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from glassbox.fileio import save_png, write_json
from glassbox.heads.atlas import role_names, threshold


def _roles_by_name(atlas: dict[str, Any]) -> dict[str, list[tuple[dict, dict]]]:
    found: dict[str, list[tuple[dict, dict]]] = {}
    for head in atlas["heads"]:
        for role in head["roles"]:
            found.setdefault(role["role"], []).append((head, role))
    for items in found.values():
        items.sort(key=lambda hr: -hr[1]["score"])
    return found


def leading(role: dict[str, Any]) -> str:
    """A checked role in words: ✓/✗, then the signed effect of the evidence that carried it and its kind
    (a head validated by its group shows its own drop within the group, not its total effect when ablated
    alone; the group's effect is the entry's `group_effect`). ≈ after the mark: rounding in the atlas's half
    precision could have changed the verdict (`precision_sensitive`, heads/precision.py)."""
    mark = ("✓" if role["validated"] else "✗") + ("≈" if role.get("precision_sensitive") else "")
    effect, kind = role.get("effect", role["ablation_effect"]), role.get("basis") or "total"
    return f"{mark} {effect:+.3g} ({kind})"


def top_heads(atlas: dict[str, Any], n: int = 3) -> dict[str, list[dict[str, Any]]]:
    """Each role's best heads above threshold: {role: [{"layer", "head", "score", "validated", "text"}]}, the
    text being 'L.H score ✓ +effect (kind)'."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, items in _roles_by_name(atlas).items():
        items = sorted(items, key=lambda hr: (not hr[1]["validated"], -hr[1]["score"]))[:n]
        out[name] = [{"layer": h["layer"], "head": h["head"], "score": r["score"], "validated": r["validated"],
                      "effect": r.get("effect", r["ablation_effect"]), "basis": r.get("basis"),
                      "text": f"{h['layer']}.{h['head']} {r['score']:.2f} {leading(r)}"} for h, r in items]
    return out


def table(atlas: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title=f"head atlas: {atlas['model']} ({atlas['n_layers']} layers × {atlas['n_heads']} heads)")
    t.add_column("role")
    t.add_column("≥", justify="right")
    t.add_column("heads above threshold (layer.head score; ✓ validated: the leading evidence's signed effect (its kind) vs its null's mean [evidence, corrected p])")
    found = _roles_by_name(atlas)
    for name in role_names(atlas):
        best = max(atlas["heads"], key=lambda h: h["scores"][name])
        cells = []
        for head, role in found.get(name, []):
            colour = "green" if role["validated"] else "red"
            vs = f"[{colour}]{leading(role)}[/{colour}]"  # the leading evidence's signed effect and kind
            base = role.get("null_mean")
            vs += f" vs {base:.2g}" if base is not None else ""
            if role.get("evidence"):  # which kinds carried it (total / direct / group) and the corrected p
                vs += f" [{'+'.join(role['evidence'])} p={role['p']:.1g}]"
            cells.append(f"{head['layer']}.{head['head']} {role['score']:.2f} {vs}")
        text = "\n".join(cells) if cells else (
            f"[dim]none (best {best['layer']}.{best['head']} at {best['scores'][name]:.2f})[/dim]")
        t.add_row(name, f"{threshold(name):.2f}", text)
    if any(r.get("precision_sensitive") for h in atlas["heads"] for r in h["roles"]):
        t.caption = (f"≈ precision-sensitive: rounding in {atlas.get('dtype')} could have changed this verdict "
                     "(precision_why in the JSON says how)")
    return t


def heatmap(atlas: dict[str, Any], path: str | Path) -> Path:
    """One panel per role: score of every head (layers down, heads across); ✓ marks validated heads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = role_names(atlas)
    n_l, n_h = atlas["n_layers"], atlas["n_heads"]
    cols = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / cols)
    panel_h = max(2.0, 0.12 * n_l + 1)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, panel_h * rows), squeeze=False, layout="constrained")
    grid = {name: np.zeros((n_l, n_h)) for name in names}
    for head in atlas["heads"]:
        for name in names:
            grid[name][head["layer"], head["head"]] = head["scores"].get(name, 0.0)
    found = _roles_by_name(atlas)
    for ax, name in zip(axes.flat, names, strict=False):
        im = ax.imshow(grid[name], vmin=0, vmax=1, cmap="viridis", aspect="auto", interpolation="nearest")
        for head, role in found.get(name, []):
            ax.text(head["head"], head["layer"], "✓" if role["validated"] else "·", ha="center", va="center",
                    color="white" if role["validated"] else "red", fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("head", fontsize=7)
        ax.set_ylabel("layer", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="probe score")
    fig.suptitle(f"{atlas['model']}: head atlas (✓ validated by ablation)", fontsize=11)
    return save_png(fig, path)


def save(atlas: dict[str, Any], folder: str | Path) -> Path:
    """Write atlas.json and the heatmap atlas.png into `folder` (atomically) → the PNG's path."""
    folder = Path(folder)
    write_json(folder / "atlas.json", atlas)
    return heatmap(atlas, folder / "atlas.png")
