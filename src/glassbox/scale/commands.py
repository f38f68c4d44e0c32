"""`glassbox sweep` and `glassbox atlas-over`: the fan-out commands (the timeline's and the overlay build's
`--ray` options live with those commands)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

RAY_HELP = ("Run on Ray: auto (the cluster this machine belongs to, else a local instance) or ray://HOST:PORT. "
            "Same output as without it.")
WORKERS_HELP = "Local worker processes (without --ray); with --ray, the most actors to start (default: one per CPU)."


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
    app.command("atlas-over")(atlas_over)


def sweep(
    out: Path = typer.Option(..., "--out", help="Folder for the runs (DIR/s<seed>), sweep.json and compare.png."),
    seeds: str = typer.Option("0-3", "--seeds", help="Seeds: 0-15, 3, or 0,2,7."),
    preset: str | None = typer.Option(None, "--preset", help="Named preset (induction-2l, text-2l)."),
    config: Path | None = typer.Option(None, "--config", help="A transformers config JSON (with model_type)."),
    corpus: Path | None = typer.Option(None, "--corpus", help="A text file, or kjv / pydoc."),
    steps: int | None = typer.Option(None, "--steps", help="Optimizer steps (preset default otherwise)."),
    init: str | None = typer.Option(None, "--init", help="Init scheme (as for `glassbox train`)."),
    steer: list[str] = typer.Option([], "--steer", help="L.H=ROLE[:WEIGHT] (as for `glassbox train`)."),
    no_ablation: bool = typer.Option(False, "--no-ablation", help="Timelines without the per-head ablations."),
    no_plot: bool = typer.Option(False, "--no-plot", help="Skip compare.png."),
    ray: str | None = typer.Option(None, "--ray", help=RAY_HELP),
    workers: int = typer.Option(1, "--workers", help=WORKERS_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Train one run per seed and its timeline (fanned out), then compare the runs: which head wins, and why."""
    from glassbox.errors import BadInput
    from glassbox.scale import seam
    from glassbox.scale.sweep import parse_seeds
    from glassbox.scale.sweep import sweep as run_sweep
    from glassbox.timeline import render as R

    seed_list = parse_seeds(seeds)
    backend = seam.backend(ray, workers)
    config_dict = None
    if config is not None:
        if not config.is_file():
            raise BadInput("config file not found", config)
        try:
            config_dict = json.loads(config.read_text())
        except ValueError as exc:
            raise BadInput(f"not valid JSON: {exc}", config) from None
    declaration = {"preset": preset, "config": config_dict, "corpus": str(corpus) if corpus else None,
                   "init": init, "steps": steps, "steer": list(steer)}
    doc = run_sweep(out, declaration, seed_list, ablate=not no_ablation, backend=backend, plot=not no_plot)
    if as_json:
        typer.echo(json.dumps(doc))
        return
    typer.echo(R.render_comparison(doc["comparison"], doc["plots"][0] if doc["plots"] else None))
    typer.echo(f"{len(seed_list)} runs in {out}; comparison in {out / 'sweep.json'}")


def atlas_over(
    run: Path = typer.Argument(..., help="A run directory written by `glassbox train`."),
    every: int = typer.Option(1, "--every", help="Every k-th checkpoint (the last one always)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the atlas's probe sequences."),
    max_per_role: int = typer.Option(4, "--max-per-role", min=0, help="Heads per role checked by ablation."),
    no_validate: bool = typer.Option(False, "--no-validate", help="Scores only; no ablation checks."),
    ray: str | None = typer.Option(None, "--ray", help=RAY_HELP),
    workers: int = typer.Option(1, "--workers", help=WORKERS_HELP),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """The full atlas on every checkpoint of a run, and which head gained or lost which role between steps."""
    from glassbox.scale import seam
    from glassbox.scale.atlas_over import atlas_over as run_atlas_over
    from glassbox.scale.atlas_over import render

    backend = seam.backend(ray, workers)
    settings = {"seed": seed, "max_per_role": max_per_role, "validate": not no_validate}
    doc = run_atlas_over(run, settings, every, backend)
    typer.echo(json.dumps(doc) if as_json else render(doc))
