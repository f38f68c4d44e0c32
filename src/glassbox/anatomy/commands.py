"""`glassbox anatomy PATH`: map every tensor and every head of a checkpoint to its role, without running it."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    app.command("anatomy")(anatomy)


def anatomy(
    path: str = typer.Argument(..., help="A .safetensors file, a sharded index or its folder, a .gguf, a "
                               ".bin/.pt, or a bundled model's short name (smollm2-135m, minilm-l6, gemma3-270m)."),
    as_json: bool = typer.Option(False, "--json", help="Print the contract's JSON document on stdout."),
    layer: int = typer.Option(0, "--layer", help="Which layer to show bound formulas and head slices for."),
    all_heads: bool = typer.Option(False, "--all-heads", help="List the head slices of every layer."),
    check_values: bool = typer.Option(False, "--check-values", help="Read every tensor and warn on NaN/Inf."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow loading values of a pickle checkpoint "
                                      "(torch.load weights_only=True); listing never needs it."),
) -> None:
    """Map every tensor and every head of a checkpoint to its role and its bytes, from headers alone."""
    from rich.console import Console

    from glassbox.anatomy import describe
    from glassbox.anatomy.values import scan_values
    from glassbox.checkpoint import open_checkpoint

    with open_checkpoint(path, allow_pickle=allow_pickle) as checkpoint:
        result = describe(checkpoint)
        if check_values:
            result.warnings += scan_values(checkpoint)
        if as_json:
            print(json.dumps(result.to_json()))
            return
        import sys

        from glassbox.anatomy.render import render

        console = Console() if sys.stdout.isatty() else Console(width=200, soft_wrap=True)
        render(result, console, layer=layer, all_heads=all_heads)
