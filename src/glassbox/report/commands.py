"""`glassbox report MODEL|RUN [...] --out FILE.html`: one self-contained HTML file that works offline."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("report")(report)


def report(
    sources: list[str] = typer.Argument(..., help="Models (bundled names or paths) and training runs."),
    out: Path = typer.Option(..., "--out", help="The HTML file to write."),
    atlas: Path | None = typer.Option(None, "--atlas", help="Use this atlas JSON instead of the cached one."),
    no_compute: bool = typer.Option(False, "--no-compute", help="Do not compute a missing atlas (show none)."),
    as_json: bool = typer.Option(False, "--json", help="Print {\"report\": path, \"bytes\": n} on stdout."),
) -> None:
    """The file map, atlas, head pages and timelines of the web app, in one offline HTML file."""
    import json

    from glassbox.report import build_report

    doc = None
    if atlas is not None:
        from glassbox.heads.annotate import load_atlas

        doc = load_atlas(atlas)
    path = build_report(list(sources), out, compute_atlas=not no_compute, atlas=doc)
    if as_json:
        typer.echo(json.dumps({"report": str(path), "bytes": path.stat().st_size}))
    else:
        typer.echo(f"report: {path} ({path.stat().st_size / 2**20:.1f} MiB); open it in a browser, no network needed")
