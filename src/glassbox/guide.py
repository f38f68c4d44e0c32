"""`glassbox tour`: the three chapters of `glassbox.tour` as a command — in the console, as JSON, or as the
report's "Start here" page — and `summary`, the few lines `glassbox demo` ends with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from glassbox.run import options


def register(app: typer.Typer) -> None:
    app.command("tour")(tour)


def tour(
    model: str = typer.Argument("smollm2-135m", help="A checkpoint (file or folder) or bundled model name."),
    head_spec: str | None = typer.Option(None, "--head", metavar="L.H",
                                         help="The head to follow (default: the top validated induction head)."),
    run: Path | None = typer.Option(None, "--run", help="Read the training chapter from this training run "
                                    "(default: train the 2-layer induction preset into --work)."),
    atlas_path: Path | None = typer.Option(None, "--atlas", help="Take the atlas from this atlas.json (default: "
                                           "the cached one, else computed now)."),
    work: Path = typer.Option(Path("out/tour"), "--work", help="Where the tour writes its training run and "
                              "the labelled copy of the checkpoint."),
    out: Path | None = typer.Option(None, "--out", help="Also write the report, opening on the tour, here (.html)."),
    as_json: bool = typer.Option(False, "--json", help="Print the tour as one JSON document on stdout."),
    seed: int = typer.Option(0, "--seed", help="Seed of the atlas and of the training run."),
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    max_memory: str | None = options.MAX_MEMORY,
) -> None:
    """Config → PyTorch code → bytes, random init → a specialized head, file → what each head does: one walk.

    Three chapters bound to this model's live values, each ending with the commands that reproduce it."""
    import json

    from glassbox import bundled, progress
    from glassbox.errors import BadInput
    from glassbox.timeline.examples import parse_head

    head = parse_head(head_spec) if head_spec else None  # the syntax before loading; the range after
    if run is not None and not (run / "config.json").is_file():
        raise BadInput("not a training run (no config.json)", run)
    if atlas_path is not None and not atlas_path.is_file():
        raise BadInput("no such atlas file", atlas_path)
    if out is not None and out.suffix.lower() not in (".html", ".htm"):
        raise BadInput("--out must name an .html file", out)
    path = bundled.resolve(model)
    doc = walk(model, path, head, run, atlas_path, work, seed, quiet=not progress.enabled())
    if out is not None:
        doc["report"] = str(write_report(model, doc, out))
    if as_json:
        print(json.dumps(doc))
    else:
        show(doc)


def walk(model: str, path: Path, head: tuple[int, int] | None, run: Path | None, atlas_path: Path | None,
         work: Path, seed: int = 0, quiet: bool = False, loaded: Any = None, atlas: dict | None = None) -> dict:
    """Load (unless given), find the atlas (given, cached, or computed and cached), build the tour, cache it
    for `glassbox serve` and the report."""
    from glassbox.errors import BadInput
    from glassbox.heads.annotate import load_atlas
    from glassbox.run import load_model
    from glassbox.tour import build
    from glassbox.web import documents

    loaded = loaded or load_model(model)
    if atlas is None:
        atlas = load_atlas(atlas_path) if atlas_path else documents.cached_atlas(path)
    if atlas is None:
        from glassbox.heads.atlas import Settings, build_atlas

        atlas = build_atlas(loaded, Settings(seed=seed))
        documents.store_atlas(path, atlas)
    if head is not None and not (0 <= head[0] < loaded.n_layers and 0 <= head[1] < loaded.n_heads):
        raise BadInput(f"--head {head[0]}.{head[1]}: this model has layers 0..{loaded.n_layers - 1} and heads "
                       f"0..{loaded.n_heads - 1}")
    doc = {**build(loaded, atlas, head, run, work, seed=seed, quiet=quiet), **loaded.placement}
    documents.store_tour(path, doc)
    return doc


def write_report(model: str, doc: dict, out: Path) -> Path:
    from glassbox.report import build_report

    runs = [doc["chapters"][1]["run"]]
    return build_report([model] + runs, out, tour=doc)


def show(doc: dict) -> None:
    """The tour in the console: each chapter's text, its numbers, the commands that reproduce it."""
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160, soft_wrap=True)
    layer, head = doc["head"]
    for i, ch in enumerate(doc["chapters"], 1):
        console.rule(f"{i}. {ch['title']} — {doc['model']}, head {layer}.{head}")
        console.print(ch["text"], markup=False, highlight=False)
        if ch["id"] == "bytes":
            t = Table(show_edge=False)
            for c in ("", "tensor[slice]", "code line", "block @ byte", "decoded from the file", "in the model"):
                t.add_column(c)
            for s in ch["steps"]:
                t.add_row(s["kind"], f"{s['tensor']}{s['slice']}", f"{Path(s['code']['file']).name}:{s['code']['line']}",
                          f"{s['block']['format']} @ {s['block']['offset']:,}",
                          " ".join(f"{v:+.4f}" for v in s["block"]["values"][:3]),
                          f"[{s['model_values']['row']}, {s['model_values']['col']}:] "
                          + " ".join(f"{v:+.4f}" for v in s["model_values"]["values"][:3]))
            console.print(t)
        console.print("reproduce: " + " ;  ".join(ch["commands"]), markup=False, highlight=False)
    if doc.get("report"):
        console.print(f"report: {doc['report']}", markup=False)


def summary(doc: dict) -> str:
    """A few lines: the head, where its bytes are, when training made one, what it does (the demo's ending)."""
    layer, head = doc["head"]
    b, t, s = doc["chapters"]
    q = b["steps"][0]
    pc = t["phase_change"]
    lines = [f"head {layer}.{head}: W_q = {q['tensor']}{q['slice']}, read at {Path(q['code']['file']).name}:"
             f"{q['code']['line']}; bytes from {q['bytes']['offset']:,} ({q['dtype']}); file and model agree to "
             f"{b['max_abs_diff']:.1g}",
             (f"training: head {pc['layer']}.{pc['head']} of a 2-layer model becomes an induction head at step "
              f"{pc['step']}" + (f" (trained in {t['seconds']:.0f} s)" if t["trained_now"] else "")
              if pc["step"] is not None else "training: no phase change found"),
             "atlas: " + "; ".join(f"{r} {', '.join(x['text'] for x in v[:2])}" for r, v in s["top_heads"].items()
                                   if r in ("induction", "previous_token")),
             f"label written: {s['label']['path']} (tensor bytes unchanged: "
             f"{'yes' if s['label']['bytes_unchanged'] else 'NO'})"]
    return "\n".join(lines)
