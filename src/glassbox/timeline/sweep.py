"""`glassbox sweep --preset P --seeds 0-15 --out DIR`: train one run per seed and its timeline, wherever the seam
says, then the comparison that `glassbox timeline --compare` makes (which head wins, and does it change?).

Each seed is one item: train into DIR/s<seed> (skipped when that run finished: summary.json is there), then
`timeline.analyze` on it (skipped when timeline.json is current). A seed whose worker died mid-training is
started again from scratch (its half-written folder is removed, but only when it holds this very declaration),
so its files are the same as an uninterrupted run's.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from glassbox import progress
from glassbox.errors import BadInput
from glassbox.fileio import write_json
from glassbox.run import placement
from glassbox.run.load import choose_for
from glassbox.scale import seam
from glassbox.timeline import render
from glassbox.timeline.analyze import analyze
from glassbox.train.loop import declare, train
from glassbox.train.model import build_model

MAX_SEEDS = 4096


def parse_seeds(spec: str) -> list[int]:
    """'0-15', '3', '0,2,7' or '0-3,10-12' → sorted distinct seeds."""
    seeds: set[int] = set()
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise BadInput(f"--seeds {spec!r}: expected e.g. 0-15, 3 or 0,2,7")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo or hi - lo + 1 + len(seeds) > MAX_SEEDS:
            raise BadInput(f"--seeds {spec!r}: a range must go up, and at most {MAX_SEEDS} seeds in all")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


class SeedRun:
    """One per worker (no model to share: each seed builds its own); called with a seed. Training runs as
    `glassbox train` does (float32 on the CPU); `dtype`/`device` (the command's --dtype/--device, handed over
    explicitly: a worker process does not share the driver's option state) are where the timeline probes it."""

    def __init__(self, out: str, declaration: dict[str, Any], ablate: bool, dtype: str = "auto",
                 device: str = "auto"):
        self.out, self.declaration, self.ablate = Path(out), declaration, ablate
        self.dtype, self.device = dtype, device

    def __call__(self, seed: int) -> dict[str, Any]:
        decl = json.loads(json.dumps(declare(**self.declaration, seed=seed)))
        run = self.out / f"s{seed}"
        if run.exists():
            try:
                existing = json.loads((run / "config.json").read_text())["glassbox_train"]
            except (OSError, ValueError, KeyError, TypeError):
                existing = None
            if existing != decl:
                raise BadInput(f"holds something other than this sweep's seed {seed}; use another --out", run)
            if not (run / "summary.json").is_file():
                shutil.rmtree(run)  # an interrupted attempt: train it again, deterministically
        if not run.exists():
            with progress.silenced():
                train(run, decl)
        return analyze(run, ablate=self.ablate, dtype=self.dtype, device=self.device)


def _preflight(decl: dict[str, Any], dtype: str, device: str) -> None:
    """The declared model, counted on the meta device (no memory), checked as its timelines will place it."""
    import torch

    with torch.device("meta"):
        model = build_model(decl["model_config"], decl["attention_only"])
    choose_for(sum(p.numel() for p in model.parameters()), "float32", dtype, device)


def sweep(out: str | Path, declaration: dict[str, Any], seeds: list[int], ablate: bool = True,
          backend=None, plot: bool = True, dtype: str = "auto", device: str = "auto") -> dict[str, Any]:
    """Every seed trained and analysed; DIR/sweep.json holds the comparison (and DIR/compare.png the plot).
    `dtype`/`device`: where each run's timeline probes its checkpoints (--dtype/--device)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInput("--out must be a folder", out)
    # a bad preset or option, or a model too big for the budget, fails here, before any worker starts
    _preflight(declare(**declaration, seed=seeds[0]), dtype, device)
    items = [seam.Item(f"s{seed}", (seed,)) for seed in seeds]
    parts = seam.Parts(out / ".glassbox-parts" / "sweep",
                       placement.keyed({"declaration": declaration, "ablate": ablate}, dtype, device))
    docs = seam.run_items(SeedRun, (str(out.resolve()), declaration, ablate, dtype, device), items, backend, parts,
                          f"sweep: {len(seeds)} seeds")
    for seed, d in zip(seeds, docs, strict=True):
        d["run"] = str(out / f"s{seed}")  # as the user named it, wherever the worker ran
    plots: list[str] = []
    if plot:
        from glassbox.timeline.plots import plot_runs
        from glassbox.train.store import read_table

        metrics = [read_table(out / f"s{seed}", "metrics") for seed in seeds]
        plots.append(str(plot_runs(docs, metrics, out / "compare.png")))
    comparison = render.comparison(docs)
    where = {"dtype": docs[-1]["dtype"], "device": docs[-1]["device"]}  # where the timelines probed
    write_json(out / "sweep.json", {"declaration": declaration, "seeds": seeds, "ablation": ablate,
                                    "runs": [d["run"] for d in docs], "comparison": comparison, **where})
    parts.clear()
    return {"out": str(out), "seeds": seeds, "runs": docs, "comparison": comparison, "plots": plots, **where}
