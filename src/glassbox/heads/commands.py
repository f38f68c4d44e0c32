"""`glassbox atlas`, `glassbox heads show`, `glassbox annotate`: what every head does, one head, labels in the file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from glassbox.run import options

heads_app = typer.Typer(help="Look at single attention heads.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("atlas")(atlas)
    app.command("annotate")(annotate)
    app.add_typer(heads_app, name="heads")


def _console():
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160, soft_wrap=True)


def atlas(
    model: str = typer.Argument(..., help="A checkpoint (.safetensors + config.json, folder, .gguf) or a "
                                "bundled model's short name (smollm2-135m, minilm-l6)."),
    as_json: bool = typer.Option(False, "--json", help="Print the atlas JSON document on stdout."),
    out: Path | None = typer.Option(None, "--out", help="Folder for atlas.json and atlas.png (default "
                                    "glassbox-atlas/<model>; with --json, files are written only when given)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random probe sequences (results are deterministic)."),
    max_per_role: int = typer.Option(4, "--max-per-role", min=0, help="Heads per role checked by ablation."),
    no_validate: bool = typer.Option(False, "--no-validate", help="Scores only; no ablation checks."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Load a .bin/.pt with torch.load(weights_only=True)."),
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    max_memory: str | None = options.MAX_MEMORY,
) -> None:
    """Score every head on every probe, check the roles causally, and draw the heatmap."""
    from glassbox.heads.atlas import Settings, build_atlas
    from glassbox.heads.render import save, table
    from glassbox.run import load_model

    loaded = load_model(model, allow_pickle=allow_pickle)
    doc = build_atlas(loaded, Settings(seed=seed, max_per_role=max_per_role, validate=not no_validate))
    folder = out if out is not None else (None if as_json else Path("glassbox-atlas") / Path(loaded.name).stem)
    png = None
    if folder is not None:
        png = save(doc, folder)
    if as_json:
        print(json.dumps(doc))
        return
    console = _console()
    console.print(table(doc))
    cost = doc["cost"]
    console.print(f"cost: {cost['forwards']} forwards, {cost['tokens']} tokens "
                  f"(= {cost['tokens'] / cost['main_forward_tokens']:.1f} probe-batch forwards)")
    console.print(f"atlas written to {folder / 'atlas.json'}; heatmap written to {png}")


def annotate(
    checkpoint: str = typer.Argument(..., help="The checkpoint to label (.safetensors; GGUF/pickle get a sidecar)."),
    atlas_path: Path = typer.Option(..., "--atlas", help="An atlas.json from `glassbox atlas`."),
    out: Path | None = typer.Option(None, "--out", help="The annotated copy (safetensors; may equal the input)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
) -> None:
    """Write the atlas into the checkpoint's __metadata__ (tensor bytes unchanged) or a sidecar JSON."""
    from glassbox.heads.annotate import annotate as write
    from glassbox.heads.annotate import load_atlas

    summary = write(checkpoint, load_atlas(atlas_path), out)
    if as_json:
        print(json.dumps(summary))
    elif summary["sidecar"]:
        print(f"{summary['format']} checkpoints are not rewritten; atlas written beside it: {summary['path']}")
    else:
        print(f"wrote {summary['path']}: {summary['tensors']} tensors, {summary['data_bytes']} tensor bytes "
              f"unchanged, atlas under __metadata__[{summary['key']!r}]")


def _parse_head(spec: str, n_layers: int, n_heads: int) -> tuple[int, int]:
    from glassbox.errors import BadInput

    try:
        layer, head = (int(x) for x in spec.split("."))
    except ValueError:
        raise BadInput(f"head {spec!r}: expected LAYER.HEAD, e.g. 4.2") from None
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise BadInput(f"head {spec!r}: this model has layers 0..{n_layers - 1} and heads 0..{n_heads - 1}")
    return layer, head


@heads_app.command("show")
def show(
    model: str = typer.Argument(..., help="A checkpoint or bundled model name."),
    head_spec: str = typer.Argument(..., metavar="LAYER.HEAD", help="Which head, e.g. 4.2."),
    text: str = typer.Option("The cat sat on the mat. The cat sat on the", "--text", help="Text to run."),
    atlas_path: Path | None = typer.Option(None, "--atlas", help="Take the scores from this atlas.json instead "
                                           "of running the probes."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON document on stdout."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Load a .bin/.pt with torch.load(weights_only=True)."),
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    max_memory: str | None = options.MAX_MEMORY,
) -> None:
    """One head: its probe scores, where it attends on a text, and what ablating it does to the predictions."""
    from glassbox.heads.show import describe_head, render_head
    from glassbox.run import load_model

    _parse_head(head_spec, sys.maxsize, sys.maxsize)  # the syntax, before the model loads; its range after
    if atlas_path is not None and not atlas_path.is_file():
        from glassbox.errors import BadInput

        raise BadInput("no such atlas file", atlas_path)
    loaded = load_model(model, allow_pickle=allow_pickle)
    layer, head = _parse_head(head_spec, loaded.n_layers, loaded.n_heads)
    doc = {**describe_head(loaded, layer, head, text, atlas_path), **loaded.placement}
    if as_json:
        print(json.dumps(doc))
        return
    render_head(doc, _console())
