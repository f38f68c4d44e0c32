"""`glassbox demo` (what `make demo` runs): the main job on the bundled default model, end to end."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    model: str = typer.Option("smollm2-135m", "--model", help="Bundled model name or checkpoint path."),
    out: str = typer.Option("out/demo", "--out", help="Where pictures and JSON go."),
) -> None:
    """Anatomy of the bundled model: every tensor and head mapped from the mathematics to the bytes."""
    import sys

    from rich.console import Console

    from glassbox.anatomy import describe
    from glassbox.anatomy.render import render
    from glassbox.checkpoint import open_checkpoint

    console = Console() if sys.stdout.isatty() else Console(width=200, soft_wrap=True)
    console.rule(f"1. Anatomy of {model}: from the mathematics to the bytes")
    with open_checkpoint(model) as checkpoint:
        render(describe(checkpoint), console)
