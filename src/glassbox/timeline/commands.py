"""`glassbox timeline DIR [DIR...] [--compare] [--json]` and `glassbox writes RUN`."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
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
    ) -> None:
        """The cheap atlas probes on every checkpoint, phase changes, why this head; plots (PNG)."""
        from glassbox.scale import seam
        from glassbox.timeline import render as R
        from glassbox.timeline.analyze import analyze
        from glassbox.train.store import read_table

        backend = seam.backend(ray, workers)
        docs = [analyze(r, ablate=not no_ablation, backend=backend) for r in runs]
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
                doc = {"runs": docs, "comparison": R.comparison(docs), "plots": plots}
            typer.echo(json.dumps(doc))
            return
        if compare or len(docs) > 1:
            if not compare:
                for d in docs:
                    typer.echo(R.render(d))
                    typer.echo("")
            typer.echo(R.render_comparison(R.comparison(docs), plots[0] if plots else None))
        else:
            typer.echo(R.render(docs[0], plots[0] if plots else None))

    @app.command()
    def writes(
        run: Path = typer.Argument(..., help="A run directory written by `glassbox train`."),
        as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
        top: int = typer.Option(5, "--top", help="How many heads to list per window (--examples: how many rows)."),
        examples: bool = typer.Option(False, "--examples", help="Rank the training examples (batch rows) by how "
                                      "much each one's gradient moved --head along the update taken."),
        head: str | None = typer.Option(None, "--head", help="With --examples: LAYER.HEAD, e.g. 1.0."),
        steps: str | None = typer.Option(None, "--steps", help="With --examples: window A-B (default: the head's "
                                         "phase change in timeline.json, else the whole run)."),
        retrain: bool = typer.Option(False, "--retrain", help="With --examples: retrain from the window's start "
                                     "with the top rows replaced, and with as many random rows replaced; report "
                                     "the step at which the head's role forms in each."),
        replace_share: float = typer.Option(0.1, "--replace-share", help="With --retrain: the share of the "
                                            "window's rows replaced (top-ranked, and as many random ones)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """The seed's table, measured: share of the update written per level and per head, over time."""
        from glassbox.errors import BadInput
        from glassbox.timeline.writes import render, write_table

        if examples or retrain:
            from glassbox.timeline import examples as E

            if head is None:
                raise BadInput("--examples needs --head LAYER.HEAD")
            layer, h = E.parse_head(head)
            window = E.parse_steps(steps) if steps else None
            if not run.is_dir():
                raise BadInput("not a directory", run)
            doc = E.rank(run, layer, h, window, top=top if top != 5 else 10, quiet=quiet)
            if retrain:
                doc["retrain"] = E.retrain(run, layer, h, doc, quiet=quiet, share=replace_share)
            from glassbox.fileio import write_json

            write_json(run / f"examples-L{layer}H{h}.json", doc)  # beside timeline.json, for the report views
            typer.echo(json.dumps(doc) if as_json else E.render(doc))
            return
        doc = write_table(run, top)
        typer.echo(json.dumps(doc) if as_json else render(doc))
