"""`glassbox timeline DIR [DIR...] [--compare] [--json]`, `glassbox writes RUN`, and the fan-out commands built on
the scale seam: `glassbox sweep` (train + timeline per seed, then the comparison) and `glassbox atlas-over`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from glassbox.run import options

RAY_HELP = ("Run on Ray: auto (the cluster this machine belongs to, else a local instance) or ray://HOST:PORT. "
            "Same output as without it.")
WORKERS_HELP = "Local worker processes (without --ray); with --ray, the most actors to start (default: one per CPU)."



def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep)
    app.command("atlas-over")(atlas_over)

    @app.command()
    def timeline(
        runs: list[Path] = typer.Argument(..., help="Run directories written by `glassbox train`."),
        compare: bool = typer.Option(False, "--compare", help="Several runs side by side (seeds, inits)."),
        as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
        plot: Path | None = typer.Option(None, "--plot", help="PNG path (default: DIR/timeline.png, or "
                                         "compare.png next to the first run with --compare)."),
        no_plot: bool = typer.Option(False, "--no-plot", help="Skip the PNG."),
        no_ablation: bool = typer.Option(False, "--no-ablation", help="Skip the per-head ablations (faster)."),
        ray: str | None = typer.Option(None, "--ray", help="Probe the checkpoints on Ray: auto (this machine's "
                                       "cluster, else a local instance) or ray://HOST:PORT. Same output."),
        workers: int = typer.Option(1, "--workers", help="Local worker processes (without --ray)."),
        dtype: str = options.DTYPE,
        device: str = options.DEVICE,
        max_memory: str | None = options.MAX_MEMORY,
    ) -> None:
        """The cheap atlas probes on every checkpoint, phase changes, why this head; plots (PNG)."""
        from glassbox.scale import seam
        from glassbox.timeline import render as timeline_render
        from glassbox.timeline.analyze import analyze
        from glassbox.train.store import read_table

        backend = seam.backend(ray, workers)
        from glassbox.timeline.spans import attach

        # the examples section (RUN/examples-L*H*.json) is read fresh, not cached in timeline.json
        docs = [attach(analyze(r, ablate=not no_ablation, backend=backend, dtype=dtype, device=device), r)
                for r in runs]
        plots: list[str] = []
        if not no_plot:
            from glassbox.timeline.plots import plot_runs

            metrics = [read_table(r, "metrics") for r in runs]
            if compare or len(runs) > 1:
                target = plot or runs[0].resolve().parent / "compare.png"
                plots.append(str(plot_runs(docs, metrics, target)))
            else:
                plots.append(str(plot_runs(docs, metrics, plot or runs[0] / "timeline.png")))
        if as_json:
            if len(docs) == 1 and not compare:
                doc = dict(docs[0], plots=plots)
            else:
                doc = {"runs": docs, "comparison": timeline_render.comparison(docs), "plots": plots}
            typer.echo(json.dumps(doc))
            return
        if compare or len(docs) > 1:
            if not compare:
                for d in docs:
                    typer.echo(timeline_render.render(d))
                    typer.echo("")
            typer.echo(timeline_render.render_comparison(timeline_render.comparison(docs), plots[0] if plots else None))
        else:
            typer.echo(timeline_render.render(docs[0], plots[0] if plots else None))

    @app.command()
    def writes(
        run: Path = typer.Argument(..., help="A run directory written by `glassbox train`."),
        as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
        top: int = typer.Option(5, "--top", help="How many heads to list per window (--examples: how many rows)."),
        examples: bool = typer.Option(False, "--examples", help="Rank the training examples (batch rows) by how "
                                      "much each one's gradient moved --head along the update taken."),
        head: str | None = typer.Option(None, "--head", help="LAYER.HEAD, e.g. 1.0: the head whose examples "
                                        "--examples ranks; without --examples, the head whose share and rank "
                                        "the window reports (default: the induction phase-change head)."),
        steps: str | None = typer.Option(None, "--steps", help="A window A-B, or `phase`: the phase change's "
                                         "window in timeline.json (--head's, else the induction head's). Without "
                                         "--examples: the share of the update per level and per head summed over "
                                         "exactly that window. With --examples the default is the head's phase "
                                         "change, else the whole run."),
        retrain: bool = typer.Option(False, "--retrain", help="With --examples: retrain from the window's start "
                                     "with the top rows replaced, and with as many random rows replaced; report "
                                     "the step at which the head's role forms in each."),
        replace_share: float = typer.Option(0.1, "--replace-share", help="With --retrain: the share of the "
                                            "window's rows replaced (top-ranked, and as many random ones)."),
        random_sets: int = typer.Option(1, "--random-sets", help="With --retrain: how many different random "
                                        "row sets (their spread is the null for the top rows' delay)."),
        until: int | None = typer.Option(None, "--until", help="With --retrain: the last step retrained "
                                            "(default: the window's end + 3 window lengths, capped at the run's)."),
    ) -> None:
        """Where training wrote: the share of each step's update per level and per head, over time."""
        from glassbox.errors import BadInput
        from glassbox.timeline.writes import render, write_table

        if examples or retrain:
            from glassbox.timeline import examples as training_examples

            if head is None:
                raise BadInput("--examples needs --head LAYER.HEAD")
            layer, h = training_examples.parse_head(head)
            if not run.is_dir():
                raise BadInput("not a directory", run)
            if retrain and not 0 < replace_share <= 1:  # checked before the ranking's minutes, not after
                raise BadInput(f"--replace-share must be in (0, 1], got {replace_share}")
            if retrain and random_sets < 1:
                raise BadInput(f"--random-sets must be at least 1, got {random_sets}")
            source = None
            if steps == "phase":
                from glassbox.timeline.writes import phase_window

                window, _, source = phase_window(run, (layer, h))
            else:
                window = training_examples.parse_steps(steps) if steps else None
            doc = training_examples.rank(run, layer, h, window, top=top if top != 5 else 10)  # --quiet: the root option
            if source:
                doc["window_source"] = source
            if retrain:
                doc["retrain"] = training_examples.retrain(run, layer, h, doc, until=until, share=replace_share,
                                           n_random=random_sets)
            from glassbox.fileio import write_json

            write_json(run / f"examples-L{layer}H{h}.json", doc)  # beside timeline.json, for the report views
            typer.echo(json.dumps(doc) if as_json else training_examples.render(doc))
            return
        if steps is not None or head is not None:  # one window: where the update went, the focus head's rank
            from glassbox.timeline import examples as training_examples
            from glassbox.timeline.writes import phase_window, render_window, window_table

            focus = training_examples.parse_head(head) if head is not None else None
            if steps is None or steps == "phase":
                (a, b), focus, source = phase_window(run, focus)
            else:
                (a, b), source = training_examples.parse_steps(steps), "given (--steps)"
                if focus is None:  # the induction phase-change head, when the timeline has one
                    try:
                        focus = phase_window(run)[1]
                    except BadInput:
                        focus = None
            doc = window_table(run, a, b, focus, source, top)
            typer.echo(json.dumps(doc) if as_json else render_window(doc))
            return
        doc = write_table(run, top)
        typer.echo(json.dumps(doc) if as_json else render(doc))


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
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    max_memory: str | None = options.MAX_MEMORY,
) -> None:
    """Train one run per seed and its timeline (fanned out), then compare the runs: which head wins, and why.
    Training is float32 on the CPU, as `glassbox train`; --dtype/--device say where the timelines probe."""
    from glassbox.scale import seam
    from glassbox.timeline import render as timeline_render
    from glassbox.timeline.sweep import parse_seeds
    from glassbox.timeline.sweep import sweep as run_sweep
    from glassbox.train.model import read_config

    seed_list = parse_seeds(seeds)
    backend = seam.backend(ray, workers)
    config_dict = read_config(config)
    declaration = {"preset": preset, "config": config_dict, "corpus": str(corpus) if corpus else None,
                   "init": init, "steps": steps, "steer": list(steer)}
    doc = run_sweep(out, declaration, seed_list, ablate=not no_ablation, backend=backend, plot=not no_plot,
                    dtype=dtype, device=device)
    if as_json:
        typer.echo(json.dumps(doc))
        return
    typer.echo(timeline_render.render_comparison(doc["comparison"], doc["plots"][0] if doc["plots"] else None))
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
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    max_memory: str | None = options.MAX_MEMORY,
) -> None:
    """The full atlas on every checkpoint of a run, and which head gained or lost which role between steps."""
    from glassbox.scale import seam
    from glassbox.timeline.atlas_over import atlas_over as run_atlas_over
    from glassbox.timeline.atlas_over import render

    backend = seam.backend(ray, workers)
    settings = {"seed": seed, "max_per_role": max_per_role, "validate": not no_validate}
    doc = run_atlas_over(run, settings, every, backend, dtype=dtype, device=device)
    typer.echo(json.dumps(doc) if as_json else render(doc))
