"""`glassbox demo` (what `make demo` runs): the main job on the bundled default model, end to end.

1. anatomy: the checkpoint mapped from the mathematics to the bytes;
2. atlas: what each head of the real model does, proved by ablation, with a heatmap;
3. training: a small model trained from its declaration, and the step where its induction head is born.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    model: str = typer.Option("smollm2-135m", "--model", help="Bundled model name or checkpoint path."),
    out: str = typer.Option("out/demo", "--out", help="Where pictures and JSON go."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Anatomy, head atlas and a training run with its phase change, on the bundled model."""
    import sys

    from rich.console import Console

    from glassbox.anatomy import describe
    from glassbox.anatomy.render import render
    from glassbox.checkpoint import open_checkpoint
    from glassbox.heads.atlas import run_atlas
    from glassbox.heads.render import table as atlas_table
    from glassbox.train import demo_summary

    console = Console() if sys.stdout.isatty() else Console(width=200, soft_wrap=True)
    console.rule(f"1. Anatomy of {model}: from the mathematics to the bytes")
    with open_checkpoint(model) as checkpoint:
        render(describe(checkpoint), console)

    console.rule(f"2. Head atlas of {model}: what each head does, checked by ablation")
    atlas, png = run_atlas(model, out_dir=Path(out) / "atlas", seed=seed)
    console.print(atlas_table(atlas))
    console.print(f"atlas JSON: {Path(out) / 'atlas' / 'atlas.json'}   heatmap: {png}")

    console.rule("3. Training writes knowledge: a head specializes")
    console.print(demo_summary(Path(out) / "train", seed=seed))
