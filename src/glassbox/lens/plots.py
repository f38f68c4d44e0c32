"""PNG heatmaps for the lens, patching and clustering results, written atomically (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glassbox.fileio import save_png


def heatmap(path: str | Path, values: Any, rows: list[str], cols: list[str], title: str, xlabel: str,
            ylabel: str, cells: list[list[str]] | None = None, diverging: bool = False) -> Path:
    """values [rows, cols] → a PNG heatmap; `cells` writes a short label in each cell (e.g. lens top tokens)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    v = np.asarray(values, dtype=float)
    width = min(2 + 0.55 * len(cols) * (2.2 if cells else 1), 40)
    height = min(1.5 + 0.3 * len(rows), 40)
    fig, ax = plt.subplots(figsize=(width, height))
    if diverging:
        lim = float(np.nanmax(np.abs(v))) or 1.0
        im = ax.imshow(v, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", origin="lower")
    else:
        im = ax.imshow(v, cmap="viridis", aspect="auto", origin="lower")
    ax.set_xticks(range(len(cols)), cols, rotation=60 if cells else 0, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if cells:
        for r, row in enumerate(cells):
            for c, text in enumerate(row):
                ax.text(c, r, text, ha="center", va="center", fontsize=5, color="white")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return save_png(fig, path)
