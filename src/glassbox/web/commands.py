"""`glassbox serve [MODEL|RUN ...] [--root DIR] [--port N]`: the local web app, on 127.0.0.1 by default."""

from __future__ import annotations

from pathlib import Path

import typer

from glassbox.run import options

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    sources: list[str] = typer.Argument(None, help="Models (bundled names or paths) and training runs to list "
                                        "first (default: the bundled smollm2-135m)."),
    root: Path = typer.Option(Path("."), "--root", help="Only files under this folder (and bundled models) "
                              "can be opened from the page."),
    port: int = typer.Option(8765, "--port", min=0, max=65535),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs --expose."),
    expose: bool = typer.Option(False, "--expose", help="Allow a non-loopback --host (anyone who can reach it "
                                "can read the files under --root)."),
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    max_memory: str | None = options.MAX_MEMORY,
) -> None:
    """The local web app: file map, atlas, head pages, timelines, with a JSON API (/api/openapi.json)."""
    import sys

    from glassbox.errors import BadInput
    from glassbox.web.paths import PathRefused, resolve

    if not root.is_dir():
        raise BadInput("--root is not a folder", root)
    loopback = host in LOOPBACK_HOSTS
    if not loopback and not expose:
        raise BadInput(f"--host {host} is not loopback: pass --expose as well to serve it to other machines")
    specs = []
    for spec in sources or []:  # a source outside --root could not be opened from the page: say so now
        rel = spec
        p = Path(spec)
        if p.is_absolute() or p.exists():
            try:
                rel = str(p.resolve().relative_to(root.resolve()))
            except ValueError:
                raise BadInput(f"is outside --root {root} (serve a root that holds it)", spec) from None
        try:
            specs.append(resolve(root, rel)[0])
        except PathRefused as exc:
            raise BadInput(str(exc), spec) from None
    import uvicorn

    from glassbox.web.server import create_app

    app = create_app(root, specs or None, loopback_only=loopback, dtype=dtype, device=device)
    if not loopback:
        print(f"warning: serving on {host}:{port}, reachable from other machines; every file under "
              f"{root.resolve()} can be read through it", file=sys.stderr)
    print(f"glassbox: http://{'127.0.0.1' if loopback else host}:{port}/  (root {root.resolve()}; Ctrl-C stops)",
          file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
